"""No layer loses its weights unannounced (docs/compile.md §3, "Weight error bound"): a relay's
graded values no longer round its consumers' weights away, and a layer over the bound is named
on stderr, or, with ``--strict``, is an error."""

from __future__ import annotations

import json
from pathlib import Path

import nir
import numpy as np
import pytest
import torch

from danet_deploy.compile import WEIGHT_ERROR_BOUND, compile_graph
from danet_deploy.converters.nir_import import from_nir
from danet_deploy.profiles import load_profile

from .conftest import one_line_error, run_cli


def _sew_stem(bias: float = 0.0) -> nir.NIRGraph:
    """SEW-ResNet's stem with its max pool swapped for an average pool, as SpikingJelly writes
    it: conv -> IF -> AvgPool2d(3, 2, 1) -> padded conv -> IF -> global sum pool -> Affine.
    ``bias``: the first conv's bias, large enough (e.g. 500) to set that layer's scale alone."""
    rng = np.random.default_rng(0)

    def conv(cin: int, cout: int, hw: int, b: float) -> nir.Conv2d:
        return nir.Conv2d(
            input_shape=(hw, hw),
            weight=rng.normal(0, 1.5 / np.sqrt(cin * 9), (cout, cin, 3, 3)),
            stride=1,
            padding=1,
            dilation=1,
            groups=1,
            bias=np.full(cout, b),
        )

    def neurons(*shape: int) -> nir.IF:
        return nir.IF(r=np.ones(shape), v_threshold=np.ones(shape))

    layers = [
        conv(3, 8, 16, bias),
        neurons(8, 16, 16),
        nir.AvgPool2d(
            kernel_size=np.array([3, 3]), stride=np.array([2, 2]), padding=np.array([1, 1])
        ),
        conv(8, 8, 8, 0.0),
        neurons(8, 8, 8),
        nir.SumPool2d(
            kernel_size=np.array([8, 8]), stride=np.array([8, 8]), padding=np.array([0, 0])
        ),
        nir.Flatten(input_type={"input": np.array([8, 1, 1])}, start_dim=0, end_dim=-1),
        nir.Affine(rng.normal(0, 0.3, (10, 8)), np.zeros(10)),
    ]
    nodes = {
        "input": nir.Input(input_type={"input": np.array([3, 16, 16])}),
        **{f"l{i}": layer for i, layer in enumerate(layers)},
        "output": nir.Output(output_type={"output": np.array([10])}),
    }
    order = list(nodes)
    return nir.NIRGraph(
        nodes=nodes,
        edges=list(zip(order[:-1], order[1:])),
        type_check=False,
        metadata={"timesteps": 4},
    )


@pytest.mark.parametrize("lowering", ["expand", "relay"])
def test_the_sew_stem_keeps_every_layers_weights(lowering: str, capsys) -> None:
    """The relay of the average pool sent 2,286 per unit (the largest K its 1/9 weights allow),
    so the padded conv after it kept integers of at most 8 and a weight error of 0.29."""
    x = torch.rand(8, 4, 3, 16, 16)
    program, _ = compile_graph(
        from_nir(_sew_stem(), dt=1.0, reset="zero"),
        "loihi2-sim",
        load_profile("loihi2"),
        lowering,
        x,
    )
    errors = {name: f.quant_error for name, f in program.fixed.items()}
    assert max(errors.values()) < 0.02, errors
    assert program.warnings == [] and capsys.readouterr().err == ""
    if lowering == "relay":  # the pool's relay sends the counts of spikes (9 per unit): exact
        assert (errors["l3.relay"], program.fixed["l3.relay"].value_scale) == (0.0, 9.0)
        assert np.abs(program.populations["l4"].synapse_groups[0].weight_q).max() >= 128


def _over_the_bound(tmp_path: Path) -> Path:
    """The stem whose first conv's bias (500) sets its scale: its weights round to zero, or, with
    the input at one level, keep one or two levels (docs/compile.md §3, "The graded input")."""
    path = tmp_path / "stem.nir"
    nir.write(path, _sew_stem(bias=500.0))
    torch.save(
        {"inputs": torch.rand(4, 3, 16, 16), "labels": torch.zeros(4, dtype=torch.long)},
        tmp_path / "d.pt",
    )
    return path


def test_a_layer_over_the_bound_is_named_on_stderr(tmp_path: Path) -> None:
    path = _over_the_bound(tmp_path)
    proc = run_cli(
        "export",
        str(path),
        "-t",
        "loihi2-sim",
        "--dt",
        "1",
        "--reset",
        "zero",
        "--lowering",
        "relay",
        "--data",
        f"tensor:{tmp_path / 'd.pt'}",
        "-o",
        str(tmp_path / "out"),
        check=True,
    )
    warnings = [line for line in proc.stderr.splitlines() if "warning" in line]
    error = json.loads((tmp_path / "out" / "manifest.json").read_text())["quantisation"]["l1"][
        "weight_error"
    ]
    assert (
        error > 0.5
    )  # the input gives up all but one of its bits, and still the weights lose most of theirs
    assert warnings == [
        f"danet-deploy: warning: layer 'l1': weight error {error:.3g} is above the bound "
        f"{WEIGHT_ERROR_BOUND:g} (its fixed-point scale is set by its bias); try --lowering expand"
    ]


def test_strict_makes_a_layer_over_the_bound_an_error_and_writes_nothing(tmp_path: Path) -> None:
    path = _over_the_bound(tmp_path)
    before = path.read_bytes()
    proc = run_cli(
        "export",
        str(path),
        "-t",
        "loihi2-sim",
        "--dt",
        "1",
        "--reset",
        "zero",
        "--strict",
        "--data",
        f"tensor:{tmp_path / 'd.pt'}",
        "-o",
        str(tmp_path / "out"),
    )
    one_line_error(proc, "layer 'l1'", "weight error 0.5", "--strict", "its bias")
    assert not (tmp_path / "out").exists() and path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_auto_compiles_the_other_lowering_when_its_choice_is_over_the_bound(
    capsys, monkeypatch
) -> None:
    """Both lowerings fit and relay needs fewer cores, but a relay layer is over the bound:
    auto compiles expand too and keeps whichever has the better worst layer."""
    import danet_deploy.compile as compile_module

    worse, compiled = {"relay": 0.5, "expand": 0.01}, []
    real = compile_module._program

    def program(graph, target, profile, chosen, *rest):
        compiled.append(chosen)
        made = real(graph, target, profile, chosen, *rest)
        next(iter(f for f in made.fixed.values() if f.scale_set_by)).quant_error = worse[chosen]
        return made

    monkeypatch.setattr(compile_module, "_program", program)
    graph = from_nir(_sew_stem(), dt=1.0, reset="zero")
    chosen, _ = compile_graph(
        graph, "loihi2-sim", load_profile("loihi2"), "auto", torch.rand(2, 4, 3, 16, 16)
    )
    assert compiled == ["relay", "expand"] and chosen.lowered.lowering == "expand"
    assert chosen.warnings == [] and capsys.readouterr().err == ""
