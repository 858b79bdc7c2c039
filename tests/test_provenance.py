"""Provenance: every energy, power and time figure of a report says how it was obtained and which
profile values it rests on (report key ``provenance``, docs/accounting.md); profile figures say
their kind (docs/compile.md §5)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
from pathlib import Path
from typing import Any, Iterator

import nir
import pytest
import torch

from danet_deploy import provenance as prov_module
from danet_deploy.account import Accountant
from danet_deploy.compile import compile_graph
from danet_deploy.converters.nir_export import to_nir
from danet_deploy.converters.nir_import import read_nir
from danet_deploy.errors import UserError
from danet_deploy.models import build
from danet_deploy.pipeline import lava_section
from danet_deploy.profiles import KINDS, UNSTATED, Profile, builtin_profiles, load_profile
from danet_deploy.progress import as_text
from danet_deploy.provenance import METHOD, compare_provenance
from danet_deploy.report import CSV_PROVENANCE, render

# a key that names a figure by its unit (energy, power, time, rate), or a bound of one
# (``step_ns_lower``), or is an energy-delay product
UNIT = re.compile(r"(_pj|_uj|_mj|_j|_ns|_us|_ms|_s|_mw|_w|_per_s)(_lower|_upper)?$|^edp")
T = 2  # time steps
ROW_LISTS = {"layers": list, "by_connection": dict, "rows": list}  # containers of rows


def figures_in(doc: dict[str, Any]) -> Iterator[tuple[str, str, float]]:
    """(where, key, value) of every figure in a report or comparison JSON: ``where`` is
    ``layers``, ``totals``, ``by_connection``, ``rows`` or ``report`` (a path from the top), and
    ``key`` the figure's path from there (``energy_breakdown_pj.static``, ``timing.step_ns``)."""

    def leaves(value: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
        if isinstance(value, dict):
            for k, v in value.items():
                yield from leaves(v, (*path, k))
        elif isinstance(value, list):
            for v in value:
                yield from leaves(v, path)
        else:
            yield path, value

    for top, value in doc.items():
        if top == "provenance":
            continue
        if top in ROW_LISTS:
            rows = value.values() if isinstance(value, dict) else value
            places = [(top, row) for row in rows]
        elif top == "totals":
            places = [("totals", value)]
        else:
            places = [("report", {top: value})]
        for where, row in places:
            for path, leaf in leaves(row, ()):
                if any(UNIT.search(part) for part in path) and isinstance(leaf, (int, float)):
                    yield where, ".".join(path), float(leaf)


def unlabelled(doc: dict[str, Any], profile: Profile) -> list[str]:
    """What is wrong with ``doc``'s provenance: figures without an entry, entries without a
    method or without the profile values they rest on (as the profile states them)."""
    entries = doc["provenance"]["figures"]
    stated = profile.figures()
    problems, seen = [], set()
    for where, key, value in figures_in(doc):
        seen.add(key)
        entry = entries.get(key)
        if entry is None or where not in entry["applies_to"]:
            problems.append(f"{where}: {key} has no provenance entry")
            continue
        if not entry["method"]:
            problems.append(f"{key}: no method")
        if not entry["rests_on"]:  # only a figure that is zero by construction may rest on none
            if not entry["method"].startswith("Not charged") or value != 0:
                problems.append(f"{key} = {value}: rests on nothing")
            continue
        if entry["method"] != METHOD or entry["simulator"] != "fast":
            problems.append(f"{key}: {entry['method']}, {entry['simulator']}")
        for v in entry["rests_on"]:
            f = stated.get(v["key"])
            if f is None or (v["value"], v["unit"], v["kind"], v["source"]) != (
                f.value,
                f.unit,
                f.kind,
                f.source,
            ):
                problems.append(f"{key}: rests on {v['key']}, not the profile's")
    problems += [f"{key}: an entry for no figure" for key in set(entries) - seen]
    return problems


@pytest.fixture(scope="module")
def accountant(tmp_path_factory) -> Accountant:
    """A DA-ResNet-20 lowered with relays (graded ops, MACs into the stem, spikes, cores)."""
    tmp = tmp_path_factory.mktemp("provenance")
    torch.manual_seed(0)
    model = build("resnet20", "da", 10, timesteps=T, input_shape=(3, 8, 8)).eval()
    nir.write(tmp / "g.nir", to_nir(model))
    x = torch.rand(3, T, 3, 8, 8) * 2
    program, _ = compile_graph(
        read_nir(tmp / "g.nir"), "loihi2-sim", load_profile("loihi2"), "relay", x
    )
    acc = Accountant(program)
    acc.add(x)
    return acc


CASES = [("loihi2", "cores"), ("loihi2", "off"), ("loihi1", "chip"), ("cmos45", "cores")]


@pytest.mark.parametrize("name, static_power", CASES)
def test_every_energy_and_time_figure_carries_its_provenance(
    accountant: Accountant, name: str, static_power: str
) -> None:
    profile = load_profile(name)
    report = json.loads(json.dumps(accountant.report(profile, T, static_power)))
    assert unlabelled(report, profile) == []
    found = {key for _, key, _ in figures_in(report)}
    assert {"energy_pj", "energy_breakdown_pj.synaptic"} <= found
    assert ("timing.step_ns" in found) == (name != "cmos45")
    static = report["provenance"]["figures"]["energy_static_pj"]
    charged = name != "cmos45" and static_power != "off"
    assert bool(static["rests_on"]) == charged, static
    assert report["provenance"]["measured_on_device"] is False


def test_the_check_fails_when_an_entry_is_removed_or_empty(
    accountant: Accountant, monkeypatch
) -> None:
    profile = load_profile("loihi2")
    monkeypatch.delitem(prov_module.FIGURES, "timing.throughput_per_s")
    report = accountant.report(profile, T)
    assert unlabelled(report, profile) == [
        "report: timing.throughput_per_s has no provenance entry"
    ]
    monkeypatch.undo()
    report = accountant.report(profile, T)
    report["provenance"]["figures"]["energy_breakdown_pj.mac"]["rests_on"] = []
    problems = unlabelled(report, profile)
    assert len(problems) == 1 + len(report["layers"])  # every row, and the totals
    assert all(p.startswith("energy_breakdown_pj.mac = ") for p in problems)


def _changed(a: Any, b: Any, path: str = "") -> Iterator[str]:
    """Paths (row containers and list indices left out) whose numbers differ between a and b."""
    if isinstance(a, dict):
        for k in a:
            yield from _changed(a[k], b[k], f"{path}.{k}" if path else k)
    elif isinstance(a, list):
        for x, y in zip(a, b):
            yield from _changed(x, y, path)
    elif isinstance(a, float) and a != pytest.approx(b, rel=1e-12, abs=0):
        yield path


def _figure_key(path: str) -> str:
    """``layers.energy_pj`` -> ``energy_pj``; ``by_connection.da.energy_pj`` -> ``energy_pj``."""
    head, _, rest = path.partition(".")
    if head == "by_connection":
        return rest.partition(".")[2]
    return rest if head in ("layers", "totals") else path


def test_each_figure_rests_on_exactly_the_profile_values_that_change_it(
    accountant: Accountant,
) -> None:
    """The table is held to the code: doubling a profile value changes a figure only if the
    figure's ``rests_on`` names that value, and every value named changes some figure."""
    profile = load_profile("loihi2")
    base = accountant.report(profile, T)
    assert base["totals"]["graded_ops"] > 0 and base["totals"]["macs"] > 0
    declared = {
        k: {v["key"] for v in e["rests_on"]} for k, e in base["provenance"]["figures"].items()
    }
    used = set().union(*declared.values())
    for key, f in profile.figures().items():
        section, name = key.split(".")
        bumped = dataclasses.replace(
            profile,
            **{
                section: {
                    **getattr(profile, section),
                    name: dataclasses.replace(f, value=f.value * 2 + 1),
                }
            },
        )
        changed = {_figure_key(p) for p in _changed(base, accountant.report(bumped, T))}
        figures = {c for c in changed if UNIT.search(c.split(".")[0]) or c.startswith("timing.")}
        for figure in figures:
            assert key in declared[figure], f"{figure} changes with {key}, which it does not name"
        assert bool(figures) == (key in used), (key, figures)


def _report_for_rendering(accountant: Accountant, name: str) -> dict[str, Any]:
    report = accountant.report(load_profile(name), T)
    report.update(accuracy=0.5, source="x.pt", data="digits")
    report["lava"] = lava_section({"samples": 2, "accuracy": 0.5, "spike_mismatches": 0})
    return report


def test_every_format_shows_the_provenance(accountant: Accountant) -> None:
    report = _report_for_rendering(accountant, "loihi2")
    table = as_text(render(report, "table"))
    assert "Estimate (simulated system)" in table and "no figure was measured on a device" in table
    assert "measured: energy.static_per_chip 232 mW" in " ".join(table.split())
    assert "Loihi2SimCfg CPU simulation" in table
    rows = list(csv.reader(io.StringIO(render(report, "csv"))))
    header = rows[0]
    assert header[-1] == "format" and header[-1 - len(CSV_PROVENANCE) : -1] == list(CSV_PROVENANCE)
    paper = ["paper_sops", "paper_macs", "paper_sop_ratio"]  # then the provenance columns
    at = header.index("ActivationSparsity")
    assert header[at + 1 : header.index(CSV_PROVENANCE[0])] == paper
    for row in rows[1:]:
        cells = dict(zip(header, row))
        assert cells["energy_method"] == METHOD and cells["energy_simulator"] == "fast"
        assert cells["energy_rests_on"].startswith(
            "loihi2: energy.synaptic_op 23.6 pJ (our-estimate)"
        )
    page = render(report, "html")
    assert page.count('class="prov"') >= 7 and 'id="provenance"' in page
    for v in report["provenance"]["figures"]["energy_pj"]["rests_on"]:
        assert f'<td class="l">{v["kind"]}</td>' in page and v["key"] in page
    nb = json.loads(render(report, "neurobench"))
    assert nb["provenance"]["method"] == METHOD and nb["provenance"]["measured_on_device"] is False


def test_compare_labels_its_energy_columns(accountant: Accountant) -> None:
    """compare's JSON carries ``provenance`` keyed by its energy columns (the slow compare test
    in test_account_report.py checks the file the command writes)."""
    profile = load_profile("loihi2")
    report = accountant.report(profile, T)
    t = report["totals"]
    doc = {
        "rows": [
            {
                "dynamic_uj": t["energy_dynamic_pj"] / 1e6,
                "static_uj": t["energy_static_pj"] / 1e6,
                "energy_uj": t["energy_pj"] / 1e6,
                "sops": t["sops"],
            }
        ],
        "provenance": compare_provenance(report["provenance"]),
    }
    assert unlabelled(doc, profile) == []
    del doc["provenance"]["figures"]["static_uj"]
    assert unlabelled(doc, profile) == ["rows: static_uj has no provenance entry"]


def test_builtin_profile_figures_state_their_kind(capsys) -> None:
    for name in builtin_profiles():
        kinds = {key: f.kind for key, f in load_profile(name).figures().items()}
        assert set(kinds.values()) <= set(KINDS), name
    assert capsys.readouterr().err == ""
    loihi2 = load_profile("loihi2")
    assert loihi2.energy["static_per_chip"].kind == "measured"  # lava-dl's PilotNet notebook
    assert loihi2.energy["synaptic_op"].kind == "our-estimate"  # a Loihi 1 proxy
    assert load_profile("loihi1").energy["synaptic_op"].kind == "published-estimate"  # pre-silicon
    assert loihi2.constraints["conv_tile_neurons"].kind == "fitted"


def _loihi2_text() -> str:
    return load_profile("loihi2").path.read_text()


def test_a_figure_of_an_unknown_kind_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(_loihi2_text().replace('kind = "measured"', 'kind = "guessed"'))
    with pytest.raises(UserError) as refused:
        load_profile(path)
    message = str(refused.value)
    assert message == (
        f"{path}: energy.static_per_chip: kind must be one of measured, datasheet, "
        "published-estimate, our-estimate, fitted, got 'guessed'"
    )


def test_a_profile_without_kinds_is_read_as_unstated_and_told_once(tmp_path: Path, capsys) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(re.sub(r', kind = "[a-z-]+"', "", _loihi2_text()))
    first = load_profile(path)
    assert {f.kind for f in first.figures().values()} == {UNSTATED}
    load_profile(path)  # compare reads a profile once per variant
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"danet-deploy: {path}: ")
    assert "constraints.cores_per_chip" in err and "add kind = " in err and "fitted" in err
    report_values = [
        v["kind"]
        for v in prov_module.provenance(first, "cores", True)["figures"]["energy_pj"]["rests_on"]
    ]
    assert set(report_values) == {UNSTATED}
