"""Benchmark: the fast simulator vs Lava on the same compiled graph and data, side by side.

Trains (or reuses) the digits DANet, compiles it for loihi2-sim, then runs the same
test samples through Lava (Loihi2SimCfg, fixed point, results read through file
sinks, the best way found to use it) and through the fast simulator's fixed-point
mode (batched PyTorch), checks that they agree bit for bit, and prints samples/s
for both and their ratio (goal: >= 1000x). The ratio uses Lava's rate after its
start-up (from the times its samples finish), the figure least flattering to us.
Also measures what accounting adds to a fast run (goal <= 1.2x).

    .venv/bin/python benchmarks/sim_vs_lava.py [--lava-samples 50] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from danet_deploy.account import Accountant
from danet_deploy.compile import read_program
from danet_deploy.data import load_dataset
from danet_deploy.export import export
from danet_deploy.simulator.fixed import FixedSimulator
from danet_deploy.simulator.lava import run_lava
from danet_deploy.train import TrainOptions, train


def _best_of(fn, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lava-samples", type=int, default=50)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="danet-bench-"))
    ckpt = work / "digits_da.pt"
    if not ckpt.exists():
        train(TrainOptions(epochs=12, quiet=True, device="cpu"), ckpt)
    out = export(ckpt, "loihi2-sim", work / "digits_da.loihi2-sim")
    program = read_program(out / "program.h5")
    x = load_dataset("digits", "test")[0].tensors[0]
    x = x.unsqueeze(1).expand(-1, program.lowered.timesteps, -1, -1, -1)
    fast = FixedSimulator(program, device=args.device)
    n = args.lava_samples
    finished: list[float] = []  # when Lava reported each sample done
    t0 = time.perf_counter()
    lava = run_lava(out / "program.h5", program, fast.encode(x[:n]).cpu().numpy(),
                    on_sample=lambda: finished.append(time.perf_counter()))
    lava_s = time.perf_counter() - t0
    steady_rate = (n - 1) / (finished[-1] - finished[0])  # after start-up: the rate the ratio uses
    expected = fast.run(x[:n], record=True)
    mismatches = sum(int((torch.as_tensor(v) != expected[k].cpu()).sum()) for k, v in lava.items())
    fast_s = _best_of(lambda: fast.predict(x))
    acc = Accountant(program, device=args.device)
    counted_s = _best_of(lambda: acc.add(x))
    fast_rate = len(x) / fast_s
    print(f"Lava (Loihi2SimCfg fixed_pt, {n} samples): {n / lava_s:.2f} samples/s incl. start-up, "
          f"{steady_rate:.2f} samples/s after it")
    print(f"fast fixed-point ({args.device}, {len(x)} samples, one batch): {fast_rate:,.0f} samples/s")
    print(f"ratio fast / Lava after start-up: {fast_rate / steady_rate:,.0f}x (goal >= 1000x; "
          f"{fast_rate * lava_s / n:,.0f}x incl. Lava's start-up); spike mismatches: {mismatches}")
    print(f"accounting adds {counted_s / fast_s:.2f}x to a fast run (goal <= 1.2x)")


if __name__ == "__main__":
    main()
