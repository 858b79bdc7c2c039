"""Where commands write: never delete or overwrite what danet-deploy did not write.

Two kinds of output:

* an **artifact directory** (``export -o DIR``): created when missing; replaced file by
  file when it is one of ours (its ``manifest.json`` was written by danet-deploy), so
  a user's own files beside ours survive; refused when it is a non-empty foreign
  directory unless ``--force`` (then only our file names are written, nothing is
  removed); always refused for the working directory, the home directory and ``/``.
* an **output file** (checkpoint, report, comparison, saved outputs): overwritten only when it is one
  of ours (recognised by its content) or with ``--force``.

Every check runs before any work starts, so a refused run costs nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

from .errors import UserError

TOOL = "danet-deploy"
ARTIFACT_FILES = ("graph.nir", "manifest.json", "program.h5", "netx.h5")
HTML_GENERATOR = f'<meta name="generator" content="{TOOL}">'
LEGACY_HTML_TITLE = f"<title>{TOOL} report</title>"  # pages written before the generator tag
CSV_HEADER_START = "name,kind,connection,"
CHECKPOINT_FORMAT = f"{TOOL}/1"
OUTPUTS_FORMAT = f"{TOOL}/outputs/1"   # simulate --save-outputs


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_path)`` and move the result into place only when it succeeded."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _protected(path: Path) -> str | None:
    """Why ``path`` may never be an artifact directory (None when it may)."""
    resolved = path.expanduser().resolve()
    if resolved == Path.cwd().resolve():
        return "the current directory"
    if resolved == Path.home().resolve():
        return "the home directory"
    if resolved == Path(resolved.anchor):
        return "the file-system root"
    return None


def is_artifact_dir(path: Path) -> bool:
    """True when ``path`` holds a ``manifest.json`` that danet-deploy wrote."""
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and TOOL in manifest.get("tool_versions", {})


def check_artifact_dir(path: Path, force: bool = False) -> None:
    """Raise a one-line error unless an artifact may be written to ``path``."""
    path = Path(path)
    why = _protected(path)
    if why:
        raise UserError(f"{path}: refusing to write an artifact into {why}; name a new directory, "
                        f"e.g. -o model.loihi2-sim")
    if path.exists() and not path.is_dir():
        raise UserError(f"{path}: exists and is not a directory; name a new directory")
    if path.is_dir() and any(path.iterdir()) and not is_artifact_dir(path) and not force:
        raise UserError(f"{path}: directory is not empty and was not written by {TOOL}; name a new directory, "
                        f"or pass --force to write only {TOOL}'s files ({', '.join(ARTIFACT_FILES)}) into it")


def install_artifact(tmp: Path, outdir: Path) -> None:
    """Move the finished artifact in ``tmp`` to ``outdir`` and remove ``tmp``.

    A missing ``outdir`` is replaced whole (one rename). An existing one keeps every
    file that is not ours; our files are replaced one by one, and those of ours that
    the new artifact no longer has (e.g. ``netx.h5``) are removed only when the old
    directory was an artifact of ours.
    """
    if not outdir.exists():
        tmp.rename(outdir)
        return
    stale = [n for n in ARTIFACT_FILES if (outdir / n).is_file()] if is_artifact_dir(outdir) else []
    new = sorted(p.name for p in tmp.iterdir())
    for name in new:
        if name != "manifest.json":
            os.replace(tmp / name, outdir / name)
    for name in stale:
        if name not in new:
            (outdir / name).unlink()
    os.replace(tmp / "manifest.json", outdir / "manifest.json")  # last: the directory is ours again
    shutil.rmtree(tmp, ignore_errors=True)


def _is_checkpoint(path: Path) -> bool:
    """A torch zip whose pickle names a danet-deploy format: a checkpoint or saved simulator
    outputs (read, never unpickled)."""
    try:
        with zipfile.ZipFile(path) as z:
            pickles = [n for n in z.namelist() if n.endswith("/data.pkl")]
            return bool(pickles) and any(f.encode() in z.read(pickles[0]) for f in (CHECKPOINT_FORMAT, OUTPUTS_FORMAT))
    except (OSError, zipfile.BadZipFile):
        return False


def _is_our_file(path: Path) -> bool:
    """Recognise a file danet-deploy wrote: a checkpoint, a report or a comparison."""
    if zipfile.is_zipfile(path):
        return _is_checkpoint(path)
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return False
    head = text[:4096]
    if HTML_GENERATOR in head or LEGACY_HTML_TITLE in head or text.startswith(CSV_HEADER_START) \
            or text.lstrip().startswith(f"{TOOL} "):
        return True
    try:
        data = json.loads(text)
    except ValueError:
        return False
    if isinstance(data, dict):  # a report (before 0.1.0's "tool" key: by its contract keys)
        return data.get("tool") == TOOL or {"profile", "layers", "totals", "by_connection"} <= set(data)
    return isinstance(data, list) and bool(data) and all(
        isinstance(r, dict) and {"connection", "lowering"} <= set(r) for r in data)


def check_output_file(path: Path, force: bool = False) -> None:
    """Raise a one-line error unless ``path`` may be (over)written."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a directory; name a file")
    if path.exists() and not force and not _is_our_file(path):
        raise UserError(f"{path}: exists and was not written by {TOOL}; name a new file, or pass --force "
                        f"to overwrite it")
