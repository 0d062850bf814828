"""Issue 22's segmentation claims at equal compute: recipe rows, equal optimiser steps, per-case scores.

``--set claims=true`` makes ``medbalance experiment dualpath`` and ``reuse-background`` train only the
rows that decide the seed's claim and write one claims table:

- every row starts from the dataset's built-in recipe (:data:`DATASET_RECIPES`, read at run time:
  geometry, augmentation, field of view, schedule, network, loss); phantoms, which have none,
  start from the experiment's scale preset;
- the baseline at its recipe schedule ("converged"; its validation curve judged by
  :func:`~medbalance.experiments.stats.plateau`) and the baseline given the method's total
  optimiser steps (:class:`StepBudget`);
- per-case test scores read from each run folder's own evaluation
  (``RUN/evaluations/test/cases.json``, written by :func:`medbalance.engine.run.train` from the
  pass that scores the test split), never recomputed;
- the method's paired difference to each baseline with its 95% bootstrap interval over the
  test cases (:func:`~medbalance.experiments.stats.paired_difference`) and the verdict.
"""

from __future__ import annotations

import copy
import csv
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medbalance.errors import ConfigError
from medbalance.experiments.stats import paired_difference, plateau

__all__ = [
    "DATASET_RECIPES",
    "CaseScores",
    "StepBudget",
    "add_claims",
    "case_scores",
    "claims_base",
    "dataset_recipe",
    "epoch_steps",
    "keep_cases",
    "nnunet_settings",
    "verdict",
]

#: Shared dataset -> its built-in recipe (``medbalance train NAME``).
DATASET_RECIPES = {
    "drive": "drive",
    "hc18_subset": "hc18",
    "isbi2012_em_membrane": "isbi",
    "consep_patches256": "consep",
}


def dataset_recipe(data: str) -> dict | None:
    """The top-level keys of the built-in recipe of shared dataset ``data`` (without ``name`` and
    ``seed``), or ``None`` when it has none (phantoms, paths, a recipe not in this version).

    Example:
        >>> dataset_recipe("drive")["patch_size"], dataset_recipe("phantom")
        ([64, 64], None)
    """
    from medbalance.config import read_yaml
    from medbalance.configs import BUILTIN_CONFIGS, config_path

    name = DATASET_RECIPES.get(data)
    if name is None or name not in BUILTIN_CONFIGS:
        return None
    raw = read_yaml(config_path(name))
    return {k: v for k, v in raw.items() if k not in ("name", "seed")}


def nnunet_settings() -> dict:
    """What the built-in ``nnunet`` recipe changes in a U-Net recipe (loss, deep supervision,
    foreground sampler), read at run time; its data, patch and schedule are left out."""
    from medbalance.config import read_yaml
    from medbalance.configs import config_path

    raw = read_yaml(config_path("nnunet"))
    out = {k: raw[k] for k in ("loss", "sampler", "foreground_fraction") if k in raw}
    out["deep_supervision"] = bool(raw.get("model", {}).get("deep_supervision", False))
    return out


def epoch_steps(cfg, train) -> tuple[int, bool]:
    """Optimiser steps per epoch of ``cfg`` on the training split ``train``, and whether it trains on patches.

    Patches: ``steps_per_epoch`` (the engine's default when unset); whole images:
    ``len(train) // batch_size`` (at least 1), the length of every batch sampler.
    """
    from medbalance.engine.engine import DEFAULT_PATCH_STEPS
    from medbalance.engine.native import resolve_patch_size

    patch = resolve_patch_size(cfg.patch_size, [train.shape(i) for i in range(len(train))])
    if patch is not None:
        return cfg.steps_per_epoch or DEFAULT_PATCH_STEPS, True
    return max(1, len(train) // cfg.batch_size), False


@dataclass(frozen=True)
class StepBudget:
    """The optimiser steps of a method's parts and the epochs that give a baseline as many.

    Every part trains on the same training split with the same batch size, so every epoch has
    ``steps_per_epoch`` steps; a baseline of ``epochs`` epochs then takes at least as many steps
    as the method (exactly as many when the parts' epochs sum to a whole number of epochs).

    Example:
        >>> b = StepBudget({"discriminator": 25, "paths": 25, "fusion": 25, "finetune": 6}, 50)
        >>> b.total_steps, b.epochs
        (4050, 81)
        >>> b.text()
        'discriminator 25 + paths 25 + fusion 25 + finetune 6 = 81 epochs x 50 steps = 4050 optimiser steps'
    """

    parts: Mapping[str, int]
    steps_per_epoch: int

    def __post_init__(self) -> None:
        if self.steps_per_epoch < 1 or not self.parts or min(self.parts.values()) < 1:
            raise ConfigError(f"a step budget needs epochs >= 1 per part and steps >= 1, found {dict(self.parts)}")

    @property
    def total_steps(self) -> int:
        return sum(self.parts.values()) * self.steps_per_epoch

    @property
    def epochs(self) -> int:
        return -(-self.total_steps // self.steps_per_epoch)

    def text(self) -> str:
        parts = " + ".join(f"{name} {epochs}" for name, epochs in self.parts.items())
        return f"{parts} = {self.epochs} epochs x {self.steps_per_epoch} steps = {self.total_steps} optimiser steps"

    def to_dict(self) -> dict:
        return {"parts": dict(self.parts), "steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps}


@dataclass(frozen=True)
class CaseScores:
    """Per-case test Dice of one run: ``dice[i, k]`` is case ``cases[i]``, foreground class ``classes[k]``;
    NaN where the run's ``empty`` policy (``skip``) leaves a class absent from the case's truth out.
    ``means``: the evaluation's own summary (``precision``, ``recall``, ``hd95``, ...: mean over cases,
    then over classes), which says *how* a row differs (e.g. fewer pixels found)."""

    cases: tuple[str, ...]
    classes: tuple[str, ...]
    dice: np.ndarray
    empty: str
    means: Mapping[str, float] = field(default_factory=dict)

    @property
    def mean_fg(self) -> np.ndarray:
        """Mean foreground Dice per case over the classes scored in it; NaN for a case with none."""
        scored = ~np.isnan(self.dice)
        total = np.where(scored, self.dice, 0.0).sum(axis=1)
        count = scored.sum(axis=1)
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


#: The evaluation summary's scores a claims table shows beside Dice (key -> column): where a method
#: loses or gains (pixels missed or added, far-off fragments).
SHAPE_SCORES = {"precision": "precision", "recall": "recall", "hd95": "HD95"}


def case_scores(run_dir: str | Path, split: str = "test") -> CaseScores:
    """The per-case Dice of a finished run, read from ``RUN/evaluations/<split>/cases.json``.

    Raises:
        ConfigError: the file is missing or holds no Dice rows (named).
    """
    path = Path(run_dir) / "evaluations" / split / "cases.json"
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        raise ConfigError(f"'{path}' is missing or unreadable: the run has no per-case {split} scores") from None
    rows = document.get("rows", [])
    if not rows or "dice" not in rows[0]:
        raise ConfigError(f"'{path}' holds no per-case Dice rows")
    cases = list(dict.fromkeys(r["case"] for r in rows))
    classes = list(dict.fromkeys(r["class"] for r in rows))
    dice = np.full((len(cases), len(classes)), np.nan)
    at_case, at_class = {c: i for i, c in enumerate(cases)}, {c: k for k, c in enumerate(classes)}
    for r in rows:
        dice[at_case[r["case"]], at_class[r["class"]]] = math.nan if r["dice"] is None else float(r["dice"])
    summary = document["summary"]
    means = {k: math.nan if v is None else float(v) for k, v in (summary.get("mean") or {}).items()}
    return CaseScores(tuple(cases), tuple(classes), dice, summary["empty"], means)


def keep_cases(table, row: str, seed: int, scores: CaseScores | str | Path) -> CaseScores:
    """Keep a run's per-case test Dice in ``table``'s ``results.json`` content: ``cases``, ``classes``
    and ``per_case[row][seed]`` (``mean_fg`` per case, and per class when there are several).

    Args:
        table: a :class:`~medbalance.experiments.runner.ResultTable`.
        row, seed: where the run sits in the table.
        scores: the run's :class:`CaseScores`, or its finished run folder.
    """
    s = scores if isinstance(scores, CaseScores) else case_scores(scores)
    table.extra.setdefault("cases", list(s.cases))
    table.extra.setdefault("classes", list(s.classes))
    table.extra.setdefault("empty", s.empty)
    per_class = {c: _json_list(s.dice[:, k]) for k, c in enumerate(s.classes)} if len(s.classes) > 1 else {}
    table.extra.setdefault("per_case", {}).setdefault(row, {})[seed] = {"mean_fg": _json_list(s.mean_fg), **per_class}
    return s


def verdict(holds: bool | None) -> str:
    """The words of a :attr:`~medbalance.experiments.stats.PairedDifference.holds` verdict."""
    return {True: "holds", False: "does not hold", None: "no difference shown"}[holds]


def _history(run_dir: Path) -> list[dict]:
    with open(Path(run_dir) / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def validation_curve(run_dir: Path) -> list[float]:
    """The run's monitored validation score per epoch, from ``history.csv``."""
    monitor = json.loads((run_dir / "metrics.json").read_text())["monitor"]
    return [float(row[f"val_{monitor}"]) for row in _history(run_dir)]


def epoch_seconds(run_dir: Path) -> float:
    """Wall seconds of the run's own epochs (training and validation; its parts' not included)."""
    return round(sum(float(row["seconds"]) for row in _history(run_dir)), 1)


def _stack(scores: Mapping[int, CaseScores]) -> tuple[np.ndarray, np.ndarray]:
    """``(seeds, cases, classes)`` Dice and ``(seeds, cases)`` mean foreground Dice of one row's runs."""
    return np.stack([s.dice for s in scores.values()]), np.stack([s.mean_fg for s in scores.values()])


def add_claims(
    ctx,
    title: str,
    runs: Mapping[str, Mapping[int, Path]],
    *,
    method: str,
    baselines: Sequence[str],
    converged: Sequence[str] = (),
    note: str = "",
    extra: Mapping | None = None,
):
    """The claims table of finished runs: every row's test Dice (mean ± std over seeds), the method's
    paired difference to each baseline with its 95% interval and verdict, the plateau of ``converged``
    rows; per-case scores, intervals (also per class), plateau gains and each run's epoch wall
    seconds (``epoch_seconds``) go to ``results.json``.

    Args:
        ctx: the experiment context (the table is one of its tables).
        title: the table's title.
        runs: row label -> seed -> finished run folder (rows in table order).
        method: the row of the method; ``baselines``: the rows it is compared with.
        converged: rows trained at their recipe's own schedule, whose validation plateau is judged.
        note: the table's note; ``extra``: more content for ``results.json`` (e.g. the step budget).

    Returns:
        The :class:`~medbalance.experiments.runner.ResultTable`.
    """
    scores = {row: {seed: case_scores(folder) for seed, folder in seeds.items()} for row, seeds in runs.items()}
    first = next(iter(next(iter(scores.values())).values()))
    for row, seeds in scores.items():
        for seed, s in seeds.items():
            if s.cases != first.cases or s.classes != first.classes:
                raise ConfigError(
                    f"row '{row}' seed {seed} ({runs[row][seed]}) scored different test cases or classes than "
                    "the first run; they cannot be paired"
                )
    multi = len(first.classes) > 1
    metrics = ("Dice", *((f"Dice {c}" for c in first.classes) if multi else ()), *SHAPE_SCORES.values())
    diff_column = f"{method} - row [95% CI]"
    table = ctx.table(title, metrics, columns=(diff_column, "verdict", "plateau"), note=note)
    for row, seeds in scores.items():
        for seed, s in seeds.items():
            cells = {"Dice": float(np.nanmean(s.mean_fg))}
            for k, c in enumerate(s.classes if multi else ()):
                cells[f"Dice {c}"] = float(np.nanmean(s.dice[:, k])) if np.isfinite(s.dice[:, k]).any() else math.nan
            cells.update({label: s.means.get(key, math.nan) for key, label in SHAPE_SCORES.items()})
            table.add(row, cells, seed=seed)
            keep_cases(table, row, seed, s)

    differences: dict[str, dict] = {}
    a, mean_a = _stack(scores[method])
    for base in baselines:
        b, mean_b = _stack(scores[base])
        # a case (class) the empty policy leaves out has no score in either arm: the truth decides
        main = _paired(mean_a, mean_b)
        differences[base] = {"mean_fg": main.to_dict() if main else None}
        for k, c in enumerate(first.classes if multi else ()):
            d = _paired(a[:, :, k], b[:, :, k])
            differences[base][c] = d.to_dict() if d else None
        table.put(base, diff_column, main.text() if main else "-")
        table.put(base, "verdict", verdict(main.holds) if main else "no scored case")

    plateaus: dict[str, dict[int, dict]] = {}
    for row in converged:
        for seed, folder in runs[row].items():
            curve = validation_curve(folder)
            flat, gain = plateau(curve) if len(curve) > 1 else (False, math.nan)
            plateaus.setdefault(row, {})[seed] = {"plateaued": flat, "gain": gain, "epochs": len(curve)}
        seeds = plateaus[row].values()
        if any(math.isnan(s["gain"]) for s in seeds):
            table.put(row, "plateau", "not judged (a single validation epoch)")
        else:
            largest = max(s["gain"] for s in seeds)
            flat = sum(s["plateaued"] for s in seeds)
            table.put(row, "plateau", f"{flat} of {len(seeds)} seeds (largest last-quarter gain {largest:+.3f})")
    seconds = {row: {seed: epoch_seconds(folder) for seed, folder in seeds.items()} for row, seeds in runs.items()}
    table.extra.update(
        epoch_seconds=seconds,
        differences=differences,
        plateau=plateaus,
        **(extra or {}),
    )
    return table


def run_claims(
    ctx,
    rows: Mapping[str, tuple[str, Callable[[int], Any]]],
    *,
    method: str,
    baselines: Sequence[str],
    converged: Sequence[str],
    note: str,
    extra: Mapping,
    intro: str,
) -> dict:
    """Train every claims row for every seed and rewrite the claims table after each seed, so a
    stopped experiment still reports the seeds it finished.

    Args:
        ctx: the experiment context.
        rows: row label -> (run key under ``runs/claims/``, ``seed -> recipe``), in table order.
        method, baselines, converged, note, extra: as :func:`add_claims`.
        intro: the report's first line after "Seeds finished: n of N.".

    Returns:
        The content of ``results.json`` after the last seed.
    """
    runs: dict[str, dict[int, Path]] = {row: {} for row in rows}
    results: dict = {}
    for n, seed in enumerate(ctx.seeds):
        for row, (key, make) in rows.items():
            ctx.run(f"claims/{key}/seed{seed}", make(seed))
            runs[row][seed] = ctx.run_dir / "runs" / "claims" / key / f"seed{seed}"
        ctx.tables.clear()
        add_claims(
            ctx,
            "Claims at equal compute (issue 22)",
            runs,
            method=method,
            baselines=baselines,
            converged=converged,
            note=note,
            extra=extra,
        )
        results = ctx.write_report(f"Seeds finished: {n + 1} of {len(ctx.seeds)}. {intro}")
    return results


def _paired(method: np.ndarray, baseline: np.ndarray):
    """:func:`paired_difference` over the cases scored in both arms (``None`` when there is none)."""
    kept = np.isfinite(method).all(axis=0) & np.isfinite(baseline).all(axis=0)
    if not kept.any():
        return None
    return paired_difference(method[:, kept], baseline[:, kept])


def _json_list(values: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in values.tolist()]


def claims_base(recipe: Mapping | None, fallback: Mapping, options: Mapping) -> dict:
    """The top-level keys every claims row starts from: a copy of the dataset ``recipe`` (else
    ``fallback``, the experiment's preset as config keys) with the experiment options ``epochs``,
    ``lr``, ``batch_size`` and ``width`` that are set (non-zero) on top."""
    raw = copy.deepcopy(dict(recipe if recipe is not None else fallback))
    for key in ("epochs", "lr", "batch_size"):
        if options.get(key):
            raw[key] = options[key]
    if options.get("width"):
        raw["model"] = {**raw.get("model", {}), "base_channels": options["width"]}
    return raw
