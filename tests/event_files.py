"""Tiny event datasets written in each dataset's own on-disk format (tonic's layout), with
the events they hold, so tests can count frames by hand. Nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from danet_deploy.events import cifar10dvs_test_count


def random_events(
    rng: np.random.Generator, n: int, x: int, y: int, duration_us: int
) -> dict[str, np.ndarray]:
    """``n`` events, sorted by time, on an ``x`` by ``y`` sensor with two polarities."""
    return {
        "x": rng.integers(0, x, n),
        "y": rng.integers(0, y, n),
        "p": rng.integers(0, 2, n),
        "t": np.sort(rng.integers(0, duration_us, n)),
    }


def write_nmnist_bin(path: Path, ev: dict[str, np.ndarray]) -> None:
    """N-MNIST's 40-bit events: x, y, polarity bit 7 with time bits 22..16, time 15..8, 7..0."""
    t = ev["t"].astype(np.uint32)
    assert int(t.max()) < 2**23, "N-MNIST stamps hold 23 bits"
    raw = np.stack(
        [ev["x"], ev["y"], (ev["p"] << 7) | (t >> 16), (t >> 8) & 255, t & 255], 1
    ).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw.tofile(path)


def write_nmnist(
    root: Path, per_class: int, seed: int = 0, events: tuple[int, int] = (50, 200)
) -> dict[str, list[tuple[dict, int]]]:
    """``root/NMNIST/{Train,Test}/<digit>/NNNNN.bin``; returns each split's (events, label) in file order."""
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {}
    for split, folder in (("train", "Train"), ("test", "Test")):
        out[split] = []
        for label in range(10):
            for k in range(per_class):
                ev = random_events(rng, int(rng.integers(*events)), 34, 34, 300_000)
                write_nmnist_bin(root / "NMNIST" / folder / str(label) / f"{k:05d}.bin", ev)
                out[split].append((ev, label))
    return out


def write_dvsgesture(
    root: Path, users: int, seed: int = 0, events: tuple[int, int] = (200, 600)
) -> dict[str, list[tuple[dict, int]]]:
    """tonic's DVS Gesture: ``ibmGesture{Train,Test}/userNN_<lighting>/<label>.npy`` rows of
    ``x, y, p, t`` with t in milliseconds; each split's recordings in sorted path order."""
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {}
    for split, folder in (("train", "ibmGestureTrain"), ("test", "ibmGestureTest")):
        out[split] = []
        for user in range(1, users + 1):
            for label in range(11):
                ev = random_events(rng, int(rng.integers(*events)), 128, 128, 6_000)
                ev["t"] = ev["t"].astype(np.float64)
                path = root / "DVSGesture" / folder / f"user{user:02d}_fluorescent" / f"{label}.npy"
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, np.stack([ev["x"], ev["y"], ev["p"], ev["t"]], 1).astype(np.float64))
                out[split].append((str(path), {**ev, "t": ev["t"] * 1000}, label))
        out[split] = [(ev, label) for _, ev, label in sorted(out[split], key=lambda r: r[0])]
    return out


def write_gesture_rows(path: Path, rows: np.ndarray) -> None:
    """One DVS Gesture ``.npy`` file of rows ``x, y, p, t`` (t in milliseconds), as given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.asarray(rows, dtype=np.float64))


def write_shd_file(
    path: Path, times: list[np.ndarray], units: list[np.ndarray], labels: list[int]
) -> None:
    """One SHD HDF5 file holding the given recordings (times in seconds) as they are."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        t = f.create_dataset("spikes/times", (len(times),), dtype=h5py.vlen_dtype(np.float32))
        u = f.create_dataset("spikes/units", (len(units),), dtype=h5py.vlen_dtype(np.uint16))
        for i, (ti, ui) in enumerate(zip(times, units)):
            t[i], u[i] = np.asarray(ti, np.float32), np.asarray(ui, np.uint16)
        f["labels"] = np.array(labels, dtype=np.uint16)


def write_shd(root: Path, per_split: int, seed: int = 0) -> dict[str, list[tuple[dict, int]]]:
    """``root/SHD/shd_{train,test}.h5``: ragged ``spikes/times`` (s) and ``spikes/units``, ``labels``."""
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {}
    (root / "SHD").mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        recs = []
        for i in range(per_split):
            n = int(rng.integers(100, 400))
            recs.append(
                (
                    {
                        "x": rng.integers(0, 700, n),
                        "p": np.zeros(n, int),
                        "t": np.sort(rng.integers(0, 1_000_000, n)),
                    },
                    int(i % 20),
                )
            )
        with h5py.File(root / "SHD" / f"shd_{split}.h5", "w") as f:
            times = f.create_dataset(
                "spikes/times", (per_split,), dtype=h5py.vlen_dtype(np.float32)
            )
            units = f.create_dataset("spikes/units", (per_split,), dtype=h5py.vlen_dtype(np.uint16))
            for i, (ev, _) in enumerate(recs):
                times[i] = (ev["t"] / 1e6).astype(np.float32)
                units[i] = ev["x"].astype(np.uint16)
            f["labels"] = np.array([label for _, label in recs], dtype=np.uint16)
            f["extra/keys"] = np.array([f"digit-{k}".encode() for k in range(20)])
            f["extra/speaker"] = np.zeros(per_split, dtype=np.uint16)
        out[split] = recs
    return out


def frames_by_hand(ev: dict[str, np.ndarray], bins: int, shape: tuple[int, int, int]) -> np.ndarray:
    """tonic's ``ToFrame(n_time_bins=bins)`` counted by hand: bins of ``(t_last - t_first) //
    bins`` microseconds from the first event; events past the last bin are not counted."""
    t = ev["t"].astype(np.int64)
    width = (t[-1] - t[0]) // bins
    frames = np.zeros((bins, *shape), dtype=np.int64)
    y = ev.get("y", np.zeros_like(ev["x"]))
    for ti, x, yi, p in zip(t, ev["x"], y, ev["p"]):
        b = (ti - t[0]) // width
        if b < bins:
            frames[b, p, yi, x] += 1
    return frames


AEDAT4_MAGIC = b"#!AER-DAT4.0\r\n"
AEDAT4_STREAMS = (
    '<dv version="2.0"><node name="outInfo" path="/mainloop/Recorder/outInfo/">'
    '<node name="0" path="/mainloop/Recorder/outInfo/0/">'
    '<attr key="compression" type="string">NONE</attr>'
    '<attr key="originalOutputName" type="string">events</attr>'
    '<attr key="typeIdentifier" type="string">EVTS</attr>'
    '<node name="info" path="/mainloop/Recorder/outInfo/0/info/">'
    '<attr key="sizeX" type="int">128</attr><attr key="sizeY" type="int">128</attr>'
    "</node></node></node></dv>"
)


def _aedat4_header() -> bytes:
    """The ``Ioheader`` flatbuffer (ioheader.fbs: compression None, file_data_position -1,
    the stream description), laid out by hand: root offset, identifier, vtable, table, string."""
    text = AEDAT4_STREAMS.encode()
    vtable = np.array([10, 20, 4, 8, 16], "<u2").tobytes()  # sizes, then the three fields' offsets
    table = (
        np.array([24 - 8], "<i4").tobytes()
        + np.array([0], "<i4").tobytes()
        + np.array([-1], "<i8").tobytes()
        + np.array([44 - 40], "<u4").tobytes()
    )
    buf = np.array([24], "<u4").tobytes() + b"IOHE" + vtable + b"\0" * 6 + table
    buf += np.array([len(text)], "<u4").tobytes() + text + b"\0"
    return buf + b"\0" * (-len(buf) % 8)


def _aedat4_events(ev: dict[str, np.ndarray]) -> bytes:
    """A size-prefixed ``EventPacket`` flatbuffer (events.fbs): 16-byte ``Event`` structs
    ``t: int64, x: int16, y: int16, on: bool`` in a vector aligned to 8."""
    n = len(ev["t"])
    events = np.zeros(
        n,
        np.dtype(
            {
                "names": ["t", "x", "y", "on"],
                "formats": ["<i8", "<i2", "<i2", "?"],
                "offsets": [0, 8, 10, 12],
                "itemsize": 16,
            }
        ),
    )
    events["t"], events["x"], events["y"], events["on"] = (
        ev["t"],
        ev["x"],
        ev["y"],
        ev["p"].astype(bool),
    )
    body = (
        np.array([20 - 4], "<u4").tobytes()
        + b"EVTS"
        + np.array([6, 8, 4], "<u2").tobytes()
        + b"\0" * 2
        + np.array([20 - 12], "<i4").tobytes()
        + np.array([28 - 24], "<u4").tobytes()
        + np.array([n], "<u4").tobytes()
        + events.tobytes()
    )
    return np.array([len(body)], "<u4").tobytes() + body


def write_aedat4(path: Path, ev: dict[str, np.ndarray], packets: int = 2) -> None:
    """An AEDAT 4 file of one 128 x 128 event stream (id 0), uncompressed, in ``packets``
    packets, as the ``aedat`` decoder tonic uses reads it."""
    out = AEDAT4_MAGIC
    header = _aedat4_header()
    out += np.array([len(header)], "<u4").tobytes() + header
    for part in np.array_split(np.arange(len(ev["t"])), packets):
        packet = _aedat4_events({k: v[part] for k, v in ev.items()})
        out += np.array([0, len(packet)], "<u4").tobytes() + packet
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(out)


CIFAR10DVS_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


def write_cifar10dvs(
    root: Path, per_class: int, seed: int = 0
) -> dict[str, list[tuple[dict, int]]]:
    """``root/CIFAR10DVS/<class>/cifar10_<class>_N.aedat4`` (names sort by ``N`` below 10); the
    last tenth of each class is test, as danet-deploy splits it."""
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {"train": [], "test": []}
    for label, name in enumerate(CIFAR10DVS_CLASSES):
        n_test = cifar10dvs_test_count(per_class)
        for k in range(per_class):
            ev = random_events(rng, int(rng.integers(200, 500)), 128, 128, 1_000_000)
            write_aedat4(root / "CIFAR10DVS" / name / f"cifar10_{name}_{k}.aedat4", ev)
            out["test" if k >= per_class - n_test else "train"].append((ev, label))
    return out
