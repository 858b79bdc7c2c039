"""`danet-deploy check`: every problem a compile would hit, in one pass (docs/compile.md,
"check"), while `export` still fails on the first with its one-line message."""

from __future__ import annotations

import json
from pathlib import Path

import nir
import numpy as np
import pytest

from danet_deploy.errors import UserError
from danet_deploy.pipeline import check, export
from danet_deploy.profiles import load_profile

from .conftest import one_line_error, run_cli

DT = 1e-3


def _lif(n: int, threshold: float | list[float] = 1.0) -> nir.LIF:
    s = (n,)
    return nir.LIF(
        tau=np.full(s, 2 * DT),
        r=np.full(s, 2.0),
        v_leak=np.zeros(s),
        v_threshold=np.broadcast_to(np.asarray(threshold, dtype=float), s).copy(),
    )


def _affine(n_in: int, n_out: int, seed: int) -> nir.Affine:
    rng = np.random.default_rng(seed)
    return nir.Affine(weight=rng.normal(0, 1, (n_out, n_in)), bias=np.zeros(n_out))


def _chain(path: Path, layers: dict[str, nir.NIRNode], reset: str = "zero") -> Path:
    """input -> each of ``layers`` in order -> output, a dense graph of 4 inputs."""
    n_out = next(
        np.asarray(node.weight).shape[0]
        for node in reversed(layers.values())
        if isinstance(node, nir.Affine)
    )
    nodes = {
        "input": nir.Input(input_type={"input": np.array([4])}),
        **layers,
        "output": nir.Output(output_type={"output": np.array([n_out])}),
    }
    names = list(nodes)
    graph = nir.NIRGraph(
        nodes=nodes,
        edges=list(zip(names, names[1:])),
        metadata={"dt": DT, "reset": reset, "discretisation": "euler"},
        type_check=False,
    )
    nir.write(path, graph)
    return path


def _unlowerable(tmp_path: Path) -> Path:
    """Two nodes the compiler cannot lower: an LI neuron, a LIF whose threshold differs between
    its neurons (the layer after them is fine)."""
    li = nir.LI(tau=np.full(6, 2 * DT), r=np.ones(6), v_leak=np.zeros(6))
    layers = {
        "A": _affine(4, 6, 1),
        "li": li,
        "B": _affine(6, 6, 2),
        "lif_mixed": _lif(6, [1, 1, 1, 1, 2, 2]),
        "C": _affine(6, 3, 3),
        "lif": _lif(3),
    }
    return _chain(tmp_path / "unlowerable.nir", layers)


def _over_limits(tmp_path: Path) -> tuple[Path, Path]:
    """A graph that lowers, and a loihi1 profile with 40 bits of synapses a core and delays of 2
    steps: its soft resets need programmable neurons (every LIF), ``D`` delays ``lif1`` 5 steps,
    ``lif3`` takes 6 x 8 = 48 bits, and ``lif2``'s threshold of 1e6 leaves its weights no bit
    (weight error 1). ``lif2``'s own 48 bits are all zero weights after quantisation: no limit."""
    layers = {
        "A": _affine(4, 6, 1),
        "D": nir.Delay(delay=np.full(6, 5 * DT)),
        "lif1": _lif(6),
        "B": _affine(6, 6, 2),
        "lif2": _lif(6, 1e6),
        "C": _affine(6, 3, 3),
        "lif3": _lif(3),
    }
    graph = _chain(tmp_path / "over.nir", layers, reset="subtract")
    profile = tmp_path / "tiny.toml"
    profile.write_text(
        load_profile("loihi1")
        .path.read_text()
        .replace(
            "synaptic_memory_per_core = { value = 1048576",
            "synaptic_memory_per_core = { value = 40",
        )
        .replace("max_synaptic_delay = { value = 62", "max_synaptic_delay = { value = 2")
    )
    return graph, profile


def test_a_zoo_model_that_compiles_has_no_problems(trained_digits: Path) -> None:
    proc = run_cli("check", str(trained_digits), "--target", "loihi2-sim")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == f"{trained_digits} for loihi2-sim (loihi2): no problems\n"


def test_every_node_the_compiler_cannot_lower_is_listed_and_export_fails_on_the_first(
    tmp_path: Path,
) -> None:
    path = _unlowerable(tmp_path)
    proc = run_cli("check", str(path), "--target", "loihi2")
    assert proc.returncode == 1, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()]
    assert [r[0] for r in rows if r and r[0] in ("li", "lif_mixed", "lif")] == ["li", "lif_mixed"]
    assert proc.stdout.splitlines()[-1] == (
        f"{path} for loihi2 (loihi2): 2 problems; later checks skipped: a graph with nodes that "
        f"cannot be lowered cannot be mapped"
    )
    first = (
        "node 'li': LI neurons are not supported by the Loihi compiler (LIF, IF, CubaLIF and "
        "Threshold are)"
    )
    exported = run_cli("export", str(path), "--target", "loihi2", "-o", str(tmp_path / "out"))
    one_line_error(exported)
    assert exported.stderr == f"danet-deploy: error: {first}\n"
    assert not (tmp_path / "out").exists()


def test_json_lists_each_problem_with_its_node_value_and_remedy(tmp_path: Path) -> None:
    graph, profile = _over_limits(tmp_path)
    proc = run_cli(
        "check",
        str(graph),
        "-t",
        "loihi1",
        "-p",
        str(profile),
        "--lowering",
        "expand",
        "--format",
        "json",
    )
    assert proc.returncode == 1, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) == {"model", "target", "profile", "lowering", "ok", "problems", "skipped"}
    assert (out["target"], out["profile"], out["ok"], out["skipped"]) == (
        "loihi1",
        "loihi1",
        False,
        None,
    )
    assert all(
        set(p) == {"node", "kind", "problem", "value", "remedy", "message"} for p in out["problems"]
    )
    found = [(p["node"], p["value"]) for p in out["problems"]]
    assert found == [
        ("lif1", "reset subtract"),
        ("lif2", "reset subtract"),
        ("lif3", "reset subtract"),
        ("lif1", "5 > 2 steps (expand)"),
        ("lif3", "48 > 40 bits (expand)"),
        ("lif2", "1 > 0.1"),
    ]
    assert all(p["remedy"] for p in out["problems"])
    with pytest.raises(UserError) as info:
        export(graph, "loihi1", tmp_path / "out", profile=str(profile), lowering="expand")
    assert str(info.value) == out["problems"][0]["message"]


def test_unsupported_types_and_bad_parameters_are_all_listed_before_the_graph_is_shaped(
    tmp_path: Path,
) -> None:
    def cuba_li() -> nir.CubaLI:
        return nir.CubaLI(tau_syn=np.ones(6), tau_mem=np.ones(6), r=np.ones(6), v_leak=np.zeros(6))

    bad = _affine(6, 3, 3)
    bad.weight[0, 0] = np.nan
    layers = {"A": _affine(4, 6, 1), "cli1": cuba_li(), "cli2": cuba_li(), "C": bad, "lif": _lif(3)}
    path = _chain(tmp_path / "foreign.nir", layers)
    found = check(path, "loihi2-sim")
    # in the file's order of nodes (h5py's: alphabetical)
    assert [(p.node, p.kind) for p in found.found] == [("C", "Affine"), ("cli1", ""), ("cli2", "")]
    assert found.skipped == "a graph with unsupported nodes cannot be shaped or lowered"
    with pytest.raises(UserError) as info:
        export(path, "loihi2-sim", tmp_path / "out")
    assert str(info.value) == f"{path}: {found.found[0].message}"
    assert str(info.value) == f"{path}: node 'C' (Affine): parameter weight contains NaN or Inf"
    assert found.found[1].message.startswith(
        "node 'cli1': unsupported NIR type CubaLI (supported: "
    )


def test_an_unreadable_model_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.nir"
    path.write_bytes(b"not hdf5")
    one_line_error(run_cli("check", str(path)), str(path), "not a readable NIR file")
