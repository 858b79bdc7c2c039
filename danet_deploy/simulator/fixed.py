"""The fast simulator's fixed-point mode: the compiled program, vectorised and batched.

It applies exactly Lava's integer arithmetic (``lava-semantics.md`` §1-§3) layer-
synchronously: every population sees its sources' outputs of the same step, which
is what Lava's pipeline computes once each term's balancing delay is applied, only
without the latency. Integer sums are computed in float64 (exact below 2^53) with
TF32 disabled, so the results are identical on CPU and CUDA.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..compile import INPUT_BITS, Program

U_MAX = 1 << 23


def _trunc_decay(v: torch.Tensor, keep: int) -> torch.Tensor:
    """``trunc0(v * keep / 4096)``: ``sign(p) * (|p| >> 12)``, i.e. division rounded toward zero."""
    return torch.div(v * keep, 4096, rounding_mode="trunc")


def _wrap24(u: torch.Tensor) -> torch.Tensor:
    """Lava's single wrap of the current into ``(-2^23, 2^23]``."""
    return U_MAX - torch.remainder(U_MAX - u, 2 * U_MAX)


class FixedSimulator:
    """Runs a :class:`Program` on ``[N, T, *input_shape]`` float inputs."""

    def __init__(self, program: Program, device: str | torch.device = "cpu") -> None:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        self.program, self.device = program, torch.device(device)
        self.weights = {}
        self.current_bound: dict[str, float] = {}
        for name, pop in program.populations.items():
            for i, t in enumerate(pop.terms):
                # float32 sums are exact below 2^24: use them when the largest possible sum stays there
                bound = float(abs(t.weight_q).sum(axis=tuple(range(1, t.weight_q.ndim))).max()) \
                    * self._value_bound(t.source)
                dtype = torch.float32 if bound < 2 ** 24 else torch.float64
                self.weights[(name, i)] = torch.as_tensor(t.weight_q, dtype=dtype, device=self.device)
                self.current_bound[name] = self.current_bound.get(name, 0.0) + bound
        self.bias = {name: torch.as_tensor(f.bias_mant, dtype=torch.int64, device=self.device) << 6
                     for name, f in program.fixed.items() if f.bias_mant is not None}

    def _value_bound(self, source: str) -> float:
        """Largest |value| a population sends: 1 for spikes, the payload range for graded values."""
        f = self.program.fixed[source]
        if not f.graded:
            return 1.0
        return float(2 ** (INPUT_BITS - 1)) if self.program.populations[source].kind == "input" else float(2 ** 23)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Input values as the integers the chip receives (graded) or binary spikes."""
        inp = self.program.lowered.input
        f = self.program.fixed[inp.name]
        x = x.to(self.device, torch.float64)
        return torch.round(x * f.value_scale).to(torch.int64) if f.graded else (x != 0).to(torch.int64)

    def _current(self, name: str, out: dict[str, torch.Tensor]) -> torch.Tensor:
        pop = self.program.populations[name]
        total = None
        for i, t in enumerate(pop.terms):
            src = out[t.source]
            w = self.weights[(name, i)]
            x = src.to(w.dtype) if self.program.fixed[t.source].graded else (src != 0).to(w.dtype)
            if t.map.kind == "conv":
                a = F.conv2d(x.reshape(x.shape[0], *t.map.in_shape), w, stride=t.map.stride, padding=t.map.padding)
            else:
                a = x.reshape(x.shape[0], -1) @ w.T
            a = torch.round(a.reshape(x.shape[0], *pop.shape)).to(torch.int64)
            total = a if total is None else total + a
        return total

    def run(self, x: torch.Tensor, record: bool = False) -> dict[str, torch.Tensor]:
        """Per population ``[T, N, ...]``: spikes (0/1), relay values, readout currents ``A``."""
        prog = self.program
        xi = self.encode(x)
        n, steps = xi.shape[:2]
        state = {name: torch.zeros((n, *p.shape), dtype=torch.int64, device=self.device)
                 for name, p in prog.populations.items() if p.kind in ("lif", "gate")}
        keep = set(prog.populations) if record else {p.name for p in prog.lowered.readouts}
        trace: dict[str, list[torch.Tensor]] = {k: [] for k in keep}
        for t in range(steps):
            out: dict[str, torch.Tensor] = {}
            for name, pop in prog.populations.items():
                if pop.kind == "input":
                    out[name] = xi[:, t]
                elif pop.kind in ("relay", "readout"):
                    out[name] = self._current(name, out)
                else:
                    out[name] = self._neuron_step(name, self._current(name, out), state)
                if name in keep:
                    trace[name].append(out[name])
        return {k: torch.stack(v) for k, v in trace.items()}

    def _neuron_step(self, name: str, a: torch.Tensor, state: dict[str, torch.Tensor]) -> torch.Tensor:
        f = self.program.fixed[name]
        assert f.du == 4095, "the compiler keeps no current memory (u = 64 * A)"
        u = a << 6
        v = _wrap24(u) if self.current_bound[name] * 64 > U_MAX else u  # wrapping needs |64 A| > 2^23
        if f.dv != 4096:  # dv = 4096: no voltage memory
            v = v + _trunc_decay(state[name], 4096 - f.dv)
        if name in self.bias:
            v = v + self.bias[name]
        v = v.clamp(-(U_MAX - 1), U_MAX - 1)
        spikes = v > (f.vth << 6)
        state[name] = v.masked_fill_(spikes, 0)
        return spikes.to(torch.int64)

    def scores_from(self, out: dict[str, torch.Tensor], steps: int) -> torch.Tensor:
        """The readout's summed integer current (plus its bias over the steps) per class."""
        readout = self.program.lowered.readouts[0]
        a = out[readout.name]
        total = a.sum(0).reshape(a.shape[1], -1)
        bias = self.program.readout_bias.get(readout.name)
        if bias is not None:
            total = total + steps * torch.as_tensor(bias, device=total.device).reshape(1, -1)
        return total

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.scores_from(self.run(x), x.shape[1])

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.scores(x).argmax(1)
