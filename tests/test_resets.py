"""The reset rules' integer update (ir/resets.py: fire_integer) against a plain per-neuron model
written from docs/compile.md's table, on numpy's integers (our Lava neuron's) and on integers in
torch float64 tensors (the fast simulator's): both must give the model's values exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from danet_deploy.errors import UserError
from danet_deploy.ir.resets import Firing, Reset, convention_firing, fire_integer

V_MAX = 2**23 - 1


def _one_neuron(firing: Firing, v: int, theta: int, fired: int) -> tuple[int, int, int]:
    """docs/compile.md, "Programmed resets", for one neuron: (output, voltage, fired)."""
    rule = firing.reset
    if rule is Reset.ZERO_LATE and fired:
        v = 0
    if rule is Reset.SUBTRACT_LATE and fired:
        v = max(-V_MAX, min(V_MAX, v - theta))
    if rule.multi_spike:
        n = v // theta if v >= theta else 0
        v -= n * theta
        if rule is Reset.MULTI_SPIKE_FLOOR and v < -theta:
            v = -theta
        return n, v, fired
    spike = int(v >= theta if firing.at_threshold else v > theta)
    if spike and rule is Reset.ZERO:
        v = 0
    if spike and rule is Reset.SUBTRACT:
        v -= theta
    return spike, v, spike if rule.late else fired


@pytest.mark.parametrize("at_threshold", [False, True])
@pytest.mark.parametrize("rule", list(Reset))
def test_integer_rule_equals_a_plain_model_on_numpy_and_torch(rule: Reset, at_threshold: bool):
    rng = np.random.default_rng(7)
    firing = Firing(rule, at_threshold)
    theta = 64 * 37
    v = rng.integers(-V_MAX, V_MAX, 4000)
    v[:1000] = rng.integers(-3 * theta, 3 * theta, 1000)  # near the threshold and its multiples
    v[1000:1100] = theta * rng.integers(-3, 4, 100)  # ties
    fired = rng.random(4000) < 0.5
    want = np.array([_one_neuron(firing, int(a), theta, int(b)) for a, b in zip(v, fired)]).T
    for xp_v, xp_fired in (
        (v.astype(np.int64), fired),
        (torch.tensor(v, dtype=torch.float64), torch.tensor(fired)),
    ):
        out, new_v, new_fired = fire_integer(firing, xp_v, theta, xp_fired, V_MAX)
        got = [np.asarray(a, dtype=np.float64) for a in (out, new_v, new_fired)]
        for name, g, w in zip(("output", "voltage", "fired"), got, want):
            assert np.array_equal(g, w), f"{rule.value}: {name} differs"


def test_multi_spike_fires_at_the_threshold_whatever_the_convention_says():
    assert Firing(Reset.MULTI_SPIKE).at_threshold and Firing("multi-spike-floor").at_threshold


def test_conventions_name_their_rules():
    assert convention_firing("snntorch-subtract", False).reset is Reset.SUBTRACT_LATE
    assert convention_firing("snntorch-zero", True).reset is Reset.ZERO_LATE
    assert convention_firing("snntorch-zero", False).reset is Reset.ZERO
    soft = convention_firing("spikingjelly-soft", False)
    assert (soft.reset, soft.at_threshold, soft.starts_at_reset) == (Reset.SUBTRACT, True, False)
    assert [r.programmed for r in Reset] == [False, True, True, True, True, True]


def test_a_program_file_with_an_unknown_reset_is_refused_in_one_line(tmp_path):
    import h5py

    from danet_deploy.compile import compile_graph
    from danet_deploy.converters.nir_import import from_nir
    from danet_deploy.ir.program import read_program, write_program
    from danet_deploy.profiles import load_profile

    from .test_differential import random_graph

    graph = from_nir(random_graph(3), dt=1.0, reset="subtract")
    program, _ = compile_graph(graph, "loihi2-sim", load_profile("loihi2"), "expand", None)
    write_program(tmp_path / "p.h5", program)
    assert read_program(tmp_path / "p.h5").populations["n3"].firing.reset is Reset.SUBTRACT
    with h5py.File(tmp_path / "p.h5", "r+") as f:
        for g in f["populations"].values():
            if "reset" in g.attrs:
                g.attrs["reset"] = "sideways"
    with pytest.raises(
        UserError, match=r"p\.h5: population 'n\d+' has an unknown reset 'sideways'"
    ):
        read_program(tmp_path / "p.h5")


def test_a_multi_spike_layer_without_a_positive_threshold_is_refused_in_one_line():
    import nir

    from danet_deploy.compile import compile_graph
    from danet_deploy.converters.nir_import import from_nir
    from danet_deploy.profiles import load_profile

    nodes = {
        "input": nir.Input(input_type={"input": np.array([4])}),
        "fc": nir.Affine(np.ones((3, 4)), np.zeros(3)),
        "if": nir.IF(r=np.ones(3), v_threshold=np.zeros(3)),
        "out": nir.Affine(np.ones((2, 3)), np.zeros(2)),
        "output": nir.Output(output_type={"output": np.array([2])}),
    }
    edges = [("input", "fc"), ("fc", "if"), ("if", "out"), ("out", "output")]
    graph = from_nir(
        nir.NIRGraph(nodes=nodes, edges=edges, type_check=False), dt=1.0, reset="sinabs"
    )
    with pytest.raises(
        UserError, match=r"^layer 'if': a neuron that fires several spikes .* not 0$"
    ):
        compile_graph(graph, "loihi2-sim", load_profile("loihi2"), "expand", None)
