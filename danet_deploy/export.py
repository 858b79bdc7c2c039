"""Export stage: a checkpoint or a ``.nir`` file -> ``OUTDIR`` for a target.

``nir`` writes ``graph.nir`` + ``manifest.json``; the Loihi targets (``loihi2-sim``,
``loihi2``, ``loihi1``) also compile: ``program.h5`` (the quantised program) and, for
sequential graphs, ``netx.h5`` for lava-dl's loader. ``OUTDIR`` is written into a
temporary sibling directory and moved into place only when everything succeeded,
so a failure never leaves a half-written artifact; what may be replaced is decided by
``outputs`` (never a file danet-deploy did not write).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nir
import numpy as np
import torch

from . import __version__
from .checkpoint import load_model
from .compile import TARGETS as CHIP_TARGETS
from .compile import compile_graph
from .converters.netx_import import is_netx, read_netx
from .converters.netx_writer import is_sequential, write_netx
from .converters.nir_export import DEFAULT_DT, to_nir, write_nir
from .converters.nir_import import from_nir, read_nir, read_nir_graph
from .ir.graph import DEFAULT_RESET, FlatGraph
from .ir.chip_format import LOIHI
from .ir.program import Program, read_program, summarise, write_program
from .ir.sigma_delta import SigmaDelta
from .data import as_time_series, evaluation_split, first, load_dataset
from .errors import UserError
from .frontends.module_spec import is_module_spec, load_module_graph
from .heap import return_freed_memory
from .lowering import LOWERINGS
from .models import SpikingNet
from .outputs import ARTIFACT_FILES, TAGS, artifact_tmpdir, check_artifact_dir, install_artifact
from .profiles import Profile, load_profile

TARGETS = ("nir", *CHIP_TARGETS)
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
    elif source.get("sha256") != _sha256(checkpoint):
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
) -> Artifact:
    """Resolve a checkpoint, a ``.nir`` file, a netx file or an export directory (with
    ``manifest.json``). ``keep_input_neurons``: a netx input layer's neurons are kept
    (lava-dl's examples skip them). ``reset``, ``discretisation``: a ``.nir`` graph's
    conventions (recorded in the graph's metadata, so that its export keeps them). ``module``: the
    ``weights``, ``input_shape`` and ``timesteps`` of a ``package.module:factory`` MODEL, traced by
    ``frontends`` into the NIR graph a ``.nir`` file would give.

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
            export_source(path), dt, keep_model, keep_input_neurons, reset, discretisation
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
        graph = from_nir(nir_graph, reset=reset, discretisation=discretisation)
        _state_conventions(nir_graph, graph, reset)
        return Artifact(path, graph, nir_graph)
    if given:
        raise UserError(
            f"{path}: --{next(iter(given)).replace('_', '-')} applies to a package.module:factory "
            f"MODEL only"
        )
    if kind == "nir":
        graph = read_nir(path, dt, reset, discretisation)
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
        return Artifact(path, from_nir(nir_graph), nir_graph)
    model, blob = load_model(path, mmap=keep_model)
    nir_graph = to_nir(model, dt if dt is not None else DEFAULT_DT, fold_in_place=not keep_model)
    if not keep_model:  # the graph's arrays are the only reference to the weights left
        model, blob["state_dict"] = None, {}
    return Artifact(path, from_nir(nir_graph), nir_graph, model, blob)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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


def calibration_batch(art: Artifact, data: str | None, samples: int) -> torch.Tensor | None:
    """A few training samples as ``[N, T, ...]`` for quantisation; None without any data."""
    spec = data or (art.checkpoint or {}).get("data", {}).get("spec")
    return calibration_data(spec, art.graph, samples) if spec else None


def calibration_data(
    spec: str, graph: FlatGraph, samples: int = CALIBRATION_SAMPLES
) -> torch.Tensor:
    """The first ``samples`` training samples of ``spec``, shaped for ``graph``'s input."""
    split = "train" if evaluation_split(spec) == "test" else "all"
    ds = first(load_dataset(spec, split, timesteps=graph.timesteps)[0], samples)
    x = torch.stack([ds[i][0] for i in range(len(ds))]).float()
    return as_time_series(x, graph)


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
            "sha256": _sha256(art.source) if art.source.is_file() else None,
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
                for t in pop.terms
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


def default_outdir(model_path: Path, target: str) -> Path:
    """``<model stem>.<target>/`` next to MODEL, or ``<model stem>.<target>.d/`` where that is MODEL
    itself (``export g.nir --target nir``); a ``package.module:factory`` MODEL is named whole
    (``package.module-factory.<target>/``), so that two factories of a package never share one."""
    stem = model_path.name.replace(":", "-") if is_module_spec(model_path) else model_path.stem
    outdir = model_path.parent / f"{stem}.{target}"
    return outdir.with_name(outdir.name + ".d") if outdir == model_path else outdir


def export(
    model_path: Path,
    target: str,
    outdir: Path | None = None,
    dt: float | None = None,
    profile: str | None = None,
    lowering: str = "auto",
    data: str | None = None,
    calibration_samples: int = CALIBRATION_SAMPLES,
    force: bool = False,
    keep_input_neurons: bool = False,
    reset: str | None = None,
    discretisation: str | None = None,
    strict: bool = False,
    module: dict[str, Any] | None = None,
) -> Path:
    """Write the artifacts for ``target`` and return the output directory.

    ``outdir`` may be missing, empty or an earlier artifact of ours; a non-empty foreign
    directory needs ``force`` (and then only our files are written into it). ``strict``: a
    layer whose weight error is above the compile's bound is an error, not a warning. ``module``:
    a ``package.module:factory`` MODEL's options (:func:`load_artifact`).
    """
    if target not in TARGETS:
        raise UserError(f"unknown target {target!r}; valid: {', '.join(TARGETS)}")
    if lowering not in LOWERINGS:
        raise UserError(f"unknown lowering {lowering!r}; valid: {', '.join(LOWERINGS)}")
    model_path = Path(model_path)
    outdir = Path(outdir) if outdir else default_outdir(model_path, target)
    check_artifact_dir(
        outdir, force, ARTIFACT_FILES if target != "nir" else ("graph.nir", "manifest.json")
    )
    art = load_artifact(
        model_path,
        dt,
        keep_model=False,
        keep_input_neurons=keep_input_neurons,
        reset=reset,
        discretisation=discretisation,
        module=module,
    )
    own = [n for n, node in art.graph.nodes.items() if isinstance(node, SigmaDelta)]
    if target == "nir" and own:
        raise UserError(
            f"{model_path}: node {own[0]!r} is a sigma-delta neuron, which NIR {nir.version} has no "
            f"primitive for, so no NIR reader could run this graph; export --target loihi2-sim "
            f"compiles it (its graph.nir holds danet-deploy's own SigmaDelta nodes, docs/lava-dl.md)"
        )
    program = costs = prof = None
    samples: list[torch.Tensor | None] = [
        None
    ]  # handed over to the compile, which drops them once calibrated
    if target != "nir":
        prof = load_profile(profile or CHIP_TARGETS[target])
        samples[0] = calibration_batch(
            art, data, calibration_samples
        )  # read first: a bad dataset fails early
        return_freed_memory()  # the dataset the samples were cut from
    try:
        with artifact_tmpdir(outdir) as tmp:
            write_nir(
                tmp / "graph.nir", art.nir_graph
            )  # first: its buffers are gone before the program's
            return_freed_memory()
            if prof is not None:
                program, costs = compile_graph(
                    art.graph,
                    target,
                    prof,
                    lowering,
                    samples.pop(),  # the manifest
                    release_graph=True,
                    strict=strict,
                )  # reads its structure only
                write_program(tmp / "program.h5", program)
                if is_sequential(program):
                    write_netx(tmp / "netx.h5", program)
            files = [p.name for p in tmp.iterdir()] + ["manifest.json"]
            manifest = manifest_for(art, target, outdir, files, program, costs, prof)
            (tmp / "manifest.json").write_text(
                json.dumps(manifest, indent=2, sort_keys=True) + "\n"
            )
            install_artifact(tmp, outdir)
    finally:
        del art, program
        return_freed_memory()  # before the caller (and the interpreter's exit) allocates more
    return outdir
