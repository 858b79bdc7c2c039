"""The number formats the compiler writes: Loihi's, as Lava's bit-accurate models run them.

One record, so that a hardware profile's widths are checked against what the compiler
produces in one place (docs/compile.md §5): a profile whose chip holds fewer bits than the
program needs, or other weight or decay arithmetic, is refused in one line naming the field,
instead of being read and ignored. The record also holds the chip's other numbers (Lava's
LIF shifts, the decay unity, the limits its widths give), so that every chip number the
compiler, the simulators and the exporters use is read from here, none written bare
(docs/compile.md §3).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


def _width(what: str, exact: bool) -> Any:
    """A width in bits: ``what`` the compiler writes in it; ``exact``: a chip with more bits
    would round otherwise (weights, decays), so only this width runs the program as compiled."""
    return field(metadata={"what": what, "exact": exact})


def _constant(what: str) -> Any:
    """Not a width a chip profile states: a constant of Lava's bit-accurate models that the
    compiler's arithmetic assumes (``what``: where it enters)."""
    return field(metadata={"constant": what})


@dataclass(frozen=True)
class ChipFormat:
    """Widths in bits of what a compiled program holds (``compile.quantise``, docs/compile.md §3),
    which a chip profile states, then the constants of Lava's LIF that the program assumes,
    and (properties) the limits and units they make."""

    weight_bits: int = _width("synaptic weights (Lava's Dense, Sparse and Conv rounding)", True)
    state_bits: int = _width("the current u and the voltage v (Lava's LIF)", False)
    decay_bits: int = _width("the decays du and dv, as fractions of 4096", True)
    threshold_bits: int = _width("the threshold mantissa vth", False)
    bias_mantissa_bits: int = _width("the bias mantissa", False)
    graded_payload_bits: int = _width("graded spike payloads (inputs, relays)", False)
    input_bits: int = _constant("graded input values (pixels), quantised to signed integers")
    act_shift: int = _constant("the current gains the summed input: u += A << act_shift")
    vth_shift: int = _constant("a neuron fires at v > vth << vth_shift")
    bias_exp: int = _constant("the voltage gains bias_mant << bias_exp a step")
    weight_exp: int = _constant("weights are their integers << weight_exp (0: as they are)")
    du_offset: int = _constant("the current keeps (decay_unity - du - du_offset) / decay_unity")

    @classmethod
    def widths(cls) -> tuple[str, ...]:
        """The fields a chip profile states (``constraints``), checked by :meth:`refusal`."""
        return tuple(f.name for f in fields(cls) if "exact" in f.metadata)

    @property
    def act_unit(self) -> int:
        """The state per unit of summed input current ``A`` (64): ``u = A << act_shift``."""
        return 1 << self.act_shift

    @property
    def vth_unit(self) -> int:
        """The voltage per unit of the threshold mantissa ``vth`` (64)."""
        return 1 << self.vth_shift

    @property
    def bias_unit(self) -> int:
        """The voltage per unit of the bias mantissa (64)."""
        return 1 << self.bias_exp

    @property
    def decay_unity(self) -> int:
        """The decays' denominator (4096): ``du`` and ``dv`` are fractions of it lost per step;
        ``dv = decay_unity`` keeps no voltage."""
        return 1 << self.decay_bits

    @property
    def du_no_memory(self) -> int:
        """The ``du`` that keeps no current (4095): ``u = A << act_shift`` each step."""
        return self.decay_unity - self.du_offset

    @property
    def state_max(self) -> int:
        """``2^23``: the current wraps into ``(-state_max, state_max]``, the voltage is clipped
        to ``+-(state_max - 1)``."""
        return 1 << (self.state_bits - 1)

    @property
    def threshold_max(self) -> int:
        """The largest threshold mantissa ``vth`` (``2^17 - 1``, unsigned)."""
        return (1 << self.threshold_bits) - 1

    @property
    def bias_mant_max(self) -> int:
        """The largest ``|bias_mant|`` (4095: a signed 13-bit mantissa)."""
        return (1 << (self.bias_mantissa_bits - 1)) - 1

    @property
    def weight_max(self) -> int:
        """The largest ``|weight|`` every synapse group keeps (254): a group of one sign keeps
        up to :attr:`weight_max_one_sign`, one of mixed signs even values in
        ``[weight_min_mixed, weight_max]`` (Lava drops the LSB)."""
        return (1 << self.weight_bits) - 2

    @property
    def weight_max_one_sign(self) -> int:
        """The largest ``|weight|`` of a synapse group whose weights share one sign (255)."""
        return (1 << self.weight_bits) - 1

    @property
    def weight_min_mixed(self) -> int:
        """The least weight of a mixed-sign synapse group (-256)."""
        return -(1 << self.weight_bits)

    def refusal(self, widths: dict[str, int], graded: bool) -> str | None:
        """Why a chip with ``widths`` (a profile's constraints) cannot run what the compiler
        writes, naming the first field at fault; None when it can. Without graded spikes
        (``graded`` false) no payload is sent, so its width is not asked for."""
        for f in fields(self):
            if f.name not in self.widths():
                continue
            have, need = widths[f.name], getattr(self, f.name)
            if f.name == "graded_payload_bits" and not graded:
                continue
            if have < need or f.metadata["exact"] and have != need:
                must = need if f.metadata["exact"] else f"at least {need}"
                return (
                    f"{f.name} = {have}: the compiler writes {f.metadata['what']} in {need} bits, "
                    f"so a chip profile must say {must}"
                )
        return None


LOIHI = ChipFormat(
    weight_bits=8,
    state_bits=24,
    decay_bits=12,
    threshold_bits=17,
    bias_mantissa_bits=13,
    graded_payload_bits=24,
    input_bits=8,
    act_shift=6,
    vth_shift=6,
    bias_exp=6,
    weight_exp=0,
    du_offset=1,
)
