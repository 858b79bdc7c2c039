"""Loihi 2 time as a band, and Intel's dense-layer split across cores (docs/accounting.md, "Time
as a band"; docs/compile.md §4, "Dense layers on Loihi 2")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from danet_deploy.account import Accountant
from danet_deploy.compile import map_to_cores
from danet_deploy.errors import UserError
from danet_deploy.ir.kinds import INPUT, LIF
from danet_deploy.ir.program import Lowered, Map, Population, SynapseGroup
from danet_deploy.profiles import load_profile, parse_profile
from danet_deploy.report import summary_lines
from danet_deploy.report_format import duration

from .test_account_report import _brute_force, _program

# Hala Point (Intel press release, 17 Apr 2024): 140,544 cores; 380e12 synaptic ops/s and
# 240e12 neuron ops/s at peak
HALA_POINT_NS = {"synaptic_op": 140_544 / 380e12 * 1e9, "neuron_update": 140_544 / 240e12 * 1e9}


def _step_ns(program, events: dict[str, float], times: dict[str, float]) -> float:
    """One step, computed from the brute-force event counts and the core mapping: the barrier
    plus the busiest core's synaptic events and neuron updates at ``times``."""
    work = []
    for name, m in program.mapping.items():
        if m["cores"]:
            work.append(
                events[name] / m["cores"] * times["synaptic_op"]
                + m["neurons"] / m["cores"] * times["neuron_update"]
            )
    return times["barrier_sync"] + max(work)


def test_the_band_holds_the_stated_time_between_peak_rates_and_loihi1_times(
    tmp_path: Path,
) -> None:
    program, x = _program(tmp_path, "digits_resnet", "sew")  # fixed weights (seed 0)
    acc = Accountant(program)
    acc.add(x)
    steps = 3
    counts = _brute_force(program, x)
    events = {n: (c["sops"] + c["graded_ops"]) / steps for n, c in counts.items()}
    profile = load_profile("loihi2")
    t = {k: f.value for k, f in profile.timing.items()}
    for op, ns in HALA_POINT_NS.items():  # the peak figures are Hala Point's rates per core
        assert t[f"{op}_peak"] == pytest.approx(ns, rel=2e-3)
    for op in ("synaptic_op", "neuron_update", "barrier_sync"):  # one factor fitted to Intel's
        assert t[f"{op}_fitted"] == pytest.approx(t[op] * 0.5784, rel=1e-3)  # PilotNet LIF

    def at(suffix: str) -> float:
        return _step_ns(
            program,
            events,
            {k: t[k + suffix] for k in ("synaptic_op", "neuron_update", "barrier_sync")},
        )

    tm = acc.report(profile, steps)["timing"]
    assert tm["step_ns_lower"] == pytest.approx(at("_peak"))
    assert tm["step_ns_upper"] == pytest.approx(at(""))
    assert tm["step_ns"] == pytest.approx(at("_fitted")) and tm["stated"] == "fitted"
    assert tm["step_ns_lower"] < tm["step_ns"] < tm["step_ns_upper"]
    for bound in ("lower", "upper"):
        assert tm[f"inference_time_us_{bound}"] == pytest.approx(
            steps * tm[f"step_ns_{bound}"] * 1e-3
        )
    assert tm["inference_time_us"] == pytest.approx(steps * tm["step_ns"] * 1e-3)
    band = f"(fitted; band {duration(tm['inference_time_us_lower'])} at peak rates to "
    assert band in summary_lines(acc.report(profile, steps))[1]  # the table's caption


def test_a_profile_without_peak_or_fitted_times_gives_a_band_of_one_figure(
    tmp_path: Path,
) -> None:
    program, x = _program(tmp_path, "digits_resnet", "sew")
    acc = Accountant(program)
    acc.add(x)
    tm = acc.report(load_profile("loihi1"), 3)["timing"]
    assert tm["step_ns_lower"] == tm["step_ns"] == tm["step_ns_upper"]
    assert tm["stated"] == "upper" and "no fitted times" in tm["stated_why"]
    assert "band" not in summary_lines(acc.report(load_profile("loihi1"), 3))[1]


def _profile_with(tmp_path: Path, lines: str) -> Path:
    text = Path(load_profile("loihi1").path).read_text() + lines
    path = tmp_path / "mine.toml"
    path.write_text(text)
    return path


def _time(key: str, value: float) -> str:
    return f'{key} = {{ value = {value}, unit = "ns", source = "test", confidence = "estimate" }}\n'


def test_a_band_out_of_order_or_incomplete_is_refused_naming_the_figure(tmp_path: Path) -> None:
    peak = _time("synaptic_op_peak", 0.5) + _time("neuron_update_peak", 1.0)
    with pytest.raises(UserError, match=r"timing.barrier_sync_peak missing"):
        parse_profile(_profile_with(tmp_path, peak))
    too_slow = _time("synaptic_op_peak", 9.0) + _time("neuron_update_peak", 1.0)
    with pytest.raises(
        UserError, match=r"timing.synaptic_op_peak \(9 ns\) exceeds timing.synaptic_op"
    ):
        parse_profile(_profile_with(tmp_path, too_slow + _time("barrier_sync_peak", 0)))
    ok = parse_profile(_profile_with(tmp_path, peak + _time("barrier_sync_peak", 0)))
    assert ok.timing["synaptic_op_peak"].value == 0.5


def _dense_layer(inputs: int, outputs: int, weight: np.ndarray) -> dict[str, Population]:
    return {
        "in": Population("in", INPUT, (inputs,), "plain"),
        "fc": Population(
            "fc",
            LIF,
            (outputs,),
            "plain",
            synapse_groups=[
                SynapseGroup("in", Map("dense", (inputs,), (outputs,), None), "plain", 0, weight)
            ],
        ),
    }


def _weights(outputs: int, inputs: int, largest: int, signed: bool) -> np.ndarray:
    rng = np.random.default_rng(0)
    w = rng.integers(-largest if signed else 0, largest + 1, (outputs, inputs)).astype(np.int16)
    w[0, 0] = largest
    if signed:
        w[0, 1] = -largest
    return w


# (inputs, outputs, largest |weight|, signed) -> cores. Per input axon a core of n neurons
# spends ceil(n (b + 8) / 50) SynMem units, b the weight bits with sign; budget 12,000:
DENSE_CASES = {
    # PilotNet LIF's 2560->100 (weights -6..6, b = 4): 2560 x ceil(100 x 12 / 50) = 61,440 ->
    # x ceil(5.12) = 6 cores of 17: 2560 x ceil(4.08) = 12,800 -> x 2 = 12 cores of 9: 7,680
    (2560, 100, 6, True): 12,
    # PilotNet SDNN's (-10..12, b = 5): 66,560 -> 6 cores: 2560 x ceil(4.42) = 12,800 -> 12
    (2560, 100, 12, True): 12,
    # weights 0..1 (b = 1): 2560 x ceil(100 x 9 / 50) = 46,080 -> x 4 = 4 cores of 25:
    # 2560 x ceil(4.5) = 12,800 -> x 2 = 8 cores of 13: 2560 x ceil(2.34) = 7,680
    (2560, 100, 1, False): 8,
    # PilotNet's 100->50 (b = 5): 100 x ceil(50 x 13 / 50) = 1,300: one core
    (100, 50, 14, True): 1,
    # 8-bit weights (b = 9) 512->1000: 512 x ceil(1000 x 17 / 50) = 174,080 -> x 15 = 15 cores
    # of 67: 512 x ceil(22.78) = 11,776
    (512, 1000, 255, True): 15,
}


@pytest.mark.parametrize("case", DENSE_CASES)
def test_loihi2_splits_a_dense_layer_as_intels_compiler_does(case: tuple) -> None:
    inputs, outputs, largest, signed = case
    weight = _weights(outputs, inputs, largest, signed)
    low = Lowered(_dense_layer(inputs, outputs, weight), "expand", 1.0, None)
    two = map_to_cores(low, load_profile("loihi2"), quantised=True)["fc"]
    assert two["cores"] == DENSE_CASES[case]
    assert two["bound_by"] == ("synaptic memory" if DENSE_CASES[case] > 1 else "fits one core")
    bits = int(np.count_nonzero(weight)) * 8  # the synapse bits are counted as before
    assert two["synapse_bits"] == bits
    one = map_to_cores(low, load_profile("loihi1"), quantised=True)["fc"]
    assert one["cores"] == max(-(-bits // 2**20), -(-outputs // 1024), 1)  # no split on Loihi 1


def test_pilotnet_shaped_program_takes_intels_61_cores() -> None:
    """PilotNet LIF's layers (its netx file's shapes and largest weights: 6, 14, 24, 42) map to
    25, 13, 3, 3, 2 conv cores and 12, 1, 1, 1 dense cores: Intel's 61 without its input layer
    (lava-dl pilotnet_snn/benchmark.ipynb, 'Per core distribution')."""
    convs = [(3, 66, 200), (24, 32, 99), (36, 15, 49), (48, 7, 24), (64, 4, 22), (64, 2, 20)]
    strides = [(2, 2), (2, 2), (2, 2), (2, 1), (1, 1)]  # (rows, columns)
    pops = {"in": Population("in", INPUT, convs[0], "plain")}
    source = "in"
    for i, (src, dst, stride) in enumerate(zip(convs[:-1], convs[1:], strides, strict=True)):
        pad = (1, 0) if stride == (2, 1) else (0, 0)
        m = Map("conv", src, dst, None, kernel=(3, 3), stride=stride, padding=pad)
        w = np.ones((dst[0], src[0], 3, 3), np.int16)
        pops[f"conv{i}"] = Population(
            f"conv{i}", LIF, dst, "plain", synapse_groups=[SynapseGroup(source, m, "plain", 0, w)]
        )
        source = f"conv{i}"
    pops["flat"] = Population("flat", INPUT, (2560,), "plain")
    source = "flat"
    for i, (n_in, n_out, largest) in enumerate(
        ((2560, 100, 6), (100, 50, 14), (50, 10, 24), (10, 1, 42))
    ):
        w = _weights(n_out, n_in, largest, signed=True)
        m = Map("dense", (n_in,), (n_out,), None)
        pops[f"fc{i}"] = Population(
            f"fc{i}",
            LIF,
            (n_out,),
            "plain",
            synapse_groups=[SynapseGroup(source, m, "plain", 0, w)],
        )
        source = f"fc{i}"
    mapping = map_to_cores(Lowered(pops, "expand", 1.0, None), load_profile("loihi2"), True)
    cores = [m["cores"] for m in mapping.values()]
    assert cores == [25, 13, 3, 3, 2, 12, 1, 1, 1]
    assert abs(sum(cores) - 61) <= 0.1 * 61
