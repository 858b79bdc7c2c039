"""from_torch: PyTorch spiking modules (snnTorch, SpikingJelly) -> the NIR graph every command reads.

Each network is traced, read back through ``from_nir`` (the boundary every .nir file crosses)
and run by the float interpreter; its outputs are compared with the framework's own forward
on every output value of every step (docs/nir.md, "PyTorch modules").
"""

from __future__ import annotations

import hashlib
import json

from pathlib import Path

import pytest
import torch
from torch import nn

import snntorch as snn
import snntorch.utils

from danet_deploy.converters.nir_import import from_nir
from danet_deploy.ir.interpreter import ReferenceSimulator
from danet_deploy.errors import UserError
from danet_deploy.frontends import from_torch

T, N = 6, 4


def simulate(graph, x: torch.Tensor) -> torch.Tensor:
    """The float interpreter's first output for ``x`` ``[T, N, ...]``, as ``[T, N, ...]``."""
    flat = from_nir(graph)
    return ReferenceSimulator(flat).run(x.transpose(0, 1))[flat.outputs[0]]


def snntorch_forward(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """snnTorch's own run of a single-step module over ``x`` ``[T, N, ...]`` (its first output)."""
    snntorch.utils.reset(net)
    with torch.no_grad():
        outs = [net(x[t]) for t in range(len(x))]
    return torch.stack([o[0] if isinstance(o, tuple) else o for o in outs])


def spikes(*shape: int, p: float = 0.3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(*shape, generator=g) < p).float()


def leaky(reset: str, **kw) -> snn.Leaky:
    return snn.Leaky(beta=0.85, threshold=0.5, init_hidden=True, reset_mechanism=reset, **kw)


def randomise_bn(net: nn.Module) -> nn.Module:
    """BatchNorm statistics and affine parameters far from the identity, so that folding shows."""
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.2)
    return net.eval()


class SnnResidual(nn.Module):
    """A residual snnTorch conv net: SEW-style spike sum, a current shortcut, BatchNorm, max pool
    on spikes, ``torch.flatten`` and a readout ``Leaky`` (the shape snnTorch's exporter refuses)."""

    def __init__(self, reset: str) -> None:
        super().__init__()
        self.conv1, self.lif1 = nn.Conv2d(2, 8, 3, padding=1), leaky(reset)
        self.conv2, self.bn2, self.lif2 = (
            nn.Conv2d(8, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
            leaky(reset),
        )
        self.conv3, self.lif3 = nn.Conv2d(8, 8, 3, padding=1), leaky(reset)
        self.pool = nn.MaxPool2d(2)
        self.fc, self.lif4 = nn.Linear(8 * 4 * 4, 10), leaky(reset, output=True)

    def forward(self, x: torch.Tensor):
        s1 = self.lif1(self.conv1(x))
        s2 = self.lif2(self.bn2(self.conv2(s1)))
        s3 = self.lif3(self.conv3(s1 + s2) + self.conv1(x))
        return self.lif4(self.fc(torch.flatten(self.pool(s3), 1)))


class SnnExplicitState(nn.Module):
    """snnTorch's other style: the membranes passed in and out by the caller."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 8, 3, stride=2, padding=1)
        self.lif1 = snn.Leaky(beta=0.9, threshold=0.5, reset_mechanism="zero")
        self.fc = nn.Linear(8 * 4 * 4, 10)
        self.lif2 = snn.Leaky(beta=0.7, threshold=0.2, reset_mechanism="zero")

    def forward(self, x, mem1, mem2):
        spk1, mem1 = self.lif1(self.conv(x), mem1)
        spk2, mem2 = self.lif2(self.fc(spk1.flatten(1)), mem2)
        return spk2, mem1, mem2


def sequential(reset: str) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 8, 3, padding=1),
        leaky(reset),
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, 10),
        leaky(reset, output=True),
    )


def check_equal(graph, net_forward, x: torch.Tensor) -> torch.Tensor:
    """Every output value of every step equal; returns the reference (its activity is checked)."""
    ours, theirs = simulate(graph, x), net_forward(x)
    assert ours.shape == theirs.shape
    assert torch.equal(ours, theirs), f"max |difference| {(ours - theirs).abs().max().item()}"
    return theirs


@pytest.mark.parametrize("reset", ["zero", "subtract"])
@pytest.mark.parametrize("build", [sequential, SnnResidual])
def test_snntorch_conv_nets_match_snntorch(build, reset):
    torch.manual_seed(0)
    net = randomise_bn(build(reset))
    x = spikes(T, N, 2, 8, 8)
    graph = from_torch(net, x[0])
    ref = check_equal(graph, lambda v: snntorch_forward(net, v), x)
    assert 0 < ref.sum() < ref.numel()  # the output fires, and not everywhere
    lifs = [n for n in graph.nodes.values() if n.metadata.get("framework") == "snntorch"]
    assert {n.metadata["reset"] for n in lifs} == {
        "zero" if reset == "zero" else "snntorch-subtract"
    }


def test_snntorch_explicit_state_matches_snntorch():
    """Membranes passed in and out: the extra arguments and outputs are state, not signal."""
    torch.manual_seed(0)
    net = SnnExplicitState().eval()
    x = spikes(T, N, 2, 8, 8)

    def forward(v: torch.Tensor) -> torch.Tensor:
        mem1, mem2, outs = net.lif1.reset_mem(), net.lif2.reset_mem(), []
        with torch.no_grad():
            for t in range(len(v)):
                spk, mem1, mem2 = net(v[t], mem1, mem2)
                outs.append(spk)
        return torch.stack(outs)

    ref = check_equal(from_torch(net, x[0]), forward, x)
    assert 0 < ref.sum() < ref.numel()


def test_danet_deploy_exports_from_torch():
    import danet_deploy

    assert danet_deploy.from_torch is from_torch


# --- SpikingJelly 2.x ---------------------------------------------------------------------------


def spikingjelly_forward(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """SpikingJelly's own run over ``x`` ``[T, N, ...]``: whole in multi-step mode, else step by step."""
    from spikingjelly.activation_based import functional

    functional.reset_net(net)
    multi = any(getattr(m, "step_mode", "s") == "m" for m in net.modules())
    with torch.no_grad():
        return net(x) if multi else torch.stack([net(x[t]) for t in range(len(x))])


def active_bn(net: nn.Module) -> nn.Module:
    """BatchNorm that keeps every layer of a ResNet firing (20-50% of its neurons), so that
    equality of the outputs is equality of every layer's spikes, not of silence."""
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) * 0.5 + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) * 2 + 1)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.3 + 0.3)
    return net.eval()


def spikingjelly_resnet(name: str, cnf: str | None = None, multi_step: bool = True) -> nn.Module:
    """A ResNet-18 exactly as SpikingJelly builds it (IFNode, BatchNorm unfused, MaxPool,
    AdaptiveAvgPool), 10 classes, its BatchNorm statistics made active."""
    from spikingjelly.activation_based import functional, neuron, surrogate
    from spikingjelly.activation_based.model import sew_resnet, spiking_resnet

    torch.manual_seed(0)
    kw = dict(
        spiking_neuron=neuron.IFNode,
        num_classes=10,
        surrogate_function=surrogate.ATan(),
        detach_reset=True,
    )
    net = (
        sew_resnet.sew_resnet18(cnf=cnf, **kw)
        if name == "sew"
        else spiking_resnet.spiking_resnet18(**kw)
    )
    if multi_step:
        functional.set_step_mode(net, "m")
    return active_bn(net)


def image(seed: int = 0, size: int = 32) -> torch.Tensor:
    """A real-valued input ``[T, N, 3, size, size]`` (SpikingJelly's direct encoding: the same
    frame each step would hide the dynamics, so each step differs)."""
    return torch.rand(4, 2, 3, size, size, generator=torch.Generator().manual_seed(seed))


def spike_rates(graph, x: torch.Tensor) -> dict[str, float]:
    """Each spiking node's firing rate on ``x`` (in the float interpreter)."""
    import nir

    flat = from_nir(graph)
    rec = ReferenceSimulator(flat).run(x.transpose(0, 1), record=True)
    return {
        n: v.mean().item() for n, v in rec.items() if isinstance(flat.nodes[n], (nir.IF, nir.LIF))
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, cnf", [("sew", "ADD"), ("sew", "IAND"), ("sew", "AND"), ("spiking", None)]
)
def test_spikingjelly_resnet18_matches_spikingjelly(name, cnf):
    net, x = spikingjelly_resnet(name, cnf), image()
    graph = from_torch(net, x[0])
    check_equal(graph, lambda v: spikingjelly_forward(net, v), x)
    rates = spike_rates(graph, x)
    assert len(rates) == (20 if name == "sew" else 17)  # every IFNode (SEW: + 3 downsample neurons)
    assert all(r > 0.05 for r in rates.values()), rates  # every layer fires


class JellyNet(nn.Module):
    """SpikingJelly's layer wrappers and containers around LIF, parametric LIF, IF and CUBA LIF
    neurons (hard and soft reset), with a membrane-shortcut block (MS-ResNet style: the sum of currents
    feeds the neuron) and SEW's IAND written out."""

    def __init__(self, soft: bool, decay_input: bool, multi_step: bool) -> None:
        from spikingjelly.activation_based import functional, layer, neuron

        super().__init__()
        v_reset = None if soft else 0.0
        stem = (nn.Conv2d(2, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
        self.stem = (
            layer.SeqToANNContainer(*stem) if multi_step else nn.Sequential(*stem)
        )  # multi-step only
        self.sn1 = neuron.LIFNode(tau=2.0, decay_input=decay_input, v_reset=v_reset)
        self.conv = layer.Conv2d(8, 8, 3, padding=1)
        self.bn = layer.BatchNorm2d(8)
        self.sn2 = neuron.ParametricLIFNode(init_tau=3.0, v_threshold=0.8, v_reset=v_reset)
        self.pool = layer.MaxPool2d(2)
        self.gap = layer.AdaptiveAvgPool2d((2, 2))
        self.flat = layer.Flatten()
        self.drop = layer.Dropout(0.5)
        self.fc = layer.Linear(8 * 2 * 2, 10)
        self.sn3 = neuron.IFNode(v_threshold=0.5, v_reset=v_reset)
        self.fc2 = layer.Linear(10, 10)
        self.sn4 = neuron.CUBALIFNode(c_decay=0.6, v_decay=0.8, v_threshold=0.4, v_reset=v_reset)
        if multi_step:
            functional.set_step_mode(self, "m")

    def forward(self, x):
        s1 = self.sn1(self.stem(x))
        s2 = self.sn2(self.bn(self.conv(s1)) + self.stem(x))  # membrane shortcut: currents summed
        gated = s2 * (1.0 - s1)  # SEW IAND, as its sew_function writes it
        s3 = self.sn3(self.fc(self.drop(self.flat(self.gap(self.pool(gated))))))
        return self.sn4(self.fc2(s3))


@pytest.mark.parametrize("multi_step", [False, True])
@pytest.mark.parametrize("soft, decay_input", [(False, True), (True, False)])
def test_spikingjelly_neurons_and_layers_match(multi_step, soft, decay_input):
    torch.manual_seed(0)
    net = randomise_bn(JellyNet(soft, decay_input, multi_step))
    x = spikes(T, N, 2, 8, 8, p=0.5) * 1.5
    graph = from_torch(net, x[0])
    ref = check_equal(graph, lambda v: spikingjelly_forward(net, v), x)
    assert 0 < ref.sum() < ref.numel()
    resets = {n.metadata["reset"] for n in graph.nodes.values() if "reset" in n.metadata}
    assert resets == {"spikingjelly-soft" if soft else "spikingjelly"}
    assert graph.metadata["frameworks"] == '["spikingjelly"]'
    assert all(
        n.metadata["fires_at"] == "v >= v_threshold"
        for n in graph.nodes.values()
        if "reset" in n.metadata
    )


# --- what is refused, in one line naming the module and its type ---------------------------------


class MaxPoolOnReal(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.pool, self.lif = nn.Conv2d(2, 4, 3), nn.MaxPool2d(2), leaky("zero")

    def forward(self, x):
        return self.lif(self.pool(self.conv(x)))


class RealProduct(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.lif = nn.Linear(4, 4), nn.Linear(4, 4), leaky("zero")

    def forward(self, x):
        return self.lif(self.a(x) * self.b(x))


class ScaledSum(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.lif = nn.Linear(4, 4), nn.Linear(4, 4), leaky("zero")

    def forward(self, x):
        return self.lif(torch.sub(self.a(x), self.b(x), alpha=2))


class Relu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc, self.lif = nn.Linear(4, 4), leaky("zero")

    def forward(self, x):
        return self.lif(torch.relu(self.fc(x)))


@pytest.mark.parametrize(
    "net, x, message",
    [
        (
            MaxPoolOnReal(),
            torch.zeros(1, 2, 6, 6),
            "module 'pool' (torch.nn.modules.pooling.MaxPool2d): max pooling of real values has no NIR form",
        ),
        (
            RealProduct(),
            torch.zeros(1, 4),
            "operation 'mul' (call_function _operator.mul): a product of values that are not binary spikes",
        ),
        (
            Relu(),
            torch.zeros(1, 4),
            "operation 'relu' (call_function torch.relu): the function torch.relu has no NIR",
        ),
        (
            ScaledSum(),
            torch.zeros(1, 4),
            "operation 'sub' (call_function torch.sub): torch.sub with alpha=2 has no NIR mapping",
        ),
        (
            nn.Sequential(nn.Linear(4, 4), nn.GELU()),
            torch.zeros(1, 4),
            "module '1' (torch.nn.modules.activation.GELU): no NIR mapping for this module",
        ),
        (
            nn.Sequential(nn.Linear(4, 4), snn.Alpha(alpha=0.9, beta=0.8, init_hidden=True)),
            torch.zeros(1, 4),
            "module '1' (snntorch._neurons.alpha.Alpha): no NIR mapping for this neuron",
        ),
        (
            nn.Sequential(nn.Linear(4, 4), leaky("none")),
            torch.zeros(1, 4),
            "module '1' (snntorch._neurons.leaky.Leaky): reset_mechanism='none' (no reset) has no NIR neuron",
        ),
    ],
)
def test_refusals_name_the_module_and_its_type(net, x, message):
    with pytest.raises(UserError) as e:
        from_torch(net, x)
    assert str(e.value).startswith(message)
    assert "\n" not in str(e.value)


def test_the_module_is_left_as_it_was():
    """Tracing runs a copy: the caller's neurons keep their state, its modes stay as set."""
    from spikingjelly.activation_based import functional

    net = JellyNet(soft=False, decay_input=True, multi_step=True).train()
    functional.reset_net(net)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    from_torch(net, torch.ones(2, 2, 8, 8))
    assert net.training and net.sn1.step_mode == "m" and isinstance(net.sn1.v, float)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


# --- the command line: MODEL as package.module:factory ------------------------------------------

NETS_PY = """
import snntorch as snn
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        lif = lambda: snn.Leaky(beta=0.85, threshold=0.5, init_hidden=True, reset_mechanism="zero")
        self.conv1, self.lif1 = nn.Conv2d(2, 8, 3, padding=1), lif()
        self.conv2, self.bn2, self.lif2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), lif()
        self.fc, self.lif3 = nn.Linear(8 * 4 * 4, 10), lif()
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        s1 = self.lif1(self.conv1(x))
        s2 = self.lif2(self.bn2(self.conv2(s1)) + s1)  # residual: the spikes join the current
        return self.lif3(self.fc(torch.flatten(self.pool(s2), 1)))


def build():
    return Net()
"""


@pytest.fixture()
def nets_module(tmp_path):
    """``mynets.py`` in ``tmp_path``, a checkpoint of trained-looking weights for it, and spike data."""
    import importlib.util

    (tmp_path / "mynets.py").write_text(NETS_PY)
    spec = importlib.util.spec_from_file_location("mynets_for_test", tmp_path / "mynets.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(5)
    net = randomise_bn(mod.build())
    torch.save(net.state_dict(), tmp_path / "ckpt.pth")
    x = spikes(T, 8, 2, 8, 8, p=0.4)
    torch.save(
        {"inputs": x.transpose(0, 1).contiguous(), "labels": torch.zeros(8, dtype=torch.long)},
        tmp_path / "x.pt",
    )
    return net, x


@pytest.mark.slow
def test_cli_exports_a_module_factory_and_simulates_it_as_snntorch_runs_it(tmp_path, nets_module):
    from tests.conftest import run_cli

    net, x = nets_module
    run_cli(
        "export",
        "mynets:build",
        "--weights",
        "ckpt.pth",
        "--input-shape",
        "2,8,8",
        "-T",
        str(T),
        "--target",
        "loihi2-sim",
        "--data",
        "tensor:x.pt",
        "-o",
        "out",
        cwd=tmp_path,
        check=True,
    )
    assert {"graph.nir", "program.h5", "manifest.json"} <= {
        p.name for p in (tmp_path / "out").iterdir()
    }
    made = json.loads((tmp_path / "out" / "manifest.json").read_text())["hashes"]["made_from"]
    assert made["model"] == {  # docs/artifacts.md: a module by its spec and its weights' sha256
        "name": "mynets:build",
        "kind": "module",
        "sha256": hashlib.sha256((tmp_path / "ckpt.pth").read_bytes()).hexdigest(),
    }
    proc = run_cli(
        "simulate",
        "out/graph.nir",
        "--data",
        "tensor:x.pt",
        "--save-outputs",
        "counts.pt",
        "--json",
        cwd=tmp_path,
        check=True,
    )
    assert "assuming" not in proc.stderr  # the graph states its dt, resets and discretisation
    counts = torch.load(tmp_path / "counts.pt")["outputs"]
    ref = snntorch_forward(net, x).sum(0)
    assert torch.equal(counts.float(), ref) and ref.sum() > 0
    fixed = run_cli("simulate", "out", "--data", "tensor:x.pt", "--json", cwd=tmp_path, check=True)
    assert '"samples": 8' in fixed.stdout


@pytest.mark.slow  # each runs the CLI in a fresh interpreter
@pytest.mark.parametrize(
    "args, names",
    [
        (
            ["nosuchmodule:build", "--input-shape", "2,8,8"],
            ["nosuchmodule:build", "cannot import module"],
        ),
        (
            ["mynets:nothing", "--input-shape", "2,8,8"],
            ["mynets:nothing", "has no attribute 'nothing'"],
        ),
        (["mynets:build"], ["mynets:build", "needs --input-shape"]),
        (
            ["mynets:build", "--input-shape", "3,8,8"],
            ["mynets.Net", "does not run on an input of shape (1, 3, 8, 8)"],
        ),
        (
            ["mynets:build", "--input-shape", "2,8,8", "--weights", "x.pt"],
            ["--weights x.pt", "does not fit"],
        ),
        (
            ["x.pt", "--input-shape", "2,8,8"],
            ["x.pt", "--input-shape applies to a package.module:factory MODEL"],
        ),
    ],
)
def test_cli_module_errors_are_one_line(tmp_path, nets_module, args, names):
    from tests.conftest import one_line_error, run_cli

    proc = run_cli("export", *args, "-o", "out", cwd=tmp_path)
    one_line_error(proc, *names)
    assert not (tmp_path / "out").exists()


def rounded_to_8_bits(net: nn.Module) -> nn.Module:
    """A copy of ``net`` whose conv and linear weights are rounded to 8 bits (255 levels, one
    step per tensor: its largest |weight| / 127), all else float: the framework's own
    quantisation baseline."""
    import copy

    net = copy.deepcopy(net)
    for m in net.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            step = m.weight.detach().abs().max() / 127
            m.weight.data = torch.round(m.weight.data / step) * step
    return net


def argmax_agreement(scores: torch.Tensor, reference: torch.Tensor) -> int:
    return int((scores.argmax(1) == reference.argmax(1)).sum())


def export_to_loihi2_sim(tmp_path: Path, net: nn.Module, x: torch.Tensor) -> Path:
    """``net`` traced on ``x`` ``[T, N, ...]``, saved with ``nir.write`` and exported to
    ``loihi2-sim`` with ``x`` as its calibration data (``tmp_path/x.pt``, labels 0)."""
    import nir

    from danet_deploy.pipeline import export

    nir.write(tmp_path / "net.nir", from_torch(net, x[0], timesteps=len(x)))
    torch.save(
        {
            "inputs": x.transpose(0, 1).contiguous(),
            "labels": torch.zeros(x.shape[1], dtype=torch.long),
        },
        tmp_path / "x.pt",
    )
    return export(
        tmp_path / "net.nir", "loihi2-sim", tmp_path / "out", data=f"tensor:{tmp_path / 'x.pt'}"
    )


def reduced_spikingjelly_resnet(name: str, cnf: str | None = None) -> nn.Module:
    """:func:`spikingjelly_resnet`'s network cut after its second stage (SpikingJelly's own stem,
    MaxPool, BasicBlocks with a downsample, AdaptiveAvgPool, and a Linear on its 128 features):
    on 8x8 images, small enough for Lava (22-26 s; the whole ResNet-18 is estimated at 20 min)."""
    from spikingjelly.activation_based import layer

    net = spikingjelly_resnet(name, cnf)
    torch.manual_seed(1)
    net.layer3, net.layer4, net.fc = (
        nn.Identity(),
        nn.Identity(),
        layer.Linear(128, 10, step_mode="m"),
    )
    return net.eval()


@pytest.mark.slow
@pytest.mark.parametrize("name, cnf", [("sew", "ADD"), ("sew", "IAND"), ("spiking", None)])
def test_reduced_spikingjelly_resnets_run_in_lava_as_the_fast_simulator_does(tmp_path, name, cnf):
    """Module -> loihi2-sim -> Lava: every spike and output value of every population equal to
    the fast simulator's, on active layers; and the float graph still equals SpikingJelly."""
    import nir

    from danet_deploy.pipeline import simulate as run

    net, x = reduced_spikingjelly_resnet(name, cnf), image(seed=5, size=8)
    out = export_to_loihi2_sim(tmp_path, net, x)
    check_equal(nir.read(out / "graph.nir"), lambda v: spikingjelly_forward(net, v), x)
    result = run(out, f"tensor:{tmp_path / 'x.pt'}", backend="lava", show_progress=False)
    assert result["samples"] == x.shape[1] and result["spike_mismatches"] == 0
    assert result["nonzero_values"] > 1000 and not result.get("silent_output")


@pytest.mark.slow
@pytest.mark.parametrize("name, cnf", [("sew", "ADD"), ("sew", "IAND"), ("spiking", None)])
def test_spikingjelly_resnet18_goes_to_loihi2_sim_and_agrees_on_argmax_as_8_bit_weights_do(
    tmp_path, name, cnf
):
    """Module -> nir.write -> export --target loihi2-sim; the written graph reads back with the
    conventions it records (no flags) and still equals SpikingJelly's forward. The compiled
    program predicts SpikingJelly's float class at least as often as SpikingJelly itself does
    with its weights rounded to 8 bits, on 256 images (measured: 252/250, 128/115, 226/220;
    docs/nir.md, "On the chip")."""
    import nir

    from danet_deploy.artifacts import load_artifact
    from danet_deploy.simulator.fixed import FixedSimulator

    net = spikingjelly_resnet(name, cnf)
    x = torch.rand(4, 256, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    out = export_to_loihi2_sim(tmp_path, net, x[:, :32])
    assert {"graph.nir", "program.h5", "manifest.json"} <= {p.name for p in out.iterdir()}
    graph = nir.read(out / "graph.nir")
    assert graph.metadata["timesteps"] == len(x) and graph.metadata["dt"] == 1.0
    check_equal(graph, lambda v: spikingjelly_forward(net, v), x[:, :2])
    fixed, rounded = FixedSimulator(load_artifact(out).program), rounded_to_8_bits(net)
    scores = {"float": [], "fixed": [], "rounded": []}
    for batch in x.split(32, dim=1):
        scores["float"].append(spikingjelly_forward(net, batch).sum(0))
        scores["fixed"].append(fixed.scores(batch.transpose(0, 1)))
        scores["rounded"].append(spikingjelly_forward(rounded, batch).sum(0))
    reference, ours, theirs = (torch.cat(scores[k]) for k in ("float", "fixed", "rounded"))
    assert argmax_agreement(ours, reference) >= argmax_agreement(theirs, reference) > 100


def snntorch_recurrent_net(kind: str, reset: str, reset_delay: bool) -> nn.Module:
    """Two layers of one snnTorch neuron kind (the recurrent ones with their loop), as a single-step
    Sequential with init_hidden."""
    kw = dict(threshold=0.5, init_hidden=True, reset_mechanism=reset, reset_delay=reset_delay)
    if kind == "RLeaky-conv":
        return nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1),
            snn.RLeaky(beta=0.85, conv2d_channels=4, kernel_size=3, **kw),
            nn.Flatten(),
            nn.Linear(256, 10),
            snn.Leaky(beta=0.8, output=True, **kw),
        )
    make = {
        "Synaptic": lambda o: snn.Synaptic(alpha=0.7, beta=0.85, output=o, **kw),
        "RLeaky": lambda o: snn.RLeaky(beta=0.85, linear_features=10, output=o, **kw),
        "RLeaky-one-to-one": lambda o: snn.RLeaky(
            beta=0.85, all_to_all=False, V=0.5, output=o, **kw
        ),
        "RSynaptic": lambda o: snn.RSynaptic(
            alpha=0.7, beta=0.85, linear_features=10, output=o, **kw
        ),
    }[kind]
    return nn.Sequential(
        nn.Flatten(), nn.Linear(128, 10), make(False), nn.Linear(10, 10), make(True)
    )


@pytest.mark.parametrize(
    "kind", ["Synaptic", "RLeaky", "RLeaky-one-to-one", "RLeaky-conv", "RSynaptic"]
)
@pytest.mark.parametrize(
    "reset, reset_delay", [("zero", True), ("zero", False), ("subtract", True)]
)
def test_snntorch_synaptic_and_recurrent_neurons_match_snntorch(kind, reset, reset_delay):
    torch.manual_seed(0)
    net = snntorch_recurrent_net(kind, reset, reset_delay).eval()
    x = spikes(8, N, 2, 8, 8, p=0.4)
    if (
        kind == "RSynaptic" and not reset_delay
    ):  # snnTorch 1.0.0's own forward fails: said in one line
        with pytest.raises(
            UserError, match=r"does not run on an input of shape \(4, 2, 8, 8\) \(TypeError"
        ):
            from_torch(net, x[0])
        return
    graph = from_torch(net, x[0])
    ref = check_equal(graph, lambda v: snntorch_forward(net, v), x)
    assert 0 < ref.sum() < ref.numel()
    flat = from_nir(graph)
    assert len(flat.recurrent) == (0 if kind == "Synaptic" else 1 if kind == "RLeaky-conv" else 2)


def test_snntorch_subtract_without_reset_delay_is_refused():
    net = nn.Sequential(nn.Linear(4, 4), snn.Leaky(beta=0.9, init_hidden=True, reset_delay=False))
    with pytest.raises(
        UserError,
        match=r"^module '1' \(snntorch._neurons.leaky.Leaky\): reset_delay=False with "
        r"subtraction decides a spike on a voltage it does not keep",
    ):
        from_torch(net, torch.zeros(1, 4))


@pytest.mark.slow
def test_spikingjelly_ms_resnet18_blocks_match_its_forward():
    """MS-ResNet (membrane shortcut: real-valued block outputs summed, each block's LIFNode first),
    as SpikingJelly builds it. Its forward turns an image into a sequence in Python control flow,
    which torch.fx cannot trace (refused in one line); its layers, in the order it runs them, can."""
    from spikingjelly.activation_based import functional
    from spikingjelly.activation_based.model import ms_resnet

    torch.manual_seed(0)
    net, img = active_bn(ms_resnet.ms_resnet18(T=4, num_classes=10)), image()[0]
    with pytest.raises(
        UserError,
        match=r"^module spikingjelly\.activation_based\.model\.ms_resnet\.MSResNet: "
        r"torch\.fx cannot trace it \(TraceError",
    ):
        from_torch(net, img)
    body = nn.Sequential(
        net.stem,
        net.layer1,
        net.layer2,
        net.layer3,
        net.layer4,
        net.head_lif,
        net.avgpool,
        nn.Flatten(),
        net.head,
    )
    graph = from_torch(body, img)
    functional.reset_net(net)
    with torch.no_grad():
        theirs = net(img)  # the head's output averaged over its T = 4 steps of the same image
    ours = simulate(graph, img.expand(4, *img.shape)).mean(0)
    assert torch.equal(ours, theirs)
    rates = spike_rates(graph, img.expand(4, *img.shape))
    assert len(rates) == 17 and all(r > 0.01 for r in rates.values()), (
        rates
    )  # 17 LIFNodes, all firing


@pytest.mark.parametrize("soft", [False, True])
def test_a_programmed_reset_compiles_for_loihi2_and_loihi1_refuses_it(tmp_path, soft):
    """snnTorch's subtraction and SpikingJelly's soft reset reach the graph as what they are: the
    loihi2-sim compile makes them programmed neurons, the loihi1 compile refuses them, naming the
    neuron (docs/nir.md, conventions)."""
    import nir

    from danet_deploy.pipeline import export
    from danet_deploy.ir.program import read_program

    net = (
        sequential("subtract")
        if not soft
        else JellyNet(soft=True, decay_input=True, multi_step=False)
    )
    nir.write(tmp_path / "net.nir", from_torch(randomise_bn(net), torch.zeros(1, 2, 8, 8)))
    with pytest.raises(UserError, match="'1'" if not soft else "'sn1'") as e:
        export(tmp_path / "net.nir", "loihi1", tmp_path / "out")
    assert "subtract" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()
    export(tmp_path / "net.nir", "loihi2-sim", tmp_path / "l2")
    resets = {
        p.firing.reset for p in read_program(tmp_path / "l2" / "program.h5").populations.values()
    }
    assert ("subtract" if soft else "subtract-late") in resets


class SharedConv(nn.Module):
    """A conv read by a BatchNorm and, through an Identity, by a neuron too: folding the BatchNorm
    into the conv would change what the neuron sees, so it becomes a map of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.keep = (
            nn.Conv2d(2, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.Identity(),
        )
        self.lif1, self.lif2 = leaky("zero"), leaky("zero", output=True)

    def forward(self, x):
        c = self.keep(self.conv(x))  # the conv's one reader is the Identity, which two read
        return self.lif2(self.lif1(self.bn(c)) + c)


def test_batchnorm_folds_only_into_a_map_it_reads_alone():
    torch.manual_seed(0)
    net = randomise_bn(SharedConv())
    x = spikes(T, N, 2, 8, 8, p=0.5)
    graph = from_torch(net, x[0])
    assert graph.nodes["bn"].weight.shape == (4, 1, 1, 1) and graph.nodes["bn"].groups == 4
    ref = check_equal(graph, lambda v: snntorch_forward(net, v), x)
    assert 0 < ref.sum() < ref.numel()


class ViewFlatten(nn.Module):
    """snnTorch's tutorials flatten with ``x.view(batch, -1)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.lif1 = nn.Conv2d(2, 8, 3, stride=2, padding=1), leaky("zero")
        self.fc, self.lif2 = nn.Linear(128, 10), leaky("zero", output=True)

    def forward(self, x):
        s = self.lif1(self.conv(x))
        return self.lif2(self.fc(s.view(x.shape[0], -1) + s.reshape(s.size(0), -1)))


def test_view_and_reshape_that_flatten_each_sample_match():
    torch.manual_seed(0)
    net = ViewFlatten().eval()
    x = spikes(T, N, 2, 8, 8, p=0.5)
    ref = check_equal(from_torch(net, x[0]), lambda v: snntorch_forward(net, v), x)
    assert 0 < ref.sum() < ref.numel()


class ViewOther(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc, self.lif = nn.Linear(8, 8), leaky("zero")

    def forward(self, x):
        return self.lif(self.fc(x).view(-1, 2, 4))


def test_a_reshape_other_than_a_flatten_is_refused():
    with pytest.raises(
        UserError,
        match=r"^operation 'view' \(call_method view\): a reshape to \(2, 4\) per sample "
        r"has no NIR form",
    ):
        from_torch(ViewOther(), torch.zeros(3, 8))


class Conv1dAvgPool(nn.Module):
    """Conv1d with BatchNorm1d on one path, Conv2d with AvgPool2d on the other, and a BatchNorm1d
    on their sum (nothing to fold into: a diagonal affine map), scaled by a constant."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1d, self.bn1d, self.lif1 = (
            nn.Conv1d(2, 4, 3, padding=1),
            nn.BatchNorm1d(4),
            leaky("zero"),
        )
        self.conv2d, self.pool, self.lif2 = (
            nn.Conv2d(2, 4, 3, padding=1),
            nn.AvgPool2d(2),
            leaky("zero"),
        )
        self.fc1, self.fc2 = nn.Linear(4 * 16, 10), nn.Linear(4 * 2 * 2, 10)
        self.lin, self.bn_out = nn.Linear(10, 10), nn.BatchNorm1d(10)
        self.lif3 = leaky("zero", output=True)

    def forward(self, x):
        a = self.lif1(self.bn1d(self.conv1d(x.flatten(2))))  # [N, 2, 16]
        b = self.lif2(self.pool(self.conv2d(x)))
        summed = self.fc1(a.flatten(1)) + self.fc2(b.flatten(1))
        return self.lif3(self.bn_out(summed) * 0.5 + self.lin(summed))


def test_conv1d_avgpool_and_a_batchnorm_with_nothing_to_fold_into_match():
    torch.manual_seed(0)
    net = randomise_bn(Conv1dAvgPool())
    x = spikes(T, N, 2, 4, 4, p=0.5)
    graph = from_torch(net, x[0])
    assert type(graph.nodes["bn_out"]).__name__ == "Affine" and "bn1d" not in graph.nodes  # folded
    ref = check_equal(graph, lambda v: snntorch_forward(net, v), x)
    assert 0 < ref.sum() < ref.numel()


class RLeakyExplicitState(nn.Module):
    """snnTorch's recurrent style from its docs: ``spk, mem = lif(cur, spk, mem)``, the caller
    carrying both."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(128, 12)
        self.lif1 = snn.RLeaky(beta=0.8, threshold=0.5, linear_features=12, reset_mechanism="zero")
        self.fc2 = nn.Linear(12, 10)
        self.lif2 = snn.Leaky(beta=0.8, threshold=0.3, reset_mechanism="zero")

    def forward(self, x, spk1, mem1, mem2):
        spk1, mem1 = self.lif1(self.fc1(x.flatten(1)), spk1, mem1)
        spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
        return spk2, spk1, mem1, mem2


def test_snntorch_rleaky_with_explicit_state_matches_snntorch():
    torch.manual_seed(0)
    net = RLeakyExplicitState().eval()
    x = spikes(8, N, 2, 8, 8, p=0.4)

    def forward(v: torch.Tensor) -> torch.Tensor:
        (spk1, mem1), mem2, outs = net.lif1.init_rleaky(), net.lif2.init_leaky(), []
        with torch.no_grad():
            for t in range(len(v)):
                spk2, spk1, mem1, mem2 = net(v[t], spk1, mem1, mem2)
                outs.append(spk2)
        return torch.stack(outs)

    graph = from_torch(net, x[0])
    ref = check_equal(graph, forward, x)
    assert 0 < ref.sum() < ref.numel() and len(from_nir(graph).recurrent) == 1


def test_a_module_export_states_a_reset_override_and_names_its_folder_after_the_whole_spec(
    tmp_path, nets_module, monkeypatch
):
    """A --reset given to a module MODEL is what graph.nir says (the nodes' own resets, which it
    overrode, are gone), and the default folder is named after package.module:factory whole, so
    that two factories of one module never share a folder."""
    from danet_deploy.converters.nir_import import read_nir, read_nir_graph
    from danet_deploy.pipeline import export

    monkeypatch.chdir(tmp_path)
    options = {"weights": Path("ckpt.pth"), "input_shape": "2,8,8", "timesteps": T}
    out = export(Path("mynets:build"), "nir", reset="subtract", module=options)
    assert out == Path("mynets-build.nir")
    written = read_nir_graph(out / "graph.nir")
    assert written.metadata["reset"] == "subtract"
    assert not any("reset" in (node.metadata or {}) for node in written.nodes.values())
    assert {f.reset for f in read_nir(out / "graph.nir").resets.values()} == {"subtract"}
