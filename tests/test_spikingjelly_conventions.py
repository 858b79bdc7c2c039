"""SpikingJelly's neuron conventions (docs/nir.md, "Conventions that NIR 1.0.8 does not record"):
its neurons fire at ``v >= v_threshold``, a hard reset starts the voltage at ``v_reset``, a soft
reset subtracts the threshold. The float interpreter reproduces its forward on every output
value; ``loihi2-sim`` compiles the hard reset exactly (a neuron shifted by ``-v_reset``, the
integer threshold - 1) and refuses the soft one in one line."""

from __future__ import annotations

from pathlib import Path

import nir
import pytest
import torch
from danet_deploy.converters.nir_import import from_nir
from danet_deploy.ir.interpreter import ReferenceSimulator
from torch import nn

from danet_deploy.errors import UserError
from danet_deploy.frontends import from_torch

pytest.importorskip("spikingjelly")

T, N, INPUTS, HIDDEN, OUT = 20, 8, 16, 24, 10  # N x OUT = 80 output counts


def jelly_mlp(kind: str, v_reset: float | None, seed: int = 0) -> nn.Sequential:
    """Linear, neuron, Linear, neuron; weights on a 1/4 grid, so that voltages land on the
    threshold exactly (where ``>=`` and ``>`` part) and every sum is exact in floats."""
    from spikingjelly.activation_based import neuron

    g = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    for fan_in, fan_out in ((INPUTS, HIDDEN), (HIDDEN, OUT)):
        linear = nn.Linear(fan_in, fan_out, bias=False)
        linear.weight.data = torch.randint(-2, 5, (fan_out, fan_in), generator=g).float() / 4
        cell = (
            neuron.IFNode(v_reset=v_reset)
            if kind == "IF"
            else neuron.LIFNode(tau=2.0, v_reset=v_reset)
        )
        layers += [linear, cell]
    return nn.Sequential(*layers).eval()


def spike_trains(seed: int = 0) -> torch.Tensor:
    """``[T, N, INPUTS]`` binary spikes."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, N, INPUTS, generator=g) < 0.3).float()


def spikingjelly_forward(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    from spikingjelly.activation_based import functional

    functional.reset_net(net)
    with torch.no_grad():
        return torch.stack([net(x[t]) for t in range(len(x))])


def interpret(graph: nir.NIRGraph, x: torch.Tensor, reset: str | None = None) -> torch.Tensor:
    """The float interpreter's output ``[T, N, OUT]`` for ``x`` ``[T, N, ...]``."""
    flat = from_nir(graph, reset=reset)
    return ReferenceSimulator(flat, dtype=torch.float64).run(x.transpose(0, 1))[flat.outputs[0]]


def differing_counts(ours: torch.Tensor, theirs: torch.Tensor) -> int:
    """How many of the N x OUT output spike counts differ."""
    return int((ours.sum(0) != theirs.sum(0)).sum())


@pytest.mark.parametrize("kind", ["IF", "LIF"])
@pytest.mark.parametrize("v_reset", [0.0, -0.25, None], ids=["hard0", "hard-0.25", "soft"])
def test_float_interpreter_equals_spikingjelly(kind: str, v_reset: float | None) -> None:
    net, x = jelly_mlp(kind, v_reset), spike_trains()
    graph = from_torch(net, x[0])
    convention = "spikingjelly-soft" if v_reset is None else "spikingjelly"
    assert {n.metadata["reset"] for n in graph.nodes.values() if "reset" in n.metadata} == {
        convention
    }
    theirs = spikingjelly_forward(net, x)
    assert 0 < theirs.sum() < theirs.numel()
    assert torch.equal(interpret(graph, x).float(), theirs)
    # the net tells the conventions apart: read as Loihi's (> from 0), its counts differ
    assert (
        differing_counts(
            interpret(graph, x, reset="zero" if v_reset is not None else "subtract"), theirs
        )
        > 0
    )


def test_convention_comes_from_the_option_for_a_file_that_does_not_state_it(tmp_path: Path) -> None:
    """A graph written without the convention (as another exporter would) reads by ``--reset``."""
    net, x = jelly_mlp("IF", -0.25), spike_trains()
    graph = from_torch(net, x[0])
    for node in graph.nodes.values():
        node.metadata = {}
    nir.write(tmp_path / "plain.nir", graph)
    theirs = spikingjelly_forward(net, x)
    assert torch.equal(
        interpret(nir.read(tmp_path / "plain.nir"), x, reset="spikingjelly").float(), theirs
    )


def _compile(graph: nir.NIRGraph, x: torch.Tensor, tmp_path: Path):
    from danet_deploy.pipeline import export
    from danet_deploy.ir.program import read_program

    nir.write(tmp_path / "net.nir", graph)
    torch.save(
        {"inputs": x.transpose(0, 1).contiguous(), "labels": torch.zeros(N, dtype=torch.long)},
        tmp_path / "x.pt",
    )
    out = export(
        tmp_path / "net.nir", "loihi2-sim", tmp_path / "out", data=f"tensor:{tmp_path / 'x.pt'}"
    )
    return read_program(out / "program.h5"), out


@pytest.mark.parametrize("v_reset", [0.0, -0.25], ids=["hard0", "hard-0.25"])
def test_hard_reset_compiles_exactly_for_loihi(tmp_path: Path, v_reset: float, capsys) -> None:
    """IF neurons on a 1/4 grid: the fast fixed-point simulator fires spike for spike as the
    float interpreter (and so as SpikingJelly), every layer."""
    from danet_deploy.simulator.fixed import FixedSimulator

    net, x = jelly_mlp("IF", v_reset), spike_trains()
    graph = from_torch(net, x[0], timesteps=T)
    program, out = _compile(graph, x, tmp_path)
    lifs = [name for name, p in program.populations.items() if p.kind.name == "lif"]
    assert len(lifs) == 2
    for (
        name
    ) in lifs:  # threshold 1 - v_reset, shifted; fires at v > vth - 1, the voltage in steps of 64
        f = program.fixed[name]
        assert f.vth == round(f.scale * (1.0 - v_reset) / 64) - 1
        assert f.bias_mant is None
    chip = FixedSimulator(program).run(x.transpose(0, 1), record=True)
    flat = from_nir(nir.read(out / "graph.nir"))
    float_run = ReferenceSimulator(flat, dtype=torch.float64).run(x.transpose(0, 1), record=True)
    for name in lifs:
        assert torch.equal(chip[name].cpu().float(), float_run[name].float()), name
    assert torch.equal(float_run[lifs[-1]].float(), spikingjelly_forward(net, x))
    assert "fires at v >= v_threshold" not in capsys.readouterr().err  # exact: no warning


def test_decaying_neuron_with_the_test_at_threshold_is_announced(tmp_path: Path, capsys) -> None:
    """A LIF's decay leaves its voltage between the threshold's units: stderr says the test may
    fire up to one unit early."""
    net, x = jelly_mlp("LIF", 0.0), spike_trains()
    _compile(from_torch(net, x[0], timesteps=T), x, tmp_path)
    err = capsys.readouterr().err
    assert "fires at v >= v_threshold" in err and "may also fire up to" in err


def test_soft_reset_compiles_for_loihi2_and_loihi1_refuses_it_in_one_line(tmp_path: Path) -> None:
    """SpikingJelly's soft reset is a programmed neuron (docs/compile.md, "Programmed resets"):
    loihi2-sim compiles it, testing v >= v_threshold itself; loihi1 refuses it in one line."""
    from danet_deploy.ir.program import read_program
    from tests.conftest import run_cli

    net, x = jelly_mlp("IF", None), spike_trains()
    nir.write(tmp_path / "soft.nir", from_torch(net, x[0], timesteps=T))
    torch.save(
        {"inputs": x.transpose(0, 1).contiguous(), "labels": torch.zeros(N, dtype=torch.long)},
        tmp_path / "x.pt",
    )
    before = (tmp_path / "soft.nir").read_bytes()
    data = ("--data", f"tensor:{tmp_path / 'x.pt'}")
    proc = run_cli(
        "export", str(tmp_path / "soft.nir"), "-t", "loihi1", *data, "-o", str(tmp_path / "l1")
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith(
        "danet-deploy: error: layer '1': this neuron subtracts the threshold when it fires "
        "(SpikingJelly's soft reset, v_reset=None), but loihi1's neurons set the voltage to 0"
    )
    assert "--reset spikingjelly " in lines[-1] and "Traceback" not in proc.stderr
    assert not (tmp_path / "l1").exists() and (tmp_path / "soft.nir").read_bytes() == before
    out = tmp_path / "out"
    run_cli(
        "export", str(tmp_path / "soft.nir"), "-t", "loihi2-sim", *data, "-o", str(out), check=True
    )
    firing = read_program(out / "program.h5").populations["1"].firing
    assert (firing.reset, firing.at_threshold) == ("subtract", True)


def test_a_reset_to_v_reset_from_zero_stays_refused() -> None:
    """Loihi's reset with v_reset != 0 starts at 0, not at v_reset: no shift makes it Loihi's."""
    from danet_deploy.lowering import lower

    net, x = jelly_mlp("IF", -0.25), spike_trains()
    with pytest.raises(
        UserError,
        match=r"^node '1': Loihi neurons reset to 0, but v_reset is not 0 .*"
        r"--reset spikingjelly\)$",
    ):
        lower(from_nir(from_torch(net, x[0]), reset="zero"), "expand")


@pytest.mark.slow
def test_shifted_reset_runs_in_lava_as_the_fast_simulator(tmp_path: Path) -> None:
    """v_reset = -0.25 and v >= v_threshold, compiled: Lava's LIF fires as the fast simulator."""
    import json

    from tests.conftest import run_cli

    net, x = jelly_mlp("IF", -0.25), spike_trains()
    _, out = _compile(from_torch(net, x[0], timesteps=T), x, tmp_path)
    proc = run_cli(
        "simulate",
        str(out),
        "--data",
        f"tensor:{tmp_path / 'x.pt'}",
        "--backend",
        "lava",
        "--json",
        check=True,
    )
    result = json.loads(proc.stdout)
    assert result["spike_mismatches"] == 0 and result["nonzero_values"] > 1000


@pytest.mark.parametrize("kind", ["IF", "LIF"])
def test_spikingjelly_own_export_reads_exactly_with_the_option(tmp_path: Path, kind: str) -> None:
    """SpikingJelly's own ``export_to_nir`` states no convention (and no dt: its 1e-4 is ours):
    ``--reset spikingjelly`` reproduces its forward; as ``zero`` its counts differ (the issue's
    case). Compiled with the option, the fixed-point IF fires as the float interpreter."""
    from spikingjelly.activation_based.nir_exchange.to_nir import export_to_nir

    from danet_deploy.pipeline import export
    from danet_deploy.ir.program import read_program
    from danet_deploy.simulator.fixed import FixedSimulator

    net, x = jelly_mlp(kind, -0.25), spike_trains()
    nir.write(tmp_path / "sj.nir", export_to_nir(net, x[0]))
    graph, theirs = nir.read(tmp_path / "sj.nir"), spikingjelly_forward(net, x)
    assert torch.equal(interpret(graph, x, reset="spikingjelly").float(), theirs)
    assert differing_counts(interpret(graph, x, reset="zero").float(), theirs) > 0
    if kind == "IF":
        torch.save(
            {"inputs": x.transpose(0, 1).contiguous(), "labels": torch.zeros(N, dtype=torch.long)},
            tmp_path / "x.pt",
        )
        out = export(
            tmp_path / "sj.nir",
            "loihi2-sim",
            tmp_path / "out",
            data=f"tensor:{tmp_path / 'x.pt'}",
            reset="spikingjelly",
        )
        assert nir.read(out / "graph.nir").metadata["reset"] == "spikingjelly"
        readout = read_program(out / "program.h5").lowered.readouts[0].synapse_groups[0].source
        chip = FixedSimulator(read_program(out / "program.h5")).run(x.transpose(0, 1), record=True)[
            readout
        ]
        assert torch.equal(chip.cpu().float(), theirs)
