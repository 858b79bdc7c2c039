"""Calibration's memory: the float interpreter's held values per sample, counted by hand, and the
chunks of samples that calibration runs sized by them (docs/compile.md §1)."""

from __future__ import annotations

import nir
import numpy as np
import pytest
import torch

from danet_deploy import compile as compile_stage
from danet_deploy.converters.nir_import import from_nir
from danet_deploy.ir.interpreter import ReferenceSimulator


def _chain() -> nir.NIRGraph:
    """input 3 -> affine 5 -> LIF 5 -> affine 2 -> LIF 2 -> output."""
    rng = np.random.default_rng(0)

    def lif(n: int) -> nir.LIF:
        return nir.LIF(
            tau=np.full(n, 2.0), r=np.full(n, 2.0), v_leak=np.zeros(n), v_threshold=np.full(n, 0.5)
        )

    nodes = {
        "input": nir.Input(input_type={"input": np.array([3])}),
        "fc0": nir.Affine(rng.normal(0, 1, (5, 3)), np.zeros(5)),
        "lif0": lif(5),
        "fc1": nir.Affine(rng.normal(0, 1, (2, 5)), np.zeros(2)),
        "lif1": lif(2),
        "output": nir.Output(output_type={"output": np.array([2])}),
    }
    order = list(nodes)
    return nir.NIRGraph(nodes=nodes, edges=list(zip(order[:-1], order[1:])), type_check=False)


@pytest.mark.parametrize("steps", [1, 7, 100])
def test_the_values_held_per_sample_are_every_step_of_the_layers_waiting_for_a_reader(
    steps: int,
) -> None:
    """By hand, float32 = 4 bytes, spikes as bools = 1: while fc0 runs, the input (3 floats) waits
    for it and its own 5 floats are made: 32 bytes a step, the most of the run (then LIF 5 bools +
    fc0's 5 floats = 25, ...)."""
    simulator = ReferenceSimulator(from_nir(_chain(), dt=1.0))
    assert simulator.held_bytes_per_sample(steps) == 32 * steps


def test_calibration_runs_chunks_whose_held_values_fit_the_budget(monkeypatch) -> None:
    """A 64-step calibration of 40 samples used to run as one chunk sized for a single step."""
    graph = from_nir(_chain(), dt=1.0)
    x = (torch.rand(40, 64, 3, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    chunks: list[int] = []
    run = ReferenceSimulator.run
    monkeypatch.setattr(
        ReferenceSimulator,
        "run",
        lambda self, chunk, **kw: (chunks.append(len(chunk)), run(self, chunk, **kw))[1],
    )
    whole = compile_stage.calibrate(graph, x)
    assert chunks == [40]
    chunks.clear()
    monkeypatch.setattr(compile_stage, "CALIBRATION_CHUNK_BYTES", 10 * 32 * 64)
    assert compile_stage.calibrate(graph, x) == pytest.approx(whole, rel=1e-6)
    assert chunks == [10, 10, 10, 10]
