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
STAMP = "danet-deploy-lava-runtime.txt"  # in the runtime's folder: the requirements it was built from
MAPPED_PACKAGES = ("danet_deploy", "danet_deploy.converters", "danet_deploy.hw_profiles")

# Run in the runtime's interpreter as ``python -c BOOT PACKAGES MODULE ARGS...``: PACKAGES is
# a JSON object {package: folder} of this environment's danet-deploy, MODULE runs as __main__.
BOOT = """\
import importlib.util, json, runpy, sys
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
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""

PROBE = """\
import json, sys
from importlib import metadata
names = json.loads(sys.argv[1])
def version(name):
    try: return metadata.version(name)
    except metadata.PackageNotFoundError: return None
print(json.dumps({"python": list(sys.version_info[:3]), "packages": {n: version(n) for n in names}}))
"""


class LavaDlNeeded(UserError):
    """This process needs lava-dl, which only the runtime has: the command runs there."""


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
    return importlib.util.find_spec("lava") is not None and importlib.util.find_spec("lava.magma") is not None


def lava_dl_here() -> bool:
    return lava_here() and importlib.util.find_spec("lava.lib.dl") is not None


def default_location() -> Path:
    """Where ``lava-runtime setup`` puts the runtime: inside this (core) environment."""
    return Path(sys.prefix) / "lava-runtime"


def location() -> Path:
    return Path(os.environ[RUNTIME_ENV]).expanduser() if os.environ.get(RUNTIME_ENV) else default_location()


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
        source = f"{RUNTIME_ENV}={where}" if os.environ.get(RUNTIME_ENV) else f"the default place, {where}"
        raise UserError(f"{purpose} needs the Lava runtime (Python 3.10 with lava-nc and lava-dl), and there is "
                        f"none at {source}: run `{SETUP_COMMAND}` (or set {RUNTIME_ENV} to a runtime)")
    return _checked(exe)


@functools.cache
def _checked(exe: Path) -> str:
    problems = mismatches(probe(exe))
    if problems:
        raise UserError(f"the Lava runtime at {exe} does not match this danet-deploy: {'; '.join(problems)}; "
                        f"rebuild it with `{SETUP_COMMAND}`")
    return str(exe)


def probe(exe: Path) -> dict:
    """The Python version and the pinned packages' versions of interpreter ``exe``."""
    try:
        out = subprocess.run([str(exe), "-c", PROBE, json.dumps(sorted(pins()))], capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise UserError(f"the Lava runtime's interpreter {exe} does not run ({e}); rebuild it with "
                        f"`{SETUP_COMMAND}`") from None
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"the Lava runtime's interpreter {exe} does not run ({last[:200]}); rebuild it with "
                        f"`{SETUP_COMMAND}`")
    return json.loads(out.stdout)


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
    """This environment's folders of the danet-deploy packages (an editable checkout maps
    ``converters/`` and ``hw_profiles/`` from the repository root)."""
    folders = {}
    for name in MAPPED_PACKAGES:
        spec = importlib.util.find_spec(name)
        folders[name] = str(Path(list(spec.submodule_search_locations)[0]).resolve())
    return folders


def command(module: str, *args: str, purpose: str = "this command") -> list[str]:
    """The command line that runs ``python -m module args`` in the runtime, on this code."""
    return boot_command(python(purpose), module, *args)


def boot_command(exe: str, module: str, *args: str) -> list[str]:
    """``exe -m module args`` on this environment's danet-deploy, which ``exe`` need not have."""
    return [exe, "-c", BOOT, json.dumps(core_packages()), module, *args]


def _end_with_parent() -> None:
    """In a child, before it runs: SIGTERM when the parent dies, even by SIGKILL (Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def rerun(argv: list[str], why: str) -> int:
    """Run ``danet-deploy argv`` again, whole, in the runtime; its exit status."""
    if lava_here():  # this interpreter is the runtime, and lava-dl is missing from it
        raise UserError(f"{why}: lava-dl is not installed in {sys.executable}; rebuild the runtime with "
                        f"`{SETUP_COMMAND}`")
    return run_child(command("danet_deploy", *argv, purpose=why))


def run_child(cmd: list[str]) -> int:
    """Run ``cmd`` on this terminal (its progress, its Ctrl-C) and return its exit status.
    SIGTERM or SIGHUP to this process is passed on to it, and it ends when this process dies."""
    proc = subprocess.Popen(cmd, preexec_fn=_end_with_parent)
    try:
        with signals_end_the_run():
            return proc.wait()
    except BaseException:
        _stop(proc)
        raise


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
    check = "import sys, venv, ensurepip; sys.exit(sys.version_info[:2] != (3, 10))"
    if given:
        if not _runs(shutil.which(given) or given, check):
            raise UserError(f"{given} is not a Python 3.10 that can create virtual environments "
                            f"(the Lava runtime needs one)")
        return shutil.which(given) or given
    candidates = ["python3.10"]
    root = _pyenv_root()
    if root:
        found = sorted(root.glob("versions/3.10*/bin/python3.10"), key=lambda p: _version_key(p.parts[-3]))
        candidates += [str(p) for p in reversed(found)]
    if shutil.which("uv"):
        out = subprocess.run(["uv", "python", "find", "3.10"], capture_output=True, text=True,
                             stdin=subprocess.DEVNULL)
        candidates += [out.stdout.strip()] if out.returncode == 0 and out.stdout.strip() else []
    candidates += ["/usr/bin/python3.10", "/usr/local/bin/python3.10", "/opt/homebrew/bin/python3.10"]
    for c in candidates:
        exe = shutil.which(c) or c
        if _runs(exe, check):
            return exe
    raise UserError("the Lava runtime needs Python 3.10 (lava-nc 0.10.0 installs on no other) and none was "
                    "found: install it (`pyenv install 3.10`, `uv python install 3.10`, or your system's "
                    "python3.10 and python3.10-venv) and run this again, or name it with --python")


def _runs(exe: str, code: str) -> bool:
    try:
        return subprocess.run([exe, "-c", code], capture_output=True, stdin=subprocess.DEVNULL).returncode == 0
    except OSError:
        return False


def _pyenv_root() -> Path | None:
    if shutil.which("pyenv"):
        out = subprocess.run(["pyenv", "root"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
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
    setup leaves the previous runtime, or none, never half of one."""
    if is_current(where) and not mismatches(probe(_interpreter(where))):
        say(f"the Lava runtime at {where} is up to date")
        return
    py = find_python310(given_python)
    if where.exists() and not (where / STAMP).exists():
        raise UserError(f"{where} exists and is not a Lava runtime that danet-deploy built: move it away or "
                        f"choose another place with {RUNTIME_ENV}")
    building = where.with_name(where.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    say(f"building the Lava runtime at {where} with {py} (first time: about 3 minutes, 5 GB)")
    try:
        with signals_end_the_run():
            _run([py, "-m", "venv", str(building)], "create the runtime's virtual environment")
            pip = [str(building / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
            _run(pip + ["--upgrade", "pip>=23.1"], "upgrade pip in the runtime")
            with resources.as_file(requirements_file()) as reqs:
                _run(pip + ["-r", str(reqs)], "install the runtime's packages")
            (building / STAMP).write_text(_wanted())
            shutil.rmtree(where, ignore_errors=True)
            building.rename(where)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    say(f"the Lava runtime is ready at {where}")


def _run(cmd: list[str], what: str) -> None:
    out = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if out.returncode != 0:
        last = (out.stdout.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"could not {what} (exit {out.returncode}): {last[:300]}")


def _bootstrap(argv: list[str]) -> int:
    """``python -m danet_deploy.lava_runtime setup [--python PY]``: the setup before the core's
    own dependencies are installed (scripts/setup.sh builds both environments at once);
    this module needs nothing but the standard library. Users run `danet-deploy lava-runtime`."""
    if argv[:1] != ["setup"] or len(argv) not in (1, 3) or (len(argv) == 3 and argv[1] != "--python"):
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
