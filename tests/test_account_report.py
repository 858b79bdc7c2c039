"""Accounting and reports: SOPs equal a brute-force count; rows add up; formats; determinism."""

from __future__ import annotations

import csv
import html
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import nir
import numpy as np
import pytest
import torch

from danet_deploy.account import Accountant, core_table
from danet_deploy.compile import compile_graph
from danet_deploy.converters.nir_export import to_nir
from danet_deploy.converters.nir_import import read_nir
from danet_deploy.errors import UserError
from danet_deploy.models import CONNECTIONS, build
from danet_deploy.profiles import load_profile
from danet_deploy.report import CSV_PROVENANCE
from danet_deploy.simulator.fixed import FixedSimulator

from .conftest import run_cli
from .test_provenance import unlabelled

CASES = [("digits_resnet", c) for c in CONNECTIONS] + [
    ("vgg_digits", "da"),
    ("densenet_digits", "da"),
]


def _program(tmp_path: Path, arch: str, connection: str, lowering: str = "auto"):
    torch.manual_seed(0)
    model = build(arch, connection, 10, timesteps=3).eval()
    nir.write(tmp_path / "g.nir", to_nir(model))
    graph = read_nir(tmp_path / "g.nir")
    x = torch.rand(6, 3, 1, 8, 8) * 2
    program, _ = compile_graph(graph, "loihi2-sim", load_profile("loihi2"), lowering, x)
    return program, x


def _brute_force(program, x: torch.Tensor) -> dict[str, dict[str, float]]:
    """Per population: events x synapses from each source's dense 0/1 connectivity matrix, step by step."""
    rec = FixedSimulator(program).run(x, record=True)
    counts = {}
    for name, pop in program.populations.items():
        c = {"sops": 0.0, "graded_ops": 0.0, "macs": 0.0}
        for t in pop.synapse_groups:
            conn = (t.map.matrix(t.weight_q) != 0).toarray().astype(np.int64)  # [out, in]
            fx = program.fixed[t.source]
            kind = (
                "macs"
                if program.populations[t.source].kind.name == "input" and fx.graded
                else "graded_ops"
                if fx.graded
                else "sops"
            )
            for step in rec[t.source]:  # [N, ...]
                active = (step.reshape(step.shape[0], -1) != 0).numpy().astype(np.int64)
                c[kind] += float((active @ conn.T).sum())
        counts[name] = {k: v / x.shape[0] for k, v in c.items()}
    return counts


@pytest.mark.slow
@pytest.mark.parametrize("arch,connection", CASES)
def test_sops_equal_a_brute_force_count(tmp_path: Path, arch: str, connection: str) -> None:
    program, x = _program(tmp_path, arch, connection)
    acc = Accountant(program)
    acc.add(x[:4])
    acc.add(x[4:])  # two batches: counts accumulate
    report = acc.report(load_profile("loihi2"), x.shape[1])
    expected = _brute_force(program, x)
    for row in report["layers"]:
        for k in ("sops", "graded_ops", "macs"):
            assert row[k] == pytest.approx(expected[row["name"]][k], abs=1e-6), (row["name"], k)
    assert report["totals"]["sops"] > 0 and report["totals"]["macs"] > 0


@pytest.mark.slow
def test_relay_lowering_counts_graded_ops(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build("resnet20", "da", 10, timesteps=2, input_shape=(3, 8, 8)).eval()
    nir.write(tmp_path / "g.nir", to_nir(model))
    x = torch.rand(3, 2, 3, 8, 8)
    program, _ = compile_graph(
        read_nir(tmp_path / "g.nir"), "loihi2-sim", load_profile("loihi2"), "relay", x
    )
    acc = Accountant(program)
    acc.add(x)
    report = acc.report(load_profile("loihi2"), 2)
    expected = _brute_force(program, x)
    assert report["totals"]["graded_ops"] > 0
    for row in report["layers"]:
        assert row["graded_ops"] == pytest.approx(expected[row["name"]]["graded_ops"], abs=1e-6), (
            row["name"]
        )


def test_rows_sum_to_totals_and_energy_follows_the_profile(tmp_path: Path) -> None:
    program, x = _program(tmp_path, "digits_resnet", "sew")
    acc = Accountant(program)
    acc.add(x)
    cmos = acc.report(load_profile("cmos45"), 3)
    for key in ("sops", "macs", "spikes", "neuron_updates", "synapses", "energy_pj"):
        assert sum(r[key] for r in cmos["layers"]) == pytest.approx(cmos["totals"][key])
        assert sum(a[key] for a in cmos["by_connection"].values()) == pytest.approx(
            cmos["totals"][key]
        )
    t = cmos["totals"]
    assert t["energy_pj"] == pytest.approx(
        t["sops"] * 0.9 + t["macs"] * 4.6 + t["graded_ops"] * 4.6
    )
    loihi = acc.report(load_profile("loihi2"), 3)
    parts = loihi["totals"]["energy_breakdown_pj"]
    assert parts["synaptic"] == pytest.approx(t["sops"] * 23.6)
    assert parts["neuron"] == pytest.approx(t["neuron_updates"] * 81.0)
    assert parts["static"] > 0 and "energy.synaptic_op" in loihi["estimates"]
    assert set(cmos["by_connection"]) == {"sew", "stem", "head"}
    assert (
        cmos["totals"]["energy_static_pj"] == 0 and cmos["timing"] is None
    )  # no chip, no static power


def test_the_per_core_table_names_the_limit_that_sets_each_layers_cores(tmp_path: Path) -> None:
    program, x = _program(tmp_path, "digits_resnet", "da")
    acc = Accountant(program)
    acc.add(x)
    report = acc.report(load_profile("loihi2"), 3)
    assert sum(r["cores"] for r in report["core_table"]) == report["totals"]["cores"]
    limits = {"neurons_per_core": 8192, "synaptic_memory_per_core": 2**20}

    def layer(name: str, neurons: int, bits: int, cores: int) -> dict:
        return {
            "name": name,
            "neurons": neurons,
            "compartments": 1,
            "synapse_bits": bits,
            "synapses": bits // 8,
            "max_fan_in": 9,
            "cores": cores,
        }

    rows = core_table(
        [
            layer("wide", 10_000, 2**19, 2),
            layer("dense", 100, 7 * 2**19, 4),
            layer("small", 10, 800, 1),
            layer("recurrent", 0, 0, 0),
        ],
        limits,
        {},
    )
    assert [
        (r["name"], r["bound_by"], r["neurons_per_core"], r["synapses_per_core"]) for r in rows
    ] == [
        ("wide", "neurons", 5000, 32768),
        ("dense", "synaptic memory", 25, 114688),
        ("small", "fits one core", 10, 100),
    ]


# Intel's compiler's cores for PilotNet's conv-shaped layers (lava-dl pilotnet_snn/benchmark.ipynb,
# "Per core distribution"): (C, H, W) -> cores
PILOTNET_CONV_CORES = {
    (24, 32, 99): 25,
    (36, 15, 49): 13,
    (48, 7, 24): 3,
    (64, 4, 22): 3,
    (64, 2, 20): 2,
    (3, 66, 200): 13,
}


def test_loihi2_tiles_convolutions_along_their_width_and_stores_each_kernel_once() -> None:
    """A layer fed by convolutions alone is tiled (power-of-two widths, below 4,096 neurons) and
    every core holds its kernel once; dense layers are split as Intel's compiler splits them, and
    every layer on Loihi 1 unrolls as before."""
    from danet_deploy.compile import conv_tiles, map_to_cores
    from danet_deploy.ir.kinds import INPUT, LIF
    from danet_deploy.ir.program import Lowered, Map, Population, SynapseGroup

    assert {
        shape: conv_tiles(shape, 1, 4096) for shape in PILOTNET_CONV_CORES
    } == PILOTNET_CONV_CORES
    assert (
        conv_tiles((64, 4, 22), 2, 4096) == 6
    )  # two compartments per neuron: half the width per tile
    assert (
        conv_tiles((100, 50, 4), 1, 4096) == 5
    )  # one column (5,000) over the limit: cut in equal parts
    weight = np.zeros((24, 3, 3, 3), dtype=np.int16)
    weight[:, :, 1, 1] = 2  # 72 nonzero kernel entries
    conv = Map("conv", (3, 66, 200), (24, 32, 99), None, kernel=(3, 3), stride=(2, 2))
    dense = Map("dense", (2560,), (100,), None)
    low = Lowered(
        {
            "in": Population("in", INPUT, (3, 66, 200), "plain"),
            "conv": Population(
                "conv",
                LIF,
                (24, 32, 99),
                "plain",
                synapse_groups=[SynapseGroup("in", conv, "plain", 0, weight)],
            ),
            "flat": Population("flat", INPUT, (2560,), "plain"),
            "fc": Population(
                "fc",
                LIF,
                (100,),
                "plain",
                synapse_groups=[
                    SynapseGroup("flat", dense, "plain", 0, np.ones((100, 2560), np.int16))
                ],
            ),
        },
        "expand",
        1.0,
        None,
    )
    two = map_to_cores(low, load_profile("loihi2"), quantised=True)
    assert (two["conv"]["cores"], two["conv"]["synapse_bits"], two["conv"]["bound_by"]) == (
        25,
        25 * 72 * 8,
        "conv tiles",
    )
    assert (
        two["conv"]["synapses"] == 3 * 24 * 32 * 99
    )  # unrolled (each neuron's centre tap, 3 channels): SOPs
    assert (two["fc"]["cores"], two["fc"]["synapse_bits"]) == (
        8,
        2560 * 100 * 8,
    )  # Intel's dense split (tests/test_time_band.py), not 2.05 Mbit / 1 Mbit per core
    one = map_to_cores(low, load_profile("loihi1"), quantised=True)
    assert (
        one["conv"]["synapse_bits"] == 3 * 24 * 32 * 99 * 8 and one["conv"]["bound_by"] == "neurons"
    )
    assert one["conv"]["cores"] == 75  # 76,032 neurons at 1,024 per core


def test_energy_is_dynamic_plus_static_under_each_static_power_attribution(tmp_path: Path) -> None:
    """cores: the chip's static power x cores used / cores per chip; chip: whole chips; off: none.
    Dynamic energy and timing do not depend on the attribution."""
    program, x = _program(tmp_path, "digits_resnet", "da")
    acc = Accountant(program)
    acc.add(x)
    loihi2 = load_profile("loihi2")
    reps = {mode: acc.report(loihi2, 3, mode) for mode in ("cores", "chip", "off")}
    for rep in reps.values():
        for row in [*rep["layers"], rep["totals"], *rep["by_connection"].values()]:
            assert row["energy_dynamic_pj"] + row["energy_static_pj"] == row["energy_pj"], row.get(
                "name"
            )
        parts = rep["totals"]["energy_breakdown_pj"]
        assert rep["totals"]["energy_dynamic_pj"] == pytest.approx(
            sum(v for k, v in parts.items() if k != "static")
        )
    dyn = {m: r["totals"]["energy_dynamic_pj"] for m, r in reps.items()}
    static = {m: r["totals"]["energy_static_pj"] for m, r in reps.items()}
    assert dyn["cores"] == dyn["chip"] == dyn["off"] and static["off"] == 0
    cores = reps["cores"]["totals"]["cores"]
    tm = reps["cores"]["timing"]
    expected = 232.0e-3 * cores / 128 * tm["inference_time_us"] * 1e-6 * 1e12  # W x s -> pJ
    assert static["cores"] == pytest.approx(expected) and static["chip"] == pytest.approx(
        expected * 128 / cores
    )
    assert tm["inference_time_us"] == pytest.approx(3 * tm["step_ns"] * 1e-3)
    assert tm["latency_us"] == pytest.approx((3 + program.lowered.latency) * tm["step_ns"] * 1e-3)
    assert tm["edp_uj_ms"] == pytest.approx(
        reps["cores"]["totals"]["energy_pj"] * 1e-6 * tm["latency_us"] * 1e-3
    )
    with pytest.raises(UserError, match="valid: cores, chip, off"):
        acc.report(loihi2, 3, "rack")


def test_edges_carry_every_synapse_groups_events(tmp_path: Path) -> None:
    program, x = _program(tmp_path, "digits_resnet", "da")
    acc = Accountant(program)
    acc.add(x)
    rep = acc.report(load_profile("loihi2"), 3)
    for row in rep["layers"]:
        into = [e for e in rep["edges"] if e["target"] == row["name"]]
        assert len(into) == len(program.populations[row["name"]].synapse_groups)
        for kind in ("sops", "graded_ops", "macs"):
            assert sum(e["events"] for e in into if e["event"] == kind) == pytest.approx(
                row[kind], abs=1e-9
            )
        assert sum(e["synapses"] for e in into) == row["synapses"]


@pytest.mark.slow
def test_report_formats_are_complete_and_deterministic(
    trained_digits: Path, tmp_path: Path
) -> None:
    for fmt in ("json", "csv", "html", "neurobench"):
        for name in ("a", "b"):
            run_cli(
                "report",
                str(trained_digits),
                "--profile",
                "loihi2",
                "--data",
                "digits",
                "--samples",
                "40",
                "--format",
                fmt,
                "-o",
                str(tmp_path / f"{name}.{fmt}"),
                check=True,
            )
        assert (tmp_path / f"a.{fmt}").read_bytes() == (tmp_path / f"b.{fmt}").read_bytes(), fmt
    report = json.loads((tmp_path / "a.json").read_text())
    for key in ("profile", "timesteps", "samples", "layers", "totals", "by_connection"):
        assert key in report
    for key in (
        "name",
        "kind",
        "connection",
        "neurons",
        "synapses",
        "spikes",
        "sops",
        "macs",
        "neuron_updates",
        "energy_pj",
    ):
        assert key in report["layers"][0] and key in report["totals"] | {
            "name": 0,
            "kind": 0,
            "connection": 0,
        }
    assert report["samples"] == 40 and report["timesteps"] == 4
    csv_lines = (tmp_path / "a.csv").read_text().splitlines()
    assert len(csv_lines) == len(report["layers"]) + 1
    for row in [*report["layers"], report["totals"], *report["by_connection"].values()]:
        assert row["energy_dynamic_pj"] + row["energy_static_pj"] == row["energy_pj"]
    assert (
        report["totals"]["energy_static_pj"] < report["totals"]["energy_dynamic_pj"]
    )  # default: cores
    csv_rows = list(csv.reader(io.StringIO((tmp_path / "a.csv").read_text())))
    header = csv_rows[0]
    at = header.index("ActivationSparsity")  # then paper SOPs, the provenance columns, format
    assert header[at - 8 : at - 5] == ["energy_dynamic_pj", "energy_static_pj", "energy_pj"]
    paper = ["paper_sops", "paper_macs", "paper_sop_ratio"]  # loihi2: no paper energy
    assert header[at + 1 :] == [*paper, *CSV_PROVENANCE, "format"]
    sparsity = {r[0]: r[at] for r in csv_rows[1:]}
    by_layer = report["neurobench"]["deployed"]["ActivationSparsityByLayer"]
    assert by_layer and sparsity[report["layers"][-1]["name"]] == ""
    assert {name: float(v) for name, v in sparsity.items() if v} == by_layer
    assert csv_lines[0].endswith(",format") and csv_lines[1].endswith(",danet-deploy/report/1")
    page = (tmp_path / "a.html").read_text()
    assert "data:image/png;base64," in page and "http" not in page.replace("<!doctype html>", "")
    assert "<svg" in page and "µJ" in page and "fixed point" in page
    for edge in report["edges"]:  # the network picture shows every synapse group
        assert html.escape(f"{edge['source']} -> {edge['target']}") in page
    table = run_cli("report", str(trained_digits), "--samples", "20", check=True).stdout
    assert "stem.sn" in table and "total" in table and "SynapticOperations.Effective_ACs" in table
    nb, deployed = (
        json.loads((tmp_path / "a.neurobench").read_text()),
        report["neurobench"]["deployed"],
    )
    assert nb == {
        "format": "danet-deploy/report/1",
        "ClassificationAccuracy": report["accuracy"],
        **deployed,
        "provenance": {
            k: report["provenance"][k] for k in ("method", "simulators", "measured_on_device")
        },
    }
    assert unlabelled(report, load_profile("loihi2")) == []
    assert deployed["SynapticOperations"]["Effective_ACs"] == report["totals"]["sops"] > 0
    assert deployed["MembraneUpdates"] == report["totals"]["neuron_updates"]
    assert 0 < report["neurobench"]["trained"]["MembraneUpdates"] <= deployed["MembraneUpdates"]
    assert deployed["Footprint"] == report["totals"]["synapse_bits"] / 8
    assert report["neurobench"]["trained"]["Footprint"] > 0 and "NeuroBench's metrics" in page


@pytest.mark.slow
def test_report_under_torchrun_equals_one_process(trained_digits: Path, tmp_path: Path) -> None:
    """Two DDP processes each count half the samples; the all-reduced report is the same file."""
    args = [
        "report",
        str(trained_digits),
        "--profile",
        "loihi2",
        "--data",
        "digits",
        "--samples",
        "45",
        "--format",
        "json",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for cmd, out in (
        (["-m", "danet_deploy"], "single.json"),
        (
            [
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc_per_node",
                "2",
                "-m",
                "danet_deploy",
            ],
            "ddp.json",
        ),
    ):
        proc = subprocess.run(
            [sys.executable, *cmd, *args, "-o", str(tmp_path / out)],
            env=env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
    single, ddp = (tmp_path / "single.json").read_bytes(), (tmp_path / "ddp.json").read_bytes()
    assert json.loads(ddp)["samples"] == 45 and json.loads(ddp)["totals"]["sops"] > 0
    assert single == ddp


@pytest.mark.slow
def test_compare_lists_every_connection_side_by_side(tmp_path: Path) -> None:
    out = tmp_path / "cmp.json"
    run_cli(
        "compare",
        "--connections",
        "plain,da",
        "--epochs",
        "2",
        "--samples",
        "30",
        "--models-dir",
        str(tmp_path / "models"),
        "--format",
        "json",
        "-o",
        str(out),
        check=True,
    )
    comparison = json.loads(out.read_text())
    rows = comparison["rows"]
    assert unlabelled(comparison, load_profile("loihi2")) == []
    assert [(r["connection"], r["lowering"]) for r in rows] == [
        ("plain", "expand"),
        ("da", "expand"),
    ]  # no 3-way sums
    assert {r["framework"] for r in rows} == {"snntorch"}
    for r in rows:
        assert (
            0.3 < r["fixed_accuracy"] <= 1 and r["sops"] > 0 and r["macs"] > 0 and r["cores"] >= 1
        )
        # 2 epochs leave many samples near a decision: up to 4 of the 30 may change their prediction
        assert round(abs(r["fixed_accuracy"] - r["float_accuracy"]) * 30) <= 4, r
        assert (
            r["dynamic_uj"] + r["static_uj"] == pytest.approx(r["energy_uj"])
            and r["static_uj"] < r["energy_uj"]
        )
    ranked = sorted(rows, key=lambda r: r["dynamic_rank"])
    assert [r["dynamic_rank"] for r in ranked] == [1, 2]
    assert ranked[0]["dynamic_uj"] <= ranked[1]["dynamic_uj"]
    page = tmp_path / "cmp.html"
    run_cli(
        "compare",
        "--connections",
        "plain,da",
        "--samples",
        "30",
        "--models-dir",
        str(tmp_path / "models"),
        "--format",
        "html",
        "-o",
        str(page),
        check=True,
    )
    assert "ranked by dynamic" in page.read_text() and "http" not in page.read_text().replace(
        "<!doctype html>", ""
    )
    assert (tmp_path / "models" / "digits_resnet_da.pt").is_file()  # reused on the next run
    bad = run_cli("compare", "--connections", "plain,xyz", "--models-dir", str(tmp_path / "models"))
    assert bad.returncode == 2 and "xyz" in bad.stderr


@pytest.mark.slow
def test_compare_with_lava_dl_trains_its_own_checkpoints(tmp_path: Path) -> None:
    out, models = tmp_path / "cmp.json", tmp_path / "models"
    proc = run_cli(
        "compare",
        "--connections",
        "da",
        "--epochs",
        "2",
        "--samples",
        "30",
        "--framework",
        "lava-dl",
        "--models-dir",
        str(models),
        "--format",
        "json",
        "-o",
        str(out),
        check=True,
    )
    assert (
        "Prophesee" not in proc.stderr and "CUDA_HOME" not in proc.stderr
    )  # lava-dl's import banners
    (row,) = json.loads(out.read_text())["rows"]
    assert row["framework"] == "lava-dl" and row["sops"] > 0 and 0.3 < row["fixed_accuracy"] <= 1
    assert sorted(p.name for p in models.glob("*.pt")) == ["digits_resnet_da_lava-dl.pt"]
    table = run_cli(
        "compare",
        "--connections",
        "da",
        "--samples",
        "30",
        "--framework",
        "lava-dl",
        "--models-dir",
        str(models),
        check=True,
    ).stdout
    assert "lava-dl" in table and "da" in table


@pytest.mark.slow
def test_compare_shows_the_expand_relay_trade_off(tmp_path: Path) -> None:
    """DA-ResNet-20 has sums of three or more streams: one row per lowering, relays trade
    synapses and SOPs for graded messages."""
    out = tmp_path / "cmp.json"
    run_cli(
        "compare",
        "--arch",
        "resnet20",
        "--connections",
        "da",
        "--epochs",
        "1",
        "--samples",
        "20",
        "--models-dir",
        str(tmp_path / "models"),
        "--format",
        "json",
        "-o",
        str(out),
        check=True,
    )
    expand, relay = json.loads(out.read_text())["rows"]
    assert (expand["lowering"], relay["lowering"]) == ("expand", "relay")
    assert expand["graded_ops"] == 0 < relay["graded_ops"]
    assert relay["synapse_kib"] < expand["synapse_kib"] and relay["sops"] < expand["sops"]
    assert expand["macs"] == relay["macs"] and expand["float_accuracy"] == relay["float_accuracy"]
