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
    layer_columns,
    layouts,
    paper_columns,
    ranked_by,
)
from .account import ENERGY_PARTS
from .outputs import (
    FORMAT_COLUMN,
    TAGS,
    atomic_write,
    text_footer,
)
from .profiles import KINDS, UNSTATED
from .progress import as_text
from .provenance import cited_values, rests_on_text, values_text
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


def hash_lines(report: dict[str, Any]) -> list[str]:
    """The report JSON's content hash, for the formats that show it (docs/artifacts.md)."""
    hashes = report.get("hashes")
    return [f"report content sha256 {hashes['content_sha256']}"] if hashes else []


def provenance_lines(report: dict[str, Any]) -> list[str]:
    """How the energy and time figures were obtained and the profile values they rest on, grouped
    by kind (report key ``provenance``; docs/accounting.md, "Provenance")."""
    prov = report["provenance"]
    by_kind: dict[str, list[str]] = {k: [] for k in (*KINDS, UNSTATED)}
    for v in cited_values(prov):
        by_kind.setdefault(v["kind"], []).append(f"{v['key']} {v['value']:g} {v['unit']}")
    lines = [
        f"how obtained (NeuroBench system track): {prov['method']}, activity from the fast "
        "simulator; no figure was measured on a device",
        f"{prov['profile']} values they rest on: "
        + "; ".join(f"{kind}: {', '.join(keys)}" for kind, keys in by_kind.items() if keys),
    ]
    static = prov["figures"]["energy_static_pj"]
    if not static["rests_on"]:
        lines.append(f"static energy: {static['method']}")
    if report.get("lava"):
        lines.append(f"Lava's figures: {report['lava']['simulator']}")
    return lines


def as_table(report: dict[str, Any], columns: Sequence[str] | None = None) -> Table:
    """The per-layer table with totals and the per-connection breakdown, in ``columns``
    (default every one; fewer: short energy headings and no vertical rules, for a terminal)."""
    columns = layer_columns(report) if columns is None else columns
    full = tuple(columns[: len(COLUMNS)]) == COLUMNS
    headings = HEADINGS if full else {**HEADINGS, **SHORT_HEADINGS}
    t = Table(
        title=f"danet-deploy report: {report['profile']}, {report['samples']} samples, T={report['timesteps']}, "
        f"{report['lowering']} lowering (per inference)",
        caption="\n".join([*summary_lines(report), *provenance_lines(report), *hash_lines(report)]),
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


def table_layouts(report: dict[str, Any]) -> list[tuple[str, ...]]:
    """:data:`TABLE_LAYOUTS` with the report's paper-convention columns in the widest set."""
    return [layer_columns(report), *TABLE_LAYOUTS[1:]]


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


# how each row's energy columns were obtained (NeuroBench's words), by which simulator, from
# which profile values (docs/accounting.md, "Provenance")
CSV_PROVENANCE = ("energy_method", "energy_simulator", "energy_rests_on")


def as_csv(report: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    paper = paper_columns(report)
    w.writerow(
        [
            *COLUMNS,
            *(f"energy_{p}_pj" for p in ENERGY_PARTS),
            "ActivationSparsity",
            *paper,
            *CSV_PROVENANCE,
            FORMAT_COLUMN,  # last: the tag by which the tool knows its own CSV
        ]
    )
    by_layer = report["neurobench"]["deployed"][
        "ActivationSparsityByLayer"
    ]  # NeuroBench's, per layer
    prov = report["provenance"]
    energy = prov["figures"]["energy_pj"]  # the others rest on parts of what it rests on
    for row in report["layers"]:
        w.writerow(
            [row[c] for c in COLUMNS]
            + [row["energy_breakdown_pj"][p] for p in ENERGY_PARTS]
            + [by_layer.get(row["name"], "")]
            + ["" if row[c] is None else row[c] for c in paper]
            + [energy["method"], energy["simulator"], rests_on_text(prov)]
            + [TAGS["report"]]
        )
    return buf.getvalue()


def neurobench_results(report: dict[str, Any]) -> dict[str, Any]:
    """The deployed network's metrics as NeuroBench's ``Benchmark.run()`` returns them (one
    key per metric class), with the accuracy as ``ClassificationAccuracy`` and our format tag."""
    prov = report["provenance"]
    return {
        "format": TAGS["report"],
        "ClassificationAccuracy": report["accuracy"],
        **report["neurobench"]["deployed"],
        "provenance": {  # counts, not power: how they were obtained, as for every figure of ours
            "method": prov["method"],
            "simulators": prov["simulators"],
            "measured_on_device": prov["measured_on_device"],
        },
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
    rows: list[dict[str, Any]],
    title: str,
    provenance: dict[str, Any],
    columns: Sequence[str] | None = None,
) -> Table:
    """The comparison, one row per variant, in ``columns`` (default: every key of the rows);
    the caption says how its energy columns were obtained (``compare_provenance``)."""
    keys = list(columns or rows[0])
    full = columns is None or list(columns) == list(rows[0])
    headings = COMPARE_HEADINGS if full else {**COMPARE_HEADINGS, **SHORT_HEADINGS}
    key, what = ranked_by(rows)
    asked = "" if key == "dynamic_rank" else f"; {COMPARE_HEADINGS[key]} by {what}"
    t = Table(
        title=f"danet-deploy compare: {title}",
        caption=f"per inference; rank (dynamic) orders the rows by dynamic energy, 1 = least{asked}\n"
        + "\n".join(compare_provenance_lines(provenance)),
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


def compare_provenance_lines(provenance: dict[str, Any]) -> list[str]:
    """How compare's energy columns were obtained, one line each (``compare_provenance``), each
    naming the profile values no line before it named."""
    lines, named = [], set()
    for column, entry in provenance["figures"].items():
        new = [v for v in entry["rests_on"] if v["key"] not in named]
        named |= {v["key"] for v in new}
        rests = values_text(provenance["profile"], new) if new else "the values above"
        lines.append(
            f"{COMPARE_HEADINGS.get(column, column)}: {entry['method']}"
            + (f", fast simulator x {rests}" if entry["rests_on"] else "")
        )
    return lines


def compare_layouts(rows: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """The comparison's column sets for :func:`progress.fitted` (the main ones with the rank
    asked for, and paper SOPs where it ranks by them)."""
    key = ranked_by(rows)[0]
    extra = () if key == "dynamic_rank" else ((key,) if key == "sops_rank" else ("paper_sops", key))
    return layouts(tuple(rows[0]), COMPARE_MAIN + extra, COMPARE_NARROWER)
