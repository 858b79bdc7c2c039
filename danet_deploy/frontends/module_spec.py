"""MODEL as ``package.module:factory``: a PyTorch module built by the user's own code (docs/nir.md).

The module is imported the way uvicorn imports an app (the current directory first on
``sys.path``, then ``importlib``, then the attribute path after the colon), the factory is called
without arguments (an ``nn.Module`` itself is taken as it is), ``--weights`` is loaded into it as
a ``state_dict`` with ``weights_only=True`` (no code in the file runs), and :func:`from_torch`
traces it on a zero input of ``--input-shape``.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from pathlib import Path
from typing import Any

import nir
import torch

from danet_deploy.errors import UserError

_SPEC = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*")


def is_module_spec(model: str | Path) -> bool:
    """Whether MODEL names ``package.module:factory`` (and no file of that name exists)."""
    return bool(_SPEC.fullmatch(str(model))) and not os.path.exists(model)


def parse_shape(text: str) -> tuple[int, ...]:
    """``--input-shape`` ``"3,32,32"`` as one sample's shape (no batch axis)."""
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if not shape or any(v < 1 for v in shape):
        raise UserError(
            f"--input-shape {text!r}: give one sample's shape as positive integers, e.g. 3,32,32"
        )
    return shape


def _factory(spec: str) -> Any:
    module_name, _, attrs = spec.partition(":")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as uvicorn's --app-dir . does
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - the user's code may raise anything while importing
        raise UserError(
            f"{spec}: cannot import module {module_name!r} ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:160] if str(e) else ''})"
        ) from None
    for attr in attrs.split("."):
        if not hasattr(target, attr):
            raise UserError(f"{spec}: module {module_name!r} has no attribute {attrs!r}")
        target = getattr(target, attr)
    return target


def build_module(spec: str, weights: Path | None = None) -> torch.nn.Module:
    """The module ``spec`` names, built by its factory, with ``weights`` loaded, in eval mode."""
    made = _factory(spec)
    if not isinstance(made, torch.nn.Module):
        if not callable(made):
            raise UserError(
                f"{spec}: is a {type(made).__name__}, neither a torch.nn.Module nor a factory"
            )
        try:
            made = made()
        except Exception as e:  # noqa: BLE001 - the user's factory may raise anything
            raise UserError(
                f"{spec}: the factory raised {type(e).__name__}: "
                f"{str(e).splitlines()[0][:160] if str(e) else ''}"
            ) from None
        if not isinstance(made, torch.nn.Module):
            raise UserError(
                f"{spec}: the factory returned a {type(made).__name__}, not a torch.nn.Module"
            )
    if weights is not None:
        _load_weights(spec, made, Path(weights))
    return made.eval()


def _load_weights(spec: str, module: torch.nn.Module, weights: Path) -> None:
    if not weights.is_file():
        raise UserError(f"--weights {weights}: no such file")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling refuses many ways
        raise UserError(
            f"--weights {weights}: not a state_dict that loads with weights_only=True "
            f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})"
        ) from None
    if not isinstance(state, dict):
        raise UserError(f"--weights {weights}: holds a {type(state).__name__}, not a state_dict")
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:240]
        raise UserError(f"--weights {weights}: does not fit {spec} ({detail})") from None


def load_module_graph(
    spec: str,
    weights: Path | None,
    input_shape: str | None,
    timesteps: int | None,
    dt: float | None,
) -> nir.NIRGraph:
    """The NIR graph of the module ``spec`` names (what ``export`` reads for such a MODEL)."""
    from danet_deploy.frontends.tracer import (
        from_torch,
    )  # torch.fx and nirtorch: only this needs them

    if input_shape is None:
        raise UserError(
            f"{spec}: a module MODEL needs --input-shape (one sample's shape, e.g. 3,32,32)"
        )
    module = build_module(spec, weights)
    example = torch.zeros(1, *parse_shape(input_shape))
    return from_torch(module, example, dt=1.0 if dt is None else dt, timesteps=timesteps)
