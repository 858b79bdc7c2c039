"""The model zoo: shapes, gate truth tables, DA sums, gradients, parameter counts."""

from __future__ import annotations

import pytest
import torch

from danet_deploy.errors import UserError
from danet_deploy.models import CONNECTIONS, build, list_archs

ALL = [(a, c) for a, spec in list_archs().items() for c in spec.connections]


def _small_shape(arch: str) -> tuple[int, int, int]:
    shape = list_archs()[arch].input_shape
    return shape if shape[1] <= 32 else (3, 32, 32)


@pytest.mark.parametrize("arch,connection", ALL)
def test_forward_shapes(arch: str, connection: str) -> None:
    torch.manual_seed(0)
    shape = _small_shape(arch)
    model = build(arch, connection, 7, timesteps=2, input_shape=shape)
    assert model(torch.rand(3, *shape)).shape == (3, 7)
    values = model.run(model.encode(torch.rand(3, *shape)), record=True)
    for node in model.nodes:
        v = values[node.name]
        assert v.shape[:2] == (2, 3), node.name
        if node.signal == "spike":  # spike tensors are binary
            assert set(v.unique().tolist()) <= {0.0, 1.0}, node.name
        if node.signal == "count":
            assert torch.equal(v, v.round()) and v.min() >= 0, node.name


def test_time_varying_input_sets_steps() -> None:
    model = build("digits_resnet", "sew", 10, timesteps=4)
    x = (torch.rand(2, 6, 1, 8, 8) < 0.3).float()  # [N, T, C, H, W] spikes
    values = model.run(model.encode(x), record=True)
    assert values[model.output].shape == (6, 2, 10)
    assert torch.equal(values["input"][3], x[:, 3])


@pytest.mark.parametrize(
    "connection,table",
    [
        ("sew-and", {(0, 0): 0, (0, 1): 0, (1, 0): 0, (1, 1): 1}),
        ("sew-iand", {(0, 0): 0, (0, 1): 1, (1, 0): 0, (1, 1): 0}),
    ],
)
def test_sew_gate_truth_tables(connection: str, table: dict) -> None:
    torch.manual_seed(1)
    model = build("digits_resnet", connection, 10, timesteps=6)
    with torch.no_grad():
        values = model.run(model.encode(torch.rand(16, 1, 8, 8) * 3), record=True)
    gates = [n for n in model.nodes if n.op in ("and", "iand")]
    assert gates
    seen = set()
    for gate in gates:
        a, d = (values[i] for i in gate.inputs)
        out = values[gate.name]
        for (ai, di), expected in table.items():
            mask = (a == ai) & (d == di)
            if mask.any():
                seen.add((ai, di))
                assert torch.all(out[mask] == expected), (gate.name, ai, di)
    assert seen == set(table), f"not every input pair occurred: {seen}"


def _pa_branch(block, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PA/DA branch computed directly from the block's layers (not through the graph)."""
    step = lambda m, t: m(t.flatten(0, 1)).unflatten(0, t.shape[:2])  # noqa: E731
    v = block.sn1(step(block.bn1, x))
    h = step(block.conv1, v)
    for i in range(2, block.n + 1):
        h = step(
            getattr(block, f"conv{i}"), getattr(block, f"sn{i}")(step(getattr(block, f"bn{i}"), h))
        )
    return v, h


def test_da_stage_is_the_unrolled_dense_sum() -> None:
    torch.manual_seed(2)
    model = build("resnet20", "da", 10, timesteps=3).eval()
    x = model.encode(torch.randn(2, 3, 32, 32))
    with torch.no_grad():
        values = model.run(x, record=True)
        x0 = values["stem.sn"]
        branches, inputs = [], [x0]
        for block in model.stages[0]:
            branches.append(_pa_branch(block, inputs[-1])[1])
            inputs.append(x0 + sum(branches))
        for b in (1, 2):
            assert torch.allclose(values[f"stages.0.{b}.sum"], inputs[b], atol=1e-5)
        sum_node = next(n for n in model.nodes if n.name == "stages.0.2.sum")
        assert len(sum_node.inputs) == 3  # x_0, F_0, F_1: dense fan-in, not a running total


def test_da_vgg_adds_every_earlier_stage() -> None:
    torch.manual_seed(3)
    model = build("vgg_digits", "da", 10, timesteps=2).eval()
    with torch.no_grad():
        values = model.run(model.encode(torch.rand(2, 1, 8, 8)), record=True)
        block = model.stages[2][0]
        v, h = _pa_branch(
            block,
            values["stages.2.0.sum"] if "stages.2.0.sum" in values else values["stages.1.1.sum"],
        )
    entry = next(n for n in model.nodes if n.name == "stages.2.1.sum")
    assert "dense_proj.0to2" in entry.inputs
    step = lambda m, t: m(t.flatten(0, 1)).unflatten(0, t.shape[:2])  # noqa: E731
    expected = (
        step(block.down_conv, v) + h + step(model.dense_proj["0to2"], values["stages.1.0.sn1"])
    )
    assert torch.allclose(values["stages.2.1.sum"], expected, atol=1e-5)


@pytest.mark.parametrize("connection", CONNECTIONS)
def test_gradients_reach_the_first_layer(connection: str) -> None:
    torch.manual_seed(4)
    model = build("digits_resnet", connection, 10, timesteps=4)
    loss = torch.nn.functional.cross_entropy(model(torch.rand(8, 1, 8, 8) * 2), torch.arange(8))
    loss.backward()
    grad = model.stem.conv.weight.grad
    assert grad is not None and grad.abs().sum() > 0


TORCHVISION_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
}


@pytest.mark.parametrize("arch", TORCHVISION_PARAMS)
def test_da_resnet_parameter_count_matches_torchvision(arch: str) -> None:
    n = sum(p.numel() for p in build(arch, "da", 1000).parameters())
    assert abs(n - TORCHVISION_PARAMS[arch]) / TORCHVISION_PARAMS[arch] < 0.01


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(UserError, match="valid: .*resnet50"):
        build("resnet51", "da", 10)
    with pytest.raises(UserError, match="valid: plain, da"):
        build("vgg_digits", "sew", 10)
