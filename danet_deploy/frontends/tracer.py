"""A PyTorch spiking module -> the NIR graph every command reads (docs/nir.md, "PyTorch modules").

The module is traced with torch.fx by nirtorch's ``NIRTorchTracer`` (the ecosystem's tracer),
with every mapped torch.nn layer and every spiking neuron as a leaf, and run once on the example
input so that every value's shape is known. nirtorch's own ``torch_to_nir`` maps modules only
and refuses every function but ``+``; this walk also reads the functions spiking ResNets use:

* ``+`` (residual and dense sums) is no node: each summand becomes an edge into the consumer;
* ``a - b`` puts ``b`` through ``Scale(-1)``; ``1 - s`` of a spike ``s`` is its negation;
* ``*`` of binary spikes (or their negations: SEW's AND and IAND) is an exact ``Threshold``
  on their signed sum (all ``k`` factors 1 iff the sum exceeds ``k - 1/2``); a constant factor is
  a ``Scale``; a product of real values is refused;
* MaxPool2d on spikes is their OR: ``SumPool2d`` -> ``Threshold(0.5)`` (NIR 1.0.8 has no max
  pool); on real values it is refused;
* BatchNorm (eval statistics) folds into the conv or linear map before it, else becomes a
  per-channel affine map (a grouped 1x1 conv, exact).

SpikingJelly's multi-step modules are traced in single-step mode (on a copy): ``SeqToANNContainer``
and ``MultiStepContainer`` apply their layers to each step, so they are their layers in sequence.
"""

from __future__ import annotations

import copy
import json
import operator
from dataclasses import dataclass
from typing import Any, Callable

import nir
import numpy as np
import torch
import torch.fx
from nirtorch.torch_tracer import NIRTorchTracer
from torch import nn

from danet_deploy import __version__
from danet_deploy.errors import UserError
from danet_deploy.frontends.neurons import is_neuron, neuron_node

LEAVES = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Linear,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.MaxPool2d,
    nn.Flatten,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
)
_PER_STEP_CONTAINERS = {"SeqToANNContainer", "MultiStepContainer", "StepModeContainer"}


def _spikingjelly_container(m: nn.Module) -> bool:
    return (
        type(m).__module__.startswith("spikingjelly") and type(m).__name__ in _PER_STEP_CONTAINERS
    )


class _Tracer(NIRTorchTracer):
    """nirtorch's tracer with our leaves, SpikingJelly's per-step containers inlined."""

    def __init__(self) -> None:
        super().__init__(custom_leaf_modules=LEAVES)

    def is_leaf_module(self, m: nn.Module, qualified_name: str) -> bool:
        return is_neuron(m) or super().is_leaf_module(m, qualified_name)

    def call_module(self, m: nn.Module, forward: Callable, args: tuple, kwargs: dict) -> Any:
        if _spikingjelly_container(m):
            x = args[0]
            for child in m:
                x = self.call_module(child, child.forward, (x,), {})
            return x
        return super().call_module(m, forward, args, kwargs)


@dataclass(frozen=True)
class Stream:
    """A value of the traced module: the sum of the outputs of NIR nodes ``terms``. ``spike``:
    binary (one neuron's spikes, or a gate of spikes); ``negated``: ``1 - spikes``."""

    terms: tuple[str, ...]
    shape: tuple[int, ...]
    spike: bool = False
    negated: bool = False


class State:
    """A neuron's explicit state (snnTorch's ``mem``): read and written, never part of the graph."""


class _Builder:
    """Walks the traced graph, one fx node at a time, into NIR nodes and edges."""

    def __init__(self, gm: torch.fx.GraphModule, values: dict[str, Any], dt: float) -> None:
        self.gm, self.values, self.dt = gm, values, dt
        self.nodes: dict[str, nir.NIRNode] = {}
        self.edges: list[tuple[str, str]] = []
        self.env: dict[str, Any] = {}
        self.made_by: dict[str, torch.fx.Node] = {}  # NIR node -> fx node (for BatchNorm folding)

    def emit(
        self,
        name: str,
        node: nir.NIRNode,
        inputs: Stream | None,
        fx: torch.fx.Node,
        facts: dict[str, Any] | None = None,
    ) -> str:
        name = name.replace(".", "_")
        while name in self.nodes:
            name += "_"
        node.metadata = {"source": _label(fx), **(facts or {})}
        self.nodes[name] = node
        self.made_by[name] = fx
        if inputs is not None:
            self.edges.extend((t, name) for t in inputs.terms)
        return name

    def shape(self, fx: torch.fx.Node) -> tuple[int, ...]:
        value = self.values[fx.name]
        value = value[0] if isinstance(value, (tuple, list)) else value
        return tuple(value.shape[1:])

    def stream(self, arg: Any, fx: torch.fx.Node, what: str) -> Stream:
        value = self.env.get(arg.name) if isinstance(arg, torch.fx.Node) else arg
        if not isinstance(value, Stream) or value.negated:
            raise UserError(
                f"{_where(self.gm, fx)}: {what} must be a tensor computed from the input "
                f"(got {type(value).__name__})"
            )
        return value

    def run(self) -> nir.NIRGraph:
        for fx in self.gm.graph.nodes:
            self.env[fx.name] = getattr(self, f"_{fx.op}")(fx)
        return nir.NIRGraph(nodes=self.nodes, edges=self.edges, type_check=False)

    # --- fx operations ---------------------------------------------------------------------------

    def _placeholder(self, fx: torch.fx.Node) -> Stream | State:
        if any(isinstance(v, Stream) for v in self.env.values()):
            return State()  # a later argument: a neuron's explicit state
        shape = tuple(self.values[fx.name].shape[1:])
        name = self.emit("input", nir.Input(input_type={"input": np.array(shape)}), None, fx)
        return Stream((name,), shape)

    def _get_attr(self, fx: torch.fx.Node) -> Any:
        return State() if all(is_state_use(u) for u in fx.users) else self.values[fx.name]

    def _output(self, fx: torch.fx.Node) -> None:
        out = fx.args[0]
        out = (
            out[0] if isinstance(out, (tuple, list)) else out
        )  # (spikes, membrane, ...): the spikes
        value = self.stream(out, fx, "the module's (first) output")
        self.emit("output", nir.Output(output_type={"output": np.array(value.shape)}), value, fx)

    def _call_module(self, fx: torch.fx.Node) -> Any:
        m = self.gm.get_submodule(fx.target)
        if is_neuron(m):
            x = self.stream(fx.args[0], fx, "a neuron's input")
            node, facts = neuron_node(str(fx.target), m, x.shape, self.dt)
            out = Stream((self.emit(_label(fx), node, x, fx, facts),), x.shape, spike=True)
            if getattr(m, "recurrent", None) is not None:  # snnTorch's RLeaky, RSynaptic
                self.loop(m.recurrent, out, fx)
            return out
        if isinstance(m, (nn.Identity, nn.Dropout, nn.Dropout2d)):
            return self.env[fx.args[0].name]
        x = self.stream(fx.args[0], fx, "a layer's input")
        for kind, lower in _LAYERS:
            if isinstance(m, kind):
                return lower(self, m, x, fx)
        raise UserError(
            f"{_where(self.gm, fx)}: no NIR mapping for this module "
            f"(mapped: {', '.join(k.__name__ for k, _ in _LAYERS)}, Identity, Dropout, "
            f"and the neurons of docs/nir.md)"
        )

    def _call_function(self, fx: torch.fx.Node) -> Any:
        f = _FUNCTIONS.get(fx.target)
        if f is None:
            raise UserError(
                f"{_where(self.gm, fx)}: the function {_name(fx.target)} has no NIR mapping "
                f"(mapped: +, -, *, flatten, getitem of a neuron's output)"
            )
        return f(self, fx)

    def _call_method(self, fx: torch.fx.Node) -> Any:
        f = _METHODS.get(fx.target)
        if f is None:
            raise UserError(
                f"{_where(self.gm, fx)}: the tensor method .{fx.target}() has no NIR mapping "
                f"(mapped: {', '.join('.' + k + '()' for k in _METHODS)})"
            )
        return f(self, fx)

    def loop(self, m: nn.Module, spikes: Stream, fx: torch.fx.Node) -> None:
        """A neuron's recurrent map, fed by its spikes and feeding its input: the edge back is the
        loop that ``from_nir`` reads as carrying the previous step (docs/nir.md, recurrent graphs)."""
        if isinstance(m, nn.Linear):
            w = _np(m.weight)
            node = nir.Affine(w, _np(m.bias)) if m.bias is not None else nir.Linear(w)
        elif isinstance(m, nn.Conv2d):
            bias = _np(m.bias) if m.bias is not None else np.zeros(m.out_channels, np.float32)
            node = nir.Conv2d(
                input_shape=spikes.shape[1:],
                weight=_np(m.weight),
                stride=m.stride,
                padding=m.padding,
                dilation=m.dilation,
                groups=m.groups,
                bias=bias,
            )
        elif hasattr(m, "V"):  # RecurrentOneToOne: each neuron's own spike, scaled
            node = nir.Scale(
                np.ascontiguousarray(np.broadcast_to(_np(torch.as_tensor(m.V)), spikes.shape))
            )
        else:
            raise UserError(
                f"{_where(self.gm, fx)}: its recurrent {type(m).__name__} has no NIR mapping"
            )
        name = self.emit(f"{_label(fx)}.recurrent", node, spikes, fx)
        self.edges.append((name, spikes.terms[0]))

    # --- arithmetic --------------------------------------------------------------------------------

    def operand(self, arg: Any) -> Any:
        return self.env[arg.name] if isinstance(arg, torch.fx.Node) else arg

    def operands(self, fx: torch.fx.Node) -> tuple[Any, Any]:
        """The two operands of ``+``, ``-`` or ``*``; anything more (``alpha=``, ``out=``), which
        would change the result, is refused rather than dropped."""
        if fx.kwargs or len(fx.args) != 2:
            extra = [*map(str, fx.args[2:]), *(f"{k}={v}" for k, v in fx.kwargs.items())]
            raise UserError(
                f"{_where(self.gm, fx)}: {_name(fx.target)} with {', '.join(extra)} has no NIR "
                f"mapping (only a + b, a - b and a * b)"
            )
        return self.operand(fx.args[0]), self.operand(fx.args[1])

    def add(self, fx: torch.fx.Node) -> Stream:
        a, b = self.operands(fx)
        if _is_zero(a) or _is_zero(b):
            return b if _is_zero(a) else a
        a, b = (self.stream(x, fx, "each summand") for x in fx.args[:2])
        return Stream(a.terms + b.terms, a.shape)

    def negate(self, x: Stream, fx: torch.fx.Node) -> Stream:
        neg = self.emit(f"{fx.name}_negate", nir.Scale(np.full(x.shape, -1.0, np.float32)), x, fx)
        return Stream((neg,), x.shape)

    def sub(self, fx: torch.fx.Node) -> Stream:
        a, b = self.operands(fx)
        if _is_number(a) and float(a) == 1.0 and isinstance(b, Stream) and b.spike:
            return Stream(
                b.terms, b.shape, spike=True, negated=True
            )  # 1 - s: only as a factor of *
        a, b = (self.stream(x, fx, "each operand of -") for x in fx.args[:2])
        return Stream(a.terms + self.negate(b, fx).terms, a.shape)

    def mul(self, fx: torch.fx.Node) -> Stream:
        a, b = self.operands(fx)
        if _is_number(a) or _is_number(b):
            c, x = (a, b) if _is_number(a) else (b, a)
            x = self.stream(x, fx, "a scaled value")
            scaled = self.emit(fx.name, nir.Scale(np.full(x.shape, float(c), np.float32)), x, fx)
            return Stream((scaled,), x.shape)
        factors = [v for v in (a, b) if isinstance(v, Stream) and v.spike and len(v.terms) == 1]
        if len(factors) != 2:
            raise UserError(
                f"{_where(self.gm, fx)}: a product of values that are not binary spikes "
                f"has no NIR form (only spikes, 1 - spikes, and constants multiply exactly)"
            )
        return self.gate(factors, fx)

    def gate(self, factors: list[Stream], fx: torch.fx.Node) -> Stream:
        """The product of binary literals: 1 iff (spikes) - (negated spikes) > #spikes - 1/2."""
        terms: tuple[str, ...] = ()
        for f in factors:
            terms += self.negate(Stream(f.terms, f.shape), fx).terms if f.negated else f.terms
        level = sum(not f.negated for f in factors) - 0.5
        shape = factors[0].shape
        out = self.emit(
            fx.name,
            nir.Threshold(np.full(shape, level, np.float32)),
            Stream(terms, shape),
            fx,
            {"gate": "product of binary spikes"},
        )
        return Stream((out,), shape, spike=True)

    def flatten(self, fx: torch.fx.Node) -> Stream:
        x = self.stream(fx.args[0], fx, "flatten's input")
        start = _arg(fx, 1, "start_dim", 0)
        end = _arg(fx, 2, "end_dim", -1)
        return self.flatten_dims(x, start, end, fx)

    def flatten_dims(self, x: Stream, start: int, end: int, fx: torch.fx.Node) -> Stream:
        if start % (len(x.shape) + 1) == 0:
            raise UserError(
                f"{_where(self.gm, fx)}: flattening the batch axis (start_dim 0) has no "
                f"NIR form; flatten from axis 1"
            )
        start = start - 1 if start > 0 else start
        end = end - 1 if end > 0 else end
        shape = self.shape(fx)
        node = nir.Flatten(input_type={"input": np.array(x.shape)}, start_dim=start, end_dim=end)
        return Stream((self.emit(_label(fx), node, x, fx),), shape)

    def reshape(self, fx: torch.fx.Node) -> Stream:
        """``x.view(N, -1)`` / ``x.reshape(...)``: only as a flatten of each sample (NIR has no reshape)."""
        x = self.stream(fx.args[0], fx, "a reshape's input")
        if self.shape(fx) != (int(np.prod(x.shape)),):
            raise UserError(
                f"{_where(self.gm, fx)}: a reshape to {self.shape(fx)} per sample has no NIR form "
                f"(only flattening each sample, e.g. x.view(x.size(0), -1))"
            )
        return self.flatten_dims(x, 1, -1, fx)

    def constant(self, fx: torch.fx.Node) -> Any:
        """``x.size(0)``, ``x.shape``: the value the run found (it only sizes a reshape)."""
        return self.values[fx.name]

    def getitem(self, fx: torch.fx.Node) -> Any:
        src, index = fx.args
        source = self.operand(src)
        if isinstance(source, (tuple, torch.Size)) and not isinstance(
            self.values[src.name], torch.Tensor
        ):
            return self.values[fx.name]  # x.shape[0]: a size
        made_by_neuron = (
            isinstance(src, torch.fx.Node)
            and src.op == "call_module"
            and is_neuron(self.gm.get_submodule(src.target))
        )
        if not made_by_neuron:
            raise UserError(
                f"{_where(self.gm, fx)}: indexing has no NIR mapping (only a neuron's "
                f"(spikes, state) output is indexed)"
            )
        return source if index == 0 else State()


def is_state_use(fx: torch.fx.Node) -> bool:
    """Whether ``fx`` takes a value as a neuron's state argument (not its input)."""
    return fx.op == "call_module" and len(fx.args) > 1


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_zero(v: Any) -> bool:
    return _is_number(v) and float(v) == 0.0


def _arg(fx: torch.fx.Node, i: int, key: str, default: Any) -> Any:
    return fx.args[i] if len(fx.args) > i else fx.kwargs.get(key, default)


def _name(target: Any) -> str:
    return (
        f"{getattr(target, '__module__', '') or ''}.{getattr(target, '__name__', target)}".lstrip(
            "."
        )
    )


def _label(fx: torch.fx.Node) -> str:
    """A NIR node's name: the module's qualified name, or the operation's fx name."""
    return str(fx.target) if fx.op == "call_module" else fx.name


def _where(gm: torch.fx.GraphModule, fx: torch.fx.Node) -> str:
    """The module (its name and type) or the operation ``fx`` stands for, for a one-line message."""
    if fx.op == "call_module":
        m = gm.get_submodule(fx.target)
        return f"module {fx.target!r} ({type(m).__module__}.{type(m).__name__})"
    return f"operation {fx.name!r} ({fx.op} {_name(fx.target) if fx.op != 'call_method' else fx.target})"


# --- layers --------------------------------------------------------------------------------------


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


def _conv(b: _Builder, m: nn.Conv1d | nn.Conv2d, x: Stream, fx: torch.fx.Node) -> Stream:
    if m.padding_mode != "zeros":
        raise UserError(
            f"{_where(b.gm, fx)}: padding_mode {m.padding_mode!r} has no NIR form (zeros only)"
        )
    bias = _np(m.bias) if m.bias is not None else np.zeros(m.out_channels, np.float32)
    kind = nir.Conv2d if isinstance(m, nn.Conv2d) else nir.Conv1d
    size = x.shape[1:] if kind is nir.Conv2d else x.shape[1]
    node = kind(
        input_shape=size,
        weight=_np(m.weight),
        stride=m.stride,
        padding=m.padding,
        dilation=m.dilation,
        groups=m.groups,
        bias=bias,
    )
    return Stream((b.emit(_label(fx), node, x, fx),), b.shape(fx))


def _linear(b: _Builder, m: nn.Linear, x: Stream, fx: torch.fx.Node) -> Stream:
    if len(x.shape) != 1:
        raise UserError(
            f"{_where(b.gm, fx)}: its input has shape {x.shape} per sample; NIR's affine map "
            f"takes a vector (flatten first)"
        )
    node = (
        nir.Affine(_np(m.weight), _np(m.bias)) if m.bias is not None else nir.Linear(_np(m.weight))
    )
    return Stream((b.emit(_label(fx), node, x, fx),), b.shape(fx))


def _batchnorm(
    b: _Builder, m: nn.BatchNorm1d | nn.BatchNorm2d, x: Stream, fx: torch.fx.Node
) -> Stream:
    """Eval BatchNorm: ``y = scale x + shift``, folded into the map that feeds it alone, else a
    per-channel map of its own."""
    if m.running_mean is None:
        raise UserError(
            f"{_where(b.gm, fx)}: a BatchNorm without running statistics cannot be folded"
        )
    var = m.running_var.detach().double()
    scale = (m.weight.detach().double() if m.affine else torch.ones_like(var)) / torch.sqrt(
        var + m.eps
    )
    offset = m.bias.detach().double() if m.affine else torch.zeros_like(var)
    shift = offset - m.running_mean.double() * scale
    producer = b.nodes.get(x.terms[0]) if len(x.terms) == 1 else None
    made = b.made_by.get(x.terms[0]) if producer is not None else None
    alone = (
        made is not None and fx.args[0] is made and len(made.users) == 1
    )  # fed straight, to it alone
    if alone and isinstance(producer, (nir.Conv1d, nir.Conv2d, nir.Affine, nir.Linear)):
        w = producer.weight.astype(np.float64)
        bias = np.asarray(getattr(producer, "bias", np.zeros(w.shape[0])), np.float64)
        s = scale.numpy()
        producer.weight = (w * s.reshape(-1, *[1] * (w.ndim - 1))).astype(np.float32)
        new_bias = (bias * s + shift.numpy()).astype(np.float32)
        if isinstance(producer, nir.Linear):
            name = x.terms[0]
            b.nodes[name] = nir.Affine(producer.weight, new_bias, metadata=producer.metadata)
        else:
            producer.bias = new_bias
        return x
    if len(x.shape) == 1:
        node = nir.Affine(
            np.diag(scale.numpy()).astype(np.float32), shift.numpy().astype(np.float32)
        )
    else:
        kind, size = (nir.Conv2d, x.shape[1:]) if len(x.shape) == 3 else (nir.Conv1d, x.shape[1])
        c = x.shape[0]
        weight = scale.numpy().astype(np.float32).reshape(c, 1, *[1] * (len(x.shape) - 1))
        node = kind(
            input_shape=size,
            weight=weight,
            stride=1,
            padding=0,
            dilation=1,
            groups=c,
            bias=shift.numpy().astype(np.float32),
        )
    return Stream((b.emit(_label(fx), node, x, fx),), x.shape)


def _pool_args(b: _Builder, m: nn.Module, fx: torch.fx.Node) -> None:
    if getattr(m, "ceil_mode", False) or getattr(m, "dilation", 1) not in (1, (1, 1)):
        raise UserError(f"{_where(b.gm, fx)}: ceil_mode and dilation have no NIR pooling form")


def _avgpool(b: _Builder, m: nn.AvgPool2d, x: Stream, fx: torch.fx.Node) -> Stream:
    _pool_args(b, m, fx)
    if m.divisor_override is not None or (not m.count_include_pad and m.padding not in (0, (0, 0))):
        raise UserError(
            f"{_where(b.gm, fx)}: NIR's AvgPool2d divides by the kernel's size "
            f"(count_include_pad=True, no divisor_override)"
        )
    stride = m.stride if m.stride is not None else m.kernel_size
    node = nir.AvgPool2d(*(np.array(_pair(v)) for v in (m.kernel_size, stride, m.padding)))
    return Stream((b.emit(_label(fx), node, x, fx),), b.shape(fx))


def _adaptive_avgpool(b: _Builder, m: nn.AdaptiveAvgPool2d, x: Stream, fx: torch.fx.Node) -> Stream:
    size = np.array(x.shape[1:])
    out = np.array([s if o is None else o for s, o in zip(size, _pair(m.output_size))])
    if np.any(size % out):
        raise UserError(
            f"{_where(b.gm, fx)}: input {tuple(size)} is not a multiple of the output size "
            f"{tuple(out)}, so the pooling windows differ in size (no NIR form)"
        )
    k = size // out
    node = nir.AvgPool2d(k, k, np.array([0, 0]))
    return Stream((b.emit(_label(fx), node, x, fx),), b.shape(fx))


def _maxpool(b: _Builder, m: nn.MaxPool2d, x: Stream, fx: torch.fx.Node) -> Stream:
    """The max of binary spikes is their OR: an exact sum pool then a threshold at 1/2."""
    _pool_args(b, m, fx)
    if not x.spike:
        raise UserError(
            f"{_where(b.gm, fx)}: max pooling of real values has no NIR form (NIR "
            f"{nir.version} has no max pool); on binary spikes it is exact (an OR)"
        )
    stride = m.stride if m.stride is not None else m.kernel_size
    pool = nir.SumPool2d(*(np.array(_pair(v)) for v in (m.kernel_size, stride, m.padding)))
    pooled = Stream((b.emit(f"{_label(fx)}.sum", pool, x, fx),), b.shape(fx))
    out = nir.Threshold(np.full(b.shape(fx), 0.5, np.float32))
    return Stream(
        (b.emit(_label(fx), out, pooled, fx, {"gate": "OR of binary spikes (max pool)"}),),
        b.shape(fx),
        spike=True,
    )


def _flatten_module(b: _Builder, m: nn.Flatten, x: Stream, fx: torch.fx.Node) -> Stream:
    return b.flatten_dims(x, m.start_dim, m.end_dim, fx)


def _pair(v: Any) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


_LAYERS: list[tuple[type, Callable[..., Stream]]] = [
    (nn.Conv1d, _conv),
    (nn.Conv2d, _conv),
    (nn.Linear, _linear),
    (nn.BatchNorm1d, _batchnorm),
    (nn.BatchNorm2d, _batchnorm),
    (nn.AvgPool2d, _avgpool),
    (nn.AdaptiveAvgPool2d, _adaptive_avgpool),
    (nn.MaxPool2d, _maxpool),
    (nn.Flatten, _flatten_module),
]
_FUNCTIONS: dict[Any, Callable[[_Builder, torch.fx.Node], Any]] = {
    operator.add: _Builder.add,
    operator.iadd: _Builder.add,
    torch.add: _Builder.add,
    operator.sub: _Builder.sub,
    operator.isub: _Builder.sub,
    torch.sub: _Builder.sub,
    operator.mul: _Builder.mul,
    operator.imul: _Builder.mul,
    torch.mul: _Builder.mul,
    torch.flatten: _Builder.flatten,
    operator.getitem: _Builder.getitem,
    torch.reshape: _Builder.reshape,
    getattr: _Builder.constant,
}
_METHODS: dict[str, Callable[[_Builder, torch.fx.Node], Any]] = {
    "add": _Builder.add,
    "add_": _Builder.add,
    "sub": _Builder.sub,
    "mul": _Builder.mul,
    "flatten": _Builder.flatten,
    "view": _Builder.reshape,
    "reshape": _Builder.reshape,
    "size": _Builder.constant,
}


class _Recorder(torch.fx.Interpreter):
    """Runs the traced module once, keeping every node's value (its shape, its constants)."""

    def __init__(self, gm: torch.fx.GraphModule) -> None:
        super().__init__(gm)
        self.values: dict[str, Any] = {}

    def run_node(self, n: torch.fx.Node) -> Any:
        value = super().run_node(n)
        self.values[n.name] = value
        return value


def _single_step_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` in eval mode, SpikingJelly's layers in single-step mode, neurons fresh."""
    probe = copy.deepcopy(module).eval()
    for m in probe.modules():
        if hasattr(m, "step_mode") and type(m).__module__.startswith("spikingjelly"):
            m.step_mode = "s"
        if (
            hasattr(m, "reset")
            and callable(m.reset)
            and type(m).__module__.startswith("spikingjelly")
        ):
            m.reset()
    return probe


def _trace(module: nn.Module) -> torch.fx.GraphModule:
    tracer = _Tracer()
    try:
        graph = tracer.trace(module)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - fx raises many kinds: all mean "not traceable"
        raise UserError(
            f"module {type(module).__module__}.{type(module).__name__}: torch.fx cannot trace it "
            f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})"
        ) from None
    return torch.fx.GraphModule(tracer.root, graph)


def from_torch(
    module: nn.Module, example_input: torch.Tensor, dt: float = 1.0, timesteps: int | None = None
) -> nir.NIRGraph:
    """The NIR graph of ``module``, a network of one time step (docs/nir.md, "PyTorch modules").

    ``example_input``: one time step's input batch ``[N, ...]``, as the module takes it in
    single-step mode. ``dt``: the time step the NIR time constants are stated in (1: they count
    steps). The graph's metadata records ``dt``, the discretisation and the reset of every neuron
    (on each node), so that ``simulate`` needs no flags. The module itself is not changed.
    """
    if not isinstance(module, nn.Module):
        raise UserError(f"from_torch needs a torch.nn.Module, not {type(module).__name__}")
    probe = _single_step_copy(module)
    gm = _trace(probe)
    recorder = _Recorder(gm)
    # later arguments are neurons' states: None, each neuron's own initial state
    states = [None] * (sum(n.op == "placeholder" for n in gm.graph.nodes) - 1)
    try:
        with torch.no_grad():
            recorder.run(example_input, *states)
    except Exception as e:  # noqa: BLE001 - the user's module may raise anything on a wrong input
        raise UserError(
            f"module {type(module).__module__}.{type(module).__name__}: it does not run on an input "
            f"of shape {tuple(example_input.shape)} ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:160] if str(e) else ''})"
        ) from None
    graph = _Builder(gm, recorder.values, dt).run()
    frameworks = sorted({n.metadata.get("framework") for n in graph.nodes.values()} - {None})
    graph.metadata = {
        "producer": f"danet-deploy {__version__} from_torch",
        "dt": dt,
        "discretisation": "euler",
        "module": f"{type(module).__module__}.{type(module).__name__}",
        "frameworks": json.dumps(frameworks),
    }
    if timesteps is not None:
        graph.metadata["timesteps"] = int(timesteps)
    return graph
