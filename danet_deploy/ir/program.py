"""The compiled program every later stage reads: populations, synapse groups, integers, mapping.

``compile.compile_graph`` makes a :class:`Program` from a graph; the fast simulator, the Lava
worker, the accountant, the netx writer and ``program.h5`` read it (docs/compile.md). Lowering
fills in the structure (:class:`Population`, :class:`SynapseGroup`, :class:`Map`), quantisation the
integers (:class:`Fixed`, ``SynapseGroup.weight_q``), core mapping ``Program.mapping``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import h5py
import numpy as np

from danet_deploy.errors import UserError
from danet_deploy.ir.chip_format import LOIHI
from danet_deploy.ir.kinds import PopulationKind, kind_named
from danet_deploy.ir.resets import PLAIN, Firing, Reset
from danet_deploy.outputs import write_hdf5

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix

    from danet_deploy.profiles import Profile

# /2: a weight held once over its kernel taps is written once, with a ``kernel`` attribute
# (a /1 reader would take it for a 1x1 kernel, so it refuses /2); /1 files still read.
# /3: a program with sigma-delta populations, which a /2 reader does not know (only such
# programs are written as /3, so that every other program still reads with a /2 reader)
# /4: a program with programmed resets (a population's ``reset`` and ``at_threshold``
# attributes, ir/resets.py), which a /2 reader would run as resets to zero
PROGRAM_FORMAT = "danet-deploy-program/2"
PROGRAM_FORMAT_SIGMA_DELTA = "danet-deploy-program/3"
PROGRAM_FORMAT_PROGRAMMED = "danet-deploy-program/4"
READABLE_FORMATS = (
    "danet-deploy-program/1",
    PROGRAM_FORMAT,
    PROGRAM_FORMAT_SIGMA_DELTA,
    PROGRAM_FORMAT_PROGRAMMED,
)


@dataclass
class Map:
    """A linear map from a source population's output to a consumer's input current.

    ``weight`` is not the map's weight: :meth:`values` is, ``weight`` times ``row_scale``
    (float64, one factor per output row: a conv's output channel, a dense map's output), which
    is applied where it is read so that a BatchNorm after a conv holds no scaled copy of the
    conv's weight (docs/compile.md §1). ``weight`` (float, as held: maybe a node's own
    float32 array, or one value broadcast over a conv's taps) is None for three reasons:

    * only the structure is lowered (``lower(..., with_weights=False)``: to cost a lowering
      that will not be built; the geometry is the same as with weights);
    * the program is compiled: the compiler drops it (by default) once the term's integers,
      ``SynapseGroup.weight_q``, are made (compile.py, to free memory);
    * the program was read from a file (:func:`read_program`), which holds only ``weight_q``.

    ``identity`` marks the map of a population onto itself.
    """

    kind: str  # "conv" (weight [Cout, Cin, kh, kw]) or "dense" ([Nout, Nin])
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    weight: np.ndarray | None
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    delay: int = 0  # steps added by Delay nodes on the path
    identity: bool = False
    recurrent: bool = False  # the path closes a cycle: it carries the previous step's output
    row_scale: np.ndarray | None = None

    def values(self, rows: slice = slice(None)) -> np.ndarray | None:
        """The float weight of the map (of its output ``rows``): ``weight`` times ``row_scale``
        (in float64) where that is set."""
        if self.weight is None or self.row_scale is None:
            return None if self.weight is None else self.weight[rows]
        scale = self.row_scale[rows].reshape(-1, *([1] * (self.weight.ndim - 1)))
        return per_tap(self.weight[rows], lambda w: w * scale)

    def abs_max(self) -> float:
        """The largest ``|values()|``, without making them: scaling a row by ``|s|`` is monotone
        (in floating point too), so its largest product is ``|s|`` times its largest ``|weight|``."""
        part = distinct_part(self.weight)
        if not part.size:
            return 0.0
        if self.row_scale is None:
            return float(max(part.max(), -part.min()))
        axes = tuple(range(1, part.ndim))
        per_row = np.maximum(part.max(axis=axes), -part.min(axis=axes)).astype(np.float64)
        return float((per_row * np.abs(self.row_scale)).max())

    def scaled(self, rows: np.ndarray) -> Map:
        """This map followed by a factor per output row (float64), applied lazily; ``rows`` is
        copied (a view would keep the array it was cut from, e.g. a Scale node's every element)."""
        rows = np.array(rows, dtype=np.float64).reshape(-1)
        return replace(
            self,
            identity=False,
            row_scale=rows if self.row_scale is None else self.row_scale * rows,
        )

    @property
    def geometry(self) -> tuple:
        return (
            self.kind,
            self.kernel,
            self.stride,
            self.padding,
            self.delay,
            self.recurrent,
            self.out_shape,
        )

    @property
    def weight_shape(self) -> tuple[int, ...]:
        if self.kind == "dense":
            return int(np.prod(self.out_shape)), int(np.prod(self.in_shape))
        return self.out_shape[0], self.in_shape[0], *self.kernel

    def matrix(self, weight: np.ndarray) -> csr_matrix:
        """``weight`` laid out as a sparse ``[out, in]`` matrix over C-order flattened neurons."""
        from scipy.sparse import csr_matrix

        if self.kind == "dense":
            return csr_matrix(weight)
        (cin, h, w), (cout, oh, ow) = self.in_shape, self.out_shape
        co, ci, a, b = np.nonzero(weight)
        vals = weight[co, ci, a, b]
        ho, wo = np.arange(oh), np.arange(ow)
        rows, cols, data = [], [], []
        for k in range(len(vals)):  # one kernel tap at a time, over all output positions
            hi = ho * self.stride[0] - self.padding[0] + a[k]
            wi = wo * self.stride[1] - self.padding[1] + b[k]
            oh_ok, ow_ok = np.nonzero((hi >= 0) & (hi < h))[0], np.nonzero((wi >= 0) & (wi < w))[0]
            r = co[k] * oh * ow + oh_ok[:, None] * ow + ow_ok[None, :]
            c = ci[k] * h * w + hi[oh_ok][:, None] * w + wi[ow_ok][None, :]
            rows.append(r.ravel())
            cols.append(c.ravel())
            data.append(np.full(r.size, vals[k]))
        shape = (cout * oh * ow, cin * h * w)
        if not data:
            return csr_matrix(shape, dtype=weight.dtype)
        return csr_matrix(
            (np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))), shape=shape
        )

    def is_pointwise(self) -> bool:
        return (
            self.kind == "conv"
            and self.kernel == (1, 1)
            and self.stride == (1, 1)
            and self.padding == (0, 0)
        )


@dataclass
class SynapseGroup:
    """One synapse group: ``source`` population -> its consumer, through ``map``. The one name
    in code for what ``program.h5`` stores under ``terms/`` (a term of the consumer's input sum)
    and the report draws as an edge (its ``edges`` rows)."""

    source: str
    map: Map
    connection: str
    delay: int = 0  # steps beyond the one-step synaptic hop (set by balancing)
    weight_q: np.ndarray | None = (
        None  # the integer weights (set by the compiler, synapses.WEIGHT_DTYPE)
    )
    port: bool = False  # the input itself, into an encoder's neurons: no synapse group and
    # no hop (netx feeds its input to a Delta's a_in), an identity map

    @property
    def hop(self) -> int:
        """Steps from the source's output to the consumer's input: Lava's synapse hop plus the delay."""
        return self.delay + (0 if self.port else 1)

    @property
    def lag(self) -> int:
        """Steps from the source's step to the consumer's step that it reaches, in the model the
        program computes (docs/compile.md §2): the graph's Delay nodes on the path, plus one for
        a recurrent path (the previous step's output). The first ``lag`` steps of a sample get
        nothing from the group, and the source's last ``lag`` steps reach no step of the sample."""
        return self.map.delay + (1 if self.map.recurrent else 0)


@dataclass
class Population:
    """Neurons of one layer (or the input, a relay, a readout) and what feeds them."""

    name: str
    kind: PopulationKind  # what it computes, and what the stages ask of it (ir/kinds.py)
    shape: tuple[int, ...]
    connection: str
    synapse_groups: list[SynapseGroup] = field(default_factory=list)  # what feeds it
    bias: np.ndarray | None = None  # constant input current per neuron (float)
    beta: float = 0.0  # v <- beta * v + u + bias
    gain: float = 1.0  # u <- alpha * u + gain * I
    alpha: float = 0.0  # current decay (CUBA); 0: no current memory
    threshold: float = 0.0
    firing: Firing = PLAIN  # how a neuron fires and resets (ir/resets.py)
    latency: int = 0
    spike_exp: int = 0  # sigma-delta populations: payload and state exponents and the
    state_exp: int = 0  # activation (ir/sigma_delta.py); the bias enters the activation
    relu: bool = False

    @property
    def neurons(self) -> int:
        return int(np.prod(self.shape))


@dataclass
class Lowered:
    populations: dict[str, Population]  # ordered: every source before its consumers
    lowering: str
    dt: float
    timesteps: int | None

    @property
    def input(self) -> Population:
        return next(p for p in self.populations.values() if p.kind.is_input)

    @property
    def readouts(self) -> list[Population]:
        return [p for p in self.populations.values() if p.kind.is_readout]

    @property
    def latency(self) -> int:
        return max(p.latency for p in self.populations.values())

    @property
    def pipelined(self) -> bool:
        """Whether the program runs as Loihi's pipeline does, from one start (sigma-delta
        populations have no reset, so a layer's start-up, before its first input arrives, shapes
        its state: docs/lava-dl.md, "Sigma-delta networks"); else each population's window starts
        afresh when its first input arrives."""
        return any(p.kind.sigma_delta for p in self.populations.values())


@dataclass
class Fixed:
    """The integer parameters of one population."""

    scale: float  # K: integer voltage per unit of float voltage
    value_scale: float = 1.0  # integer output value per unit of float signal (graded sources)
    vth: int = 0
    dv: int = 0
    du: int = LOIHI.du_no_memory
    bias_mant: np.ndarray | None = None  # per neuron, times 2**LOIHI.bias_exp
    quant_error: float = 0.0  # weight error: RMS rounding error over RMS weight, all terms
    graded: bool = False  # emits graded values (input, relays) instead of binary spikes
    scale_set_by: str = ""  # what set ``scale`` (the compile's warnings name it; not in program.h5)


@dataclass
class Program:
    """What `export --target loihi*` produces and the simulators run."""

    target: str
    profile: str
    lowered: Lowered
    fixed: dict[str, Fixed]
    mapping: dict[str, dict[str, Any]] = field(default_factory=dict)
    readout_bias: dict[str, np.ndarray] = field(default_factory=dict)
    warnings: list[str] = field(
        default_factory=list
    )  # layers over the weight error bound (compile)

    @property
    def populations(self) -> dict[str, Population]:
        return self.lowered.populations


# ---- weights held once over kernel taps -------------------------------------------------


def distinct_part(w: np.ndarray) -> np.ndarray:
    """The values of a conv weight that is the same at every kernel tap, held once: a
    pooling composed into a pointwise map (e.g. a global-average-pool readout, whose 7x7
    kernel would otherwise hold its classifier 49 times) is a broadcast view with zero
    strides over the taps. Any other weight is returned as it is."""
    if w.ndim == 4 and w.shape[2:] != (1, 1) and w.strides[2:] == (0, 0):
        return w[:, :, :1, :1]
    return w


def per_tap(w: np.ndarray, fn) -> np.ndarray:
    """``fn`` (which acts on each tap's ``[out, in]`` slice alone) applied to ``w``, keeping a
    weight held once over its taps held once."""
    part = distinct_part(w)
    if part is w:
        return fn(w)
    done = fn(part)
    return np.broadcast_to(done, (*done.shape[:2], *w.shape[2:]))


# ---- structure counts -----------------------------------------------------------------


def _valid_taps(size: int, kernel: int, stride: int, pad: int, out: int) -> np.ndarray:
    """For each kernel offset, on how many output positions it lands inside the input."""
    o = np.arange(out)
    return np.array(
        [
            int(((o * stride - pad + k >= 0) & (o * stride - pad + k < size)).sum())
            for k in range(kernel)
        ]
    )


def synapse_count(m: Map, weight: np.ndarray | None) -> int:
    """Exact synapses of a term: nonzero weights times the positions they connect (borders
    exact). Without weights (structure only) every weight counts."""
    shape = m.weight_shape
    if m.kind == "dense":
        return int(np.count_nonzero(weight)) if weight is not None else int(np.prod(shape))
    (_, h, wd), (_, oh, ow) = m.in_shape, m.out_shape
    th = _valid_taps(h, shape[2], m.stride[0], m.padding[0], oh)
    tw = _valid_taps(wd, shape[3], m.stride[1], m.padding[1], ow)
    if weight is None:
        nnz = np.full(shape[2:], shape[0] * shape[1])
    else:  # counted on a weight held once over its taps as held (counting would materialise it)
        nnz = np.broadcast_to(np.count_nonzero(distinct_part(weight), axis=(0, 1)), shape[2:])
    return int((nnz * th[:, None] * tw[None, :]).sum())


def fan_in(m: Map, weight: np.ndarray | None) -> int:
    """Most synapses onto one neuron of the consumer (interior neuron of a conv)."""
    if weight is None:
        return int(np.prod(m.weight_shape[1:]))
    if not weight.size:
        return 0
    part = distinct_part(weight)  # the same at every tap: counted once, times the taps
    return int(np.count_nonzero(part, axis=tuple(range(1, part.ndim))).max()) * (
        weight.size // part.size
    )


def bound_by(cores: int, by_neurons: int, by_memory: int) -> str:
    """Which limit sets a layer's ``cores``, from the cores its neuron slots and its synaptic
    memory would each need (a core mapping's ``bound_by``, docs/accounting.md, "Per-core table")."""
    if by_neurons == cores >= by_memory and by_neurons > 1:
        return "neurons"
    return "synaptic memory" if by_memory == cores > 1 else "fits one core"


def summarise(mapping: dict[str, dict[str, Any]], profile: Profile) -> dict[str, int]:
    cores = sum(m["cores"] for m in mapping.values())
    return {
        "synapses": sum(m["synapses"] for m in mapping.values()),
        "synapse_bits": sum(m["synapse_bits"] for m in mapping.values()),
        "neurons": sum(m["neurons"] for m in mapping.values()),
        "compartments": sum(m["neurons"] * m["compartments_per_neuron"] for m in mapping.values()),
        "cores": cores,
        "chips": math.ceil(cores / profile.limit("cores_per_chip")),
    }


# ---- program file -----------------------------------------------------------------------


def write_program(path: Path, program: Program, made_from: dict[str, Any] | None = None) -> None:
    """The quantised program as HDF5: one group per population, one per synapse group;
    ``made_from`` (docs/artifacts.md) is the root's ``made_from`` attribute, as JSON."""
    write_hdf5(path, lambda file: _fill_program(file, program, made_from))


def _fill_program(
    file: BinaryIO, program: Program, made_from: dict[str, Any] | None = None
) -> None:
    low = program.lowered
    with h5py.File(file, "w") as f:
        f.attrs.update(
            {
                "format": _file_format(low),
                "target": program.target,
                "profile": program.profile,
                "lowering": low.lowering,
                "dt": low.dt,
                "timesteps": low.timesteps or 0,
                "latency": low.latency,
                "mapping": json.dumps(program.mapping, sort_keys=True),
            }
        )
        if made_from is not None:
            f.attrs["made_from"] = json.dumps(made_from, sort_keys=True)
        for i, (name, pop) in enumerate(low.populations.items()):
            g = f.create_group(f"populations/{i}")
            fx = program.fixed[name]
            g.attrs.update(
                {
                    "name": name,
                    "kind": pop.kind.name,
                    "shape": list(pop.shape),
                    "latency": pop.latency,
                    "connection": pop.connection,
                    "beta": pop.beta,
                    "gain": pop.gain,
                    "alpha": pop.alpha,
                    "threshold": pop.threshold,
                    "scale": fx.scale,
                    "value_scale": fx.value_scale,
                    "vth": fx.vth,
                    "dv": fx.dv,
                    "du": fx.du,
                    "graded": fx.graded,
                    "bias_exp": LOIHI.bias_exp,
                    "quant_error": fx.quant_error,
                }
            )
            if pop.kind.sigma_delta:
                g.attrs.update(
                    {"spike_exp": pop.spike_exp, "state_exp": pop.state_exp, "relu": pop.relu}
                )
            if pop.firing.reset.programmed:
                g.attrs.update(
                    {"reset": pop.firing.reset.value, "at_threshold": pop.firing.at_threshold}
                )
            if fx.bias_mant is not None:
                g.create_dataset("bias_mant", data=fx.bias_mant)
            if name in program.readout_bias:
                g.create_dataset("readout_bias", data=program.readout_bias[name])
            for j, t in enumerate(pop.synapse_groups):
                tg = g.create_group(f"terms/{j}")
                tg.attrs.update(
                    {
                        "source": t.source,
                        "kind": t.map.kind,
                        "in_shape": list(t.map.in_shape),
                        "out_shape": list(t.map.out_shape),
                        "stride": list(t.map.stride),
                        "padding": list(t.map.padding),
                        "delay": t.delay,
                        "connection": t.connection,
                        "recurrent": t.map.recurrent,
                        "port": t.port,
                        "map_delay": t.map.delay,
                    }
                )
                held = distinct_part(t.weight_q)  # a weight held once over its taps is written once
                if held is not t.weight_q:
                    tg.attrs["kernel"] = list(t.weight_q.shape[2:])
                # not compressed: LZF did not shrink them (DA-ResNet-152: 306 MB either way) and took 8 s
                tg.create_dataset("weight", data=held)


def _file_format(low: Lowered) -> str:
    """The oldest format that holds ``low`` (PROGRAM_FORMAT's comment)."""
    if low.pipelined:
        return PROGRAM_FORMAT_SIGMA_DELTA
    if any(p.firing.reset.programmed for p in low.populations.values()):
        return PROGRAM_FORMAT_PROGRAMMED
    return PROGRAM_FORMAT


def _firing(path: Path, attrs: Any) -> Firing:
    """A population's firing as ``program.h5`` states it (Loihi's reset to zero where unstated)."""
    if "reset" not in attrs:
        return PLAIN
    reset = str(attrs["reset"])
    if reset not in {r.value for r in Reset}:
        raise UserError(
            f"{path}: population {str(attrs['name'])!r} has an unknown reset {reset!r} (a newer "
            f"danet-deploy's? known: {', '.join(r.value for r in Reset)})"
        )
    return Firing(Reset(reset), bool(attrs["at_threshold"]))


def _older_lags(pops: dict[str, Population]) -> None:
    """The Delay nodes on a term's path (``Map.delay``) in a program written before they were
    stored (-1 when read): as it ran then, a forward term's were absorbed into the latency (none
    left), a recurrent term's are its synaptic delay beyond the latencies' difference."""
    for pop in pops.values():
        for t in pop.synapse_groups:
            if t.map.delay < 0:
                t.map.delay = (
                    t.delay - (pop.latency - pops[t.source].latency) if t.map.recurrent else 0
                )


def read_program(path: Path) -> Program:
    """Read a program written by :func:`write_program` (it holds no float weights: every map's
    ``weight`` is None, its integers are the term's ``weight_q``)."""
    pops: dict[str, Population] = {}
    fixed: dict[str, Fixed] = {}
    readout_bias = {}
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise UserError(f"{path}: not a readable program file ({e})") from None
    with f:
        if f.attrs.get("format") not in READABLE_FORMATS:
            raise UserError(
                f"{path}: not a danet-deploy program (or one newer than this danet-deploy)"
            )
        groups = sorted(f["populations"].values(), key=lambda g: int(g.name.rsplit("/", 1)[1]))
        for g in groups:
            a = g.attrs
            shape = tuple(int(v) for v in a["shape"])
            pop = Population(
                str(a["name"]),
                kind_named(str(a["kind"])),
                shape,
                str(a["connection"]),
                beta=float(a["beta"]),
                gain=float(a["gain"]),
                threshold=float(a["threshold"]),
                alpha=float(a.get("alpha", 0.0)),
                latency=int(a["latency"]),
                spike_exp=int(a.get("spike_exp", 0)),
                state_exp=int(a.get("state_exp", 0)),
                relu=bool(a.get("relu", False)),
                firing=_firing(path, a),
            )
            for tg in sorted(
                g.get("terms", {}).values(), key=lambda t: int(t.name.rsplit("/", 1)[1])
            ):
                ta = tg.attrs
                w = tg["weight"][()]
                if "kernel" in ta:  # held once over its taps (:func:`distinct_part`)
                    w = np.broadcast_to(w, (*w.shape[:2], *(int(k) for k in ta["kernel"])))
                kind = str(ta["kind"])
                m = Map(
                    kind,
                    tuple(int(v) for v in ta["in_shape"]),
                    tuple(int(v) for v in ta["out_shape"]),
                    None,
                    tuple(w.shape[2:]) if kind == "conv" else (1, 1),
                    tuple(int(v) for v in ta["stride"]),
                    tuple(int(v) for v in ta["padding"]),
                    delay=int(ta.get("map_delay", -1)),
                    recurrent=bool(ta.get("recurrent", False)),
                )
                pop.synapse_groups.append(
                    SynapseGroup(
                        str(ta["source"]),
                        m,
                        str(ta["connection"]),
                        int(ta["delay"]),
                        w,
                        port=bool(ta.get("port", False)),
                    )
                )
            pops[pop.name] = pop
            fixed[pop.name] = Fixed(
                float(a["scale"]),
                float(a["value_scale"]),
                int(a["vth"]),
                int(a["dv"]),
                int(a["du"]),
                g["bias_mant"][()] if "bias_mant" in g else None,
                float(a["quant_error"]),
                bool(a["graded"]),
            )
            if "readout_bias" in g:
                readout_bias[pop.name] = g["readout_bias"][()]
        _older_lags(pops)
        low = Lowered(
            pops, str(f.attrs["lowering"]), float(f.attrs["dt"]), int(f.attrs["timesteps"]) or None
        )
        return Program(
            str(f.attrs["target"]),
            str(f.attrs["profile"]),
            low,
            fixed,
            json.loads(f.attrs["mapping"]),
            readout_bias,
        )
