"""Event datasets as tonic keeps them: N-MNIST, DVS128 Gesture, CIFAR10-DVS and SHD (docs/events.md).

``PATH`` in ``nmnist:PATH`` (and the others) is the folder a tonic user passes as ``save_to``
(holding ``NMNIST/``) or that dataset folder itself. Recordings are read with the readers
tonic's dataset classes use (``tonic.io``) and binned by tonic's ``ToFrame``; the classes
themselves download when an archive is missing, so they are not called. Every recording is
checked against the dataset's sensor and classes. Framed recordings are cached on disk in
entries of danet-deploy's own, keyed by the framing options.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import hashlib
import json
import math
import os
import re
import stat
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import UserError
from .progress import progress_bar
from .signals import raise_if_stopped, stops_deferred

CACHE_ENV = "DANET_DEPLOY_CACHE"
CACHE_FORMAT = (
    2  # bump when what a cache entry holds changes (2: our own entries, not tonic's cache)
)
FRAMINGS = {"bins": "n_time_bins", "window": "time_window", "events": "event_count"}

Recording = tuple[Path, int, int]  # file, index within it (SHD's HDF5 holds many), label


@dataclass(frozen=True)
class EventSource:
    """One dataset: its tonic class (folder name, sensor, classes), where each split's files
    lie and how one recording is read."""

    kind: str
    tonic_class: str
    splits: dict[str, str]  # split -> file or folder under the dataset folder ("" = one pool)
    layout: str  # shown when a folder is missing
    sizes: dict[str, int]  # recordings in the full published split
    num_classes: int
    published: str
    list_split: Callable[[Path, str], list[Recording]]
    read: Callable[[Recording], np.ndarray]

    def tonic(self) -> Any:
        import tonic.datasets

        return getattr(tonic.datasets, self.tonic_class)

    def sensor_size(self) -> tuple[int, int, int]:
        """tonic's ``(x, y, polarities)``."""
        return tuple(self.tonic().sensor_size)

    def input_shape(self) -> list[int]:
        """``[polarities, y, x]``: polarities as channels, the sensor's own resolution."""
        x, y, p = self.sensor_size()
        return [p, y, x]


class BadRecording(ValueError):
    """What is wrong with one recording's events, said by danet-deploy (the caller names the file)."""


WHOLE_NUMBER = re.compile(r"[0-9]+")


def _label(name: str, file: Path, kind: str, what: str) -> int:
    """The class a file's own name or its folder's name gives (tonic takes it with ``int()``)."""
    classes = SOURCES[kind].num_classes
    if not WHOLE_NUMBER.fullmatch(name) or int(name) >= classes:
        raise UserError(
            f"{file}: {what} {name!r} is not a {kind} class (0 to {classes - 1}); "
            f"move the file out of the dataset (tonic's layout: {SOURCES[kind].layout})"
        )
    return int(name)


def _nmnist_split(folder: Path, split: str) -> list[Recording]:
    """``<split>/<digit>/NNNNN.bin``: the class folder is the label."""
    out = []
    for f in sorted(folder.rglob("*.bin")):
        if f.parent.parent != folder:
            raise UserError(
                f"{f}: not in a class folder {folder}/<digit>/ (tonic's layout: "
                f"{SOURCES['nmnist'].layout}); move it into one or out of the dataset"
            )
        out.append((f, 0, _label(f.parent.name, f, "nmnist", "its class folder")))
    return out


def _read_nmnist(rec: Recording) -> np.ndarray:
    from tonic.io import read_mnist_file

    return read_mnist_file(str(rec[0]), dtype=_source("nmnist").tonic().dtype)


def _gesture_split(folder: Path, split: str) -> list[Recording]:
    """``userNN_<lighting>/<label>.npy``: the file name is the label."""
    return [
        (f, 0, _label(f.stem, f, "dvsgesture", "the file name"))
        for f in sorted(folder.rglob("*.npy"))
    ]


def _read_gesture(rec: Recording) -> np.ndarray:
    """Rows of ``x, y, p, t`` (milliseconds) in tonic's event dtype; a value that the cast to
    the dtype would change (a fraction, an overflow, NaN) is refused, not cast."""
    from numpy.lib import recfunctions

    rows = np.load(rec[0], allow_pickle=False)
    if not isinstance(rows, np.ndarray):
        raise BadRecording("is a .npz archive, not one array of rows x, y, p, t")
    if rows.ndim != 2 or rows.shape[1] != 4 or rows.dtype.kind not in "iuf":
        raise BadRecording(
            f"holds a {rows.dtype} array of shape {list(rows.shape)}, not rows of x, y, p, t"
        )
    rows = rows.astype(np.float64)
    rows[:, 3] *= 1000  # tonic's DVSGesture: the files' milliseconds to microseconds
    with np.errstate(invalid="ignore", over="ignore"):
        events = recfunctions.unstructured_to_structured(rows, _source("dvsgesture").tonic().dtype)
    for column, name in enumerate("xypt"):  # t: tonic drops the microseconds' fractions
        changed = ~(np.abs(events[name] - rows[:, column]) < (1 if name == "t" else 1e-9))
        if changed.any():
            i = int(changed.argmax())
            value = rows[i, column] / (1000 if name == "t" else 1)
            raise BadRecording(
                f"event {i} has t = {value:g} ms, not a time"
                if name == "t"
                else f"event {i} has {name} = {value:g}, not a whole number on the sensor"
            )
    return events


CIFAR10DVS_TEST_PER_CLASS = (
    0.1  # no published split: the last 10 % of each class (sorted names) is test
)


def cifar10dvs_test_count(files: int) -> int:
    """Test recordings of a class of ``files``: 10 % rounded, and at least one test and one
    training recording once the class has two (docs/events.md)."""
    if files < 2:
        return 0
    return min(max(round(files * CIFAR10DVS_TEST_PER_CLASS), 1), files - 1)


def _cifar10dvs_split(folder: Path, split: str) -> list[Recording]:
    classes = _source("cifar10dvs").tonic().classes
    out: list[Recording] = []
    for name, label in sorted(classes.items(), key=lambda kv: kv[1]):
        files = sorted((folder / name).glob("*.aedat4"))
        n_test = cifar10dvs_test_count(len(files))
        chosen = files[len(files) - n_test :] if split == "test" else files[: len(files) - n_test]
        out += [(f, 0, label) for f in chosen]
    return out


def _read_cifar10dvs(rec: Recording) -> np.ndarray:
    try:
        from tonic.io import read_aedat4

        events = read_aedat4(str(rec[0]))
    except ImportError:
        raise UserError(
            "cifar10dvs: reading .aedat4 files needs the 'aedat' package: pip install aedat"
        ) from None
    except Exception as e:  # noqa: BLE001 - the decoder raises RuntimeError, tonic a bare Exception
        raise BadRecording(f"not an AEDAT 4 event file ({type(e).__name__}: {e})") from None
    if len(events.dtype.names or ()) != 4:
        raise BadRecording(f"its event stream has the fields {events.dtype.names}, not t, x, y, on")
    events.dtype.names = ["t", "x", "y", "p"]  # as tonic's CIFAR10DVS names them
    return events


def _shd_split(file: Path, split: str) -> list[Recording]:
    """One recording per entry of ``labels``; the file's arrays must agree in length."""
    import h5py

    try:
        with h5py.File(file, "r") as f:
            labels = np.asarray(f["labels"][()])
            lengths = {len(f["spikes/times"]), len(f["spikes/units"]), len(labels)}
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise UserError(
            f"{file}: not a readable SHD file ({_one_line(e)}); tonic's layout: "
            f"{SOURCES['shd'].layout}"
        ) from None
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or len(lengths) != 1:
        raise UserError(
            f"{file}: 'labels' ({labels.dtype}, shape {list(labels.shape)}) and 'spikes/times' "
            f"and 'spikes/units' must be one entry per recording"
        )
    return [(file, i, int(label)) for i, label in enumerate(labels)]


def _read_shd(rec: Recording) -> np.ndarray:
    import h5py
    from tonic.io import make_structured_array

    with h5py.File(rec[0], "r") as f:  # as tonic's HSD: seconds to microseconds, one polarity
        times, units = np.asarray(f["spikes/times"][rec[1]]), np.asarray(f["spikes/units"][rec[1]])
    if times.shape != units.shape or times.ndim != 1:
        raise BadRecording(f"its {len(times)} spike times and {len(units)} units do not pair up")
    _check_finite(times, "t")
    return make_structured_array(
        times.astype(np.float64) * 1e6, units, 1, dtype=_source("shd").tonic().dtype
    )


def _check_finite(values: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(bad.argmax())
        raise BadRecording(f"event {i} has {name} = {values[i]}")


def checked_events(events: np.ndarray, sensor: tuple[int, int, int]) -> np.ndarray:
    """The events of a recording in time order, once every coordinate lies on the sensor and
    every time is a finite non-negative number: out of range, ``ToFrame`` would wrap a negative
    x to the far edge or fail in numpy. Out-of-order times are sorted (stable), as framing
    assumes them."""
    names = events.dtype.names or ()
    missing = [n for n in ("x", "p", "t") if n not in names]
    if missing:
        raise BadRecording(f"its events have no {', '.join(missing)} field")
    for name, size in zip("xyp", sensor):
        if name not in names:
            continue  # SHD: no y axis
        values = events[name]
        if name == "p" and size == 1:  # tonic: one polarity, whatever its value (SHD's is 1)
            bad = values != values[0] if len(values) else values.astype(bool)
            range_ = f"the one polarity {values[0] if len(values) else 0} of the sensor"
        else:
            bad, range_ = (values < 0) | (values >= size), f"outside the sensor's 0 to {size - 1}"
        if bad.any():
            i = int(bad.argmax())
            raise BadRecording(f"event {i} has {name} = {values[i]}, {range_}")
    t = events["t"]
    bad = ~np.isfinite(t) | (t < 0)
    if bad.any():
        i = int(bad.argmax())
        raise BadRecording(f"event {i} has t = {t[i]}, not a time (finite, at least 0)")
    if len(t) > 1 and (np.diff(t) < 0).any():
        events = events[np.argsort(t, kind="stable")]
    return events


def _one_line(e: BaseException) -> str:
    """An exception as one short line: its type and its text with the line breaks folded."""
    return f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"


SOURCES: dict[str, EventSource] = {
    s.kind: s
    for s in (
        EventSource(
            "nmnist",
            "NMNIST",
            {"train": "Train", "test": "Test"},
            "NMNIST/Train/<digit>/*.bin",
            {"train": 60000, "test": 10000},
            10,
            "https://www.garrickorchard.com/datasets/n-mnist",
            _nmnist_split,
            _read_nmnist,
        ),
        EventSource(
            "dvsgesture",
            "DVSGesture",
            {"train": "ibmGestureTrain", "test": "ibmGestureTest"},
            "DVSGesture/ibmGestureTrain/userNN_<lighting>/<label>.npy (tonic's ibmGestureTrain.tar.gz)",
            {"train": 1077, "test": 264},
            11,
            "https://research.ibm.com/interactive/dvsgesture/",
            _gesture_split,
            _read_gesture,
        ),
        EventSource(
            "cifar10dvs",
            "CIFAR10DVS",
            {"train": "", "test": ""},
            "CIFAR10DVS/<class>/*.aedat4",
            {"train": 9000, "test": 1000},
            10,
            "https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671",
            _cifar10dvs_split,
            _read_cifar10dvs,
        ),
        EventSource(
            "shd",
            "SHD",
            {"train": "shd_train.h5", "test": "shd_test.h5"},
            "SHD/shd_train.h5, SHD/shd_test.h5",
            {"train": 8156, "test": 2264},
            20,
            "https://zenkelab.org/resources/spiking-heidelberg-datasets-shd/",
            _shd_split,
            _read_shd,
        ),
    )
}


def _source(kind: str) -> EventSource:
    return SOURCES[kind]


MAX_OPTION = 10**12  # a window of 11.6 days in microseconds; more events than any recording holds


@dataclass(frozen=True)
class Framing:
    """How a recording becomes ``timesteps`` frames of event counts per polarity and pixel.

    ``by``: ``bins`` (tonic ``ToFrame(n_time_bins=value)``: the recording cut into equal
    time bins, ``value`` = ``timesteps``), ``window`` (``time_window=value`` microseconds) or
    ``events`` (``event_count=value``). A window or event count gives as many frames as the
    recording fills: the first ``timesteps`` are kept and a shorter recording ends in empty
    frames, so every sample is ``[timesteps, polarities, y, x]``.
    """

    by: str
    value: float
    timesteps: int

    def __post_init__(self) -> None:
        from .data import MAX_TIMESTEPS  # data imports this module

        if self.by not in FRAMINGS:
            raise UserError(
                f"unknown framing {self.by!r}; valid: {', '.join(f'{k}=N' for k in FRAMINGS)}"
            )
        whole = self.by != "window"  # counts are whole numbers
        if not (
            math.isfinite(self.value)
            and 0 < self.value <= MAX_OPTION
            and (not whole or self.value == int(self.value))
        ):
            least = "a whole number from 1" if whole else "a number of microseconds above 0"
            raise UserError(
                f"framing {self.by}={self.value:g}: must be {least} to {MAX_OPTION:.0e}"
            )
        steps = self.timesteps
        if not (math.isfinite(steps) and steps == int(steps) and 1 <= steps <= MAX_TIMESTEPS):
            raise UserError(
                f"{steps:g} time steps: event data is framed into 1 to {MAX_TIMESTEPS:,} steps "
                f"(danet-deploy's limit for a run); use fewer (-T, or ?bins=N)"
            )
        object.__setattr__(self, "timesteps", int(steps))
        if whole:
            object.__setattr__(self, "value", int(self.value))
        if self.by == "bins" and self.value != self.timesteps:
            raise UserError(
                f"framing bins={self.value:g}: the frames are the time steps, so bins must equal "
                f"the model's time steps ({self.timesteps}); leave bins out or use -T {self.value:g}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {"by": self.by, FRAMINGS[self.by]: self.value, "timesteps": self.timesteps}

    def frames(self, events: np.ndarray, sensor_size: tuple[int, int, int]) -> np.ndarray:
        """``[timesteps, polarities, y, x]`` int16 event counts (tonic ``ToFrame``)."""
        from tonic.transforms import ToFrame

        x, y, p = sensor_size
        out = np.zeros((self.timesteps, p, y, x), dtype=np.int16)
        if len(events) == 0:
            return out
        events, end = self._first_frames(events)
        framed = ToFrame(sensor_size=sensor_size, end_time=end, **{FRAMINGS[self.by]: self.value})(
            events
        )
        framed = framed.reshape(len(framed), p, y, x)[
            : self.timesteps
        ]  # SHD's [n, 1, 700] has no y axis
        out[: len(framed)] = framed
        return out

    def _first_frames(self, events: np.ndarray) -> tuple[np.ndarray, float | None]:
        """The events and the end time that give tonic's first ``timesteps`` frames and no more:
        tonic frames a whole recording, and a short window or a small count would make millions
        of frames (memory) to keep a few. An end time half a window past the last kept frame
        makes tonic count exactly ``timesteps`` windows, whatever the rounding."""
        if self.by == "events":
            return events[: self.value * self.timesteps], None
        if self.by == "window":
            end = float(events["t"][0]) + (self.timesteps + 0.5) * self.value
            return events, (end if float(events["t"][-1]) > end else None)
        return events, None


def parse(spec: str, timesteps: int | None) -> tuple[str, Path, Framing]:
    """``kind:PATH[?by=value]`` -> the dataset, its folder and the framing for ``timesteps``."""
    kind, _, rest = spec.partition(":")
    path, _, option = rest.partition("?")
    if not path:
        raise UserError(f"dataset {kind!r} needs a path: {kind}:/data/dir (tonic's save_to folder)")
    if option:
        by, eq, value = option.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not eq or by not in FRAMINGS or math.isnan(number):
            raise UserError(
                f"{spec}: framing option {option!r} is not one of "
                f"{', '.join(f'{k}=N' for k in FRAMINGS)}"
            )
    else:
        by, number = "bins", float(timesteps or 0)
    if timesteps is None and by == "bins" and option:
        timesteps = (
            number  # ?bins=N names the steps of a graph that records none (Framing checks it)
        )
    if timesteps is None:
        raise UserError(
            f"{spec}: event data is framed into the model's time steps, and this graph records "
            f"none: add ?bins=N to the data spec (or pass -T where the command takes it)"
        )
    return kind, Path(path).expanduser(), Framing(by, number, timesteps)


def dataset_folder(source: EventSource, root: Path) -> Path:
    """``root`` as tonic's ``save_to`` (holding the dataset's folder) or that folder itself."""
    if not root.exists():
        raise UserError(
            f"{source.kind}: dataset path not found: {root} (tonic's layout: {root}/{source.layout}); "
            f"the dataset is published at {source.published}"
        )
    inner = root / source.tonic_class
    return inner if inner.is_dir() else root


def recordings(source: EventSource, folder: Path, split: str) -> list[Recording]:
    """Every recording of ``split``, in a fixed order, each with a label among the dataset's
    classes; one line on stderr for a partial copy."""
    where = folder / source.splits[split]
    if not where.exists():
        raise UserError(
            f"{source.kind}: {where} is missing (tonic's layout: {folder.parent}/{source.layout}); "
            f"the dataset is published at {source.published}: download and extract it there"
        )
    found = source.list_split(where, split)
    for file, index, label in found:
        if not 0 <= label < source.num_classes:
            raise UserError(
                f"{file}: recording {index} has label {label}, not a {source.kind} class "
                f"(0 to {source.num_classes - 1})"
            )
    if not found:
        rule = (
            " (a class needs 2 recordings to give one to test)"
            if source.kind == "cifar10dvs"
            else ""
        )
        raise UserError(
            f"{source.kind}: no {split} recordings under {where}{rule} (tonic's layout: "
            f"{source.layout})"
        )
    if len(found) < source.sizes[split]:
        print(
            f"danet-deploy: {source.kind} {split}: {len(found):,} of the published {source.sizes[split]:,} "
            f"recordings under {where}",
            file=sys.stderr,
        )
    return found


def check_frame_memory(source: EventSource, framing: Framing) -> None:
    """Refuse frames that one recording cannot hold in memory: tonic's int16 frames, ours and
    the float32 sample exist at once."""
    from .data import available_memory  # data imports this module

    x, y, p = source.sensor_size()
    need = framing.timesteps * p * y * x * (2 + 2 + 4)
    available = available_memory()
    if need > available:
        raise UserError(
            f"{source.kind}: {framing.timesteps:,} frames of {p} x {y} x {x} need "
            f"{need / 2**30:,.1f} GiB per recording, {available / 2**30:,.1f} GiB is available; "
            f"use fewer time steps (-T, or ?bins=N)"
        )


class FramedRecordings(Dataset):
    """Recording ``i`` read with tonic's reader, checked against the sensor and framed."""

    def __init__(self, source: EventSource, recs: list[Recording], framing: Framing) -> None:
        self.source, self.recs, self.framing = source, recs, framing
        self.sensor = source.sensor_size()

    def __len__(self) -> int:
        return len(self.recs)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        file, index, label = self.recs[i]
        try:
            events = checked_events(self.source.read(self.recs[i]), self.sensor)
        except (OSError, ValueError, KeyError, IndexError, TypeError, EOFError) as e:
            where = f"{file} (recording {index})" if self.source.kind == "shd" else str(file)
            why = str(e) if isinstance(e, BadRecording) else _one_line(e)
            raise UserError(
                f"{where}: not a readable {self.source.kind} recording ({why}); "
                f"replace it or move it out of the dataset"
            ) from None
        return self.framing.frames(events, self.sensor), label


# ---- the frame cache (docs/events.md, "Cache") ------------------------------------------------------------------

MARKER = "danet-deploy-frames.json"  # first in every entry: who wrote it and what it holds
FRAME_FILE = re.compile(r"[0-9]+\.npz")


def _frame_name(i: int) -> str:
    return f"{i}.npz"


def _refuse(path: Path, why: str, folder: Path | None = None) -> UserError:
    """A path in the cache that danet-deploy did not make there (in entry ``folder``): it is
    neither used nor removed."""
    what = f"the folder {folder}" if folder else "it"
    return UserError(
        f"{path}: {why}; delete {what}, or point {CACHE_ENV} at another folder (docs/events.md)"
    )


def _open(path: str | Path, flags: int, dir_fd: int | None = None) -> int:
    """``os.open`` that never follows a link in the last component nor blocks on a FIFO."""
    try:
        return os.open(
            path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o600, dir_fd=dir_fd
        )
    except OSError as e:
        if e.errno == errno.ELOOP and dir_fd is None:
            raise _refuse(
                Path(path), "is a symbolic link, which the frame cache never follows"
            ) from None
        raise


def _private_folder(path: Path) -> Path:
    """``path`` (made 0700 when missing) once it is a real directory of this user that no one
    else can write in: nothing can then be planted in it, and the cache's names are ours."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise _refuse(path, "is a link or a file, not the frame cache's folder")
    if st.st_uid != os.getuid():
        raise _refuse(path, "belongs to another user: the frame cache's folder must be private")
    if st.st_mode & 0o022:  # the user's own, made under a umask of 002 (as tonic's cache was)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            os.fchmod(fd, 0o700)  # what others may have put in it is refused on reading (not ours)
        finally:
            os.close(fd)
    return path


@contextmanager
def _entry_lock(entry: Path) -> Iterator[None]:
    """Hold ``<entry>.lock`` while the entry is filled, so that one process (of torchrun's ranks)
    frames it and the others wait, then read it. The holder removes the lock before letting
    go; a waiter that wakes on a removed lock takes the new one, so nothing is left behind."""
    path = entry.with_name(entry.name + ".lock")
    while True:
        fd = _open(path, os.O_RDWR | os.O_CREAT)
        try:
            st = os.fstat(fd)
            if (
                not stat.S_ISREG(st.st_mode)
                or st.st_size
                or st.st_nlink != 1
                or st.st_uid != os.getuid()
            ):
                raise _refuse(path, "is not an empty lock file of this user")
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                now = os.lstat(path)
            except FileNotFoundError:
                continue
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                continue
            try:
                yield
            finally:
                with stops_deferred():
                    os.unlink(path)
            return
        finally:
            os.close(fd)


def _write_file(dir_fd: int, name: str, write: Callable[[Any], object]) -> None:
    """A new file ``name`` in the directory ``dir_fd``, written through a Python file object:
    a full disk is an ``OSError`` (HDF5's own driver crashed the process there)."""
    with os.fdopen(_open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, dir_fd=dir_fd), "wb") as f:
        write(f)


def _save_frames(file: Any, frames: np.ndarray) -> None:
    """``frames`` as an ``.npz`` that ``np.load`` reads, deflated at level 1: framed events are
    mostly zeros, and numpy's ``savez_compressed`` (level 6) took 2.5 times as long as framing
    a DVS Gesture recording (level 1: a quarter of it, files 1.3 times as large)."""
    with (
        zipfile.ZipFile(file, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive,
        archive.open("frames.npy", "w", force_zip64=True) as member,
    ):
        np.lib.format.write_array(member, frames, allow_pickle=False)


def _marker(entry: str, framed: FramedRecordings) -> dict[str, Any]:
    """What an entry's marker says: the tool, the format, the entry's name, the frames' shape
    and every recording's label."""
    x, y, p = framed.sensor
    return {
        "tool": "danet-deploy",
        "what": "framed event recordings",
        "format": CACHE_FORMAT,
        "entry": entry,
        "shape": [framed.framing.timesteps, p, y, x],
        "labels": [r[2] for r in framed.recs],
    }


def _remove_ours(path: Path, entry: str, made_here: bool) -> bool:
    """Remove a temporary entry folder when it is ours: a real directory of this user whose
    marker names ``entry`` (or that this process just made, or that holds no more than a marker
    being written: the frames folder is private, so only a fill of ours made it) and that holds
    only the names an entry has. Anything else is left where it is; True when it was removed."""
    try:
        fd = _open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        names = os.listdir(fd)
        if os.fstat(fd).st_uid != os.getuid() or any(
            n != MARKER and not FRAME_FILE.fullmatch(n) for n in names
        ):
            return False
        barely_begun = set(names) <= {MARKER}  # killed at mkdtemp or while writing the marker
        if not made_here and not barely_begun and _read_marker(fd).get("entry") != entry:
            return False
        for name in names:
            os.unlink(name, dir_fd=fd)
        os.rmdir(path)
    except (OSError, ValueError):
        return False
    finally:
        os.close(fd)
    return True


def _read_marker(dir_fd: int) -> dict[str, Any]:
    fd = _open(MARKER, os.O_RDONLY, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as f:
        marker = json.loads(f.read(64 << 20))
    if not isinstance(marker, dict) or marker.get("tool") != "danet-deploy":
        raise ValueError("not danet-deploy's marker")
    return marker


def _fill(framed: FramedRecordings, entry: Path, title: str) -> None:
    """Frame every recording into a private temporary folder beside ``entry`` and rename it to
    ``entry`` once complete: a stop, a full disk or a bad recording leaves no entry, and the
    temporary folder is removed."""
    tmp = None
    try:
        with stops_deferred():  # a stop while it is made would leave it unnamed
            tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
        fd = _open(tmp, os.O_RDONLY | os.O_DIRECTORY)
        try:
            marker = json.dumps(_marker(entry.name, framed)).encode()
            _write_file(fd, MARKER, lambda f: f.write(marker))
            with progress_bar(f"framing {title}", len(framed)) as advance:
                for i in range(len(framed)):
                    frames, _ = framed[i]
                    _write_file(fd, _frame_name(i), lambda f: _save_frames(f, frames))
                    advance()
        finally:
            os.close(fd)
        raise_if_stopped()  # a stop whose SystemExit was lost commits nothing
        os.rename(tmp, entry)
        tmp = None
    except OSError as e:
        raise UserError(
            f"cannot write the frame cache in {entry.parent} ({e.strerror or e}); nothing was kept; "
            f"point {CACHE_ENV} at a writable folder with space (docs/events.md)"
        ) from None
    finally:
        if tmp is not None:
            with stops_deferred():  # a second stop would leave it half removed
                _remove_ours(tmp, entry.name, made_here=True)


def _remove_stale(entry: Path) -> None:
    """Temporary folders of ``entry`` left by a process that was killed (SIGKILL, power loss):
    the caller holds the entry's lock, so no live process is filling them."""
    for path in entry.parent.glob(f".{glob.escape(entry.name)}.*"):
        _remove_ours(path, entry.name, made_here=False)


class CachedFrames(Dataset):
    """Framed recordings as float32 tensors, read from the cache entry (filled the first time)."""

    def __init__(self, framed: FramedRecordings, cache: Path, title: str) -> None:
        self.cache = cache
        try:
            _private_folder(cache.parent)
            if not os.path.lexists(cache):
                with _entry_lock(cache):
                    if not os.path.lexists(cache):
                        _remove_stale(cache)
                        _fill(framed, cache, title)
        except OSError as e:
            raise UserError(
                f"cannot write the frame cache in {cache} ({e.strerror or e}); point {CACHE_ENV} "
                f"at a writable folder with space (docs/events.md)"
            ) from None
        self.shape, self.labels = self._entry(_marker(cache.name, framed))

    def _entry(self, expected: dict[str, Any]) -> tuple[tuple[int, ...], list[int]]:
        """The frames' shape and the labels, once the entry is a real directory of this user
        whose marker is the one this run would write."""
        try:
            st = os.lstat(self.cache)
            if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
                raise _refuse(
                    self.cache, "is a link or a file, not a frame cache entry of danet-deploy"
                )
            if st.st_uid != os.getuid():
                raise _refuse(
                    self.cache, "belongs to another user, not a frame cache entry of this user"
                )
            fd = _open(self.cache, os.O_RDONLY | os.O_DIRECTORY)
            try:
                marker = _read_marker(fd)
            finally:
                os.close(fd)
        except (OSError, ValueError) as e:
            raise _refuse(
                self.cache,
                f"is not a frame cache entry of danet-deploy (no marker: {_one_line(e)})",
            ) from None
        if marker != expected:
            raise _refuse(
                self.cache, "is not the frame cache entry its name says (its marker differs)"
            )
        return tuple(marker["shape"]), marker["labels"]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path = self.cache / _frame_name(i)
        try:
            with (
                os.fdopen(_open(path, os.O_RDONLY), "rb") as f,
                np.load(f, allow_pickle=False) as npz,
            ):
                data = npz["frames"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            raise _refuse(
                path, f"is not a frame file of danet-deploy ({_one_line(e)})", self.cache
            ) from None
        if data.dtype != np.int16 or data.shape != self.shape:
            raise _refuse(
                path,
                f"holds {data.dtype} {list(data.shape)}, not the entry's int16 {list(self.shape)} "
                f"frames",
                self.cache,
            )
        return torch.from_numpy(data.astype(np.float32)), int(self.labels[i])


def cache_root() -> Path:
    """``$DANET_DEPLOY_CACHE``, else ``$XDG_CACHE_HOME/danet-deploy``, else ``~/.cache/danet-deploy``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "danet-deploy"


def cache_folder(
    source: EventSource, folder: Path, split: str, recs: list[Recording], framing: Framing
) -> Path:
    """One folder per dataset copy, split and framing: a changed option, file list or file (its size
    or modification time: a copy extracted again) is a new key."""
    import tonic

    files = {
        str(f.relative_to(folder)): [f.stat().st_size, f.stat().st_mtime_ns]
        for f in {r[0] for r in recs}
    }
    key = {
        "format": CACHE_FORMAT,
        "tonic": tonic.__version__,
        "folder": str(folder.resolve()),
        "split": split,
        "recordings": [f"{r[0].relative_to(folder)}:{r[1]}" for r in recs],
        "framing": asdict(framing),
        "files": files,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    value = f"{framing.value:g}".replace(".", "p").replace("+", "")
    return (
        cache_root()
        / "frames"
        / f"{source.kind}-{split}-{framing.by}{value}-T{framing.timesteps}-{digest}"
    )


def load_events(
    spec: str, split: str, timesteps: int | None
) -> tuple[CachedFrames, dict[str, Any]]:
    """The framed ``split`` of the event dataset ``spec`` and what a checkpoint records of it."""
    kind, root, framing = parse(spec, timesteps)
    try:
        import tonic  # noqa: F401  (only whether it is installed)
    except ImportError:
        raise UserError(
            f"{kind}: event datasets are read with tonic, which is not installed here: pip install "
            f"'tonic>=1.5,<2' (the Lava runtime: danet-deploy lava-runtime setup)"
        ) from None
    source = SOURCES[kind]
    check_frame_memory(source, framing)
    folder = dataset_folder(source, root)
    recs = recordings(source, folder, split)
    cache = cache_folder(source, folder, split, recs, framing)
    ds = CachedFrames(FramedRecordings(source, recs, framing), cache, f"{kind} {split}")
    info = {
        "name": kind,
        "input_shape": source.input_shape(),
        "num_classes": source.num_classes,
        "framing": {**framing.to_dict(), "sensor_size": list(source.sensor_size())},
    }
    return ds, info
