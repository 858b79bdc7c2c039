"""Read a lava-dl netx file (``.net`` / ``.h5``, what slayer's ``export_hdf5`` writes)
into a NIR graph that states the chip's integers exactly.

A netx network is a chain of layers (docs/lava-dl.md, How a netx file is read): ``input``, ``conv``,
``pool``, ``flatten``, ``dense`` (with CUBA neurons) and ``average``. Its weights,
thresholds and biases are already Loihi integers, so the NIR graph keeps them as
they are, in time steps (``dt = 1``) and in units of Lava's ``A`` (the state is 64x
that), and says so in its metadata (``fixed_point = "loihi"``): the compiler then
takes them over without calibration or rounding. A CUBA layer
(``u <- (1 - iDecay/4096) u + A``; ``v <- (1 - vDecay/4096) v + u + bias``; spike
if ``v > vThMant``) is the NIR ``CubaLIF`` whose forward-Euler form is exactly that:
``tau_syn = w_in = 4096/iDecay``, ``tau_mem = r = 4096/vDecay``,
``v_leak = bias * 4096/vDecay`` (:func:`nir_export.loihi_cuba`, shared with slayer-trained models);
a state that never decays (``iDecay`` or ``vDecay`` 0) gets a time constant of 2^24 steps, whose
decay rounds to Loihi's none.

Like lava-dl's own examples (``hdf5.Network(..., skip_layers=1)``), an input layer
that carries neurons (``slayer.block.cuba.Input``) is skipped unless
``keep_input_neurons``; kept, it scales its input by its weight (one, or one per channel or
neuron) and feeds its own CUBA neurons, as slayer computes it in training, with its bias where
the current has no memory (``iDecay = 4096``: a bias on the current is then one on the voltage).

Sigma-delta layers (neuron type ``SDNN``, ``slayer.block.sigma_delta``) become the IR's
:class:`~danet_deploy.ir.sigma_delta.SigmaDelta` nodes as netx's ``get_neuron_params`` maps
them: an input layer is Lava's ``Delta`` encoder (always kept: it makes the graded deltas the
network runs on), a hidden layer ``SigmaDelta`` with ReLU, and a ``sigma_output`` layer
``Sigma``, whose output is the running sum of its input current: the readout, read as that sum
(docs/lava-dl.md, "Sigma-delta networks").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import nir
import numpy as np

from danet_deploy.converters.nir_export import loihi_cuba
from danet_deploy.errors import UserError
from danet_deploy.ir.chip_format import LOIHI
from danet_deploy.ir.sigma_delta import (
    NETX_SPIKE_EXP,
    NETX_STATE_EXP,
    SigmaDelta,
    real_values,
    whole_values,
)

NEURON_TYPES = ("CUBA", "LOIHI")  # lava-dl's netx reads both as Lava's LIF
SIGMA_DELTA = "SDNN"
NETX_MESSAGE_BITS = 16  # netx's default payload of a sigma-delta layer (get_neuron_params)
NETX_MAX_DELAY = 62
MAX_LAYER_NEURONS = 1 << 24  # 16.7 M: more than the neurons of 16 Loihi 2 chips in one layer

# The neuron fields the reader takes (lava-dl's get_neuron_params hands them to Lava as they are):
# the whole numbers Loihi 2 holds (ir/chip_format.py: LOIHI) and why (docs/lava-dl.md).
NEURON_FIELDS: dict[str, tuple[int, int, str]] = {
    "vThMant": (
        0,
        LOIHI.threshold_max,
        f"Loihi's {LOIHI.threshold_bits}-bit threshold mantissa",
    ),
    "iDecay": (0, LOIHI.decay_unity, f"{LOIHI.decay_unity}ths of the current lost per step"),
    "vDecay": (0, LOIHI.decay_unity, f"{LOIHI.decay_unity}ths of the voltage lost per step"),
    "refDelay": (0, 1, "Lava's LIF has no refractory period; lava-dl's netx loader ignores it"),
    "gradedSpike": (0, 1, "a flag"),
    "messageBits": (
        0,
        LOIHI.graded_payload_bits,
        f"0: binary spikes, else a graded payload of at most {LOIHI.graded_payload_bits} bits",
    ),
}
SIGMA_DELTA_MESSAGE_BITS = (
    1,
    LOIHI.graded_payload_bits,
    f"a sigma-delta layer sends graded spikes, of at most "
    f"{LOIHI.graded_payload_bits} bits; 0 is lava-dl's binary spike, "
    f"which would drop their values",
)


class FieldError(ValueError):
    """A layer's field that lava-dl's netx or Loihi would not take as written; the message names
    the field, its value and what is allowed."""


def is_netx(path: Path) -> bool:
    """True for an HDF5 file laid out as netx reads it (a ``layer`` group of numbered layers)."""
    try:
        with h5py.File(path, "r") as f:
            return "layer" in f and isinstance(f["layer"], h5py.Group) and "0" in f["layer"]
    except OSError:
        return False


def _text(value: Any) -> str:
    """A name field (a layer's or a neuron's type) as text; an empty one is ''."""
    value = value[()] if isinstance(value, h5py.Dataset) else value
    if np.ndim(value):
        flat = np.asarray(value).ravel()
        value = flat[0] if flat.size else ""
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


def _values(group: h5py.Group, key: str) -> np.ndarray:
    """A numeric field as float64, refused unless real and finite (ir/sigma_delta.py: real_values)."""
    try:
        return real_values(key, group[key][()])
    except ValueError as e:
        raise FieldError(str(e)) from None


def _number(
    group: h5py.Group,
    key: str,
    default: float | None = None,
    low: float = -np.inf,
    high: float = np.inf,
    why: str = "",
) -> float:
    """One whole number in ``low..high``: a scalar, or the one value of an array (never the first of
    several: lava-dl's netx gives Lava one value per layer)."""
    if key not in group:
        if default is None:
            raise KeyError(key)
        return default
    values = _values(group, key).ravel()
    if values.size != 1:
        raise FieldError(f"{key} holds {values.size} values, netx reads one per layer")
    try:
        return float(whole_values(key, values[0], low, high))
    except ValueError as e:
        raise FieldError(f"{e} ({why})" if why else str(e)) from None


def _neuron_fields(n: h5py.Group, sigma_delta: bool) -> dict[str, float]:
    """Every field of :data:`NEURON_FIELDS` that the neuron group holds, checked, by name: the one
    place a layer's neuron fields are translated."""
    fields = {}
    for key, (low, high, why) in NEURON_FIELDS.items():
        if key == "messageBits" and sigma_delta:
            low, high, why = SIGMA_DELTA_MESSAGE_BITS
        if key in n:
            fields[key] = _number(n, key, low=low, high=high, why=why)
    return fields


def _pair(group: h5py.Group, key: str, default: int) -> np.ndarray:
    """A conv's (y, x) field (stride, padding, dilation): one whole number for both, or one each,
    no less than its default (a stride of 1, a padding of 0)."""
    if key not in group:
        return np.array([default, default])
    values = _values(group, key).ravel()
    if (
        values.size not in (1, 2)
        or np.any(values != np.floor(values))
        or np.any(values < default)
        or np.any(values > MAX_LAYER_NEURONS)
    ):
        raise FieldError(
            f"{key}={values.tolist()}: must be one or two whole numbers "
            f"{default}..{MAX_LAYER_NEURONS}"
        )
    return np.broadcast_to(values.astype(np.int64), (2,)).copy()


class _Reader:
    """Builds the NIR nodes of one file, layer by layer, naming every problem's layer."""

    def __init__(self, path: Path, keep_input_neurons: bool) -> None:
        self.path, self.keep_input = path, keep_input_neurons
        self.nodes: dict[str, nir.NIRNode] = {}
        self.edges: list[tuple[str, str]] = []
        self.last: str | None = None  # the node whose output feeds the next layer
        self.shape: tuple[int, ...] | None = None  # its output shape (C, H, W) or (N,)
        self.skipped: list[str] = []
        self.readout = False  # a non-spiking last layer was read
        self.read_by: str | None = None  # how a read-out last layer is read: voltage, sigma
        self.final_index = -1  # the file's last layer

    def fail(self, index: int, kind: str, why: str) -> UserError:
        return UserError(f"{self.path}: layer {index} ({kind}): {why}")

    def add(self, name: str, node: nir.NIRNode, shape: tuple[int, ...]) -> None:
        node.metadata = {"connection": "plain", **(node.metadata or {})}
        self.nodes[name] = node
        if self.last is not None:
            self.edges.append((self.last, name))
        self.last, self.shape = name, shape

    def start(self, shape: tuple[int, ...]) -> None:
        self.add("input", nir.Input(input_type={"input": np.array(shape)}), shape)

    def flatten(self, index: int) -> None:
        """(C, H, W) -> C*H*W in torch order, which is the order netx flattens in too."""
        self.add(
            f"{index}.flatten",
            nir.Flatten(input_type={"input": np.array(self.shape)}, start_dim=0),
            (int(np.prod(self.shape)),),
        )

    def neuron(
        self,
        index: int,
        kind: str,
        group: h5py.Group,
        shape: tuple[int, ...],
        bias: np.ndarray | None,
    ) -> None:
        """The layer's neurons after its synapse node, by their type as netx reads it."""
        n = group["neuron"]
        ntype = _text(n["type"]) if "type" in n else "CUBA"
        if ntype == SIGMA_DELTA:
            self.sigma_delta(index, kind, n, shape, bias)
        elif ntype in NEURON_TYPES:
            self.cuba(index, kind, group, shape, bias)
        elif "RF" in ntype:
            raise self.fail(
                index,
                kind,
                f"neuron type {ntype!r} (resonate-and-fire, Lava's RF/RF_IZ) is not "
                f"supported: its complex state has no form in the compiled program yet",
            )
        else:
            raise self.fail(
                index,
                kind,
                f"neuron type {ntype!r} is not one lava-dl's netx reads (CUBA, LOIHI, SDNN, RF)",
            )

    def sigma_delta(
        self, index: int, kind: str, n: h5py.Group, shape: tuple[int, ...], bias: np.ndarray | None
    ) -> None:
        """An SDNN layer: Lava's SigmaDelta (ReLU, as netx builds it), or, with ``sigma_output``,
        Sigma: the running sum of the synaptic current, i.e. the readout read by that sum."""
        activation = _text(n["activation"]).lower() if "activation" in n else "relu"
        fields = _neuron_fields(n, sigma_delta=True)
        if activation != "relu":
            raise self.fail(
                index,
                kind,
                f"SDNN activation {activation!r}: lava-dl's netx builds every "
                f"sigma-delta layer with ReLU, so this file would not run as trained",
            )
        if "sigma_output" in n:
            if bias is not None and np.any(bias):
                raise self.fail(index, kind, "a sigma_output layer (Lava's Sigma) has no bias")
            synapse = self.nodes[self.last]
            if isinstance(synapse, nir.Linear):
                synapse = nir.Affine(weight=synapse.weight, bias=np.zeros(len(synapse.weight)))
            synapse.metadata = {**self.nodes[self.last].metadata, "read_by": "sigma"}
            self.nodes[self.last] = synapse
            self.readout, self.read_by = True, "sigma"
            return
        self._add_sigma_delta(index, fields, shape, self._per_neuron(bias, shape), encoder=False)

    def _add_sigma_delta(
        self,
        index: int,
        fields: dict[str, float],
        shape: tuple[int, ...],
        bias: np.ndarray,
        encoder: bool,
    ) -> None:
        try:
            node = SigmaDelta(
                threshold=np.full(shape, fields["vThMant"]),
                bias=bias,
                encoder=encoder,
                spike_exp=NETX_SPIKE_EXP,
                state_exp=NETX_STATE_EXP,
            )
        except ValueError as e:  # what the node itself holds (ir/sigma_delta.py)
            raise FieldError(str(e)) from None
        node.metadata = {
            "netx_layer": index,
            "message_bits": int(fields.get("messageBits", NETX_MESSAGE_BITS)),
        }
        self.add(f"{index}.neuron", node, shape)

    @staticmethod
    def _per_neuron(bias: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
        """A layer's bias (none, per channel or per neuron) per neuron."""
        if bias is None:
            return np.zeros(shape)
        if bias.size == np.prod(shape):
            return bias.reshape(shape)
        return np.broadcast_to(bias.reshape(-1, *([1] * (len(shape) - 1))), shape)

    def cuba(
        self,
        index: int,
        kind: str,
        group: h5py.Group,
        shape: tuple[int, ...],
        bias: np.ndarray | None,
    ) -> None:
        """The layer's CUBA neurons as a ``CubaLIF`` node after its synapse node."""
        fields = _neuron_fields(group["neuron"], sigma_delta=False)
        i_decay, v_decay, threshold = fields["iDecay"], fields["vDecay"], fields["vThMant"]
        if fields.get("gradedSpike", 0):
            raise self.fail(
                index,
                kind,
                "graded spikes (gradedSpike) are not supported; lava-dl's netx "
                "loader ignores them too, so retrain with binary spikes",
            )
        if v_decay == 0 and i_decay == LOIHI.decay_unity:
            self._integrator(index, kind, threshold, shape, bias)
            return
        node = loihi_cuba(
            i_decay,
            v_decay,
            threshold,
            self._per_neuron(bias, shape),
            1.0,
            lambda v: np.broadcast_to(np.asarray(v, dtype=np.float64), shape),
        )
        node.metadata = {"netx_layer": index}
        self.add(f"{index}.neuron", node, shape)

    def _integrator(
        self,
        index: int,
        kind: str,
        threshold: float,
        shape: tuple[int, ...],
        bias: np.ndarray | None,
    ) -> None:
        """A voltage that never decays (``vDecay = 0``) fed by a current without memory
        (``iDecay = 4096``, so ``u = A``): ``v <- v + A + bias``, NIR's ``IF`` (``r = 1``), its bias
        moved into the synapse node (the same constant every step). As the last layer with the
        largest threshold it never fires short of saturating, and netx users read its voltage: it
        is then the readout, whose summed current is that voltage (Lava's ``v`` is 64 times it)."""
        synapse = self.nodes[self.last]
        if bias is not None and np.any(bias):
            synapse = self._with_bias(index, kind, synapse, bias, shape)
        # the largest threshold: reached only by a saturated 24-bit voltage
        readout = index == self.final_index and threshold >= LOIHI.threshold_max
        if readout and isinstance(synapse, nir.Linear):
            synapse = nir.Affine(weight=synapse.weight, bias=np.zeros(len(synapse.weight)))
        synapse.metadata = {
            **self.nodes[self.last].metadata,
            **({"read_by": "voltage"} if readout else {}),
        }
        self.nodes[self.last] = synapse
        if readout:
            self.readout, self.read_by = True, "voltage"
            return
        node = nir.IF(
            r=np.ones(shape), v_threshold=np.full(shape, threshold), v_reset=np.zeros(shape)
        )
        node.metadata = {"netx_layer": index}
        self.add(f"{index}.neuron", node, shape)

    def _with_bias(
        self, index: int, kind: str, synapse: nir.NIRNode, bias: np.ndarray, shape: tuple[int, ...]
    ) -> nir.NIRNode:
        """The synapse node with the layer's bias added to its output at every step."""
        if isinstance(synapse, nir.Conv2d):
            channels = shape[0]
            per_channel = (
                bias.reshape(channels, -1) if bias.size in (channels, int(np.prod(shape))) else None
            )
            if per_channel is None or not np.all(per_channel == per_channel[:, :1]):
                raise self.fail(
                    index,
                    kind,
                    "a per-neuron bias on a non-decaying conv layer has no NIR form "
                    "(a conv's bias is one per channel)",
                )
            synapse.bias = per_channel[:, 0].astype(np.float64)
            return synapse
        return nir.Affine(
            weight=synapse.weight, bias=np.broadcast_to(bias, (len(synapse.weight),)).copy()
        )

    def _encoder(self, index: int, n: h5py.Group, shape: tuple[int, ...]) -> None:
        """An SDNN input layer: Lava's Delta, fed the input itself (netx ignores the layer's
        weight and bias transform, and so does this reader)."""
        self._add_sigma_delta(
            index, _neuron_fields(n, sigma_delta=True), shape, np.zeros(shape), encoder=True
        )

    def layer(self, index: int, g: h5py.Group) -> None:
        kind = _text(g["type"]) if "type" in g else "?"
        shape = tuple(int(v) for v in np.asarray(g["shape"][()]).ravel()) if "shape" in g else None
        if kind == "input":
            self.start(shape)
            if "neuron" in g and _text(g["neuron"].get("type", "CUBA")) == SIGMA_DELTA:
                self._encoder(index, g["neuron"], shape)
            elif "neuron" in g:
                if not self.keep_input:
                    self.skipped.append(f"layer {index} (input neurons)")
                    return
                w = _values(g, "weight").ravel() if "weight" in g else np.ones(1)
                bias = _values(g, "bias").ravel() if "bias" in g else None
                if (
                    bias is not None
                    and np.any(bias)
                    and _neuron_fields(g["neuron"], False)["iDecay"] != LOIHI.decay_unity
                ):
                    raise self.fail(
                        index,
                        kind,
                        "input neurons with a bias and a decaying current cannot be kept "
                        "(slayer adds the bias to the current, Loihi's enters the voltage; "
                        "the two agree only without current memory, iDecay=4096); leave "
                        "them skipped",
                    )
                self.add(
                    f"{index}.scale", nir.Scale(scale=np.array(self._per_neuron(w, shape))), shape
                )
                self.cuba(index, kind, g, shape, bias)
            return
        if self.last is None:
            self.start(self._first_input(index, kind, g, shape))
        if kind == "flatten":
            self.flatten(index)
            return
        if kind in ("conv", "pool", "dense") and shape is None:
            raise KeyError("shape")
        if kind in ("conv", "pool"):
            self._conv(index, kind, g, shape)
        elif kind in ("dense", "dense_rec"):
            self._dense(index, g, shape)
            if kind == "dense_rec":
                self._recurrent(index, g, shape)
        elif kind == "average":
            self._average(index, g)
            return
        else:
            raise self.fail(
                index,
                kind,
                "this layer type is not supported (input, conv, pool, flatten, dense, "
                "dense_rec and average are)",
            )

    def _first_input(
        self, index: int, kind: str, g: h5py.Group, shape: tuple[int, ...] | None
    ) -> tuple[int, ...]:
        """The input shape of a file without an input layer, where the first layer fixes it."""
        if kind in ("dense", "dense_rec") and "weight" in g:
            return (int(np.asarray(g["weight"]).shape[-1]),)
        if kind == "conv" and shape is not None and np.all(_pair(g, "stride", 1) == 1):
            w = self._kernel(index, kind, g)
            k, pad = w.shape[-2:], _pair(g, "padding", 0)
            return (
                int(w.shape[1] * _number(g, "groups", 1, low=1)),
                *(int(o + kk - 1 - 2 * p) for o, kk, p in zip(shape[1:], k, pad)),
            )
        raise self.fail(
            index,
            kind,
            "the file has no input layer, and this first layer does not fix the input "
            "shape; add one (slayer.block.cuba.Input, or a layer of type 'input' "
            "with a 'shape')",
        )

    def _kernel(self, index: int, kind: str, g: h5py.Group) -> np.ndarray:
        """A conv or pool weight ``[out, in, kh, kw]``; slayer's blocks are 3-D convs over time and
        some of its exports keep their time axis, ``[out, in, kh, kw, 1]`` (netx reads both)."""
        w = _values(g, "weight")
        if w.ndim == 5:
            if w.shape[4] != 1:
                raise self.fail(
                    index,
                    kind,
                    f"weight of shape {list(w.shape)}: a kernel over time steps is "
                    f"not supported (netx reads [out, in, kh, kw, 1])",
                )
            w = w[..., 0]
        return w

    def _synapse_delay(self, index: int, kind: str, g: h5py.Group) -> None:
        if "delay" not in g:
            return
        d = np.minimum(np.floor(_values(g, "delay")), NETX_MAX_DELAY)
        if d.size and not np.all(d == d.flat[0]):
            raise self.fail(
                index, kind, "per-neuron synaptic delays are not supported (one delay per layer is)"
            )
        steps = float(d.flat[0]) if d.size else 0.0
        if steps and kind != "dense":
            raise self.fail(
                index, kind, "delays on conv layers are not run by lava-dl's netx loader"
            )
        if steps:
            self.add(f"{index}.delay", nir.Delay(delay=np.full(self.shape, steps)), self.shape)

    def _conv(self, index: int, kind: str, g: h5py.Group, shape: tuple[int, ...]) -> None:
        if len(self.shape) != 3:
            raise self.fail(index, kind, f"needs a (C, H, W) input, got {self.shape}")
        w = self._kernel(index, kind, g)
        groups = int(_number(g, "groups", 1, low=1))
        if kind == "pool":  # one kernel shared by every channel: a depthwise conv
            groups = self.shape[0]
            w = np.broadcast_to(w.reshape(1, 1, *w.shape[-2:]), (groups, 1, *w.shape[-2:])).copy()
        if np.any(_pair(g, "dilation", 1) != 1):
            raise self.fail(index, kind, "dilated kernels are not supported")
        if "neuron" not in g:
            raise self.fail(
                index, kind, "has no neuron group (netx needs one for conv and pool layers)"
            )
        self._synapse_delay(index, kind, g)
        conv = nir.Conv2d(
            input_shape=self.shape[1:],
            weight=w,
            stride=_pair(g, "stride", 1),
            padding=_pair(g, "padding", 0),
            dilation=np.array([1, 1]),
            groups=groups,
            bias=np.zeros(w.shape[0]),
        )
        self.add(f"{index}.{kind}", conv, shape)
        bias = _values(g, "bias").ravel() if "bias" in g else None
        self.neuron(index, kind, g, shape, bias)

    def _dense(self, index: int, g: h5py.Group, shape: tuple[int, ...]) -> None:
        if "weight" not in g or isinstance(g["weight"], h5py.Group):
            raise self.fail(
                index, "dense", "complex (weight/real, weight/imag) dense layers are not supported"
            )
        n_out = int(np.prod(shape))
        w = _values(g, "weight").reshape(n_out, -1)
        if w.shape[1] != int(np.prod(self.shape)):
            raise self.fail(
                index,
                "dense",
                f"weight has {w.shape[1]} inputs, the previous layer gives "
                f"{int(np.prod(self.shape))}",
            )
        if len(self.shape) != 1:
            self.flatten(index)
        self._synapse_delay(index, "dense", g)
        bias = _values(g, "bias").ravel() if "bias" in g else None
        if "neuron" not in g:  # netx's default: a non-spiking integrator, i.e. a readout
            self.add(
                f"{index}.dense",
                nir.Affine(weight=w, bias=np.zeros(n_out) if bias is None else bias),
                (n_out,),
            )
            self.readout = True
            return
        self.add(f"{index}.dense", nir.Linear(weight=w), (n_out,))
        self.neuron(index, "dense", g, (n_out,), bias)

    def _recurrent(self, index: int, g: h5py.Group, shape: tuple[int, ...]) -> None:
        """``slayer.block.cuba.Recurrent``: the layer's own spikes of the step before, through
        ``weight_rec``, added to its input current (netx: a second synapse from the neurons'
        output to their input, one step later, as a recurrent NIR edge is)."""
        if self.readout or "weight_rec" not in g:
            raise self.fail(
                index, "dense_rec", "a recurrent layer needs neurons and a 'weight_rec'"
            )
        if "delay_rec" in g:
            raise self.fail(index, "dense_rec", "delays on recurrent synapses are not supported")
        n = int(np.prod(shape))
        w = _values(g, "weight_rec").reshape(n, -1)
        if w.shape[1] != n:
            raise self.fail(
                index, "dense_rec", f"weight_rec has {w.shape[1]} inputs, the layer has {n} neurons"
            )
        name = f"{index}.recurrent"
        self.nodes[name] = nir.Linear(weight=w)
        self.nodes[name].metadata = {"connection": "plain"}
        self.edges += [(self.last, name), (name, self.last)]

    def _average(self, index: int, g: h5py.Group) -> None:
        """slayer's population average: the sum of each group of neurons (same arg-max)."""
        groups = int(np.prod(np.asarray(g["shape"][()]))) if "shape" in g else 0
        n = int(np.prod(self.shape))
        if groups <= 0 or n % groups:
            raise self.fail(
                index, "average", f"{n} neurons cannot be split into {groups} equal groups"
            )
        w = np.kron(np.eye(groups), np.ones((1, n // groups)))
        self.add(f"{index}.average", nir.Linear(weight=w), (groups,))
        self.readout = True

    def graph(self) -> nir.NIRGraph:
        if self.last is None or self.last == "input":
            raise UserError(f"{self.path}: the netx file has no layers after its input")
        self.add("output", nir.Output(output_type={"output": np.array(self.shape)}), self.shape)
        meta = {
            "dt": 1.0,
            "reset": "zero",
            "discretisation": "euler",
            "fixed_point": "loihi",
            "source_format": "netx",
            "connection": "plain",
        }
        if self.read_by:
            meta["output_read_by"] = self.read_by
        if self.skipped:
            meta["netx_skipped"] = self.skipped
        return nir.NIRGraph(nodes=self.nodes, edges=self.edges, metadata=meta, type_check=False)


def read_netx(path: Path, keep_input_neurons: bool = False) -> nir.NIRGraph:
    """The netx file at ``path`` as a NIR graph in the chip's integers (see the module doc)."""
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        why = (
            "the file is empty"
            if path.is_file() and path.stat().st_size == 0
            else str(e).splitlines()[0][:160]
        )
        raise UserError(
            f"{path}: not a readable netx file: not HDF5, truncated or damaged ({why})"
        ) from None
    with f:
        if "layer" not in f:
            raise UserError(f"{path}: not a netx file (no 'layer' group)")
        layers = f["layer"]
        names = sorted(layers, key=lambda k: int(k) if k.isdigit() else -1)
        if not isinstance(layers, h5py.Group) or [int(k) for k in names if k.isdigit()] != list(
            range(len(layers))
        ):
            raise UserError(f"{path}: netx layers must be named 0..{len(layers) - 1}")
        reader = _Reader(path, keep_input_neurons)
        reader.final_index = len(layers) - 1
        for i in range(len(layers)):
            g = layers[str(i)]
            kind = _text(g["type"]) if "type" in g else "?"
            if reader.readout:
                raise reader.fail(i, kind, "follows a non-spiking readout layer")
            try:
                _check_shape(g)
                reader.layer(i, g)
            except KeyError as e:
                raise reader.fail(
                    i, kind, f"has no {e.args[0]!r} (a field lava-dl's netx reads)"
                ) from None
            except FieldError as e:
                raise reader.fail(i, kind, str(e)) from None
            except (ValueError, TypeError, UnicodeDecodeError) as e:
                raise reader.fail(
                    i, kind, f"unreadable field value ({str(e).splitlines()[0][:160]})"
                ) from None
        return reader.graph()


def _check_shape(g: h5py.Group) -> None:
    """A layer's ``shape`` is read before anything is allocated for it."""
    if "shape" not in g:
        return
    shape = np.asarray(g["shape"][()]).ravel()
    if shape.dtype.kind not in "iuf" or np.any(shape < 1) or np.any(shape != np.floor(shape)):
        raise ValueError(f"shape {shape.tolist()} is not a list of positive whole numbers")
    if float(np.prod(shape.astype(np.float64))) > MAX_LAYER_NEURONS:
        raise ValueError(
            f"shape {shape.astype(np.int64).tolist()} has more than {MAX_LAYER_NEURONS:,} neurons"
        )
