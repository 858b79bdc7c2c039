"""Our SOP counts against NeuroBench's SynapticOperations, where the conventions meet.

It counts by hooking ``nn.Conv2d`` / ``nn.Linear`` calls. Every synapse term of
a compiled program becomes such a layer holding the term's quantised weights; at each
step it is called on the values its source population sent (recorded from the fast
simulator), so the peer sees the same events and weights our accountant sees. Where
the conventions differ (``sop-conventions.md``, ``docs/accounting.md``) the tests
pin down the difference instead of hiding it.
"""

from __future__ import annotations

from pathlib import Path

import nir
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from danet_deploy.account import Accountant, FloatActivity, neurobench_trained
from danet_deploy.compile import compile_graph
from danet_deploy.ir.program import Program
from danet_deploy.converters.nir_export import to_nir
from danet_deploy.converters.nir_import import read_nir
from danet_deploy.models import build
from danet_deploy.profiles import load_profile
from danet_deploy.simulator.fixed import FixedSimulator


def _key(name: str, back: bool = False) -> str:
    """A population's name as a torch module name (no dots) and back."""
    return name.replace("/", ".") if back else name.replace(".", "/")


class TermLayers(nn.Module):
    """A program's synapse terms as torch layers, driven step by step by recorded activity."""

    def __init__(self, program: Program) -> None:
        super().__init__()
        self.program = program
        self.sim = FixedSimulator(program)
        self.synapse_groups = []
        layers = []
        for name, pop in program.populations.items():
            for t in pop.synapse_groups:
                w = torch.tensor(t.weight_q, dtype=torch.float32)
                if t.map.kind == "conv":
                    layer = nn.Conv2d(
                        w.shape[1],
                        w.shape[0],
                        tuple(w.shape[2:]),
                        stride=t.map.stride,
                        padding=t.map.padding,
                        bias=False,
                    )
                else:
                    layer = nn.Linear(w.shape[1], w.shape[0], bias=False)
                layer.weight.data = w
                layers.append(layer)
                self.synapse_groups.append((t.source, t.map.in_shape))
        self.layers = nn.ModuleList(layers)
        # what each neuron population sends, through an activation NeuroBench hooks (spikes are
        # 0/1, so ReLU passes them as they are): its ActivationSparsity sees our neurons' output
        self.activations = nn.ModuleDict(
            {
                _key(name): nn.ReLU()
                for name, pop in program.populations.items()
                if pop.kind.name not in ("input", "readout")
            }
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [N, T, ...]
        rec = self.sim.run(x, record=True)
        for step in range(x.shape[1]):
            for key, activation in self.activations.items():
                activation(rec[_key(key, back=True)][step])
            for layer, (source, in_shape) in zip(self.layers, self.synapse_groups):
                values = rec[source][step].reshape(x.shape[0], *in_shape).contiguous()
                layer(values if isinstance(layer, nn.Conv2d) else values.reshape(x.shape[0], -1))
        return self.sim.scores_from(rec, x.shape[1]).float()


def _program(
    tmp_path: Path, arch: str, connection: str, lowering: str
) -> tuple[Program, torch.Tensor]:
    torch.manual_seed(0)
    model = build(arch, connection, 10, timesteps=3, input_shape=(1, 8, 8)).eval()
    nir.write(tmp_path / "g.nir", to_nir(model))
    x = torch.rand(6, 3, 1, 8, 8) * 2
    x[x < 0.4] = 0  # some zero pixels: MACs count nonzero inputs only
    program, _ = compile_graph(
        read_nir(tmp_path / "g.nir"), "loihi2-sim", load_profile("loihi2"), lowering, x
    )
    return program, x


def _report(program: Program, x: torch.Tensor) -> dict:
    acc = Accountant(program)
    acc.add(x)
    return acc.report(load_profile("loihi2"), x.shape[1])


def _ours(program: Program, x: torch.Tensor) -> dict[str, float]:
    return _report(program, x)["totals"]


def _neurobench(program: Program, x: torch.Tensor) -> dict:
    """NeuroBench 2.3's own Benchmark on the program's terms, driven by what the program sent."""
    from neurobench.benchmarks import Benchmark
    from neurobench.metrics.workload import (
        ActivationSparsity,
        ActivationSparsityByLayer,
        SynapticOperations,
    )
    from neurobench.models import TorchModel

    loader = DataLoader(TensorDataset(x, torch.zeros(x.shape[0], dtype=torch.long)), batch_size=4)
    bench = Benchmark(
        TorchModel(TermLayers(program)),
        loader,
        [],
        [],
        [[], [SynapticOperations, ActivationSparsity, ActivationSparsityByLayer]],
    )
    return bench.run(quiet=True)


def test_neurobench_agrees_on_a_plain_network(tmp_path: Path) -> None:
    """Binary spikes into conv layers (borders, strides), a real-valued stem: the conventions meet.

    NeuroBench counts (nonzero input, nonzero weight) pairs that reach an output, as
    ACs when a call's input is all in {-1, 0, 1}, else as MACs with inputs binarised;
    Dense counts every weight of every input position that reaches an output.
    """
    program, x = _program(tmp_path, "digits_resnet", "plain", "expand")
    report, nb = _report(program, x), _neurobench(program, x)
    ours, deployed = report["totals"], report["neurobench"]["deployed"]
    assert ours["sops"] > 0 and ours["macs"] > 0
    assert nb["SynapticOperations"]["Effective_ACs"] == pytest.approx(ours["sops"], rel=1e-12)
    assert nb["SynapticOperations"]["Effective_MACs"] == pytest.approx(ours["macs"], rel=1e-12)
    for key in ("Effective_ACs", "Effective_MACs", "Dense"):
        assert deployed["SynapticOperations"][key] == pytest.approx(
            nb["SynapticOperations"][key], rel=1e-12
        ), key
    assert 0 < nb["ActivationSparsity"] < 1
    assert deployed["ActivationSparsity"] == pytest.approx(nb["ActivationSparsity"], rel=1e-12)
    by_layer = {_key(name, back=True): v for name, v in nb["ActivationSparsityByLayer"].items()}
    assert by_layer.keys() == deployed["ActivationSparsityByLayer"].keys()
    assert all(
        deployed["ActivationSparsityByLayer"][k] == pytest.approx(v, rel=1e-12)
        for k, v in by_layer.items()
    )
    # Loihi updates every neuron at every step; a LIF without current costs NeuroBench's Leaky (4)
    neurons = sum(
        program.mapping[name]["neurons"]
        for name, pop in program.populations.items()
        if pop.kind.name != "input"
    )
    assert deployed["MembraneUpdates"] == neurons * x.shape[1]
    assert deployed["NeuronOperations"] == {
        "Effective Neuron Ops": 4 * neurons * x.shape[1],
        "Neuron Dense Ops": 4 * neurons * x.shape[1],
    }


def test_neurobench_classes_relayed_sums_as_macs(tmp_path: Path) -> None:
    """DA sums lowered through relays: the same pairs, but NeuroBench calls a step with any
    relay value beyond 1 a MAC step, where we count graded ops (one message per nonzero);
    our Effective_MACs count every graded message as a MAC, so only the sums meet."""
    program, x = _program(tmp_path, "resnet20", "da", "relay")
    report, nb = _report(program, x), _neurobench(program, x)
    ours, deployed = report["totals"], report["neurobench"]["deployed"]["SynapticOperations"]
    nb = nb["SynapticOperations"]
    assert ours["graded_ops"] > 0
    assert nb["Effective_ACs"] + nb["Effective_MACs"] == pytest.approx(
        ours["sops"] + ours["graded_ops"] + ours["macs"], rel=1e-12
    )
    assert nb["Effective_MACs"] > ours["macs"]  # relay steps moved to MACs
    assert deployed["Effective_MACs"] >= nb["Effective_MACs"] and deployed[
        "Dense"
    ] == pytest.approx(nb["Dense"])


def _trained(connection: str) -> tuple[nn.Module, DataLoader, dict, FloatActivity]:
    """A zoo snnTorch model (stem channel 0 without weights), its samples, and the report's
    ``neurobench.trained`` counted by our hooks while it runs them."""
    torch.manual_seed(0)
    model = build("digits_resnet", connection, 10, timesteps=3).eval()
    with torch.no_grad():
        model.stem.conv.weight[0] = 0  # some zero weights to count
    x = torch.rand(6, 1, 8, 8) * 3
    x[x < 0.6] = 0
    loader = DataLoader(TensorDataset(x, torch.zeros(6, dtype=torch.long)), batch_size=3)
    activity = FloatActivity(model)
    with torch.no_grad():
        for xb, _ in loader:
            model(xb)
    activity.close()
    return model, loader, neurobench_trained(model, activity), activity


def _neurobench_float(module: nn.Module, loader: DataLoader) -> dict:
    """NeuroBench 2.3's own Benchmark on a float module that takes the whole time series per
    call, snnTorch's neurons hooked as activations."""
    from neurobench.benchmarks import Benchmark
    from neurobench.metrics.static import ConnectionSparsity, Footprint
    from neurobench.metrics.workload import (
        ActivationSparsity,
        MembraneUpdates,
        NeuronOperations,
        SynapticOperations,
    )
    from neurobench.models import TorchModel
    import snntorch

    wrapped = TorchModel(module)
    wrapped.add_activation_module(snntorch.SpikingNeuron)
    return Benchmark(
        wrapped,
        loader,
        [],
        [],
        [
            [Footprint, ConnectionSparsity],
            [ActivationSparsity, SynapticOperations, MembraneUpdates, NeuronOperations],
        ],
    ).run(quiet=True)


@pytest.mark.parametrize("connection", ["plain", "da"])
def test_neurobench_on_the_snntorch_model_equals_ours_as_trained(connection: str) -> None:
    """NeuroBench's own Benchmark on the zoo's snnTorch model: Footprint, ConnectionSparsity
    (it rounds to 4 places), ActivationSparsity, SynapticOperations and MembraneUpdates equal the report's
    ``neurobench.trained``, which our hooks count while the float model runs (a DA network's
    real-valued sums into convolutions are MAC calls for both)."""
    model, loader, ours, activity = _trained(connection)
    nb = _neurobench_float(model, loader)
    assert ours["Footprint"] == nb["Footprint"] > 0
    assert (
        0 < ours["ConnectionSparsity"]
        and round(ours["ConnectionSparsity"], 4) == nb["ConnectionSparsity"]
    )
    assert 0 < nb["ActivationSparsity"] < 1 and ours["ActivationSparsity"] == pytest.approx(
        nb["ActivationSparsity"]
    )
    assert (
        nb["SynapticOperations"]["Effective_ACs"] > 0
        and nb["SynapticOperations"]["Effective_MACs"] > 0
    )
    for key in ("Effective_ACs", "Effective_MACs", "Dense"):
        assert ours["SynapticOperations"][key] == pytest.approx(
            nb["SynapticOperations"][key], rel=1e-12
        ), key
    # NeuroBench skips a membrane that did not move (channel 0 of the stem has no weights): fewer
    # than the neurons x T that Loihi updates, which the deployed figure counts
    neuron_steps = activity.counts["outputs"] / activity.samples
    assert (
        0 < nb["MembraneUpdates"] < neuron_steps
        and ours["MembraneUpdates"] == nb["MembraneUpdates"]
    )
    # snnTorch's Leaky with reset to zero: 4 operations per update, by NeuroBench's table
    assert nb["NeuronOperations"]["Effective Neuron Ops"] == 4 * nb["MembraneUpdates"]
    assert ours["NeuronOperations"] == pytest.approx(nb["NeuronOperations"], rel=1e-12)


def test_deployed_neuron_operations_charge_a_current_as_neurobench_charges_synaptic() -> None:
    """A CubaLIF keeps a current on Loihi (du < 4095): NeuroBench gives snnTorch's Synaptic with
    reset to zero 8 operations per update, Leaky 4; every neuron updates at every step."""
    from danet_deploy.converters.nir_import import from_nir

    rng = np.random.default_rng(0)
    one = np.ones(6)
    graph = nir.NIRGraph.from_list(
        nir.Input(np.array([4])),
        nir.Linear(rng.normal(size=(6, 4))),
        nir.CubaLIF(
            tau_syn=2e-4 * one,
            tau_mem=5e-4 * one,
            r=one,
            v_leak=0 * one,
            v_threshold=0.1 * one,
            w_in=one,
        ),
        nir.Linear(rng.normal(size=(3, 6))),
        nir.Output(np.array([3])),
    )
    x = torch.rand(5, 4, 4)
    program, _ = compile_graph(from_nir(graph), "loihi2-sim", load_profile("loihi2"), "expand", x)
    cuba = [name for name, f in program.fixed.items() if f.du < 4095]
    assert len(cuba) == 1
    ops = _report(program, x)["neurobench"]["deployed"]["NeuronOperations"]
    expected = sum(
        program.mapping[name]["neurons"] * 4 * (8 if name in cuba else 4)
        for name, pop in program.populations.items()
        if pop.kind.name != "input"
    )
    assert ops == {"Effective Neuron Ops": expected, "Neuron Dense Ops": expected}


class _NirScale(nn.Module):
    """NIR's ``Scale`` (x * s), which snnTorch's importer does not map (DA, SEW and MS graphs hold it)."""

    def __init__(self, node: nir.Scale) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(np.asarray(node.scale), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class _ExportedGraph(nn.Module):
    """The exported graph.nir as snnTorch reads it back (its own node conversions, through
    nirtorch), run over ``T`` steps per call and averaged, as the zoo's models are."""

    def __init__(self, graph: nir.NIRGraph, steps: int) -> None:
        import nirtorch
        from snntorch import import_nir

        super().__init__()
        convert = lambda node: import_nir._nir_to_snntorch_module(node, init_hidden=True)  # noqa: E731
        node_map = {
            kind: convert
            for kind in (
                nir.Affine,
                nir.Linear,
                nir.Conv2d,
                nir.Flatten,
                nir.AvgPool2d,
                nir.IF,
                nir.LIF,
                nir.CubaLIF,
            )
        }
        self.net, self.steps = (
            nirtorch.nir_to_torch(graph, {**node_map, nir.Scale: _NirScale}),
            steps,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import snntorch.utils

        snntorch.utils.reset(self.net)
        return sum(self.net(x)[0].flatten(1) for _ in range(self.steps)) / self.steps


def _imported_footprint(graph: nir.NIRGraph) -> int:
    """Bytes snnTorch's importer holds for ``graph`` (float32), counted from the NIR nodes: each
    conv's or affine map's weight and bias (BatchNorm folded in), each LIF's decay per neuron
    (NIR writes tau per neuron), its float32 threshold and graded-spike factor and its int64
    reset mode, each Scale's factors (the membrane is empty before the first step)."""
    size = 0
    for node in graph.nodes.values():
        if isinstance(node, (nir.Conv2d, nir.Affine, nir.Linear)):
            size += 4 * (
                node.weight.size
                + (node.bias.size if getattr(node, "bias", None) is not None else 0)
            )
        elif isinstance(node, nir.LIF):
            size += 4 * (node.tau.size + 2) + 8
        elif isinstance(node, nir.Scale):
            size += 4 * np.asarray(node.scale).size
    return size


@pytest.mark.parametrize("connection", ["plain", "da", "sew"])
def test_neurobench_on_the_exported_graph_equals_ours_as_trained(connection: str) -> None:
    """NeuroBench's own Benchmark on the exported float graph, read back by snnTorch: every
    workload metric equals the report's ``neurobench.trained`` (the graph computes what the model
    does); Footprint is the graph's own (BatchNorm folded, decays per neuron), not the model's."""
    model, loader, ours, _ = _trained(connection)
    graph = to_nir(model)
    nb = _neurobench_float(_ExportedGraph(graph, 3).eval(), loader)
    assert (
        nb["SynapticOperations"]["Effective_ACs"] > 0
        and nb["SynapticOperations"]["Effective_MACs"] > 0
    )
    # float32 BatchNorm folding may move a membrane by one rounding step: a spike could flip on
    # some CPU, so the activity-driven counts agree within a spike's worth, not bit for bit
    for key in ("Effective_ACs", "Effective_MACs"):
        assert nb["SynapticOperations"][key] == pytest.approx(
            ours["SynapticOperations"][key], rel=1e-3
        ), key
    assert nb["SynapticOperations"]["Dense"] == ours["SynapticOperations"]["Dense"]
    assert nb["ActivationSparsity"] == pytest.approx(ours["ActivationSparsity"], abs=1e-3)
    assert nb["MembraneUpdates"] == pytest.approx(ours["MembraneUpdates"], rel=1e-3)
    assert nb["NeuronOperations"] == pytest.approx(ours["NeuronOperations"], rel=1e-3)
    assert round(ours["ConnectionSparsity"], 4) == nb["ConnectionSparsity"]
    assert nb["Footprint"] == _imported_footprint(graph) != ours["Footprint"]
