"""Benchmark: the fast simulator vs Lava on the same compiled graphs and data, side by side.

Two rows, each compiled for loihi2-sim and run through Lava (Loihi2SimCfg, fixed point,
results read through file sinks) and through the fast simulator's fixed-point mode
(batched PyTorch) on the same samples, checked bit for bit:

* digits: the digits DANet (12 epochs); goal: fast >= 1000x Lava;
* cifar: DA-ResNet-20 on CIFAR shapes (3x32x32, relay lowering, 1 epoch on generated
  images: what is measured is the program's size, not its accuracy); goal: 100 samples
  in Lava in <= 10 minutes on 2 cores.

For each: Lava's steps/s and samples/s after start-up (from the times its steps finish,
the figures least flattering to us) and including start-up, the fast simulator's
samples/s, their ratio, spike mismatches, and peak memory (Lava: the summed PSS of its
processes; fast: this process's peak RSS). Also what accounting adds to a fast digits
run (goal <= 1.2x).

    .venv/bin/python benchmarks/sim_vs_lava.py [--digits-samples 50] [--cifar-samples 100] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import threading
import time
from pathlib import Path

import torch

from danet_deploy.account import Accountant
from danet_deploy.ir.program import read_program
from danet_deploy.data import load_dataset
from danet_deploy.pipeline import export
from danet_deploy.simulator.fixed import FixedSimulator
from danet_deploy.simulator.lava import run_lava, run_size
from danet_deploy.train import TrainOptions, train


def _best_of(fn, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _lava_pss_mib() -> float:
    """Summed proportional set size of every Lava worker process now (shared pages split)."""
    total = 0
    for proc in Path("/proc").iterdir():
        try:
            if (
                proc.name.isdigit()
                and b"danet_deploy.simulator.lava" in (proc / "cmdline").read_bytes()
            ):
                line = next(
                    ln
                    for ln in (proc / "smaps_rollup").read_text().splitlines()
                    if ln.startswith("Pss:")
                )
                total += int(line.split()[1])
        except (OSError, StopIteration):
            pass
    return total / 1024


class _PeakSampler:
    """Samples ``measure()`` twice a second in the background and keeps the maximum."""

    def __init__(self, measure) -> None:
        self.measure, self.peak, self._stop = measure, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.peak = max(self.peak, self.measure())

    def __enter__(self) -> "_PeakSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def compare(
    label: str, chip: Path, x: torch.Tensor, lava_samples: int, device: str
) -> FixedSimulator:
    """One row: Lava and the fast simulator on the same samples of ``x`` ``[N, T, ...]``."""
    program = read_program(chip / "program.h5")
    fast = FixedSimulator(program, device=device)
    steps = x.shape[1]
    size = run_size(program, lava_samples, steps)
    done: list[float] = []  # when Lava finished each step
    t0 = time.perf_counter()
    with _PeakSampler(_lava_pss_mib) as memory:
        lava = run_lava(
            chip / "program.h5",
            program,
            fast.encode(x[:lava_samples]).cpu().numpy(),
            on_step=lambda: done.append(time.perf_counter()),
        )
    lava_s = time.perf_counter() - t0
    steady_steps = (len(done) - 1) / (done[-1] - done[0])
    steady_samples = steady_steps / steps
    expected = fast.run(x[:lava_samples], record=True)
    mismatches = sum(int((torch.as_tensor(v) != expected[k].cpu()).sum()) for k, v in lava.items())
    spikes = sum(int((v != 0).sum()) for v in expected.values())
    fast_s = _best_of(lambda: fast.predict(x))
    fast_rate = len(x) / fast_s
    print(
        f"[{label}] {size['processes']} Lava processes, {size['synapses']:,} synapses, {size['steps']} steps"
    )
    print(
        f"[{label}] Lava ({lava_samples} samples): {lava_s:.1f} s in all; {steady_steps:.2f} steps/s = "
        f"{steady_samples:.3f} samples/s after start-up ({done[0] - t0:.1f} s), {lava_samples / lava_s:.3f} "
        f"samples/s incl. start-up; peak memory {memory.peak:,.0f} MiB (PSS)"
    )
    print(
        f"[{label}] fast fixed-point ({device}, {len(x)} samples, one batch): {fast_rate:,.1f} samples/s; "
        f"peak RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB"
    )
    print(
        f"[{label}] ratio fast / Lava after start-up: {fast_rate / steady_samples:,.0f}x "
        f"({fast_rate * lava_s / lava_samples:,.0f}x incl. Lava's start-up); spike mismatches: {mismatches} "
        f"of {spikes:,} nonzero values"
    )
    return fast


def digits_row(work: Path, lava_samples: int, device: str) -> None:
    ckpt = work / "digits_da.pt"
    if not ckpt.exists():
        train(TrainOptions(epochs=12, quiet=True, device="cpu"), ckpt)
    chip = export(ckpt, "loihi2-sim", work / "digits_da.loihi2-sim")
    x = load_dataset("digits", "test")[0].tensors[0]
    x = x.unsqueeze(1).expand(-1, read_program(chip / "program.h5").lowered.timesteps, -1, -1, -1)
    fast = compare("digits DANet", chip, x, lava_samples, device)
    acc = Accountant(fast.program, device=device)
    print(
        f"[digits DANet] accounting adds {_best_of(lambda: acc.add(x)) / _best_of(lambda: fast.predict(x)):.2f}x "
        f"to a fast run (goal <= 1.2x)"
    )


def cifar_row(work: Path, lava_samples: int, device: str) -> None:
    data = work / "cifar_shaped.pt"
    if not data.exists():
        g = torch.Generator().manual_seed(0)
        x = torch.rand(max(lava_samples, 128), 3, 32, 32, generator=g)
        torch.save({"inputs": x, "labels": (x[:, 0].mean((1, 2)) * 10).long().clamp(0, 9)}, data)
    ckpt = work / "resnet20_da.pt"
    if not ckpt.exists():
        train(
            TrainOptions(
                arch="resnet20",
                connection="da",
                data=f"tensor:{data}",
                epochs=1,
                quiet=True,
                device="cpu",
            ),
            ckpt,
        )
    chip = export(ckpt, "loihi2-sim", work / "resnet20_da.loihi2-sim", data=f"tensor:{data}")
    x = torch.load(data, weights_only=True)["inputs"][:lava_samples]
    x = x.unsqueeze(1).expand(-1, read_program(chip / "program.h5").lowered.timesteps, -1, -1, -1)
    compare("CIFAR-shaped DA-ResNet-20", chip, x, lava_samples, device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--digits-samples", type=int, default=50)
    ap.add_argument("--cifar-samples", type=int, default=100)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="danet-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    digits_row(work, args.digits_samples, args.device)
    cifar_row(work, args.cifar_samples, args.device)


if __name__ == "__main__":
    main()
