"""Datasets by spec string. Nothing is ever downloaded.

* ``digits``: scikit-learn's bundled 8x8 digits, a fixed 80/20 split (the default).
* ``cifar10:PATH`` / ``cifar100:PATH``: torchvision's CIFAR folders under ``PATH``.
* ``imagefolder:PATH``: ImageNet layout, ``PATH/train/<class>/*`` and ``PATH/val/<class>/*``.
* ``tensor:PATH`` (or a bare ``*.pt`` path): a torch file with ``inputs`` ``[N, ...]``
  (static) or ``[N, T, ...]`` (time-varying) and ``labels`` ``[N]``.
* ``nmnist:PATH``, ``dvsgesture:PATH``, ``cifar10dvs:PATH``, ``shd:PATH`` (optionally
  ``?window=US`` or ``?events=N``): event recordings as tonic keeps them, framed into the
  model's time steps (:mod:`danet_deploy.events`, docs/events.md).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from .errors import UserError
from .events import SOURCES as EVENT_SOURCES
from .events import load_events

if TYPE_CHECKING:
    from .ir.graph import FlatGraph

KINDS = (
    "digits",
    "cifar10:PATH",
    "cifar100:PATH",
    "imagefolder:PATH",
    "tensor:PATH",
    *(f"{kind}:PATH" for kind in EVENT_SOURCES),
)
SPLIT_SEED = 0
TEST_FRACTION = 0.2


@dataclass
class DataInfo:
    """What a checkpoint records about the data its model was trained on."""

    spec: str
    name: str
    input_shape: list[int]
    num_classes: int
    mean: list[float]
    std: list[float]
    framing: dict[str, Any] | None = (
        None  # event data: how recordings became frames (events.Framing)
    )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _split_indices(n: int, split: str) -> np.ndarray:
    """A fixed, seeded train/test partition shared by every run and every process."""
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_test = int(round(n * TEST_FRACTION))
    return {"test": np.sort(perm[:n_test]), "train": np.sort(perm[n_test:]), "all": np.arange(n)}[
        split
    ]


def _digits(split: str) -> tuple[Dataset, DataInfo]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.long)
    idx = torch.as_tensor(_split_indices(len(y), split))
    info = DataInfo("digits", "digits", [1, 8, 8], 10, [0.0], [1.0])
    return TensorDataset(x[idx], y[idx]), info


def _existing(path: str, spec: str) -> Path:
    if not path:
        raise UserError(f"dataset {spec!r} needs a path, e.g. {spec.split(':')[0]}:/data/dir")
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"dataset path not found: {p}")
    return p


def _cifar(kind: str, path: Path, split: str) -> tuple[Dataset, DataInfo]:
    import torchvision
    from torchvision import transforms as tf

    cls = torchvision.datasets.CIFAR10 if kind == "cifar10" else torchvision.datasets.CIFAR100
    mean, std = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]
    aug = [tf.RandomCrop(32, padding=4), tf.RandomHorizontalFlip()] if split == "train" else []
    try:
        ds = cls(
            str(path),
            train=split == "train",
            download=False,
            transform=tf.Compose(aug + [tf.ToTensor(), tf.Normalize(mean, std)]),
        )
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted"
        raise UserError(
            f"{kind} data not found under {path} (expected torchvision's "
            f"cifar-10-batches-py / cifar-100-python folder): {e}"
        ) from None
    return ds, DataInfo(
        f"{kind}:{path}", kind, [3, 32, 32], 10 if kind == "cifar10" else 100, mean, std
    )


def _imagefolder(path: Path, split: str) -> tuple[Dataset, DataInfo]:
    import torchvision
    from torchvision import transforms as tf

    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    folder = path / ("train" if split == "train" else "val")
    if not folder.is_dir():
        raise UserError(f"imagefolder dataset needs {folder}/ (ImageNet layout: train/ and val/)")
    pre = (
        [tf.RandomResizedCrop(224), tf.RandomHorizontalFlip()]
        if split == "train"
        else [tf.Resize(256), tf.CenterCrop(224)]
    )
    ds = torchvision.datasets.ImageFolder(
        str(folder), tf.Compose(pre + [tf.ToTensor(), tf.Normalize(mean, std)])
    )
    return ds, DataInfo(
        f"imagefolder:{path}", "imagefolder", [3, 224, 224], len(ds.classes), mean, std
    )


def load_tensor_file(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Read ``inputs`` and ``labels`` from a tensor file without executing pickled code."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means "not a usable tensor file"
        raise UserError(f"{path}: not a readable tensor file ({type(e).__name__})") from None
    if not isinstance(blob, dict) or "inputs" not in blob or "labels" not in blob:
        raise UserError(f"{path}: tensor file must hold a dict with 'inputs' and 'labels'")
    x, y = blob["inputs"], blob["labels"]
    if not (torch.is_tensor(x) and torch.is_tensor(y)) or x.shape[0] != y.shape[0] or y.dim() != 1:
        raise UserError(f"{path}: 'inputs' [N, ...] and 'labels' [N] must be tensors of equal N")
    if len(x) == 0:
        raise UserError(
            f"{path}: the tensor file holds no samples ('inputs' and 'labels' are empty)"
        )
    if y.is_floating_point() or y.is_complex() or bool((y < 0).any()):
        bad = (
            "are not whole numbers"
            if y.is_floating_point() or y.is_complex()
            else f"hold negative values (the first at index {int((y < 0).nonzero()[0])})"
        )
        raise UserError(f"{path}: 'labels' {bad}; labels are class numbers 0, 1, 2, ...")
    x = x.float()
    finite = torch.isfinite(x).reshape(len(x), -1).all(1)
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten()
        raise UserError(
            f"{path}: 'inputs' holds NaN or Inf values in {len(bad)} sample(s), the first at index "
            f"{int(bad[0])}; clean or drop those samples"
        )
    return x, y.long()


def _tensor(path: Path, split: str, static_dims: int | None) -> tuple[Dataset, DataInfo]:
    x, y = load_tensor_file(path)
    idx = torch.as_tensor(_split_indices(len(y), split))
    # [N, C, H, W] is static; [N, T, C, H, W] is time-varying (T steps of spikes or values)
    dims = static_dims if static_dims is not None else (3 if x.dim() in (4, 5) else x.dim() - 1)
    shape = list(x.shape[-dims:])
    info = DataInfo(
        f"tensor:{path}", "tensor", shape, int(y.max()) + 1 if len(y) else 0, [0.0], [1.0]
    )
    return TensorDataset(x[idx], y[idx]), info


def _events(spec: str, split: str, timesteps: int | None) -> tuple[Dataset, DataInfo]:
    if split == "all":
        raise UserError(f"{spec}: event datasets have a train and a test split, not 'all'")
    ds, what = load_events(spec, split, timesteps)
    return ds, DataInfo(
        spec, what["name"], what["input_shape"], what["num_classes"], [0.0], [1.0], what["framing"]
    )


def load_dataset(
    spec: str, split: str = "train", static_dims: int | None = None, timesteps: int | None = None
) -> tuple[Dataset, DataInfo]:
    """Return the dataset named by ``spec`` and what it is; ``split`` is train, test or all.

    ``timesteps``: the steps event recordings are framed into (the model's or graph's T).
    """
    if split not in ("train", "test", "all"):
        raise ValueError(split)
    kind, _, path = spec.partition(":")
    if spec.endswith(".pt") and not path:
        kind, path = "tensor", spec
    if kind == "digits" and not path:
        ds, info = _digits(split)
    elif kind in ("cifar10", "cifar100"):
        ds, info = _cifar(kind, _existing(path, spec), split)
    elif kind == "imagefolder":
        ds, info = _imagefolder(_existing(path, spec), split)
    elif kind == "tensor":
        ds, info = _tensor(_existing(path, spec), split, static_dims)
    elif kind in EVENT_SOURCES:
        ds, info = _events(spec, split, timesteps)
    else:
        raise UserError(f"unknown dataset {spec!r}; valid: {', '.join(KINDS)}")
    if len(ds) == 0:
        raise UserError(f"dataset {spec!r} has no {split} samples")
    return ds, info


def first(ds: Dataset, n: int | None) -> Dataset:
    """The first ``n`` samples (all when ``n`` is None) — evaluation subsets are deterministic."""
    return ds if n is None or n >= len(ds) else Subset(ds, range(n))


def evaluation_split(spec: str) -> str:
    """Named datasets are evaluated on their test split; tensor files on every sample."""
    return "all" if spec.startswith("tensor:") or spec.endswith(".pt") else "test"


BYTES_PER_VALUE = 4  # float32 spikes and currents, the least a simulator holds per value
MAX_TIMESTEPS = 100_000  # a 100 s recording at 1 ms steps; beyond it a run is hours of stepping
FEWER_STEPS = "use fewer time steps (the graph's timesteps, -T)"


def available_memory() -> int:
    """Bytes of memory this process can still allocate without swapping (MemAvailable on Linux)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    pages = (
        os.sysconf("SC_AVPHYS_PAGES")
        if "SC_AVPHYS_PAGES" in os.sysconf_names
        else os.sysconf("SC_PHYS_PAGES")
    )
    return pages * os.sysconf("SC_PAGE_SIZE")


def check_timesteps(
    steps: int, remedy: str = f"{FEWER_STEPS} or frame the data more coarsely"
) -> None:
    """Refuse more than :data:`MAX_TIMESTEPS` steps, whatever sets them (a graph, the data, -T
    of any command); ``remedy``: how this command's steps are made fewer."""
    if steps > MAX_TIMESTEPS:
        raise UserError(
            f"{steps:,} time steps: more than danet-deploy runs ({MAX_TIMESTEPS:,}); {remedy}"
        )


def check_run_memory(
    shapes: Mapping[str, Sequence[int]],
    steps: int,
    batch: int,
    keep_all: bool = False,
    device: torch.device | None = None,
    remedy: str = f"{FEWER_STEPS} or fewer samples",
) -> None:
    """Refuse a run of more than :data:`MAX_TIMESTEPS` steps, or one whose steps cannot fit in
    memory, before anything is allocated.

    ``shapes``: each layer's values per sample and step. A layer-synchronous simulator holds
    a layer's input and output for every step of the batch at once (``keep_all``: every layer,
    as a Lava parity check records and as training keeps them for the backward pass); that
    lower bound is held against the memory available now on ``device``.
    """
    check_timesteps(steps)
    sizes = [int(np.prod(s)) for s in shapes.values()] or [0]
    values = sum(sizes) if keep_all else 2 * max(sizes)
    need = steps * batch * values * BYTES_PER_VALUE
    on_gpu = device is not None and device.type == "cuda"
    available = torch.cuda.mem_get_info(device)[0] if on_gpu else available_memory()
    if need > available:
        raise UserError(
            f"{steps:,} time steps x {batch} samples x {values:,} values need at least "
            f"{need / 2**30:,.1f} GiB of memory, {available / 2**30:,.1f} GiB is available; "
            f"{remedy}"
        )


def as_time_series(
    x: torch.Tensor, graph: "FlatGraph", keep_all: bool = False, steps_option: str | None = None
) -> torch.Tensor:
    """``[N, *in]`` (static, repeated ``graph.timesteps`` times) or ``[N, T, *in]`` -> ``[N, T, *in]``,
    once the run is known to fit in memory (:func:`check_run_memory`). ``steps_option``: the
    command's option that sets the steps of static data (``-T``), where it has one."""
    input_shape, timesteps = graph.shapes[graph.inputs[0]], graph.timesteps
    if tuple(x.shape[1:]) == tuple(input_shape):
        if timesteps is None:
            option = f"pass {steps_option} N, or " if steps_option else ""
            raise UserError(
                f"the graph records no time steps and the data is static: {option}give samples "
                f"with a time axis ([N, T, *input] in a tensor: file)"
            )
        check_run_memory(graph.shapes, timesteps, x.shape[0], keep_all)
        return x.unsqueeze(1).expand(x.shape[0], timesteps, *x.shape[1:])
    if tuple(x.shape[2:]) == tuple(input_shape):
        check_run_memory(graph.shapes, x.shape[1], x.shape[0], keep_all)
        return x
    raise UserError(
        f"data samples of shape {tuple(x.shape[1:])} do not fit the graph input {tuple(input_shape)}"
    )
