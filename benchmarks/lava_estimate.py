"""Benchmark: the Lava run's estimate (``simulator.lava.estimate``) beside the measured run.

Two sizes, each exported for loihi2-sim from seeded random weights (what is measured is the
program's size, not its accuracy) and run in Lava on random inputs:

* the digits DANet (1x8x8, about 20 processes, 0.4 M synapses), 20 samples;
* DA-ResNet-20 on CIFAR shapes (3x32x32, about 80 processes, 56 M synapses), 2 samples.

For each: the start-up (until the first step), the time per step after it, the whole run,
the peak memory (summed PSS of the worker's process group, sampled 3 times a second) and the
CPU seconds of that group, each measured and estimated, and the machine's load. The cost
model and the runs its constants were fitted to: docs/lava-runtime.md.

    .venv/bin/python benchmarks/lava_estimate.py [--digits-samples 20] [--cifar-samples 2] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import nir
import torch

from danet_deploy.converters.nir_export import to_nir
from danet_deploy.pipeline import export
from danet_deploy.ir.program import read_program
from danet_deploy.models import build
from danet_deploy.simulator import lava
from danet_deploy.simulator.fixed import FixedSimulator


def exported(work: Path, name: str, arch: str, shape: tuple[int, int, int]) -> Path:
    """``arch`` with DA connections and seeded random weights, exported for loihi2-sim."""
    chip = work / f"{name}.loihi2-sim"
    if not (chip / "program.h5").exists():
        torch.manual_seed(0)
        nir.write(work / f"{name}.nir", to_nir(build(arch, "da", 10, input_shape=shape).eval()))
        export(work / f"{name}.nir", "loihi2-sim", chip, force=True)
    return chip


def group_usage(pgid: int) -> tuple[int, float]:
    """Summed PSS (bytes) and CPU seconds of the live processes of group ``pgid``."""
    pss, cpu, tick = 0, 0.0, os.sysconf("SC_CLK_TCK")
    for pid in lava.group_members(pgid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
        except OSError:
            continue
        cpu += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        pss += next((int(ln.split()[1]) * 1024 for ln in rollup if ln.startswith("Pss:")), 0)
    return pss, cpu


class GroupWatch:
    """Finds the Lava worker's process group (it leads it) and keeps its peak PSS and its
    CPU seconds (the last sample: the group's processes only add to theirs)."""

    def __init__(self) -> None:
        self.pgid, self.peak, self.cpu, self._stop = None, 0, 0.0, threading.Event()
        self._popen = lava.subprocess.Popen
        watch = self

        class Recorded(self._popen):
            def __init__(self, *args, **kw) -> None:
                super().__init__(*args, **kw)
                if "danet_deploy.simulator.lava" in args[0]:
                    watch.pgid = self.pid

        lava.subprocess.Popen = Recorded
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.3):
            if self.pgid is not None:
                pss, cpu = group_usage(self.pgid)
                self.peak, self.cpu = max(self.peak, pss), max(self.cpu, cpu)

    def __enter__(self) -> "GroupWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        lava.subprocess.Popen = self._popen


def row(label: str, chip: Path, samples: int) -> None:
    """One size: its estimate, then its measured run, side by side."""
    program = read_program(chip / "program.h5")
    fast = FixedSimulator(program)
    steps = program.lowered.timesteps or 4
    shape = next(p.shape for p in program.populations.values() if p.kind == "input")
    x = torch.rand(samples, steps, *shape, generator=torch.Generator().manual_seed(1))
    size = lava.run_size(program, samples, steps)
    guess = lava.estimate(size)
    done: list[float] = []
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    with GroupWatch() as watch:
        lava.run_lava(
            chip / "program.h5",
            program,
            fast.encode(x).numpy(),
            lambda: done.append(time.perf_counter()),
            guess.stall_timeout,
            guess,
        )
    total = time.perf_counter() - t0
    step = (done[-1] - done[0]) / max(1, len(done) - 1)
    print(
        f"[{label}] {size['processes']} processes, {size['synapses']:,} synapses, {size['steps']} steps "
        f"({samples} samples); Dense entries {size['dense_entries']:,}, Sparse synapses "
        f"{size['sparse_synapses']:,}, Conv pairs {size['conv_pairs']:,}; load {load:.1f} on "
        f"{os.cpu_count()} cores"
    )
    print(
        f"[{label}]   {'':10s} {'start-up':>10s} {'per step':>10s} {'whole run':>10s} {'peak PSS':>10s}"
    )
    print(
        f"[{label}]   {'estimated':10s} {guess.start_s:9.1f}s {guess.step_s * 1000:8.0f}ms {guess.seconds:9.1f}s "
        f"{guess.bytes / 2**20:7.0f}MiB"
    )
    print(
        f"[{label}]   {'measured':10s} {done[0] - t0:9.1f}s {step * 1000:8.0f}ms {total:9.1f}s "
        f"{watch.peak / 2**20:7.0f}MiB   (CPU {watch.cpu:.1f} s)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--digits-samples", type=int, default=20)
    ap.add_argument("--cifar-samples", type=int, default=2)
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="danet-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    row(
        "digits DANet", exported(work, "digits_da", "digits_resnet", (1, 8, 8)), args.digits_samples
    )
    row(
        "DA-ResNet-20 3x32x32",
        exported(work, "resnet20_da", "resnet20", (3, 32, 32)),
        args.cifar_samples,
    )


if __name__ == "__main__":
    main()
