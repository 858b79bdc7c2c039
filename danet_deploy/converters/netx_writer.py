"""``netx.h5`` for lava-dl's ``netx.hdf5.Network`` (sequential programs only).

netx connects layer ``i-1`` to layer ``i`` and nothing else, so it can describe a
compiled program only when that is a plain chain: input -> conv/dense LIF layers ->
a dense readout, without delays, gates or relays. The layout is the one netx reads
(docs/lava-dl.md, How a netx file is read): every field a dataset, conv weights in torch layout,
CUBA neurons with ``iDecay = du + 1``, ``vDecay = dv``, ``vThMant = vth`` and the
bias in the same units (netx shifts it by 6, as our program does).
"""

from __future__ import annotations

from typing import BinaryIO
from pathlib import Path

import h5py
import numpy as np

from danet_deploy.ir.program import Program
from danet_deploy.outputs import write_hdf5


def _channel_bias(bias: np.ndarray | None) -> np.ndarray | None:
    if bias is None:
        return None
    per_channel = bias.reshape(bias.shape[0], -1)
    return per_channel[:, 0] if np.all(per_channel == per_channel[:, :1]) else None


def is_sequential(program: Program) -> bool:
    """True when the program is a chain netx can express (of lava-dl's CUBA neurons, which
    reset to zero: a programmed reset, ir/resets.py, has no netx form)."""
    pops = list(program.populations.values())
    for prev, pop in zip(pops, pops[1:]):
        if not pop.kind.netx or len(pop.synapse_groups) != 1 or pop.firing.reset.programmed:
            return False
        t = pop.synapse_groups[0]
        if t.source != prev.name or t.delay:
            return False
        bias = program.fixed[pop.name].bias_mant
        if not pop.kind.is_readout and (
            t.map.kind != "conv" or bias is not None and _channel_bias(bias) is None
        ):
            return False
        if (
            not pop.kind.is_readout and len(pop.shape) != 3
        ):  # a flat population a conv feeds: lowering._channels_only
            return False
    return pops[-1].kind.is_readout and not any(p.kind.is_readout for p in pops[:-1])


def write_netx(path: Path, program: Program) -> None:
    """The chain ``program`` as a netx file at ``path`` (``outputs.write_hdf5``)."""
    write_hdf5(path, lambda file: _fill_netx(file, program))


def _fill_netx(file: BinaryIO, program: Program) -> None:
    pops = list(program.populations.values())
    with h5py.File(file, "w") as f:
        layers = f.create_group("layer")

        def layer(kind: str, shape: tuple[int, ...]) -> h5py.Group:
            g = layers.create_group(str(len(layers)))
            g.create_dataset("type", data=np.array([kind.encode()], dtype="S10"))
            g.create_dataset("shape", data=np.array(shape))
            return g

        layer("input", pops[0].shape)
        for pop in pops[1:]:
            t = pop.synapse_groups[0]
            fx = program.fixed[pop.name]
            if pop.kind.is_readout:
                layer("flatten", (int(np.prod(t.map.in_shape)), 1, 1))
                g = layer("dense", (pop.neurons,))
                g.create_dataset(
                    "weight", data=t.weight_q.reshape(t.weight_q.shape[0], -1).astype(np.int64)
                )
                continue
            g = layer("conv", pop.shape)
            g.create_dataset("weight", data=t.weight_q.astype(np.int64))
            for key, value in (
                ("stride", t.map.stride),
                ("padding", t.map.padding),
                ("dilation", (1, 1)),
            ):
                g.create_dataset(key, data=np.array(value))
            g.create_dataset("groups", data=1)
            bias = _channel_bias(fx.bias_mant)
            if bias is not None:
                g.create_dataset("bias", data=bias.astype(np.int64))
            n = g.create_group("neuron")
            n.create_dataset("type", data=np.array([b"CUBA"], dtype="S10"))
            for key, value in (
                ("iDecay", fx.du + 1),
                ("vDecay", fx.dv),
                ("vThMant", fx.vth),
                ("refDelay", 1),
                ("gradedSpike", 0),
            ):
                n.create_dataset(key, data=np.int64(value))
