"""Read a ``.nir`` file from any framework into a flat, validated, ordered graph.

Nested ``NIRGraph`` subgraphs are flattened (their Input/Output nodes become
pass-throughs), node types and parameters are checked, the nodes are sorted so
every node comes after its sources, and every node's input and output shape is
inferred. A cycle is a recurrent connection: the edge that closes it (found by a
depth-first search from the inputs) carries its source's output of the previous
time step, and every cycle must pass through a neuron. Problems are reported as
one-line errors naming the node.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import h5py
import nir
import numpy as np
from nir.serialization import hdf2dict

from danet_deploy.errors import UserError
from danet_deploy.problems import Problem, Problems, raising
from danet_deploy.ir.resets import Firing, convention_firing
from danet_deploy.ir.sigma_delta import SigmaDelta
from danet_deploy.ir.graph import (
    DEFAULT_DT,
    DEFAULT_RESET,
    DISCRETISATIONS,
    NEURON_TYPES,
    RESETS,
    SPIKING,
    SUPPORTED,
    TIMED,
    FlatGraph,
    cycle_members,
    time_step,
    time_steps,
)


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


def _flatten(
    graph: nir.NIRGraph, prefix: str = ""
) -> tuple[dict[str, nir.NIRNode], list[tuple[str, str]]]:
    nodes: dict[str, nir.NIRNode] = {}
    edges: list[tuple[str, str]] = []
    ports: dict[str, tuple[list[str], list[str]]] = {}
    for name, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            inner_nodes, inner_edges = _flatten(node, f"{prefix}{name}.")
            nodes.update(inner_nodes)
            edges.extend(inner_edges)
            ports[name] = (
                [f"{prefix}{name}.{k}" for k, v in node.nodes.items() if isinstance(v, nir.Input)],
                [f"{prefix}{name}.{k}" for k, v in node.nodes.items() if isinstance(v, nir.Output)],
            )
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


def node_problems(name: str, node: nir.NIRNode) -> list[Problem]:
    """What makes ``node`` unreadable: a type the reader does not know, NaN or Inf parameters."""
    kind = type(node).__name__
    if type(node) not in SUPPORTED:
        supported = ", ".join(sorted(set(SUPPORTED.values())))
        return [
            Problem(name, f"unsupported NIR type {kind}", f"(supported: {supported})", joint=" ")
        ]
    return [
        Problem(name, f"parameter {key} contains NaN or Inf", kind=kind, value=key)
        for key, value in vars(node).items()
        if key not in ("input_type", "output_type", "metadata")
        and not isinstance(value, str)
        and np.asarray(value).dtype.kind in "fc"
        and not np.all(np.isfinite(np.asarray(value)))
    ]


def _back_edges(
    nodes: dict[str, nir.NIRNode], sources: dict[str, list[str]]
) -> set[tuple[str, str]]:
    """The edges that close cycles (a depth-first search from the inputs, in file order):
    each carries its source's output of the previous time step (a recurrent connection)."""
    users: dict[str, list[str]] = {n: [] for n in nodes}
    for n, srcs in sources.items():
        for s in dict.fromkeys(srcs):
            users[s].append(n)
    state: dict[str, int] = {}
    back: set[tuple[str, str]] = set()
    roots = [n for n in nodes if not sources[n]] + list(nodes)
    for root in roots:
        if root in state:
            continue
        stack = [(root, iter(users[root]))]
        state[root] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                back.add((node, nxt))
            elif nxt not in state:
                state[nxt] = 1
                stack.append((nxt, iter(users[nxt])))
    return back


def _topological(
    nodes: dict[str, nir.NIRNode], sources: dict[str, list[str]], back: set[tuple[str, str]]
) -> list[str]:
    """Nodes with every source before its consumers, back edges aside."""
    forward = {n: [s for s in srcs if (s, n) not in back] for n, srcs in sources.items()}
    pending = {n: len(set(forward[n])) for n in nodes}
    users: dict[str, list[str]] = {n: [] for n in nodes}
    for n, srcs in forward.items():
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
    return order


def _check_cycles(
    nodes: dict[str, nir.NIRNode], sources: dict[str, list[str]], back: set[tuple[str, str]]
) -> None:
    """A cycle needs a neuron on it: without state, the graph would be an equation, not a network."""
    for members in cycle_members(nodes, sources, back):
        if not any(isinstance(nodes[m], NEURON_TYPES) for m in members):
            names = ", ".join(repr(m) for m in sorted(members))
            raise UserError(
                f"the cycle through {names} has no neuron on it (every recurrent loop needs "
                f"a LIF, CubaLIF, IF, LI, Integrator or Threshold node to carry its state)"
            )


def _window(
    size: tuple[int, ...], kernel: Any, stride: Any, padding: Any, dilation: Any = 1
) -> tuple[int, ...]:
    n = len(size)
    k, s, d = (np.broadcast_to(np.asarray(v), (n,)) for v in (kernel, stride, dilation))
    if isinstance(padding, str):
        if padding == "same":
            return tuple(int(-(-a // int(b))) for a, b in zip(size, s))
        padding = 0
    p = np.broadcast_to(np.asarray(padding), (n,))
    return tuple(
        int((a + 2 * pi - di * (ki - 1) - 1) // si + 1)
        for a, ki, si, pi, di in zip(size, k, s, p, d)
    )


# the parameter whose shape is a node's input and output shape
_SHAPE_PARAMETER = {
    nir.Scale: "scale",
    nir.Threshold: "threshold",
    nir.LIF: "v_threshold",
    nir.CubaLIF: "v_threshold",
    nir.IF: "v_threshold",
    nir.LI: "tau",
    nir.I: "r",
    nir.Delay: "delay",
    SigmaDelta: "threshold",
}


def _shape_in_out(
    name: str, node: nir.NIRNode, inp: tuple[int, ...]
) -> tuple[tuple[int, ...] | None, tuple[int, ...]]:
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
        return None, (*inp[:start], int(np.prod(inp[start : end + 1])), *inp[end + 1 :])
    shape_param = _SHAPE_PARAMETER[type(node)]
    shape = np.asarray(getattr(node, shape_param)).shape
    if not shape:  # one value for every neuron (sinabs writes a LIF's tau so): the input's shape
        return None, inp
    return shape, shape


_SAMPLE_DIMS = {
    nir.Affine: 1,
    nir.Linear: 1,
    nir.Conv1d: 2,
    nir.Conv2d: 3,
    nir.SumPool2d: 3,
    nir.AvgPool2d: 3,
}


def _sample_dims(node: nir.NIRNode) -> int | None:
    """How many axes one sample has at ``node``'s input (None: any)."""
    if type(node) in _SAMPLE_DIMS:
        return _SAMPLE_DIMS[type(node)]
    param = _SHAPE_PARAMETER.get(type(node))
    return (np.ndim(getattr(node, param)) or None) if param else None


def _drop_leading_axes(name: str, shape: tuple[int, ...], consumer: nir.NIRNode) -> tuple[int, ...]:
    """An Input shape with a time, batch or singleton axis in front (sinabs, norse and rockpool
    write these) as the shape of one sample of ``consumer``'s input; a note on stderr says so."""
    dims = _sample_dims(consumer)
    if dims is None or len(shape) <= dims:
        return shape
    sample = shape[len(shape) - dims :]
    print(
        f"danet-deploy: input {name!r}: shape {shape} read as {sample} (the leading axes "
        f"{shape[: len(shape) - dims]} are time, batch or a singleton, not part of a sample)",
        file=sys.stderr,
    )
    return sample


def _infer_shapes(
    order: list[str],
    nodes: dict[str, nir.NIRNode],
    sources: dict[str, list[str]],
    back: set[tuple[str, str]],
    problems: Problems,
) -> dict[str, tuple[int, ...]]:
    """Each node's output shape; an input of the wrong shape is reported (every one)."""
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
            shapes[name] = (
                _drop_leading_axes(name, shape, nodes[first_user]) if first_user else shape
            )
            continue
        forward = [s for s in sources[name] if (s, name) not in back]
        if not forward:
            raise UserError(
                f"node {name!r} ({type(node).__name__}) is fed only by a recurrent loop, "
                f"not from an Input"
            )
        expected, out = _shape_in_out(name, node, shapes[forward[0]])
        shapes[name] = tuple(int(v) for v in out)
    for name in order:  # every input, recurrent ones included, has the shape the node takes
        if not sources[name]:
            continue
        forward = [s for s in sources[name] if (s, name) not in back]
        first = shapes[forward[0]]
        expected, _ = _shape_in_out(name, nodes[name], first)
        for src, shape in {s: shapes[s] for s in sources[name]}.items():
            want = expected or first
            if int(np.prod(shape)) != int(np.prod(want)) or (
                len(shape) == len(want) and shape != want
            ):
                problems.report(
                    [
                        Problem(
                            name,
                            f"input from {src!r} has shape {shape}",
                            f"expected {tuple(want)}",
                            value=f"{shape} != {tuple(want)}",
                            kind=type(nodes[name]).__name__,
                            joint=", ",
                        )
                    ]
                )
    return shapes


def _reset_modes(
    nodes: dict[str, nir.NIRNode],
    graph_metadata: dict[str, Any],
    cyclic: set[str],
    reset: str | None,
) -> dict[str, Firing]:
    """Each spiking node's firing and reset rule (``ir/resets.py``), from its convention.

    ``reset`` (the command line) overrides a node's ``reset`` metadata, which overrides the
    graph's; where none states it, stderr says which convention is assumed.
    """
    modes: dict[str, Firing] = {}
    assumed = []
    for name, node in nodes.items():
        if not isinstance(node, SPIKING):
            continue
        convention = reset or node.metadata.get("reset") or graph_metadata.get("reset")
        if convention is None:
            assumed.append(name)
            convention = DEFAULT_RESET
        if convention not in RESETS:
            raise UserError(
                f"node {name!r}: unknown reset convention {convention!r} "
                f"(known: {', '.join(RESETS)})"
            )
        late_zero = isinstance(node, nir.CubaLIF) or name in cyclic
        modes[name] = convention_firing(convention, late_zero)
    if assumed:
        print(
            f"danet-deploy: the graph does not state how its neurons reset; assuming {DEFAULT_RESET!r} "
            f"(Loihi's) for {len(assumed)} node(s); pass --reset snntorch-subtract for snnTorch's default, "
            f"snntorch-zero for its reset_mechanism='zero', sinabs for sinabs' and rockpool's, spikingjelly or "
            f"spikingjelly-soft for SpikingJelly's",
            file=sys.stderr,
        )
    return modes


def from_nir(
    graph: nir.NIRGraph,
    dt: float | None = None,
    reset: str | None = None,
    discretisation: str | None = None,
    problems: Problems | None = None,
) -> FlatGraph:
    """Flatten, check, order and shape ``graph``; ``dt`` overrides the file's metadata,
    ``reset`` (a key of :data:`RESETS`) every node's reset convention, ``discretisation``
    (a key of :data:`DISCRETISATIONS`) the graph's. ``problems``: where unsupported nodes and
    wrong shapes are reported, every one (else the first is raised)."""
    problems = raising(problems)
    before = len(problems.found)
    nodes, edges = _flatten(graph)
    if not any(isinstance(n, nir.Input) for n in nodes.values()):
        raise UserError(
            "the graph has no Input node" + ("" if nodes else " (it has no nodes at all)")
        )
    for name, node in nodes.items():
        problems.report(node_problems(name, node))
        node.metadata = _plain(dict(node.metadata or {}))
    sources: dict[str, list[str]] = {n: [] for n in nodes}
    for src, dst in edges:
        sources[dst].append(src)
    back = _back_edges(nodes, sources)
    _check_cycles(nodes, sources, back)
    problems.stop_if_found(before, "a graph with unsupported nodes cannot be shaped or lowered")
    order = _topological(nodes, sources, back)
    shapes = _infer_shapes(order, nodes, sources, back, problems)
    problems.stop_if_found(before, "a graph whose shapes disagree cannot be lowered")
    metadata = _plain(dict(graph.metadata or {}))
    step = time_step(
        dt if dt is not None else metadata.get("dt", DEFAULT_DT),
        "--dt" if dt is not None else "metadata dt",
    )
    if metadata.get("timesteps") is not None:
        metadata["timesteps"] = time_steps(metadata["timesteps"], "metadata timesteps")
    if dt is None and "dt" not in metadata and any(isinstance(n, TIMED) for n in nodes.values()):
        print(
            f"danet-deploy: the graph does not state its time step; assuming dt = {DEFAULT_DT:g} s "
            f"(pass --dt, e.g. --dt 1 for a graph whose constants count time steps)",
            file=sys.stderr,
        )
    users = {s for s, _ in edges}
    cyclic = set().union(*cycle_members(nodes, sources, back))
    resets = _reset_modes({n: nodes[n] for n in order}, metadata, cyclic, reset)
    scheme = discretisation or metadata.get("discretisation")
    if scheme is None:
        scheme = "euler"
        if any(isinstance(n, (nir.LIF, nir.CubaLIF, nir.LI)) for n in nodes.values()):
            print(
                "danet-deploy: the graph does not state how its time constants become per-step decays; "
                "assuming 'euler' (snnTorch's exporter, the NIR paper); pass --discretisation exp for sinabs' "
                "LIF, norse or rockpool for theirs",
                file=sys.stderr,
            )
    if scheme not in DISCRETISATIONS:
        raise UserError(f"unknown discretisation {scheme!r} (known: {', '.join(DISCRETISATIONS)})")
    outputs = [n for n in order if isinstance(nodes[n], nir.Output) and n not in users]
    if not outputs:
        raise UserError(
            "the graph has no Output node: nothing reads its result (add one after the last layer)"
        )
    return FlatGraph(
        nodes={n: nodes[n] for n in order},
        sources=sources,
        shapes=shapes,
        inputs=[n for n in order if isinstance(nodes[n], nir.Input) and not sources[n]],
        outputs=outputs,
        dt=step,
        metadata=metadata,
        recurrent=back,
        resets=resets,
        discretisation=scheme,
    )


OWN_NODES = {"SigmaDelta": SigmaDelta}  # danet-deploy's node types in graph.nir (NIR has none)


def _own_node(name: str, fields: dict[str, Any]) -> nir.NIRNode:
    """One of danet-deploy's own nodes, checked by the node itself (its fields as it states them)."""
    kind = fields["type"]
    try:
        return OWN_NODES[kind].from_dict(fields)
    except (TypeError, ValueError) as e:
        raise UserError(f"node {name!r} ({kind}): {str(e).splitlines()[0][:200]}") from None


def read_nir_graph(path: Path) -> nir.NIRGraph:
    """``nir.read`` (without its type check), which also reads the node types of :data:`OWN_NODES`
    that danet-deploy writes into a ``graph.nir`` where NIR has no primitive (ir/sigma_delta.py)."""
    with h5py.File(path, "r") as f:
        data = hdf2dict(f["node"])
    nodes = data.get("nodes", {})
    own = {
        k: _own_node(k, v)
        for k, v in nodes.items()
        if isinstance(v, dict) and v.get("type") in OWN_NODES
    }
    graph = nir.dict2NIRNode(
        {**data, "nodes": {k: v for k, v in nodes.items() if k not in own}, "type_check": False}
    )
    if own:
        graph.nodes = {k: own.get(k) or graph.nodes[k] for k in nodes}
    return graph


def read_nir(
    path: Path,
    dt: float | None = None,
    reset: str | None = None,
    discretisation: str | None = None,
    problems: Problems | None = None,
) -> FlatGraph:
    """Read and validate a ``.nir`` file (one-line errors name the file and node; ``problems``:
    :func:`from_nir`'s)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"NIR file not found: {path}")
    try:
        graph = read_nir_graph(path)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    except Exception as e:  # noqa: BLE001 - h5py/nir raise many kinds; all mean "unreadable"
        raise UserError(
            f"{path}: not a readable NIR file ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:160] if str(e) else ''})"
        ) from None
    try:
        return from_nir(graph, dt, reset, discretisation, problems)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
