"""Run stage: run an artifact's program (or its graph in float) on a dataset and compare with the
float model. It reads artifacts (``artifacts.Artifact``) and compiles nothing: the ``simulate``
command is driven by ``pipeline.simulate``, which resolves MODEL and compiles what has no
program yet (docs/compile.md, "Stages").

Backends:

* ``fast`` (default): batched PyTorch on CPU or CUDA, in one of two modes. ``fixed`` runs
  the fixed-point program with Lava's integer arithmetic: a compiled export's own, or, for a
  graph that already holds the chip's integers (a netx file, ``fixed_point = "loihi"``), the
  program compiled as ``export --target loihi2-sim`` compiles it. ``float`` runs the graph
  in float, layer-synchronously: the default for a checkpoint, a ``.nir`` file or a ``nir``
  export. Either mode may be asked for (``fixed`` compiles what has no program yet).
* ``lava``: the compiled program in Lava's ``Loihi2SimCfg`` (bit-accurate, slow),
  always checked against the fast backend on the same samples: ``spike_mismatches``
  counts the (sample, step, neuron) values that differ in any population.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .data import DataInfo, as_time_series, evaluation_split, first, load_dataset
from .errors import UserError
from .ir.program import Program
from .ir.interpreter import ReferenceSimulator
from .artifacts import Artifact
from .outputs import TAGS, check_output_file, write_torch
from .progress import progress_bar
from .simulator.fixed import FixedSimulator
from .devices import evaluate, resolve_device

BACKENDS = ("fast", "lava")
MODES = ("fixed", "float")


def holds_chip_integers(art: Artifact) -> bool:
    """The graph states Loihi's integers (a netx file, or its NIR export): a fixed-point network."""
    return art.graph.metadata.get("fixed_point") == "loihi"


def default_mode(art: Artifact) -> str:
    """``fixed`` for what is a fixed-point network already (a compiled export, a netx file): run
    what it is; ``float`` for a float model (checkpoint, ``.nir``), which has no program yet."""
    return "fixed" if art.program is not None or holds_chip_integers(art) else "float"


def _scores(
    ds, batch_size: int, art: Artifact, scores, advance=lambda status="": None
) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Accuracy, every sample's output summed over time (``[N, outputs]``) under ``scores``,
    and the labels."""
    correct, outputs, labels = 0, [], []
    for x, y in DataLoader(ds, batch_size=batch_size):
        x = as_time_series(x.float(), art.graph)
        out = scores(x).cpu()
        outputs.append(out)
        labels.append(y)
        correct += int((out.argmax(1) == y).sum())
        advance(f"acc {correct / len(ds):.3f}")
    return correct / len(ds), torch.cat(outputs), torch.cat(labels)


def save_outputs(
    path: Path,
    result: dict[str, Any],
    outputs: torch.Tensor,
    labels: torch.Tensor,
    voltage: torch.Tensor | None = None,
) -> None:
    """Each sample's output counts (what users compare with their own framework), atomically;
    ``voltage``: an output read by its voltage, at the last step, in Lava's units."""
    blob = {
        "format": TAGS["outputs"],
        "outputs": outputs,
        "labels": labels,
        "predictions": outputs.argmax(1),
        **{k: result[k] for k in ("artifact", "backend", "mode", "data", "dt", "timesteps")},
    }
    if voltage is not None:
        blob["voltage"] = voltage
    write_torch(path, blob)


def evaluation_data(art: Artifact, data: str, samples: int | None) -> tuple[Dataset, DataInfo]:
    """The first ``samples`` of ``data``'s evaluation split, checked to fit ``art``'s outputs,
    and what the data is."""
    ds, info = load_dataset(data, evaluation_split(data), timesteps=art.graph.timesteps)
    outputs = int(np.prod(art.graph.shapes[art.graph.outputs[0]]))
    if info.num_classes > outputs:
        raise UserError(
            f"{data}: labels go up to {info.num_classes - 1}, but {art.source.name} has "
            f"{outputs} outputs (classes 0 to {outputs - 1}); check the labels or the dataset"
        )
    return first(ds, samples), info


def use_timesteps(art: Artifact, timesteps: int) -> None:
    """``-T``: the steps of static data for a graph that records none; a graph's own T is kept
    (stderr says so), since its neurons and the program's latencies were built for it."""
    recorded = art.graph.timesteps
    if recorded is not None and recorded != timesteps:
        print(
            f"danet-deploy: -T {timesteps} ignored: {art.source.name} records T = {recorded}",
            file=sys.stderr,
        )
        return
    art.graph.metadata["timesteps"] = timesteps


def check_options(
    backend: str, mode: str | None, save_outputs_to: Path | None, force: bool
) -> None:
    """The options of a run refused before MODEL is read (``mode``: ``fixed``, ``float`` or
    None, :func:`default_mode`)."""
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if mode is not None and mode not in MODES:
        raise UserError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    if backend == "lava" and mode == "float":
        raise UserError(
            "--backend lava runs the compiled program: --mode float runs with --backend fast"
        )
    if save_outputs_to is not None:
        if backend != "fast":
            raise UserError(
                "--save-outputs runs with --backend fast (Lava's spikes equal it wherever "
                "--backend lava reports 0 spike mismatches)"
            )
        check_output_file(Path(save_outputs_to), "outputs", force)


def run(
    artifact: Path,
    art: Artifact,
    program: Program | None,
    ds: Dataset,
    info: DataInfo,
    data: str,
    backend: str = "fast",
    timesteps: int | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    show_progress: bool = True,
    save_outputs_to: Path | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Accuracy of ``program`` (``fixed`` mode), else of ``art``'s graph in float, on ``ds``, and of
    the float model on the same samples; ``artifact``: the MODEL argument ``art`` was read from,
    ``timesteps``: the ``-T`` asked for. ``save_outputs_to``: write every sample's output (summed
    over time: spike counts of a spiking output layer, the integer class scores of a readout) to
    this torch file.
    """
    mode = "fixed" if program is not None else "float"
    if program is None and holds_chip_integers(art):
        print(
            f"danet-deploy: {artifact} is a fixed-point network; --mode float runs its float reading (no "
            f"truncation, no pipeline), whose outputs can differ from the chip's (the default, --mode fixed, "
            f"runs its program)",
            file=sys.stderr,
        )
    result: dict[str, Any] = {
        "backend": backend,
        "artifact": str(artifact),
        "data": data,
        "samples": len(ds),
        **({"framing": info.framing} if info.framing else {}),
        "mode": mode,
        "dt": art.graph.dt,
        "timesteps": int(
            as_time_series(ds[0][0][None].float(), art.graph, steps_option="-T").shape[1]
        ),
    }
    if timesteps is not None and result["timesteps"] != timesteps == art.graph.timesteps:
        print(
            f"danet-deploy: -T {timesteps} ignored: the samples of {data} are time series of "
            f"{result['timesteps']} steps",
            file=sys.stderr,
        )
    t0 = time.perf_counter()
    voltage = None
    if backend == "lava":
        result.update(lava_parity(program, art.program_path, art, ds, show_progress, force))
    else:  # fast: the fixed-point program, or the NIR graph in float
        sim = (
            FixedSimulator(program, resolve_device(device))
            if program is not None
            else ReferenceSimulator(art.graph, device=resolve_device(device))
        )
        with progress_bar(
            "simulating", -(-len(ds) // batch_size), enabled=show_progress
        ) as advance:
            result["accuracy"], outputs, labels = _scores(ds, batch_size, art, sim.scores, advance)
        if program is not None:
            voltage = (
                sim.voltage(outputs)
                if art.graph.metadata.get("output_read_by") == "voltage"
                else None
            )
            outputs = sim.in_float_units(outputs)
    result["seconds"] = round(time.perf_counter() - t0, 3)
    if program is not None:
        result["pipeline_latency"] = program.lowered.latency
    # the float model: the checkpoint's PyTorch model, else the NIR graph (which float mode just ran)
    if art.model is not None:
        result["reference_accuracy"] = evaluate(art.model, ds, torch.device("cpu"))
    elif program is not None:
        result["reference_accuracy"] = _scores(
            ds, batch_size, art, ReferenceSimulator(art.graph).scores
        )[0]
    else:
        result["reference_accuracy"] = result["accuracy"]
    if backend == "fast" and not bool(outputs.any()):
        result["silent_output"] = True
    if result.get(
        "silent_output"
    ):  # either backend: Lava's parity with a silent network says little
        hint = "; if the graph counts time in steps, pass --dt 1" if art.graph.dt != 1 else ""
        print(
            f"danet-deploy: the output never fires on these {len(ds)} samples (all counts 0, dt = "
            f"{art.graph.dt:g} s){hint}",
            file=sys.stderr,
        )
    if save_outputs_to is not None:
        save_outputs(Path(save_outputs_to), result, outputs, labels, voltage)
        result["outputs_file"] = str(save_outputs_to)
    return result


def lava_size(
    program: Program, where: Path, art: Artifact, ds, force: bool, fewer: str, show: bool
):
    """The size and estimate of a Lava run of ``program`` on ``ds`` (printed when ``show``); a run
    estimated over the bound is refused, naming ``where``, unless ``force`` (``fewer``: the option
    that runs fewer samples; docs/lava-runtime.md)."""
    from .progress import console
    from .simulator.lava import estimate, refuse_oversized, run_size

    steps = as_time_series(ds[0][0][None].float(), art.graph, keep_all=True).shape[1]
    size = run_size(program, len(ds), steps)
    guess = estimate(size)
    if show:
        console.print(
            f"Lava run: {size['processes']} OS processes, {size['synapses']:,} synapses, "
            f"{size['steps']:,} steps ({len(ds)} samples x {steps} + pipeline latency "
            f"{program.lowered.latency} + 1); estimated {guess}"
        )
    if not force:
        refuse_oversized(where, size, guess, fewer)
    return size, guess


def lava_parity(
    program: Program,
    program_path: Path,
    art: Artifact,
    ds,
    show_progress: bool,
    force: bool = False,
    fewer: str = "--samples N",
) -> dict[str, Any]:
    """Lava on every sample of ``ds``, the fast backend on the same samples, and their differences
    (``silent_output`` when Lava's output never fires); refused first when :func:`lava_size` says so."""
    from .simulator.lava import run_lava

    size, guess = lava_size(program, program_path, art, ds, force, fewer, show_progress)
    x = torch.stack([ds[i][0] for i in range(len(ds))]).float()
    y = torch.as_tensor([int(ds[i][1]) for i in range(len(ds))])
    x = as_time_series(x, art.graph, keep_all=True)  # Lava and fast record everything
    fast = FixedSimulator(program)
    with progress_bar(
        "Lava (Loihi2SimCfg fixed_pt)", size["steps"], enabled=show_progress
    ) as advance:
        lava = run_lava(
            program_path, program, fast.encode(x).numpy(), advance, guess.stall_timeout, guess
        )
    expected = fast.run(x, record=True)
    lava = {k: torch.as_tensor(v) for k, v in lava.items()}
    mismatches = sum(int((v != expected[k]).sum()) for k, v in lava.items())
    nonzero = sum(int((expected[k] != 0).sum()) for k in lava)  # 0 would make the parity vacuous
    scores = {
        name: fast.scores_from(out, x.shape[1])
        for name, out in (("lava", lava), ("fast", expected))
    }
    correct = {name: int((s.argmax(1) == y).sum()) for name, s in scores.items()}
    silent = {} if bool(scores["lava"].any()) else {"silent_output": True}
    return {
        "accuracy": correct["lava"] / len(ds),
        "spike_mismatches": mismatches,
        "nonzero_values": nonzero,
        "fast_accuracy": correct["fast"] / len(ds),
        **silent,
    }
