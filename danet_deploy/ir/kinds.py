"""What a population is: one class per kind, each stating its update and what every stage asks.

A :class:`~danet_deploy.ir.program.Population`'s ``kind`` is one of the instances below
(:data:`INPUT`, :data:`LIF`, :data:`GATE`, :data:`RELAY`, :data:`READOUT`, :data:`DELTA`,
:data:`SIGMA_DELTA`). Each class's docstring states what its population computes; its class
attributes answer, once, the questions the stages ask of it (docs/compile.md §1, "Population
kinds"), so that the lowering, the compiler, the fast simulator, the accountant and the netx
writer read a property and never compare kinds. The Lava backend builds each kind's process
from a table with one entry per kind (``simulator/lava.py:LAVA_PROCESSES``): a new kind is a
class here and an entry there.

``name`` is what ``program.h5`` writes (:func:`kind_named` reads it back). The instances are
the only ones: a copy or a pickle of one is the same object.

This module imports nothing beyond the standard library: the Lava worker reads it too.
"""

from __future__ import annotations

from typing import ClassVar

from danet_deploy.errors import UserError


class PopulationKind:
    """The questions the stages ask of a population's kind; a subclass per kind answers them.

    Each attribute is named for the question it answers; a subclass states where it differs
    from these defaults."""

    name: ClassVar[str]  # as program.h5 writes it
    is_input: ClassVar[bool] = False  # the network's input: the data, encoded, not computed
    is_readout: ClassVar[bool] = False  # the network's output: its summed current, recorded
    # neurons on the chip (neuron slots of its cores, a Lava neuron process): not the input, which
    # the data feeds, nor a readout, whose summed synaptic current is recorded as it is
    has_neurons: ClassVar[bool] = True
    # Lava's LIF update (a current and a voltage that decay, an integer threshold vth, a reset:
    # ir/neurons.py, ir/resets.py): the compiler makes its dv, du and vth
    spiking: ClassVar[bool] = False
    voltage_memory: ClassVar[bool] = False  # a spiking neuron's voltage lasts over steps
    # sends graded values whatever its reset (else binary spikes, or a multi-spike reset's counts;
    # the input's are graded or not as its data are)
    graded: ClassVar[bool] = False
    # sends its summed input current on as graded values: its K is the scale of what it sends
    # (its weights' grid, docs/compile.md §3), it has no bias and no threshold
    sends_current: ClassVar[bool] = False
    sigma_delta: ClassVar[bool] = False  # Lava's Delta or SigmaDelta update (ir/sigma_delta.py)
    encoder: ClassVar[bool] = False  # a sigma-delta encoder: it may read the input itself
    # what one graded message from it costs across a synapse (docs/accounting.md): a graded op,
    # or a multiply-accumulate where the data enter (NeuroBench's count for dense inputs)
    graded_message_cost: ClassVar[str] = "graded_ops"
    netx: ClassVar[bool] = False  # the netx writer writes it as a layer of a chain
    # training on the chip's grid (chip_tuning.py) holds its state at K per unit, so that K
    # is rounded to a power of two: a neuron layer of the model or its readout
    trained_state: ClassVar[bool] = False

    def __repr__(self) -> str:
        return self.name.upper()

    def __reduce__(self) -> tuple:  # copies and pickles are the one instance
        return kind_named, (self.name,)


class InputKind(PopulationKind):
    """The network's input: each step's data, encoded as the chip receives it (graded integers,
    ``round(x * value_scale)``, or binary spikes ``x != 0``: its ``Fixed.graded``). Lava feeds
    it from a ring buffer; nothing on the chip computes it."""

    name = "input"
    is_input = True
    has_neurons = False
    graded_message_cost = "macs"


class LIFKind(PopulationKind):
    """A leaky integrate-and-fire layer, Lava's LIF update on the chip's integers::

        u <- u * (4096 - du) / 4096 + A         (A: the summed synaptic input)
        v <- v * (4096 - dv) / 4096 + u + bias
        spike where v > vth << 6, then the reset of its ``Population.firing``

    It sends binary spikes, or spike counts under a multi-spike reset (``Fixed.graded``)."""

    name = "lif"
    spiking = True
    voltage_memory = True
    netx = True
    trained_state = True


class GateKind(LIFKind):
    """A memoryless threshold gate: a LIF whose voltage is its current (``dv`` = 4096),
    ``spike = v > vth << 6``. The lowering makes one of a NIR ``Threshold`` (an exact AND or OR
    of spikes) and of the one neuron that fires every step to give a CUBA layer a constant
    current through its synapses."""

    name = "gate"
    voltage_memory = False
    netx = False
    trained_state = False


class RelayKind(PopulationKind):
    """A relay (``--lowering relay``): its summed input current sent on as graded values, no
    state (Lava's ``GradedVec`` with ``vth = 0``); it holds a sum of paths whose expansion
    would need more synapses (docs/compile.md §3)."""

    name = "relay"
    graded = True
    sends_current = True


class ReadoutKind(PopulationKind):
    """The network's output: its summed synaptic current ``A`` at every step, recorded as it is
    (no neurons); the class scores are its mean over the steps."""

    name = "readout"
    is_readout = True
    has_neurons = False
    netx = True
    trained_state = True


class SigmaDeltaKind(PopulationKind):
    """A sigma-delta neuron (lava-dl's SDNN, Lava's ``SigmaDelta``): it sums the graded deltas it
    receives (sigma), applies its activation (ReLU or none) with its bias, and sends the change
    of the result when that exceeds its threshold (delta), as graded payloads scaled by
    ``spike_exp`` (ir/sigma_delta.py). It has no reset: a program of them runs as one pipeline."""

    name = "sigma_delta"
    graded = True
    sigma_delta = True


class DeltaKind(SigmaDeltaKind):
    """A sigma-delta encoder (Lava's ``Delta``): the delta half alone, with no activation; it
    reads the input itself when the input feeds it directly (``SynapseGroup.port``)."""

    name = "delta"
    encoder = True


INPUT = InputKind()
LIF = LIFKind()
GATE = GateKind()
RELAY = RelayKind()
READOUT = ReadoutKind()
SIGMA_DELTA = SigmaDeltaKind()
DELTA = DeltaKind()

KINDS: dict[str, PopulationKind] = {
    k.name: k for k in (INPUT, LIF, GATE, RELAY, READOUT, DELTA, SIGMA_DELTA)
}


def kind_named(name: str) -> PopulationKind:
    """The kind that ``program.h5`` names ``name``."""
    try:
        return KINDS[name]
    except KeyError:
        raise UserError(
            f"unknown population kind {name!r} (known: {', '.join(KINDS)}); the program was "
            f"written by a newer danet-deploy"
        ) from None
