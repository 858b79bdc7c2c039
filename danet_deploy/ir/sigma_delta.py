"""Loihi 2's sigma-delta neurons (lava-dl's SDNN layers): the one IR node that NIR 1.0.8 lacks.

NIR has no sigma-delta primitive, so the IR adds one node type, :class:`SigmaDelta`
(docs/lava-dl.md, "Sigma-delta networks"). The netx reader makes it; the float interpreter,
the lowering, the fast simulator and the Lava worker all read it; ``graph.nir`` carries it as
a node of type ``SigmaDelta`` that only danet-deploy reads (``export --target nir`` refuses a
graph that holds one, since no other NIR reader could).

Per step, in the chip's integers (lava-nc 0.10.0, ``lava/proc/sdn/models.py``), with
``E = spike_exp + state_exp`` and ``a`` the summed synaptic input::

    encoder (Lava's Delta, a netx input layer):   act' = a << E
    sigma-delta (Lava's SigmaDelta):              sigma += a;  act' = relu(sigma + bias << E)
                                                  (no relu where ``relu`` is False)
    both:  d = act' - act + r;  s = d where |d| >= threshold << E, else 0;
           r = d - s;  act = act';  out = s >> state_exp   (an arithmetic shift: floor)

The residue ``r`` keeps ``d - s`` before the shift: lava-nc 0.10.0 drops the truncation
error of ``>> state_exp`` (later, unreleased Lava code keeps it). The float interpreter runs
the same update with ``/ 2**state_exp`` in place of the shift.

The node checks its own fields as it is made, so every reader (the netx reader, ``graph.nir``'s)
gets the same one-line refusal: the threshold and bias whole and finite, the threshold inside
Loihi's 17-bit mantissa, the exponents inside Lava's 3-bit ``spike_exp`` and ``state_exp``.
"""

from __future__ import annotations

from dataclasses import dataclass

import nir
import numpy as np
import torch

from danet_deploy.ir.chip_format import LOIHI

NETX_STATE_EXP = 6  # netx's state exponent (lava-dl netx/hdf5.py, get_neuron_params)
NETX_SPIKE_EXP = 6  # netx's default spike exponent (hdf5.Network(spike_exp=6))
EXP_MAX = 7  # spike_exp and state_exp are 3-bit Vars in lava-nc 0.10.0 (lava/proc/sdn/models.py)


def real_values(name: str, value: object) -> np.ndarray:
    """``value`` as float64, refused (ValueError) unless real and finite: a complex number would lose
    its imaginary part, and NaN or Inf has no integer on the chip."""
    data = np.asarray(value)
    if data.dtype.kind == "c":
        raise ValueError(f"{name} has complex values; the chip's integers are real")
    if data.dtype.kind not in "biuf":
        raise ValueError(f"{name} holds {data.dtype} values, not real numbers")
    values = data.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} holds NaN or Inf")
    return values


def whole_values(
    name: str, value: object, low: float = -np.inf, high: float = np.inf
) -> np.ndarray:
    """:func:`real_values`, refused unless whole and in ``low..high`` (the message names the first
    bad value: ``name=v`` for one number, ``name v`` for one of many)."""
    values = real_values(name, value)
    bad = (values != np.floor(values)) | (values < low) | (values > high)
    if np.any(bad):
        shown = (np.asarray(value)[bad] if values.ndim else np.asarray(value)).flat[0].item()
        text = f"{shown:g}" if isinstance(shown, float) else str(shown)
        limits = (
            f" {low:g}..{high:g}"
            if np.isfinite(high)
            else f" >= {low:g}"
            if np.isfinite(low)
            else ""
        )
        raise ValueError(
            f"{name}{' ' if values.ndim else '='}{text}: must be a whole number{limits}"
        )
    return values


@dataclass(eq=False)
class SigmaDelta(nir.NIRNode):
    """A sigma-delta neuron population (module docstring): ``threshold`` (Lava's ``vth``,
    netx's ``vThMant``) and ``bias`` per neuron, in the chip's integers."""

    threshold: np.ndarray
    bias: np.ndarray
    encoder: bool = False  # Lava's Delta: no sigma, no bias, no activation; the input shifted by E
    relu: bool = True
    spike_exp: int = NETX_SPIKE_EXP
    state_exp: int = NETX_STATE_EXP

    def __post_init__(self) -> None:
        self.threshold = whole_values("threshold", self.threshold, 0, LOIHI.threshold_max)
        if not self.threshold.size:
            raise ValueError("threshold is empty: a population has at least one neuron")
        bias = whole_values("bias", self.bias)
        try:
            self.bias = np.broadcast_to(bias, self.threshold.shape)
        except ValueError:
            raise ValueError(
                f"bias of shape {list(bias.shape)} does not fit the neurons' "
                f"{list(self.threshold.shape)}"
            ) from None
        self.encoder, self.relu = bool(self.encoder), bool(self.relu)
        self.spike_exp = int(whole_values("spike_exp", self.spike_exp, 0, EXP_MAX))
        self.state_exp = int(whole_values("state_exp", self.state_exp, 0, EXP_MAX))
        if self.encoder and np.any(self.bias):
            raise ValueError("a sigma-delta encoder (Lava's Delta) has no bias")
        self.input_type = {"input": np.array(self.threshold.shape)}
        self.output_type = {"output": np.array(self.threshold.shape)}

    @property
    def exponent(self) -> int:
        """``E``: how far the state sits above the payload's units."""
        return self.spike_exp + self.state_exp

    @classmethod
    def from_dict(cls, kwargs: dict) -> SigmaDelta:
        """The node as ``graph.nir`` holds it (HDF5 gives back numpy scalars)."""
        fields = {k: v for k, v in kwargs.items() if k != "type"}
        return cls(**{k: (v.item() if isinstance(v, np.generic) else v) for k, v in fields.items()})


class SigmaDeltaState:
    """One population's state and update (module docstring), on tensors of integers
    (``exact``: int64, the chip's arithmetic) or of floats (the float interpreter)."""

    def __init__(self, node: SigmaDelta, exact: bool, device: torch.device | str = "cpu") -> None:
        dtype = torch.int64 if exact else torch.float64
        scale = 2**node.exponent
        self.node, self.exact = node, exact
        self.threshold = torch.as_tensor(
            np.rint(node.threshold) * scale if exact else node.threshold * scale,
            dtype=dtype,
            device=device,
        )
        self.bias = torch.as_tensor(
            np.rint(node.bias) * scale if exact else node.bias * scale, dtype=dtype, device=device
        )
        self.sigma = self.act = self.residue = None

    def step(self, a: torch.Tensor) -> torch.Tensor:
        """The output of one step for summed input ``a`` (the payload of a graded spike, 0 where silent)."""
        node = self.node
        a = a.to(self.threshold.dtype)
        if node.encoder:
            act = a * 2**node.exponent
        else:
            self.sigma = a if self.sigma is None else self.sigma + a
            act = self.sigma + self.bias
            if node.relu:
                act = torch.clamp(act, min=0)
        delta = act if self.act is None else act - self.act + self.residue
        sent = torch.where(delta.abs() >= self.threshold, delta, torch.zeros_like(delta))
        self.residue, self.act = delta - sent, act
        if self.exact:
            return torch.div(sent, 2**node.state_exp, rounding_mode="floor")
        return sent / 2**node.state_exp
