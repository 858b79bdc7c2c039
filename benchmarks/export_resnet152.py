"""Benchmark: export DA-ResNet-152 (ImageNet shapes, 1000 classes) from a checkpoint to NIR.

Goal (issue 3): <= 30 s wall and peak RSS <= 3x the checkpoint size on 2 cores.
The export runs in a fresh process (`danet-deploy export`), so its peak RSS is its
own; the checkpoint is made first (random weights, eval-mode BatchNorm statistics).

    .venv/bin/python benchmarks/export_resnet152.py [--arch resnet152] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from danet_deploy.checkpoint import save_checkpoint
from danet_deploy.models import build


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet152")
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="danet-bench-"))
    ckpt = work / f"da_{args.arch}.pt"
    torch.manual_seed(0)
    model = build(args.arch, "da", 1000).eval()
    params = sum(p.numel() for p in model.parameters())
    save_checkpoint(
        ckpt, model, {"spec": "imagefolder", "input_shape": [3, 224, 224]}, {"test_accuracy": 0.0}
    )
    del model
    size = ckpt.stat().st_size
    t0 = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "danet_deploy",
            "export",
            str(ckpt),
            "--target",
            "nir",
            "-o",
            str(work / "out"),
        ],
        check=True,
    )
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux reports KiB
    nir_size = (work / "out" / "graph.nir").stat().st_size
    print(
        f"arch DA-{args.arch}: {params:,} parameters, checkpoint {size / 2**20:.1f} MiB, "
        f"graph.nir {nir_size / 2**20:.1f} MiB"
    )
    print(f"export wall time {wall:.1f} s (goal <= 30 s)")
    print(
        f"export peak RSS {peak / 2**20:.0f} MiB = {peak / size:.2f}x the checkpoint (goal <= 3x)"
    )


if __name__ == "__main__":
    main()
