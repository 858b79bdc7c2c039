"""An explicit dataflow graph of a spiking network, and the module that runs it.

Every model in the zoo is a list of :class:`Node` s: which layer feeds which, the
connection type of the block each node belongs to, and whether a node's output is
binary spikes, integer spike counts or real-valued currents. The PyTorch forward
pass *is* the execution of this list, so the exporter, compiler and accountant
read the same structure that training used, instead of guessing it from Python
control flow.

All tensors are multi-step: ``[T, N, ...]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

# what a node's output carries
SPIKE = "spike"   # binary 0/1
COUNT = "count"   # non-negative integers (sum of spike trains, SEW ADD)
REAL = "real"     # real-valued currents / image pixels

# ops whose node name is the dotted path of the nn.Module that computes them
MODULE_OPS = ("conv", "bn", "linear", "lif")
OPS = MODULE_OPS + ("input", "add", "and", "iand", "maxpool", "gap")


@dataclass
class Node:
    """One operation of the graph. ``inputs`` name earlier nodes; ``add`` sums them."""

    name: str
    op: str
    inputs: tuple[str, ...]
    connection: str
    signal: str
    attrs: dict[str, Any] = field(default_factory=dict)


class GraphBuilder:
    """Collects nodes in topological order while an architecture wires its blocks."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self._signal: dict[str, str] = {}

    def add(self, name: str, op: str, inputs: tuple[str, ...] | list[str], connection: str,
            signal: str | None = None, **attrs: Any) -> str:
        """Append a node and return its name. ``signal`` defaults to what the op produces."""
        if op not in OPS:
            raise ValueError(f"unknown op {op!r}")
        if name in self._signal:
            raise ValueError(f"duplicate node name {name!r}")
        inputs = tuple(inputs)
        for i in inputs:
            if i not in self._signal:
                raise ValueError(f"node {name!r} reads {i!r}, which is not defined yet")
        signal = signal or self._infer_signal(op, inputs)
        self.nodes.append(Node(name, op, inputs, connection, signal, dict(attrs)))
        self._signal[name] = signal
        return name

    def signal(self, name: str) -> str:
        return self._signal[name]

    def _infer_signal(self, op: str, inputs: tuple[str, ...]) -> str:
        if op in ("lif", "and", "iand"):
            return SPIKE
        if op == "maxpool":
            return self._signal[inputs[0]]
        if op == "add":
            signals = {self._signal[i] for i in inputs}
            return REAL if REAL in signals else COUNT
        return REAL


def _apply_per_step(module: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Run a stateless layer on all time steps at once by folding T into the batch."""
    return module(x.flatten(0, 1)).unflatten(0, x.shape[:2])


def _pooled(size: tuple[int, ...], kernel: tuple, stride: tuple, padding: tuple) -> tuple[int, ...]:
    """Spatial output size of a convolution or pooling window (dilation 1)."""
    return tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip(size, kernel, stride, padding))


class SpikingNet(nn.Module):
    """A spiking network defined by an explicit node list (see module docstring).

    ``forward(x)`` takes a static input ``[N, C, H, W]`` (direct encoding: repeated for
    ``timesteps`` steps) or a time-varying input ``[N, T, C, H, W]`` and returns the
    logits ``[N, classes]``: the output layer's current averaged over time steps.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = dict(config)
        self.nodes: list[Node] = []
        self.output = ""

    # -- construction -------------------------------------------------------------
    def finalize(self, graph: GraphBuilder, output: str) -> "SpikingNet":
        """Freeze the graph once every block has registered its layers."""
        self.nodes = list(graph.nodes)
        self.output = output
        self._modules_by_node = {n.name: self.get_submodule(n.name) for n in self.nodes
                                 if n.op in MODULE_OPS}
        last_use = {}
        for idx, node in enumerate(self.nodes):
            for i in node.inputs:
                last_use[i] = idx
        # node values that can be freed after each step of the schedule
        self._free_after = [[i for i in n.inputs if last_use[i] == idx and i != output]
                            for idx, n in enumerate(self.nodes)]
        return self

    @property
    def timesteps(self) -> int:
        return int(self.config["timesteps"])

    def module_of(self, node: Node) -> nn.Module:
        return self._modules_by_node[node.name]

    def output_shapes(self) -> dict[str, tuple[int, ...]]:
        """Each node's output shape for one sample and one time step, without running it."""
        shapes: dict[str, tuple[int, ...]] = {}
        for node in self.nodes:
            src = shapes[node.inputs[0]] if node.inputs else tuple(self.config["input_shape"])
            if node.op == "conv":
                m = self._modules_by_node[node.name]
                shapes[node.name] = (m.out_channels, *_pooled(src[1:], m.kernel_size, m.stride, m.padding))
            elif node.op == "maxpool":
                a = node.attrs
                shapes[node.name] = (src[0], *_pooled(src[1:], (a["kernel"],) * 2, (a["stride"],) * 2,
                                                      (a["padding"],) * 2))
            elif node.op == "gap":
                shapes[node.name] = src[:1]
            elif node.op == "linear":
                shapes[node.name] = (self._modules_by_node[node.name].out_features,)
            else:
                shapes[node.name] = src
        return shapes

    # -- execution -------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Static ``[N, *in]`` -> repeated ``[T, N, *in]``; ``[N, T, *in]`` -> ``[T, N, *in]``."""
        in_dims = len(self.config["input_shape"])
        if x.dim() == in_dims + 1:
            return x.unsqueeze(0).expand(self.timesteps, *x.shape)
        if x.dim() == in_dims + 2:
            return x.transpose(0, 1)
        raise ValueError(f"input of shape {tuple(x.shape)} does not match the model's "
                         f"input shape {tuple(self.config['input_shape'])}")

    def run(self, x: torch.Tensor, record: bool = False) -> dict[str, torch.Tensor]:
        """Execute the graph on an encoded ``[T, N, ...]`` input; return node values.

        With ``record=False`` only the output is kept (intermediates are freed as soon
        as their last consumer has run); with ``record=True`` every node's value is.
        """
        values: dict[str, torch.Tensor] = {}
        for node, free in zip(self.nodes, self._free_after):
            values[node.name] = self._eval(node, x, values)
            if not record:
                for name in free:
                    del values[name]
        return values

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(self.encode(x))[self.output].mean(0)

    def _eval(self, node: Node, x: torch.Tensor, values: dict[str, torch.Tensor]) -> torch.Tensor:
        args = [values[i] for i in node.inputs]
        op = node.op
        if op == "input":
            return x
        if op == "lif":
            return self._modules_by_node[node.name](args[0])
        if op in MODULE_OPS:
            return _apply_per_step(self._modules_by_node[node.name], args[0])
        if op == "add":
            out = args[0]
            for a in args[1:]:
                out = out + a
            return out
        if op == "and":
            return args[0] * args[1]
        if op == "iand":
            return (1 - args[0]) * args[1]
        if op == "maxpool":
            a = node.attrs
            return _apply_per_step(lambda t: F.max_pool2d(t, a["kernel"], a["stride"], a["padding"]),
                                   args[0])
        if op == "gap":
            return args[0].mean(dim=(-2, -1))
        raise AssertionError(f"unhandled op {op}")
