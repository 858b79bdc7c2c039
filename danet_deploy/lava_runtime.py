"""The Lava runtime: the one place where the core meets Lava and lava-dl (docs/lava-runtime.md).

Intel archived Lava; its last releases (lava-nc 0.10.0, lava-dl 0.6.0) need Python 3.10,
torch 2.3 and numpy < 2. The core runs on current releases, so Lava and lava-dl live in an
environment of their own, the *runtime* (a Python 3.10 virtual environment holding the
packages of ``lava-runtime.txt``), and run there in child processes:

* the Lava worker (``simulate --backend lava``, ``report --lava-samples``, the demo), which
  reads ``program.h5`` and input ``.npy`` files and writes one ``.npy`` per population;
* a command that needs lava-dl in its own process (training with ``--framework lava-dl``,
  loading a lava-dl-trained checkpoint), which is run again, whole, in the runtime.

The runtime holds no copy of danet-deploy: :data:`BOOT` maps the ``danet_deploy`` packages
to this environment's files, so both sides always run the same code. Where Lava is
importable in this interpreter (inside the runtime, or an all-in-one environment), this
interpreter is the runtime.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from importlib import resources
from pathlib import Path

from .errors import UserError
from .signals import signals_end_the_run

RUNTIME_ENV = "DANET_DEPLOY_LAVA_RUNTIME"  # a runtime's folder (a venv) or its Python interpreter
PYTHON_VERSION = (3, 10)  # the only Python lava-nc 0.10.0 and lava-dl 0.6.0 install on
SETUP_COMMAND = "danet-deploy lava-runtime setup"
STAMP = "danet-deploy-lava-runtime.txt"  # the requirements a runtime was built from; marks what setup made
BUILDING = (
    "building\n"  # the stamp of a runtime that setup is building (or an interrupted setup left)
)

ANSWER_FD = (
    "DANET_DEPLOY_LAVA_ANSWER_FD"  # the pipe a child of run_child answers on (docs/lava-runtime.md)
)

# Run in the runtime's interpreter as ``python -c BOOT PACKAGES MODULE ARGS...``: PACKAGES is
# a JSON object {package: folder} of this environment's danet-deploy, MODULE runs as __main__.
# A missing MODULE is one line; one that ends well answers ``{"finished": MODULE}`` on ANSWER_FD.
BOOT = """\
import importlib.util, json, os, runpy, sys
class CoreFinder:
    def __init__(self, folders): self.folders = folders
    def find_spec(self, name, path=None, target=None):
        folder = self.folders.get(name)
        if folder is None: return None
        return importlib.util.spec_from_file_location(
            name, folder + "/__init__.py", submodule_search_locations=[folder])
sys.meta_path.insert(0, CoreFinder(json.loads(sys.argv[1])))
module = sys.argv[2]
sys.argv = [module] + sys.argv[3:]
answer = os.environ.pop("DANET_DEPLOY_LAVA_ANSWER_FD", None)
if answer is not None: os.set_inheritable(int(answer), False)
try: found = importlib.util.find_spec(module)
except (ImportError, ValueError): found = None
if found is None:
    sys.exit(f"danet-deploy: error: no module named {module!r} in the Lava runtime ({sys.executable}): "
             f"check its name, or install it there with `{sys.executable} -m pip install ...`")
def finished(code=None):
    if answer is not None and code in (None, 0):
        os.write(int(answer), json.dumps({"finished": module}).encode())
try: runpy.run_module(module, run_name="__main__", alter_sys=True)
except SystemExit as e:
    finished(e.code)
    raise
finished()
"""

# A Python's answer about itself: its version, the pinned packages' versions, whether it can
# create virtual environments (for setup).
PROBE = """\
import json, sys
from importlib import metadata
names = json.loads(sys.argv[1])
def version(name):
    try: return metadata.version(name)
    except metadata.PackageNotFoundError: return None
try:
    import venv, ensurepip
    can_venv = True
except ImportError:
    can_venv = False
print(json.dumps({"python": list(sys.version_info[:3]), "packages": {n: version(n) for n in names},
                  "venv": can_venv}))
"""
PROBE_TIMEOUT = 60.0  # seconds a Python has to answer PROBE


class LavaDlNeeded(UserError):
    """This process needs lava-dl, which only the runtime has: the command runs there.
    ``results``: the files the command must write there (path: kind, ``outputs.TAGS``), read
    back before its success is believed (a command that knows them adds them on the way up)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.results: dict[Path, str] = {}


def requirements_file():
    return resources.files("danet_deploy").joinpath("lava-runtime.txt")


def pins() -> dict[str, str]:
    """The exact versions (``name==version`` lines) a runtime must hold."""
    found = {}
    for line in requirements_file().read_text().splitlines():
        m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*==\s*([^\s#;]+)\s*(#.*)?", line)
        if m:
            found[m.group(1).lower()] = m.group(2)
    return found


def lava_here() -> bool:
    """Whether this interpreter can import Lava itself (then it is its own runtime)."""
    return (
        importlib.util.find_spec("lava") is not None
        and importlib.util.find_spec("lava.magma") is not None
    )


def lava_dl_here() -> bool:
    return lava_here() and importlib.util.find_spec("lava.lib.dl") is not None


def default_location() -> Path:
    """Where ``lava-runtime setup`` puts the runtime: inside this (core) environment."""
    return Path(sys.prefix) / "lava-runtime"


def location() -> Path:
    return (
        Path(os.environ[RUNTIME_ENV]).expanduser()
        if os.environ.get(RUNTIME_ENV)
        else default_location()
    )


def _interpreter(where: Path) -> Path:
    return where if where.is_file() else where / "bin" / "python"


def python(purpose: str = "this command") -> str:
    """The interpreter that runs Lava: this one where Lava is importable, else the runtime's,
    once its versions are checked; a missing or mismatched runtime is refused in one line
    that names ``purpose`` and the command that sets the runtime up."""
    if lava_here():
        return sys.executable
    where = location()
    exe = _interpreter(where)
    if not exe.exists():
        source = (
            f"{RUNTIME_ENV}={where}"
            if os.environ.get(RUNTIME_ENV)
            else f"the default place, {where}"
        )
        raise UserError(
            f"{purpose} needs the Lava runtime (Python 3.10 with lava-nc and lava-dl), and there is "
            f"none at {source}: run `{SETUP_COMMAND}` (or set {RUNTIME_ENV} to a runtime)"
        )
    return _checked(exe)


@functools.cache
def _checked(exe: Path) -> str:
    problems = mismatches(probe(exe))
    if problems:
        raise UserError(
            f"the Lava runtime at {exe} does not match this danet-deploy: {'; '.join(problems)}; "
            f"rebuild it with `{SETUP_COMMAND}`"
        )
    return str(exe)


class NoAnswer(Exception):
    """A Python that gave no valid answer to :data:`PROBE`; the message says how, in one phrase."""


def probe(exe: Path) -> dict:
    """The Python version and the pinned packages' versions of the runtime's interpreter ``exe``."""
    try:
        return ask(str(exe))
    except NoAnswer as e:
        raise UserError(
            f"the Lava runtime's interpreter {exe} does not answer as a Python does ({e}); "
            f"rebuild it with `{SETUP_COMMAND}`"
        ) from None


def ask(exe: str) -> dict:
    """Interpreter ``exe``'s answer to :data:`PROBE`, checked as data from another process. It
    runs in a session of its own, ended whole (whatever it started included) when it is done
    or has not answered in :data:`PROBE_TIMEOUT` seconds."""
    try:
        with subprocess.Popen(
            [exe, "-c", PROBE, json.dumps(sorted(pins()))],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,
        ) as proc:
            try:
                out, err = proc.communicate(timeout=PROBE_TIMEOUT)
            except subprocess.TimeoutExpired:
                raise NoAnswer(f"no answer in {PROBE_TIMEOUT:g} s") from None
            finally:
                _end_session(proc)
    except OSError as e:
        raise NoAnswer(e.strerror or type(e).__name__) from None
    if proc.returncode != 0:
        last = (err.strip().splitlines() or ["no output"])[-1]
        raise NoAnswer(f"exit {proc.returncode}: {last[:200]}")
    return _probe_answer(out)


def _end_session(proc: subprocess.Popen) -> None:
    """Kill every process of the session that ``proc`` leads, and reap ``proc``."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:  # none is left
        pass
    proc.wait()


def _probe_answer(out: str) -> dict:
    """``out`` when it is :data:`PROBE`'s answer, or the reason it is not."""
    try:
        found = json.loads(out)
    except ValueError:
        found = None
    ok = (
        isinstance(found, dict)
        and isinstance(found.get("python"), list)
        and len(found["python"]) >= 2
        and all(type(v) is int for v in found["python"])
        and isinstance(found.get("packages"), dict)
        and all(isinstance(v, (str, type(None))) for v in found["packages"].values())
        and isinstance(found.get("venv"), bool)
    )
    if not ok:
        raise NoAnswer(
            f"it printed {out.strip()[:60]!r}, not a version probe's answer"
            if out.strip()
            else "it printed nothing"
        )
    return found


def mismatches(found: dict) -> list[str]:
    """What differs between a probed runtime and the pins, one phrase each."""
    problems = []
    if tuple(found["python"][:2]) != PYTHON_VERSION:
        problems.append(f"Python {'.'.join(map(str, found['python']))} (needs 3.10)")
    for name, want in pins().items():
        have = found["packages"].get(name)
        if have != want:
            problems.append(f"{name} {have or 'missing'} (needs {want})")
    return problems


def core_packages() -> dict[str, str]:
    """This environment's folder of the danet_deploy package (every sub-package lies in it)."""
    spec = importlib.util.find_spec("danet_deploy")
    return {"danet_deploy": str(Path(list(spec.submodule_search_locations)[0]).resolve())}


def command(module: str, *args: str, purpose: str = "this command") -> list[str]:
    """The command line that runs ``python -m module args`` in the runtime, on this code."""
    return boot_command(python(purpose), module, *args)


def boot_command(exe: str, module: str, *args: str) -> list[str]:
    """``exe -m module args`` on this environment's danet-deploy, which ``exe`` need not have."""
    return [exe, "-c", BOOT, json.dumps(core_packages()), module, *args]


def _booted(cmd: list[str]) -> tuple[str, str]:
    """The interpreter and the module of a :func:`boot_command` line."""
    return cmd[0], cmd[4]


def _end_with_parent() -> None:
    """In a child, before it runs: SIGTERM when the parent dies, even by SIGKILL (Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def rerun(argv: list[str], why: str, results: dict[Path, str] | None = None) -> int:
    """Run ``danet-deploy argv`` again, whole, in the runtime; its exit status. Its success
    stands only when each of ``results`` (path: kind) is a new file of that kind."""
    if lava_here():  # this interpreter is the runtime, and lava-dl is missing from it
        raise UserError(
            f"{why}: lava-dl is not installed in {sys.executable}; rebuild the runtime with "
            f"`{SETUP_COMMAND}`"
        )
    results = results or {}
    before = {path: _identity(path) for path in results}
    status = run_child(command("danet_deploy", *argv, purpose=why))
    for path, kind in results.items() if status == 0 else ():
        _check_result(path, kind, before[path], why)
    return status


def _identity(path: Path) -> tuple[int, ...] | None:
    """What tells a file written anew from the one that was there (None: no file)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


def _check_result(path: Path, kind: str, before: tuple[int, ...] | None, why: str) -> None:
    """Refuse a rerun's success when ``path`` is not the new file of ``kind`` it had to write."""
    from .outputs import TOOL, identify

    now = _identity(path)
    state = (
        "missing"
        if now is None
        else "unchanged from before the run"
        if now == before
        else None
        if identify(path) == kind
        else f"not a {TOOL} {kind}"
    )
    if state:
        raise UserError(
            f"{why}: the Lava runtime reported success, but {path} is {state}; run it again, "
            f"and if this happens again rebuild the runtime with `{SETUP_COMMAND}`"
        )


def run_child(cmd: list[str]) -> int:
    """Run ``cmd`` (a :func:`boot_command` line) on this terminal (its progress, its Ctrl-C) and
    return its exit status. SIGTERM or SIGHUP to this process is passed on to it, and it ends
    when this process dies. An exit 0 stands only with BOOT's answer that the module finished;
    death by a signal is one line (Ctrl-C: 130, as a shell says)."""
    exe, module = _booted(cmd)
    read, write = os.pipe()
    try:
        try:
            proc = subprocess.Popen(
                cmd,
                preexec_fn=_end_with_parent,
                pass_fds=(write,),
                env={**os.environ, ANSWER_FD: str(write)},
            )
        finally:
            os.close(write)
        try:
            with signals_end_the_run():
                status = proc.wait()
        except BaseException:
            _stop(proc)
            raise
        answer = _read_now(read)
    except OSError as e:
        raise UserError(
            f"the Lava runtime's interpreter {exe} does not run ({e.strerror or e}); rebuild it "
            f"with `{SETUP_COMMAND}`"
        ) from None
    finally:
        os.close(read)
    return _outcome(exe, module, status, answer)


def _read_now(fd: int) -> str:
    """What the pipe ``fd`` holds now (a process the child left behind may keep it open)."""
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 4096).decode(errors="replace")
    except BlockingIOError:
        return ""


def _outcome(exe: str, module: str, status: int, answer: str) -> int:
    """The exit status of a child that ran ``module``, once its end is checked."""
    if status < 0:
        if status == -signal.SIGINT:
            return 128 + signal.SIGINT
        raise UserError(
            f"the Lava runtime's process ({exe}, running {module}) was killed by "
            f"{signal.Signals(-status).name}: {_after(-status)}"
        )
    try:
        finished = json.loads(answer) == {"finished": module}
    except ValueError:
        finished = False
    if status == 0 and not finished:
        raise UserError(
            f"the Lava runtime's interpreter {exe} exited 0 without the answer that {module} "
            f"finished (the module ended the interpreter itself, e.g. os._exit, or the runtime does "
            f"not work: rebuild it with `{SETUP_COMMAND}`)"
        )
    return status


def _after(sig: int) -> str:
    """What to do after a runtime process died by signal ``sig``."""
    if sig == signal.SIGKILL:
        return (
            "most often the system ran out of memory (see `dmesg`); free memory or ask for less, and "
            "run it again"
        )
    if sig in (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGABRT, signal.SIGFPE):
        return f"it crashed; run it again, and if it crashes again rebuild the runtime with `{SETUP_COMMAND}`"
    return "something outside danet-deploy ended it; run it again"


def _stop(proc: subprocess.Popen, grace: float = 30.0) -> None:
    """End a child command as SIGTERM would, so that it cleans up; kill it after ``grace`` s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def find_python310(given: str | None = None) -> str:
    """A Python 3.10 interpreter that can create virtual environments: ``given``, then
    ``python3.10`` on PATH, pyenv's 3.10 versions (newest first), uv's, the usual places."""
    if given:
        why = _unfit(shutil.which(given) or given)
        if why:
            raise UserError(
                f"{given} is not a Python 3.10 that can create virtual environments ({why}); the "
                f"Lava runtime needs one"
            )
        return shutil.which(given) or given
    candidates = ["python3.10"]
    root = _pyenv_root()
    if root:
        found = sorted(
            root.glob("versions/3.10*/bin/python3.10"), key=lambda p: _version_key(p.parts[-3])
        )
        candidates += [str(p) for p in reversed(found)]
    if shutil.which("uv"):
        out = subprocess.run(
            ["uv", "python", "find", "3.10"],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        candidates += [out.stdout.strip()] if out.returncode == 0 and out.stdout.strip() else []
    candidates += [
        "/usr/bin/python3.10",
        "/usr/local/bin/python3.10",
        "/opt/homebrew/bin/python3.10",
    ]
    for c in candidates:
        exe = shutil.which(c) or c
        if not _unfit(exe):
            return exe
    raise UserError(
        "the Lava runtime needs Python 3.10 (lava-nc 0.10.0 installs on no other) and none was "
        "found: install it (`pyenv install 3.10`, `uv python install 3.10`, or your system's "
        "python3.10 and python3.10-venv) and run this again, or name it with --python"
    )


def _unfit(exe: str) -> str | None:
    """Why ``exe`` cannot build the runtime, from its answer to the probe (None: it can)."""
    try:
        found = ask(exe)
    except NoAnswer as e:
        return str(e)
    if tuple(found["python"][:2]) != PYTHON_VERSION:
        return f"it is Python {'.'.join(map(str, found['python']))}"
    return (
        None if found["venv"] else "it lacks venv or ensurepip (e.g. the python3.10-venv package)"
    )


def _pyenv_root() -> Path | None:
    if shutil.which("pyenv"):
        out = subprocess.run(
            ["pyenv", "root"], capture_output=True, text=True, stdin=subprocess.DEVNULL
        )
        if out.returncode == 0:
            return Path(out.stdout.strip())
    home = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    return home if home.is_dir() else None


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", name))


def _wanted() -> str:
    return requirements_file().read_text()


def is_current(where: Path) -> bool:
    """Whether the runtime at ``where`` was built from today's requirements."""
    stamp = where / STAMP
    return stamp.is_file() and stamp.read_text() == _wanted()


def setup(where: Path, given_python: str | None, say) -> None:
    """Build the runtime at ``where`` (a virtual environment), or leave it when it is current.
    It is built beside its place and moved there when complete: a failed or interrupted
    setup leaves the previous runtime, or none, never half of one. It removes only folders
    that carry its stamp (:func:`_ours`), and refuses any other in its way before any work."""
    if _up_to_date(where):
        say(f"the Lava runtime at {where} is up to date")
        return
    building = where.with_name(where.name + ".building")
    for folder, what in (
        (where, "is not a Lava runtime that danet-deploy built"),
        (building, "was not made by danet-deploy, and setup builds the runtime there"),
    ):
        if folder.exists() and not _ours(folder):
            raise UserError(
                f"{folder} exists and {what} (no {STAMP} in it): move it away, or choose another "
                f"place with {RUNTIME_ENV}"
            )
    py = find_python310(given_python)
    say(f"building the Lava runtime at {where} with {py} (first time: about 3 minutes, 5 GB)")
    try:
        with signals_end_the_run():
            _remove_ours(building)  # an interrupted setup's
            _build(building, py)
            _remove_ours(where)
            building.rename(where)
    except OSError as e:
        raise UserError(
            f"could not build the Lava runtime at {where} ({e.strerror or e})"
        ) from None
    finally:
        _remove_ours(building, quietly=True)
    say(f"the Lava runtime is ready at {where}")


def _up_to_date(where: Path) -> bool:
    """Whether the runtime at ``where`` was built from today's requirements and answers as such
    (one that does not answer is rebuilt, not refused)."""
    try:
        return is_current(where) and not mismatches(probe(_interpreter(where)))
    except UserError:
        return False


def _build(building: Path, py: str) -> None:
    """Make the runtime in the new folder ``building``, stamped as setup's own from the start."""
    building.parent.mkdir(parents=True, exist_ok=True)
    building.mkdir()
    try:
        (building / STAMP).write_text(BUILDING)
    except OSError:
        building.rmdir()
        raise
    _run([py, "-m", "venv", str(building)], "create the runtime's virtual environment")
    pip = [
        str(building / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ]
    _run(pip + ["--upgrade", "pip>=23.1"], "upgrade pip in the runtime")
    with resources.as_file(requirements_file()) as reqs:
        _run(pip + ["-r", str(reqs)], "install the runtime's packages")
    problems = mismatches(probe(building / "bin" / "python"))
    if problems:
        raise UserError(
            f"the Lava runtime built at {building} does not match this danet-deploy: "
            f"{'; '.join(problems)}"
        )
    (building / STAMP).write_text(_wanted())


def _ours(folder: Path) -> bool:
    """Whether ``folder`` is one setup made: a real folder (no link) that holds its stamp."""
    return folder.is_dir() and not folder.is_symlink() and (folder / STAMP).is_file()


def _remove_ours(folder: Path, quietly: bool = False) -> None:
    """Remove ``folder`` if setup made it (:func:`_ours`); anything else stays where it is."""
    if _ours(folder):
        shutil.rmtree(folder, ignore_errors=quietly)


def _run(cmd: list[str], what: str) -> None:
    try:
        out = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
    except OSError as e:
        raise UserError(f"could not {what}: {cmd[0]} does not run ({e.strerror or e})") from None
    if out.returncode != 0:
        last = (out.stdout.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"could not {what} (exit {out.returncode}): {last[:300]}")


def _bootstrap(argv: list[str]) -> int:
    """``python -m danet_deploy.lava_runtime setup [--python PY]``: the setup before the core's
    own dependencies are installed (scripts/setup.sh builds both environments at once);
    this module needs nothing but the standard library. Users run `danet-deploy lava-runtime`."""
    if (
        argv[:1] != ["setup"]
        or len(argv) not in (1, 3)
        or (len(argv) == 3 and argv[1] != "--python")
    ):
        print("usage: python -m danet_deploy.lava_runtime setup [--python PY]", file=sys.stderr)
        return 2
    try:
        setup(location(), argv[2] if len(argv) == 3 else None, print)
    except UserError as e:
        print(f"danet-deploy: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_bootstrap(sys.argv[1:]))
