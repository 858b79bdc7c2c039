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
"""

from __future__ import annotations

from dataclasses import dataclass

import nir
import numpy as np
import torch

NETX_STATE_EXP = 6  # netx's state exponent (lava-dl netx/hdf5.py, get_neuron_params)
NETX_SPIKE_EXP = 6  # netx's default spike exponent (hdf5.Network(spike_exp=6))


@dataclass(eq=False)
class SigmaDelta(nir.NIRNode):
    """A sigma-delta neuron population (module docstring): ``threshold`` (Lava's ``vth``,
    netx's ``vThMant``) and ``bias`` per neuron, in the chip's integers."""

    threshold: np.ndarray
    bias: np.ndarray
    encoder: bool = False   # Lava's Delta: no sigma, no bias, no activation; the input shifted by E
    relu: bool = True
    spike_exp: int = NETX_SPIKE_EXP
    state_exp: int = NETX_STATE_EXP

    def __post_init__(self) -> None:
        self.threshold = np.asarray(self.threshold, dtype=np.float64)
        self.bias = np.broadcast_to(np.asarray(self.bias, dtype=np.float64), self.threshold.shape)
        self.encoder, self.relu = bool(self.encoder), bool(self.relu)
        self.spike_exp, self.state_exp = int(self.spike_exp), int(self.state_exp)
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
        scale = 2 ** node.exponent
        self.node, self.exact = node, exact
        self.threshold = torch.as_tensor(np.rint(node.threshold) * scale if exact else node.threshold * scale,
                                         dtype=dtype, device=device)
        self.bias = torch.as_tensor(np.rint(node.bias) * scale if exact else node.bias * scale, dtype=dtype,
                                    device=device)
        self.sigma = self.act = self.residue = None

    def step(self, a: torch.Tensor) -> torch.Tensor:
        """The output of one step for summed input ``a`` (the payload of a graded spike, 0 where silent)."""
        node = self.node
        a = a.to(self.threshold.dtype)
        if node.encoder:
            act = a * 2 ** node.exponent
        else:
            self.sigma = a if self.sigma is None else self.sigma + a
            act = self.sigma + self.bias
            if node.relu:
                act = torch.clamp(act, min=0)
        delta = act if self.act is None else act - self.act + self.residue
        sent = torch.where(delta.abs() >= self.threshold, delta, torch.zeros_like(delta))
        self.residue, self.act = delta - sent, act
        if self.exact:
            return torch.div(sent, 2 ** node.state_exp, rounding_mode="floor")
        return sent / 2 ** node.state_exp
