"""The embedded default job: the whole pipeline on the 8x8 digits, nothing downloaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .export import export
from .progress import console, print_wide
from .report import as_table, build_report, write
from .simulate import simulate
from .train import TrainOptions, train


def run_demo(outdir: Path, lava_samples: int, profile: str, **train_kw: Any) -> dict[str, Any]:
    """train -> export NIR -> compile loihi2-sim -> Lava and fast simulator -> report."""
    outdir.mkdir(parents=True, exist_ok=True)
    name = f"{train_kw['arch']}_{train_kw['connection']}"
    ckpt = outdir / f"{name}.pt"
    console.rule(f"1/5 train {train_kw['arch']} ({train_kw['connection']}) on digits")
    metrics = train(TrainOptions(data="digits", **train_kw), ckpt)
    console.print(f"float test accuracy {metrics['test_accuracy']:.4f} ({metrics['train_seconds']:.0f} s) -> {ckpt}")
    console.rule("2/5 export to NIR and compile for loihi2-sim")
    nir_dir = export(ckpt, "nir")
    chip_dir = export(ckpt, "loihi2-sim")
    console.print(f"{nir_dir}/graph.nir; {chip_dir}/program.h5 (+ manifest.json)")
    console.rule(f"3/5 Lava Loihi2SimCfg (fixed point) on {lava_samples} test samples")
    lava = simulate(chip_dir, "digits", backend="lava", samples=lava_samples)
    console.print(f"Lava accuracy {lava['accuracy']:.4f}, float {lava['reference_accuracy']:.4f}, "
                  f"spike mismatches vs the fast simulator: {lava['spike_mismatches']} ({lava['seconds']:.1f} s)")
    console.rule("4/5 fast simulator (fixed point) on the whole test split")
    fast = simulate(chip_dir, "digits", backend="fast")
    console.print(f"fixed-point accuracy {fast['accuracy']:.4f} vs float {fast['reference_accuracy']:.4f} "
                  f"on {fast['samples']} samples ({fast['seconds']:.2f} s)")
    console.rule(f"5/5 SOPs and energy per layer ({profile})")
    report = build_report(chip_dir, profile, "digits")
    print_wide(as_table(report), stderr=True)
    html = outdir / "report.html"
    write(report, "html", html)
    write(report, "json", outdir / "report.json")
    console.print(f"[bold]HTML report: {html}[/] (JSON beside it)")
    return {"float": fast["reference_accuracy"], "fixed": fast["accuracy"], "lava": lava["accuracy"],
            "spike_mismatches": lava["spike_mismatches"], "report": str(html)}
