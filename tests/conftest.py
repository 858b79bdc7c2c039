"""Shared fixtures: small deterministic data made on the fly (nothing is downloaded)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
import torch

from danet_deploy.data import load_dataset
from danet_deploy.lava_runtime import boot_command, lava_dl_here
from danet_deploy.simulator.lava import SHM, SHM_TAG_ENV, shm_prefix


@pytest.fixture(scope="session")
def digits_tensor_file(tmp_path_factory) -> Path:
    """The first 64 digits as a ``tensor:`` file."""
    ds, _ = load_dataset("digits", "all")
    x, y = ds.tensors
    path = tmp_path_factory.mktemp("data") / "tiny_digits.pt"
    torch.save({"inputs": x[:64].clone(), "labels": y[:64].clone()}, path)
    return path


@pytest.fixture(scope="session", autouse=True)
def frame_cache_of_the_session(tmp_path_factory) -> Iterator[None]:
    """Framed event recordings are cached in the session's own folder, never the user's cache
    (the CLI processes the tests start inherit it)."""
    from danet_deploy.events import CACHE_ENV

    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("frame-cache"))
    yield
    if before is None:
        os.environ.pop(CACHE_ENV)
    else:
        os.environ[CACHE_ENV] = before


# every Lava run of this session, in this process and in the CLI processes it starts, names its
# shared-memory segments with this tag: the leak check below sees only the suite's own segments,
# whatever other danet-deploy runs on the machine are doing
os.environ[SHM_TAG_ENV] = f"test{os.getpid()}"


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked ``lava_runtime`` import Lava or lava-dl in the test process: in the core
    environment they are skipped (`make test` runs them in the Lava runtime's suite)."""
    if lava_dl_here():
        return
    skip = pytest.mark.skip(
        reason="imports Lava or lava-dl: runs in the Lava runtime's suite (make test)"
    )
    for item in items:
        if "lava_runtime" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def shared_memory_is_left_as_found() -> Iterator[None]:
    """The suite runs Lava many times (and kills some runs): none of its segments may be left."""
    yield
    left = sorted(p.name for p in SHM.glob(f"{shm_prefix()}*"))
    assert not left, f"the tests left {len(left)} Lava shared-memory segments in {SHM}: {left[:5]}"


# the command line, as a user runs it; in the Lava runtime's suite, on the core's code
CLI = (
    boot_command(sys.executable, "danet_deploy")
    if lava_dl_here()
    else [sys.executable, "-m", "danet_deploy"]
)


def run_cli(*args: str, check: bool = False, **kw) -> subprocess.CompletedProcess:
    """Run ``danet-deploy ARGS`` in a fresh interpreter, as a user would."""
    proc = subprocess.run(
        [*CLI, *args], capture_output=True, text=True, stdin=subprocess.DEVNULL, **kw
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"danet-deploy {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}"
        )
    return proc


def one_line_error(proc: subprocess.CompletedProcess, *names: str) -> None:
    """The command failed as a user error: exit code 1, one line on stderr naming ``names``."""
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    for name in names:
        assert name in proc.stderr, (name, proc.stderr)


@pytest.fixture(scope="session")
def trained_digits(tmp_path_factory) -> Path:
    """A digits DANet trained for 3 epochs (about 5 s), shared by the tests that need one."""
    from danet_deploy.train import TrainOptions, train

    path = tmp_path_factory.mktemp("trained") / "digits_da.pt"
    train(TrainOptions(epochs=3, quiet=True, device="cpu"), path)
    return path


@pytest.fixture(scope="session")
def trained_plain(tmp_path_factory) -> Path:
    """A plain (sequential) digits network, trained for 3 epochs, for the netx tests."""
    from danet_deploy.train import TrainOptions, train

    path = tmp_path_factory.mktemp("trained") / "digits_plain.pt"
    train(TrainOptions(connection="plain", epochs=3, quiet=True, device="cpu"), path)
    return path
