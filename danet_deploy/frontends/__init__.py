"""Frontends: a framework's network -> the NIR graph the pipeline reads (docs/nir.md).

A frontend meets the pipeline at one boundary: it builds a ``nir.NIRGraph``, which
``converters.nir_import.from_nir`` reads as it reads any ``.nir`` file.
"""

from danet_deploy.frontends.tracer import from_torch

__all__ = ["from_torch"]
