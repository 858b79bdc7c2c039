"""Networks other frameworks wrote: recurrence, reset conventions, CUBA biases and linear chains.

snnTorch's own exporter writes the graphs here and snnTorch's own neurons give the
expected spikes. The N-MNIST CSNN of the NIR paper (sum pools into convs) is built
with ``nir`` primitives the way sinabs writes it (sinabs does not install beside the
pinned nir 1.0.8).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import nir
import numpy as np
import pytest
import torch

from danet_deploy.converters.nir_import import from_nir, read_nir
from danet_deploy.errors import UserError
from danet_deploy.ir.interpreter import ReferenceSimulator, linear_step
from danet_deploy.ir.program import Map
from danet_deploy.lowering import (
    COMPOSITIONS,
    NoConvForm,
    _dense_matrix,
    compose,
    composition,
    identity,
    lower,
    map_form,
)

from .conftest import run_cli
from .event_files import write_nmnist

HIDDEN, OUT, INPUTS, STEPS = 38, 7, 12, 25  # the NIR paper's Braille SRNN sizes


def _snntorch_net(kind: str, reset: str, delay: bool, seed: int = 1) -> torch.nn.Sequential:
    """12 -> 38 (``kind``) -> 7 (Leaky), biased Linear layers, per-neuron parameters
    (snnTorch's exporter needs them as vectors)."""
    import snntorch as snn

    def full(n: int, v: float) -> torch.Tensor:
        return torch.full((n,), v)

    kw = dict(
        threshold=full(HIDDEN, 1.0), init_hidden=True, reset_mechanism=reset, reset_delay=delay
    )
    hidden = {
        "leaky": lambda: snn.Leaky(beta=full(HIDDEN, 0.9), **kw),
        "rleaky": lambda: snn.RLeaky(beta=full(HIDDEN, 0.9), linear_features=HIDDEN, **kw),
        "synaptic": lambda: snn.Synaptic(alpha=full(HIDDEN, 0.8), beta=full(HIDDEN, 0.9), **kw),
        "rsynaptic": lambda: snn.RSynaptic(
            alpha=full(HIDDEN, 0.8), beta=full(HIDDEN, 0.9), linear_features=HIDDEN, **kw
        ),
    }[kind]
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(INPUTS, HIDDEN),
        hidden(),
        torch.nn.Linear(HIDDEN, OUT),
        snn.Leaky(
            beta=full(OUT, 0.9),
            threshold=full(OUT, 1.0),
            init_hidden=True,
            reset_mechanism=reset,
            reset_delay=delay,
        ),
    )
    with torch.no_grad():
        net[0].weight.mul_(2.0)
    return net


def _snntorch_spikes(net: torch.nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """snnTorch's own output spikes ``[T, N, OUT]`` for ``x`` ``[N, T, INPUTS]``."""
    import snntorch.utils

    snntorch.utils.reset(net)
    with torch.no_grad():
        return torch.stack([net(x[:, t]) for t in range(x.shape[1])])


def _export_snntorch(net: torch.nn.Sequential, path: Path) -> Path:
    from snntorch.export_nir import export_to_nir

    nir.write(path, export_to_nir(net, torch.zeros(INPUTS)))
    return path


def _spike_trains(n: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, STEPS, INPUTS, generator=g) < 0.3).float()


@pytest.fixture(scope="module")
def spike_data(tmp_path_factory) -> Path:
    x = _spike_trains()
    path = tmp_path_factory.mktemp("spikes") / "spikes.pt"
    torch.save({"inputs": x, "labels": torch.arange(len(x)) % OUT}, path)
    return path


@pytest.mark.parametrize("kind", ["leaky", "rleaky", "synaptic", "rsynaptic"])
@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_snntorch_default_timing_is_reproduced_exactly(
    tmp_path: Path, kind: str, reset: str
) -> None:
    """snnTorch's default reset_delay=True, as exported by snnTorch, with --reset snntorch-*."""
    net = _snntorch_net(kind, reset, delay=True)
    path = _export_snntorch(net, tmp_path / f"{kind}.nir")
    x = _spike_trains()
    expected = _snntorch_spikes(net, x)
    graph = read_nir(path, reset=f"snntorch-{reset}")
    assert bool(graph.recurrent) == kind.startswith("r")
    got = ReferenceSimulator(graph, torch.float64).run(x.double())["output"]
    assert expected.sum() > 20
    assert torch.equal(got.float(), expected)
    if kind != "leaky" or reset != "zero":  # Loihi's plain reset to zero is another network
        plain = ReferenceSimulator(read_nir(path, reset="zero"), torch.float64).run(x.double())[
            "output"
        ]
        assert not torch.equal(plain.float(), expected)


@pytest.mark.parametrize("kind", ["leaky", "rleaky", "synaptic"])
def test_snntorch_immediate_reset_to_zero_is_loihis(tmp_path: Path, kind: str) -> None:
    net = _snntorch_net(kind, "zero", delay=False)
    path = _export_snntorch(net, tmp_path / f"{kind}.nir")
    x = _spike_trains()
    got = ReferenceSimulator(read_nir(path, reset="zero"), torch.float64).run(x.double())["output"]
    assert torch.equal(got.float(), _snntorch_spikes(net, x))


def test_unstated_reset_is_announced_and_a_stated_one_is_used(tmp_path: Path, capsys) -> None:
    net = _snntorch_net("leaky", "subtract", delay=True)
    path = _export_snntorch(net, tmp_path / "leaky.nir")
    read_nir(path)
    err = capsys.readouterr().err
    assert "does not state how its neurons reset; assuming 'zero'" in err
    assert "does not state how its time constants become per-step decays; assuming 'euler'" in err
    graph = nir.read(path)
    graph.metadata = {"reset": "snntorch-subtract", "discretisation": "exp"}
    stated = tmp_path / "stated.nir"
    nir.write(stated, graph)
    flat = read_nir(stated)
    assert "assuming" not in capsys.readouterr().err.replace("assuming dt", "")
    assert {f.reset for f in flat.resets.values()} == {"subtract-late"}
    assert flat.discretisation == "exp"
    with pytest.raises(UserError, match="unknown reset convention 'sideways'"):
        read_nir(path, reset="sideways")


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind,reset,rule",
    [
        ("leaky", "subtract", "subtract-late"),
        ("rsynaptic", "subtract", "subtract-late"),
        ("rleaky", "zero", "zero-late"),
    ],
)
def test_snntorchs_default_timing_runs_on_loihi2_in_lava_and_loihi1_refuses_it(
    tmp_path: Path, spike_data: Path, kind: str, reset: str, rule: str
) -> None:
    """snnTorch's default timing (``reset_delay``: a subtraction, or a recurrent neuron's reset
    to zero, a step late) compiles for loihi2-sim as a programmed neuron (docs/compile.md,
    "Programmed resets"): Lava's run of our neuron program equals the fast simulator spike for
    spike, and the report counts it. loihi1's neurons reset to zero at once only: it refuses
    the layer in one line, with what to do, and writes nothing."""
    from danet_deploy.ir.program import read_program
    from danet_deploy.ir.resets import DESCRIPTIONS, Reset

    path = _export_snntorch(_snntorch_net(kind, reset, delay=True), tmp_path / f"{kind}.nir")
    common = ("--data", str(spike_data), "--reset", f"snntorch-{reset}")
    proc = run_cli("export", str(path), "-t", "loihi1", *common, "-o", str(tmp_path / "l1"))
    assert proc.returncode == 1
    message = proc.stderr.strip().splitlines()[-1]
    assert "layer '1" in message and DESCRIPTIONS[Reset(rule)] in message
    assert "no programmable neurons" in message and "--reset zero" in message
    assert not (tmp_path / "l1").exists()
    out = tmp_path / "chip"
    run_cli("export", str(path), "-t", "loihi2-sim", *common, "-o", str(out), check=True)
    hidden = read_program(out / "program.h5").populations["1.lif" if kind[0] == "r" else "1"]
    assert hidden.firing.reset is Reset(rule)
    result = json.loads(
        run_cli(
            "simulate", str(out), *common[:2], "--backend", "lava", "-n", "6", "--json", check=True
        ).stdout
    )
    assert result["spike_mismatches"] == 0 and result["nonzero_values"] > 300
    report = json.loads(
        run_cli("report", str(out), *common[:2], "--format", "json", check=True).stdout
    )
    assert report["totals"]["sops"] > 0


def _recurrent_sops(program, spikes: torch.Tensor) -> float:
    """Recurrent SOPs per sample from the program's weights alone: every spike but the last
    step's, times the nonzero weights in its column."""
    total = 0.0
    for pop in program.populations.values():
        for t in pop.synapse_groups:
            if t.map.recurrent:
                fan_out = np.count_nonzero(t.weight_q, axis=0)
                early = spikes[t.source][: -1 - t.delay].reshape(-1, len(fan_out)).sum(0).numpy()
                total += float(early @ fan_out)
    return total / spikes[next(iter(spikes))].shape[1]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["rleaky", "rsynaptic"])
def test_recurrent_network_runs_in_lava_bit_exactly_and_is_counted(
    tmp_path: Path, spike_data: Path, kind: str
) -> None:
    """The Braille SRNN's shape: 12 -> 38 recurrent -> 7, exported by snnTorch, compiled with
    Loihi's reset (``--reset zero``): Lava equals the fast simulator, recurrent SOPs are exact."""
    from danet_deploy.ir.program import read_program
    from danet_deploy.simulator.fixed import FixedSimulator

    path = _export_snntorch(_snntorch_net(kind, "zero", delay=True), tmp_path / f"{kind}.nir")
    out = tmp_path / "chip"
    run_cli(
        "export",
        str(path),
        "-t",
        "loihi2-sim",
        "--data",
        str(spike_data),
        "--reset",
        "zero",
        "-o",
        str(out),
        check=True,
    )
    program = read_program(out / "program.h5")
    recurrent = [
        t for p in program.populations.values() for t in p.synapse_groups if t.map.recurrent
    ]
    assert len(recurrent) == 1 and recurrent[0].source == "1.lif" and recurrent[0].delay == 0
    proc = run_cli(
        "simulate",
        str(out),
        "--data",
        str(spike_data),
        "--backend",
        "lava",
        "-n",
        "6",
        "--json",
        check=True,
    )
    result = json.loads(proc.stdout)
    assert result["spike_mismatches"] == 0 and result["nonzero_values"] > 500
    report = json.loads(
        run_cli(
            "report", str(out), "--data", str(spike_data), "--format", "json", check=True
        ).stdout
    )
    x = _spike_trains()
    spikes = {k: v.cpu() for k, v in FixedSimulator(program).run(x, record=True).items()}
    rec_row = next(r for r in report["layers"] if r["kind"] == "recurrent")
    assert rec_row["name"] == "1.lif:recurrent" and rec_row["connection"] == "recurrent"
    assert rec_row["sops"] == pytest.approx(_recurrent_sops(program, spikes), rel=1e-12)
    assert rec_row["sops"] > 0 and report["by_connection"]["recurrent"]["sops"] == rec_row["sops"]
    assert rec_row["synapses"] == int(np.count_nonzero(recurrent[0].weight_q))
    assert report["totals"]["sops"] == pytest.approx(sum(r["sops"] for r in report["layers"]))


@pytest.mark.slow
def test_cuba_bias_comes_through_a_bias_source(tmp_path: Path, spike_data: Path) -> None:
    """snnTorch's Synaptic behind biased Linear layers: the persistent current of a bias is
    fed by a one-neuron source; float equals snnTorch, Lava equals the fast simulator."""
    net = _snntorch_net("synaptic", "zero", delay=False)
    with torch.no_grad():
        net[0].bias.add_(0.1)
    path = _export_snntorch(net, tmp_path / "syn.nir")
    x = torch.load(spike_data)["inputs"]
    assert torch.equal(
        ReferenceSimulator(read_nir(path, reset="zero"), torch.float64)
        .run(x.double())["output"]
        .float(),
        _snntorch_spikes(net, x),
    )
    out = tmp_path / "chip"
    run_cli(
        "export",
        str(path),
        "-t",
        "loihi2-sim",
        "--data",
        str(spike_data),
        "--reset",
        "zero",
        "-o",
        str(out),
        check=True,
    )
    from danet_deploy.ir.program import read_program

    program = read_program(out / "program.h5")
    assert program.populations["1.bias"].neurons == 1
    assert any(t.source == "1.bias" for t in program.populations["1"].synapse_groups)
    result = json.loads(
        run_cli(
            "simulate",
            str(out),
            "--data",
            str(spike_data),
            "--backend",
            "lava",
            "-n",
            "4",
            "--json",
            check=True,
        ).stdout
    )
    assert result["spike_mismatches"] == 0 and result["nonzero_values"] > 500


def test_loop_through_two_layers_is_refused_on_the_chip() -> None:
    n = 4
    lif = lambda: nir.LIF(  # noqa: E731
        tau=np.full(n, 2.0),
        r=np.full(n, 2.0),
        v_leak=np.zeros(n),
        v_threshold=np.ones(n),
    )
    graph = nir.NIRGraph(
        nodes={
            "in": nir.Input(input_type={"input": np.array([n])}),
            "a": lif(),
            "w": nir.Linear(np.eye(n)),
            "b": lif(),
            "back": nir.Linear(np.eye(n)),
            "out": nir.Output(output_type={"output": np.array([n])}),
        },
        edges=[("in", "a"), ("a", "w"), ("w", "b"), ("b", "back"), ("back", "a"), ("b", "out")],
        metadata={"dt": 1.0, "reset": "zero"},
        type_check=False,
    )
    flat = from_nir(graph)
    assert flat.recurrent == {("back", "a")}
    ReferenceSimulator(flat).run(torch.ones(1, 3, n))  # the float model runs it
    with pytest.raises(
        UserError, match="population 'a': its recurrent input from 'b' passes through 1 more"
    ):
        lower(flat, "expand")


# ---- linear chains between neurons ------------------------------------------------------


def _jacobian(fn, in_shape: tuple[int, ...]) -> np.ndarray:
    """The matrix of the linear map ``fn`` over C-order flattened inputs and outputs."""
    n = int(np.prod(in_shape))
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *in_shape)
    return fn(basis).reshape(n, -1).T.numpy()


@pytest.mark.parametrize("size,pad", [(16, 1), (15, 1), (14, 0)])
def test_conv_after_sum_pool_is_composed_exactly(size: int, pad: int) -> None:
    """A 3x3 conv after a 2x2 sum pool: one 6x6 stride-2 conv where that is exact (its zero
    padding falls outside the pooled input), one dense matrix otherwise, or under relay
    lowering a relay between the two; every way equal to the two applied in turn."""
    rng = np.random.default_rng(size)
    w = rng.normal(size=(3, 2, 3, 3))
    c, n = 2, (2, size, size)
    pooled = size // 2
    out = pooled + 2 * pad - 2
    graph = nir.NIRGraph(
        nodes={
            "in": nir.Input(input_type={"input": np.array(n)}),
            "if": nir.IF(r=np.ones(n), v_threshold=np.ones(n)),
            "pool": nir.SumPool2d(
                kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])
            ),
            "conv": nir.Conv2d(
                input_shape=(pooled, pooled),
                weight=w,
                stride=1,
                padding=pad,
                dilation=1,
                groups=1,
                bias=np.zeros(3),
            ),
            "lif": nir.IF(r=np.ones((3, out, out)), v_threshold=np.ones((3, out, out))),
            "out": nir.Output(output_type={"output": np.array([3, out, out])}),
        },
        edges=[("in", "if"), ("if", "pool"), ("pool", "conv"), ("conv", "lif"), ("lif", "out")],
        metadata={"dt": 1.0, "reset": "zero"},
        type_check=False,
    )
    term = lower(from_nir(graph), "expand").populations["lif"].synapse_groups[0]
    exact = size % 2 == 0 or pad == 0
    assert term.map.kind == ("conv" if exact else "dense")
    if exact:
        assert term.map.kernel == (6, 6) and term.map.stride == (2, 2)

    def sequential(x: torch.Tensor) -> torch.Tensor:
        pooled_x = torch.nn.functional.avg_pool2d(x, 2, 2, divisor_override=1)
        return torch.nn.functional.conv2d(pooled_x, torch.tensor(w), padding=pad)

    got = term.map.matrix(term.map.weight).toarray()
    assert np.allclose(got, _jacobian(sequential, (c, size, size)), atol=1e-12)
    if not exact:  # relay lowering keeps both as convs, with graded relay neurons between them
        pops = lower(from_nir(graph), "relay").populations
        pooled, conv = pops["conv.relay"].synapse_groups[0].map, pops["lif"].synapse_groups[0].map
        assert pops["lif"].synapse_groups[0].source == "conv.relay" and (
            pooled.kind,
            conv.kind,
        ) == (
            "conv",
            "conv",
        )
        assert conv.kernel == (3, 3) and pooled.kernel == (2, 2)
        chained = conv.matrix(conv.weight) @ pooled.matrix(pooled.weight)
        assert np.allclose(chained.toarray(), _jacobian(sequential, (c, size, size)), atol=1e-12)


def _pooled_head(c: int = 6, hw: int = 4, classes: int = 5) -> tuple[nir.NIRGraph, np.ndarray]:
    """SpikingJelly's ResNet head: IF -> AdaptiveAvgPool2d((1, 1)) -> flatten -> Linear -> IF."""
    w = np.random.default_rng(1).normal(size=(classes, c))
    n = (c, hw, hw)
    graph = nir.NIRGraph(
        nodes={
            "in": nir.Input(input_type={"input": np.array(n)}),
            "if": nir.IF(r=np.ones(n), v_threshold=np.ones(n)),
            "pool": nir.AvgPool2d(
                kernel_size=np.array([hw, hw]), stride=np.array([hw, hw]), padding=np.array([0, 0])
            ),
            "flat": nir.Flatten(input_type={"input": np.array([c, 1, 1])}, start_dim=0, end_dim=-1),
            "fc": nir.Affine(w, np.zeros(classes)),
            "lif": nir.IF(r=np.ones(classes), v_threshold=np.ones(classes)),
            "out": nir.Output(output_type={"output": np.array([classes])}),
        },
        edges=[
            ("in", "if"),
            ("if", "pool"),
            ("pool", "flat"),
            ("flat", "fc"),
            ("fc", "lif"),
            ("lif", "out"),
        ],
        metadata={"dt": 1.0, "reset": "zero"},
        type_check=False,
    )
    return graph, w


@pytest.mark.parametrize("lowering", ["expand", "relay"])
def test_a_linear_after_a_flattened_global_pool_stays_one_conv_held_once(lowering: str) -> None:
    """Flattening ``(C, 1, 1)`` keeps the order of its values, so the Linear after it is a 1x1
    conv after the pool: one conv whose kernel covers the input, held once over its taps, and
    equal to the three applied in turn (made dense, SEW-ResNet-50's head was 3.2 GB)."""
    graph, w = _pooled_head()
    term = lower(from_nir(graph), lowering).populations["lif"].synapse_groups[0]
    assert (term.map.kind, term.map.kernel, term.map.out_shape) == ("conv", (4, 4), (5, 1, 1))
    assert term.map.weight.strides[-2:] == (0, 0)  # one value for the 16 taps of each pair

    def sequential(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1) @ torch.tensor(w).T

    got = term.map.matrix(term.map.values()).toarray()
    assert np.allclose(got, _jacobian(sequential, (6, 4, 4)), atol=1e-12)


def test_a_delay_before_a_flatten_still_delays(tmp_path: Path) -> None:
    """IF (2, 2, 2) -> Delay(3) -> Flatten -> Linear -> IF: the flattened population's values
    arrive three steps late, as the float interpreter has them (the Flatten made a fresh
    identity map, which dropped the delay, and would have dropped a recurrent edge's lag)."""
    from danet_deploy.compile import compile_graph
    from danet_deploy.profiles import load_profile
    from danet_deploy.simulator.fixed import FixedSimulator

    n = (2, 2, 2)
    order = ["in", "if", "d", "flat", "fc", "lif", "out"]
    graph = nir.NIRGraph(
        nodes={
            "in": nir.Input(input_type={"input": np.array(n)}),
            "if": nir.IF(r=np.ones(n), v_threshold=np.ones(n)),
            "d": nir.Delay(delay=np.full(n, 3.0)),
            "flat": nir.Flatten(input_type={"input": np.array(n)}, start_dim=0, end_dim=-1),
            "fc": nir.Linear(np.kron(np.eye(4), np.ones((1, 2)))),
            "lif": nir.IF(r=np.ones(4), v_threshold=np.ones(4)),
            "out": nir.Output(output_type={"output": np.array([4])}),
        },
        edges=list(zip(order[:-1], order[1:])),
        metadata={"dt": 1.0, "reset": "zero", "timesteps": 8},
        type_check=False,
    )
    nir.write(tmp_path / "d.nir", graph)
    flat = read_nir(tmp_path / "d.nir")
    assert lower(flat, "expand").populations["lif"].synapse_groups[0].lag == 3
    x = (torch.rand(6, 8, *n, generator=torch.Generator().manual_seed(3)) < 0.5).float()
    program, _ = compile_graph(flat, "loihi2-sim", load_profile("loihi2"), "expand", x)
    fixed = FixedSimulator(program).run(x, record=True)["lif"]
    reference = ReferenceSimulator(flat).run(x, record=True)["lif"]
    assert torch.equal(fixed, reference.to(fixed.dtype)) and 0 < int(fixed.sum()) < fixed.numel()


def _csnn() -> nir.NIRGraph:
    """The NIR paper's N-MNIST CSNN architecture, written the way sinabs writes it (IF with
    r = 1, time in steps, sum pools), with random weights."""
    rng = np.random.default_rng(0)

    def conv(cin: int, cout: int, k: int, stride: int, pad: int, hw: int) -> nir.Conv2d:
        return nir.Conv2d(
            input_shape=(hw, hw),
            weight=rng.normal(0, 1.5 / np.sqrt(cin * k * k), (cout, cin, k, k)),
            stride=stride,
            padding=pad,
            dilation=1,
            groups=1,
            bias=np.zeros(cout),
        )

    def neurons(*shape: int) -> nir.IF:
        return nir.IF(r=np.ones(shape), v_threshold=np.ones(shape))

    def pool() -> nir.SumPool2d:
        return nir.SumPool2d(
            kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])
        )

    layers = [
        conv(2, 16, 5, 2, 1, 34),
        neurons(16, 16, 16),
        conv(16, 16, 3, 1, 1, 16),
        neurons(16, 16, 16),
        pool(),
        conv(16, 8, 3, 1, 1, 8),
        neurons(8, 8, 8),
        pool(),
        nir.Flatten(input_type={"input": np.array([8, 4, 4])}, start_dim=0, end_dim=-1),
        nir.Affine(rng.normal(0, 2 / np.sqrt(128), (256, 128)), np.zeros(256)),
        neurons(256),
        nir.Affine(rng.normal(0, 2 / np.sqrt(256), (10, 256)), np.zeros(10)),
        neurons(10),
    ]
    nodes = {
        "input": nir.Input(input_type={"input": np.array([2, 34, 34])}),
        **{str(i): layer for i, layer in enumerate(layers)},
        "output": nir.Output(output_type={"output": np.array([10])}),
    }
    order = list(nodes)
    return nir.NIRGraph(nodes=nodes, edges=list(zip(order[:-1], order[1:])), type_check=False)


@pytest.mark.slow
@pytest.mark.parametrize("reset", ["zero", "sinabs"])
def test_nmnist_csnn_compiles_runs_in_lava_and_is_counted(tmp_path: Path, reset: str) -> None:
    """On N-MNIST-format recordings read by tonic, framed into 8 steps (docs/events.md); with
    Loihi's reset, and with sinabs' own (several spikes in one step: a programmed neuron whose
    counts travel as graded payloads)."""
    path = tmp_path / "csnn.nir"
    nir.write(path, _csnn())
    write_nmnist(tmp_path / "nmnist", 1, events=(3000, 5000))  # a real recording holds about 4,000
    data = f"nmnist:{tmp_path / 'nmnist'}?bins=8"
    out = tmp_path / "chip"
    run_cli(
        "export",
        str(path),
        "-t",
        "loihi2-sim",
        "--dt",
        "1",
        "--data",
        data,
        "--reset",
        reset,
        "-o",
        str(out),
        check=True,
    )
    from danet_deploy.ir.program import read_program

    program = read_program(out / "program.h5")
    pops = program.populations
    graded = {name for name, f in program.fixed.items() if f.graded}
    counts = {"1", "3", "6", "10", "12"}  # the IF layers: event frames are graded anyway
    # auto lowering relays the pool into the flattened affine map (fewer cores than the dense
    # layer expand makes of it, docs/compile.md §4): the relay's messages are graded
    assert graded == {"input", "8.relay", *(counts if reset == "sinabs" else ())}
    pooled_conv = pops["6"].synapse_groups[0].map
    assert (pooled_conv.kind, pooled_conv.kernel, pooled_conv.stride) == ("conv", (6, 6), (2, 2))
    result = json.loads(
        run_cli(
            "simulate", str(out), "--data", data, "--backend", "lava", "--json", check=True
        ).stdout
    )
    assert (
        result["spike_mismatches"] == 0
        and result["nonzero_values"] > 10_000
        and result["samples"] == 10
    )
    report = json.loads(
        run_cli("report", str(out), "--data", data, "--format", "json", check=True).stdout
    )
    events = "graded_ops" if reset == "sinabs" else "sops"  # a count is one graded message
    assert (
        report["totals"][events] > 0
        and len(report["layers"]) == 7  # the five layers, the relay and the readout
        and report["framing"]["n_time_bins"] == 8
    )


def test_a_chain_whose_flat_layer_a_conv_feeds_is_not_written_as_netx() -> None:
    """netx's conv layers are (C, H, W): a flat population fed by a channels-only conv (a Linear
    after a global pool) keeps the program out of netx.h5, as its dense form did."""
    from danet_deploy.compile import compile_graph
    from danet_deploy.converters.netx_writer import is_sequential
    from danet_deploy.profiles import load_profile

    graph, _ = _pooled_head()
    graph.nodes["readout"] = nir.Affine(np.ones((3, 5)), np.zeros(3))
    graph.nodes["out"] = nir.Output(output_type={"output": np.array([3])})
    graph.edges = [e for e in graph.edges if e != ("lif", "out")] + [
        ("lif", "readout"),
        ("readout", "out"),
    ]
    program, _ = compile_graph(
        from_nir(graph),
        "loihi2-sim",
        load_profile("loihi2"),
        "expand",
        (torch.rand(4, 3, 6, 4, 4) < 0.5).float(),
    )
    assert [p.kind.name for p in program.populations.values()] == ["input", "lif", "lif", "readout"]
    assert program.populations["lif"].synapse_groups[0].map.kind == "conv"
    assert not is_sequential(program)


# ---- compose's table, each row held by the Jacobian oracle ---------------------------------

_C, _HW = 2, 4  # every node below reads 32 values: (2, 4, 4), flat (32,) or (32, 1, 1)


def _oracle_nodes() -> dict[str, tuple[nir.NIRNode, tuple[int, ...]]]:
    """A node of every type ``compose`` knows (and variants that pick other rows), with the
    shape it is fed."""
    rng = np.random.default_rng(7)
    n = (_C, _HW, _HW)

    def conv(cout: int, k: int, stride: int, pad: int, groups: int = 1) -> nir.Conv2d:
        return nir.Conv2d(
            input_shape=(_HW, _HW),
            weight=rng.normal(size=(cout, _C // groups, k, k)),
            stride=stride,
            padding=pad,
            dilation=1,
            groups=groups,
            bias=rng.normal(size=cout),
        )

    def pool(cls: type, k: int, stride: int, pad: int) -> nir.NIRNode:
        return cls(
            kernel_size=np.array([k, k]), stride=np.array([stride] * 2), padding=np.array([pad] * 2)
        )

    flat = (_C * _HW * _HW,)
    return {
        "input": (nir.Input(input_type={"input": np.array(n)}), n),
        "output": (nir.Output(output_type={"output": np.array(n)}), n),
        "delay": (nir.Delay(delay=np.full(n, 2.0)), n),
        "conv3x3": (conv(3, 3, 1, 1), n),
        "conv3x3-valid": (conv(3, 3, 1, 0), n),
        "conv3x3-grouped": (conv(4, 3, 1, 1, groups=2), n),
        "conv1x1": (conv(3, 1, 1, 0), n),
        "conv1x1-stride2": (conv(3, 1, 2, 0), n),
        "scale-per-channel": (nir.Scale(np.array([1.5, -0.25])[:, None, None] * np.ones(n)), n),
        "scale-per-neuron": (nir.Scale(rng.normal(size=n)), n),
        "sum-pool": (pool(nir.SumPool2d, 2, 2, 0), n),
        "avg-pool": (pool(nir.AvgPool2d, 2, 2, 0), n),
        "avg-pool-padded": (pool(nir.AvgPool2d, 3, 1, 1), n),
        "flatten": (nir.Flatten(input_type={"input": np.array(n)}, start_dim=0, end_dim=-1), n),
        "flatten-channels": (
            nir.Flatten(input_type={"input": np.array([32, 1, 1])}, start_dim=0, end_dim=-1),
            (32, 1, 1),
        ),
        "linear": (nir.Linear(rng.normal(size=(5, 32))), flat),
        "affine": (nir.Affine(rng.normal(size=(5, 32)), rng.normal(size=5)), flat),
    }


def _oracle_maps() -> dict[str, Map]:
    """A map of every form (:func:`map_form`) making 32 values, with row scales where a form
    has them, each two steps delayed and recurrent (what every rule must keep)."""
    rng = np.random.default_rng(8)
    maps = {
        "conv-identity": identity((_C, _HW, _HW)),
        "dense-identity": identity((32,)),
        "pointwise": Map("conv", (3, _HW, _HW), (_C, _HW, _HW), rng.normal(size=(_C, 3, 1, 1))),
        "pointwise-channels": Map("conv", (3, 1, 1), (32, 1, 1), rng.normal(size=(32, 3, 1, 1))),
        "conv": Map(
            "conv",
            (3, 8, 8),
            (_C, _HW, _HW),
            rng.normal(size=(_C, 3, 3, 3)),
            kernel=(3, 3),
            stride=(2, 2),
            padding=(1, 1),
        ),
        "conv-channels": Map(
            "conv", (_C, _HW, _HW), (32, 1, 1), rng.normal(size=(32, _C, 4, 4)), kernel=(4, 4)
        ),
        "dense": Map("dense", (5,), (32,), rng.normal(size=(32, 5))),
    }
    for key in ("pointwise", "pointwise-channels", "conv", "dense"):
        maps[key] = maps[key].scaled(rng.normal(size=maps[key].weight_shape[0]))
    return {k: replace(m, delay=2, recurrent=True) for k, m in maps.items()}


def _oracle_cases() -> list[tuple[str, str]]:
    """Every (node, map) pair where the map's output is what the node reads: the same shape,
    or any shape of the same size where the map is dense or the node reads flat values."""
    maps = _oracle_maps()
    return [
        (node, key)
        for node, (_, shape) in _oracle_nodes().items()
        for key, m in maps.items()
        if int(np.prod(m.out_shape)) == int(np.prod(shape))
        and (m.kind == "dense" or len(shape) == 1 or tuple(m.out_shape) == shape)
    ]


def _node_jacobian(node: nir.NIRNode, shape: tuple[int, ...]) -> np.ndarray:
    """The float interpreter's matrix of ``node`` (bias removed; a Delay moves values, in time)."""
    if isinstance(node, nir.Delay):
        return np.eye(int(np.prod(shape)))
    step = linear_step(node, lambda v: torch.as_tensor(np.asarray(v, dtype=np.float64)))
    zero = step(torch.zeros(1, *shape, dtype=torch.float64))
    return _jacobian(lambda x: step(x) - zero, shape)


def _composed(node_name: str, map_name: str, m: Map | None = None, matrix_ok: bool = True):
    node, shape = _oracle_nodes()[node_name]
    out = tuple(_node_jacobian(node, shape).shape[:1]) if len(shape) == 1 else None
    if out is None:
        zero = torch.zeros(1, *shape, dtype=torch.float64)
        p = lambda v: torch.as_tensor(np.asarray(v, dtype=np.float64))  # noqa: E731
        out = shape if isinstance(node, nir.Delay) else tuple(linear_step(node, p)(zero).shape[1:])
    m = _oracle_maps()[map_name] if m is None else m
    return node, m, composition(node_name, node, m, shape, out, 1.0, matrix_ok)


@pytest.mark.parametrize("node_name,map_name", _oracle_cases())
def test_each_composition_is_the_interpreters_jacobian(node_name: str, map_name: str) -> None:
    """``compose(node, m)`` is the float interpreter's ``node`` after ``m``, as matrices, and
    keeps ``m``'s delay (plus a Delay node's) and recurrence; without weights, the same rule
    makes the same geometry; without ``matrix_ok``, the dense-matrix row is refused."""
    node, m, (rule, got) = _composed(node_name, map_name)
    expected = _node_jacobian(node, _oracle_nodes()[node_name][1]) @ m.matrix(m.values()).toarray()
    assert got.in_shape == m.in_shape
    assert np.allclose(got.matrix(got.values()).toarray(), expected, atol=1e-12)
    assert (got.delay, got.recurrent) == (4 if isinstance(node, nir.Delay) else 2, True)
    _, _, (bare_rule, bare) = _composed(node_name, map_name, replace(m, weight=None))
    assert (bare_rule, bare.geometry, bare.weight) == (rule, got.geometry, None)
    if rule is _dense_matrix:
        with pytest.raises(NoConvForm):
            _composed(node_name, map_name, matrix_ok=False)
    else:
        assert _composed(node_name, map_name, matrix_ok=False)[2][0] is rule


def test_every_row_of_the_composition_table_is_held_by_the_oracle() -> None:
    """Each (node type, map form, rule) of ``COMPOSITIONS`` makes the map of some case of
    :func:`test_each_composition_is_the_interpreters_jacobian`, and the last row (one dense
    matrix) does for every node type it names."""
    won = set()
    for node_name, map_name in _oracle_cases():
        node, m, (rule, _) = _composed(node_name, map_name)
        won.add((type(node), map_form(m), rule))
    *rows, last = COMPOSITIONS
    rows = {(t, form, rule) for types, forms, rule in rows for t in types for form in forms}
    assert rows - won == set()
    fall_back = {t for t, _, rule in won if rule is _dense_matrix}
    assert last[2] is _dense_matrix and fall_back == set(last[0])


def test_compose_refuses_what_has_no_synapse_group_form() -> None:
    """Per-neuron delays, a dilated or string-padded conv (before any fallback: also without
    ``matrix_ok``) and a node type no row names, each in one line naming the node."""
    m, n = identity((_C, _HW, _HW)), (_C, _HW, _HW)
    with pytest.raises(UserError, match="node 'd': per-neuron delays cannot be lowered"):
        compose("d", nir.Delay(delay=np.arange(32.0).reshape(n)), m, n, n, 1.0)
    dilated = nir.Conv2d(
        input_shape=(_HW, _HW),
        weight=np.ones((3, _C, 3, 3)),
        stride=1,
        padding=2,
        dilation=2,
        groups=1,
        bias=np.zeros(3),
    )
    for conv in (dilated, replace(dilated, dilation=1, padding="same")):
        for form, ok in ((m, True), (_oracle_maps()["dense"], False)):
            with pytest.raises(UserError, match="node 'c': dilated or string-padded convs"):
                compose("c", conv, form, n, (3, _HW, _HW), 1.0, ok)
    conv1d = nir.Conv1d(
        input_shape=4,
        weight=np.ones((1, 1, 1)),
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        bias=np.zeros(1),
    )
    with pytest.raises(UserError, match="node 'c1': Conv1d cannot be compiled for Loihi"):
        compose("c1", conv1d, identity((1, 4)), (1, 4), (1, 4), 1.0)
