"""What a MODEL argument is: a checkpoint, a ``.nir`` file, a netx file, a PyTorch module
(``package.module:factory``) or an export directory, resolved in one place into an
:class:`Artifact`: the flat graph (what ``export --target nir`` would write as ``graph.nir``),
the float model where there is one, and an export directory's compiled program (``program.h5``).

Every command reads MODEL through :func:`load_artifact`; what is not compiled yet is compiled by
the pipeline driver (``pipeline.py``, docs/compile.md), so that the stages only read artifacts.
This module sits with the export stage: it converts to NIR, it never compiles.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nir
import torch

from .checkpoint import load_model
from .converters.netx_import import is_netx, read_netx
from .converters.nir_export import DEFAULT_DT, to_nir
from .converters.nir_import import from_nir, read_nir, read_nir_graph
from .data import as_time_series, evaluation_split, first, load_dataset
from .errors import UserError
from .frontends.module_spec import is_module_spec, load_module_graph
from .hashes import file_sha256, named_file
from .ir.graph import DEFAULT_RESET, FlatGraph
from .ir.program import Program, read_program
from .models import SpikingNet
from .problems import Problems

CALIBRATION_SAMPLES = 32


@dataclass
class Artifact:
    """What a MODEL_OR_ARTIFACT argument resolves to."""

    source: Path  # the checkpoint or .nir file it came from
    graph: FlatGraph  # the validated, flattened NIR graph
    nir_graph: nir.NIRGraph  # the graph as NIR objects (for writing)
    model: SpikingNet | None = None
    checkpoint: dict[str, Any] | None = None
    program: Program | None = None  # for compiled export directories
    program_path: Path | None = None


def source_kind(path: Path) -> str:
    """What MODEL is: ``nir``, ``netx`` (a lava-dl network file), ``module`` (``package.module:factory``,
    a PyTorch module, docs/nir.md) or ``checkpoint``."""
    if is_module_spec(path):
        return "module"
    if path.suffix == ".nir":
        return "nir"
    return "netx" if path.suffix in (".net", ".h5", ".hdf5") or is_netx(path) else "checkpoint"


def read_manifest(path: Path) -> dict[str, Any]:
    """An export directory's ``manifest.json``, checked for what the commands read from it."""
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise UserError(f"{path}: not an export directory (no manifest.json)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(
            f"{manifest_path}: not a readable export manifest ({e}); export again"
        ) from None
    source = manifest.get("source") if isinstance(manifest, dict) else None
    if not isinstance(source, dict) or not all(
        isinstance(source.get(k), str) for k in ("path", "kind")
    ):
        raise UserError(
            f"{manifest_path}: not a danet-deploy export manifest (no source path and kind); "
            f"export again"
        )
    return manifest


def export_source(path: Path) -> Path:
    """What an export directory's float side is read from: the checkpoint it was exported from
    while that is unchanged (its path is relative to the directory, its sha256 recorded),
    else the directory's own ``graph.nir`` (a note on stderr says why)."""
    source = read_manifest(path)["source"]
    if source["kind"] != "checkpoint":
        return path / "graph.nir"
    checkpoint = path / source["path"]  # an absolute path stays as it is
    if not checkpoint.is_file():
        why = "no longer exists"
    elif source.get("sha256") != file_sha256(checkpoint):
        why = "has changed since the export (its sha256 differs)"
    else:
        return checkpoint
    print(
        f"danet-deploy: {path}: the checkpoint it was exported from, {checkpoint}, {why}; the float "
        f"reference is the export's own graph.nir",
        file=sys.stderr,
    )
    return path / "graph.nir"


def _state_conventions(nir_graph: nir.NIRGraph, graph: FlatGraph, reset: str | None) -> None:
    """Write the time step, discretisation and reset ``graph`` was read with, stated or assumed,
    into ``nir_graph``'s metadata, so that its export's ``graph.nir`` says them and no later
    command assumes again (docs/nir.md). A node's own ``reset`` still overrides the graph's, as
    it did when read, unless ``--reset`` overrode it."""
    metadata = dict(nir_graph.metadata or {})
    metadata.update(dt=graph.dt, discretisation=graph.discretisation)
    if reset is not None or "reset" not in metadata:
        metadata["reset"] = reset or DEFAULT_RESET
    nir_graph.metadata = metadata
    if reset is not None:
        _drop_node_resets(nir_graph)


def _drop_node_resets(nir_graph: nir.NIRGraph) -> None:
    """Remove every node's own ``reset`` (in subgraphs too): a ``--reset`` overrode them."""
    for node in nir_graph.nodes.values():
        node.metadata = {k: v for k, v in (node.metadata or {}).items() if k != "reset"}
        if isinstance(node, nir.NIRGraph):
            _drop_node_resets(node)


def load_artifact(
    path: Path,
    dt: float | None = None,
    keep_model: bool = True,
    keep_input_neurons: bool = False,
    reset: str | None = None,
    discretisation: str | None = None,
    module: dict[str, Any] | None = None,
    problems: Problems | None = None,
) -> Artifact:
    """Resolve a checkpoint, a ``.nir`` file, a netx file or an export directory (with
    ``manifest.json``). ``keep_input_neurons``: a netx input layer's neurons are kept
    (lava-dl's examples skip them). ``reset``, ``discretisation``: a ``.nir`` graph's
    conventions (recorded in the graph's metadata, so that its export keeps them). ``module``: the
    ``weights``, ``input_shape`` and ``timesteps`` of a ``package.module:factory`` MODEL, traced by
    ``frontends`` into the NIR graph a ``.nir`` file would give. ``problems``: where the graph's
    unsupported nodes and wrong shapes are reported, every one (``check``; else the first raises).

    For an export directory the float side is its source checkpoint while that is unchanged
    (else its ``graph.nir``: :func:`export_source`), and a compiled directory brings its program.
    Without ``keep_model`` a checkpoint's BatchNorm is folded into its loaded weights in
    place (no copy of the weights), and neither the spent model nor the checkpoint's
    ``state_dict`` is returned: the graph holds the only reference to each weight, so that
    a compile can free each once it is quantised.
    """
    path = Path(path)
    if path.is_dir():
        art = load_artifact(
            export_source(path),
            dt,
            keep_model,
            keep_input_neurons,
            reset,
            discretisation,
            problems=problems,
        )
        if (path / "program.h5").is_file():
            art.program, art.program_path = read_program(path / "program.h5"), path / "program.h5"
        return art
    kind = source_kind(path)
    given = {k: v for k, v in (module or {}).items() if v is not None}
    if kind == "module":
        nir_graph = load_module_graph(
            str(path), given.get("weights"), given.get("input_shape"), given.get("timesteps"), dt
        )
        graph = from_nir(nir_graph, None, reset, discretisation, problems)
        _state_conventions(nir_graph, graph, reset)
        return Artifact(path, graph, nir_graph)
    if given:
        raise UserError(
            f"{path}: --{next(iter(given)).replace('_', '-')} applies to a package.module:factory "
            f"MODEL only"
        )
    if kind == "nir":
        graph = read_nir(path, dt, reset, discretisation, problems)
        nir_graph = read_nir_graph(path)
        _state_conventions(nir_graph, graph, reset)
        return Artifact(path, graph, nir_graph)
    if reset is not None or discretisation is not None:
        raise UserError(
            f"{path}: --reset and --discretisation apply to a .nir MODEL only (this {kind} states "
            f"how its neurons work)"
        )
    if kind == "netx":
        if dt is not None:
            raise UserError(
                f"{path}: --dt does not apply to a netx file (its neurons count time steps)"
            )
        nir_graph = read_netx(path, keep_input_neurons)
        return Artifact(path, from_nir(nir_graph, problems=problems), nir_graph)
    model, blob = load_model(path, mmap=keep_model)
    nir_graph = to_nir(model, dt if dt is not None else DEFAULT_DT, fold_in_place=not keep_model)
    if not keep_model:  # the graph's arrays are the only reference to the weights left
        model, blob["state_dict"] = None, {}
    return Artifact(path, from_nir(nir_graph, problems=problems), nir_graph, model, blob)


def model_entry(path: Path, weights: str | Path | None = None) -> dict[str, Any]:
    """MODEL as an artefact's ``made_from.model`` names it (docs/artifacts.md): its basename,
    what it is and the sha256 of its file; an export directory by the sha256 of its
    ``manifest.json`` (which holds the sha256 of every file of it), a ``package.module:factory``
    by its ``weights`` file's."""
    path = Path(path)
    if path.is_dir():
        entry = named_file(path.resolve().name, path / "manifest.json")
        return {**entry, "kind": "export"}
    if is_module_spec(path):
        return {**named_file(str(path), Path(weights) if weights else None), "kind": "module"}
    return {**named_file(path.name, path), "kind": source_kind(path)}


def calibration_spec(art: Artifact, data: str | None) -> str | None:
    """The data spec a compile calibrates on: ``data``, else the checkpoint's own dataset."""
    return data or (art.checkpoint or {}).get("data", {}).get("spec")


def calibration_batch(art: Artifact, data: str | None, samples: int) -> torch.Tensor | None:
    """A few training samples as ``[N, T, ...]`` for quantisation; None without any data."""
    spec = calibration_spec(art, data)
    return calibration_data(spec, art.graph, samples) if spec else None


def calibration_data(
    spec: str, graph: FlatGraph, samples: int = CALIBRATION_SAMPLES
) -> torch.Tensor:
    """The first ``samples`` training samples of ``spec``, shaped for ``graph``'s input."""
    split = "train" if evaluation_split(spec) == "test" else "all"
    ds = first(load_dataset(spec, split, timesteps=graph.timesteps)[0], samples)
    x = torch.stack([ds[i][0] for i in range(len(ds))]).float()
    return as_time_series(x, graph)
