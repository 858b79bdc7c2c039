"""Build small networks with a peer framework, export them with its own NIR exporter and
record its own output spike counts on fixed inputs: the fixtures under tests/data/peers/.

Runs inside a peer's virtual environment (made by scripts/peers/make_fixtures.sh), never
inside danet-deploy's: sinabs 3.1.3 pins nir <= 1.0.4 and norse 1.1.0 a newer torch than
lava-dl's. Usage: python build.py sinabs|norse|rockpool OUTDIR

Each fixture is NAME.nir (the exporter's file, as written) and NAME.npz: ``inputs``
``[N, T, ...]``, ``counts`` ``[N, outputs]`` (the framework's output spikes summed over
time) and ``spikes`` ``[N, T, outputs]``. OUTDIR/FRAMEWORK.json lists each fixture with
the framework's version and the danet-deploy options that state what the exporter does
not record (time step, reset, discretisation).
"""

from __future__ import annotations

import inspect
import json
import sys
from importlib.metadata import version
from pathlib import Path

import nir
import numpy as np
import torch

N, T, IN, HIDDEN, OUT = 8, 30, 20, 16, 5
LOSSES: dict[
    str, str
] = {}  # fixture -> what its exporter does not write (so no option restores it)


def spikes_in(*shape: int, p: float = 0.3, seed: int = 0) -> torch.Tensor:
    return (torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) < p).float()


def save(out: Path, name: str, graph: nir.NIRGraph, x: torch.Tensor, spikes: torch.Tensor) -> None:
    """``spikes`` ``[N, T, outputs]`` as the framework emitted them for ``x`` ``[N, T, ...]``."""
    options = (
        {"compression": None} if "compression" in inspect.signature(nir.write).parameters else {}
    )
    nir.write(out / f"{name}.nir", graph, **options)  # norse's scalar datasets refuse compression
    np.savez_compressed(
        out / f"{name}.npz",
        inputs=x.numpy().astype(np.uint8),
        spikes=spikes.numpy(),
        counts=spikes.sum(1).numpy(),
    )
    print(
        f"{name}: {int(spikes.sum())} output spikes, at most {int(spikes.max())} per neuron and step"
    )


def sinabs(out: Path) -> dict[str, dict]:
    import sinabs as sb
    import sinabs.activation as act
    import sinabs.layers as sl

    def run(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        for layer in model.modules():
            if hasattr(layer, "reset_states"):
                layer.reset_states()
        with torch.no_grad():
            return model(x)

    fixtures = {}
    x = spikes_in(N, T, IN)
    for name, neuron, gain, flags in (
        ("iaf-mlp", lambda: sl.IAF(), 4.0, {"dt": 1.0, "reset": "sinabs"}),
        (
            "lif-mlp",
            lambda: sl.LIF(tau_mem=3.0),
            8.0,
            {"dt": 1.0, "reset": "sinabs", "discretisation": "exp"},
        ),
    ):
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(IN, HIDDEN), neuron(), torch.nn.Linear(HIDDEN, OUT), neuron()
        )
        with torch.no_grad():
            model[0].weight.mul_(gain)
            model[2].weight.mul_(gain)
        spikes = run(model, x)
        save(out, f"sinabs-{name}", sb.to_nir(model, x[:1]), x, spikes)
        fixtures[f"sinabs-{name}"] = flags

    # the NIR paper's N-MNIST CSNN, with single-spike, reset-to-zero neurons (what Loihi runs)
    torch.manual_seed(0)
    samples, steps = 4, 8

    def iaf() -> sl.IAFSqueeze:
        return sl.IAFSqueeze(
            batch_size=samples, spike_fn=act.SingleSpike, reset_fn=act.MembraneReset()
        )

    model = torch.nn.Sequential(
        torch.nn.Conv2d(2, 16, 5, stride=2, padding=1, bias=False),
        iaf(),
        torch.nn.Conv2d(16, 16, 3, padding=1, bias=False),
        iaf(),
        sl.SumPool2d(2),
        torch.nn.Conv2d(16, 8, 3, padding=1, bias=False),
        iaf(),
        sl.SumPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(128, 256, bias=False),
        iaf(),
        torch.nn.Linear(256, 10, bias=False),
        iaf(),
    )
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, (torch.nn.Conv2d, torch.nn.Linear)):
                layer.weight.mul_(3.0)
    x = spikes_in(samples, steps, 2, 34, 34, p=0.15)
    spikes = run(model, x.flatten(0, 1)).unflatten(0, (samples, steps))

    def csnn_nir(net: torch.nn.Module) -> nir.NIRGraph:
        graph = sb.to_nir(net, x.flatten(0, 1))
        size = 34
        for name in sorted(
            (k for k, v in graph.nodes.items() if isinstance(v, nir.Conv2d)), key=int
        ):
            # sinabs 3.1.3 leaves input shapes None, which nir.write cannot store: only they are filled in
            graph.nodes[name].input_shape = np.array([size, size])
            size = {"0": 16, "2": 16, "5": 8}[name] // (2 if name in ("2", "5") else 1)
        graph.nodes["8"].input_type = {
            "input": np.array([8, 4, 4])
        }  # likewise the Flatten's input type
        return graph

    save(out, "sinabs-csnn", csnn_nir(model), x, spikes)
    fixtures["sinabs-csnn"] = {"dt": 1.0, "reset": "zero"}

    # the NIR paper's CSNN as its sinabs.py makes it (an ANN converted with from_model, spike_threshold 1,
    # min_v_mem -1), written by to_nir, then read back by sinabs' own from_nir: its spikes are that reading's
    from sinabs.nir import from_nir

    ann = torch.nn.Sequential(
        *[torch.nn.ReLU() if isinstance(layer, sl.IAFSqueeze) else layer for layer in model]
    )
    snn = sb.from_model(
        ann, input_shape=(2, 34, 34), batch_size=samples, spike_threshold=1.0, min_v_mem=-1.0
    ).spiking_model
    graph = csnn_nir(snn)
    nir.write(out / "sinabs-csnn-from-nir.nir", graph)
    read_back = from_nir(nir.read(out / "sinabs-csnn-from-nir.nir"), batch_size=samples)
    result = run(read_back, x.flatten(0, 1))
    spikes = (result[0] if isinstance(result, tuple) else result).unflatten(0, (samples, steps))
    save(out, "sinabs-csnn-from-nir", graph, x, spikes)
    fixtures["sinabs-csnn-from-nir"] = {"dt": 1.0, "reset": "sinabs-nir"}
    return fixtures


def norse(out: Path) -> dict[str, dict]:
    import norse.torch as nt

    fixtures = {}
    x = spikes_in(N, T, IN)
    for name, cell, gain in (("lifbox-mlp", nt.LIFBoxCell, 16.0), ("lif-mlp", nt.LIFCell, 8.0)):
        torch.manual_seed(0)
        model = nt.SequentialState(
            torch.nn.Linear(IN, HIDDEN), cell(), torch.nn.Linear(HIDDEN, OUT), cell()
        )
        state, steps = None, []
        with torch.no_grad():
            model[0].weight.mul_(gain)
            model[2].weight.mul_(gain)
            for t in range(T):  # norse's cells take one step at a time
                z, state = model(x[:, t], state)
                steps.append(z)
        save(out, f"norse-{name}", nt.to_nir(model, x[:, 0]), x, torch.stack(steps, 1))
        # norse writes every tau multiplied by its own dt (1 ms), so dt = 1e-6 restores dt/tau
        fixtures[f"norse-{name}"] = {
            "dt": 1e-6,
            "reset": "zero",
            **({"discretisation": "norse"} if cell is nt.LIFCell else {}),
        }

    # a conv net: norse 1.1.0 exports Conv2d but no pooling, and a Flatten becomes a None node
    # that nir.write cannot store, so the net ends on the second conv's spike map
    torch.manual_seed(0)
    model = nt.SequentialState(
        torch.nn.Conv2d(2, 8, 3, stride=2, padding=1),
        nt.IAFCell(),
        torch.nn.Conv2d(8, 4, 3, padding=1),
        nt.LIFBoxCell(),
    )
    samples, size = 4, 12
    x = spikes_in(samples, T, 2, size, size)
    state, steps = None, []
    with torch.no_grad():
        model[0].weight.mul_(16.0)
        model[2].weight.mul_(16.0)
        for t in range(T):
            z, state = model(x[:, t], state)
            steps.append(z)
    graph = nt.to_nir(model, x[:, 0])
    graph.nodes["0"].input_shape = np.array(
        [size, size]
    )  # left None by the exporter: only these are filled in
    graph.nodes["2"].input_shape = np.array([size // 2, size // 2])
    save(out, "norse-conv", graph, x, torch.stack(steps, 1).flatten(2))
    # its IAFCell adds its input in full each step, yet the exporter writes r = 1 with no dt:
    # --discretisation norse reads IF nodes that way
    fixtures["norse-conv"] = {"dt": 1e-6, "reset": "zero", "discretisation": "norse"}
    return fixtures


def rockpool(out: Path) -> dict[str, dict]:
    from rockpool.nn.combinators import Sequential
    from rockpool.nn.modules import LIFTorch, LinearTorch
    from rockpool.nn.modules.torch.nir import to_nir

    fixtures = {}
    x = spikes_in(N, T, IN)
    for name, recurrent in (("lif-mlp", False), ("rlif-mlp", True)):
        torch.manual_seed(0)
        model = Sequential(
            LinearTorch((IN, HIDDEN)),
            LIFTorch(HIDDEN, has_rec=recurrent),
            LinearTorch((HIDDEN, OUT)),
            LIFTorch(OUT),
        )
        with torch.no_grad():
            if recurrent:  # its default recurrent weights drive the layer to 2^16 spikes per step
                model[1].w_rec.data.mul_(0.05)
            spikes, _, _ = model(x)
        save(out, f"rockpool-{name}", to_nir(model), x, spikes)
        fixtures[f"rockpool-{name}"] = {"dt": 1e-3, "reset": "sinabs", "discretisation": "rockpool"}
        if recurrent:
            LOSSES[f"rockpool-{name}"] = (
                "the recurrent weights: its exporter writes no w_rec and no cycle"
            )
    return fixtures


def main(framework: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    fixtures = {"sinabs": sinabs, "norse": norse, "rockpool": rockpool}[framework](out)
    manifest = {
        "framework": framework,
        "version": version(framework),
        "nir": version("nir"),
        "torch": version("torch"),
        "fixtures": fixtures,
        "exporter_loses": LOSSES,
    }
    (out / f"{framework}.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
