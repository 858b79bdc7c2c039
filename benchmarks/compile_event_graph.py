"""Benchmark: compile a generated event-camera conv net whose calibration data have many steps.

The float interpreter that calibration runs holds every step of the layers waiting for a reader
(docs/compile.md §1), so its memory grows with the data's time steps. This generates a CSNN on a
2x64x64 sensor (conv, an average pool, conv, a dense readout; seeded random weights) and 32
calibration samples of ``--timesteps`` steps of random spikes, and prints the export's wall time
and peak resident memory (its own process, ``wait4``) beside the graph file's size. With
``--baseline DIR`` the same export runs on the checkout in DIR too (``PYTHONPATH=DIR``), side by
side in one run, and the ratios are printed.

    .venv/bin/python benchmarks/compile_event_graph.py [--timesteps 64] [--baseline /path/to/old/checkout]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from compile_resnet152 import run_measured  # noqa: E402

SENSOR = (2, 64, 64)


def write_inputs(graph: Path, data: Path, timesteps: int, samples: int) -> None:
    """The graph and its calibration spikes (run in a child, so that this process stays small)."""
    import nir
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    c, h, w = SENSOR

    def conv(cin: int, cout: int, size: int) -> nir.Conv2d:
        weight = rng.normal(0, 2 / np.sqrt(cin * 9), (cout, cin, 3, 3))
        return nir.Conv2d(
            input_shape=(size, size),
            weight=weight,
            stride=1,
            padding=1,
            dilation=1,
            groups=1,
            bias=np.zeros(cout),
        )

    def neurons(*shape: int) -> nir.IF:
        return nir.IF(r=np.ones(shape), v_threshold=np.ones(shape))

    half = h // 2
    pool = nir.AvgPool2d(
        kernel_size=np.array([3, 3]), stride=np.array([2, 2]), padding=np.array([1, 1])
    )
    layers = {
        "conv1": conv(c, 32, h),
        "if1": neurons(32, h, w),
        "pool": pool,
        "conv2": conv(32, 64, half),
        "if2": neurons(64, half, half),
        "flat": nir.Flatten(
            input_type={"input": np.array([64, half, half])}, start_dim=0, end_dim=-1
        ),
        "fc": nir.Affine(rng.normal(0, 0.01, (10, 64 * half * half)), np.zeros(10)),
        "out": neurons(10),
    }
    nodes = {
        "input": nir.Input(input_type={"input": np.array(SENSOR)}),
        **layers,
        "output": nir.Output(output_type={"output": np.array([10])}),
    }
    order = list(nodes)
    nir.write(
        graph, nir.NIRGraph(nodes=nodes, edges=list(zip(order[:-1], order[1:])), type_check=False)
    )
    torch.manual_seed(0)
    torch.save(
        {
            "inputs": (torch.rand(samples, timesteps, *SENSOR) < 0.1).float(),
            "labels": torch.zeros(samples, dtype=torch.long),
        },
        data,
    )


def export(checkout: Path | None, graph: Path, data: Path, out: Path) -> tuple[float, int, dict]:
    """Wall seconds, peak bytes and manifest of one export, on ``checkout``'s code if given."""
    env = dict(os.environ, PYTHONPATH=str(checkout)) if checkout else None
    cmd = [
        sys.executable,
        "-m",
        "danet_deploy",
        "export",
        str(graph),
        "--target",
        "loihi2-sim",
        "--dt",
        "1",
        "--reset",
        "zero",
        "--data",
        f"tensor:{data}",
        "-o",
        str(out),
        "--force",
    ]
    wall, peak = run_measured(cmd, env=env)
    return wall, peak, json.loads((out / "manifest.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timesteps", type=int, default=64)
    ap.add_argument(
        "--samples", type=int, default=32, help="calibration samples (the export's default)"
    )
    ap.add_argument("--baseline", type=Path, help="another checkout to run side by side")
    ap.add_argument("--workdir", type=Path)
    ap.add_argument(
        "--write-inputs", action="store_true", help=argparse.SUPPRESS
    )  # the child's part
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="danet-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    graph, data = work / "csnn.nir", work / "spikes.pt"
    if args.write_inputs:
        return write_inputs(graph, data, args.timesteps, args.samples)
    run_measured(
        [
            sys.executable,
            __file__,
            "--write-inputs",
            "--workdir",
            str(work),
            "--timesteps",
            str(args.timesteps),
            "--samples",
            str(args.samples),
        ]
    )
    size = graph.stat().st_size
    runs = {"this checkout": export(None, graph, data, work / "out")}
    if args.baseline:
        runs[f"baseline {args.baseline}"] = export(
            args.baseline, graph, data, work / "out-baseline"
        )
    for name, (wall, peak, manifest) in runs.items():
        cm = manifest["core_mapping"]
        print(
            f"{name}: {wall:.1f} s wall, peak {peak / 2**30:.2f} GiB ({peak / size:.1f}x the "
            f"{size / 2**20:.0f} MiB graph); {manifest['lowering']} lowering, {cm['synapses']:,} synapses, "
            f"{args.samples} calibration samples of {args.timesteps} steps"
        )
    if args.baseline:
        (wall, peak, _), (wall0, peak0, _) = runs.values()
        print(
            f"this checkout / baseline: time {wall / wall0:.2f}x, peak memory {peak / peak0:.2f}x"
        )


if __name__ == "__main__":
    main()
