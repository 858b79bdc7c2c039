"""Training on the chip's grid (lava-dl's last epochs): the program runs the network that
slayer evaluates, weight for weight and spike for spike."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from danet_deploy.checkpoint import load_model, read_checkpoint
from danet_deploy.chip_tuning import chip_grid
from danet_deploy.ir.program import read_program
from danet_deploy.data import load_dataset
from danet_deploy.pipeline import export
from danet_deploy.models.neurons import CUBA
from danet_deploy.simulator.fixed import FixedSimulator
from danet_deploy.train import TrainOptions, train


@pytest.mark.slow
@pytest.mark.lava_runtime  # trains with slayer in this process
@pytest.mark.parametrize("connection", ["aa", "da"])
def test_the_program_holds_the_trained_weights_and_spikes_as_slayer_does(
    tmp_path: Path, connection: str
) -> None:
    ckpt = tmp_path / f"{connection}.pt"
    train(
        TrainOptions(
            connection=connection,
            epochs=1,
            chip_epochs=1,
            quiet=True,
            device="cpu",
            framework="lava-dl",
        ),
        ckpt,
        grid_for=chip_grid,
    )
    model, blob = load_model(ckpt)
    assert blob["metrics"]["epochs"] == 2
    grid = model.chip_grid
    convs = [n for n in model.nodes if n.op == "conv"]
    assert {n.name for n in convs} <= set(
        grid["weights"]
    )  # every conv is a synapse group of its own
    program = read_program(export(ckpt, "loihi2-sim", tmp_path / "chip") / "program.h5")
    held = [t.weight_q for p in program.populations.values() for t in p.synapse_groups]
    for (
        node
    ) in convs:  # fold the BatchNorm that scales it by hand: the integers must be the program's
        bn = model.module_of(model.scaling_bn(node))
        gain = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().double()
        if model.scaling_bn(node).name in grid["weights"]:  # a stream BN rounded as a spike synapse
            units = grid["weights"][model.scaling_bn(node).name]
            gain = torch.round(gain * units) / units
        w = (
            model.layer_weight(node).detach().double()
            * gain.view(-1, 1, 1, 1)
            * grid["weights"][node.name]
        )
        ints = np.rint(w.numpy())
        assert np.abs(w.numpy() - ints).max() < 1e-3, node.name
        assert np.abs(ints).max() <= 254 and not (ints % 2).any(), (
            node.name
        )  # Loihi's mixed-sign 8-bit weights
        assert any(np.array_equal(q, ints) for q in held), (
            f"{node.name}: no synapse group holds its integers"
        )
    for name, scale in grid["scales"].items():  # the compiler kept the scales training used
        assert program.fixed[name].scale == scale or program.fixed[name].value_scale == scale, name
        if program.populations[name].kind.name in (
            "lif",
            "readout",
        ):  # slayer's state and the scores are exact
            assert 2 ** round(np.log2(scale)) == scale

    x = load_dataset("digits", "test")[0].tensors[0]
    spikes = {}  # [T, N, ...] per layer, as slayer's CUBA neurons emit them
    for node in (n for n in model.nodes if n.op == "lif"):
        assert isinstance(model.module_of(node), CUBA)
        model.module_of(node).register_forward_hook(
            lambda m, i, o, name=node.name: spikes.__setitem__(name, o.detach())
        )
    with torch.no_grad():
        slayer_pred = model(x).argmax(1)
    fast = FixedSimulator(program)
    xs = x.unsqueeze(1).expand(-1, model.timesteps, -1, -1, -1)
    chip = fast.run(xs, record=True)
    assert len(spikes) >= 5
    for name, s in spikes.items():  # every spike of every layer, every sample of the test split
        assert torch.equal(chip[name].to(s.dtype), s), (
            name,
            int((chip[name].to(s.dtype) != s).sum()),
            int(s.sum()),
        )
    assert torch.equal(fast.predict(xs), slayer_pred)


def test_snntorch_trains_off_the_grid_unless_asked(tmp_path: Path) -> None:
    plain, on_grid = tmp_path / "plain.pt", tmp_path / "grid.pt"
    opts = dict(connection="plain", epochs=1, quiet=True, device="cpu")
    train(TrainOptions(**opts), plain)
    assert "chip_grid" not in read_checkpoint(plain)["config"]
    train(TrainOptions(**opts, chip_epochs=1), on_grid, grid_for=chip_grid)
    config = read_checkpoint(on_grid)["config"]
    assert (
        config["chip_grid"]["weights"]
        and config["neuron"].get("framework", "snntorch") == "snntorch"
    )
