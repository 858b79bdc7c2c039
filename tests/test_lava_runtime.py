"""The boundary to the Lava runtime (docs/lava-runtime.md): found, checked, refused in one
line when missing or mismatched, and used by the commands that need Lava or lava-dl, while
every other command works without it. These run in the core (where Lava is not importable)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from danet_deploy import lava_runtime
from danet_deploy.errors import UserError
from danet_deploy.lava_runtime import RUNTIME_ENV, lava_here, mismatches, pins

from .conftest import one_line_error, run_cli

pytestmark = pytest.mark.skipif(lava_here(), reason="the core's side of the boundary: here Lava is importable")


def _without_runtime(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, RUNTIME_ENV: str(tmp_path / "no-runtime")}


def test_the_pins_are_lavas_last_releases_and_python_310() -> None:
    p = pins()
    assert p["lava-nc"] == "0.10.0" and p["lava-dl"] == "0.6.0" and p["torch"].startswith("2.3.")
    assert int(p["numpy"].split(".")[0]) < 2
    assert lava_runtime.PYTHON_VERSION == (3, 10)


def test_a_runtime_that_differs_is_named_by_what_differs() -> None:
    found = {"python": [3, 12, 1], "packages": {**pins(), "lava-nc": "0.9.0", "lava-dl": None}}
    assert mismatches(found) == ["Python 3.12.1 (needs 3.10)", "lava-nc 0.9.0 (needs 0.10.0)",
                                 "lava-dl missing (needs 0.6.0)"]
    assert mismatches({"python": [3, 10, 13], "packages": pins()}) == []


@pytest.mark.slow
def test_every_command_that_needs_lava_says_how_to_set_it_up(trained_digits: Path, tmp_path: Path) -> None:
    chip = tmp_path / "chip"
    run_cli("export", str(trained_digits), "--target", "loihi2-sim", "-o", str(chip), check=True)
    env = _without_runtime(tmp_path)
    for args in (["simulate", str(chip), "--backend", "lava", "--samples", "2"],
                 ["report", str(chip), "--lava-samples", "2", "--samples", "2"],
                 ["demo", "--epochs", "1", "-o", str(tmp_path / "demo")],
                 ["train", "--framework", "lava-dl", "--epochs", "1", "-o", str(tmp_path / "d.pt")]):
        proc = run_cli(*args, env=env)
        one_line_error(proc, "needs the Lava runtime", "danet-deploy lava-runtime setup", str(tmp_path / "no-runtime"))
    assert not (tmp_path / "d.pt").exists() and not (tmp_path / "demo").exists()
    fast = run_cli("simulate", str(chip), "--samples", "5", "--json", env=env)  # everything else works without it
    assert fast.returncode == 0 and json.loads(fast.stdout)["samples"] == 5, fast.stderr


@pytest.mark.slow
def test_a_mismatched_runtime_is_refused_naming_what_differs(trained_digits: Path, tmp_path: Path) -> None:
    """The core's own interpreter posing as the runtime: the wrong Python, and no Lava."""
    chip = tmp_path / "chip"
    run_cli("export", str(trained_digits), "--target", "loihi2-sim", "-o", str(chip), check=True)
    proc = run_cli("simulate", str(chip), "--backend", "lava", "--samples", "2",
                   env={**os.environ, RUNTIME_ENV: sys.executable})
    py = ".".join(map(str, sys.version_info[:3]))
    one_line_error(proc, "does not match", f"Python {py} (needs 3.10)", "lava-nc missing (needs 0.10.0)",
                   "danet-deploy lava-runtime setup")


def test_a_missing_runtime_is_found_missing_in_process(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(RUNTIME_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match=r"a Lava run needs the Lava runtime .* none at DANET_DEPLOY_LAVA_RUNTIME="):
        lava_runtime.python("a Lava run")


def test_setup_refuses_a_folder_it_did_not_build(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(UserError, match="is not a Lava runtime that danet-deploy built"):
        lava_runtime.setup(tmp_path / "mine", sys.executable if sys.version_info[:2] == (3, 10) else None,
                           lambda _: None)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


@pytest.mark.slow
def test_the_runtime_runs_this_code_and_lava(tmp_path: Path) -> None:
    """`lava-runtime run MODULE` runs in the runtime's Python 3.10 with Lava, on the core's own
    danet-deploy files (the runtime holds no copy of them)."""
    import danet_deploy

    (tmp_path / "probe_runtime.py").write_text(
        "import sys\nfrom importlib.metadata import version\nimport danet_deploy, lava.magma\n"
        "print(sys.version_info[0], sys.version_info[1], version('lava-nc'), danet_deploy.__file__)\n")
    proc = subprocess.run([sys.executable, "-m", "danet_deploy", "lava-runtime", "run", "probe_runtime"],
                          cwd=tmp_path, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    major, minor, lava_nc, where = proc.stdout.split()
    assert (int(major), int(minor)) == (3, 10) and lava_nc == "0.10.0"
    assert Path(where).resolve() == Path(danet_deploy.__file__).resolve()


def _children(pid: int) -> list[int]:
    """The children of ``pid`` that run danet-deploy in the runtime (not its version probe)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if (int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid
                    and b"CoreFinder" in (stat.parent / "cmdline").read_bytes()):
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _wait(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_command_rerun_in_the_runtime_ends_with_its_parent(tmp_path: Path, sig: int) -> None:
    """`train --framework lava-dl` runs in the runtime: SIGTERM to the core process ends the
    training there too (exit 143, no checkpoint written); after SIGKILL of the core process
    the kernel ends it (PR_SET_PDEATHSIG)."""
    out = tmp_path / "d.pt"
    proc = subprocess.Popen([sys.executable, "-m", "danet_deploy", "train", "--framework", "lava-dl", "--epochs",
                             "200", "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    try:
        assert _wait(lambda: _children(proc.pid), 60), "the runtime's process never started"
        (child,) = _children(proc.pid)
        time.sleep(3)  # into the training
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:  # a failed check leaves no training behind
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == (128 + sig if sig != signal.SIGKILL else -sig)
    assert _wait(lambda: not _alive(child), 30), "the runtime's process outlived its parent"
    assert not out.exists() and not list(tmp_path.glob(".*"))
