"""Frontends: a framework's network -> the NIR graph the pipeline reads (docs/nir.md).

A frontend meets the pipeline at one boundary: it builds a ``nir.NIRGraph``, which
``converters.nir_import.from_nir`` reads as it reads any ``.nir`` file.
"""

__all__ = ["from_torch"]


def __getattr__(name: str):
    """``from_torch`` on first use: the tracer imports torch.fx and nirtorch, which no command
    but a module MODEL's export needs (the Lava runtime imports this package too)."""
    if name == "from_torch":
        from danet_deploy.frontends.tracer import from_torch

        return from_torch
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
