"""Where commands write: never delete or overwrite what danet-deploy did not write.

Every output carries a **format tag** naming its kind, ``danet-deploy/<kind>/1``, where the
file format has room for one (docs/compile.md §9):

=============  ==========================================================================
kind           where the tag is
=============  ==========================================================================
checkpoint     the torch file's ``format`` entry (``danet-deploy/1``, the first format)
outputs        the torch file's ``format`` entry (``simulate --save-outputs``)
report         JSON: a top-level ``format`` key; HTML: ``<meta name="generator">``;
               CSV: a last column ``format``; a table written to a file: its last line
comparison     the same places as a report (``compare -o``)
export         ``manifest.json``'s ``format`` key; the manifest lists the ``files`` written
diff           the same places as a report (``diff -o``)
=============  ==========================================================================

A command replaces an existing file only when the file carries the tag of the kind the
command writes; any other file (a user's, or another kind of ours, e.g. a checkpoint
where a report goes) needs ``--force``. Outputs are regular files: a device, a FIFO or a
socket is never replaced, not even with ``--force``, nor read for a tag (a FIFO blocks,
``/dev/zero`` never ends); what is read to find a tag is bounded. An export directory is
replaced file by file: only the files its manifest lists are ours, everything else in it
is kept. The current, home and root directories are never an export directory. Every
check, writability and free space included, runs before any work starts, so a refused run
costs nothing; files are written to a temporary name and renamed when complete, with the
user's umask.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

from .errors import UserError
from .signals import raise_if_stopped, stops_deferred

TOOL = "danet-deploy"
TAGS = {
    "checkpoint": f"{TOOL}/1",
    "outputs": f"{TOOL}/outputs/1",
    "report": f"{TOOL}/report/1",
    "comparison": f"{TOOL}/comparison/1",
    "export": f"{TOOL}/export/1",
    "diff": f"{TOOL}/diff/1",
}
KIND_OF_TAG = {tag: kind for kind, tag in TAGS.items()}
ARTIFACT_FILES = ("graph.nir", "manifest.json", "program.h5", "netx.h5")
FORMAT_COLUMN = "format"  # the CSV column that carries the tag
_HEAD_BYTES = 4096
_JSON_BYTES = (
    64 << 20
)  # a JSON output read for its tag: larger than any report or manifest we write
_NOT_FILES = (
    (stat.S_ISDIR, "directory"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISFIFO, "FIFO (named pipe)"),
    (stat.S_ISSOCK, "socket"),
)


def html_generator(kind: str) -> str:
    """The ``<meta>`` element that tags an HTML page of ``kind``."""
    return f'<meta name="generator" content="{TAGS[kind]}">'


def text_footer(kind: str) -> str:
    """The last line of a table written to a file."""
    return f"written by {TOOL} ({TAGS[kind]})"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _user_mode(path: Path) -> None:
    """Give a file or directory made by ``tempfile`` (0600/0700) the mode the user's umask asks for."""
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~_umask())


def write_failure(path: Path, e: BaseException) -> UserError:
    """One line for a failed write (full disk, read-only file system, ...)."""
    why = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0][:160]
    return UserError(f"{path}: cannot write ({why}); nothing was replaced")


def not_a_file(path: Path) -> str | None:
    """What ``path`` is when it exists and is not a regular file ("character device", ...),
    else None. Outputs replace regular files only: renamed over ``/dev/null``, a file would
    take the device's place (docs/compile.md §9)."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):  # missing (or a name the OS cannot take: the write says so)
        return None
    return next((what for test, what in _NOT_FILES if test(mode)), None)


def refuse_unless_file(path: Path) -> None:
    """Raise a one-line error when ``path`` exists and is not a regular file."""
    what = not_a_file(path)
    if what:
        raise UserError(
            f"{path}: is a {what}, not a regular file; danet-deploy writes its outputs to "
            f"regular files only: name a file"
        )


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_path)`` and move the result into place only when it succeeded, and
    never over anything but a regular file (checked again at the rename)."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        write(Path(tmp))
        _user_mode(Path(tmp))
        raise_if_stopped()  # a stop whose SystemExit was lost commits nothing
        refuse_unless_file(path)
        os.replace(tmp, path)
    except OSError as e:
        raise write_failure(path, e) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def write_torch(path: Path, blob: object) -> None:
    """``torch.save(blob)`` to ``path`` atomically, through a Python file object.

    Given a path, torch writes with its own writer and reports a full disk as a RuntimeError
    without the cause ("unexpected pos 576 vs 534"); through a file object the failure is
    Python's own write, whose ``OSError`` (ENOSPC) torch's RuntimeError carries as its
    context: that error is raised, and is one line like any failed write.
    """
    import torch

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            try:
                torch.save(blob, f)
            except RuntimeError as e:
                if isinstance(e.__context__, OSError):
                    raise e.__context__ from None
                raise

    atomic_write(path, save)


def write_hdf5(path: Path, build: Callable[[BinaryIO], object]) -> None:
    """Write an HDF5 file (h5py, nir.write) that ``build`` makes into a Python file object.

    HDF5's own file driver, written straight to a file system that fills up, crashed the
    process with a segmentation fault after h5py's ENOSPC error (export on a small tmpfs:
    rc 139), or left errors on closing; through a Python file object the full disk meets
    Python's own write, which fails with an ``OSError``. Streamed, not built in memory first:
    the file would be a second copy of every weight (docs/compile.md §1). A stop waits until
    the file is closed (``signals.stops_deferred``): the write takes seconds at most.
    """
    with stops_deferred(), open(path, "w+b") as f:  # h5py reads back what it wrote
        build(f)


def _existing_parent(path: Path) -> Path:
    """The nearest folder above ``path`` that exists (where its missing folders would be made)."""
    parent = Path(path).expanduser().absolute().parent
    while not parent.exists():
        parent = parent.parent
    return parent


def check_writable(path: Path) -> None:
    """Raise a one-line error unless a file can be created at ``path`` (tried, then removed)
    on a file system with space left."""
    parent = _existing_parent(path)
    if not parent.is_dir():
        raise UserError(f"{path}: cannot be created: {parent} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".danet-deploy-probe.", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"{path}: cannot write in {parent} ({e.strerror})") from None
    check_space(path, 1)


def check_space(path: Path, need: int) -> None:
    """Raise a one-line error when the file system of ``path`` has less than ``need`` bytes
    free for unprivileged use (``f_bavail``), so that a run which would fail at its last
    write (a checkpoint after its training) is refused before it starts."""
    parent = _existing_parent(path)
    try:
        fs = os.statvfs(parent)
    except OSError:
        return  # no figure to hold against: the write itself reports a full disk
    free = fs.f_bavail * fs.f_frsize
    if free < need:
        raise UserError(
            f"{path}: No space left on device ({free:,} bytes free in {parent}, about {need:,} "
            f"needed); free some space or write elsewhere"
        )


# ---- what a file is ---------------------------------------------------------------------------------------------


def _open_regular(path: Path) -> BinaryIO | None:
    """``path`` opened for reading when it is a regular file, else None. Nothing else is
    opened: opening a FIFO waits for a writer, and a device may act when it is opened."""
    if not_a_file(path) is not None:
        return None
    try:
        f = os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY), "rb")
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # replaced since the check
        f.close()
        return None
    return f


def _json_of(f: BinaryIO) -> object:
    """The JSON document in ``f``, read from its start, at most :data:`_JSON_BYTES` (else None)."""
    f.seek(0)
    text = f.read(_JSON_BYTES + 1)
    try:
        return json.loads(text) if len(text) <= _JSON_BYTES else None
    except ValueError:
        return None


def _torch_kind(path: Path) -> str | None:
    import torch

    try:  # plain data only and memory-mapped: cheap for a large checkpoint, safe for any pickle
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - not a torch file of ours
        return None
    return KIND_OF_TAG.get(blob.get("format")) if isinstance(blob, dict) else None


def _text_kind(f: BinaryIO, head: str) -> str | None:
    if head.lstrip().startswith("{"):
        data = _json_of(f)
        return KIND_OF_TAG.get(data.get("format")) if isinstance(data, dict) else None
    for kind in TAGS:
        if html_generator(kind) in head:
            return kind
    rows = list(csv.reader(head.splitlines()[:2]))
    if len(rows) == 2 and rows[0] and rows[1] and rows[0][-1] == FORMAT_COLUMN:
        return KIND_OF_TAG.get(rows[1][-1])
    f.seek(max(0, f.seek(0, os.SEEK_END) - 512))
    tail = f.read(512).decode("utf-8", errors="replace").rstrip().splitlines()
    for kind in TAGS:
        if tail and tail[-1].strip() == text_footer(kind):
            return kind
    return None


def identify(path: Path) -> str | None:
    """The kind of danet-deploy output ``path`` is, read from its format tag (None: not ours,
    or not a regular file). Reads a bounded part of it: a head, a tail, a JSON document of at
    most :data:`_JSON_BYTES`, a torch file's record of its entries (memory-mapped)."""
    f = _open_regular(path)
    if f is None:
        return None
    try:
        with f:
            head = f.read(_HEAD_BYTES)
            if head.startswith(b"PK\x03\x04"):  # a zip: torch.save's format
                return _torch_kind(Path(path))
            return _text_kind(f, head.decode("utf-8", errors="replace"))
    except OSError:
        return None


def check_output_file(path: Path, kind: str, force: bool = False) -> None:
    """Raise a one-line error unless ``path`` may be (over)written with an output of ``kind``."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a directory; name a file")
    refuse_unless_file(path)
    if path.exists() and not force:
        found = identify(path)
        if found != kind:
            what = f"is a {TOOL} {found}, not a {kind}" if found else f"was not written by {TOOL}"
            raise UserError(
                f"{path}: exists and {what}; name a new file, or pass --force to replace it"
            )
    check_writable(path)


# ---- export directories -----------------------------------------------------------------------------------------


def _manifest(path: Path) -> dict | None:
    f = _open_regular(path / "manifest.json")
    if f is None:
        return None
    try:
        with f:
            manifest = _json_of(f)
    except OSError:
        return None
    return (
        manifest
        if isinstance(manifest, dict) and manifest.get("format") == TAGS["export"]
        else None
    )


def owned_files(path: Path) -> list[str]:
    """The files of export directory ``path`` that danet-deploy wrote (its manifest lists them)."""
    manifest = _manifest(path)
    files = manifest.get("files", []) if manifest else []
    return [f for f in files if isinstance(f, str) and f in ARTIFACT_FILES]


def is_artifact_dir(path: Path) -> bool:
    """True when ``path`` holds a ``manifest.json`` that danet-deploy wrote."""
    return _manifest(path) is not None


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


def check_artifact_dir(
    path: Path, force: bool = False, may_write: Iterable[str] = ARTIFACT_FILES
) -> None:
    """Raise a one-line error unless an export that may write the files ``may_write`` can go to ``path``."""
    path = Path(path)
    why = _protected(path)
    if why:
        raise UserError(
            f"{path}: refusing to write an artifact into {why}; name a new directory, "
            f"e.g. -o model.loihi2-sim"
        )
    if path.exists() and not path.is_dir():
        raise UserError(f"{path}: exists and is not a directory; name a new directory")
    for name in ARTIFACT_FILES:
        refuse_unless_file(path / name)
    if path.is_dir() and any(path.iterdir()) and not force:
        if not is_artifact_dir(path):
            raise UserError(
                f"{path}: directory is not empty and was not written by {TOOL}; name a new "
                f"directory, or pass --force to write only {TOOL}'s files "
                f"({', '.join(ARTIFACT_FILES)}) into it"
            )
        ours = set(owned_files(path))
        theirs = [n for n in may_write if (path / n).exists() and n not in ours]
        if theirs:
            raise UserError(
                f"{path / theirs[0]}: was not written by {TOOL} and an export writes that name; "
                f"move it away, or pass --force to replace it"
            )
    check_writable(path / "manifest.json")


@contextmanager
def artifact_tmpdir(outdir: Path) -> Iterator[Path]:
    """A hidden sibling of ``outdir`` to build an export in (moved into place by
    ``install_artifact``), removed when the block ends, however it ends: a stop that arrives
    while it is made waits until it is made (else it could be left behind unnamed)."""
    tmp = None
    try:
        with stops_deferred():
            outdir.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.", dir=outdir.parent))
            _user_mode(tmp)
        yield tmp
    except OSError as e:
        raise write_failure(outdir, e) from None
    finally:
        if tmp is not None:
            with stops_deferred():  # a second stop would leave it half removed
                shutil.rmtree(tmp, ignore_errors=True)


def install_artifact(tmp: Path, outdir: Path) -> list[str]:
    """Move the finished artifact in ``tmp`` to ``outdir``, remove ``tmp``; return the files written.

    A missing ``outdir`` is replaced whole (one rename). An existing one keeps every file
    its manifest does not list; ours are replaced one by one, and those of ours that the
    new artifact no longer has (e.g. ``netx.h5``) are removed.
    """
    new = sorted(p.name for p in tmp.iterdir())
    try:
        raise_if_stopped()  # a stop whose SystemExit was lost commits nothing
        for name in new:  # checked again at the commit, as atomic_write does
            refuse_unless_file(outdir / name)
        if not outdir.exists():
            tmp.rename(outdir)
            return new
        stale = [n for n in owned_files(outdir) if n not in new and (outdir / n).is_file()]
        for name in new:
            if name != "manifest.json":
                os.replace(tmp / name, outdir / name)
        for name in stale:
            (outdir / name).unlink()
        os.replace(
            tmp / "manifest.json", outdir / "manifest.json"
        )  # last: the directory is ours again
    except OSError as e:
        raise write_failure(outdir, e) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return new
