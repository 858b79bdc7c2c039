"""A sink that writes what its ports receive each step into ``.npy`` memory maps.

Reading results through Lava's ``Var.get()`` costs about 50 us per value (one
channel message each); writing from inside the worker process costs nothing. One
sink records up to ``SINK_PORTS`` populations (ports ``a_in0`` ...): every Lava
process is an OS process that each step waits on, so fewer sinks run faster. A port
left unconnected receives zeros and records nothing. With ``progress`` the sink also
prints ``step N`` on stdout after each step, which the worker's parent reads to
show how far the run is.
"""

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from danet_deploy.lavaext import SINK_PORTS  # absolute: Lava also loads this file by its path


class FileSink(AbstractProcess):
    """Records port ``a_in<k>`` at every step into ``records[k] = (shape, path, dtype)``
    (file shape ``[num_steps, *shape]``)."""

    def __init__(self, *, records: list, num_steps: int, progress: bool = False) -> None:
        if not 1 <= len(records) <= SINK_PORTS:
            raise ValueError(f"a sink records 1 to {SINK_PORTS} populations, got {len(records)}")
        records = [(tuple(shape), str(path), str(dtype)) for shape, path, dtype in records]
        super().__init__(records=records, num_steps=num_steps, progress=progress)
        for k in range(SINK_PORTS):
            setattr(self, f"a_in{k}", InPort(shape=records[k][0] if k < len(records) else (1,)))

    def port(self, k: int) -> InPort:
        return getattr(self, f"a_in{k}")


@implements(proc=FileSink, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyFileSinkModel(PyLoihiProcessModel):
    a_in0: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32)
    a_in1: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32)
    a_in2: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32)
    a_in3: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32)
    a_in4: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32)
    a_in5: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32)
    a_in6: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32)
    a_in7: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32)

    def __init__(self, proc_params: dict) -> None:
        super().__init__(proc_params)
        steps = int(proc_params["num_steps"])
        self.buffers = [
            np.lib.format.open_memmap(path, mode="w+", dtype=np.dtype(dtype), shape=(steps, *shape))
            for shape, path, dtype in proc_params["records"]
        ]
        self.progress = bool(proc_params["progress"])

    def run_spk(self) -> None:
        step = self.time_step - 1
        for k, buffer in enumerate(self.buffers):
            values = getattr(self, f"a_in{k}").recv()
            if step < buffer.shape[0]:
                buffer[step] = values
                if step == buffer.shape[0] - 1:
                    buffer.flush()
        if self.progress:
            print(f"step {step + 1}", flush=True)
