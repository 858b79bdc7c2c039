"""Running a compiled program in Lava (``Loihi2SimCfg(select_tag='fixed_pt')``).

The Lava network is built from the program: one synapse process per term (``Conv``,
``Dense`` or ``Sparse``, graded when the source is), ``DelayLine`` processes that
carry balancing delays (shared per source and delay), ``SampleMask`` processes in front
of recurrent synapses (so that no spike crosses into the next sample), LIFReset neurons (memoryless
gates are LIFs with ``dv = 4096``), GradedVec relays, lava-nc's own ``Delta`` and ``SigmaDelta``
sigma-delta neurons, and file sinks that record every population at every step. Samples are
concatenated in time; each population resets its state at the start of its own window (offset
by its pipeline latency), so one run serves all samples. Sigma-delta neurons have no reset: a
program with them (``Lowered.pipelined``) runs each sample in a run of its own, from one start,
as the fast simulator computes it.

Lava runs in a worker process in its own process group: Lava leaves workers behind
when a run fails or is interrupted, so the parent kills the whole group on any
error, Ctrl-C, SIGTERM or SIGHUP, and the worker watches its parent and kills its
own group when the parent dies (even by SIGKILL). Either way the shared-memory
segments of the run (``/dev/shm/psm_<tag>_<run>_*``: each run names its own) are removed
whether or not a process still maps them, so no process and no segment outlives a run.
"""

from __future__ import annotations

import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..ir.chip_format import LOIHI
from ..ir.kinds import DELTA, GATE, INPUT, LIF, READOUT, RELAY, SIGMA_DELTA, PopulationKind
from ..ir.program import (
    Fixed,
    Population,
    Program,
    read_program,
    synapse_count,
)
from .. import lava_runtime
from ..errors import UserError
from ..signals import signals_end_the_run

DENSE_LIMIT = 1 << 22  # weight matrices up to this many entries run as Dense, larger as Sparse
CONV_PAIR_LIMIT = 1024  # convolutions with at most this many (C_in, C_out) pairs run as Lava's Conv
LAVA_SERVICE_PROCESSES = 3  # the worker, Lava's runtime service and its shared-memory manager
SHM = Path("/dev/shm")  # where multiprocessing (and so Lava) keeps its shared-memory segments
SHM_TAG_ENV = (
    "DANET_DEPLOY_SHM_TAG"  # names the segments of the runs a process starts (default: its pid)
)


def shm_prefix(tag: str | None = None) -> str:
    """The name prefix of the shared-memory segments of the Lava runs tagged ``tag`` (default: the
    tag this process gives its runs), so that a leak check watches only its own runs' segments."""
    return f"psm_{tag or os.environ.get(SHM_TAG_ENV) or os.getpid()}_"


def run_prefix() -> str:
    """A fresh name prefix for the segments of one run: a run's segments are found by their name
    alone, even those that no process maps any more (Lava's processes may exit before the clean-up)."""
    return f"{shm_prefix()}{secrets.token_hex(4)}_"


def remove_segments(prefix: str) -> None:
    """Unlink every shared-memory segment named ``prefix...``."""
    for path in SHM.glob(f"{prefix}*"):
        path.unlink(missing_ok=True)


def _name_segments(prefix: str) -> None:
    """In the worker, before Lava starts: every segment its processes create is named ``prefix...``
    (multiprocessing draws the names from these two module constants; Lava's processes fork from
    the worker, so they inherit them)."""
    from multiprocessing import shared_memory

    shared_memory._SHM_NAME_PREFIX = "/" + prefix
    shared_memory._SHM_SAFE_NAME_LENGTH = len(prefix) + 17  # 8 random bytes after the prefix


def _connect_synapse(term, graded: bool, source_out, target_in, always_conv: bool = False) -> None:
    """The Lava process for one synapse group, connected from ``source_out`` to ``target_in``.

    Convolutions with few channel pairs run as Lava's ``Conv`` (one scipy convolution
    per pair and step, as lava-dl's netx does); larger ones, and dense maps, run as a
    matrix (``Dense`` while it is small, else ``Sparse``). ``always_conv``: every convolution
    runs as ``Conv``, whose output wraps at 24 bits where a matrix's does not (a pipelined
    program's convolutions are defined so, as netx builds them). Delays are not the synapse's
    business: ``DelayLine`` processes in front of it carry them (see ``_build``). An encoder's
    port (``SynapseGroup.port``) is no synapse: its source is connected to the neurons themselves.
    """
    kind = synapse_process(term, always_conv)
    if kind == "port":
        source_out.connect(target_in)
        return
    from lava.proc.conv.process import Conv
    from lava.proc.dense.process import Dense
    from lava.proc.sparse.process import Sparse

    m = term.map
    kw = {"num_message_bits": LOIHI.graded_payload_bits if graded else 0}
    if kind == "conv":
        (cin, h, w), (cout, oh, ow) = m.in_shape, m.out_shape
        weight = (
            term.weight_q[:, :, ::-1, ::-1].transpose(0, 3, 2, 1).astype(np.int32)
        )  # true conv, (W, H, C)
        syn = Conv(
            weight=weight,
            input_shape=(w, h, cin),
            stride=m.stride[::-1],
            padding=m.padding[::-1],
            **kw,
        )
        # populations are flat C-order (C, H, W) vectors; Lava's Conv works on (W, H, C)
        source_out.reshape((cin, h, w)).transpose((2, 1, 0)).connect(syn.s_in)
        syn.a_out.transpose((2, 1, 0)).reshape((cout * oh * ow,)).connect(target_in)
        return
    weights = m.matrix(term.weight_q).astype(np.int32)
    if kind == "dense":
        syn = Dense(weights=weights.toarray(), **kw)
    else:
        syn = Sparse(weights=weights, **kw)
    source_out.connect(syn.s_in)
    syn.a_out.connect(target_in)


def synapse_process(term, always_conv: bool = False) -> str:
    """Which Lava process :func:`_connect_synapse` builds for ``term``: ``port`` (none),
    ``conv``, ``dense`` or ``sparse``; what a run costs depends on it (:func:`estimate`)."""
    m = term.map
    if term.port:
        return "port"
    few_pairs = m.in_shape[0] * m.out_shape[0] <= CONV_PAIR_LIMIT
    if m.kind == "conv" and (few_pairs or always_conv) and not m.recurrent:
        return "conv"
    entries = int(np.prod(m.in_shape)) * int(np.prod(m.out_shape))
    return "dense" if entries <= DENSE_LIMIT else "sparse"  # numpy beats scipy at this size


def _ring_buffer(pop: Population, f: Fixed, data: np.ndarray, interval: int):
    """The input: Lava's ``RingBuffer`` playing ``data`` (``[inputs, steps]``)."""
    from lava.proc.io.source import RingBuffer

    return RingBuffer(data=data.astype(np.int32))


def _lif(pop: Population, f: Fixed, data: np.ndarray, interval: int):
    """A LIF or a gate: Lava's ``LIFReset`` (each sample afresh, from ``1 + latency``), or
    danet-deploy's ``ProgrammedLIF`` for a reset Lava's LIF does not run (ir/resets.py)."""
    from lava.proc.lif.process import LIFReset

    from ..lavaext.neuron import ProgrammedLIF

    bias = f.bias_mant.reshape(-1).astype(np.int32) if f.bias_mant is not None else 0
    lif = dict(
        shape=(pop.neurons,),
        du=int(f.du),
        dv=int(f.dv),
        vth=int(f.vth),
        bias_mant=bias,
        bias_exp=LOIHI.bias_exp,
        reset_interval=interval,
        reset_offset=(1 + pop.latency) % interval,
    )
    fires = pop.firing
    if fires.reset.programmed:
        return ProgrammedLIF(reset=fires.reset.value, at_threshold=fires.at_threshold, **lif)
    return LIFReset(**lif)


def _graded_vec(pop: Population, f: Fixed, data: np.ndarray, interval: int):
    """A relay: Lava's ``GradedVec`` with ``vth = 0`` sends its summed input as it is."""
    from lava.proc.graded.process import GradedVec

    return GradedVec(shape=(pop.neurons,), vth=0)


def _no_process(pop: Population, f: Fixed, data: np.ndarray, interval: int) -> None:
    """A readout: no neurons; its synapses feed a sink, which records their summed current."""
    return None


def _delta(pop: Population, f: Fixed, data: np.ndarray, interval: int):
    """A sigma-delta encoder: lava-nc's own ``Delta`` (its constructor shifts ``vth`` up by
    ``spike_exp + state_exp`` itself)."""
    from lava.proc.sdn.process import Delta

    return Delta(
        shape=(pop.neurons,), vth=int(f.vth), spike_exp=pop.spike_exp, state_exp=pop.state_exp
    )


def _sigma_delta(pop: Population, f: Fixed, data: np.ndarray, interval: int):
    """A sigma-delta neuron: lava-nc's own ``SigmaDelta`` (its constructor shifts ``vth`` and
    ``bias`` up by ``spike_exp + state_exp`` itself)."""
    from lava.proc.sdn.process import ActivationMode, SigmaDelta

    bias = f.bias_mant.reshape(-1).astype(np.int64) if f.bias_mant is not None else 0
    mode = ActivationMode.RELU if pop.relu else ActivationMode.UNIT
    return SigmaDelta(
        shape=(pop.neurons,),
        vth=int(f.vth),
        bias=bias,
        act_mode=mode,
        spike_exp=pop.spike_exp,
        state_exp=pop.state_exp,
    )


# How Lava runs each population kind (ir/kinds.py): ``(population, its integers, the input data
# [inputs, steps], the reset interval) -> its process``, or None where it has none
LAVA_PROCESSES: dict[PopulationKind, Callable[[Population, Fixed, np.ndarray, int], object]] = {
    INPUT: _ring_buffer,
    LIF: _lif,
    GATE: _lif,
    RELAY: _graded_vec,
    READOUT: _no_process,
    DELTA: _delta,
    SIGMA_DELTA: _sigma_delta,
}


def _build(program: Program, data: np.ndarray, sink_dir: Path, interval: int):
    """The Lava processes for ``program`` fed by ``data`` ``[inputs, steps]``; returns the source.

    Each population's process is its kind's entry of ``LAVA_PROCESSES``. Every population but
    the input is recorded, ``SINK_PORTS`` to a sink; the sink that holds the last population
    reports every step on stdout (the parent's progress).
    """
    from ..lavaext.delay import DelayLine
    from ..lavaext import SINK_PORTS
    from ..lavaext.filesink import FileSink
    from ..lavaext.sample_mask import SampleMask

    steps = data.shape[1]
    procs, targets, lines = {}, {}, {}
    records = []  # (population, dtype) in program order
    source = None
    for name, pop in program.populations.items():
        f = program.fixed[name]
        proc = LAVA_PROCESSES[pop.kind](pop, f, data, interval)
        if proc is not None:
            procs[name] = proc
        if pop.kind.is_input:
            source = proc
            continue
        records.append((name, record_dtype(pop, f)))
    for first in range(0, len(records), SINK_PORTS):
        chunk = records[first : first + SINK_PORTS]
        sink = FileSink(
            records=[
                ((program.populations[name].neurons,), str(sink_dir / f"{name}.npy"), dtype)
                for name, dtype in chunk
            ],
            num_steps=steps,
            progress=first + SINK_PORTS >= len(records),
        )
        for k, (name, _) in enumerate(chunk):
            if name in procs:
                procs[name].s_out.connect(sink.port(k))
                targets[name] = procs[name].a_in
            else:  # a readout: no neurons, the summed synaptic current is what is recorded
                targets[name] = sink.port(k)
    for name, pop in program.populations.items():
        for t in pop.synapse_groups:
            out = procs[t.source].s_out
            shape = (program.populations[t.source].neurons,)
            if (
                t.lag
            ):  # no spike crosses from one sample into the next: its last lag steps are dropped
                source_latency = program.populations[t.source].latency
                mask = SampleMask(
                    shape=shape,
                    interval=interval,
                    first=source_latency + interval - t.lag + 1,
                    span=t.lag,
                )
                out.connect(mask.s_in)
                out = mask.s_out
            if t.delay:  # one line per (source, delay, mask), shared by every consumer
                key = (t.source, t.delay, t.lag)
                if key not in lines:
                    lines[key] = DelayLine(shape=shape, delay=int(t.delay))
                    out.connect(lines[key].s_in)
                out = lines[key].s_out
            _connect_synapse(
                t, program.fixed[t.source].graded, out, targets[name], program.lowered.pipelined
            )
    return source


def record_dtype(pop: Population, fixed: Fixed) -> str:
    """How the sinks record a population: binary spikes in int8; graded values (spike counts
    too) and a readout's current in int32."""
    return "int8" if pop.kind.has_neurons and not fixed.graded else "int32"


def run_size(program: Program, samples: int, steps: int) -> dict[str, int]:
    """What a Lava run of ``program`` costs before it starts: OS processes, synapses, steps, runs
    (one per sample for a pipelined program), and what its synapse processes hold and compute
    (:func:`synapse_process`): the entries of its ``Dense`` matrices, the synapses of its
    ``Sparse`` ones, the channel pairs of its ``Conv`` ones and their multiply-adds per step
    (every pair convolved over the whole input), and the nonzero kernel weights of the
    convolutions laid out as a matrix (one at a time, at start-up: ``Map.matrix``)."""
    from ..lavaext import SINK_PORTS

    pops = [p for p in program.populations.values() if not p.kind.is_input]
    terms = [t for p in pops for t in p.synapse_groups if not t.port]
    lines = {(t.source, t.delay, t.lag) for t in terms if t.delay}
    gates = sum(bool(t.lag) for t in terms)
    neurons = sum(p.kind.has_neurons for p in pops)
    sinks = -(-len(pops) // SINK_PORTS)
    work = {
        "dense_entries": 0,
        "sparse_synapses": 0,
        "conv_pairs": 0,
        "conv_macs": 0,
        "conv_taps": 0,
    }
    for t in terms:
        kind, m = synapse_process(t, program.lowered.pipelined), t.map
        if kind == "conv":
            work["conv_pairs"] += m.in_shape[0] * m.out_shape[0]
            work["conv_macs"] += int(np.prod(m.weight_shape)) * int(np.prod(m.in_shape[1:]))
            continue
        if kind == "dense":
            work["dense_entries"] += int(np.prod(m.in_shape)) * int(np.prod(m.out_shape))
        else:
            work["sparse_synapses"] += synapse_count(m, t.weight_q)
        if m.kind == "conv":
            work["conv_taps"] += int(np.count_nonzero(t.weight_q))
    runs = samples if program.lowered.pipelined else 1
    return {
        "processes": 1 + neurons + sinks + len(terms) + len(lines) + gates + LAVA_SERVICE_PROCESSES,
        "synapses": sum(m["synapses"] for m in program.mapping.values()),
        "steps": samples * steps + runs * (program.lowered.latency + 1),
        "runs": runs,
        **work,
    }


@dataclass(frozen=True)
class LavaCost:
    """What a Lava run costs on the machine it was measured on: seconds of start-up (per run),
    seconds per step and bytes held, each a sum of a cost per process and a cost per unit of
    synapse work (:func:`run_size`). Fitted to measured runs (docs/lava-runtime.md, "How long
    a Lava run takes")."""

    start_s: float  # per run: Lava's compiler, its runtime service
    start_s_per_process: float  # per run and process: building it, forking it, connecting it
    start_s_per_conv_tap: float  # per nonzero kernel weight of a conv laid out as a matrix
    start_s_per_dense_entry: float  # per Dense entry sent to its process
    start_s_per_sparse_synapse: float  # per Sparse synapse sent to its process
    step_s_per_process: float  # per step and process: its messages and the step's barrier
    step_s_per_dense_entry: float  # per step and Dense entry (a numpy matrix product)
    step_s_per_sparse_synapse: float  # per step and Sparse synapse (a scipy product)
    step_s_per_conv_pair: float  # per step and Conv channel pair (one scipy convolution each)
    step_s_per_conv_mac: float  # per step and Conv multiply-add
    bytes: float  # the worker: the interpreter, Lava, the program
    bytes_per_process: float  # a Lava process's own memory (PSS: shared pages split)
    bytes_per_dense_entry: float  # an int32 Dense entry, every copy Lava holds
    bytes_per_sparse_synapse: float  # a Sparse synapse (value, index), every copy Lava holds


# The one place of the cost model's constants: least squares (non-negative) over 9 measured runs
# on 2 shared cores (load 7 to 12), 2026-12-07; the runs: docs/lava-runtime.md.
LAVA_COST = LavaCost(
    start_s=1.7,
    start_s_per_process=0.094,
    start_s_per_conv_tap=8.6e-5,
    start_s_per_dense_entry=1.7e-7,
    start_s_per_sparse_synapse=5.6e-7,
    step_s_per_process=3.9e-4,
    step_s_per_dense_entry=4.9e-10,
    step_s_per_sparse_synapse=4.7e-9,
    step_s_per_conv_pair=1.0e-5,
    step_s_per_conv_mac=8.4e-9,
    bytes=81e6,
    bytes_per_process=6.8e6,
    bytes_per_dense_entry=24.0,
    bytes_per_sparse_synapse=47.0,
)
LAVA_TIME_BOUND_S = 10 * 60  # a Lava run estimated longer than this is refused (--force runs it)
STALL_TIMEOUT_S = 300.0  # the least a Lava run may go without finishing a step (start-up included)
STALL_MARGIN = 3  # a run whose estimated start-up or step is longer waits this many times as long


@dataclass(frozen=True)
class Estimate:
    """A Lava run's estimated start-up (per run), seconds per step, whole duration and memory."""

    start_s: float
    step_s: float
    seconds: float
    bytes: int

    def __str__(self) -> str:
        return (
            f"about {_duration(self.seconds)} (start-up {_duration(self.start_s)}, "
            f"{_duration(self.step_s)} a step) and {self.bytes / 2**30:.1f} GiB"
        )

    @property
    def stall_timeout(self) -> float:
        """How long the run may go without a step: :data:`STALL_TIMEOUT_S`, or
        :data:`STALL_MARGIN` times the longest wait the estimate expects."""
        return max(STALL_TIMEOUT_S, STALL_MARGIN * max(self.start_s, self.step_s))


def estimate(size: dict[str, int], cost: LavaCost = LAVA_COST) -> Estimate:
    """What the Lava run of :func:`run_size` ``size`` will take, by :data:`LAVA_COST`."""
    procs, dense, sparse = size["processes"], size["dense_entries"], size["sparse_synapses"]
    start = (
        cost.start_s
        + cost.start_s_per_process * procs
        + cost.start_s_per_conv_tap * size["conv_taps"]
        + cost.start_s_per_dense_entry * dense
        + cost.start_s_per_sparse_synapse * sparse
    )
    step = (
        cost.step_s_per_process * procs
        + cost.step_s_per_dense_entry * dense
        + cost.step_s_per_sparse_synapse * sparse
        + cost.step_s_per_conv_pair * size["conv_pairs"]
        + cost.step_s_per_conv_mac * size["conv_macs"]
    )
    held = (
        cost.bytes
        + cost.bytes_per_process * procs
        + cost.bytes_per_dense_entry * dense
        + cost.bytes_per_sparse_synapse * sparse
    )
    return Estimate(start, step, size["runs"] * start + size["steps"] * step, int(held))


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def available_memory() -> int | None:
    """The memory the system can give new processes now (``MemAvailable``), None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def refuse_oversized(program_path: Path, size: dict[str, int], guess: Estimate, fewer: str) -> None:
    """Refuse, in one line, a Lava run estimated to take longer than :data:`LAVA_TIME_BOUND_S`
    or more memory than is available, naming the estimate, the bound and what to do instead
    (``fewer``: the option that runs fewer samples); ``--force`` runs it anyway."""
    memory = available_memory()
    if guess.seconds > LAVA_TIME_BOUND_S:
        over = f"over the bound of {_duration(LAVA_TIME_BOUND_S)}"
    elif memory is not None and guess.bytes > memory:
        over = f"more memory than the {memory / 2**30:.1f} GiB available"
    else:
        return
    raise UserError(
        f"{program_path}: the Lava run ({size['processes']} processes, {size['synapses']:,} "
        f"synapses, {size['steps']:,} steps) would take {guess}, {over}: the fast simulator "
        f"(--backend fast) is bit-exact to Lava; check parity on fewer samples ({fewer}) or a "
        f"smaller variant; --force runs it anyway"
    )


def worker(
    program_path: str, data_path: str, sink_dir: str, interval: str, prefix: str, parent: str
) -> None:
    """Entry point of the worker process (``python -m danet_deploy.simulator.lava ...``)."""
    _watch_parent(int(parent), Path(sink_dir), prefix)
    _name_segments(prefix)
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg

    program = read_program(Path(program_path))
    data = np.load(data_path)
    source = _build(program, data, Path(sink_dir), int(interval))
    source.run(
        condition=RunSteps(num_steps=data.shape[1]), run_cfg=Loihi2SimCfg(select_tag="fixed_pt")
    )
    source.stop()


POLL_S = 0.5  # how often a quiet run checks that its worker is still alive


def _lines(proc: subprocess.Popen, timeout: float) -> Iterator[str]:
    """The worker's stdout lines, until it closes or the worker exits (Lava's processes may keep
    the pipe open after the worker died); raises TimeoutError when no line arrives for ``timeout`` s."""
    lines: queue.Queue = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(ln) for ln in proc.stdout] + [lines.put(None)], daemon=True
    ).start()
    last = time.monotonic()
    while True:
        try:
            line = lines.get(timeout=min(POLL_S, timeout))
        except queue.Empty:
            if proc.poll() is not None:
                return
            if time.monotonic() - last >= timeout:
                raise TimeoutError from None
            continue
        if line is None:
            return
        last = time.monotonic()
        yield line


def run_lava(
    program_path: Path,
    program: Program,
    x_int: np.ndarray,
    on_step: Callable[[], None] = lambda: None,
    stall_timeout: float = STALL_TIMEOUT_S,
    guess: Estimate | None = None,
) -> dict[str, np.ndarray]:
    """Run ``x_int`` ``[N, T, ...]`` (already encoded) in Lava; per population ``[T, N, ...]``
    (its window, as :meth:`FixedSimulator.run` returns it).

    ``on_step`` is called after each of the ``run_size(...)["steps"]`` steps. Lava waits
    forever when one of its processes fails, so a run that completes no step for
    ``stall_timeout`` seconds (start-up included) is stopped and reported, with what ``guess``
    (:func:`estimate`) expected. A pipelined program runs each sample in a run of its own (its
    neurons have no reset).
    """
    if not program.lowered.pipelined:
        return _run(program_path, program, x_int, on_step, stall_timeout, guess)
    runs = [
        _run(program_path, program, x_int[k : k + 1], on_step, stall_timeout, guess)
        for k in range(len(x_int))
    ]
    return {name: np.concatenate([run[name] for run in runs], axis=1) for name in runs[0]}


def _run(
    program_path: Path,
    program: Program,
    x_int: np.ndarray,
    on_step: Callable[[], None],
    stall_timeout: float,
    guess: Estimate | None,
) -> dict[str, np.ndarray]:
    """One Lava run of the samples ``x_int`` back to back (:func:`run_lava`)."""
    n, steps = x_int.shape[:2]
    data = np.zeros((int(np.prod(x_int.shape[2:])), _run_steps(program, n, steps)), dtype=np.int32)
    data[:, : n * steps] = x_int.reshape(n * steps, -1).T  # sample k, step t -> column k*T + t
    tmp_path = _scratch(data)
    sockets = None
    try:
        sockets = _socket_folder(tmp_path)
        prefix = run_prefix()
        cmd = lava_runtime.command(
            "danet_deploy.simulator.lava",
            str(program_path),
            str(tmp_path / "input.npy"),
            str(tmp_path),
            str(steps),
            prefix,
            str(os.getpid()),
            purpose="a Lava run",
        )
        log = tmp_path / "worker.log"
        with open(log, "w") as err_file, signals_end_the_run():
            proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=err_file,
                text=True,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, "TMPDIR": str(sockets)},
            )
            return _collect(
                proc,
                log,
                program_path,
                program,
                tmp_path,
                prefix,
                n,
                steps,
                on_step,
                stall_timeout,
                guess,
            )
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)
        if sockets is not None and sockets != tmp_path:
            shutil.rmtree(sockets, ignore_errors=True)


SOCKET_PATH_MAX = 107  # bytes in a Unix socket's path (Linux: sun_path, less its NUL)
SOCKET_NAME_ROOM = (
    40  # what multiprocessing adds below its TMPDIR: /pymp-XXXXXXXX/listener-XXXXXXXX
)


def _socket_folder(run_dir: Path) -> Path:
    """The TMPDIR of the worker, where Lava's shared-memory manager (multiprocessing) makes its
    socket: the run's own folder where its path leaves room, else a new private folder in
    /tmp. A longer path fails inside Lava ("AF_UNIX path too long", reported as EOFError), as
    a test's TMPDIR under pytest-xdist did (docs/lava-runtime.md)."""
    if len(os.fsencode(run_dir)) + SOCKET_NAME_ROOM <= SOCKET_PATH_MAX:
        return run_dir
    try:
        return Path(tempfile.mkdtemp(prefix="danet-lava-", dir="/tmp"))
    except OSError as e:
        raise UserError(
            f"TMPDIR ({run_dir.parent}) is too long a path for Lava's sockets, and /tmp cannot "
            f"stand in ({e.strerror or e}): set TMPDIR to a shorter folder"
        ) from None


def _run_steps(program: Program, n: int, steps: int) -> int:
    """The steps of one Lava run of ``n`` samples back to back: then the pipeline drains."""
    return n * steps + program.lowered.latency + 1


def _scratch(data: np.ndarray) -> Path:
    """A new folder in TMPDIR that holds the run's input ``data`` (the worker writes its
    recordings there too); a full or unwritable TMPDIR is one line, and leaves nothing."""
    tmp = None
    try:
        tmp = Path(tempfile.mkdtemp(prefix="danet-lava-"))
        np.save(tmp / "input.npy", data)
    except OSError as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        where = tmp or tempfile.tempdir or "the temporary folder"
        raise UserError(
            f"cannot write the Lava run's input to {where} ({e.strerror or e}): free space there, "
            f"or set TMPDIR to a folder with room"
        ) from None
    return tmp


def _collect(
    proc: subprocess.Popen,
    log: Path,
    program_path: Path,
    program: Program,
    tmp_path: Path,
    prefix: str,
    n: int,
    steps: int,
    on_step: Callable[[], None],
    stall_timeout: float,
    guess: Estimate | None,
) -> dict[str, np.ndarray]:
    """Follow the worker until it finishes, stop its group whatever happens, read the sinks."""
    try:
        for line in _lines(proc, stall_timeout):
            if line.startswith("step "):
                on_step()
        status = proc.wait()
        if (
            status != 0
        ):  # a worker that failed reports its traceback, then ends its own group (SIGKILL)
            err = log.read_text()
            last = [ln for ln in err.strip().splitlines() if ln.strip()][-1:]
            if status < 0 and "Traceback" not in err:
                raise UserError(
                    f"the Lava run of {program_path} failed: its worker (pid {proc.pid}) was killed "
                    f"by {signal.Signals(-status).name}; its processes were stopped"
                )
            raise UserError(
                f"the Lava run of {program_path} failed: {(last or ['(no output)'])[0][:200]}"
            )
    except TimeoutError:
        expected = f"estimated {guess}; " if guess is not None else ""
        raise UserError(
            f"the Lava run of {program_path} stalled: no step finished in {stall_timeout:.0f} s "
            f"({expected}a Lava process failed or hung); its processes were stopped"
        ) from None
    finally:
        _kill_group(proc.pid, prefix)
        proc.wait()
    out = {}
    for name, pop in program.populations.items():
        if pop.kind.is_input:
            continue
        rec = _recording(
            tmp_path / f"{name}.npy",
            (_run_steps(program, n, steps), pop.neurons),
            record_dtype(pop, program.fixed[name]),
            program_path,
        )  # sample k, step t at k*T + t + latency
        idx = np.arange(n)[:, None] * steps + np.arange(steps)[None, :] + pop.latency
        window = rec[idx].transpose(1, 0, 2).astype(np.int64)
        if program.lowered.pipelined and pop.kind.is_readout:  # one sample: what it summed before
            window[0] += rec[: pop.latency].sum(0, dtype=np.int64)
        out[name] = window.reshape(steps, n, *pop.shape)
    return out


def _recording(path: Path, shape: tuple[int, int], dtype: str, program_path: Path) -> np.ndarray:
    """A population's recording, checked as data from another process: the worker must have
    written it, as a ``dtype`` array of ``shape`` (steps x neurons); else one line names it."""
    try:
        rec = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(
            f"the Lava run of {program_path} failed: its worker ended without writing {path.name} "
            f"(a recording of every population)"
        ) from None
    except (OSError, ValueError, EOFError):
        rec = None
    if isinstance(rec, np.ndarray) and rec.shape == shape and rec.dtype == dtype:
        return rec
    found = f"{rec.dtype} {list(rec.shape)}" if isinstance(rec, np.ndarray) else "no array"
    raise UserError(
        f"the Lava run of {program_path} failed: its worker's {path.name} holds {found}, not "
        f"{dtype} {list(shape)} (steps x neurons)"
    )


def _kill_group(pgid: int, prefix: str, timeout: float = 30.0) -> None:
    """End every process of group ``pgid``, remove the run's shared memory (``prefix...``), and
    wait until the processes are gone.

    The group is frozen first (SIGSTOP), so that no process creates a segment after the
    segments are removed; a process that joined the group after it was frozen is dead once the
    group is, so the segments are removed once more then. SIGKILL is delivered asynchronously:
    a process with a large heap can take a while to exit, so the group is watched until none of
    its members is alive. The worker ending its own group (its parent died) only gets to the
    first removal.
    """
    me = os.getpid()
    for pid in group_members(pgid):
        if pid != me:
            _signal(pid, signal.SIGSTOP)
    remove_segments(prefix)
    try:
        os.killpg(pgid, signal.SIGKILL)  # in the worker this ends the worker too
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    remove_segments(prefix)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _watch_parent(parent: int, run_dir: Path, prefix: str) -> None:
    """In the worker: when the parent dies (even by SIGKILL), end the run."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        _end_run(parent, run_dir, prefix)

    threading.Thread(target=watch, daemon=True).start()


def _end_run(parent: int, run_dir: Path, prefix: str) -> None:
    """End this worker's group (Lava's processes, their shared memory, the worker itself);
    when the parent is gone, first remove the run's temporary directory, which it no longer can."""
    if os.getppid() != parent:
        shutil.rmtree(run_dir, ignore_errors=True)
    _kill_group(os.getpgid(0), prefix)


def group_members(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that have not exited yet (zombies excluded), from /proc."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = (
                stat.read_text().rsplit(")", 1)[1].split()
            )  # after "pid (comm)": state ppid pgrp ...
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            live.append(int(stat.parent.name))
    return live


def _main(argv: list[str]) -> None:
    try:
        worker(*argv)
    except BaseException:  # noqa: BLE001 - report, then leave without Lava's hanging teardown
        traceback.print_exc()  # (a parent that died shows here as a broken stdout pipe)
        sys.stderr.flush()
        _end_run(int(argv[-1]), Path(argv[2]), argv[-2])
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    _main(sys.argv[1:])
