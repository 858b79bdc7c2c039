"""Checkpoints: architecture config, weights, time steps, neuron parameters, data and metrics.

Written atomically (temp file + rename) and read with ``torch.load(weights_only=True)``,
so a file that carries pickled code is refused instead of executed.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from .errors import UserError
from .lava_runtime import LavaDlNeeded
from .models import SpikingNet, build_from_config
from .outputs import TAGS, write_torch

FORMAT = TAGS["checkpoint"]
REQUIRED = ("format", "config", "state_dict", "data", "metrics")


def save_checkpoint(
    path: Path,
    model: SpikingNet,
    data: dict[str, Any],
    metrics: dict[str, Any],
    train_state: dict[str, Any] | None = None,
) -> None:
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
    write_torch(path, blob)


def checkpoint_bytes(model: SpikingNet) -> int:
    """About how large ``model``'s checkpoint from ``train`` is: its tensors, and the two AdamW
    moments per parameter that its ``train_state`` carries."""
    tensors = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return tensors + 2 * sum(p.numel() * p.element_size() for p in model.parameters())


def _refusal(e: pickle.UnpicklingError) -> str:
    """What torch's weights_only refusal names (the callable the file would have run), without
    its advice to load the file unsafely."""
    found = re.search(r"Unsupported (?:global: GLOBAL |class )?([\w.]+)", str(e))
    return (
        f"it would call {found.group(1)}"
        if found
        else "it holds objects that are not tensors or plain data"
    )


def read_checkpoint(path: Path, mmap: bool = True) -> dict[str, Any]:
    """Load and validate a checkpoint's contents (tensors and plain data only). ``mmap``: the
    tensors share one mapping of the file (see :func:`load_model`)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        with open(path, "rb") as f:
            zipped = f.read(4) == b"PK\x03\x04"
    except OSError as e:
        raise UserError(f"{path}: cannot read the checkpoint ({e.strerror})") from None
    if not zipped:
        raise UserError(
            f"{path}: not a danet-deploy checkpoint (not a file written by torch.save; "
            f"a checkpoint comes from danet-deploy train)"
        )
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        raise UserError(
            f"{path}: refused: the file carries pickled objects that are not plain data "
            f"({_refusal(e)}); danet-deploy never runs code from a checkpoint"
        ) from None
    except Exception as e:  # noqa: BLE001 - truncated zip, damaged record, ...
        raise UserError(
            f"{path}: not a readable checkpoint, it may be truncated or damaged "
            f"({type(e).__name__})"
        ) from None
    if (
        not isinstance(blob, dict)
        or blob.get("format") != FORMAT
        or any(k not in blob for k in REQUIRED)
    ):
        raise UserError(
            f"{path}: not a danet-deploy checkpoint (missing format {FORMAT!r} or one "
            f"of {', '.join(REQUIRED)})"
        )
    for key in ("config", "state_dict", "data", "metrics"):
        if not isinstance(blob[key], dict):
            raise UserError(
                f"{path}: damaged checkpoint: {key!r} is a {type(blob[key]).__name__}, not a "
                f"dictionary"
            )
    return blob


def _mismatch(path: Path, model: SpikingNet, state: dict[str, Any]) -> UserError | None:
    """A one-line error naming the first tensor that does not fit the architecture (None: all fit)."""
    arch = model.config.get("arch")
    expected = model.state_dict()
    for name, tensor in expected.items():
        if name not in state:
            return UserError(
                f"{path}: weights do not match architecture {arch!r}: tensor {name!r} is missing"
            )
        got = state[name]
        if not torch.is_tensor(got) or tuple(got.shape) != tuple(tensor.shape):
            shape = tuple(got.shape) if torch.is_tensor(got) else type(got).__name__
            return UserError(
                f"{path}: weights do not match architecture {arch!r}: tensor {name!r} is "
                f"{shape}, the architecture needs {tuple(tensor.shape)}"
            )
    extra = [k for k in state if k not in expected]
    if extra:
        return UserError(
            f"{path}: weights do not match architecture {arch!r}: unexpected tensor {extra[0]!r}"
            + (f" and {len(extra) - 1} more" if len(extra) > 1 else "")
        )
    return None


def load_model(path: Path, mmap: bool = True) -> tuple[SpikingNet, dict[str, Any]]:
    """Rebuild the model stored in ``path`` in eval mode; return it with the checkpoint.

    The model is built on the meta device and takes the checkpoint's tensors as its
    parameters, so loading costs one copy of the weights, not two. With ``mmap`` they stay
    in the page cache until used; without, each tensor is an allocation of its own, which
    is given back as soon as it is dropped (one mapping of the whole file lives as long as
    its last tensor: the export frees each weight once it is quantised, docs/compile.md §1).
    """
    blob = read_checkpoint(path, mmap)
    try:
        with torch.device("meta"):
            model = build_from_config(blob["config"])
    except LavaDlNeeded:
        raise  # not a fault of the file: the command runs again in the Lava runtime
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(
            f"{path}: damaged checkpoint: its config cannot build a model ({type(e).__name__}: {e})"
        ) from None
    problem = _mismatch(path, model, blob["state_dict"])
    if problem:
        raise problem
    model.load_state_dict(blob["state_dict"], assign=True)
    return model.eval(), blob
