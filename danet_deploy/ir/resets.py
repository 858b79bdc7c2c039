"""How a spiking neuron fires and resets: the rule as a named enumeration, stated once.

The frameworks differ in when a neuron fires (``v > threshold`` or ``v >= threshold``), how it
resets (to zero, by subtracting the threshold, a step late, several spikes at once) and where
its voltage starts (docs/nir.md, "Conventions that NIR 1.0.8 does not record"). A graph's
convention names (``RESETS`` in ``ir/graph.py``) become a :class:`Firing` here, in
:func:`convention_firing`, and every stage reads that:

* the float interpreter runs :func:`fire_float`;
* the fast simulator and danet-deploy's own Lava neuron (``lavaext/neuron.py``) run
  :func:`fire_integer` on the chip's integers (docs/compile.md §3, "Programmed resets");
* the compiler gives :attr:`Reset.ZERO` to Lava's fixed LIF and every other rule to a
  programmable neuron (Loihi 2's microcoded neurons), which ``loihi1`` refuses.

This module imports nothing heavier than the standard library: the Lava worker reads it too.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class Reset(str, enum.Enum):
    """A reset rule: what happens to the voltage ``v`` when the neuron fires at threshold ``th``."""

    ZERO = "zero"  # v <- 0 in the step it fires (Loihi's LIF)
    SUBTRACT = "subtract"  # v <- v - th in the step it fires
    ZERO_LATE = "zero-late"  # v <- 0 the step after, dropping that step's input (snnTorch)
    SUBTRACT_LATE = "subtract-late"  # v <- v - th the step after, undecayed (snnTorch's default)
    MULTI_SPIKE = "multi-spike"  # floor(v / th) spikes once v >= th, each subtracting th (sinabs)
    MULTI_SPIKE_FLOOR = "multi-spike-floor"  # MULTI_SPIKE, then v >= -th (sinabs' from_nir)

    @property
    def late(self) -> bool:
        """Whether it acts on the step after the spike (the neuron keeps whether it fired)."""
        return self in (Reset.ZERO_LATE, Reset.SUBTRACT_LATE)

    @property
    def multi_spike(self) -> bool:
        """Whether it sends a spike count (a graded value) instead of a binary spike."""
        return self in (Reset.MULTI_SPIKE, Reset.MULTI_SPIKE_FLOOR)

    @property
    def programmed(self) -> bool:
        """Whether it needs a programmable neuron: Lava's (and Loihi 1's) LIF resets to zero."""
        return self is not Reset.ZERO


DESCRIPTIONS = {
    Reset.ZERO: "sets the voltage to 0 when it fires",
    Reset.SUBTRACT: "subtracts the threshold when it fires",
    Reset.ZERO_LATE: "drops the input of the step after a spike (snnTorch's reset_delay)",
    Reset.SUBTRACT_LATE: "subtracts the threshold a step after the spike (snnTorch's reset_delay)",
    Reset.MULTI_SPIKE: "fires several spikes in one step, subtracting the threshold for each "
    "(sinabs)",
    Reset.MULTI_SPIKE_FLOOR: "fires several spikes in one step and keeps its voltage above "
    "-threshold (sinabs' from_nir)",
}


@dataclass(frozen=True)
class Firing:
    """How a node fires, resets and starts: its :class:`Reset` rule, whether ``v >= th`` fires
    (SpikingJelly; else ``v > th``), and whether its voltage starts each sample at ``v_reset``
    (SpikingJelly's hard reset; else at 0). A multi-spike rule fires at ``v >= th`` always."""

    reset: Reset = Reset.ZERO
    at_threshold: bool = False
    starts_at_reset: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "reset", Reset(self.reset))
        if self.reset.multi_spike:
            object.__setattr__(self, "at_threshold", True)


PLAIN = Firing()
_CONVENTIONS = {
    "zero": PLAIN,
    "subtract": Firing(Reset.SUBTRACT),
    "snntorch-subtract": Firing(Reset.SUBTRACT_LATE),
    "sinabs": Firing(Reset.MULTI_SPIKE),
    "sinabs-nir": Firing(Reset.MULTI_SPIKE_FLOOR),
    "spikingjelly": Firing(Reset.ZERO, at_threshold=True, starts_at_reset=True),
    "spikingjelly-soft": Firing(Reset.SUBTRACT, at_threshold=True),
}


def convention_firing(convention: str, late_zero: bool) -> Firing:
    """The firing of a graph's reset convention (a key of ``ir/graph.py:RESETS``).

    ``snntorch-zero``: snnTorch's ``reset_delay`` acts only where the neuron's voltage lives
    on (``late_zero``: a Synaptic neuron, or one on a loop); a plain Leaky resets at once."""
    if convention == "snntorch-zero":
        return Firing(Reset.ZERO_LATE) if late_zero else PLAIN
    return _CONVENTIONS[convention]


def fire_float(firing: Firing, v: Any, th: Any, fired: Any, v_reset: Any) -> tuple[Any, Any, Any]:
    """One step's firing of float voltages ``v`` (torch tensors) at threshold ``th``, a zero
    reset going to ``v_reset``; ``fired`` the spikes of the step before (None at a sample's
    first step). Returns the output (spikes, or spike counts), the new voltage and what the
    next step needs as ``fired`` (None unless the rule is late)."""
    import torch  # the interpreter's tensors; the Lava worker never calls this

    rule = firing.reset
    if fired is not None and rule is Reset.ZERO_LATE:
        v = torch.where(fired, v_reset.expand_as(v), v)
    elif fired is not None and rule is Reset.SUBTRACT_LATE:
        v = v - th * fired
    if rule.multi_spike:
        spikes = torch.where(v >= th, torch.floor(v / th), torch.zeros_like(v))
        v = v - th * spikes
        if rule is Reset.MULTI_SPIKE_FLOOR:
            v = torch.maximum(v, -th)
        return spikes, v, None
    spikes = v >= th if firing.at_threshold else v > th
    if rule is Reset.ZERO:
        v = torch.where(spikes, v_reset.expand_as(v), v)
    elif rule is Reset.SUBTRACT:
        v = v - th * spikes
    return spikes, v, spikes if rule.late else None


def fire_integer(
    firing: Firing, v: Any, theta: Any, fired: Any, v_max: int
) -> tuple[Any, Any, Any]:
    """:func:`fire_float` on the chip's integer voltages ``v`` (numpy integers, or integers held
    in torch float64 tensors) at the integer threshold ``theta`` (``vth << 6``), the voltage
    kept inside ``+-v_max`` (Lava's 24-bit clip) after a late subtraction. Written with
    operators only, so that numpy and torch run the same lines exactly.

    ``fired`` is the step before's spikes (zeros at a sample's first step)."""
    rule = firing.reset
    if rule is Reset.ZERO_LATE:
        v = v * (fired == 0)
    elif rule is Reset.SUBTRACT_LATE:
        v = (v - theta * fired).clip(-v_max, v_max)
    if rule.multi_spike:
        counts = (v >= theta) * (v // theta)
        v = v - theta * counts
        if rule is Reset.MULTI_SPIKE_FLOOR:
            v = v - (v < -theta) * (v + theta)
        return counts, v, fired
    spikes = (v >= theta) if firing.at_threshold else (v > theta)
    if rule is Reset.ZERO:
        v = v * ~spikes
    elif rule is Reset.SUBTRACT:
        v = v - theta * spikes
    return spikes, v, spikes if rule.late else fired
