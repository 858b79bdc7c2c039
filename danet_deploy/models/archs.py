"""Network topologies: ResNets (ImageNet, CIFAR, 8x8 digits), DA-VGG and DA-DenseNet.

Every builder returns a :class:`SpikingNet` whose node list is the whole network.
Stems end in a spiking layer, so only the stem conv sees real-valued input (MACs);
the head averages the last spikes over space and reads them out with a linear
layer whose current, averaged over time steps, gives the logits.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .blocks import Block, DABlock, DenseAggregate, DenseLayer, branch_convs, conv, make_block
from .graph import REAL, GraphBuilder, SpikingNet

STEM, HEAD = "stem", "head"


class Stem(Block):
    """``s_0 = SN(BN(conv(image)))`` (+ spike max-pooling = OR, for ImageNet shapes)."""

    connection = STEM

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        stride: int,
        pool: bool,
        neuron: dict[str, Any],
    ) -> None:
        super().__init__([(kernel, stride, in_channels, out_channels)], neuron)
        self.conv = conv((kernel, stride, in_channels, out_channels))
        self.bn = nn.BatchNorm2d(out_channels)
        self.sn = self.lif()
        self.pool = pool

    def wire(self, g: GraphBuilder, path: str, x: str) -> str:
        s = self.chain(g, path, x, "conv", "bn", "sn")
        if self.pool:
            s = g.add(f"{path}.pool", "maxpool", [s], STEM, kernel=3, stride=2, padding=1)
        return s


class Head(Block):
    """Readout: ``logits = mean_t fc(gap(s[t]))``.

    Real-valued streams (ms, pa, da) are turned into spikes first: ``SN(x)`` for ms
    (MS-ResNet), ``SN(BN(x))`` for pa/da (the final BN-activation of pre-activation
    ResNets), so the readout is spike-driven for every connection type.
    """

    connection = HEAD

    def __init__(
        self, channels: int, num_classes: int, stream: str, neuron: dict[str, Any]
    ) -> None:
        super().__init__([(1, 1, channels, num_classes)], neuron)
        self.layers = {"ms": ("sn",), "pa": ("bn", "sn"), "da": ("bn", "sn")}.get(stream, ())
        if "bn" in self.layers:
            self.bn = nn.BatchNorm2d(channels)
        if "sn" in self.layers:
            self.sn = self.lif()
        self.fc = nn.Linear(channels, num_classes)

    def wire(self, g: GraphBuilder, path: str, x: str) -> str:
        s = self.chain(g, path, x, *self.layers)
        pooled = g.add(f"{path}.gap", "gap", [s], HEAD)
        return self.chain(g, path, pooled, "fc")


def _new_net(config: dict[str, Any]) -> tuple[SpikingNet, GraphBuilder, str]:
    net = SpikingNet(config)
    g = GraphBuilder()
    return net, g, g.add("input", "input", (), STEM, REAL)


def _stem_for(family: str, config: dict[str, Any], neuron: dict[str, Any]) -> Stem:
    """ImageNet: 7x7 stride-2 conv and max-pool. Small inputs: one 3x3 conv; with the config's
    ``stem: downsample`` (an event sensor of 128x128 given to a CIFAR-sized network) a 3x3
    stride-2 conv and a spike max-pool, dividing by 4 as the ImageNet stem does (docs/events.md)."""
    in_channels = config["input_shape"][0]
    if family == "imagenet":
        return Stem(in_channels, 64, 7, 2, True, neuron)
    if config.get("stem") == "downsample":
        return Stem(in_channels, 16, 3, 2, True, neuron)
    return Stem(in_channels, 16, 3, 1, False, neuron)


def build_staged(
    config: dict[str, Any],
    family: str,
    kind: str,
    widths: list[int],
    depths: list[int],
    expansion: int = 1,
    dense_stages: bool = False,
) -> SpikingNet:
    """ResNet-like stages of blocks; the first block of every later stage has stride 2.

    With ``dense_stages`` (DA-VGG) the entry of stage ``s`` also receives every earlier
    stage's pre-activated spikes through its own ``k x k`` stride-``k`` projection
    (``k = 2^(s-j)``): the explicit dense form across stages.
    """
    connection, neuron = config["connection"], config["neuron"]
    net, g, x = _new_net(config)
    net.stem = _stem_for(family, config, neuron)
    x = net.stem.wire(g, "stem", x)
    cin = net.stem.out_channels
    net.stages = nn.ModuleList()
    net.dense_proj = nn.ModuleDict()
    producers = [x]
    summaries: list[tuple[str, int]] = []  # (pre-activated spikes of a stage's output, channels)
    for s, (width, depth) in enumerate(zip(widths, depths)):
        stage = nn.ModuleList()
        net.stages.append(stage)
        for b in range(depth):
            stride = 2 if s > 0 and b == 0 else 1
            cout = width * expansion
            block = make_block(connection, branch_convs(kind, cin, cout, stride), neuron)
            stage.append(block)
            path = f"stages.{s}.{b}"
            if isinstance(block, DABlock):
                producers = block.wire_dense(g, path, producers)
                if b == 0 and s > 0:
                    if dense_stages:
                        producers += _dense_stage_entry(net, g, summaries, s, cout)
                    summaries.append((f"{path}.sn1", cin))
            else:
                producers = [block.wire(g, path, producers[0])]
            cin = cout
    if len(producers) > 1:
        x = g.add("head.sum", "add", producers, connection, REAL)
    else:
        x = producers[0]
    net.head = Head(cin, config["num_classes"], connection, neuron)
    return net.finalize(g, net.head.wire(g, "head", x))


def _dense_stage_entry(
    net: SpikingNet, g: GraphBuilder, summaries: list[tuple[str, int]], s: int, cout: int
) -> list[str]:
    """Projections into stage ``s`` of every stage ``j < s-1`` (stage ``s-1`` arrives via ``D``)."""
    out = []
    for j, (spikes, channels) in enumerate(summaries):
        k = 2 ** (s - j)
        name = f"{j}to{s}"
        net.dense_proj[name] = nn.Conv2d(channels, cout, k, k, bias=False)
        out.append(g.add(f"dense_proj.{name}", "conv", [spikes], "da"))
    return out


def build_densenet(config: dict[str, Any], growth: int, layers: list[int]) -> SpikingNet:
    """DA-DenseNet: dense blocks whose layers sum per-source convs of every earlier layer.

    Between dense blocks a transition aggregates all sources with ``2x2`` stride-2
    convs; after the last block a ``1x1`` aggregation feeds the head.
    """
    neuron = config["neuron"]
    net, g, x = _new_net(config)
    net.stem = _stem_for("small", config, neuron)
    sources, channels = [net.stem.wire(g, "stem", x)], [net.stem.out_channels]
    net.blocks = nn.ModuleList()
    net.transitions = nn.ModuleList()
    for d, n_layers in enumerate(layers):
        block = nn.ModuleList()
        net.blocks.append(block)
        for i in range(n_layers):
            layer = DenseLayer(list(channels), growth, neuron)
            block.append(layer)
            sources.append(layer.wire_sources(g, f"blocks.{d}.{i}", sources))
            channels.append(growth)
        last = d == len(layers) - 1
        width = sum(channels) // (1 if last else 2)
        trans = DenseAggregate(list(channels), width, 1 if last else 2, 1 if last else 2, neuron)
        net.transitions.append(trans)
        sources, channels = [trans.wire_sources(g, f"transitions.{d}", sources)], [width]
    net.head = Head(channels[0], config["num_classes"], "spikes", neuron)
    return net.finalize(g, net.head.wire(g, "head", sources[0]))
