"""Benchmark: the compiler and the fast simulator against another checkout, side by side.

A change below every stage (the reset rules, the chip's number record, the population kinds)
must leave both no slower and no larger (docs/compile.md §7). Two workloads, each compiled by
``danet-deploy export`` and then run by the fast simulator, by this checkout and by the one in
``--baseline DIR`` (``PYTHONPATH=DIR``), in alternation, ``--repeats`` times each:

* ``resnet20``: DA-ResNet-20 on CIFAR shapes (seeded random weights, 3x32x32, T 4), the
  vectorised path (LIF without current memory);
* ``rsynaptic``: snnTorch's recurrent CUBA neuron (64 -> 256 recurrent -> 10 Leaky, 100
  steps, reset to zero), the step-by-step path.

Printed: each run's best wall time and its peak resident memory (the child's own, ``wait4``), and
this checkout's ratios to the baseline's. The simulator's time is measured inside its process
(program read, run, scores), after imports.

    .venv/bin/python benchmarks/fast_simulator.py --baseline /path/to/old/checkout [--repeats 3]
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

SAMPLES = {"resnet20": 512, "rsynaptic": 2048}
SIMULATE = """
import json, sys, time, torch
from danet_deploy.ir.program import read_program
from danet_deploy.simulator.fixed import FixedSimulator
torch.set_num_threads(2)
t0 = time.perf_counter()
program = read_program(sys.argv[1] + "/program.h5")
x = torch.load(sys.argv[2])["inputs"]
scores = FixedSimulator(program).scores(x)
result = {"seconds": time.perf_counter() - t0, "checksum": float(scores.double().sum())}
open(sys.argv[3], "w").write(json.dumps(result))
"""


def write_inputs(work: Path) -> None:
    """The two workloads' model files and their data (in a child: this process stays small)."""
    import nir
    import snntorch as snn
    import torch
    from snntorch.export_nir import export_to_nir

    from danet_deploy.checkpoint import save_checkpoint
    from danet_deploy.models import build

    torch.manual_seed(0)
    images = torch.rand(SAMPLES["resnet20"], 3, 32, 32)
    torch.save(
        {"inputs": images, "labels": torch.zeros(len(images), dtype=torch.long)}, work / "images.pt"
    )
    model = build("resnet20", "da", 10).eval()
    save_checkpoint(work / "resnet20.pt", model, {"spec": f"tensor:{work / 'images.pt'}"}, {})

    def full(n: int, v: float) -> torch.Tensor:  # snnTorch's exporter needs vectors
        return torch.full((n,), v)

    kw = dict(
        init_hidden=True, reset_mechanism="zero"
    )  # compiled with Loihi's reset (--reset zero)
    net = torch.nn.Sequential(
        torch.nn.Linear(64, 256),
        snn.RSynaptic(
            alpha=full(256, 0.8),
            beta=full(256, 0.9),
            threshold=full(256, 1.0),
            linear_features=256,
            **kw,
        ),
        torch.nn.Linear(256, 10),
        snn.Leaky(beta=full(10, 0.9), threshold=full(10, 1.0), **kw),
    )
    nir.write(work / "rsynaptic.nir", export_to_nir(net, torch.zeros(64)))
    spikes = (torch.rand(SAMPLES["rsynaptic"], 100, 64) < 0.1).float()
    torch.save(
        {"inputs": spikes, "labels": torch.zeros(len(spikes), dtype=torch.long)}, work / "spikes.pt"
    )


def compile_and_run(code: Path | None, work: Path, workload: str, tag: str) -> dict[str, float]:
    """One export and one simulation of ``workload`` by the checkout ``code`` (None: this one)."""
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = str(code)
    model, data = (
        (work / "resnet20.pt", work / "images.pt")
        if workload == "resnet20"
        else (work / "rsynaptic.nir", work / "spikes.pt")
    )
    out = work / f"{workload}-{tag}"
    cmd = [
        sys.executable,
        "-m",
        "danet_deploy",
        "export",
        str(model),
        "-t",
        "loihi2-sim",
        "--data",
        f"tensor:{data}",
        "-o",
        str(out),
        "--force",
    ]
    if workload == "rsynaptic":
        cmd += ["--reset", "zero", "--dt", "1"]
    compile_s, compile_peak = run_measured(
        cmd, env=env, cwd=Path(tempfile.gettempdir()), quiet=True
    )
    timing = out.with_suffix(".json")
    _, sim_peak = run_measured(
        [sys.executable, "-c", SIMULATE, str(out), str(data), str(timing)],
        env=env,
        cwd=Path(tempfile.gettempdir()),
    )
    result = json.loads(timing.read_text())
    return {
        "compile_s": compile_s,
        "compile_peak": compile_peak,
        "simulate_s": result["seconds"],
        "simulate_peak": sim_peak,
        "checksum": result["checksum"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", type=Path, help="the checkout to compare with (required)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--write-inputs", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="danet-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.write_inputs:
        return write_inputs(work)
    if args.baseline is None:
        ap.error("--baseline DIR is required: the checkout to run side by side")
    here = Path(__file__).resolve().parent.parent
    run_measured(
        [sys.executable, __file__, "--write-inputs", "--workdir", str(work)],
        env={**os.environ, "PYTHONPATH": str(here)},
    )
    for workload in SAMPLES:
        best: dict[str, dict[str, float]] = {}
        for _ in range(args.repeats):
            for tag, code in (("this", here), ("baseline", args.baseline)):
                run = compile_and_run(code, work, workload, tag)
                kept = best.setdefault(tag, run)
                for key in ("compile_s", "simulate_s", "compile_peak", "simulate_peak"):
                    kept[key] = min(kept[key], run[key])
        this, base = best["this"], best["baseline"]
        same = "same scores" if this["checksum"] == base["checksum"] else "SCORES DIFFER"
        print(f"{workload} ({SAMPLES[workload]} samples, best of {args.repeats}; {same}):")
        for tag, run in best.items():
            print(
                f"  {tag}: compile {run['compile_s']:.2f} s, peak {run['compile_peak'] / 2**20:.0f} "
                f"MiB; simulate {run['simulate_s']:.2f} s, peak {run['simulate_peak'] / 2**20:.0f} MiB"
            )
        print(
            f"  this / baseline: compile time {this['compile_s'] / base['compile_s']:.2f}x, memory "
            f"{this['compile_peak'] / base['compile_peak']:.2f}x; simulate time "
            f"{this['simulate_s'] / base['simulate_s']:.2f}x, memory "
            f"{this['simulate_peak'] / base['simulate_peak']:.2f}x"
        )


if __name__ == "__main__":
    main()
