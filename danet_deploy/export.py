"""Export stage: a checkpoint or a ``.nir`` file -> ``OUTDIR/graph.nir`` + ``manifest.json``.

``OUTDIR`` is written into a temporary sibling directory and moved into place only
when everything succeeded, so a failure never leaves a half-written artifact.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nir

from . import __version__
from .checkpoint import load_model
from .converters.nir_export import DEFAULT_DT, to_nir, write_nir
from .converters.nir_import import FlatGraph, from_nir, read_nir
from .errors import UserError
from .models import SpikingNet

TARGETS = ("nir",)


@dataclass
class Artifact:
    """What a MODEL_OR_ARTIFACT argument resolves to."""

    source: Path                   # the checkpoint or .nir file it came from
    graph: FlatGraph               # the validated, flattened NIR graph
    nir_graph: nir.NIRGraph        # the graph as NIR objects (for writing)
    model: SpikingNet | None = None
    checkpoint: dict[str, Any] | None = None


def load_artifact(path: Path, dt: float | None = None) -> Artifact:
    """Resolve a checkpoint, a ``.nir`` file or an export directory (with ``manifest.json``)."""
    path = Path(path)
    if path.is_dir():
        manifest_path = path / "manifest.json"
        if not manifest_path.is_file():
            raise UserError(f"{path}: not an export directory (no manifest.json)")
        manifest = json.loads(manifest_path.read_text())
        source = Path(manifest["source"]["path"])
        if manifest["source"]["kind"] == "checkpoint" and source.is_file():
            return load_artifact(source, dt)
        path = path / "graph.nir"
    if path.suffix == ".nir":
        graph = read_nir(path, dt)
        return Artifact(path, graph, nir.read(path, type_check=False))
    model, blob = load_model(path)
    nir_graph = to_nir(model, dt if dt is not None else DEFAULT_DT)
    return Artifact(path, from_nir(nir_graph), nir_graph, model, blob)


def _export_artifact(path: Path, dt: float | None) -> Artifact:
    """Like :func:`load_artifact`, but folds BatchNorm into the loaded weights in place."""
    if path.suffix == ".nir" or path.is_dir():
        return load_artifact(path, dt)
    model, blob = load_model(path)
    nir_graph = to_nir(model, dt if dt is not None else DEFAULT_DT, fold_in_place=True)
    return Artifact(path, from_nir(nir_graph), nir_graph, None, blob)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tool_versions() -> dict[str, str]:
    from importlib.metadata import version

    versions = {"danet-deploy": __version__, "python": platform.python_version()}
    for dist in ("nir", "torch", "snntorch", "lava-nc", "lava-dl", "numpy"):
        versions[dist] = version(dist)
    return versions


def layer_list(graph: FlatGraph) -> list[dict[str, Any]]:
    """One entry per NIR node: name, type, shape and what danet-deploy recorded about it."""
    layers = []
    for name, node in graph.nodes.items():
        layers.append({"name": name, "type": graph.kind(name), "shape": list(graph.shapes[name]),
                       "inputs": graph.sources[name], **node.metadata})
    return layers


def manifest_for(art: Artifact, target: str) -> dict[str, Any]:
    g = art.graph
    return {
        "target": target,
        "profile": None,
        "timesteps": g.timesteps,
        "dt": g.dt,
        "pipeline_latency": 0,  # NIR is layer-synchronous: no per-hop delay
        "lowering": "expand",   # streams are sums of currents into their consumers
        "source": {"path": str(art.source), "kind": "nir" if art.source.suffix == ".nir" else "checkpoint",
                   "sha256": _sha256(art.source)},
        "model": {k: art.checkpoint["config"][k] for k in ("arch", "connection", "num_classes")}
        if art.checkpoint else None,
        "layers": layer_list(g),
        "quantisation": None,
        "core_mapping": None,
        "tool_versions": tool_versions(),
    }


def export(model_path: Path, target: str, outdir: Path | None = None, dt: float | None = None) -> Path:
    """Write the artifacts for ``target`` and return the output directory."""
    if target not in TARGETS:
        raise UserError(f"unknown target {target!r}; valid: {', '.join(TARGETS)}")
    model_path = Path(model_path)
    art = _export_artifact(model_path, dt)
    outdir = Path(outdir) if outdir else model_path.parent / f"{model_path.stem}.{target}"
    outdir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.", dir=outdir.parent))
    try:
        write_nir(tmp / "graph.nir", art.nir_graph)
        (tmp / "manifest.json").write_text(json.dumps(manifest_for(art, target), indent=2, sort_keys=True) + "\n")
        if outdir.exists():
            shutil.rmtree(outdir)
        tmp.rename(outdir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return outdir
