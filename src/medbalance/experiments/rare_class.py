"""``medbalance experiment rare-class``: the rarest class's Dice, nnU-Net-style default against the best
medbalance recipe at equal budget (issue 22 item 3).

For every segmentation set (``--set sets=consep,drive,hc18,isbi``: built-in recipes or YAML paths,
read at run time for geometry, patch size, spacing, augmentation, optimiser and step budget):

1. The **rarest class** is the foreground class with the fewest pixels in the training split
   (counted with :func:`medbalance.data.stats.class_counts`; binary sets: the foreground).
2. The **default** row is the set's recipe with the ``nnunet`` built-in recipe's imbalance handling:
   its loss (Dice + CE), deep supervision and its sampler (``foreground``, 0.33 of each batch forced).
3. The **candidates** (:data:`CANDIDATES`, option ``candidates=``) change that handling: samplers
   (``rare_class``, a larger forced share), class-weighted or focal losses, Tversky, the set's own
   built-in recipe, reuse-background (multi-class sets). Every row trains the same number of
   optimiser steps with the same batch size (reuse-background splits its epochs between its binary
   part and its multi-class model).
4. **Selection on validation only**: each candidate is trained with the first ``tune_seeds`` seeds;
   the one with the best validation Dice of the rarest class (mean over those seeds;
   ``metrics.json``'s ``val.dice`` of ``best.pt``: the mean over validation images where the class is
   in the truth or the prediction, so a false alarm on an image without it scores 0; ``best.pt`` is
   chosen by the recipe's monitor, the same for every row) is the **selected** candidate. No test
   score is read before the selection.
5. **Test**: the selected candidate and the default are trained with every seed; the rarest class's
   per-case Dice is read from each run's ``evaluations/test/cases.csv`` and compared case by case
   (:func:`medbalance.experiments.stats.paired_difference`, 95% percentile bootstrap over cases,
   seeds averaged per case). Empty-class policy: the primary comparison is over the test cases
   whose truth holds the class (the same cases for both rows); on the cases without it a row scores
   1 when it predicts none of the class and 0 otherwise, reported as a false-alarm rate and in a
   second comparison over all cases (nnU-Net's and MONAI's "empty" conventions differ; both are shown).
   The pooled test Dice of the class (every test pixel, from the confusion matrix) is tabulated too.

Scales: ``smoke`` (1 epoch of 2 steps, one seed, for tests), ``small`` (the recipes' budgets),
``paper`` (every recipe's epochs x 4). ``--resume`` continues the folder; finished runs are read.
"""

from __future__ import annotations

import copy
import csv
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

from medbalance._atomic import atomic_write_text
from medbalance.errors import ConfigError, DataError

__all__ = ["CANDIDATES", "OPTIONS", "SCALES", "Candidate", "SetFacts", "rarest_class", "run", "select", "case_scores"]

SCALES: dict[str, dict[str, Any]] = {
    "smoke": dict(epochs=1, steps=2, epochs_factor=1, seeds=(0,)),
    "small": dict(epochs=0, steps=0, epochs_factor=1),
    "paper": dict(epochs=0, steps=0, epochs_factor=4),
}


@dataclass(frozen=True)
class SetFacts:
    """What a candidate's recipe may depend on: the training split's class fractions and the epochs."""

    fractions: tuple[float, ...]
    epochs: int


Patch = Union[Mapping[str, Any], Callable[[SetFacts], Mapping[str, Any]]]


@dataclass(frozen=True)
class Candidate:
    """A named change of the default row's recipe (top-level recipe keys; ``model`` keys are merged).

    Attributes:
        what: one line for the report.
        patch: the keys, or a function of the set's :class:`SetFacts` returning them.
        multiclass: only for sets with several foreground classes.
    """

    what: str
    patch: Patch
    multiclass: bool = False

    def keys(self, facts: SetFacts) -> dict[str, Any]:
        return dict(self.patch(facts) if callable(self.patch) else self.patch)


def _inverse_sqrt(facts: SetFacts) -> dict:
    # `inverse` of sqrt(fractions) is 1 / sqrt(p_i), normalised: inverse square-root frequency weights
    sqrt = [math.sqrt(p) for p in facts.fractions]
    return {"loss": ["dice", {"name": "ce", "class_weight": {"scheme": "inverse", "fractions": sqrt}}]}


def _reuse_background(facts: SetFacts) -> dict:
    # equal budget: the binary part and the multi-class model share the recipe's epochs
    binary = max(1, facts.epochs // 2)
    return {
        "method": {"name": "reuse_background", "tau": 0.5, "mode": "paper", "binary_epochs": binary},
        "epochs": max(1, facts.epochs - binary),
        "model": {"deep_supervision": False},
    }


#: The grid (option ``candidates=``), each a change of the default row. ``recipe``: the set's own
#: built-in recipe, unchanged.
CANDIDATES: dict[str, Candidate] = {
    "recipe": Candidate("the set's built-in medbalance recipe as it is", {}),
    "rare_class_p0.5": Candidate(
        "rare_class sampler, P(class) ~ frequency^-0.5", {"sampler": "rare_class", "sampler_power": 0.5}, True
    ),
    "rare_class_p1": Candidate(
        "rare_class sampler, P(class) ~ frequency^-1", {"sampler": "rare_class", "sampler_power": 1.0}, True
    ),
    "oversample_0.66": Candidate("foreground sampler with 0.66 of each batch forced", {"foreground_fraction": 0.66}),
    "dice_ce_invsqrt": Candidate("Dice + CE weighted by inverse square-root class frequency", _inverse_sqrt),
    "dice_focal": Candidate("Dice + focal (gamma 2)", {"loss": "dice_focal"}),
    "dice_focal_expfg": Candidate(
        "Dice + focal with seed 002's exp_decreasing_fg class weights",
        {"loss": ["dice", {"name": "focal", "gamma": 2.0, "class_weight": "exp_decreasing_fg"}]},
    ),
    "tversky_ce": Candidate("Tversky (alpha 0.3, beta 0.7: misses cost more) + CE", {"loss": ["tversky", "ce"]}),
    "reuse_background": Candidate(
        "reuse-background (seed 002): binary part + multi-class model, epochs split", _reuse_background, True
    ),
}

#: ``--set`` options.
OPTIONS: dict[str, object] = {
    "sets": ["consep", "drive", "hc18", "isbi"],  # built-in recipes or YAML paths (segmentation)
    "candidates": list(CANDIDATES),  # names of CANDIDATES; multi-class-only ones skip binary sets
    "tune_seeds": 1,  # candidates train with the first N seeds; selection: mean validation score over them
}

DEFAULT = "default"


def _raw_recipe(name: str) -> dict:
    from medbalance.config import read_yaml
    from medbalance.configs import config_path

    return read_yaml(config_path(name))


def _merge(base: dict, keys: Mapping[str, Any]) -> dict:
    out = copy.deepcopy(base)
    for key, value in keys.items():
        if key == "model":
            out["model"] = {**out.get("model", {}), **value}
        else:
            out[key] = copy.deepcopy(value)
    return out


def default_recipe(raw: dict) -> dict:
    """The set's recipe ``raw`` with the ``nnunet`` built-in recipe's loss, deep supervision and sampler.

    Example:
        >>> r = default_recipe({"loss": "ce", "sampler": "rare_class", "model": {"name": "unet"}})
        >>> r["loss"], r["sampler"], r["foreground_fraction"], r["model"]["deep_supervision"]
        ('dice_ce', 'foreground', 0.33, True)
    """
    nnunet = _raw_recipe("nnunet")
    keys = {k: nnunet[k] for k in ("loss", "sampler", "foreground_fraction")}
    keys["model"] = {"deep_supervision": nnunet["model"]["deep_supervision"]}
    return _merge(raw, keys)


def rarest_class(counts: Sequence[float]) -> int:
    """The foreground class (index >= 1) with the fewest training pixels among those present.

    Example:
        >>> rarest_class([900, 50, 0, 7, 40])
        3
    """
    counts = [float(c) for c in counts]
    present = [c for c in range(1, len(counts)) if counts[c] > 0]
    if not present:
        raise DataError(f"the training split has no foreground pixels (class counts {counts})")
    return min(present, key=lambda c: counts[c])


def _candidates(names: Sequence[str]) -> list[str]:
    from medbalance.experiments.seed002.loss_study import _choice_list  # the experiments' one list-option check

    return list(dict.fromkeys(_choice_list("candidates", list(names), list(CANDIDATES))))


def _budget(ctx: Any, raw: dict) -> dict:
    preset = SCALES[ctx.scale]
    raw = dict(raw)
    raw["epochs"] = preset["epochs"] or int(raw.get("epochs", 20)) * preset["epochs_factor"]
    if preset["steps"]:
        raw["steps_per_epoch"] = preset["steps"]
    return raw


def _config(ctx: Any, raw: dict, label: str, seed: int) -> Any:
    return ctx.base_config(**{**raw, "seed": seed, "name": f"{label}-seed{seed}"})


def _facts(cfg: Any) -> tuple[np.ndarray, list[str]]:
    """Training pixels per class and the class names of the run's data."""
    from medbalance.data.build import build_splits
    from medbalance.data.stats import class_counts

    if cfg.task != "segmentation":
        raise ConfigError(f"recipe '{cfg.name}' is a {cfg.task} recipe; the rare-class experiment needs segmentation")
    train = build_splits(cfg).train
    counts = class_counts(train, train.num_classes, ignore_index=train.ignore_index).numpy()
    return counts, list(train.class_names)


def select(validation: Mapping[str, Sequence[float]]) -> str:
    """The candidate with the best mean validation score (first listed on a tie; NaN never wins).

    Example:
        >>> select({"a": [0.4, 0.6], "b": [0.55], "c": [float("nan")]})
        'b'
    """
    best, best_score = None, -math.inf
    for name, scores in validation.items():
        score = float(np.mean(scores)) if len(scores) else math.nan
        if not math.isnan(score) and score > best_score:
            best, best_score = name, score
    if best is None:
        raise DataError("no candidate has a finite validation score of the rarest class")
    return best


def case_scores(run_dir: Path, class_index: int) -> dict[str, tuple[int, float]]:
    """The rarest class's test row of ``run_dir/evaluations/test/cases.csv`` per case:
    ``case -> (target_pixels, value)`` where ``value`` is the Dice when the truth holds the class,
    else 1.0 if none was predicted and 0.0 if some was (a false alarm)."""
    path = run_dir / "evaluations" / "test" / "cases.csv"
    if not path.is_file():
        raise DataError(f"'{path}' does not exist (the run has no test split, or did not finish)")
    out: dict[str, tuple[int, float]] = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            if int(row["class_index"]) != class_index:
                continue
            target = int(row["target_pixels"])
            value = float(row["dice"]) if target else float(int(row["pred_pixels"]) == 0)
            out[row["case"]] = (target, value)
    if not out:
        raise DataError(f"'{path}' has no row of class {class_index}")
    return out


def _pooled_dice(metrics: dict, c: int) -> float:
    matrix = np.asarray((metrics.get("confusion") or {}).get("matrix") or [], dtype=np.float64)
    if matrix.ndim != 2 or c >= len(matrix):
        return math.nan
    denominator = matrix[c].sum() + matrix[:, c].sum()
    return float(2 * matrix[c, c] / denominator) if denominator else math.nan


def _validation(metrics: dict, c: int) -> float:
    val = metrics.get("val") or {}
    if c in (val.get("absent_classes") or []):  # absent from every validation image: no score
        return math.nan
    return float(val["dice"][c])


class _Arm:
    """One row's test scores over seeds: per-case values aligned to the cases of the first seed."""

    def __init__(self) -> None:
        self.cases: dict[int, dict[str, tuple[int, float]]] = {}
        self.pooled: dict[int, float] = {}

    def add(self, seed: int, run_dir: Path, metrics: dict, c: int) -> None:
        self.cases[seed] = case_scores(run_dir, c)
        self.pooled[seed] = _pooled_dice(metrics, c)

    def matrix(self, names: Sequence[str]) -> np.ndarray:
        """``(seeds, cases)`` values in the order of ``names``."""
        rows = []
        for seed, cases in self.cases.items():
            if set(cases) != set(names):
                raise DataError(f"seed {seed} scored other test cases than the first seed; the rows cannot be paired")
            rows.append([cases[n][1] for n in names])
        return np.asarray(rows, dtype=np.float64)


def _verdict(d: Any, selected: str) -> str:
    if d.holds is True:
        return f"{selected} wins"
    if d.holds is False:
        return "the default wins"
    return "no difference shown"


def run(ctx: Any) -> dict:
    from medbalance.experiments.stats import paired_difference

    sets = list(ctx.options["sets"])
    if not sets:
        raise ConfigError("option 'sets' needs at least one recipe name")
    names = _candidates(ctx.options["candidates"])
    tune = int(ctx.options["tune_seeds"])
    if not 1 <= tune <= len(ctx.seeds):
        raise ConfigError(f"option 'tune_seeds' must be between 1 and the {len(ctx.seeds)} seeds, found {tune}")
    tune_seeds = ctx.seeds[:tune]
    tuning = ctx.table(
        "Validation Dice of the rarest class (the tuning)",
        ("validation Dice",),
        row_label="set / row",
        note=(
            f"best.pt of each row on the validation split, seeds {list(tune_seeds)}: the rarest class's Dice "
            "averaged over the validation images where it is in the truth or the prediction. The selected "
            "candidate is the highest; the test split is not read for it."
        ),
    )
    testing = ctx.table(
        "Test scores of the rarest class",
        ("Dice (cases with the class)", "pooled Dice", "false alarms (cases without it)"),
        row_label="set / row",
        note=(
            "Dice (cases with the class): mean over the test cases whose truth holds the rarest class; pooled: "
            "over every test pixel; false alarms: share of the test cases without the class where the row "
            "predicts some of it. Mean ± std over seeds."
        ),
    )
    lines = [
        "## The rarest class: default against the selected candidate",
        "",
        "| set | rarest class (train fraction) | selected | paired Dice difference, cases with the class "
        "[95%] | all cases, empty = 1 if none predicted [95%] | verdict |",
        "|---|---|---|---|---|---|",
    ]
    summary: dict[str, dict] = {}
    budgets = {name: _budget(ctx, _raw_recipe(name)) for name in sets}  # every recipe read before any training
    for name, raw in budgets.items():
        stem = Path(name).stem
        base = default_recipe(raw)
        counts, class_names = _facts(_config(ctx, base, f"{stem}-{DEFAULT}", ctx.seeds[0]))
        c = rarest_class(counts)
        fractions = counts / counts.sum()
        facts = SetFacts(tuple(float(f) for f in fractions), int(raw["epochs"]))
        multiclass = len(counts) > 2
        recipes = {DEFAULT: base}
        for candidate in names:
            spec = CANDIDATES[candidate]
            if spec.multiclass and not multiclass:
                continue
            recipes[candidate] = raw if candidate == "recipe" else _merge(base, spec.keys(facts))
        if len(recipes) == 1:
            raise ConfigError(
                f"option 'candidates': none of {', '.join(names)} applies to '{name}' (one foreground class; "
                "the multi-class candidates skip it)"
            )

        def train(pairs: list[tuple[str, int]]) -> list[tuple[Path, dict]]:
            """The runs of ``(label, seed)`` pairs, independent of each other (``--jobs`` at a time)."""
            keys = [f"{stem}/{label}/seed{seed}" for label, seed in pairs]
            configs = [_config(ctx, recipes[label], f"{stem}-{label}", seed) for label, seed in pairs]
            metrics = ctx.run_many(list(zip(keys, configs)))
            return [(ctx.run_dir / "runs" / key, m) for key, m in zip(keys, metrics)]

        validation: dict[str, list[float]] = {}
        pairs = [(label, seed) for label in recipes for seed in tune_seeds]
        for (label, seed), (_, metrics) in zip(pairs, train(pairs)):
            score = _validation(metrics, c)
            validation.setdefault(label, []).append(score)
            tuning.add(f"{stem} / {label}", {"validation Dice": score}, seed=seed)
        selected = select({k: v for k, v in validation.items() if k != DEFAULT})
        # the test split is read only from here on, for the default and the selected candidate
        arms = {DEFAULT: _Arm(), selected: _Arm()}
        pairs = [(label, seed) for label in arms for seed in ctx.seeds]
        for (label, seed), (run_dir, metrics) in zip(pairs, train(pairs)):
            arms[label].add(seed, run_dir, metrics, c)
        first = arms[DEFAULT].cases[ctx.seeds[0]]
        cases = sorted(first)
        present = [n for n in cases if first[n][0] > 0]
        absent = [n for n in cases if first[n][0] == 0]
        scores = {label: arm.matrix(cases) for label, arm in arms.items()}
        idx = [cases.index(n) for n in present]
        comparisons = {}
        if present:
            comparisons["present"] = paired_difference(scores[selected][:, idx], scores[DEFAULT][:, idx])
        comparisons["all"] = paired_difference(scores[selected], scores[DEFAULT])
        for label, arm in arms.items():
            for seed in ctx.seeds:
                values = scores[label][list(arm.cases).index(seed)]
                with_class = [values[i] for i in idx]
                without = [1.0 - values[cases.index(n)] for n in absent]
                testing.add(
                    f"{stem} / {label}",
                    {
                        "Dice (cases with the class)": float(np.mean(with_class)) if with_class else math.nan,
                        "pooled Dice": arm.pooled[seed],
                        "false alarms (cases without it)": float(np.mean(without)) if without else math.nan,
                    },
                    seed=seed,
                )
        main = comparisons.get("present", comparisons["all"])
        lines.append(
            f"| {stem} | {class_names[c]} ({fractions[c]:.2e}) | {selected} | "
            + (comparisons["present"].text() if "present" in comparisons else "no test case holds it")
            + f" | {comparisons['all'].text()} | {_verdict(main, selected)} |"
        )
        summary[stem] = {
            "rarest_class": {"index": c, "name": class_names[c], "train_pixels": int(counts[c])},
            "class_names": class_names,
            "train_fractions": fractions.tolist(),
            "candidates": {k: CANDIDATES[k].what for k in recipes if k != DEFAULT},
            "validation": validation,
            "selected": selected,
            "test_cases": {"with_class": len(present), "without_class": len(absent)},
            "paired_difference": {k: d.to_dict() for k, d in comparisons.items()},
            "verdict": _verdict(main, selected),
            "budget": {k: raw.get(k) for k in ("epochs", "steps_per_epoch", "batch_size")},
        }
    lines += ["", "Candidates:", ""]
    lines += [f"- `{k}`: {CANDIDATES[k].what}" + (" (multi-class sets)" * CANDIDATES[k].multiclass) for k in names]
    lines += [
        "",
        f"Rows: `{DEFAULT}` is each set's recipe with the nnunet recipe's loss, deep supervision and foreground "
        "sampler (0.33); the candidates change that (see the tuning table); every row trains the same optimiser "
        f"steps and batch size. Selection: best validation Dice of the rarest class over seeds {list(tune_seeds)}. "
        "Differences: selected minus default, per test case, seeds averaged per case, 95% percentile bootstrap "
        "over cases; a verdict needs the whole interval of the cases with the class on one side of 0.",
    ]
    ctx.write_report("\n".join(lines) + "\n")
    atomic_write_text(ctx.run_dir / "rare_class.json", json.dumps(summary, indent=1))
    return summary
