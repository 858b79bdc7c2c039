"""A sample mask: forwards spikes in the same step, except at each sample's last steps.

Many samples run back to back in one Lava run, and ``LIFReset`` clears a neuron's
voltage and current at the start of each sample, but a synapse group with a lag (a recurrent
synapse, which brings the step before, or a Delay node of the graph: ``SynapseGroup.lag``) would
carry a sample's last ``lag`` steps into the next sample. The mask in front of its synapse
(and delay line) drops them, so every sample starts silent, as it does in the trained model
(and on a chip that runs one sample at a time).
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


class SampleMask(AbstractProcess):
    """``s_out = s_in``, but zero where ``(time_step - first) % interval < span``."""

    def __init__(self, *, shape: tuple, interval: int, first: int, span: int) -> None:
        super().__init__(shape=shape, interval=interval, first=first, span=span)
        self.s_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)


@implements(proc=SampleMask, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PySampleMaskModel(PyLoihiProcessModel):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=LOIHI.graded_payload_bits)
    s_out: PyOutPort = LavaPyType(
        PyOutPort.VEC_DENSE, np.int32, precision=LOIHI.graded_payload_bits
    )

    def run_spk(self) -> None:
        spikes = self.s_in.recv()  # the synapse behind sends first, so this waits on no cycle
        p = self.proc_params
        if (self.time_step - p["first"]) % p["interval"] < p["span"]:
            spikes = np.zeros_like(spikes)
        self.s_out.send(spikes)
