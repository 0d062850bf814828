"""k-fold cross-validation: train every fold, score the out-of-fold predictions, predict by the ensemble.

A cross-validation folder (``medbalance train CONFIG --fold all``)::

    <name>-cv-<time>/
        config.yaml          the config (with its cv section)
        splits_final.json    the folds, nnU-Net's format
        fold_0/ ... fold_K/  one normal run folder per fold (resumable)
        cv_results/          out-of-fold predictions, cases.csv / cases.json, summary.json

The ensemble of the folds predicts by averaging their probabilities (each fold applies its own
normalisation, fitted on its own training cases) and then taking the label as one run does:
the threshold for one sigmoid channel, else the arg-max.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medbalance._atomic import atomic_write_text
from medbalance.config import CrossValidation, RunConfig, dump_config, load_config
from medbalance.data.build import build_splits, source_splits
from medbalance.data.datasets import ArrayDataset
from medbalance.data.folds import cv_pool, is_cv_dir, pool_folds, read_splits, write_splits
from medbalance.engine.run import (
    CaseScores,
    LoadedRun,
    PredictionWriter,
    _Both,
    case_table,
    is_native,
    load_run,
    predict_arrays,
    predict_image,
    train,
)
from medbalance.engine.rundir import create_run_dir
from medbalance.errors import CheckpointError, ConfigError, DataError
from medbalance.metrics import classification_scores

__all__ = [
    "CVResult",
    "train_cv",
    "resume_cv",
    "is_cv_dir",
    "load_folds",
    "ensemble_image",
    "ensemble_arrays",
    "evaluate_ensemble",
    "write_out_of_fold",
]

log = logging.getLogger(__name__)

SPLITS_FILE = "splits_final.json"
RESULTS = "cv_results"


@dataclass
class CVResult:
    cv_dir: Path
    fold_dirs: list[Path]
    summary: dict


def _fold_config(cfg: RunConfig, cv_dir: Path, fold: int) -> RunConfig:
    """Fold ``fold``'s config: the folds of ``cv_dir/splits_final.json`` (absolute: a fold resumes alone)."""
    cv = (cfg.cv or CrossValidation()).model_copy(
        update={"fold": fold, "splits": str((cv_dir / SPLITS_FILE).resolve()), "folds": None}
    )
    return cfg.model_copy(update={"cv": cv})


def train_cv(cfg: RunConfig, *, out: str | Path = "runs", progress: bool | None = None) -> CVResult:
    """Train every fold of ``cfg.cv`` into ``out/<name>-cv-<time>/fold_K/``, then score the out-of-fold predictions.

    The folds are drawn (or read from ``cv.splits``) and checked before any folder is made.
    """
    if str(cfg.devices) != "1":
        raise ConfigError(f"cross-validation trains its folds on one device; got devices: {cfg.devices} (use --fold K)")
    cv = (cfg.cv or CrossValidation()).model_copy(update={"fold": None})
    cfg = cfg.model_copy(update={"cv": cv})
    pool, groups = cv_pool(source_splits(cfg))  # as fold_splits divides it: native, before resampling
    folds = pool_folds(cv, pool, groups)
    cv_dir = create_run_dir(out, f"{cfg.name}-cv", run=False)
    write_splits(cv_dir / SPLITS_FILE, folds)
    atomic_write_text(cv_dir / "config.yaml", dump_config(cfg))
    log.info("cross-validation: %d folds of %d cases in %s", len(folds), len(pool), cv_dir)
    return resume_cv(cv_dir, progress=progress)


def resume_cv(cv_dir: str | Path, *, progress: bool | None = None) -> CVResult:
    """Train the folds of ``cv_dir`` not yet finished (resuming an interrupted one), then score out of fold."""
    cv_dir = Path(cv_dir)
    cfg = load_config(cv_dir / "config.yaml")
    folds = read_splits(cv_dir / SPLITS_FILE)
    dirs = []
    for k in range(len(folds)):
        fold_dir = cv_dir / f"fold_{k}"
        dirs.append(fold_dir)
        if (fold_dir / "metrics.json").is_file():
            continue
        if (fold_dir / "checkpoints" / "last.pt").is_file():
            log.info("fold %d: resuming %s", k, fold_dir)
            train(out=cv_dir, resume=fold_dir, progress=progress)
            continue
        if fold_dir.exists():  # made, but killed before its first checkpoint: nothing to keep
            shutil.rmtree(fold_dir)
        log.info("fold %d of %d", k, len(folds))
        train(_fold_config(cfg, cv_dir, k), out=cv_dir, folder=fold_dir.name, progress=progress)
    results = cv_dir / RESULTS
    if (results / "summary.json").is_file():
        return CVResult(cv_dir, dirs, json.loads((results / "summary.json").read_text(encoding="utf-8")))
    shutil.rmtree(results, ignore_errors=True)  # an out-of-fold pass a kill cut short
    return CVResult(cv_dir, dirs, write_out_of_fold(cv_dir, results))


def write_out_of_fold(cv_dir: str | Path, results: str | Path) -> dict:
    """Predict every fold's validation cases with that fold's best checkpoint; write them and their scores.

    ``results`` (new) receives ``predictions/`` (as a run's), segmentation's per-case table of
    all the cases (``cases.csv``, ``cases.json``) and ``summary.json``: each fold's validation
    scores and the out-of-fold summary (the case table's, or classification scores of the
    pooled confusion matrix).
    """
    cv_dir, results = Path(cv_dir), Path(results)
    cfg = load_config(cv_dir / "config.yaml")
    folds = read_splits(cv_dir / SPLITS_FILE)
    writer, table, per_fold, confusion = None, None, [], 0
    for k in range(len(folds)):
        run = load_run(cv_dir / f"fold_{k}")
        data = build_splits(_fold_config(cfg, cv_dir, k)).val
        if writer is None:
            writer = PredictionWriter(data, run.task, results / "predictions")
            table = case_table(run, data).table if run.task.name == "segmentation" else None
        writer.data = data  # one writer over the folds: one predictions.csv
        on_batch = writer if table is None else _Both(writer, CaseScores(table, data))
        evaluation = run.engine().evaluate(data, on_batch=on_batch, full=True)
        confusion = confusion + evaluation.confusion  # the out-of-fold matrix sums the folds'
        scalars = {key: v for key, v in evaluation.scores.items() if isinstance(v, float)}
        per_fold.append({"fold": k, "cases": len(data), **scalars})
    writer.close()
    summary: dict = {"folds": len(folds), "per_fold": per_fold, "confusion": confusion.tolist()}
    if table is not None:
        table.write(results)
        summary["out_of_fold"] = table.summary()
    else:
        scores = classification_scores(confusion)
        summary["out_of_fold"] = {key: v for key, v in scores.items() if isinstance(v, float)}
    atomic_write_text(results / "summary.json", json.dumps(summary, indent=1))
    log.info("out-of-fold scores of %d folds: %s", len(folds), results)
    return summary


def load_folds(cv_dir: str | Path) -> list[LoadedRun]:
    """The trained folds of a cross-validation folder (best checkpoints), checked to agree.

    Raises:
        CheckpointError: a fold without a best checkpoint, or folds of different tasks / inputs.
    """
    cv_dir = Path(cv_dir)
    folds = read_splits(cv_dir / SPLITS_FILE)
    runs = []
    for k in range(len(folds)):
        if not (cv_dir / f"fold_{k}" / "checkpoints" / "best.pt").is_file():
            raise CheckpointError(
                f"fold {k} of '{cv_dir}' is not trained (no fold_{k}/checkpoints/best.pt); "
                f"finish it with 'medbalance train --resume {cv_dir}'"
            )
        runs.append(load_run(cv_dir / f"fold_{k}"))
    keys = ("task", "num_classes", "in_channels", "out_channels", "spatial_dims")
    for k, run in enumerate(runs[1:], 1):
        for key in keys:
            if run.meta.get(key) != runs[0].meta.get(key) or is_native(run) != is_native(runs[0]):
                raise CheckpointError(f"fold {k} of '{cv_dir}' differs from fold 0 in '{key}'; not one ensemble")
    return runs


def _labels(run: LoadedRun, probs: np.ndarray) -> np.ndarray:
    """Labels of probabilities ``(N, C, ...)`` as ``run.task.predict`` takes them from logits, post-processed."""
    if run.task.out_channels == 1:  # sigmoid(x) > t exactly when x > logit(t)
        labels = (probs[:, 0] > run.task.threshold).astype(np.int64)
    else:
        labels = probs.argmax(axis=1).astype(np.int64)
    return run.task.postprocess(torch.from_numpy(labels)).numpy()


def ensemble_image(
    runs: list[LoadedRun], image: np.ndarray, *, spacing: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Mean probabilities ``(C_out, *spatial)`` and labels of one native-size image over the folds.

    Each fold predicts as :func:`medbalance.engine.run.predict_image` (its own normalisation,
    sliding window, target spacing); ``image`` holds stored intensities ``(C_in, *spatial)``,
    ``spacing`` its pixel / voxel size in array axis order.
    """
    probs = np.mean([predict_image(run, image, spacing=spacing)[0] for run in runs], axis=0)
    return probs, _labels(runs[0], probs[None])[0]


def ensemble_arrays(runs: list[LoadedRun], images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean probabilities and labels of ``(N, C_in, H, W)`` images over the folds (:func:`predict_arrays`)."""
    probs = np.mean([predict_arrays(run, images)[0] for run in runs], axis=0)
    return probs, _labels(runs[0], probs)


def evaluate_ensemble(runs: list[LoadedRun], data: ArrayDataset, *, cases: str | Path | None = None) -> dict:
    """Scores of the fold ensemble on ``data``, as :func:`medbalance.engine.run.evaluate_run` gives one run's.

    Segmentation cases are also written to the new folder ``cases`` (``cases.csv``, ``cases.json``).
    """
    first = runs[0]
    if data.num_classes > first.task.num_classes or data.in_channels != first.meta["in_channels"]:
        raise DataError(
            f"the data ({data.num_classes} classes, {data.in_channels} channels) does not fit the folds "
            f"({first.task.num_classes} classes, {first.meta['in_channels']} channels)"
        )
    evaluator = first.task.evaluator(scorers=data.scorers)
    scorer = case_table(first, data) if first.task.name == "segmentation" else None
    for i in range(len(data)):
        if is_native(first):
            probs, labels = ensemble_image(runs, data.images[i], spacing=data.spacing_of(i))
            probs, labels = probs[None], labels[None]
        else:
            probs, labels = ensemble_arrays(runs, data.image(i)[None])
        sample = data[i]
        batch = {key: v[None] for key, v in sample.items()}
        preds = torch.from_numpy(labels)
        # the evaluator takes logits for classification's calibration error: log-probabilities give the same softmax
        evaluator.update(preds, batch, torch.from_numpy(np.log(np.clip(probs, 1e-12, None))))
        if scorer is not None:
            scorer(batch, None, preds)
    scores = evaluator.compute().scores
    if scorer is not None:
        scores["cases"] = scorer.table.summary()
        if cases is not None:
            scorer.table.write(cases)
    return scores
