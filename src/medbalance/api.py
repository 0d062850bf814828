"""The Python API: train a recipe, load a run, predict an image, evaluate a dataset.

The CLI is a thin layer over these four functions::

    import medbalance
    result = medbalance.train("dualpath", overrides=["epochs=2"], out="runs")
    run = medbalance.load_run(result.run_dir)
    probs, labels = medbalance.predict(run, image)          # (C_in, *spatial) -> (C_out, *spatial), (*spatial)
    scores = medbalance.evaluate(run, [(image, mask), ...])  # or MONAI-style {"image", "label"} dicts

**Batch contract.** Datasets are map-style sequences of samples: an ``(image, target)`` pair,
a MONAI-style ``{"image", "label"}`` dict or an :class:`~medbalance.data.datasets.ArrayDataset`.
``image`` is ``(C_in, *spatial)`` (stored values such as ``uint8`` / ``int16``, or floats);
``target`` is a label map ``(*spatial)`` or ``(1, *spatial)``, or an integer class. Inside the
engine a batch is a dict: ``image`` ``(N, C_in, *spatial)`` float32, ``target`` ``(N,
*spatial)`` or ``(N,)`` int64, ``index`` ``(N,)``, and any per-sample extras of the data (e.g.
dual-path's ``w_mac`` / ``w_mic``). Networks return logits ``(N, C_out, *spatial)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medbalance.config import RunConfig, apply_overrides, load_config, parse_config
from medbalance.configs import config_path
from medbalance.data.datasets import as_dataset
from medbalance.engine.run import LoadedRun, RunResult, evaluate_run, load_run, predict_image
from medbalance.engine.run import train as _train

__all__ = ["train", "load_run", "predict", "evaluate"]


def _recipe(recipe: RunConfig | dict | str | Path | None, overrides: list[str]) -> RunConfig:
    if isinstance(recipe, RunConfig):
        return parse_config(apply_overrides(recipe.model_dump(mode="json"), overrides)) if overrides else recipe
    if isinstance(recipe, dict):
        return parse_config(apply_overrides(recipe, overrides), source="recipe")
    return load_config(config_path(recipe if recipe is not None else "demo"), overrides)


def train(
    recipe: RunConfig | dict | str | Path | None = None,
    *,
    overrides: list[str] | None = None,
    data: Any = None,
    out: str | Path = "runs",
    resume: str | Path | None = None,
    progress: bool | None = None,
    folder: str | None = None,
) -> RunResult:
    """Train a recipe into a new run folder under ``out`` (or continue ``resume``).

    Args:
        recipe: a :class:`~medbalance.config.RunConfig`, a dict as read from YAML, a YAML
            file, or a built-in name (``"demo"``, ``"dualpath"``, ``"bbn"``...; default demo).
        overrides: ``key=value`` strings, as ``--set`` on the command line.
        data: ``(train, val)`` or ``(train, val, test)`` datasets instead of the recipe's data
            (see the batch contract above).
        out, resume, progress, folder: as :func:`medbalance.engine.run.train`.

    Returns:
        The run folder and its metrics.
    """
    cfg = None if resume is not None else _recipe(recipe, list(overrides or []))
    return _train(cfg, out=out, resume=resume, progress=progress, folder=folder, data=data)


def _loaded(run: LoadedRun | str | Path) -> LoadedRun:
    return run if isinstance(run, LoadedRun) else load_run(run)


def predict(run: LoadedRun | str | Path, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities ``(C_out, *spatial)`` and labels ``(*spatial)`` of one image ``(C_in, *spatial)``
    (segmentation) at its own size, through the run's normalisation and sliding window."""
    return predict_image(_loaded(run), np.asarray(image))


def evaluate(run: LoadedRun | str | Path, data: Any, *, cases: str | Path | None = None) -> dict:
    """Scores of a run on a labelled dataset (see the batch contract above); segmentation
    per-case rows go to the new folder ``cases`` when given."""
    run = _loaded(run)
    names = run.meta.get("class_names")
    return evaluate_run(run, as_dataset(data, num_classes=run.task.num_classes, class_names=names), cases=cases)
