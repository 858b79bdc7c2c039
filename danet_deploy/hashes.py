"""Content and provenance hashes of what danet-deploy writes (docs/artifacts.md).

Every artefact names, by sha256, what it was made from (``made_from``: the model file, the
data samples, the profile file, the tool's version), and its content can be checked: a report
JSON and a manifest hold the sha256 of their own canonical JSON (``content_sha256``, taken of
the whole document less that one value), and a manifest holds the sha256 of every other file of
its export (a file cannot hold its own hash). Names are basenames, never absolute paths, so that
the same inputs give the same bytes wherever they lie.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__

HASHES_KEY = "hashes"


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def canonical_json(doc: Any) -> bytes:
    """``doc`` as the bytes its content hash is taken of: keys sorted, no spaces, UTF-8.

    Taken of ``doc`` as read back from JSON, so that a reader who loads the file and dumps it
    again the same way gets the same bytes (JSON turns tuples into lists, keys into strings)."""
    doc = json.loads(json.dumps(doc))
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def content_sha256(doc: dict[str, Any]) -> str:
    """The sha256 of ``doc``'s canonical JSON without ``hashes.content_sha256`` (what it was made
    from and a manifest's file hashes are part of its content: one hash pins them all)."""
    hashes = {k: v for k, v in (doc.get(HASHES_KEY) or {}).items() if k != "content_sha256"}
    return hashlib.sha256(canonical_json({**doc, HASHES_KEY: hashes})).hexdigest()


def tool() -> dict[str, str]:
    return {"name": "danet-deploy", "version": __version__}


def named_file(name: str, path: Path | None) -> dict[str, str | None]:
    """``{name, sha256}`` of a file (``sha256`` None where there is no file, e.g. a built-in
    ``package.module:factory`` without weights)."""
    return {
        "name": name,
        "sha256": file_sha256(path) if path is not None and path.is_file() else None,
    }


class SampleHasher:
    """The sha256 of evaluated samples: for each sample in order, its input as float32 C-order
    bytes, then its label (when there is one) as int64 bytes (docs/artifacts.md)."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self.samples = 0

    def add(self, x: Any, y: Any = None) -> None:
        """A batch: ``x`` ``[N, ...]``, ``y`` ``[N]`` (tensors or arrays)."""
        xs = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
        ys = None if y is None else np.ascontiguousarray(np.asarray(y, dtype=np.int64))
        for i in range(len(xs)):
            self._h.update(xs[i].tobytes())
            if ys is not None:
                self._h.update(ys[i].tobytes())
        self.samples += len(xs)

    def entry(self, spec: str) -> dict[str, Any]:
        """``made_from.data``: the data spec, how many samples and their sha256."""
        return {"spec": spec, "samples": self.samples, "sha256": self._h.hexdigest()}


def made_from(
    model: dict[str, Any],
    profile: Any | None = None,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What an artefact was made from: ``model`` (:func:`named_file` plus its ``kind``),
    ``profile`` (a ``profiles.Profile``: its name and the sha256 of its TOML file), ``data``
    (:meth:`SampleHasher.entry`) and the tool; absent inputs are None."""
    return {
        "model": model,
        "profile": named_file(profile.name, profile.path) if profile is not None else None,
        "data": data,
        "tool": tool(),
    }


def hashed(
    doc: dict[str, Any], made: dict[str, Any], files: dict[str, str] | None = None
) -> dict[str, Any]:
    """``doc`` (a report or a manifest) with its ``hashes`` key: ``made_from``, the sha256 of
    the other files it stands for (a manifest's) and ``content_sha256``."""
    entry: dict[str, Any] = {"made_from": made}
    if files is not None:
        entry["files"] = files
    with_entry = {**doc, HASHES_KEY: entry}
    return {**doc, HASHES_KEY: {**entry, "content_sha256": content_sha256(with_entry)}}
