"""Export-free interop: a NIR graph written the way snnTorch writes it, simulated and compiled.

.venv/bin/python examples/foreign_nir.py
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import nir
import numpy as np
import torch

work = Path(tempfile.mkdtemp(prefix="danet-example-"))
rng = np.random.default_rng(0)
dt, beta = 1e-4, 0.9
tau = dt / (1 - beta)
graph = nir.NIRGraph(
    nodes={
        "input": nir.Input(input_type={"input": np.array([16])}),
        "fc1": nir.Affine(rng.normal(0, 0.5, (32, 16)), np.zeros(32)),
        "lif1": nir.LIF(
            tau=np.full(32, tau),
            r=np.full(32, tau / dt),
            v_leak=np.zeros(32),
            v_threshold=np.ones(32),
        ),
        "fc2": nir.Affine(rng.normal(0, 0.5, (4, 32)), np.zeros(4)),
        "lif2": nir.LIF(
            tau=np.full(4, tau), r=np.full(4, tau / dt), v_leak=np.zeros(4), v_threshold=np.ones(4)
        ),
        "output": nir.Output(output_type={"output": np.array([4])}),
    },
    edges=[("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", "output")],
)
nir.write(work / "net.nir", graph)
spikes = torch.tensor(rng.random((64, 10, 16)) < 0.3, dtype=torch.float32)  # [N, T, 16]
torch.save({"inputs": spikes, "labels": torch.tensor(rng.integers(0, 4, 64))}, work / "data.pt")
cli = [sys.executable, "-m", "danet_deploy"]
subprocess.run(
    [*cli, "simulate", str(work / "net.nir"), "--data", f"tensor:{work / 'data.pt'}", "--json"],
    check=True,
)
subprocess.run(
    [
        *cli,
        "export",
        str(work / "net.nir"),
        "--target",
        "loihi2-sim",
        "--data",
        f"tensor:{work / 'data.pt'}",
    ],
    check=True,
)
subprocess.run(
    [
        *cli,
        "simulate",
        str(work / "net.loihi2-sim"),
        "--data",
        f"tensor:{work / 'data.pt'}",
        "--backend",
        "lava",
        "--samples",
        "8",
        "--json",
    ],
    check=True,
)
