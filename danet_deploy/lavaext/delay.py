"""A delay line: what arrives at step t leaves at step t + delay (a shift register).

Delay balancing puts delays on skip paths, and Lava's ``DelaySparse`` rebuilds
large matrices element by element (it did not finish one step of a 2.4 M-synapse
term in 300 s). A delay line in front of an ordinary synapse process gives the same
timing as ``DelaySparse(delays=d)``: the synapse adds its one step, the line adds
``d``, and one line serves every consumer of a source that needs the same delay.
"""

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from danet_deploy.ir.chip_format import LOIHI  # absolute: Lava also loads this file by its path


class DelayLine(AbstractProcess):
    """Forwards ``s_in`` to ``s_out`` ``delay`` steps later (values unchanged: spikes or graded)."""

    def __init__(self, *, shape: tuple, delay: int) -> None:
        if delay < 1:
            raise ValueError(f"a delay line needs delay >= 1, got {delay}")
        super().__init__(shape=shape, delay=delay)
        self.s_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)


@implements(proc=DelayLine, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyDelayLineModel(PyLoihiProcessModel):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=LOIHI.graded_payload_bits)
    s_out: PyOutPort = LavaPyType(
        PyOutPort.VEC_DENSE, np.int32, precision=LOIHI.graded_payload_bits
    )

    def __init__(self, proc_params: dict) -> None:
        super().__init__(proc_params)
        self.line = np.zeros((int(proc_params["delay"]), *proc_params["shape"]), dtype=np.int32)
        self.head = 0  # the slot that leaves now and is refilled with what arrives now

    def run_spk(self) -> None:
        self.s_out.send(self.line[self.head].copy())  # sent first: no step waits on its own input
        self.line[self.head] = self.s_in.recv()
        self.head = (self.head + 1) % self.line.shape[0]
