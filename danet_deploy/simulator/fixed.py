"""The fast simulator's fixed-point mode: the compiled program, vectorised and batched.

It applies exactly Lava's integer arithmetic (docs/compile.md §3) layer-
synchronously: every population sees its sources' outputs of the same step, which
is what Lava's pipeline computes once each term's balancing delay is applied, only
without the latency. Apart from a population's synapses onto itself (recurrent), the
graph is feed-forward, so it runs population by population over all time steps at
once: one convolution (channels-last) or matrix product per term for the whole
``T x N`` batch, then the neuron recurrence over ``T`` (LIF without current memory on
the fast float32 path; CUBA neurons with a decaying current, and populations with
recurrent synapses, step by step in float64).

Integers are held in floats, where arithmetic on them is exact: float32 while every
value provably stays below 2^24 (and the voltage decay is a power of two), float64
(exact below 2^53) otherwise. TF32 is disabled so results are identical on CPU and
CUDA.

A program with sigma-delta populations (``Lowered.pipelined``) runs as Loihi's pipeline runs
it, from one start: each population over its whole timeline (its latency plus ``T`` steps),
each term delivering its source's output ``SynapseGroup.hop`` steps later, so that a layer's
start-up (its bias before its first input arrives) shapes its state as in Lava. Its window,
the ``T`` steps from its latency on, is what it returns; a readout's window starts with the
sum of what it received before (Lava's Sigma, which sums its input from the first step).
"""

from __future__ import annotations

import ctypes
import functools
import math
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..ir.chip_format import LOIHI
from ..ir.program import Program
from ..ir.resets import fire_integer
from ..ir.sigma_delta import SigmaDelta, SigmaDeltaState

F32_EXACT = 1 << 24  # float32 holds every integer up to here
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)


def _wrap24(u: torch.Tensor) -> torch.Tensor:
    """Lava's single wrap of the current into ``(-2^23, 2^23]``."""
    m = LOIHI.state_max
    return u - (2 * m) * (u > m).to(u.dtype) + (2 * m) * (u <= -m).to(u.dtype)


def _conv_wrap(a: torch.Tensor) -> torch.Tensor:
    """Lava's Conv output wrapped into ``[-2^23, 2^23)`` (``lava/proc/conv/utils.signed_clamp``)."""
    m = LOIHI.state_max
    return torch.remainder(a + m, 2 * m) - m


@functools.cache
def _keep_freed_memory() -> None:
    """Let glibc reuse freed tensor memory instead of unmapping it.

    By default every tensor above 128 KiB is mmap-ed, and freeing it hands the pages
    back to the kernel, so the next layer's tensor is page-faulted and zero-filled
    afresh; that costs the simulator ~30 % of its time. Raising the mmap and trim
    thresholds to 256 MiB keeps up to that much freed memory in the heap for reuse
    (PyTorch's CPU performance guide suggests a caching allocator for the same
    reason). No-op where glibc's ``mallopt`` is missing.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, 256 << 20)
        libc.mallopt(M_TRIM_THRESHOLD, 256 << 20)
    except (OSError, AttributeError):
        pass


def _lagged(a: torch.Tensor, lag: int, steps: int, n: int) -> torch.Tensor:
    """``a`` (``[S*N, ...]``, ``S`` steps or one for all) moved ``lag`` steps later in the sample:
    its first ``lag`` steps get nothing."""
    if not lag:
        return a
    a_t = a.view(-1, n, *a.shape[1:]).expand(steps, n, *a.shape[1:])
    out = torch.zeros_like(a_t)
    out[lag:] = a_t[: steps - lag]
    return _batched(out.view(steps * n, *a.shape[1:]))


def _batched(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` batches channels-last (several times faster convolutions on CPU)."""
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


class FixedSimulator:
    """Runs a :class:`Program` on ``[N, T, *input_shape]`` float inputs."""

    def __init__(self, program: Program, device: str | torch.device = "cpu") -> None:
        torch.backends.cudnn.allow_tf32 = False
        _keep_freed_memory()
        torch.backends.cuda.matmul.allow_tf32 = False
        self.program, self.device = program, torch.device(device)
        self.weights: dict[tuple[str, int], torch.Tensor] = {}
        self.current_bound: dict[str, float] = {}
        for name, pop in program.populations.items():
            self.current_bound[name] = 0.0  # a bias source has no synapses
            for i, t in enumerate(pop.synapse_groups):
                w = abs(t.weight_q).sum(axis=tuple(range(1, t.weight_q.ndim))).max()
                bound = float(w) * self._value_bound(t.source)
                # a float copy (torch.as_tensor would warn of a compile's shared, read-only integers)
                w = torch.tensor(
                    np.ascontiguousarray(t.weight_q), dtype=self._dtype(bound), device=self.device
                )
                self.weights[(name, i)] = (
                    w.to(memory_format=torch.channels_last) if w.ndim == 4 else w
                )
                self.current_bound[name] = self.current_bound.get(name, 0.0) + bound
        self.bias = {
            name: torch.as_tensor(
                f.bias_mant.astype("float64") * LOIHI.bias_unit, device=self.device
            )
            for name, f in program.fixed.items()
            if f.bias_mant is not None
        }
        self.consumers: dict[str, int] = {}
        for pop in program.populations.values():
            for t in pop.synapse_groups:
                self.consumers[t.source] = self.consumers.get(t.source, 0) + 1

    @staticmethod
    def _dtype(bound: float) -> torch.dtype:
        """The float type in which integers up to ``bound`` (and their sums) are exact."""
        return torch.float32 if bound < F32_EXACT else torch.float64

    def _value_bound(self, source: str) -> float:
        """Largest |value| a population sends: 1 for spikes, the payload range for graded values."""
        f, pop = self.program.fixed[source], self.program.populations[source]
        if not f.graded:
            return 1.0
        if pop.kind.is_input:
            return float(2 ** (LOIHI.input_bits - 1))
        if pop.firing.reset.multi_spike:  # a count: the voltage over the threshold
            return float((LOIHI.state_max - 1) // (f.vth << LOIHI.vth_shift))
        return self.current_bound[source]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Input values as the integers the chip receives (graded) or binary spikes."""
        inp = self.program.lowered.input
        f = self.program.fixed[inp.name]
        x = x.to(self.device, torch.float64)
        return (
            torch.round(x * f.value_scale).to(torch.int64) if f.graded else (x != 0).to(torch.int64)
        )

    def run(
        self,
        x: torch.Tensor,
        record: bool = False,
        observe: Callable[[str, torch.Tensor], None] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per population ``[T, N, ...]`` (integer values in floats): spikes (0/1), relay
        values, readout currents ``A``. Only the readouts unless ``record``; ``observe``
        sees every population's values as soon as they exist (counting without keeping them).

        Values are held as one ``[S*N, *shape]`` batch (channels-last where 3-D), where
        ``S`` is ``T``, or 1 for what is the same at every step: a static input
        (direct encoding of an image) and the currents computed from it alone.
        """
        prog = self.program
        if prog.lowered.pipelined:
            return self._run_pipelined(x, record, observe)
        inp = prog.lowered.input
        xi = self.encode(x).transpose(0, 1)
        steps, n = xi.shape[:2]
        if bool((xi == xi[:1]).all()):
            xi = xi[:1]
        values = {
            inp.name: _batched(xi.reshape(-1, *inp.shape).to(self._dtype(2**LOIHI.input_bits)))
        }

        def over_steps(name: str) -> torch.Tensor:
            v = values[name]
            return v.view(-1, n, *v.shape[1:]).expand(steps, n, *v.shape[1:])

        if observe:
            observe(inp.name, over_steps(inp.name))
        pending = dict(self.consumers)
        keep = set(prog.populations) if record else {p.name for p in prog.lowered.readouts}
        for name, pop in prog.populations.items():
            if pop.kind.is_input:
                continue
            a = self._current(name, values, n, steps)  # a relay sends it, a readout's is recorded
            values[name] = self._neuron_steps(name, a, steps, n) if pop.kind.spiking else a
            if observe:
                observe(name, over_steps(name))
            for t in pop.synapse_groups:  # free what no later population reads
                pending[t.source] -= 1
                if pending[t.source] == 0 and t.source not in keep:
                    del values[t.source]
        return {k: over_steps(k) for k in values if k in keep}

    def _run_pipelined(
        self, x: torch.Tensor, record: bool, observe: Callable[[str, torch.Tensor], None] | None
    ) -> dict[str, torch.Tensor]:
        """:meth:`run` for a pipelined program: each population's window of its timeline."""
        out: dict[str, torch.Tensor] = {}
        for name, values in self._timelines(x, keep=set()):
            pop = self.program.populations[name]
            window = values[pop.latency :]
            if pop.kind.is_readout:  # what it summed before its window
                window = window.clone()
                window[0] += values[: pop.latency].sum(0)
            if observe:
                observe(name, window)
            if record or pop.kind.is_readout:
                out[name] = window
        return out

    def timelines(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """A pipelined program's populations at every step from the start, ``[latency + T, N, ...]``
        in float64 (module docstring): what Lava's run of one sample records."""
        return dict(self._timelines(x, keep=set(self.program.populations)))

    def _timelines(self, x: torch.Tensor, keep: set[str]) -> Iterator[tuple[str, torch.Tensor]]:
        """Each population's timeline as soon as it exists, in program order; a timeline no later
        population reads is let go unless ``keep`` names it (a network's layers at once would be
        the batch times every neuron times every step, in float64)."""
        prog = self.program
        inp = prog.lowered.input
        steps = x.shape[1]
        timeline = {inp.name: self.encode(x).transpose(0, 1).to(torch.float64)}
        pending = dict(self.consumers)
        yield inp.name, timeline[inp.name]
        for name, pop in prog.populations.items():
            if pop.kind.is_input:
                continue
            a = self._pipelined_input(name, timeline, pop.latency + steps)
            timeline[name] = self._sigma_delta_steps(name, a) if pop.kind.sigma_delta else a
            for t in pop.synapse_groups:
                pending[t.source] -= 1
                if not pending[t.source] and t.source not in keep:
                    del timeline[t.source]
            yield name, timeline[name]

    def _pipelined_input(
        self, name: str, timeline: dict[str, torch.Tensor], length: int
    ) -> torch.Tensor:
        """The summed input of population ``name`` at each step of its timeline, ``[length, N, ...]``:
        each term brings its source's output ``SynapseGroup.hop`` steps later (Lava's synapse hop)."""
        pop = self.program.populations[name]
        total = None
        for i, t in enumerate(pop.synapse_groups):
            src = timeline[t.source]
            w = self.weights[(name, i)].to(torch.float64).contiguous()
            flat = src.reshape(-1, *src.shape[2:])
            if (
                t.map.kind == "conv"
            ):  # always Lava's Conv in a pipelined program, which wraps its output
                a = F.conv2d(flat, w, stride=t.map.stride, padding=t.map.padding)
                a = _conv_wrap(torch.round(a) if a.is_cuda else a)
            else:
                a = flat.reshape(len(flat), -1) @ w.T
            a = a.reshape(len(src), src.shape[1], *pop.shape)
            if total is None:
                total = torch.zeros((length, *a.shape[1:]), dtype=torch.float64, device=a.device)
            total[t.hop :] += a[: length - t.hop]
        return total

    def _sigma_delta_steps(self, name: str, a: torch.Tensor) -> torch.Tensor:
        """A sigma-delta population's payloads over its timeline (ir/sigma_delta.py, exactly)."""
        pop, f = self.program.populations[name], self.program.fixed[name]
        node = SigmaDelta(
            threshold=np.full(pop.shape, f.vth),
            bias=0 if f.bias_mant is None else f.bias_mant,
            encoder=pop.kind.encoder,
            relu=pop.relu,
            spike_exp=pop.spike_exp,
            state_exp=pop.state_exp,
        )
        state = SigmaDeltaState(node, exact=True, device=a.device)
        return torch.stack([state.step(a_t) for a_t in a]).to(torch.float64)

    def _current(
        self, name: str, values: dict[str, torch.Tensor], n: int, steps: int
    ) -> torch.Tensor:
        """The summed synaptic input ``A``, ``[S*N, *shape]`` (``S``: the longest source's); a term
        with a lag (the graph's Delay nodes) brings its source's step ``t - lag`` to step ``t``."""
        pop = self.program.populations[name]
        dtype = self._dtype(self.current_bound[name])
        parts = []
        for i, t in enumerate(pop.synapse_groups):
            if t.map.recurrent:  # added step by step, from the population's own spikes
                continue
            w = self.weights[(name, i)]
            src = values[t.source].to(w.dtype)
            if t.map.kind == "conv":  # (C, 1, 1) into a flat population: lowering._channels_only
                a = F.conv2d(src, w, stride=t.map.stride, padding=t.map.padding).reshape(
                    -1, *pop.shape
                )
            else:
                a = _batched((src.reshape(src.shape[0], -1) @ w.T).reshape(-1, *pop.shape))
            if a.is_cuda:  # cuDNN may pick Winograd/FFT algorithms: round their tiny errors away
                a = torch.round(a)
            parts.append(_lagged(a.to(dtype), t.lag, steps, n))
        if not parts:  # driven by its recurrent synapses and bias alone
            return torch.zeros((n, *pop.shape), dtype=dtype, device=self.device)
        parts.sort(key=len, reverse=True)
        total = parts[0]
        for a in parts[1:]:  # a static part is added to every step
            total.view(-1, n, *pop.shape).add_(a.view(-1, n, *pop.shape))
        return total

    def _neuron_steps(self, name: str, a: torch.Tensor, steps: int, n: int) -> torch.Tensor:
        """Lava's LIF (``du = 4095``: no current memory) over all steps; spikes ``[T*N, ...]``.

        Written with float 0/1 masks and in-place ops only: on CPU, bool masks and
        ``trunc`` are several times slower than ``floor`` and float compares.
        """
        f, pop = self.program.fixed[name], self.program.populations[name]
        if (
            f.du != LOIHI.du_no_memory
            or pop.firing.reset.programmed
            or any(t.map.recurrent for t in pop.synapse_groups)
        ):
            return self._stepwise(name, a, steps, n)
        keep = LOIHI.decay_unity - f.dv
        # the decay keep/4096 as c/d in lowest terms: trunc0(v c / d) = floor((v c + (d-1)[v<0]) / d)
        g = math.gcd(keep, LOIHI.decay_unity)
        c, d = keep // g, LOIHI.decay_unity // g
        # float32 is exact when the current needs at most one wrap (|u| <= 2^23 after it) and
        # v c + d stays below 2^24 (c = 1); the sum decay + u + bias may then pass 2^24 only
        # where clipping hides the rounding
        fits = self.current_bound[name] * LOIHI.act_unit <= 3 * LOIHI.state_max and c <= 1
        dtype = torch.float32 if fits else torch.float64
        u = a.to(dtype).mul_(LOIHI.act_unit)  # in place: fresh buffers cost page faults
        if self.current_bound[name] * LOIHI.act_unit > LOIHI.state_max:
            u = _wrap24(u)
        ub = (
            u.add_(self.bias[name].to(dtype)) if name in self.bias else u
        )  # what each step adds to v
        theta = float(f.vth << LOIHI.vth_shift)
        shape = ub.shape[1:]
        ub_t = ub.view(-1, n, *shape)
        if (
            len(ub_t) == steps and dtype == torch.float32
        ):  # each step's spikes overwrite the input it used
            spikes = ub
        else:
            layout = torch.channels_last if ub.ndim == 4 else torch.contiguous_format
            spikes = torch.empty(
                (steps * n, *shape), dtype=torch.float32, device=ub.device, memory_format=layout
            )
        spikes_t = spikes.view(steps, n, *shape)
        v = torch.zeros_like(ub_t[0])
        negative = torch.empty_like(v)
        for t in range(steps):
            step_input = ub_t[t if len(ub_t) > 1 else 0]
            if keep == 0:
                v.copy_(step_input)
            else:
                if d > 1:
                    torch.lt(v, 0, out=negative)
                    v.mul_(c).add_(negative, alpha=d - 1).mul_(1 / d).floor_()
                v.add_(step_input)
            v.clamp_(-(LOIHI.state_max - 1), LOIHI.state_max - 1)
            torch.gt(v, theta, out=spikes_t[t])
            v.addcmul_(v, spikes_t[t], value=-1)  # reset to 0 where it fired
        return spikes

    def _stepwise(self, name: str, a: torch.Tensor, steps: int, n: int) -> torch.Tensor:
        """Lava's LIF one step at a time, in float64 (exact for every 24-bit state times a
        13-bit decay): for a current that decays (CUBA, ``du < 4095``) and for recurrent
        synapses, which add the population's own spikes of the step before (none at the
        first step: Lava's run resets them between samples); spikes ``[T*N, ...]``."""
        f = self.program.fixed[name]
        pop = self.program.populations[name]
        a_t = a.to(torch.float64).view(-1, n, *a.shape[1:])
        bias = self.bias[name].to(a_t.device) if name in self.bias else 0.0
        recurrent = [
            (t, self.weights[(name, i)].to(torch.float64))
            for i, t in enumerate(pop.synapse_groups)
            if t.map.recurrent
        ]
        theta = float(f.vth << LOIHI.vth_shift)
        u = torch.zeros_like(a_t[0])
        v = torch.zeros_like(u)
        fired = torch.zeros_like(u, dtype=torch.bool)
        held = torch.float64 if pop.firing.reset.multi_spike else torch.float32  # counts: any size
        spikes = torch.empty((steps, *u.shape), dtype=held, device=u.device)
        for t in range(steps):
            drive = a_t[t if len(a_t) > 1 else 0]
            for term, w in recurrent:
                lag = term.lag
                if t >= lag:
                    drive = drive + self._recurrent_current(
                        term, w, spikes[t - lag].to(torch.float64), pop.shape
                    )
            u = _wrap24(
                torch.trunc(u * (LOIHI.decay_unity - LOIHI.du_offset - f.du) / LOIHI.decay_unity)
                + LOIHI.act_unit * drive
            )
            v = (
                torch.trunc(v * (LOIHI.decay_unity - f.dv) / LOIHI.decay_unity)
                .add_(u)
                .add_(bias)
                .clamp_(-(LOIHI.state_max - 1), LOIHI.state_max - 1)
            )
            out, v, fired = fire_integer(pop.firing, v, theta, fired, LOIHI.state_max - 1)
            spikes[t] = out
        return _batched(spikes.view(steps * n, *u.shape[1:]))

    @staticmethod
    def _recurrent_current(
        term, w: torch.Tensor, s: torch.Tensor, shape: tuple[int, ...]
    ) -> torch.Tensor:
        """What one step of the population's spikes ``s`` sends through a recurrent term."""
        if term.map.kind == "conv":
            return F.conv2d(s, w, stride=term.map.stride, padding=term.map.padding)
        return (s.reshape(s.shape[0], -1) @ w.T).reshape(s.shape[0], *shape)

    def scores_from(self, out: dict[str, torch.Tensor], steps: int) -> torch.Tensor:
        """The readout's summed integer current (plus its bias over the steps) per class."""
        readout = self.program.lowered.readouts[0]
        a = out[readout.name]
        total = a.sum(0, dtype=torch.float64).reshape(a.shape[1], -1)
        bias = self.program.readout_bias.get(readout.name)
        if bias is not None:
            total = total + steps * torch.as_tensor(
                bias, dtype=torch.float64, device=total.device
            ).reshape(1, -1)
        return total.to(torch.int64)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.scores_from(self.run(x), x.shape[1])

    @staticmethod
    def voltage(scores: torch.Tensor) -> torch.Tensor:
        """Lava's ``v`` at the last step of a readout read by its voltage (a layer that never
        decays or fires, docs/lava-dl.md): ``v <- v + u + bias`` with ``u = 64 A`` and the bias
        64 times its mantissa, i.e. 64 times the summed integer current and bias."""
        return scores * LOIHI.act_unit

    def in_float_units(self, scores: torch.Tensor) -> torch.Tensor:
        """Integer readout scores in the float model's units: the output's spike counts where
        a spiking layer feeds the output one to one (what the source framework counts)."""
        readout = self.program.lowered.readouts[0]
        terms = readout.synapse_groups
        w = terms[0].weight_q if len(terms) == 1 else None
        one_to_one = (
            w is not None
            and w.ndim == 2
            and w.shape[0] == w.shape[1]
            and w[0, 0] != 0
            and np.array_equal(w, w[0, 0] * np.eye(len(w), dtype=w.dtype))
        )
        if one_to_one and readout.name not in self.program.readout_bias:
            return scores.to(torch.float64) / float(w[0, 0])
        return scores.to(torch.float64) * LOIHI.act_unit / self.program.fixed[readout.name].scale

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.scores(x).argmax(1)
