"""Run stage: simulate an artifact on a dataset and compare with the float model.

Today's backend is ``fast`` in float mode: the layer-synchronous reference
interpreter of the NIR graph, batched over samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from .data import first, load_dataset
from .errors import UserError
from .export import Artifact, load_artifact
from .progress import progress_bar
from .simulator.reference import ReferenceSimulator
from .train import evaluate

BACKENDS = ("fast",)


def evaluation_split(spec: str) -> str:
    """Named datasets are evaluated on their test split; tensor files on every sample."""
    return "all" if spec.startswith("tensor:") or spec.endswith(".pt") else "test"


def to_time_major_input(x: torch.Tensor, input_shape: tuple[int, ...], timesteps: int | None) -> torch.Tensor:
    """``[N, *in]`` (static, repeated ``timesteps`` times) or ``[N, T, *in]`` -> ``[N, T, *in]``."""
    if tuple(x.shape[1:]) == tuple(input_shape):
        if timesteps is None:
            raise UserError("the graph records no time steps and the data is static: pass --timesteps")
        return x.unsqueeze(1).expand(x.shape[0], timesteps, *x.shape[1:])
    if tuple(x.shape[2:]) == tuple(input_shape):
        return x
    raise UserError(f"data samples of shape {tuple(x.shape[1:])} do not fit the graph input {tuple(input_shape)}")


def simulate(artifact: Path, data: str, backend: str = "fast", samples: int | None = None,
             timesteps: int | None = None, dt: float | None = None, batch_size: int = 64,
             show_progress: bool = True) -> dict[str, Any]:
    """Accuracy of ``artifact`` on ``data`` and of the float model on the same samples."""
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    art: Artifact = load_artifact(Path(artifact), dt)
    graph = art.graph
    steps = timesteps or graph.timesteps
    ds, _ = load_dataset(data, evaluation_split(data))
    ds = first(ds, samples)
    sim = ReferenceSimulator(graph)
    input_shape = graph.shapes[graph.inputs[0]]
    correct = 0
    batches = DataLoader(ds, batch_size=batch_size)
    with progress_bar("simulating", len(batches), enabled=show_progress) as advance:
        for x, y in batches:
            x = to_time_major_input(x.float(), input_shape, steps)
            correct += int((sim.predict(x) == y).sum())
            advance(f"acc {correct / len(ds):.3f}")
    accuracy = correct / len(ds)
    # the float model: the checkpoint's PyTorch model when there is one, else the NIR graph itself
    reference = evaluate(art.model, ds, torch.device("cpu")) if art.model is not None else accuracy
    return {"backend": backend, "mode": "float", "artifact": str(artifact), "data": data,
            "samples": len(ds), "timesteps": int(x.shape[1]), "dt": graph.dt,
            "accuracy": accuracy, "reference_accuracy": reference}
