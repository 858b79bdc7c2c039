"""Benchmark: a user's own module in, beside our own checkpoint (issue 32).

Goal: ``danet-deploy export package.module:factory`` of SpikingJelly's ``sew_resnet50`` (cnf ADD,
IFNode, multi-step, BatchNorm unfused, exactly as SpikingJelly builds it; ImageNet shapes, T = 4)
to ``loihi2-sim`` takes at most 2x the wall time and peak memory of exporting our own DA-ResNet-50
checkpoint to ``loihi2-sim``. Both run as fresh processes with the same two calibration images;
each peak is that process's own (``wait4``). The module's export includes tracing it
(``from_torch``), folding its BatchNorm and writing its graph.nir.

    .venv/bin/python benchmarks/from_torch_resnet50.py [--calibration-samples 2] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from compile_resnet152 import run_measured

FACTORY = '''\
"""SpikingJelly's SEW-ResNet-50 as SpikingJelly builds it (the benchmark's module MODEL)."""
import torch
from spikingjelly.activation_based import functional, neuron, surrogate
from spikingjelly.activation_based.model import sew_resnet


def sew_resnet50():
    torch.manual_seed(0)
    net = sew_resnet.sew_resnet50(cnf="ADD", spiking_neuron=neuron.IFNode, surrogate_function=surrogate.ATan(),
                                  detach_reset=True)
    functional.set_step_mode(net, "m")
    return net.eval()
'''


def export_command(model: str, out: Path, data: Path, samples: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "danet_deploy",
        "export",
        model,
        "--target",
        "loihi2-sim",
        "--data",
        f"tensor:{data}",
        "--calibration-samples",
        str(samples),
        "-o",
        str(out),
        "--force",
    ]


def summary(out: Path) -> str:
    cm = json.loads((out / "manifest.json").read_text())["core_mapping"]
    return f"{cm['neurons']:,} neurons, {cm['synapses']:,} synapses, {cm['cores']:,} cores"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calibration-samples", type=int, default=2)
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="danet-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    ckpt, data = work / "da_resnet50.pt", work / "calibration.pt"
    run_measured(
        [
            sys.executable,
            str(Path(__file__).with_name("compile_resnet152.py")),
            "--write-inputs",
            "--workdir",
            str(work),
            "--arch",
            "resnet50",
            "--calibration-samples",
            str(args.calibration_samples),
        ]
    )
    (work / "jelly_nets.py").write_text(FACTORY)
    ours = run_measured(export_command(str(ckpt), work / "da", data, args.calibration_samples))
    # the module runs the steps the checkpoint records
    theirs = run_measured(
        export_command("jelly_nets:sew_resnet50", work / "sew", data, args.calibration_samples)
        + [
            "--input-shape",
            "3,224,224",
            "-T",
            str(json.loads((work / "da" / "manifest.json").read_text())["timesteps"]),
        ],
        cwd=work,
    )
    print(
        f"export --target loihi2-sim, ImageNet shapes, {args.calibration_samples} calibration images, 2 cores:"
    )
    for name, (wall, peak), out in (
        ("DA-ResNet-50 checkpoint", ours, work / "da"),
        ("SpikingJelly sew_resnet50 module", theirs, work / "sew"),
    ):
        print(f"  {name:34s} {wall:6.1f} s wall, peak {peak / 2**30:5.2f} GiB; {summary(out)}")
    print(
        f"  module / checkpoint: time {theirs[0] / ours[0]:.2f}x, peak memory {theirs[1] / ours[1]:.2f}x "
        f"(goal <= 2x each)"
    )


if __name__ == "__main__":
    main()
