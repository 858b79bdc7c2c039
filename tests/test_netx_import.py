"""lava-dl networks as MODEL: netx files written by slayer's own ``export_hdf5`` in the
test, compared spike for spike with lava-dl's own netx loader run in Lava and with
slayer's own forward pass."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from danet_deploy.compile import compile_graph
from danet_deploy.errors import UserError
from danet_deploy.artifacts import load_artifact
from danet_deploy.pipeline import export
from danet_deploy.profiles import load_profile
from danet_deploy.simulator.fixed import FixedSimulator

from .conftest import run_cli

from danet_deploy.lava_runtime import lava_dl_here

if lava_dl_here():
    from lava.lib.dl import slayer

pytestmark = pytest.mark.lava_runtime  # slayer builds and exports every network here

CUBA = {
    "threshold": 1.0,
    "current_decay": 0.25,
    "voltage_decay": 0.03,
    "tau_grad": 1,
    "scale_grad": 1,
    "requires_grad": False,
}
STEPS = 16


def _slayer_net(kind: str) -> tuple[list[torch.nn.Module], tuple[int, ...]]:
    """Blocks the way lava-dl's tutorials build them, and the input shape (C, H, W) or (N,)."""
    torch.manual_seed(0)
    cuba = slayer.block.cuba
    if kind == "dense":
        fast = {**CUBA, "current_decay": 1.0, "voltage_decay": 0.1}
        return [
            cuba.Dense(CUBA, 20, 16, weight_scale=2),
            cuba.Dense(fast, 16, 10, weight_scale=2),
        ], (20,)
    if kind == "conv":
        return [
            cuba.Conv(CUBA, 2, 8, 3, padding=1, stride=1, weight_scale=2),
            cuba.Conv(CUBA, 8, 8, 3, padding=1, stride=2, weight_scale=2),
            cuba.Flatten(),
            cuba.Dense(CUBA, 8 * 4 * 4, 10, weight_scale=2),
        ], (2, 8, 8)
    if kind == "pool":
        return [
            cuba.Conv(CUBA, 2, 8, 3, padding=1, stride=1, weight_scale=2),
            cuba.Pool(CUBA, 2, stride=2, weight_scale=2),
            cuba.Conv(CUBA, 8, 8, 3, padding=1, stride=2, weight_scale=2),
            cuba.Flatten(),
            cuba.Dense(CUBA, 8 * 2 * 2, 10, weight_scale=2),
        ], (2, 8, 8)
    if kind == "recurrent":  # slayer writes it as a netx 'dense_rec' layer
        return [
            cuba.Recurrent(CUBA, 20, 16, weight_scale=2),
            cuba.Dense(CUBA, 16, 10, weight_scale=2),
        ], (20,)
    if kind == "input":
        return [
            cuba.Input(CUBA, weight=1.5),
            cuba.Dense(CUBA, 20, 16, weight_scale=2),
            cuba.Dense(CUBA, 16, 10, weight_scale=2),
        ], (20,)
    raise ValueError(kind)


def _spikes(shape: tuple[int, ...], n: int = 4, seed: int = 1) -> torch.Tensor:
    """Random binary spike trains ``[N, T, *shape]``."""
    torch.manual_seed(seed)
    return (torch.rand(n, STEPS, *shape) < 0.3).float()


def _export_slayer(kind: str, path: Path) -> tuple[torch.Tensor, np.ndarray]:
    """Write the slayer network to ``path`` with slayer's exporter; return inputs and
    slayer's own output spikes ``[N, T, out]`` on them (evaluation mode)."""
    blocks, shape = _slayer_net(kind)
    x = _spikes(shape)
    y = x.permute(0, *range(2, x.ndim), 1)  # slayer: N C (H W) T
    with torch.no_grad():
        for b in blocks:
            b.eval()
            y = b(y)
    with h5py.File(path, "w") as f:
        layers = f.create_group("layer")
        for i, b in enumerate(blocks):
            b.export_hdf5(layers.create_group(str(i)))
    return x, y.permute(0, 2, 1).numpy()


def _program(path: Path, x: torch.Tensor, keep_input_neurons: bool = False):
    art = load_artifact(path, keep_input_neurons=keep_input_neurons)
    program, _ = compile_graph(art.graph, "loihi2-sim", load_profile("loihi2"), "auto", x)
    return program


def _output_spikes(program, x: torch.Tensor) -> np.ndarray:
    """The last spiking population's spikes ``[N, T, out]`` in the fast simulator."""
    last = [n for n, p in program.populations.items() if p.kind.name == "lif"][-1]
    return FixedSimulator(program).run(x, record=True)[last].transpose(0, 1).numpy()


def _netx_in_lava(path: Path, x: torch.Tensor, hops: int) -> np.ndarray:
    """lava-dl's own ``netx.hdf5.Network`` in Lava (fixed point): output spikes ``[N, T, out]``,
    all samples in one run, each layer reset by netx at the start of each sample's window."""
    from lava.lib.dl.netx.hdf5 import Network
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source

    n, window = x.shape[0], STEPS + hops
    data = np.zeros((n, window, *x.shape[2:]), dtype=np.int32)
    data[:, :STEPS] = x.numpy()
    data = data.transpose(0, 1, *range(data.ndim - 1, 1, -1))  # netx: (X, Y, C)
    stream = np.moveaxis(data.reshape(n * window, *data.shape[2:]), 0, -1)
    net = Network(net_config=str(path), reset_interval=window, input_shape=tuple(x.shape[2:][::-1]))
    src, sink = Source(data=stream), Sink(shape=net.out.shape, buffer=n * window)
    src.s_out.connect(net.inp)
    net.out.connect(sink.a_in)
    try:
        net.run(
            condition=RunSteps(num_steps=n * window), run_cfg=Loihi2SimCfg(select_tag="fixed_pt")
        )
        out = sink.data.get()
    finally:
        net.stop()
    per_sample = np.moveaxis(out, -1, 0).reshape(n, window, *net.out.shape)
    return per_sample[:, hops : hops + STEPS]  # each synapse hop adds one step in Lava


@pytest.mark.parametrize("kind,hops", [("dense", 2), ("conv", 3), ("recurrent", 2)])
def test_netx_file_spikes_like_lava_dls_own_loader_in_lava(
    tmp_path: Path, kind: str, hops: int
) -> None:
    path = tmp_path / f"{kind}.net"
    x, _ = _export_slayer(kind, path)
    fast = _output_spikes(_program(path, x), x)
    assert fast.sum() > 20  # the comparison is not between two silent networks
    if (
        kind == "recurrent"
    ):  # a sample at a time: netx's reset leaves the last step's spikes in its synapse
        lava = np.concatenate([_netx_in_lava(path, x[s : s + 1], hops) for s in range(len(x))])
    else:
        lava = _netx_in_lava(path, x, hops)
    for s in range(len(x)):
        assert np.array_equal(fast[s], lava[s]), f"sample {s}"


@pytest.mark.parametrize(
    "kind,keep", [("dense", False), ("conv", False), ("pool", False), ("input", True)]
)
def test_netx_file_spikes_like_slayers_own_forward(tmp_path: Path, kind: str, keep: bool) -> None:
    """slayer's evaluation forward is Loihi's fixed point, one step later per block."""
    path = tmp_path / f"{kind}.net"
    x, theirs = _export_slayer(kind, path)
    ours = _output_spikes(_program(path, x, keep_input_neurons=keep), x)
    blocks = sum(1 for b in _slayer_net(kind)[0] if getattr(b, "neuron", None) is not None)
    assert ours.sum() > 20
    assert np.array_equal(theirs[:, blocks:], ours[:, : STEPS - blocks])


def test_lava_dls_loader_refuses_pool_layers_which_we_run(tmp_path: Path) -> None:
    """Why pool networks are checked against slayer and our own Lava graph, not netx."""
    from lava.lib.dl.netx.hdf5 import Network

    _export_slayer("pool", tmp_path / "pool.net")
    with pytest.raises(NotImplementedError):
        Network(net_config=str(tmp_path / "pool.net"), input_shape=(8, 8, 2))


@pytest.mark.slow
def test_netx_pool_network_through_every_command(tmp_path: Path) -> None:
    path = tmp_path / "pool.net"
    x, _ = _export_slayer("pool", path)
    torch.save(
        {"inputs": _spikes((2, 8, 8), n=12, seed=5), "labels": torch.arange(12) % 10},
        tmp_path / "spk.pt",
    )
    data = f"tensor:{tmp_path / 'spk.pt'}"
    run_cli("export", str(path), "--target", "loihi2-sim", "-o", str(tmp_path / "chip"), check=True)
    manifest = json.loads((tmp_path / "chip" / "manifest.json").read_text())
    assert manifest["source"]["kind"] == "netx"
    lava = json.loads(
        run_cli(
            "simulate",
            str(tmp_path / "chip"),
            "--backend",
            "lava",
            "--data",
            data,
            "-n",
            "6",
            "--json",
            check=True,
        ).stdout
    )
    assert lava["spike_mismatches"] == 0 and lava["nonzero_values"] > 1000
    rep = json.loads(
        run_cli("report", str(path), "--data", data, "--format", "json", check=True).stdout
    )
    assert [r["name"] for r in rep["layers"]][:4] == [
        "0.neuron",
        "1.neuron",
        "2.neuron",
        "4.neuron",
    ]


def test_netx_weights_are_compiled_exactly(tmp_path: Path) -> None:
    """The chip gets slayer's integers and CUBA constants unchanged."""
    path = tmp_path / "pool.net"
    _export_slayer("pool", path)
    program = _program(path, _spikes((2, 8, 8)))
    with h5py.File(path) as f:
        for index, pop in (("0", "0.neuron"), ("2", "2.neuron"), ("4", "4.neuron")):
            layer = f["layer"][index]
            fx = program.fixed[pop]
            w = program.populations[pop].synapse_groups[0].weight_q
            assert np.array_equal(
                w.reshape(layer["weight"].shape), layer["weight"][()].astype(np.int32)
            )
            assert (fx.du + 1, fx.dv, fx.vth) == tuple(
                int(layer["neuron"][k][()]) for k in ("iDecay", "vDecay", "vThMant")
            )
        pool = (
            program.populations["1.neuron"].synapse_groups[0].weight_q
        )  # one kernel per channel (depthwise)
        assert set(np.unique(pool)) == {0, int(f["layer"]["1"]["weight"][()].flat[0])}


def test_netx_to_nir_and_back_compiles_to_the_same_program(tmp_path: Path) -> None:
    path = tmp_path / "conv.net"
    x, _ = _export_slayer("conv", path)
    out = export(path, "nir", tmp_path / "graph")
    direct, via_nir = _program(path, x), _program(out / "graph.nir", x)
    for name, pop in direct.populations.items():
        assert [t.weight_q.tolist() for t in pop.synapse_groups] == [
            t.weight_q.tolist() for t in via_nir.populations[name].synapse_groups
        ]
        assert (
            direct.fixed[name].du == via_nir.fixed[name].du
            and direct.fixed[name].vth == via_nir.fixed[name].vth
        )
    assert np.array_equal(_output_spikes(direct, x), _output_spikes(via_nir, x))


def _edit(path: Path, layer: str, key: str, value) -> None:
    with h5py.File(path, "a") as f:
        g = f["layer"][layer]
        if key in g:
            del g[key]
        g.create_dataset(key, data=value)


@pytest.mark.parametrize(
    "layer,key,value,message",
    [
        (
            "1",
            "type",
            np.array([b"concat"], dtype="S10"),
            "layer 1 (concat): this layer type is not supported",
        ),
        ("0", "neuron/type", b"RF_IZ", "layer 0 (dense): neuron type 'RF_IZ' (resonate-and-fire"),
        ("0", "neuron/gradedSpike", True, "layer 0 (dense): graded spikes"),
        (
            "1",
            "neuron/iDecay",
            4097,
            "layer 1 (dense): iDecay=4097: must be a whole number 0..4096",
        ),
        ("0", "neuron/vDecay", -1, "layer 0 (dense): vDecay=-1: must be a whole number 0..4096"),
        (
            "1",
            "delay",
            np.arange(10.0),
            "layer 1 (dense): per-neuron synaptic delays are not supported",
        ),
    ],
)
def test_unsupported_netx_layers_are_refused_naming_layer_and_type(
    tmp_path: Path, layer, key, value, message
) -> None:
    path = tmp_path / "dense.net"
    _export_slayer("dense", path)
    _edit(path, layer, key, value)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_artifact(path)
    proc = run_cli("export", str(path), "--target", "loihi2-sim", "-o", str(tmp_path / "chip"))
    assert proc.returncode == 1 and message in proc.stderr and not (tmp_path / "chip").exists()


def test_a_synaptic_delay_delays_like_lava_dls_own_loader(tmp_path: Path) -> None:
    """A dense layer with netx's delay (2 steps, DelayDense there): one sample at a time, as netx's
    reset offsets do not count delays."""
    path = tmp_path / "dense.net"
    x, _ = _export_slayer("dense", path)
    _edit(path, "1", "delay", 2.0)
    fast = _output_spikes(_program(path, x), x)
    assert fast.sum() > 20
    for s in range(len(x)):
        assert np.array_equal(fast[s], _netx_in_lava(path, x[s : s + 1], 2)[0]), f"sample {s}"


@pytest.mark.parametrize("i_decay,v_decay", [(0, 128), (1024, 0), (0, 0)])
def test_states_that_never_decay_spike_like_lava_dls_own_loader(
    tmp_path: Path, i_decay: int, v_decay: int
) -> None:
    """iDecay 0 (netx's own default current) and vDecay 0 with a decaying current, in the
    first layer of a slayer-written file, against lava-dl's loader in Lava."""
    path = tmp_path / "dense.net"
    x, _ = _export_slayer("dense", path)
    _edit(path, "0", "neuron/iDecay", i_decay)
    _edit(path, "0", "neuron/vDecay", v_decay)
    fast = _output_spikes(_program(path, x), x)
    lava = _netx_in_lava(path, x, 2)
    assert fast.sum() > 20
    for s in range(len(x)):
        assert np.array_equal(fast[s], lava[s]), f"sample {s}"


def test_a_strided_first_conv_needs_an_input_layer(tmp_path: Path) -> None:
    path = tmp_path / "conv.net"
    _export_slayer("conv", path)
    _edit(path, "0", "stride", np.array([2, 2]))
    with pytest.raises(UserError, match="no input layer"):
        load_artifact(path)
    with h5py.File(path, "a") as f:  # renumber the layers behind an explicit input layer
        layers = f["layer"]
        for i in reversed(range(len(layers))):
            layers.move(str(i), str(i + 1))
        g = layers.create_group("0")
        g.create_dataset("type", data=np.array([b"input"], dtype="S10"))
        g.create_dataset("shape", data=np.array([2, 16, 16]))
    assert load_artifact(path).graph.shapes["input"] == (2, 16, 16)


def test_input_neurons_are_skipped_by_default_and_kept_on_request(tmp_path: Path) -> None:
    path = tmp_path / "input.net"
    _export_slayer("input", path)
    x = _spikes((20,))
    skipped, kept = _program(path, x), _program(path, x, keep_input_neurons=True)
    assert "0.neuron" not in skipped.populations and "0.neuron" in kept.populations
    assert kept.populations["1.neuron"].synapse_groups[0].source == "0.neuron"


def test_an_average_layer_is_a_readout_of_group_sums(tmp_path: Path) -> None:
    """slayer's Average block (mean over contiguous groups) cannot export itself; a file
    that has one (written here as netx lays it out) reads out each group's spike sum."""
    path = tmp_path / "dense.net"
    x, _ = _export_slayer("dense", path)
    with h5py.File(path, "a") as f:
        g = f["layer"].create_group("2")
        g.create_dataset("type", data=np.array([b"average"], dtype="S10"))
        g.create_dataset("shape", data=np.array([5, 1, 1]))
    program = _program(path, x)
    sim = FixedSimulator(program)
    out = sim.run(x, record=True)
    spikes = out["1.neuron"].sum(0).reshape(len(x), 5, 2).sum(-1)
    assert torch.equal(sim.scores_from(out, STEPS), spikes.to(torch.int64)) and spikes.sum() > 0


@pytest.mark.slow
def test_simulate_saves_each_samples_output_spike_counts(tmp_path: Path) -> None:
    path = tmp_path / "conv.net"
    x, _ = _export_slayer("conv", path)
    torch.save({"inputs": x, "labels": torch.tensor([1, 2, 3, 4])}, tmp_path / "spk.pt")
    data, saved = f"tensor:{tmp_path / 'spk.pt'}", tmp_path / "counts.pt"
    run_cli("export", str(path), "--target", "loihi2-sim", "-o", str(tmp_path / "chip"), check=True)
    for _ in range(2):  # the second run replaces the file it wrote
        run_cli(
            "simulate",
            str(tmp_path / "chip"),
            "--data",
            data,
            "--save-outputs",
            str(saved),
            check=True,
        )
    blob = torch.load(saved)
    counts = _output_spikes(_program(path, x), x).sum(1)  # spikes of the last layer over all steps
    assert (
        torch.equal(blob["outputs"], torch.as_tensor(counts, dtype=torch.int64))
        and counts.sum() > 0
    )
    assert (
        blob["labels"].tolist() == [1, 2, 3, 4]
        and blob["mode"] == "fixed"
        and blob["timesteps"] == STEPS
    )
    (tmp_path / "notes.pt").write_text("mine")
    proc = run_cli(
        "simulate",
        str(tmp_path / "chip"),
        "--data",
        data,
        "--save-outputs",
        str(tmp_path / "notes.pt"),
    )
    assert proc.returncode == 1 and "not written by danet-deploy" in proc.stderr
    proc = run_cli(
        "simulate",
        str(tmp_path / "chip"),
        "--data",
        data,
        "--backend",
        "lava",
        "--save-outputs",
        str(saved),
    )
    assert proc.returncode == 1 and "--backend fast" in proc.stderr


def _as_older_slayer_writes_it(path: Path) -> None:
    """Conv weights with slayer's time axis, ``[out, in, kh, kw, 1]``, and neurons typed
    ``LOIHI``: how lava-dl's own test network ``tiny.net`` is written."""
    with h5py.File(path, "a") as f:
        for g in f["layer"].values():
            if "weight" in g and g["weight"].ndim == 4:
                w = g["weight"][()]
                del g["weight"]
                g.create_dataset("weight", data=w[..., None])
            if "neuron" in g:
                del g["neuron/type"]
                g["neuron"].create_dataset("type", data=b"LOIHI")


def test_conv_weights_with_a_time_axis_and_loihi_neurons_spike_like_lava_dls_loader(
    tmp_path: Path,
) -> None:
    path = tmp_path / "conv.net"
    x, _ = _export_slayer("conv", path)
    _as_older_slayer_writes_it(path)
    with h5py.File(path) as f:
        assert f["layer/0/weight"].ndim == 5
    fast = _output_spikes(_program(path, x), x)
    assert fast.sum() > 20
    assert np.array_equal(fast, _netx_in_lava(path, x, 3))


def _never_decaying(path: Path) -> None:
    """The dense network with voltages that never decay (``vDecay = 0``, no current memory):
    IF neurons in the hidden layer; the last layer with Loihi's largest threshold, as
    PilotNet LIF's output layer, which never fires and is read by its voltage."""
    for layer in ("0", "1"):
        _edit(path, layer, "neuron/iDecay", 4096)
        _edit(path, layer, "neuron/vDecay", 0)
    _edit(path, "1", "neuron/vThMant", 2**17 - 1)


def _last_voltage_in_lava(path: Path, sample: torch.Tensor, hops: int) -> np.ndarray:
    """lava-dl's own netx network in Lava on one sample (no reset): the last layer's ``v``
    once every step of the sample has reached it."""
    from lava.lib.dl.netx.hdf5 import Network
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.source import RingBuffer as Source

    data = np.zeros((STEPS + hops, *sample.shape[1:]), dtype=np.int32)
    data[:STEPS] = sample.numpy()
    net = Network(net_config=str(path), input_shape=tuple(sample.shape[1:][::-1]))
    src = Source(data=np.moveaxis(data, 0, -1))
    src.s_out.connect(net.inp)
    try:
        net.run(
            condition=RunSteps(num_steps=STEPS + hops - 1),
            run_cfg=Loihi2SimCfg(select_tag="fixed_pt"),
        )
        return net.layers[-1].neuron.v.get()
    finally:
        net.stop()


def test_a_voltage_that_never_decays_integrates_like_lava_dls_loader(tmp_path: Path) -> None:
    import nir

    path = tmp_path / "dense.net"
    x, _ = _export_slayer("dense", path)
    _never_decaying(path)
    graph = load_artifact(path).graph
    assert isinstance(graph.nodes["0.neuron"], nir.IF) and "1.neuron" not in graph.nodes
    assert graph.metadata["output_read_by"] == "voltage"
    sim = FixedSimulator(_program(path, x))
    hidden = sim.run(x, record=True)["0.neuron"]
    assert 0 < float(hidden.sum()) < hidden.numel()  # the IF layer fires, not always
    voltage = sim.voltage(sim.scores(x))
    for s in range(2):
        assert np.array_equal(voltage[s].numpy(), _last_voltage_in_lava(path, x[s], 2)), (
            f"sample {s}"
        )


def test_a_non_decaying_layer_adds_its_bias_every_step(tmp_path: Path) -> None:
    """IF with a bias, against the integers written out by hand: ``v <- v + W s + bias``."""
    path = tmp_path / "dense.net"
    x, _ = _export_slayer("dense", path)
    _never_decaying(path)
    bias = np.arange(16) % 5 - 2
    _edit(path, "0", "bias", bias.astype(np.float32))
    with h5py.File(path) as f:
        w, vth = f["layer/0/weight"][()].astype(np.int64), int(f["layer/0/neuron/vThMant"][()])
    v, spikes = np.zeros((len(x), 16), np.int64), []
    for t in range(STEPS):
        v = v + x[:, t].numpy().astype(np.int64) @ w.T + bias
        fired = v > vth
        spikes.append(fired)
        v[fired] = 0
    ours = FixedSimulator(_program(path, x)).run(x, record=True)["0.neuron"].transpose(0, 1).numpy()
    assert np.array_equal(ours, np.stack(spikes, 1)) and ours.sum() > 0


@pytest.mark.slow
def test_simulate_saves_the_voltage_of_an_output_read_by_voltage(tmp_path: Path) -> None:
    path = tmp_path / "dense.net"
    x, _ = _export_slayer("dense", path)
    _never_decaying(path)
    torch.save({"inputs": x, "labels": torch.zeros(len(x), dtype=torch.long)}, tmp_path / "spk.pt")
    run_cli("export", str(path), "--target", "loihi2-sim", "-o", str(tmp_path / "chip"), check=True)
    run_cli(
        "simulate",
        str(tmp_path / "chip"),
        "--data",
        f"tensor:{tmp_path / 'spk.pt'}",
        "--save-outputs",
        str(tmp_path / "out.pt"),
        check=True,
    )
    sim = FixedSimulator(_program(path, x))
    assert torch.equal(torch.load(tmp_path / "out.pt")["voltage"], sim.voltage(sim.scores(x)))


def test_a_recurrent_layer_feeds_its_own_spikes_back_one_step_later(tmp_path: Path) -> None:
    path = tmp_path / "recurrent.net"
    x, _ = _export_slayer("recurrent", path)
    with h5py.File(path) as f:
        assert f["layer/0/type"][0] == b"dense_rec" and f["layer/0/weight_rec"].shape == (16, 16)
    graph = load_artifact(path).graph
    assert ("0.recurrent", "0.neuron") in graph.recurrent or (
        "0.neuron",
        "0.recurrent",
    ) in graph.recurrent
    program = _program(path, x)
    assert any(t.map.recurrent for t in program.populations["0.neuron"].synapse_groups)
    torch.save({"inputs": x, "labels": torch.zeros(len(x), dtype=torch.long)}, tmp_path / "spk.pt")
    run_cli("export", str(path), "--target", "loihi2-sim", "-o", str(tmp_path / "chip"), check=True)
    lava = json.loads(
        run_cli(
            "simulate",
            str(tmp_path / "chip"),
            "--backend",
            "lava",
            "--data",
            f"tensor:{tmp_path / 'spk.pt'}",
            "--json",
            check=True,
        ).stdout
    )
    assert (
        lava["spike_mismatches"] == 0 and lava["nonzero_values"] > 100
    )  # our Lava graph, recurrent synapses
    with h5py.File(path, "a") as f:  # without its recurrent synapses the layer spikes differently
        f["layer/0/type"][0] = b"dense"
    assert not np.array_equal(_output_spikes(program, x), _output_spikes(_program(path, x), x))
