"""Residual blocks, one class per connection type (docs/danets.md).

Each block owns its layers (registered as ordinary submodules, so state-dict keys
read ``stages.1.0.conv1.weight``) and ``wire`` s them into a :class:`GraphBuilder`;
the forward equation in each docstring is what that wiring computes. ``SN`` is a
spiking LIF layer, ``D`` the projection used when the shape changes (stride 2 or a
new channel count), ``F`` the residual branch.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .graph import REAL, GraphBuilder
from .neurons import CUBA, LIF, make_neuron

ConvSpec = tuple[int, int, int, int]  # kernel, stride, in_channels, out_channels

_OP_OF = {nn.Conv2d: "conv", nn.BatchNorm2d: "bn", nn.Linear: "linear", LIF: "lif", CUBA: "lif"}


def conv(spec: ConvSpec) -> nn.Conv2d:
    """A bias-free 'same' convolution (BN supplies the bias)."""
    k, s, cin, cout = spec
    return nn.Conv2d(cin, cout, k, s, padding=k // 2, bias=False)


def branch_convs(kind: str, cin: int, cout: int, stride: int) -> list[ConvSpec]:
    """The convolutions of a ResNet basic block or bottleneck (stride on the 3x3, as torchvision v1.5)."""
    if kind == "basic":
        return [(3, stride, cin, cout), (3, 1, cout, cout)]
    if kind == "bottleneck":
        mid = cout // 4
        return [(1, 1, cin, mid), (3, stride, mid, mid), (1, 1, mid, cout)]
    if kind == "single":
        return [(3, stride, cin, cout)]
    raise ValueError(f"unknown branch kind {kind!r}")


class Block(nn.Module):
    """Common bookkeeping: layer registration and sequential wiring of named layers."""

    connection = ""

    def __init__(self, convs: list[ConvSpec], neuron: dict[str, Any]) -> None:
        super().__init__()
        self.n = len(convs)
        self.in_channels, self.out_channels = convs[0][2], convs[-1][3]
        self.stride = max(spec[1] for spec in convs)
        self.projects = self.stride != 1 or self.in_channels != self.out_channels
        self._neuron = neuron

    def lif(self) -> nn.Module:
        """The spiking layer of the model's framework (snnTorch LIF or slayer CUBA)."""
        return make_neuron(self._neuron)

    def add_conv_bn_lif(self, convs: list[ConvSpec]) -> None:
        """Layers ``conv{i}``, ``bn{i}``, ``sn{i}`` for every conv of the branch."""
        for i, spec in enumerate(convs, 1):
            setattr(self, f"conv{i}", conv(spec))
            setattr(self, f"bn{i}", nn.BatchNorm2d(spec[3]))
            setattr(self, f"sn{i}", self.lif())

    def chain(self, g: GraphBuilder, path: str, x: str, *layers: str) -> str:
        """Wire ``layers`` (attribute names of this block) one after another from ``x``."""
        for name in layers:
            op = _OP_OF[type(getattr(self, name))]
            x = g.add(f"{path}.{name}", op, [x], self.connection)
        return x

    def wire(self, g: GraphBuilder, path: str, x: str) -> str:
        raise NotImplementedError


class PlainBlock(Block):
    """plain: ``s' = SN(BN(conv(SN(BN(conv(s))))))``, no shortcut (a VGG-like chain)."""

    connection = "plain"

    def __init__(self, convs: list[ConvSpec], neuron: dict[str, Any]) -> None:
        super().__init__(convs, neuron)
        self.add_conv_bn_lif(convs)

    def wire(self, g: GraphBuilder, path: str, x: str) -> str:
        for i in range(1, self.n + 1):
            x = self.chain(g, path, x, f"conv{i}", f"bn{i}", f"sn{i}")
        return x


class AABlock(Block):
    """aa (activation after addition, Spiking ResNet / tdBN): ``s' = SN(F(s) + D(s))``.

    ``F(s) = BN(conv(SN(BN(conv(s)))))`` ends without a neuron; ``D(s) = BN(conv1x1(s))``
    (no neuron) or the identity. Two synaptic projections meet in one neuron.
    """

    connection = "aa"

    def __init__(self, convs: list[ConvSpec], neuron: dict[str, Any]) -> None:
        super().__init__(convs, neuron)
        self.add_conv_bn_lif(convs)
        if self.projects:
            self.down_conv = conv((1, self.stride, self.in_channels, self.out_channels))
            self.down_bn = nn.BatchNorm2d(self.out_channels)

    def wire(self, g: GraphBuilder, path: str, x: str) -> str:
        h = x
        for i in range(1, self.n):
            h = self.chain(g, path, h, f"conv{i}", f"bn{i}", f"sn{i}")
        z = self.chain(g, path, h, f"conv{self.n}", f"bn{self.n}")
        d = self.chain(g, path, x, "down_conv", "down_bn") if self.projects else x
        total = g.add(f"{path}.add", "add", [z, d], self.connection)
        return self.chain(g, path, total, f"sn{self.n}")


class SEWBlock(Block):
    """sew (spike-element-wise, SEW-ResNet): ``s' = g(SN(F(s)), D(s))``.

    ``F`` is a chain of conv-BN-SN layers, ``D(s) = SN(BN(conv1x1(s)))`` or the
    identity, and ``g`` is ADD ``a + d`` (integer counts 0, 1, 2, ...), AND ``a * d``
    or IAND ``(1 - a) * d`` (both binary, an exact gate neuron on hardware).
    """

    MODES = {"sew": "add", "sew-and": "and", "sew-iand": "iand"}

    def __init__(
        self, convs: list[ConvSpec], neuron: dict[str, Any], connection: str = "sew"
    ) -> None:
        super().__init__(convs, neuron)
        self.connection = connection
        self.mode = self.MODES[connection]
        self.add_conv_bn_lif(convs)
        if self.projects:
            self.down_conv = conv((1, self.stride, self.in_channels, self.out_channels))
            self.down_bn = nn.BatchNorm2d(self.out_channels)
            self.down_sn = self.lif()

    def wire(self, g: GraphBuilder, path: str, x: str) -> str:
        a = x
        for i in range(1, self.n + 1):
            a = self.chain(g, path, a, f"conv{i}", f"bn{i}", f"sn{i}")
        d = self.chain(g, path, x, "down_conv", "down_bn", "down_sn") if self.projects else x
        return g.add(f"{path}.{self.mode}", self.mode, [a, d], self.connection)


class MSBlock(Block):
    """ms (membrane shortcut, MS-ResNet): ``x' = D(x) + BN(conv(SN(BN(conv(SN(x))))))``.

    The stream ``x`` is real-valued and never thresholded; every branch conv sees
    spikes. ``D(x) = BN(conv1x1(x))`` acts on the real-valued stream (as MS-ResNet
    does): it is kept as a non-spiking op and counted as MACs.
    """

    connection = "ms"

    def __init__(self, convs: list[ConvSpec], neuron: dict[str, Any]) -> None:
        super().__init__(convs, neuron)
        for i, spec in enumerate(convs, 1):
            setattr(self, f"sn{i}", self.lif())
            setattr(self, f"conv{i}", conv(spec))
            setattr(self, f"bn{i}", nn.BatchNorm2d(spec[3]))
        if self.projects:
            self.down_conv = conv((1, self.stride, self.in_channels, self.out_channels))
            self.down_bn = nn.BatchNorm2d(self.out_channels)

    def wire(self, g: GraphBuilder, path: str, x: str) -> str:
        h = x
        for i in range(1, self.n + 1):
            h = self.chain(g, path, h, f"sn{i}", f"conv{i}", f"bn{i}")
        d = self.chain(g, path, x, "down_conv", "down_bn") if self.projects else x
        return g.add(f"{path}.add", "add", [h, d], self.connection)


class PABlock(Block):
    """pa (full pre-activation, "PA-B"): ``x' = D + conv(SN(BN(conv(SN(BN(x))))))``.

    With ``v = SN(BN(x))`` the pre-activated spikes, the projection is ``D = conv1x1(v)``
    (He et al.'s pre-activation convention, spike-driven) or the identity ``D = x``.
    The stream is real-valued; BN on it folds into each consumer's input scaling.
    """

    connection = "pa"

    def __init__(self, convs: list[ConvSpec], neuron: dict[str, Any]) -> None:
        super().__init__(convs, neuron)
        for i, spec in enumerate(convs, 1):
            setattr(self, f"bn{i}", nn.BatchNorm2d(spec[2]))
            setattr(self, f"sn{i}", self.lif())
            setattr(self, f"conv{i}", conv(spec))
        if self.projects:
            self.down_conv = conv((1, self.stride, self.in_channels, self.out_channels))

    def branch(self, g: GraphBuilder, path: str, x: str) -> tuple[str, str]:
        """Return ``(v, F(x))``: the pre-activated input spikes and the branch output."""
        v = self.chain(g, path, x, "bn1", "sn1")
        h = self.chain(g, path, v, "conv1")
        for i in range(2, self.n + 1):
            h = self.chain(g, path, h, f"bn{i}", f"sn{i}", f"conv{i}")
        return v, h

    def wire(self, g: GraphBuilder, path: str, x: str) -> str:
        v, h = self.branch(g, path, x)
        d = self.chain(g, path, v, "down_conv") if self.projects else x
        return g.add(f"{path}.add", "add", [h, d], self.connection)


class DABlock(PABlock):
    """da (densely additive, DANet): ``x_l = x_0 + sum_{i<l} F_i(SN(BN(x_i)))``.

    The block's input is the explicit sum of *all* earlier producers of its stage
    (the stage entry and every earlier branch output), not a running total: the
    dense fan-in is visible in the graph as one ``add`` with ``l + 1`` inputs. Within
    a stage this equals the pre-activation chain (the "trunk" form); a projecting
    block re-bases the scope on ``D = conv1x1(SN(BN(x)))``.
    """

    connection = "da"

    def wire_dense(self, g: GraphBuilder, path: str, producers: list[str]) -> list[str]:
        """Consume the scope's producers; return the producers seen by the next block."""
        x = (
            producers[0]
            if len(producers) == 1
            else g.add(f"{path}.sum", "add", producers, self.connection, REAL)
        )
        v, h = self.branch(g, path, x)
        if self.projects:
            return [self.chain(g, path, v, "down_conv"), h]
        return producers + [h]


class DenseAggregate(Block):
    """DenseNet-style additive aggregation: ``s = SN(BN(sum_j conv_j(s_j)))``.

    DenseNet's concatenation followed by a conv equals one conv per source summed,
    so every earlier layer of the scope feeds this neuron through its own synapses.
    """

    connection = "da"

    def __init__(
        self,
        source_channels: list[int],
        out_channels: int,
        kernel: int,
        stride: int,
        neuron: dict[str, Any],
    ) -> None:
        super().__init__([(kernel, stride, sum(source_channels), out_channels)], neuron)
        self.inputs = nn.ModuleList(
            nn.Conv2d(
                c,
                out_channels,
                kernel,
                stride,
                padding=0 if stride == kernel else kernel // 2,
                bias=False,
            )
            for c in source_channels
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.sn = self.lif()

    def wire_sources(self, g: GraphBuilder, path: str, sources: list[str]) -> str:
        currents = [
            g.add(f"{path}.inputs.{j}", "conv", [s], self.connection) for j, s in enumerate(sources)
        ]
        x = (
            currents[0]
            if len(currents) == 1
            else g.add(f"{path}.sum", "add", currents, self.connection)
        )
        return self.chain(g, path, x, "bn", "sn")


class DenseLayer(Block):
    """One DA-DenseNet layer: ``a = SN(BN(sum_j conv1x1_j(s_j)))``, ``s = SN(BN(conv3x3(a)))``."""

    connection = "da"

    def __init__(self, source_channels: list[int], growth: int, neuron: dict[str, Any]) -> None:
        super().__init__([(3, 1, sum(source_channels), growth)], neuron)
        self.aggregate = DenseAggregate(source_channels, 4 * growth, 1, 1, neuron)
        self.conv = conv((3, 1, 4 * growth, growth))
        self.bn = nn.BatchNorm2d(growth)
        self.sn = self.lif()

    def wire_sources(self, g: GraphBuilder, path: str, sources: list[str]) -> str:
        a = self.aggregate.wire_sources(g, f"{path}.aggregate", sources)
        return self.chain(g, path, a, "conv", "bn", "sn")


RESIDUAL_BLOCKS: dict[str, type[Block]] = {
    "plain": PlainBlock,
    "aa": AABlock,
    "sew": SEWBlock,
    "sew-and": SEWBlock,
    "sew-iand": SEWBlock,
    "ms": MSBlock,
    "pa": PABlock,
    "da": DABlock,
}


def make_block(connection: str, convs: list[ConvSpec], neuron: dict[str, Any]) -> Block:
    cls = RESIDUAL_BLOCKS[connection]
    if cls is SEWBlock:
        return SEWBlock(convs, neuron, connection)
    return cls(convs, neuron)
