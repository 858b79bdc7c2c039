"""The papers' SOP convention (fr x T x FLOPs) beside our exact SOPs: held to a count made here
from the simulator's spikes, the torch layers' shapes and the zoo's wiring written out by hand;
the paper profiles' arithmetic; compare's ranking."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import nir
import pytest
import torch

from danet_deploy.account import Accountant
from danet_deploy.compile import compile_graph
from danet_deploy.converters.nir_export import to_nir
from danet_deploy.converters.nir_import import read_nir
from danet_deploy.errors import UserError
from danet_deploy.models import build
from danet_deploy.pipeline import rank_rows
from danet_deploy.profiles import load_profile
from danet_deploy.simulator.fixed import FixedSimulator

from .conftest import run_cli

T, SAMPLES = 3, 5


def _model(arch: str, connection: str) -> torch.nn.Module:
    """An untrained seeded zoo network, its BatchNorms widened so that every layer spikes."""
    torch.manual_seed(0)
    model = build(arch, connection, 10, timesteps=T, input_shape=(1, 8, 8)).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.fill_(3.0)
            m.bias.data.fill_(0.5)
    return model


def _geometry(model: torch.nn.Module) -> dict[str, tuple[int, int]]:
    """Per conv and linear layer of the torch model: (dense FLOPs of one step, input elements),
    read from its shapes in a forward pass: k^2 Ho Wo Cin Cout / groups, or in x out."""
    sizes = {}

    def hook(name: str):
        def record(layer: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
            if isinstance(layer, torch.nn.Linear):
                sizes[name] = (layer.in_features * layer.out_features, layer.in_features)
            else:
                kh, kw = layer.kernel_size
                ho, wo = out.shape[-2:]
                per_group = layer.in_channels // layer.groups
                flops = kh * kw * ho * wo * per_group * layer.out_channels
                c, h, w = args[0].shape[-3:]
                sizes[name] = (flops, c * h * w)

        return record

    handles = [
        m.register_forward_hook(hook(n))
        for n, m in model.named_modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    ]
    with torch.no_grad():
        model(torch.rand(1, T, 1, 8, 8))
    for h in handles:
        h.remove()
    return sizes


def _wiring(model: torch.nn.Module, connection: str) -> list[tuple[str, list[str], str, bool]]:
    """The zoo's small ResNets written out by hand (models/blocks.py): per conv or linear layer,
    the populations whose summed spikes are its input, the report row it is charged to (the
    first population its output reaches) and whether its input is pooled (the head's gap)."""
    layers = []
    if connection == "sew":  # block output: sn2 + (down_sn or the block's input), SEW ADD
        x = ["stem.sn"]
        for s, stage in enumerate(model.stages):
            for b, block in enumerate(stage):
                p, down = f"stages.{s}.{b}", hasattr(block, "down_conv")
                layers.append((f"{p}.conv1", x, f"{p}.sn1", False))
                if down:
                    layers.append((f"{p}.down_conv", x, f"{p}.down_sn", False))
                layers.append((f"{p}.conv2", [f"{p}.sn1"], f"{p}.sn2", False))
                x = [f"{p}.sn2", f"{p}.down_sn"] if down else [f"{p}.sn2", *x]
        layers.append(("head.fc", x, "output", True))
    else:  # da: sn1 = LIF(BN(sum of the stream)); conv1: sn1 -> sn2; conv2 (and down_conv) from
        # their block's spikes into the stream, which the next block's sn1 reads first
        blocks = [
            (f"stages.{s}.{b}", blk)
            for s, st in enumerate(model.stages)
            for b, blk in enumerate(st)
        ]
        for i, (p, block) in enumerate(blocks):
            reader = f"{blocks[i + 1][0]}.sn1" if i + 1 < len(blocks) else "head.sn"
            layers.append((f"{p}.conv1", [f"{p}.sn1"], f"{p}.sn2", False))
            layers.append((f"{p}.conv2", [f"{p}.sn2"], reader, False))
            if hasattr(block, "down_conv"):
                layers.append((f"{p}.down_conv", [f"{p}.sn1"], reader, False))
        layers.append(("head.fc", ["head.sn"], "output", True))
    return layers


def _expected(model, connection, spikes, image_steps: int) -> dict[str, dict[str, Fraction]]:
    """Per report row: paper SOPs fr x T x FLOPs, fr the nonzero fraction of the layer's input
    (the sum of its populations' spikes, pooled over the whole map for the head), and the stem's
    FLOPs once per distinct input step as MACs."""
    sizes = _geometry(model)
    rows: dict[str, dict[str, Fraction]] = {}
    for layer, sources, row, pooled in _wiring(model, connection):
        summed = sum(spikes[s] for s in sources)  # [T, N, C, H, W]
        if pooled:
            summed = summed.sum((-2, -1))
        flops, inputs = sizes[layer]
        fr = Fraction(int(torch.count_nonzero(summed)), T * SAMPLES * inputs)
        rows.setdefault(row, {"sops": Fraction(0), "macs": Fraction(0)})["sops"] += fr * T * flops
    rows.setdefault("stem.sn", {"sops": Fraction(0), "macs": Fraction(0)})["macs"] += Fraction(
        sizes["stem.conv"][0] * image_steps
    )
    return rows


def _accounted(model, x: torch.Tensor, tmp_path: Path, lowering: str = "expand"):
    nir.write(tmp_path / "g.nir", to_nir(model))
    program, _ = compile_graph(
        read_nir(tmp_path / "g.nir"), "loihi2-sim", load_profile("loihi2"), lowering, x
    )
    acc = Accountant(program)
    acc.add(x[:2])
    acc.add(x[2:])  # two batches: counts accumulate
    spikes = FixedSimulator(program).run(x, record=True)
    return acc, spikes


@pytest.mark.parametrize("arch", ["digits_resnet", "resnet20"])
@pytest.mark.parametrize("connection", ["sew", "da"])
def test_paper_sops_equal_fr_times_t_times_flops_of_each_torch_layer(
    tmp_path: Path, arch: str, connection: str
) -> None:
    model = _model(arch, connection)
    torch.manual_seed(1)
    x = (torch.rand(SAMPLES, 1, 1, 8, 8) * 2).expand(SAMPLES, T, 1, 8, 8)  # static images
    acc, spikes = _accounted(model, x, tmp_path)
    report = acc.report(load_profile("cmos45"), T)
    expected = _expected(model, connection, spikes, image_steps=1)
    for row in report["layers"]:
        want = expected.get(row["name"], {"sops": Fraction(0), "macs": Fraction(0)})
        assert row["paper_sops"] == float(want["sops"]), row["name"]
        assert row["paper_macs"] == float(want["macs"]), row["name"]
        ratio = row["paper_sops"] / row["sops"] if row["sops"] else None
        assert row["paper_sop_ratio"] == ratio
    assert all(v["sops"] > 0 for k, v in expected.items() if k != "stem.sn")  # every layer fed
    total = report["totals"]
    assert total["paper_sops"] == pytest.approx(sum(r["paper_sops"] for r in report["layers"]))
    assert total["paper_sop_ratio"] == total["paper_sops"] / total["sops"]
    for agg in report["by_connection"].values():
        assert agg["paper_sop_ratio"] == (agg["paper_sops"] / agg["sops"] if agg["sops"] else None)


def test_relay_lowering_charges_the_same_layers(tmp_path: Path) -> None:
    """Relays hold the DA stream's sums: the convs feed relays, relays feed neurons through
    diagonal maps; the layers and so the total are the network's, rows aside."""
    model = _model("resnet20", "da")
    x = (torch.rand(SAMPLES, 1, 1, 8, 8) * 2).expand(SAMPLES, T, 1, 8, 8)
    acc, spikes = _accounted(model, x, tmp_path, "relay")
    assert any(p.kind.sends_current for p in acc.program.populations.values())
    total = acc.report(load_profile("cmos45"), T)["totals"]
    expected = _expected(model, "da", spikes, image_steps=1).values()
    assert total["paper_sops"] == pytest.approx(float(sum(r["sops"] for r in expected)), rel=1e-12)
    assert total["paper_macs"] == float(sum(r["macs"] for r in expected))


def test_a_changing_real_valued_input_charges_the_stem_at_every_step_it_changes(
    tmp_path: Path,
) -> None:
    model = _model("digits_resnet", "sew")
    torch.manual_seed(1)
    x = torch.rand(SAMPLES, T, 1, 8, 8)
    x[:, 1] = x[:, 0]  # the second step repeats the first: two distinct steps of three
    acc, spikes = _accounted(model, x, tmp_path)
    stem = acc.report(load_profile("cmos45"), T)["layers"][0]
    assert stem["name"] == "stem.sn"
    assert stem["paper_macs"] == _expected(model, "sew", spikes, 2)["stem.sn"]["macs"]


@pytest.mark.parametrize("name,e_ac,e_mac", [("cmos45", 0.9, 4.6), ("sop77fj", 0.077, 4.6)])
def test_paper_profiles_reproduce_the_conventions_arithmetic(
    tmp_path: Path, name: str, e_ac: float, e_mac: float
) -> None:
    model = _model("digits_resnet", "sew")
    x = torch.rand(SAMPLES, T, 1, 8, 8)
    acc, _ = _accounted(model, x, tmp_path)
    profile = load_profile(name)
    assert profile.convention == "paper" and profile.kind == "accounting"
    report = acc.report(profile, T)
    assert report["profile_convention"] == "paper"
    for row in [*report["layers"], report["totals"], *report["by_connection"].values()]:
        assert row["paper_energy_pj"] == pytest.approx(
            e_ac * row["paper_sops"] + e_mac * row["paper_macs"], rel=1e-12
        )
    assert report["totals"]["paper_energy_pj"] > 0
    chip = acc.report(load_profile("loihi2"), T)  # not a paper convention: no paper energy
    assert chip["profile_convention"] is None and "paper_energy_pj" not in chip["totals"]
    assert chip["totals"]["paper_sops"] == report["totals"]["paper_sops"]


def test_a_profile_convention_must_be_a_known_one_on_an_accounting_profile(tmp_path: Path) -> None:
    text = load_profile("cmos45").path.read_text()
    bad = tmp_path / "p.toml"
    bad.write_text(text.replace('convention = "paper"', 'convention = "mine"'))
    with pytest.raises(UserError, match="profile.convention must be one of paper"):
        load_profile(bad)


def _rows() -> list[dict]:
    """Comparison rows whose three rankings all differ."""
    keys = ("dynamic_uj", "sops", "paper_sops")
    values = {"plain": (3.0, 10.0, 50.0), "sew": (1.0, 30.0, 40.0), "da": (2.0, 20.0, 60.0)}
    return [
        {
            "connection": c,
            "framework": "snntorch",
            "lowering": "expand",
            "fixed_accuracy": 0.9,
            "static_uj": 0.5,
            "energy_uj": v[0] + 0.5,
            "cores": 3,
            **dict(zip(keys, v)),
        }
        for c, v in values.items()
    ]


@pytest.mark.parametrize(
    "rank_by,key,order",
    [
        ("dynamic", "dynamic_rank", ["sew", "da", "plain"]),
        ("sops", "sops_rank", ["plain", "da", "sew"]),
        ("paper_sops", "paper_sops_rank", ["sew", "plain", "da"]),
    ],
)
def test_compare_ranks_its_rows_by_what_is_asked(rank_by: str, key: str, order: list[str]) -> None:
    from danet_deploy.profiles import load_profile
    from danet_deploy.provenance import compare_provenance, provenance
    from danet_deploy.report import compare_layouts, compare_table
    from danet_deploy.report_html import compare_page

    prov = compare_provenance(provenance(load_profile("loihi2"), "cores", timed=True))
    rows = rank_rows(_rows(), rank_by)
    assert [r["connection"] for r in sorted(rows, key=lambda r: r[key])] == order
    assert [r["dynamic_rank"] for r in rows] == [3, 1, 2]  # always given, as before
    assert {k for k in rows[0] if k.endswith("_rank")} == {"dynamic_rank", key}
    assert key in compare_layouts(rows)[1]  # the main columns show the rank asked for
    caption = compare_table(rows, "t", prov).caption
    assert (rank_by == "dynamic") == ("rank (SOPs)" not in caption and "paper" not in caption)
    page = compare_page(rows, "t", prov)
    table = page[page.index("<table") :]
    assert [table.index(f'<td class="l">{c}<') for c in order] == sorted(
        table.index(f'<td class="l">{c}<') for c in order
    )
    assert "Least dynamic energy: <b>sew</b>" in page


def test_compare_refuses_an_unknown_ranking() -> None:
    bad = run_cli("compare", "--rank-by", "joules")
    assert bad.returncode == 2 and "joules" in bad.stderr
