"""Read a ``.nir`` file from any framework into a flat, validated, ordered graph.

Nested ``NIRGraph`` subgraphs are flattened (their Input/Output nodes become
pass-throughs), node types and parameters are checked, the nodes are sorted so
every node comes after its sources, and every node's input and output shape is
inferred. Problems are reported as one-line errors naming the node.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nir
import numpy as np

from danet_deploy.errors import UserError

DEFAULT_DT = 1e-4  # seconds, when neither the file nor the user gives one
TIMED = (nir.LIF, nir.CubaLIF, nir.IF, nir.LI, nir.I, nir.Delay)  # nodes whose meaning depends on dt

SUPPORTED = {
    nir.Input: "Input", nir.Output: "Output", nir.Affine: "Affine", nir.Linear: "Linear",
    nir.Conv1d: "Conv1d", nir.Conv2d: "Conv2d", nir.Flatten: "Flatten", nir.SumPool2d: "SumPool2d",
    nir.AvgPool2d: "AvgPool2d", nir.Scale: "Scale", nir.Threshold: "Threshold", nir.LIF: "LIF",
    nir.CubaLIF: "CubaLIF", nir.IF: "IF", nir.LI: "LI", nir.I: "Integrator", nir.Delay: "Delay",
}


@dataclass
class FlatGraph:
    """A NIR graph without subgraphs, in topological order, with shapes."""

    nodes: dict[str, nir.NIRNode]                 # ordered: sources before consumers
    sources: dict[str, list[str]]                 # node -> nodes whose outputs sum into it
    shapes: dict[str, tuple[int, ...]]            # node -> output shape (no batch / time)
    inputs: list[str]                             # top-level Input nodes
    outputs: list[str]                            # top-level Output nodes
    dt: float
    metadata: dict[str, Any] = field(default_factory=dict)

    def kind(self, name: str) -> str:
        return SUPPORTED[type(self.nodes[name])]

    @property
    def timesteps(self) -> int | None:
        t = self.metadata.get("timesteps")
        return int(t) if t is not None else None


def _plain(value: Any) -> Any:
    """h5py metadata comes back as bytes and numpy scalars; make it plain Python."""
    if isinstance(value, bytes):
        value = value.decode("utf8")
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _flatten(graph: nir.NIRGraph, prefix: str = "") -> tuple[dict[str, nir.NIRNode], list[tuple[str, str]]]:
    nodes: dict[str, nir.NIRNode] = {}
    edges: list[tuple[str, str]] = []
    ports: dict[str, tuple[list[str], list[str]]] = {}
    for name, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            inner_nodes, inner_edges = _flatten(node, f"{prefix}{name}.")
            nodes.update(inner_nodes)
            edges.extend(inner_edges)
            ports[name] = ([f"{prefix}{name}.{k}" for k, v in node.nodes.items() if isinstance(v, nir.Input)],
                           [f"{prefix}{name}.{k}" for k, v in node.nodes.items() if isinstance(v, nir.Output)])
        else:
            nodes[f"{prefix}{name}"] = node

    def resolve(endpoint: str, as_destination: bool) -> list[str]:
        if endpoint in ports:
            return ports[endpoint][0 if as_destination else 1]
        if f"{prefix}{endpoint}" in nodes:
            return [f"{prefix}{endpoint}"]
        raise UserError(f"edge endpoint {prefix}{endpoint!r} names no node of the graph")

    for src, dst in graph.edges:
        edges.extend((s, d) for s in resolve(src, False) for d in resolve(dst, True))
    return nodes, edges


def _check_node(name: str, node: nir.NIRNode) -> None:
    if type(node) not in SUPPORTED:
        raise UserError(f"node {name!r}: unsupported NIR type {type(node).__name__} "
                        f"(supported: {', '.join(sorted(set(SUPPORTED.values())))})")
    for key, value in vars(node).items():
        if key in ("input_type", "output_type", "metadata"):
            continue
        arr = np.asarray(value) if not isinstance(value, str) else None
        if arr is not None and arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
            raise UserError(f"node {name!r} ({type(node).__name__}): parameter {key} contains NaN or Inf")


def _topological(nodes: dict[str, nir.NIRNode], sources: dict[str, list[str]]) -> list[str]:
    pending = {n: len(set(sources[n])) for n in nodes}
    users: dict[str, list[str]] = {n: [] for n in nodes}
    for n, srcs in sources.items():
        for s in set(srcs):
            users[s].append(n)
    ready = [n for n in nodes if pending[n] == 0]
    order = []
    while ready:
        n = ready.pop(0)
        order.append(n)
        for u in users[n]:
            pending[u] -= 1
            if pending[u] == 0:
                ready.append(u)
    if len(order) < len(nodes):
        stuck = [n for n in nodes if pending[n] > 0]
        raise UserError(f"the graph has a cycle through {', '.join(repr(n) for n in stuck[:4])} "
                        f"(recurrent NIR graphs are not supported)")
    return order


def _window(size: tuple[int, ...], kernel: Any, stride: Any, padding: Any, dilation: Any = 1) -> tuple[int, ...]:
    n = len(size)
    k, s, d = (np.broadcast_to(np.asarray(v), (n,)) for v in (kernel, stride, dilation))
    if isinstance(padding, str):
        if padding == "same":
            return tuple(int(-(-a // int(b))) for a, b in zip(size, s))
        padding = 0
    p = np.broadcast_to(np.asarray(padding), (n,))
    return tuple(int((a + 2 * pi - di * (ki - 1) - 1) // si + 1) for a, ki, si, pi, di in zip(size, k, s, p, d))


def _shape_in_out(name: str, node: nir.NIRNode, inp: tuple[int, ...]) -> tuple[tuple[int, ...] | None, tuple[int, ...]]:
    """(expected input shape or None for 'any', output shape) of a node fed ``inp``."""
    if isinstance(node, (nir.Input, nir.Output)):
        return None, inp
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = np.asarray(node.weight)
        return (w.shape[-1],), (w.shape[-2],)
    if isinstance(node, (nir.Conv1d, nir.Conv2d)):
        w = np.asarray(node.weight)
        spatial = _window(inp[1:], w.shape[2:], node.stride, node.padding, node.dilation)
        return (w.shape[1] * int(node.groups), *inp[1:]), (w.shape[0], *spatial)
    if isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
        return None, (inp[0], *_window(inp[1:], node.kernel_size, node.stride, node.padding))
    if isinstance(node, nir.Flatten):
        start, end = node.start_dim % len(inp), node.end_dim % len(inp)
        return None, (*inp[:start], int(np.prod(inp[start:end + 1])), *inp[end + 1:])
    shape_param = {nir.Scale: "scale", nir.Threshold: "threshold", nir.LIF: "v_threshold",
                   nir.CubaLIF: "v_threshold", nir.IF: "v_threshold", nir.LI: "tau", nir.I: "r",
                   nir.Delay: "delay"}[type(node)]
    shape = np.asarray(getattr(node, shape_param)).shape
    return shape, shape


_SAMPLE_DIMS = {nir.Affine: 1, nir.Linear: 1, nir.Conv1d: 2, nir.Conv2d: 3, nir.SumPool2d: 3, nir.AvgPool2d: 3}


def _sample_dims(node: nir.NIRNode) -> int | None:
    """How many axes one sample has at ``node``'s input (None: any)."""
    if type(node) in _SAMPLE_DIMS:
        return _SAMPLE_DIMS[type(node)]
    param = {nir.Scale: "scale", nir.Threshold: "threshold", nir.LIF: "v_threshold", nir.CubaLIF: "v_threshold",
             nir.IF: "v_threshold", nir.LI: "tau", nir.I: "r", nir.Delay: "delay"}.get(type(node))
    return np.ndim(getattr(node, param)) if param else None


def _drop_leading_axes(name: str, shape: tuple[int, ...], consumer: nir.NIRNode) -> tuple[int, ...]:
    """An Input shape with a time, batch or singleton axis in front (sinabs, norse and rockpool
    write these) as the shape of one sample of ``consumer``'s input; a note on stderr says so."""
    dims = _sample_dims(consumer)
    if dims is None or len(shape) <= dims:
        return shape
    sample = shape[len(shape) - dims:]
    print(f"danet-deploy: input {name!r}: shape {shape} read as {sample} (the leading axes "
          f"{shape[:len(shape) - dims]} are time, batch or a singleton, not part of a sample)", file=sys.stderr)
    return sample


def _infer_shapes(order: list[str], nodes: dict[str, nir.NIRNode],
                  sources: dict[str, list[str]]) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    users: dict[str, list[str]] = {}
    for n, srcs in sources.items():
        for src in srcs:
            users.setdefault(src, []).append(n)
    for name in order:
        node = nodes[name]
        if not sources[name]:
            if not isinstance(node, nir.Input):
                raise UserError(f"node {name!r} ({type(node).__name__}) has no input")
            shape = tuple(int(v) for v in np.asarray(node.input_type["input"]).ravel())
            first_user = users.get(name, [None])[0]
            shapes[name] = _drop_leading_axes(name, shape, nodes[first_user]) if first_user else shape
            continue
        incoming = {s: shapes[s] for s in sources[name]}
        first = next(iter(incoming.values()))
        expected, out = _shape_in_out(name, node, first)
        for src, shape in incoming.items():
            want = expected or first
            if int(np.prod(shape)) != int(np.prod(want)) or (len(shape) == len(want) and shape != want):
                raise UserError(f"node {name!r} ({type(node).__name__}): input from {src!r} has shape "
                                f"{shape}, expected {tuple(want)}")
        shapes[name] = tuple(int(v) for v in out)
    return shapes


def from_nir(graph: nir.NIRGraph, dt: float | None = None) -> FlatGraph:
    """Flatten, check, order and shape ``graph``; ``dt`` overrides the file's metadata."""
    nodes, edges = _flatten(graph)
    for name, node in nodes.items():
        _check_node(name, node)
        node.metadata = _plain(dict(node.metadata or {}))
    sources: dict[str, list[str]] = {n: [] for n in nodes}
    for src, dst in edges:
        sources[dst].append(src)
    order = _topological(nodes, sources)
    shapes = _infer_shapes(order, nodes, sources)
    metadata = _plain(dict(graph.metadata or {}))
    step = dt if dt is not None else float(metadata.get("dt", DEFAULT_DT))
    if dt is None and "dt" not in metadata and any(isinstance(n, TIMED) for n in nodes.values()):
        print(f"danet-deploy: the graph does not state its time step; assuming dt = {DEFAULT_DT:g} s "
              f"(pass --dt, e.g. --dt 1 for a graph whose constants count time steps)", file=sys.stderr)
    if not step > 0:
        raise UserError(f"time step dt must be positive, got {step}")
    users = {s for s, _ in edges}
    return FlatGraph(nodes={n: nodes[n] for n in order}, sources=sources, shapes=shapes,
                     inputs=[n for n in order if isinstance(nodes[n], nir.Input) and not sources[n]],
                     outputs=[n for n in order if isinstance(nodes[n], nir.Output) and n not in users],
                     dt=step, metadata=metadata)


def read_nir(path: Path, dt: float | None = None) -> FlatGraph:
    """Read and validate a ``.nir`` file (one-line errors name the file and node)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"NIR file not found: {path}")
    try:
        graph = nir.read(path, type_check=False)
    except Exception as e:  # noqa: BLE001 - h5py/nir raise many kinds; all mean "unreadable"
        raise UserError(f"{path}: not a readable NIR file ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None
    try:
        return from_nir(graph, dt)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None

