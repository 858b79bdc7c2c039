"""Content and provenance hashes on exports and reports, and `danet-deploy diff` (docs/artifacts.md):
hashes recomputed here with hashlib alone, diffs checked against changes made by hand."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import h5py
import nir
import numpy as np
import pytest
import torch

from danet_deploy.checkpoint import save_checkpoint
from danet_deploy.diff import diff
from danet_deploy.models import build
from danet_deploy.pipeline import build_report, export
from danet_deploy.profiles import builtin_profiles
from danet_deploy.report_html import diff_page

from .conftest import one_line_error, run_cli

PEERS = Path(__file__).parent / "data" / "peers"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_sha256(doc: dict) -> str:
    """What docs/artifacts.md tells a reader to compute: the JSON less
    ``hashes.content_sha256``, keys sorted, no spaces, UTF-8."""
    doc = json.loads(json.dumps(doc))
    del doc["hashes"]["content_sha256"]
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return sha256(text.encode())


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A small digits DANet, untrained (seeded): what matters here is bytes, not accuracy."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "digits_da.pt"
    save_checkpoint(
        path, build("digits_resnet", "da", 10, timesteps=2).eval(), {"spec": "digits"}, {}
    )
    return path


@pytest.fixture(scope="module")
def exports(checkpoint: Path, tmp_path_factory) -> dict[str, Path]:
    """The network exported twice alike, and once on fewer calibration samples."""
    root = tmp_path_factory.mktemp("exports")
    return {
        "a": export(checkpoint, "loihi2-sim", root / "a"),
        "a2": export(checkpoint, "loihi2-sim", root / "a2"),
        "fewer": export(checkpoint, "loihi2-sim", root / "fewer", calibration_samples=16),
        "loihi1": export(checkpoint, "loihi1", root / "loihi1"),
    }


def manifest(outdir: Path) -> dict:
    return json.loads((outdir / "manifest.json").read_text())


def test_the_same_inputs_give_the_same_bytes(exports: dict[str, Path]) -> None:
    for name in ("graph.nir", "program.h5", "manifest.json"):
        a, a2 = (exports[k] / name for k in ("a", "a2"))
        assert a.read_bytes() == a2.read_bytes(), name


def test_an_exports_hashes_are_its_files_and_inputs(
    exports: dict[str, Path], checkpoint: Path
) -> None:
    m = manifest(exports["a"])
    hashes = m["hashes"]
    assert hashes["content_sha256"] == canonical_sha256(m)
    assert hashes["files"] == {
        n: sha256((exports["a"] / n).read_bytes()) for n in ("graph.nir", "program.h5")
    }
    made = hashes["made_from"]
    assert made["model"] == {
        "name": checkpoint.name,
        "kind": "checkpoint",
        "sha256": sha256(checkpoint.read_bytes()),
    }
    assert made["profile"] == {
        "name": "loihi2",
        "sha256": sha256(builtin_profiles()["loihi2"].read_bytes()),
    }
    assert (made["data"]["spec"], made["data"]["samples"]) == ("digits", 32)
    with h5py.File(exports["a"] / "program.h5") as f:
        assert json.loads(f.attrs["made_from"]) == made
    graph_made = json.loads(nir.read(exports["a"] / "graph.nir").metadata["made_from"])
    assert graph_made == {**made, "profile": None, "data": None}
    assert str(exports["a"].parent) not in json.dumps(m)  # no absolute path


def test_a_changed_input_changes_made_from_and_the_content_hash(exports: dict[str, Path]) -> None:
    a, fewer = manifest(exports["a"])["hashes"], manifest(exports["fewer"])["hashes"]
    assert fewer["made_from"]["data"]["samples"] == 16
    assert fewer["made_from"]["data"]["sha256"] != a["made_from"]["data"]["sha256"]
    assert fewer["made_from"]["model"] == a["made_from"]["model"]
    assert fewer["content_sha256"] != a["content_sha256"]


def test_a_reports_hashes_name_its_samples_and_verify(
    exports: dict[str, Path], digits_tensor_file: Path, tmp_path: Path
) -> None:
    data = f"tensor:{digits_tensor_file}"
    rep = build_report(exports["a"], "loihi2", data, samples=8, show_progress=False)
    rep = json.loads(json.dumps(rep))  # as written to a file and read back
    blob = torch.load(digits_tensor_file)
    h = hashlib.sha256()
    for x, y in zip(blob["inputs"][:8], blob["labels"][:8]):
        h.update(x.numpy().astype(np.float32).tobytes() + np.int64(y).tobytes())
    made = rep["hashes"]["made_from"]
    assert made["data"] == {"spec": data, "samples": 8, "sha256": h.hexdigest()}
    assert made["model"] == {
        "name": exports["a"].name,
        "kind": "export",
        "sha256": sha256((exports["a"] / "manifest.json").read_bytes()),
    }
    assert rep["hashes"]["content_sha256"] == canonical_sha256(rep)
    again = build_report(exports["a"], "loihi2", data, samples=8, show_progress=False)
    assert again["hashes"] == rep["hashes"]


def test_diff_of_like_exports_says_no_differences(exports: dict[str, Path]) -> None:
    d = diff(exports["a"], exports["a2"])
    assert d["identical"] and d["layers"] == [] and d["unverified"] == []
    proc = run_cli("diff", str(exports["a"]), str(exports["a2"]), check=True)
    assert proc.stdout.splitlines()[0] == "no differences between a and a2"


def test_one_changed_weight_is_named_with_its_layer_and_count(
    exports: dict[str, Path], tmp_path: Path
) -> None:
    changed = tmp_path / "changed"
    shutil.copytree(exports["a"], changed)
    with h5py.File(changed / "program.h5", "r+") as f:
        group = next(g for g in f["populations"].values() if "terms" in g)
        layer, term = str(group.attrs["name"]), group["terms/0"]
        w = term["weight"][()]
        w.flat[3] += -2 if w.flat[3] > 0 else 2
        term["weight"][...] = w
        source = str(term.attrs["source"])
    d = diff(exports["a"], changed)
    assert not d["identical"]
    assert [r["name"] for r in d["layers"]] == [layer]
    assert d["layers"][0]["weights"] == [
        {"source": source, "changed": 1, "of": w.size, "max_abs_change": 2}
    ]
    assert d["unverified"] == ["changed/program.h5"]  # no longer the sha256 its manifest holds
    page = diff_page(d)
    assert f'<td class="l">{layer}</td>' in page and f"1 of {w.size:,} from {source}" in page


def test_the_same_model_on_two_chips_differs_in_profile_and_target(
    exports: dict[str, Path],
) -> None:
    d = diff(exports["a"], exports["loihi1"])
    assert set(d["made_from"]) == {"profile"}
    assert d["settings"]["target"] == {"a": "loihi2-sim", "b": "loihi1"}
    assert d["made_from"]["profile"]["b"]["sha256"] == sha256(
        builtin_profiles()["loihi1"].read_bytes()
    )


def test_diff_of_reports_ranks_the_largest_change_first(tmp_path: Path) -> None:
    layers = [
        {"name": n, "kind": "lif", "connection": "da", "energy_pj": 100.0, "sops": 10.0}
        for n in ("x", "y", "z")
    ]
    totals = {"energy_pj": 300.0, "sops": 30.0}
    a = {"format": "danet-deploy/report/1", "profile": "loihi2", "layers": layers, "totals": totals}
    b = json.loads(json.dumps(a))
    b["layers"][0]["energy_pj"] = 110.0  # x: +10 pJ
    b["layers"][2]["energy_pj"] = 40.0  # z: -60 pJ, the largest change
    b["layers"][1]["sops"] = 12.0  # y: energy unchanged
    b["layers"].append({**layers[0], "name": "w"})  # added: structure ranks first
    for name, doc in (("a.json", a), ("b.json", b)):
        (tmp_path / name).write_text(json.dumps(doc))
    d = diff(tmp_path / "a.json", tmp_path / "b.json")
    assert [r["name"] for r in d["layers"]] == ["w", "z", "x", "y"]
    assert d["layers"][1]["metrics"]["energy_pj"] == {"a": 100.0, "b": 40.0, "delta": -60.0}


def test_foreign_graphs_diff_node_by_node(tmp_path: Path) -> None:
    norse = export(PEERS / "norse-lif-mlp.nir", "nir", tmp_path / "norse")
    sinabs = export(PEERS / "sinabs-lif-mlp.nir", "nir", tmp_path / "sinabs")
    d = diff(norse, sinabs)
    types = {r["name"]: r["structure"]["type"] for r in d["layers"]}
    assert types == {n: {"a": "CubaLIF", "b": "LIF"} for n in ("1", "3")}
    assert set(d["made_from"]) == {"model"} and set(d["files"]) == {"graph.nir"}


def test_unlike_inputs_are_refused_in_one_line(exports: dict[str, Path], tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    report.write_text(json.dumps({"format": "danet-deploy/report/1", "layers": [], "totals": {}}))
    one_line_error(
        run_cli("diff", str(exports["a"]), str(report)),
        "is an export directory",
        "two export directories or two report JSON files",
    )
    other = tmp_path / "notes.txt"
    other.write_text("hello\n")
    one_line_error(run_cli("diff", str(other), str(report)), "notes.txt", "expected an export")
