"""Report stage, ``danet-deploy diff A B``: two exports (OUTDIRs of ``export``) or two report
JSON files compared layer by layer, the largest changes first (docs/artifacts.md, "diff").

Exports: structure (populations or NIR nodes added, removed, of another kind, shape or
connection, fed by other sources), quantised weights (``program.h5``: per synapse group how
many integer weights differ and the largest absolute change), the fixed-point parameters
(scale, threshold, decays, exponents, bias mantissas) and cores. Reports: structure, cores,
SOPs, spikes and energy per layer and in total. Both: what the two were made from
(``hashes.made_from``) and the settings that differ (target, profile, time steps, ...).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from rich import box
from rich.table import Table

from .errors import UserError
from .ir.program import Program, read_program
from .hashes import content_sha256, file_sha256
from .outputs import ARTIFACT_FILES, TAGS, identify, is_artifact_dir
from .progress import as_text
from .report_format import HEADINGS, cell

EXPECTED = (
    "an export directory (OUTDIR of `danet-deploy export`) or a report JSON "
    "(`danet-deploy report --format json`)"
)
EXPORT_SETTINGS = ("target", "profile", "timesteps", "dt", "lowering", "pipeline_latency")
REPORT_SETTINGS = (
    "profile",
    "target",
    "timesteps",
    "samples",
    "data",
    "lowering",
    "pipeline_latency",
    "static_power",
    "accuracy",
    "reference_accuracy",
)
# per layer and in total, in the order a report's rows are ranked by (the first that differs)
REPORT_METRICS = (
    "energy_pj",
    "energy_dynamic_pj",
    "energy_static_pj",
    "sops",
    "spikes",
    "graded_ops",
    "macs",
    "cores",
    "synapses",
    "neurons",
)
FIXED_PARAMETERS = ("scale", "value_scale", "vth", "dv", "du")
EXPONENTS = ("spike_exp", "state_exp")


@dataclass
class Side:
    """One input of a diff: its name, what it is and its document (manifest or report)."""

    path: Path
    kind: str  # "export" or "report"
    doc: dict[str, Any]

    @property
    def name(self) -> str:
        return self.path.resolve().name

    @cached_property
    def files(self) -> dict[str, str]:
        """An export's files (not its manifest) by their sha256 as they are now."""
        return {
            n: file_sha256(self.path / n)
            for n in ARTIFACT_FILES
            if n != "manifest.json" and (self.path / n).is_file()
        }


def read_side(path: Path) -> Side:
    """``path`` as an export directory or a report JSON, else a one-line error."""
    path = Path(path)
    if path.is_dir():
        if not is_artifact_dir(path):
            raise UserError(
                f"{path}: a directory without an export's manifest.json; expected {EXPECTED}"
            )
        return Side(path, "export", json.loads((path / "manifest.json").read_text()))
    found = identify(path)
    if found == "report":
        try:
            doc = json.loads(path.read_text())
        except ValueError:
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("layers"), list) and "totals" in doc:
            return Side(path, "report", doc)
        raise UserError(
            f"{path}: a report, but not the JSON of `report --format json` (no layers and "
            f"totals); expected {EXPECTED}"
        )
    what = f"a danet-deploy {found}" if found else "not an output of danet-deploy"
    raise UserError(f"{path}: {what}; expected {EXPECTED}")


def read_pair(a: Path, b: Path) -> tuple[Side, Side]:
    """Both inputs, refused in one line unless they are of one kind."""
    sa, sb = read_side(a), read_side(b)
    if sa.kind != sb.kind:
        raise UserError(
            f"{a} is {_article(sa.kind)} and {b} {_article(sb.kind)}; diff compares two export "
            f"directories or two report JSON files"
        )
    return sa, sb


def _article(kind: str) -> str:
    return "an export directory" if kind == "export" else "a report JSON"


# ---- differences ------------------------------------------------------------------------


def _change(a: Any, b: Any) -> dict[str, Any]:
    """One value on both sides; numbers also get their difference."""
    entry = {"a": a, "b": b}
    if _number(a) and _number(b):
        entry["delta"] = b - a
    return entry


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _differing(da: dict[str, Any], db: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: _change(da.get(k), db.get(k)) for k in keys if da.get(k) != db.get(k)}


def made_from_changes(sa: Side, sb: Side) -> dict[str, Any]:
    """The inputs (model, profile, data, tool) that differ, each side's entry beside: a file by
    its sha256 (the same file under another name is the same input); an artefact written before
    hashes were recorded says so."""
    ma = (sa.doc.get("hashes") or {}).get("made_from")
    mb = (sb.doc.get("hashes") or {}).get("made_from")
    if ma is None or mb is None:
        return {} if ma == mb else {"hashes": _change(ma is not None, mb is not None)}
    keys = sorted(set(ma) | set(mb))
    return {
        k: _change(ma.get(k), mb.get(k)) for k in keys if _input(ma.get(k)) != _input(mb.get(k))
    }


def _input(entry: Any) -> Any:
    """What identifies an input: its sha256 where it has one."""
    return entry.get("sha256") or entry if isinstance(entry, dict) else entry


def _layer_row(name: str, status: str) -> dict[str, Any]:
    return {
        "name": name,
        "status": status,
        "structure": {},
        "weights": [],
        "fixed": {},
        "metrics": {},
    }


def _structure(
    rows_a: dict[str, dict], rows_b: dict[str, dict], keys: tuple[str, ...]
) -> list[dict]:
    """Per layer name: added, removed, or the ``keys`` that differ (one row each)."""
    out = []
    for name in list(rows_a) + [n for n in rows_b if n not in rows_a]:
        if name not in rows_b:
            out.append(_layer_row(name, "removed"))
        elif name not in rows_a:
            out.append(_layer_row(name, "added"))
        else:
            row = _layer_row(name, "changed")
            row["structure"] = _differing(rows_a[name], rows_b[name], keys)
            out.append(row)
    return out


# ---- exports -----------------------------------------------------------------------------


def _program(side: Side) -> Program | None:
    path = side.path / "program.h5"
    return read_program(path) if path.is_file() else None


def _population_rows(program: Program) -> dict[str, dict[str, Any]]:
    return {
        name: {
            "kind": pop.kind.name,
            "shape": list(pop.shape),
            "connection": pop.connection,
            "latency": pop.latency,
            "inputs": [g.source for g in pop.synapse_groups],
        }
        for name, pop in program.populations.items()
    }


def _by_source(pop: Any) -> dict[tuple[str, int], Any]:
    """A population's synapse groups keyed by (source, how many from that source came before)."""
    keyed, seen = {}, {}
    for g in pop.synapse_groups:
        seen[g.source] = seen.get(g.source, -1) + 1
        keyed[(g.source, seen[g.source])] = g
    return keyed


def weight_changes(pa: Any, pb: Any) -> list[dict[str, Any]]:
    """Per synapse group of a population on both sides (matched by source, in order): how many
    quantised weights differ, of how many, and the largest absolute change (integer units).
    Compared in their own integer type: a large program is not copied wider."""
    out = []
    groups_b = _by_source(pb)
    for key, g in _by_source(pa).items():
        other = groups_b.get(key)
        if other is None or g.weight_q.shape != other.weight_q.shape:
            continue  # a structural change, listed as such
        changed = g.weight_q != other.weight_q
        count = int(changed.sum())
        if count:
            step = other.weight_q[changed].astype(np.int64) - g.weight_q[changed]
            out.append(
                {
                    "source": g.source,
                    "changed": count,
                    "of": int(changed.size),
                    "max_abs_change": int(np.abs(step).max()),
                }
            )
    return out


def _bias_change(ba: np.ndarray | None, bb: np.ndarray | None) -> dict[str, Any] | None:
    """How many bias mantissas differ (None: reshaped, added or removed); None when alike."""
    if ba is None and bb is None:
        return None
    if ba is None or bb is None or ba.shape != bb.shape:
        return {"changed": None}
    n = int(np.sum(ba != bb))
    return {"changed": n} if n else None


def _fixed_changes(program_a: Program, program_b: Program, name: str) -> dict[str, Any]:
    fa, fb = program_a.fixed[name], program_b.fixed[name]
    pa, pb = program_a.populations[name], program_b.populations[name]
    out = _differing(vars(fa), vars(fb), FIXED_PARAMETERS)
    out.update(_differing(vars(pa), vars(pb), EXPONENTS))
    if "scale" in out and fa.scale > 0 and fb.scale > 0:
        out["scale"]["log2_ratio"] = math.log2(fb.scale / fa.scale)
    bias = _bias_change(fa.bias_mant, fb.bias_mant)
    if bias is not None:
        out["bias_mant"] = bias
    return out


def _cores(manifest: dict[str, Any]) -> dict[str, int]:
    layers = (manifest.get("core_mapping") or {}).get("layers") or {}
    return {name: int(m.get("cores", 0)) for name, m in layers.items()}


def diff_exports(sa: Side, sb: Side) -> list[dict[str, Any]]:
    """Layer rows of two exports: the compiled populations when both have ``program.h5``,
    else the NIR nodes of their manifests."""
    prog_a, prog_b = _program(sa), _program(sb)
    if prog_a is None or prog_b is None:
        rows = _structure(_node_rows(sa), _node_rows(sb), ("type", "shape", "inputs"))
        return [r for r in rows if _has_change(r)]
    rows = _structure(
        _population_rows(prog_a),
        _population_rows(prog_b),
        ("kind", "shape", "connection", "latency", "inputs"),
    )
    cores_a, cores_b = _cores(sa.doc), _cores(sb.doc)
    for row in rows:
        name = row["name"]
        if row["status"] == "changed":
            row["weights"] = weight_changes(prog_a.populations[name], prog_b.populations[name])
            row["fixed"] = _fixed_changes(prog_a, prog_b, name)
        row["metrics"] = _differing(
            {"cores": cores_a.get(name)}, {"cores": cores_b.get(name)}, ("cores",)
        )
    return [r for r in rows if _has_change(r)]


def _node_rows(side: Side) -> dict[str, dict[str, Any]]:
    """An export's NIR nodes (its manifest's ``layers``): type, shape and inputs."""
    return {
        n["name"]: {"type": n["type"], "shape": n["shape"], "inputs": n["inputs"]}
        for n in side.doc.get("layers", [])
    }


def _has_change(row: dict[str, Any]) -> bool:
    return row["status"] != "changed" or any(
        row[k] for k in ("structure", "weights", "fixed", "metrics")
    )


def _export_totals(sa: Side, sb: Side) -> dict[str, Any]:
    def totals(s: Side) -> dict[str, Any]:
        mapping = s.doc.get("core_mapping") or {}
        return {"cores": mapping.get("cores"), "chips": mapping.get("chips")}

    return _differing(totals(sa), totals(sb), ("cores", "chips"))


def file_changes(sa: Side, sb: Side) -> dict[str, Any]:
    """The files of two exports whose sha256 differ, as they are now (a file that no longer
    matches its manifest's ``hashes.files`` is named in :func:`unverified`)."""
    ha, hb = sa.files, sb.files
    names = sorted(set(ha) | set(hb))
    return {n: _change(ha.get(n), hb.get(n)) for n in names if ha.get(n) != hb.get(n)}


def unverified(side: Side) -> list[str]:
    """What of ``side`` no longer matches the hashes it recorded (changed since it was
    written): a report or manifest whose ``content_sha256`` differs, an export's files whose
    sha256 is not its manifest's; named as ``side/file``."""
    hashes = side.doc.get("hashes")
    if not hashes:
        return []
    bad = []
    if side.kind == "export":
        recorded = hashes.get("files", {})
        bad = [n for n, sha in side.files.items() if recorded.get(n) != sha]
        if hashes.get("content_sha256") != content_sha256(side.doc):
            bad.append("manifest.json")
        return [f"{side.name}/{n}" for n in bad]
    return [side.name] if hashes.get("content_sha256") != content_sha256(side.doc) else []


# ---- reports -----------------------------------------------------------------------------


def diff_reports(sa: Side, sb: Side) -> list[dict[str, Any]]:
    """Layer rows of two reports: structure (kind, connection) and every metric that differs."""
    la = {r["name"]: r for r in sa.doc["layers"]}
    lb = {r["name"]: r for r in sb.doc["layers"]}
    rows = _structure(la, lb, ("kind", "connection"))
    for row in rows:
        a, b = la.get(row["name"], {}), lb.get(row["name"], {})
        row["metrics"] = {
            k: _change(a.get(k, 0), b.get(k, 0))
            for k in REPORT_METRICS
            if a.get(k, 0) != b.get(k, 0)
        }
    return [r for r in rows if _has_change(r)]


# ---- the whole diff ----------------------------------------------------------------------


def rank_key(row: dict[str, Any]) -> tuple:
    """Largest change first: layers added or removed, then a changed kind, shape or
    connection, then by the first of (weights changed, largest weight change,
    :data:`REPORT_METRICS`, fixed-point parameters) whose magnitude is larger."""
    structural = row["status"] != "changed" or bool(row["structure"])
    weights = sum(w["changed"] for w in row["weights"])
    biggest = max((w["max_abs_change"] for w in row["weights"]), default=0)
    metrics = tuple(-abs(row["metrics"].get(k, {}).get("delta", 0) or 0) for k in REPORT_METRICS)
    return (not structural, -weights, -biggest, *metrics, -len(row["fixed"]), row["name"])


def diff(a: Path, b: Path) -> dict[str, Any]:
    """The diff of ``a`` and ``b`` as a JSON document (docs/artifacts.md, "diff")."""
    sa, sb = read_pair(a, b)
    if sa.kind == "export":
        settings = _differing(sa.doc, sb.doc, EXPORT_SETTINGS)
        layers = diff_exports(sa, sb)
        totals = _export_totals(sa, sb)
        files = file_changes(sa, sb)
    else:
        files = {}
        settings = _differing(sa.doc, sb.doc, REPORT_SETTINGS)
        layers = diff_reports(sa, sb)
        totals = _differing(sa.doc["totals"], sb.doc["totals"], REPORT_METRICS)
    layers.sort(key=rank_key)
    made = made_from_changes(sa, sb)
    return {
        "format": TAGS["diff"],
        "kind": sa.kind,
        "a": sa.name,
        "b": sb.name,
        "identical": not (settings or layers or totals or made or files),
        "made_from": made,
        "files": files,
        "unverified": unverified(sa) + unverified(sb),
        "settings": settings,
        "totals": totals,
        "layers": layers,
    }


# ---- for people --------------------------------------------------------------------------

EXPORT_HEADINGS = (
    "layer",
    "change",
    "structure",
    "weights changed",
    "max |Δw|",
    "fixed point",
    "cores",
)
TEXT_COLUMNS = {"layer", "change", "structure", "weights changed", "fixed point"}
REPORT_HEADINGS = ("layer", "change", "structure", "cores", "SOPs", "spikes", "energy")


def shown_delta(key: str, c: dict[str, Any]) -> str:
    """``+delta, +x %`` in the report's units ("" for what is not a number)."""
    if "delta" not in c:
        return ""
    d = c["delta"]
    sign = "+" if d > 0 else "-" if d < 0 else "±"
    rel = f", {100 * d / c['a']:+.1f} %" if c["a"] else ""
    return f"{sign}{cell(key, abs(d))}{rel}"


def shown_change(key: str, c: dict[str, Any]) -> str:
    """``a → b (+delta, +x %)`` in the report's units."""
    delta = shown_delta(key, c)
    return f"{cell(key, c['a'])} → {cell(key, c['b'])}" + (f" ({delta})" if delta else "")


def section_rows(d: dict[str, Any], section: str) -> list[list[str]]:
    """One summary section (:data:`SUMMARY_SECTIONS`) as rows: what, a, b, the change."""
    if section in ("made_from", "files"):
        return [[k, brief(c["a"]), brief(c["b"]), ""] for k, c in d[section].items()]
    return [
        [HEADINGS.get(k, k), cell(k, c["a"]), cell(k, c["b"]), shown_delta(k, c)]
        for k, c in d[section].items()
    ]


def _structure_text(row: dict[str, Any]) -> str:
    return "; ".join(f"{k}: {shown_change(k, c)}" for k, c in row["structure"].items())


def _weights_text(row: dict[str, Any]) -> tuple[str, str]:
    if not row["weights"]:
        return "", ""
    changed = "; ".join(
        f"{w['changed']:,} of {w['of']:,} from {w['source']}" for w in row["weights"]
    )
    return changed, str(max(w["max_abs_change"] for w in row["weights"]))


def _fixed_text(row: dict[str, Any]) -> str:
    parts = []
    for k, c in row["fixed"].items():
        if k == "bias_mant":
            n = c["changed"]
            parts.append(f"bias: {n:,} changed" if n is not None else "bias: reshaped")
        elif k == "scale" and "log2_ratio" in c:
            parts.append(f"scale ×2^{c['log2_ratio']:+.2f}")
        else:
            parts.append(f"{k}: {c['a']:.6g} → {c['b']:.6g}")
    return "; ".join(parts)


def table_rows(d: dict[str, Any]) -> tuple[tuple[str, ...], list[list[str]]]:
    """The layer rows as text, largest change first, with their headings (a column empty in
    every row is left out)."""
    rows = []
    for r in d["layers"]:
        m = r["metrics"]

        def metric(k: str) -> str:
            return shown_change(k, m[k]) if k in m else ""

        head = [r["name"], r["status"], _structure_text(r)]
        if d["kind"] == "export":
            rows.append([*head, *_weights_text(r), _fixed_text(r), metric("cores")])
        else:
            rows.append([*head, *(metric(k) for k in ("cores", "sops", "spikes", "energy_pj"))])
    headings = EXPORT_HEADINGS if d["kind"] == "export" else REPORT_HEADINGS
    kept = [i for i in range(len(headings)) if i < 2 or any(r[i] for r in rows)]
    return tuple(headings[i] for i in kept), [[r[i] for i in kept] for r in rows]


def summary(d: dict[str, Any]) -> list[str]:
    """What the diff found, in a few lines: made_from, settings and totals that differ."""
    lines = [_verdict(d)]
    if d["unverified"]:
        lines.append(
            f"changed since written (not the sha256 recorded): {', '.join(d['unverified'])}"
        )
    if d["identical"]:
        return lines
    for title, key in SUMMARY_SECTIONS:
        parts = [
            f"{k}: {a} → {b}" + (f" ({change})" if change else "")
            for k, a, b, change in section_rows(d, key)
        ]
        if parts:
            lines.append(f"{title}: " + "; ".join(parts))
    return lines


def _verdict(d: dict[str, Any]) -> str:
    n = len(d["layers"])
    if d["identical"]:
        return f"no differences between {d['a']} and {d['b']}"
    return f"{n} layer(s) differ, largest change first" if n else "no layer differs"


SUMMARY_SECTIONS = (
    ("made from", "made_from"),
    ("files", "files"),
    ("settings", "settings"),
    ("totals", "totals"),
)


def brief(v: Any) -> str:
    """A ``made_from`` input or a hash, short: its name and the first 12 hex digits."""
    if isinstance(v, dict):
        name = v.get("name") or v.get("spec") or v.get("version")
        sha = v.get("sha256")
        return f"{name} ({sha[:12]})" if sha else str(name)
    if isinstance(v, str) and len(v) == 64:
        return v[:12]
    return "-" if v is None else str(v)


def diff_text(d: dict[str, Any]) -> str:
    """The diff for a terminal or a text file: what differs in a few lines, then the layers
    that differ as a table, largest change first (none when there are none)."""
    text = "\n".join(summary(d)) + "\n"
    headings, rows = table_rows(d)
    if not rows:
        return text
    t = Table(box=box.SIMPLE_HEAD)
    for h in headings:
        left = h in TEXT_COLUMNS
        t.add_column(h, justify="left" if left else "right")
    for r in rows:
        t.add_row(*r)
    return text + as_text(t)
