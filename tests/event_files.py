"""Tiny event datasets written in each dataset's own on-disk format (tonic's layout), with
the events they hold, so tests can count frames by hand. Nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np


def random_events(rng: np.random.Generator, n: int, x: int, y: int, duration_us: int) -> dict[str, np.ndarray]:
    """``n`` events, sorted by time, on an ``x`` by ``y`` sensor with two polarities."""
    return {"x": rng.integers(0, x, n), "y": rng.integers(0, y, n), "p": rng.integers(0, 2, n),
            "t": np.sort(rng.integers(0, duration_us, n))}


def write_nmnist_bin(path: Path, ev: dict[str, np.ndarray]) -> None:
    """N-MNIST's 40-bit events: x, y, polarity bit 7 with time bits 22..16, time 15..8, 7..0."""
    t = ev["t"].astype(np.uint32)
    assert int(t.max()) < 2**23, "N-MNIST stamps hold 23 bits"
    raw = np.stack([ev["x"], ev["y"], (ev["p"] << 7) | (t >> 16), (t >> 8) & 255, t & 255], 1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw.tofile(path)


def write_nmnist(root: Path, per_class: int, seed: int = 0, events: tuple[int, int] = (50, 200)
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


def write_dvsgesture(root: Path, users: int, seed: int = 0, events: tuple[int, int] = (200, 600)
                     ) -> dict[str, list[tuple[dict, int]]]:
    """tonic's DVS Gesture: ``ibmGesture{Train,Test}/userNN_<lighting>/<label>.npy`` rows of
    ``x, y, p, t`` with t in milliseconds."""
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
                out[split].append(({**ev, "t": ev["t"] * 1000}, label))
    return out


def write_shd(root: Path, per_split: int, seed: int = 0) -> dict[str, list[tuple[dict, int]]]:
    """``root/SHD/shd_{train,test}.h5``: ragged ``spikes/times`` (s) and ``spikes/units``, ``labels``."""
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {}
    (root / "SHD").mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        recs = []
        for i in range(per_split):
            n = int(rng.integers(100, 400))
            recs.append(({"x": rng.integers(0, 700, n), "p": np.zeros(n, int),
                          "t": np.sort(rng.integers(0, 1_000_000, n))}, int(i % 20)))
        with h5py.File(root / "SHD" / f"shd_{split}.h5", "w") as f:
            times = f.create_dataset("spikes/times", (per_split,), dtype=h5py.vlen_dtype(np.float32))
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
