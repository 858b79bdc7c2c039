"""Where a command runs (``--device``, torchrun's process group) and how a float model scores
there: shared by training, the run stage and accounting, below all of them (docs/compile.md)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .errors import UserError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available (use --device cpu)")
    if name not in ("cpu", "cuda"):
        raise UserError(f"unknown device {name!r}; valid: cpu, cuda, auto")
    return torch.device(name)


def correct_predictions(
    model: nn.Module, ds: Dataset, device: torch.device, batch_size: int = 256
) -> int:
    """How many samples of ``ds`` the float model classifies right (top-1)."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in DataLoader(ds, batch_size=batch_size):
            correct += int((model(x.to(device)).argmax(1).cpu() == y).sum())
    return correct


def evaluate(model: nn.Module, ds: Dataset, device: torch.device, batch_size: int = 256) -> float:
    """Top-1 accuracy (a fraction) of the float model."""
    return correct_predictions(model, ds, device, batch_size) / len(ds)


def init_distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """Rank, world size and this rank's device: under torchrun a process group (NCCL on
    CUDA, gloo on CPU) is joined; otherwise one process, rank 0."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        device = torch.device("cuda", torch.cuda.current_device())
    return dist.get_rank(), world, device


def finish_distributed(world: int) -> None:
    """Wait for every rank, then leave the process group (no-op for one process)."""
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
