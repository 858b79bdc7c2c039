"""The one statement of each neuron's update (danet_deploy/ir/neurons.py) against the
equations each framework's exporter means, written out here step by step (docs/nir.md)."""

from __future__ import annotations

import math

import nir
import numpy as np
import pytest

from danet_deploy.ir.graph import FlatGraph
from danet_deploy.ir.neurons import dynamics, membrane_step
from danet_deploy.lowering import lower

DT, TAU_SYN, TAU_MEM, W_IN, R, LEAK = 1e-3, 4e-3, 5e-3, 1.5, 2.0, 0.25
X = np.array([1.0, 0.0, 2.0, -1.0, 0.5])


def _graph(node: nir.NIRNode, discretisation: str) -> FlatGraph:
    return FlatGraph(
        {"in": nir.Input(np.array([1])), "n": node, "out": nir.Output(np.array([1]))},
        {"in": [], "n": ["in"], "out": ["n"]},
        {"in": (1,), "n": (1,), "out": (1,)},
        ["in"],
        ["out"],
        DT,
        discretisation=discretisation,
    )


def _cuba() -> nir.CubaLIF:
    one = np.ones(1)
    return nir.CubaLIF(
        tau_syn=TAU_SYN * one,
        tau_mem=TAU_MEM * one,
        r=R * one,
        v_leak=LEAK * one,
        v_threshold=1e9 * one,
        w_in=W_IN * one,
    )


def _written_out(discretisation: str) -> list[float]:
    """A CubaLIF's voltage trace as each convention states it (docs/nir.md, DISCRETISATIONS)."""
    ks, km = DT / TAU_SYN, DT / TAU_MEM
    if discretisation == "rockpool":
        ks, km = 1 - math.exp(-DT / TAU_SYN), 1 - math.exp(-DT / TAU_MEM)
    i = v = 0.0
    trace = []
    for x in X:
        if discretisation == "euler":
            i = i + ks * (-i + W_IN * x)
            v = v + km * (LEAK - v + R * i)
        elif discretisation == "norse":  # LIFCell: the input jumps into the current
            i = (1 - ks) * i + W_IN * x
            v = v + km * (LEAK - v + R * i)
        else:  # rockpool's LIFTorch: i <- e (i + w_in x), v <- b v + i (its r only encodes dt)
            i = (1 - ks) * (i + W_IN * x)
            v = v + km * (LEAK - v) + i
        trace.append(v)
    return trace


@pytest.mark.parametrize("discretisation", ["euler", "norse", "rockpool"])
def test_cuba_update_is_each_frameworks_equation(discretisation: str) -> None:
    d = dynamics(_cuba(), _graph(_cuba(), discretisation))
    i = v = np.zeros(1)
    got = []
    for x in X:
        i, v = membrane_step(d, i, v, np.array([x]))
        got.append(float(v[0]))
    assert np.allclose(got, _written_out(discretisation), rtol=1e-12, atol=0)


def test_lowered_population_holds_the_same_factors() -> None:
    """Loihi's u = current_gain i: the population's gain folds both gains, alpha and beta are the decays."""
    graph = _graph(_cuba(), "euler")
    pop = lower(graph, "expand").populations["n"]
    assert pop.alpha == pytest.approx(1 - DT / TAU_SYN) and pop.beta == pytest.approx(
        1 - DT / TAU_MEM
    )
    assert pop.gain == pytest.approx((DT / TAU_SYN) * W_IN * (DT / TAU_MEM) * R)
    assert pop.bias == pytest.approx([DT / TAU_MEM * LEAK])


def test_if_adds_dt_r_x_and_lif_without_current_reads_its_input() -> None:
    one = np.ones(1)
    d = dynamics(
        nir.IF(r=R * one, v_threshold=one), _graph(nir.IF(r=R * one, v_threshold=one), "euler")
    )
    assert not d.has_current and membrane_step(d, None, np.array([0.5]), np.array([2.0]))[
        1
    ] == pytest.approx(0.5 + DT * R * 2.0)
    lif = nir.LIF(tau=TAU_MEM * one, r=R * one, v_leak=0 * one, v_threshold=one)
    d = dynamics(lif, _graph(lif, "euler"))
    assert membrane_step(d, None, np.array([0.5]), np.array([2.0]))[1] == pytest.approx(
        0.5 + DT / TAU_MEM * (-0.5 + R * 2.0)
    )
