"""Account stage: exact per-layer operation counts and energy of a compiled program.

Conventions (DESIGN §3), per inference (all time steps of one sample), averaged over
the evaluated samples:

* ``sops``: binary spikes delivered across existing synapses (nonzero quantised
  weights; conv borders and strides exact). A source that fires into two synapse
  groups of one neuron (SEW ADD lowered as fan-in) is counted in both, so an integer
  input ``n`` costs ``n`` SOPs.
* ``graded_ops``: nonzero graded messages (relays) delivered across synapses.
* ``macs``: nonzero real-valued inputs (the image into the stem) across synapses.
* ``spikes``: spikes emitted; ``neuron_updates``: neurons x time steps.
* ``synapses``, ``synapse_bits``, ``cores``: from the core mapping.
* ``energy_pj``: counts x the profile's per-op energies, split into synaptic,
  neuron, routing, MAC and static parts (static: the chips' static power over the
  estimated inference time, shared out by cores).

Per-layer rows sum exactly to the totals; ``by_connection`` sums rows by the
connection type of the block each layer belongs to.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from .compile import Program, summarise
from .profiles import Profile
from .simulator.fixed import F32_EXACT, FixedSimulator

COUNTS = ("neurons", "synapses", "synapse_bits", "cores", "spikes", "sops", "graded_ops", "macs",
          "neuron_updates")
ENERGY_PARTS = ("synaptic", "neuron", "routing", "mac", "static")


class Accountant:
    """Counts events while the fast simulator runs batches of samples."""

    def __init__(self, program: Program, device: str | torch.device = "cpu") -> None:
        self.program = program
        self.sim = FixedSimulator(program, device)
        self.samples = 0
        self.events = {name: {"spikes": 0.0, "sops": 0.0, "graded_ops": 0.0, "macs": 0.0}
                       for name in program.populations}
        # how many synapses leave each source neuron (nonzero weights, borders exact): an event
        # costs its neuron's fan-out, so counting is one multiply-add per neuron and step
        self.fan_out = {(name, i): self._fan_out(t, (self.sim.weights[(name, i)] != 0).to(torch.float64))
                        for name, pop in program.populations.items() for i, t in enumerate(pop.terms)}

    def add(self, x: torch.Tensor) -> torch.Tensor:
        """Simulate a batch ``[N, T, ...]``, count its events; return the predictions."""
        prog = self.program
        active: dict[str, torch.Tensor] = {}  # events per neuron, summed over samples and steps

        def count(name: str, values: torch.Tensor) -> None:
            if prog.populations[name].kind != "readout":
                active[name] = _events_per_neuron(values, prog.fixed[name].graded)

        out = self.sim.run(x, observe=count)
        self.samples += x.shape[0]
        for name, pop in prog.populations.items():
            if pop.kind in ("lif", "gate", "relay"):
                self.events[name]["spikes"] += float(active[name].sum())
            for i, t in enumerate(pop.terms):
                pairs = float(active[t.source] @ self.fan_out[(name, i)])
                kind = "macs" if prog.populations[t.source].kind == "input" and prog.fixed[t.source].graded else \
                    "graded_ops" if prog.fixed[t.source].graded else "sops"
                self.events[name][kind] += pairs
        return self.sim.scores_from(out, x.shape[1]).argmax(1)

    def all_reduce(self) -> None:
        """Sum the counts of every DDP rank (torchrun), so each holds the whole dataset's.

        Counts are integers held exactly in float64: the sum, and so the report, does
        not depend on how the data was split.
        """
        import torch.distributed as dist

        names, kinds = list(self.events), list(next(iter(self.events.values())))
        flat = torch.tensor([self.events[n][k] for n in names for k in kinds] + [float(self.samples)],
                            dtype=torch.float64, device=self.sim.device)
        dist.all_reduce(flat)
        values = flat.tolist()
        for i, n in enumerate(names):
            self.events[n] = dict(zip(kinds, values[i * len(kinds):(i + 1) * len(kinds)]))
        self.samples = int(values[-1])

    @staticmethod
    def _fan_out(term, indicator: torch.Tensor) -> torch.Tensor:
        """Synapses per source neuron (flattened): the gradient of the summed 0/1-weight map."""
        x = torch.zeros((1, *term.map.in_shape), dtype=torch.float64, device=indicator.device, requires_grad=True)
        if term.map.kind == "conv":
            y = F.conv2d(x, indicator, stride=term.map.stride, padding=term.map.padding)
        else:
            y = x.reshape(1, -1) @ indicator.T
        (grad,) = torch.autograd.grad(y.sum(), x)
        return grad.reshape(-1)

    def report(self, profile: Profile, timesteps: int) -> dict[str, Any]:
        """The JSON report (DESIGN §4 keys) for ``profile``."""
        prog = self.program
        mapping = prog.mapping
        n = max(self.samples, 1)
        layers = []
        for name, pop in prog.populations.items():
            if pop.kind == "input":
                continue
            m = mapping[name]
            ev = {k: v / n for k, v in self.events[name].items()}
            neurons = m["neurons"]
            row = {"name": name, "kind": pop.kind, "connection": pop.connection or "other",
                   "neurons": neurons, "synapses": m["synapses"], "synapse_bits": m["synapse_bits"],
                   "cores": m["cores"], "spikes": ev["spikes"], "sops": ev["sops"], "graded_ops": ev["graded_ops"],
                   "macs": ev["macs"], "neuron_updates": neurons * timesteps,
                   "spike_rate": ev["spikes"] / (neurons * timesteps) if neurons else 0.0}
            layers.append(row)
        _energy(layers, profile, timesteps)
        totals = {k: sum(r[k] for r in layers) for k in (*COUNTS, "energy_pj")}
        totals["energy_breakdown_pj"] = {p: sum(r["energy_breakdown_pj"][p] for r in layers) for p in ENERGY_PARTS}
        by_connection: dict[str, dict[str, float]] = {}
        for r in layers:
            agg = by_connection.setdefault(r["connection"], {k: 0 for k in (*COUNTS, "energy_pj")})
            for k in agg:
                agg[k] += r[k]
        return {"profile": profile.name, "profile_kind": profile.kind, "estimates": profile.estimates(),
                "target": prog.target, "lowering": prog.lowered.lowering, "timesteps": timesteps,
                "samples": self.samples, "pipeline_latency": prog.lowered.latency,
                "mapping": summarise(mapping, profile) if profile.kind == "chip" else None,
                "layers": layers, "totals": totals, "by_connection": dict(sorted(by_connection.items()))}


def _events_per_neuron(values: torch.Tensor, graded: bool) -> torch.Tensor:
    """Nonzero values per neuron (flattened C, H, W order), summed over ``[T, N, ...]``.

    The simulator keeps 3-D populations channels-last; reducing in memory order is
    ~15x faster than over the logical dimensions.
    """
    flat = values.flatten(0, 1)
    if flat.ndim == 4:
        flat = flat.permute(0, 2, 3, 1)
    events = torch.ne(flat, 0, out=torch.empty_like(flat)) if graded else flat  # spikes are 0/1 already
    exact = torch.float32 if flat.shape[0] < F32_EXACT else torch.float64  # a count is at most T * N
    counts = events.reshape(flat.shape[0], -1).sum(0, dtype=exact).to(torch.float64)
    return counts.view(flat.shape[1:]).permute(2, 0, 1).reshape(-1) if flat.ndim == 4 else counts


def _energy(layers: list[dict[str, Any]], profile: Profile, timesteps: int) -> None:
    """Fill ``energy_pj`` and ``energy_breakdown_pj`` of every row."""
    e = {k: f.value for k, f in profile.energy.items()}
    static_pj = 0.0
    if profile.kind == "chip" and profile.timing:
        t = {k: f.value for k, f in profile.timing.items()}
        busiest = max(((r["sops"] + r["graded_ops"]) / timesteps / r["cores"] * t["synaptic_op"]
                       + r["neurons"] / r["cores"] * t["neuron_update"]) for r in layers if r["cores"])
        step_ns = t["barrier_sync"] + busiest
        chips = math.ceil(sum(r["cores"] for r in layers) / profile.limit("cores_per_chip"))
        static_pj = e["static_per_chip"] * 1e-3 * chips * timesteps * step_ns * 1e-9 * 1e12  # mW * s -> pJ
    total_cores = sum(r["cores"] for r in layers) or 1
    for r in layers:
        parts = {"synaptic": r["sops"] * e["synaptic_op"] + r["graded_ops"] * e["graded_op"],
                 "neuron": r["neuron_updates"] * e["neuron_update"],
                 "routing": r["spikes"] * e["spike_routing"],
                 "mac": r["macs"] * e["mac"],
                 "static": static_pj * r["cores"] / total_cores}
        r["energy_breakdown_pj"] = parts
        r["energy_pj"] = sum(parts.values())
