"""No command deletes or overwrites a file that danet-deploy did not write."""

from __future__ import annotations

import json
import os
import resource
import stat
import threading
import time
from pathlib import Path

import pytest
import torch

from .conftest import one_line_error, run_cli


def _foreign_dir(path: Path) -> dict[Path, bytes]:
    """A user's directory: a note and a nested data file; returns what must survive."""
    (path / "sub").mkdir(parents=True)
    files = {path / "notes.txt": b"my notes", path / "sub" / "data.bin": b"\x00\x01 data"}
    for p, content in files.items():
        p.write_bytes(content)
    return files


def _intact(files: dict[Path, bytes]) -> bool:
    return all(p.is_file() and p.read_bytes() == content for p, content in files.items())


@pytest.mark.slow
def test_export_refuses_a_foreign_directory_and_force_writes_only_our_files(
    trained_digits: Path, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    files = _foreign_dir(results)
    proc = run_cli("export", str(trained_digits), "--target", "nir", "-o", str(results))
    one_line_error(proc, str(results), "--force")
    assert _intact(files) and sorted(p.name for p in results.iterdir()) == ["notes.txt", "sub"]
    run_cli(
        "export", str(trained_digits), "--target", "nir", "-o", str(results), "--force", check=True
    )
    assert (
        _intact(files)
        and (results / "graph.nir").is_file()
        and (results / "manifest.json").is_file()
    )


@pytest.mark.slow
@pytest.mark.parametrize("where,named", [(".", "current directory"), ("~", "home directory")])
def test_export_never_writes_into_the_working_or_home_directory(
    trained_digits: Path, tmp_path: Path, where: str, named: str
) -> None:
    project, home = tmp_path / "project", tmp_path / "home"
    project.mkdir()
    model = project / "model.pt"
    model.write_bytes(trained_digits.read_bytes())
    files = {model: model.read_bytes(), **_foreign_dir(project / "work"), **_foreign_dir(home)}
    env = {**os.environ, "HOME": str(home)}
    for extra in ([], ["--force"]):  # not even with --force
        proc = run_cli(
            "export", "model.pt", "--target", "nir", "-o", where, *extra, cwd=project, env=env
        )
        one_line_error(proc, where, named)
    assert _intact(files) and sorted(p.name for p in project.iterdir()) == ["model.pt", "work"]
    assert sorted(p.name for p in home.iterdir()) == ["notes.txt", "sub"]


@pytest.mark.slow
def test_re_export_replaces_only_our_files(trained_digits: Path, tmp_path: Path) -> None:
    """An earlier export is replaced file by file: a user's file beside ours survives, and our
    files the new target does not write (program.h5 after a nir export) are removed."""
    out = tmp_path / "art"
    run_cli("export", str(trained_digits), "--target", "loihi2-sim", "-o", str(out), check=True)
    (out / "my_plot.png").write_bytes(b"png")
    run_cli("export", str(trained_digits), "--target", "nir", "-o", str(out), check=True)
    assert sorted(p.name for p in out.iterdir()) == ["graph.nir", "manifest.json", "my_plot.png"]
    assert json.loads((out / "manifest.json").read_text())["target"] == "nir"
    assert not list(tmp_path.glob(".art.*")), "temporary directory left behind"


@pytest.mark.slow
def test_train_report_and_compare_refuse_to_overwrite_foreign_files(
    trained_digits: Path, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("do not lose this")
    one_line_error(run_cli("train", "--epochs", "1", "-o", str(notes)), str(notes), "--force")
    one_line_error(
        run_cli(
            "report", str(trained_digits), "--samples", "5", "--format", "json", "-o", str(notes)
        ),
        str(notes),
        "--force",
    )
    models = tmp_path / "models"
    one_line_error(
        run_cli("compare", "--connections", "plain", "--models-dir", str(models), "-o", str(notes)),
        str(notes),
    )
    assert (
        notes.read_text() == "do not lose this" and not models.exists()
    )  # refused before any training
    # a file danet-deploy wrote is replaced without --force; --force replaces a foreign one
    ours = tmp_path / "r.json"
    for _ in range(2):
        run_cli(
            "report",
            str(trained_digits),
            "--samples",
            "5",
            "--format",
            "json",
            "-o",
            str(ours),
            check=True,
        )
    run_cli(
        "report",
        str(trained_digits),
        "--samples",
        "5",
        "--format",
        "csv",
        "-o",
        str(notes),
        "--force",
        check=True,
    )
    assert notes.read_text().startswith("name,kind,connection,")


def test_demo_refuses_an_outdir_whose_files_it_did_not_write(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    out.mkdir()
    (out / "report.html").write_text("<html>the user's own page</html>")
    proc = run_cli("demo", "-o", str(out), "--epochs", "1")
    one_line_error(proc, str(out / "report.html"), "--force")
    assert (out / "report.html").read_text() == "<html>the user's own page</html>"
    assert sorted(p.name for p in out.iterdir()) == ["report.html"]  # refused before training


def test_tensor_data_with_nan_or_inf_is_refused_naming_the_file(
    trained_digits: Path, tmp_path: Path
) -> None:
    x = torch.rand(6, 1, 8, 8)
    x[3, 0, 2, 2] = float("nan")
    x[5, 0, 0, 0] = float("inf")
    data = tmp_path / "bad.pt"
    torch.save({"inputs": x, "labels": torch.zeros(6, dtype=torch.long)}, data)
    proc = run_cli("simulate", str(trained_digits), "--data", f"tensor:{data}", "--json")
    one_line_error(proc, str(data), "NaN or Inf", "2 sample(s)", "index 3")


STOPPED_HDF5_WRITE = """
import os, signal, sys, time
from pathlib import Path
import h5py
from danet_deploy.outputs import atomic_write, write_hdf5
from danet_deploy.signals import signals_end_the_run

def build(file):
    with h5py.File(file, "w") as h5:
        h5["first"] = list(range(100))
        os.kill(os.getpid(), getattr(signal, sys.argv[2]))  # a stop inside h5py's work
        time.sleep(0.05)
        h5["second"] = list(range(100))
    print("built", flush=True)

with signals_end_the_run():
    atomic_write(Path(sys.argv[1]), lambda p: write_hdf5(p, build))
    print("committed", flush=True)
"""


# Python ends a run that Ctrl-C interrupted by SIGINT itself: status -2
@pytest.mark.parametrize("stop, status", [("SIGTERM", 143), ("SIGHUP", 129), ("SIGINT", -2)])
def test_a_stop_during_an_hdf5_write_waits_for_its_close_and_commits_nothing(
    tmp_path: Path, stop: str, status: int
) -> None:
    """CI's test_sigterm_during_export saw h5py print 'truncate of closed file' at exit: the
    SystemExit had left the HDF5 file open inside its close. The stop now waits for the close."""
    import subprocess
    import sys

    out = tmp_path / "out" / "program.h5"
    proc = subprocess.run(
        [sys.executable, "-c", STOPPED_HDF5_WRITE, str(out), stop],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert proc.stdout == "built\n"
    assert proc.returncode == status
    assert ("KeyboardInterrupt" in proc.stderr) if stop == "SIGINT" else proc.stderr == ""
    assert list(out.parent.iterdir()) == []  # neither the file nor its temporary name


# ---- outputs are regular files (docs/compile.md §9) -----------------------------------------------------------


def _special(path: Path, kind: str) -> Path:
    """A FIFO, or a character device like /dev/null (1,3), /dev/zero (1,5) or /dev/full (1,7)
    made here as a stand-in for the machine's own (mknod needs root; elsewhere: skipped)."""
    if kind == "fifo":
        os.mkfifo(path)
        return path
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, {"null": 3, "zero": 5, "full": 7}[kind]))
    except PermissionError:
        pytest.skip("cannot make a device node here (needs root)")
    return path


def _same_node(path: Path, kind: str) -> bool:
    mode = path.lstat().st_mode
    return stat.S_ISFIFO(mode) if kind == "fifo" else stat.S_ISCHR(mode)


def _at_most_4_gib() -> None:
    """The command's address space is bounded: reading a device into memory fails fast, not the machine."""
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


def _output_args(command: str, artifact: Path, out: Path) -> list[str]:
    return {
        "report": ["report", str(artifact), "--format", "neurobench", "-o", str(out)],
        "simulate": ["simulate", str(artifact), "--save-outputs", str(out)],
        "train": ["train", "--epochs", "1", "-o", str(out)],
        "compare": [
            "compare",
            "--connections",
            "da",
            "--models-dir",
            str(out.parent / "models"),
            "-o",
            str(out),
        ],
    }[command]


@pytest.mark.parametrize(
    "command,kind,force",
    [
        ("report", "null", True),
        ("report", "zero", False),
        ("report", "fifo", False),
        ("simulate", "null", True),
        ("simulate", "fifo", True),
        ("train", "null", True),
        ("train", "full", False),
        ("compare", "fifo", True),
    ],
)
def test_an_output_that_is_a_device_or_a_fifo_is_refused_before_any_work(
    tmp_path: Path, command: str, kind: str, force: bool
) -> None:
    """`-o /dev/null --force` as root replaced the machine's /dev/null with a regular file;
    `-o /dev/zero` read the device to its end for a format tag, which never comes; a FIFO blocked."""
    artifact = tmp_path / "model.pt"
    artifact.write_bytes(b"not read: the output is refused first")
    out = _special(tmp_path / kind, kind)
    args = _output_args(command, artifact, out) + (["--force"] if force else [])
    proc = run_cli(*args, timeout=120, preexec_fn=_at_most_4_gib)
    one_line_error(proc, str(out), "not a regular file")
    assert _same_node(out, kind)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["model.pt", kind]
    )  # no temporary file


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/full", "/dev/urandom"])
def test_the_machines_devices_are_refused_at_once(tmp_path: Path, device: str) -> None:
    """`report --format neurobench -o /dev/full` grew to 22.5 GB reading the device for a tag."""
    artifact = tmp_path / "model.pt"
    artifact.write_bytes(b"not read")
    t0 = time.monotonic()
    proc = run_cli(
        "report",
        str(artifact),
        "--format",
        "neurobench",
        "-o",
        device,
        timeout=120,
        preexec_fn=_at_most_4_gib,
    )
    one_line_error(proc, device, "not a regular file")
    assert time.monotonic() - t0 < 60
    assert stat.S_ISCHR(os.stat(device).st_mode)


def test_a_write_never_replaces_a_device_or_a_fifo(tmp_path: Path) -> None:
    """The commit itself refuses (a node made after the checks): nothing is replaced, nothing left."""
    from danet_deploy.errors import UserError
    from danet_deploy.outputs import atomic_write, identify

    for kind in ("null", "fifo"):
        node = _special(tmp_path / kind, kind)
        assert identify(node) is None  # not opened: a FIFO would block, a device may never end
        with pytest.raises(UserError, match=rf"{node}: is a .*, not a regular file"):
            atomic_write(node, lambda p: p.write_text("result"))
        assert _same_node(node, kind)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "null"]


def test_an_export_directory_with_a_fifo_or_device_among_its_files_is_refused(
    tmp_path: Path,
) -> None:
    """A FIFO for manifest.json is not read (it would block); a device where export writes one of
    its files is never replaced, not even with --force."""
    from danet_deploy.errors import UserError
    from danet_deploy.outputs import check_artifact_dir

    fifo_dir, device_dir = tmp_path / "a", tmp_path / "b"
    fifo_dir.mkdir()
    device_dir.mkdir()
    _special(fifo_dir / "manifest.json", "fifo")
    _special(device_dir / "graph.nir", "null")
    done: list[BaseException] = []

    def check(where: Path) -> None:
        try:
            check_artifact_dir(where, force=True)
        except UserError as e:
            done.append(e)

    for where, name in ((fifo_dir, "manifest.json"), (device_dir, "graph.nir")):
        worker = threading.Thread(target=check, args=(where,), daemon=True)
        worker.start()
        worker.join(timeout=30)
        assert not worker.is_alive(), f"{where / name} blocked the check"
        assert done and f"{where / name}: is a" in str(done.pop()) and not done
    assert stat.S_ISFIFO((fifo_dir / "manifest.json").lstat().st_mode)
    assert stat.S_ISCHR((device_dir / "graph.nir").lstat().st_mode)


@pytest.mark.parametrize(
    "fmt, output, expected",
    [
        (None, "r.html", "html"),
        (None, "R.JSON", "json"),
        (None, "r.csv", "csv"),
        (None, "r.txt", "table"),
        (None, None, "table"),
        ("table", "r.html", "table"),  # --format wins
        ("neurobench", "nb.json", "neurobench"),
    ],
)
def test_the_report_format_is_the_one_outputs_extension_names(fmt, output, expected) -> None:
    from danet_deploy.cli import output_format

    assert output_format(fmt, output, ("json", "csv", "html")) == expected


@pytest.mark.slow
def test_report_to_an_html_file_writes_a_page(trained_digits: Path, tmp_path: Path) -> None:
    """`report -o r.html` wrote the text table (a browser showed it as one long line)."""
    page = tmp_path / "r.html"
    run_cli("report", str(trained_digits), "-n", "4", "-o", str(page), check=True)
    assert page.read_text().lstrip().lower().startswith("<!doctype html")
    compared = tmp_path / "c.json"
    run_cli(
        "compare",
        "--connections",
        "plain",
        "--models-dir",
        str(tmp_path / "m"),
        "--epochs",
        "1",
        "-n",
        "4",
        "-o",
        str(compared),
        check=True,
    )
    json.loads(compared.read_text())
