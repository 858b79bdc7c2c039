"""Multi-step spiking neurons: snnTorch's ``Leaky`` (the default) or lava-dl slayer's CUBA.

The snnTorch neuron resets to zero in the step it spikes (``reset_delay=False``), which is
exactly Lava's fixed-point LIF with ``du=4095`` (no current memory) and
``dv=(1-beta)*4096``; snnTorch's default delayed reset would drop one input step
after every spike and could not be mapped bit-exactly.
"""

from __future__ import annotations

import math

import snntorch as snn
import torch
from snntorch import surrogate
from torch import nn

from ..ir.chip_format import LOIHI
from ..lava_runtime import LavaDlNeeded, lava_dl_here


class LIF(nn.Module):
    """Leaky integrate-and-fire layer over a ``[T, N, ...]`` input.

    ``v[t] = beta * v'[t-1] + x[t]``;  ``s[t] = H(v[t] - threshold)`` (strict ``>``);
    ``v'[t] = v[t] * (1 - s[t])`` (reset to zero). Surrogate gradient: arctan.
    """

    def __init__(
        self,
        beta: float = 0.5,
        threshold: float = 1.0,
        learn_beta: bool = False,
        surrogate_alpha: float = 2.0,
    ) -> None:
        super().__init__()
        # snnTorch reads its own buffers while constructing, so the cell is always made on
        # the CPU, even when the model is built on the meta device (see checkpoint.load_model)
        with torch.device("cpu"):
            self.cell = snn.Leaky(
                beta=beta,
                threshold=threshold,
                learn_beta=learn_beta,
                spike_grad=surrogate.atan(alpha=surrogate_alpha),
                reset_mechanism="zero",
                reset_delay=False,
            )
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


def _slayer_cuba():
    """lava-dl's slayer CUBA neuron class. Importing lava-dl prints banners about optional
    tools (a dataset toolbox, the CUDA runtime) that a run does not use: they are dropped.
    Where lava-dl is not installed (the core environment), :class:`LavaDlNeeded` says so:
    the command line then runs the command in the Lava runtime (docs/lava-runtime.md)."""
    import contextlib
    import io

    if not lava_dl_here():
        raise LavaDlNeeded(
            "a lava-dl (slayer CUBA) network needs lava-dl, which runs in the Lava runtime: "
            "use the danet-deploy command, which runs it there, or run Python in the runtime "
            "(`danet-deploy lava-runtime run`)"
        )
    banners = io.StringIO()
    with contextlib.redirect_stdout(banners), contextlib.redirect_stderr(banners):
        from lava.lib.dl.slayer.neuron.cuba import Neuron
    return Neuron


class CUBA(nn.Module):
    """Loihi's CUBA neuron as lava-dl's slayer trains it, over a ``[T, N, ...]`` input.

    ``u[t] = (1 - current_decay) u[t-1] + x[t]``; ``v[t] = (1 - voltage_decay) v'[t-1] + u[t]``;
    spike where ``v >= threshold`` (slayer adds a tiny epsilon to reproduce Loihi's
    strict ``>``), ``v'`` reset to zero. The decays are quantised to Loihi's 1/4096
    steps, and the surrogate gradient is slayer's own. The exported neuron is Loihi's
    with ``iDecay``/``vDecay`` from :attr:`device_params`.
    """

    def __init__(
        self,
        threshold: float = 1.0,
        current_decay: float = 1.0,
        voltage_decay: float = 0.5,
        tau_grad: float = 0.15,
        scale_grad: float = 4.0,
    ) -> None:
        super().__init__()
        with torch.device("cpu"):  # slayer's state buffers are not in the state dict (see LIF)
            self.cell = _slayer_cuba()(
                threshold=threshold,
                current_decay=current_decay,
                voltage_decay=voltage_decay,
                tau_grad=tau_grad,
                scale_grad=scale_grad,
                requires_grad=False,
            )

    @property
    def device_params(self) -> dict[str, int]:
        """Loihi's decays as slayer quantises them: ``iDecay``, ``vDecay`` (per 4096)."""
        p = self.cell.device_params
        return {k: int(p[k]) for k in ("iDecay", "vDecay")}

    @property
    def threshold(self) -> float:
        return float(self.cell.threshold)

    def use_state_scale(self, k: float) -> None:
        """Keep slayer's integer state at ``k`` per unit (its default is 4096), the scale
        of the population on the chip, so that its arithmetic is Loihi's to the bit; ``k``
        is a power of two (then slayer's float views of the state are exact)."""
        unit = LOIHI.act_unit  # slayer's w_scale: the state per unit of current
        if not unit <= k <= 2**22 or 2 ** round(math.log2(k)) != k:
            raise ValueError(f"state scale {k} is not a power of two in [{unit}, 2**22]")
        self.cell.w_scale, self.cell.s_scale = int(k // unit), int(k)
        # slayer's 0.01/k would vanish next to 1.0 in float32 for k > 2**17; half a unit is
        # exact in float32 and still means Loihi's strict v > threshold on integer states
        self.cell.threshold_eps = 0.5 / k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # slayer keeps per-batch state buffers that must follow the data to its device
        self.cell.current_state = self.cell.current_state.to(x.device)
        self.cell.voltage_state = self.cell.voltage_state.to(x.device)
        spikes = self.cell(x.movedim(0, -1).contiguous())
        return spikes.movedim(-1, 0).to(x.dtype)


def make_neuron(params: dict) -> nn.Module:
    """The neuron a model config asks for: ``framework`` ``snntorch`` (LIF) or ``lava-dl`` (CUBA)."""
    kw = {k: v for k, v in params.items() if k != "framework"}
    return CUBA(**kw) if params.get("framework", "snntorch") == "lava-dl" else LIF(**kw)
