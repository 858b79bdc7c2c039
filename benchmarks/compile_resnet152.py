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
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_inputs(arch: str, ckpt: Path, data: Path, samples: int) -> None:
    """The checkpoint (seeded random DA-ResNet weights) and its calibration images. Run in a
    child process, so that this one never imports torch (see :func:`run_measured`)."""
    import torch

    from danet_deploy.checkpoint import save_checkpoint
    from danet_deploy.models import build

    torch.manual_seed(0)
    model = build(arch, "da", 1000).eval()
    save_checkpoint(ckpt, model, {"spec": f"tensor:{data}"}, {"test_accuracy": 0.0})
    torch.save(
        {
            "inputs": torch.randn(samples, 3, 224, 224),
            "labels": torch.zeros(samples, dtype=torch.long),
        },
        data,
    )


def run_measured(
    cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None, quiet: bool = False
) -> tuple[float, int]:
    """Wall seconds and peak resident bytes of one child process. Its own peak (``wait4``), not
    the largest of all children; and this process stays small, because a child started by
    ``vfork`` + ``exec`` inherits its parent's peak as its own starting one (Linux).
    ``quiet``: the child's output is dropped."""
    t0 = time.perf_counter()
    drop = subprocess.DEVNULL if quiet else None
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=drop, stderr=drop)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(
        status
    )  # reaped here: Popen must not wait for it again
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed with exit status {proc.returncode}")
    return time.perf_counter() - t0, usage.ru_maxrss * 1024  # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet152")
    ap.add_argument("--target", default="loihi2")
    ap.add_argument("--calibration-samples", type=int, default=2)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument(
        "--write-inputs", action="store_true", help=argparse.SUPPRESS
    )  # the child's part
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="danet-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    ckpt, data = work / f"da_{args.arch}.pt", work / "calibration.pt"
    if args.write_inputs:
        return write_inputs(args.arch, ckpt, data, args.calibration_samples)
    run_measured(
        [
            sys.executable,
            __file__,
            "--write-inputs",
            "--workdir",
            str(work),
            "--arch",
            args.arch,
            "--calibration-samples",
            str(args.calibration_samples),
        ]
    )
    # what Python with torch and the toolchain imported holds before the export reads anything (left
    # without the interpreter's teardown, which alone takes 0.13 GiB once torch is imported)
    _, baseline = run_measured(
        [sys.executable, "-c", "import os, danet_deploy.pipeline; os._exit(0)"]
    )
    wall, peak = run_measured(
        [
            sys.executable,
            "-m",
            "danet_deploy",
            "export",
            str(ckpt),
            "--target",
            args.target,
            "--calibration-samples",
            str(args.calibration_samples),
            "-o",
            str(work / "out"),
            "--force",
        ]
    )
    size = ckpt.stat().st_size
    manifest = json.loads((work / "out" / "manifest.json").read_text())
    print(
        f"compile DA-{args.arch} for {args.target} ({args.calibration_samples} calibration samples): {wall:.1f} s "
        f"wall (goal <= 30 s), peak resident memory "
        f"{peak / 2**30:.2f} GiB for a {size / 2**20:.0f} MiB checkpoint = {peak / size:.2f}x (goal <= 4x), "
        f"lowering chosen: {manifest['lowering']}, pipeline latency {manifest['pipeline_latency']} steps"
    )
    own = peak - baseline
    print(
        f"  of that peak, {baseline / 2**30:.2f} GiB is the interpreter with torch and danet_deploy "
        f"imported; the export's own {own / 2**30:.2f} GiB = {own / size:.2f}x the checkpoint"
    )
    for mode, cost in manifest["lowering_costs"].items():
        print(
            f"  {mode:6s}: {cost['neurons']:,} neurons, {cost['synapses']:,} synapses, {cost['cores']:,} cores, "
            f"{cost['chips']} chips, {len(cost['violations'])} limit violations"
        )
    cm = manifest["core_mapping"]
    print(
        f"  mapped: {cm['neurons']:,} neurons, {cm['synapses']:,} synapses, {cm['cores']:,} cores "
        f"on {cm['chips']} chips"
    )


if __name__ == "__main__":
    main()
