"""Checkpoints: architecture config, weights, time steps, neuron parameters, data and metrics.

Written atomically (temp file + rename) and read with ``torch.load(weights_only=True)``,
so a file that carries pickled code is refused instead of executed.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from .errors import UserError
from .models import SpikingNet, build_from_config
from .outputs import CHECKPOINT_FORMAT, atomic_write

FORMAT = CHECKPOINT_FORMAT
REQUIRED = ("format", "config", "state_dict", "data", "metrics")


def save_checkpoint(path: Path, model: SpikingNet, data: dict[str, Any], metrics: dict[str, Any],
                    train_state: dict[str, Any] | None = None) -> None:
    blob = {
        "format": FORMAT,
        "config": model.config,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "timesteps": model.timesteps,
        "neuron": model.config["neuron"],
        "data": data,
        "metrics": metrics,
    }
    if train_state is not None:
        blob["train_state"] = train_state
    atomic_write(path, lambda tmp: torch.save(blob, tmp))


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load and validate a checkpoint's contents (tensors and plain data only)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        # mmap: tensors stay in the page cache until used, so a large checkpoint is not read twice
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        raise UserError(f"{path}: refused: the file carries pickled objects that are not plain "
                        f"data ({str(e).splitlines()[-1][:120]})") from None
    except Exception as e:  # noqa: BLE001 - truncated zip, not a torch file, ...
        raise UserError(f"{path}: not a danet-deploy checkpoint ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:120]})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT or any(k not in blob for k in REQUIRED):
        raise UserError(f"{path}: not a danet-deploy checkpoint (missing format {FORMAT!r} or one "
                        f"of {', '.join(REQUIRED)})")
    return blob


def load_model(path: Path) -> tuple[SpikingNet, dict[str, Any]]:
    """Rebuild the model stored in ``path`` in eval mode; return it with the checkpoint.

    The model is built on the meta device and takes the checkpoint's (memory-mapped)
    tensors as its parameters, so loading costs one copy of the weights, not two.
    """
    blob = read_checkpoint(path)
    with torch.device("meta"):
        model = build_from_config(blob["config"])
    try:
        model.load_state_dict(blob["state_dict"], assign=True)
    except RuntimeError as e:
        raise UserError(f"{path}: weights do not match architecture "
                        f"{blob['config'].get('arch')!r} ({str(e).splitlines()[0][:160]})") from None
    return model.eval(), blob
