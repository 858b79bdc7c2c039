"""How a compiled program holds its weights: once over kernel taps where they repeat, as
int16 integers, without float copies; the same integers in memory, in program.h5 and in the
fast simulator's results (docs/compile.md §1, "How weights are held")."""

from __future__ import annotations

import copy
import dataclasses
import gc
import weakref
from pathlib import Path

import h5py
import nir
import numpy as np
import pytest
import torch

import danet_deploy.compile as compile_module
from danet_deploy.checkpoint import save_checkpoint
from danet_deploy.compile import compile_graph, weight_scale
from danet_deploy.converters.nir_export import to_nir
from danet_deploy.converters.nir_import import from_nir, read_nir
from danet_deploy.ir.interpreter import ReferenceSimulator
from danet_deploy.artifacts import load_artifact
from danet_deploy.ir.program import (
    distinct_part,
    fan_in,
    read_program,
    synapse_count,
    write_program,
)
from danet_deploy.lowering import _pointwise_after, _pool_of, identity
from danet_deploy.models import build
from danet_deploy.profiles import load_profile
from danet_deploy.simulator.fixed import FixedSimulator
from danet_deploy.synapses import WEIGHT_DTYPE, round_weights


def _compiled(tmp_path: Path, keep_float: bool = False):
    """The digits DANet, whose readout pools 4x4 positions into its classifier (one 4x4 conv)."""
    torch.manual_seed(0)
    model = build("digits_resnet", "da", 10, timesteps=3).eval()
    nir.write(tmp_path / "g.nir", to_nir(model))
    x = torch.rand(6, 3, 1, 8, 8) * 2
    program, _ = compile_graph(
        read_nir(tmp_path / "g.nir"),
        "loihi2-sim",
        load_profile("loihi2"),
        "auto",
        x,
        keep_float=keep_float,
    )
    return program, x


def _held_once(program):
    return [
        (pop, t)
        for pop in program.populations.values()
        for t in pop.synapse_groups
        if distinct_part(t.weight_q) is not t.weight_q
    ]


def test_a_pooled_readout_is_held_once_and_rounds_as_its_every_tap_would(tmp_path: Path) -> None:
    program, _ = _compiled(tmp_path, keep_float=True)
    held = _held_once(program)
    assert [pop.kind.name for pop, _ in held] == ["readout"]
    pop, term = held[0]
    assert term.weight_q.shape[2:] != (1, 1) and term.weight_q.strides[2:] == (0, 0)
    whole = np.array(term.map.weight)  # every tap, materialised
    exact = weight_scale(program.fixed, pop, term) * whole
    assert np.array_equal(term.weight_q, round_weights(torch.from_numpy(exact)).numpy())
    assert synapse_count(term.map, term.weight_q) == synapse_count(
        term.map, np.array(term.weight_q)
    )
    assert fan_in(term.map, term.weight_q) == fan_in(term.map, np.array(term.weight_q))
    assert term.map.abs_max() == float(np.abs(whole).max())


def test_a_batchnorm_after_a_sum_scales_its_convs_lazily_and_exactly(tmp_path: Path) -> None:
    """The row scale stands for the float64 product it replaces: the largest value and every
    block of rows are those of the product made whole."""
    program, _ = _compiled(tmp_path, keep_float=True)
    scaled = [
        t.map
        for pop in program.populations.values()
        for t in pop.synapse_groups
        if t.map.row_scale is not None
    ]
    assert scaled
    for m in scaled:
        whole = m.weight * m.row_scale.reshape(-1, *([1] * (m.weight.ndim - 1)))
        assert m.abs_max() == float(np.abs(whole).max())
        assert np.array_equal(
            np.concatenate([m.values(slice(i, i + 3)) for i in range(0, len(whole), 3)]), whole
        )


def test_rounding_a_block_of_rows_at_a_time_gives_the_integers_of_the_whole(
    tmp_path: Path, monkeypatch
) -> None:
    whole, _ = _compiled(tmp_path)
    monkeypatch.setattr(
        compile_module, "QUANTISE_BLOCK", 5
    )  # a few rows (one, for the larger ones) at a time
    blocks, _ = _compiled(tmp_path)
    for name, pop in whole.populations.items():
        for t, u in zip(pop.synapse_groups, blocks.populations[name].synapse_groups, strict=True):
            assert np.array_equal(t.weight_q, u.weight_q), name
        assert whole.fixed[name].quant_error == pytest.approx(
            blocks.fixed[name].quant_error, rel=1e-9
        )


def test_calibrating_a_few_samples_at_a_time_finds_the_peaks_of_all_at_once(
    tmp_path: Path, monkeypatch
) -> None:
    torch.manual_seed(0)
    nir.write(tmp_path / "g.nir", to_nir(build("digits_resnet", "da", 10, timesteps=3).eval()))
    graph = read_nir(tmp_path / "g.nir")
    x = torch.rand(6, 3, 1, 8, 8) * 2
    whole = compile_module.calibrate(graph, x)
    runs = []
    run = compile_module.ReferenceSimulator.run
    monkeypatch.setattr(
        compile_module.ReferenceSimulator,
        "run",
        lambda self, chunk, **kw: runs.append(len(chunk)) or run(self, chunk, **kw),
    )
    per_sample = compile_module.ReferenceSimulator(graph).held_bytes_per_sample(x.shape[1])
    monkeypatch.setattr(compile_module, "CALIBRATION_CHUNK_BYTES", 2 * per_sample)
    chunked = compile_module.calibrate(graph, x)
    assert runs == [2, 2, 2] and chunked.keys() == whole.keys()
    assert (
        chunked == pytest.approx(whole, rel=1e-6)
        and sum(v > 0 for v in whole.values()) > len(whole) // 2
    )


def test_equal_integer_weights_are_made_once_and_shared_read_only(
    tmp_path: Path, monkeypatch
) -> None:
    torch.manual_seed(0)
    graph = from_nir(
        to_nir(build("resnet20", "da", 10, timesteps=2, input_shape=(3, 16, 16)).eval())
    )
    x = torch.rand(4, 2, 3, 16, 16)
    shared, _ = compile_graph(copy.deepcopy(graph), "loihi2", load_profile("loihi2"), "relay", x)
    monkeypatch.setattr(compile_module, "_made_once", lambda made, q: q)
    apart, _ = compile_graph(graph, "loihi2", load_profile("loihi2"), "relay", x)
    terms = [
        (t, u)
        for name, pop in shared.populations.items()
        for t, u in zip(pop.synapse_groups, apart.populations[name].synapse_groups, strict=True)
    ]
    assert all(
        np.array_equal(t.weight_q, u.weight_q) and t.weight_q.dtype == u.weight_q.dtype
        for t, u in terms
    )
    assert {n: f.quant_error for n, f in shared.fixed.items()} == {
        n: f.quant_error for n, f in apart.fixed.items()
    }
    arrays = {id(t.weight_q): t.weight_q for t, _ in terms}
    assert len(arrays) < len(terms)
    for a in arrays.values():
        assert not a.flags.writeable
        assert not any(
            b is not a and b.shape == a.shape and np.array_equal(a, b) for b in arrays.values()
        )


def test_an_averaged_identity_and_the_map_after_it_are_the_products_they_stand_for() -> None:
    """An average pool of a population's own output stays its identity with each row scaled,
    and a pointwise map after it is that map with its columns scaled: the same bits as the
    float64 identity divided by the pool's size, and as the matrix product after it."""
    pooled = _pool_of(identity((6, 4, 4)), (4, 4), (4, 4), (0, 0), True, (6, 1, 1))
    assert np.shares_memory(distinct_part(pooled.weight), identity((6, 1, 1)).weight)
    divided = np.broadcast_to(np.eye(6)[:, :, None, None] / 16, (6, 6, 4, 4))
    assert np.array_equal(pooled.values(), divided)
    w2 = np.random.default_rng(0).normal(size=(5, 6))
    expected = np.tensordot(w2, divided[:, :, :1, :1], axes=([1], [0]))
    got = _pointwise_after(w2, pooled)
    assert got.shape == (5, 6, 4, 4) and np.array_equal(distinct_part(got), expected)


def test_identity_maps_of_one_size_share_one_read_only_matrix() -> None:
    a, b = identity((64, 4, 4)), identity((64, 2, 2))
    assert np.shares_memory(a.weight, b.weight) and not a.weight.flags.writeable
    assert np.array_equal(a.weight[:, :, 0, 0], np.eye(64))


def test_integers_only_once_compiled(tmp_path: Path) -> None:
    program, _ = _compiled(tmp_path)
    terms = [t for pop in program.populations.values() for t in pop.synapse_groups]
    assert all(t.map.weight is None and t.weight_q.dtype == WEIGHT_DTYPE for t in terms)


def test_program_file_writes_a_held_weight_once_and_reads_back_the_same_program(
    tmp_path: Path,
) -> None:
    program, x = _compiled(tmp_path)
    write_program(tmp_path / "program.h5", program)
    back = read_program(tmp_path / "program.h5")
    for name, pop in program.populations.items():
        for t, u in zip(pop.synapse_groups, back.populations[name].synapse_groups):
            assert t.weight_q.shape == u.weight_q.shape and np.array_equal(
                t.weight_q, u.weight_q
            ), name
    ((pop, term),) = _held_once(program)
    index = list(program.populations).index(pop.name)
    with h5py.File(tmp_path / "program.h5") as f:
        stored = f[f"populations/{index}/terms/0"]
        assert stored["weight"].shape == (*term.weight_q.shape[:2], 1, 1)
        assert list(stored.attrs["kernel"]) == list(term.weight_q.shape[2:])
    assert torch.equal(FixedSimulator(program).scores(x), FixedSimulator(back).scores(x))


def _as_float64(graph: nir.NIRGraph) -> nir.NIRGraph:
    """A copy of ``graph`` whose float32 arrays are float64 (the same values, exactly)."""
    graph = copy.deepcopy(graph)
    for node in graph.nodes.values():
        for f in dataclasses.fields(node):
            value = getattr(node, f.name)
            if isinstance(value, np.ndarray) and value.dtype == np.float32:
                setattr(node, f.name, value.astype(np.float64))
    return graph


def _an_identity(w: np.ndarray) -> bool:
    """``w`` is the shared identity matrix of its size (a population's own output, row-scaled)."""
    return (
        w.ndim == 4
        and w.shape[2:] == (1, 1)
        and np.shares_memory(w, identity((w.shape[1], 1, 1)).weight)
    )


def test_float32_weights_held_as_they_are_compile_to_the_integers_of_float64_ones() -> None:
    torch.manual_seed(0)
    model = build("digits_resnet", "da", 10, timesteps=3).eval()
    with (
        torch.no_grad()
    ):  # BatchNorm that is not the identity: its Scale nodes compose into the convs
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 2.0)
    nir_graph = to_nir(model)
    x = torch.rand(6, 3, 1, 8, 8) * 2
    programs = [
        compile_graph(
            from_nir(g), "loihi2-sim", load_profile("loihi2"), "relay", x, keep_float=True
        )[0]
        for g in (nir_graph, _as_float64(nir_graph))
    ]
    held = [
        t.map.weight
        for pop in programs[0].populations.values()
        for t in pop.synapse_groups
        if t.map.weight.dtype == np.float32
        and pop.kind.name == "lif"
        and not _an_identity(t.map.weight)
    ]
    conv_weights = [
        np.asarray(n.weight) for n in nir_graph.nodes.values() if isinstance(n, nir.Conv2d)
    ]
    assert held and all(
        any(np.shares_memory(w, c) for c in conv_weights) for w in held
    )  # not copies
    ours, reference = programs
    assert list(ours.populations) == list(reference.populations)
    for name, pop in ours.populations.items():
        for f in dataclasses.fields(ours.fixed[name]):
            assert np.array_equal(
                getattr(ours.fixed[name], f.name), getattr(reference.fixed[name], f.name)
            ), name
        for t, r in zip(
            pop.synapse_groups, reference.populations[name].synapse_groups, strict=True
        ):
            assert t.source == r.source and np.array_equal(t.weight_q, r.weight_q), name


def test_an_export_frees_each_float_weight_once_quantised_and_compiles_the_same_integers(
    tmp_path: Path,
) -> None:
    """The export hands its graph over (``release_graph``): the checkpoint's tensors have no other
    holder, so every weight array is gone after the compile, which is that of a kept graph."""
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "m.pt", build("digits_resnet", "da", 10, timesteps=3).eval(), {}, {})
    x = torch.rand(4, 3, 1, 8, 8) * 2
    profile = load_profile("loihi2")
    kept = load_artifact(tmp_path / "m.pt")
    reference, _ = compile_graph(kept.graph, "loihi2-sim", profile, "auto", x)
    spent = load_artifact(tmp_path / "m.pt", keep_model=False)
    assert spent.model is None and spent.checkpoint["state_dict"] == {}
    weights = [
        weakref.ref(node.weight)
        for node in spent.graph.nodes.values()
        if isinstance(node, (nir.Conv2d, nir.Affine, nir.Linear))
    ]
    assert len(weights) >= 5 and all(w() is not None for w in weights)
    program, _ = compile_graph(spent.graph, "loihi2-sim", profile, "auto", x, release_graph=True)
    gc.collect()
    assert [w() for w in weights] == [None] * len(weights)
    assert all(getattr(node, "weight", None) is None for node in spent.graph.nodes.values())
    assert spent.graph.shapes == kept.graph.shapes  # the manifest still describes it
    for name, pop in reference.populations.items():
        for t, u in zip(pop.synapse_groups, program.populations[name].synapse_groups, strict=True):
            assert np.array_equal(t.weight_q, u.weight_q), name
        a, b = reference.fixed[name], program.fixed[name]
        for field in dataclasses.fields(a):
            assert np.array_equal(getattr(a, field.name), getattr(b, field.name)), (
                name,
                field.name,
            )


@pytest.mark.parametrize("fan_in,sign", [(5, -1.0), (40, 1.0), (300, -1.0)])
def test_without_data_no_current_can_wrap_for_inputs_within_their_bounds(
    fan_in: int, sign: float
) -> None:
    """Compiled without data (inputs assumed in [-1, 1]), a layer's scale was set by its weights
    alone: five inputs of 1 through weights of -1 summed to a current past Loihi's 24 bits,
    which wrapped positive, and the layer fired every step where the float graph never fires.
    Its scale is now bounded by the largest current its inputs can make, so the program
    fires exactly as the float graph does at those bounds."""
    n = 4
    lif = nir.LIF(
        tau=np.full(n, 2e-3), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.full(n, 0.5)
    )
    graph = nir.NIRGraph(
        nodes={
            "in": nir.Input(input_type={"input": np.array([fan_in])}),
            "w": nir.Affine(np.full((n, fan_in), sign), np.zeros(n)),
            "lif": lif,
            "out": nir.Output(output_type={"output": np.array([n])}),
        },
        edges=[("in", "w"), ("w", "lif"), ("lif", "out")],
    )
    flat = from_nir(graph, dt=1e-3, reset="zero", discretisation="euler")
    program, _ = compile_graph(
        copy.deepcopy(flat), "loihi2-sim", load_profile("loihi2"), "expand", None
    )
    x = torch.cat([torch.ones(1, 6, fan_in), -torch.ones(1, 6, fan_in)])
    fixed = FixedSimulator(program).run(x, record=True)["lif"]
    float_spikes = ReferenceSimulator(flat).run(x, record=True)["lif"].reshape(fixed.shape)
    assert torch.equal(fixed.float(), float_spikes.float())
    assert (
        0 < int(float_spikes.sum()) < float_spikes.numel()
    )  # one input sign fires, the other never


def _stem_with_a_large_bias() -> tuple[nir.NIRGraph, torch.Tensor]:
    """A real-valued input through small weights (std 0.05) to neurons whose bias (up to 1.5, a
    folded BatchNorm's) exceeds their threshold of 1: the bias's 13 bits bound their K."""
    rng = np.random.default_rng(0)
    n, fan_in = 32, 147
    lif = nir.LIF(tau=np.full(n, 1.0), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n))
    graph = nir.NIRGraph(
        nodes={
            "in": nir.Input(input_type={"input": np.array([fan_in])}),
            "w": nir.Affine(rng.normal(0, 0.05, (n, fan_in)), rng.uniform(-1.5, 1.5, n)),
            "lif": lif,
            "out": nir.Output(output_type={"output": np.array([n])}),
        },
        edges=[("in", "w"), ("w", "lif"), ("lif", "out")],
    )
    return graph, torch.rand(64, 8, fan_in, generator=torch.Generator().manual_seed(1))


def _stem_spikes_differing() -> tuple[float, float, float]:
    """The stem's weight error, its input's value scale and the share of its spikes that differ
    from the float graph's."""
    graph, x = _stem_with_a_large_bias()
    flat = from_nir(graph, dt=1.0, reset="zero", discretisation="euler")
    program, _ = compile_graph(
        copy.deepcopy(flat), "loihi2-sim", load_profile("loihi2"), "expand", x
    )
    fixed = FixedSimulator(program).run(x, record=True)["lif"]
    float_spikes = ReferenceSimulator(flat).run(x, record=True)["lif"].reshape(fixed.shape)
    assert 0.1 < float(float_spikes.mean()) < 0.9
    differ = float((fixed.float() != float_spikes.float()).float().mean())
    return program.fixed["lif"].quant_error, program.fixed["in"].value_scale, differ


def test_a_stem_whose_bias_bounds_its_scale_shares_bits_between_input_and_weights(
    monkeypatch,
) -> None:
    """With the input's full 8 bits, the stem's weights kept a few levels (weight error 0.39 on
    SpikingJelly's SEW-ResNet-18 stem, 12% of its spikes differing from float on 8x8 images); the
    input now gives up the bits its weights need (docs/compile.md §3)."""
    error, scale, differ = _stem_spikes_differing()
    assert error < compile_module.WEIGHT_ERROR_BOUND and scale < 127
    monkeypatch.setattr(
        compile_module, "_input_value_scale", lambda name, lowered, peaks, peak: 127 / peak
    )
    full_error, full_scale, full_differ = _stem_spikes_differing()
    assert full_scale > scale and full_error > compile_module.WEIGHT_ERROR_BOUND
    assert differ < full_differ / 2, (differ, full_differ)
