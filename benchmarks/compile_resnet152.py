"""Benchmark: compile DA-ResNet-152 (ImageNet shapes, 1000 classes) for Loihi 2.

Goals: export (quantise + map + write) in <= 30 s on 2 cores with a peak resident memory of
at most 4x the checkpoint (Lava execution excluded). Prints the wall time, the peak memory of
the export process beside the checkpoint's size and their ratio (and how much of it the
interpreter holds once torch is imported), the lowering chosen, and the
mapping (neurons, synapses, cores, chips) for both lowerings. Calibration uses two random images
(``--calibration-samples``: as many; the export's default is 32).
The synapse count is the exact number of (input, output) pairs with a nonzero quantised
weight (every conv unrolled); the cores count each conv kernel once per core, as Loihi 2's
compiler stores it (docs/compile.md §4).

    .venv/bin/python benchmarks/compile_resnet152.py [--arch resnet152] [--calibration-samples 2] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
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
    ap.add_argument("--target", default="loihi2")
    ap.add_argument("--calibration-samples", type=int, default=2)
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="danet-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = build(args.arch, "da", 1000).eval()
    ckpt = work / f"da_{args.arch}.pt"
    data = work / "calibration.pt"
    save_checkpoint(ckpt, model, {"spec": f"tensor:{data}"}, {"test_accuracy": 0.0})
    torch.save({"inputs": torch.randn(args.calibration_samples, 3, 224, 224),
                "labels": torch.zeros(args.calibration_samples, dtype=torch.long)}, data)
    del model
    # what Python with torch and the toolchain imported holds before the export reads anything
    subprocess.run([sys.executable, "-c", "import danet_deploy.export"], check=True)
    baseline = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux: KiB
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "danet_deploy", "export", str(ckpt), "--target", args.target,
                    "--calibration-samples", str(args.calibration_samples), "-o", str(work / "out")], check=True)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux: KiB
    size = ckpt.stat().st_size
    manifest = json.loads((work / "out" / "manifest.json").read_text())
    print(f"compile DA-{args.arch} for {args.target} ({args.calibration_samples} calibration samples): {wall:.1f} s "
          f"wall (goal <= 30 s), peak resident memory "
          f"{peak / 2**30:.2f} GiB for a {size / 2**20:.0f} MiB checkpoint = {peak / size:.1f}x (goal <= 4x), "
          f"lowering chosen: {manifest['lowering']}, pipeline latency {manifest['pipeline_latency']} steps")
    own = peak - baseline
    print(f"  of that peak, {baseline / 2**30:.2f} GiB is the interpreter with torch and danet_deploy "
          f"imported; the export's own {own / 2**30:.2f} GiB = {own / size:.1f}x the checkpoint")
    for mode, cost in manifest["lowering_costs"].items():
        print(f"  {mode:6s}: {cost['neurons']:,} neurons, {cost['synapses']:,} synapses, {cost['cores']:,} cores, "
              f"{cost['chips']} chips, {len(cost['violations'])} limit violations")
    cm = manifest["core_mapping"]
    print(f"  mapped: {cm['neurons']:,} neurons, {cm['synapses']:,} synapses, {cm['cores']:,} cores "
          f"on {cm['chips']} chips")


if __name__ == "__main__":
    main()
