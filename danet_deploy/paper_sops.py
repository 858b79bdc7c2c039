"""Account stage: SOPs as published spiking-ResNet tables count them, beside our exact count.

The papers' convention (docs/accounting.md, "The papers' SOP convention"): per layer ``l`` after
the stem ``SOP_l = fr_l x T x FLOPs_l`` with ``FLOPs_conv = k^2 Ho Wo Cin Cout`` (padded taps
included), ``FLOPs_fc = in x out`` and ``fr_l`` the fraction of nonzero elements of the layer's
input tensor over steps, samples and positions; the stem (real-valued input) costs its FLOPs
once as MACs for a static image.

The convention is defined on the network's conv and dense layers; the program holds populations
and synapse groups. A *paper layer* is read off the program so (each rule in the docs):

* the synapse groups of one consumer with the same geometry and the same integer weights are one
  layer applied to the sum of their sources (a SEW ADD sum under ``expand`` lowering): its input
  is nonzero where any source is;
* a layer that reaches several consumers (a DA or MS stream under ``expand``: the same sources
  and geometry again) is counted once, on the first consumer's row;
* a pointwise map that is diagonal (a BatchNorm or the identity on a residual stream) or a
  population's map onto itself is no layer;
* a conv whose weights are the same at every tap of a window with ``stride = kernel`` is a pooling
  composed into the next layer (the head's average pooling and fc): the layer is counted at the
  pooled size, its input nonzero where any element of the window is;
* a group from a real-valued input is the stem: its FLOPs once per step whose input differs from
  the step before (once for a static image), as MACs;
* recurrent groups are counted on the recurrent row, their input being the steps that reach one.

Counts are integers (nonzero elements, FLOPs) until the report divides them, so the figures do
not depend on batching.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable

import numpy as np
import torch

from .ir.program import Program, SynapseGroup


@dataclass(frozen=True)
class PaperLayer:
    """One conv or dense layer of the network as the papers count it."""

    row: str  # the report row it is charged to
    sources: tuple[str, ...]  # populations whose summed output is its input
    lag: int  # steps from the sources' output to the step it reaches
    flops: int  # dense FLOPs of one step: k^2 Ho Wo Cin Cout, or in x out
    inputs: int  # elements of its input tensor (one sample, one step)
    pool: tuple[int, int]  # window of a pooling composed into its map; (1, 1): none
    stem: bool  # real-valued input: MACs, not SOPs

    @property
    def masked(self) -> bool:
        """Whether its nonzero count needs the input itself (a sum or a pooling), not a count."""
        return len(self.sources) > 1 or self.pool != (1, 1)


def paper_layers(
    program: Program, rows: Callable[[str], list[str]], real_input: Callable[[str], bool]
) -> list[PaperLayer]:
    """The program's layers as the papers count them (module docstring); ``rows(name)`` gives
    a population's report rows, ``real_input(source)`` whether a source's values cost MACs."""
    layers: list[PaperLayer] = []
    seen: set[tuple] = set()
    for name, pop in program.populations.items():
        classes: list[list[SynapseGroup]] = []
        for t in pop.synapse_groups:
            if t.port or t.map.identity or _stream_path(t):
                continue
            same = next((c for c in classes if _same_layer(c[0], t)), None)
            if same is None:
                classes.append([t])
            else:
                same.append(t)
        for groups in classes:
            m = groups[0].map
            sources = tuple(t.source for t in groups)
            key = (frozenset(sources), m.geometry, m.in_shape)
            if key in seen:
                continue
            seen.add(key)
            pool = _pooling(groups[0])
            flops, inputs = _dense_size(m.kind, m.in_shape, m.out_shape, m.kernel, pool)
            layers.append(
                PaperLayer(
                    row=rows(name)[-1] if m.recurrent else name,
                    sources=sources,
                    lag=groups[0].lag,
                    flops=flops,
                    inputs=inputs,
                    pool=pool,
                    stem=real_input(groups[0].source),
                )
            )
    return layers


def _same_layer(a: SynapseGroup, b: SynapseGroup) -> bool:
    """Two groups of one consumer that are one layer fed a sum: same map, same integer weights."""
    return (
        a.map.geometry == b.map.geometry
        and a.map.in_shape == b.map.in_shape
        and a.lag == b.lag
        and np.array_equal(a.weight_q, b.weight_q)
    )


def _stream_path(t: SynapseGroup) -> bool:
    """A pointwise map whose weights are zero off the channel diagonal: a BatchNorm (or the
    identity) on a residual stream into a neuron, which the network has as no conv layer."""
    m, w = t.map, t.weight_q
    if m.kind == "conv":
        square = m.kernel == (1, 1) and m.stride == (1, 1) and m.padding == (0, 0)
        if not square or m.in_shape != m.out_shape:
            return False
        w = w[:, :, 0, 0]
    elif w.shape[0] != w.shape[1]:
        return False
    return np.count_nonzero(w) == np.count_nonzero(np.diagonal(w))


def _pooling(t: SynapseGroup) -> tuple[int, int]:
    """The window of a pooling composed into a conv (weights equal over every tap of a window
    that the stride tiles, what a pooling then a pointwise layer make), else ``(1, 1)``."""
    m, w = t.map, t.weight_q
    tiled = m.kind == "conv" and m.stride == m.kernel and m.padding == (0, 0)
    if (
        not tiled
        or m.kernel == (1, 1)
        or not np.array_equal(w, np.broadcast_to(w[:, :, :1, :1], w.shape))
    ):
        return (1, 1)
    return m.kernel


def _dense_size(
    kind: str,
    in_shape: tuple[int, ...],
    out_shape: tuple[int, ...],
    kernel: tuple[int, int],
    pool: tuple[int, int],
) -> tuple[int, int]:
    """FLOPs of one step (padded taps included) and the input's elements, at the pooled size."""
    if kind == "dense":
        n_in, n_out = int(np.prod(in_shape)), int(np.prod(out_shape))
        return n_in * n_out, n_in
    c_in, c_out, h_out, w_out = in_shape[0], out_shape[0], out_shape[1], out_shape[2]
    if pool != (1, 1):  # the layer after the pooling is pointwise on the pooled map
        return h_out * w_out * c_in * c_out, c_in * h_out * w_out
    return kernel[0] * kernel[1] * h_out * w_out * c_in * c_out, int(np.prod(in_shape))


class PaperCounter:
    """Nonzero input elements of every paper layer, counted from the simulator's values."""

    def __init__(self, layers: list[PaperLayer]) -> None:
        self.layers = layers
        self.nonzero = [0] * len(layers)  # SOP layers: nonzero inputs; stem: steps charged
        self._pending: dict[int, tuple[torch.Tensor, int]] = {}  # a sum's mask, sources seen
        self._fed: dict[str, list[int]] = {}  # the layers each population feeds
        for i, layer in enumerate(layers):
            for source in layer.sources:
                self._fed.setdefault(source, []).append(i)

    def observe(self, name: str, values: torch.Tensor, events: dict[Any, torch.Tensor]) -> None:
        """Count what population ``name``'s values ``[T, N, ...]`` give its consumers' layers;
        ``events`` holds the accountant's nonzero values per neuron (key ``name``, or
        ``(name, lag)`` for the steps that reach a lagged consumer), which a layer fed by one
        population and no pooling sums instead of reading the values again."""
        for i in self._fed.get(name, ()):
            layer = self.layers[i]
            if layer.stem:
                self.nonzero[i] += _changed_steps(values)
                continue
            if not layer.masked:
                self.nonzero[i] += int(events[(name, layer.lag) if layer.lag else name].sum())
                continue
            mask = values[: max(len(values) - layer.lag, 0)] != 0
            held, seen = self._pending.pop(i, (None, 0))
            mask = mask if held is None else held | mask
            if seen + 1 < len(layer.sources):
                self._pending[i] = (mask, seen + 1)
            else:
                self.nonzero[i] += _pooled_nonzero(mask, layer.pool)

    def per_row(self, samples: int) -> dict[str, dict[str, float]]:
        """``paper_sops`` and ``paper_macs`` per inference, summed per report row."""
        rows: dict[str, dict[str, Fraction]] = {}
        for layer, count in zip(self.layers, self.nonzero):
            row = rows.setdefault(layer.row, {"paper_sops": Fraction(0), "paper_macs": Fraction(0)})
            if layer.stem:  # FLOPs once per changed step
                row["paper_macs"] += Fraction(count * layer.flops, samples)
            else:  # fr x T x FLOPs = nonzero / (N T inputs) x T x FLOPs
                row["paper_sops"] += Fraction(count * layer.flops, samples * layer.inputs)
        return {r: {k: float(v) for k, v in c.items()} for r, c in rows.items()}


def _changed_steps(values: torch.Tensor) -> int:
    """Steps whose input differs from the step before, the first step of every sample included."""
    if values.stride(0) == 0:  # one step expanded over all: a static input
        return values.shape[1]
    flat = values.reshape(values.shape[0], values.shape[1], -1)
    return values.shape[1] + int((flat[1:] != flat[:-1]).any(2).sum())


def _pooled_nonzero(mask: torch.Tensor, pool: tuple[int, int]) -> int:
    """Nonzero elements of ``mask`` ``[T, N, C, H, W]`` after ``pool`` (any in a window)."""
    if pool == (1, 1):
        return int(torch.count_nonzero(mask))
    t, n, c, h, w = mask.shape
    kh, kw = pool
    ho, wo = h // kh, w // kw
    windows = mask[..., : ho * kh, : wo * kw].reshape(t, n, c, ho, kh, wo, kw)
    return int(torch.count_nonzero(windows.any(6).any(4)))
