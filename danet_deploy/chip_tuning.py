"""The chip's grid for training: compile the model as ``export`` would, and read off the
scale of every population and of every weight the program holds whole.

slayer trains its own networks with their weights on Loihi's 8-bit grid (``quantize_8bit``),
so that its evaluation is the network the chip runs. Our zoo keeps BatchNorm, which the
compiler folds into the weights and rounds at a scale per population. The last epochs
of ``train --framework lava-dl`` therefore run on the compiler's own grid (see
``SpikingNet.chip_grid``), and export pins the compiler to these scales (graph metadata
``chip_scales``): the program's integers are then the ones training used.

This module sits above the compiler (it compiles); ``train`` receives it as a callback.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import torch

from .compile import TARGETS, compile_graph, weight_scale
from .converters.nir_export import to_nir
from .converters.nir_import import from_nir
from .ir.chip_format import LOIHI
from .ir.graph import FlatGraph
from .artifacts import calibration_data
from .ir.program import Population, Program, SynapseGroup
from .models import Node, SpikingNet
from .profiles import load_profile

TARGET = "loihi2-sim"  # the grid is that of `export --target loihi2-sim` (default lowering)


def chip_grid(model: SpikingNet, data: str) -> dict[str, Any]:
    """The grid of ``model`` compiled with calibration on ``data`` (``SpikingNet.chip_grid``):
    ``scales`` (``K`` per population, the input's value scale), ``weights`` (integer weight
    per unit of each weight the program holds whole) and ``biases`` (integer bias per unit
    of each BatchNorm shift and of the readout's bias)."""
    was_training = model.training
    model.eval()
    graph = from_nir(to_nir(model))
    program = _compile_on_powers_of_two(graph, calibration_data(data, graph))
    model.train(was_training)
    weights: dict[str, set[float]] = {}
    biases: dict[str, float] = {}
    for node in model.nodes:
        neuron = model.next_after_sums(node)
        if (
            node.op == "bn"
            and neuron is not None
            and neuron.op == "lif"
            and neuron.name in program.fixed
        ):
            biases[node.name] = (
                program.fixed[neuron.name].scale / LOIHI.bias_unit
            )  # the shift is the neuron's bias
        held = _held_weight(model, graph, node)
        for pop, t in _terms(program) if held is not None else []:
            if node.op == "linear":  # the readout: global average pooling composed into it
                spread = _spread_over_positions(t.map.values(), held)
                if pop.kind.is_readout and spread:
                    weights.setdefault(node.name, set()).add(
                        weight_scale(program.fixed, pop, t) / spread
                    )
                    biases[node.name] = program.fixed[pop.name].scale / LOIHI.bias_unit
            elif t.map.weight.shape == held.shape and np.allclose(
                t.map.values(), held, rtol=1e-6, atol=0
            ):
                weights.setdefault(node.name, set()).add(weight_scale(program.fixed, pop, t))
    return {
        "weights": {name: s.pop() for name, s in sorted(weights.items()) if len(s) == 1},
        "biases": biases,
        "scales": _scales(program),
    }


def _compile_on_powers_of_two(graph: FlatGraph, calibration: torch.Tensor) -> Program:
    """The program with the ``K`` of every neuron population and readout, and the input's
    scale, rounded down to powers of two: slayer's integer state (kept at ``K`` per unit),
    its float views and the float class scores are then exact. A smaller input scale can
    lower the first layer's limit, so the scales are pinned again until they settle."""
    profile = load_profile(TARGETS[TARGET])
    pinned: dict[str, float] = {}
    for _ in range(4):
        graph.metadata["chip_scales"] = json.dumps(pinned)
        program, _ = compile_graph(graph, TARGET, profile, "auto", calibration, keep_float=True)
        wanted = _powers_of_two(program)
        if wanted == {k: v for k, v in _scales(program).items() if k in wanted}:
            return program
        pinned = wanted
    raise AssertionError("the chip's scales did not settle on powers of two")


def _held_weight(model: SpikingNet, graph: FlatGraph, node: Node) -> np.ndarray | None:
    """What a synapse group of the program holds for ``node`` if the lowering keeps it whole:
    a conv's weight times the BatchNorm that scales it (folded, or on the stream it feeds);
    a stream BatchNorm's scale on spikes (a 1x1 conv, one weight per channel); a linear
    readout's weight. None for the other nodes."""
    if node.op == "conv" and node.name in graph.nodes:
        w = np.asarray(
            graph.nodes[node.name].weight, dtype=np.float64
        )  # BN folded where it follows directly
        bn = model.scaling_bn(node)
        if bn is not None and bn != model.folded_bn(node):
            w = w * model.bn_affine(bn)[0].double().numpy()[:, None, None, None]
        return w
    if node.op == "bn" and node.name in graph.nodes:
        return np.diag(model.bn_affine(node)[0].double().numpy())[:, :, None, None]
    if node.op == "linear" and node.name in graph.nodes:
        return np.asarray(graph.nodes[node.name].weight, dtype=np.float64)[:, :, 0, 0]
    return None


def _terms(program: Program) -> list[tuple[Population, SynapseGroup]]:
    return [(pop, t) for pop in program.populations.values() for t in pop.synapse_groups]


def _spread_over_positions(term_weight: np.ndarray, fc: np.ndarray) -> int:
    """How many positions a readout term spreads ``fc`` evenly over (global average pooling
    composed into it: ``fc / positions`` at each), or 0 if it is not that."""
    if term_weight.shape[0] != fc.shape[0] or term_weight.size % fc.size:
        return 0
    w = term_weight.reshape(fc.shape[0], fc.shape[1], -1)
    positions = w.shape[2]
    return positions if np.allclose(w * positions, fc[:, :, None], rtol=1e-6, atol=0) else 0


def _scales(program: Program) -> dict[str, float]:
    """The compiler's ``K`` per population; for the input, its value scale."""
    return {
        name: f.value_scale if program.populations[name].kind.is_input else f.scale
        for name, f in program.fixed.items()
    }


def _powers_of_two(program: Program) -> dict[str, float]:
    """Neuron, readout and graded-input scales rounded down to powers of two (at least 64)."""
    return {
        name: float(2 ** max(LOIHI.act_shift, math.floor(math.log2(k))))
        for name, k in _scales(program).items()
        if program.populations[name].kind.trained_state
        or (program.populations[name].kind.is_input and program.fixed[name].graded)
    }
