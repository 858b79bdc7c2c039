"""Training: learning happens, resume continues, DDP equals one process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from danet_deploy.checkpoint import read_checkpoint
from danet_deploy.data import load_dataset
from danet_deploy.errors import UserError
from danet_deploy.models import build
from danet_deploy import train as train_module
from danet_deploy.train import TrainOptions, evaluate, train


@pytest.mark.slow
def test_short_training_improves_digits_accuracy(tmp_path: Path) -> None:
    torch.manual_seed(0)
    test_ds, _ = load_dataset("digits", "test")
    untrained = evaluate(build("digits_resnet", "da", 10), test_ds, torch.device("cpu"))
    out = tmp_path / "m.pt"
    metrics = train(TrainOptions(epochs=3, quiet=True, device="cpu"), out)
    assert metrics["test_accuracy"] > 0.8 > untrained + 0.3
    blob = read_checkpoint(out)
    assert blob["metrics"]["test_accuracy"] == metrics["test_accuracy"]
    assert blob["data"]["spec"] == "digits" and blob["timesteps"] == 4


@pytest.mark.slow
@pytest.mark.lava_runtime  # trains and builds slayer networks in this process
def test_lava_dl_checkpoints_record_the_framework_and_slayers_neuron(tmp_path: Path) -> None:
    from danet_deploy.chip_tuning import chip_grid
    from danet_deploy.converters.nir_export import to_nir
    from danet_deploy.models.neurons import CUBA, LIF

    out = tmp_path / "m.pt"
    train(
        TrainOptions(
            epochs=1,
            chip_epochs=1,
            quiet=True,
            device="cpu",
            framework="lava-dl",
            arch="vgg_digits",
        ),
        out,
        grid_for=chip_grid,
    )
    blob = read_checkpoint(out)
    assert (
        blob["config"]["neuron"]["framework"] == "lava-dl"
        and blob["neuron"]["voltage_decay"] == 0.5
    )
    assert blob["config"]["chip_grid"]["weights"]  # the last epoch ran on the chip's weight grid
    for arch in (
        "densenet_digits",
        "resnet20",
    ):  # DA-DenseNet and the CIFAR ResNet, end to end to NIR
        model = build(arch, "da", 10, framework="lava-dl").eval()
        x = torch.rand(2, *model.config["input_shape"])
        with torch.no_grad():
            assert model(x).shape == (2, 10)
        assert any(isinstance(m, CUBA) for m in model.modules())
        assert not any(isinstance(m, LIF) for m in model.modules())
        kinds = {type(n).__name__ for n in to_nir(model).nodes.values()}
        assert "CubaLIF" in kinds and "LIF" not in kinds
    with pytest.raises(UserError, match="current_decay must be 1"):
        build("digits_resnet", "da", 10, framework="lava-dl", current_decay=0.5)
    with pytest.raises(UserError, match="unknown lava-dl neuron parameter"):
        build("digits_resnet", "da", 10, framework="lava-dl", beta=0.5)


@pytest.mark.slow
def test_resume_continues_from_the_saved_epoch(tmp_path: Path, monkeypatch) -> None:
    full, part = tmp_path / "full.pt", tmp_path / "part.pt"
    save = train_module.save_checkpoint

    def save_and_keep_first_epoch(path, model, data, metrics, state):
        save(path, model, data, metrics, state)
        if state["epoch"] == 1:  # what an interrupted run leaves behind
            shutil.copy(path, part)

    monkeypatch.setattr(train_module, "save_checkpoint", save_and_keep_first_epoch)
    opts = dict(epochs=2, quiet=True, device="cpu", connection="sew")
    train(TrainOptions(**opts), full)
    monkeypatch.setattr(train_module, "save_checkpoint", save)
    assert read_checkpoint(part)["metrics"]["epochs"] == 1
    metrics = train(TrainOptions(**opts, resume=str(part)), part)
    assert metrics["epochs"] == 2
    a, b = read_checkpoint(full)["state_dict"], read_checkpoint(part)["state_dict"]
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["snntorch", "lava-dl"])
def test_ddp_two_cpu_processes_equal_one_process(
    tmp_path: Path, digits_tensor_file: Path, framework: str
) -> None:
    common = [
        "train",
        "--data",
        f"tensor:{digits_tensor_file}",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--connection",
        "aa",
        "--device",
        "cpu",
        "--seed",
        "3",
        "--framework",
        framework,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single, ddp = tmp_path / "single.pt", tmp_path / "ddp.pt"
    for cmd, out in (
        (["-m", "danet_deploy"], single),
        (
            [
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc_per_node",
                "2",
                "-m",
                "danet_deploy",
            ],
            ddp,
        ),
    ):
        proc = subprocess.run(
            [sys.executable, *cmd, *common, "-o", str(out)],
            env=env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = read_checkpoint(single), read_checkpoint(ddp)
    assert b["metrics"]["world_size"] == 2
    assert (
        a["config"]["neuron"].get("framework", "snntorch")
        == b["config"]["neuron"].get("framework", "snntorch")
        == framework
    )
    for k, v in a["state_dict"].items():
        assert torch.allclose(v.float(), b["state_dict"][k].float(), rtol=1e-4, atol=1e-5), k
    n_test = len(
        load_dataset(f"tensor:{digits_tensor_file}", "test")[0]
    )  # weights agree to 1e-4, not bits:
    assert (
        abs(a["metrics"]["test_accuracy"] - b["metrics"]["test_accuracy"]) <= 1 / n_test + 1e-9
    )  # one sample
