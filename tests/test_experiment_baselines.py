"""`medbalance experiment baselines`: recipes per set and seed, tabulated against published numbers."""

from __future__ import annotations

import json

import pytest

from medbalance.errors import ConfigError
from medbalance.experiments.baselines import REFERENCES, _scores
from medbalance.experiments.runner import run_experiment


def test_smoke_run_tables_and_resume_reuses_finished_runs(tmp_path, one_thread):
    result = run_experiment(
        "baselines", scale="smoke", seeds=[3], options=["sets=demo,longtail"], out=tmp_path, progress=False
    )
    folder = result.run_dir
    summary = json.loads((folder / "baselines.json").read_text())
    assert set(summary) == {"demo", "longtail"}
    assert [r["seed"] for r in summary["demo"]["runs"]] == [3]
    demo = summary["demo"]["runs"][0]
    assert 0.0 <= demo["scores"]["dice"] <= 1.0 and demo["epochs"] == 1 and demo["steps_per_epoch"] == 2
    assert set(summary["longtail"]["runs"][0]["scores"]) == {"accuracy", "balanced_accuracy", "auc"}
    md = (folder / "results.md").read_text()
    assert "seed: 3" in (folder / "runs" / "demo" / "seed3" / "config.yaml").read_text()
    assert "| demo (dice) |" in md and "| longtail (accuracy) |" in md
    assert md.startswith("# baselines (smoke scale, data: demo, longtail)")  # the sets, not --data's default
    metrics = folder / "runs" / "demo" / "seed3" / "metrics.json"
    stamp = metrics.stat().st_mtime_ns
    again = run_experiment("baselines", resume=folder, progress=False)
    assert metrics.stat().st_mtime_ns == stamp  # finished runs are read, not retrained
    assert json.loads((again.run_dir / "baselines.json").read_text()) == summary
    assert (folder / "results.md").read_text().startswith("# baselines (smoke scale, data: demo, longtail)")


def test_data_comes_from_the_sets_option_not_data(tmp_path):
    with pytest.raises(ConfigError, match="reads its data from its recipes"):
        run_experiment("baselines", scale="smoke", data="drive", out=tmp_path, progress=False)
    assert not any(tmp_path.iterdir())  # refused before any folder was made


def test_binary_dice_is_pooled_from_the_confusion_matrix(tmp_path):
    # 3 classes: foreground = classes 1 and 2 merged; a 1 <-> 2 confusion still counts as foreground
    matrix = [[90, 5, 5], [2, 30, 8], [3, 2, 20]]
    scores = _scores(tmp_path, {"test": {"mean_dice_fg": 0.5}, "confusion": {"matrix": matrix}})
    tp, fp, fn = 30 + 8 + 2 + 20, 10, 5
    assert scores["binary_dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert scores["mean_dice_fg"] == 0.5


def test_every_reference_names_its_source_and_an_unknown_set_is_refused(tmp_path):
    assert all(r.source and 0 < r.value < 1 for r in REFERENCES.values())
    with pytest.raises(ConfigError, match="does not exist"):
        run_experiment("baselines", scale="smoke", options=["sets=nope"], out=tmp_path, progress=False)
