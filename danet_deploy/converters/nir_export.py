"""SpikingNet -> NIR graph, written with ``nir``'s own primitives.

Lowering rules (docs/nir.md):

* BatchNorm folds into the conv that feeds it. A BatchNorm on a summed stream
  (pre-activation ``pa``/``da`` blocks, the head) always feeds a LIF: its scale
  becomes a ``Scale`` node on the summed currents and its shift the LIF's
  ``v_leak = r * shift`` (a constant input current), so it folds into that
  consumer's input scaling, exactly.
* ``add`` nodes disappear: NIR sums every edge into a node, so each consumer gets
  one edge per summand (SEW ADD: both spike sources feed the consumer's conv; ms,
  pa, da: every earlier current feeds the consumer).
* SEW AND / IAND become exact memoryless gates (``Threshold`` on ``a + d`` or
  ``d - a``); spike max-pooling becomes ``SumPool2d`` + ``Threshold`` (an OR).
* LIF layers become ``nir.LIF`` with forward-Euler parameters for step ``dt``:
  ``tau = dt / (1 - beta)``, ``r = tau / dt``, so ``v <- beta * v + I``.
* The readout is ``AvgPool2d -> Conv2d (1x1) -> Output`` of shape ``(classes, 1, 1)``
  (no ``Flatten``, whose batch-dimension convention differs between frameworks);
  the logits are the output current averaged over time steps.

Every node's metadata records the connection type of its block, the signal it
emits (spike / count / real) and the model node it came from; the graph's metadata
lists every edge with its connection type and signal, and the time steps, ``dt``
and neuron parameters.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any, BinaryIO, Callable

import h5py
import nir
import numpy as np
import torch

from danet_deploy import __version__
from danet_deploy.ir.chip_format import LOIHI
from danet_deploy.models import REAL, SPIKE, Node, SpikingNet
from danet_deploy.models.neurons import CUBA
from danet_deploy.outputs import write_hdf5

DEFAULT_DT = 1e-4  # seconds; the snnTorch / NIR-paper convention


def _array(t: torch.Tensor) -> np.ndarray:
    """A numpy view of a tensor (no copy: NIR arrays share memory with the model)."""
    return t.detach().cpu().numpy()


def _per_neuron(value: float | np.ndarray, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A per-neuron parameter array as a broadcast view of a scalar or a per-channel vector."""
    value = np.asarray(value, dtype=dtype)
    if value.ndim == 1 and len(shape) == 3:
        value = value.reshape(-1, 1, 1)
    return np.broadcast_to(value, shape)


NEVER_DECAYS = (
    2.0**24
)  # steps: a time constant whose decay per step rounds to Loihi's none (0 of 4096)


def loihi_cuba(
    i_decay: float,
    v_decay: float,
    threshold: float,
    bias: float | np.ndarray,
    dt: float,
    full: Callable[[float | np.ndarray], np.ndarray],
) -> nir.CubaLIF:
    """Loihi's CUBA neuron as NIR's CubaLIF: forward Euler with these constants is exactly
    ``u <- (1 - iDecay/4096) u + I``, ``v <- (1 - vDecay/4096) v + u + bias`` (per step ``dt``).
    A decay of 0 (a state that never decays, netx's default current) has no finite time
    constant: :data:`NEVER_DECAYS` stands for it, a power of two, so the gains stay exact and
    the compiler's decay rounds to 0. ``full`` broadcasts a value to every neuron (a view)."""
    tau_syn = dt * (LOIHI.decay_unity / i_decay if i_decay else NEVER_DECAYS)
    tau_mem = dt * (LOIHI.decay_unity / v_decay if v_decay else NEVER_DECAYS)
    r = tau_mem / dt
    return nir.CubaLIF(
        tau_syn=full(tau_syn),
        tau_mem=full(tau_mem),
        r=full(r),
        w_in=full(tau_syn / dt),
        v_leak=full(r * np.asarray(bias)),
        v_threshold=full(threshold),
        v_reset=full(0.0),
    )


class _Lowering:
    """Builds the NIR nodes and edges for one model."""

    def __init__(self, model: SpikingNet, dt: float, fold_in_place: bool) -> None:
        self.model, self.dt, self.fold_in_place = model, dt, fold_in_place
        self.shapes = model.output_shapes()
        self.consumers: dict[str, list[Node]] = {n.name: [] for n in model.nodes}
        for n in model.nodes:
            for i in n.inputs:
                self.consumers[i].append(n)
        self.nodes: dict[str, nir.NIRNode] = {}
        self.edges: list[tuple[str, str]] = []
        self.edge_info: list[list[str]] = []
        # model node -> NIR nodes whose outputs sum to its value (add nodes expand to many)
        self.sources: dict[str, list[str]] = {}
        self.signal: dict[str, str] = {}
        # LIF node -> constant input current from a BatchNorm shift on its summed input
        self.stream_shift: dict[str, np.ndarray] = {}

    def _emit(self, name: str, node: nir.NIRNode, model_node: Node, signal: str) -> str:
        node.metadata = {
            "connection": model_node.connection,
            "signal": signal,
            "source": model_node.name,
        }
        self.nodes[name] = node
        self.signal[name] = signal
        return name

    def _connect(self, sources: list[str], dst: str, connection: str) -> None:
        for src in sources:
            self.edges.append((src, dst))
            self.edge_info.append([src, dst, connection, self.signal[src]])

    def lower(self, node: Node) -> None:
        op, shape = node.op, self.shapes[node.name]
        ins = [s for i in node.inputs for s in self.sources[i]]
        if op == "input":
            self.sources[node.name] = [
                self._emit(
                    node.name, nir.Input(input_type={"input": np.array(shape)}), node, node.signal
                )
            ]
        elif op == "add":
            self.sources[node.name] = ins
        elif op == "conv":
            self._conv(node, ins)
        elif op == "bn":
            self._bn(node, ins)
        elif op == "lif":
            self._lif(node, ins, shape)
        elif op in ("and", "iand"):
            self._gate(node, shape)
        elif op == "maxpool":
            a = node.attrs
            pool = self._emit(
                f"{node.name}.sum",
                nir.SumPool2d(
                    np.array([a["kernel"]] * 2),
                    np.array([a["stride"]] * 2),
                    np.array([a["padding"]] * 2),
                ),
                node,
                "count",
            )
            self._connect(ins, pool, node.connection)
            out = self._emit(
                node.name, nir.Threshold(_per_neuron(0.5, shape, np.float32)), node, SPIKE
            )
            self._connect([pool], out, node.connection)
            self.sources[node.name] = [out]
        elif op == "gap":
            size = self.shapes[node.inputs[0]][1:]
            pool = self._emit(
                node.name,
                nir.AvgPool2d(np.array(size), np.array(size), np.array([0, 0])),
                node,
                REAL,
            )
            self._connect(ins, pool, node.connection)
            self.sources[node.name] = [pool]
        elif op == "linear":  # the readout, applied to the pooled (C, 1, 1) map as a 1x1 conv
            bias = self.model.layer_bias(node)
            bias = (
                bias if bias is not None else torch.zeros(self.model.module_of(node).out_features)
            )
            weight = _array(self.model.layer_weight(node))[:, :, None, None]
            fc = nir.Conv2d(
                input_shape=(1, 1),
                weight=weight,
                stride=1,
                padding=0,
                dilation=1,
                groups=1,
                bias=_array(bias),
            )
            out = self._emit(node.name, fc, node, REAL)
            self._connect(ins, out, node.connection)
            self.sources[node.name] = [out]
        else:
            raise AssertionError(f"no NIR form for op {op!r}")

    def _conv(self, node: Node, ins: list[str]) -> None:
        m = self.model.module_of(node)
        weight = self.model.layer_weight(node).detach()
        bias = (
            m.bias.detach()
            if m.bias is not None
            else torch.zeros(m.out_channels, dtype=weight.dtype)
        )
        bn = self.model.folded_bn(node)
        if bn is not None:
            scale, shift = self.model.bn_affine(bn)
            if self.fold_in_place:
                weight = weight.mul_(scale.view(-1, 1, 1, 1))
            else:
                weight = weight * scale.view(-1, 1, 1, 1)
            bias = bias * scale + shift
        in_signal = "+".join(sorted({self.signal[s] for s in ins}))
        conv = nir.Conv2d(
            input_shape=tuple(self.shapes[node.inputs[0]][1:]),
            weight=_array(weight),
            stride=tuple(m.stride),
            padding=tuple(m.padding),
            dilation=tuple(m.dilation),
            groups=m.groups,
            bias=_array(bias),
        )
        out = self._emit(node.name, conv, node, REAL)
        conv.metadata["input_signal"] = in_signal  # 'real' marks a non-spiking (MAC) layer
        self._connect(ins, out, node.connection)
        self.sources[node.name] = [out]

    def _bn(self, node: Node, ins: list[str]) -> None:
        producer = next(n for n in self.model.nodes if n.name == node.inputs[0])
        if producer.op == "conv" and self.model.folded_bn(producer) is not None:
            self.sources[node.name] = self.sources[producer.name]
            return
        users = self.consumers[node.name]
        if [u.op for u in users] != ["lif"]:
            raise ValueError(
                f"{node.name}: a BatchNorm on a summed stream must feed exactly one LIF"
            )
        scale, shift = (_array(t) for t in self.model.bn_affine(node))
        shape = self.shapes[node.name]
        out = self._emit(node.name, nir.Scale(_per_neuron(scale, shape, scale.dtype)), node, REAL)
        self._connect(ins, out, node.connection)
        self.sources[node.name] = [out]
        self.stream_shift[users[0].name] = shift

    def _lif(self, node: Node, ins: list[str], shape: tuple[int, ...]) -> None:
        lif = self.model.module_of(node)
        dtype = np.float32 if isinstance(lif, CUBA) else _array(lif.cell.threshold).dtype
        full = lambda v: _per_neuron(v, shape, dtype)  # noqa: E731
        shift = self.stream_shift.get(node.name)
        if isinstance(lif, CUBA):
            p = lif.device_params
            if p["iDecay"] < LOIHI.decay_unity and shift is not None:
                raise ValueError(
                    f"{node.name}: a BatchNorm shift into a CUBA neuron with current memory "
                    f"has no Loihi form"
                )
            neuron = loihi_cuba(
                p["iDecay"],
                p["vDecay"],
                lif.threshold,
                0.0 if shift is None else shift,
                self.dt,
                full,
            )
        elif lif.beta >= 1.0:
            if shift is not None:
                raise ValueError(f"{node.name}: a non-leaky neuron cannot absorb a BatchNorm shift")
            neuron = nir.IF(
                r=full(1.0 / self.dt), v_threshold=full(lif.threshold), v_reset=full(0.0)
            )
        else:
            tau = self.dt / (1.0 - lif.beta)
            r = tau / self.dt
            neuron = nir.LIF(
                tau=full(tau),
                r=full(r),
                v_leak=full(r * shift if shift is not None else 0.0),
                v_threshold=full(lif.threshold),
                v_reset=full(0.0),
            )
        out = self._emit(node.name, neuron, node, SPIKE)
        self._connect(ins, out, node.connection)
        self.sources[node.name] = [out]

    def _gate(self, node: Node, shape: tuple[int, ...]) -> None:
        """AND: ``a + d > 1.5``; IAND: ``d - a > 0.5`` — exact on binary spikes."""
        a, d = (self.sources[i] for i in node.inputs)
        gate = self._emit(
            node.name,
            nir.Threshold(_per_neuron(1.5 if node.op == "and" else 0.5, shape, np.float32)),
            node,
            SPIKE,
        )
        if node.op == "iand":
            neg = self._emit(
                f"{node.name}.negate", nir.Scale(_per_neuron(-1.0, shape, np.float32)), node, REAL
            )
            self._connect(a, neg, node.connection)
            a = [neg]
        self._connect(a + d, gate, node.connection)
        self.sources[node.name] = [gate]


def to_nir(model: SpikingNet, dt: float = DEFAULT_DT, fold_in_place: bool = False) -> nir.NIRGraph:
    """Lower ``model`` (in eval mode, BN statistics frozen) to a type-checked NIR graph.

    The graph's arrays share memory with the model. ``fold_in_place`` folds BatchNorm
    into the model's own conv weights (no copy of the weights; the model is spent).
    """
    if model.training:
        raise ValueError("export needs the model in eval mode (BatchNorm statistics are folded)")
    low = _Lowering(model, dt, fold_in_place)
    with torch.no_grad():
        for node in model.nodes:
            low.lower(node)
    out_node = next(n for n in model.nodes if n.name == model.output)
    out_shape = np.array([*low.shapes[model.output], 1, 1])
    low._emit("output", nir.Output(output_type={"output": out_shape}), out_node, REAL)
    low._connect(low.sources[model.output], "output", "head")
    cfg = model.config
    metadata: dict[str, Any] = {
        "producer": f"danet-deploy {__version__}",
        "arch": cfg["arch"],
        "connection": cfg["connection"],
        "num_classes": cfg["num_classes"],
        "timesteps": cfg["timesteps"],
        "dt": dt,
        "reset": "zero",
        "discretisation": "euler",
        "neuron": json.dumps(cfg["neuron"], sort_keys=True),
        "readout": "mean of the output current over time steps",
        "edges": json.dumps(low.edge_info),
    }
    if model.chip_grid:  # the compiler's scales the weights were trained on (lava-dl, chip grid)
        metadata["chip_scales"] = json.dumps(model.chip_grid["scales"], sort_keys=True)
    return nir.NIRGraph(nodes=low.nodes, edges=low.edges, metadata=metadata)


def _node_dict(node: nir.NIRNode) -> dict[str, Any]:
    """What ``node.to_dict()`` returns, without ``dataclasses.asdict``'s deep copy of arrays."""
    if isinstance(node, nir.NIRGraph):
        return {
            "type": "NIRGraph",
            "nodes": {k: _node_dict(n) for k, n in node.nodes.items()},
            "edges": node.edges,
            "metadata": node.metadata,
        }
    if isinstance(node, (nir.Input, nir.Output, nir.Flatten)):
        return node.to_dict()  # small, and serialised specially by NIR
    d = {
        f.name: getattr(node, f.name)
        for f in fields(node)
        if f.name not in ("input_type", "output_type")
    }
    d["type"] = type(node).__name__
    return d


def _is_one_value(v: np.ndarray) -> bool:
    """Whether a numeric array holds one value everywhere (a broadcast view always does)."""
    if v.dtype.kind not in "biuf" or v.size < 2:
        return False
    return all(st == 0 for st in v.strides) or bool(np.all(v == v.flat[0]))


def _write_group(group: h5py.Group, node: dict[str, Any]) -> None:
    """``node`` laid out as ``nir.write`` lays it out (``nir/serialization.py``), except how arrays
    are stored: one that holds one value everywhere (a layer's per-neuron constants) is an HDF5
    dataset of that fill value, which takes no storage and reads back whole with any HDF5
    reader; every other array is uncompressed (float weights do not shrink: LZF cost 4 s on
    DA-ResNet-152's 229 MB for nothing, docs/compile.md §1)."""
    for key, v in node.items():
        if key == "metadata":
            if v:
                _write_group(group.create_group(key), v)
        elif isinstance(v, str):
            group.create_dataset(key, data=v, dtype=h5py.string_dtype())
        elif isinstance(v, np.ndarray) and _is_one_value(v):
            group.create_dataset(
                key, shape=v.shape, dtype=v.dtype, fillvalue=v.flat[0], chunks=True
            )
        elif isinstance(v, dict):
            _write_group(group.create_group(str(key)), v)
        else:
            group.create_dataset(key, data=v)


def _write_graph(file: BinaryIO, graph: nir.NIRGraph) -> None:
    with h5py.File(file, "w") as f:
        f.create_dataset("version", data=nir.version, dtype=h5py.string_dtype())
        _write_group(f.create_group("node"), _node_dict(graph))


def write_nir(path: Path, graph: nir.NIRGraph) -> None:
    """Write ``graph`` as a NIR file that ``nir.read`` reads (:func:`_write_group` says how its
    arrays are stored), through ``outputs.write_hdf5`` (a full disk fails cleanly)."""
    write_hdf5(path, lambda file: _write_graph(file, graph))
