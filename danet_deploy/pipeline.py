"""The pipeline driver: the stages a command runs, in their order (models -> export -> compile ->
run -> account -> report), on the artifact that :func:`artifacts.load_artifact` resolves MODEL
into. A stage reads artifacts and never drives another: what is not compiled yet is compiled
here (:func:`compiled`), and only this module, ``demo.py`` and ``cli.py`` import every stage
(docs/compile.md, "Stages").
"""

from __future__ import annotations

import json
from pathlib import Path
from collections.abc import Collection
from typing import Any

import nir
import torch

from .account import Accountant, FloatActivity, neurobench_trained
from .artifacts import (
    CALIBRATION_SAMPLES,
    Artifact,
    calibration_batch,
    calibration_spec,
    load_artifact,
    model_entry,
)
from .compile import TARGETS as CHIP_TARGETS
from .compile import compile_graph
from .converters.netx_writer import is_sequential, write_netx
from .converters.nir_export import write_nir
from .data import as_time_series, first
from .devices import correct_predictions, finish_distributed, init_distributed, resolve_device
from .errors import UserError
from .export import default_outdir, manifest_for, with_hashes
from .hashes import SampleHasher, hashed, made_from
from .heap import return_freed_memory
from .ir.program import Program, write_program
from .ir.sigma_delta import SigmaDelta
from .lowering import LOWERINGS
from .outputs import (
    ARTIFACT_FILES,
    artifact_tmpdir,
    check_artifact_dir,
    check_output_file,
    install_artifact,
)
from .problems import ChecksStopped, Problems
from .profiles import Profile, load_profile
from .progress import progress_bar
from .provenance import SIMULATORS
from .simulate import (
    check_options,
    default_mode,
    evaluation_data,
    lava_parity,
    lava_size,
    run,
    use_timesteps,
)

TARGETS = ("nir", *CHIP_TARGETS)


def compiled(art: Artifact, data: str | None, profile: Profile | None = None) -> Program:
    """``art``'s program: its own (a compiled export directory), else compiled as ``export
    --target`` compiles it, with the same calibration samples of ``data`` (for a netx file they
    only say whether inputs are graded): for ``profile`` when that is a chip, else for loihi2
    (``--target loihi2-sim``)."""
    if art.program is not None:
        return art.program
    target_profile = (
        profile if profile is not None and profile.kind == "chip" else load_profile("loihi2")
    )
    target = "loihi2-sim" if target_profile.name == "loihi2" else target_profile.name
    program, _ = compile_graph(
        art.graph,
        target,
        target_profile,
        "auto",
        calibration_batch(art, data, CALIBRATION_SAMPLES),
    )
    return program


def _check_choice(what: str, value: str, valid: Collection[str]) -> None:
    """One line naming ``value`` and the valid ``what``s where it is not one of them."""
    if value not in valid:
        raise UserError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")


def export(
    model_path: Path,
    target: str,
    outdir: Path | None = None,
    dt: float | None = None,
    profile: str | None = None,
    lowering: str = "auto",
    data: str | None = None,
    calibration_samples: int = CALIBRATION_SAMPLES,
    force: bool = False,
    keep_input_neurons: bool = False,
    reset: str | None = None,
    discretisation: str | None = None,
    strict: bool = False,
    module: dict[str, Any] | None = None,
) -> Path:
    """Write the artifacts for ``target`` and return the output directory.

    ``outdir`` may be missing, empty or an earlier artifact of ours; a non-empty foreign
    directory needs ``force`` (and then only our files are written into it). ``strict``: a
    layer whose weight error is above the compile's bound is an error, not a warning. ``module``:
    a ``package.module:factory`` MODEL's options (:func:`load_artifact`).
    """
    _check_choice("target", target, TARGETS)
    _check_choice("lowering", lowering, LOWERINGS)
    model_path = Path(model_path)
    outdir = Path(outdir) if outdir else default_outdir(model_path, target)
    check_artifact_dir(
        outdir, force, ARTIFACT_FILES if target != "nir" else ("graph.nir", "manifest.json")
    )
    art = load_artifact(
        model_path,
        dt,
        keep_model=False,
        keep_input_neurons=keep_input_neurons,
        reset=reset,
        discretisation=discretisation,
        module=module,
    )
    own = [n for n, node in art.graph.nodes.items() if isinstance(node, SigmaDelta)]
    if target == "nir" and own:
        raise UserError(
            f"{model_path}: node {own[0]!r} is a sigma-delta neuron, which NIR {nir.version} has no "
            f"primitive for, so no NIR reader could run this graph; export --target loihi2-sim "
            f"compiles it (its graph.nir holds danet-deploy's own SigmaDelta nodes, docs/lava-dl.md)"
        )
    program = costs = prof = None
    samples: list[torch.Tensor | None] = [
        None
    ]  # handed over to the compile, which drops them once calibrated
    if target != "nir":
        prof = load_profile(profile or CHIP_TARGETS[target])
        samples[0] = calibration_batch(
            art, data, calibration_samples
        )  # read first: a bad dataset fails early
        return_freed_memory()  # the dataset the samples were cut from
    model = model_entry(model_path, (module or {}).get("weights"))
    made = made_from(model, prof, _calibration_hashed(art, data, samples[0]))
    art.nir_graph.metadata = {
        **(art.nir_graph.metadata or {}),
        "made_from": json.dumps(made_from(model), sort_keys=True),
    }
    try:
        with artifact_tmpdir(outdir) as tmp:
            write_nir(
                tmp / "graph.nir", art.nir_graph
            )  # first: its buffers are gone before the program's
            return_freed_memory()
            if prof is not None:
                program, costs = compile_graph(
                    art.graph,
                    target,
                    prof,
                    lowering,
                    samples.pop(),  # the manifest
                    release_graph=True,
                    strict=strict,
                )  # reads its structure only
                write_program(tmp / "program.h5", program, made)
                if is_sequential(program):
                    write_netx(tmp / "netx.h5", program)
            files = [p.name for p in tmp.iterdir()] + ["manifest.json"]
            manifest = with_hashes(
                manifest_for(art, target, outdir, files, program, costs, prof), tmp, made
            )
            (tmp / "manifest.json").write_text(
                json.dumps(manifest, indent=2, sort_keys=True) + "\n"
            )
            install_artifact(tmp, outdir)
    finally:
        del art, program
        return_freed_memory()  # before the caller (and the interpreter's exit) allocates more
    return outdir


def check(
    model_path: Path,
    target: str,
    profile: str | None = None,
    lowering: str = "auto",
    data: str | None = None,
    calibration_samples: int = CALIBRATION_SAMPLES,
    dt: float | None = None,
    keep_input_neurons: bool = False,
    reset: str | None = None,
    discretisation: str | None = None,
    module: dict[str, Any] | None = None,
) -> Problems:
    """Every problem that ``export --target target`` of ``model_path`` would hit, found by the
    same checks in one pass (docs/compile.md, "check"); where problems leave nothing for the
    later checks, ``skipped`` says which were not run and why. Nothing is written. An unreadable
    MODEL, profile or dataset is a one-line error, as in ``export``."""
    _check_choice("target", target, CHIP_TARGETS)
    _check_choice("lowering", lowering, LOWERINGS)
    prof = load_profile(profile or CHIP_TARGETS[target])
    problems = Problems(collect=True)
    problems.subject = {
        "model": str(model_path),
        "target": target,
        "profile": prof.name,
        "lowering": lowering,
    }
    try:
        art = load_artifact(
            Path(model_path),
            dt,
            keep_model=False,
            keep_input_neurons=keep_input_neurons,
            reset=reset,
            discretisation=discretisation,
            module=module,
            problems=problems,
        )
        calibration = calibration_batch(art, data, calibration_samples)
        compile_graph(art.graph, target, prof, lowering, calibration, problems=problems)
    except ChecksStopped as e:
        problems.skipped = e.why
    return problems


def _calibration_hashed(
    art: Artifact, data: str | None, samples: torch.Tensor | None
) -> dict[str, Any] | None:
    """``made_from.data`` of a compile: its calibration samples as the compile reads them."""
    if samples is None:
        return None
    hasher = SampleHasher()
    hasher.add(samples)
    return hasher.entry(calibration_spec(art, data))


def build_report(
    artifact: Path,
    profile: str,
    data: str,
    samples: int | None = None,
    device: str = "cpu",
    batch_size: int = 64,
    show_progress: bool = True,
    static_power: str = "cores",
    lava_samples: int = 0,
    keep_input_neurons: bool = False,
    dt: float | None = None,
    reset: str | None = None,
    discretisation: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Account ``artifact`` on ``data`` for ``profile``.

    A compiled export directory is accounted as compiled; a checkpoint or ``.nir`` file
    is compiled first (for ``profile`` when it is a chip, else for loihi2). Under
    torchrun every rank accounts its share of the samples and the counts are summed
    (all-reduced), so the report equals a single process's. With ``lava_samples`` the
    first samples also run in Lava, checked spike for spike against the fast simulator (a Lava
    run estimated over its bound is refused unless ``force``, docs/lava-runtime.md).
    """
    import torch.distributed as dist
    from torch.utils.data import DataLoader, Subset

    rank, world, dev = init_distributed(resolve_device(device))
    prof = load_profile(profile)
    art = load_artifact(
        Path(artifact),
        dt,
        keep_input_neurons=keep_input_neurons,
        reset=reset,
        discretisation=discretisation,
    )
    program = compiled(art, data, prof)
    ds, info = evaluation_data(art, data, samples)
    if lava_samples and rank == 0:  # refused before any work when over the bound
        lava_size(
            program,
            art.program_path or art.source,
            art,
            first(ds, lava_samples),
            force,
            "--lava-samples N",
            show=False,
        )
    share = Subset(ds, range(rank, len(ds), world)) if world > 1 else ds
    acc = Accountant(program, dev)
    steps = art.graph.timesteps
    correct = torch.zeros(2, dtype=torch.float64, device=dev)  # simulated, float model
    loader = DataLoader(share, batch_size=batch_size)
    samples_hash = SampleHasher()  # of the samples as read, before they are made time series
    with progress_bar("accounting", len(loader), enabled=show_progress and rank == 0) as advance:
        for x, y in loader:
            if world == 1:
                samples_hash.add(x, y)
            x = as_time_series(x.float(), art.graph)
            steps = x.shape[1]
            correct[0] += int((acc.add(x).cpu() == y).sum())
            advance()
    if steps is None:
        raise UserError("no time steps known for this graph")
    activity = FloatActivity(art.model) if art.model is not None else None
    if activity is not None:
        try:
            correct[1] = correct_predictions(art.model, share, torch.device("cpu"))
        finally:
            activity.close()
    if world > 1:
        acc.all_reduce()
        dist.all_reduce(correct)
        if activity is not None:
            activity.all_reduce()
    finish_distributed(world)
    report = acc.report(prof, steps, static_power)
    report["accuracy"] = float(correct[0]) / len(ds)
    report["data"] = data
    if info.framing:
        report["framing"] = info.framing
    report["source"] = art.source.name
    if art.model is not None:
        report["reference_accuracy"] = float(correct[1]) / len(ds)
        report["neurobench"]["trained"] = neurobench_trained(art.model, activity)
    if lava_samples and rank == 0:
        report["lava"] = _lava_check(art, program, first(ds, lava_samples), show_progress, force)
    if world > 1:  # each rank saw its share: the hash is of every sample, in order
        samples_hash = SampleHasher()
        for x, y in DataLoader(ds, batch_size=batch_size):
            samples_hash.add(x, y)
    made = made_from(model_entry(Path(artifact)), prof, samples_hash.entry(data))
    return hashed(report, made)  # docs/artifacts.md


def _lava_check(art, program, ds, show_progress: bool, force: bool) -> dict[str, Any]:
    """Lava's accuracy and spike mismatches on ``ds`` (the program is written to a temporary
    file when the artifact was compiled in memory)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="danet-report-") as tmp:
        path = art.program_path
        if path is None:
            path = Path(tmp) / "program.h5"
            write_program(path, program)
        result = lava_parity(program, path, art, ds, show_progress, force, fewer="--lava-samples N")
    return lava_section({**result, "samples": len(ds)})


def lava_section(result: dict[str, Any]) -> dict[str, Any]:
    """The report's ``lava``: Lava's accuracy and spike mismatches on its samples, and which
    simulator that is (never a chip: docs/accounting.md, "Provenance")."""
    return {
        "samples": result["samples"],
        "accuracy": result["accuracy"],
        "spike_mismatches": result["spike_mismatches"],
        "simulator": SIMULATORS["lava"],
    }


def simulate(
    artifact: Path,
    data: str,
    backend: str = "fast",
    samples: int | None = None,
    timesteps: int | None = None,
    dt: float | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    show_progress: bool = True,
    keep_input_neurons: bool = False,
    save_outputs_to: Path | None = None,
    force: bool = False,
    reset: str | None = None,
    discretisation: str | None = None,
    mode: str | None = None,
) -> dict[str, Any]:
    """Accuracy of ``artifact`` on ``data`` and of the float model on the same samples
    (``simulate.run``).

    ``mode``: ``fixed`` or ``float`` (``simulate``'s module doc); None: ``simulate.default_mode``;
    ``fixed`` compiles what has no program yet. ``save_outputs_to``: write every sample's output
    to this torch file.
    """
    check_options(backend, mode, save_outputs_to, force)
    art: Artifact = load_artifact(
        Path(artifact),
        dt,
        keep_input_neurons=keep_input_neurons,
        reset=reset,
        discretisation=discretisation,
    )
    if timesteps is not None:
        use_timesteps(art, timesteps)
    if backend == "lava" and art.program is None:
        raise UserError(
            f"{artifact}: --backend lava needs a compiled export "
            f"(danet-deploy export MODEL --target loihi2-sim)"
        )
    mode = mode or default_mode(art)
    ds, info = evaluation_data(art, data, samples)
    program = None
    if mode == "fixed":
        art.program = program = compiled(art, data)
    return run(
        artifact,
        art,
        program,
        ds,
        info,
        data,
        backend,
        timesteps,
        batch_size,
        device,
        show_progress,
        save_outputs_to,
        force,
    )


def compare(
    arch: str,
    connections: list[str],
    profile: str,
    data: str,
    outdir: Path,
    epochs: int,
    samples: int | None = None,
    device: str = "cpu",
    static_power: str = "cores",
    force: bool = False,
    framework: str = "snntorch",
    timesteps: int = 4,
    batch_size: int = 64,
    rank_by: str = "dynamic",
) -> list[dict[str, Any]]:
    """Train (or reuse) ``arch`` with each connection type, compile, account; one row per
    connection and lowering: a graph with sums of three or more streams (ms, pa, da)
    gets an ``expand`` and a ``relay`` row, the trade-off between the two. Rows carry
    ``dynamic_rank`` (1 = least dynamic energy per inference) and, with ``rank_by`` ``sops``
    or ``paper_sops``, that rank too (:func:`rank_rows`). ``framework`` trains with
    snnTorch or lava-dl (checkpoints ``<arch>_<connection>[_lava-dl].pt``), ``timesteps``
    steps and ``batch_size`` samples a batch (a reused checkpoint keeps its own)."""
    from .chip_tuning import chip_grid
    from .converters.nir_import import read_nir
    from .lowering import lower
    from .progress import console
    from .train import TrainOptions, model_name, train

    def chip_dir(conn: str, lowering: str) -> Path:
        return outdir / f"{model_name(arch, conn, framework)}.{lowering}.loihi2-sim"

    def account(ckpt: Path, conn: str, lowering: str) -> tuple[Path, dict[str, Any]]:
        """Compile ``ckpt`` with ``lowering`` and account it: the export directory and the row."""
        chip = export(ckpt, "loihi2-sim", chip_dir(conn, lowering), lowering=lowering, force=force)
        rep = build_report(
            chip, profile, data, samples, device, show_progress=False, static_power=static_power
        )
        t = rep["totals"]
        return chip, {
            "connection": conn,
            "framework": framework,
            "lowering": lowering,
            "float_accuracy": rep.get("reference_accuracy"),
            "fixed_accuracy": rep["accuracy"],
            "dynamic_uj": t["energy_dynamic_pj"] / 1e6,
            "static_uj": t["energy_static_pj"] / 1e6,
            "energy_uj": t["energy_pj"] / 1e6,
            "sops": t["sops"],
            "paper_sops": t["paper_sops"],
            "macs": t["macs"],
            "graded_ops": t["graded_ops"],
            "synapse_kib": t["synapse_bits"] / 8 / 1024,
            "cores": t["cores"],
        }

    for conn in connections:  # refuse before any training if an output may not be written
        check_output_file(outdir / f"{model_name(arch, conn, framework)}.pt", "checkpoint", force)
        for lowering in ("expand", "relay"):
            check_artifact_dir(chip_dir(conn, lowering), force)

    rows = []
    for conn in connections:
        ckpt = outdir / f"{model_name(arch, conn, framework)}.pt"
        if not ckpt.exists():
            console.print(f"training {arch} with {conn} connections ({framework}) -> {ckpt}")
            train(
                TrainOptions(
                    arch=arch,
                    connection=conn,
                    data=data,
                    epochs=epochs,
                    device=device,
                    quiet=True,
                    framework=framework,
                    timesteps=timesteps,
                    batch_size=batch_size,
                ),
                ckpt,
                force,
                grid_for=chip_grid,
            )
        chip, expand_row = account(ckpt, conn, "expand")
        rows.append(expand_row)
        relayed = lower(
            read_nir(chip / "graph.nir"), "relay", with_weights=False
        ).populations.values()
        if any(
            p.kind.sends_current for p in relayed
        ):  # only a graph with sums to relay differs from expand
            rows.append(account(ckpt, conn, "relay")[1])
    return rank_rows(rows, rank_by)


# what compare can rank its rows by: the row key ranked (docs/accounting.md, "Comparing
# connection types and lowerings")
RANKINGS = {"dynamic": "dynamic_uj", "sops": "sops", "paper_sops": "paper_sops"}


def rank_rows(rows: list[dict[str, Any]], rank_by: str = "dynamic") -> list[dict[str, Any]]:
    """Give every row ``dynamic_rank`` (1 = least dynamic energy per inference) and, ranked by
    another of :data:`RANKINGS`, ``<rank_by>_rank`` too (1 = fewest); ties keep the row order."""
    for by in dict.fromkeys(("dynamic", rank_by)):
        ranking = sorted(range(len(rows)), key=lambda i: rows[i][RANKINGS[by]])
        for rank, i in enumerate(ranking, 1):
            rows[i][f"{by}_rank"] = rank
    return rows
