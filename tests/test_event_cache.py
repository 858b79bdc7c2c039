"""The frame cache of event data (docs/events.md, "Cache"): it follows no link, uses and removes
only what it made, and a stop, a full disk or a bad recording leaves a complete entry or none."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from danet_deploy import events
from danet_deploy.data import load_dataset
from danet_deploy.errors import UserError
from danet_deploy.events import CACHE_ENV, MARKER, FramedRecordings

from .event_files import write_nmnist

T = 3


@pytest.fixture
def data(tmp_path: Path) -> str:
    """A small N-MNIST copy (10 test recordings)."""
    write_nmnist(tmp_path / "data", 1)
    return f"nmnist:{tmp_path / 'data'}"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch) -> Path:
    """This test's own cache root; its frames folder."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / "frames"


def entry_name(data: str, tmp_path: Path, monkeypatch) -> str:
    """The entry the test split of ``data`` fills (the name does not depend on the cache's root)."""
    with monkeypatch.context() as m:
        m.setenv(CACHE_ENV, str(tmp_path / "scratch"))
        name = load_dataset(data, "test", timesteps=T)[0].cache.name
    shutil.rmtree(tmp_path / "scratch")
    return name


def refused(data: str, *words: str) -> str:
    with pytest.raises(UserError) as err:
        load_dataset(data, "test", timesteps=T)
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), (words, message)
    return message


def snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every path under ``folder`` (links not followed): a link's target, a file's bytes."""
    return {
        str(p.relative_to(folder)): os.readlink(p)
        if p.is_symlink()
        else p.read_bytes()
        if p.is_file()
        else "dir"
        for p in sorted(folder.rglob("*"))
    }


def samples(ds) -> list[tuple[torch.Tensor, int]]:
    return [ds[i] for i in range(len(ds))]


def assert_same(a, b) -> None:
    assert len(a) == len(b) and all(torch.equal(x, y) and u == v for (x, u), (y, v) in zip(a, b))


# ---- links and what others planted: refused, never followed, never removed ----------------------------------


def test_a_link_or_a_foreign_folder_at_an_entry_is_refused_and_left_as_it_is(
    data: str, cache: Path, tmp_path: Path, monkeypatch
) -> None:
    name = entry_name(data, tmp_path, monkeypatch)
    users = tmp_path / "users"
    users.mkdir()
    (users / "notes.txt").write_text("the user's notes\n")
    cache.mkdir(parents=True, mode=0o700)
    cases = {  # what is planted in the frames folder -> the words of the refusal
        "entry is a link to a folder": (
            lambda: (cache / name).symlink_to(users),
            "is a link or a file",
        ),
        "entry is a file": (lambda: (cache / name).write_text("mine"), "is a link or a file"),
        "an incomplete folder of links": (
            lambda: [
                (cache / name).mkdir(),
                (cache / name / "0.npz").symlink_to(users / "notes.txt"),
                (cache / name / "0_0.hdf5").symlink_to(users / "notes.txt"),
            ],
            "no marker",
        ),
        "a dangling link as its marker": (
            lambda: [
                (cache / name).mkdir(),
                (cache / name / MARKER).symlink_to(users / "made-by-the-run.json"),
            ],
            "no marker",
        ),
        "a link as its lock": (
            lambda: (cache / f"{name}.lock").symlink_to(users / "notes.txt"),
            "symbolic link",
        ),
        "a dangling link as its lock": (
            lambda: (cache / f"{name}.lock").symlink_to(users / "new.txt"),
            "symbolic link",
        ),
        "a user's file as its lock": (
            lambda: (cache / f"{name}.lock").write_text("x"),
            "not an empty lock file",
        ),
    }
    for case, (plant, words) in cases.items():
        plant()
        before, theirs = snapshot(cache), snapshot(users)
        refused(data, name, words, CACHE_ENV)
        assert snapshot(cache) == before and snapshot(users) == theirs, case
        assert (users / "notes.txt").read_text() == "the user's notes\n" and sorted(
            os.listdir(users)
        ) == ["notes.txt"]
        for p in cache.iterdir():
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def test_a_frames_folder_that_is_a_link_or_another_users_is_refused(
    data: str, cache: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cache.parent.mkdir()
    cache.symlink_to(elsewhere)
    refused(data, str(cache), "is a link or a file")
    assert not any(elsewhere.iterdir())
    cache.unlink()
    cache.mkdir(mode=0o700)
    if os.getuid() == 0:  # making a folder of another user needs root
        os.chown(cache, 12345, 12345)
        refused(data, str(cache), "belongs to another user")
        assert not any(cache.iterdir())


def test_the_users_own_frames_folder_open_to_others_is_made_private(data: str, cache: Path) -> None:
    """The previous release let tonic make it under the user's umask (0775 under 002): refusing it
    would stop every event-data command after an upgrade."""
    cache.parent.mkdir()
    cache.mkdir(mode=0o777)
    os.chmod(cache, 0o775)
    ds, _ = load_dataset(data, "test", timesteps=T)
    assert ds.cache.parent == cache and stat.S_IMODE(os.stat(cache).st_mode) == 0o700


def test_an_entry_of_another_user_is_refused(data: str, cache: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("making a folder of another user needs root")
    ds, _ = load_dataset(data, "test", timesteps=T)
    os.chown(ds.cache, 12345, 12345)
    refused(data, str(ds.cache), "belongs to another user")
    assert len(os.listdir(ds.cache)) == len(ds) + 1


def test_an_entry_whose_frames_were_replaced_is_refused_naming_the_frame(
    data: str, cache: Path
) -> None:
    ds, _ = load_dataset(data, "test", timesteps=T)
    frame = ds.cache / "4.npz"
    np.savez_compressed(frame, frames=np.zeros((T + 1, 2, 34, 34), np.int16))
    again, _ = load_dataset(data, "test", timesteps=T)
    with pytest.raises(
        UserError,
        match=rf"{frame}: holds int16 \[4, 2, 34, 34\], not the entry's int16 "
        rf"\[3, 2, 34, 34\] frames; delete the folder {ds.cache},",
    ):
        again[4]
    frame.write_bytes(b"planted")
    with pytest.raises(
        UserError, match=rf"{frame}: is not a frame file of danet-deploy \(ValueError: .*pickled"
    ):
        again[4]
    frame.unlink()
    frame.symlink_to(ds.cache / "3.npz")
    with pytest.raises(
        UserError, match=rf"{frame}: is a symbolic link, which the frame cache never follows"
    ):
        again[4]
    (ds.cache / MARKER).write_text('{"tool": "danet-deploy", "labels": []}')
    refused(data, str(ds.cache), "its marker differs")


# ---- a stop, a full disk or a bad recording: no entry, nothing left, the next run frames it -----------------


def left_in(cache: Path) -> list[str]:
    return sorted(os.listdir(cache)) if cache.exists() else []


def test_a_full_disk_is_one_line_and_leaves_nothing(data: str, cache: Path, monkeypatch) -> None:
    calls = []

    def full(
        file, frames: np.ndarray
    ) -> None:  # writes a part, as a disk filling up does, then fails
        calls.append(1)
        if len(calls) == 4:
            file.write(b"PK\x03\x04 part")
            raise OSError(errno.ENOSPC, "No space left on device")
        real(file, frames)

    real = events._save_frames
    with monkeypatch.context() as m:
        m.setattr(events, "_save_frames", full)
        refused(
            data,
            "cannot write the frame cache",
            "No space left on device",
            "nothing was kept",
            CACHE_ENV,
        )
    assert len(calls) == 4 and left_in(cache) == []
    ds, _ = load_dataset(data, "test", timesteps=T)
    assert len(ds) == 10 and ds[9][0].sum() > 0 and left_in(cache) == [ds.cache.name]


def test_a_bad_recording_or_ctrl_c_mid_fill_leaves_no_entry_and_the_next_run_fills_it(
    data: str, cache: Path, monkeypatch
) -> None:
    read = FramedRecordings.__getitem__

    def failing(exc: BaseException):
        def get(self, i: int):
            if i == 3:
                raise exc
            return read(self, i)

        return get

    for exc in (UserError("recording 3 is bad"), KeyboardInterrupt()):
        with monkeypatch.context() as m:
            m.setattr(FramedRecordings, "__getitem__", failing(exc))
            with pytest.raises(type(exc)):
                load_dataset(data, "test", timesteps=T)
        assert left_in(cache) == []
    ds, _ = load_dataset(data, "test", timesteps=T)
    assert left_in(cache) == [ds.cache.name] and len(os.listdir(ds.cache)) == 11


STOP_AT_RECORDING_3 = """
import os, signal, sys
from danet_deploy import events
from danet_deploy.data import load_dataset
from danet_deploy.events import FramedRecordings
from danet_deploy.signals import signals_end_the_run
read = FramedRecordings.__getitem__
def get(self, i):
    if i == 3:
        os.kill(os.getpid(), int(sys.argv[2]))
    return read(self, i)
FramedRecordings.__getitem__ = get
with signals_end_the_run():
    load_dataset(sys.argv[1], "test", timesteps=3)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_a_signal_mid_fill_leaves_no_entry_and_the_next_run_fills_it(
    sig: int, data: str, cache: Path
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", STOP_AT_RECORDING_3, data, str(int(sig))],
        capture_output=True,
        text=True,
        env=os.environ,
    )
    assert proc.returncode in (-sig, 128 + sig, 1), proc.stderr
    if sig == signal.SIGKILL:  # nothing runs: its temporary folder and lock stay until the next run
        assert len(left_in(cache)) == 2
    else:
        assert left_in(cache) == []
    ds, _ = load_dataset(data, "test", timesteps=T)
    assert (
        left_in(cache) == [ds.cache.name] and len(os.listdir(ds.cache)) == 11 and ds[9][0].sum() > 0
    )


def test_a_folder_like_a_killed_fill_that_is_not_ours_is_left(
    data: str, cache: Path, tmp_path: Path, monkeypatch
) -> None:
    name = entry_name(data, tmp_path, monkeypatch)
    cache.mkdir(parents=True, mode=0o700)
    theirs = cache / f".{name}.user"
    theirs.mkdir()
    (theirs / "0.npz").write_text("the user's")  # no marker of ours: not removed
    first = samples(load_dataset(data, "test", timesteps=T)[0])
    assert (theirs / "0.npz").read_text() == "the user's" and left_in(cache) == sorted(
        [name, theirs.name]
    )
    assert_same(first, samples(load_dataset(data, "test", timesteps=T)[0]))


@pytest.mark.parametrize("left", [[], ["danet-deploy-frames.json"]])
def test_a_fill_killed_before_its_marker_was_whole_leaves_a_folder_the_next_run_removes(
    left: list[str], data: str, cache: Path, tmp_path: Path, monkeypatch
) -> None:
    """Killed right after mkdtemp (an empty folder) or while writing the marker (half of it)."""
    name = entry_name(data, tmp_path, monkeypatch)
    cache.mkdir(parents=True, mode=0o700)
    killed = cache / f".{name}.killed"
    killed.mkdir()
    for file in left:
        (killed / file).write_text('{"tool": "danet-dep')
    load_dataset(data, "test", timesteps=T)
    assert left_in(cache) == [name]
