"""Spiking neuron modules of PyTorch frameworks as NIR neurons (docs/nir.md, "PyTorch modules").

Each mapping states a framework's update in NIR's forward-Euler terms for a time step of ``dt``
(``v += dt/tau (v_leak - v + r x)`` for a LIF, ``v += dt r x`` for an IF) and the reset
convention it follows (``RESETS`` in ``danet_deploy/ir/graph.py``), written into the node's
metadata. What NIR does not state (SpikingJelly fires at ``v >= v_threshold`` and starts at
``v_reset``: its conventions ``spikingjelly`` and ``spikingjelly-soft``) is recorded as a fact in
the node's metadata too.
"""

from __future__ import annotations

from typing import Any, Callable

import nir
import numpy as np
import torch

from danet_deploy.errors import UserError

Made = tuple[nir.NIRNode, dict[str, Any]]  # the node and the facts for its metadata


def _full(value: Any, shape: tuple[int, ...]) -> np.ndarray:
    """``value`` (a scalar, a per-channel or per-neuron tensor) as a float32 array of ``shape``."""
    arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    arr = arr.astype(np.float32)
    if arr.ndim == 1 and len(shape) > 1 and arr.shape[0] == shape[0] and arr.size > 1:
        arr = arr.reshape(-1, *[1] * (len(shape) - 1))  # one value per channel
    return np.ascontiguousarray(np.broadcast_to(arr, shape))


def _leaky(
    decay_kept: Any,
    threshold: Any,
    shape: tuple[int, ...],
    dt: float,
    r: Any = None,
    v_leak: Any = 0.0,
    v_reset: Any = 0.0,
) -> nir.NIRNode:
    """``v <- v + (1 - keep) (v_leak - v) + ...`` as a LIF (``tau = dt / (1 - keep)``, ``r`` defaults to
    ``tau / dt``, so ``v <- keep v + x``), or an IF where nothing decays (``keep = 1``)."""
    keep = _full(decay_kept, shape).astype(np.float64)
    if np.all(keep >= 1.0):
        return nir.IF(
            r=_full(1.0 / dt, shape),
            v_threshold=_full(threshold, shape),
            v_reset=_full(v_reset, shape),
        )
    if np.any(keep >= 1.0) or np.any(keep < 0):
        raise ValueError("its decay must lie in [0, 1) for every neuron, or be 1 for all")
    tau = dt / (1.0 - keep)
    return nir.LIF(
        tau=tau.astype(np.float32),
        r=_full(tau / dt if r is None else r, shape),
        v_leak=_full(v_leak, shape),
        v_threshold=_full(threshold, shape),
        v_reset=_full(v_reset, shape),
    )


def _snntorch_facts(m: Any) -> dict[str, Any]:
    """An snnTorch neuron's reset convention (``RESETS``), or a refusal of what NIR cannot hold.
    A ``Leaky`` reset to zero is Loihi's with or without ``reset_delay`` (the voltage restarts
    from 0 either way); the others, with ``reset_delay``, follow snnTorch's late conventions."""
    if getattr(m, "inhibition", False) or getattr(m, "state_quant", False):
        raise ValueError("inhibition and state quantisation have no NIR form")
    factor = torch.as_tensor(m.graded_spikes_factor)
    if float(factor.max()) != 1.0 or float(factor.min()) != 1.0:
        raise ValueError("graded spikes (graded_spikes_factor != 1) have no NIR form")
    if m.reset_mechanism == "none":
        raise ValueError("reset_mechanism='none' (no reset) has no NIR neuron")
    if m.reset_mechanism == "subtract" and not getattr(m, "reset_delay", True):
        raise ValueError(
            "reset_delay=False with subtraction decides a spike on a voltage it does not keep "
            "(no NIR reset convention reproduces it, docs/nir.md); use reset_delay=True or "
            "reset_mechanism='zero'"
        )
    plain_leaky = type(m).__name__ == "Leaky" and m.reset_mechanism == "zero"
    late = getattr(m, "reset_delay", True) and not plain_leaky
    reset = ("snntorch-" if late else "") + m.reset_mechanism
    return {"reset": reset, "framework": "snntorch", "neuron": type(m).__name__}


def snntorch_leaky(m: Any, shape: tuple[int, ...], dt: float) -> Made:
    """snnTorch's ``Leaky`` (and ``RLeaky``, whose loop the tracer adds): ``v <- beta v + x``,
    spikes at ``v > threshold``."""
    facts = _snntorch_facts(m)
    return _leaky(m.beta.clamp(0, 1), m.threshold, shape, dt), facts


def _cuba(
    current_kept: Any,
    voltage_kept: Any,
    threshold: Any,
    shape: tuple[int, ...],
    dt: float,
    v_reset: Any = 0.0,
) -> nir.CubaLIF:
    """``i <- a i + x``, ``v <- b v + i`` as a CubaLIF, as snnTorch's own exporter writes its
    ``Synaptic`` (``tau = dt / (1 - kept)``, ``r = tau_mem/dt``, ``w_in = tau_syn/dt``)."""
    a, b = (_full(k, shape).astype(np.float64) for k in (current_kept, voltage_kept))
    if np.any(a >= 1.0) or np.any(b >= 1.0) or np.any(a < 0) or np.any(b < 0):
        raise ValueError(
            "its current and voltage decays must lie in [0, 1) (1 has no finite NIR time constant)"
        )
    tau_syn, tau_mem = dt / (1.0 - a), dt / (1.0 - b)
    return nir.CubaLIF(
        tau_syn=tau_syn.astype(np.float32),
        tau_mem=tau_mem.astype(np.float32),
        r=_full(tau_mem / dt, shape),
        w_in=_full(tau_syn / dt, shape),
        v_leak=_full(0.0, shape),
        v_threshold=_full(threshold, shape),
        v_reset=_full(v_reset, shape),
    )


def snntorch_synaptic(m: Any, shape: tuple[int, ...], dt: float) -> Made:
    """snnTorch's ``Synaptic`` (and ``RSynaptic``): ``i <- alpha i + x``, ``v <- beta v + i``."""
    facts = _snntorch_facts(m)
    return _cuba(m.alpha.clamp(0, 1), m.beta.clamp(0, 1), m.threshold, shape, dt), facts


def _spikingjelly_facts(m: Any) -> dict[str, Any]:
    """A SpikingJelly neuron's reset convention, and what it means that NIR does not state, as facts."""
    return {
        "reset": "spikingjelly-soft" if m.v_reset is None else "spikingjelly",
        "framework": "spikingjelly",
        "neuron": type(m).__name__,
        "fires_at": "v >= v_threshold",
        "v_initial": 0.0 if m.v_reset is None else float(m.v_reset),
    }


def spikingjelly_if(m: Any, shape: tuple[int, ...], dt: float) -> Made:
    """SpikingJelly's ``IFNode``: ``v <- v + x``."""
    v_reset = 0.0 if m.v_reset is None else m.v_reset
    return _leaky(1.0, m.v_threshold, shape, dt, v_reset=v_reset), _spikingjelly_facts(m)


def spikingjelly_lif(m: Any, shape: tuple[int, ...], dt: float) -> Made:
    """SpikingJelly's ``LIFNode`` (``ParametricLIFNode``: ``1/tau = sigmoid(w)``):
    ``v <- v + (v_reset - v + x) / tau``, or ``+ x`` undecayed without ``decay_input``."""
    inv_tau = (
        torch.sigmoid(m.w.detach()) if hasattr(m, "w") else 1.0 / torch.as_tensor(float(m.tau))
    )
    v_reset = 0.0 if m.v_reset is None else m.v_reset
    r = 1.0 if m.decay_input else 1.0 / inv_tau
    return _leaky(
        1.0 - inv_tau, m.v_threshold, shape, dt, r=r, v_leak=v_reset, v_reset=v_reset
    ), _spikingjelly_facts(m)


def spikingjelly_cuba_lif(m: Any, shape: tuple[int, ...], dt: float) -> Made:
    """SpikingJelly's ``CUBALIFNode``: ``c <- c_decay c + x``, ``v <- v_decay v + c`` (its decays
    are the fractions kept)."""
    v_reset = 0.0 if m.v_reset is None else m.v_reset
    return _cuba(m.c_decay, m.v_decay, m.v_threshold, shape, dt, v_reset), _spikingjelly_facts(m)


Mapping = Callable[[Any, tuple[int, ...], float], Made]
NEURONS: dict[tuple[str, str], Mapping] = {  # (module of the class, class name) -> mapping
    ("snntorch", "Leaky"): snntorch_leaky,
    ("snntorch", "RLeaky"): snntorch_leaky,
    ("snntorch", "Synaptic"): snntorch_synaptic,
    ("snntorch", "RSynaptic"): snntorch_synaptic,
    ("spikingjelly", "IFNode"): spikingjelly_if,
    ("spikingjelly", "LIFNode"): spikingjelly_lif,
    ("spikingjelly", "ParametricLIFNode"): spikingjelly_lif,
    ("spikingjelly", "CUBALIFNode"): spikingjelly_cuba_lif,
}
NEURON_BASES = {("snntorch", "SpikingNeuron"), ("spikingjelly", "BaseNode")}  # traced as leaves


def _key(cls: type) -> tuple[str, str]:
    return cls.__module__.split(".")[0], cls.__name__


def is_neuron(m: torch.nn.Module) -> bool:
    """Whether ``m`` is a neuron of a framework we know (a leaf of the trace, mapped or refused)."""
    return any(_key(c) in NEURON_BASES or _key(c) in NEURONS for c in type(m).__mro__)


def neuron_node(name: str, m: torch.nn.Module, shape: tuple[int, ...], dt: float) -> Made:
    """The NIR neuron of module ``name``, or a one-line refusal naming it, its type and why."""
    mapping = NEURONS.get(_key(type(m)))
    kind = f"{type(m).__module__}.{type(m).__name__}"
    if mapping is None:
        known = ", ".join(f"{a}.{b}" for a, b in NEURONS)
        raise UserError(
            f"module {name!r} ({kind}): no NIR mapping for this neuron (mapped: {known})"
        )
    try:
        return mapping(m, shape, dt)
    except ValueError as e:
        raise UserError(f"module {name!r} ({kind}): {e}") from None
