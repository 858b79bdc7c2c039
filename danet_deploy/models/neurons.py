"""Multi-step spiking neurons built on snnTorch's ``Leaky``.

The neuron resets to zero in the step it spikes (``reset_delay=False``), which is
exactly Lava's fixed-point LIF with ``du=4095`` (no current memory) and
``dv=(1-beta)*4096``; snnTorch's default delayed reset would drop one input step
after every spike and could not be mapped bit-exactly.
"""

from __future__ import annotations

import snntorch as snn
import torch
from snntorch import surrogate
from torch import nn


class LIF(nn.Module):
    """Leaky integrate-and-fire layer over a ``[T, N, ...]`` input.

    ``v[t] = beta * v'[t-1] + x[t]``;  ``s[t] = H(v[t] - threshold)`` (strict ``>``);
    ``v'[t] = v[t] * (1 - s[t])`` (reset to zero). Surrogate gradient: arctan.
    """

    def __init__(self, beta: float = 0.5, threshold: float = 1.0, learn_beta: bool = False,
                 surrogate_alpha: float = 2.0) -> None:
        super().__init__()
        # snnTorch reads its own buffers while constructing, so the cell is always made on
        # the CPU, even when the model is built on the meta device (see checkpoint.load_model)
        with torch.device("cpu"):
            self.cell = snn.Leaky(beta=beta, threshold=threshold, learn_beta=learn_beta,
                                  spike_grad=surrogate.atan(alpha=surrogate_alpha),
                                  reset_mechanism="zero", reset_delay=False)
        # snnTorch keeps every neuron in a class-level list (for its global reset helpers,
        # unused here); leaving it there would keep each model's last membrane alive forever.
        snn.SpikingNeuron.instances.remove(self.cell)

    @property
    def beta(self) -> float:
        """The decay actually used in the forward pass (snnTorch clamps it to [0, 1])."""
        return float(self.cell.beta.detach().clamp(0, 1))

    @property
    def threshold(self) -> float:
        return float(self.cell.threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mem = torch.zeros_like(x[0])
        spikes = []
        for step in x:
            spk, mem = self.cell(step, mem)
            spikes.append(spk.to(x.dtype))  # snnTorch surrogates return float32
        # drop the state snnTorch stores on the module: it belongs to this call only
        self.cell.mem = torch.zeros(0, device=x.device)
        self.cell.reset = None
        return torch.stack(spikes)
