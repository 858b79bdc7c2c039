"""Graphs written by sinabs, norse and rockpool themselves (tests/data/peers, made by
scripts/peers/make_fixtures.sh in those frameworks' own venvs): their output spike counts
are reproduced exactly with the options their manifests name, and the ones Loihi can run
compile and run in Lava bit-exactly against the fast simulator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from danet_deploy.converters.nir_import import read_nir
from danet_deploy.ir.interpreter import ReferenceSimulator

from .conftest import run_cli

PEERS = Path(__file__).parent / "data" / "peers"
MANIFESTS = {
    m["framework"]: m for m in (json.loads(p.read_text()) for p in sorted(PEERS.glob("*.json")))
}
FIXTURES = [
    (fw, name, flags)
    for fw, m in MANIFESTS.items()
    for name, flags in sorted(m["fixtures"].items())
]


def _flags(flags: dict) -> list[str]:
    return [arg for key, value in flags.items() for arg in (f"--{key}", str(value))]


def test_every_peer_framework_has_fixtures() -> None:
    assert set(MANIFESTS) == {"sinabs", "norse", "rockpool"}
    assert {
        MANIFESTS["sinabs"]["version"],
        MANIFESTS["norse"]["version"],
        MANIFESTS["rockpool"]["version"],
    } == {"3.1.3", "1.1.0", "3.1.0"}


@pytest.mark.parametrize("framework,name,flags", FIXTURES, ids=[f[1] for f in FIXTURES])
def test_framework_spike_counts_are_reproduced(framework: str, name: str, flags: dict) -> None:
    data = np.load(PEERS / f"{name}.npz")
    graph = read_nir(PEERS / f"{name}.nir", **flags)
    x = torch.as_tensor(data["inputs"], dtype=torch.float64)
    got = (
        ReferenceSimulator(graph, torch.float64)
        .run(x)["output"]
        .transpose(0, 1)
        .reshape(data["spikes"].shape)
    )
    lost = MANIFESTS[framework]["exporter_loses"].get(name)
    if lost:  # what the exporter did not write cannot be restored: the file has no recurrent loop
        assert not graph.recurrent and not np.array_equal(got.numpy(), data["spikes"])
        return
    assert data["counts"].sum() > 0
    assert np.array_equal(got.sum(1).numpy(), data["counts"])
    assert np.array_equal(got.numpy(), data["spikes"])


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,lowering",
    [
        ("sinabs-csnn", "auto"),
        ("sinabs-csnn", "relay"),
        ("sinabs-csnn", "expand"),
        ("norse-lif-mlp", "auto"),
        ("norse-conv", "auto"),
    ],
)
def test_loihi_ready_peer_graphs_run_in_lava_bit_exactly(
    tmp_path: Path, name: str, lowering: str
) -> None:
    """The N-MNIST CSNN (sum pools into convs) as sinabs writes it, with relays where a chain has
    no conv form (the pool into the flattened affine map; auto picks them too: expanded, that map
    is a dense layer Intel's compiler splits over 4 cores, docs/compile.md §4, and relays need
    fewer cores), and whole (expand: the pool into the conv is one 6x6 conv); norse's CubaLIF
    MLP and its IF/LIF conv net (auto picks expand)."""
    framework = name.split("-")[0]
    flags = MANIFESTS[framework]["fixtures"][name]
    data = np.load(PEERS / f"{name}.npz")
    tensor = tmp_path / "data.pt"
    torch.save(
        {
            "inputs": torch.as_tensor(data["inputs"], dtype=torch.float32),
            "labels": torch.zeros(len(data["inputs"]), dtype=torch.long),
        },
        tensor,
    )
    out = tmp_path / "chip"
    run_cli(
        "export",
        str(PEERS / f"{name}.nir"),
        "-t",
        "loihi2-sim",
        "--data",
        str(tensor),
        "-o",
        str(out),
        "--lowering",
        lowering,
        *_flags(flags),
        check=True,
    )
    manifest = json.loads((out / "manifest.json").read_text())
    picked = {"auto": "relay" if name == "sinabs-csnn" else "expand"}  # fewer cores
    assert manifest["lowering"] == picked.get(lowering, lowering)
    result = json.loads(
        run_cli(
            "simulate",
            str(out),
            "--data",
            str(tensor),
            "--backend",
            "lava",
            "-n",
            "4",
            "--json",
            check=True,
        ).stdout
    )
    assert result["spike_mismatches"] == 0 and result["nonzero_values"] > 300
    report = json.loads(
        run_cli("report", str(out), "--data", str(tensor), "--format", "json", check=True).stdout
    )
    assert report["totals"]["sops"] > 0


def test_sinabs_from_nir_needs_its_membrane_floor() -> None:
    """sinabs' own from_nir gives an IF a floor at -threshold (min_v_mem): without it, sinabs'
    plain multi-spike convention counts different spikes on the same graph."""
    data = np.load(PEERS / "sinabs-csnn-from-nir.npz")
    x = torch.as_tensor(data["inputs"], dtype=torch.float64)
    counts = {
        reset: ReferenceSimulator(
            read_nir(PEERS / "sinabs-csnn-from-nir.nir", dt=1.0, reset=reset), torch.float64
        )
        .run(x)["output"]
        .sum(0)
        .numpy()
        for reset in ("sinabs", "sinabs-nir")
    }
    assert np.array_equal(counts["sinabs-nir"], data["counts"])
    assert counts["sinabs"].sum() != data["counts"].sum()
