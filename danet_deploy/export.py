"""Export stage: what an export directory ``OUTDIR`` holds beside the graph and the program: its
``manifest.json`` (:func:`manifest_for`) and its default name (:func:`default_outdir`).

``nir`` writes ``graph.nir`` + ``manifest.json``; the Loihi targets (``loihi2-sim``,
``loihi2``, ``loihi1``) also compile: ``program.h5`` (the quantised program) and, for
sequential graphs, ``netx.h5`` for lava-dl's loader. The ``export`` command, which writes them
all, is driven by ``pipeline.export``: ``OUTDIR`` is written into a
temporary sibling directory and moved into place only when everything succeeded,
so a failure never leaves a half-written artifact; what may be replaced is decided by
``outputs`` (never a file danet-deploy did not write). MODEL is read by ``artifacts``.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .artifacts import Artifact, source_kind
from .ir.graph import FlatGraph
from .ir.chip_format import LOIHI
from .ir.program import Program, summarise
from .frontends.module_spec import is_module_spec
from .hashes import file_sha256, hashed
from .outputs import TAGS
from .profiles import Profile


def tool_versions() -> dict[str, str]:
    """The releases the export was made with (Lava plays no part in an export: it runs later,
    in the Lava runtime, docs/lava-runtime.md)."""
    from importlib.metadata import version

    versions = {"danet-deploy": __version__, "python": platform.python_version()}
    for dist in ("nir", "torch", "snntorch", "numpy", "h5py"):
        versions[dist] = version(dist)
    return versions


def layer_list(graph: FlatGraph) -> list[dict[str, Any]]:
    """One entry per NIR node: name, type, shape and what danet-deploy recorded about it."""
    layers = []
    for name, node in graph.nodes.items():
        layers.append(
            {
                "name": name,
                "type": graph.kind(name),
                "shape": list(graph.shapes[name]),
                "inputs": graph.sources[name],
                **node.metadata,
            }
        )
    return layers


def manifest_for(
    art: Artifact,
    target: str,
    outdir: Path,
    files: list[str],
    program: Program | None = None,
    costs: dict[str, Any] | None = None,
    profile: Profile | None = None,
) -> dict[str, Any]:
    """The manifest of an export of ``art`` to ``outdir`` holding ``files`` (itself included)."""
    g = art.graph
    manifest = {
        "format": TAGS["export"],
        "files": sorted(files),
        "target": target,
        "profile": profile.name if profile else None,
        "timesteps": g.timesteps,
        "dt": g.dt,
        "pipeline_latency": program.lowered.latency if program else 0,
        "lowering": program.lowered.lowering if program else "expand",
        "source": {
            "path": str(art.source)
            if source_kind(art.source) == "module"  # package.module:factory
            else os.path.relpath(art.source.resolve(), outdir.resolve()),
            "kind": source_kind(art.source),
            "sha256": file_sha256(art.source) if art.source.is_file() else None,
        },
        "model": {k: art.checkpoint["config"][k] for k in ("arch", "connection", "num_classes")}
        if art.checkpoint
        else None,
        "layers": layer_list(g),
        "quantisation": None,
        "core_mapping": None,
        "tool_versions": tool_versions(),
    }
    if program is not None:
        manifest.update(_compiled_sections(program, costs or {}, profile))
    return manifest


def _compiled_sections(program: Program, costs: dict[str, Any], profile: Profile) -> dict[str, Any]:
    layers, quant, cores = [], {}, {}
    for name, pop in program.populations.items():
        f = program.fixed[name]
        entry = {
            "name": name,
            "kind": pop.kind.name,
            "shape": list(pop.shape),
            "connection": pop.connection,
            "latency": pop.latency,
            "terms": [
                {
                    "source": t.source,
                    "kind": t.map.kind,
                    "weight_shape": list(t.weight_q.shape),
                    "stride": list(t.map.stride),
                    "padding": list(t.map.padding),
                    "delay": t.delay,
                    "connection": t.connection,
                }
                for t in pop.synapse_groups
            ],
        }
        layers.append(entry)
        if pop.kind.is_input:
            quant[name] = {
                "graded": f.graded,
                "value_scale": f.value_scale,
                "bits": LOIHI.input_bits,
            }
            continue
        quant[name] = {
            "scale": f.scale,
            "log2_scale": float(np.log2(f.scale)),
            "weight_bits": LOIHI.weight_bits,
            "weight_exp": LOIHI.weight_exp,
            "bias_exp": LOIHI.bias_exp,
            "vth": f.vth,
            "dv": f.dv,
            "du": f.du,
            "weight_error": f.quant_error,
            "graded_output": f.graded,
        }
        cores[name] = program.mapping[name]
    return {
        "program_layers": layers,
        "quantisation": quant,
        "core_mapping": {"layers": cores, **summarise(program.mapping, profile)},
        "lowering_costs": costs,
        "profile_estimates": profile.estimates(),
    }


def with_hashes(
    manifest: dict[str, Any], folder: Path, made_from: dict[str, Any]
) -> dict[str, Any]:
    """``manifest`` with its ``hashes`` (docs/artifacts.md): what the export was made from, the
    sha256 of every other file it lists (as written in ``folder``) and of its own canonical JSON."""
    files = {n: file_sha256(folder / n) for n in manifest["files"] if n != "manifest.json"}
    return hashed(manifest, made_from, files)


def default_outdir(model_path: Path, target: str) -> Path:
    """``<model stem>.<target>/`` next to MODEL, or ``<model stem>.<target>.d/`` where that is MODEL
    itself (``export g.nir --target nir``); a ``package.module:factory`` MODEL is named whole
    (``package.module-factory.<target>/``), so that two factories of a package never share one."""
    stem = model_path.name.replace(":", "-") if is_module_spec(model_path) else model_path.stem
    outdir = model_path.parent / f"{stem}.{target}"
    return outdir.with_name(outdir.name + ".d") if outdir == model_path else outdir
