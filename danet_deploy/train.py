"""Training with snnTorch surrogate gradients (BPTT), on CPU or CUDA, single process or DDP.

Under ``torchrun`` every process trains on an interleaved share of the same global
batch and BatchNorm statistics are all-reduced, so a DDP run equals a single-process
run with the same global batch (up to float summation order).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from .checkpoint import checkpoint_bytes, read_checkpoint, save_checkpoint
from .data import check_run_memory, load_dataset
from .devices import evaluate, finish_distributed, init_distributed, resolve_device
from .errors import UserError
from .lava_runtime import LavaDlNeeded
from .models import SpikingNet, build_from_config, make_config
from .outputs import check_output_file, check_space
from .progress import console, progress_bar


@dataclass
class TrainOptions:
    arch: str = "digits_resnet"
    connection: str = "da"
    data: str = "digits"
    timesteps: int = 4
    epochs: int = 30
    batch_size: int = 64  # global batch, split over DDP processes
    lr: float = 5e-3
    weight_decay: float = 1e-4
    device: str = "auto"
    seed: int = 0
    amp: bool = False
    workers: int = 0
    learn_beta: bool = False
    framework: str | None = (
        None  # the neuron: snnTorch LIF or lava-dl slayer CUBA; None: snntorch or the resumed
    )
    chip_epochs: int | None = (
        None  # epochs on the chip's weight grid after ``epochs``; None: framework's default
    )
    resume: str | None = None
    quiet: bool = False


CHIP_EPOCHS = {"snntorch": 0, "lava-dl": 5}  # default --chip-epochs per framework
CHIP_LR = 0.01  # the chip epochs anneal from this fraction of --lr

GridFor = Callable[[SpikingNet, str], dict[str, Any]]  # (model, data) -> its config's chip_grid


def model_name(arch: str, connection: str, framework: str | None = "snntorch") -> str:
    """How demo and compare name a trained variant: ``<arch>_<connection>[_lava-dl]``."""
    return f"{arch}_{connection}" + ("" if framework in (None, "snntorch") else f"_{framework}")


def check_options(opts: TrainOptions) -> None:
    """One line for an option no training can use (the CLI's types check the rest)."""
    if not (math.isfinite(opts.lr) and opts.lr > 0):
        raise UserError(f"learning rate {opts.lr}: must be a positive finite number")
    if not (math.isfinite(opts.weight_decay) and opts.weight_decay >= 0):
        raise UserError(f"weight decay {opts.weight_decay}: must be a non-negative finite number")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training statistics span every DDP process (CPU/gloo and CUDA).

    The all-reduce is differentiable, so gradients equal those of one process that
    sees the whole global batch.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        dims = (0, 2, 3)
        local = torch.cat([x.sum(dims), (x * x).sum(dims), x.new_tensor([x.numel() / c])])
        total = dist_nn.all_reduce(local)
        n = total[-1]
        mean = total[:c] / n
        var = total[c : 2 * c] / n - mean * mean
        with torch.no_grad():
            self.num_batches_tracked += 1
            self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
            self.running_var.mul_(1 - self.momentum).add_(self.momentum * var * n / (n - 1))
        shape = (1, c, 1, 1)
        return (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps) * self.weight.view(
            shape
        ) + self.bias.view(shape)


def use_global_batchnorm(model: nn.Module) -> None:
    """Switch every BatchNorm2d in place (the graph keeps referring to the same modules)."""
    for m in model.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = GlobalBatchNorm2d


def epoch_batches(
    n: int, global_batch: int, seed: int, epoch: int, rank: int, world: int
) -> Iterator[list[int]]:
    """This process's share of each global batch: a seeded permutation cut into batches,
    every ``world``-th sample of a batch going to one process (last partial batch dropped)."""
    if global_batch % world:
        raise UserError(
            f"--batch-size {global_batch} is not divisible by the {world} DDP processes"
        )
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=gen).tolist()
    for start in range(0, n - global_batch + 1, global_batch):
        yield order[start + rank : start + global_batch : world]


def cosine_schedule(
    optimizer: torch.optim.Optimizer, lr: float, steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine annealing from ``lr`` to 0 over ``steps`` (a fresh start for the chip epochs)."""
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] = lr
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)


def freeze_batchnorm(model: nn.Module) -> None:
    """Every BatchNorm in eval mode (running statistics, as export folds them), its
    parameters fixed: on the chip's grid they set the scales that training rounds to."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
            m.requires_grad_(False)


def data_parallel(model: nn.Module, world: int, device: torch.device) -> nn.Module:
    """The model as DDP runs it on ``world`` processes (itself for one process)."""
    if world == 1:
        return model
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
    )


def train(
    opts: TrainOptions, out: Path, force: bool = False, grid_for: GridFor | None = None
) -> dict[str, Any]:
    """Train and write the checkpoint to ``out`` after every epoch; return the metrics.

    ``out`` may be new or a checkpoint of ours; any other existing file needs ``force``.
    After ``opts.epochs`` come ``opts.chip_epochs`` on the chip's weight grid, which
    ``grid_for`` finds (``chip_tuning.chip_grid``; the compiler is a later stage).
    """
    check_output_file(Path(out), "checkpoint", force)
    check_options(opts)
    device = resolve_device(opts.device)
    if opts.amp and device.type != "cuda":
        raise UserError("--amp needs a CUDA device")
    rank, world, device = init_distributed(device)
    seed_everything(opts.seed)
    train_ds, info = load_dataset(opts.data, "train", timesteps=opts.timesteps)
    test_ds, _ = load_dataset(opts.data, "test", timesteps=opts.timesteps)

    start_epoch, resume_state = 0, None
    if opts.resume:
        resume_state = read_checkpoint(Path(opts.resume))
        config = resume_state["config"]
        trained_with = config["neuron"].get("framework", "snntorch")
        if opts.framework not in (None, trained_with):
            raise UserError(
                f"--framework {opts.framework}: {opts.resume} was trained with {trained_with}; "
                f"resume it with --framework {trained_with} or without --framework"
            )
        start_epoch = resume_state.get("train_state", {}).get("epoch", 0)
    else:
        framework = opts.framework or "snntorch"
        if opts.learn_beta and framework != "snntorch":
            raise UserError("--learn-beta is an snnTorch option (lava-dl's decays are fixed)")
        neuron = {"learn_beta": True} if opts.learn_beta else {}
        config = make_config(
            opts.arch,
            opts.connection,
            info.num_classes,
            opts.timesteps,
            info.input_shape,
            framework,
            **neuron,
        )
    chip_epochs = (
        opts.chip_epochs
        if opts.chip_epochs is not None
        else CHIP_EPOCHS[config["neuron"].get("framework", "snntorch")]
    )
    if chip_epochs < 0:
        raise UserError(f"--chip-epochs {chip_epochs}: must be 0 or more")
    if chip_epochs and grid_for is None:
        raise UserError(
            f"{chip_epochs} chip epochs need train(..., grid_for=danet_deploy.chip_tuning.chip_grid) "
            f"(or chip_epochs=0)"
        )
    epochs = opts.epochs + chip_epochs
    try:
        model = build_from_config(config).to(device)
    except LavaDlNeeded as e:  # the command reruns in the Lava runtime: its checkpoint is read back
        e.results[Path(out)] = "checkpoint"  # before its success is believed (docs/lava-runtime.md)
        raise
    # what would fail after the training is refused before it (docs/compile.md §9)
    check_run_memory(
        model.output_shapes(),
        model.timesteps,
        opts.batch_size // world,
        keep_all=True,
        device=device,
        remedy="use fewer time steps (-T) or a smaller --batch-size",
    )
    check_space(out, checkpoint_bytes(model))
    optimizer = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    steps_per_epoch = len(train_ds) // opts.batch_size
    if steps_per_epoch == 0:
        raise UserError(
            f"--batch-size {opts.batch_size} exceeds the {len(train_ds)} training samples"
        )
    chip_phase = start_epoch >= opts.epochs  # a resumed run may start on the chip's grid
    scheduler = cosine_schedule(
        optimizer,
        opts.lr * (CHIP_LR if chip_phase else 1.0),
        (chip_epochs if chip_phase else opts.epochs) * steps_per_epoch,
    )
    if resume_state is not None:
        model.load_state_dict(resume_state["state_dict"])
        if "train_state" in resume_state:
            optimizer.load_state_dict(resume_state["train_state"]["optimizer"])
            scheduler.load_state_dict(resume_state["train_state"]["scheduler"])

    if world > 1:
        use_global_batchnorm(model)
    if model.chip_grid:  # resumed on the chip's grid
        freeze_batchnorm(model)
    net = data_parallel(model, world, device)
    scaler = torch.amp.GradScaler("cuda", enabled=opts.amp)
    show = rank == 0 and not opts.quiet
    metrics: dict[str, Any] = {}
    t0 = time.perf_counter()
    for epoch in range(start_epoch, epochs):
        if epoch >= opts.epochs and not model.chip_grid:
            model.set_chip_grid(grid_for(model, opts.data))
            freeze_batchnorm(model)
            net = data_parallel(model, world, device)  # DDP then reduces only what still learns
            scheduler = cosine_schedule(optimizer, opts.lr * CHIP_LR, chip_epochs * steps_per_epoch)
        model.train()
        if model.chip_grid:
            freeze_batchnorm(model)
        batches = list(epoch_batches(len(train_ds), opts.batch_size, opts.seed, epoch, rank, world))
        loader = DataLoader(train_ds, batch_sampler=batches, num_workers=opts.workers)
        seen = correct = 0
        loss_sum = 0.0
        label = f"epoch {epoch + 1}/{epochs}" + (" (chip grid)" if model.chip_grid else "")
        with progress_bar(label, len(batches), enabled=show) as advance:
            for x, y in loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with torch.autocast(device.type, enabled=opts.amp):
                    logits = net(x)
                    loss = F.cross_entropy(logits, y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                seen += len(y)
                correct += int((logits.argmax(1) == y).sum())
                loss_sum += float(loss.detach()) * len(y)
                advance(f"loss {loss_sum / seen:.3f} acc {correct / seen:.3f}")
        test_acc = evaluate(model, test_ds, device)
        metrics = {
            "test_accuracy": test_acc,
            "train_accuracy": correct / max(seen, 1),
            "train_loss": loss_sum / max(seen, 1),
            "epochs": epoch + 1,
            "train_seconds": round(time.perf_counter() - t0, 2),
            "world_size": world,
        }
        if show:
            console.print(
                f"{label}: loss {metrics['train_loss']:.4f} "
                f"train {metrics['train_accuracy']:.4f} test {test_acc:.4f} "
                f"({metrics['train_seconds']:.0f} s)"
            )
        if rank == 0:
            state = {
                "epoch": epoch + 1,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "options": asdict(opts),
            }
            save_checkpoint(out, model, info.to_dict(), metrics, state)
    finish_distributed(world)
    return metrics
