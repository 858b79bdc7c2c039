"""Benchmark: event data through tonic, the framing cache's effect and one DVS Gesture epoch.

Writes a DVS Gesture-format folder (tonic's ``ibmGestureTrain/userNN_<lighting>/<label>.npy``)
of ``--users`` x 11 recordings of ``--events`` events each (300,000 by default: an assumed
size for a 6 s gesture on a 128 x 128 sensor, not a count taken from the real dataset), then
measures side by side in one run:

* framing: the first load (tonic reads and frames every recording, filling the cache) vs
  the second (the cache entry's compressed frame files are read), per recording and as a ratio;
* training: one epoch of a DA-ResNet-20 (128 x 128 input, the divide-by-4 event stem,
  ``-T`` steps) over the cached recordings, per recording and scaled to the published
  1,077 training recordings.

    OMP_NUM_THREADS=2 taskset -c 0,1 .venv/bin/python benchmarks/event_data.py [--users 3] [--events 300000] [-T 16]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.event_files writes the format
from danet_deploy.data import load_dataset
from danet_deploy.events import CACHE_ENV, SOURCES
from danet_deploy.train import TrainOptions, train
from tests.event_files import write_dvsgesture


def timed_pass(spec: str, steps: int, split: str = "train") -> tuple[float, int]:
    """Seconds to load the split and read every sample once, and the samples."""
    t0 = time.perf_counter()
    ds, _ = load_dataset(spec, split, timesteps=steps)
    for i in range(len(ds)):
        ds[i]
    return time.perf_counter() - t0, len(ds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=3, help="recordings: 11 gestures per user")
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("-T", "--timesteps", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ[CACHE_ENV] = str(root / "cache")
        write_dvsgesture(root / "data", args.users, events=(args.events, args.events + 1))
        spec = f"dvsgesture:{root / 'data'}"
        cold, n = timed_pass(spec, args.timesteps)
        warm, _ = timed_pass(spec, args.timesteps)
        print(f"framing {n} recordings of {args.events:,} events into {args.timesteps} frames:")
        print(
            f"  first run (read + ToFrame + cache write) {cold:7.2f} s  {1000 * cold / n:8.1f} ms/recording"
        )
        print(
            f"  second run (from the cache)             {warm:7.2f} s  {1000 * warm / n:8.1f} ms/recording"
        )
        print(f"  cache speed-up {cold / warm:.1f}x")
        timed_pass(spec, args.timesteps, "test")  # the epoch's test pass reads a filled cache too
        opts = TrainOptions(
            arch="resnet20",
            connection="da",
            data=spec,
            timesteps=args.timesteps,
            epochs=1,
            batch_size=args.batch_size,
            device="cpu",
            chip_epochs=0,
            quiet=True,
        )
        t0 = time.perf_counter()
        train(opts, root / "g.pt")
        seconds = time.perf_counter() - t0
        published = SOURCES["dvsgesture"].sizes["train"]
        trained = n // args.batch_size * args.batch_size
        per = seconds / trained
        print(
            f"one epoch of DA-ResNet-20 (128x128, T={args.timesteps}, batch {args.batch_size}) on {trained} "
            f"recordings: {seconds:.1f} s (with the test pass over {n}), {per:.2f} s/recording; "
            f"{published:,} recordings: about {per * published / 60:.0f} min"
        )


if __name__ == "__main__":
    main()
