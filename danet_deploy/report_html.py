"""Report stage, the HTML pages: one self-contained file each (inline SVG and PNG, no fetches).

The report page leads with what a user decides on: accuracy and Lava parity, dynamic
energy (static beside it), time per inference, then a picture of the compiled network
(populations as nodes, synapse groups as edges coloured by connection type), energy
and events per layer, and how full the cores are.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any, Callable

from . import report_format as units
from .report_format import (
    COMPARE_HEADINGS,
    HEADINGS,
    cell,
    compare_cell,
    layer_columns,
    ranked_by,
)
from .outputs import html_generator
from .profiles import KINDS
from .provenance import cited_values

CONNECTION_COLOURS = {
    "plain": "#7f7f7f",
    "aa": "#1f77b4",
    "sew": "#2ca02c",
    "sew-and": "#98df8a",
    "sew-iand": "#bcbd22",
    "ms": "#9467bd",
    "pa": "#e377c2",
    "da": "#d62728",
    "stem": "#8c564b",
    "head": "#17becf",
    "recurrent": "#ff7f0e",
    "other": "#aaaaaa",
}
PART_COLOURS = {
    "synaptic": "#1f77b4",
    "neuron": "#ff7f0e",
    "routing": "#2ca02c",
    "mac": "#9467bd",
    "static": "#c7c7c7",
}
STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em 2em;color:#222;max-width:1400px}
h1{margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}.sub{color:#666;margin-top:0}
.cards{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #ddd;border-radius:6px;padding:10px 14px;
min-width:210px}.card h3{margin:0 0 6px;font-size:13px;color:#666;text-transform:uppercase;letter-spacing:.04em}
.big{font-size:22px;font-weight:600}.ok{color:#2a7d2a}.bad{color:#b00020}
table{border-collapse:collapse;font-size:12px;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 7px;
text-align:right}th{background:#f5f5f5}td.l,th.l{text-align:left}.scroll{overflow:auto;border:1px solid #eee}
.scroll td{white-space:nowrap}
.legend span{display:inline-block;margin-right:14px;font-size:12px}.legend i{display:inline-block;width:14px;
height:4px;margin-right:4px;vertical-align:middle}.note{font-size:12px;color:#555}
.prov{font-size:11px;color:#7a5200;margin:2px 0}.prov a{color:inherit}"""


def _colour(connection: str) -> str:
    return CONNECTION_COLOURS.get(connection, CONNECTION_COLOURS["other"])


def _esc(v: object) -> str:
    return html.escape(str(v))


def _page(title: str, body: str, kind: str) -> str:
    """A whole page, tagged as a danet-deploy output of ``kind`` (report or comparison)."""
    return (
        f'<!doctype html><html><head><meta charset="utf-8">{html_generator(kind)}<title>{_esc(title)}</title>'
        f"<style>{STYLE}</style></head><body>{body}</body></html>\n"
    )


def _png(draw: Callable[[Any], None], size: tuple[float, float]) -> str:
    """Render ``draw(fig)`` to an inline PNG <img> (deterministic: no timestamp metadata)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=size)
    draw(fig)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)
    return (
        f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'
    )


def _table(head: list[str], rows: list[list[str]], left: int = 1) -> str:
    th = "".join(
        f'<th class="{"l" if i < left else ""}">{_esc(h)}</th>' for i, h in enumerate(head)
    )
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{"l" if i < left else ""}">{_esc(v)}</td>' for i, v in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{th}</tr>{body}</table>"


# ---- provenance: how each energy and time figure was obtained ------------------------------


def _label(prov: dict[str, Any], key: str) -> str:
    """The short label under a figure: its method, simulator and a link to what it rests on."""
    entry = prov["figures"][key]
    if not entry["rests_on"]:
        return f'<div class="prov">{_esc(entry["method"])}</div>'
    return (
        f'<div class="prov">{_esc(entry["method"])} · {_esc(entry["simulator"])} simulator · '
        f'<a href="#provenance">rests on {len(entry["rests_on"])} {_esc(prov["profile"])} '
        "values</a></div>"
    )


def _provenance(prov: dict[str, Any], lava: dict[str, Any] | None = None) -> str:
    """Every figure with its method and the profile values it rests on, then those values with
    their kind and source (report key ``provenance``; docs/accounting.md, "Provenance")."""
    figures = [
        [
            key,
            ", ".join(e["applies_to"]),
            e["method"],
            e["simulator"] or "-",
            ", ".join(v["key"] for v in e["rests_on"]) or "-",
        ]
        for key, e in prov["figures"].items()
    ]
    values = [
        [v["key"], f"{v['value']:g}", v["unit"], v["kind"], v["source"]] for v in cited_values(prov)
    ]
    kinds = "; ".join(f"<b>{_esc(k)}</b>: {_esc(m)}" for k, m in KINDS.items())
    sims = [f"{name}: {desc}" for name, desc in prov["simulators"].items()]
    if lava:
        sims.append(f"Lava section: {lava['simulator']}")
    return (
        '<h2 id="provenance">Provenance: how each figure was obtained</h2>'
        f'<p class="note">{_esc(prov["note"])} Method in NeuroBench\'s system-track words '
        "(External analyzer tap, On-board instrument, Wall power, Estimate (only for simulated "
        f"systems)). Simulators: {_esc('; '.join(sims))}.</p>"
        + _table(["figure", "in", "method", "simulator", "rests on"], figures, left=5)
        + f'<p class="note">The {_esc(prov["profile"])} values these figures rest on. Kinds: '
        f"{kinds}.</p>" + _table(["key", "value", "unit", "kind", "source"], values, left=5)
    )


# ---- the report page ----------------------------------------------------------------------


def _cards(report: dict[str, Any]) -> str:
    t, tm = report["totals"], report.get("timing")
    acc = []
    for label, key in (("float", "reference_accuracy"), ("fixed point", "accuracy")):
        if report.get(key) is not None:
            acc.append(f"{label} <b>{report[key]:.4f}</b>")
    lava = report.get("lava")
    if lava:
        cls = "ok" if lava["spike_mismatches"] == 0 else "bad"
        acc.append(f"Lava <b>{lava['accuracy']:.4f}</b> ({lava['samples']} samples)")
        acc.append(
            f'<span class="{cls}">{lava["spike_mismatches"]} spike mismatches</span> vs fast simulator'
        )
        acc.append(f'<span class="prov">{_esc(lava["simulator"])}</span>')
    else:
        acc.append('<span class="note">Lava not run (report --lava-samples N)</span>')
    share = t["energy_static_pj"] / t["energy_pj"] if t["energy_pj"] else 0.0
    prov = report["provenance"]
    energy = (
        f'<div class="big">{units.energy(t["energy_dynamic_pj"])}</div>dynamic per inference<br>'
        f"{_label(prov, 'energy_dynamic_pj')}"
        f"static {units.energy(t['energy_static_pj'])} ({_esc(report['static_power'])}, "
        f"{units.percent(share)} of {units.energy(t['energy_pj'])})"
        f"{_label(prov, 'energy_static_pj')}"
    )
    timing = "no timing model in this profile"
    if tm:
        band = units.time_band(tm)
        timing = (
            f'<div class="big">{units.duration(tm["inference_time_us"])}</div>per inference, '
            f"{units.count(tm['throughput_per_s'])}/s<br>"
            + (f"{_esc(band)}<br>" if band else "")
            + f"latency {units.duration(tm['latency_us'])}<br>"
            f"energy-delay product {tm['edp_uj_ms']:.3g} µJ·ms (dynamic {tm['edp_dynamic_uj_ms']:.3g})"
            f"{_label(prov, 'timing.inference_time_us')}"
        )
    mapping = report.get("mapping") or {}
    network = (
        f"{_esc(report['lowering'])} lowering, pipeline latency {report['pipeline_latency']} steps<br>"
        f"{units.count(t['neurons'])} neurons, {units.count(t['synapses'])} synapses<br>"
        f"{t['cores']} cores" + (f" on {mapping['chips']} chip(s)" if mapping else "")
    )
    ops = (
        f'<div class="big">{units.count(t["sops"])}</div>SOPs per inference<br>'
        f"{units.count(t['graded_ops'])} graded ops, {units.count(t['macs'])} MACs<br>"
        f"{units.count(t['spikes'])} spikes, {units.count(t['graded_spikes'])} graded spikes"
    )
    cards = [
        ("accuracy", "<br>".join(acc)),
        ("energy", energy),
        ("time", timing),
        ("operations", ops),
        ("network", network),
    ]
    return (
        '<div class="cards">'
        + "".join(f'<div class="card"><h3>{h}</h3>{b}</div>' for h, b in cards)
        + "</div>"
    )


def network_svg(report: dict[str, Any]) -> str:
    """The compiled network: a column per pipeline depth, edges coloured by connection type.

    Edge width grows with the events it carries; a label shows the events per inference
    and any synaptic delay; graded traffic (relays, sigma-delta neurons) is drawn dashed and
    a layer that sends graded spikes says so; hovering shows the synapse group's figures.
    """
    edges = report["edges"]
    rows = {r["name"]: r for r in report["layers"] if r["kind"] != "recurrent"}
    names = list(
        dict.fromkeys([e["source"] for e in edges if e["source"] not in rows] + list(rows))
    )
    depth: dict[str, int] = {n: 0 for n in names}
    for name in names:  # populations come in dependency order: one pass finds the longest path
        for e in edges:
            if (
                e["target"] == name and e["connection"] != "recurrent"
            ):  # a loop onto itself arcs over its box
                depth[name] = max(depth[name], depth[e["source"]] + 1)
    columns: dict[int, list[str]] = {}
    for name in names:
        columns.setdefault(depth[name], []).append(name)
    box_w, box_h, gap_x, gap_y, pad = 140, 46, 56, 30, 20
    span = {id(e): depth[e["target"]] - depth[e["source"]] for e in edges}

    def lift(e: dict[str, Any]) -> int:
        """How high an edge that skips columns arcs over the boxes in between."""
        return 22 + 16 * abs(span[id(e)])

    top_room = max((lift(e) for e in edges if span[id(e)] != 1), default=0)
    pos = {
        n: (pad + d * (box_w + gap_x), pad + top_room + i * (box_h + gap_y))
        for d, col in columns.items()
        for i, n in enumerate(col)
    }
    width = pad * 2 + len(columns) * (box_w + gap_x) - gap_x
    height = pad * 2 + top_room + max(len(c) for c in columns.values()) * (box_h + gap_y)
    top = max((e["events"] for e in edges), default=1.0) or 1.0
    parts = []
    for e in edges:
        (sx, sy), (tx, ty) = pos[e["source"]], pos[e["target"]]
        w = 1 + 5 * (e["events"] / top) ** 0.5
        if span[id(e)] != 1:  # over the columns in between, from box top to box top
            x1, y1, x2, y2 = sx + box_w * 0.6, sy, tx + box_w * 0.4, ty
            peak = min(y1, y2) - lift(e)
            path = f"M{x1},{y1} C{x1},{peak} {x2},{peak} {x2},{y2}"
            lx, ly = (x1 + x2) / 2, 0.125 * (y1 + y2) + 0.75 * peak - 3  # the curve's midpoint
        else:
            x1, y1, x2, y2 = sx + box_w, sy + box_h / 2, tx, ty + box_h / 2
            mid = (x1 + x2) / 2
            path = f"M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}"
            lx, ly = mid, (y1 + y2) / 2 - 4
        label = units.count(e["events"]) + (f" d={e['delay']}" if e["delay"] else "")
        tip = (
            f"{e['source']} -> {e['target']} ({e['connection']}, {e['map']}): {units.count(e['events'])} "
            f"{e['event'].replace('_', ' ')} per inference, {units.count(e['synapses'])} synapses, "
            f"delay {e['delay']}"
        )
        dashed = ' stroke-dasharray="6 3"' if e["event"] == "graded_ops" else ""
        parts.append(
            f'<g><title>{_esc(tip)}</title><path d="{path}" fill="none" '
            f'stroke="{_colour(e["connection"])}" stroke-width="{w:.1f}" stroke-opacity="0.7"{dashed}/>'
            f'<text x="{lx:.0f}" y="{ly:.0f}" font-size="10" text-anchor="middle" '
            f'fill="#333">{_esc(label)}</text></g>'
        )
    for name in names:
        x, y = pos[name]
        r = rows.get(name)
        conn = r["connection"] if r else "other"
        if r is None:
            line2 = "input"
        elif r.get("payload_bits"):  # the kind is in the tooltip and the tables
            line2 = f"{units.count(r['neurons'])} n · {r['payload_bits']}-bit graded"
        else:
            line2 = f"{r['kind']} · {units.count(r['neurons'])} n · fan-in {units.count(r['max_fan_in'])}"
        tip = (
            f"{name}: {r['kind']}, {r['connection']}, {r['neurons']} neurons, {r['cores']} core(s), "
            f"spike rate {units.percent(r['spike_rate'])}, dynamic {units.energy(r['energy_dynamic_pj'])}"
            if r
            else f"{name}: input"
        )
        short = name if len(name) <= 22 else "…" + name[-21:]
        parts.append(
            f'<g><title>{_esc(tip)}</title><rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="5" '
            f'fill="#fff" stroke="{_colour(conn)}" stroke-width="2"/>'
            f'<text x="{x + 6}" y="{y + 18}" font-size="12" font-weight="600">{_esc(short)}</text>'
            f'<text x="{x + 6}" y="{y + 35}" font-size="10" fill="#555">{_esc(line2)}</text></g>'
        )
    return (
        f'<div class="scroll"><svg width="{width}" height="{height}" '
        f'font-family="system-ui,sans-serif">{"".join(parts)}</svg></div>'
    )


def _legend(connections: list[str]) -> str:
    return (
        '<div class="legend">'
        + "".join(
            f'<span><i style="background:{_colour(c)}"></i>{_esc(c)}</span>' for c in connections
        )
        + "</div>"
    )


def _energy_per_layer(report: dict[str, Any]) -> str:
    from .account import DYNAMIC_PARTS

    layers = report["layers"]
    scale, unit = units.energy_unit(max(r["energy_pj"] for r in layers))

    def draw(fig) -> None:
        ax = fig.add_subplot(1, 1, 1)
        y = range(len(layers))
        left = [0.0] * len(layers)
        for part in (*DYNAMIC_PARTS, "static"):
            vals = [r["energy_breakdown_pj"][part] / scale for r in layers]
            ax.barh(
                y,
                vals,
                left=left,
                color=PART_COLOURS[part],
                label=part,
                hatch="//" if part == "static" else None,
                edgecolor="white" if part != "static" else "#888",
            )
            left = [a + b for a, b in zip(left, vals)]
        ax.set_yticks(list(y), [r["name"] for r in layers], fontsize=9)
        ax.invert_yaxis()
        ax.set_xlabel(f"energy per inference ({unit}); static hatched ({report['static_power']})")
        ax.ticklabel_format(axis="x", useOffset=False, style="plain")
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(axis="x", alpha=0.3)

    return _png(draw, (10, 1.2 + 0.28 * len(layers)))


def _events_per_layer(report: dict[str, Any]) -> str:
    layers = report["layers"]
    top = max((r["sops"] + r["graded_ops"] + r["macs"]) for r in layers) or 1
    scale, prefix = next(
        ((s, p) for s, p in ((1e9, "G"), (1e6, "M"), (1e3, "k")) if top >= s), (1, "")
    )

    def draw(fig) -> None:
        ax = fig.add_subplot(1, 2, 1)
        y = list(range(len(layers)))
        left = [0.0] * len(layers)
        for key, colour in (("sops", "#1f77b4"), ("graded_ops", "#ff7f0e"), ("macs", "#9467bd")):
            vals = [r[key] / scale for r in layers]
            ax.barh(y, vals, left=left, color=colour, label=key.replace("_", " "))
            left = [a + b for a, b in zip(left, vals)]
        ax.set_yticks(y, [r["name"] for r in layers], fontsize=9)
        ax.invert_yaxis()
        ax.set_xlabel(f"synaptic events per inference ({prefix}ops)")
        ax.ticklabel_format(axis="x", useOffset=False, style="plain")
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(axis="x", alpha=0.3)
        ax = fig.add_subplot(1, 2, 2, sharey=ax)
        ax.barh(
            y,
            [100 * r["spike_rate"] for r in layers],
            color=[_colour(r["connection"]) for r in layers],
        )
        ax.set_xlabel("spike rate (% of neurons per step), coloured by connection type")
        ax.tick_params(axis="y", labelleft=False)
        ax.grid(axis="x", alpha=0.3)

    return _png(draw, (12, 1.2 + 0.28 * len(layers)))


def _core_use(report: dict[str, Any]) -> str:
    """How full each layer's cores are: neuron slots and synaptic memory, in % of capacity."""
    limits = report.get("core_limits")
    layers = [r for r in report["layers"] if r["cores"]]
    if not limits or not layers:
        return '<p class="note">No core model in this profile.</p>'

    def draw(fig) -> None:
        ax = fig.add_subplot(1, 1, 1)
        y = list(range(len(layers)))
        slots = [
            100 * r["neurons"] * r["compartments"] / (r["cores"] * limits["neurons_per_core"])
            for r in layers
        ]
        memory = [
            100 * r["synapse_bits"] / (r["cores"] * limits["synaptic_memory_per_core"])
            for r in layers
        ]
        ax.barh([v - 0.2 for v in y], slots, height=0.4, color="#1f77b4", label="neuron slots used")
        ax.barh(
            [v + 0.2 for v in y], memory, height=0.4, color="#ff7f0e", label="synaptic memory used"
        )
        ax.set_yticks(
            y,
            [f"{r['name']} ({r['cores']} core{'s' if r['cores'] > 1 else ''})" for r in layers],
            fontsize=9,
        )
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        ax.set_xlabel("% of the layer's cores")
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(axis="x", alpha=0.3)

    return _png(draw, (10, 1.2 + 0.28 * len(layers)))


def _core_table(report: dict[str, Any]) -> str:
    """The per-core table (``core_table``), as Intel's compiler prints one per layer group."""
    rows = report.get("core_table")
    if not rows:
        return ""
    body = [
        [
            r["name"],
            f"{r['max_fan_in']:,}",
            f"{r['neurons_per_core']:,}",
            f"{r['synapses_per_core']:,}",
            str(r["cores"]),
            r["bound_by"],
        ]
        for r in rows
    ]
    body.append(["total", "", "", "", f"{sum(r['cores'] for r in rows):,}", ""])
    return (
        '<p class="note">Per core: what fills each layer\'s cores and which limit sets their number '
        "(synapses are counted unrolled, one per input-output pair).</p>"
        + _table(
            ["layer", "max fan-in", "neurons / core", "synapses / core", "cores", "set by"], body
        )
    )


def _neurobench(report: dict[str, Any]) -> str:
    """NeuroBench's metrics as deployed and as trained (where the definitions part: docs/accounting.md)."""
    if "neurobench" not in report:
        return ""
    return (
        "<h2>NeuroBench's metrics</h2><p class=\"note\">Per inference, under NeuroBench's names: as deployed "
        "(the compiled program: its synaptic memory, quantised weights and events) and as trained (the float "
        "model's parameters and buffers).</p>"
        + _table(["metric", "as deployed", "as trained"], units.neurobench_rows(report))
    )


def report_page(report: dict[str, Any]) -> str:
    """The whole report as one self-contained HTML page."""
    title = f"danet-deploy report: {report.get('source', '')}"
    conns = list(report["by_connection"])
    head = (
        f'<h1>{_esc(title)}</h1><p class="sub">profile <b>{_esc(report["profile"])}</b> '
        f"({_esc(report['profile_kind'])}), target {_esc(report['target'])}, {_esc(report['lowering'])} lowering, "
        f"T = {report['timesteps']} steps, {report['samples']} samples of {_esc(report.get('data', ''))}; "
        f"counts and energies per inference</p>"
    )
    conn_rows = [
        [
            c,
            cell("sops", a["sops"]),
            cell("graded_ops", a["graded_ops"]),
            cell("macs", a["macs"]),
            units.energy(a["energy_dynamic_pj"]),
            units.energy(a["energy_static_pj"]),
            units.energy(a["energy_pj"]),
            str(a["cores"]),
        ]
        for c, a in report["by_connection"].items()
    ]
    columns = layer_columns(report)
    layer_rows = [[cell(c, r[c]) for c in columns] for r in report["layers"]]
    est = report["estimates"]
    body = "".join(
        [
            head,
            _cards(report),
            '<h2>Compiled network</h2><p class="note">Populations (boxes) and synapse groups (edges), a column per '
            "pipeline depth. Edge labels: events per inference (SOPs, graded ops or MACs) and synaptic delay "
            "<i>d</i> added by delay balancing; dashed edges carry graded spikes (integer payloads), solid ones "
            "binary spikes or the input; hover for details.</p>",
            _legend(conns),
            network_svg(report),
            "<h2>Energy per layer</h2>",
            _label(report["provenance"], "energy_pj"),
            _energy_per_layer(report),
            "<h2>Per connection type</h2>",
            _label(report["provenance"], "energy_pj"),
            _table(
                [
                    "connection",
                    "SOPs",
                    "graded ops",
                    "MACs",
                    "dynamic energy",
                    "static energy",
                    "total",
                    "cores",
                ],
                conn_rows,
            ),
            "<h2>Synaptic events and spike rates</h2>",
            _events_per_layer(report),
            "<h2>Core utilisation</h2>",
            _core_use(report),
            _core_table(report),
            "<h2>Per layer</h2>",
            _label(report["provenance"], "energy_pj"),
            '<div class="scroll">',
            _table([HEADINGS.get(c, c) for c in columns], layer_rows, left=3),
            "</div>",
            _neurobench(report),
            '<h2>About these figures</h2><p class="note">Dynamic energy = SOPs, graded ops, neuron updates, spike '
            "routing and MACs times the profile's per-operation energies. Static energy = the chip's static power "
            f"times the estimated inference time, attributed by <b>{_esc(report['static_power'])}</b> "
            "(cores: the share of the chip's cores this network uses; chip: whole chips; off: none). "
            f"Figures of this profile that are estimates, not published values: {_esc(', '.join(est) or 'none')}.</p>",
            _provenance(report["provenance"], report.get("lava")),
            _hash_note(report),
        ]
    )
    return _page(title, body, "report")


def _hash_note(report: dict[str, Any]) -> str:
    """The report JSON's content hash and what it was made from (docs/artifacts.md)."""
    hashes = report.get("hashes")
    if not hashes:
        return ""
    made = [
        f"{what} {_esc(entry.get('name') or entry.get('spec'))} ({entry['sha256'][:12]})"
        for what, entry in hashes["made_from"].items()
        if isinstance(entry, dict) and entry.get("sha256")
    ]
    return (
        f'<p class="note">Report JSON content sha256 <code>{hashes["content_sha256"]}</code>; '
        f"made from {', '.join(made)}, danet-deploy {_esc(hashes['made_from']['tool']['version'])} "
        "(docs/artifacts.md).</p>"
    )


# ---- the comparison page ---------------------------------------------------------------------


def compare_page(rows: list[dict[str, Any]], title: str, provenance: dict[str, Any]) -> str:
    """Connection types side by side: ranked by dynamic energy (or as compare was asked), static
    beside it, accuracy, SOPs, memory; how the energy columns were obtained under the picture and
    at the end."""
    labels = [r["connection"] + ("/relay" if r["lowering"] == "relay" else "") for r in rows]
    key, what = ranked_by(rows)
    order = sorted(range(len(rows)), key=lambda i: rows[i][key])
    by = "dynamic" if key == "dynamic_rank" else what
    scale, unit = units.energy_unit(max(r["energy_uj"] for r in rows) * 1e6)
    colours = [_colour(r["connection"]) for r in rows]

    def draw(fig) -> None:
        ax = fig.add_subplot(1, 3, 1)
        y = list(range(len(order)))
        dyn = [rows[i]["dynamic_uj"] * 1e6 / scale for i in order]
        static = [rows[i]["static_uj"] * 1e6 / scale for i in order]
        ax.barh(y, dyn, color=[colours[i] for i in order], label="dynamic")
        ax.barh(y, static, left=dyn, color="#ddd", hatch="//", edgecolor="#888", label="static")
        ax.set_yticks(y, [f"{k + 1}. {labels[i]}" for k, i in enumerate(order)])
        ax.invert_yaxis()
        ax.set_xlabel(f"energy per inference ({unit}), ranked by {by}")
        ax.ticklabel_format(axis="x", useOffset=False, style="plain")
        ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
        for k, key, label in (
            (2, "fixed_accuracy", "fixed-point accuracy"),
            (3, "sops", "SOPs per inference (k)"),
        ):
            ax = fig.add_subplot(1, 3, k, sharey=fig.axes[0])
            vals = [rows[i][key] / (1e3 if key == "sops" else 1) for i in order]
            ax.barh(y, vals, color=[colours[i] for i in order])
            ax.tick_params(axis="y", labelleft=False)
            ax.set_xlabel(label)
            if key == "fixed_accuracy":
                ax.set_xlim(max(0.0, min(vals) - 0.05), 1.0)
            ax.ticklabel_format(axis="x", useOffset=False, style="plain")

    least = next(i for i in range(len(rows)) if rows[i]["dynamic_rank"] == 1)
    best = rows[least]
    head = (
        f'<h1>{_esc(title)}</h1><p class="sub">Least dynamic energy: <b>{_esc(labels[least])}</b> '
        f"({units.energy(best['dynamic_uj'] * 1e6)} per inference, static {units.energy(best['static_uj'] * 1e6)} "
        f"beside it). Rows are ranked by {'dynamic energy' if by == 'dynamic' else by}; static energy "
        f"depends on the cores each variant "
        f"uses and the estimated time per inference.</p>"
    )
    table = _table(
        [COMPARE_HEADINGS.get(k, k) for k in rows[0]],
        [[compare_cell(k, v) for k, v in rows[i].items()] for i in order],
        left=2,
    )
    picture = _png(draw, (15, 1.5 + 0.45 * len(rows)))
    return _page(
        title,
        head
        + _legend(sorted({r["connection"] for r in rows}))
        + picture
        + _label(provenance, "dynamic_uj")
        + table
        + _provenance(provenance),
        "comparison",
    )


# ---- the diff page -----------------------------------------------------------------------------


def diff_page(d: dict[str, Any]) -> str:
    """Two exports or two reports compared: what they were made from, the settings and totals
    that differ, then the layers that differ, largest change first (``diff.py``)."""
    from .diff import SUMMARY_SECTIONS, TEXT_COLUMNS, section_rows, summary, table_rows

    title = f"danet-deploy diff: {d['a']} → {d['b']}"
    lines = summary(d)
    cls = "ok" if d["identical"] else "bad"
    head = (
        f'<h1>{_esc(title)}</h1><p class="sub">two {_esc(d["kind"])}s, '
        f"<b>{_esc(d['a'])}</b> (a) and <b>{_esc(d['b'])}</b> (b): "
        f'<span class="{cls}">{_esc(lines[0])}</span></p>'
    )
    if d["unverified"]:
        head += f'<p class="bad">{_esc(lines[1])}</p>'

    sections = []
    for heading, key in SUMMARY_SECTIONS:
        if d[key]:
            rows = section_rows(d, key)
            width = 4 if any(r[3] for r in rows) else 3  # inputs and files have no change
            table = _table(["", "a", "b", "change"][:width], [r[:width] for r in rows])
            sections.append(f"<h2>{heading.capitalize()}</h2>{table}")
    headings, rows = table_rows(d)
    if rows:  # an export's columns are text; a report's figures are right-aligned
        left = len(headings) if d["kind"] == "export" else len(set(headings) & TEXT_COLUMNS)
        sections.append(
            "<h2>Layers that differ, largest change first</h2>"
            + f'<div class="scroll">{_table(list(headings), rows, left=left)}</div>'
        )
    note = (
        '<p class="note">Largest change first: layers added or removed, then changed structure, '
        "then the most quantised weights changed, the largest weight change, energy, SOPs and "
        "spikes (docs/artifacts.md).</p>"
    )
    return _page(title, head + "".join(sections) + note, "diff")
