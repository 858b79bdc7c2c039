"""Compiling to Loihi fixed point and running in Lava: bit-exact parity, delays, relays, netx."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nir
import numpy as np
import pytest
import torch

from danet_deploy.compile import compile_graph
from danet_deploy.ir.program import read_program, write_program
from danet_deploy.converters.nir_import import read_nir
from danet_deploy.errors import UserError
from danet_deploy.profiles import load_profile
from danet_deploy.simulator.fixed import FixedSimulator
from danet_deploy.simulator import lava as lava_backend
from danet_deploy.simulator.lava import SHM, SHM_TAG_ENV, group_members, run_lava, shm_prefix

from .conftest import run_cli


def _tiny_residual(path: Path, beta: float = 0.5) -> None:
    """input -> A -> lif1 -> B -> lif2, a skip input -> S -> lif2 (one hop shorter), and a
    three-stream sum (lif1, lif2, input) into lif3, read out by pooling."""
    rng = np.random.default_rng(7)
    dt = 1e-3
    tau = dt / (1 - beta)

    def conv(cin, cout, k, pad):
        return nir.Conv2d(
            input_shape=None,
            weight=rng.normal(0, 0.6, (cout, cin, k, k)),
            stride=1,
            padding=pad,
            dilation=1,
            groups=1,
            bias=rng.normal(0, 0.05, cout),
        )

    def lif(c):
        s = (c, 6, 6)
        return nir.LIF(
            tau=np.full(s, tau), r=np.full(s, tau / dt), v_leak=np.zeros(s), v_threshold=np.ones(s)
        )

    nodes = {
        "input": nir.Input(input_type={"input": np.array([2, 6, 6])}),
        "A": conv(2, 3, 3, 1),
        "lif1": lif(3),
        "B": conv(3, 3, 3, 1),
        "S": conv(2, 3, 1, 0),
        "lif2": lif(3),
        "C": conv(3, 4, 1, 0),
        "D": conv(3, 4, 3, 1),
        "E": conv(2, 4, 1, 0),
        "lif3": lif(4),
        "pool": nir.AvgPool2d(np.array([6, 6]), np.array([6, 6]), np.array([0, 0])),
        "fc": nir.Conv2d(
            input_shape=(1, 1),
            weight=rng.normal(0, 1, (3, 4, 1, 1)),
            stride=1,
            padding=0,
            dilation=1,
            groups=1,
            bias=np.zeros(3),
        ),
        "output": nir.Output(output_type={"output": np.array([3, 1, 1])}),
    }
    edges = [
        ("input", "A"),
        ("A", "lif1"),
        ("lif1", "B"),
        ("B", "lif2"),
        ("input", "S"),
        ("S", "lif2"),
        ("lif1", "C"),
        ("lif2", "D"),
        ("input", "E"),
        ("C", "lif3"),
        ("D", "lif3"),
        ("E", "lif3"),
        ("lif3", "pool"),
        ("pool", "fc"),
        ("fc", "output"),
    ]
    nir.write(path, nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": dt, "timesteps": 5}))


# beta 0.5 decays by a power of two (float32 in the fast simulator); 0.9 does not (float64)
@pytest.mark.parametrize("lowering,beta", [("expand", 0.5), ("relay", 0.5), ("expand", 0.9)])
def test_tiny_residual_lava_equals_fixed_point_reference(
    tmp_path: Path, lowering: str, beta: float
) -> None:
    _tiny_residual(tmp_path / "tiny.nir", beta)
    graph = read_nir(tmp_path / "tiny.nir")
    x = torch.rand(3, 5, 2, 6, 6) * 2
    program, _ = compile_graph(graph, "loihi2-sim", load_profile("loihi2"), lowering, x)
    pops = program.populations
    assert pops["lif2"].latency == 2 and {t.delay for t in pops["lif2"].synapse_groups} == {
        0,
        1,
    }  # balanced skip
    assert (lowering == "relay") == ("lif3.relay" in pops)
    write_program(tmp_path / "program.h5", program)
    program = read_program(tmp_path / "program.h5")
    fast = FixedSimulator(program)
    expected = fast.run(x, record=True)
    got = run_lava(tmp_path / "program.h5", program, fast.encode(x).numpy())
    assert set(got) == {n for n, p in pops.items() if p.kind.name != "input"}
    for name, values in got.items():
        assert torch.equal(torch.as_tensor(values), expected[name]), name
    assert all(int(expected[n].sum()) > 0 for n in ("lif1", "lif2", "lif3")), "no spikes: vacuous"


def _delayed_branches(path: Path) -> None:
    """input -> W1 -> Delay(3) -> if, and input -> W2 -> if (no delay): the IF neuron sums its
    input of this step and of three steps before; integer weights and threshold (exact on the chip)."""
    n = 4
    nodes = {
        "input": nir.Input(input_type={"input": np.array([n])}),
        "w1": nir.Linear(weight=np.eye(n) * 2.0),
        "delay": nir.Delay(delay=np.full(n, 3.0)),
        "w2": nir.Linear(weight=np.eye(n)),
        "if": nir.IF(r=np.ones(n), v_threshold=np.full(n, 2.0), v_reset=np.zeros(n)),
        "w3": nir.Linear(weight=np.ones((2, n))),
        "output": nir.Output(output_type={"output": np.array([2])}),
    }
    edges = [
        ("input", "w1"),
        ("w1", "delay"),
        ("delay", "if"),
        ("input", "w2"),
        ("w2", "if"),
        ("if", "w3"),
        ("w3", "output"),
    ]
    nir.write(
        path,
        nir.NIRGraph(
            nodes=nodes, edges=edges, metadata={"dt": 1.0, "reset": "zero", "timesteps": 8}
        ),
    )


def test_a_delay_node_delays_its_branch_within_each_sample(tmp_path: Path) -> None:
    """The program computes the graph: a Delay node's branch arrives three steps later than the
    other, as the float interpreter has it (before, balancing absorbed the delay into the
    latency); the first three steps of a sample get nothing from it, nor from the sample before."""
    from danet_deploy.ir.interpreter import ReferenceSimulator

    _delayed_branches(tmp_path / "d.nir")
    graph = read_nir(tmp_path / "d.nir")
    x = (torch.rand(6, 8, 4, generator=torch.Generator().manual_seed(3)) < 0.5).float()
    program, _ = compile_graph(graph, "loihi2-sim", load_profile("loihi2"), "expand", x)
    delayed = next(t for t in program.populations["if"].synapse_groups if t.map.delay)
    assert (delayed.lag, delayed.delay, program.populations["if"].latency) == (3, 3, 1)
    fixed = FixedSimulator(program).run(x, record=True)["if"]
    reference = ReferenceSimulator(graph).run(x, record=True)["if"]
    assert torch.equal(fixed, reference.to(fixed.dtype)) and 0 < int(fixed.sum()) < fixed.numel()
    x_late = x.clone()
    x_late[:, :5] = (
        0  # only a sample's last 3 steps: through the delay, they reach none of its steps
    )
    assert torch.equal(
        FixedSimulator(program).run(x_late, record=True)["if"],
        ReferenceSimulator(graph).run(x_late, record=True)["if"].to(fixed.dtype),
    )


def test_a_program_written_before_lags_were_stored_reads_as_it_ran(tmp_path: Path) -> None:
    """Then a forward Delay node was absorbed into the latency (no lag), and a recurrent term's
    Delay nodes were its synaptic delay beyond the one step of the loop."""
    import h5py

    n = 3
    nodes = {
        "input": nir.Input(input_type={"input": np.array([n])}),
        "w": nir.Linear(weight=np.eye(n)),
        "d": nir.Delay(delay=np.full(n, 2.0)),
        "if": nir.IF(r=np.ones(n), v_threshold=np.ones(n), v_reset=np.zeros(n)),
        "loop": nir.Linear(weight=np.eye(n) * 0.5),
        "back": nir.Delay(delay=np.full(n, 1.0)),
        "output": nir.Output(output_type={"output": np.array([n])}),
    }
    edges = [
        ("input", "w"),
        ("w", "d"),
        ("d", "if"),
        ("if", "loop"),
        ("loop", "back"),
        ("back", "if"),
        ("if", "output"),
    ]
    nir.write(
        tmp_path / "g.nir",
        nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": 1.0, "reset": "zero"}),
    )
    program, _ = compile_graph(
        read_nir(tmp_path / "g.nir"), "loihi2-sim", load_profile("loihi2"), "expand", None
    )
    write_program(tmp_path / "program.h5", program)
    lags = {
        t.map.recurrent: t.lag
        for t in read_program(tmp_path / "program.h5").populations["if"].synapse_groups
    }
    assert lags == {False: 2, True: 2}  # the Delay nodes; one more step on the loop
    with h5py.File(tmp_path / "program.h5", "a") as f:
        f.visititems(
            lambda name, obj: (
                obj.attrs.__delitem__("map_delay") if "map_delay" in obj.attrs else None
            )
        )
    older = {
        t.map.recurrent: t.lag
        for t in read_program(tmp_path / "program.h5").populations["if"].synapse_groups
    }
    assert older == {False: 0, True: 2}


@pytest.mark.slow
def test_a_delayed_branch_runs_in_lava_as_the_fast_simulator_computes_it(tmp_path: Path) -> None:
    """Samples back to back in one Lava run: the mask in front of the delay line keeps a sample's
    last steps from reaching the next sample."""
    _delayed_branches(tmp_path / "d.nir")
    graph = read_nir(tmp_path / "d.nir")
    x = (torch.rand(6, 8, 4, generator=torch.Generator().manual_seed(3)) < 0.5).float()
    program, _ = compile_graph(graph, "loihi2-sim", load_profile("loihi2"), "expand", x)
    write_program(tmp_path / "program.h5", program)
    program = read_program(tmp_path / "program.h5")
    assert (
        next(t for t in program.populations["if"].synapse_groups if t.delay).lag == 3
    )  # kept in program.h5
    fast = FixedSimulator(program)
    got = run_lava(tmp_path / "program.h5", program, fast.encode(x).numpy())
    assert torch.equal(torch.as_tensor(got["if"]), fast.run(x, record=True)["if"])


@pytest.mark.lava_runtime  # builds Lava processes in this process
@pytest.mark.parametrize("graded", [False, True], ids=["spikes", "graded"])
def test_delay_line_before_a_synapse_equals_lavas_delay_dense(tmp_path: Path, graded: bool) -> None:
    """DelayLine(d) -> Dense(W) is Lava's own DelayDense(W, delays=d), value for value, step for step."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import DelayDense, Dense
    from lava.proc.io.source import RingBuffer

    from danet_deploy.lavaext.delay import DelayLine
    from danet_deploy.lavaext.filesink import FileSink

    rng = np.random.default_rng(3)
    n_in, n_out, steps = 6, 4, 24
    w = rng.integers(-60, 60, (n_out, n_in)) * 2  # even weights: what the compiler emits
    data = (
        rng.integers(-500, 500, (n_in, steps)) if graded else rng.random((n_in, steps)) < 0.4
    ).astype(np.int32)
    bits = 24 if graded else 0
    src = RingBuffer(data=data)
    for d in (1, 2, 5):
        ref = DelayDense(weights=w, delays=d, num_message_bits=bits)
        line, dense = DelayLine(shape=(n_in,), delay=d), Dense(weights=w, num_message_bits=bits)
        src.s_out.connect(ref.s_in)
        src.s_out.connect(line.s_in)
        line.s_out.connect(dense.s_in)
        for name, syn in (("ref", ref), ("line", dense)):
            sink = FileSink(
                records=[((n_out,), tmp_path / f"{name}{d}.npy", "int32")], num_steps=steps
            )
            syn.a_out.connect(sink.port(0))
    try:
        src.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
    finally:
        src.stop()
    for d in (1, 2, 5):
        ref, got = np.load(tmp_path / f"ref{d}.npy"), np.load(tmp_path / f"line{d}.npy")
        assert np.array_equal(ref, got), d
        assert (
            not ref[: d + 1].any() and ref[d + 1 :].any()
        )  # nothing before step 1 + d + 1, then values


def _independent_lif(a: np.ndarray, dv: int, vth: int, bias: np.ndarray) -> np.ndarray:
    """Lava's fixed-point LIF (du = 4095) written from docs/compile.md §3, in numpy."""
    v, out = np.zeros(a.shape[1:], dtype=np.int64), []
    for step in a:
        u = step.astype(np.int64) << 6
        u = np.where(u > 2**23, u - 2**24, np.where(u <= -(2**23), u + 2**24, u))
        p = v * (4096 - dv)
        v = np.clip(np.sign(p) * (np.abs(p) >> 12) + u + (bias << 6), -(2**23 - 1), 2**23 - 1)
        s = v > (vth << 6)
        v = np.where(s, 0, v)
        out.append(s.astype(np.int64))
    return np.stack(out)


@pytest.mark.parametrize("beta", [0.5, 0.9])
def test_fixed_point_neurons_match_an_independent_model(tmp_path: Path, beta: float) -> None:
    _tiny_residual(tmp_path / "tiny.nir", beta)
    graph = read_nir(tmp_path / "tiny.nir")
    x = torch.rand(4, 5, 2, 6, 6) * 2
    program, _ = compile_graph(graph, "loihi2-sim", load_profile("loihi2"), "expand", x)
    fast = FixedSimulator(program)
    rec = fast.run(x, record=True)
    xi = fast.encode(x)
    term = program.populations["lif1"].synapse_groups[0]
    a = (
        torch.nn.functional.conv2d(
            xi.flatten(0, 1).double(),
            torch.tensor(term.weight_q).double(),
            padding=term.map.padding,
        )
        .round()
        .long()
        .unflatten(0, (4, 5))
        .transpose(0, 1)
    )
    f = program.fixed["lif1"]
    assert (f.dv == 2048) == (beta == 0.5)
    expected = _independent_lif(a.numpy(), f.dv, f.vth, f.bias_mant)
    assert np.array_equal(rec["lif1"].numpy(), expected) and expected.sum() > 0
    # the du = 4095 fast path is the general step-by-step equation, specialised: the same spikes
    currents = a.reshape(-1, *a.shape[2:]).float()
    fast_path = fast._neuron_steps("lif1", currents.clone(), 5, 4)
    assert torch.equal(fast_path, fast._stepwise("lif1", currents.clone(), 5, 4))


def test_expand_violation_names_layer_limit_and_remedy_and_auto_picks_relay(tmp_path: Path) -> None:
    """A DA stage's sums grow with depth under expand, not under relay: a synaptic-memory
    limit between the two makes expand fail with a one-line error and auto pick relay."""
    from danet_deploy.compile import lower, map_to_cores
    from danet_deploy.converters.nir_export import to_nir
    from danet_deploy.models import build

    nir.write(
        tmp_path / "da.nir",
        to_nir(build("resnet20", "da", 10, timesteps=2, input_shape=(3, 8, 8)).eval()),
    )
    graph = read_nir(tmp_path / "da.nir")
    loihi2 = load_profile("loihi2")
    fan = {
        mode: max(
            m["max_fan_in"] for m in map_to_cores(lower(graph, mode, False), loihi2, False).values()
        )
        for mode in ("expand", "relay")
    }
    assert fan["relay"] < fan["expand"]
    limit = 8 * (fan["relay"] + fan["expand"]) // 2  # bits: 8-bit weights
    small = tmp_path / "small.toml"
    small.write_text(
        loihi2.path.read_text().replace(
            "synaptic_memory_per_core = { value = 1048576",
            f"synaptic_memory_per_core = {{ value = {limit}",
        )
    )
    x = torch.rand(2, 2, 3, 8, 8)
    with pytest.raises(
        UserError,
        match=rf"layer '.+': one neuron compartment needs \d+ bits of synapses, more "
        rf"than loihi2's {limit} per core; use --lowering relay",
    ) as info:
        compile_graph(graph, "loihi2-sim", load_profile(small), "expand", x)
    assert "\n" not in str(info.value)
    program, costs = compile_graph(graph, "loihi2-sim", load_profile(small), "auto", x)
    assert (
        program.lowered.lowering == "relay"
        and costs["expand"]["violations"]
        and not costs["relay"]["violations"]
    )
    assert costs["relay"]["synapses"] < costs["expand"]["synapses"]


def test_large_fan_in_is_split_into_compartments() -> None:
    from danet_deploy.compile import lower, map_to_cores
    from danet_deploy.converters.nir_export import to_nir
    from danet_deploy.converters.nir_import import from_nir
    from danet_deploy.models import build

    graph = from_nir(
        to_nir(build("resnet50", "plain", 10, timesteps=1, input_shape=(3, 32, 32)).eval())
    )
    mapping = map_to_cores(lower(graph, "expand", False), load_profile("loihi2"), False)
    deep = mapping["stages.3.0.sn2"]  # 3x3 conv over 512 channels: 4608 inputs > 4096 axons
    assert deep["max_fan_in"] == 4608 and deep["compartments_per_neuron"] == 2


def test_loihi1_refuses_relays(tmp_path: Path) -> None:
    _tiny_residual(tmp_path / "tiny.nir")
    with pytest.raises(UserError, match="loihi1 has no graded spikes"):
        compile_graph(
            read_nir(tmp_path / "tiny.nir"), "loihi1", load_profile("loihi1"), "relay", None
        )


LAVA_SAMPLES = 20  # exact: Lava's spikes equal the fast simulator's on every one
AGREEMENT_FLOOR = 0.97  # statistical: fixed point and float predict alike on the whole test split
ACCURACY_FLOOR = 0.90  # statistical: 12 epochs reach 0.96-0.99 on any CPU; the floor leaves margin
# lava-dl (slayer's surrogate, last 5 epochs on the chip's grid): slayer's own evaluation is the program's, so
# its predictions are equal on every sample, except where the compiler composes two convs into one synapse group
# (ms's downsampling shortcut: its last layer's spikes differ by 0.5 %, measured); DA trains 30 epochs
LAVA_DL_FLOORS = {"agreement": 0.98, "accuracy": 0.85}
LAVA_DL_COMPOSED = {"ms"}
LAVA_DL_DA = {"epochs": 30, "accuracy": 0.96}


@pytest.mark.slow
@pytest.mark.parametrize(
    "connection,framework",
    [(c, "snntorch") for c in ("plain", "aa", "sew", "ms", "pa", "da")]
    + [
        pytest.param(c, "lava-dl", marks=pytest.mark.lava_runtime)  # slayer trains in this process
        for c in ("plain", "aa", "sew", "sew-and", "sew-iand", "ms", "pa", "da")
    ],
)
def test_digits_models_in_lava_are_exact_and_fixed_point_keeps_float_predictions(
    tmp_path: Path, connection: str, framework: str
) -> None:
    """Acceptance for each connection type compiled to loihi2-sim, split by what can be exact.

    Trained weights differ from CPU to CPU, so nothing here may need one training's bits:
    Lava vs the fast simulator is exact (spike for spike); fixed point vs float is a
    bound on the whole 359-sample test split, where one sample is 0.28 pp. lava-dl models
    (slayer's CUBA neuron, last epochs on the chip's grid) run on the chip what slayer
    evaluates: their predictions must be equal, sample by sample.
    """
    from danet_deploy.checkpoint import load_model
    from danet_deploy.chip_tuning import chip_grid
    from danet_deploy.data import load_dataset
    from danet_deploy.pipeline import export
    from danet_deploy.pipeline import simulate
    from danet_deploy.train import TrainOptions, train

    ckpt = tmp_path / f"{connection}.pt"
    epochs = LAVA_DL_DA["epochs"] if (framework, connection) == ("lava-dl", "da") else 12
    train(
        TrainOptions(
            connection=connection, epochs=epochs, quiet=True, device="cpu", framework=framework
        ),
        ckpt,
        grid_for=chip_grid,
    )
    out = export(ckpt, "loihi2-sim")
    neuron_nodes = {
        layer["type"]
        for layer in json.loads((out / "manifest.json").read_text())["layers"]
        if layer["type"] in ("LIF", "IF", "CubaLIF")
    }
    assert neuron_nodes == ({"CubaLIF"} if framework == "lava-dl" else {"LIF"})
    lava = simulate(out, "digits", backend="lava", samples=LAVA_SAMPLES, show_progress=False)
    assert lava["spike_mismatches"] == 0 and lava["samples"] == LAVA_SAMPLES
    assert lava["accuracy"] == lava["fast_accuracy"]  # the same spikes give the same predictions
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["pipeline_latency"] == lava["pipeline_latency"] > 0

    x, y = load_dataset("digits", "test")[0].tensors
    model, _ = load_model(ckpt)
    with torch.no_grad():
        float_pred = model(x).argmax(1)
    fixed_pred = FixedSimulator(read_program(out / "program.h5")).predict(
        x.unsqueeze(1).expand(-1, model.timesteps, -1, -1, -1)
    )
    agreement = float((fixed_pred == float_pred).double().mean())
    accuracy = {
        "float": float((float_pred == y).double().mean()),
        "fixed": float((fixed_pred == y).double().mean()),
    }
    floors = (
        LAVA_DL_FLOORS
        if framework == "lava-dl"
        else {"agreement": AGREEMENT_FLOOR, "accuracy": ACCURACY_FLOOR}
    )
    assert agreement >= floors["agreement"], (agreement, accuracy)
    assert min(accuracy.values()) >= floors["accuracy"], accuracy
    if (
        framework == "lava-dl"
    ):  # fixed point within 1 pp of slayer's own evaluation; exact where nothing composes
        assert abs(accuracy["fixed"] - accuracy["float"]) <= 0.01, accuracy
        if connection not in LAVA_DL_COMPOSED:
            assert torch.equal(fixed_pred, float_pred), (agreement, accuracy)
    if (framework, connection) == ("lava-dl", "da"):  # the goal network
        assert accuracy["float"] >= LAVA_DL_DA["accuracy"], accuracy


@pytest.mark.lava_runtime  # lava-dl's netx loader runs in this process
def test_netx_loads_our_file_and_spikes_like_our_lava_graph(
    trained_plain: Path, tmp_path: Path
) -> None:
    from lava.lib.dl.netx.hdf5 import Network
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.source import RingBuffer

    from danet_deploy.data import load_dataset
    from danet_deploy.pipeline import export
    from danet_deploy.lavaext.filesink import FileSink

    out = export(trained_plain, "loihi2-sim", tmp_path / "plain")
    assert (out / "netx.h5").is_file()
    program = read_program(out / "program.h5")
    fast = FixedSimulator(program)
    x = load_dataset("digits", "test")[0].tensors[0][:1].unsqueeze(1).expand(-1, 4, -1, -1, -1)
    expected = fast.run(x, record=True)
    steps = 4 + program.lowered.latency + 1
    data = np.zeros((8, 8, 1, steps), dtype=np.int32)  # netx conv layout: (X, Y, C, time)
    data[..., :4] = fast.encode(x)[0].permute(3, 2, 1, 0).numpy()
    # neurons with a bias integrate it before their input arrives; both graphs reset each
    # layer at the start of its own window (netx: offset reset_offset + 1 + layer position)
    net = Network(
        net_config=str(out / "netx.h5"), input_message_bits=24, reset_interval=4, reset_offset=1
    )
    src = RingBuffer(data=data)
    src.s_out.connect(net.inp)
    lifs = [n for n, p in program.populations.items() if p.kind.name == "lif"]
    sinks = []
    for i, block in enumerate(net.layers[: len(lifs)]):
        sink = FileSink(
            records=[(block.out.shape, tmp_path / f"netx{i}.npy", "int8")], num_steps=steps
        )
        block.out.connect(sink.port(0))
        sinks.append(sink)
    try:
        src.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
    finally:
        src.stop()
    for i, name in enumerate(lifs):
        rec = np.load(tmp_path / f"netx{i}.npy")  # [steps, X, Y, C]
        lat = program.populations[name].latency
        got = rec[lat : lat + 4].transpose(0, 3, 2, 1)  # -> [T, C, H, W]
        assert np.array_equal(got, expected[name][:, 0].numpy()), name


def test_export_manifest_records_the_compilation(trained_digits: Path, tmp_path: Path) -> None:
    run_cli(
        "export",
        str(trained_digits),
        "--target",
        "loihi2-sim",
        "-o",
        str(tmp_path / "o"),
        check=True,
    )
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert m["profile"] == "loihi2" and m["lowering"] in ("expand", "relay")
    assert set(m["lowering_costs"]) == {"expand", "relay"}
    layer = m["quantisation"]["stem.sn"]
    assert layer["weight_bits"] == 8 and 0 < layer["vth"] < 2**17 and layer["dv"] == 2048
    assert m["core_mapping"]["chips"] >= 1 and m["core_mapping"]["cores"] >= 1
    assert "energy.synaptic_op" in m["profile_estimates"]
    assert (tmp_path / "o" / "program.h5").is_file() and not (tmp_path / "o" / "netx.h5").exists()


def _lava_processes() -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if b"danet_deploy.simulator.lava" in (d / "cmdline").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def _lava_group_of(parent: int, timeout: float = 120) -> int:
    """The process group of the Lava worker that ``parent`` started, once Lava's own processes run."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        workers = [pid for pid in _lava_processes() if _ppid(pid) == parent]
        if workers and len(group_members(workers[0])) > 2:  # the worker and Lava's processes
            return workers[0]
        time.sleep(0.2)
    raise AssertionError("the Lava worker never started")


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError):
        return -1


def _start_lava_simulation(artifact: Path) -> subprocess.Popen:
    # a shell without job control starts background jobs with SIGINT ignored, and Python keeps it
    # ignored: restore the default so that the signal acts as a terminal's Ctrl-C would
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "danet_deploy",
            "simulate",
            str(artifact),
            "--backend",
            "lava",
            "--samples",
            "300",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _own_segments() -> set[str]:
    """The shared-memory segments of this suite's Lava runs (one runs at a time)."""
    return {p.name for p in SHM.glob(f"{shm_prefix()}*")}


def _gone_within(pgid: int, segments: set[str], seconds: float) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if not group_members(pgid) and not any((SHM / s).exists() for s in segments):
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
@pytest.mark.parametrize(
    "sig",
    [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL],
    ids=["SIGINT", "SIGTERM", "SIGHUP", "SIGKILL"],
)
def test_a_signal_to_the_parent_leaves_no_lava_process_and_no_shared_memory(
    trained_digits: Path, tmp_path: Path, sig: int, monkeypatch
) -> None:
    """Ctrl-C, SIGTERM and SIGHUP stop the run through the parent; after SIGKILL of the parent
    the worker notices and ends its group. Either way Lava's /dev/shm segments are removed. The
    run's temporary files go to a folder of this test's own (other runs on the machine have theirs)."""
    out = tmp_path / "o"
    run_cli("export", str(trained_digits), "--target", "loihi2-sim", "-o", str(out), check=True)
    own_tmp = tmp_path / "tmp"
    own_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(own_tmp))
    proc = _start_lava_simulation(out)
    pgid = _lava_group_of(proc.pid)
    time.sleep(2)
    segments = _own_segments()
    assert segments, "Lava mapped no shared memory: the check below would be vacuous"
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert _gone_within(pgid, segments, 15), (
        group_members(pgid),
        [s for s in segments if (SHM / s).exists()],
    )
    assert not list(own_tmp.glob("danet-lava-*")), "the run's files were left"


@pytest.mark.slow
def test_sigterm_during_a_cifar_scale_lava_run_leaves_nothing(tmp_path: Path) -> None:
    """DA-ResNet-20 on CIFAR shapes (about a hundred Lava processes): SIGTERM to the parent
    mid-run ends every one of them and removes their shared memory."""
    from danet_deploy.converters.nir_export import to_nir
    from danet_deploy.models import build

    torch.manual_seed(0)
    nir.write(
        tmp_path / "da20.nir", to_nir(build("resnet20", "da", 10, input_shape=(3, 32, 32)).eval())
    )
    run_cli(
        "export",
        str(tmp_path / "da20.nir"),
        "--target",
        "loihi2-sim",
        "-o",
        str(tmp_path / "chip"),
        check=True,
    )
    torch.save(
        {"inputs": torch.rand(8, 3, 32, 32), "labels": torch.zeros(8, dtype=torch.long)},
        tmp_path / "x.pt",
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "danet_deploy",
            "simulate",
            str(tmp_path / "chip"),
            "--backend",
            "lava",
            "--data",
            f"tensor:{tmp_path / 'x.pt'}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    pgid = _lava_group_of(proc.pid)
    deadline = time.time() + 120
    while (
        len(group_members(pgid)) < 50 and time.time() < deadline
    ):  # Lava is starting its processes
        time.sleep(0.2)
    assert len(group_members(pgid)) >= 50
    segments = _own_segments()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert _gone_within(pgid, segments, 15), (
        group_members(pgid),
        [s for s in segments if (SHM / s).exists()],
    )


def test_a_stalled_lava_run_is_stopped_and_leaves_no_processes(tmp_path: Path, monkeypatch) -> None:
    """Lava waits forever when one of its processes fails: a run that finishes no step within
    the stall timeout is stopped (here already during start-up) and leaves nothing behind. Only
    the worker this test starts, its process group and its segments are watched: other Lava runs
    on the machine are none of its business."""
    _tiny_residual(tmp_path / "tiny.nir")
    program, _ = compile_graph(
        read_nir(tmp_path / "tiny.nir"), "loihi2-sim", load_profile("loihi2"), "expand", None
    )
    write_program(tmp_path / "p.h5", program)
    started = []

    class Recorded(subprocess.Popen):
        def __init__(self, *args, **kw) -> None:
            super().__init__(*args, **kw)
            if (
                "danet_deploy.simulator.lava" in args[0]
            ):  # the worker (not the runtime's version probe)
                started.append(self.pid)

    monkeypatch.setattr(lava_backend.subprocess, "Popen", Recorded)
    monkeypatch.setenv(SHM_TAG_ENV, f"stall{os.getpid()}")
    with pytest.raises(UserError, match="the Lava run of .* stalled: no step finished in 0 s"):
        run_lava(
            tmp_path / "p.h5", program, np.zeros((1, 5, 2, 6, 6), dtype=np.int64), stall_timeout=0.2
        )
    (worker,) = started
    assert group_members(worker) == []  # the worker led its own group: nothing of it is left
    assert list(SHM.glob(f"{shm_prefix()}*")) == []


@pytest.mark.slow
def test_a_killed_lava_worker_is_reported_at_once(trained_digits: Path, tmp_path: Path) -> None:
    """SIGKILL to the Lava worker ends the command within seconds, not after the stall timeout."""
    out = tmp_path / "chip"
    run_cli("export", str(trained_digits), "--target", "loihi2-sim", "-o", str(out), check=True)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "danet_deploy",
            "simulate",
            str(out),
            "--backend",
            "lava",
            "--samples",
            "200",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    pgid = _lava_group_of(proc.pid)
    os.kill(pgid, signal.SIGKILL)  # the worker leads its group
    killed = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - killed < 15
    assert proc.returncode == 1 and "killed by SIGKILL" in err and "Traceback" not in err, err
    assert _gone_within(pgid, [], 15), group_members(pgid)
    assert not _own_segments(), "segments that no process mapped any more were left"
