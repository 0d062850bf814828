"""``medbalance experiment longtail-claims``: do the long-tail methods beat plain CE on real data? (issue 22)

Seed 001 claims that LSKBB (and its baselines BBN, LDAM-DRW, MiSLAS) classify long-tailed data better
than plain cross-entropy. This experiment tests the claim on a real dataset (PneumoniaMNIST,
BreastMNIST, any MedMNIST ``.npz``) at imbalance ratios 10 / 50 / 100:

- the training set is a seeded long-tailed subset of the source's training split with the head class
  whole by default (:func:`medbalance.data.longtail.longtail_targets`); a ratio that would leave the
  tail class fewer than ``min_tail`` images is refused (listed, not trained): an "IR 100" of 4
  images measures noise, not imbalance;
- validation: the source's validation split, subsampled to balanced classes (checkpoint selection on
  balanced accuracy); test: the source's **whole** test split, the same images for every method and
  seed, scored once per run;
- rows: plain CE (ResNet-32) and seed 001's LDAM-DRW, BBN, LSKBB and MiSLAS recipes
  (:data:`medbalance.experiments.seed001.METHODS`), the same networks and SGD schedule;
- per IR: balanced accuracy, macro-F1, per-class recall, ECE and AUC (mean ± std over seeds), and
  the paired difference of each method minus CE with a 95% percentile-bootstrap interval
  (:func:`medbalance.experiments.stats.paired_difference`) and a verdict; seed 001's own claim,
  LSKBB minus each other long-tail method, the same way.

Paired per-case scores. Balanced accuracy is the mean of the per-class recalls, i.e. the mean over
the test images of ``correct_i * N / (C * n_{y_i})`` (each image weighted by the inverse size of its
class); that per-image score is what is paired (method and CE on the same image, averaged over the
seeds) and resampled, so the mean difference is exactly the difference of balanced accuracies and
the interval treats the test split's class shares as fixed. Tail recall is the mean correctness of
the tail class's test images, paired and resampled the same way. Macro-F1, ECE and AUC do not
decompose into per-image scores and get mean ± std over seeds only.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from medbalance._atomic import atomic_write_text
from medbalance.experiments.seed001 import METHODS, Recipe, _slug, recipe_config

__all__ = ["OPTIONS", "ROWS", "SCALES", "epochs_for", "paired_scores", "run", "train_counts"]

# fmt: off
#: Presets per scale: the CIFAR ResNet layout (``widths``, ``blocks`` per stage), epochs (MiSLAS: of
#: its mixup stage, then ``classifier_epochs``), images per batch (per branch for BBN / LSKBB), the
#: ratios, the smallest tail class trained (``min_tail``), the head cap (``n_max``, None: whole) and the
#: fewest optimiser steps of a run (``min_steps``: a small set trains more epochs, see :func:`epochs_for`).
SCALES: dict[str, dict[str, Any]] = {
    "smoke": dict(
        widths=[4, 8], blocks=1, epochs=1, classifier_epochs=1, batch_size=16, irs=[10], min_tail=2, n_max=40,
        min_steps=0, seeds=(0,),
    ),
    "small": dict(
        widths=[8, 16, 32], blocks=1, epochs=15, classifier_epochs=3, batch_size=64, irs=[10, 50, 100], min_tail=20,
        n_max=None, min_steps=600,
    ),
    "paper": dict(
        widths=[16, 32, 64], blocks=5, epochs=200, classifier_epochs=10, batch_size=128, irs=[10, 50, 100],
        min_tail=20, n_max=None, min_steps=0,
    ),
}
# fmt: on

#: ``--set`` options (0 / empty / -1: the scale's value).
OPTIONS: dict[str, object] = {
    "methods": [],  # rows besides CE (default: all of ROWS)
    "irs": [],  # imbalance ratios
    "epochs": 0,  # given: every run trains exactly this many epochs (no ``min_steps`` floor)
    "min_steps": -1,  # fewest optimiser steps of a run (-1: the scale's)
    "batch_size": 0,
    "lr": 0.05,  # seed 001's SGD: momentum 0.9, weight decay 2e-4, cosine schedule
    "min_tail": 0,  # smallest tail class (training images) an IR may leave
    "n_max": -1,  # cap on the head class (-1: the scale's, 0: whole)
    "n_resamples": 10_000,  # bootstrap resamples of the test images
}

BASELINE = "CE"
#: Seed 001's own method, compared with each other long-tail method as well as with CE.
PROPOSED = "LSKBB"
#: Rows: the baseline, then seed 001's long-tail methods.
ROWS: dict[str, Recipe] = {
    BASELINE: Recipe("resnet32", "ce"),
    **{name: METHODS[name] for name in ("LDAM-DRW", "BBN", "LSKBB", "MiSLAS")},
}


def train_counts(source_counts: list[int], irs: list[float], *, n_max: int | None, min_tail: int) -> list[dict]:
    """Training images per class at each ratio, and whether the ratio is real.

    Example:
        >>> [(r["ir"], r["counts"], r["real"]) for r in train_counts([147, 399], [10, 50], n_max=None, min_tail=20)]
        [(10, [40, 399], True), (50, [8, 399], False)]
    """
    from medbalance.data.longtail import longtail_targets

    out = []
    for ir in irs:
        counts = longtail_targets(source_counts, ir, n_max=n_max)
        tail = min(c for c in counts if c > 0)
        out.append({"ir": ir, "counts": counts, "tail": tail, "real": tail >= min_tail})
    return out


def epochs_for(preset: dict, n_train: int) -> int:
    """Epochs of a run on ``n_train`` training images: the preset's, raised until the run takes at least
    ``preset["min_steps"]`` optimiser steps (an epoch is ``n_train // batch_size`` steps, at least one).

    A preset counted in epochs gives a small set almost no training: BreastMNIST at IR 10 (439 images)
    gets 6 steps an epoch, 90 in the ``small`` preset's 15 epochs, and plain CE never leaves the one-class
    solution (docs/results/longtail.md).

    Example:
        >>> preset = {"epochs": 15, "batch_size": 64, "min_steps": 600}
        >>> epochs_for(preset, 439), epochs_for(preset, 3_843)
        (100, 15)
    """
    steps = max(1, n_train // preset["batch_size"])
    return max(preset["epochs"], math.ceil(preset.get("min_steps", 0) / steps))


def paired_scores(target: np.ndarray, correct: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-image scores whose mean is the balanced accuracy: ``correct_i * N / (C' * n_{y_i})``, with
    ``C'`` the classes present in ``target``.

    Example:
        >>> target, correct = np.array([0, 0, 0, 1]), np.array([1, 1, 0, 1])
        >>> s = paired_scores(target, correct, 2)
        >>> float(s.mean()), (2 / 3 + 1) / 2
        (0.8333333333333333, 0.8333333333333333)
    """
    counts = np.bincount(target, minlength=num_classes)
    present = int((counts > 0).sum())
    return correct * len(target) / (present * counts[target])


def _predictions(run_dir: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Names, targets and correctness of a run's test predictions (``predictions/predictions.csv``)."""
    with open(run_dir / "predictions" / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    target = np.array([int(r["target"]) for r in rows])
    return [r["name"] for r in rows], target, (np.array([int(r["prediction"]) for r in rows]) == target).astype(float)


class _Claims:
    def __init__(self, ctx: Any) -> None:
        from medbalance._suggest import did_you_mean
        from medbalance.errors import ConfigError

        if ctx.data == "phantom":
            raise ConfigError(
                "--data: longtail-claims needs a real dataset with its own test split (pneumoniamnist, "
                "breastmnist or a MedMNIST .npz); the phantoms draw a new test set per seed"
            )
        self.ctx = ctx
        preset = dict(SCALES[ctx.scale])
        opts = ctx.options
        for key in ("epochs", "batch_size", "min_tail"):
            if opts[key]:
                preset[key] = opts[key]
        if opts["min_steps"] >= 0:
            preset["min_steps"] = opts["min_steps"]
        elif opts["epochs"]:
            preset["min_steps"] = 0
        if opts["irs"]:
            preset["irs"] = [float(v) for v in opts["irs"]]
        if opts["n_max"] >= 0:
            preset["n_max"] = opts["n_max"] or None
        known = list(ROWS)[1:]
        for method in opts["methods"]:
            if method not in known:
                hint = did_you_mean(method, known)
                raise ConfigError(f"option 'methods' has {method!r} ({hint}expected some of: {', '.join(known)})")
        self.preset = preset
        self.rows = [BASELINE, *(opts["methods"] or list(ROWS)[1:])]

    def source(self) -> tuple[list[int], list[str]]:
        """Training images per class of the whole source, and the class names."""
        from medbalance.data.build import build_splits

        cfg = self.ctx.base_config(data=self.ctx.data_section({}), model={"name": "resnet32"}, loss="ce")
        train = build_splits(cfg).train
        return np.bincount(train.target, minlength=train.num_classes).tolist(), list(train.class_names)

    def train(self, row: str, item: dict, seed: int) -> tuple[dict, Path]:
        ir = item["ir"]
        section = {
            **self.ctx.data_section({}),
            "imbalance_ratio": ir,
            "n_max": self.preset["n_max"],
            "seed": seed,
            "balanced_test": False,
        }
        preset = {**self.preset, "epochs": item["epochs"]}
        cfg = recipe_config(self.ctx, ROWS[row], preset, data=section, seed=seed)
        key = f"{_slug(row)}/ir{ir:g}/seed{seed}"
        return self.ctx.run(key, cfg), self.ctx.run_dir / "runs" / key


def _verdict(d, baseline: str) -> str:
    if d.holds is True:
        return f"holds: better than {baseline}"
    if d.holds is False:
        return f"fails: worse than {baseline}"
    return "not shown: the interval contains 0"


def _pairs(
    per_case: dict, pairs: list[tuple[str, str]], *, ir: float, n_resamples: int
) -> tuple[list[str], list[dict]]:
    """Markdown rows and ``claims.json`` entries of each ``(method, baseline)`` pair: the paired
    differences of balanced accuracy and tail recall with their intervals and verdicts."""
    from medbalance.experiments.stats import paired_difference

    lines, entries = [], []
    for method, base in pairs:
        (balanced, tail), (base_balanced, base_tail) = per_case[method], per_case[base]
        d_bal = paired_difference(balanced, base_balanced, n_resamples=n_resamples, seed=0)
        d_tail = paired_difference(tail, base_tail, n_resamples=n_resamples, seed=0)
        cells = [d_bal.text(), _verdict(d_bal, base), d_tail.text(), _verdict(d_tail, base)]
        lines.append(f"| {method} - {base} | " + " | ".join(cells) + " |")
        entries.append(
            {
                "ir": ir,
                "method": method,
                "baseline": base,
                "balanced_accuracy": d_bal.to_dict(),
                "tail_recall": d_tail.to_dict(),
            }
        )
    return lines, entries


def run(ctx: Any) -> dict:
    """Train every row at every real ratio and seed, write the tables, the paired differences and the verdicts."""
    exp = _Claims(ctx)
    p = exp.preset
    counts, names = exp.source()
    plan = train_counts(counts, p["irs"], n_max=p["n_max"], min_tail=p["min_tail"])
    for item in plan:
        item["epochs"] = epochs_for(p, sum(item["counts"]))
    count_table = ctx.table(
        "Training images per class at each IR",
        [*names, "tail", "trained", "epochs"],
        row_label="IR",
        note=f"A ratio whose tail class would have fewer than {p['min_tail']} images is not trained (trained 0).",
        digits=0,
    )
    for item in plan:
        cells = {**dict(zip(names, item["counts"])), "tail": item["tail"], "trained": int(item["real"])}
        cells["epochs"] = item["epochs"]
        count_table.add(f"IR {item['ir']:g}", cells, seed=ctx.seeds[0])

    claims, lines, proposed_lines = [], [], []
    for item in (i for i in plan if i["real"]):
        ir = item["ir"]
        tail_class = int(np.argmin([c if c > 0 else np.inf for c in item["counts"]]))
        recall_cols = [f"recall {n}" for n in names]
        table = ctx.table(
            f"IR {ir:g}: test scores (whole test split)",
            ["balanced accuracy", "macro-F1", *recall_cols, "ECE", "AUC"],
            note=f"Training images per class: {dict(zip(names, item['counts']))}; tail class '{names[tail_class]}'.",
        )
        per_case: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for row in exp.rows:
            balanced, tail = [], []
            for seed in ctx.seeds:
                metrics, run_dir = exp.train(row, item, seed)
                test = metrics["test"]
                cells = {"balanced accuracy": test["macro_recall"], "macro-F1": test["macro_f1"]}
                cells.update({col: r for col, r in zip(recall_cols, test["recall"])})
                cells.update({"ECE": test["ece"], "AUC": test["auc"]})
                table.add(row, cells, seed=seed)
                case_names, target, correct = _predictions(run_dir)
                if "names" in per_case and case_names != per_case["names"]:
                    raise RuntimeError(f"run '{run_dir}' scored other test images than the first run")
                per_case["names"] = case_names
                balanced.append(paired_scores(target, correct, len(names)))
                tail.append(correct[target == tail_class])
            per_case[row] = (np.stack(balanced), np.stack(tail))
        heading = [
            f"### IR {ir:g} (tail '{names[tail_class]}': {item['tail']} training images)",
            "",
            "| difference | balanced accuracy [95% CI] | verdict | tail recall [95% CI] | verdict |",
            "|---|---|---|---|---|",
        ]
        n = ctx.options["n_resamples"]
        rows, entries = _pairs(per_case, [(row, BASELINE) for row in exp.rows[1:]], ir=ir, n_resamples=n)
        lines += [*heading, *rows, ""]
        claims += entries
        others = [row for row in exp.rows[1:] if row != PROPOSED]
        if PROPOSED in exp.rows and others:
            rows, entries = _pairs(per_case, [(PROPOSED, row) for row in others], ir=ir, n_resamples=n)
            proposed_lines += [*heading, *rows, ""]
            claims += entries
    atomic_write_text(ctx.run_dir / "claims.json", json.dumps({"plan": plan, "claims": claims}, indent=1))
    refused = [f"IR {i['ir']:g} (tail {i['tail']})" for i in plan if not i["real"]]
    cap = f"head class capped at {p['n_max']} images" if p["n_max"] else "head class whole"
    floor = f", more where a ratio would train under {p['min_steps']} optimiser steps (the table above)"
    floor = floor if p["min_steps"] else ""
    paragraphs = [
        f"Data: '{ctx.data}', a seeded long-tailed training subset per (IR, seed) ({cap}); validation split "
        "balanced by subsampling; the whole test split, the same images for every run. Refused (tail class "
        f"under {p['min_tail']} images): " + (", ".join(refused) if refused else "none") + ".",
        f"Networks: CIFAR ResNet layout, widths {p['widths']}, {p['blocks']} block(s) per stage; SGD lr "
        f"{ctx.options['lr']:g}, momentum 0.9, weight decay 2e-4, cosine, {p['epochs']} epochs{floor} (MiSLAS: + "
        f"{p['classifier_epochs']} classifier epochs), {p['batch_size']} images per batch (per branch for BBN / "
        "LSKBB), no augmentation; the checkpoint of the best balanced validation accuracy is tested.",
        "Paired differences (method - CE, and LSKBB - each other method) over the test images, seeds averaged "
        "per image, 95% percentile "
        f"bootstrap ({ctx.options['n_resamples']} resamples, scipy.stats.bootstrap); balanced accuracy pairs "
        "the class-weighted correctness of each image (its mean is the balanced accuracy), tail recall the "
        "correctness of the tail class's images. A claim holds when the whole interval is above 0.",
    ]
    claims_md = "\n".join(["## Claims: each method vs plain CE", "", *lines])
    if proposed_lines:
        claims_md += "\n" + "\n".join(
            [f"## Seed 001's claim: {PROPOSED} vs each other long-tail method", "", *proposed_lines]
        )
    return ctx.write_report("\n\n".join(paragraphs) + "\n\n" + claims_md)
