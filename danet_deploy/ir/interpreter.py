"""Layer-synchronous float interpreter of NIR graphs, written from the NIR definitions.

At every time step each node receives the sum of its sources' outputs *of the same
step* (as training frameworks compute), in topological order; a recurrent edge (one
that closes a cycle) delivers its source's output of the previous step (zero at the first).
Neurons (LIF, CubaLIF, IF, LI, Integrator) step by ``danet_deploy/ir/neurons.py``, the one
statement of their update that the compiler lowers too: ``v += dt/tau * (v_leak - v + r*I)``
for a LIF under forward Euler, a current ``i += dt/tau_syn * (-i + w_in*I)`` before it for a
CubaLIF, ``v += dt * r * I`` for an IF; spikes where ``v > v_threshold``, then ``v = v_reset``
there (or, by the graph's reset convention, ``v -= v_threshold``; snnTorch's late conventions
apply either a step later; sinabs' fire several spikes at once; SpikingJelly's fire at
``v >= v_threshold``, its hard reset from a voltage that starts at ``v_reset``). ``Threshold``:
``I > threshold``; ``Delay``: the input ``round(delay/dt)`` steps ago. danet-deploy's own
``SigmaDelta`` node steps by ``danet_deploy/ir/sigma_delta.py``, in floats.

It shares no code with the PyTorch models, so agreement between the two is evidence
that the export is right. It sits at the NIR level, below the compiler (which
calibrates its fixed-point scales with it and lowers stateless nodes with
:func:`linear_step`) and the simulators (``simulate --mode float`` runs it).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Callable, NamedTuple

import nir
import numpy as np
import torch
import torch.nn.functional as F

from danet_deploy.ir.graph import NEURON_TYPES, FlatGraph
from danet_deploy.ir.neurons import NEURON_NODES, dynamics, membrane_step
from danet_deploy.ir.resets import fire_float
from danet_deploy.ir.sigma_delta import SigmaDelta, SigmaDeltaState

Step = Callable[[torch.Tensor], torch.Tensor]


def _param(value: object, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``value`` as a tensor: the array itself where it already is one of ``dtype`` (a large
    network's weights are not copied), else a copy (NIR parameters may be read-only
    broadcast views, which torch warns about) of its distinct part (:func:`_compact`)."""
    arr = np.asarray(value)
    if (
        device.type == "cpu"
        and arr.dtype == np.float32
        and dtype == torch.float32
        and arr.flags.writeable
        and arr.flags.c_contiguous
    ):
        return torch.from_numpy(arr)
    return torch.as_tensor(np.array(_compact(arr), dtype=np.float64), dtype=dtype, device=device)


def _compact(arr: np.ndarray) -> np.ndarray:
    """A broadcast view cut to length 1 along each axis it repeats (stride 0): the same values
    wherever the parameter meets a tensor of its full shape, without filling that shape (a
    BatchNorm's per-channel scale spread over every neuron: 52 MiB in DA-ResNet-152)."""
    return arr[tuple(slice(0, 1) if stride == 0 else slice(None) for stride in arr.strides)]


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
        pad = (
            node.padding
            if isinstance(node.padding, str)
            else tuple(np.atleast_1d(node.padding).tolist())
        )
        stride, dil = (
            tuple(np.atleast_1d(node.stride).tolist()),
            tuple(np.atleast_1d(node.dilation).tolist()),
        )
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

    def __init__(
        self, name: str, graph: FlatGraph, param: Callable[[object], torch.Tensor]
    ) -> None:
        node = graph.nodes[name]
        self.node, self.firing = node, graph.firing(name)
        if isinstance(node, nir.Delay):
            self.steps = np.rint(np.asarray(node.delay, dtype=np.float64) / graph.dt).astype(
                np.int64
            )
            self.index = torch.as_tensor(self.steps)
        else:
            self.dyn = dynamics(node, graph).converted(lambda v: param(_held_once(v)))
        self.state: dict[str, torch.Tensor] = {}

    @property
    def binary(self) -> bool:
        """Whether every output is 0 or 1 (a spike; sinabs' conventions fire several at once)."""
        return (
            not isinstance(self.node, nir.Delay)
            and self.dyn.threshold is not None
            and not self.firing.reset.multi_spike
        )

    def reset(self) -> None:
        self.state = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.node, nir.Delay):
            return self._delay(x)
        st, d = self.state, self.dyn
        i = st.get("i", torch.zeros_like(x)) if d.has_current else None
        i, v = membrane_step(d, i, st["v"] if "v" in st else self._initial_voltage(x), x)
        if d.has_current:
            st["i"] = i
        if d.threshold is None:
            st["v"] = v
            return v
        return self._fire(v, x.dtype)

    def _initial_voltage(self, x: torch.Tensor) -> torch.Tensor:
        """0, or ``v_reset`` where the convention starts there (SpikingJelly's hard reset)."""
        if self.firing.starts_at_reset:
            return self.dyn.v_reset.expand_as(x).clone()
        return torch.zeros_like(x)

    def _fire(self, v: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Spikes of voltage ``v`` and the reset, by the graph's convention; keeps the new voltage."""
        st = self.state
        out, st["v"], st["fired"] = fire_float(
            self.firing, v, self.dyn.threshold, st.get("fired"), self.dyn.v_reset
        )
        return out.to(dtype)

    def _delay(self, x: torch.Tensor) -> torch.Tensor:
        depth = int(self.steps.max()) + 1 if self.steps.size else 1
        buf = self.state.get(
            "buffer", torch.zeros((depth, *x.shape), dtype=x.dtype, device=x.device)
        )
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


class _Sum(NamedTuple):
    """A node's summed input at one step, flat ``[N, -1]``, with its first source's output shape."""

    flat: torch.Tensor
    first: tuple[int, ...]


def _shared_prefixes(graph: FlatGraph) -> dict[str, tuple[str | None, list[str]]]:
    """Per node, an earlier node whose sources (two or more, read alike) begin its own, or None,
    and the sources left to add to that node's sum. The densely additive inputs of a DANet
    stage each extend the one before by one block's output: added to the previous sum, the same
    additions in the same order give the same bits, and no block's output waits for the end of
    its stage."""
    summed: dict[tuple[tuple[str, bool], ...], str] = {}
    plan: dict[str, tuple[str | None, list[str]]] = {}
    for name in graph.nodes:
        key = tuple((s, (s, name) in graph.recurrent) for s in graph.sources[name])
        shared = next((j for j in range(len(key), 1, -1) if key[:j] in summed), 0)
        plan[name] = (summed[key[:shared]] if shared else None, [s for s, _ in key[shared:]])
        if len(key) > 1:
            summed.setdefault(key, name)
    return plan


class ReferenceSimulator:
    """Runs a :class:`FlatGraph` on batches: ``run(x)`` with ``x`` ``[N, T, ...]``."""

    def __init__(
        self,
        graph: FlatGraph,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> None:
        if len(graph.inputs) != 1 or not graph.outputs:
            raise ValueError(
                "the reference simulator needs exactly one Input and at least one Output node"
            )
        self.graph, self.dtype, self.device = graph, dtype, torch.device(device)
        p = lambda v: _param(v, dtype, self.device)  # noqa: E731
        self.neurons = {
            n: _SigmaDelta(node, self.device)
            if isinstance(node, SigmaDelta)
            else _Neuron(n, graph, p)
            for n, node in graph.nodes.items()
            if isinstance(node, (*NEURON_NODES, nir.Delay, SigmaDelta))
        }
        self.steps = {
            n: self.neurons.get(n) or linear_step(node, p) for n, node in graph.nodes.items()
        }
        self.prefix = _shared_prefixes(graph)
        self.bases = {base for base, _ in self.prefix.values() if base}

    def run(
        self,
        x: torch.Tensor,
        record: bool = False,
        observe: Callable[[str, torch.Tensor], None] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Simulate ``x`` ``[N, T, *input_shape]``; return ``[T, N, ...]`` per node.

        Only the Output nodes are returned unless ``record`` is set. ``observe(name, input)``
        sees every node's summed input at every step. A graph without recurrent edges runs node
        by node, all steps of a node before the next (:meth:`_run_by_node`); one with them,
        step by step (:meth:`_run_by_step`). Both call each node's step function on the same
        inputs in the same order, so their results are the same bits.
        """
        x = x.to(self.device, self.dtype)
        for neuron in self.neurons.values():
            neuron.reset()
        keep = set(self.graph.nodes) if record else set(self.graph.outputs)
        run = self._run_by_step if self.graph.recurrent else self._run_by_node
        return {n: torch.stack(v) for n, v in run(x, keep, observe).items()}

    def held_bytes_per_sample(self, steps: int) -> int:
        """The most bytes :meth:`run` holds at once for one sample of ``steps`` time steps, so
        that a caller can size its batches (compile's calibration, docs/compile.md §1). Node by
        node, that is every step of the outputs and sums still waiting for a reader (spikes as
        bools); step by step, every node's value of one step."""
        g, width = self.graph, torch.empty((), dtype=self.dtype).element_size()
        size = {n: math.prod(shape) for n, shape in g.shapes.items()}
        if g.recurrent:
            return width * sum(size.values())
        unread = Counter(s for _, rest in self.prefix.values() for s in rest)
        unread.update(base for base, _ in self.prefix.values() if base)
        held: dict[tuple[str, str], int] = {}
        peak = 0
        for name, (base, rest) in self.prefix.items():
            neuron = self.neurons.get(name)
            spikes = isinstance(neuron, _Neuron) and neuron.binary
            held["out", name] = steps * size[name] * (1 if spikes else width)
            if name in self.bases:
                held["sum", name] = steps * width * size[g.sources[name][0]]
            peak = max(peak, sum(held.values()))
            for done in [*rest, *([base] if base else [])]:
                unread[done] -= 1
                if not unread[done]:
                    held.pop(("sum", done), None)
                    if done not in g.outputs:
                        held.pop(("out", done), None)
        return peak

    def _run_by_node(
        self, x: torch.Tensor, keep: set[str], observe: Callable[[str, torch.Tensor], None] | None
    ) -> dict[str, list[torch.Tensor]]:
        """Each node's outputs of every step, a node at a time in topological order. A node's
        state is dropped once its steps are done, and an output or a sum once its last reader
        has run, so a deep network holds a few layers' values (of every step, spikes as bools),
        not every neuron's voltage (DA-ResNet-152: 81 MiB a sample, docs/compile.md §1)."""
        outputs: dict[str, list[torch.Tensor]] = {}
        sums: dict[str, list[_Sum]] = {}
        unread = Counter(s for _, rest in self.prefix.values() for s in rest)
        unread.update(base for base, _ in self.prefix.values() if base)
        for name, step in self.steps.items():
            neuron = self.neurons.get(name)
            spikes = (
                isinstance(neuron, _Neuron) and neuron.binary
            )  # held as bools: a quarter of the bytes
            base, rest = self.prefix[name]
            outputs[name] = []
            for t in range(x.shape[1]):
                total = self._sum(
                    sums[base][t] if base else None, [outputs[s][t].to(self.dtype) for s in rest]
                )
                inp = x[:, t] if total is None else self._shaped(name, total)
                if total is not None and observe is not None:
                    observe(name, inp)
                out = step(inp)
                outputs[name].append(out.bool() if spikes else out)
                if name in self.bases:
                    sums.setdefault(name, []).append(total)
            if neuron is not None:
                neuron.reset()
            for done in [*rest, *([base] if base else [])]:
                unread[done] -= 1
                if not unread[done]:
                    sums.pop(done, None)
                    if done not in keep:
                        outputs.pop(done, None)
        return {n: [v.to(self.dtype) for v in outputs[n]] for n in keep}

    def _run_by_step(
        self, x: torch.Tensor, keep: set[str], observe: Callable[[str, torch.Tensor], None] | None
    ) -> dict[str, list[torch.Tensor]]:
        """Every node at each step in turn, as a recurrent edge needs (it delivers its source's
        output of the previous step); a value is freed as soon as the last node of its step
        that reads it has run."""
        g = self.graph
        trace: dict[str, list[torch.Tensor]] = {n: [] for n in keep}
        fed_back = {s for s, _ in g.recurrent}
        readers = Counter(
            s
            for name, (_, rest) in self.prefix.items()
            for s in rest
            if (s, name) not in g.recurrent
        )
        readers.update(base for base, _ in self.prefix.values() if base)
        previous = {s: self._silent(s).expand(x.shape[0], *g.shapes[s]) for s in fed_back}
        for t in range(x.shape[1]):
            values: dict[str, torch.Tensor] = {}
            sums: dict[str, _Sum] = {}
            unread = Counter(readers)
            for name, step in self.steps.items():
                base, rest = self.prefix[name]
                total = self._sum(
                    sums[base] if base else None,
                    [previous[s] if (s, name) in g.recurrent else values[s] for s in rest],
                )
                inp = x[:, t] if total is None else self._shaped(name, total)
                if total is not None and observe is not None:
                    observe(name, inp)
                values[name] = step(inp)
                if name in keep:
                    trace[name].append(values[name])
                if name in self.bases:
                    sums[name] = total
                for done in [
                    *(s for s in rest if (s, name) not in g.recurrent),
                    *([base] if base else []),
                ]:
                    unread[done] -= 1
                    if not unread[done]:
                        sums.pop(done, None)
                        if done not in fed_back:
                            values.pop(done, None)
            previous = {s: values[s] for s in fed_back}
        return trace

    @staticmethod
    def _sum(partial: _Sum | None, parts: list[torch.Tensor]) -> _Sum | None:
        """A node's summed input at one step, flat: ``partial`` (the sum of its first sources, made
        for an earlier node), else its first part, and then each part after it added in order;
        None for the input node."""
        if partial is None:
            if not parts:
                return None
            partial, parts = (
                _Sum(parts[0].reshape(parts[0].shape[0], -1), tuple(parts[0].shape[1:])),
                parts[1:],
            )
        total = partial.flat
        for part in parts:
            total = total + part.reshape(total.shape[0], -1)
        return _Sum(total, partial.first)

    def _shaped(self, name: str, total: _Sum) -> torch.Tensor:
        """``total`` in the shape ``name`` takes."""
        return total.flat.reshape(total.flat.shape[0], *self._input_shape(name, total.first))

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
        return self.steps[name](total.reshape(1, *self._input_shape(name, tuple(first.shape[1:]))))

    def _input_shape(self, name: str, first: tuple[int, ...]) -> tuple[int, ...]:
        """Let a flat vector feed a node that expects a shaped tensor (and vice versa): an affine
        node takes its features, any other the shape of its first source's output."""
        node = self.graph.nodes[name]
        if isinstance(node, (nir.Affine, nir.Linear)):
            return (int(np.asarray(node.weight).shape[-1]),)
        return first

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """The first output summed over time steps, ``[N, outputs]`` (spike counts of a spiking output)."""
        return self.run(x)[self.graph.outputs[0]].sum(0).flatten(1)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class index per sample: arg-max of :meth:`scores`."""
        return self.scores(x).argmax(1)
