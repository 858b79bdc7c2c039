"""Benchmark: the networks lava-dl ships, read from a checkout of lava-nc/lava-dl, and our
Loihi 2 estimates for PilotNet LIF beside Intel's chip measurement (docs/lava-dl.md,
"lava-dl's own networks"; docs/accounting.md).

For each netx file lava-dl ships it prints whether ``export --target loihi2-sim`` and
``export --target nir`` take it (or the one-line refusal), and runs what exports through
``simulate`` on both backends (Lava checked against the fast simulator) and ``report``, on 16
steps of random input of the network's kind (binary spikes, or graded integers for a sigma-delta
network). It then reproduces three of lava-dl's ground truths with the fast simulator and checks
Lava against it (``simulate --backend lava``):

* ``tests/lava/lib/dl/netx/gts/tinynet``: lava-dl's ``test_tinynet`` drives the input layer's
  LOIHI neurons by their bias (``input_bias.npy``); their spikes are computed here with Lava's
  LIF integers and sent to the rest of the network; the output must equal ``output.npy``
  (as the test compares it: the ground truth one step later).
* ``tests/lava/lib/dl/netx/gts/pilotnet_lif``: the input layer driven by ``image.npy`` likewise;
  every spiking layer's spikes must equal the recorded ones over the steps before netx's
  ``reset_interval=16`` first resets a layer (14 steps; each layer's record starts one step
  later than the layer before).
* ``tests/lava/lib/dl/netx/gts/pilotnet_sdnn``: lava-dl's ``test_pilotnet_sdnn`` feeds
  ``input.npy`` (one frame, repeated by its RingBuffer) to the input layer's Delta encoder for 9
  steps; the Sigma output of every step must equal ``output.npy``.

Then ``report`` on PilotNet LIF (one inference = 16 steps, Intel's ``reset_interval``) beside
Intel's measurement (lava-dl ``tutorials/lava/lib/dl/netx/pilotnet_snn/benchmark.ipynb``): cores
against Intel's 61, dynamic energy, and our time per step as a band with Intel's measured step
inside it; and the cores of both PilotNets layer by layer beside Intel's compiler's (both
notebooks).
Nothing from lava-dl is copied into this repository: pass the checkout.

    .venv/bin/python benchmarks/lava_dl_networks.py --lava-dl PATH [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from danet_deploy.artifacts import load_artifact
from danet_deploy.simulator.fixed import FixedSimulator

NETX = "tests/lava/lib/dl/netx"
FILES = [
    f"{NETX}/tiny.net",
    f"{NETX}/gts/pilotnet_lif/network.net",
    f"{NETX}/gts/pilotnet_sdnn/network.net",
    "tutorials/lava/lib/dl/netx/pilotnet_snn/network.net",
    "tutorials/lava/lib/dl/netx/pilotnet_sdnn/network.net",
    "tutorials/lava/lib/dl/netx/mnist/trained_mnist_network.net",
    "tutorials/lava/lib/dl/bootstrap/mnist/Trained/network.net",
]
# Intel's Loihi 2 measurement of PilotNet LIF (benchmark.ipynb: the compiler's per-core table,
# "Power Results" and the throughput at reset_interval = 16)
INTEL = {"cores": 74, "step_us": 1e6 / 408.91 / 16, "dynamic_uj_per_step": 1094.0 / 16}
# Intel's compiler's cores per layer, input first (both notebooks' "Per core distribution"): PilotNet
# LIF ran its input layer on the chip (13 cores), PilotNet SDNN ran its encoder off the neurocores
# (skip_layers=1); the four dense layers' last is the readout
INTEL_LAYER_CORES = {
    "lif": [13, 25, 13, 3, 3, 2, 12, 1, 1, 1],
    "sdnn": [0, 25, 13, 3, 3, 2, 12, 1, 1, 1],
}
SDNN_TUTORIAL = "tutorials/lava/lib/dl/netx/pilotnet_sdnn/network.net"
STEPS = 16
BEFORE_FIRST_RESET = 14


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "danet_deploy", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def input_layer_spikes(
    bias: np.ndarray, steps: int, v_decay: int = 1024, vth: int = 25
) -> np.ndarray:
    """Lava's LIF (``du = 4095``, no input) driven by ``bias_mant`` (netx's ``(W, H, C)``):
    spikes ``[T, C, H, W]``, as lava-dl's tests drive their input layers."""
    b = np.asarray(bias).transpose(2, 1, 0).astype(np.int64) << 6
    v, out = np.zeros(b.shape, np.int64), []
    for _ in range(steps):
        v = np.sign(v) * ((np.abs(v) * (4096 - v_decay)) >> 12) + b
        fired = v > vth << 6
        v[fired] = 0
        out.append(fired)
    return np.stack(out).astype(np.float32)


def spikes_of(export_dir: Path, x: np.ndarray) -> tuple[dict[str, np.ndarray], list[str]]:
    """The fast simulator's spikes ``[T, ...]`` of every spiking population, in file order."""
    program = load_artifact(export_dir).program
    out = FixedSimulator(program).run(torch.from_numpy(x)[None], record=True)
    names = [n for n, p in program.populations.items() if p.kind.name == "lif"]
    return {n: out[n][:, 0].numpy() for n in names}, names


def lava_mismatches(export_dir: Path, x: np.ndarray, work: Path) -> str:
    data = work / f"{export_dir.name}.input.pt"
    torch.save(
        {"inputs": torch.from_numpy(x)[None], "labels": torch.zeros(1, dtype=torch.long)}, data
    )
    proc = cli(
        "simulate", str(export_dir), "--data", f"tensor:{data}", "--backend", "lava", "--json"
    )
    if proc.returncode:
        return proc.stderr.strip().splitlines()[-1]
    r = json.loads(proc.stdout)
    return f"{r['spike_mismatches']} mismatches in {r['nonzero_values']:,} nonzero values"


def through_every_command(export_dir: Path, work: Path) -> str:
    """``simulate`` (fast, and Lava against it) and ``report`` on random input of the network's kind."""
    program = load_artifact(export_dir).program
    shape = program.lowered.input.shape
    rng = np.random.default_rng(0)
    graded = program.fixed[program.lowered.input.name].graded
    x = rng.integers(0, 64, (STEPS, *shape)) if graded else rng.random((STEPS, *shape)) < 0.2
    x = x.astype(np.float32)
    data = work / f"{export_dir.name}.random.pt"
    torch.save(
        {"inputs": torch.from_numpy(x)[None], "labels": torch.zeros(1, dtype=torch.long)}, data
    )
    fast = cli("simulate", str(export_dir), "--data", f"tensor:{data}", "--json")
    report = cli("report", str(export_dir), "--data", f"tensor:{data}", "--format", "json")
    return (
        f"simulate fast: {'ok' if fast.returncode == 0 else fast.stderr.strip()}; "
        f"Lava: {lava_mismatches(export_dir, x, work)}; "
        f"report: {'ok' if report.returncode == 0 else report.stderr.strip()}"
    )


def tinynet(root: Path, export_dir: Path, work: Path) -> None:
    gts = root / NETX / "gts/tinynet"
    x = input_layer_spikes(np.load(gts / "input_bias.npy"), STEPS + 4)
    spikes, names = spikes_of(export_dir, x)
    ours = spikes[names[-1]].reshape(len(x), -1).T  # [36, T]
    truth = np.load(gts / "output.npy")[0, :, 0, 0, :]
    bad = int(np.abs(ours[:, : STEPS - 1] - truth[:, 1:STEPS]).sum())
    print(
        f"  tinynet ground truth: {bad} mismatches in {int(truth[:, 1:].sum())} output spikes; "
        f"Lava: {lava_mismatches(export_dir, x, work)}"
    )


def pilotnet_lif(root: Path, export_dir: Path, work: Path) -> None:
    gts = root / NETX / "gts/pilotnet_lif"
    x = input_layer_spikes(np.load(gts / "image.npy"), STEPS)
    spikes, names = spikes_of(export_dir, x)
    records = [f"conv-{i}" for i in range(5)] + [f"fc-{i}" for i in range(3)]
    bad = total = 0
    for lag, (name, record) in enumerate(zip(names, records, strict=True), start=1):
        truth = np.moveaxis(
            np.load(gts / f"{record}.npy").astype(np.float32), -1, 0
        )  # [T, (W, H, C)]
        ours = spikes[name]
        ours = ours.transpose(0, 3, 2, 1) if ours.ndim == 4 else ours
        window = slice(lag, lag + BEFORE_FIRST_RESET)
        bad += int(np.abs(ours[:BEFORE_FIRST_RESET] - truth[window]).sum())
        total += int(truth[window].sum())
    print(
        f"  pilotnet_lif ground truth: {bad} mismatches in {total:,} spikes of its 8 spiking layers over "
        f"{BEFORE_FIRST_RESET} steps; Lava: {lava_mismatches(export_dir, x, work)}"
    )
    beside_intel(export_dir, work / f"{export_dir.name}.input.pt")


def pilotnet_sdnn(root: Path, export_dir: Path, work: Path) -> None:
    gts = root / NETX / "gts/pilotnet_sdnn"
    truth = np.load(gts / "output.npy")[0]
    frame = np.load(gts / "input.npy")[..., 0].transpose(2, 1, 0)  # (W, H, C) -> (C, H, W)
    x = np.repeat(frame[None].astype(np.float32), len(truth), axis=0)
    program = load_artifact(export_dir).program
    sigma = (
        FixedSimulator(program)
        .timelines(torch.from_numpy(x)[None])["output"]
        .cumsum(0)[: len(truth), 0, 0]
    )
    bad = int((sigma.numpy() != truth).sum())
    print(
        f"  pilotnet_sdnn ground truth: {bad} of {len(truth)} Sigma outputs differ (steps 1-{len(truth)}, "
        f"values up to {np.abs(truth).max():,.0f}); Lava: {lava_mismatches(export_dir, x, work)}"
    )


def sdnn_tutorial(root: Path, export_dir: Path, work: Path) -> None:
    """The PilotNet SDNN Intel benchmarked: its cores layer by layer beside Intel's compiler's."""
    r = json.loads(
        cli(
            "report",
            str(export_dir),
            "--data",
            f"tensor:{work / export_dir.name}.random.pt",
            "--format",
            "json",
        ).stdout
    )
    print(
        "  PilotNet SDNN on Loihi 2, cores per layer, ours beside Intel's compiler (its encoder ran off the "
        "neurocores):"
    )
    per_layer(r, INTEL_LAYER_CORES["sdnn"])


def per_layer(report: dict, intel: list[int]) -> None:
    """Cores layer by layer (the input layer or encoder first), and totals with and without it."""
    ours = [r["cores"] for r in report["layers"] if r["kind"] != "recurrent"]
    if len(ours) == len(intel) - 1:  # our program skipped the input layer
        ours = [0, *ours]
    print("    layer  " + " ".join(f"{i:>4}" for i in range(len(intel))))
    print(
        "    ours   "
        + " ".join(f"{c:>4}" for c in ours)
        + f"   total {sum(ours)}, without layer 0 {sum(ours[1:])}"
    )
    print(
        "    Intel  "
        + " ".join(f"{c:>4}" for c in intel)
        + f"   total {sum(intel)}, without layer 0 "
        f"{sum(intel[1:])}  (ratio without layer 0: {sum(ours[1:]) / sum(intel[1:]):.2f})"
    )


def beside_intel(export_dir: Path, data: Path) -> None:
    proc = cli("report", str(export_dir), "--data", f"tensor:{data}", "--format", "json")
    r = json.loads(proc.stdout)
    ours = {
        "cores": r["totals"]["cores"],
        "step_us": r["timing"]["step_ns"] / 1000,
        "dynamic_uj_per_step": r["totals"]["energy_dynamic_pj"] / 1e6 / r["timesteps"],
    }
    intel = {
        **INTEL,
        "cores": sum(INTEL_LAYER_CORES["lif"][1:]),
    }  # like for like: our program skips the input layer
    print(
        f"  PilotNet LIF on Loihi 2, ours (estimate, {r['timesteps']} steps of the ground-truth image, the input "
        f"layer skipped) beside Intel's measurement (cores without its 13 input-layer cores):"
    )
    for key, goal in (("cores", 1.1), ("dynamic_uj_per_step", 1.5)):
        ratio = ours[key] / intel[key]
        print(
            f"    {key:20s} ours {ours[key]:9.1f}  Intel {intel[key]:9.1f}  ratio {ratio:5.2f} "
            f"(goal within {goal}x: {'met' if 1 / goal <= ratio <= goal else 'not met'})"
        )
    time_band(r["timing"], intel["step_us"])
    per_layer(r, INTEL_LAYER_CORES["lif"])


def time_band(timing: dict, measured_us: float) -> None:
    """Our time per step as a band (docs/accounting.md, "Time as a band") beside Intel's measured
    step: whether the measurement lies inside, and our stated figure (fitted to this very
    measurement on Loihi 2, so equal to it by construction: the band is the check)."""
    lower, upper = timing["step_ns_lower"] / 1000, timing["step_ns_upper"] / 1000
    inside = lower <= measured_us <= upper
    print(
        f"    step_us              band {lower:.1f} (peak rates) to {upper:.1f} (Loihi 1's times); "
        f"Intel measured {measured_us:.1f}: {'inside' if inside else 'OUTSIDE'} the band "
        f"({measured_us / lower:.2f}x the lower bound, {measured_us / upper:.2f}x the upper)"
    )
    print(
        f"    step_us              stated {timing['step_ns'] / 1000:.1f} ({timing['stated']}: "
        f"{timing['stated_why']})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lava-dl", type=Path, required=True, help="a checkout of lava-nc/lava-dl")
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="danet-lava-dl-"))
    work.mkdir(parents=True, exist_ok=True)
    checks = {
        f"{NETX}/tiny.net": tinynet,
        f"{NETX}/gts/pilotnet_lif/network.net": pilotnet_lif,
        f"{NETX}/gts/pilotnet_sdnn/network.net": pilotnet_sdnn,
        SDNN_TUTORIAL: sdnn_tutorial,
    }
    for i, rel in enumerate(FILES):
        path = args.lava_dl / rel
        if not path.is_file():
            print(f"{rel}: not in this checkout (a Git LFS file not fetched?)")
            continue
        out = work / f"net{i}"
        proc = cli("export", str(path), "--target", "loihi2-sim", "-o", str(out), "--force")
        print(
            f"{rel}: "
            + ("exports" if proc.returncode == 0 else proc.stderr.strip().splitlines()[-1])
        )
        to_nir = cli(
            "export", str(path), "--target", "nir", "-o", str(work / f"net{i}.nir"), "--force"
        )
        print(
            "  export --target nir: "
            + ("exports" if to_nir.returncode == 0 else to_nir.stderr.strip())
        )
        if proc.returncode == 0:
            print("  " + through_every_command(out, work))
        if proc.returncode == 0 and rel in checks:
            checks[rel](args.lava_dl, out, work)


if __name__ == "__main__":
    main()
