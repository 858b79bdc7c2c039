"""The flat NIR-level graph every stage reads, and the conventions that give it meaning.

A :class:`FlatGraph` is a NIR graph without subgraphs, its nodes in topological order and
each node's output shape inferred (``converters/nir_import.py`` builds one from a file or
a ``nir.NIRGraph``: the netx reader and our own exporter go through it too). NIR 1.0.8
records neither how a neuron resets nor how its time constants become per-step decays: the
graph carries both (``resets``, ``discretisation``; docs/nir.md) with its time step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import nir
import numpy as np

from danet_deploy.errors import UserError
from danet_deploy.ir.resets import PLAIN, Firing
from danet_deploy.ir.sigma_delta import SigmaDelta

DEFAULT_DT = 1e-4  # seconds, when neither the file nor the user gives one
MAX_DT = 1e3  # seconds: a larger time step is a unit mistake, and overflows the decays
TIMED = (
    nir.LIF,
    nir.CubaLIF,
    nir.IF,
    nir.LI,
    nir.I,
    nir.Delay,
)  # nodes whose meaning depends on dt

SUPPORTED = {
    nir.Input: "Input",
    nir.Output: "Output",
    nir.Affine: "Affine",
    nir.Linear: "Linear",
    nir.Conv1d: "Conv1d",
    nir.Conv2d: "Conv2d",
    nir.Flatten: "Flatten",
    nir.SumPool2d: "SumPool2d",
    nir.AvgPool2d: "AvgPool2d",
    nir.Scale: "Scale",
    nir.Threshold: "Threshold",
    nir.LIF: "LIF",
    nir.CubaLIF: "CubaLIF",
    nir.IF: "IF",
    nir.LI: "LI",
    nir.I: "Integrator",
    nir.Delay: "Delay",
    SigmaDelta: "SigmaDelta",  # danet-deploy's own node (ir/sigma_delta.py): NIR has none
}


SPIKING = (nir.LIF, nir.CubaLIF, nir.IF)  # nodes whose reset convention matters
RESETS = {  # convention (file metadata "reset" or --reset) -> what it means
    "zero": "the voltage is set to v_reset when the neuron fires (Loihi; snnTorch's Leaky with reset to zero; "
    "any snnTorch neuron with reset_delay=False)",
    "subtract": "the threshold is subtracted from the voltage in the step the neuron fires (sinabs' "
    "SingleSpike with MembraneSubtract)",
    "snntorch-zero": "snnTorch's default timing (reset_delay=True): a Synaptic, RLeaky or RSynaptic neuron "
    "starts the step after a spike from zero and drops that step's input",
    "snntorch-subtract": "snnTorch's default (reset_delay=True, subtract): the threshold is subtracted one "
    "step after the spike, undecayed",
    "sinabs": "sinabs' default (MultiSpike, MembraneSubtract), also rockpool's LIFTorch: floor(v / threshold) "
    "spikes in one step once v >= threshold, each subtracting the threshold",
    "sinabs-nir": "what sinabs' own from_nir builds for an IF node (IAFSqueeze): sinabs' default, and after the "
    "reset the voltage is held at or above -threshold (min_v_mem = -v_threshold)",
    "spikingjelly": "SpikingJelly's hard reset: the voltage starts at v_reset, v >= v_threshold fires, and the "
    "voltage is set to v_reset in that step",
    "spikingjelly-soft": "SpikingJelly's soft reset (v_reset=None): the voltage starts at 0, "
    "v >= v_threshold fires, and the threshold is subtracted in that step",
}
DEFAULT_RESET = "zero"
DISCRETISATIONS = {  # how a neuron's time constants become per-step factors (metadata "discretisation")
    "euler": "forward Euler: a decay of dt/tau per step (snnTorch's exporter, the NIR paper)",
    "exp": "exact exponential: a decay of 1 - exp(-dt/tau) per step (sinabs' LIF with norm_input)",
    "norse": "Euler, but a CubaLIF's input adds w_in x to the current in full, not dt/tau_syn of it "
    "(norse's LIFCell), and an IF adds r x per step, not dt r x (norse's IAFCell)",
    "rockpool": "exact exponential; a CubaLIF takes i <- exp(-dt/tau_syn) (i + w_in x), v <- exp(-dt/tau_mem) v + i "
    "(rockpool's LIFTorch; its exporter's r only encodes dt)",
}
NEURON_TYPES = (
    nir.LIF,
    nir.CubaLIF,
    nir.IF,
    nir.LI,
    nir.I,
    nir.Threshold,
)  # what may close a cycle


def time_step(value: Any, where: str) -> float:
    """``value`` as a time step in seconds, or a one-line error naming ``where`` it came from."""
    try:
        step = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{where} {value!r} is not a number (a time step in seconds)") from None
    if not (np.isfinite(step) and 0 < step <= MAX_DT):
        raise UserError(
            f"{where} {value!r}: a time step must be a finite number of seconds above 0 and at "
            f"most {MAX_DT:g}"
        )
    return step


def time_steps(value: Any, where: str) -> int:
    """``value`` as a number of time steps (a whole number of at least 1)."""
    try:
        steps = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{where} {value!r} is not a number of time steps") from None
    if not (np.isfinite(steps) and steps >= 1 and steps == int(steps)):
        raise UserError(
            f"{where} {value!r}: the number of time steps must be a whole number of at least 1"
        )
    return int(steps)


def cycle_members(
    nodes: dict[str, nir.NIRNode], sources: dict[str, list[str]], back: set[tuple[str, str]]
) -> list[set[str]]:
    """The nodes of each cycle closed by a back edge ``(s, d)``: those on a path ``d -> ... -> s``."""
    users: dict[str, set[str]] = {n: set() for n in nodes}
    for n, srcs in sources.items():
        for s in srcs:
            users[s].add(n)

    def reach(start: str, step: dict[str, set[str]]) -> set[str]:
        seen, todo = {start}, [start]
        while todo:
            for m in step[todo.pop()] - seen:
                seen.add(m)
                todo.append(m)
        return seen

    preds = {n: set(srcs) for n, srcs in sources.items()}
    return [reach(d, users) & reach(s, preds) for s, d in sorted(back)]


@dataclass
class FlatGraph:
    """A NIR graph without subgraphs, in topological order, with shapes."""

    nodes: dict[str, nir.NIRNode]  # ordered: sources before consumers
    sources: dict[str, list[str]]  # node -> nodes whose outputs sum into it
    shapes: dict[str, tuple[int, ...]]  # node -> output shape (no batch / time)
    inputs: list[str]  # top-level Input nodes
    outputs: list[str]  # top-level Output nodes
    dt: float
    metadata: dict[str, Any] = field(default_factory=dict)
    recurrent: set[tuple[str, str]] = field(default_factory=set)  # edges carrying the previous step
    resets: dict[str, Firing] = field(default_factory=dict)  # spiking node -> its firing
    discretisation: str = "euler"  # a key of DISCRETISATIONS

    def firing(self, name: str) -> Firing:
        """How node ``name`` fires and resets (Loihi's plain reset to zero where unstated)."""
        return self.resets.get(name, PLAIN)

    def decay(self, tau: Any) -> np.ndarray:
        """The per-step decay factor of a time constant ``tau`` (``dt/tau`` for Euler)."""
        ratio = self.dt / np.asarray(tau, dtype=np.float64)
        return -np.expm1(-ratio) if self.discretisation in ("exp", "rockpool") else ratio

    def integration_step(self) -> float:
        """What multiplies ``r x`` in an IF/I node's step: ``dt``, except under norse's
        convention, whose exporter writes ``r = 1`` for an IAFCell that adds its input in full."""
        return 1.0 if self.discretisation == "norse" else self.dt

    def forward_sources(self, name: str) -> list[str]:
        """``name``'s sources of the same time step (its recurrent sources left out)."""
        return [s for s in self.sources[name] if (s, name) not in self.recurrent]

    def on_cycles(self) -> set[str]:
        """Every node that lies on a recurrent loop."""
        return set().union(*cycle_members(self.nodes, self.sources, self.recurrent))

    def kind(self, name: str) -> str:
        return SUPPORTED[type(self.nodes[name])]

    def release_arrays(self) -> None:
        """Drop every node's ``weight`` and ``bias`` (all but a few bytes of a large graph),
        keeping its structure: shapes, sources, metadata. A compile that holds them elsewhere
        then frees each as soon as it is quantised (docs/compile.md §1); the graph can still be
        described but no longer run. The nodes are shared with the ``nir.NIRGraph`` the graph
        was read from, which loses them too."""
        for node in self.nodes.values():
            for key in ("weight", "bias"):
                if isinstance(getattr(node, key, None), np.ndarray):
                    setattr(node, key, None)

    @property
    def timesteps(self) -> int | None:
        t = self.metadata.get("timesteps")
        return int(t) if t is not None else None
