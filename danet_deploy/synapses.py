"""Loihi's 8-bit synaptic weights: the one rounding rule that the compiler applies and that
lava-dl training on the chip's grid imitates (so both produce the same integers).

Below every pipeline stage: models and the compiler import it, it imports neither.
"""

from __future__ import annotations

import numpy as np
import torch

from .ir.chip_format import LOIHI

WEIGHT_DTYPE = np.int16  # holds every such integer ([-256, 255]) in a quarter of float64's bytes


def round_weights(w: torch.Tensor, mixed: bool | None = None) -> torch.Tensor:
    """The integers Lava's Dense/Sparse keep exactly, nearest to ``w``: even values in
    [-256, 254] when the signs are mixed (Lava drops the LSB), else any in [-255, 255].
    ``mixed``: whether the signs of the whole synapse group ``w`` is a part of are mixed
    (default: those of ``w``)."""
    if mixed is None:
        mixed = bool(w.min() < 0) and bool(w.max() > 0)
    if mixed:
        return (2 * torch.round(w / 2)).clamp(LOIHI.weight_min_mixed, LOIHI.weight_max)
    return torch.round(w).clamp(-LOIHI.weight_max_one_sign, LOIHI.weight_max_one_sign)
