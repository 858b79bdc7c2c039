"""Each NIR neuron's per-step update, in the one form that every stage reads.

Every neuron node of a :class:`~danet_deploy.ir.graph.FlatGraph` (LIF, CubaLIF, IF, LI and
Integrator), under every discretisation the graph may state (docs/nir.md), steps as

    i[t] = alpha * i[t-1] + input_gain * x[t]           (a current, CubaLIF only)
    v[t] = beta * v[t-1] + current_gain * i[t] + bias    (i[t] = x[t] without a current)

then fires and resets by the graph's convention (LIF, CubaLIF, IF: ``ir/resets.py``).
:func:`dynamics` is the one place where NIR's time constants, gains and the
discretisation become these factors; :func:`membrane_step` is the one place the update is
written. The float interpreter (``danet_deploy/ir/interpreter.py``) runs it, the lowering turns
it into a population's ``alpha``, ``beta``, ``gain`` and ``bias`` (Loihi's ``du``, ``dv``,
weight scale and bias, docs/compile.md §3), and the fast simulator runs the integers made
from those.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Callable

import nir
import numpy as np

from danet_deploy.ir.graph import FlatGraph

SPIKING_NEURONS = (nir.LIF, nir.CubaLIF, nir.IF)
NEURON_NODES = (*SPIKING_NEURONS, nir.LI, nir.I)


@dataclass(frozen=True)
class Dynamics:
    """The factors of one population's update (module docstring), per neuron or broadcast.

    Arrays are float64 as computed from the NIR node; :meth:`converted` makes a copy whose
    factors are of another array type (the float interpreter's tensors), since
    :func:`membrane_step` uses only arithmetic operators.
    """

    beta: Any
    current_gain: Any
    bias: Any
    alpha: Any = 0.0
    input_gain: Any = 1.0
    has_current: bool = False
    threshold: Any = None  # None: the node never fires (LI, Integrator)
    v_reset: Any = None
    sources: tuple[tuple[str, str], ...] = ()  # factor -> the NIR parameter it comes from

    def converted(self, convert: Callable[[Any], Any]) -> Dynamics:
        """The same dynamics with every factor passed through ``convert``."""
        arrays = {
            f.name: convert(getattr(self, f.name))
            for f in fields(self)
            if f.name not in ("has_current", "sources") and getattr(self, f.name) is not None
        }
        return replace(self, **arrays)

    def source(self, factor: str) -> str:
        """The NIR parameter a factor is made from (for messages that name it)."""
        return dict(self.sources).get(factor, factor)


def membrane_step(d: Dynamics, i: Any, v: Any, x: Any) -> tuple[Any, Any]:
    """One step of the update for current ``i``, voltage ``v`` and input ``x``: ``(i, v)``."""
    if d.has_current:
        i = d.alpha * i + d.input_gain * x
    else:
        i = x
    return i, d.beta * v + d.current_gain * i + d.bias


def _array(value: Any) -> np.ndarray:
    return np.asarray(value, dtype=np.float64)


def dynamics(node: nir.NIRNode, graph: FlatGraph) -> Dynamics:
    """The update factors of neuron ``node`` under ``graph``'s time step and discretisation."""
    if isinstance(node, (nir.IF, nir.I)):  # v += dt r x (norse: r x)
        d = Dynamics(
            beta=1.0,
            current_gain=graph.integration_step() * _array(node.r),
            bias=0.0,
            sources=(("current_gain", "r"),),
        )
    elif isinstance(node, (nir.LIF, nir.LI)):  # v += k (v_leak - v + r x), k = dt/tau
        k = graph.decay(node.tau)
        d = Dynamics(
            beta=1.0 - k,
            current_gain=k * _array(node.r),
            bias=k * _array(node.v_leak),
            sources=(("beta", "tau"), ("current_gain", "r")),
        )
    elif isinstance(node, nir.CubaLIF):
        d = _cuba(node, graph)
    else:
        raise TypeError(f"{type(node).__name__} is not a neuron")
    if isinstance(node, SPIKING_NEURONS):
        d = replace(d, threshold=_array(node.v_threshold), v_reset=_array(node.v_reset))
    return d


def _cuba(node: nir.CubaLIF, graph: FlatGraph) -> Dynamics:
    """A CubaLIF's factors; the frameworks that export one disagree on where its gains sit."""
    k, k_syn = graph.decay(node.tau_mem), graph.decay(node.tau_syn)
    w_in, r, leak = _array(node.w_in), _array(node.r), _array(node.v_leak)
    sources = (
        ("alpha", "tau_syn"),
        ("beta", "tau_mem"),
        ("input_gain", "w_in"),
        ("current_gain", "r"),
    )
    cuba = dict(alpha=1.0 - k_syn, beta=1.0 - k, bias=k * leak, has_current=True, sources=sources)
    if graph.discretisation == "norse":  # the input jumps into the current undamped (LIFCell)
        return Dynamics(input_gain=w_in, current_gain=k * r, **cuba)
    if graph.discretisation == "rockpool":  # i <- e (i + w_in x), v <- b v + i (LIFTorch)
        return Dynamics(input_gain=(1.0 - k_syn) * w_in, current_gain=1.0, **cuba)
    return Dynamics(input_gain=k_syn * w_in, current_gain=k * r, **cuba)  # i += k_syn (w_in x - i)
