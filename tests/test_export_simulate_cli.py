"""`danet-deploy export` and `simulate` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import nir
import numpy as np
import pytest
import torch

from danet_deploy.converters.nir_import import read_nir, read_nir_graph
from danet_deploy.ir.interpreter import ReferenceSimulator

from .conftest import run_cli


@pytest.mark.slow
def test_export_then_simulate_matches_the_float_model(trained_digits: Path, tmp_path: Path) -> None:
    out = tmp_path / "exp"
    run_cli("export", str(trained_digits), "--target", "nir", "-o", str(out), check=True)
    manifest = json.loads((out / "manifest.json").read_text())
    for key in (
        "target",
        "profile",
        "timesteps",
        "pipeline_latency",
        "lowering",
        "layers",
        "quantisation",
        "core_mapping",
        "tool_versions",
    ):
        assert key in manifest
    assert manifest["target"] == "nir" and manifest["timesteps"] == 4
    assert {layer["name"] for layer in manifest["layers"]} >= {"stem.conv", "stem.sn", "output"}
    proc = run_cli(
        "simulate", str(out), "--data", "digits", "--samples", "120", "--json", check=True
    )
    result = json.loads(proc.stdout)
    assert result["backend"] == "fast" and result["samples"] == 120
    assert 0.8 < result["accuracy"] <= 1.0
    # the NIR graph (BatchNorm folded) and the PyTorch model are both float32: a rounding
    # difference may flip a spike on some CPU, so they agree within one sample, not bit for bit
    assert abs(result["accuracy"] - result["reference_accuracy"]) <= 1 / 120 + 1e-9


@pytest.mark.slow
def test_export_is_deterministic(trained_digits: Path, tmp_path: Path) -> None:
    for name in ("a", "b"):
        run_cli("export", str(trained_digits), "-o", str(tmp_path / name), check=True)
    assert (tmp_path / "a" / "manifest.json").read_text() == (
        tmp_path / "b" / "manifest.json"
    ).read_text()
    a, b = nir.read(tmp_path / "a" / "graph.nir"), nir.read(tmp_path / "b" / "graph.nir")
    assert a.edges == b.edges
    for name, node in a.nodes.items():
        if hasattr(node, "weight"):
            assert np.array_equal(node.weight, b.nodes[name].weight), name


def test_default_outdir_is_next_to_the_model(trained_digits: Path) -> None:
    run_cli("export", str(trained_digits), check=True)
    assert (trained_digits.parent / f"{trained_digits.stem}.nir" / "graph.nir").is_file()


@pytest.mark.slow
def test_foreign_nir_with_time_varying_tensor_data(tmp_path: Path) -> None:
    """A .nir from elsewhere (no time steps recorded) on [N, T, ...] spike data."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 8)) * 2
    graph = nir.NIRGraph(
        nodes={
            "in": nir.Input(input_type={"input": np.array([8])}),
            "w": nir.Linear(w),
            "if": nir.IF(r=np.ones(3), v_threshold=np.ones(3)),
            "out": nir.Output(output_type={"output": np.array([3])}),
        },
        edges=[("in", "w"), ("w", "if"), ("if", "out")],
    )
    path = tmp_path / "foreign.nir"
    nir.write(path, graph)
    x = torch.tensor(rng.random((40, 6, 8)) < 0.4, dtype=torch.float32)
    counts = ReferenceSimulator(read_nir(path, dt=1.0)).run(x)["out"].sum(0)
    labels = counts.argmax(1)
    labels[:10] = (labels[:10] + 1) % 3  # make 10 of 40 wrong
    data = tmp_path / "spikes.pt"
    torch.save({"inputs": x, "labels": labels}, data)
    proc = run_cli(
        "simulate", str(path), "--data", f"tensor:{data}", "--dt", "1", "--json", check=True
    )
    result = json.loads(proc.stdout)
    assert result["samples"] == 40 and result["accuracy"] == 0.75
    assert "assuming dt" not in proc.stderr and "silent_output" not in result
    silent = run_cli(
        "simulate", str(path), "--data", f"tensor:{data}", "--json", check=True
    )  # no dt in the file
    assert "does not state its time step; assuming dt = 0.0001 s" in silent.stderr
    assert json.loads(silent.stdout)["silent_output"] is True
    assert "never fires on these 40 samples (all counts 0, dt = 0.0001 s)" in silent.stderr
    spikes = {}
    for dt in ("1", "1e-4"):  # report reads the graph with the same --dt (IF: dv = dt * r * I)
        rep = json.loads(
            run_cli(
                "report",
                str(path),
                "--data",
                f"tensor:{data}",
                "--dt",
                dt,
                "--format",
                "json",
                check=True,
            ).stdout
        )
        spikes[dt] = rep["totals"]["spikes"]
    assert spikes["1"] > 0 == spikes["1e-4"]
    run_cli("export", str(path), "--target", "nir", "-o", str(tmp_path / "re"), check=True)
    assert json.loads((tmp_path / "re" / "manifest.json").read_text())["source"]["kind"] == "nir"


def test_simulate_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "broken.nir"
    bad.write_bytes(b"no hdf5 here")
    proc = run_cli("simulate", str(bad), "--json")
    assert proc.returncode == 1 and str(bad) in proc.stderr and proc.stderr.count("\n") == 1


def test_snntorch_reads_our_graph_and_computes_the_same(
    trained_digits: Path, tmp_path: Path
) -> None:
    """snnTorch's import_from_nir runs exported plain/aa/sew/ms graphs (it lacks Scale: pa/da)."""
    from snntorch.import_nir import import_from_nir

    from danet_deploy.converters.nir_export import to_nir
    from danet_deploy.models import build

    torch.manual_seed(0)
    model = build("digits_resnet", "sew", 10).eval()
    path = tmp_path / "sew.nir"
    nir.write(path, to_nir(model))
    net = import_from_nir(nir.read(path))
    x = torch.rand(5, 1, 8, 8) * 3
    outs, state = [], None
    with torch.no_grad():
        for _ in range(model.timesteps):
            out, state = net(x) if state is None else net(x, state)
            outs.append(out)
    ours = ReferenceSimulator(read_nir(path)).run(x.unsqueeze(1).expand(-1, 4, -1, -1, -1))[
        "output"
    ]
    assert torch.allclose(torch.stack(outs), ours, atol=1e-6)
    assert torch.allclose(ours.flatten(2).mean(0), model(x), atol=1e-5)


def test_an_export_writes_the_conventions_it_assumed_so_no_later_command_assumes_again(
    tmp_path: Path,
) -> None:
    """docs/nir.md: export writes the options in force into graph.nir's metadata, stated or
    assumed; a --reset that overrode a node's own reset replaces it there too."""
    n = 4
    lif = nir.LIF(tau=np.full(n, 2e-3), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n))
    lif.metadata = {"reset": "subtract"}
    graph = nir.NIRGraph(
        nodes={
            "in": nir.Input(input_type={"input": np.array([n])}),
            "w": nir.Linear(np.eye(n)),
            "lif": lif,
            "out": nir.Output(output_type={"output": np.array([n])}),
        },
        edges=[("in", "w"), ("w", "lif"), ("lif", "out")],
    )
    path = tmp_path / "bare.nir"
    nir.write(path, graph)
    first = run_cli("export", str(path), "--target", "nir", "-o", str(tmp_path / "a"), check=True)
    assert "assuming dt" in first.stderr and "assuming 'euler'" in first.stderr
    metadata = read_nir_graph(tmp_path / "a" / "graph.nir").metadata
    assert (metadata["dt"], metadata["discretisation"], metadata["reset"]) == (
        1e-4,
        "euler",
        "zero",
    )
    again = run_cli(
        "export",
        str(tmp_path / "a" / "graph.nir"),
        "--target",
        "nir",
        "-o",
        str(tmp_path / "b"),
        check=True,
    )
    assert "assuming" not in again.stderr
    kept = read_nir(tmp_path / "a" / "graph.nir").resets
    assert {k: f.reset for k, f in kept.items()} == {"lif": "subtract"}  # the node's own holds
    run_cli(
        "export",
        str(path),
        "--target",
        "nir",
        "--reset",
        "zero",
        "--dt",
        "1e-3",
        "-o",
        str(tmp_path / "c"),
        check=True,
    )
    overridden = read_nir(tmp_path / "c" / "graph.nir")
    assert {k: f.reset for k, f in overridden.resets.items()} == {"lif": "zero"}
    assert overridden.dt == 1e-3
