"""``medbalance experiment baselines``: each real dataset's baseline recipe against the published state of the art.

A method comparison means something only when its baseline is strong (issue 22). This experiment
trains the built-in recipe of every real set (``drive``, ``hc18``, ``isbi``, ``consep``,
``pneumoniamnist``, ``breastmnist``; any built-in name or YAML path can be given with
``--set sets=...``) for each seed, at native geometry, exactly as ``medbalance train NAME --set
seed=S`` trains it, into ``runs/<set>/seed<S>/``, and tabulates its test score next to the published
number (:data:`REFERENCES`) with the gap, and whether its validation curve had plateaued
(:func:`medbalance.experiments.stats.plateau`: the last quarter of the epochs improved the best
validation score by less than 0.005). The test split is scored once, with the weights that
validation chose (``best.pt``); nothing is selected on it.

Scales: ``smoke`` (1 epoch of 2 steps, for tests), ``small`` (the recipes as built in),
``paper`` (every recipe's epochs x 4, a GPU-sized budget). ``--resume`` continues the folder.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medbalance._atomic import atomic_write_text
from medbalance.errors import ConfigError
from medbalance.experiments.claims import case_scores, epoch_seconds, validation_curve
from medbalance.experiments.stats import plateau

__all__ = ["OPTIONS", "REFERENCES", "SCALES", "Reference", "run"]

#: ``epochs_factor`` multiplies each recipe's epochs; ``steps`` / ``epochs`` replace them when set.
SCALES: dict[str, dict[str, Any]] = {
    "smoke": dict(epochs=1, steps=2, epochs_factor=1, seeds=(0,)),
    "small": dict(epochs=0, steps=0, epochs_factor=1),
    "paper": dict(epochs=0, steps=0, epochs_factor=4),
}

#: ``--set`` options.
OPTIONS: dict[str, object] = {
    "sets": ["drive", "hc18", "isbi", "consep", "pneumoniamnist", "breastmnist"],  # built-in recipes or YAML paths
}


@dataclass(frozen=True)
class Reference:
    """The published number a baseline is judged against.

    Attributes:
        metric: our score compared with it (a key of :func:`_scores`).
        value: the published value.
        source: who published it, on what.
        others: further published values by score key (e.g. AUC beside ACC).
    """

    metric: str
    value: float
    source: str
    others: tuple[tuple[str, float], ...] = ()


#: Published state of the art per built-in recipe (values as issue 22 states them, with their sources).
REFERENCES: dict[str, Reference] = {
    "drive": Reference(
        "dice",
        0.83,
        "state of the art on DRIVE's 20 test images inside the FOV, ~0.83 Dice (recent vessel papers: 0.82-0.83)",
    ),
    "hc18": Reference("dice", 0.97, "HC18 challenge, ~0.97-0.98 Dice (van den Heuvel et al. 2018 and the leaderboard)"),
    "consep": Reference(
        "binary_dice",
        0.853,
        "HoVer-Net on CoNSeP, binary nuclear Dice 0.853 (Graham et al. 2019, Medical Image Analysis)",
    ),
    "pneumoniamnist": Reference(
        "accuracy", 0.854, "MedMNIST v2 ResNet-18 (28), ACC 0.854 / AUC 0.944 (Yang et al. 2023)", (("auc", 0.944),)
    ),
    "breastmnist": Reference(
        "accuracy", 0.863, "MedMNIST v2 ResNet-18 (28), ACC 0.863 / AUC 0.901 (Yang et al. 2023)", (("auc", 0.901),)
    ),
}

#: The goal of issue 22 for segmentation sets: within this of the published number.
GOAL_GAP = 0.03


def _raw_recipe(name: str) -> dict:
    from medbalance.config import read_yaml
    from medbalance.configs import config_path

    return read_yaml(config_path(name))


def _recipe(ctx: Any, name: str, seed: int) -> Any:
    """The set's recipe for ``seed`` at the context's scale, validated."""
    preset = {**SCALES[ctx.scale]}
    raw = _raw_recipe(name)
    raw["seed"] = seed
    raw["name"] = f"{Path(name).stem}-seed{seed}"
    raw["epochs"] = preset["epochs"] or int(raw.get("epochs", 10)) * preset["epochs_factor"]
    if preset["steps"]:
        raw["steps_per_epoch"] = preset["steps"]
    return ctx.base_config(**raw)


def _mean_case_dice(run_dir: Path) -> float:
    """Foreground Dice averaged over the test cases (classes absent from a case skipped)."""
    if not (run_dir / "evaluations" / "test" / "cases.json").is_file():
        return math.nan
    per_case = case_scores(run_dir).mean_fg
    return float(np.nanmean(per_case)) if np.isfinite(per_case).any() else math.nan


def _scores(run_dir: Path, metrics: dict) -> dict[str, float]:
    """The test scores a baseline is tabulated with: Dice (mean over cases) and pooled for
    segmentation, binary foreground Dice pooled from the confusion matrix for several classes,
    accuracy / AUC / balanced accuracy for classification."""
    test = metrics.get("test") or {}
    if "accuracy" in test:  # classification
        out = {"accuracy": float(test["accuracy"]), "balanced_accuracy": float(test.get("macro_recall", math.nan))}
        out["auc"] = float(test.get("auc", math.nan))
        return out
    matrix = (metrics.get("confusion") or {}).get("matrix")
    pooled = math.nan
    if matrix:
        tp = sum(sum(row[1:]) for row in matrix[1:])
        fp = sum(matrix[0][1:])
        fn = sum(row[0] for row in matrix[1:])
        pooled = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan
    return {
        "dice": _mean_case_dice(run_dir),
        "binary_dice": pooled,
        "mean_dice_fg": float(test.get("mean_dice_fg", math.nan)),
    }


def _convergence(run_dir: Path) -> tuple[str, float]:
    values = validation_curve(run_dir)
    if len(values) < 4:
        return "too short", math.nan
    flat, gain = plateau(values)
    return ("plateaued" if flat else "still rising"), gain


def run(ctx: Any) -> dict:
    from medbalance.experiments.runner import mean_std

    sets = list(ctx.options["sets"])
    if not sets:
        raise ConfigError("option 'sets' needs at least one recipe name")
    table = ctx.table(
        "Test scores per seed (best.pt chosen on validation)",
        ("test", "validation gain of the last quarter", "wall minutes"),
        row_label="set (score)",
        note=(
            "test: mean ± std over seeds; dice = foreground Dice averaged over the test cases; binary_dice = "
            "foreground vs background pooled over the test pixels. Validation gain: best validation score of the "
            "last quarter of the epochs minus the best before it (< 0.005: plateaued). Wall minutes include "
            "validation and depend on the machine's load."
        ),
    )
    lines = [
        "## Against the published numbers",
        "",
        f"| set (score) | ours | published | gap | within {GOAL_GAP} | validation | epochs x steps |",
        "|---|---:|---:|---:|---|---|---|",
    ]
    summary: dict[str, dict] = {}
    for name in sets:
        stem = Path(name).stem
        ref = REFERENCES.get(stem)
        per_seed: list[dict] = []
        keys = {seed: f"{stem}/seed{seed}" for seed in ctx.seeds}
        configs = {seed: _recipe(ctx, name, seed) for seed in ctx.seeds}
        all_metrics = ctx.run_many([(keys[seed], configs[seed]) for seed in ctx.seeds])
        for seed, metrics in zip(ctx.seeds, all_metrics):
            cfg, run_dir = configs[seed], ctx.run_dir / "runs" / keys[seed]
            state, gain = _convergence(run_dir)
            per_seed.append(
                {
                    "seed": seed,
                    "scores": _scores(run_dir, metrics),
                    "convergence": state,
                    "gain": gain,
                    "wall_minutes": epoch_seconds(run_dir) / 60,
                    "epochs": cfg.epochs,
                    "steps_per_epoch": cfg.steps_per_epoch,
                }
            )
        pairs = [(ref.metric, ref.value), *ref.others] if ref else [(next(iter(per_seed[0]["scores"])), None)]
        states = ", ".join(sorted({p["convergence"] for p in per_seed}))
        budget = f"{per_seed[0]['epochs']} x {per_seed[0]['steps_per_epoch'] or 'all'}"
        for score, published in pairs:
            row = f"{stem} ({score})"
            for p in per_seed:
                table.add(
                    row,
                    {
                        "test": p["scores"].get(score, math.nan),
                        "validation gain of the last quarter": p["gain"],
                        "wall minutes": p["wall_minutes"],
                    },
                    seed=p["seed"],
                )
            mean, std = mean_std([p["scores"].get(score, math.nan) for p in per_seed])
            ours = f"{mean:.3f} ± {std:.3f}" if len(per_seed) > 1 else f"{mean:.3f}"
            if published is None or math.isnan(mean):
                lines.append(f"| {row} | {ours} | - | - | - | {states} | {budget} |")
                continue
            gap = mean - published
            verdict = "yes" if gap >= -GOAL_GAP else "no"
            lines.append(f"| {row} | {ours} | {published:.3f} | {gap:+.3f} | {verdict} | {states} | {budget} |")
        summary[stem] = {
            "reference": None if ref is None else {"metric": ref.metric, "value": ref.value, "source": ref.source},
            "runs": per_seed,
        }
    sources = "\n".join(f"- {k}: {r.source}" for k, r in REFERENCES.items() if k in summary)
    ctx.write_report("\n".join(lines) + (f"\n\nPublished numbers:\n\n{sources}\n" if sources else "\n"))
    atomic_write_text(ctx.run_dir / "baselines.json", json.dumps(summary, indent=1))
    return summary
