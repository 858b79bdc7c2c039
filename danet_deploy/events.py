"""Event datasets as tonic keeps them: N-MNIST, DVS128 Gesture, CIFAR10-DVS and SHD (docs/events.md).

``PATH`` in ``nmnist:PATH`` (and the others) is the folder a tonic user passes as ``save_to``
(holding ``NMNIST/``) or that dataset folder itself. Recordings are read with the readers
tonic's dataset classes use (``tonic.io``) and binned by tonic's ``ToFrame``; the classes
themselves download when an archive is missing, so they are not called. Framed recordings
are cached on disk by tonic's ``DiskCachedDataset``, keyed by the framing options.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import UserError
from .progress import progress_bar

CACHE_ENV = "DANET_DEPLOY_CACHE"
CACHE_FORMAT = 1  # bump when what a cached frame holds changes
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


def _files_by_label(folder: Path, pattern: str, label: Callable[[Path], int]) -> list[Recording]:
    return [(f, 0, label(f)) for f in sorted(folder.rglob(pattern))]


def _nmnist_split(folder: Path, split: str) -> list[Recording]:
    return _files_by_label(folder, "*.bin", lambda f: int(f.parent.name[-1]))  # Train/<digit>/NNNNN.bin


def _read_nmnist(rec: Recording) -> np.ndarray:
    from tonic.io import read_mnist_file

    return read_mnist_file(str(rec[0]), dtype=_source("nmnist").tonic().dtype)


def _gesture_split(folder: Path, split: str) -> list[Recording]:
    return _files_by_label(folder, "*.npy", lambda f: int(f.stem))  # userNN_lighting/<label>.npy


def _read_gesture(rec: Recording) -> np.ndarray:
    from numpy.lib import recfunctions

    events = np.load(rec[0])
    events[:, 3] *= 1000  # tonic's DVSGesture: the files' milliseconds to microseconds
    return recfunctions.unstructured_to_structured(events, _source("dvsgesture").tonic().dtype)


CIFAR10DVS_TEST_PER_CLASS = 0.1  # no published split: the last 10 % of each class (sorted names) is test


def _cifar10dvs_split(folder: Path, split: str) -> list[Recording]:
    classes = _source("cifar10dvs").tonic().classes
    out: list[Recording] = []
    for name, label in sorted(classes.items(), key=lambda kv: kv[1]):
        files = sorted((folder / name).glob("*.aedat4"))
        n_test = int(round(len(files) * CIFAR10DVS_TEST_PER_CLASS))
        chosen = files[len(files) - n_test:] if split == "test" else files[:len(files) - n_test]
        out += [(f, 0, label) for f in chosen]
    return out


def _read_cifar10dvs(rec: Recording) -> np.ndarray:
    try:
        from tonic.io import read_aedat4

        events = read_aedat4(str(rec[0]))
    except ImportError:
        raise UserError("cifar10dvs: reading .aedat4 files needs the 'aedat' package: pip install aedat") from None
    events.dtype.names = ["t", "x", "y", "p"]  # as tonic's CIFAR10DVS names them
    return events


def _shd_split(file: Path, split: str) -> list[Recording]:
    import h5py

    with h5py.File(file, "r") as f:
        labels = f["labels"][()]
    return [(file, i, int(label)) for i, label in enumerate(labels)]


def _read_shd(rec: Recording) -> np.ndarray:
    import h5py
    from tonic.io import make_structured_array

    with h5py.File(rec[0], "r") as f:  # as tonic's HSD: seconds to microseconds, one polarity
        return make_structured_array(f["spikes/times"][rec[1]].astype(np.float64) * 1e6,
                                     f["spikes/units"][rec[1]], 1, dtype=_source("shd").tonic().dtype)


SOURCES: dict[str, EventSource] = {s.kind: s for s in (
    EventSource("nmnist", "NMNIST", {"train": "Train", "test": "Test"}, "NMNIST/Train/<digit>/*.bin",
                {"train": 60000, "test": 10000}, 10, "https://www.garrickorchard.com/datasets/n-mnist",
                _nmnist_split, _read_nmnist),
    EventSource("dvsgesture", "DVSGesture", {"train": "ibmGestureTrain", "test": "ibmGestureTest"},
                "DVSGesture/ibmGestureTrain/userNN_<lighting>/<label>.npy (tonic's ibmGestureTrain.tar.gz)",
                {"train": 1077, "test": 264}, 11, "https://research.ibm.com/interactive/dvsgesture/",
                _gesture_split, _read_gesture),
    EventSource("cifar10dvs", "CIFAR10DVS", {"train": "", "test": ""}, "CIFAR10DVS/<class>/*.aedat4",
                {"train": 9000, "test": 1000}, 10, "https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671",
                _cifar10dvs_split, _read_cifar10dvs),
    EventSource("shd", "SHD", {"train": "shd_train.h5", "test": "shd_test.h5"}, "SHD/shd_train.h5, SHD/shd_test.h5",
                {"train": 8156, "test": 2264}, 20, "https://zenkelab.org/resources/spiking-heidelberg-datasets-shd/",
                _shd_split, _read_shd),
)}


def _source(kind: str) -> EventSource:
    return SOURCES[kind]


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
        if self.by not in FRAMINGS:
            raise UserError(f"unknown framing {self.by!r}; valid: {', '.join(f'{k}=N' for k in FRAMINGS)}")
        if not self.value > 0 or self.timesteps < 1:
            raise UserError(f"framing {self.by}={self.value:g} for {self.timesteps} steps: both must be positive")
        if self.by != "window":  # counts are whole numbers
            object.__setattr__(self, "value", int(self.value))
        if self.by == "bins" and self.value != self.timesteps:
            raise UserError(f"framing bins={self.value:g}: the frames are the time steps, so bins must equal "
                            f"the model's time steps ({self.timesteps}); leave bins out or use -T {self.value:g}")

    def to_dict(self) -> dict[str, Any]:
        return {"by": self.by, FRAMINGS[self.by]: self.value, "timesteps": self.timesteps}

    def frames(self, events: np.ndarray, sensor_size: tuple[int, int, int]) -> np.ndarray:
        """``[timesteps, polarities, y, x]`` int16 event counts (tonic ``ToFrame``)."""
        from tonic.transforms import ToFrame

        x, y, p = sensor_size
        out = np.zeros((self.timesteps, p, y, x), dtype=np.int16)
        if len(events) == 0:
            return out
        framed = ToFrame(sensor_size=sensor_size, **{FRAMINGS[self.by]: self.value})(events)
        framed = framed.reshape(len(framed), p, y, x)[:self.timesteps]  # SHD's [n, 1, 700] has no y axis
        out[:len(framed)] = framed
        return out


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
            raise UserError(f"{spec}: framing option {option!r} is not one of "
                            f"{', '.join(f'{k}=N' for k in FRAMINGS)}")
    else:
        by, number = "bins", float(timesteps or 0)
    if timesteps is None and by == "bins" and option:
        timesteps = int(number)  # ?bins=N names the steps of a graph that records none
    if timesteps is None:
        raise UserError(f"{spec}: event data is framed into the model's time steps, and this graph records "
                        f"none: add ?bins=N to the data spec (or pass -T where the command takes it)")
    return kind, Path(path).expanduser(), Framing(by, number, int(timesteps))


def dataset_folder(source: EventSource, root: Path) -> Path:
    """``root`` as tonic's ``save_to`` (holding the dataset's folder) or that folder itself."""
    if not root.exists():
        raise UserError(f"{source.kind}: dataset path not found: {root} (tonic's layout: {root}/{source.layout}); "
                        f"the dataset is published at {source.published}")
    inner = root / source.tonic_class
    return inner if inner.is_dir() else root


def recordings(source: EventSource, folder: Path, split: str) -> list[Recording]:
    """Every recording of ``split``, in a fixed order; one line on stderr for a partial copy."""
    where = folder / source.splits[split]
    if not where.exists():
        raise UserError(f"{source.kind}: {where} is missing (tonic's layout: {folder.parent}/{source.layout}); "
                        f"the dataset is published at {source.published}: download and extract it there")
    found = source.list_split(where, split)
    if not found:
        raise UserError(f"{source.kind}: no recordings under {where} (tonic's layout: {source.layout})")
    if len(found) < source.sizes[split]:
        print(f"danet-deploy: {source.kind} {split}: {len(found):,} of the published {source.sizes[split]:,} "
              f"recordings under {where}", file=sys.stderr)
    return found


class FramedRecordings(Dataset):
    """Recording ``i`` read with tonic's reader and framed (numpy, as tonic's cache stores it)."""

    def __init__(self, source: EventSource, recs: list[Recording], framing: Framing) -> None:
        self.source, self.recs, self.framing = source, recs, framing
        self.sensor = source.sensor_size()

    def __len__(self) -> int:
        return len(self.recs)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        try:
            events = self.source.read(self.recs[i])
        except (OSError, ValueError, KeyError, IndexError) as e:
            raise UserError(f"{self.recs[i][0]}: not a readable {self.source.kind} recording "
                            f"({type(e).__name__}: {e})") from None
        return self.framing.frames(events, self.sensor), self.recs[i][2]


class CachedFrames(Dataset):
    """Framed recordings as float32 tensors, read from tonic's disk cache once it is filled."""

    def __init__(self, framed: FramedRecordings, cache: Path, title: str) -> None:
        from tonic import DiskCachedDataset

        self.cache = cache
        try:
            self.frames = DiskCachedDataset(framed, cache_path=str(cache))
            self._fill(framed, title)
        except OSError as e:
            raise UserError(f"cannot write the frame cache in {cache} ({e.strerror or e}); point {CACHE_ENV} "
                            f"at a writable folder with space (docs/events.md)") from None

    def _fill(self, framed: FramedRecordings, title: str) -> None:
        """Frame every recording the first time (with a bar); ``complete.json`` marks a full
        cache. One process fills it: others (torchrun's ranks) wait on the lock, then read."""
        import fcntl

        marker = self.cache / "complete.json"
        if marker.exists():
            return
        with open(self.cache / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if marker.exists():
                return
            with progress_bar(f"framing {title}", len(self.frames)) as advance:
                for i in range(len(self.frames)):
                    self.frames[i]
                    advance()
            marker.write_text(json.dumps({"recordings": len(framed), "framing": framed.framing.to_dict()}))

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        data, target = self.frames[i]
        return torch.from_numpy(np.asarray(data, dtype=np.float32)), int(target)


def cache_root() -> Path:
    """``$DANET_DEPLOY_CACHE``, else ``$XDG_CACHE_HOME/danet-deploy``, else ``~/.cache/danet-deploy``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "danet-deploy"


def cache_folder(source: EventSource, folder: Path, split: str, recs: list[Recording], framing: Framing) -> Path:
    """One folder per dataset copy, split and framing: a changed option, file list or file (its size
    or modification time: a copy extracted again) is a new key."""
    import tonic

    files = {str(f.relative_to(folder)): [f.stat().st_size, f.stat().st_mtime_ns] for f in {r[0] for r in recs}}
    key = {"format": CACHE_FORMAT, "tonic": tonic.__version__, "folder": str(folder.resolve()), "split": split,
           "recordings": [f"{r[0].relative_to(folder)}:{r[1]}" for r in recs], "framing": asdict(framing),
           "files": files}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    value = f"{framing.value:g}".replace(".", "p")
    return cache_root() / "frames" / f"{source.kind}-{split}-{framing.by}{value}-T{framing.timesteps}-{digest}"


def load_events(spec: str, split: str, timesteps: int | None) -> tuple[CachedFrames, dict[str, Any]]:
    """The framed ``split`` of the event dataset ``spec`` and what a checkpoint records of it."""
    kind, root, framing = parse(spec, timesteps)
    try:
        import tonic
    except ImportError:
        raise UserError(f"{kind}: event datasets are read with tonic, which is not installed here: pip install "
                        f"'tonic>=1.5,<2' (the Lava runtime: danet-deploy lava-runtime setup)") from None
    source = SOURCES[kind]
    folder = dataset_folder(source, root)
    recs = recordings(source, folder, split)
    cache = cache_folder(source, folder, split, recs, framing)
    ds = CachedFrames(FramedRecordings(source, recs, framing), cache, f"{kind} {split}")
    info = {"name": kind, "input_shape": source.input_shape(), "num_classes": source.num_classes,
            "framing": {**framing.to_dict(), "sensor_size": list(source.sensor_size())}}
    return ds, info
