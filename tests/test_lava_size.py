"""Lava at sizes it cannot run: the estimate of a run's time and memory from what its program
is made of, the refusal over the bound (``--force`` runs anyway), the estimate in a stall's
message, and the silent-output warning under Lava as under the fast path."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import nir
import numpy as np
import pytest
import torch

from danet_deploy.compile import compile_graph
from danet_deploy.converters.nir_import import read_nir
from danet_deploy.errors import UserError
from danet_deploy.ir.program import read_program
from danet_deploy.profiles import load_profile
from danet_deploy.simulator import lava as lava_backend
from danet_deploy.simulator.lava import (
    LAVA_COST,
    STALL_MARGIN,
    STALL_TIMEOUT_S,
    Estimate,
    LavaCost,
    estimate,
    group_members,
    run_lava,
    run_size,
    synapse_process,
)

from .conftest import one_line_error, run_cli


def _chain(path: Path, w1: np.ndarray, w2: np.ndarray, timesteps: int = 4) -> None:
    """input (5) -> Linear w1 -> LIF (4) -> Linear w2 -> output (3), in steps (dt 1, zero reset)."""
    lif = nir.LIF(
        tau=np.full(4, 2.0), r=np.full(4, 2.0), v_leak=np.zeros(4), v_threshold=np.ones(4)
    )
    nodes = {
        "input": nir.Input(input_type={"input": np.array([w1.shape[1]])}),
        "w1": nir.Linear(weight=w1),
        "lif": lif,
        "w2": nir.Linear(weight=w2),
        "output": nir.Output(output_type={"output": np.array([w2.shape[0]])}),
    }
    edges = [("input", "w1"), ("w1", "lif"), ("lif", "w2"), ("w2", "output")]
    nir.write(
        path,
        nir.NIRGraph(
            nodes=nodes,
            edges=edges,
            metadata={
                "dt": 1.0,
                "timesteps": timesteps,
                "reset": "zero",
                "discretisation": "euler",
            },
        ),
    )


def _program(tmp_path: Path, w1: np.ndarray, w2: np.ndarray):
    _chain(tmp_path / "chain.nir", w1, w2)
    return _compiled(tmp_path / "chain.nir")


def _compiled(path: Path):
    program, _ = compile_graph(read_nir(path), "loihi2-sim", load_profile("loihi2"), "expand", None)
    return program


def _export(tmp_path: Path, w1: np.ndarray, w2: np.ndarray, samples: int = 2) -> tuple[Path, str]:
    """The chain exported for loihi2-sim, and a ``tensor:`` dataset of ``samples`` inputs."""
    from danet_deploy.pipeline import export

    _chain(tmp_path / "chain.nir", w1, w2)
    export(tmp_path / "chain.nir", "loihi2-sim", tmp_path / "chip")
    torch.save(
        {"inputs": torch.ones(samples, 5), "labels": torch.zeros(samples, dtype=torch.long)},
        tmp_path / "x.pt",
    )
    return tmp_path / "chip", f"tensor:{tmp_path / 'x.pt'}"


def test_run_size_counts_processes_and_synapse_work_by_hand(tmp_path: Path) -> None:
    """input -> Dense (4x5) -> LIF -> Dense (3x4) -> readout, 2 samples of 4 steps: by hand, the
    RingBuffer, one LIF, one sink, two Dense and Lava's 3 service processes = 8; 20 + 12 Dense
    entries; 2 x 4 steps + the pipeline's latency (2) + 1."""
    program = _program(tmp_path, np.ones((4, 5)), np.ones((3, 4)))
    terms = [t for p in program.populations.values() for t in p.synapse_groups]
    assert [synapse_process(t) for t in terms] == ["dense", "dense"]
    assert run_size(program, 2, 4) == {
        "processes": 8,
        "synapses": 32,
        "steps": 11,
        "runs": 1,
        "dense_entries": 32,
        "sparse_synapses": 0,
        "conv_pairs": 0,
        "conv_macs": 0,
        "conv_taps": 0,
    }


def test_run_size_counts_sparse_and_conv_work(tmp_path: Path, monkeypatch) -> None:
    """A matrix over ``DENSE_LIMIT`` entries runs as Sparse: its nonzero synapses count; a conv
    with few channel pairs runs as Conv: its pairs, and pairs x kernel x input positions; a conv
    with more (``CONV_PAIR_LIMIT``) runs as a matrix: its nonzero kernel weights count."""
    from .test_compile_lava import _tiny_residual

    monkeypatch.setattr(lava_backend, "DENSE_LIMIT", 19)  # 20 entries of w1 (4x5): Sparse
    program = _program(tmp_path, np.array([[1.0, 0, 0, 0, 1]] * 4), np.ones((3, 4)))
    size = run_size(program, 1, 4)
    assert (size["dense_entries"], size["sparse_synapses"], size["conv_pairs"]) == (12, 8, 0)
    _tiny_residual(tmp_path / "tiny.nir")
    tiny = _compiled(tmp_path / "tiny.nir")
    # A 2->3 3x3, B 3->3 3x3, S 2->3 1x1, C 3->4 1x1, D 3->4 3x3, E 2->4 1x1, and the pool and fc
    # folded into one 4->3 6x6 kernel, all on 6x6 inputs
    macs = (2 * 3 * 9 + 3 * 3 * 9 + 2 * 3 + 3 * 4 + 3 * 4 * 9 + 2 * 4 + 4 * 3 * 36) * 36
    size = run_size(tiny, 1, 5)
    assert size["conv_pairs"] == 6 + 9 + 6 + 12 + 12 + 8 + 12
    assert (size["conv_macs"], size["conv_taps"]) == (macs, 0)
    monkeypatch.setattr(
        lava_backend, "CONV_PAIR_LIMIT", 7
    )  # all but the 2->3 convs run as matrices
    size = run_size(tiny, 1, 5)
    matrices = [
        t
        for p in tiny.populations.values()
        for t in p.synapse_groups
        if t.map.in_shape[0] * t.map.out_shape[0] > 7
    ]
    assert size["conv_pairs"] == 6 + 6 and len(matrices) == 5
    assert size["conv_taps"] == sum(
        np.count_nonzero(t.weight_q) for t in matrices
    )  # B, C, D, E, fc
    assert (
        600 < size["conv_taps"] <= 3 * 3 * 9 + 3 * 4 + 3 * 4 * 9 + 2 * 4 + 12 * 36
    )  # a few round to 0


def test_estimate_is_the_cost_model_applied_to_the_size() -> None:
    cost = LavaCost(
        start_s=2.0,
        start_s_per_process=0.5,
        start_s_per_conv_tap=1e-3,
        start_s_per_dense_entry=1e-6,
        start_s_per_sparse_synapse=2e-6,
        step_s_per_process=0.01,
        step_s_per_dense_entry=1e-6,
        step_s_per_sparse_synapse=1e-5,
        step_s_per_conv_pair=1e-4,
        step_s_per_conv_mac=1e-7,
        bytes=2**30,
        bytes_per_process=1000,
        bytes_per_dense_entry=4,
        bytes_per_sparse_synapse=10,
    )
    size = {
        "processes": 10,
        "synapses": 0,
        "steps": 100,
        "runs": 2,
        "dense_entries": 1000,
        "sparse_synapses": 2000,
        "conv_pairs": 30,
        "conv_macs": 10000,
        "conv_taps": 500,
    }
    guess = estimate(size, cost)
    assert guess.start_s == pytest.approx(2 + 5 + 0.5 + 0.001 + 0.004)
    assert guess.step_s == pytest.approx(0.1 + 0.001 + 0.02 + 0.003 + 0.001)
    assert guess.seconds == pytest.approx(2 * 7.505 + 100 * 0.125)
    assert guess.bytes == 2**30 + 10000 + 4000 + 20000
    assert str(guess) == "about 28 s (start-up 8 s, 125 ms a step) and 1.0 GiB"


def test_the_stall_timeout_grows_with_the_estimate() -> None:
    assert Estimate(1.0, 0.1, 10.0, 0).stall_timeout == STALL_TIMEOUT_S
    assert Estimate(400.0, 0.1, 500.0, 0).stall_timeout == STALL_MARGIN * 400.0
    assert Estimate(10.0, 200.0, 5000.0, 0).stall_timeout == STALL_MARGIN * 200.0


def test_the_issues_network_is_refused_by_the_default_bound() -> None:
    """SEW-ResNet-18 on CIFAR shapes (random weights, relay lowering: 95 processes, 26.6 M
    synapses) stalled with no step in 300 s: laying its 14 M kernel weights out as matrices
    takes longer than that. Its size as `run_size` counts it; the estimate refuses it."""
    size = {
        "processes": 95,
        "synapses": 26_553_636,
        "steps": 32,
        "runs": 1,
        "dense_entries": 59_511_808,
        "sparse_synapses": 11_051_559,
        "conv_pairs": 192,
        "conv_macs": 9_633_792,
        "conv_taps": 14_244_883,
    }
    guess = estimate(size)
    assert guess.start_s > STALL_TIMEOUT_S and guess.seconds > lava_backend.LAVA_TIME_BOUND_S, guess


def test_an_oversized_run_is_refused_in_one_line_before_lava_starts(
    tmp_path: Path, monkeypatch
) -> None:
    """Over the bound: one line naming the program, the estimate, the bound, the fast simulator,
    fewer samples and --force; no Lava worker is started. --force runs it (bit-exact)."""
    from danet_deploy.pipeline import simulate

    rng = np.random.default_rng(0)
    chip, data = _export(tmp_path, rng.normal(1, 0.5, (4, 5)), rng.normal(0, 1, (3, 4)))
    monkeypatch.setattr(lava_backend, "LAVA_TIME_BOUND_S", 0.5)
    started = []
    monkeypatch.setattr(lava_backend, "_run", lambda *a: started.append(a))
    with pytest.raises(UserError) as err:
        simulate(chip, data, backend="lava", show_progress=False)
    msg = str(err.value)
    assert "\n" not in msg and started == []
    assert msg.startswith(f"{chip / 'program.h5'}: the Lava run (8 processes, ")
    for part in (
        "would take about",
        "over the bound of 500 ms",
        "--backend fast",
        "bit-exact to Lava",
        "fewer samples (--samples N)",
        "--force runs it anyway",
    ):
        assert part in msg, (part, msg)


@pytest.mark.slow
def test_force_runs_an_oversized_run(tmp_path: Path, monkeypatch) -> None:
    from danet_deploy.pipeline import simulate

    rng = np.random.default_rng(0)
    chip, data = _export(tmp_path, rng.normal(1, 0.5, (4, 5)), rng.normal(0, 1, (3, 4)))
    monkeypatch.setattr(lava_backend, "LAVA_TIME_BOUND_S", 0.5)
    result = simulate(chip, data, backend="lava", show_progress=False, force=True)
    assert result["spike_mismatches"] == 0 and result["nonzero_values"] > 0
    assert "silent_output" not in result


def test_report_refuses_an_oversized_lava_check_before_accounting(
    tmp_path: Path, monkeypatch
) -> None:
    from danet_deploy import pipeline

    rng = np.random.default_rng(0)
    chip, data = _export(tmp_path, rng.normal(1, 0.5, (4, 5)), rng.normal(0, 1, (3, 4)))
    monkeypatch.setattr(lava_backend, "LAVA_TIME_BOUND_S", 0.5)
    monkeypatch.setattr(
        pipeline, "Accountant", lambda *a: pytest.fail("accounted before the refusal")
    )
    with pytest.raises(
        UserError, match=r"fewer samples \(--lava-samples N\).*--force runs it anyway"
    ):
        pipeline.build_report(chip, "loihi2", data, lava_samples=1, show_progress=False)


def test_a_stall_names_the_estimate(tmp_path: Path, monkeypatch) -> None:
    program = _program(tmp_path, np.ones((4, 5)), np.ones((3, 4)))
    from danet_deploy.ir.program import write_program

    write_program(tmp_path / "p.h5", program)
    started = []

    class Recorded(subprocess.Popen):
        def __init__(self, *args, **kw) -> None:
            super().__init__(*args, **kw)
            if "danet_deploy.simulator.lava" in args[0]:
                started.append(self.pid)

    monkeypatch.setattr(lava_backend.subprocess, "Popen", Recorded)
    guess = Estimate(4.0, 0.02, 4.2, 2**27)
    with pytest.raises(UserError) as err:
        run_lava(
            tmp_path / "p.h5",
            read_program(tmp_path / "p.h5"),
            np.zeros((1, 4, 5), dtype=np.int64),
            stall_timeout=0.2,
            guess=guess,
        )
    assert str(err.value) == (
        f"the Lava run of {tmp_path / 'p.h5'} stalled: no step finished in 0 s "
        f"(estimated about 4 s (start-up 4 s, 20 ms a step) and 0.1 GiB; a Lava "
        f"process failed or hung); its processes were stopped"
    )
    (worker,) = started
    assert group_members(worker) == []


@pytest.mark.slow
def test_a_silent_network_warns_under_lava_as_under_fast(tmp_path: Path) -> None:
    """Weights too small to reach the threshold: the LIF never fires, the readout sums nothing.
    Lava's parity is then 0 mismatches; both backends say that the output never fires."""
    chip, data = _export(tmp_path, np.full((4, 5), 0.01), np.ones((3, 4)))
    for backend in ("fast", "lava"):
        proc = run_cli(
            "simulate", str(chip), "--data", data, "--backend", backend, "--json", check=True
        )
        assert json.loads(proc.stdout)["silent_output"] is True, backend
        assert (
            "the output never fires on these 2 samples (all counts 0, dt = 1 s)" in proc.stderr
        ), backend
    assert json.loads(proc.stdout)["spike_mismatches"] == 0


@pytest.mark.slow
def test_cli_refuses_with_exit_1_and_force_is_documented(tmp_path: Path) -> None:
    """The default bound on the command line: the chain on as many samples as make its 8
    processes' cost per step alone twice the bound."""
    samples = int(2 * lava_backend.LAVA_TIME_BOUND_S / (4 * 8 * LAVA_COST.step_s_per_process))
    _chain(tmp_path / "chain.nir", np.ones((4, 5)), np.ones((3, 4)))
    run_cli(
        "export",
        str(tmp_path / "chain.nir"),
        "--target",
        "loihi2-sim",
        "-o",
        str(tmp_path / "chip"),
        check=True,
    )
    torch.save(
        {"inputs": torch.ones(samples, 5), "labels": torch.zeros(samples, dtype=torch.long)},
        tmp_path / "x.pt",
    )
    proc = run_cli(
        "simulate",
        str(tmp_path / "chip"),
        "--data",
        f"tensor:{tmp_path / 'x.pt'}",
        "--backend",
        "lava",
        "--json",
        env={**os.environ, "DANET_DEPLOY_SHM_TAG": "size"},
    )
    one_line_error(
        proc, str(tmp_path / "chip" / "program.h5"), "over the bound of 10 min", "--force"
    )
    assert proc.stdout == ""
    assert "--backend lava even when its estimated" in " ".join(
        run_cli("simulate", "--help").stdout.split()
    )


def test_lavas_sockets_get_a_short_folder_when_tmpdir_is_a_long_path(tmp_path: Path) -> None:
    """Lava's shared-memory manager binds a Unix socket below the worker's TMPDIR; a path past
    the socket limit failed inside Lava as an EOFError (a test's TMPDIR under pytest-xdist)."""
    from danet_deploy.simulator.lava import SOCKET_NAME_ROOM, SOCKET_PATH_MAX, _socket_folder

    deep = tmp_path / ("x" * 100)
    deep.mkdir()
    short = _socket_folder(deep)
    try:
        assert short != deep and short.parent == Path("/tmp") and short.is_dir()
        assert len(str(short)) + SOCKET_NAME_ROOM <= SOCKET_PATH_MAX
        assert _socket_folder(short) == short  # a short run folder holds its own sockets
    finally:
        short.rmdir()
