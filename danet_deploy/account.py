"""Account stage: exact per-layer operation counts and energy of a compiled program.

Conventions (docs/accounting.md), per inference (all time steps of one sample), averaged over
the evaluated samples:

* ``sops``: binary spikes delivered across existing synapses (nonzero quantised
  weights; conv borders and strides exact). A source that fires into two synapse
  groups of one neuron (SEW ADD lowered as fan-in) is counted in both, so an integer
  input ``n`` costs ``n`` SOPs.
* ``graded_ops``: nonzero graded messages (relays, sigma-delta neurons) delivered across synapses.
* ``macs``: nonzero real-valued inputs (the image into the stem) across synapses.
* ``spikes``: binary spikes emitted; ``graded_spikes``: graded messages emitted (nonzero
  payloads of relays and sigma-delta neurons, each ``payload_bits`` wide); ``neuron_updates``:
  neurons x time steps (Loihi updates every neuron at every step, sigma-delta ones included).
* ``synapses``, ``synapse_bits``, ``cores``: from the core mapping.
* ``energy_dynamic_pj``: counts x the profile's per-op energies (synaptic, neuron,
  routing, MAC parts); ``energy_static_pj``: static power x the estimated inference
  time, attributed by ``static_power``: ``cores`` (default: the chip's static power x
  cores used / cores per chip), ``chip`` (every chip the network touches, whole) or
  ``off``; spread over layers by their cores. ``energy_pj`` is their sum.
* ``timing`` (chips): the estimated time step (barrier + the busiest core's work),
  inference time (T steps), latency (T + pipeline latency steps), throughput and the
  energy-delay product, at the stated per-operation times (``stated``, ``stated_why``); the
  step and the inference time also as a band (``*_lower``: peak rates, ``*_upper``: the
  profile's own times; docs/accounting.md, "Time as a band").
* ``edges``: one row per synapse group (source -> consumer) with its events.
* ``provenance``: how each energy and time figure was obtained and which profile values it rests
  on (provenance.py: one table; docs/accounting.md, "Provenance").
* A population's recurrent synapses (onto itself) get a row of their own, kind and
  connection ``recurrent``, after the population's: their synapses, synapse bits and
  SOPs (the spikes of a sample's last step reach no step of that sample and are not
  counted); the population's row keeps its neurons, cores and feed-forward input.

Per-layer rows sum exactly to the totals; ``by_connection`` sums rows by the
connection type of the block each layer belongs to.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from .errors import UserError
from .ir.chip_format import LOIHI
from .ir.program import Program, bound_by, summarise, synapse_count
from .ir.resets import Reset
from .outputs import TAGS
from .paper_sops import PaperCounter, paper_layers
from .profiles import TIMES, Profile
from .provenance import provenance
from .simulator.fixed import F32_EXACT, FixedSimulator

COUNTS = (
    "neurons",
    "synapses",
    "synapse_bits",
    "cores",
    "spikes",
    "graded_spikes",
    "sops",
    "graded_ops",
    "macs",
    "neuron_updates",
)
# the papers' convention beside ours (docs/accounting.md, "The papers' SOP convention")
PAPER_COUNTS = ("paper_sops", "paper_macs")
DYNAMIC_PARTS = ("synaptic", "neuron", "routing", "mac")
ENERGY_PARTS = (*DYNAMIC_PARTS, "static")
STATIC_POWER = ("cores", "chip", "off")
# operations per membrane update, by snnTorch neuron class and reset mechanism: NeuroBench 2.3's
# neuron_ops_reset_operations (neurobench/metrics/workload/neuron_operations.py); a class it does
# not list has no NeuronOperations there
NEURON_OPERATIONS = {
    "Leaky": {"subtract": 4, "zero": 4},
    "Synaptic": {"subtract": 6, "zero": 8},
    "Lapicque": {"subtract": 11, "zero": 11},
    "Alpha": {"subtract": 18, "zero": 24},
}


class Accountant:
    """Counts events while the fast simulator runs batches of samples."""

    def __init__(self, program: Program, device: str | torch.device = "cpu") -> None:
        self.program = program
        self.sim = FixedSimulator(program, device)
        self.samples = 0
        self.events = {
            row: {"spikes": 0.0, "graded_spikes": 0.0, "sops": 0.0, "graded_ops": 0.0, "macs": 0.0}
            for name, pop in program.populations.items()
            for row in self._rows(name)
        }
        self.edge_events = {
            (name, i): 0.0
            for name, pop in program.populations.items()
            for i in range(len(pop.synapse_groups))
        }
        # how many synapses leave each source neuron (nonzero weights, borders exact): an event
        # costs its neuron's fan-out, so counting is one multiply-add per neuron and step
        self.fan_out = {
            (name, i): self._fan_out(t, (self.sim.weights[(name, i)] != 0).to(torch.float64))
            for name, pop in program.populations.items()
            for i, t in enumerate(pop.synapse_groups)
        }
        # NeuroBench's Dense: every weight, zero or not, of every input position reaching an output
        self.dense_pairs = sum(
            float(
                self._fan_out(
                    t, torch.ones_like(self.sim.weights[(name, i)], dtype=torch.float64)
                ).sum()
            )
            for name, pop in program.populations.items()
            for i, t in enumerate(pop.synapse_groups)
            if not t.port
        )
        self.paper = PaperCounter(
            paper_layers(program, self._rows, lambda source: self.event_kind(source) == "macs")
        )

    def add(self, x: torch.Tensor) -> torch.Tensor:
        """Simulate a batch ``[N, T, ...]``, count its events; return the predictions."""
        prog = self.program
        active: dict[str, torch.Tensor] = {}  # events per neuron, summed over samples and steps

        lagged = {
            (t.source, t.lag)
            for pop in prog.populations.values()
            for t in pop.synapse_groups
            if t.lag
        }

        def count(name: str, values: torch.Tensor) -> None:
            if not prog.populations[name].kind.is_readout:  # a readout sends nothing
                active[name] = _events_per_neuron(values, prog.fixed[name].graded)
            for (
                source,
                lag,
            ) in lagged:  # what a lagged term (recurrent, delayed) delivers within the sample
                if source == name:
                    active[(name, lag)] = _events_per_neuron(
                        values[: max(len(values) - lag, 0)], prog.fixed[name].graded
                    )
            self.paper.observe(name, values, active)

        out = self.sim.run(x, observe=count)
        self.samples += x.shape[0]
        for name, pop in prog.populations.items():
            if pop.kind.has_neurons:
                self.events[name]["graded_spikes" if prog.fixed[name].graded else "spikes"] += (
                    float(active[name].sum())
                )
            for i, t in enumerate(pop.synapse_groups):
                if t.port:  # the input reaching an encoder directly crosses no synapse
                    continue
                events = active[(t.source, t.lag)] if t.lag else active[t.source]
                pairs = float(events @ self.fan_out[(name, i)])
                self.events[self._rows(name)[-1] if t.map.recurrent else name][
                    self.event_kind(t.source)
                ] += pairs
                self.edge_events[(name, i)] += pairs
        return self.sim.scores_from(out, x.shape[1]).argmax(1)

    def _rows(self, name: str) -> list[str]:
        """The report rows of population ``name``: itself, then its recurrent synapses if any."""
        recurrent = any(t.map.recurrent for t in self.program.populations[name].synapse_groups)
        return [name, f"{name}:recurrent"] if recurrent else [name]

    def event_kind(self, source: str) -> str:
        """What one message from ``source`` across one synapse costs: an SOP, a graded op or a MAC."""
        prog = self.program
        if not prog.fixed[source].graded:
            return "sops"
        return prog.populations[source].kind.graded_message_cost

    def all_reduce(self) -> None:
        """Sum the counts of every DDP rank (torchrun), so each holds the whole dataset's.

        Counts are integers held exactly in float64: the sum, and so the report, does
        not depend on how the data was split.
        """
        import torch.distributed as dist

        names, kinds, edges = (
            list(self.events),
            list(next(iter(self.events.values()))),
            list(self.edge_events),
        )
        flat = torch.tensor(
            [self.events[n][k] for n in names for k in kinds]
            + [self.edge_events[e] for e in edges]
            + [float(c) for c in self.paper.nonzero]
            + [float(self.samples)],
            dtype=torch.float64,
            device=self.sim.device,
        )
        dist.all_reduce(flat)
        values = flat.tolist()
        for i, n in enumerate(names):
            self.events[n] = dict(zip(kinds, values[i * len(kinds) : (i + 1) * len(kinds)]))
        paper = len(self.paper.nonzero)
        self.edge_events = dict(zip(edges, values[len(names) * len(kinds) : -1 - paper]))
        self.paper.nonzero = [int(v) for v in values[-1 - paper : -1]]
        self.samples = int(values[-1])

    @staticmethod
    def _fan_out(term, indicator: torch.Tensor) -> torch.Tensor:
        """Synapses per source neuron (flattened): the gradient of the summed 0/1-weight map."""
        x = torch.zeros(
            (1, *term.map.in_shape),
            dtype=torch.float64,
            device=indicator.device,
            requires_grad=True,
        )
        if term.map.kind == "conv":
            y = F.conv2d(x, indicator, stride=term.map.stride, padding=term.map.padding)
        else:
            y = x.reshape(1, -1) @ indicator.T
        (grad,) = torch.autograd.grad(y.sum(), x)
        return grad.reshape(-1)

    def report(
        self, profile: Profile, timesteps: int, static_power: str = "cores"
    ) -> dict[str, Any]:
        """The JSON report (keys: docs/accounting.md, Report JSON) for ``profile``."""
        if static_power not in STATIC_POWER:
            raise UserError(
                f"unknown static power attribution {static_power!r}; valid: {', '.join(STATIC_POWER)}"
            )
        prog = self.program
        mapping = prog.mapping
        n = max(self.samples, 1)
        layers = []
        for name, pop in prog.populations.items():
            if pop.kind.is_input:
                continue
            m = mapping[name]
            ev = {k: v / n for k, v in self.events[name].items()}
            neurons = m["neurons"]
            row = {
                "name": name,
                "kind": pop.kind.name,
                "connection": pop.connection or "other",
                "neurons": neurons,
                "synapses": m["synapses"],
                "synapse_bits": m["synapse_bits"],
                "cores": m["cores"],
                "spikes": ev["spikes"],
                "graded_spikes": ev["graded_spikes"],
                "payload_bits": LOIHI.graded_payload_bits if prog.fixed[name].graded else 0,
                "sops": ev["sops"],
                "graded_ops": ev["graded_ops"],
                "macs": ev["macs"],
                "neuron_updates": neurons * timesteps,
                "spike_rate": (ev["spikes"] + ev["graded_spikes"]) / (neurons * timesteps)
                if neurons
                else 0.0,
                "max_fan_in": m["max_fan_in"],
                "compartments": m["compartments_per_neuron"],
            }
            layers.append(row)
            if len(self._rows(name)) > 1:
                rec = self._rows(name)[1]
                row["synapses"] -= m["recurrent_synapses"]
                row["synapse_bits"] -= m["recurrent_synapse_bits"]
                layers.append(
                    {
                        **{k: 0 for k in row},
                        "name": rec,
                        "kind": "recurrent",
                        "connection": "recurrent",
                        "synapses": m["recurrent_synapses"],
                        "synapse_bits": m["recurrent_synapse_bits"],
                        "spike_rate": 0.0,
                        "compartments": 1,
                        **{k: v / n for k, v in self.events[rec].items()},
                    }
                )
        timing = _timing(layers, profile, timesteps, prog.lowered.latency)
        _energy(layers, profile, timing, static_power)
        _paper_convention(layers, self.paper.per_row(n), profile)
        totals = _summed(layers)
        totals["energy_breakdown_pj"] = {
            p: sum(r["energy_breakdown_pj"][p] for r in layers) for p in ENERGY_PARTS
        }
        if timing is not None:
            latency_ms = timing["latency_us"] * 1e-3
            timing["edp_uj_ms"] = totals["energy_pj"] * 1e-6 * latency_ms
            timing["edp_dynamic_uj_ms"] = totals["energy_dynamic_pj"] * 1e-6 * latency_ms
        by_connection = {
            c: _summed([r for r in layers if r["connection"] == c])
            for c in sorted({r["connection"] for r in layers})
        }
        limits = (
            {k: profile.limit(k) for k in ("neurons_per_core", "synaptic_memory_per_core")}
            if profile.kind == "chip"
            else None
        )
        return {
            "format": TAGS["report"],
            "tool": "danet-deploy",
            "profile": profile.name,
            "profile_kind": profile.kind,
            "profile_convention": profile.convention,
            "estimates": profile.estimates(),
            "target": prog.target,
            "lowering": prog.lowered.lowering,
            "timesteps": timesteps,
            "samples": self.samples,
            "pipeline_latency": prog.lowered.latency,
            "static_power": static_power if timing is not None else "off",
            "timing": timing,
            "mapping": summarise(mapping, profile) if profile.kind == "chip" else None,
            "core_limits": limits,
            "core_table": core_table(layers, limits, mapping) if limits else None,
            "layers": layers,
            "totals": totals,
            "by_connection": by_connection,
            "edges": self._edges(n),
            "neurobench": {"deployed": self.neurobench(layers, timesteps)},
            "provenance": provenance(profile, static_power, timing is not None),
        }

    def neurobench(self, layers: list[dict[str, Any]], timesteps: int) -> dict[str, Any]:
        """NeuroBench's metrics of the program as deployed, per inference, from these counts
        (definitions and where they part from NeuroBench's: docs/accounting.md, "NeuroBench")."""
        weights = [
            t.weight_q for pop in self.program.populations.values() for t in pop.synapse_groups
        ]
        active = [r for r in layers if r["kind"] not in ("readout", "recurrent")]
        by_layer = {
            r["name"]: 1 - _messages(r) / (r["neurons"] * timesteps) for r in active if r["neurons"]
        }
        slots = sum(r["neurons"] for r in active) * timesteps
        # Loihi updates every compartment at every step: effective and dense operations are one
        neuron_ops = sum(r["neuron_updates"] * self._neuron_operations(r) for r in layers)
        return {
            "Footprint": sum(r["synapse_bits"] for r in layers) / 8,
            "ConnectionSparsity": sum(int((w == 0).sum()) for w in weights)
            / max(sum(w.size for w in weights), 1),
            "ActivationSparsity": 1 - sum(_messages(r) for r in active) / slots if slots else 0.0,
            "ActivationSparsityByLayer": by_layer,
            "SynapticOperations": {
                "Effective_MACs": sum(r["macs"] + r["graded_ops"] for r in layers),
                "Effective_ACs": sum(r["sops"] for r in layers),
                "Dense": self.dense_pairs * timesteps,
            },
            "MembraneUpdates": sum(r["neuron_updates"] for r in layers),
            "NeuronOperations": {
                "Effective Neuron Ops": neuron_ops,
                "Neuron Dense Ops": neuron_ops,
            },
        }

    def _neuron_operations(self, row: dict[str, Any]) -> int:
        """NeuroBench's operations per update of a row's neurons as Loihi runs them: a CUBA
        neuron that keeps a current (``du < 4095``) costs what NeuroBench gives snnTorch's
        Synaptic, every other neuron what it gives Leaky; with reset to zero, or a subtract reset
        for a programmed one that subtracts (NeuroBench lists no multi-spike neuron: counted as
        subtracting, docs/accounting.md)."""
        fixed = self.program.fixed.get(row["name"])
        pop = self.program.populations.get(row["name"])
        kind = "Synaptic" if fixed is not None and fixed.du < LOIHI.du_no_memory else "Leaky"
        zero = pop is None or pop.firing.reset in (Reset.ZERO, Reset.ZERO_LATE)
        return NEURON_OPERATIONS[kind]["zero" if zero else "subtract"]

    def _edges(self, samples: int) -> list[dict[str, Any]]:
        """Every synapse group with its synapses, delay and events per inference."""
        prog = self.program
        rows = []
        for name, pop in prog.populations.items():
            for i, t in enumerate(pop.synapse_groups):
                rows.append(
                    {
                        "source": t.source,
                        "target": name,
                        "connection": t.connection or pop.connection,
                        "map": "port" if t.port else t.map.kind,
                        "synapses": 0 if t.port else synapse_count(t.map, t.weight_q),
                        "delay": t.delay,
                        "event": self.event_kind(t.source),
                        "events": self.edge_events[(name, i)] / samples,
                    }
                )
        return rows


def core_table(
    layers: list[dict[str, Any]], limits: dict[str, float], mapping: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """What fills each layer's cores, as Intel's compiler prints a per-core table for each layer
    group (neurons and synapses per core, cores) so that a mapping can be held against a chip
    compiler's, plus which limit sets the count (``bound_by`` of the core mapping; a program
    mapped before that was recorded gets it from the limits; docs/accounting.md, "Per-core table")."""
    rows = []
    for r in layers:
        if not r["cores"]:
            continue
        slots = r["neurons"] * r["compartments"]
        bound = mapping.get(r["name"], {}).get("bound_by") or bound_by(
            r["cores"],
            math.ceil(slots / limits["neurons_per_core"]),
            math.ceil(r["synapse_bits"] / limits["synaptic_memory_per_core"]),
        )
        rows.append(
            {
                "name": r["name"],
                "max_fan_in": r["max_fan_in"],
                "neurons_per_core": math.ceil(slots / r["cores"]),
                "synapses_per_core": math.ceil(r["synapses"] / r["cores"]),
                "cores": r["cores"],
                "bound_by": bound,
            }
        )
    return rows


def _messages(row: dict[str, Any]) -> float:
    """Everything a row's neurons send: binary spikes and graded messages (nonzero outputs)."""
    return row["spikes"] + row["graded_spikes"]


def _summed(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts and energies of ``rows`` added up; ``energy_pj`` is dynamic + static exactly, the
    paper SOP ratio is that of the sums."""
    paper = (
        (*PAPER_COUNTS, "paper_energy_pj")
        if rows and "paper_energy_pj" in rows[0]
        else PAPER_COUNTS
    )
    agg: dict[str, Any] = {
        k: sum(r[k] for r in rows)
        for k in (*COUNTS, "energy_dynamic_pj", "energy_static_pj", *paper)
    }
    agg["energy_pj"] = agg["energy_dynamic_pj"] + agg["energy_static_pj"]
    agg["paper_sop_ratio"] = _ratio(agg["paper_sops"], agg["sops"])
    return agg


def _ratio(paper_sops: float, sops: float) -> float | None:
    """Paper-convention SOPs per exact SOP (above 1: the papers count more); None without SOPs."""
    return paper_sops / sops if sops else None


def _paper_convention(
    layers: list[dict[str, Any]], counts: dict[str, dict[str, float]], profile: Profile
) -> None:
    """Fill every row's ``paper_sops``, ``paper_macs`` and ``paper_sop_ratio`` and, for a profile
    that is a paper convention, ``paper_energy_pj = E_AC paper_sops + E_MAC paper_macs``
    (docs/accounting.md, "The papers' SOP convention")."""
    e = profile.energy
    for r in layers:
        c = counts.get(r["name"], {})
        r["paper_sops"] = c.get("paper_sops", 0.0)
        r["paper_macs"] = c.get("paper_macs", 0.0)
        r["paper_sop_ratio"] = _ratio(r["paper_sops"], r["sops"])
        if profile.convention == "paper":
            r["paper_energy_pj"] = (
                e["synaptic_op"].value * r["paper_sops"] + e["mac"].value * r["paper_macs"]
            )


def _events_per_neuron(values: torch.Tensor, graded: bool) -> torch.Tensor:
    """Nonzero values per neuron (flattened C, H, W order), summed over ``[T, N, ...]``.

    The simulator keeps 3-D populations channels-last; reducing in memory order is
    ~15x faster than over the logical dimensions.
    """
    flat = values.flatten(0, 1)
    if flat.ndim == 4:
        flat = flat.permute(0, 2, 3, 1)
    events = (
        torch.ne(flat, 0, out=torch.empty_like(flat)) if graded else flat
    )  # spikes are 0/1 already
    exact = (
        torch.float32 if flat.shape[0] < F32_EXACT else torch.float64
    )  # a count is at most T * N
    counts = events.reshape(flat.shape[0], -1).sum(0, dtype=exact).to(torch.float64)
    return counts.view(flat.shape[1:]).permute(2, 0, 1).reshape(-1) if flat.ndim == 4 else counts


def has_timing_model(profile: Profile) -> bool:
    """Whether ``profile`` gives a time per step (a chip with timing figures), and so static
    energy and the time figures of ``timing``."""
    return profile.kind == "chip" and bool(profile.timing)


# why ``step_ns`` is the figure it is (``timing.stated``; docs/accounting.md, "Time as a band")
STATED_WHY = {
    "fitted": "the profile's per-operation times fitted to a chip measurement (timing.*_fitted), "
    "between the peak-rate lower bound and the upper bound",
    "upper": "the profile's own per-operation times: it states no fitted times",
}


def _timing(
    layers: list[dict[str, Any]], profile: Profile, timesteps: int, latency: int
) -> dict[str, Any] | None:
    """Estimated time per step and per inference on a chip (None for accounting profiles), as a
    band (docs/accounting.md, "Time as a band").

    A step lasts the barrier synchronisation plus the busiest core's synaptic and neuron
    work (cores work in parallel); an inference is ``timesteps`` steps back to back,
    and its first input reaches the output ``latency`` steps later still. The band's upper
    bound takes the profile's own per-operation times, its lower bound the peak times
    (``timing.*_peak``), and the stated figure (``step_ns`` and every key without a suffix)
    the fitted times (``timing.*_fitted``); a profile without peak or fitted times gives the
    upper bound in their place.
    """
    if not has_timing_model(profile) or not any(r["cores"] for r in layers):
        return None
    loads: list[list] = []  # [synaptic events per step, row] per population
    for r in layers:
        if r["kind"] == "recurrent":  # served by its population's cores (the row before)
            loads[-1][0] += (r["sops"] + r["graded_ops"]) / timesteps
        else:
            loads.append([(r["sops"] + r["graded_ops"]) / timesteps, r])
    upper = _step_ns(loads, _times(profile, ""))
    lower = _step_ns(loads, _times(profile, "_peak") or _times(profile, ""))
    fitted = _times(profile, "_fitted")
    step_ns = _step_ns(loads, fitted) if fitted else upper
    inference_s = timesteps * step_ns * 1e-9
    return {
        "step_ns": step_ns,
        "inference_time_us": inference_s * 1e6,
        "latency_us": (timesteps + latency) * step_ns * 1e-3,
        "throughput_per_s": 1 / inference_s,
        "step_ns_lower": lower,
        "step_ns_upper": upper,
        "inference_time_us_lower": timesteps * lower * 1e-3,
        "inference_time_us_upper": timesteps * upper * 1e-3,
        "stated": "fitted" if fitted else "upper",
        "stated_why": STATED_WHY["fitted" if fitted else "upper"],
    }


def _times(profile: Profile, suffix: str) -> dict[str, float] | None:
    """The profile's per-operation times of one kind (``""``, ``"_peak"``, ``"_fitted"``), keyed
    without the suffix; None where it states none of that kind."""
    keys = [k + suffix for k in TIMES]
    if not all(k in profile.timing for k in keys):
        return None
    return {k: profile.timing[k + suffix].value for k in TIMES}


def _step_ns(loads: list[list], t: dict[str, float]) -> float:
    """One step at per-operation times ``t``: the barrier plus the busiest core's work."""
    return t["barrier_sync"] + max(
        events / r["cores"] * t["synaptic_op"] + r["neurons"] / r["cores"] * t["neuron_update"]
        for events, r in loads
        if r["cores"]
    )


def _static_pj(
    layers: list[dict[str, Any]],
    profile: Profile,
    timing: dict[str, float] | None,
    static_power: str,
) -> float:
    """Static energy of one inference: static power x inference time, for the attributed share."""
    if timing is None or static_power == "off":
        return 0.0
    cores = sum(r["cores"] for r in layers)
    per_chip = profile.limit("cores_per_chip")
    chips = cores / per_chip if static_power == "cores" else math.ceil(cores / per_chip)
    watts = profile.energy["static_per_chip"].value * 1e-3 * chips
    return watts * timing["inference_time_us"] * 1e-6 * 1e12


def _energy(
    layers: list[dict[str, Any]],
    profile: Profile,
    timing: dict[str, float] | None,
    static_power: str,
) -> None:
    """Fill the energy keys and ``energy_breakdown_pj`` of every row."""
    e = {k: f.value for k, f in profile.energy.items()}
    static_pj = _static_pj(layers, profile, timing, static_power)
    total_cores = sum(r["cores"] for r in layers) or 1
    for r in layers:
        parts = {
            "synaptic": r["sops"] * e["synaptic_op"] + r["graded_ops"] * e["graded_op"],
            "neuron": r["neuron_updates"] * e["neuron_update"],
            "routing": _messages(r) * e["spike_routing"],
            "mac": r["macs"] * e["mac"],
            "static": static_pj * r["cores"] / total_cores,
        }
        r["energy_breakdown_pj"] = parts
        r["energy_dynamic_pj"] = sum(parts[p] for p in DYNAMIC_PARTS)
        r["energy_static_pj"] = parts["static"]
        r["energy_pj"] = r["energy_dynamic_pj"] + r["energy_static_pj"]


CONNECTION_LAYERS = (
    torch.nn.Linear,
    torch.nn.Conv1d,
    torch.nn.Conv2d,
    torch.nn.Conv3d,
)  # NeuroBench's


def neurobench_trained(
    model: torch.nn.Module, activity: FloatActivity | None = None
) -> dict[str, Any]:
    """NeuroBench's metrics of the float model as trained, by NeuroBench's definitions:
    Footprint (bytes of parameters and buffers), ConnectionSparsity (zero weights of the
    Linear and Conv layers, unrounded) and, from ``activity``, its workload metrics."""
    tensors = [*model.parameters(), *model.buffers()]
    weights = [m.weight for m in model.modules() if isinstance(m, CONNECTION_LAYERS)]
    static = {
        "Footprint": float(sum(t.numel() * t.element_size() for t in tensors)),
        "ConnectionSparsity": sum(int((w == 0).sum()) for w in weights)
        / max(sum(w.numel() for w in weights), 1),
    }
    return {**static, **(activity.metrics() if activity is not None else {})}


class FloatActivity:
    """NeuroBench's workload metrics of a float model, counted by forward hooks as NeuroBench's
    own hooks count them (docs/accounting.md, "NeuroBench"): every call of a Linear or Conv
    layer adds its (nonzero input, nonzero weight) pairs that reach an output, as ACs when the
    call's inputs are all in {-1, 0, 1}, else as MACs, and its Dense pairs (all ones); every
    call of an snnTorch neuron adds its spikes and outputs, and its MembraneUpdates: every
    neuron at its first call of a forward pass, then the neurons whose membrane (snnTorch's
    ``mem`` on the module) differs after the call from before it. Per sample, like NeuroBench."""

    def __init__(self, model: torch.nn.Module) -> None:
        import snntorch

        self.counts = dict.fromkeys(
            (
                "Effective_ACs",
                "Effective_MACs",
                "Dense",
                "nonzero",
                "outputs",
                "MembraneUpdates",
                "Effective Neuron Ops",
                "Neuron Dense Ops",
            ),
            0.0,
        )
        self.samples = 0
        self.membrane_before: dict[
            torch.nn.Module, torch.Tensor
        ] = {}  # each neuron's mem before its call
        self.first_call: set[torch.nn.Module] = set()  # neurons not yet called in this forward pass
        self.neurons = [m for m in model.modules() if isinstance(m, snntorch.SpikingNeuron)]
        self.handles = [model.register_forward_pre_hook(self._batch)]
        self.handles += [
            m.register_forward_hook(self._connection)
            for m in model.modules()
            if isinstance(m, CONNECTION_LAYERS)
        ]
        self.handles += [m.register_forward_pre_hook(self._membrane_before) for m in self.neurons]
        self.handles += [m.register_forward_hook(self._activation) for m in self.neurons]

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()

    def all_reduce(self) -> None:
        """Sum every DDP rank's counts (integers, exact in float64), as ``Accountant.all_reduce``."""
        import torch.distributed as dist

        keys = list(self.counts)
        device = (
            torch.device("cuda", torch.cuda.current_device())
            if dist.get_backend() == "nccl"
            else "cpu"
        )
        flat = torch.tensor(
            [self.counts[k] for k in keys] + [float(self.samples)],
            dtype=torch.float64,
            device=device,
        )
        dist.all_reduce(flat)
        self.counts, self.samples = dict(zip(keys, flat[:-1].tolist())), int(flat[-1])

    def _batch(self, module: torch.nn.Module, args: tuple) -> None:
        self.samples += args[0].shape[0]
        self.first_call = set(self.neurons)  # NeuroBench resets its hooks after every batch

    def _membrane_before(self, neuron: torch.nn.Module, args: tuple) -> None:
        self.membrane_before[neuron] = neuron.mem.detach()

    def _connection(self, layer: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
        x = args[0].detach()
        spiking = bool(((x == 0) | (x == 1) | (x == -1)).all())
        nonzero = (layer.weight.detach() != 0).to(x.dtype)
        self.counts["Effective_ACs" if spiking else "Effective_MACs"] += _pairs(
            layer, (x != 0).to(x.dtype), nonzero
        )
        self.counts["Dense"] += _pairs(layer, torch.ones_like(x), torch.ones_like(nonzero))

    def _activation(self, neuron: torch.nn.Module, args: tuple, out: Any) -> None:
        spikes = out[0] if isinstance(out, tuple) else out
        self.counts["nonzero"] += int(torch.count_nonzero(spikes))
        self.counts["outputs"] += spikes.numel()
        membrane = neuron.mem.detach()
        if neuron in self.first_call:
            self.first_call.discard(neuron)
            updates = membrane.numel()
        else:
            updates = int(torch.count_nonzero(self.membrane_before[neuron] - membrane))
        self.counts["MembraneUpdates"] += updates
        ops = _neuron_operations(neuron)
        if ops is not None:  # NeuroBench's dense count: every neuron of every call
            self.counts["Effective Neuron Ops"] += ops * updates
            self.counts["Neuron Dense Ops"] += ops * membrane.numel()

    def metrics(self) -> dict[str, Any]:
        n, c = max(self.samples, 1), self.counts
        sparsity = 1 - c["nonzero"] / c["outputs"] if self.neurons and c["outputs"] else None
        defined = self.neurons and all(_neuron_operations(m) is not None for m in self.neurons)
        return {
            "ActivationSparsity": sparsity,
            "SynapticOperations": {
                k: c[k] / n for k in ("Effective_MACs", "Effective_ACs", "Dense")
            },
            "MembraneUpdates": c["MembraneUpdates"] / n if self.neurons else None,
            "NeuronOperations": {k: c[k] / n for k in ("Effective Neuron Ops", "Neuron Dense Ops")}
            if defined
            else None,
        }


def _neuron_operations(neuron: torch.nn.Module) -> int | None:
    """Operations per membrane update of an snnTorch neuron, by NeuroBench's table (None: not in it)."""
    return NEURON_OPERATIONS.get(type(neuron).__name__, {}).get(
        getattr(neuron, "_reset_mechanism", None)
    )


def _pairs(layer: torch.nn.Module, x: torch.Tensor, weight: torch.Tensor) -> float:
    """Input-weight pairs reaching an output: the layer applied, without bias, to 0/1 tensors."""
    if isinstance(layer, torch.nn.Linear):
        return float(F.linear(x, weight).sum())
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[weight.dim() - 2]
    return float(
        conv(x, weight, None, layer.stride, layer.padding, layer.dilation, layer.groups).sum()
    )
