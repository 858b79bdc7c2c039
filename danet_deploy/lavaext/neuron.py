"""A LIF neuron with a programmed reset: Loihi 2's programmable neurons, as danet-deploy runs them.

Lava's ``LIFReset`` sets the voltage to 0 when a neuron fires. A neuron that subtracts its
threshold (snnTorch's default, at once or a step late) or fires several spikes in one step
(sinabs) needs its own neuron program; Loihi 2 runs such microcoded programs, and this process
states ours in Lava: Lava's bit-accurate LIF (``AbstractPyLifModelFixed.subthr_dynamics``: the
24-bit current and voltage, the 12-bit decays, the bias) and its per-sample reset, then the
firing rule of ``danet_deploy/ir/resets.py:fire_integer``, the same lines the fast simulator
runs. The integer semantics are ours; they have not been measured on a chip
(docs/compile.md, "Programmed resets").
"""

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.ports import PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.lif.models import AbstractPyLifModelFixed
from lava.proc.lif.process import LIFReset

from danet_deploy.ir.resets import Firing, fire_integer


class ProgrammedLIF(LIFReset):
    """``LIFReset`` whose neurons fire and reset by ``reset`` (a ``Reset`` value) and test
    ``v >= vth << 6`` where ``at_threshold`` (else ``v > vth << 6``); a multi-spike reset sends
    each neuron's spike count as a graded payload."""

    def __init__(self, *, reset: str, at_threshold: bool, **lif) -> None:
        super().__init__(**lif)
        self.proc_params["reset"] = reset
        self.proc_params["at_threshold"] = at_threshold


@implements(proc=ProgrammedLIF, protocol=LoihiProtocol)
@requires(CPU)
@tag("bit_accurate_loihi", "fixed_pt")
class PyProgrammedLIFModel(AbstractPyLifModelFixed):
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    vth: int = LavaPyType(int, np.int32, precision=17)

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self.reset_interval = proc_params["reset_interval"]
        self.reset_offset = proc_params["reset_offset"] % self.reset_interval
        self.firing = Firing(proc_params["reset"], bool(proc_params["at_threshold"]))
        self.fired = None  # the spikes of the step before (late rules)

    def scale_threshold(self) -> None:
        self.effective_vth = np.left_shift(np.int64(self.vth), self.vth_shift)
        self.isthrscaled = True

    def run_spk(self) -> None:
        a_in = self.a_in.recv()
        if self.fired is None or (self.time_step % self.reset_interval) == self.reset_offset:
            self.u *= 0
            self.v *= 0
            self.fired = np.zeros(self.v.shape, dtype=bool)
        self.scale_bias()
        if not self.isthrscaled:
            self.scale_threshold()
        self.subthr_dynamics(activation_in=a_in)
        out, v, self.fired = fire_integer(
            self.firing,
            self.v.astype(np.int64),
            self.effective_vth,
            self.fired,
            self.max_uv_val - 1,
        )
        self.v[:] = v
        self.s_out.send(out.astype(np.int32))
