"""The boundary to the Lava runtime (docs/lava-runtime.md): found, checked, refused in one
line when missing or mismatched, and used by the commands that need Lava or lava-dl, while
every other command works without it. These run in the core (where Lava is not importable)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from danet_deploy import lava_runtime
from danet_deploy.errors import UserError
from danet_deploy.lava_runtime import RUNTIME_ENV, lava_here, mismatches, pins

from .conftest import one_line_error, run_cli

pytestmark = pytest.mark.skipif(
    lava_here(), reason="the core's side of the boundary: here Lava is importable"
)


def _without_runtime(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, RUNTIME_ENV: str(tmp_path / "no-runtime")}


def test_the_pins_are_lavas_last_releases_and_python_310() -> None:
    p = pins()
    assert p["lava-nc"] == "0.10.0" and p["lava-dl"] == "0.6.0" and p["torch"].startswith("2.3.")
    assert int(p["numpy"].split(".")[0]) < 2
    assert lava_runtime.PYTHON_VERSION == (3, 10)


def test_a_runtime_that_differs_is_named_by_what_differs() -> None:
    found = {"python": [3, 12, 1], "packages": {**pins(), "lava-nc": "0.9.0", "lava-dl": None}}
    assert mismatches(found) == [
        "Python 3.12.1 (needs 3.10)",
        "lava-nc 0.9.0 (needs 0.10.0)",
        "lava-dl missing (needs 0.6.0)",
    ]
    assert mismatches({"python": [3, 10, 13], "packages": pins()}) == []


@pytest.mark.slow
def test_every_command_that_needs_lava_says_how_to_set_it_up(
    trained_digits: Path, tmp_path: Path
) -> None:
    chip = tmp_path / "chip"
    run_cli("export", str(trained_digits), "--target", "loihi2-sim", "-o", str(chip), check=True)
    env = _without_runtime(tmp_path)
    for args in (
        ["simulate", str(chip), "--backend", "lava", "--samples", "2"],
        ["report", str(chip), "--lava-samples", "2", "--samples", "2"],
        ["demo", "--epochs", "1", "-o", str(tmp_path / "demo")],
        ["train", "--framework", "lava-dl", "--epochs", "1", "-o", str(tmp_path / "d.pt")],
    ):
        proc = run_cli(*args, env=env)
        one_line_error(
            proc,
            "needs the Lava runtime",
            "danet-deploy lava-runtime setup",
            str(tmp_path / "no-runtime"),
        )
    assert not (tmp_path / "d.pt").exists() and not (tmp_path / "demo").exists()
    fast = run_cli(
        "simulate", str(chip), "--samples", "5", "--json", env=env
    )  # everything else works without it
    assert fast.returncode == 0 and json.loads(fast.stdout)["samples"] == 5, fast.stderr


@pytest.mark.slow
def test_a_mismatched_runtime_is_refused_naming_what_differs(
    trained_digits: Path, tmp_path: Path
) -> None:
    """The core's own interpreter posing as the runtime: the wrong Python, and no Lava."""
    chip = tmp_path / "chip"
    run_cli("export", str(trained_digits), "--target", "loihi2-sim", "-o", str(chip), check=True)
    proc = run_cli(
        "simulate",
        str(chip),
        "--backend",
        "lava",
        "--samples",
        "2",
        env={**os.environ, RUNTIME_ENV: sys.executable},
    )
    py = ".".join(map(str, sys.version_info[:3]))
    one_line_error(
        proc,
        "does not match",
        f"Python {py} (needs 3.10)",
        "lava-nc missing (needs 0.10.0)",
        "danet-deploy lava-runtime setup",
    )


def test_a_missing_runtime_is_found_missing_in_process(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(RUNTIME_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(
        UserError, match=r"a Lava run needs the Lava runtime .* none at DANET_DEPLOY_LAVA_RUNTIME="
    ):
        lava_runtime.python("a Lava run")


def test_setup_refuses_a_folder_it_did_not_build(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(UserError, match="is not a Lava runtime that danet-deploy built"):
        lava_runtime.setup(
            tmp_path / "mine",
            sys.executable if sys.version_info[:2] == (3, 10) else None,
            lambda _: None,
        )
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


@pytest.mark.slow
def test_the_runtime_runs_this_code_and_lava(tmp_path: Path) -> None:
    """`lava-runtime run MODULE` runs in the runtime's Python 3.10 with Lava, on the core's own
    danet-deploy files (the runtime holds no copy of them)."""
    import danet_deploy

    (tmp_path / "probe_runtime.py").write_text(
        "import sys\nfrom importlib.metadata import version\nimport danet_deploy, lava.magma\n"
        "print(sys.version_info[0], sys.version_info[1], version('lava-nc'), danet_deploy.__file__)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "danet_deploy", "lava-runtime", "run", "probe_runtime"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    major, minor, lava_nc, where = proc.stdout.split()
    assert (int(major), int(minor)) == (3, 10) and lava_nc == "0.10.0"
    assert Path(where).resolve() == Path(danet_deploy.__file__).resolve()


def _children(pid: int) -> list[int]:
    """The children of ``pid`` that run danet-deploy in the runtime (not its version probe)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if (
                int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid
                and b"CoreFinder" in (stat.parent / "cmdline").read_bytes()
            ):
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
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "danet_deploy",
            "train",
            "--framework",
            "lava-dl",
            "--epochs",
            "200",
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
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


# ---- a misbehaving runtime: its answers are data from another process (docs/lava-runtime.md) ----------------


def _fake_runtime(
    tmp_path: Path, then: str, probe: str | None = None, name: str = "fake-python"
) -> Path:
    """A stand-in for the runtime's Python: it answers the version probe as a matching runtime
    would (or runs ``probe``), and runs ``then`` (Python code) for anything else it is asked."""
    answer = {"python": [3, 10, 13], "packages": pins(), "venv": True}
    body = (
        f"#!{sys.executable}\n"
        "import json, os, signal, subprocess, sys, time\n"
        "if len(sys.argv) > 2 and sys.argv[1] == '-c' and 'metadata' in sys.argv[2]:  # the probe\n"
        + textwrap.indent(probe or f"print(json.dumps({answer!r}))", "    ")
        + "\nelse:\n"
        + textwrap.indent(then, "    ")
        + "\n"
    )
    path = tmp_path / name
    path.write_text(body)
    path.chmod(0o755)
    return path


def _as_core(tmp_path: Path) -> Path:
    """A runtime that answers the probe as one and runs everything else on the core's Python."""
    return _fake_runtime(
        tmp_path, f"os.execv({sys.executable!r}, [{sys.executable!r}, *sys.argv[1:]])"
    )


@pytest.mark.parametrize(
    "probe",
    [
        "print('Welcome to the junk shell')",
        "pass",
        "print('[3, 10]')",
        "print(json.dumps({'python': [3, 10], 'packages': ['lava-nc']}))",
    ],
    ids=["junk", "nothing", "not-a-dict", "wrong-schema"],
)
def test_a_runtime_whose_python_answers_no_probe_is_refused_in_one_line(
    tmp_path: Path, probe: str
) -> None:
    fake = _fake_runtime(tmp_path, "pass", probe=probe)
    with pytest.raises(UserError) as e:
        lava_runtime.probe(fake)
    message = str(e.value)
    assert (
        str(fake) in message
        and "danet-deploy lava-runtime setup" in message
        and "\n" not in message
    )


def test_lava_runtime_show_of_a_runtime_that_prints_junk_is_one_line(tmp_path: Path) -> None:
    fake = _fake_runtime(tmp_path, "pass", probe="print('junk')")
    proc = run_cli("lava-runtime", "show", env={**os.environ, RUNTIME_ENV: str(fake)})
    one_line_error(proc, str(fake), "danet-deploy lava-runtime setup")


def test_a_probe_past_its_timeout_ends_with_everything_it_started(
    tmp_path: Path, monkeypatch
) -> None:
    """A probe that hangs is ended with its children (its own session, killed whole); the line
    names the interpreter and the timeout, not the probe's program."""
    pid_file = tmp_path / "child.pid"
    fake = _fake_runtime(
        tmp_path,
        "pass",
        probe=(
            f"subprocess.Popen(['sh', '-c', 'echo $$ > {pid_file}.tmp && mv {pid_file}.tmp {pid_file}; '\n"
            f"                  'exec sleep 300'])\n"
            f"while not os.path.exists({str(pid_file)!r}): time.sleep(0.01)\n"
            "time.sleep(300)"
        ),
    )
    monkeypatch.setattr(lava_runtime, "PROBE_TIMEOUT", 2.0)
    try:
        start = time.monotonic()
        with pytest.raises(UserError) as e:
            lava_runtime.probe(fake)
        assert time.monotonic() - start < 10
        child = int(pid_file.read_text())
        assert _wait(lambda: not _alive(child), 5), "the probe's child outlived the probe"
    finally:
        if pid_file.exists() and _alive(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
    message = str(e.value)
    assert (
        str(fake) in message
        and "2 s" in message
        and "metadata" not in message
        and "\n" not in message
    )


def test_setup_never_removes_a_building_folder_it_did_not_make(tmp_path: Path) -> None:
    place = tmp_path / "runtime"
    building = tmp_path / "runtime.building"
    building.mkdir()
    (building / "thesis.txt").write_text("three years of work")
    with pytest.raises(UserError) as e:
        lava_runtime.setup(place, str(_fake_runtime(tmp_path, "pass")), lambda _: None)
    assert str(building) in str(e.value) and "move it away" in str(e.value)
    assert (building / "thesis.txt").read_text() == "three years of work"
    assert sorted(p.name for p in building.iterdir()) == ["thesis.txt"] and not place.exists()


def test_setup_removes_what_an_interrupted_setup_of_its_own_left(
    tmp_path: Path, monkeypatch
) -> None:
    """A `.building` folder that carries the tool's marker is its own, left by an interrupted
    setup: the next setup removes it (here the build then fails at once, and leaves nothing)."""
    place = tmp_path / "runtime"
    building = tmp_path / "runtime.building"
    building.mkdir()
    (building / lava_runtime.STAMP).write_text("building\n")
    (building / "half.txt").write_text("half of a runtime")
    fake = _fake_runtime(tmp_path, "sys.exit('venv: no room')")
    with pytest.raises(UserError, match="could not create the runtime's virtual environment"):
        lava_runtime.setup(place, str(fake), lambda _: None)
    assert not building.exists() and not place.exists()


def test_setup_with_a_python_that_exits_0_without_answering_is_one_line(tmp_path: Path) -> None:
    fake = _fake_runtime(tmp_path, "pass", probe="pass")
    place = tmp_path / "runtime"
    proc = run_cli(
        "lava-runtime", "setup", "--python", str(fake), env={**os.environ, RUNTIME_ENV: str(place)}
    )
    one_line_error(proc, str(fake), "is not a Python 3.10")
    assert sorted(p.name for p in tmp_path.iterdir()) == [fake.name]


@pytest.mark.parametrize(
    "sig,hint",
    [(signal.SIGKILL, "out of memory"), (signal.SIGSEGV, "crashed")],
    ids=["SIGKILL", "SIGSEGV"],
)
def test_a_runtime_process_killed_by_a_signal_is_one_line_and_exit_1(
    tmp_path: Path, sig: int, hint: str
) -> None:
    fake = _fake_runtime(tmp_path, f"os.kill(os.getpid(), {int(sig)})")
    proc = run_cli("lava-runtime", "run", "anything", env={**os.environ, RUNTIME_ENV: str(fake)})
    one_line_error(proc, signal.Signals(sig).name, hint, str(fake))


def test_a_runtime_process_ended_by_ctrl_c_exits_130(tmp_path: Path) -> None:
    fake = _fake_runtime(
        tmp_path,
        "signal.signal(signal.SIGINT, signal.SIG_DFL)\nos.kill(os.getpid(), signal.SIGINT)",
    )
    proc = run_cli("lava-runtime", "run", "anything", env={**os.environ, RUNTIME_ENV: str(fake)})
    assert proc.returncode == 130 and proc.stderr == "", proc.stderr


def test_lava_runtime_run_of_a_missing_module_is_one_line(tmp_path: Path) -> None:
    proc = run_cli(
        "lava-runtime",
        "run",
        "no_such_module_here",
        "--x",
        env={**os.environ, RUNTIME_ENV: str(_as_core(tmp_path))},
    )
    one_line_error(proc, "no module named 'no_such_module_here'", "Lava runtime")


def test_exit_0_counts_only_with_the_answer_that_the_module_finished(tmp_path: Path) -> None:
    """The unit under `lava-runtime run` and every rerun: BOOT answers when its module ended
    well; an interpreter that exits 0 without that answer ran nothing."""
    assert lava_runtime.run_child(lava_runtime.boot_command(str(_as_core(tmp_path)), "this")) == 0
    silent = _fake_runtime(tmp_path, "sys.exit(0)", name="silent-python")
    with pytest.raises(UserError, match=f"{silent} exited 0 without the answer that this finished"):
        lava_runtime.run_child(lava_runtime.boot_command(str(silent), "this"))


@pytest.mark.slow
def test_a_module_run_in_the_runtime_succeeds_with_its_answer(tmp_path: Path) -> None:
    """The answer travels back: a module that ends well is believed (exit 0), one that fails
    keeps its own exit status and message."""
    (tmp_path / "hello_runtime.py").write_text("import sys\nprint('hello', *sys.argv[1:])\n")
    (tmp_path / "fails_runtime.py").write_text("import sys\nsys.exit(3)\n")
    env = {**os.environ, RUNTIME_ENV: str(_as_core(tmp_path))}
    ok = run_cli("lava-runtime", "run", "hello_runtime", "a", "b", env=env, cwd=tmp_path)
    assert ok.returncode == 0 and ok.stdout == "hello a b\n" and ok.stderr == "", ok.stderr
    failed = run_cli("lava-runtime", "run", "fails_runtime", env=env, cwd=tmp_path)
    assert failed.returncode == 3 and failed.stderr == "", failed.stderr


WRITE_ANSWER = (
    "os.write(int(os.environ['DANET_DEPLOY_LAVA_ANSWER_FD']), "
    "json.dumps({'finished': 'danet_deploy'}).encode())"
)


@pytest.mark.parametrize(
    "then,state",
    [
        ("sys.exit(0)", "exited 0 without the answer"),
        (WRITE_ANSWER, "missing"),
        (
            WRITE_ANSWER
            + "\nopen(sys.argv[sys.argv.index('-o') + 1], 'w').write('not a checkpoint')",
            "not a danet-deploy checkpoint",
        ),
    ],
    ids=["silent", "answers-without-checkpoint", "answers-with-junk"],
)
@pytest.mark.slow
def test_train_in_a_runtime_that_does_no_work_is_not_a_success(
    tmp_path: Path, then: str, state: str
) -> None:
    """`train --framework lava-dl` reruns in the runtime: its exit status alone proves nothing;
    success needs the runtime's answer and a new checkpoint at -o."""
    out = tmp_path / "d.pt"
    fake = _fake_runtime(tmp_path, then)
    proc = run_cli(
        "train",
        "--framework",
        "lava-dl",
        "--epochs",
        "1",
        "-o",
        str(out),
        env={**os.environ, RUNTIME_ENV: str(fake)},
    )
    one_line_error(proc, state, "danet-deploy lava-runtime setup")
    assert str(fake) in proc.stderr or str(out) in proc.stderr


@pytest.fixture
def tiny_program(tmp_path: Path):
    """A compiled program of two populations (``if`` spikes, ``output`` read out) and its input."""
    from danet_deploy.compile import compile_graph
    from danet_deploy.converters.nir_import import read_nir
    from danet_deploy.ir.program import write_program
    from danet_deploy.profiles import load_profile
    from danet_deploy.simulator.fixed import FixedSimulator

    from .test_compile_lava import _delayed_branches

    _delayed_branches(tmp_path / "d.nir")
    x = (torch.rand(2, 8, 4, generator=torch.Generator().manual_seed(3)) < 0.5).float()
    program, _ = compile_graph(
        read_nir(tmp_path / "d.nir"), "loihi2-sim", load_profile("loihi2"), "expand", x
    )
    write_program(tmp_path / "program.h5", program)
    return tmp_path / "program.h5", program, FixedSimulator(program).encode(x).numpy()


SINK_DIR = "sys.argv[sys.argv.index('danet_deploy.simulator.lava') + 3]"


@pytest.mark.parametrize(
    "then,named",
    [
        ("pass", "if.npy"),
        (f"open(os.path.join({SINK_DIR}, 'if.npy'), 'w').write('junk')", "if.npy"),
        (
            "import numpy as np\n"
            f"for name in ('if', 'output'): np.save(os.path.join({SINK_DIR}, name), np.zeros((3, 4), np.int8))",
            "if.npy",
        ),
        (
            f"import numpy as np\nnp.save(os.path.join({SINK_DIR}, 'if'), np.array([{{}}], dtype=object))",
            "if.npy",
        ),
    ],
    ids=["nothing", "junk", "wrong-shape", "pickle"],
)
def test_a_lava_worker_that_writes_no_valid_recording_is_one_line(
    tiny_program, tmp_path: Path, monkeypatch, then: str, named: str
) -> None:
    """The worker's recordings are its answer: each population's must be there, as an array of
    its steps x neurons, in its type; anything else is refused naming the file (before, nothing
    came back and `simulate` failed with `KeyError: 'output'`)."""
    from danet_deploy.simulator.lava import run_lava

    program_path, program, x_int = tiny_program
    monkeypatch.setenv(RUNTIME_ENV, str(_fake_runtime(tmp_path, then)))
    with pytest.raises(UserError) as e:
        run_lava(program_path, program, x_int)
    message = str(e.value)
    assert str(program_path) in message and named in message and "\n" not in message


@pytest.mark.parametrize("where", ["mkdtemp", "save"])
def test_a_full_tmpdir_fails_a_lava_run_in_one_line(
    tiny_program, tmp_path: Path, monkeypatch, where: str
) -> None:
    """The Lava run's input goes to a folder in TMPDIR: a full disk there is one line that names
    the folder and TMPDIR, and nothing is left in it."""
    import errno
    import tempfile

    from danet_deploy.simulator import lava as lava_backend

    program_path, program, x_int = tiny_program
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    def full(*args, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tempfile if where == "mkdtemp" else lava_backend.np, where, full)
    monkeypatch.setenv(RUNTIME_ENV, str(_fake_runtime(tmp_path, "pass")))
    with pytest.raises(UserError) as e:
        lava_backend.run_lava(program_path, program, x_int)
    message = str(e.value)
    assert "No space left on device" in message and "TMPDIR" in message and str(scratch) in message
    assert list(scratch.iterdir()) == []
