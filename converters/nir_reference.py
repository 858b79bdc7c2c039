"""Layer-synchronous float interpreter of NIR graphs, written from the NIR definitions.

At every time step each node receives the sum of its sources' outputs *of the same
step* (as training frameworks compute), in topological order; a recurrent edge (one
that closes a cycle) delivers its source's output of the previous step (zero at the first).
Neurons (LIF, CubaLIF, IF, LI, Integrator) step by ``danet_deploy/ir/neurons.py``, the one
statement of their update that the compiler lowers too: ``v += dt/tau * (v_leak - v + r*I)``
for a LIF under forward Euler, a current ``i += dt/tau_syn * (-i + w_in*I)`` before it for a
CubaLIF, ``v += dt * r * I`` for an IF; spikes where ``v > v_threshold``, then ``v = v_reset``
there (or, by the graph's reset convention, ``v -= v_threshold``; snnTorch's late conventions
apply either a step later; sinabs' fire several spikes at once). ``Threshold``:
``I > threshold``; ``Delay``: the input ``round(delay/dt)`` steps ago. danet-deploy's own
``SigmaDelta`` node steps by ``danet_deploy/ir/sigma_delta.py``, in floats.

It shares no code with the PyTorch models, so agreement between the two is evidence
that the export is right. It sits at the NIR level, below the compiler (which
calibrates its fixed-point scales with it and lowers stateless nodes with
:func:`linear_step`) and the simulators (``simulate --mode float`` runs it).
"""

from __future__ import annotations

from collections import Counter

from typing import Callable

import nir
import numpy as np
import torch
import torch.nn.functional as F

from danet_deploy.ir.graph import NEURON_TYPES, FlatGraph
from danet_deploy.ir.neurons import NEURON_NODES, dynamics, membrane_step
from danet_deploy.ir.sigma_delta import SigmaDelta, SigmaDeltaState

Step = Callable[[torch.Tensor], torch.Tensor]


def _param(value: object, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``value`` as a tensor: the array itself where it already is one of ``dtype`` (a large
    network's weights are not copied), else a copy (NIR parameters may be read-only
    broadcast views, which torch warns about)."""
    arr = np.asarray(value)
    if device.type == "cpu" and arr.dtype == np.float32 and dtype == torch.float32 \
            and arr.flags.writeable and arr.flags.c_contiguous:
        return torch.from_numpy(arr)
    return torch.as_tensor(np.array(value, dtype=np.float64), dtype=dtype, device=device)


def _held_once(value: object) -> np.ndarray:
    """A neuron parameter that is the same for every neuron as one value (0-d: it broadcasts
    over the population, with the same arithmetic, instead of filling its whole shape)."""
    arr = np.asarray(value)
    return arr.reshape(-1)[0] if arr.size and np.all(arr == arr.flat[0]) else arr


def pair(value: object) -> tuple[int, int]:
    """A NIR kernel size, stride or padding (a scalar or two values) as two ints."""
    arr = np.broadcast_to(np.asarray(value), (2,))
    return int(arr[0]), int(arr[1])


def linear_step(node: nir.NIRNode, p: Callable[[object], torch.Tensor]) -> Step:
    """The per-step function of a node without state (affine maps, Threshold)."""
    if isinstance(node, (nir.Input, nir.Output)):
        return lambda x: x
    if isinstance(node, nir.Affine):
        w, b = p(node.weight), p(node.bias)
        return lambda x: x @ w.T + b
    if isinstance(node, nir.Linear):
        w = p(node.weight)
        return lambda x: x @ w.T
    if isinstance(node, (nir.Conv1d, nir.Conv2d)):
        conv = F.conv1d if isinstance(node, nir.Conv1d) else F.conv2d
        w, b = p(node.weight), p(node.bias)
        pad = node.padding if isinstance(node.padding, str) else tuple(np.atleast_1d(node.padding).tolist())
        stride, dil = tuple(np.atleast_1d(node.stride).tolist()), tuple(np.atleast_1d(node.dilation).tolist())
        return lambda x: conv(x, w, b, stride, pad, dil, int(node.groups))
    if isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
        k, s, pad = pair(node.kernel_size), pair(node.stride), pair(node.padding)
        div = 1 if isinstance(node, nir.SumPool2d) else None
        return lambda x: F.avg_pool2d(x, k, s, pad, count_include_pad=True, divisor_override=div)
    if isinstance(node, nir.Flatten):
        start = node.start_dim + 1 if node.start_dim >= 0 else node.start_dim
        end = node.end_dim + 1 if node.end_dim >= 0 else node.end_dim
        return lambda x: x.flatten(start, end)
    if isinstance(node, nir.Scale):
        s = p(node.scale)
        return lambda x: x * s
    if isinstance(node, nir.Threshold):
        th = p(node.threshold)
        return lambda x: (x > th).to(x.dtype)
    raise AssertionError(type(node).__name__)


class _Neuron:
    """State and update of one neuron population (reset by :meth:`reset`)."""

    def __init__(self, name: str, graph: FlatGraph, param: Callable[[object], torch.Tensor]) -> None:
        node = graph.nodes[name]
        self.node, self.reset_mode = node, graph.resets.get(name, "zero")
        if isinstance(node, nir.Delay):
            self.steps = np.rint(np.asarray(node.delay, dtype=np.float64) / graph.dt).astype(np.int64)
            self.index = torch.as_tensor(self.steps)
        else:
            self.dyn = dynamics(node, graph).converted(lambda v: param(_held_once(v)))
        self.state: dict[str, torch.Tensor] = {}

    def reset(self) -> None:
        self.state = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.node, nir.Delay):
            return self._delay(x)
        st, d = self.state, self.dyn
        i = st.get("i", torch.zeros_like(x)) if d.has_current else None
        i, v = membrane_step(d, i, st.get("v", torch.zeros_like(x)), x)
        if d.has_current:
            st["i"] = i
        if d.threshold is None:
            st["v"] = v
            return v
        return self._fire(v, x.dtype)

    def _fire(self, v: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Spikes of voltage ``v`` and the reset, by the graph's convention; keeps the new voltage."""
        st, th, v_reset = self.state, self.dyn.threshold, self.dyn.v_reset
        fired = st.get("fired")  # the late conventions reset a step after the spike
        if fired is not None and self.reset_mode == "zero-late":
            v = torch.where(fired, v_reset.expand_as(v), v)
        elif fired is not None and self.reset_mode == "subtract-late":
            v = v - th * fired
        if self.reset_mode.startswith("multi-spike"):  # sinabs: as many spikes as thresholds reached
            spikes = torch.where(v >= th, torch.floor(v / th), torch.zeros_like(v))
            v = v - th * spikes
            st["v"] = torch.maximum(v, -th) if self.reset_mode == "multi-spike-floor" else v
            return spikes.to(dtype)
        spikes = v > th
        if self.reset_mode == "zero":
            v = torch.where(spikes, v_reset.expand_as(v), v)
        elif self.reset_mode == "subtract":
            v = v - th * spikes
        else:
            st["fired"] = spikes
        st["v"] = v
        return spikes.to(dtype)

    def _delay(self, x: torch.Tensor) -> torch.Tensor:
        depth = int(self.steps.max()) + 1 if self.steps.size else 1
        buf = self.state.get("buffer", torch.zeros((depth, *x.shape), dtype=x.dtype, device=x.device))
        buf = torch.cat([x.unsqueeze(0), buf[:-1]])  # buf[d] = input d steps ago
        self.state["buffer"] = buf
        idx = self.index.to(x.device).expand(x.shape).unsqueeze(0)
        return torch.gather(buf, 0, idx).squeeze(0)


class _SigmaDelta:
    """A sigma-delta population in floats (its state in float64, whatever the run's dtype)."""

    def __init__(self, node: SigmaDelta, device: torch.device) -> None:
        self.node, self.device = node, device
        self.reset()

    def reset(self) -> None:
        self.state = SigmaDeltaState(self.node, exact=False, device=self.device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.state.step(x).to(x.dtype)


class ReferenceSimulator:
    """Runs a :class:`FlatGraph` on batches: ``run(x)`` with ``x`` ``[N, T, ...]``."""

    def __init__(self, graph: FlatGraph, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu") -> None:
        if len(graph.inputs) != 1 or not graph.outputs:
            raise ValueError("the reference simulator needs exactly one Input and at least one Output node")
        self.graph, self.dtype, self.device = graph, dtype, torch.device(device)
        p = lambda v: _param(v, dtype, self.device)  # noqa: E731
        self.neurons = {n: _SigmaDelta(node, self.device) if isinstance(node, SigmaDelta) else _Neuron(n, graph, p)
                        for n, node in graph.nodes.items()
                        if isinstance(node, (*NEURON_NODES, nir.Delay, SigmaDelta))}
        self.steps = {n: self.neurons.get(n) or linear_step(node, p) for n, node in graph.nodes.items()}

    def run(self, x: torch.Tensor, record: bool = False,
            observe: Callable[[str, torch.Tensor], None] | None = None) -> dict[str, torch.Tensor]:
        """Simulate ``x`` ``[N, T, *input_shape]``; return ``[T, N, ...]`` per node.

        Only the Output nodes are returned unless ``record`` is set. ``observe(name, input)``
        sees every node's summed input at every step; a value is freed as soon as the last
        node of its step that reads it has run, so observing costs no more than one layer.
        """
        g = self.graph
        x = x.to(self.device, self.dtype)
        for neuron in self.neurons.values():
            neuron.reset()
        keep = set(g.nodes) if record else set(g.outputs)
        trace: dict[str, list[torch.Tensor]] = {n: [] for n in keep}
        n = x.shape[0]
        fed_back = {s for s, _ in g.recurrent}
        readers = Counter(s for name in g.nodes for s in g.forward_sources(name))
        previous = {s: self._silent(s).expand(n, *g.shapes[s]) for s in fed_back}
        for t in range(x.shape[1]):
            values: dict[str, torch.Tensor] = {}
            unread = Counter(readers)
            for name, step in self.steps.items():
                srcs = g.sources[name]
                if not srcs:
                    inp = x[:, t]
                else:
                    parts = [previous[s] if (s, name) in g.recurrent else values[s] for s in srcs]
                    inp = parts[0].reshape(n, -1)
                    for part in parts[1:]:
                        inp = inp + part.reshape(n, -1)
                    inp = inp.reshape(n, *self._input_shape(name, parts[0]))
                if observe is not None and srcs:
                    observe(name, inp)
                values[name] = step(inp)
                if name in keep:
                    trace[name].append(values[name])
                for s in g.forward_sources(name):
                    unread[s] -= 1
                    if unread[s] == 0 and s not in fed_back:
                        del values[s]
            previous = {s: values[s] for s in fed_back}
        return {n: torch.stack(v) for n, v in trace.items()}

    def _silent(self, name: str) -> torch.Tensor:
        """``name``'s output before the first step, when no neuron has fired: zero at
        neurons, the biases of the linear nodes after them (as snnTorch's ``recurrent(0)``)."""
        g = self.graph
        node = g.nodes[name]
        if not g.sources[name] or isinstance(node, (*NEURON_TYPES, nir.Delay)):
            return torch.zeros((1, *g.shapes[name]), dtype=self.dtype, device=self.device)
        srcs = g.forward_sources(name)
        total = sum(self._silent(s).reshape(1, -1) for s in srcs)
        first = torch.zeros((1, *g.shapes[srcs[0]]))
        return self.steps[name](total.reshape(1, *self._input_shape(name, first)))

    def _input_shape(self, name: str, inp: torch.Tensor) -> tuple[int, ...]:
        """Let a flat vector feed a node that expects a shaped tensor (and vice versa)."""
        node = self.graph.nodes[name]
        if isinstance(node, (nir.Affine, nir.Linear)):
            return (int(np.asarray(node.weight).shape[-1]),)
        return tuple(inp.shape[1:])

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """The first output summed over time steps, ``[N, outputs]`` (spike counts of a spiking output)."""
        return self.run(x)[self.graph.outputs[0]].sum(0).flatten(1)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class index per sample: arg-max of :meth:`scores`."""
        return self.scores(x).argmax(1)
