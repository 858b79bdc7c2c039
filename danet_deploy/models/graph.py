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

from ..ir.chip_format import LOIHI
from ..synapses import round_weights

# what a node's output carries
SPIKE = "spike"  # binary 0/1
COUNT = "count"  # non-negative integers (sum of spike trains, SEW ADD)
REAL = "real"  # real-valued currents / image pixels

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

    def add(
        self,
        name: str,
        op: str,
        inputs: tuple[str, ...] | list[str],
        connection: str,
        signal: str | None = None,
        **attrs: Any,
    ) -> str:
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


def _apply_per_step(
    module: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor
) -> torch.Tensor:
    """Run a stateless layer on all time steps at once by folding T into the batch."""
    return module(x.flatten(0, 1)).unflatten(0, x.shape[:2])


def _on_grid(x: torch.Tensor, units: float, weights: bool = False) -> torch.Tensor:
    """``x`` rounded to multiples of ``1/units`` (as Loihi's 8-bit synapses hold them when
    ``weights``, within +-LOIHI.weight_max: the range the compiler chose the scale for, so that
    the scale stays valid), with a straight-through gradient."""
    scaled = x.detach().double() * units
    top = LOIHI.weight_max
    ints = round_weights(scaled).clamp(-top, top) if weights else torch.round(scaled)
    return (ints / units).to(x.dtype) + (
        x - x.detach()
    )  # the value exactly on the grid, x's gradient


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
        self._modules_by_node = {
            n.name: self.get_submodule(n.name) for n in self.nodes if n.op in MODULE_OPS
        }
        self._users: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                self._users.setdefault(i, []).append(n)
        if "chip_grid" in self.config:
            self.set_chip_grid(self.config["chip_grid"])
        last_use = {}
        for idx, node in enumerate(self.nodes):
            for i in node.inputs:
                last_use[i] = idx
        # node values that can be freed after each step of the schedule
        self._free_after = [
            [i for i in n.inputs if last_use[i] == idx and i != output]
            for idx, n in enumerate(self.nodes)
        ]
        return self

    @property
    def timesteps(self) -> int:
        return int(self.config["timesteps"])

    def module_of(self, node: Node) -> nn.Module:
        return self._modules_by_node[node.name]

    def folded_bn(self, node: Node) -> Node | None:
        """The BatchNorm that is a conv node's only consumer (folded into it on export)."""
        users = self._users.get(node.name, [])
        return users[0] if node.op == "conv" and len(users) == 1 and users[0].op == "bn" else None

    def next_after_sums(self, node: Node) -> Node | None:
        """A node's only consumer, past sums that only it feeds (None if it has several)."""
        users = self._users.get(node.name, [])
        while len(users) == 1 and users[0].op == "add":
            users = self._users.get(users[0].name, [])
        return users[0] if len(users) == 1 else None

    def scaling_bn(self, node: Node) -> Node | None:
        """The BatchNorm that scales a node's output on its way to a neuron (a stream's BN
        scales every addend, so the compiler multiplies it into each one's weights)."""
        user = self.next_after_sums(node)
        return user if user is not None and user.op == "bn" else None

    def bn_affine(self, node: Node) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel ``(scale, shift)`` of an eval-mode BatchNorm node (what folding puts
        into a conv). On the chip's grid the shift is its neuron's bias, rounded as the
        compiler rounds it, and a BN that scales spikes directly (a 1x1 synapse group per
        channel on the chip) has its scale rounded as those weights are."""
        bn = self._modules_by_node[node.name]
        scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias.detach() - bn.running_mean * scale
        units = self.chip_grid.get("weights", {}).get(node.name)
        bias_units = self.chip_grid.get("biases", {}).get(node.name)
        return (
            scale if units is None else _on_grid(scale, units, weights=True),
            shift if bias_units is None else _on_grid(shift, bias_units),
        )

    @property
    def chip_grid(self) -> dict[str, Any]:
        """Where training put the network on the chip's grid (empty otherwise): ``weights``,
        integer weight per unit of each weight the program holds whole (a BN-folded conv, a
        stream BN's scale, the readout), ``biases``, integer bias per unit of each BN shift
        and of the readout's bias, and ``scales``, the compiler's ``K`` per population (the
        input's: its value scale); see ``chip_tuning``."""
        return self.config.get("chip_grid", {})

    def set_chip_grid(self, grid: dict[str, Any]) -> None:
        """From now on run on ``grid`` (recorded in the config, so checkpoints keep it).
        A slayer neuron then keeps its state on the population's grid (``K`` per unit)."""
        self.config["chip_grid"] = grid
        for node in self.nodes:
            if (
                node.op == "lif"
                and node.name in grid["scales"]
                and hasattr(self.module_of(node), "use_state_scale")
            ):
                self.module_of(node).use_state_scale(grid["scales"][node.name])

    def _on_current_grid(self, node: Node, x: torch.Tensor) -> torch.Tensor:
        """A neuron's input current on the chip's grid: a multiple of ``64/K``, the unit of
        Loihi's ``u`` for a population of scale ``K`` (straight-through gradient)."""
        k = self.chip_grid.get("scales", {}).get(node.name)
        return x if k is None else _on_grid(x, k / LOIHI.act_unit)

    def _chip_input(self, node: Node, x: torch.Tensor) -> torch.Tensor:
        """The input as the chip receives it: on the grid, graded values are rounded at the
        compiler's input scale (binary spikes pass as they are)."""
        scale = self.chip_grid.get("scales", {}).get(node.name)
        return x if scale is None or bool(((x == 0) | (x == 1)).all()) else _on_grid(x, scale)

    def layer_weight(self, node: Node) -> torch.Tensor:
        """The weight a conv or linear node applies. On the chip's grid it is the nearest
        weight whose (BN-folded) value Loihi's synapses hold exactly, with a straight-through
        gradient."""
        m = self._modules_by_node[node.name]
        scale = self.chip_grid.get("weights", {}).get(node.name)
        if scale is None:
            return m.weight
        bn = self.scaling_bn(node)
        gain = (
            self.bn_affine(bn)[0].view(-1, *[1] * (m.weight.dim() - 1))
            if bn is not None
            else torch.ones(())
        )
        # within +-LOIHI.weight_max, the range the compiler's scale was chosen for (so it stays valid)
        return _on_grid(m.weight * gain, scale, weights=True) / gain

    def layer_bias(self, node: Node) -> torch.Tensor | None:
        """A linear node's bias, on the chip's grid rounded as the readout's bias is."""
        bias = self._modules_by_node[node.name].bias
        scale = self.chip_grid.get("biases", {}).get(node.name)
        return bias if scale is None or bias is None else _on_grid(bias, scale)

    def _on_chip(self, node: Node, x: torch.Tensor) -> torch.Tensor:
        """A conv, BatchNorm or linear node with the values the chip's grid gives it."""
        if node.op == "bn":
            scale, shift = (t.view(-1, *[1] * (x.dim() - 3)) for t in self.bn_affine(node))
            return x * scale + shift
        m, w = self._modules_by_node[node.name], self.layer_weight(node)
        if node.op == "conv":
            return _apply_per_step(lambda t: m._conv_forward(t, w, m.bias), x)
        return _apply_per_step(lambda t: F.linear(t, w, self.layer_bias(node)), x)

    def output_shapes(self) -> dict[str, tuple[int, ...]]:
        """Each node's output shape for one sample and one time step, without running it."""
        shapes: dict[str, tuple[int, ...]] = {}
        for node in self.nodes:
            src = shapes[node.inputs[0]] if node.inputs else tuple(self.config["input_shape"])
            if node.op == "conv":
                m = self._modules_by_node[node.name]
                shapes[node.name] = (
                    m.out_channels,
                    *_pooled(src[1:], m.kernel_size, m.stride, m.padding),
                )
            elif node.op == "maxpool":
                a = node.attrs
                shapes[node.name] = (
                    src[0],
                    *_pooled(src[1:], (a["kernel"],) * 2, (a["stride"],) * 2, (a["padding"],) * 2),
                )
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
        raise ValueError(
            f"input of shape {tuple(x.shape)} does not match the model's "
            f"input shape {tuple(self.config['input_shape'])}"
        )

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
            return self._chip_input(node, x)
        if op == "lif":
            return self._modules_by_node[node.name](self._on_current_grid(node, args[0]))
        if self.chip_grid and op in ("conv", "bn", "linear"):  # BN frozen: its running statistics
            return self._on_chip(node, args[0])
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
            return _apply_per_step(
                lambda t: F.max_pool2d(t, a["kernel"], a["stride"], a["padding"]), args[0]
            )
        if op == "gap":
            return args[0].mean(dim=(-2, -1))
        raise AssertionError(f"unhandled op {op}")
