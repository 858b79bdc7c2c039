"""The number formats the compiler writes: Loihi's, as Lava's bit-accurate models run them.

One record, so that a hardware profile's widths are checked against what the compiler
produces in one place (docs/compile.md §5): a profile whose chip holds fewer bits than the
program needs, or other weight or decay arithmetic, is refused in one line naming the field,
instead of being read and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


def _width(what: str, exact: bool) -> Any:
    """A width in bits: ``what`` the compiler writes in it; ``exact``: a chip with more bits
    would round otherwise (weights, decays), so only this width runs the program as compiled."""
    return field(metadata={"what": what, "exact": exact})


@dataclass(frozen=True)
class ChipFormat:
    """Widths in bits of what a compiled program holds (``compile.quantise``, docs/compile.md §3)."""

    weight_bits: int = _width("synaptic weights (Lava's Dense, Sparse and Conv rounding)", True)
    state_bits: int = _width("the current u and the voltage v (Lava's LIF)", False)
    decay_bits: int = _width("the decays du and dv, as fractions of 4096", True)
    threshold_bits: int = _width("the threshold mantissa vth", False)
    bias_mantissa_bits: int = _width("the bias mantissa", False)
    graded_payload_bits: int = _width("graded spike payloads (inputs, relays)", False)

    def refusal(self, widths: dict[str, int], graded: bool) -> str | None:
        """Why a chip with ``widths`` (a profile's constraints) cannot run what the compiler
        writes, naming the first field at fault; None when it can. Without graded spikes
        (``graded`` false) no payload is sent, so its width is not asked for."""
        for f in fields(self):
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
)
