"""Sigma-delta networks (lava-dl's SDNN layers): netx files read, compiled from the chip's
integers, run as Loihi's pipeline runs them, and counted as graded traffic.

The netx files here are written by hand in the layout slayer's ``export_hdf5`` writes; every
expected value comes from :func:`lava_pipeline`, a step-by-step statement of what lava-nc
0.10.0's processes do (``lava/proc/sdn/models.py``, Dense and Conv one step per hop), written
in this file on numpy integers. The runtime's tests hold the same networks, written by
slayer itself, against lava-dl's own netx loader in Lava.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from danet_deploy.errors import UserError
from danet_deploy.artifacts import load_artifact
from danet_deploy.pipeline import export
from danet_deploy.ir.program import PROGRAM_FORMAT, PROGRAM_FORMAT_SIGMA_DELTA
from danet_deploy.ir.sigma_delta import SigmaDelta, SigmaDeltaState
from danet_deploy.simulator.fixed import FixedSimulator

from .conftest import one_line_error, run_cli

SHAPE = (2, 6, 6)
STEPS = 7


# ---- one neuron, by hand ---------------------------------------------------------------------------


def _steps(node: SigmaDelta, inputs: list[int], exact: bool = True) -> list[float]:
    state = SigmaDeltaState(node, exact=exact)
    return [float(state.step(torch.tensor([a]))[0]) for a in inputs]


def test_an_encoder_sends_changes_of_at_least_its_threshold_and_keeps_the_rest() -> None:
    """Lava's Delta, vth 5, no exponents: 5 is sent, the rise to 9 (4) is kept as residue and
    goes out with the fall to 0 (-9 + 4 = -5)."""
    node = SigmaDelta(
        threshold=np.full(1, 5.0), bias=np.zeros(1), encoder=True, spike_exp=0, state_exp=0
    )
    assert _steps(node, [5, 5, 9, 9, 0]) == [5, 0, 0, 0, -5]


def test_a_sigma_delta_neuron_drops_the_truncation_of_its_shift() -> None:
    """lava-nc 0.10.0 keeps ``d - s`` before ``>> state_exp`` as the residue: with state_exp 2
    two inputs of 5 (act 5 then 10) send 5 >> 2 = 1 twice, not 10 / 4 = 2.5 in all."""
    node = SigmaDelta(threshold=np.zeros(1), bias=np.zeros(1), relu=False, spike_exp=0, state_exp=2)
    assert _steps(node, [5, 5]) == [1, 1]
    assert _steps(node, [5, 5], exact=False) == [1.25, 1.25]  # the float interpreter: no truncation
    assert _steps(node, [-5]) == [-2]  # an arithmetic shift: floor(-5 / 4)


def test_relu_and_bias_shape_the_activation() -> None:
    """act = relu(sigma + bias << E): bias 1 with E = 1 starts the activation at 2; a sigma of -3
    takes it to 0 (relu), so the neuron sends -2 (>> 0)."""
    node = SigmaDelta(threshold=np.ones(1), bias=np.ones(1), spike_exp=1, state_exp=0)
    assert _steps(node, [0, -3, 0]) == [2, -2, 0]


# ---- whole networks, by hand ------------------------------------------------------------------------


def _layers(seed: int = 0, threshold: int = 1) -> list[dict]:
    """A netx SDNN network as dicts: an encoder, a conv, flatten, a dense and a sigma output."""
    rng = np.random.default_rng(seed)
    even = lambda *shape: 2 * rng.integers(-6, 7, shape)  # noqa: E731 - Loihi's mixed-sign weights are even
    return [
        {"type": "input", "shape": SHAPE, "vth": threshold},
        {
            "type": "conv",
            "shape": (3, 3, 3),
            "weight": even(3, 2, 3, 3),
            "bias": 2 * rng.integers(-2, 3, 3),
            "stride": 2,
            "padding": 1,
            "vth": threshold,
        },
        {"type": "flatten", "shape": (27, 1, 1)},
        {
            "type": "dense",
            "shape": (5,),
            "weight": even(5, 27),
            "bias": 2 * rng.integers(-1, 3, 5),
            "vth": threshold,
        },
        {"type": "dense", "shape": (2,), "weight": even(2, 5), "sigma_output": True},
    ]


def write_netx(path: Path, layers: list[dict]) -> Path:
    """``layers`` in netx's layout, as slayer's ``export_hdf5`` lays out SDNN blocks."""
    with h5py.File(path, "w") as f:
        for i, spec in enumerate(layers):
            g = f.create_group(f"layer/{i}")
            g.create_dataset("type", (1,), "S10", [spec["type"].encode()])
            g.create_dataset("shape", data=np.array(spec["shape"]))
            for key in ("weight", "bias"):
                if key in spec:
                    g.create_dataset(key, data=np.asarray(spec[key], dtype=np.float32))
            if spec["type"] == "conv":
                for key in ("stride", "padding"):
                    g.create_dataset(key, data=np.array([spec[key], spec[key]]))
                g.create_dataset("dilation", data=np.array([1, 1]))
                g.create_dataset("groups", data=1)
            if spec["type"] == "flatten" or not spec.get("neurons", True):
                continue
            g.create_dataset("neuron/type", data="SDNN")
            g.create_dataset("neuron/activation", data=spec.get("activation", "relu"))
            g.create_dataset("neuron/vThMant", data=spec.get("vth", 1))
            if spec.get("sigma_output"):
                g.create_dataset("neuron/sigma_output", data=True)
    return path


def _neuron(state: dict, a: np.ndarray, vth: int, bias: np.ndarray, encoder: bool) -> np.ndarray:
    """One step of lava-nc 0.10.0's Delta (``encoder``) or SigmaDelta with ReLU, exponents 6 and 6."""
    if encoder:
        act = a << 12
    else:
        state["sigma"] = state.get("sigma", 0) + a
        act = np.maximum(state["sigma"] + (bias << 12), 0)
    delta = act - state.get("act", 0) + state.get("residue", 0)
    sent = np.where(np.abs(delta) >= vth << 12, delta, 0)
    state["residue"], state["act"] = delta - sent, act
    return sent >> 6


def lava_pipeline(layers: list[dict], x: np.ndarray, total: int) -> np.ndarray:
    """The Sigma output at each of ``total`` steps for input ``x`` ``[T, C, H, W]`` (zero after
    T): the encoder reads the input itself (without one, the input goes to the conv as it is),
    every synapse hands on its source's output of the step before (Lava's Dense and Conv send
    last step's sum first), a Sigma sums its input."""
    conv, dense, out = layers[1], layers[3], layers[4]
    states: list[dict] = [{}, {}, {}]
    sent = [
        np.zeros(SHAPE, np.int64),
        np.zeros(conv["shape"], np.int64),
        np.zeros(dense["shape"], np.int64),
    ]
    sigma, outputs = np.zeros(out["shape"], np.int64), []
    for t in range(total):
        a_conv = (
            F.conv2d(
                torch.from_numpy(sent[0][None]).double(),
                torch.from_numpy(conv["weight"]).double(),
                stride=conv["stride"],
                padding=conv["padding"],
            )[0]
            .numpy()
            .astype(np.int64)
        )
        a_dense = dense["weight"] @ sent[1].reshape(-1)
        sigma = sigma + out["weight"] @ sent[2]
        bias = np.asarray(conv["bias"]).reshape(-1, 1, 1)
        frame = x[t] if t < len(x) else np.zeros(SHAPE, np.int64)
        encoded = (
            _neuron(states[0], frame, layers[0]["vth"], 0, True)
            if layers[0].get("neurons", True)
            else frame
        )
        sent = [
            encoded,
            _neuron(states[1], a_conv, conv["vth"], np.broadcast_to(bias, conv["shape"]), False),
            _neuron(states[2], a_dense, dense["vth"], np.asarray(dense["bias"]), False),
        ]
        outputs.append(sigma.copy())
    return np.stack(outputs)


def _frames(n: int = 3, seed: int = 1) -> torch.Tensor:
    """Graded input ``[N, T, C, H, W]``: integers that change a little from step to step."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 40, (n, 1, *SHAPE))
    return torch.from_numpy(base + rng.integers(-3, 4, (n, STEPS, *SHAPE))).float()


@pytest.fixture(scope="module")
def sdnn_export(tmp_path_factory) -> tuple[Path, list[dict]]:
    folder = tmp_path_factory.mktemp("sdnn")
    layers = _layers()
    path = write_netx(folder / "sdnn.net", layers)
    return export(path, "loihi2-sim", folder / "sdnn.loihi2-sim"), layers


def test_the_fast_simulator_runs_the_pipeline_lava_nc_runs(sdnn_export) -> None:
    """Every step of the Sigma output, from the first, equals the pipeline stated by hand; the
    samples' windows are its last T steps, the readout's first one holding what came before."""
    outdir, layers = sdnn_export
    program = load_artifact(outdir).program
    x = _frames()
    sim = FixedSimulator(program)
    timeline = sim.timelines(x)["output"].cumsum(0)  # Sigma: the running sum of its input
    window = sim.run(x)["output"].cumsum(0)
    latency = program.populations["output"].latency
    assert latency == 3  # encoder: no hop; conv, dense, output: one each
    for s in range(len(x)):
        want = lava_pipeline(layers, x[s].numpy().astype(np.int64), latency + STEPS)
        assert np.array_equal(timeline[:, s].numpy(), want), f"sample {s}"
        assert np.array_equal(window[:, s].numpy(), want[latency:]), f"sample {s}"
    assert np.abs(timeline.numpy()).max() > 1000  # not a silent network


def test_the_compiled_program_holds_the_files_integers_and_says_it_is_pipelined(
    sdnn_export,
) -> None:
    outdir, layers = sdnn_export
    program = load_artifact(outdir).program
    assert program.lowered.pipelined
    with h5py.File(outdir / "program.h5") as f:
        assert f.attrs["format"] == PROGRAM_FORMAT_SIGMA_DELTA
    kinds = {n: p.kind.name for n, p in program.populations.items()}
    assert kinds == {
        "input": "input",
        "0.neuron": "delta",
        "1.neuron": "sigma_delta",
        "3.neuron": "sigma_delta",
        "output": "readout",
    }
    conv = program.populations["1.neuron"]
    assert np.array_equal(conv.synapse_groups[0].weight_q, layers[1]["weight"])
    assert np.array_equal(
        program.fixed["1.neuron"].bias_mant,
        np.broadcast_to(np.asarray(layers[1]["bias"]).reshape(-1, 1, 1), (3, 3, 3)),
    )
    assert (conv.spike_exp, conv.state_exp, conv.relu, program.fixed["1.neuron"].vth) == (
        6,
        6,
        True,
        1,
    )
    port = program.populations["0.neuron"].synapse_groups[0]
    assert (
        port.port and program.mapping["0.neuron"]["synapses"] == 0
    )  # the input reaches it directly


def test_a_program_without_sigma_delta_neurons_keeps_the_older_format(
    trained_plain: Path, tmp_path: Path
) -> None:
    outdir = export(trained_plain, "loihi2-sim", tmp_path / "plain")
    with h5py.File(outdir / "program.h5") as f:
        assert f.attrs["format"] == PROGRAM_FORMAT
    assert not load_artifact(outdir).program.lowered.pipelined


def test_simulate_saves_the_sigma_at_the_last_step(sdnn_export, tmp_path: Path) -> None:
    outdir, layers = sdnn_export
    x = _frames()
    data = tmp_path / "frames.pt"
    torch.save({"inputs": x, "labels": torch.zeros(len(x), dtype=torch.long)}, data)
    saved = tmp_path / "outputs.pt"
    run_cli(
        "simulate",
        str(outdir),
        "--data",
        f"tensor:{data}",
        "--save-outputs",
        str(saved),
        check=True,
    )
    outputs = torch.load(saved, weights_only=True)["outputs"].numpy()
    for s in range(len(x)):
        assert np.array_equal(
            outputs[s], lava_pipeline(layers, x[s].numpy().astype(np.int64), 3 + STEPS)[-1]
        )


def test_without_an_encoder_the_first_layer_takes_the_input_values_as_they_are(
    tmp_path: Path,
) -> None:
    """An input layer without neurons (netx then feeds the input to the first synapse): the input
    is sent graded, whatever data the export saw, and every output step equals the pipeline."""
    layers = _layers()
    layers[0] = {"type": "input", "shape": SHAPE, "neurons": False}
    program = load_artifact(
        export(write_netx(tmp_path / "raw.net", layers), "loihi2-sim", tmp_path / "chip")
    ).program
    assert program.fixed["input"].graded and "0.neuron" not in program.populations
    x = _frames(n=2)
    timeline = FixedSimulator(program).timelines(x)["output"].cumsum(0)
    for s in range(len(x)):
        want = lava_pipeline(layers, x[s].numpy().astype(np.int64), 3 + STEPS)
        assert np.array_equal(timeline[:, s].numpy(), want), f"sample {s}"


def test_graph_nir_carries_the_sigma_delta_nodes_and_reads_back(sdnn_export) -> None:
    """The float side of the export is its own graph.nir (danet-deploy's SigmaDelta node type)."""
    outdir, _ = sdnn_export
    with h5py.File(outdir / "graph.nir") as f:
        assert f["node/nodes/1.neuron/type"][()] == b"SigmaDelta"
    graph = load_artifact(outdir).graph
    node = graph.nodes["1.neuron"]
    assert isinstance(node, SigmaDelta) and not node.encoder and node.relu and node.exponent == 12
    assert graph.nodes["0.neuron"].encoder


def test_report_counts_graded_spikes_apart_from_binary_ones(sdnn_export, tmp_path: Path) -> None:
    """Graded messages and the graded ops they cause, counted independently: every nonzero payload
    a layer sends, and each times the nonzero weights it reaches."""
    outdir, _ = sdnn_export
    x = _frames()
    data = tmp_path / "frames.pt"
    torch.save({"inputs": x, "labels": torch.zeros(len(x), dtype=torch.long)}, data)
    proc = run_cli(
        "report", str(outdir), "--data", f"tensor:{data}", "--format", "json", check=True
    )
    rows = {r["name"]: r for r in json.loads(proc.stdout)["layers"]}
    program = load_artifact(outdir).program
    out = FixedSimulator(program).run(x, record=True)
    for name in ("0.neuron", "1.neuron", "3.neuron"):
        assert rows[name]["spikes"] == 0 and rows[name]["payload_bits"] == 24
        assert rows[name]["graded_spikes"] == pytest.approx(float((out[name] != 0).sum()) / len(x))
        assert rows[name]["neuron_updates"] == program.populations[name].neurons * STEPS
    sent = out["1.neuron"].reshape(STEPS, len(x), -1)
    w = program.populations["3.neuron"].synapse_groups[0].weight_q
    ops = float(
        ((sent != 0).double() @ torch.from_numpy((w != 0).T.astype(np.float64))).sum()
    ) / len(x)
    assert rows["3.neuron"]["graded_ops"] == pytest.approx(ops) and ops > 0
    assert (
        rows["0.neuron"]["graded_ops"] == 0 and rows["0.neuron"]["synapses"] == 0
    )  # its port has none


# ---- refusals ---------------------------------------------------------------------------------------


def test_export_to_nir_refuses_a_sigma_delta_graph_naming_the_node(tmp_path: Path) -> None:
    path = write_netx(tmp_path / "sdnn.net", _layers())
    proc = run_cli("export", str(path), "--target", "nir", "-o", str(tmp_path / "nir"))
    one_line_error(proc, str(path), "'0.neuron'", "sigma-delta", "loihi2-sim")
    assert not (tmp_path / "nir").exists()


@pytest.mark.parametrize(
    "change,message",
    [
        ({"activation": "unit"}, "layer 3 (dense): SDNN activation 'unit'"),
        ({"neuron": "RF_IZ"}, "layer 3 (dense): neuron type 'RF_IZ' (resonate-and-fire"),
    ],
)
def test_what_netx_would_not_run_as_written_is_refused_naming_the_layer(
    tmp_path: Path, change: dict, message: str
) -> None:
    layers = _layers()
    layers[3].update({k: v for k, v in change.items() if k != "neuron"})
    path = write_netx(tmp_path / "sdnn.net", layers)
    if "neuron" in change:
        with h5py.File(path, "a") as f:
            del f["layer/3/neuron/type"]
            f["layer/3/neuron/type"] = change["neuron"]
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_artifact(path)


def test_a_network_mixing_sigma_delta_and_spiking_layers_is_refused(tmp_path: Path) -> None:
    layers = _layers()
    path = write_netx(tmp_path / "mixed.net", layers)
    with h5py.File(path, "a") as f:  # the dense layer becomes CUBA
        for key in ("type", "activation"):
            del f[f"layer/3/neuron/{key}"]
        f["layer/3/neuron/type"] = "CUBA"
        f["layer/3/neuron/iDecay"], f["layer/3/neuron/vDecay"] = 4096, 4096
    proc = run_cli("export", str(path), "--target", "loihi2-sim", "-o", str(tmp_path / "chip"))
    one_line_error(proc, "layer '3.neuron'", "mixes spiking (LIF) layers with sigma-delta layers")
    assert not (tmp_path / "chip").exists()


def _with_field(path: Path, layer: int, key: str, value) -> Path:
    """The hand-written network with one field of one layer replaced."""
    write_netx(path, _layers())
    with h5py.File(path, "a") as f:
        g = f[f"layer/{layer}"]
        if key in g:
            del g[key]
        g.create_dataset(key, data=value)
    return path


@pytest.mark.parametrize(
    "layer,key,value,message",
    [
        (3, "neuron/vThMant", -5, "layer 3 (dense): vThMant=-5: must be a whole number 0..131071"),
        (
            1,
            "neuron/vThMant",
            1e30,
            "layer 1 (conv): vThMant=1e+30: must be a whole number 0..131071",
        ),
        (
            3,
            "neuron/vThMant",
            2.5,
            "layer 3 (dense): vThMant=2.5: must be a whole number 0..131071",
        ),
        (3, "neuron/vThMant", np.array([3, 9]), "layer 3 (dense): vThMant holds 2 values"),
        (0, "neuron/vThMant", np.zeros(0), "layer 0 (input): vThMant holds 0 values"),
        (
            3,
            "neuron/messageBits",
            0,
            "layer 3 (dense): messageBits=0: must be a whole number 1..24",
        ),
        (
            3,
            "neuron/messageBits",
            99,
            "layer 3 (dense): messageBits=99: must be a whole number 1..24",
        ),
        (
            0,
            "neuron/messageBits",
            -3,
            "layer 0 (input): messageBits=-3: must be a whole number 1..24",
        ),
        (3, "weight", np.full((5, 27), 2 + 2j), "layer 3 (dense): weight has complex values"),
        (1, "bias", np.array([2.0, np.nan, 0.0]), "layer 1 (conv): bias holds NaN or Inf"),
        (1, "bias", np.array([2.0, 0.5, 0.0]), "layer 1 (conv): bias 0.5: must be a whole number"),
    ],
)
def test_sigma_delta_fields_netx_or_loihi_would_not_take_are_refused(
    tmp_path: Path, layer: int, key: str, value, message: str
) -> None:
    """Each field is checked where the reader translates it: one value (lava-dl's Lava processes take
    one vth per layer), whole, inside the bits Loihi 2 holds, real and finite; never the first of
    several values, never the real part of a complex one."""
    path = _with_field(tmp_path / "sdnn.net", layer, key, value)
    with pytest.raises(UserError, match=re.escape(f"{path}: {message}")):
        load_artifact(path)


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("neuron/vThMant", np.zeros(0), "vThMant holds 0 values"),
        ("neuron/vThMant", 2**40, "vThMant=1.09951e+12: must be a whole number 0..131071"),
        ("weight", np.full((5, 27), 2 + 2j), "weight has complex values"),
    ],
)
def test_a_bad_sigma_delta_field_is_one_line_from_the_cli(
    tmp_path: Path, key: str, value, message: str
) -> None:
    """No traceback, no numpy warning: one line naming the file, the layer and the field."""
    path = _with_field(tmp_path / "sdnn.net", 3, key, value)
    before = path.read_bytes()
    proc = run_cli("simulate", str(path), "--data", "digits", "-n", "2")
    one_line_error(proc, str(path), "layer 3 (dense)", message)
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("state_exp", 1000, "state_exp=1000: must be a whole number 0..7"),
        ("state_exp", -1, "state_exp=-1: must be a whole number 0..7"),
        ("spike_exp", 2**62, "spike_exp=4611686018427387904: must be a whole number 0..7"),
        (
            "threshold",
            np.full((3, 3, 3), 1e30),
            "threshold 1e+30: must be a whole number 0..131071",
        ),
        ("threshold", np.full((3, 3, 3), -4.0), "threshold -4: must be a whole number 0..131071"),
        ("threshold", np.zeros(0), "threshold is empty"),
    ],
)
def test_a_bad_sigma_delta_node_in_graph_nir_is_one_line(
    sdnn_export, tmp_path: Path, key: str, value, message: str
) -> None:
    """A graph.nir's SigmaDelta node (danet-deploy's own type) is checked as it is read, by the node
    itself: the .nir file as MODEL, and an export directory whose float side is that graph.nir."""
    outdir, _ = sdnn_export
    copy = tmp_path / "chip"
    shutil.copytree(outdir, copy)
    with h5py.File(copy / "graph.nir", "a") as f:
        g = f["node/nodes/1.neuron"]
        del g[key]
        g.create_dataset(key, data=value)
    frames = tmp_path / "frames.pt"
    torch.save({"inputs": _frames(n=1), "labels": torch.zeros(1, dtype=torch.long)}, frames)
    for model in (copy / "graph.nir", copy):
        proc = run_cli("simulate", str(model), "--data", f"tensor:{frames}")
        one_line_error(proc, str(copy / "graph.nir"), "node '1.neuron' (SigmaDelta)", message)


def test_the_sigma_delta_node_checks_its_own_fields() -> None:
    """The one check every reader of the node goes through (the netx reader and graph.nir's)."""
    with pytest.raises(ValueError, match=r"state_exp=9: must be a whole number 0\.\.7"):
        SigmaDelta(threshold=np.ones(2), bias=np.zeros(2), state_exp=9)
    with pytest.raises(ValueError, match=r"bias holds NaN or Inf"):
        SigmaDelta(threshold=np.ones(2), bias=np.array([0.0, np.inf]))


# ---- simulate runs a netx file as the fixed-point network it is --------------------------------------


def test_simulate_runs_a_netx_file_as_its_compiled_program(sdnn_export, tmp_path: Path) -> None:
    """A netx file holds the chip's integers: simulate compiles it and runs the fast fixed-point
    simulator, whose outputs are the export's (and lava-nc's pipeline's) exactly. --mode float
    still runs the float interpreter, says on stderr that it is the float reading, and differs."""
    outdir, layers = sdnn_export
    source = outdir.parent / "sdnn.net"
    x = _frames()
    data = tmp_path / "frames.pt"
    torch.save({"inputs": x, "labels": torch.zeros(len(x), dtype=torch.long)}, data)
    saved = {}
    for name, args in (
        ("netx", [str(source)]),
        ("export", [str(outdir)]),
        ("float", [str(source), "--mode", "float"]),
    ):
        proc = run_cli(
            "simulate",
            *args,
            "--data",
            f"tensor:{data}",
            "--json",
            "--save-outputs",
            str(tmp_path / f"{name}.pt"),
            check=True,
        )
        result = json.loads(proc.stdout)
        saved[name] = torch.load(tmp_path / f"{name}.pt", weights_only=True)
        assert result["mode"] == saved[name]["mode"] == ("float" if name == "float" else "fixed"), (
            name
        )
        if name == "netx":
            assert result["pipeline_latency"] == 3 and proc.stderr == ""
        if name == "float":
            assert "float reading" in proc.stderr and str(source) in proc.stderr
    assert torch.equal(saved["netx"]["outputs"], saved["export"]["outputs"])
    for s in range(len(x)):
        want = lava_pipeline(layers, x[s].numpy().astype(np.int64), 3 + STEPS)[-1]
        assert np.array_equal(saved["netx"]["outputs"][s].numpy(), want)
    assert not torch.equal(saved["float"]["outputs"].double(), saved["netx"]["outputs"].double())


# ---- against lava-dl's own netx loader, in Lava (the runtime's suite) ------------------------------------


def _slayer_sdnn(path: Path) -> Path:
    """A sigma-delta CNN built and exported by slayer itself, as lava-dl's PilotNet SDNN tutorial
    builds one (Input, strided Conv, Flatten, Dense, Output)."""
    from lava.lib.dl import slayer

    torch.manual_seed(0)
    params = {
        "threshold": 0.1,
        "tau_grad": 0.5,
        "scale_grad": 1,
        "requires_grad": False,
        "shared_param": True,
        "activation": F.relu,
    }
    sd = slayer.block.sigma_delta
    blocks = [
        sd.Input(params),
        sd.Conv(params, 2, 6, 3, padding=1, stride=2, weight_scale=2),
        sd.Flatten(),
        sd.Dense(params, 6 * 3 * 3, 12, weight_scale=2),
        sd.Output(params, 12, 3, weight_scale=2),
    ]
    with torch.no_grad():  # one forward pass fixes the blocks' shapes, as training does
        y = torch.zeros(1, *SHAPE, 2)
        for b in blocks:
            y = b(y)
    with h5py.File(path, "w") as f:
        for i, b in enumerate(blocks):
            b.export_hdf5(f.create_group(f"layer/{i}"))
    return path


def _netx_sigma_in_lava(path: Path, sample: np.ndarray) -> np.ndarray:
    """lava-dl's ``netx.hdf5.Network`` run in Lava as its test_pilotnet_sdnn runs it (the input
    into the encoder's ``a_in``): the Sigma output at every step, ``[T, outputs]``."""
    from lava.lib.dl.netx.hdf5 import Network
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source

    net = Network(net_config=str(path))
    steps = len(sample)
    source = Source(
        data=np.moveaxis(sample.transpose(0, 3, 2, 1), 0, -1).astype(np.int32)
    )  # (X, Y, C, T)
    sink = Sink(shape=net.out_layer.shape, buffer=steps)
    source.s_out.connect(net.in_layer.neuron.a_in)
    net.out_layer.out.connect(sink.a_in)
    try:
        net.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        out = sink.data.get()
    finally:
        net.stop()
    return np.moveaxis(out, -1, 0)


@pytest.mark.lava_runtime
@pytest.mark.slow
@pytest.mark.parametrize("written_by", ["slayer", "hand"])
def test_a_sigma_delta_network_runs_like_lava_dls_own_loader_in_lava(
    tmp_path: Path, written_by: str
) -> None:
    """Every Sigma output of every step, from the first, equals lava-dl's netx run in Lava; our
    own Lava run of the compiled program equals the fast simulator (0 mismatches)."""
    path = tmp_path / "sdnn.net"
    if written_by == "slayer":
        _slayer_sdnn(path)
    else:
        write_netx(path, _layers())
    outdir = export(path, "loihi2-sim", tmp_path / "chip")
    x = _frames(n=2)
    timeline = FixedSimulator(load_artifact(outdir).program).timelines(x)["output"].cumsum(0)
    for s in range(len(x)):
        lava_dl = _netx_sigma_in_lava(path, x[s].numpy())
        assert np.array_equal(timeline[:STEPS, s].numpy(), lava_dl), f"sample {s}"
    assert np.abs(timeline.numpy()).max() > 100  # not a silent network
    data = tmp_path / "frames.pt"
    torch.save({"inputs": x, "labels": torch.zeros(len(x), dtype=torch.long)}, data)
    proc = run_cli(
        "simulate",
        str(outdir),
        "--backend",
        "lava",
        "--data",
        f"tensor:{data}",
        "--json",
        check=True,
    )
    result = json.loads(proc.stdout)
    assert result["spike_mismatches"] == 0 and result["nonzero_values"] > 100
