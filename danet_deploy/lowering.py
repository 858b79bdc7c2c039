"""Lowering a NIR graph to neuron populations and the synapse groups that feed them.

Every neuron node (LIF, IF, CubaLIF, Threshold) becomes a population; the graph Input
is the input population and every Output a readout. The linear nodes between
populations (convs, scales, pooling, affine maps, flattening, delays) are composed
into one *term* per source population: one conv synapse group where that is exact
(a conv after a k x k stride-k sum pool is one conv with a larger kernel and stride),
else one dense matrix, so a population's input current is
``sum_terms W_term * out(source) + bias`` (docs/compile.md §1):

* ``expand``: currents from every contributing spiking layer go straight into the
  consumer (weights pre-scaled by its folded BatchNorm); binary spikes only.
* ``relay``: a sum of three or more streams is first materialised in relay neurons
  that forward graded spikes (exact integers); a relay whose sum contains an
  earlier relay's sum reads that relay plus the new streams, so synapses grow
  linearly along a residual trunk instead of quadratically.

Populations carry their pipeline latency: each synapse group adds one time step,
and every term gets the extra delay that aligns all of a neuron's inputs to the
same source time step (delay balancing). A recurrent term (a path through an edge
that closes a cycle) brings a population's own spikes of the previous step. A
constant input current into a CUBA population comes through a synapse from a
one-neuron bias source that fires at every step.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from functools import cache
from typing import NamedTuple

import nir
import numpy as np
import torch

from .ir.interpreter import linear_step, pair
from .errors import UserError
from .problems import Problem, Problems, raising
from .ir.graph import FlatGraph
from .ir.kinds import DELTA, GATE, INPUT, LIF, READOUT, RELAY, SIGMA_DELTA
from .ir.neurons import dynamics
from .ir.resets import Reset
from .ir.program import Lowered, Map, Population, SynapseGroup, distinct_part, per_tap
from .ir.sigma_delta import SigmaDelta

LOWERINGS = ("expand", "relay", "auto")
RELAY_MIN_SOURCES = 3  # a sum of fewer streams is cheaper as direct fan-in
NEURONS = (nir.LIF, nir.IF, nir.CubaLIF, nir.Threshold, SigmaDelta)  # what becomes a population


def identity(shape: tuple[int, ...], with_weights: bool = True) -> Map:
    kind = "conv" if len(shape) == 3 else "dense"
    m = Map(kind, shape, shape if kind == "conv" else (int(np.prod(shape)),), None, identity=True)
    if with_weights:
        eye = _eye(shape[0] if kind == "conv" else int(np.prod(shape)))
        m.weight = eye[:, :, None, None] if kind == "conv" else eye
    return m


@cache
def _eye(n: int) -> np.ndarray:
    """One read-only float32 identity per size, shared by every identity map of that size
    (a ResNet's relays would otherwise hold one 2048 x 2048 matrix each); exact: 0 and 1."""
    eye = np.eye(n, dtype=np.float32)
    eye.flags.writeable = False
    return eye


def _float64(w: np.ndarray) -> np.ndarray:
    """``w`` in float64, where every composition of weights is computed (a map may hold its
    node's float32 weights as they are, docs/compile.md §1)."""
    return np.asarray(w, dtype=np.float64)


def _full_conv_weight(node: nir.Conv2d, as_held: bool = False) -> np.ndarray:
    """A grouped conv's weight as an ungrouped (block-diagonal) one, in float64. ``as_held``:
    an ungrouped float32 or float64 weight is the node's own array, not a copy (the map of a
    conv alone needs no arithmetic, and its copy would be most of a large compile's memory)."""
    g = int(node.groups)
    if as_held and g == 1 and np.asarray(node.weight).dtype in (np.float32, np.float64):
        return np.asarray(node.weight)
    w = _float64(node.weight)
    if g == 1:
        return w
    cout, cin_g = w.shape[:2]
    full = np.zeros((cout, cin_g * g, *w.shape[2:]))
    per = cout // g
    for k in range(g):
        full[k * per : (k + 1) * per, k * cin_g : (k + 1) * cin_g] = w[k * per : (k + 1) * per]
    return full


def _new(m: Map, weight_fn, **changes) -> Map:
    """``m`` with ``changes``; its weight from ``weight_fn()`` (which reads ``m.values()``, the
    row scale applied) unless only structure is lowered."""
    return replace(
        m,
        weight=None if m.weight is None else weight_fn(),
        identity=False,
        row_scale=None,
        **changes,
    )


def _pool_of(
    m: Map,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    avg: bool,
    out_shape: tuple[int, ...],
) -> Map | None:
    """Sum/average pooling applied after ``m`` (a conv map) as one composite conv, or None
    where padding makes that inexact."""
    if padding != (0, 0) and not m.is_pointwise():
        return None
    (kh, kw), (sh, sw), (ph, pw) = m.kernel, m.stride, kernel
    size = (kh + (ph - 1) * sh, kw + (pw - 1) * sw)

    def weight() -> np.ndarray:
        if m.is_pointwise():  # the taps do not overlap: the pointwise weight at each, held once
            held = _float64(m.values()) / (ph * pw) if avg else m.values()
            return np.broadcast_to(held, (*m.weight.shape[:2], *size))
        w = np.zeros((*m.weight.shape[:2], *size))
        values = m.values()
        for a in range(ph):
            for b in range(pw):
                w[:, :, a * sh : a * sh + kh, b * sw : b * sw + kw] += values
        return w / (ph * pw) if avg else w

    pad = padding if m.is_pointwise() else m.padding
    geometry = dict(
        kernel=size, stride=(sh * stride[0], sw * stride[1]), padding=pad, out_shape=out_shape
    )
    if (
        m.identity and avg
    ):  # a population's own output averaged: its identity at every tap, each row
        # scaled by 1/(ph*pw) where it is read (1 * (1/n) is 1/n: the same values, nothing made)
        held = None if m.weight is None else np.broadcast_to(m.weight, (*m.weight.shape[:2], *size))
        return replace(m, weight=held, identity=False, **geometry).scaled(
            np.full(m.weight_shape[0], 1 / (ph * pw))
        )
    return _new(m, weight, **geometry)


def _pointwise_after(w2: np.ndarray, m: Map) -> np.ndarray:
    """The weight of a pointwise map ``w2`` ``[Cout, C]`` applied after each tap of ``m``. After
    an identity whose rows are scaled (an average pool of a population's output), that is ``w2``
    with its columns scaled: each entry is the one nonzero product the matrix product would sum
    with zeros, so the same bits, without the identity in float64 (a global-average-pool
    classifier of 2048 channels: 32 MiB, docs/compile.md §1)."""
    part = distinct_part(m.weight)
    n = part.shape[0]
    if (
        m.row_scale is not None
        and part.shape == (n, n, 1, 1)
        and np.isfinite(w2).all()
        and np.array_equal(part[:, :, 0, 0], _eye(n))
    ):
        done = (w2 * m.row_scale[None, :])[:, :, None, None]
        return (
            done
            if part is m.weight
            else np.broadcast_to(done, (*done.shape[:2], *m.weight.shape[2:]))
        )
    return per_tap(m.values(), lambda w: np.tensordot(w2, w, axes=([1], [0])))


def _channels_only(m: Map) -> bool:
    """``m`` makes ``(C, 1, 1)`` (a global pooling): flattened, the same values in the same order,
    so a Flatten keeps its conv form and a Linear after it is a 1x1 conv. Made dense instead,
    SpikingJelly's ``AdaptiveAvgPool2d -> flatten -> Linear`` head of SEW-ResNet-50 was four
    1000 x 100,352 float64 matrices (3.2 GB; 7.5x the time, 9.5x the memory of exporting our
    DA-ResNet-50, whose head is a 1x1 conv; docs/compile.md §1)."""
    return len(m.out_shape) == 3 and tuple(m.out_shape[1:]) == (1, 1)


def _conv_of_conv(
    m: Map, w2: np.ndarray, s2: tuple[int, int], p2: tuple[int, int], out_shape: tuple[int, ...]
) -> Map | None:
    """A conv (weight ``w2`` ``[Cout, C, k2h, k2w]``) applied to the conv map ``m`` as one conv
    (kernel ``k1 + (k2 - 1) s1``, stride ``s1 s2``, padding ``p1 + p2 s1``), or None where
    that is inexact: the second conv's zero padding must cover only positions whose
    receptive field lies wholly outside the input, and the output sizes must agree."""
    k2 = tuple(w2.shape[2:])
    kernel = tuple(m.kernel[i] + (k2[i] - 1) * m.stride[i] for i in range(2))
    stride = tuple(m.stride[i] * s2[i] for i in range(2))
    padding = tuple(m.padding[i] + p2[i] * m.stride[i] for i in range(2))
    for i in range(2):
        size, k1, s1, p1 = m.in_shape[1 + i], m.kernel[i], m.stride[i], m.padding[i]
        if p2[i] and (k1 > s1 + p1 or m.out_shape[1 + i] * s1 - p1 < size):
            return None
        if (size + 2 * padding[i] - kernel[i]) // stride[i] + 1 != out_shape[1 + i]:
            return None

    def weight() -> np.ndarray:
        (k1h, k1w), (s1h, s1w) = m.kernel, m.stride
        w = np.zeros((w2.shape[0], m.weight.shape[1], *kernel))
        values = m.values()
        for u in range(k2[0]):
            for v in range(k2[1]):
                w[:, :, u * s1h : u * s1h + k1h, v * s1w : v * s1w + k1w] += np.tensordot(
                    w2[:, :, u, v], values, axes=([1], [0])
                )
        return w

    return _new(m, weight, kernel=kernel, stride=stride, padding=padding, out_shape=out_shape)


def _as_matrix(
    name: str,
    node: nir.NIRNode,
    m: Map,
    in_shape: tuple[int, ...],
    out_shape: tuple[int, ...],
    dt: float,
) -> Map:
    """``node o m`` as one dense synapse group: the node's own matrix times ``m``'s. Exact for
    any linear chain; used where no conv form is exact."""
    flat_out = (int(np.prod(out_shape)),)
    if m.weight is None:
        return Map("dense", m.in_shape, flat_out, None, delay=m.delay, recurrent=m.recurrent)
    from scipy.sparse import diags  # imported where needed: 11 MiB resident (docs/compile.md §1)

    if isinstance(node, nir.Scale):
        own = diags(
            np.broadcast_to(np.asarray(node.scale, dtype=np.float64), out_shape).reshape(-1),
            format="csr",
        )
    else:
        alone = compose(name, node, identity(in_shape), in_shape, out_shape, dt)
        own = alone.matrix(alone.values())
    # sparse times sparse: only the product is dense (m's own matrix, e.g. a pooling's, may be far larger)
    weight = (own @ m.matrix(m.values())).toarray()
    return Map("dense", m.in_shape, flat_out, weight, delay=m.delay, recurrent=m.recurrent)


class NoConvForm(Exception):
    """``compose`` found no exact conv form and was told not to fall back to a matrix."""


# ---- compose: a table of rules keyed by (node type, map form) --------------------------------

FORMS = ("conv-identity", "dense-identity", "pointwise", "conv", "dense")
IDENTITY_FORMS = ("conv-identity", "dense-identity")
CONV_FORMS = ("conv-identity", "pointwise", "conv")
DENSE_FORMS = ("dense-identity", "dense")
LINEAR_NODES = (  # the node types whose composition may need the dense matrix
    nir.Conv2d,
    nir.Scale,
    nir.SumPool2d,
    nir.AvgPool2d,
    nir.Flatten,
    nir.Affine,
    nir.Linear,
)


def map_form(m: Map) -> str:
    """What ``compose``'s rules are keyed by: ``conv-identity`` / ``dense-identity`` (a
    population's own output, ``(C, H, W)`` or flat), ``pointwise`` (a 1x1, stride-1, unpadded
    conv), else ``conv`` or ``dense``."""
    if m.identity:
        return f"{m.kind}-identity"
    return "pointwise" if m.is_pointwise() else m.kind


class Operands(NamedTuple):
    """What a rule of :data:`COMPOSITIONS` composes: ``node`` (named ``name``, fed ``in_shape``,
    making ``out_shape``; ``dt`` its time step) after the map ``m``; ``matrix_ok``: whether the
    last row may make a dense matrix."""

    name: str
    node: nir.NIRNode
    m: Map
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    dt: float
    matrix_ok: bool


def _unchanged(c: Operands) -> Map:
    """``m`` itself: the node passes its input on in the same order (Input, Output, Flatten)."""
    return c.m


def _delayed(c: Operands) -> Map:
    """``m`` with the Delay node's steps added to its delay (one delay per node)."""
    steps = np.rint(np.asarray(c.node.delay, dtype=np.float64) / c.dt)
    if steps.size and not np.all(steps == steps.flat[0]):
        raise Problem(
            c.name, "per-neuron delays cannot be lowered", "(use one delay per node)", joint=" "
        ).error()
    return replace(c.m, delay=c.m.delay + (int(steps.flat[0]) if steps.size else 0))


def _conv_geometry(node: nir.Conv2d) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """A Conv2d node's kernel, stride and padding."""
    return tuple(np.asarray(node.weight).shape[2:]), pair(node.stride), pair(node.padding)


def _conv_alone(c: Operands) -> Map:
    """The conv itself, on a population's own output: its weight as the node holds it."""
    kernel, stride, padding = _conv_geometry(c.node)
    return _new(
        c.m,
        lambda: _full_conv_weight(c.node, as_held=True),
        kernel=kernel,
        stride=stride,
        padding=padding,
        out_shape=c.out_shape,
    )


def _conv_after_pointwise(c: Operands) -> Map:
    """The conv after a pointwise map: at each tap, the conv's ``[Cout, C]`` times the map's."""
    kernel, stride, padding = _conv_geometry(c.node)
    m = c.m
    return _new(
        m,
        lambda: np.tensordot(
            _full_conv_weight(c.node), m.values()[:, :, 0, 0], axes=([1], [0])
        ).transpose(0, 3, 1, 2),
        kernel=kernel,
        stride=stride,
        padding=padding,
        out_shape=c.out_shape,
    )


def _pointwise_conv_after_conv(c: Operands) -> Map | None:
    """A 1x1 unpadded conv after a conv: its ``[Cout, C]`` after each tap, the strides
    multiplied; None for any other conv."""
    kernel, stride, padding = _conv_geometry(c.node)
    if kernel != (1, 1) or padding != (0, 0):
        return None
    m = c.m
    return _new(
        m,
        lambda: _pointwise_after(_full_conv_weight(c.node)[:, :, 0, 0], m),
        stride=(m.stride[0] * stride[0], m.stride[1] * stride[1]),
        out_shape=c.out_shape,
    )


def _conv_after_conv(c: Operands) -> Map | None:
    """A conv after a conv as one larger conv (:func:`_conv_of_conv`), or None where inexact."""
    kernel, stride, padding = _conv_geometry(c.node)
    w2 = (  # without weights, zeros carry the shape
        _full_conv_weight(c.node)
        if c.m.weight is not None
        else np.zeros((c.out_shape[0], c.m.out_shape[0], *kernel))
    )
    return _conv_of_conv(c.m, w2, stride, padding, c.out_shape)


def _scale_channels(c: Operands) -> Map | None:
    """A Scale constant over each channel, after a conv: one row scale per output channel;
    None where it varies within a channel."""
    s = np.asarray(c.node.scale, dtype=np.float64)
    per_channel = s.reshape(s.shape[0], -1)
    if not np.all(per_channel == per_channel[:, :1]):
        return None
    return c.m.scaled(per_channel[:, 0])


def _scale_rows(c: Operands) -> Map:
    """A Scale after a dense map: one row scale per output."""
    s = np.asarray(c.node.scale, dtype=np.float64)
    return c.m.scaled(np.broadcast_to(s.reshape(-1), (int(np.prod(c.m.out_shape)),)))


def _pool_after_conv(c: Operands) -> Map | None:
    """A sum or average pool after a conv as one conv (:func:`_pool_of`), or None where inexact."""
    node = c.node
    return _pool_of(
        c.m,
        pair(node.kernel_size),
        pair(node.stride),
        pair(node.padding),
        isinstance(node, nir.AvgPool2d),
        c.out_shape,
    )


def _flatten_channels(c: Operands) -> Map | None:
    """A Flatten of a conv that makes ``(C, 1, 1)``: the conv itself (the same values in the
    same order, :func:`_channels_only`); None for any other conv."""
    return c.m if _channels_only(c.m) else None


def _linear_alone(c: Operands) -> Map:
    """The Linear (Affine) itself, on a population's own output: its weight, one dense map."""
    m = c.m
    w = np.asarray(c.node.weight, dtype=np.float64)
    return Map(
        "dense",
        m.in_shape,
        c.out_shape,
        None if m.weight is None else w,
        delay=m.delay,
        recurrent=m.recurrent,
    )


def _linear_after_dense(c: Operands) -> Map:
    """A Linear (Affine) after a dense map: the product of their matrices."""
    w = np.asarray(c.node.weight, dtype=np.float64)
    return _new(c.m, lambda: w @ c.m.values(), out_shape=c.out_shape)


def _linear_after_channels(c: Operands) -> Map | None:
    """A Linear (Affine) after a conv that makes ``(C, 1, 1)``: a 1x1 conv after it
    (:func:`_pointwise_after`); None for any other conv."""
    if not _channels_only(c.m):
        return None
    w = np.asarray(c.node.weight, dtype=np.float64)
    return _new(c.m, lambda: _pointwise_after(w, c.m), out_shape=(len(w), 1, 1))


def _dense_matrix(c: Operands) -> Map:
    """``node o m`` as one dense matrix (:func:`_as_matrix`), exact for any linear chain; without
    ``matrix_ok``, :class:`NoConvForm`."""
    if not c.matrix_ok:
        raise NoConvForm(c.name)
    return _as_matrix(c.name, c.node, c.m, c.in_shape, c.out_shape, c.dt)


def _refuse_conv(c: Operands) -> None:
    """A dilated or string-padded Conv2d is refused, whatever it follows."""
    if pair(c.node.dilation) != (1, 1) or isinstance(c.node.padding, str):
        raise Problem(
            c.name, "dilated or string-padded convs are not supported by the compiler"
        ).error()


Rule = Callable[[Operands], Map | None]

COMPOSITIONS: tuple[tuple[tuple[type, ...], tuple[str, ...], Rule], ...] = (
    # (node types, map forms, rule): a (type, form)'s rules are tried in this order, and the
    # first map one returns is the composition (a rule returns None where its form is inexact).
    ((nir.Input, nir.Output), FORMS, _unchanged),
    ((nir.Delay,), FORMS, _delayed),
    ((nir.Conv2d,), ("conv-identity",), _conv_alone),
    ((nir.Conv2d,), ("pointwise",), _conv_after_pointwise),
    ((nir.Conv2d,), ("conv",), _pointwise_conv_after_conv),
    ((nir.Conv2d,), ("conv",), _conv_after_conv),
    ((nir.Scale,), CONV_FORMS, _scale_channels),
    ((nir.Scale,), DENSE_FORMS, _scale_rows),
    ((nir.SumPool2d, nir.AvgPool2d), CONV_FORMS, _pool_after_conv),
    ((nir.Flatten,), IDENTITY_FORMS + ("dense",), _unchanged),
    ((nir.Flatten,), ("pointwise", "conv"), _flatten_channels),
    ((nir.Affine, nir.Linear), IDENTITY_FORMS, _linear_alone),
    ((nir.Affine, nir.Linear), ("dense",), _linear_after_dense),
    ((nir.Affine, nir.Linear), ("pointwise", "conv"), _linear_after_channels),
    (LINEAR_NODES, FORMS, _dense_matrix),  # the last row: whatever no row above made
)
REFUSALS: dict[type, Callable[[Operands], None]] = {nir.Conv2d: _refuse_conv}  # before any row


def _index(rows: tuple) -> dict[tuple[type, str], tuple[Rule, ...]]:
    """Each (node type, map form) to its rules, in the order of ``rows``."""
    index: dict[tuple[type, str], tuple[Rule, ...]] = {}
    for types, forms, rule in rows:
        for t in types:
            for form in forms:
                index[t, form] = index.get((t, form), ()) + (rule,)
    return index


_RULES = _index(COMPOSITIONS)
_COMPOSED = {t for types, _, _ in COMPOSITIONS for t in types}  # every node type a row names


def composition(
    name: str,
    node: nir.NIRNode,
    m: Map,
    in_shape: tuple[int, ...],
    out_shape: tuple[int, ...],
    dt: float,
    matrix_ok: bool = True,
) -> tuple[Rule, Map]:
    """:func:`compose`, and the rule of :data:`COMPOSITIONS` that made its map."""
    kind = next((t for t in type(node).__mro__ if t in _COMPOSED), None)
    if kind is None:
        raise Problem(name, f"{type(node).__name__} cannot be compiled for Loihi").error()
    c = Operands(name, node, m, in_shape, out_shape, dt, matrix_ok)
    if kind in REFUSALS:
        REFUSALS[kind](c)
    for rule in _RULES[kind, map_form(m)]:  # every (type, form) has a row that makes a map
        composed = rule(c)
        if composed is not None:
            return rule, composed
    raise AssertionError(f"no row of COMPOSITIONS made {type(node).__name__} o {map_form(m)}")


def compose(
    name: str,
    node: nir.NIRNode,
    m: Map,
    in_shape: tuple[int, ...],
    out_shape: tuple[int, ...],
    dt: float,
    matrix_ok: bool = True,
) -> Map:
    """The map ``node o m`` (``node`` fed ``in_shape``): the first map that a rule of its node
    type and ``m``'s form makes (:data:`COMPOSITIONS`, :func:`map_form`): one conv where that is
    exact, else one dense matrix (or, without ``matrix_ok``, :class:`NoConvForm`); refuses
    (naming the node) only what has no synapse-group form (docs/compile.md §1)."""
    return composition(name, node, m, in_shape, out_shape, dt, matrix_ok)[1]


def _merge(terms: list[tuple[str, Map, str]]) -> list[tuple[str, Map, str]]:
    """Add up terms from the same source with the same geometry (one synapse group)."""
    merged: dict[tuple, tuple[str, Map, str]] = {}
    for src, m, conn in terms:
        key = (src, m.geometry)
        if key in merged:
            prev = merged[key][1]
            merged[key] = (
                src,
                _new(prev, lambda: _float64(prev.values()) + m.values()),
                merged[key][2],
            )
        else:
            merged[key] = (src, m, conn)
    return list(merged.values())


class _Lowerer:
    def __init__(self, graph: FlatGraph, relay: bool, with_weights: bool) -> None:
        self.g, self.relay, self.with_weights = graph, relay, with_weights
        self.memo: dict[str, tuple[list[tuple[str, Map, str]], np.ndarray | None]] = {}
        self.relays: dict[str, str | None] = {}  # relayed node -> its parent relay node (subset)
        self.cyclic = graph.on_cycles()
        if relay:
            self._plan_relays()

    def is_population(self, name: str) -> bool:
        node = self.g.nodes[name]
        return isinstance(node, NEURONS) or name in self.g.inputs

    def _plan_relays(self) -> None:
        """Which input sums get relays, and which smaller relayed sum each one contains."""
        sums = [
            (n, Counter(self.g.sources[n]))
            for n in self.g.nodes
            if len(self.g.sources[n]) >= RELAY_MIN_SOURCES and n not in self.cyclic
        ]
        sums.sort(key=lambda item: sum(item[1].values()))
        for i, (name, members) in enumerate(sums):
            parents = [
                (p, pm)
                for p, pm in sums[:i]
                if pm != members and all(members[k] >= c for k, c in pm.items())
            ]
            self.relays[name] = (
                max(parents, key=lambda item: sum(item[1].values()))[0] if parents else None
            )

    def relay_name(self, node: str) -> str:
        return f"{node}.relay"

    def input_sum(self, name: str) -> tuple[list[tuple[str, Map, str]], np.ndarray | None]:
        """Terms and bias of the sum of ``name``'s sources (what arrives at its input)."""
        srcs = self.g.sources[name]
        biases = [b for b in (self.value(s)[1] for s in srcs) if b is not None]
        bias = (
            sum(biases) if biases else None
        )  # a relay carries spikes only: constants pass around it
        if name in self.relays:
            shape = self.g.shapes[srcs[0]]
            return [
                (self.relay_name(name), identity(shape, self.with_weights), self.connection(name))
            ], bias
        return [
            (src, replace(m, recurrent=True) if (s, name) in self.g.recurrent else m, c)
            for s in srcs
            for src, m, c in self.value(s)[0]
        ], bias

    def relay_terms(self, name: str) -> list[tuple[str, Map, str]]:
        """The spike-driven part of a relayed sum, reusing the contained relay."""
        members = Counter(self.g.sources[name])
        terms: list[tuple[str, Map, str]] = []
        parent = self.relays[name]
        if parent is not None:
            members.subtract(Counter(self.g.sources[parent]))
            terms.append(
                (
                    self.relay_name(parent),
                    identity(self.g.shapes[self.g.sources[name][0]], self.with_weights),
                    self.connection(name),
                )
            )
        for src, count in members.items():
            for _ in range(count):
                terms += self.value(src)[0]
        return _merge(terms)

    def value(self, name: str) -> tuple[list[tuple[str, Map, str]], np.ndarray | None]:
        """``name``'s output as ``sum_terms map(source) + bias`` (memoised)."""
        if name in self.memo:
            return self.memo[name]
        if self.is_population(name):
            result = (
                [(name, identity(self.g.shapes[name], self.with_weights), self.connection(name))],
                None,
            )
        else:
            node = self.g.nodes[name]
            composed, bias_in = self._composed(
                name, matrix_ok=not self.relay or name in self.cyclic
            )
            result = (_merge(composed), self._apply_bias(name, node, bias_in))
        self.memo[name] = result
        return result

    def _composed(
        self, name: str, matrix_ok: bool
    ) -> tuple[list[tuple[str, Map, str]], np.ndarray | None]:
        """``name`` applied to each term of its input sum. Under relay lowering, where that has
        no exact conv form, the input is relayed instead (graded relay neurons and the node's
        own synapses are cheaper than one dense matrix of the whole chain)."""
        node = self.g.nodes[name]
        terms, bias_in = self.input_sum(name)
        out_shape = self.g.shapes[name]
        in_shape = self.g.shapes[self.g.forward_sources(name)[0]]
        try:
            return [
                (
                    s,
                    compose(name, node, m, in_shape, out_shape, self.g.dt, matrix_ok),
                    self.connection(name),
                )
                for s, m, _ in terms
            ], bias_in
        except NoConvForm:
            self.relays[name] = None
            return self._composed(name, matrix_ok=True)

    def _apply_bias(
        self, name: str, node: nir.NIRNode, bias_in: np.ndarray | None
    ) -> np.ndarray | None:
        """The constant part of ``node``'s output: its own bias plus what it makes of ``bias_in``."""
        if isinstance(node, nir.Delay):
            return bias_in
        p = lambda v: torch.as_tensor(np.asarray(v, dtype=np.float64))  # noqa: E731
        in_shape = self.g.shapes[self.g.sources[name][0]]
        x = (
            torch.zeros((1, *in_shape), dtype=torch.float64)
            if bias_in is None
            else torch.as_tensor(bias_in, dtype=torch.float64).reshape(1, *in_shape)
        )
        out = linear_step(node, p)(x)[0].numpy()
        return out.reshape(self.g.shapes[name]) if np.any(out) else None

    def connection(self, name: str) -> str:
        return str(self.g.nodes[name].metadata.get("connection", ""))


def _uniform(name: str, what: str, value: object) -> float:
    arr = np.asarray(value, dtype=np.float64)
    if arr.size and not np.all(arr == arr.flat[0]):
        raise Problem(
            name, f"{what} differs between neurons", "Loihi needs one value per layer"
        ).error()
    return float(arr.flat[0]) if arr.size else 0.0


def _neuron_population(
    name: str, node: nir.NIRNode, shape: tuple[int, ...], graph: FlatGraph, connection: str
) -> Population:
    """A neuron node's population: the update of ``ir/neurons.py`` with one factor per layer,
    and a CubaLIF's input gain folded into its synapses (``u = current_gain * i``)."""
    if isinstance(node, nir.Threshold):
        return Population(
            name,
            GATE,
            shape,
            connection,
            beta=0.0,
            gain=1.0,
            threshold=_uniform(name, "threshold", node.threshold),
        )
    if isinstance(node, SigmaDelta):
        return Population(
            name,
            DELTA if node.encoder else SIGMA_DELTA,
            shape,
            connection,
            threshold=_uniform(name, "threshold", node.threshold),
            bias=np.array(node.bias) if np.any(node.bias) else None,
            spike_exp=node.spike_exp,
            state_exp=node.state_exp,
            relu=node.relu,
        )
    d, fire = dynamics(node, graph), graph.firing(name)
    # a neuron that starts at v_reset = c and resets to it is one that starts at and resets to 0,
    # its voltage shifted by -c: threshold - c, and bias - (1 - beta) c (0 where v_leak = c)
    start = d.v_reset if fire.starts_at_reset else 0.0
    if fire.reset in (Reset.ZERO, Reset.ZERO_LATE) and np.any(d.v_reset != start):
        raise Problem(
            name,
            "Loihi neurons reset to 0, but v_reset is not 0",
            "(a neuron that also starts at v_reset, as SpikingJelly's do, compiles shifted by "
            "-v_reset: --reset spikingjelly)",
            joint=" ",
        ).error()
    uniform = {
        factor: _uniform(name, d.source(factor), getattr(d, factor))
        for factor in ("beta", "current_gain", "alpha", "input_gain")
    }
    threshold = _uniform(
        name,
        "v_threshold - v_reset" if fire.starts_at_reset else "v_threshold",
        d.threshold - start,
    )
    pop = Population(
        name,
        LIF,
        shape,
        connection,
        beta=uniform["beta"],
        gain=uniform["current_gain"] * uniform["input_gain"],
        threshold=threshold,
        firing=fire,
    )
    if d.has_current:  # tau_syn = dt, up to float32 rounding: no memory
        pop.alpha = 0.0 if abs(uniform["alpha"]) < 1e-6 else uniform["alpha"]
    bias = d.bias - (1.0 - d.beta) * start
    pop.bias = np.broadcast_to(bias, shape).copy() if np.any(bias) else None
    return pop


def _bias_source(name: str, connection: str) -> Population:
    """One neuron that fires at every step: through a synapse group it gives a CUBA population
    a constant input current (Loihi's own bias enters the voltage, where the current's
    decay would not shape it)."""
    return Population(f"{name}.bias", GATE, (1,), connection, threshold=0.0, bias=np.ones(1))


def lower(
    graph: FlatGraph, lowering: str, with_weights: bool = True, problems: Problems | None = None
) -> Lowered:
    """Populations, terms and latencies of ``graph`` for ``expand`` or ``relay`` lowering.

    Without weights only the structure (shapes, delays) is built: enough to cost it.
    ``problems``: where the nodes it cannot lower are reported, every one, before it stops
    (:class:`~danet_deploy.problems.ChecksStopped`); else the first is raised.
    """
    problems = raising(problems)
    before = len(problems.found)
    if lowering not in ("expand", "relay"):
        raise ValueError(lowering)
    if len(graph.inputs) != 1:
        raise UserError("the compiler needs a graph with exactly one Input node")
    low = _Lowerer(graph, lowering == "relay", with_weights)
    pops: dict[str, Population] = {}
    for name, node in graph.nodes.items():
        with problems.kept():  # a node refused: the next one is checked
            pops.update(_node_populations(low, graph, name, node, with_weights))
    for relayed in low.relays:
        shape = graph.shapes[graph.sources[relayed][0]]
        with problems.kept():
            pops[low.relay_name(relayed)] = Population(
                low.relay_name(relayed),
                RELAY,
                shape,
                low.connection(relayed),
                synapse_groups=[SynapseGroup(s, m, c) for s, m, c in low.relay_terms(relayed)],
            )
    problems.stop_if_found(before, "a graph with nodes that cannot be lowered cannot be mapped")
    ordered = _schedule(pops, problems)
    return Lowered(ordered, lowering, graph.dt, graph.timesteps)


def _node_populations(
    low: _Lowerer, graph: FlatGraph, name: str, node: nir.NIRNode, with_weights: bool
) -> dict[str, Population]:
    """The population of ``node`` (none for a linear node, which its consumers' synapses
    compose) with its input synapses, and the bias source that a CUBA population's constant
    input current takes; a node the compiler cannot lower raises its :class:`Problem`."""
    conn = str(node.metadata.get("connection", ""))
    if name in graph.inputs:
        return {name: Population(name, INPUT, graph.shapes[name], conn)}
    if name in graph.outputs:
        pop = Population(name, READOUT, graph.shapes[name], conn)
    elif low.is_population(name):
        pop = _neuron_population(name, node, graph.shapes[name], graph, conn)
    elif isinstance(node, (nir.LI, nir.I)):
        raise Problem(
            name,
            f"{type(node).__name__} neurons are not supported by the Loihi compiler",
            "(LIF, IF, CubaLIF and Threshold are)",
            joint=" ",
        ).error()
    else:
        return {}
    terms, path_bias = low.input_sum(name)
    pop.synapse_groups = [
        SynapseGroup(s, m, "recurrent" if m.recurrent else c) for s, m, c in _merge(terms)
    ]
    if pop.kind.encoder and [(t.source, t.map.identity) for t in pop.synapse_groups] == [
        (graph.inputs[0], True)
    ]:
        pop.synapse_groups[0].port = True  # an encoder reads the input itself
    made = {}
    if path_bias is not None and pop.alpha:  # a constant current that persists: through a synapse
        source = _bias_source(name, conn)
        made[source.name] = source
        weight = np.broadcast_to(path_bias, pop.shape).reshape(-1, 1) if with_weights else None
        pop.synapse_groups.append(
            SynapseGroup(source.name, Map("dense", source.shape, (pop.neurons,), weight), conn)
        )
    elif path_bias is not None and isinstance(node, SigmaDelta):
        raise Problem(
            name,
            "a constant input current into a sigma-delta neuron would add up in its sigma at "
            "every step",
            "give the neuron the bias instead",
        ).error()
    elif path_bias is not None:  # a constant input current, seen through the neuron's gain
        drive = pop.gain * path_bias
        pop.bias = drive if pop.bias is None else pop.bias + drive
    return made | {name: pop}


def _schedule(pops: dict[str, Population], problems: Problems) -> dict[str, Population]:
    """Order populations so sources come first, then set latencies and balancing delays.

    Each synapse group adds one step (an encoder's input port none): a population's latency is
    its longest such path from the input. Every term then gets the synaptic delay that brings
    its source's output of step ``t - lag`` (``SynapseGroup.lag``: the graph's Delay nodes, one more
    for a recurrent path) to the consumer's step ``t``, so that the program computes what the
    layer-synchronous model does, shifted by each population's latency. A recurrent term whose
    source lies more pipeline stages away than its lag allows cannot be built: only a loop
    within one pipeline stage, a population onto itself, can (every other is reported).
    """
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str) -> None:
        if state.get(name) == 2:
            return
        state[name] = 1
        for t in pops[name].synapse_groups:
            if not t.map.recurrent:
                visit(t.source)
        state[name] = 2
        order.append(name)

    for name in pops:
        visit(name)
    hop = {True: 0, False: 1}
    for name in order:
        pop = pops[name]
        forward = [t for t in pop.synapse_groups if not t.map.recurrent]
        if forward:
            pop.latency = max(pops[t.source].latency + hop[t.port] for t in forward)
    for name in order:
        for t in pops[name].synapse_groups:
            t.delay = pops[name].latency - pops[t.source].latency - hop[t.port] + t.lag
            if t.delay < 0:
                what = (
                    f"its recurrent input from {t.source!r} passes through {-t.delay} more "
                    f"pipeline stage(s) than one time step allows"
                )
                remedy = "only a layer's loop onto itself can run on the chip"
                problems.report([Problem(name, what, remedy, noun="population")])
    return {n: pops[n] for n in order}
