"""The model zoo: ``build(arch, connection, num_classes, **kw)`` and ``list_archs()``.

Connection types (docs/danets.md): ``plain``, ``aa``, ``sew`` (ADD), ``sew-and``,
``sew-iand``, ``ms``, ``pa``, ``da``. The four DANet architectures are the DA-ResNets
with basic blocks (``resnet18``/``resnet34``) and bottlenecks (``resnet50``/``101``/
``152``) built with ``connection="da"``, the DA-DenseNet (``densenet_*``) and the
DA-VGG (``vgg_*`` with ``da``); see ``docs/danets.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

from ..errors import UserError
from .archs import build_densenet, build_staged
from .graph import COUNT, REAL, SPIKE, GraphBuilder, Node, SpikingNet
from .neurons import LIF

CONNECTIONS = ("plain", "aa", "sew", "sew-and", "sew-iand", "ms", "pa", "da")
DOWNSAMPLE_FROM = (
    64  # a small-input architecture given a sensor this wide gets a stem that divides by 4
)
NEURON_DEFAULTS = {"beta": 0.5, "threshold": 1.0, "learn_beta": False, "surrogate_alpha": 2.0}
FRAMEWORKS = {  # the neuron parameters each training framework takes, with their defaults
    "snntorch": NEURON_DEFAULTS,
    "lava-dl": {
        "threshold": 1.0,
        "current_decay": 1.0,
        "voltage_decay": 0.5,
        "tau_grad": 0.15,
        "scale_grad": 4.0,
    },
}


@dataclass(frozen=True)
class ArchSpec:
    """What an architecture is, what it accepts, and how to build it from a config."""

    builder: Callable[[dict[str, Any]], SpikingNet]
    connections: tuple[str, ...]
    input_shape: tuple[int, int, int]
    description: str


_RESNET_IMAGENET = {
    18: ("basic", [2, 2, 2, 2], 1),
    34: ("basic", [3, 4, 6, 3], 1),
    50: ("bottleneck", [3, 4, 6, 3], 4),
    101: ("bottleneck", [3, 4, 23, 3], 4),
    152: ("bottleneck", [3, 8, 36, 3], 4),
}

ARCHS: dict[str, ArchSpec] = {
    **{
        f"resnet{d}": ArchSpec(
            partial(
                build_staged,
                family="imagenet",
                kind=k,
                widths=[64, 128, 256, 512],
                depths=n,
                expansion=e,
            ),
            CONNECTIONS,
            (3, 224, 224),
            f"ImageNet ResNet-{d} ({k} blocks {n}); with 'da': DA-ResNet-{d}",
        )
        for d, (k, n, e) in _RESNET_IMAGENET.items()
    },
    "resnet20": ArchSpec(
        partial(build_staged, family="small", kind="basic", widths=[16, 32, 64], depths=[3, 3, 3]),
        CONNECTIONS,
        (3, 32, 32),
        "CIFAR ResNet-20",
    ),
    "resnet56": ArchSpec(
        partial(build_staged, family="small", kind="basic", widths=[16, 32, 64], depths=[9, 9, 9]),
        CONNECTIONS,
        (3, 32, 32),
        "CIFAR ResNet-56",
    ),
    "digits_resnet": ArchSpec(
        partial(build_staged, family="small", kind="basic", widths=[16, 32], depths=[1, 1]),
        CONNECTIONS,
        (1, 8, 8),
        "two-stage ResNet for 8x8 digits (the embedded default)",
    ),
    "vgg_digits": ArchSpec(
        partial(
            build_staged,
            family="small",
            kind="single",
            widths=[16, 32, 64],
            depths=[2, 2, 2],
            dense_stages=True,
        ),
        ("plain", "da"),
        (1, 8, 8),
        "VGG-style chain for 8x8 digits; with 'da': DA-VGG (dense across stages)",
    ),
    "vgg_cifar": ArchSpec(
        partial(
            build_staged,
            family="small",
            kind="single",
            widths=[64, 128, 256],
            depths=[2, 2, 3],
            dense_stages=True,
        ),
        ("plain", "da"),
        (3, 32, 32),
        "VGG-style chain for 32x32; with 'da': DA-VGG",
    ),
    "densenet_digits": ArchSpec(
        partial(build_densenet, growth=8, layers=[3, 3]),
        ("da",),
        (1, 8, 8),
        "DA-DenseNet for 8x8 digits (additive dense aggregation)",
    ),
    "densenet_cifar": ArchSpec(
        partial(build_densenet, growth=12, layers=[6, 6, 6]),
        ("da",),
        (3, 32, 32),
        "DA-DenseNet for 32x32",
    ),
}


def list_archs() -> dict[str, ArchSpec]:
    """All architectures by name, with the connection types each accepts."""
    return dict(ARCHS)


def list_connections() -> tuple[str, ...]:
    return CONNECTIONS


def make_config(
    arch: str,
    connection: str,
    num_classes: int,
    timesteps: int = 4,
    input_shape: tuple[int, ...] | None = None,
    framework: str = "snntorch",
    **neuron_kw: Any,
) -> dict[str, Any]:
    """Validate the choice and return the plain-data config a checkpoint stores.

    ``framework`` picks the neuron: snnTorch's LIF or lava-dl slayer's CUBA; its
    parameters (``neuron_kw``) are those of :data:`FRAMEWORKS`.
    """
    if arch not in ARCHS:
        raise UserError(f"unknown architecture {arch!r}; valid: {', '.join(ARCHS)}")
    spec = ARCHS[arch]
    if connection not in spec.connections:
        raise UserError(
            f"architecture {arch!r} does not take connection {connection!r}; "
            f"valid: {', '.join(spec.connections)}"
        )
    if framework not in FRAMEWORKS:
        raise UserError(f"unknown framework {framework!r}; valid: {', '.join(FRAMEWORKS)}")
    defaults = FRAMEWORKS[framework]
    unknown = set(neuron_kw) - set(defaults)
    if unknown:
        raise UserError(
            f"unknown {framework} neuron parameter(s) {', '.join(sorted(unknown))}; "
            f"valid: {', '.join(defaults)}"
        )
    if framework == "lava-dl" and neuron_kw.get("current_decay", 1.0) != 1.0:
        raise UserError(
            "lava-dl current_decay must be 1 for the zoo's networks: their BatchNorm shift is a "
            "constant input current, which Loihi can only apply as a voltage bias when the "
            "current does not persist (a netx file may use any decay)"
        )
    if num_classes < 1 or timesteps < 1:
        raise UserError("num_classes and timesteps must be positive")
    shape = list(input_shape or spec.input_shape)
    downsample = max(spec.input_shape[1:]) < DOWNSAMPLE_FROM <= max(shape[1:])
    return {
        "arch": arch,
        "connection": connection,
        "num_classes": int(num_classes),
        "timesteps": int(timesteps),
        "input_shape": shape,
        **({"stem": "downsample"} if downsample else {}),
        "neuron": {
            **({"framework": framework} if framework != "snntorch" else {}),
            **defaults,
            **neuron_kw,
        },
    }


def build_from_config(config: dict[str, Any]) -> SpikingNet:
    """Rebuild a model from the config stored in a checkpoint."""
    make_config(
        config["arch"],
        config["connection"],
        config["num_classes"],
        config["timesteps"],
        config["input_shape"],
        **config["neuron"],
    )  # its "framework" key, if any, selects the neuron
    return ARCHS[config["arch"]].builder(config)


def build(
    arch: str,
    connection: str,
    num_classes: int,
    timesteps: int = 4,
    input_shape: tuple[int, ...] | None = None,
    framework: str = "snntorch",
    **neuron_kw: Any,
) -> SpikingNet:
    """Build ``arch`` with ``connection`` blocks, e.g. ``build("resnet50", "da", 1000)``."""
    return build_from_config(
        make_config(arch, connection, num_classes, timesteps, input_shape, framework, **neuron_kw)
    )


__all__ = [
    "ARCHS",
    "CONNECTIONS",
    "COUNT",
    "FRAMEWORKS",
    "REAL",
    "SPIKE",
    "ArchSpec",
    "GraphBuilder",
    "LIF",
    "Node",
    "SpikingNet",
    "build",
    "build_from_config",
    "list_archs",
    "list_connections",
    "make_config",
]
