"""A careless user's inputs: no command loses a file, hangs, crashes or prints a traceback.

Every case of the reliability audit (docs/compile.md §9 for what may be replaced) has a test
here: outputs are replaced only by the same kind of output, run sizes are checked before
anything is allocated, every bad input gets one line naming what is at fault.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import h5py
import nir
import numpy as np
import pytest
import torch

from danet_deploy.outputs import identify

from .conftest import one_line_error, run_cli


def _tiny_nir(path: Path, **metadata) -> Path:
    """Input(4) -> Affine -> LIF(3) -> Output, with ``metadata`` on the graph."""
    rng = np.random.default_rng(0)
    nodes = {
        "in": nir.Input(input_type={"input": np.array([4])}),
        "fc": nir.Affine(weight=rng.normal(size=(3, 4)), bias=np.zeros(3)),
        "lif": nir.LIF(
            tau=np.full(3, 1e-3), r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.ones(3)
        ),
        "out": nir.Output(output_type={"output": np.array([3])}),
    }
    edges = [("in", "fc"), ("fc", "lif"), ("lif", "out")]
    stated = {
        "reset": "zero",
        "discretisation": "euler",
        **metadata,
    }  # no notes about assumed conventions
    nir.write(path, nir.NIRGraph(nodes=nodes, edges=edges, metadata=stated, type_check=False))
    return path


def _spikes(
    path: Path, n: int = 4, steps: int | None = None, labels: torch.Tensor | None = None
) -> Path:
    torch.manual_seed(0)
    x = (torch.rand(n, *((steps,) if steps else ()), 4) < 0.5).float()
    torch.save(
        {"inputs": x, "labels": torch.zeros(n, dtype=torch.long) if labels is None else labels},
        path,
    )
    return path


@pytest.fixture(scope="module")
def chip_export(trained_digits: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("chip") / "digits.loihi2-sim"
    run_cli("export", str(trained_digits), "--target", "loihi2-sim", "-o", str(out), check=True)
    return out


# ---- 0. outputs identified by what they are -------------------------------------------------------------------


@pytest.mark.slow
def test_no_other_kind_of_output_replaces_a_checkpoint(
    trained_digits: Path, tmp_path: Path
) -> None:
    ck = tmp_path / "ck.pt"
    shutil.copy(trained_digits, ck)
    before = ck.read_bytes()
    one_line_error(
        run_cli("report", str(trained_digits), "-n", "5", "--format", "json", "-o", str(ck)),
        str(ck),
        "checkpoint, not a report",
        "--force",
    )
    one_line_error(
        run_cli(
            "compare", "--connections", "plain", "--models-dir", str(tmp_path / "m"), "-o", str(ck)
        ),
        str(ck),
        "checkpoint, not a comparison",
    )
    one_line_error(
        run_cli("simulate", str(trained_digits), "-n", "5", "--save-outputs", str(ck)),
        str(ck),
        "checkpoint, not a outputs",
    )
    assert ck.read_bytes() == before and not (tmp_path / "m").exists()
    saved = tmp_path / "counts.pt"  # and a checkpoint does not replace saved outputs either
    run_cli("simulate", str(trained_digits), "-n", "5", "--save-outputs", str(saved), check=True)
    one_line_error(
        run_cli("train", "--epochs", "1", "-o", str(saved)), str(saved), "outputs, not a checkpoint"
    )
    assert identify(saved) == "outputs" and identify(ck) == "checkpoint"


@pytest.mark.slow
@pytest.mark.parametrize(
    "content,fmt",
    [
        ("danet-deploy notes: what I tried\n", "table"),
        ("name,kind,connection,my own column\nx,y,z,1\n", "csv"),
        ('[{"connection": "da", "lowering": "expand", "mine": 1}]\n', "json"),
        ('{"profile": "mine", "layers": [], "totals": {}, "by_connection": {}}\n', "json"),
        ('<html><head><meta name="generator" content="danet-deploy"></head></html>\n', "html"),
    ],
    ids=["notes", "csv", "json-list", "json-report-keys", "html-untagged"],
)
def test_files_that_only_look_like_ours_are_kept(
    trained_digits: Path, tmp_path: Path, content: str, fmt: str
) -> None:
    mine = tmp_path / "mine.txt"
    mine.write_text(content)
    one_line_error(
        run_cli("report", str(trained_digits), "-n", "5", "--format", fmt, "-o", str(mine)),
        str(mine),
        "was not written by danet-deploy",
    )
    one_line_error(run_cli("train", "--epochs", "1", "-o", str(mine)), str(mine))
    assert mine.read_text() == content


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["table", "json", "csv", "html"])
def test_a_report_replaces_a_report_and_says_what_it_is(
    trained_digits: Path, tmp_path: Path, fmt: str
) -> None:
    out = tmp_path / "r.out"
    run_cli(
        "report", str(trained_digits), "-n", "5", "--format", "json", "-o", str(out), check=True
    )
    run_cli("report", str(trained_digits), "-n", "5", "--format", fmt, "-o", str(out), check=True)
    assert identify(out) == "report"


@pytest.mark.slow
def test_compare_replaces_only_a_comparison(trained_digits: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(trained_digits, models / "digits_resnet_da.pt")  # reused: nothing is trained
    out = tmp_path / "cmp.json"
    for fmt in ("json", "table", "html"):
        run_cli(
            "compare",
            "--connections",
            "da",
            "-n",
            "10",
            "--models-dir",
            str(models),
            "--format",
            fmt,
            "-o",
            str(out),
            check=True,
        )
        assert identify(out) == "comparison"
    report = tmp_path / "r.json"
    run_cli(
        "report", str(trained_digits), "-n", "5", "--format", "json", "-o", str(report), check=True
    )
    one_line_error(
        run_cli("compare", "--connections", "da", "--models-dir", str(models), "-o", str(report)),
        "report, not a comparison",
    )


@pytest.mark.slow
def test_after_force_a_users_file_in_an_export_directory_is_never_ours(
    trained_digits: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    out.mkdir()
    (out / "netx.h5").write_bytes(b"the user's own netx file")
    forced = run_cli(
        "export", str(trained_digits), "--target", "nir", "-o", str(out), "--force", check=True
    )
    assert "netx.h5" not in forced.stderr  # "wrote" names only what was written
    run_cli("export", str(trained_digits), "--target", "nir", "-o", str(out), check=True)
    one_line_error(
        run_cli("export", str(trained_digits), "--target", "loihi2-sim", "-o", str(out)),
        str(out / "netx.h5"),
        "--force",
    )
    assert (out / "netx.h5").read_bytes() == b"the user's own netx file"
    assert json.loads((out / "manifest.json").read_text())["files"] == [
        "graph.nir",
        "manifest.json",
    ]


@pytest.mark.slow
def test_outputs_follow_the_users_umask(trained_digits: Path, tmp_path: Path) -> None:
    report, export = tmp_path / "r.json", tmp_path / "e"
    cmd = (
        f"umask 022 && {sys.executable} -m danet_deploy report {trained_digits} -n 5 --format json -o {report}"
        f" && {sys.executable} -m danet_deploy export {trained_digits} -o {export}"
    )
    subprocess.run(["sh", "-c", cmd], check=True, capture_output=True, stdin=subprocess.DEVNULL)
    assert stat.S_IMODE(report.stat().st_mode) == 0o644
    assert stat.S_IMODE(export.stat().st_mode) == 0o755
    assert stat.S_IMODE((export / "graph.nir").stat().st_mode) == 0o644


# ---- 1. sizes, full disks, signals ----------------------------------------------------------------------------


@pytest.mark.slow
def test_time_steps_that_cannot_fit_in_memory_are_refused_before_running(
    trained_digits: Path, tmp_path: Path
) -> None:
    blob = torch.load(trained_digits, weights_only=True)
    blob["config"]["timesteps"] = blob["timesteps"] = 10**9
    huge = tmp_path / "huge.pt"
    torch.save(blob, huge)
    for args in (
        ["simulate", str(huge), "-n", "4"],
        ["export", str(huge), "--target", "loihi2-sim", "-o", str(tmp_path / "e")],
    ):
        t0 = time.monotonic()
        one_line_error(run_cli(*args), "1,000,000,000 time steps", "100,000")
        assert time.monotonic() - t0 < 60
    graph = _tiny_nir(tmp_path / "g.nir", dt=1e-3)
    one_line_error(
        run_cli(
            "simulate",
            str(graph),
            "--data",
            f"tensor:{_spikes(tmp_path / 'x.pt')}",
            "-T",
            "100000000",
        ),
        "100,000,000 time steps",
        "100,000",
    )


def test_a_run_larger_than_the_memory_left_is_refused_with_both_figures(
    tmp_path: Path, monkeypatch
) -> None:
    from danet_deploy import data
    from danet_deploy.converters.nir_import import read_nir

    graph = read_nir(_tiny_nir(tmp_path / "g.nir", dt=1e-3, timesteps=10))  # 4 + 3 + 3 + 3 values
    monkeypatch.setattr(data, "available_memory", lambda: 10 * 2**30)
    data.check_run_memory(
        graph.shapes, 1000, 64
    )  # 1000 steps x 64 samples x 8 values x 4 bytes: 2 MB
    with pytest.raises(
        data.UserError,
        match=r"90,000 time steps x 1000 samples x 13 values need at least "
        r"4.4 GiB of memory, 0.5 GiB is available",
    ):
        monkeypatch.setattr(data, "available_memory", lambda: 2**29)
        data.check_run_memory(graph.shapes, 90_000, 1000, keep_all=True)


@pytest.mark.slow
def test_T_is_ignored_with_a_note_when_the_graph_records_it(tmp_path: Path) -> None:
    graph = _tiny_nir(tmp_path / "g.nir", dt=1e-3, timesteps=3)
    proc = run_cli(
        "simulate",
        str(graph),
        "--data",
        f"tensor:{_spikes(tmp_path / 'x.pt')}",
        "-T",
        "7",
        "--json",
        check=True,
    )
    assert "-T 7 ignored" in proc.stderr and json.loads(proc.stdout)["timesteps"] == 3
    proc = run_cli(
        "simulate",
        str(_tiny_nir(tmp_path / "h.nir", dt=1e-3)),
        "--data",
        f"tensor:{_spikes(tmp_path / 'y.pt', steps=5)}",
        "-T",
        "7",
        "--json",
        check=True,
    )
    assert "-T 7 ignored" in proc.stderr and json.loads(proc.stdout)["timesteps"] == 5


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 600 kB file system (root can mount tmpfs; elsewhere the test is skipped)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.slow
def test_a_full_disk_fails_in_one_line_and_keeps_the_previous_export(
    trained_digits: Path, small_disk: Path
) -> None:
    out = small_disk / "e"
    run_cli(
        "export", str(trained_digits), "--target", "loihi2-sim", "-o", str(out), check=True
    )  # ~500 kB
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for _ in range(2):
        proc = run_cli("export", str(trained_digits), "--target", "loihi2-sim", "-o", str(out))
        one_line_error(proc, str(out), "No space left on device")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in small_disk.iterdir()) == [
        "e"
    ]  # no half-written temporary directory
    try:  # take the last free blocks
        with open(small_disk / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError:
        pass
    proc = run_cli(
        "report", str(out), "-n", "5", "--format", "json", "-o", str(small_disk / "r.json")
    )
    one_line_error(proc, "r.json", "No space left on device")
    assert sorted(p.name for p in small_disk.iterdir()) == ["e", "filler"]


def test_sigterm_during_export_leaves_no_temporary_directory(
    trained_digits: Path, tmp_path: Path
) -> None:
    """The signal arrives once the export has started writing (its hidden directory exists)."""
    out = tmp_path / "e"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "danet_deploy",
            "export",
            str(trained_digits),
            "--target",
            "loihi2-sim",
            "-o",
            str(out),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".e.*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert "Traceback" not in err
    assert not list(tmp_path.glob(".e.*")), "temporary directory left behind"
    assert proc.returncode in (0, 128 + signal.SIGTERM)  # 0: it had finished before the signal
    assert out.exists() == (proc.returncode == 0)


LOST_SIGNAL = """
import os, signal, sys, time
from pathlib import Path
from danet_deploy.outputs import atomic_write
from danet_deploy.signals import signals_end_the_run

class Collected:
    def __del__(self):  # Python ignores an exception raised here, the handler's SystemExit too
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)

with signals_end_the_run():
    Collected()  # collected at once: the signal's SystemExit is lost inside __del__
    print("went on", flush=True)
    atomic_write(Path(sys.argv[1]), lambda p: p.write_text("result"))
    print("committed", flush=True)
"""


def test_a_stop_lost_inside_a_garbage_collection_callback_commits_nothing(tmp_path: Path) -> None:
    """The CI failure of 2026-12-03: SIGTERM arrived in a weakref callback, Python printed the
    handler's SystemExit as an ignored exception and the export went on to install itself."""
    out = tmp_path / "result.txt"
    proc = subprocess.run(
        [sys.executable, "-c", LOST_SIGNAL, str(out)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert proc.returncode == 128 + signal.SIGTERM
    assert proc.stdout == "went on\n" and proc.stderr == ""
    assert list(tmp_path.iterdir()) == []  # neither the result nor its temporary file


def test_train_refuses_more_time_steps_than_any_command_runs_before_training(
    tmp_path: Path,
) -> None:
    """Every limit on time steps applies to every command: -T 100,000,000 trained (and failed to
    allocate) instead of being refused like simulate's."""
    out, models = tmp_path / "m.pt", tmp_path / "models"
    t0 = time.monotonic()
    one_line_error(
        run_cli("train", "-T", "100000000", "-o", str(out)),
        "100,000,000 time steps",
        "100,000",
        "-T",
    )
    one_line_error(
        run_cli("compare", "--connections", "da", "-T", "100000000", "--models-dir", str(models)),
        "100,000,000 time steps",
        "100,000",
        "-T",
    )
    one_line_error(
        run_cli("demo", "-T", "100000000", "-o", str(tmp_path / "demo")), "100,000,000 time steps"
    )
    assert time.monotonic() - t0 < 60 and sorted(p.name for p in tmp_path.iterdir()) == []


def test_training_larger_than_the_memory_left_is_refused_before_it_starts(
    tmp_path: Path, monkeypatch
) -> None:
    """Training keeps every layer's values of every step for the backward pass: a run that cannot
    hold them is refused with the figures and the options to change, before an epoch starts."""
    from danet_deploy import data, train

    monkeypatch.setattr(data, "available_memory", lambda: 2**30)
    monkeypatch.setattr(train, "epoch_batches", _no_training)
    with pytest.raises(
        data.UserError,
        match=r"^50,000 time steps x 64 samples x [\d,]+ values need at least "
        r"[\d,.]+ GiB of memory, 1.0 GiB is available; use fewer time steps "
        r"\(-T\) or a smaller --batch-size$",
    ):
        train.train(
            train.TrainOptions(timesteps=50_000, epochs=1, quiet=True, device="cpu"),
            tmp_path / "m.pt",
        )
    assert list(tmp_path.iterdir()) == []


def test_a_run_on_a_gpu_is_held_against_the_gpus_free_memory(monkeypatch) -> None:
    from danet_deploy import data

    monkeypatch.setattr(data, "available_memory", lambda: 2**40)  # the host's: not what counts
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2**30, 80 * 2**30))
    with pytest.raises(data.UserError, match=r"1.0 GiB is available"):
        data.check_run_memory(
            {"a": (1000,)}, 10_000, 64, keep_all=True, device=torch.device("cuda", 0)
        )
    data.check_run_memory({"a": (1000,)}, 10_000, 64, keep_all=True, device=torch.device("cpu"))


def _no_training(*args, **kw):
    raise AssertionError("training started")


def _fill(mount: Path) -> None:
    """Take a file system's last free blocks."""
    try:
        with open(mount / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError:
        pass


def test_a_full_disk_is_found_before_training(tmp_path: Path, monkeypatch) -> None:
    """The checkpoint's folder must have room for it: train trained for its epochs and then failed."""
    from danet_deploy import train
    from danet_deploy.errors import UserError

    real = os.statvfs
    monkeypatch.setattr(
        os, "statvfs", lambda path: os.statvfs_result((*real(path)[:3], 0, 0, *real(path)[5:]))
    )
    monkeypatch.setattr(train, "epoch_batches", _no_training)
    out = tmp_path / "m.pt"
    with pytest.raises(
        UserError,
        match=rf"^{out}: .*No space left on device.* free some space or write "
        rf"elsewhere$",
    ):
        train.train(train.TrainOptions(epochs=1, quiet=True, device="cpu"), out)
    assert list(tmp_path.iterdir()) == []


def _torch_save_on_a_full_disk(blob, f, *args, **kw) -> None:
    """What torch.save does when the disk fills: Python's write fails with ENOSPC, and torch
    raises a RuntimeError of its own ('unexpected pos', no 'write') with that error as context."""
    try:
        f.write(b"PK\x03\x04 half a zip")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    except OSError:
        raise RuntimeError(
            "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"
        ) from None


def test_a_failed_torch_save_is_one_line_and_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    from danet_deploy import train
    from danet_deploy.errors import UserError

    monkeypatch.setattr(torch, "save", _torch_save_on_a_full_disk)
    out = tmp_path / "m.pt"
    with pytest.raises(
        UserError,
        match=rf"^{out}: cannot write \(No space left on device\); nothing was "
        rf"replaced$",
    ):
        train.train(train.TrainOptions(epochs=1, quiet=True, device="cpu"), out)
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_that_fills_the_disk_is_one_line_and_leaves_nothing(small_disk: Path) -> None:
    """A real full file system: written to a path, torch reported 'unexpected pos 576 vs 534'."""
    from danet_deploy.checkpoint import save_checkpoint
    from danet_deploy.errors import UserError
    from danet_deploy.models import build

    model = build("digits_resnet", "da", 10)
    _fill(small_disk)
    filler = (small_disk / "filler").stat().st_size
    (small_disk / "filler").write_bytes(b"\0" * (filler - 64 * 1024))  # room for a part of it
    out = small_disk / "m.pt"
    with pytest.raises(UserError, match=rf"^{out}: cannot write \(No space left on device\)"):
        save_checkpoint(out, model, {"spec": "digits"}, {})
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]


def _quiet_when_the_reader_is_gone(args: list[str]) -> None:
    """The reader of stdout has gone before the result is written: like Unix tools, the command
    ends with SIGPIPE's status and says nothing, not even at exit."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "danet_deploy", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 141 and err == b"", err


def test_a_reader_that_stops_early_ends_the_command_quietly() -> None:
    _quiet_when_the_reader_is_gone(["profiles"])


@pytest.mark.slow
def test_report_into_head_ends_quietly(trained_digits: Path) -> None:
    _quiet_when_the_reader_is_gone(["report", str(trained_digits), "-n", "4"])
    cmd = f"{sys.executable} -m danet_deploy report {trained_digits} -n 4 --wide | head -1"
    proc = subprocess.run(
        ["bash", "-o", "pipefail", "-c", cmd],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert proc.stderr == "" and proc.stdout.count("\n") == 1, proc.stderr
    assert proc.returncode in (0, 141)  # 0: the whole table fitted in the pipe before head left


def _torch_is_loading(pid: int) -> bool:
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def test_ctrl_c_while_the_command_starts_ends_it_without_a_traceback() -> None:
    """Start-up imports torch for a second or two: Ctrl-C then printed a KeyboardInterrupt
    traceback. The signal is sent once torch's library is mapped, i.e. inside the import."""
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-m", "danet_deploy", "--help"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        deadline = time.monotonic() + 60
        while (
            not _torch_is_loading(proc.pid) and proc.poll() is None and time.monotonic() < deadline
        ):
            time.sleep(0.001)
        assert proc.poll() is None, "the command ended before torch was loaded"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGINT and out == "" and err == "", err


# ---- 2. one line for every bad input --------------------------------------------------------------------------


def _checkpoint_with(trained: Path, tmp_path: Path, **changes) -> Path:
    blob = torch.load(trained, weights_only=True)
    blob.update(changes)
    path = tmp_path / "changed.pt"
    torch.save(blob, path)
    return path


def _netx(path: Path, drop: str | None = None, **fields) -> Path:
    """A two-layer netx file (input 4 -> dense CUBA 3) with ``fields`` of the dense layer's neuron
    replaced and ``drop`` removed."""
    with h5py.File(path, "w") as f:
        layers = f.create_group("layer")
        g = layers.create_group("0")
        g["type"], g["shape"] = np.array([b"input"]), np.array([4])
        d = layers.create_group("1")
        d["type"], d["shape"] = np.array([b"dense"]), np.array([3])
        d["weight"] = np.full((3, 4), 50)  # enough for the neurons to fire
        n = d.create_group("neuron")
        values = {
            "type": np.array([b"CUBA"]),
            "iDecay": 1024,
            "vDecay": 128,
            "vThMant": 80,
            **fields,
        }
        for key, value in values.items():
            if key != drop:
                n[key] = value
        if drop == "shape":
            del d["shape"]
    return path


def _profile(tmp_path: Path, section: str, key: str, value: str) -> Path:
    text = (Path(__file__).parents[1] / "danet_deploy" / "hw_profiles" / "loihi2.toml").read_text()
    lines = [
        f"{key} = {{ value = {value}," + line.split(",", 1)[1]
        if line.startswith(f"{key} =")
        else line
        for line in text.splitlines()
    ]
    path = tmp_path / f"bad_{key}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    "key, value, accepted",
    [
        ("weight_bits", "16", False),  # other rounding: exactly 8
        ("decay_bits", "16", False),  # other decay arithmetic: exactly 12
        ("state_bits", "16", False),
        ("threshold_bits", "12", False),
        ("bias_mantissa_bits", "8", False),
        ("graded_payload_bits", "16", False),
        ("state_bits", "32", True),  # a wider chip holds every value the program makes
        ("threshold_bits", "20", True),
        ("graded_payload_bits", "32", True),
    ],
)
def test_a_chip_profile_is_held_to_the_widths_the_compiler_writes(
    tmp_path: Path, key: str, value: str, accepted: bool
) -> None:
    """Each width was read and ignored (issue 33): a chip of 16-bit weights compiled to 8."""
    from danet_deploy.errors import UserError
    from danet_deploy.profiles import load_profile

    path = _profile(tmp_path, "constraints", key, value)
    if accepted:
        assert load_profile(path).limit(key) == int(value)
        return
    with pytest.raises(UserError) as refused:
        load_profile(path)
    message = str(refused.value)
    assert message.startswith(f"{path}: constraints.{key} = {value}: the compiler writes ")
    assert "\n" not in message and "must say" in message


def test_a_profile_stating_output_axons_per_core_compiles_as_without_and_is_told(
    tmp_path: Path, capsys
) -> None:
    """``output_axons_per_core`` was required and read by nothing (issue 33): the built-in
    profiles no longer state it, and a user's profile that does is read without it, stderr
    saying so once; it compiles to the same program (docs/compile.md §5)."""
    from danet_deploy.pipeline import export

    text = (Path(__file__).parents[1] / "danet_deploy" / "hw_profiles" / "loihi2.toml").read_text()
    assert "output_axons" not in text
    stating = tmp_path / "with_output_axons.toml"
    figure = 'output_axons_per_core = { value = 4096, unit = "count", source = "x", confidence = "estimate" }'
    stating.write_text(text.replace("[constraints]\n", f"[constraints]\n{figure}\n"))
    graph, data = _tiny_nir(tmp_path / "g.nir"), _spikes(tmp_path / "x.pt", steps=4)
    manifests = [
        json.loads(
            (
                export(graph, "loihi2-sim", tmp_path / name, profile=profile, data=f"tensor:{data}")
                / "manifest.json"
            ).read_text()
        )
        for name, profile in (("builtin", "loihi2"), ("stating", str(stating)))
    ]
    note = f"{stating}: constraints.output_axons_per_core is not used ("
    assert capsys.readouterr().err.count(note) == 1
    for key in ("core_mapping", "quantisation", "profile_estimates"):
        assert manifests[0][key] == manifests[1][key], key


BAD_INPUTS = {
    "config-string": lambda t, d: (
        ["simulate", str(_checkpoint_with(t, d, config="digits")), "-n", "4"],
        ["'config' is a str"],
    ),
    "state-dict-mismatch": lambda t, d: (
        [
            "simulate",
            str(
                _checkpoint_with(
                    t,
                    d,
                    state_dict={
                        **torch.load(t, weights_only=True)["state_dict"],
                        "stem.conv.weight": torch.zeros(3),
                    },
                )
            ),
            "-n",
            "4",
        ],
        ["'stem.conv.weight'", "(3,)"],
    ),
    "nir-dt-text": lambda t, d: (
        [
            "simulate",
            str(_tiny_nir(d / "g.nir", dt="abc")),
            "--data",
            f"tensor:{_spikes(d / 'x.pt')}",
            "-T",
            "2",
        ],
        ["metadata dt 'abc'"],
    ),
    "nir-timesteps-text": lambda t, d: (
        [
            "simulate",
            str(_tiny_nir(d / "g.nir", timesteps="four")),
            "--data",
            f"tensor:{_spikes(d / 'x.pt')}",
        ],
        ["metadata timesteps 'four'"],
    ),
    "nir-timesteps-0": lambda t, d: (
        ["export", str(_tiny_nir(d / "g.nir", dt=1e-3, timesteps=0))],
        ["metadata timesteps 0"],
    ),
    "nir-no-output": lambda t, d: (["export", str(_nir_without(d, "out"))], ["no Output node"]),
    "nir-empty": lambda t, d: (["export", str(_empty_nir(d))], ["no nodes"]),
    "manifest-invalid": lambda t, d: (
        ["simulate", str(_export_dir(t, d, "{not json")), "-n", "4"],
        ["manifest.json", "not a readable export manifest"],
    ),
    "manifest-empty": lambda t, d: (
        ["simulate", str(_export_dir(t, d, "{}")), "-n", "4"],
        ["manifest.json", "not a danet-deploy export manifest"],
    ),
    "tensor-empty": lambda t, d: (
        ["simulate", str(t), "--data", f"tensor:{_empty_tensor(d)}"],
        ["no samples"],
    ),
    "labels-negative": lambda t, d: (
        ["train", "--epochs", "1", "--data", f"tensor:{_labelled(d, -1)}", "-o", str(d / "m.pt")],
        ["negative values"],
    ),
    "labels-out-of-range": lambda t, d: (
        ["simulate", str(t), "--data", f"tensor:{_labelled(d, 12)}"],
        ["labels go up to 12", "10 outputs"],
    ),
    "netx-no-vthmant": lambda t, d: (
        ["export", str(_netx(d / "n.net", drop="vThMant"))],
        ["layer 1", "'vThMant'"],
    ),
    "netx-no-shape": lambda t, d: (
        ["export", str(_netx(d / "n.net", drop="shape"))],
        ["layer 1", "'shape'"],
    ),
    "netx-huge-shape": lambda t, d: (
        ["export", str(_netx_shape(d, 10**9))],
        ["layer 1", "more than"],
    ),
    "netx-vthmant-bytes": lambda t, d: (
        ["export", str(_netx(d / "n.net", vThMant=b"abc"))],
        ["layer 1"],
    ),
    "netx-empty-file": lambda t, d: (
        ["export", str(_touch(d / "n.net"))],
        ["not a readable netx file", "empty"],
    ),
    "netx-not-hdf5": lambda t, d: (
        ["simulate", str(_touch(d / "n.net", b"plain text")), "--data", "digits"],
        ["not a readable netx file"],
    ),
    "profile-neurons-0": lambda t, d: (
        [
            "export",
            str(t),
            "--target",
            "loihi2-sim",
            "-p",
            str(_profile(d, "constraints", "neurons_per_core", "0")),
        ],
        ["neurons_per_core", "whole number of at least 1"],
    ),
    "profile-neurons-half": lambda t, d: (
        [
            "export",
            str(t),
            "--target",
            "loihi2-sim",
            "-p",
            str(_profile(d, "constraints", "neurons_per_core", "0.5")),
        ],
        ["neurons_per_core"],
    ),
    "profile-cores-0": lambda t, d: (
        ["report", str(t), "-n", "4", "-p", str(_profile(d, "constraints", "cores_per_chip", "0"))],
        ["cores_per_chip"],
    ),
    "profile-energy-nan": lambda t, d: (
        ["report", str(t), "-n", "4", "-p", str(_profile(d, "energy", "synaptic_op", "nan"))],
        ["synaptic_op", "finite"],
    ),
    "profile-energy-inf": lambda t, d: (
        ["report", str(t), "-n", "4", "-p", str(_profile(d, "energy", "synaptic_op", "inf"))],
        ["synaptic_op", "finite"],
    ),
    "profile-weight-bits-0": lambda t, d: (
        ["report", str(t), "-n", "4", "-p", str(_profile(d, "constraints", "weight_bits", "0"))],
        ["weight_bits"],
    ),
    "resume-other-framework": lambda t, d: (
        ["train", "--framework", "lava-dl", "--resume", str(t), "-o", str(d / "m.pt")],
        ["trained with snntorch"],
    ),
    "write-parent-is-file": lambda t, d: (
        ["report", str(t), "-n", "4", "-o", str(_touch(d / "f") / "r.json")],
        ["is not a directory"],
    ),
    "write-proc": lambda t, d: (
        ["report", str(t), "-n", "4", "-o", "/proc/danet-report.json"],
        ["/proc"],
    ),
}


def _touch(path: Path, content: bytes = b"") -> Path:
    path.write_bytes(content)
    return path


def _nir_without(d: Path, node: str) -> Path:
    path = _tiny_nir(d / "full.nir", dt=1e-3, timesteps=2)
    graph = nir.read(path)
    graph.nodes.pop(node)
    graph.edges = [e for e in graph.edges if node not in e]
    nir.write(d / "g.nir", graph)
    return d / "g.nir"


def _empty_nir(d: Path) -> Path:
    nir.write(d / "g.nir", nir.NIRGraph(nodes={}, edges=[], type_check=False))
    return d / "g.nir"


def _export_dir(trained: Path, d: Path, manifest: str) -> Path:
    out = d / "e"
    run_cli("export", str(trained), "-o", str(out), check=True)
    (out / "manifest.json").write_text(manifest)
    return out


def _empty_tensor(d: Path) -> Path:
    torch.save(
        {"inputs": torch.zeros(0, 1, 8, 8), "labels": torch.zeros(0, dtype=torch.long)}, d / "x.pt"
    )
    return d / "x.pt"


def _labelled(d: Path, label: int) -> Path:
    ds = torch.rand(70, 1, 8, 8)
    labels = torch.arange(70) % 10
    labels[-3] = label
    torch.save({"inputs": ds, "labels": labels}, d / "x.pt")
    return d / "x.pt"


def _netx_shape(d: Path, n: int) -> Path:
    path = _netx(d / "n.net")
    with h5py.File(path, "a") as f:
        del f["layer/1/shape"]
        f["layer/1/shape"] = np.array([n])
    return path


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_a_bad_input_gets_one_line(trained_digits: Path, tmp_path: Path, case: str) -> None:
    args, expected = BAD_INPUTS[case](trained_digits, tmp_path)
    one_line_error(run_cli(*args), *expected)


@pytest.mark.parametrize(
    "args,expected",
    [
        (["simulate", "M", "--dt", "0"], "--dt"),
        (["simulate", "M", "--dt", "1e308"], "--dt"),
        (["simulate", "M", "--dt", "inf"], "--dt"),
        (["train", "--lr", "nan", "-o", "O"], "--lr"),
        (["compare", "--connections", ""], "--connections"),
        (["compare", "--connections", ","], "--connections"),
        (["compare", "--connections", "da,plain,da"], "given more than once"),
    ],
)
def test_bad_usage_exits_2_without_a_traceback(
    trained_digits: Path, tmp_path: Path, args: list[str], expected: str
) -> None:
    args = [
        str(trained_digits) if a == "M" else str(tmp_path / "o.pt") if a == "O" else a for a in args
    ]
    proc = run_cli(*args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and expected in proc.stderr, (
        proc.stderr
    )


@pytest.mark.slow
def test_a_read_only_place_is_refused_before_training(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(
        ["mount", "--bind", "-o", "ro", str(ro), str(ro)], capture_output=True
    ).returncode:
        pytest.skip("cannot make a read-only bind mount here (needs root)")
    try:
        t0 = time.monotonic()
        one_line_error(
            run_cli("train", "--epochs", "30", "-o", str(ro / "m.pt")), str(ro), "Read-only"
        )
        one_line_error(
            run_cli("compare", "--connections", "da", "--models-dir", str(ro / "models")),
            "Read-only",
        )
        one_line_error(
            run_cli(
                "compare",
                "--connections",
                "da",
                "--models-dir",
                str(tmp_path / "models"),
                "-o",
                str(ro / "c.json"),
            ),
            "Read-only",
        )
        assert time.monotonic() - t0 < 60 and not (tmp_path / "models").exists()
    finally:
        subprocess.run(["umount", str(ro)], check=True)


@pytest.mark.slow
def test_results_that_cannot_reach_stdout_fail_in_one_line(trained_digits: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "danet_deploy",
        "simulate",
        str(trained_digits),
        "-n",
        "4",
        "--json",
    ]
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            cmd, stdout=full, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL
        )
    one_line_error(proc, "standard output", "No space left on device")
    closed = subprocess.run(
        ["sh", "-c", " ".join(cmd) + " >&-"],
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    one_line_error(closed, "standard output is closed")


# ---- 3. the right reference -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_export_finds_its_checkpoint_from_any_directory_and_notices_a_replaced_one(
    trained_digits: Path, trained_plain: Path, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(trained_digits, project / "model.pt")
    run_cli("export", "model.pt", "--target", "loihi2-sim", cwd=project, check=True)
    here = json.loads(
        run_cli("simulate", "model.loihi2-sim", "--json", cwd=project, check=True).stdout
    )
    there = json.loads(
        run_cli("simulate", "project/model.loihi2-sim", "--json", cwd=tmp_path, check=True).stdout
    )
    assert here["reference_accuracy"] == there["reference_accuracy"]
    shutil.copy(trained_plain, project / "model.pt")  # another network under the same name
    proc = run_cli("simulate", "project/model.loihi2-sim", "--json", cwd=tmp_path, check=True)
    assert "has changed since the export" in proc.stderr and "graph.nir" in proc.stderr
    graph_nir = json.loads(
        run_cli("simulate", str(project / "model.loihi2-sim"), "--json", check=True).stdout
    )
    assert graph_nir["reference_accuracy"] == json.loads(proc.stdout)["reference_accuracy"]


def test_export_of_a_nir_file_writes_the_dt_it_compiled_with(tmp_path: Path) -> None:
    graph = _tiny_nir(tmp_path / "g.nir", dt=1e-4, timesteps=4)
    run_cli(
        "export",
        str(graph),
        "--target",
        "loihi2-sim",
        "--dt",
        "2e-4",
        "-o",
        str(tmp_path / "e"),
        check=True,
    )
    assert float(nir.read(tmp_path / "e" / "graph.nir").metadata["dt"]) == 2e-4
    assert json.loads((tmp_path / "e" / "manifest.json").read_text())["dt"] == 2e-4


# ---- 4. messages a user can act on ----------------------------------------------------------------------------


def test_a_malicious_pickle_is_refused_without_advice_to_load_it_unsafely(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (os.system, ("true",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "danet-deploy/1", "config": Payload()}, path)
    proc = run_cli("simulate", str(path), "-n", "4")
    one_line_error(proc, str(path), "refused", "never runs code")
    assert "weights_only" not in proc.stderr


def test_a_non_checkpoint_is_named_without_torch_advice(tmp_path: Path) -> None:
    path = _touch(tmp_path / "m.pt", b"not a checkpoint")
    proc = run_cli("simulate", str(path), "-n", "4")
    one_line_error(proc, str(path), "not a danet-deploy checkpoint")
    assert "mmap" not in proc.stderr


def test_a_netx_file_simulates_without_warnings(tmp_path: Path) -> None:
    torch.save(
        {"inputs": (torch.rand(4, 6, 4) < 0.5).float(), "labels": torch.zeros(4, dtype=torch.long)},
        tmp_path / "x.pt",
    )
    proc = run_cli(
        "simulate",
        str(_netx(tmp_path / "n.net")),
        "--data",
        f"tensor:{tmp_path / 'x.pt'}",
        check=True,
    )
    assert "Warning" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


@pytest.mark.parametrize(
    "command,remedy", [("simulate", "-T"), ("report", "[N, T, "), ("export", "[N, T, ")]
)
def test_static_data_for_a_graph_without_time_steps_names_a_remedy_the_command_has(
    tmp_path: Path, command: str, remedy: str
) -> None:
    """report and export were told to "pass --timesteps", an option neither has."""
    graph = _tiny_nir(tmp_path / "g.nir", dt=1e-3)  # records no time steps
    data = f"tensor:{_spikes(tmp_path / 'x.pt')}"  # static samples [N, 4]
    extra = {
        "simulate": [],
        "report": ["-n", "4"],
        "export": ["--target", "loihi2-sim", "-o", str(tmp_path / "e")],
    }[command]
    proc = run_cli(command, str(graph), "--data", data, *extra)
    one_line_error(proc, "records no time steps", remedy)
    assert "--timesteps" not in proc.stderr


# ---- 7. tables that fit the terminal --------------------------------------------------------------------------


class _Terminal:
    """A text stream that says it is a terminal."""

    def __init__(self) -> None:
        self.text = ""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    "columns,shown",
    [
        (80, ("name", "neurons", "cores", "spikes", "sops", "dynamic", "total")),
        (
            120,
            (
                "name",
                "connection",
                "neurons",
                "cores",
                "spikes",
                "sops",
                "dynamic",
                "static",
                "total",
            ),
        ),
    ],
)
def test_the_report_table_fits_the_terminal_and_keeps_every_column_elsewhere(
    trained_digits: Path, columns: int, shown: tuple[str, ...], monkeypatch
) -> None:
    from danet_deploy.progress import fitted
    from danet_deploy.pipeline import build_report
    from danet_deploy.report import TABLE_LAYOUTS, as_table

    rep = build_report(trained_digits, "loihi2", "digits", samples=8, show_progress=False)
    monkeypatch.setenv("COLUMNS", str(columns))
    on_terminal = _strip_ansi(
        fitted(lambda cols: as_table(rep, cols), TABLE_LAYOUTS, stream=_Terminal())
    )
    lines = on_terminal.splitlines()
    assert max(len(line) for line in lines) <= columns
    header = next(line for line in lines if line.split()[:1] == ["name"])
    assert header.split() == list(shown)  # whole headings, none broken
    assert len([line for line in lines if "stem.sn" in line]) == 1, (
        "a layer's row wrapped onto two lines"
    )
    piped = fitted(lambda cols: as_table(rep, cols), TABLE_LAYOUTS, stream=None)
    assert "graded ops" in piped and "neuron updates" in piped and "\x1b[" not in piped
    wide = _strip_ansi(
        fitted(lambda cols: as_table(rep, cols), TABLE_LAYOUTS, wide=True, stream=_Terminal())
    )
    assert "graded ops" in wide


def _strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_every_option_explains_itself() -> None:
    from danet_deploy.cli import main

    silent = [
        (name, p.opts)
        for name, cmd in main.commands.items()
        for p in cmd.params
        if p.param_type_name == "option" and not p.help
    ]
    assert silent == []
