"""Numbers for people (SI prefixes instead of ``111,083,407.0 pJ``) and the columns of
the report's tables; JSON and CSV keep raw numbers."""

from __future__ import annotations

import math

_COUNT = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))
_ENERGY_PJ = ((1e12, "J"), (1e9, "mJ"), (1e6, "µJ"), (1e3, "nJ"), (1.0, "pJ"))
_TIME_US = ((1e6, "s"), (1e3, "ms"), (1.0, "µs"), (1e-3, "ns"))


def _three(v: float) -> str:
    """Three significant digits, no exponent."""
    if v == 0:
        return "0"
    digits = max(0, 2 - int(math.floor(math.log10(abs(v)))))
    return f"{v:.{digits}f}"


def count(v: float) -> str:
    """``12,345`` -> ``12.3 k``; small values keep up to three significant digits."""
    for scale, prefix in _COUNT:
        if abs(v) >= scale:
            return f"{_three(v / scale)} {prefix}"
    return str(int(v)) if float(v).is_integer() else _three(v)


def _scaled(v: float, table: tuple[tuple[float, str], ...]) -> str:
    for scale, unit in table:
        if abs(v) >= scale:
            return f"{_three(v / scale)} {unit}"
    scale, unit = table[-1]
    return f"{_three(v / scale)} {unit}"


def energy(pj: float) -> str:
    """An energy given in pJ, in the unit that reads best (pJ, nJ, µJ, mJ, J)."""
    return _scaled(pj, _ENERGY_PJ)


def duration(us: float) -> str:
    """A time given in µs, in the unit that reads best (ns, µs, ms, s)."""
    return _scaled(us, _TIME_US)


def time_band(timing: dict) -> str:
    """The band around the stated time of one inference, for the prose beside it ('' for a
    profile that states no band; docs/accounting.md, "Time as a band")."""
    lower, upper = timing.get("inference_time_us_lower"), timing.get("inference_time_us_upper")
    if lower is None or lower == upper:
        return ""
    return f"{timing['stated']}; band {duration(lower)} at peak rates to {duration(upper)}"


def energy_unit(max_pj: float) -> tuple[float, str]:
    """The divisor and unit name for an axis whose largest value is ``max_pj``."""
    for scale, unit in _ENERGY_PJ:
        if abs(max_pj) >= scale:
            return scale, unit
    return 1.0, "pJ"


def percent(fraction: float) -> str:
    return f"{100 * fraction:.1f} %"


COUNT_COLUMNS = (
    "neurons",
    "synapses",
    "cores",
    "spikes",
    "graded_spikes",
    "spike_rate",
    "sops",
    "graded_ops",
    "macs",
    "neuron_updates",
)
COLUMNS = (
    "name",
    "kind",
    "connection",
    *COUNT_COLUMNS,
    "energy_dynamic_pj",
    "energy_static_pj",
    "energy_pj",
)
# the papers' SOP convention beside ours (docs/accounting.md, "The papers' SOP convention"); with a
# profile that is a paper convention, also its energy
PAPER_COLUMNS = ("paper_sops", "paper_macs", "paper_sop_ratio")
PAPER_ENERGY = "paper_energy_pj"


def paper_columns(report: dict) -> tuple[str, ...]:
    """The paper-convention columns a report has: its energy only with a paper profile."""
    return PAPER_COLUMNS + ((PAPER_ENERGY,) if PAPER_ENERGY in report["totals"] else ())


def layer_columns(report: dict) -> tuple[str, ...]:
    """Every per-layer column of a report's table and HTML page."""
    return COLUMNS + paper_columns(report)


# a table on a terminal shows the main columns (all with --wide, and always in JSON, CSV and HTML),
# and on a narrow terminal leaves out the next of NARROWER until it fits
MAIN_COLUMNS = (
    "name",
    "connection",
    "neurons",
    "cores",
    "spikes",
    "sops",
    "energy_dynamic_pj",
    "energy_static_pj",
    "energy_pj",
)
NARROWER = ("energy_static_pj", "connection", "neurons", "cores")
SHORT_HEADINGS = {
    "energy_dynamic_pj": "dynamic",
    "energy_static_pj": "static",
    "energy_pj": "total",
    "dynamic_uj": "dynamic",
    "static_uj": "static",
    "energy_uj": "total",
}
COMPARE_MAIN = (
    "connection",
    "lowering",
    "fixed_accuracy",
    "dynamic_uj",
    "static_uj",
    "energy_uj",
    "sops",
    "cores",
    "dynamic_rank",
)
COMPARE_NARROWER = ("static_uj", "cores", "sops")


def layouts(
    every: tuple[str, ...], main: tuple[str, ...], narrower: tuple[str, ...]
) -> list[tuple[str, ...]]:
    """Column sets from ``every`` column to the fewest: the main ones, then one more of
    ``narrower`` left out at a time."""
    sets = [every, main]
    for drop in narrower:
        sets.append(tuple(c for c in sets[-1] if c != drop))
    return sets


HEADINGS = {
    "energy_dynamic_pj": "dynamic energy",
    "energy_static_pj": "static energy",
    "energy_pj": "total energy",
    "spike_rate": "spike rate",
    "graded_spikes": "graded spikes",
    "graded_ops": "graded ops",
    "neuron_updates": "neuron updates",
    "paper_sops": "paper SOPs",
    "paper_macs": "paper MACs",
    "paper_sop_ratio": "paper/exact SOPs",
    "paper_energy_pj": "paper energy",
}
COMPARE_HEADINGS = {
    "float_accuracy": "float acc.",
    "fixed_accuracy": "fixed acc.",
    "dynamic_uj": "dynamic energy",
    "static_uj": "static energy",
    "energy_uj": "total energy",
    "graded_ops": "graded ops",
    "synapse_kib": "synapse memory",
    "dynamic_rank": "rank (dynamic)",
    "sops_rank": "rank (SOPs)",
    "paper_sops": "paper SOPs",
    "paper_sops_rank": "rank (paper SOPs)",
}
# the rank keys of a comparison's rows, by what ranks them (pipeline.RANKINGS)
RANK_KEYS = {"dynamic_rank": "dynamic energy", "sops_rank": "SOPs", "paper_sops_rank": "paper SOPs"}


def ranked_by(rows: list[dict]) -> tuple[str, str]:
    """The rank key a comparison was asked to order by, and what it ranks: another than
    ``dynamic_rank`` where the rows have one."""
    keys = [k for k in RANK_KEYS if k in rows[0]]
    return keys[-1], RANK_KEYS[keys[-1]]


def cell(key: str, v: object) -> str:
    """One report value in human units."""
    if v is None:
        return "-"
    if key.startswith("energy") or key == PAPER_ENERGY:
        return energy(float(v))
    if key == "paper_sop_ratio":
        return f"{float(v):.3f}"
    if key == "spike_rate":
        return percent(float(v))
    if isinstance(v, (int, float)):
        return count(v)
    return str(v)


def compare_cell(key: str, v: object) -> str:
    """One comparison value in human units."""
    if v is None:
        return "-"
    if key.endswith("_uj"):
        return energy(float(v) * 1e6)
    if key.endswith("accuracy"):
        return f"{float(v):.4f}"
    if key == "synapse_kib":
        return f"{count(float(v) * 1024)}B"
    return cell(key, v)


NEUROBENCH_METRICS = (
    "Footprint",
    "ConnectionSparsity",
    "ActivationSparsity",
    "SynapticOperations.Effective_ACs",
    "SynapticOperations.Effective_MACs",
    "SynapticOperations.Dense",
    "MembraneUpdates",
    "NeuronOperations.Effective Neuron Ops",
    "NeuronOperations.Neuron Dense Ops",
)


def neurobench_rows(report: dict) -> list[list[str]]:
    """NeuroBench's metrics (report key ``neurobench``) as rows: metric, as deployed, as trained."""
    nb = report.get("neurobench") or {}

    def shown(metrics: dict | None, name: str) -> str:
        value: object = metrics or {}
        for part in name.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            return "-"
        if name == "Footprint":
            return f"{count(value)}B"
        return f"{value:.4f}" if "Sparsity" in name else count(value)

    return [
        [name, shown(nb.get("deployed"), name), shown(nb.get("trained"), name)]
        for name in NEUROBENCH_METRICS
    ]
