"""Hardware profiles: constraints and per-operation energies, each figure with its source.

A profile is a TOML file (``hw_profiles/*.toml`` ships ``loihi2``, ``loihi1`` and
``cmos45``; a user's own file is accepted wherever a name is). Every figure is a
table ``{ value, unit, source, confidence, kind }``; loading rejects unknown keys, missing
figures, wrong units and unknown kinds with an error that names the key. ``kind`` says how the
number was obtained (:data:`KINDS`; docs/compile.md §5); a user's figure without one reads as
:data:`UNSTATED`, stderr saying so once per file.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from .errors import UserError
from .ir.chip_format import LOIHI

CONFIDENCE = ("primary", "secondary", "estimate")
# how a figure was obtained (its ``kind``); reports carry it beside every value they rest on
MEASURED = "measured"
DATASHEET = "datasheet"
PUBLISHED_ESTIMATE = "published-estimate"
OUR_ESTIMATE = "our-estimate"
FITTED = "fitted"
UNSTATED = "unstated"  # a user's figure that does not say; never valid in a file
KINDS = {
    MEASURED: "measured on a chip (e.g. the static power in lava-dl's PilotNet notebook)",
    DATASHEET: "a vendor's or paper's stated specification or figure of the chip",
    PUBLISHED_ESTIMATE: "an estimate published by others (e.g. Horowitz's 45 nm energies, a "
    "pre-silicon simulation)",
    OUR_ESTIMATE: "ours (e.g. a Loihi 1 figure used as a Loihi 2 proxy)",
    FITTED: "fitted by us to a measurement or a chip tool's output",
}
CONSTRAINTS = {
    "cores_per_chip": "count",
    "neurons_per_core": "count",
    "synaptic_memory_per_core": "bits",
    "input_axons_per_core": "count",
    "weight_bits": "bits",
    "state_bits": "bits",
    "decay_bits": "bits",
    "threshold_bits": "bits",
    "bias_mantissa_bits": "bits",
    "graded_spikes": "flag",
    "graded_payload_bits": "bits",
    "max_synaptic_delay": "steps",
    "max_chips": "count",
    "conv_tile_neurons": "count",
    "programmable_neurons": "flag",
    "dense_synmem_per_core": "count",
    "dense_synmem_unit_bits": "bits",
    "dense_synapse_extra_bits": "bits",
}
# the figures of Intel's dense-layer split (compile.py: dense_split_cores), all three or none
DENSE_SPLIT = ("dense_synmem_per_core", "dense_synmem_unit_bits", "dense_synapse_extra_bits")
# per-operation times: the profile's own (the time band's upper bound where it states peak
# times), peak times (the lower bound) and fitted times (the stated figure); docs/accounting.md,
# "Time as a band"
TIMES = ("synaptic_op", "neuron_update", "barrier_sync")
BAND = ("peak", "fitted")
# figures a profile may leave out: without conv_tile_neurons, convolutions are mapped unrolled;
# without programmable_neurons, the chip's neurons reset to zero only (ir/resets.py); without
# the dense-split figures, a dense layer's cores are set by its synapse bits; without peak or
# fitted times, the time band is the profile's own times alone
OPTIONAL = {
    "constraints": ("conv_tile_neurons", "programmable_neurons", *DENSE_SPLIT),
    "timing": tuple(f"{k}_{b}" for b in BAND for k in TIMES),
}
# figures that no mapping or check reads, and why; a profile that states one is read without it,
# and stderr says so once (docs/compile.md §5)
UNREAD = {
    "constraints.output_axons_per_core": "a core's output axons depend on where its neurons' "
    "consumers are placed, which the mapping does not model",
}
ENERGY = {
    "synaptic_op": "pJ",
    "graded_op": "pJ",
    "neuron_update": "pJ",
    "spike_routing": "pJ",
    "mac": "pJ",
    "static_per_chip": "mW",
}
TIMING = {f"{k}{suffix}": "ns" for suffix in ("", *(f"_{b}" for b in BAND)) for k in TIMES}
SECTIONS = {"constraints": CONSTRAINTS, "energy": ENERGY, "timing": TIMING}
REQUIRED = {"chip": ("constraints", "energy", "timing"), "accounting": ("energy",)}
# an accounting profile may say it reproduces a published energy convention: reports then give
# paper_energy_pj (docs/accounting.md, "The papers' SOP convention")
CONVENTIONS = ("paper",)
FIELDS = ("value", "unit", "source", "confidence", "kind")  # of every figure; kind may be left out


@dataclass(frozen=True)
class Figure:
    value: float
    unit: str
    source: str
    confidence: str
    kind: str  # one of KINDS, or UNSTATED

    @property
    def estimate(self) -> bool:
        return self.confidence == "estimate"


@dataclass
class Profile:
    name: str
    kind: str  # "chip" (a compile target) or "accounting" (energy convention only)
    description: str
    path: Path
    constraints: dict[str, Figure] = field(default_factory=dict)
    energy: dict[str, Figure] = field(default_factory=dict)
    timing: dict[str, Figure] = field(default_factory=dict)
    convention: str | None = None  # "paper": a published energy convention (accounting only)

    def limit(self, key: str) -> int:
        return int(self.constraints[key].value)

    def figures(self) -> dict[str, Figure]:
        """Every figure by ``section.key``, in the sections' order."""
        return {f"{sec}.{k}": f for sec in SECTIONS for k, f in getattr(self, sec).items()}

    def estimates(self) -> list[str]:
        """``section.key`` of every figure that is an estimate (reports print these)."""
        return [key for key, f in self.figures().items() if f.estimate]


def _figure(path: Path, key: str, raw: object, unit: str) -> Figure:
    if not isinstance(raw, dict):
        raise UserError(f"{path}: {key} must be a table {{ {', '.join(FIELDS)} }}")
    extra = set(raw) - set(FIELDS)
    if extra:
        raise UserError(f"{path}: {key}: unknown field(s) {', '.join(sorted(extra))}")
    for f in FIELDS[:-1]:  # kind may be left out (read as UNSTATED)
        if f not in raw:
            raise UserError(f"{path}: {key}: missing '{f}'")
    value = raw["value"]
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise UserError(f"{path}: {key}: value must be a finite non-negative number, got {value!r}")
    least = {"count": 1, "flag": 0, "bits": 0, "steps": 0}.get(unit)
    if least is not None and (value != int(value) or value < least or unit == "flag" and value > 1):
        what = {"count": "a whole number of at least 1", "flag": "0 or 1"}.get(
            unit, "a whole number"
        )
        raise UserError(f"{path}: {key}: value must be {what}, got {value!r}")
    if raw["unit"] != unit:
        raise UserError(f"{path}: {key}: unit must be {unit!r}, got {raw['unit']!r}")
    if not str(raw["source"]).strip():
        raise UserError(f"{path}: {key}: source must name where the figure comes from")
    if raw["confidence"] not in CONFIDENCE:
        raise UserError(f"{path}: {key}: confidence must be one of {', '.join(CONFIDENCE)}")
    kind = raw.get("kind", UNSTATED)
    if "kind" in raw and kind not in KINDS:
        raise UserError(f"{path}: {key}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return Figure(float(raw["value"]), unit, str(raw["source"]), raw["confidence"], kind)


_TOLD_UNSTATED: set[Path] = set()  # files already named on stderr by this process


def _note_unstated(prof: Profile) -> None:
    """One stderr line, once per file, for a profile whose figures do not say how they were
    obtained (``compare`` reads the profile once per variant)."""
    keys = [k for k, f in prof.figures().items() if f.kind == UNSTATED]
    if keys and prof.path.resolve() not in _TOLD_UNSTATED:
        _TOLD_UNSTATED.add(prof.path.resolve())
        print(
            f"danet-deploy: {prof.path}: {len(keys)} figure(s) say no kind ({keys[0]}, ...) and "
            f'are reported as kind {UNSTATED!r}; add kind = "..." ({" | ".join(KINDS)}) to each '
            "(docs/compile.md §5)",
            file=sys.stderr,
        )


def _without_unread(path: Path, section: str, table: dict[str, Any]) -> dict[str, Any]:
    """``table`` less the figures no mapping reads (:data:`UNREAD`), each named on stderr."""
    kept = {}
    for key, raw in table.items():
        why = UNREAD.get(f"{section}.{key}")
        if why is None:
            kept[key] = raw
        else:
            print(f"danet-deploy: {path}: {section}.{key} is not used ({why})", file=sys.stderr)
    return kept


def _check_groups(path: Path, prof: Profile) -> None:
    """Figures that only work together come all or none, and the time band is ordered:
    peak <= fitted <= the profile's own time, figure by figure (so every step time is too)."""
    groups = [("constraints", DENSE_SPLIT)]
    groups += [("timing", tuple(f"{k}_{b}" for k in TIMES)) for b in BAND]
    for sec, keys in groups:
        given = [k for k in keys if k in getattr(prof, sec)]
        if given and len(given) < len(keys):
            missing = ", ".join(f"{sec}.{k}" for k in keys if k not in given)
            raise UserError(f"{path}: {missing} missing (they come with {sec}.{given[0]})")
    t = prof.timing
    for k in TIMES:
        chain = [f"{k}_peak", f"{k}_fitted", k]
        values = [(c, t[c].value) for c in chain if c in t]
        for (a, va), (b, vb) in zip(values, values[1:]):
            if va > vb:
                raise UserError(
                    f"{path}: timing.{a} ({va:g} ns) exceeds timing.{b} ({vb:g} ns); the time "
                    f"band needs peak <= fitted <= the profile's own time"
                )


def parse_profile(path: Path) -> Profile:
    """Read and validate one profile file."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise UserError(f"{path}: not a readable TOML profile ({e})") from None
    unknown = set(data) - {"profile", *SECTIONS}
    if unknown:
        raise UserError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}")
    head = data.get("profile", {})
    for key in ("name", "kind", "description"):
        if not isinstance(head.get(key), str):
            raise UserError(f"{path}: profile.{key} is missing")
    if head["kind"] not in REQUIRED:
        raise UserError(f"{path}: profile.kind must be one of {', '.join(REQUIRED)}")
    convention = head.get("convention")
    if convention is not None and (convention not in CONVENTIONS or head["kind"] != "accounting"):
        raise UserError(
            f"{path}: profile.convention must be one of {', '.join(CONVENTIONS)}, "
            "on an accounting profile"
        )
    prof = Profile(
        head["name"], head["kind"], head["description"], Path(path), convention=convention
    )
    for sec, schema in SECTIONS.items():
        table = _without_unread(path, sec, data.get(sec, {}))
        extra = set(table) - set(schema)
        if extra:
            raise UserError(
                f"{path}: unknown key(s) {', '.join(f'{sec}.{k}' for k in sorted(extra))}"
            )
        if sec in REQUIRED[prof.kind]:
            missing = [k for k in schema if k not in table and k not in OPTIONAL.get(sec, ())]
            if missing:
                raise UserError(f"{path}: missing {', '.join(f'{sec}.{k}' for k in missing)}")
        setattr(prof, sec, {k: _figure(path, f"{sec}.{k}", v, schema[k]) for k, v in table.items()})
    _check_groups(path, prof)
    if prof.kind == "chip":
        widths = {k: prof.limit(k) for k in LOIHI.widths()}
        why = LOIHI.refusal(widths, graded=bool(prof.limit("graded_spikes")))
        if why is not None:
            raise UserError(f"{path}: constraints.{why}")
    _note_unstated(prof)
    return prof


def builtin_profiles() -> dict[str, Path]:
    folder = resources.files("danet_deploy.hw_profiles")
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".toml")}


def load_profile(name_or_path: str | Path) -> Profile:
    """A built-in profile by name, or a user's profile file by path."""
    builtin = builtin_profiles()
    if str(name_or_path) in builtin:
        return parse_profile(builtin[str(name_or_path)])
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise UserError(f"profile file not found: {path}")
        return parse_profile(path)
    raise UserError(
        f"unknown profile {name_or_path!r}; valid: {', '.join(sorted(builtin))} or a .toml file"
    )
