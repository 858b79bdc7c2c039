"""Report stage: the accounting as a terminal table, JSON, CSV or a self-contained HTML page."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Sequence

from rich import box
from rich.table import Table

from . import report_format as units
from .report_format import (
    COLUMNS,
    COMPARE_HEADINGS,
    COMPARE_MAIN,
    COMPARE_NARROWER,
    HEADINGS,
    MAIN_COLUMNS,
    NARROWER,
    SHORT_HEADINGS,
    cell,
    compare_cell,
    layouts,
)
from .account import ENERGY_PARTS, Accountant, FloatActivity, neurobench_trained
from .chip_tuning import chip_grid
from .compile import compile_graph
from .data import as_time_series, first
from .errors import UserError
from .outputs import (
    FORMAT_COLUMN,
    TAGS,
    atomic_write,
    check_artifact_dir,
    check_output_file,
    text_footer,
)
from .profiles import load_profile
from .progress import as_text, progress_bar
from .report_html import report_page

FORMATS = ("table", "json", "csv", "html", "neurobench")


def summary_lines(report: dict[str, Any]) -> list[str]:
    """Energy (dynamic first), time and accuracy in a few lines for every format that has prose."""
    t = report["totals"]
    lines = [
        f"energy per inference: dynamic {units.energy(t['energy_dynamic_pj'])} + static "
        f"{units.energy(t['energy_static_pj'])} ({report['static_power']}) = {units.energy(t['energy_pj'])}"
    ]
    tm = report.get("timing")
    if tm:
        lines.append(
            f"time per inference: {units.duration(tm['inference_time_us'])} "
            f"({units.count(tm['throughput_per_s'])} inferences/s), latency {units.duration(tm['latency_us'])}"
            f"; energy-delay product {tm['edp_uj_ms']:.3g} µJ·ms "
            f"(dynamic only {tm['edp_dynamic_uj_ms']:.3g} µJ·ms)"
        )
    acc = [
        f"{name} {report[key]:.4f}"
        for name, key in (("float", "reference_accuracy"), ("fixed point", "accuracy"))
        if report.get(key) is not None
    ]
    if report.get("lava"):
        lava = report["lava"]
        acc.append(
            f"Lava {lava['accuracy']:.4f} on {lava['samples']} samples, {lava['spike_mismatches']} spike "
            f"mismatches vs the fast simulator"
        )
    if acc:
        lines.append("accuracy: " + ", ".join(acc))
    return lines


def as_table(report: dict[str, Any], columns: Sequence[str] = COLUMNS) -> Table:
    """The per-layer table with totals and the per-connection breakdown, in ``columns``
    (fewer than all: short energy headings and no vertical rules, for a terminal)."""
    full = tuple(columns) == COLUMNS
    headings = HEADINGS if full else {**HEADINGS, **SHORT_HEADINGS}
    t = Table(
        title=f"danet-deploy report: {report['profile']}, {report['samples']} samples, T={report['timesteps']}, "
        f"{report['lowering']} lowering (per inference)",
        caption="\n".join(summary_lines(report)),
        **({} if full else {"box": box.SIMPLE_HEAD, "pad_edge": False}),
    )
    for c in columns:
        t.add_column(
            headings.get(c, c),
            justify="left" if c in ("name", "kind", "connection") else "right",
            no_wrap=True,
        )
    for row in report["layers"]:
        t.add_row(*(cell(c, row[c]) for c in columns))
    sums = [("total", report["totals"], "bold")] + [
        (f"  {conn}", agg, "dim") for conn, agg in report["by_connection"].items()
    ]
    for label, agg, style in sums:
        t.add_row(
            *(
                label
                if c == "name"
                else cell(c, agg[c])
                if c in agg and c not in ("kind", "connection")
                else ""
                for c in columns
            ),
            style=style,
        )
    return t


TABLE_LAYOUTS = layouts(COLUMNS, MAIN_COLUMNS, NARROWER)
CORE_HEADINGS = {
    "name": "layer",
    "max_fan_in": "max fan-in",
    "neurons_per_core": "neurons / core",
    "synapses_per_core": "synapses / core",
    "cores": "cores",
    "bound_by": "set by",
}


def as_core_table(report: dict[str, Any]) -> Table | None:
    """The per-core table (``core_table``), or None for a profile without cores."""
    rows = report.get("core_table")
    if not rows:
        return None
    t = Table(title="per core: what fills each layer's cores", box=box.SIMPLE_HEAD)
    for key, heading in CORE_HEADINGS.items():
        t.add_column(
            heading, justify="left" if key in ("name", "bound_by") else "right", no_wrap=True
        )
    for r in rows:
        t.add_row(*(str(r[k]) if k in ("name", "bound_by") else f"{r[k]:,}" for k in CORE_HEADINGS))
    t.add_row("total", "", "", "", f"{sum(r['cores'] for r in rows):,}", "", style="bold")
    return t


def as_neurobench_table(report: dict[str, Any]) -> Table | None:
    """NeuroBench's metrics, as deployed and as trained, or None for a report without them."""
    if "neurobench" not in report:
        return None
    t = Table(title="NeuroBench's metrics, per inference (docs/accounting.md)", box=box.SIMPLE_HEAD)
    for heading in ("metric", "as deployed", "as trained"):
        t.add_column(heading, justify="left" if heading == "metric" else "right", no_wrap=True)
    for row in units.neurobench_rows(report):
        t.add_row(*row)
    return t


def as_csv(report: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        [*COLUMNS, *(f"energy_{p}_pj" for p in ENERGY_PARTS), "ActivationSparsity", FORMAT_COLUMN]
    )
    by_layer = report["neurobench"]["deployed"][
        "ActivationSparsityByLayer"
    ]  # NeuroBench's, per layer
    for row in report["layers"]:
        w.writerow(
            [row[c] for c in COLUMNS]
            + [row["energy_breakdown_pj"][p] for p in ENERGY_PARTS]
            + [by_layer.get(row["name"], ""), TAGS["report"]]
        )
    return buf.getvalue()


def neurobench_results(report: dict[str, Any]) -> dict[str, Any]:
    """The deployed network's metrics as NeuroBench's ``Benchmark.run()`` returns them (one
    key per metric class), with the accuracy as ``ClassificationAccuracy`` and our format tag."""
    return {
        "format": TAGS["report"],
        "ClassificationAccuracy": report["accuracy"],
        **report["neurobench"]["deployed"],
    }


def render(report: dict[str, Any], fmt: str) -> str | Table:
    if fmt == "json":
        return json.dumps(report, indent=2, sort_keys=True) + "\n"
    if fmt == "neurobench":
        return json.dumps(neurobench_results(report), indent=2, sort_keys=True) + "\n"
    if fmt == "csv":
        return as_csv(report)
    if fmt == "html":
        return report_page(report)
    return as_table(report)


def write_text(path: Path, text: str | Table, kind: str) -> None:
    """A rendered report or comparison to ``path``; a table gets the line that tags it as ours."""
    if isinstance(text, Table):
        text = as_text(text) + text_footer(kind) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write(report: dict[str, Any], fmt: str, path: Path) -> None:
    write_text(path, render(report, fmt), "report")


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
    import torch
    import torch.distributed as dist
    from torch.utils.data import DataLoader, Subset

    from .export import calibration_batch, load_artifact
    from .simulate import evaluation_data, lava_size
    from .train import correct_predictions, finish_distributed, init_distributed, resolve_device

    rank, world, dev = init_distributed(resolve_device(device))
    prof = load_profile(profile)
    art = load_artifact(
        Path(artifact),
        dt,
        keep_input_neurons=keep_input_neurons,
        reset=reset,
        discretisation=discretisation,
    )
    program = art.program
    if program is None:
        target_profile = prof if prof.kind == "chip" else load_profile("loihi2")
        target = "loihi2-sim" if target_profile.name == "loihi2" else target_profile.name
        program, _ = compile_graph(
            art.graph, target, target_profile, "auto", calibration_batch(art, data, 32)
        )
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
    with progress_bar("accounting", len(loader), enabled=show_progress and rank == 0) as advance:
        for x, y in loader:
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
    return report


def _lava_check(art, program, ds, show_progress: bool, force: bool) -> dict[str, Any]:
    """Lava's accuracy and spike mismatches on ``ds`` (the program is written to a temporary
    file when the artifact was compiled in memory)."""
    import tempfile

    from .ir.program import write_program
    from .simulate import lava_parity

    with tempfile.TemporaryDirectory(prefix="danet-report-") as tmp:
        path = art.program_path
        if path is None:
            path = Path(tmp) / "program.h5"
            write_program(path, program)
        result = lava_parity(program, path, art, ds, show_progress, force, fewer="--lava-samples N")
    return {
        "samples": len(ds),
        "accuracy": result["accuracy"],
        "spike_mismatches": result["spike_mismatches"],
    }


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
) -> list[dict[str, Any]]:
    """Train (or reuse) ``arch`` with each connection type, compile, account; one row per
    connection and lowering: a graph with sums of three or more streams (ms, pa, da)
    gets an ``expand`` and a ``relay`` row, the trade-off between the two. Rows carry
    ``dynamic_rank`` (1 = least dynamic energy per inference). ``framework`` trains with
    snnTorch or lava-dl (checkpoints ``<arch>_<connection>[_lava-dl].pt``), ``timesteps``
    steps and ``batch_size`` samples a batch (a reused checkpoint keeps its own)."""
    from .converters.nir_import import read_nir
    from .export import export
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
    ranking = sorted(range(len(rows)), key=lambda i: rows[i]["dynamic_uj"])
    for rank, i in enumerate(ranking, 1):
        rows[i]["dynamic_rank"] = rank
    return rows


def compare_table(
    rows: list[dict[str, Any]], title: str, columns: Sequence[str] | None = None
) -> Table:
    """The comparison, one row per variant, in ``columns`` (default: every key of the rows)."""
    keys = list(columns or rows[0])
    full = columns is None or list(columns) == list(rows[0])
    headings = COMPARE_HEADINGS if full else {**COMPARE_HEADINGS, **SHORT_HEADINGS}
    t = Table(
        title=f"danet-deploy compare: {title}",
        caption="per inference; rank (dynamic) orders the rows by dynamic energy, 1 = least",
        **({} if full else {"box": box.SIMPLE_HEAD, "pad_edge": False}),
    )
    for key in keys:
        t.add_column(
            headings.get(key, key),
            no_wrap=True,
            justify="left" if key in ("connection", "framework", "lowering") else "right",
        )
    for r in rows:
        t.add_row(*(compare_cell(k, r[k]) for k in keys))
    return t


def compare_layouts(rows: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """The comparison's column sets for :func:`progress.fitted`."""
    return layouts(tuple(rows[0]), COMPARE_MAIN, COMPARE_NARROWER)
