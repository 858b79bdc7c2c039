"""The ``danet-deploy`` command line (README.md; report keys in docs/accounting.md).

Exit codes: 0 success, 1 user error (one line on stderr naming what is at fault;
``--debug`` shows the traceback), 2 bad usage, 141 the reader of the result left early
(``| head``: nothing is printed, as for a Unix tool that SIGPIPE ends). Ctrl-C while the
command starts ends it at once, silently, as SIGINT does (130 in a shell); once it runs,
click reports ``Aborted!`` (1); SIGTERM and SIGHUP end it with 143 and 129.
"""

from __future__ import annotations

import math
import os
import signal
import sys
from pathlib import Path
from typing import NoReturn

from .signals import interrupt_ends_at_once, signals_end_the_run

with interrupt_ends_at_once():  # importing torch takes seconds: Ctrl-C then prints no traceback
    import click

    from . import __version__
    from .ir.graph import MAX_DT
    from . import lava_runtime
    from .errors import UserError
    from .lava_runtime import LavaDlNeeded
    from .models import CONNECTIONS, FRAMEWORKS, list_archs
    from .progress import as_text, console, fitted

DATA_HELP = (
    "digits | cifar10:PATH | cifar100:PATH | imagefolder:PATH | tensor:PATH | nmnist:PATH | dvsgesture:PATH | "
    "cifar10dvs:PATH | shd:PATH. Event data: PATH is tonic's save_to folder; recordings are framed into "
    "the model's -T steps (equal time bins; add ?window=US or ?events=N) and cached (docs/events.md)."
)

DEFAULT_ARCH, DEFAULT_CONNECTION = "digits_resnet", "da"


class _Group(click.Group):
    """Turns UserError into a one-line message and exit code 1 (tracebacks only with --debug);
    SIGTERM and SIGHUP end a command as Ctrl-C does, so nothing half written stays behind."""

    def main(self, args=None, *rest, **kw):  # type: ignore[override]
        self.argv = list(sys.argv[1:] if args is None else args)  # for a rerun in the Lava runtime
        return super().main(args, *rest, **kw)

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            with signals_end_the_run():
                try:
                    return super().invoke(ctx)
                except (
                    LavaDlNeeded
                ) as e:  # lava-dl is only in the runtime: the command runs there, whole
                    why = f"danet-deploy {ctx.invoked_subcommand} with a lava-dl network"
                    sys.exit(lava_runtime.rerun(self.argv, why=why, results=e.results))
        except UserError as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"danet-deploy: error: {e}", err=True)
            sys.exit(1)


def reader_gone() -> NoReturn:
    """End quietly with SIGPIPE's status (128 + 13): the reader of stdout left early (``| head
    -1``), which is normal use. Stdout goes to /dev/null first, so that what is still buffered
    is not written again, and fails again, when Python exits."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    sys.exit(128 + signal.SIGPIPE)


def emit(text: str) -> None:
    """Write a command's result to stdout, or fail in one line when it cannot be written (a
    reader that left early ends the command quietly: :func:`reader_gone`)."""
    if sys.stdout is None:
        raise UserError(
            "standard output is closed: the result has nowhere to go; write it with -o FILE"
        )
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        reader_gone()
    except OSError as e:
        sys.stdout = None  # nothing more can be written there (not even at exit)
        raise UserError(
            f"cannot write the result to standard output ({e.strerror or e}); write it with -o FILE"
        ) from None


class Finite(click.ParamType):
    """A finite number in ``(low, high]`` (click's FloatRange lets NaN through)."""

    name = "number"

    def __init__(self, low: float, high: float, what: str) -> None:
        self.low, self.high, self.what = low, high, what

    def convert(self, value, param, ctx) -> float:
        try:
            v = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not (math.isfinite(v) and self.low < v <= self.high):
            self.fail(
                f"{value}: {self.what} must be a finite number above {self.low:g} and at most "
                f"{self.high:g}",
                param,
                ctx,
            )
        return v


TIME_STEP = Finite(0.0, MAX_DT, "a time step in seconds")


class Steps(click.IntRange):
    """A number of time steps (``-T``): at least 1, and no more than any command runs, refused
    in one line (exit 1) like the steps a graph records: every limit on time steps applies to
    every command (``data.check_timesteps``). Raised while the command line is parsed, so
    before any work."""

    def __init__(self) -> None:
        super().__init__(1)

    def convert(self, value, param, ctx) -> int:
        from .data import check_timesteps

        steps = super().convert(value, param, ctx)
        check_timesteps(steps, "use fewer time steps (-T)")
        return steps


class ModelArgument(click.Path):
    """MODEL: an existing file or directory, or ``package.module:factory`` (a PyTorch module,
    docs/nir.md), which is no path."""

    def __init__(self) -> None:
        super().__init__(exists=True)

    def convert(self, value, param, ctx):
        from .frontends.module_spec import is_module_spec

        return value if is_module_spec(value) else super().convert(value, param, ctx)


def dt_option(help_text: str):
    """``--dt`` for commands that read NIR neuron constants."""
    return click.option("--dt", type=TIME_STEP, help=help_text)


def convention_options(f):
    """``--reset`` and ``--discretisation`` for commands that read a .nir MODEL: conventions
    NIR 1.0.8 does not record (docs/nir.md)."""
    from .ir.graph import DISCRETISATIONS, RESETS

    f = click.option(
        "--discretisation",
        type=click.Choice(list(DISCRETISATIONS)),
        help="How a .nir MODEL's time constants become per-step decays [default: the file's, "
        "else euler]. " + "; ".join(f"{k}: {v}" for k, v in DISCRETISATIONS.items()) + ".",
    )(f)
    return click.option(
        "--reset",
        type=click.Choice(list(RESETS)),
        help="How a .nir MODEL's neurons reset [default: the file's, else zero]. "
        + "; ".join(f"{k}: {v}" for k, v in RESETS.items())
        + ". Loihi targets compile zero and spikingjelly (docs/nir.md).",
    )(f)


def keep_input_option(f):
    """``--keep-input-neurons`` for commands that read a netx file as MODEL."""
    return click.option(
        "--keep-input-neurons",
        is_flag=True,
        help="netx MODEL: keep the neurons of its input layer (slayer.block.cuba.Input); by "
        "default they are skipped, as lava-dl's examples deploy it (skip_layers=1).",
    )(f)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(__version__, prog_name="danet-deploy")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Deploy deep spiking residual networks (DANets) to neuromorphic hardware.

    Pipeline: train -> export (NIR) -> compile (Lava / Loihi) -> simulate -> report.
    Start with `danet-deploy demo`.
    """
    ctx.obj = {"debug": debug}


def _train_options(f):
    """Options shared by `train` and `demo`."""
    archs = list_archs()
    f = click.option(
        "--arch",
        default=DEFAULT_ARCH,
        show_default=True,
        type=click.Choice(list(archs)),
        help="Architecture (listed below; docs/danets.md describes each).",
    )(f)
    f = click.option(
        "--connection",
        default=DEFAULT_CONNECTION,
        show_default=True,
        type=click.Choice(CONNECTIONS),
        help="Residual connection type (listed below; docs/danets.md explains each).",
    )(f)
    f = click.option(
        "--timesteps",
        "-T",
        default=4,
        show_default=True,
        type=Steps(),
        help="Time steps per sample (direct encoding of static inputs).",
    )(f)
    f = click.option(
        "--epochs",
        default=30,
        show_default=True,
        type=click.IntRange(1),
        help="Training epochs (before the --chip-epochs).",
    )(f)
    f = click.option(
        "--batch-size",
        default=64,
        show_default=True,
        type=click.IntRange(1),
        help="Global batch size (split across DDP processes under torchrun).",
    )(f)
    f = click.option(
        "--lr",
        default=5e-3,
        show_default=True,
        type=Finite(0.0, 10.0, "the learning rate"),
        help="AdamW learning rate.",
    )(f)
    f = click.option(
        "--device",
        default="auto",
        show_default=True,
        type=click.Choice(["auto", "cpu", "cuda"]),
        help="Where to train (auto: CUDA when there is a GPU).",
    )(f)
    f = click.option(
        "--seed",
        default=0,
        show_default=True,
        type=int,
        help="Seed of the weights, the batch order and the augmentation.",
    )(f)
    f = click.option(
        "--framework",
        type=click.Choice(list(FRAMEWORKS)),
        help="Neuron and surrogate gradient: snntorch = snnTorch Leaky (reset to zero); lava-dl = "
        "slayer's CUBA neuron, Loihi's own (docs/lava-dl.md) [default: snntorch, or the "
        "framework of the --resume checkpoint].",
    )(f)
    f = click.option(
        "--chip-epochs",
        type=click.IntRange(0),
        default=None,
        help="Epochs after --epochs with the weights on the chip's 8-bit grid (BatchNorm frozen), "
        "so that the float evaluation is the program's network. Default: 5 for lava-dl, "
        "0 for snntorch.",
    )(f)
    return f


@main.command()
@_train_options
@click.option("--data", default="digits", show_default=True, help=DATA_HELP)
@click.option("--amp", is_flag=True, help="Mixed precision (CUDA only).")
@click.option(
    "--workers", default=0, show_default=True, type=click.IntRange(0), help="Data-loader workers."
)
@click.option("--learn-beta", is_flag=True, help="Learn each layer's membrane decay.")
@click.option("--resume", type=click.Path(dir_okay=False), help="Continue from this checkpoint.")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="Checkpoint to write (an existing file is replaced only when it is a danet-deploy checkpoint).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Overwrite --output even when it is not a danet-deploy checkpoint.",
)
def train(output: str, force: bool, **kw) -> None:
    """Train a spiking network with surrogate gradients and write a checkpoint.

    \b
    Multi-GPU: torchrun --nproc_per_node=N -m danet_deploy train ...
    Documentation: docs/danets.md (connection types and architectures) in the project.
    """
    from .chip_tuning import chip_grid
    from .train import TrainOptions, train as run_training

    metrics = run_training(TrainOptions(**kw), Path(output), force, grid_for=chip_grid)
    console.print(f"wrote {output}: test accuracy {metrics['test_accuracy']:.4f}")


CONNECTION_HELP = {
    "plain": "no shortcut (VGG-like chain)",
    "aa": "activation after addition: spikes of the branch and the shortcut summed into one neuron",
    "sew": "spike-element-wise ADD (SEW-ResNet): integer spikes 0, 1, 2 on the shortcut",
    "sew-and": "spike-element-wise AND gate",
    "sew-iand": "spike-element-wise IAND gate (NOT branch AND shortcut)",
    "ms": "membrane shortcut (MS-ResNet): real-valued currents on the shortcut",
    "pa": "full pre-activation (BN -> SN -> conv): real-valued currents",
    "da": "densely additive (DANet): every earlier producer summed into each layer's input",
}


def _listing() -> str:
    """Connection types and architectures one per line, for --help (no rewrapping: \\b)."""
    conns = "".join(f"\n      {name:<9} {CONNECTION_HELP.get(name, '')}" for name in CONNECTIONS)
    archs = "".join(
        f"\n      {name:<16} {', '.join(spec.connections)}" for name, spec in list_archs().items()
    )
    return (
        f"\n\n    \b\n    Connection types:{conns}\n\n    \b\n    Architectures (and their connection types):"
        f"{archs}"
    )


train.help = (train.help or "") + _listing()


@main.command()
@_train_options
@click.option(
    "-o",
    "--outdir",
    default="runs/demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the demo writes its files.",
)
@click.option(
    "--lava-samples",
    default=20,
    show_default=True,
    type=click.IntRange(1),
    help="Test samples run in Lava (slow); the fast simulator runs all of them.",
)
@click.option(
    "--profile", "-p", default="loihi2", show_default=True, help="Profile for the energy table."
)
@click.option(
    "--force", is_flag=True, help="Overwrite files in --outdir that danet-deploy did not write."
)
def demo(outdir: str, lava_samples: int, profile: str, force: bool, **kw) -> None:
    """The embedded default job on the 8x8 digits (nothing is downloaded).

    Trains the digits DANet, exports it to NIR, compiles it for loihi2-sim, runs
    Lava on a few test samples and the fast simulator on all of them, prints the
    accuracy parity and the per-layer SOP/energy table, and writes an HTML report.
    """
    from .demo import run_demo

    kw["framework"] = kw["framework"] or "snntorch"
    lava_runtime.python("the demo's Lava step")
    run_demo(Path(outdir), lava_samples, profile, force, **kw)


def compile_options(f):
    """The options that decide how a MODEL compiles, for `export` and `check` alike: profile,
    lowering, calibration data, conventions and a package.module:factory MODEL's inputs."""
    options = [
        click.option(
            "--profile", "-p", help="Hardware profile name or .toml file [default: the target's]."
        ),
        click.option(
            "--lowering",
            default="auto",
            show_default=True,
            type=click.Choice(["auto", "expand", "relay"]),
            help="How real-valued streams (ms, pa, da) reach the chip: expand = direct synapses "
            "from every spiking layer; relay = graded relay neurons; auto = expand if it fits the "
            "profile.",
        ),
        click.option(
            "--data", help="Calibration data for quantisation [default: the checkpoint's dataset]."
        ),
        click.option(
            "--calibration-samples",
            default=32,
            show_default=True,
            type=click.IntRange(1),
            help="Training samples the float model runs to set each layer's fixed-point scale.",
        ),
        dt_option(
            "Time step in seconds for NIR neuron constants [default: the file's, else 1e-4]; "
            "export writes it into its graph.nir."
        ),
        keep_input_option,
        convention_options,
        click.option(
            "--weights",
            type=click.Path(exists=True, dir_okay=False),
            help="package.module:factory MODEL: a state_dict to load into the module "
            "(weights_only=True).",
        ),
        click.option(
            "--input-shape", help="package.module:factory MODEL: one sample's shape, e.g. 3,32,32."
        ),
        click.option(
            "--timesteps",
            "-T",
            type=Steps(),
            help="package.module:factory MODEL: time steps per sample, recorded in its graph.nir.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@main.command()
@click.argument("model", type=ModelArgument())
@click.option(
    "--target",
    "-t",
    default="nir",
    show_default=True,
    type=click.Choice(["nir", "loihi2-sim", "loihi2", "loihi1"]),
    help="nir: graph.nir only; loihi2-sim / loihi2 / loihi1: also compile to the chip's fixed point.",
)
@click.option(
    "-o",
    "--outdir",
    type=click.Path(file_okay=False),
    help="Output directory [default: <model stem>.<target>/ next to MODEL; <stem>.nir.d/ for a .nir "
    "MODEL exported to nir].",
)
@click.option(
    "--force",
    is_flag=True,
    help="Write into a non-empty OUTDIR that danet-deploy did not create "
    "(only its own files are written; nothing is deleted).",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Fail, instead of warning, where a layer's weight error is "
    "above the bound of docs/compile.md §3.",
)
@compile_options
def export(
    model: str,
    target: str,
    outdir: str | None,
    dt: float | None,
    profile: str | None,
    lowering: str,
    data: str | None,
    calibration_samples: int,
    force: bool,
    strict: bool,
    keep_input_neurons: bool,
    reset: str | None,
    discretisation: str | None,
    weights: str | None,
    input_shape: str | None,
    timesteps: int | None,
) -> None:
    """Export MODEL (a checkpoint from `train`, a .nir file, a lava-dl netx file, or a PyTorch
    module as package.module:factory, docs/nir.md) for TARGET.

    A netx file (.net/.h5, what slayer's export_hdf5 writes) already holds Loihi's
    integers: it is compiled exactly, without calibration (docs/lava-dl.md).

    \b
    OUTDIR/graph.nir      BatchNorm folded, residual sums as NIR fan-in edges
    OUTDIR/manifest.json  time steps, latency, lowering, layers, quantisation, core mapping
    OUTDIR/program.h5     (Loihi targets) the quantised program the simulators run
    OUTDIR/netx.h5        (Loihi targets, sequential graphs) for lava-dl's netx loader

    OUTDIR may be new, empty or an earlier export (its files are replaced, anything
    else in it is kept). A non-empty directory that is not an export, the current
    directory, the home directory and / are refused. See docs/compile.md.
    """
    from .pipeline import export as run_export

    out = run_export(
        Path(model),
        target,
        Path(outdir) if outdir else None,
        dt,
        profile,
        lowering,
        data,
        calibration_samples,
        force,
        keep_input_neurons,
        reset,
        discretisation,
        strict=strict,
        module={"weights": weights, "input_shape": input_shape, "timesteps": timesteps},
    )
    import json

    m = json.loads((out / "manifest.json").read_text())
    console.print(f"wrote {out}/ ({', '.join(m['files'])})")
    if target != "nir":
        cm = m["core_mapping"]
        console.print(
            f"{m['profile']}: {m['lowering']} lowering, {cm['neurons']:,} neurons, "
            f"{cm['synapses']:,} synapses, {cm['cores']} cores on {cm['chips']} chip(s), "
            f"pipeline latency {m['pipeline_latency']} steps"
        )


@main.command()
@click.argument("model", type=ModelArgument())
@click.option(
    "--target",
    "-t",
    default="loihi2-sim",
    show_default=True,
    type=click.Choice(["loihi2-sim", "loihi2", "loihi1"]),
    help="The chip `export --target` would compile MODEL for.",
)
@compile_options
@click.option(
    "--format",
    "fmt",
    default="table",
    show_default=True,
    type=click.Choice(["table", "json"]),
    help="table: one row per problem (layer/node, problem, limit/value, what to do); json: for "
    "scripts (keys in docs/compile.md, 'check').",
)
@click.pass_context
def check(
    ctx: click.Context,
    model: str,
    fmt: str,
    weights: str | None,
    input_shape: str | None,
    timesteps: int | None,
    **kw,
) -> None:
    """List every problem that `export MODEL --target TARGET` would hit, in one pass: unsupported
    NIR nodes and shapes, conventions the chip cannot run (resets, thresholds), limits exceeded
    (synapses per compartment, delays, chips), weight errors above the bound of docs/compile.md
    §3 (export's warnings, --strict's errors), each with its layer or node and what to do.
    Where problems leave nothing for later checks (an unsupported node: the graph cannot be
    lowered), the rest of the graph is still checked and the line under the table says which
    checks were skipped and why. Nothing is written.

    Exit status: 0 and one line "no problems"; 1 with the problems on stdout; 1 with a one-line
    error on stderr where MODEL, the profile or the data cannot be read. See docs/compile.md.
    """
    import json

    from .pipeline import check as run_check
    from .problems import as_json, as_table, summary

    module = {"weights": weights, "input_shape": input_shape, "timesteps": timesteps}
    found = run_check(Path(model), module=module, **kw)
    if fmt == "json":
        emit(json.dumps(as_json(found), indent=2) + "\n")
    elif found.found:
        emit(fitted(lambda columns: as_table(found), [()]) + summary(found) + "\n")
    else:
        emit(summary(found) + "\n")
    ctx.exit(1 if found.found else 0)


@main.command()
def profiles() -> None:
    """List the built-in hardware profiles (a .toml file of your own works wherever a name does)."""
    from rich.table import Table

    from .profiles import builtin_profiles, load_profile

    table = Table("profile", "kind", "description", "estimated figures")
    for name in sorted(builtin_profiles()):
        p = load_profile(name)
        kind = p.kind + (f" ({p.convention} convention)" if p.convention else "")
        table.add_row(name, kind, p.description, str(len(p.estimates())))
    emit(fitted(lambda columns: table, [()]))


@main.command()
@click.argument("artifact", type=click.Path(exists=True))
@click.option("--data", default="digits", show_default=True, help=DATA_HELP)
@click.option(
    "--backend",
    default="fast",
    show_default=True,
    type=click.Choice(["fast", "lava"]),
    help="fast: batched PyTorch (see --mode); lava: Lava Loihi2SimCfg, bit-accurate, checked "
    "against fast.",
)
@click.option(
    "--mode",
    type=click.Choice(["fixed", "float"]),
    help="fixed: the fixed-point program (compiled first where ARTIFACT has none); float: the graph "
    "in float [default: fixed for compiled exports and netx files, which hold the chip's "
    "integers; float for checkpoints and NIR graphs].",
)
@click.option(
    "--device",
    default="cpu",
    show_default=True,
    type=click.Choice(["auto", "cpu", "cuda"]),
    help="Where the fast backend runs.",
)
@click.option(
    "--samples", "-n", type=click.IntRange(1), help="Use the first N samples [default: all]."
)
@click.option(
    "--timesteps",
    "-T",
    type=Steps(),
    help="Steps for static data when the graph does not record them.",
)
@dt_option(
    "Time step in seconds for a .nir MODEL's neuron constants [default: the file's, else 1e-4]."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@click.option(
    "--save-outputs",
    "save_outputs_to",
    type=click.Path(dir_okay=False),
    help="Write each sample's output summed over time steps, in the float model's units (spike "
    "counts of a spiking output), to this torch file: outputs [N, classes], labels, predictions "
    "(fast backend).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Overwrite --save-outputs even when danet-deploy did not write it; "
    "run --backend lava even when its estimated time or memory is over the bound "
    "(docs/lava-runtime.md).",
)
@keep_input_option
@convention_options
def simulate(artifact: str, as_json: bool, **kw) -> None:
    """Simulate ARTIFACT (checkpoint, .nir file, netx file or export directory) on a dataset.

    Prints the accuracy and the float model's accuracy on the same samples
    (`reference_accuracy`). Labels are compared with the arg-max of the output
    summed over time steps (spike counts for spiking outputs). With --backend lava,
    `spike_mismatches` counts values that differ from the fast backend (0 = bit-exact).
    """
    import json

    from .pipeline import simulate as run_simulation

    if kw["backend"] == "lava":
        lava_runtime.python("simulate --backend lava")
    result = run_simulation(Path(artifact), show_progress=not as_json, **kw)
    if as_json:
        emit(json.dumps(result, sort_keys=True) + "\n")
        return
    line = (
        f"{result['backend']} ({result['mode']}): accuracy {result['accuracy']:.4f} on {result['samples']} "
        f"samples; float model {result['reference_accuracy']:.4f}"
    )
    if "spike_mismatches" in result:
        line += (
            f"; spike mismatches vs fast: {result['spike_mismatches']} of {result['nonzero_values']:,} "
            f"nonzero values"
        )
    console.print(line + f" ({result['seconds']:.1f} s)")


output_option = click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Write to this file instead of stdout "
    "(an existing file is replaced only when danet-deploy wrote it).",
)  # report, compare and diff


def output_format(fmt: str | None, output: str | None, by_extension: tuple[str, ...]) -> str:
    """``--format``, else the format ``-o``'s extension names (one of ``by_extension``), else
    ``table``: `report -o r.html` wrote a text table that a browser shows as one long line."""
    if fmt is not None:
        return fmt
    suffix = Path(output).suffix.lower().lstrip(".") if output else ""
    return suffix if suffix in by_extension else "table"


@main.command()
@click.argument("artifact", type=click.Path(exists=True))
@click.option(
    "--profile",
    "-p",
    default="loihi2",
    show_default=True,
    help="Hardware profile (loihi2, loihi1, cmos45) or a .toml file.",
)
@click.option("--data", default="digits", show_default=True, help=DATA_HELP)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv", "html", "neurobench"]),
    help="table: for people (the main columns; all with --wide, in a pipe or a file); json, csv: every "
    "figure; html: a self-contained page; neurobench: NeuroBench's metrics of the deployed network "
    "as its Benchmark.run() returns them (docs/accounting.md). [default: the one -o's extension "
    "names (.json, .csv, .html), else table]",
)
@click.option("--wide", is_flag=True, help="Table: every column, however wide the terminal.")
@output_option
@click.option(
    "--force",
    is_flag=True,
    help="Overwrite --output even when danet-deploy did not write it; run "
    "--lava-samples even when its estimated time or memory is over the bound.",
)
@click.option(
    "--samples", "-n", type=click.IntRange(1), help="Use the first N samples [default: all]."
)
@click.option(
    "--device",
    default="cpu",
    show_default=True,
    type=click.Choice(["auto", "cpu", "cuda"]),
    help="Where the fast simulator counts.",
)
@click.option(
    "--static-power",
    default="cores",
    show_default=True,
    type=click.Choice(["cores", "chip", "off"]),
    help="Static energy charged to the network: cores = chip static power x cores used / cores per "
    "chip; chip = every chip touched, whole; off = none (see docs/accounting.md).",
)
@click.option(
    "--lava-samples",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Also run the first N samples in Lava and report its accuracy and spike mismatches.",
)
@dt_option(
    "Time step in seconds for a .nir MODEL's neuron constants [default: the file's, else 1e-4]."
)
@keep_input_option
@convention_options
def report(
    artifact: str,
    profile: str,
    data: str,
    fmt: str | None,
    wide: bool,
    output: str | None,
    force: bool,
    samples: int | None,
    device: str,
    static_power: str,
    lava_samples: int,
    keep_input_neurons: bool,
    dt: float | None,
    reset: str | None,
    discretisation: str | None,
) -> None:
    """Per-layer SOPs, MACs, spikes, neuron updates, synapses, cores and energy.

    ARTIFACT is a checkpoint, a .nir or netx file or an export directory; anything not yet
    compiled is compiled first. Counts are per inference, averaged over the samples;
    energy is split into dynamic (per-operation figures of PROFILE) and static (static
    power x estimated inference time); estimates are listed in the report. Conventions:
    docs/accounting.md. For large datasets run it under torchrun (e.g. `torchrun
    --nproc_per_node 4 -m danet_deploy report ...`): each process counts a share, the
    counts are summed.
    """
    from .outputs import check_output_file
    from .pipeline import build_report
    from .report import (
        as_core_table,
        as_neurobench_table,
        as_table,
        table_layouts,
        render,
        write,
    )

    fmt = output_format(fmt, output, ("json", "csv", "html"))
    if output:
        check_output_file(Path(output), "report", force)
    if lava_samples:
        lava_runtime.python("report --lava-samples")
    rep = build_report(
        Path(artifact),
        profile,
        data,
        samples,
        device,
        show_progress=output is not None or fmt == "table",
        static_power=static_power,
        lava_samples=lava_samples,
        keep_input_neurons=keep_input_neurons,
        dt=dt,
        reset=reset,
        discretisation=discretisation,
        force=force,
    )
    if (
        int(os.environ.get("RANK", "0")) != 0
    ):  # under torchrun rank 0 alone writes the summed report
        return
    if output:
        write(rep, fmt, Path(output))
        console.print(f"wrote {output}")
    elif fmt == "table":
        emit(fitted(lambda columns: as_table(rep, columns), table_layouts(rep), wide))
        for extra in (as_core_table(rep), as_neurobench_table(rep)):
            if extra is not None:
                emit(as_text(extra))
    else:
        emit(render(rep, fmt))


@main.command()
@click.option(
    "--arch",
    default=DEFAULT_ARCH,
    show_default=True,
    type=click.Choice(list(list_archs())),
    help="Architecture every variant is built from (see `train --help`).",
)
@click.option(
    "--connections",
    default="plain,aa,sew,ms,pa,da",
    show_default=True,
    help="Comma-separated connection types, each once (see `train --help`).",
)
@click.option(
    "--profile",
    "-p",
    default="loihi2",
    show_default=True,
    help="Hardware profile for the energy figures (loihi2, loihi1, cmos45) or a .toml file.",
)
@click.option(
    "--data",
    default="digits",
    show_default=True,
    help="Dataset to train and account on: " + DATA_HELP,
)
@click.option(
    "--epochs",
    default=12,
    show_default=True,
    type=click.IntRange(1),
    help="Epochs for variants that have no checkpoint in --models-dir yet.",
)
@click.option(
    "-T",
    "--timesteps",
    default=4,
    show_default=True,
    type=Steps(),
    help="Time steps of the variants trained here (event data is framed into them); a checkpoint "
    "reused from --models-dir keeps its own.",
)
@click.option(
    "--batch-size",
    default=64,
    show_default=True,
    type=click.IntRange(1),
    help="Training batch of the variants trained here.",
)
@click.option(
    "--models-dir",
    default="runs/compare",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Checkpoints <arch>_<connection>.pt (lava-dl: <arch>_<connection>_lava-dl.pt) are reused "
    "from (and written to) here.",
)
@click.option(
    "--framework",
    default="snntorch",
    show_default=True,
    type=click.Choice(list(FRAMEWORKS)),
    help="Train the variants with snnTorch's LIF or lava-dl slayer's CUBA neuron.",
)
@click.option(
    "--samples", "-n", type=click.IntRange(1), help="Evaluate the first N samples [default: all]."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "html"]),
    help="table: for people (the main columns; all with --wide, in a pipe or a file); json: every "
    "figure; html: a self-contained page. [default: the one -o's extension names (.json, .html), "
    "else table]",
)
@click.option("--wide", is_flag=True, help="Table: every column, however wide the terminal.")
@output_option
@click.option(
    "--static-power",
    default="cores",
    show_default=True,
    type=click.Choice(["cores", "chip", "off"]),
    help="Static energy attribution (see `report --help`).",
)
@click.option(
    "--rank-by",
    default="dynamic",
    show_default=True,
    type=click.Choice(["dynamic", "sops", "paper_sops"]),
    help="Rank the rows by dynamic energy per inference (rank (dynamic)), by exact SOPs or by SOPs "
    "as the papers count them (fr x T x FLOPs, docs/accounting.md): the HTML page sorts by it; "
    "rank (dynamic) is always given.",
)
@click.option("--force", is_flag=True, help="Overwrite outputs that danet-deploy did not write.")
def compare(
    arch: str,
    connections: str,
    profile: str,
    data: str,
    epochs: int,
    timesteps: int,
    batch_size: int,
    models_dir: str,
    framework: str,
    samples: int | None,
    fmt: str | None,
    wide: bool,
    output: str | None,
    static_power: str,
    rank_by: str,
    force: bool,
) -> None:
    """Accuracy, SOPs, MACs, energy, synapse memory and cores per connection type, side by side.

    Each variant is trained once (or loaded from --models-dir), compiled for
    loihi2-sim and accounted on --data. A graph with sums of three or more streams
    (ms, pa, da in deeper architectures) gets two rows, expand and relay lowering:
    the trade-off between synapses and graded messages. Rows are ranked by dynamic
    energy per inference (`rank (dynamic)`), static energy beside it, and with
    --rank-by also by exact SOPs or by the papers' SOPs.
    """
    import json

    from .account import has_timing_model
    from .outputs import TAGS, check_output_file
    from .pipeline import compare as run_compare
    from .profiles import load_profile
    from .provenance import compare_provenance, provenance
    from .report import compare_layouts, compare_table, write_text
    from .report_html import compare_page

    fmt = output_format(fmt, output, ("json", "html"))
    conns = [c.strip() for c in connections.split(",") if c.strip()]
    bad = [c for c in conns if c not in CONNECTIONS]
    if bad or not conns:
        raise click.BadParameter(
            f"{', '.join(bad) or 'no connection type given'}; valid: {', '.join(CONNECTIONS)}",
            param_hint="--connections",
        )
    twice = sorted({c for c in conns if conns.count(c) > 1})
    if twice:
        raise click.BadParameter(
            f"{', '.join(twice)} given more than once", param_hint="--connections"
        )
    if output:
        check_output_file(Path(output), "comparison", force)
    rows = run_compare(
        arch,
        conns,
        profile,
        data,
        Path(models_dir),
        epochs,
        samples,
        static_power=static_power,
        force=force,
        framework=framework,
        timesteps=timesteps,
        batch_size=batch_size,
        rank_by=rank_by,
    )
    title = f"{arch} on {data}: connection types on {profile}" + (
        f" ({framework})" if framework != "snntorch" else ""
    )
    prof = load_profile(profile)  # how the energy columns were obtained, as each report says
    prov = compare_provenance(provenance(prof, static_power, has_timing_model(prof)))
    if fmt == "json":
        text = (
            json.dumps(
                {"format": TAGS["comparison"], "title": title, "rows": rows, "provenance": prov},
                indent=2,
            )
            + "\n"
        )
    elif fmt == "html":
        text = compare_page(rows, title, prov)
    else:
        text = None
    if output:
        write_text(
            Path(output),
            text if text is not None else compare_table(rows, title, prov),
            "comparison",
        )
        console.print(f"wrote {output}")
    else:
        emit(
            text
            if text is not None
            else fitted(
                lambda columns: compare_table(rows, title, prov, columns),
                compare_layouts(rows),
                wide,
            )
        )


@main.command("diff")
@click.argument("a", type=click.Path(exists=True))
@click.argument("b", type=click.Path(exists=True))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "html"]),
    help="table: for people; json: every difference; html: a self-contained page. [default: the "
    "one -o's extension names (.json, .html), else table]",
)
@output_option
@click.option(
    "--force", is_flag=True, help="Overwrite --output even when danet-deploy did not write it."
)
def diff_command(a: str, b: str, fmt: str | None, output: str | None, force: bool) -> None:
    """Compare two exports (OUTDIRs of `export`) or two report JSON files, layer by layer.

    Exports: layers added or removed, kind, shape and connections changed, quantised weights
    changed (program.h5: per synapse group how many, the largest change), fixed-point
    parameters and cores. Reports: structure, cores, SOPs, spikes and energy per layer and in
    total. Both: which inputs differ (model, data, profile, tool: the hashes each records) and
    the settings that differ. Largest changes first. Exits 0 whether or not they differ (the
    JSON's `identical` says which); 1 when A and B are not two of one kind.
    """
    import json

    from .diff import diff, diff_text
    from .outputs import check_output_file, text_footer
    from .report import write_text
    from .report_html import diff_page

    fmt = output_format(fmt, output, ("json", "html"))
    if output:
        check_output_file(Path(output), "diff", force)
    d = diff(Path(a), Path(b))
    if fmt == "json":
        text = json.dumps(d, indent=2, sort_keys=True) + "\n"
    elif fmt == "html":
        text = diff_page(d)
    else:  # a table written to a file ends with the line that tags it as ours
        text = diff_text(d) + (text_footer("diff") + "\n" if output else "")
    if output:
        write_text(Path(output), text, "diff")
        console.print(f"wrote {output}")
    else:
        emit(text)


@main.group("lava-runtime")
def lava_runtime_group() -> None:
    """The Lava runtime: the Python 3.10 environment where Lava and lava-dl run.

    \b
    Intel archived Lava; lava-nc 0.10.0 and lava-dl 0.6.0 need Python 3.10, torch 2.3 and
    numpy < 2. The rest of danet-deploy runs on current releases, and runs Lava and lava-dl
    in this separate environment when a command needs them (simulate --backend lava,
    report --lava-samples, the demo, --framework lava-dl). Where it is looked for: the
    DANET_DEPLOY_LAVA_RUNTIME environment variable (a folder or its Python), else
    <this environment>/lava-runtime. Documentation: docs/lava-runtime.md.
    """


@lava_runtime_group.command("setup")
@click.option(
    "--python",
    "python_exe",
    help="The Python 3.10 to build it with [default: found on PATH, "
    "pyenv, uv or the usual places].",
)
def lava_runtime_setup(python_exe: str | None) -> None:
    """Build the Lava runtime (or check that it is up to date)."""
    lava_runtime.setup(lava_runtime.location(), python_exe, console.print)


@lava_runtime_group.command("show")
def lava_runtime_show() -> None:
    """Where the Lava runtime is and whether it matches; exit 1 when it is missing or differs."""
    exe = lava_runtime.python("danet-deploy lava-runtime show")
    emit(f"Lava runtime: {exe}" + (" (this interpreter)" if exe == sys.executable else "") + "\n")


@lava_runtime_group.command(
    "run", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False}
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def lava_runtime_run(args: tuple[str, ...]) -> None:
    """Run `python -m MODULE ARGS...` in the runtime, with this danet-deploy importable.

    \b
    Example: danet-deploy lava-runtime run pytest -m lava_runtime tests
    """
    if not args:
        raise click.UsageError(
            "name the module to run, e.g. `danet-deploy lava-runtime run pytest`"
        )
    proc_cmd = lava_runtime.command(args[0], *args[1:], purpose="danet-deploy lava-runtime run")
    sys.exit(lava_runtime.run_child(proc_cmd))


if __name__ == "__main__":
    main()
