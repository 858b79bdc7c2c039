"""The wheel (what `pip install .` installs) holds every module and profile, installs, and
runs the core pipeline from outside the repository, on the core's Python, with no Lava."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from danet_deploy.lava_runtime import lava_here

from .conftest import one_line_error

ROOT = Path(__file__).resolve().parents[1]
IMPORT_EVERYTHING = """
import importlib, pkgutil, sys
from pathlib import Path
import danet_deploy
site = Path(sys.argv[1]).resolve()
assert Path(danet_deploy.__file__).resolve().is_relative_to(site), danet_deploy.__file__
from danet_deploy.lava_runtime import lava_here
for mod in pkgutil.walk_packages(danet_deploy.__path__, "danet_deploy."):
    if mod.name.endswith("__main__"):  # that one runs the command line
        continue
    if mod.name.startswith("danet_deploy.lavaext.") and not lava_here():
        continue  # Lava processes: they are imported in the Lava runtime only
    importlib.import_module(mod.name)
from danet_deploy.profiles import builtin_profiles, load_profile
names = sorted(builtin_profiles())
for name in names:
    load_profile(name)
print(" ".join(names))
"""


def _source_files() -> set[str]:
    """Every module and profile of the package (all of it lies in ``danet_deploy/``)."""
    return {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "danet_deploy").rglob("*")
        if path.suffix in (".py", ".toml") and "__pycache__" not in path.parts
    }


@pytest.mark.slow
@pytest.mark.skipif(
    lava_here(), reason="the core's wheel test: in the Lava runtime, Lava is present"
)
def test_wheel_holds_every_module_and_profile_and_imports_outside_the_repository(
    tmp_path: Path,
) -> None:
    src = tmp_path / "danet-deploy"  # a copy: the build leaves nothing in the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "danet_deploy",
        src / "danet_deploy",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            f"./{src.name}",
        ],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    (wheel,) = (tmp_path / "dist").glob("danet_deploy-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    expected = _source_files() | {"danet_deploy/lava-runtime.txt"}
    assert {
        "danet_deploy/simulator/fixed.py",
        "danet_deploy/lavaext/filesink.py",
        "danet_deploy/hw_profiles/loihi2.toml",
    } <= expected
    assert not expected - names, f"missing from the wheel: {sorted(expected - names)}"
    assert not any(n.startswith(("converters/", "hw_profiles/")) for n in names), (
        "generic top-level names"
    )
    # installed by pip (its dependencies are this environment's: the core's current releases)
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {
        "PYTHONPATH": str(site),
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "DANET_DEPLOY_LAVA_RUNTIME": str(tmp_path / "no-runtime"),
    }
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERYTHING, str(site)],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    profiles = {p.stem for p in (ROOT / "danet_deploy" / "hw_profiles").glob("*.toml")}
    assert set(proc.stdout.split()) == profiles

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "danet_deploy", *args],
            cwd=outside,
            env=env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )

    listing = cli("profiles")
    assert listing.returncode == 0 and all(p in listing.stdout for p in profiles), listing.stderr[
        -2000:
    ]
    for step in (
        ["train", "--epochs", "1", "-o", "m.pt"],
        ["export", "m.pt", "--target", "loihi2-sim", "-o", "chip"],
        ["simulate", "chip", "--samples", "20", "--json"],
        ["report", "chip", "--samples", "20", "-o", "r.json", "--format", "json"],
    ):
        done = cli(*step)
        assert done.returncode == 0, (step, done.stderr[-2000:])
    assert json.loads((outside / "r.json").read_text())["totals"]["sops"] > 0
    lava = cli("simulate", "chip", "--backend", "lava", "--samples", "2")
    one_line_error(
        lava,
        "needs the Lava runtime",
        "danet-deploy lava-runtime setup",
        "DANET_DEPLOY_LAVA_RUNTIME",
    )


# The pipeline's stages in their order (docs/compile.md, "Stages"): a module imports modules of
# its own stage, of an earlier one and the shared modules below them all, never a later stage's.
STAGES = {
    "models": ("models", "train", "checkpoint"),
    "export": ("export", "artifacts", "converters", "frontends"),
    "compile": ("compile", "lowering", "chip_tuning"),
    "run": ("simulate", "simulator", "lavaext"),
    "account": ("account", "paper_sops", "provenance"),
    "report": ("report", "report_format", "report_html", "diff"),
    "drivers": ("pipeline", "demo", "cli", "__main__"),  # above every stage
}
# below every stage (the IR package, errors, data, devices, ...): they import only each other
SHARED = (
    "ir",
    "errors",
    "problems",
    "outputs",
    "hashes",
    "progress",
    "signals",
    "heap",
    "data",
    "events",
    "profiles",
    "lava_runtime",
    "synapses",
    "devices",
    "hw_profiles",
)


def _layer(module: str) -> int:
    """-1 for a shared module, else its stage's place in ``STAGES``."""
    top = module.split(".")[0]
    if top in SHARED:
        return -1
    for i, members in enumerate(STAGES.values()):
        if top in members:
            return i
    raise AssertionError(f"danet_deploy.{module}: in no stage; add it to tests/test_packaging.py")


def _imports(path: Path, module: str) -> set[str]:
    """The package's modules that ``module`` imports, at its top or inside a function."""
    package = module.split(".")[:-1] if path.name != "__init__.py" else module.split(".")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                parts = [*base, *(node.module.split(".") if node.module else [])]
            elif (node.module or "").startswith("danet_deploy"):
                parts = node.module.split(".")[1:]
            else:
                continue
            if parts:
                found.add(".".join(parts))
            else:  # from . import x
                found |= {alias.name for alias in node.names if alias.name != "__version__"}
        elif isinstance(node, ast.Import):
            found |= {
                alias.name.removeprefix("danet_deploy.")
                for alias in node.names
                if alias.name.startswith("danet_deploy.")
            }
    return found


def test_no_stage_imports_a_later_stage() -> None:
    package = ROOT / "danet_deploy"
    later = []
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package).with_suffix("").parts
        if parts == ("__init__",):  # the package: __version__, and from_torch on first use
            continue
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        own = _layer(module)
        for imported in _imports(path, module):
            theirs = _layer(imported)
            if theirs > own or (own == -1 and theirs != -1):
                later.append(f"{module} imports {imported}")
    assert not later, later


# what the last stages read of the earlier ones: an artifact, a simulator, the accounting; the
# rest (reading MODEL, compiling, training) is driven by pipeline.py (issue 33)
READS = {"run": {"artifacts"}, "account": {"simulator"}, "report": {"account", "provenance"}}


def test_run_account_and_report_read_artifacts_and_drive_no_stage() -> None:
    package = ROOT / "danet_deploy"
    names = list(STAGES)
    driving = []
    for stage, allowed in READS.items():
        for top in STAGES[stage]:
            paths = [package / f"{top}.py"] if (package / f"{top}.py").is_file() else []
            paths += sorted((package / top).rglob("*.py")) if (package / top).is_dir() else []
            for path in paths:
                parts = path.relative_to(package).with_suffix("").parts
                module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
                for imported in _imports(path, module):
                    theirs = _layer(imported)
                    if 0 <= theirs < names.index(stage) and imported.split(".")[0] not in allowed:
                        driving.append(f"{module} imports {imported}")
    assert not driving, driving
