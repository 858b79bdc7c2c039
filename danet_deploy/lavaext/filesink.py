"""A sink that writes what it receives each step into a ``.npy`` memory map.

Reading results through Lava's ``Var.get()`` costs about 50 us per value (one
channel message each); writing from inside the worker process costs nothing. With
``progress`` the sink also prints ``step N`` on stdout after each step, which the
worker's parent reads to show how far the run is.
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


class FileSink(AbstractProcess):
    """Records ``a_in`` at every step into ``path`` (shape ``[num_steps, *shape]``)."""

    def __init__(self, *, shape: tuple, num_steps: int, path: str, dtype: str = "int32",
                 progress: bool = False) -> None:
        super().__init__(shape=shape, num_steps=num_steps, path=path, dtype=dtype, progress=progress)
        self.a_in = InPort(shape=shape)


@implements(proc=FileSink, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyFileSinkModel(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32)

    def __init__(self, proc_params: dict) -> None:
        super().__init__(proc_params)
        shape = (int(proc_params["num_steps"]), *proc_params["shape"])
        self.buffer = np.lib.format.open_memmap(proc_params["path"], mode="w+",
                                                dtype=np.dtype(proc_params["dtype"]), shape=shape)
        self.progress = bool(proc_params["progress"])

    def run_spk(self) -> None:
        step = self.time_step - 1
        values = self.a_in.recv()
        if step < self.buffer.shape[0]:
            self.buffer[step] = values
            if step == self.buffer.shape[0] - 1:
                self.buffer.flush()
        if self.progress:
            print(f"step {step + 1}", flush=True)
