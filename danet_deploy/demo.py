"""The embedded default job: the whole pipeline on the 8x8 digits, nothing downloaded."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .chip_tuning import chip_grid
from .outputs import check_artifact_dir, check_output_file
from .pipeline import build_report, export, lava_section, simulate
from .progress import console, fitted
from .report import as_table, table_layouts, write
from .train import TrainOptions, model_name, train


def run_demo(
    outdir: Path, lava_samples: int, profile: str, force: bool = False, **train_kw: Any
) -> dict[str, Any]:
    """train -> export NIR -> compile loihi2-sim -> Lava and fast simulator -> report.

    Every file the demo writes is checked first: an earlier demo's files are replaced,
    anything else in ``outdir`` is refused unless ``force``.
    """
    name = model_name(train_kw["arch"], train_kw["connection"], train_kw.get("framework"))
    ckpt = outdir / f"{name}.pt"
    html, json_path = outdir / "report.html", outdir / "report.json"
    for path, kind in ((ckpt, "checkpoint"), (html, "report"), (json_path, "report")):
        check_output_file(path, kind, force)
    for target in ("nir", "loihi2-sim"):
        check_artifact_dir(outdir / f"{name}.{target}", force)
    outdir.mkdir(parents=True, exist_ok=True)
    console.rule(f"1/5 train {train_kw['arch']} ({train_kw['connection']}) on digits")
    metrics = train(TrainOptions(data="digits", **train_kw), ckpt, force, grid_for=chip_grid)
    console.print(
        f"float test accuracy {metrics['test_accuracy']:.4f} ({metrics['train_seconds']:.0f} s) -> {ckpt}"
    )
    console.rule("2/5 export to NIR and compile for loihi2-sim")
    nir_dir = export(ckpt, "nir", force=force)
    chip_dir = export(ckpt, "loihi2-sim", force=force)
    console.print(f"{nir_dir}/graph.nir; {chip_dir}/program.h5 (+ manifest.json)")
    console.rule(f"3/5 Lava Loihi2SimCfg (fixed point) on {lava_samples} test samples")
    lava = simulate(chip_dir, "digits", backend="lava", samples=lava_samples)
    console.print(
        f"Lava accuracy {lava['accuracy']:.4f}, float {lava['reference_accuracy']:.4f}, "
        f"spike mismatches vs the fast simulator: {lava['spike_mismatches']} ({lava['seconds']:.1f} s)"
    )
    console.rule("4/5 fast simulator (fixed point) on the whole test split")
    fast = simulate(chip_dir, "digits", backend="fast")
    console.print(
        f"fixed-point accuracy {fast['accuracy']:.4f} vs float {fast['reference_accuracy']:.4f} "
        f"on {fast['samples']} samples ({fast['seconds']:.2f} s)"
    )
    console.rule(f"5/5 SOPs and energy per layer ({profile})")
    report = build_report(chip_dir, profile, "digits")
    report["lava"] = lava_section(lava)
    print(
        fitted(lambda columns: as_table(report, columns), table_layouts(report), stream=sys.stderr),
        end="",
        file=sys.stderr,
    )
    write(report, "html", html)
    write(report, "json", json_path)
    console.print(f"[bold]HTML report: {html}[/] (JSON beside it)")
    return {
        "float": fast["reference_accuracy"],
        "fixed": fast["accuracy"],
        "lava": lava["accuracy"],
        "spike_mismatches": lava["spike_mismatches"],
        "report": str(html),
    }
