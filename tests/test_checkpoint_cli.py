"""Checkpoints, bad input and the CLI contracts (exit codes, one-line errors)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch

from danet_deploy.checkpoint import load_model, read_checkpoint, save_checkpoint
from danet_deploy.data import load_dataset
from danet_deploy.errors import UserError
from danet_deploy.models import build

from .conftest import run_cli


def _saved(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = build("digits_resnet", "sew", 10, timesteps=3).eval()
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, {"spec": "digits"}, {"test_accuracy": 0.5})
    return path, model


def test_round_trip_restores_identical_outputs(tmp_path: Path) -> None:
    path, model = _saved(tmp_path)
    loaded, blob = load_model(path)
    x = torch.rand(4, 1, 8, 8) * 2
    assert torch.equal(model(x), loaded(x))
    assert blob["timesteps"] == 3 and blob["config"]["connection"] == "sew"
    assert blob["metrics"]["test_accuracy"] == 0.5
    assert not list(tmp_path.glob(".m.pt.*")), "temporary file left behind"


class _Payload:
    """Unpickling this object would create a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_with_pickled_code_is_refused_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pt"
    torch.save({"format": "danet-deploy/1", "config": _Payload(marker)}, path)
    with pytest.raises(UserError, match="refused"):
        read_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "foreign", "missing"])
def test_broken_checkpoints_give_one_line_errors(tmp_path: Path, damage: str) -> None:
    path, _ = _saved(tmp_path)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint at all")
    elif damage == "foreign":
        torch.save({"weights": torch.zeros(3)}, path)
    else:
        path = tmp_path / "nope.pt"
    with pytest.raises(UserError) as info:
        read_checkpoint(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.slow
def test_cli_refuses_bad_resume_checkpoint_with_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 100)
    proc = run_cli("train", "--resume", str(bad), "-o", str(tmp_path / "o.pt"), "--epochs", "1")
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and str(bad) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_unknown_arch_is_usage_error_listing_valid(tmp_path: Path) -> None:
    proc = run_cli("train", "--arch", "resnet51", "-o", str(tmp_path / "o.pt"))
    assert proc.returncode == 2
    assert "resnet50" in proc.stderr and "digits_resnet" in proc.stderr


def test_cli_missing_dataset_path_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "no_cifar_here"
    proc = run_cli("train", "--data", f"cifar10:{missing}", "-o", str(tmp_path / "o.pt"))
    assert proc.returncode == 1 and str(missing) in proc.stderr
    assert not (tmp_path / "o.pt").exists()


def test_unknown_dataset_lists_valid_kinds() -> None:
    with pytest.raises(UserError, match="valid: digits, cifar10:PATH"):
        load_dataset("mnist")


def test_tensor_file_with_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    path = tmp_path / "data.pt"
    torch.save({"inputs": torch.zeros(2, 1, 8, 8), "labels": _Payload(marker)}, path)
    with pytest.raises(UserError, match="not a readable tensor file"):
        load_dataset(f"tensor:{path}")
    assert not marker.exists()


@pytest.mark.slow
def test_help_on_every_command() -> None:
    for cmd in ([], ["train"], ["demo"]):
        proc = run_cli(*cmd, "--help")
        assert proc.returncode == 0 and "Usage:" in proc.stdout


def test_checkpoint_is_a_zip_of_plain_data(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path)
    with zipfile.ZipFile(path) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    # only torch's rebuild helpers and builtins may be referenced, never project classes
    assert b"danet_deploy" not in data and b"snntorch" not in data
