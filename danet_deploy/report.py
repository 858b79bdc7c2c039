"""Report stage: the accounting as a terminal table, JSON, CSV or a self-contained HTML page."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path
from typing import Any

from rich.table import Table

from .account import ENERGY_PARTS, Accountant
from .compile import compile_graph
from .data import as_time_series, evaluation_split, first, load_dataset
from .errors import UserError
from .profiles import load_profile
from .progress import as_text, progress_bar

FORMATS = ("table", "json", "csv", "html")
COLUMNS = ("name", "kind", "connection", "neurons", "synapses", "cores", "spikes", "spike_rate", "sops",
           "graded_ops", "macs", "neuron_updates", "energy_pj")


def _num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3g}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def as_table(report: dict[str, Any]) -> Table:
    """The per-layer table with totals and the per-connection breakdown."""
    t = Table(title=f"{report['profile']}: {report['samples']} samples, T={report['timesteps']}, "
                    f"{report['lowering']} lowering (per inference)")
    for c in COLUMNS:
        t.add_column(c, justify="left" if c in ("name", "kind", "connection") else "right")
    for row in report["layers"]:
        t.add_row(*(_num(row[c]) for c in COLUMNS))
    tot = report["totals"]
    t.add_row("total", "", "", *(_num(tot[c]) if c in tot else "" for c in COLUMNS[3:]), style="bold")
    for conn, agg in report["by_connection"].items():
        t.add_row(f"  {conn}", "", "", *(_num(agg[c]) if c in agg else "" for c in COLUMNS[3:]), style="dim")
    return t


def as_csv(report: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*COLUMNS, *(f"energy_{p}_pj" for p in ENERGY_PARTS)])
    for row in report["layers"]:
        w.writerow([row[c] for c in COLUMNS] + [row["energy_breakdown_pj"][p] for p in ENERGY_PARTS])
    return buf.getvalue()


def _figure_png(report: dict[str, Any]) -> str:
    """Four panels: SOPs and energy per layer, energy per connection type, spike rate and cores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = report["layers"]
    names = [r["name"] for r in layers]
    x = range(len(layers))
    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    ax = axes[0][0]
    bottom = [0.0] * len(layers)
    for part in ENERGY_PARTS:
        vals = [r["energy_breakdown_pj"][part] for r in layers]
        ax.bar(x, vals, bottom=bottom, label=part)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_title("energy per layer (pJ / inference)")
    ax.legend(fontsize=8)
    ax = axes[0][1]
    conns = list(report["by_connection"])
    ax.bar(conns, [report["by_connection"][c]["energy_pj"] for c in conns], label="energy (pJ)")
    ax2 = ax.twinx()
    ax2.plot(conns, [report["by_connection"][c]["sops"] for c in conns], "ko-", label="SOPs")
    ax.set_title("per connection type: energy (bars), SOPs (line)")
    ax = axes[1][0]
    ax.bar(x, [r["sops"] + r["graded_ops"] + r["macs"] for r in layers], color="tab:green")
    ax.set_title("synaptic events per layer (SOPs + graded ops + MACs)")
    ax3 = ax.twinx()
    ax3.plot(list(x), [r["spike_rate"] for r in layers], "r.-")
    ax3.set_ylabel("spike rate", color="r")
    ax = axes[1][1]
    ax.bar(x, [r["cores"] for r in layers], color="tab:purple")
    ax.set_title("cores per layer")
    for a in (axes[0][0], axes[1][0], axes[1][1]):
        a.set_xticks(list(x))
        a.set_xticklabels(names, rotation=90, fontsize=6)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, metadata={"Software": None})
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def as_html(report: dict[str, Any]) -> str:
    """A self-contained page: summary, plots (inline PNG), the table and the profile's estimates."""
    tot = report["totals"]
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(_num(r[c]))}</td>" for c in COLUMNS) + "</tr>"
                   for r in report["layers"])
    conn_rows = "".join(f"<tr><td>{html.escape(c)}</td><td>{_num(a['sops'])}</td><td>{_num(a['macs'])}</td>"
                        f"<td>{_num(a['graded_ops'])}</td><td>{_num(a['energy_pj'])}</td><td>{a['cores']}</td></tr>"
                        for c, a in report["by_connection"].items())
    est = ", ".join(report["estimates"]) or "none"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>danet-deploy report</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}td:first-child{{text-align:left}}</style></head>
<body><h1>danet-deploy report</h1>
<p>profile <b>{html.escape(report['profile'])}</b> ({html.escape(report['profile_kind'])}), target
{html.escape(report['target'])}, {html.escape(report['lowering'])} lowering, {report['timesteps']} time steps,
{report['samples']} samples, pipeline latency {report['pipeline_latency']} steps.
Counts and energies are per inference.</p>
<p>Total: {_num(tot['sops'])} SOPs, {_num(tot['graded_ops'])} graded ops, {_num(tot['macs'])} MACs,
{_num(tot['spikes'])} spikes, {_num(tot['energy_pj'])} pJ, {tot['cores']} cores.</p>
<p><b>Estimated figures in this profile</b> (no published value): {html.escape(est)}</p>
<img alt="per-layer plots" src="data:image/png;base64,{_figure_png(report)}">
<h2>Per connection type</h2><table><tr><th>connection</th><th>SOPs</th><th>MACs</th><th>graded ops</th>
<th>energy (pJ)</th><th>cores</th></tr>{conn_rows}</table>
<h2>Per layer</h2><table><tr>{''.join(f'<th>{c}</th>' for c in COLUMNS)}</tr>{rows}</table>
</body></html>
"""


def render(report: dict[str, Any], fmt: str) -> str | Table:
    if fmt == "json":
        return json.dumps(report, indent=2, sort_keys=True) + "\n"
    if fmt == "csv":
        return as_csv(report)
    if fmt == "html":
        return as_html(report)
    return as_table(report)


def write(report: dict[str, Any], fmt: str, path: Path) -> None:
    from .checkpoint import atomic_write

    text = render(report, fmt)
    if isinstance(text, Table):
        text = as_text(text)
    atomic_write(path, lambda tmp: tmp.write_text(text))


def build_report(artifact: Path, profile: str, data: str, samples: int | None = None, device: str = "cpu",
                 batch_size: int = 64, show_progress: bool = True) -> dict[str, Any]:
    """Account ``artifact`` on ``data`` for ``profile``.

    A compiled export directory is accounted as compiled; a checkpoint or ``.nir`` file
    is compiled first (for ``profile`` when it is a chip, else for loihi2). Under
    torchrun every rank accounts its share of the samples and the counts are summed
    (all-reduced), so the report equals a single process's.
    """
    import torch
    import torch.distributed as dist
    from torch.utils.data import DataLoader, Subset

    from .export import calibration_batch, load_artifact
    from .train import correct_predictions, finish_distributed, init_distributed, resolve_device

    rank, world, dev = init_distributed(resolve_device(device))
    prof = load_profile(profile)
    art = load_artifact(Path(artifact))
    program = art.program
    if program is None:
        target_profile = prof if prof.kind == "chip" else load_profile("loihi2")
        target = "loihi2-sim" if target_profile.name == "loihi2" else target_profile.name
        program, _ = compile_graph(art.graph, target, target_profile, "auto", calibration_batch(art, data, 32))
    ds = first(load_dataset(data, evaluation_split(data))[0], samples)
    share = Subset(ds, range(rank, len(ds), world)) if world > 1 else ds
    acc = Accountant(program, dev)
    shape = art.graph.shapes[art.graph.inputs[0]]
    steps = art.graph.timesteps
    correct = torch.zeros(2, dtype=torch.float64, device=dev)  # simulated, float model
    loader = DataLoader(share, batch_size=batch_size)
    with progress_bar("accounting", len(loader), enabled=show_progress and rank == 0) as advance:
        for x, y in loader:
            x = as_time_series(x.float(), shape, art.graph.timesteps)
            steps = x.shape[1]
            correct[0] += int((acc.add(x).cpu() == y).sum())
            advance()
    if steps is None:
        raise UserError("no time steps known for this graph")
    if art.model is not None:
        correct[1] = correct_predictions(art.model, share, torch.device("cpu"))
    if world > 1:
        acc.all_reduce()
        dist.all_reduce(correct)
    finish_distributed(world)
    report = acc.report(prof, steps)
    report["accuracy"] = float(correct[0]) / len(ds)
    report["data"] = data
    if art.model is not None:
        report["reference_accuracy"] = float(correct[1]) / len(ds)
    return report


def compare(arch: str, connections: list[str], profile: str, data: str, outdir: Path, epochs: int,
            samples: int | None = None, device: str = "cpu") -> list[dict[str, Any]]:
    """Train (or reuse) ``arch`` with each connection type, compile, account; one row per
    connection and lowering: a graph with sums of three or more streams (ms, pa, da)
    gets an ``expand`` and a ``relay`` row, the trade-off between the two."""
    from .converters.nir_import import read_nir
    from .export import export
    from .lowering import lower
    from .progress import console
    from .train import TrainOptions, train

    def account(ckpt: Path, conn: str, lowering: str) -> tuple[Path, dict[str, Any]]:
        """Compile ``ckpt`` with ``lowering`` and account it: the export directory and the row."""
        chip = export(ckpt, "loihi2-sim", outdir / f"{arch}_{conn}.{lowering}.loihi2-sim", lowering=lowering)
        rep = build_report(chip, profile, data, samples, device, show_progress=False)
        t = rep["totals"]
        return chip, {"connection": conn, "lowering": lowering, "float_accuracy": rep.get("reference_accuracy"),
                      "fixed_accuracy": rep["accuracy"], "sops": t["sops"], "macs": t["macs"],
                      "graded_ops": t["graded_ops"], "energy_uj": t["energy_pj"] / 1e6,
                      "synapse_kib": t["synapse_bits"] / 8 / 1024, "cores": t["cores"]}

    rows = []
    for conn in connections:
        ckpt = outdir / f"{arch}_{conn}.pt"
        if not ckpt.exists():
            console.print(f"training {arch} with {conn} connections -> {ckpt}")
            train(TrainOptions(arch=arch, connection=conn, data=data, epochs=epochs, device=device, quiet=True), ckpt)
        chip, expand_row = account(ckpt, conn, "expand")
        rows.append(expand_row)
        relayed = lower(read_nir(chip / "graph.nir"), "relay", with_weights=False).populations.values()
        if any(p.kind == "relay" for p in relayed):  # only a graph with sums to relay differs from expand
            rows.append(account(ckpt, conn, "relay")[1])
    return rows


def compare_table(rows: list[dict[str, Any]], title: str) -> Table:
    t = Table(title=title)
    for key in rows[0]:
        t.add_column(key, justify="left" if key in ("connection", "lowering") else "right")
    for r in rows:
        t.add_row(*(_num(v) if v is not None else "-" for v in r.values()))
    return t


def compare_html(rows: list[dict[str, Any]], title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["connection"] + ("/relay" if r["lowering"] == "relay" else "") for r in rows]
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    for ax, key in zip(axes, ("fixed_accuracy", "sops", "energy_uj", "synapse_kib")):
        ax.bar(labels, [r[key] for r in rows])
        ax.set_title(key)
        ax.tick_params(axis="x", labelrotation=45)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, metadata={"Software": None})
    plt.close(fig)
    head = "".join(f"<th>{k}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_num(v) if v is not None else '-')}</td>"
                                    for v in r.values()) + "</tr>" for r in rows)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
            f"<h1>{html.escape(title)}</h1><img alt='comparison' src='data:image/png;base64,"
            f"{base64.b64encode(buf.getvalue()).decode()}'><table border='1'><tr>{head}</tr>{body}</table>"
            f"</body></html>\n")
