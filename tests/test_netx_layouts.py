"""netx layouts written by hand (h5py, in the layout slayer's ``export_hdf5`` writes), checked in
the core's suite against Loihi's integers computed in the test. slayer-written files and
lava-dl's own loader are the runtime's part (tests/test_netx_import.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from danet_deploy.compile import compile_graph
from danet_deploy.errors import UserError
from danet_deploy.artifacts import load_artifact
from danet_deploy.profiles import load_profile
from danet_deploy.simulator.fixed import FixedSimulator

from .conftest import run_cli

SHAPE = (2, 3, 4)


def _biased_input_net(path: Path, weight: np.ndarray, bias: float, i_decay: int) -> Path:
    """An input layer with LOIHI neurons and a weight/bias transform (as PilotNet LIF's), then a
    dense layer read out."""
    with h5py.File(path, "w") as f:
        g = f.create_group("layer/0")
        g.create_dataset("type", (1,), "S10", [b"input"])
        g.create_dataset("shape", data=np.array(SHAPE))
        g.create_dataset("weight", data=weight)
        g.create_dataset("bias", data=bias)
        for key, value in {
            "type": "LOIHI",
            "iDecay": i_decay,
            "vDecay": 1024,
            "vThMant": 25,
        }.items():
            g.create_dataset(f"neuron/{key}", data=value)
        d = f.create_group("layer/1")
        d.create_dataset("type", (1,), "S10", [b"dense"])
        d.create_dataset("shape", data=np.array([3]))
        d.create_dataset("weight", data=2 * np.ones((3, int(np.prod(SHAPE)))))
    return path


def _lif_spikes(drive: np.ndarray) -> np.ndarray:
    """Lava's LIF without current memory (du = 4095), dv 1024, vth 25, driven by ``drive[t]`` at step t."""
    v, out = np.zeros(drive.shape[1:], np.int64), []
    for step in drive.astype(np.int64):
        v = np.sign(v) * ((np.abs(v) * (4096 - 1024)) >> 12) + (step << 6)
        fired = v > 25 << 6
        v[fired] = 0
        out.append(fired)
    return np.stack(out)


@pytest.mark.parametrize(
    "weight", [np.array(3.0), np.array([2.0, 5.0]), np.arange(24.0).reshape(SHAPE) % 4]
)
def test_a_kept_input_layer_scales_its_input_and_adds_its_bias_without_current_memory(
    tmp_path: Path, weight: np.ndarray
) -> None:
    """Scalar, per-channel and per-neuron weights; the bias 6 each step (iDecay 4096: the current
    is the step's input, so the bias on it equals Loihi's on the voltage)."""
    path = _biased_input_net(tmp_path / "in.net", weight, 6.0, 4096)
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 4, (2, 10, *SHAPE))).float()
    graph = load_artifact(path, keep_input_neurons=True).graph
    program, _ = compile_graph(graph, "loihi2-sim", load_profile("loihi2"), "auto", x)
    spikes = FixedSimulator(program).run(x, record=True)["0.neuron"].numpy()
    per_neuron = np.broadcast_to(weight.reshape(-1, 1, 1) if weight.ndim == 1 else weight, SHAPE)
    for s in range(len(x)):
        want = _lif_spikes(per_neuron * x[s].numpy() + 6)
        assert np.array_equal(spikes[:, s], want), f"sample {s}"
    assert spikes.sum() > 10


def test_a_kept_input_layer_with_a_bias_and_a_decaying_current_is_refused(tmp_path: Path) -> None:
    path = _biased_input_net(tmp_path / "in.net", np.array(3.0), 6.0, 1024)
    assert (
        "0.neuron" not in load_artifact(path).graph.nodes
    )  # skipped, as netx's examples deploy it
    with pytest.raises(
        UserError, match=r"layer 0 \(input\): input neurons with a bias and a decaying current"
    ):
        load_artifact(path, keep_input_neurons=True)


def _dense_net(
    path: Path, i_decay: int, v_decay: int, weight: np.ndarray, bias: np.ndarray
) -> Path:
    """An input of 6 and one dense CUBA layer of 4 (vThMant 100), read out by a dense layer."""
    with h5py.File(path, "w") as f:
        g = f.create_group("layer/0")
        g.create_dataset("type", (1,), "S10", [b"input"])
        g.create_dataset("shape", data=np.array([6]))
        d = f.create_group("layer/1")
        d.create_dataset("type", (1,), "S10", [b"dense"])
        d.create_dataset("shape", data=np.array([4]))
        d.create_dataset("weight", data=weight)
        d.create_dataset("bias", data=bias)
        for key, value in {
            "type": "CUBA",
            "iDecay": i_decay,
            "vDecay": v_decay,
            "vThMant": 100,
        }.items():
            d.create_dataset(f"neuron/{key}", data=value)
        r = f.create_group("layer/2")
        r.create_dataset("type", (1,), "S10", [b"dense"])
        r.create_dataset("shape", data=np.array([2]))
        r.create_dataset("weight", data=np.full((2, 4), 2.0))
    return path


def _cuba_spikes(a: np.ndarray, i_decay: int, v_decay: int, bias: np.ndarray) -> np.ndarray:
    """Lava's LIF (lava/proc/lif/models.py) with du = iDecay - 1, dv = vDecay, vth 100, bias_exp 6:
    a decay multiplies the magnitude by (4096 - decay) and shifts it right by 12."""

    def decay(x: np.ndarray, d: int) -> np.ndarray:
        return np.sign(x) * ((np.abs(x) * (4096 - d)) >> 12)

    u = v = np.zeros(a.shape[1:], np.int64)
    out = []
    for step in a.astype(np.int64):
        u = decay(u, i_decay) + (step << 6)
        v = decay(v, v_decay) + u + (bias.astype(np.int64) << 6)
        fired = v > 100 << 6
        v = np.where(fired, 0, v)
        out.append(fired)
    return np.stack(out)


@pytest.mark.parametrize(
    "i_decay,v_decay", [(0, 512), (0, 0), (1024, 0), (4096, 0), (0, 4096), (4096, 4096)]
)
def test_every_legal_decay_runs_as_lavas_lif_zero_and_4096_included(
    tmp_path: Path, i_decay: int, v_decay: int
) -> None:
    """iDecay 0 (netx's own default current: it never decays) and vDecay 0 (a voltage that never
    decays), with a current that decays or not, spike for spike as Lava's LIF integers."""
    rng = np.random.default_rng(i_decay + v_decay)
    weight, bias = 2 * rng.integers(-20, 40, (4, 6)), rng.integers(-3, 4, 4)
    path = _dense_net(
        tmp_path / "d.net", i_decay, v_decay, weight.astype(float), bias.astype(float)
    )
    x = torch.from_numpy((rng.random((3, 12, 6)) < 0.4).astype(np.float32))
    graph = load_artifact(path).graph
    program, _ = compile_graph(graph, "loihi2-sim", load_profile("loihi2"), "auto", x)
    assert (program.fixed["1.neuron"].du, program.fixed["1.neuron"].dv) == (i_decay - 1, v_decay)
    spikes = FixedSimulator(program).run(x, record=True)["1.neuron"].numpy()
    for s in range(len(x)):
        want = _cuba_spikes(x[s].numpy() @ weight.T, i_decay, v_decay, bias)
        assert np.array_equal(spikes[:, s], want), f"sample {s}"
    assert 0 < spikes.sum() < spikes.size


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("neuron/vThMant", np.array([100, 200]), "layer 1 (dense): vThMant holds 2 values"),
        ("neuron/vThMant", -100, "layer 1 (dense): vThMant=-100: must be a whole number 0..131071"),
        ("neuron/messageBits", -3, "layer 1 (dense): messageBits=-3: must be a whole number 0..24"),
        ("neuron/iDecay", np.array([1024, 0]), "layer 1 (dense): iDecay holds 2 values"),
        ("weight", np.full((4, 6), 2 + 0j), "layer 1 (dense): weight has complex values"),
        ("weight", np.full((4, 6), np.inf), "layer 1 (dense): weight holds NaN or Inf"),
    ],
)
def test_cuba_fields_are_checked_where_they_are_read(
    tmp_path: Path, key: str, value, message: str
) -> None:
    """Every neuron field and weight of a CUBA layer goes through the same checks as a
    sigma-delta layer's: the first of several values is never taken for all."""
    path = _dense_net(tmp_path / "d.net", 1024, 128, np.full((4, 6), 2.0), np.zeros(4))
    with h5py.File(path, "a") as f:
        if key in f["layer/1"]:
            del f["layer/1"][key]
        f["layer/1"].create_dataset(key, data=value)
    with pytest.raises(UserError, match=re.escape(f"{path}: {message}")):
        load_artifact(path)


def test_simulate_runs_a_netx_file_as_the_program_its_export_runs(tmp_path: Path) -> None:
    """The netx file and its loihi2-sim export give the same outputs, in fixed point (--json says so)."""
    rng = np.random.default_rng(3)
    weight, bias = 2 * rng.integers(-20, 40, (4, 6)), rng.integers(-3, 4, 4)
    path = _dense_net(tmp_path / "d.net", 1024, 128, weight.astype(float), bias.astype(float))
    x = torch.from_numpy((rng.random((5, 12, 6)) < 0.4).astype(np.float32))
    torch.save({"inputs": x, "labels": torch.arange(5) % 2}, tmp_path / "spk.pt")
    data = f"tensor:{tmp_path / 'spk.pt'}"
    run_cli(
        "export",
        str(path),
        "--target",
        "loihi2-sim",
        "--data",
        data,
        "-o",
        str(tmp_path / "chip"),
        check=True,
    )
    outputs = {}
    for model in (path, tmp_path / "chip"):
        saved = tmp_path / f"{model.name}.pt"
        result = json.loads(
            run_cli(
                "simulate",
                str(model),
                "--data",
                data,
                "--json",
                "--save-outputs",
                str(saved),
                check=True,
            ).stdout
        )
        assert result["mode"] == "fixed" and result["pipeline_latency"] == 2
        outputs[model.name] = torch.load(saved, weights_only=True)["outputs"]
    assert torch.equal(outputs["d.net"], outputs["chip"]) and outputs["d.net"].abs().sum() > 0
