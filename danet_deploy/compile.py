"""Compile stage: a NIR graph -> a fixed-point program for a Loihi hardware profile.

1. lower (``expand`` / ``relay`` / ``auto``, see :mod:`lowering`), with delay balancing;
2. quantise to Lava's fixed point (docs/compile.md §3): per population a scale
   ``K`` (integer voltage = ``K`` x float voltage) chosen from the weights (8-bit), the
   threshold (17-bit), the bias (13-bit mantissa) and, from a few calibration samples,
   the largest input current (so the 24-bit current never wraps);
3. map every population onto cores within the profile's limits; a violation is an
   error naming the layer, the limit, the value and a remedy;
4. write ``program.h5`` (the quantised program, read back by the simulators).

The integer neuron model is Lava's LIF: ``u <- trunc(u * (4095 - du) / 4096) + 64 * A``
(``du = 4095``: no current memory, as for LIF/IF nodes; CubaLIF nodes keep a current),
``v <- trunc(v * (4096 - dv) / 4096) + u + (bias_mant << 6)``, spike if
``v > vth << 6``, then ``v = 0``; ``A = sum_terms W_q * x`` with ``x`` the source's
spikes, or its integer value for graded sources (the input, relays). A graph whose
metadata says ``fixed_point = "loihi"`` (a netx file) already holds these integers:
it is compiled with every scale 64 and checked, not rounded.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections import Counter
from typing import Any

import numpy as np
import torch

from .ir.interpreter import ReferenceSimulator
from .errors import UserError
from .heap import return_freed_memory
from .ir.graph import FlatGraph
from .ir.chip_format import LOIHI
from .ir.resets import DESCRIPTIONS, Firing, Reset
from .ir.program import (
    Fixed,
    Lowered,
    Map,
    Population,
    Program,
    SynapseGroup,
    bound_by,
    distinct_part,
    fan_in,
    summarise,
    synapse_count,
)
from .lowering import lower
from .problems import ChecksStopped, Problem, Problems, raising
from .profiles import DENSE_SPLIT, Profile
from .synapses import WEIGHT_DTYPE, round_weights

TARGETS = {"loihi2-sim": "loihi2", "loihi2": "loihi2", "loihi1": "loihi1"}
CURRENT_HEADROOM = 2**16  # |A| bound: 64 * A stays well inside the 24-bit current
RELAY_HEADROOM = 2**22  # graded relay values stay inside a signed 24-bit payload
GRID_DISTINCT = 256  # a layer with more distinct weights lies on no grid (docs/compile.md §3)
QUANTISE_BLOCK = 1 << 18  # weights rounded at a time (2 MiB of float64 products)
WEIGHT_ERROR_BOUND = (
    0.1  # largest weight error of a layer compiled without a warning (docs/compile.md §3)
)
CALIBRATION_CHUNK_BYTES = (
    64 << 20
)  # float state of the samples calibrated at once (docs/compile.md §1)


# ---- calibration and quantisation ------------------------------------------------------


def calibrate(graph: FlatGraph, x: torch.Tensor) -> dict[str, float]:
    """Largest |input current| of every node (the sum of its sources) on a few samples,
    taken as the float interpreter runs (nothing is recorded). The samples run in chunks
    whose values held at once (every step of the layers waiting for a reader) fit
    ``CALIBRATION_CHUNK_BYTES``: an ImageNet-sized network holds ~80 MB of them per sample,
    a small one takes all samples at once."""
    peaks: dict[str, float] = {}

    def see(name: str, current: torch.Tensor) -> None:
        peaks[name] = max(peaks.get(name, 0.0), float(current.abs().max()))

    simulator = ReferenceSimulator(graph)
    per_sample = simulator.held_bytes_per_sample(x.shape[1])
    for chunk in x.split(max(1, CALIBRATION_CHUNK_BYTES // max(per_sample, 1))):
        simulator.run(chunk, observe=see)
        return_freed_memory()  # else the heap the chunk freed grows with every chunk
    return peaks


def _round_weights(w: np.ndarray, mixed: bool | None = None) -> np.ndarray:
    """Integers Lava's Dense/Sparse keep exactly (:func:`synapses.round_weights`)."""
    return (
        round_weights(torch.from_numpy(np.asarray(w, dtype=np.float64)), mixed)
        .numpy()
        .astype(WEIGHT_DTYPE)
    )


def _limits(
    pop: Population, fixed: dict[str, Fixed], peak: float, measured: bool = True
) -> dict[str, float]:
    """Each upper limit on ``pop``'s K, by what sets it: 8-bit weights (the term whose weights
    are largest in its source's units), the 17-bit threshold, the 13-bit bias mantissa, the
    calibrated input current (``measured``; else the largest its inputs can make) within the
    24-bit current."""
    limits = {}
    weights = [
        (pop.gain * t.map.abs_max() / _value_scale(fixed, t), t.source) for t in pop.synapse_groups
    ]
    wmax, source = max(weights, default=(0.0, ""))
    if wmax > 0:
        limits[f"the weights from {source!r}"] = LOIHI.weight_max * LOIHI.act_unit / wmax
    return limits | _state_limits(pop, peak, measured)


def _state_limits(pop: Population, peak: float, measured: bool = True) -> dict[str, float]:
    """The limits of :func:`_limits` that its weights do not set (nor its sources' scales)."""
    limits = {}
    if pop.kind.spiking and pop.threshold > 0:
        limits["its threshold"] = LOIHI.threshold_max * LOIHI.vth_unit / pop.threshold
    if pop.bias is not None and np.abs(pop.bias).max() > 0:
        limits["its bias"] = LOIHI.bias_mant_max * LOIHI.bias_unit / np.abs(pop.bias).max()
    if peak > 0 and not pop.kind.is_readout:
        bound = RELAY_HEADROOM if pop.kind.sends_current else CURRENT_HEADROOM
        source = (
            "the largest input current of the calibration data"
            if measured
            else "the largest current its inputs can make (no calibration data)"
        )
        limits[source] = bound * LOIHI.act_unit / (pop.gain * peak)
    return limits


def _scale_for(
    pop: Population, fixed: dict[str, Fixed], peak: float, measured: bool = True
) -> tuple[float, str]:
    """The K of ``pop`` and what sets it: the largest that keeps weights, threshold, bias and
    calibrated currents in range; where the weights lie on a grid (:func:`_exact_scale`), the
    largest multiple of the grid's K within that, so that they are held exactly. A relay takes
    the grid's K itself: its K is the scale of the graded values it sends, which every
    consumer's weights are divided by (docs/compile.md §3)."""
    limits = _limits(pop, fixed, peak, measured)
    if not limits:
        return float(LOIHI.act_unit), ""
    set_by = min(limits, key=limits.get)
    exact = _exact_scale(pop, fixed)
    if exact is None or exact > limits[set_by]:
        return float(limits[set_by]), set_by
    if pop.kind.sends_current:
        return exact, "its weights, held exactly"
    return exact * math.floor(limits[set_by] / exact), set_by


def _exact_scale(pop: Population, fixed: dict[str, Fixed]) -> float | None:
    """The smallest K at which every weight of ``pop`` is an integer that Lava's synapses keep
    (even where a group's signs are mixed), the largest at most ``LOIHI.weight_max``, and its
    threshold and biases are integers too; None where none is (more than ``GRID_DISTINCT`` distinct
    weights, or none of 1..LOIHI.weight_max fits).

    Without it a relay took a neuron's K, as large as its weights allow: its graded values
    were then so large that its consumers' weights, divided by them, rounded away within the
    24-bit current (an average pool's relay sent 2286 per unit, not 9). The smallest exact K
    sends what a relay of spikes sums, their counts."""
    units, mixed = [], []
    for t in pop.synapse_groups:
        distinct, lo, hi = _distinct_weights(
            t.map, abs(pop.gain) / (LOIHI.act_unit * _value_scale(fixed, t))
        )
        units.append(distinct)
        mixed.append(lo < 0 < hi)
        if sum(map(len, units)) > GRID_DISTINCT:
            return None
    top = max((u.max() for u in units if u.size), default=0.0)
    if not top:
        return None
    constants = [pop.threshold] if pop.kind.spiking else []  # vth and the bias mantissas
    constants = np.unique(
        np.abs(np.concatenate([constants, [] if pop.bias is None else np.ravel(pop.bias)]))
    )
    if len(constants) > GRID_DISTINCT:
        return None
    units.append(constants / LOIHI.vth_unit)  # = LOIHI.bias_unit: one grid
    mixed.append(False)
    for k in range(1, LOIHI.weight_max + 1):
        if all(_on_grid(u * (k / top), m) for u, m in zip(units, mixed)):
            return float(k / top)  # a Python float: scales go into checkpoints (chip_scales)
    return None


def _distinct_weights(m: Map, scale: float) -> tuple[np.ndarray, float, float]:
    """The distinct nonzero ``|weight| * scale`` of ``m`` (at most ``GRID_DISTINCT + 1`` of them)
    and its least and largest weight. Read in blocks of rows that double from about 4,096
    weights, so that a trained layer's weights (distinct from the first block) cost little and
    a relay's identity of 2048 channels (32 MiB in float64) is never made whole."""
    part = distinct_part(m.weight)
    row = max(1, int(np.prod(part.shape[1:])))
    distinct, lo, hi = np.empty(0), 0.0, 0.0
    start, step = 0, max(1, 4096 // row)
    while start < len(part) and len(distinct) <= GRID_DISTINCT:
        values = distinct_part(m.values(slice(start, start + step)))
        lo, hi = min(lo, float(values.min(initial=0.0))), max(hi, float(values.max(initial=0.0)))
        distinct = np.union1d(distinct, np.abs(values[values != 0]).astype(np.float64) * scale)
        start, step = start + step, min(2 * step, max(1, QUANTISE_BLOCK // row))
    return distinct, lo, hi


def _on_grid(x: np.ndarray, mixed: bool) -> bool:
    """Whether ``x`` (>= 0) are integers (even ones in a mixed-sign group), to rounding error."""
    unit = 2.0 if mixed else 1.0
    return bool(np.all(np.abs(x / unit - np.rint(x / unit)) <= 1e-9 * np.maximum(1.0, x)))


def _worst_current(pop: Population, bound: dict[str, float]) -> float:
    """The largest |input current| ``pop`` can receive: for each term, its largest row sum of
    |weight| (a conv's row is one output channel's kernel; padding only drops terms) times the
    largest |value| its source sends. What calibration would measure, at its bound."""
    return sum(_largest_row_sum(t.map) * bound.get(t.source, 1.0) for t in pop.synapse_groups)


def _spike_bound(pop: Population, peak: float) -> float:
    """The largest value a neuron population sends, given its largest input current ``peak``:
    1 (a spike), or a multi-spike neuron's largest count: what is left of its voltage after a
    reset (below the threshold) plus one step's current and bias, over the threshold."""
    if not pop.firing.reset.multi_spike:
        return 1.0
    bias = float(np.abs(pop.bias).max()) if pop.bias is not None else 0.0
    current = pop.gain * peak / (1.0 - pop.alpha)  # a CUBA current sums its decaying inputs
    return math.floor(1.0 + (current + bias) / pop.threshold)


def _largest_row_sum(m: Map) -> float:
    """The largest sum of ``|weight|`` over one output row of ``m``, a block of rows at a time
    (as the weights are rounded: a shared identity is never made whole in float64)."""
    row = max(1, int(np.prod(m.weight.shape[1:])))
    step = max(1, QUANTISE_BLOCK // row)
    return max(
        (
            float(np.abs(m.values(slice(s, s + step))).reshape(-1, row).sum(1).max(initial=0.0))
            for s in range(0, len(m.weight), step)
        ),
        default=0.0,
    )


def _value_scale(fixed: dict[str, Fixed], term: SynapseGroup) -> float:
    """Integer value per unit of the term's source signal; a recurrent source (a population
    onto itself, quantised after its terms) sends binary spikes."""
    return 1.0 if term.map.recurrent else fixed[term.source].value_scale


def weight_scale(fixed: dict[str, Fixed], pop: Population, term: SynapseGroup) -> float:
    """Integer weight per unit of ``term``'s float weight, once ``pop`` is quantised."""
    return fixed[pop.name].scale * pop.gain / (LOIHI.act_unit * _value_scale(fixed, term))


def _threshold_integer(pop: Population, k: float) -> int:
    """Lava's ``vth``: it fires at ``v > vth << 6``, ``v`` the integer voltage (``K`` x the float).

    ``v > threshold``: ``round(K threshold / 64)``. ``v >= threshold`` (SpikingJelly): the
    largest ``vth`` below ``K threshold / 64``, i.e. its ceiling - 1 (the threshold - 1 where it
    is on the chip's grid). That is exact where every voltage is a multiple of 64, as it is where
    neither voltage nor current decays partly (``dv`` 0 or 4096, ``du`` 4095: each step adds 64 x
    its input and bias); a decaying voltage may also fire up to one unit of ``vth`` (64/K in
    the float voltage) below the threshold, which stderr says once (:func:`_threshold_notes`)."""
    x = k * pop.threshold / LOIHI.vth_unit
    if not pop.firing.at_threshold or pop.firing.reset.programmed:  # a program tests >= itself
        return round(x)
    nearest = round(x)
    return (nearest if abs(x - nearest) <= 1e-9 * max(1.0, abs(x)) else math.ceil(x)) - 1


def _threshold_notes(program: Program) -> list[str]:
    """One line per layer that fires at ``v >= v_threshold`` and whose voltage or current decays
    partly, so that it may fire below its threshold (:func:`_threshold_integer`)."""
    lines = []
    for name, pop in program.populations.items():
        f = program.fixed[name]
        fires = pop.firing
        decays = 0 < f.dv < LOIHI.decay_unity or f.du != LOIHI.du_no_memory
        if fires.at_threshold and not fires.reset.programmed and decays:
            lines.append(
                f"layer {name!r} fires at v >= v_threshold (SpikingJelly's test); Loihi fires at "
                f"v > vth, so it is compiled with vth {f.vth} (its threshold less 1); since its "
                f"voltage decays, it may also fire up to {LOIHI.vth_unit / f.scale:.3g} below "
                f"v_threshold"
            )
    return lines


def _decay(pop: Population) -> int:
    if not pop.kind.voltage_memory or pop.beta == 0.0:
        return LOIHI.decay_unity  # no voltage memory (Lava accepts 4096; v = u each step)
    return int(np.clip(round((1.0 - pop.beta) * LOIHI.decay_unity), 0, LOIHI.decay_unity - 1))


def _current_decay(pop: Population) -> int:
    """Lava's ``du`` (the current keeps ``(4096 - du - 1)/4096``); 4095: no current memory."""
    if pop.alpha == 0.0:
        return LOIHI.du_no_memory
    keep = round((1.0 - pop.alpha) * LOIHI.decay_unity)
    return int(np.clip(keep, 0, LOIHI.decay_unity)) - LOIHI.du_offset


def _exact_weights(name: str, exact: np.ndarray, mixed: bool) -> np.ndarray:
    """Weights that are already the chip's integers, checked to survive Lava's synapses unchanged."""
    q = np.rint(exact)
    if np.abs(exact - q).max(initial=0.0) > 1e-6:
        raise UserError(
            f"layer {name!r}: the graph states fixed-point weights, but they are not integers"
        )
    if not np.array_equal(_round_weights(q, mixed), q):
        bad = q[_round_weights(q, mixed) != q].flat[0]
        raise UserError(
            f"layer {name!r}: weight {bad:g} does not survive Loihi's 8-bit synapses "
            f"(mixed-sign weights must be even, in [{LOIHI.weight_min_mixed}, {LOIHI.weight_max}])"
        )
    return q.astype(WEIGHT_DTYPE)


def _integer_weights(
    name: str, m: Map, scale: float, exact: bool
) -> tuple[np.ndarray, float, float]:
    """``m``'s weights times ``scale`` as the chip's integers (held once over kernel taps where
    the float weight is), with the sums of squares of the exact products and of their rounding
    errors. Made a block of output rows at a time, so that the float64 products of a large
    term (a 2048-channel relay's identity) never exist whole; the sign rule of Lava's synapses
    is that of the whole group."""
    part = distinct_part(m.weight)
    step = max(1, QUANTISE_BLOCK // max(1, int(np.prod(part.shape[1:]))))
    blocks = [slice(start, start + step) for start in range(0, len(part), step)]

    def product(rows: slice) -> np.ndarray:  # float32 maps are multiplied in float64 too
        return np.multiply(scale, distinct_part(m.values(rows)), dtype=np.float64)

    extremes = [
        (float(p.min(initial=0.0)), float(p.max(initial=0.0))) for p in map(product, blocks)
    ]
    mixed = (
        min((lo for lo, _ in extremes), default=0.0)
        < 0
        < max((hi for _, hi in extremes), default=0.0)
    )
    q = np.empty(part.shape, dtype=WEIGHT_DTYPE)
    exact_sq = error_sq = 0.0
    for rows in blocks:
        p = product(rows)
        q[rows] = _exact_weights(name, p, mixed) if exact else _round_weights(p, mixed)
        exact_sq += float(np.vdot(p, p))
        p -= q[rows]  # in place: the error, without another copy of the weights
        error_sq += float(np.vdot(p, p))
    return q, exact_sq, error_sq


def _input_value_scale(
    name: str, lowered: Lowered, peaks: dict[str, float] | None, input_peak: float
) -> float:
    """Integer value per unit of the graded input: its 8 bits in full (``input_peak`` sends 127),
    unless a reader's K is held below what its weights allow by its bias, threshold or current
    (a stem whose folded BatchNorm bias is large). Its weights are then ``wmax * K / (64 * q)``
    integers at most, and the full input left them a few levels (SEW-ResNet-18's stem: weight
    error 0.39); q is lowered to where the largest weight and the largest input are the same
    integer, so that neither factor of a product keeps fewer bits than the other (docs/compile.md §3).
    Without data the current limit is left out: K is then taken as at most as limited as it is,
    which keeps q nearer the full input's."""
    full = (2 ** (LOIHI.input_bits - 1) - 1) / input_peak
    q = full
    for pop in lowered.populations.values():
        if pop.kind.sends_current:  # a relay's K is its grid's (docs/compile.md §3)
            continue
        wmax = max(
            (
                abs(pop.gain) * t.map.abs_max()
                for t in pop.synapse_groups
                if t.source == name and not t.map.recurrent
            ),
            default=0.0,
        )
        peak = 0.0 if peaks is None else peaks.get(pop.name, 0.0)
        held = min(_state_limits(pop, peak).values(), default=math.inf)
        if wmax > 0 and held < math.inf:
            q = min(q, math.sqrt(wmax * held / (LOIHI.act_unit * input_peak)))
    return max(q, 1.0 / input_peak)


def _made_once(made: dict[tuple, np.ndarray], q: np.ndarray) -> np.ndarray:
    """``q``, or the equal integer weights already made for another term, read-only and shared.
    A large compile makes many twice: every relay's identity of a size is the same matrix of
    ones, and a block's convolution that reaches two populations whose scales its weights set
    rounds to the same integers in both (DA-ResNet-152: 150 MiB of its 291, docs/compile.md §1)."""
    key = (
        q.shape,
        q.dtype.str,
        hashlib.blake2b(np.ascontiguousarray(q).data, digest_size=16).digest(),
    )
    same = made.get(key)
    if same is not None and np.array_equal(same, q):
        return same
    q.flags.writeable = False
    made.setdefault(key, q)
    return q


def _float_sigma_delta(lowered: Lowered, exact: bool) -> list[Problem]:
    """Every sigma-delta layer of a graph that does not hold the chip's integers."""
    return [
        Problem(
            name,
            "sigma-delta neurons are compiled from the chip's integers only (a lava-dl netx "
            "file), not from float weights",
            noun="layer",
        )
        for name, pop in lowered.populations.items()
        if pop.kind.sigma_delta and not exact
    ]


def quantise(
    lowered: Lowered,
    peaks: dict[str, float] | None,
    input_peak: float,
    input_graded: bool,
    exact: bool = False,
    pinned: dict[str, float] | None = None,
    keep_float: bool = False,
    problems: Problems | None = None,
) -> dict[str, Fixed]:
    """Integer weights (set on each term) and per-population fixed-point parameters.

    A map's float weight is dropped as soon as every term that holds it has its integers
    (their memory is most of a large network's compile), unless ``keep_float`` (the chip grid
    reads both).

    ``peaks``: each node's calibrated peak input current; None without data, when each
    population's largest possible current, its inputs at their bounds, stands in for it
    (:func:`_worst_current`), so that no current can wrap within the chip's 24 bits.
    ``exact``: the graph already holds the chip's integers in units of ``A``
    (``fixed_point = "loihi"``, e.g. a netx file): every scale is 64, nothing is rounded.
    ``pinned``: scales a model was trained on (its ``chip_scales``: ``K`` per population,
    the value scale of the input), used instead of calibrated ones where they fit, so that
    the rounding is the one training saw.
    ``problems``: where a layer it cannot quantise is reported (else the first raises).
    """
    problems = raising(problems)
    before = len(problems.found)
    problems.report(_float_sigma_delta(lowered, exact))
    problems.stop_if_found(before, "sigma-delta layers from float weights cannot be quantised")
    pinned = pinned or {}
    fixed: dict[str, Fixed] = {}
    made: dict[tuple, np.ndarray] = {}  # the integer weights made so far, by content
    holders = Counter(id(t.map) for pop in lowered.populations.values() for t in pop.synapse_groups)
    bound: dict[str, float] = {}  # without data: each population's largest |output| (float units)
    for name, pop in lowered.populations.items():
        if pop.kind.is_input:
            q = (
                _input_value_scale(name, lowered, peaks, input_peak)
                if input_graded and input_peak > 0 and not exact
                else 1.0
            )
            fixed[name] = Fixed(
                scale=1.0,
                value_scale=pinned.get(name, q) if input_graded else q,
                graded=input_graded,
            )
            bound[name] = input_peak if input_graded else 1.0
            continue
        if peaks is None:
            peak = bound[name] = _worst_current(pop, bound)
            if not pop.kind.sends_current:
                bound[name] = _spike_bound(pop, peak)
        else:
            peak = peaks.get(name[: -len(".relay")] if pop.kind.sends_current else name, 0.0)
        k, set_by = (
            (float(LOIHI.act_unit), "the graph's integers")
            if exact
            else _scale_for(pop, fixed, peak, peaks is not None)
        )
        if name in pinned and pinned[name] <= min(
            _limits(pop, fixed, 0.0).values(), default=float(LOIHI.act_unit)
        ) * (1 + 1e-6):
            k, set_by = (
                pinned[name],
                "the scale it was trained on",
            )  # the calibration headroom is not re-applied
        fixed[name] = f = Fixed(scale=k, scale_set_by=set_by)
        err_num = err_den = 0.0
        for t in pop.synapse_groups:
            q, exact_sq, error_sq = _integer_weights(
                name, t.map, weight_scale(fixed, pop, t), exact
            )
            q = _made_once(made, q)
            t.weight_q = (
                q if q.shape == t.map.weight.shape else np.broadcast_to(q, t.map.weight.shape)
            )
            repeats = t.map.weight.size // max(q.size, 1)
            err_den += repeats * exact_sq
            err_num += repeats * error_sq
        f.quant_error = math.sqrt(err_num / err_den) if err_den else 0.0
        # a multi-spike reset's count is a graded payload of units
        f.graded = pop.kind.graded or pop.firing.reset.multi_spike
        if pop.kind.sends_current:  # its K is the scale of the values it sends
            f.value_scale = k / LOIHI.act_unit
        if pop.kind.sigma_delta:  # its payloads are the chip's integers as they are
            f.vth = int(round(pop.threshold))
        if pop.kind.spiking:
            f.dv = _decay(pop)
            f.du = _current_decay(pop)
            f.vth = _threshold_integer(pop, k)
            if f.graded and f.vth < 1:  # a count is the voltage over vth << 6
                what = (
                    f"its threshold rounds to 0 at fixed-point scale {k:.3g} (set by {set_by}), "
                    f"so its spike count is undefined"
                )
                problems.report(
                    [Problem(name, what, "raise the threshold", f"vth {f.vth} < 1", "layer")]
                )
        if pop.bias is not None:
            mant = np.rint(k * pop.bias / LOIHI.bias_unit)
            if pop.kind.sends_current:
                raise AssertionError("relays carry no bias")
            f.bias_mant = mant.astype(np.int32)
        fixed[name] = f
        for t in (
            pop.synapse_groups if not keep_float else ()
        ):  # a map may be shared by several terms
            holders[id(t.map)] -= 1
            if not holders[id(t.map)]:
                t.map.weight = t.map.row_scale = None
        return_freed_memory()  # the rounding's float64 blocks, before the next population's integers
    return fixed


# ---- core mapping ---------------------------------------------------------------------


def map_to_cores(lowered: Lowered, profile: Profile, quantised: bool) -> dict[str, dict[str, Any]]:
    """Cores per population within the profile's limits, and the limit that sets them (``bound_by``).

    A neuron whose fan-in exceeds a core's input axons is split into dendritic
    compartments (Loihi's multi-compartment neurons sum them into one soma), each
    taking one neuron slot; cores are then set by neuron slots or synaptic memory. On a chip
    that shares convolution kernels (a profile with ``conv_tile_neurons``: Loihi 2), a
    population fed by convolutions alone is tiled along its width instead, every core storing
    the kernel once (:func:`conv_tiles`, docs/compile.md §4). On a chip whose profile states
    Intel's dense-layer split (Loihi 2), a population fed by dense maps alone takes at least the
    cores :func:`dense_split_cores` gives it.
    """
    npc = profile.limit("neurons_per_core")
    mem = profile.limit("synaptic_memory_per_core")
    axons = profile.limit("input_axons_per_core")
    wbits = profile.limit("weight_bits")
    delay_bits = max(1, int(profile.limit("max_synaptic_delay")).bit_length())
    tile = profile.constraints.get("conv_tile_neurons")
    synmem = (
        tuple(profile.limit(k) for k in DENSE_SPLIT)
        if all(k in profile.constraints for k in DENSE_SPLIT)
        else None
    )
    out = {}
    for name, pop in lowered.populations.items():
        if pop.kind.is_input:
            continue
        weights = [t.weight_q if quantised else None for t in pop.synapse_groups]
        counts = [
            0 if t.port else synapse_count(t.map, w) for t, w in zip(pop.synapse_groups, weights)
        ]
        bit_cost = [wbits + (delay_bits if t.delay else 0) for t in pop.synapse_groups]
        per_neuron = sum(
            fan_in(t.map, w) for t, w in zip(pop.synapse_groups, weights) if not t.port
        )
        neurons = pop.neurons if pop.kind.has_neurons else 0
        compartments = max(1, math.ceil(per_neuron / axons))
        if tile is not None and neurons and _convolutional(pop):
            kernel = sum(
                _kernel_entries(t.map, w) * b
                for t, w, b in zip(pop.synapse_groups, weights, bit_cost)
                if not t.port
            )
            tiles, split = (
                conv_tiles(pop.shape, compartments, int(tile.value)),
                max(1, math.ceil(kernel / mem)),
            )
            cores, bits = tiles * split, kernel * tiles
            bound = "conv tiles" if split == 1 else "synaptic memory"
        else:
            bits = sum(c * b for c, b in zip(counts, bit_cost))
            by_neurons, by_memory = math.ceil(neurons * compartments / npc), math.ceil(bits / mem)
            if synmem is not None and _dense(pop):  # a readout's outputs too: they hold synapses
                rows = [
                    (int(np.prod(t.map.in_shape)), _weight_bits_used(w, wbits))
                    for t, w in zip(pop.synapse_groups, weights)
                    if not t.port
                ]
                by_memory = max(by_memory, dense_split_cores(rows, pop.neurons, *synmem))
            cores = max(by_neurons, by_memory, 1)
            bound = bound_by(cores, by_neurons, by_memory)
        out[name] = {
            "kind": pop.kind.name,
            "neurons": neurons,
            "synapses": sum(counts),
            "synapse_bits": bits,
            "max_fan_in": per_neuron,
            "compartments_per_neuron": compartments,
            "cores": cores,
            "bound_by": bound,
            "latency": pop.latency,
            "max_delay": max((t.delay for t in pop.synapse_groups), default=0),
        }
        if any(
            t.map.recurrent for t in pop.synapse_groups
        ):  # the part of the above on recurrent synapses
            out[name]["recurrent_synapses"] = sum(
                c for c, t in zip(counts, pop.synapse_groups) if t.map.recurrent
            )
            out[name]["recurrent_synapse_bits"] = sum(
                c * b for c, b, t in zip(counts, bit_cost, pop.synapse_groups) if t.map.recurrent
            )
    return out


def _convolutional(pop: Population) -> bool:
    """Whether a population of ``(C, H, W)`` neurons is fed by convolutions alone (its input port aside)."""
    synaptic = [t for t in pop.synapse_groups if not t.port]
    return (
        len(pop.shape) == 3
        and bool(synaptic)
        and all(t.map.kind == "conv" and not t.map.recurrent for t in synaptic)
    )


def _dense(pop: Population) -> bool:
    """Whether a population is fed by dense maps alone (its input port aside)."""
    synaptic = [t for t in pop.synapse_groups if not t.port]
    return bool(synaptic) and all(t.map.kind == "dense" for t in synaptic)


def _weight_bits_used(weight: np.ndarray | None, weight_bits: int) -> int:
    """Bits of a layer's largest weight, sign included, as Intel's compiler sizes a dense layer's
    synapses (the chip's full width when only the structure is lowered)."""
    if weight is None or not weight.size:
        return weight_bits + 1
    part = distinct_part(weight)
    sign = int(bool((part < 0).any()))
    return max(1, int(np.abs(part).max()).bit_length()) + sign


def dense_split_cores(
    rows: list[tuple[int, int]], neurons: int, budget: int, unit_bits: int, extra_bits: int
) -> int:
    """Cores of a dense layer as Intel's Loihi 2 compiler splits one (docs/compile.md §4, "Dense
    layers on Loihi 2"): a core holding ``n`` of its neurons spends, per input axon of each
    synapse group ``(axons, weight bits b)`` in ``rows``, ``ceil(n * (b + extra_bits) /
    unit_bits)`` units of its ``SynMem`` register; while the fullest core's allocation exceeds
    ``budget``, the cores are multiplied by the ratio of the two, rounded up (the compile logs
    print 61,440 on one core, then 12,800 on six, then fit on twelve)."""
    cores = 1
    while True:
        n = math.ceil(neurons / cores)
        allocation = sum(a * math.ceil(n * (b + extra_bits) / unit_bits) for a, b in rows)
        if allocation <= budget or n == 1:
            return cores
        cores = min(neurons, cores * math.ceil(allocation / budget))


def _kernel_entries(m: Map, weight: np.ndarray | None) -> int:
    """Entries of a convolution's kernel as a core stores it once (its nonzero weights; every
    entry when only the structure is lowered)."""
    return int(np.prod(m.weight_shape)) if weight is None else int(np.count_nonzero(weight))


def conv_tiles(shape: tuple[int, ...], compartments: int, limit: int) -> int:
    """Cores of a convolutional layer ``(C, H, W)`` as Loihi 2's compiler tiles one: along its width,
    in tiles of a power-of-two width that hold all its channels and rows, each below ``limit``
    neuron slots (docs/compile.md §4: this rule gives the cores of every conv layer of Intel's
    PilotNet tables); a layer whose one column is already too large is cut into equal parts."""
    c, h, w = shape
    column = c * h * compartments
    if column >= limit:
        return math.ceil(column * w / (limit - 1))
    return math.ceil(w / (1 << ((limit - 1) // column).bit_length() - 1))


def check_mapping(
    mapping: dict[str, dict[str, Any]], profile: Profile, lowering: str, check_chips: bool = True
) -> list[Problem]:
    """Every limit a mapping breaks, one problem each (empty: it fits)."""
    mem = profile.limit("synaptic_memory_per_core")
    axons = profile.limit("input_axons_per_core")
    wbits = profile.limit("weight_bits")
    max_delay = profile.limit("max_synaptic_delay")
    remedy = (
        "use --lowering relay" if lowering == "expand" else "use a smaller input or a larger system"
    )
    problems = []
    for name, m in mapping.items():
        per_compartment = min(m["max_fan_in"], axons) * wbits
        if per_compartment > mem:
            what = (
                f"one neuron compartment needs {per_compartment} bits of synapses, more than "
                f"{profile.name}'s {mem} per core"
            )
            value = f"{per_compartment} > {mem} bits ({lowering})"
            problems.append(Problem(name, what, remedy, value, noun="layer"))
        if m["max_delay"] > max_delay:
            what = (
                f"needs a synaptic delay of {m['max_delay']} steps, more than {profile.name}'s "
                f"{max_delay}"
            )
            value = f"{m['max_delay']} > {max_delay} steps ({lowering})"
            problems.append(Problem(name, what, remedy, value, noun="layer"))
    cores = sum(m["cores"] for m in mapping.values())
    chips = math.ceil(cores / profile.limit("cores_per_chip"))
    if check_chips and chips > profile.limit("max_chips"):
        what = (
            f"the network needs {chips} chips ({cores} cores), more than the "
            f"{profile.limit('max_chips')} of the largest {profile.name} system"
        )
        value = f"{chips} > {profile.limit('max_chips')} chips ({lowering})"
        problems.append(Problem("", what, remedy, value))
    return problems


# ---- compile ----------------------------------------------------------------------------


def _calibration(
    graph: FlatGraph, calibration: torch.Tensor | None, exact: bool
) -> tuple[dict[str, float] | None, float, bool]:
    """Each node's peak input current (None without data), the input's peak value and whether
    the input is graded."""
    graded = calibration is not None and not bool(((calibration == 0) | (calibration == 1)).all())
    if exact:  # the chip's integers already: no calibration; inputs are sent as they are
        if graded and not torch.equal(calibration, calibration.round()):
            raise UserError(
                "this network takes the chip's integers as input, but the data are not integers"
            )
        return {}, 1.0, graded
    if calibration is None:  # no data: weights alone bound the currents, inputs assumed in [-1, 1]
        return None, 1.0, True
    return calibrate(graph, calibration), float(calibration.abs().max()), graded


def pipeline_problems(low: Lowered) -> list[Problem]:
    """A program with sigma-delta populations runs as one pipeline from one start (they have no
    reset); spiking populations start each sample afresh, so the two cannot be mixed yet."""
    if not low.pipelined:
        return []
    # neurons that start each sample afresh (Lava's reset interval): LIFs, gates, relays
    spiking = [
        n for n, p in low.populations.items() if p.kind.has_neurons and not p.kind.sigma_delta
    ]
    what = (
        "this network mixes spiking (LIF) layers with sigma-delta layers, which the compiler "
        "does not support yet"
    )
    remedy = "(a network of either kind compiles)"
    return [Problem(n, what, remedy, noun="layer", joint=" ") for n in spiking]


def count_problems(low: Lowered) -> list[Problem]:
    """Every multi-spike population whose threshold is not positive: its count, v / threshold,
    is undefined on any chip."""
    return [
        Problem(
            name,
            "a neuron that fires several spikes in one step needs a positive threshold (its "
            f"count is v / threshold), not {pop.threshold:g}",
            value=f"threshold {pop.threshold:g} <= 0",
            noun="layer",
        )
        for name, pop in low.populations.items()
        if pop.firing.reset.multi_spike and pop.threshold <= 0
    ]


def reset_problems(low: Lowered, profile: Profile) -> list[Problem]:
    """Every population whose reset only a programmable neuron runs (ir/resets.py), on a chip
    whose neurons reset to zero (``programmable_neurons``: Loihi 1)."""
    if profile.constraints.get("programmable_neurons") and profile.limit("programmable_neurons"):
        return []
    return [
        _programmed_reset(name, pop.firing, profile)
        for name, pop in low.populations.items()
        if pop.firing.reset.programmed
    ]


def _programmed_reset(name: str, fires: Firing, profile: Profile) -> Problem:
    """A layer whose reset ``profile``'s neurons, which reset to zero, cannot run."""
    soft = fires.at_threshold and fires.reset is Reset.SUBTRACT
    what = DESCRIPTIONS[fires.reset] + (
        " (SpikingJelly's soft reset, v_reset=None)" if soft else ""
    )
    return Problem(
        name,
        f"this neuron {what}, but {profile.name}'s neurons set the voltage to 0 when they fire "
        f"(no programmable neurons)",
        f"compile for loihi2-sim, retrain with reset to zero (snnTorch: "
        f"reset_mechanism='zero', reset_delay=False; SpikingJelly: v_reset=0.0), or pass "
        f"--reset {'spikingjelly' if soft else 'zero'} to compile it with {profile.name}'s reset "
        f"(its output then differs from the source framework's)",
        value=f"reset {fires.reset.value}",
        noun="layer",
    )


def compile_graph(
    graph: FlatGraph,
    target: str,
    profile: Profile,
    lowering: str,
    calibration: torch.Tensor | None,
    keep_float: bool = False,
    release_graph: bool = False,
    strict: bool = False,
    problems: Problems | None = None,
) -> tuple[Program, dict[str, Any]]:
    """Lower, quantise and map ``graph``; return the program and the cost of both lowerings.
    ``keep_float``: the program's maps keep their float weights beside the integers.
    ``release_graph``: the graph's arrays are dropped once it is lowered
    (:meth:`FlatGraph.release_arrays`), so that each float weight is freed as soon as it is
    quantised; the caller reads only the graph's structure afterwards. The calibration samples
    are dropped once calibrated: a caller that keeps no reference to them frees them then.
    Every layer whose weight error is above ``WEIGHT_ERROR_BOUND`` is named on stderr
    (``Program.warnings``), or, with ``strict``, is an error; ``auto`` then compiles the other
    lowering too, where it fits, and keeps the program whose worst layer is better.

    ``problems``: where every check reports what it finds (``danet-deploy check``: each such
    layer is a problem, as with ``strict``); the compile goes on while it can. Without, the
    first problem is raised as a one-line error."""
    if profile.kind != "chip":
        raise UserError(
            f"profile {profile.name!r} is an accounting convention, not a compile target"
        )
    problems = raising(problems)
    costs: dict[str, Any] = {}
    violations: dict[str, list[Problem]] = {}
    structures = {mode: lower(graph, mode, False, problems) for mode in ("expand", "relay")}
    for mode, structure in structures.items():  # structure only: what each lowering would cost
        mapping = map_to_cores(structure, profile, quantised=False)
        # the chip count is checked after quantisation, when zero weights no longer count
        violations[mode] = check_mapping(mapping, profile, mode, False)
        costs[mode] = {
            **summarise(mapping, profile),
            "violations": [p.message for p in violations[mode]],
            "counted": "structural (every weight of each synapse group)",
        }
    before = len(problems.found)
    problems.report(count_problems(structures["expand"]))
    problems.stop_if_found(before, "a layer whose spike count is undefined cannot be quantised")
    problems.report(reset_problems(structures["expand"], profile))
    relay_pops = any(p.kind.sends_current for p in structures["relay"].populations.values())
    del structures, structure  # index arrays of two whole lowerings: gone before calibration's
    return_freed_memory()
    chosen = lowering
    if lowering == "auto" and violations["expand"] and violations["relay"]:
        if not problems.collect:
            raise UserError(
                f"neither lowering fits {profile.name}: expand: {costs['expand']['violations'][0]}; "
                f"relay: {costs['relay']['violations'][0]}"
            )
        problems.report(violations["expand"] + violations["relay"])  # every layer, each lowering
        raise ChecksStopped(f"neither lowering fits {profile.name}, so none was quantised")
    if lowering == "auto":  # expand unless relay fits where expand does not, or needs fewer cores
        relay_better = not costs["relay"]["violations"] and (
            costs["expand"]["violations"] or costs["relay"]["cores"] < costs["expand"]["cores"]
        )
        chosen = "relay" if relay_better and profile.limit("graded_spikes") else "expand"
    if chosen == "relay" and relay_pops and not profile.limit("graded_spikes"):
        problems.report(
            [
                Problem(
                    "",
                    f"{profile.name} has no graded spikes, so relay lowering is impossible",
                    "use --lowering expand",
                    "graded_spikes = 0",
                )
            ]
        )
        raise ChecksStopped(f"relay lowering cannot be quantised for {profile.name}")
    other = {"expand": "relay", "relay": "expand"}[chosen]
    other_fits = not costs[other]["violations"] and (
        other == "expand" or profile.limit("graded_spikes")
    )
    exact = graph.metadata.get("fixed_point") == "loihi"
    # calibrated before the weights are lowered, so that its activations are gone when they are built
    scales = _calibration(graph, calibration, exact)
    del calibration
    return_freed_memory()
    second = (
        lowering == "auto" and other_fits
    )  # the other may be needed: the graph's arrays stay till then
    program = _program(
        graph, target, profile, chosen, scales, keep_float, release_graph and not second, problems
    )
    if second and _worst(program) > WEIGHT_ERROR_BOUND:
        alternative = _program(
            graph, target, profile, other, scales, keep_float, release_graph, problems
        )
        if _worst(alternative) < _worst(program):
            program, other = alternative, chosen
    if release_graph:
        graph.release_arrays()
    above = weight_problems(program, other if other_fits else None, lowering == "auto")
    program.warnings = [p.message for p in above]
    if strict and program.warnings:
        more = len(program.warnings) - 1
        raise UserError(
            program.warnings[0] + (f" (and {more} more layers)" if more else "") + " (--strict)"
        )
    problems.report(above if problems.collect else [])  # check lists them as problems
    for warning in [*([] if problems.collect else program.warnings), *_threshold_notes(program)]:
        print(f"danet-deploy: warning: {warning}", file=sys.stderr)
    return program, costs


def _program(
    graph: FlatGraph,
    target: str,
    profile: Profile,
    chosen: str,
    scales: tuple[dict[str, float] | None, float, bool],
    keep_float: bool,
    release_graph: bool,
    problems: Problems,
) -> Program:
    """``graph`` lowered by ``chosen``, quantised with the calibrated ``scales`` and mapped;
    what it cannot compile is reported to ``problems``."""
    peaks, input_peak, input_graded = scales
    low = lower(graph, chosen)
    if release_graph:
        graph.release_arrays()
    return_freed_memory()
    problems.report(pipeline_problems(low))
    input_graded = (
        input_graded or low.pipelined
    )  # a sigma-delta network takes its input's values as they are
    pinned = json.loads(graph.metadata.get("chip_scales", "{}"))
    exact = graph.metadata.get("fixed_point") == "loihi"
    fixed = quantise(low, peaks, input_peak, input_graded, exact, pinned, keep_float, problems)
    mapping = map_to_cores(low, profile, quantised=True)
    problems.report(check_mapping(mapping, profile, chosen), count_rest="more")
    program = Program(target, profile.name, low, fixed, mapping)
    for pop in low.readouts:
        if pop.bias is not None:
            program.readout_bias[pop.name] = np.rint(
                fixed[pop.name].scale * pop.bias / LOIHI.bias_unit
            ).astype(np.int64)
    return program


def _worst(program: Program) -> float:
    """The largest weight error of ``program``'s layers."""
    return max((f.quant_error for f in program.fixed.values()), default=0.0)


def weight_problems(program: Program, other: str | None, compared: bool) -> list[Problem]:
    """Every layer whose weight error is above ``WEIGHT_ERROR_BOUND``: the error, what set its
    scale and what would do better (docs/compile.md §3); a warning, an error with ``--strict``,
    a problem to ``check``. ``other``: the lowering that also fits; ``compared``: ``auto``
    compiled it too and it was no better."""
    found = []
    for name, f in program.fixed.items():
        if f.quant_error <= WEIGHT_ERROR_BOUND:
            continue
        remedies = []
        if other is not None:
            remedies.append(
                f"--lowering {other} was no better" if compared else f"try --lowering {other}"
            )
        if "calibration" in f.scale_set_by:
            remedies.append(
                "calibration data (--data) whose currents are those of real inputs may allow more"
            )
        remedies = remedies or ["the layer's weights span more than its 8 bits hold at this scale"]
        what = (
            f"weight error {f.quant_error:.3g} is above the bound {WEIGHT_ERROR_BOUND:g} (its "
            f"fixed-point scale is set by {f.scale_set_by})"
        )
        value = f"{f.quant_error:.3g} > {WEIGHT_ERROR_BOUND:g}"
        found.append(Problem(name, what, "; ".join(remedies), value, noun="layer"))
    return found
