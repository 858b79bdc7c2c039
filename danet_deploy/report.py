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
from .account import ENERGY_PARTS
from .outputs import (
    FORMAT_COLUMN,
    TAGS,
    atomic_write,
    text_footer,
)
from .progress import as_text
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
        band = units.time_band(tm)
        lines.append(
            f"time per inference: {units.duration(tm['inference_time_us'])} "
            + (f"({band}) " if band else "")
            + f"({units.count(tm['throughput_per_s'])} inferences/s), latency {units.duration(tm['latency_us'])}"
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
