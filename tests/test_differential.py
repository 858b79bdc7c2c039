"""Differential tests of the compiler: random graphs over every node type and parameter it takes,
with weights, biases and thresholds on a grid that the chip holds exactly, compiled by both
lowerings. The fast fixed-point simulator must then equal the float interpreter spike for spike
(docs/compile.md §3, "Exact where the graph is on a grid").

Why a grid makes compiling exact: every weight, bias and threshold of a population is a multiple
of one unit (``1 / den``), so its float voltage is a multiple of that unit too, and the
compiler's K (a multiple of the K that makes them all integers) turns it into an integer without
rounding. Thresholds lie half a unit off that grid, so a float voltage never ties with one and the
float interpreter's own rounding (``1/9`` of an average pool) cannot flip a spike.

A programmed reset (ir/resets.py: subtracting the threshold, late or at once, several spikes in
one step) moves the voltage off the grid by the threshold, so a voltage may tie with it. Those
graphs take sum pools where a 3x3 average pool was drawn: every value is then a binary fraction
that float64 holds exactly, and both sides decide every tie alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import nir
import numpy as np
import pytest
import torch

from danet_deploy.compile import compile_graph
from danet_deploy.converters.nir_import import from_nir
from danet_deploy.errors import UserError
from danet_deploy.ir.interpreter import ReferenceSimulator
from danet_deploy.profiles import load_profile
from danet_deploy.simulator.fixed import FixedSimulator

FAST_SEEDS = range(150)  # per lowering: 300 compiles in the fast layer
SLOW_SEEDS = range(150, 1150)  # under `slow`
STEPS, SAMPLES = 4, 3
POOLS = [(3, 1, 1), (2, 2, 0), (3, 2, 1)]  # kernel, stride, padding
FINEST = 36  # a grid finer than 1/36 (e.g. two average pools in a row) may need weights over 8 bits
PROGRAMMED = ["subtract", "snntorch-subtract", "spikingjelly-soft", "sinabs", "sinabs-nir"]
PROGRAMMED_SEEDS = range(40)  # per reset and lowering in the fast layer
PROGRAMMED_SLOW_SEEDS = range(40, 240)  # under `slow`


@dataclass
class _Builder:
    """A NIR graph grown node by node; ``den[name]``: its output is a multiple of ``1/den``."""

    rng: np.random.Generator
    nodes: dict[str, nir.NIRNode] = field(default_factory=dict)
    edges: list[tuple[str, str]] = field(default_factory=list)
    den: dict[str, int] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    top: dict[str, float] = field(default_factory=dict)  # a bound on its largest composed weight
    pointwise: dict[str, bool] = field(default_factory=dict)  # its map from the spikes has 1x1 taps
    fits: bool = True  # every population's weights fit 8 bits at its grid
    binary: bool = False  # values stay binary fractions: a 3x3 average pool becomes a sum pool

    def add(
        self,
        node: nir.NIRNode,
        sources: list[str],
        shape: tuple[int, ...],
        den: int,
        gain: float = 1.0,
        kernel: int = 1,
    ) -> str:
        """``node`` fed the sum of ``sources``; ``gain``: its largest |weight|, ``kernel``: its
        taps, which add up where the map before it has taps of its own."""
        name = f"n{len(self.nodes)}"
        self.nodes[name] = node
        self.edges += [(s, name) for s in sources]
        self.den[name] = math.lcm(*(self.den[s] for s in sources)) * den if sources else den
        self.shapes[name] = shape
        flat = all(self.pointwise[s] for s in sources)
        self.top[name] = sum(self.top[s] for s in sources) * gain * (1 if flat else kernel * kernel)
        self.pointwise[name] = flat and kernel == 1
        return name

    def halves(self, shape: tuple[int, ...], zero: float = 0.4) -> np.ndarray:
        """Weights in {-1, -1/2, 0, 1/2, 1}, zero with probability ``zero``."""
        w = self.rng.integers(-2, 3, shape) / 2
        return np.where(self.rng.random(shape) < zero, 0.0, w)

    def conv(self, sources: list[str], cout: int, k: int, stride: int) -> str:
        cin, h, _ = self.shapes[sources[0]]
        pad = k // 2
        bias = self.halves((cout,), zero=0.7) if self.rng.random() < 0.5 else np.zeros(cout)
        node = nir.Conv2d(
            input_shape=(h, h),
            weight=self.halves((cout, cin, k, k)),
            stride=stride,
            padding=pad,
            dilation=1,
            groups=1,
            bias=bias,
        )
        out = (h + 2 * pad - k) // stride + 1
        return self.add(node, sources, (cout, out, out), 2, 1.0, k)

    def pool(self, sources: list[str], geometry: int | None = None) -> str:
        """A sum or average pool that keeps the size (3x3, stride 1, padding 1) or halves it
        (2x2 stride 2, or 3x3 stride 2 padding 1: the SEW-ResNet stem's); ``geometry``: which."""
        c, h, _ = self.shapes[sources[0]]
        geometry = self.pool_geometry(h) if geometry is None else geometry
        k, s, p = POOLS[geometry]
        kind = str(self.rng.choice(["avg", "sum"]))
        if self.binary and k == 3:
            kind = "sum"
        cls = nir.AvgPool2d if kind == "avg" else nir.SumPool2d
        node = cls(kernel_size=np.array([k, k]), stride=np.array([s, s]), padding=np.array([p, p]))
        out = (h + 2 * p - k) // s + 1
        avg = kind == "avg"
        return self.add(
            node, sources, (c, out, out), k * k if avg else 1, 1 / (k * k) if avg else 1.0, k
        )

    def grid(self, sources: list[str]) -> int:
        return math.lcm(*(self.den[s] for s in sources))

    def pool_geometry(self, h: int) -> int:
        return int(self.rng.integers(len(POOLS) if h >= 4 else 1))

    def scale(self, sources: list[str]) -> str:
        shape = self.shapes[sources[0]]
        per_channel = self.rng.choice([0.5, 1.0, 2.0], shape[0])
        factor = np.broadcast_to(per_channel.reshape(-1, *[1] * (len(shape) - 1)), shape).copy()
        return self.add(nir.Scale(scale=factor), sources, shape, 2, 2.0)

    def neurons(self, sources: list[str]) -> str:
        """IF neurons (no leak: Loihi's integer voltage is then exact) with a threshold half a
        unit off the grid of their input, between about 0.25 and 1.5."""
        shape = self.shapes[sources[0]]
        den = math.lcm(*(self.den[s] for s in sources))
        thr = (int(self.rng.integers(den // 4, 3 * den // 2 + 1)) + 0.5) / den
        node = nir.IF(r=np.ones(shape), v_threshold=np.full(shape, thr))
        name = self.add(node, sources, shape, 1)
        self.fits &= (
            self.top[name] * 2 * den <= 254
        )  # the threshold's half unit: K = 2 den per unit
        self.den[name], self.top[name], self.pointwise[name] = 1, 1.0, True  # spikes
        return name


def random_graph(seed: int, binary: bool = False) -> nir.NIRGraph:
    """:func:`draw_graph` until one whose weights fit 8 bits on their grid (most do);
    ``binary``: with no 3x3 average pool (``_Builder.binary``)."""
    rng = np.random.default_rng(seed)
    while True:
        graph, fits = draw_graph(rng, binary)
        if fits:
            return graph


def draw_graph(rng: np.random.Generator, binary: bool = False) -> tuple[nir.NIRGraph, bool]:
    """Input spikes (2-3 x 8 x 8) -> 1-4 layers -> a readout. A layer is a sum of 1-4 spike
    streams of one shape (DA/SEW sums) through an optional pool into a conv (kernel 1 or 3,
    stride 1 or 2, padding k // 2), or 1-4 conv branches (each with an optional pool) summed into
    the neurons; an optional Scale and pool follow, then IF neurons. The readout sums 1-2 streams,
    may pool them, may pass a dense IF layer, and ends in an Affine map. Also whether every
    population's weights fit 8 bits on its grid (a bound: the largest weight of each map)."""
    b = _Builder(rng, binary=binary)
    c0 = int(rng.integers(2, 4))
    b.nodes["input"] = nir.Input(input_type={"input": np.array([c0, 8, 8])})
    b.den["input"], b.shapes["input"], b.top["input"], b.pointwise["input"] = (
        1,
        (c0, 8, 8),
        1.0,
        True,
    )
    streams = ["input"]
    for _ in range(int(rng.integers(1, 5))):
        shape = b.shapes[streams[rng.integers(len(streams))]]
        same = [s for s in streams if b.shapes[s] == shape]
        cout, stride = int(rng.integers(2, 5)), int(rng.choice([1, 2])) if shape[1] >= 4 else 1
        if rng.random() < 0.5:  # a sum of streams, then one conv
            picked = list(
                rng.choice(same, int(rng.integers(1, min(4, len(same)) + 1)), replace=False)
            )
            if rng.random() < 0.4:
                picked = [b.pool(picked)]
            out = [b.conv(picked, cout, int(rng.choice([1, 3])), stride)]
        else:  # branches summed into the neurons
            geometry = b.pool_geometry(shape[1]) if rng.random() < 0.5 else None
            out = []
            for _ in range(int(rng.integers(1, 5))):
                src = str(rng.choice(same))
                if geometry is not None:
                    src = b.pool([src], geometry)
                out.append(b.conv([src], cout, int(rng.choice([1, 3])), 1))
        if rng.random() < 0.4 and b.grid(out) <= FINEST // 2:
            out = [b.scale(out)]
        if rng.random() < 0.3 and b.shapes[out[0]][1] >= 4 and b.grid(out) <= FINEST // 9:
            out = [b.pool(out)]
        streams.append(b.neurons(out))
    shape = b.shapes[streams[-1]]
    same = [s for s in streams[1:] if b.shapes[s] == shape]
    head = list(rng.choice(same, int(rng.integers(1, min(2, len(same)) + 1)), replace=False))
    if rng.random() < 0.4:
        head = [b.pool(head)]
    flat = b.add(
        nir.Flatten(input_type={"input": np.array(b.shapes[head[0]])}, start_dim=0, end_dim=-1),
        head,
        (int(np.prod(b.shapes[head[0]])),),
        1,
    )
    if rng.random() < 0.3:
        n = int(rng.integers(4, 9))
        hidden = b.add(
            nir.Affine(b.halves((n, b.shapes[flat][0])), b.halves((n,), zero=0.7)),
            [flat],
            (n,),
            2,
            1.0,
            3,
        )
        flat = b.neurons([hidden])
    readout = b.add(
        nir.Affine(b.halves((5, b.shapes[flat][0])), b.halves((5,), zero=0.5)),
        [flat],
        (5,),
        2,
        1.0,
        3,
    )
    b.fits &= b.top[readout] * 2 * b.den[readout] <= 254
    b.nodes["output"] = nir.Output(output_type={"output": np.array([5])})
    b.edges.append((readout, "output"))
    return nir.NIRGraph(
        nodes=b.nodes, edges=b.edges, type_check=False, metadata={"timesteps": STEPS}
    ), b.fits


def _differences(seed: int, lowering: str, reset: str = "zero") -> tuple[list[str], int]:
    """Where the fast simulator's program and the float interpreter differ on ``seed``'s graph
    with its neurons reset by ``reset``, and how many spikes the program's neurons fired (-1:
    the compile refused it, :func:`_check`)."""
    graph = random_graph(seed, binary=reset != "zero")
    x = (
        torch.rand(
            SAMPLES,
            STEPS,
            *graph.nodes["input"].input_type["input"].tolist(),
            generator=torch.Generator().manual_seed(seed),
        )
        < 0.4
    ).double()
    flat = from_nir(graph, dt=1.0, reset=reset)
    reference = ReferenceSimulator(flat, dtype=torch.float64).run(x, record=True)
    try:
        program, _ = compile_graph(
            from_nir(graph, dt=1.0, reset=reset),
            "loihi2-sim",
            load_profile("loihi2"),
            lowering,
            x.float(),
        )
    except UserError as e:  # counts of thousands a step leave a threshold under one vth unit
        if not (reset.startswith("sinabs") and "its threshold rounds to 0" in str(e)):
            raise
        return [], -1
    inexact = [
        f"{n}: weight error {f.quant_error}"
        for n, f in program.fixed.items()
        if f.quant_error > 1e-12
    ]
    # plain floats: a checkpoint's chip_scales holds them, and its weights-only loader refuses numpy's
    assert all(type(f.scale) is float for f in program.fixed.values())
    fixed = FixedSimulator(program).run(x.float(), record=True)
    wrong = []
    for name, pop in program.populations.items():
        if pop.kind.name == "lif":
            got, want = fixed[name].double(), reference[name].reshape(fixed[name].shape)
            if not torch.equal(got, want):
                wrong.append(f"{name}: {int((got != want).sum())} of {got.numel()} spikes differ")
        elif pop.kind.name == "readout":
            got = fixed[name].double() * 64 / program.fixed[name].scale
            bias = program.readout_bias.get(name)
            if bias is not None:
                got = (
                    got
                    + torch.as_tensor(bias, dtype=torch.float64) * 64 / program.fixed[name].scale
                )
            want = reference[name].reshape(got.shape)
            if not torch.allclose(got, want, rtol=1e-9, atol=1e-9):
                wrong.append(
                    f"{name}: readout differs by up to {float((got - want).abs().max()):.3g}"
                )
    spikes = sum(
        int(fixed[n].sum()) for n, p in program.populations.items() if p.kind.name == "lif"
    )
    return inexact + wrong, spikes


@pytest.fixture
def one_thread():
    """Tiny graphs: torch's thread pool costs more than it gives (on 2 shared cores, 5x)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _check(seeds: range, lowering: str, reset: str = "zero") -> None:
    """Every seed's program equals the float interpreter, and few of them are silent (a
    graph whose neurons never fire would compare nothing). A multi-spike graph may be refused
    in one line where its counts (thousands a step: the graphs' weights are drawn for binary
    spikes) make a consumer's currents so large that its threshold rounds to 0; few are."""
    failed, silent, refused = {}, 0, 0
    for seed in seeds:
        wrong, spikes = _differences(seed, lowering, reset)
        if wrong:
            failed[seed] = wrong
        silent += not spikes
        refused += spikes < 0
    assert not failed, failed
    assert silent <= len(seeds) // 10, f"{silent} of {len(seeds)} graphs never fire"
    assert refused <= len(seeds) // 50, f"{refused} of {len(seeds)} graphs refused"


@pytest.mark.parametrize("lowering", ["expand", "relay"])
def test_random_graphs_on_the_grid_compile_exactly(lowering: str, one_thread) -> None:
    _check(FAST_SEEDS, lowering)


@pytest.mark.slow
@pytest.mark.parametrize("lowering", ["expand", "relay"])
def test_more_random_graphs_on_the_grid_compile_exactly(lowering: str, one_thread) -> None:
    _check(SLOW_SEEDS, lowering)


@pytest.mark.parametrize("reset", PROGRAMMED)
@pytest.mark.parametrize("lowering", ["expand", "relay"])
def test_random_graphs_with_programmed_resets_compile_exactly(
    lowering: str, reset: str, one_thread
) -> None:
    _check(PROGRAMMED_SEEDS, lowering, reset)


@pytest.mark.slow
@pytest.mark.parametrize("reset", PROGRAMMED)
@pytest.mark.parametrize("lowering", ["expand", "relay"])
def test_more_random_graphs_with_programmed_resets_compile_exactly(
    lowering: str, reset: str, one_thread
) -> None:
    _check(PROGRAMMED_SLOW_SEEDS, lowering, reset)


def _leaky(graph: nir.NIRGraph, rng: np.random.Generator) -> nir.NIRGraph:
    """``graph`` with each IF population made leaky (a LIF whose voltage keeps 1/2 to 4095/4096
    per step, and a bias), so that Lava's voltage decay and its rounding toward zero are run."""
    nodes = dict(graph.nodes)
    for name, node in graph.nodes.items():
        if isinstance(node, nir.IF):
            shape = node.v_threshold.shape
            keep = float(rng.choice([0.5, 0.75, 0.9, 0.999, 4095 / 4096]))
            nodes[name] = nir.LIF(
                tau=np.full(shape, 1 / (1 - keep)),
                r=np.full(shape, 1 / (1 - keep)),
                v_leak=np.full(shape, float(rng.choice([0.0, 0.3, -0.2]))),
                v_threshold=node.v_threshold,
            )
    return nir.NIRGraph(nodes=nodes, edges=graph.edges, type_check=False, metadata=graph.metadata)


@pytest.mark.parametrize("seed", range(60))
def test_the_vectorised_lif_equals_the_step_by_step_one(seed: int, one_thread, monkeypatch):
    """The fast simulator runs Lava's LIF twice: vectorised over the steps (``_neuron_steps``,
    float32 where exact) and step by step in float64 (``_stepwise``, for currents that decay,
    recurrent synapses and programmed resets). On leaky random graphs both give the same spikes
    in every population (the Lava runs hold the first to Lava; this holds the second to it)."""
    graph = _leaky(random_graph(seed), np.random.default_rng(seed))
    shape = graph.nodes["input"].input_type["input"].tolist()
    x = (torch.rand(8, 64, *shape, generator=torch.Generator().manual_seed(seed)) < 0.4).float()
    program, _ = compile_graph(
        from_nir(graph, dt=1.0, reset="zero"), "loihi2-sim", load_profile("loihi2"), "expand", x
    )
    assert any(0 < f.dv < 4096 for f in program.fixed.values())
    vectorised = FixedSimulator(program).run(x, record=True)
    monkeypatch.setattr(FixedSimulator, "_neuron_steps", FixedSimulator._stepwise)
    stepwise = FixedSimulator(program).run(x, record=True)
    for name, values in vectorised.items():
        assert torch.equal(values.double(), stepwise[name].double()), name
    assert sum(float(v.sum()) for n, v in vectorised.items() if n != "output") > 0
