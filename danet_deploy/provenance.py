"""How every energy, power and time figure of a report was obtained (report key ``provenance``).

NeuroBench's system track labels each power figure by how it was obtained: "External analyzer
tap", "On-board instrument", "Wall power" or "Estimate (only for simulated systems)". Every
figure danet-deploy reports is the last kind: counts of the compiled program in our fast
simulator times a profile's per-operation figures, never a device measurement. :data:`FIGURES`
says, for each figure key, which profile values (``section.key``) and which other figures the
code that computes it (account.py: ``_energy``, ``_static_pj``, ``_timing``, the EDP in
``Accountant.report``) reads; a new figure is one entry there (docs/accounting.md, "Provenance").
"""

from __future__ import annotations

from typing import Any

from .profiles import TIMES, Profile

METHOD = "Estimate (simulated system)"  # NeuroBench's system-track words for what we report
NOT_CHARGED = "Not charged (0)"
SIMULATORS = {
    "fast": "danet-deploy's fast simulator (the compiled program's fixed-point arithmetic in "
    "PyTorch, bit-exact with Lava's Loihi2SimCfg; docs/accounting.md)",
    "lava": "Lava's Loihi2SimCfg CPU simulation (bit-accurate fixed point; accuracy and spike "
    "parity only, no energy or time)",
}
NOT_MEASURED = (
    "No figure here was measured on a device: energies and times are estimates from "
    "simulated activity and the profile's per-operation figures."
)

ROWS = ("layers", "totals", "by_connection")  # the figure is a key of every such row
PARTS = ("layers", "totals")  # rows that carry energy_breakdown_pj
REPORT = ("report",)  # the figure's key is a path from the report's top level
# the per-operation times a step is computed from: the profile's own (the band's upper bound),
# its peak times (the lower bound) and the stated ones (its fitted times where it states them,
# else its own); account.py: _timing, docs/accounting.md, "Time as a band"
OWN, PEAK, STATED = "", "_peak", "_fitted"
TIME_SETS = {"@own": OWN, "@peak": PEAK, "@stated": STATED}
DYNAMIC = tuple(f"energy_breakdown_pj.{p}" for p in ("synaptic", "neuron", "routing", "mac"))
# figure -> (where it is, what its code reads: profile values "section.key" and other figures)
FIGURES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "energy_breakdown_pj.synaptic": (PARTS, ("energy.synaptic_op", "energy.graded_op")),
    "energy_breakdown_pj.neuron": (PARTS, ("energy.neuron_update",)),
    "energy_breakdown_pj.routing": (PARTS, ("energy.spike_routing",)),
    "energy_breakdown_pj.mac": (PARTS, ("energy.mac",)),
    "energy_breakdown_pj.static": (
        PARTS,
        ("energy.static_per_chip", "constraints.cores_per_chip", "timing.inference_time_us"),
    ),
    "energy_dynamic_pj": (ROWS, DYNAMIC),
    "energy_static_pj": (ROWS, ("energy_breakdown_pj.static",)),
    "energy_pj": (ROWS, ("energy_dynamic_pj", "energy_static_pj")),
    "timing.step_ns": (REPORT, ("@stated",)),
    "timing.step_ns_lower": (REPORT, ("@peak",)),
    "timing.step_ns_upper": (REPORT, ("@own",)),
    "timing.inference_time_us_lower": (REPORT, ("timing.step_ns_lower",)),
    "timing.inference_time_us_upper": (REPORT, ("timing.step_ns_upper",)),
    "timing.inference_time_us": (REPORT, ("timing.step_ns",)),
    "timing.latency_us": (REPORT, ("timing.step_ns",)),
    "timing.throughput_per_s": (REPORT, ("timing.inference_time_us",)),
    "timing.edp_uj_ms": (REPORT, ("energy_pj", "timing.latency_us")),
    "timing.edp_dynamic_uj_ms": (REPORT, ("energy_dynamic_pj", "timing.latency_us")),
    # the papers' arithmetic on the papers' counts (account.py: _paper_convention)
    "paper_energy_pj": (ROWS, ("energy.synaptic_op", "energy.mac")),
}
# figures a report carries only with a profile that is a paper convention (profile.convention)
PAPER_ONLY = frozenset({"paper_energy_pj"})
# compare's energy columns: the report figure each is taken from (pipeline.compare)
COMPARE_FIGURES = {
    "dynamic_uj": "energy_dynamic_pj",
    "static_uj": "energy_static_pj",
    "energy_uj": "energy_pj",
}


def _uncharged(timed: bool, static_power: str) -> str | None:
    """Why static energy is zero by construction, or None when it is charged."""
    if not timed:
        return "no timing model in this profile, so no static energy"
    return "--static-power off" if static_power == "off" else None


def time_keys(profile: Profile, suffix: str) -> tuple[str, ...]:
    """The profile's per-operation times with ``suffix`` (``timing.*_peak``, ...), or its own
    where it states not all of them: what ``_timing`` falls back to."""
    keys = tuple(f"{k}{suffix}" for k in TIMES)
    own = all(k in profile.timing for k in keys)
    return tuple(f"timing.{k if own else k.removesuffix(suffix)}" for k in keys)


def rests_on(key: str, profile: Profile, skipped: frozenset[str] = frozenset()) -> list[str]:
    """The profile values (``section.key``) figure ``key`` rests on, through the figures it is
    computed from, first use first; figures in ``skipped`` (not charged) add nothing."""
    found: dict[str, None] = {}
    for part in () if key in skipped else FIGURES[key][1]:
        if part in FIGURES:
            found.update(dict.fromkeys(rests_on(part, profile, skipped)))
        elif part in TIME_SETS:
            found.update(dict.fromkeys(time_keys(profile, TIME_SETS[part])))
        else:
            found[part] = None
    return list(found)


def cited(profile: Profile, key: str) -> dict[str, Any]:
    """One profile value as the report cites it."""
    section, name = key.split(".")
    f = getattr(profile, section)[name]
    return {"key": key, "value": f.value, "unit": f.unit, "kind": f.kind, "source": f.source}


def provenance(profile: Profile, static_power: str, timed: bool) -> dict[str, Any]:
    """The report's ``provenance``: per figure key its method, simulator and the profile values it
    rests on. ``timed``: the report has ``timing`` (a chip profile with a timing model)."""
    why = _uncharged(timed, static_power)
    skipped = frozenset({"energy_breakdown_pj.static"} if why else ())
    figures = {}
    for key, (where, _) in FIGURES.items():
        if key.startswith("timing.") and not timed:  # the report's timing is null
            continue
        if key in PAPER_ONLY and profile.convention != "paper":
            continue
        keys = rests_on(key, profile, skipped)
        figures[key] = {
            "applies_to": list(where),
            "method": METHOD if keys else f"{NOT_CHARGED}: {why}",
            "simulator": "fast" if keys else None,  # a key of SIMULATORS
            "rests_on": [cited(profile, k) for k in keys],
        }
    return {
        "method": METHOD,
        "simulators": {"fast": SIMULATORS["fast"]},
        "measured_on_device": False,
        "note": NOT_MEASURED,
        "profile": profile.name,
        "figures": figures,
    }


def compare_provenance(prov: dict[str, Any]) -> dict[str, Any]:
    """A report's ``provenance`` with its figures renamed to compare's energy columns (the
    comparison's JSON key ``provenance``)."""
    figures = {
        column: {**prov["figures"][key], "applies_to": ["rows"]}
        for column, key in COMPARE_FIGURES.items()
    }
    return {**prov, "figures": figures}


def cited_values(prov: dict[str, Any]) -> list[dict[str, Any]]:
    """Every profile value any figure rests on, once each, by key (a report read back from JSON,
    whose keys are sorted, lists them as the one it was written from)."""
    seen = {v["key"]: v for entry in prov["figures"].values() for v in entry["rests_on"]}
    return [seen[k] for k in sorted(seen)]


def values_text(profile: str, values: list[dict[str, Any]]) -> str:
    """Cited profile values in one line: ``profile: section.key value unit (kind); ...``."""
    listed = "; ".join(f"{v['key']} {v['value']:g} {v['unit']} ({v['kind']})" for v in values)
    return f"{profile}: {listed or 'none'}"


def rests_on_text(prov: dict[str, Any], key: str = "energy_pj") -> str:
    """The profile values figure ``key`` rests on, in one line (:func:`values_text`)."""
    return values_text(prov["profile"], prov["figures"][key]["rests_on"])
