"""`medbalance experiment rare-class`: rarest class, equal budget, selection on validation only, paired test."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml

from medbalance.errors import ConfigError
from medbalance.experiments.rare_class import (
    CANDIDATES,
    SetFacts,
    _merge,
    _pooled_dice,
    case_scores,
    default_recipe,
    rarest_class,
    select,
)
from medbalance.experiments.runner import run_experiment

TINY = {
    "name": "tiny",
    "epochs": 2,
    "batch_size": 2,
    "lr": 0.002,
    "patch_size": [32, 32],
    "steps_per_epoch": 2,
    "data": {"kind": "nuclei_phantom", "size": 32, "n_train": 8, "n_val": 4, "n_test": 6},
    "model": {"name": "unet", "base_channels": 4, "depth": 2},
    "evaluation": {"surface": False},
    "loss": [{"name": "dice", "include_background": False}, {"name": "ce"}],
}


@pytest.fixture(scope="module")
def tiny_experiment(tmp_path_factory):
    """One smoke run of two candidates on a tiny nuclei phantom recipe (shared by the tests below)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("rare")
    recipe = root / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(TINY))
    try:
        result = run_experiment(
            "rare-class",
            scale="smoke",
            options=[f"sets={recipe}", "candidates=dice_focal,tversky_ce"],
            out=root / "out",
            progress=False,
        )
    finally:
        torch.set_num_threads(threads)
    return result.run_dir


def _rewrite(path, change):
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))


def test_smoke_rows_share_the_budget_and_the_report_states_the_policy(tiny_experiment):
    folder = tiny_experiment
    summary = json.loads((folder / "rare_class.json").read_text())["tiny"]
    assert set(summary["validation"]) == {"default", "dice_focal", "tversky_ce"}
    assert summary["selected"] in ("dice_focal", "tversky_ce")
    cases = summary["test_cases"]
    assert cases["with_class"] + cases["without_class"] == 6
    budgets = set()
    for row in ("default", "dice_focal", "tversky_ce"):
        cfg = yaml.safe_load((folder / "runs" / "tiny" / row / "seed0" / "config.yaml").read_text())
        budgets.add((cfg["epochs"], cfg["steps_per_epoch"], cfg["batch_size"]))
    assert budgets == {(1, 2, 2)}
    default = yaml.safe_load((folder / "runs" / "tiny" / "default" / "seed0" / "config.yaml").read_text())
    assert default["sampler"] == "foreground" and default["foreground_fraction"] == 0.33
    assert default["model"]["deep_supervision"] is True and default["loss"] == "dice_ce"
    md = (folder / "results.md").read_text()
    assert "| tiny / default |" in md and "Validation Dice of the rarest class" in md
    # the paired difference re-derived from the two rows' cases.csv
    c, selected = summary["rarest_class"]["index"], summary["selected"]

    def rows(label):
        path = folder / "runs" / "tiny" / label / "seed0" / "evaluations" / "test" / "cases.csv"
        table = np.genfromtxt(path, delimiter=",", names=True, dtype=None, encoding="utf-8")
        table = table[table["class_index"] == c]
        return table[np.argsort(table["case"])]

    base, chosen = rows("default"), rows(selected)
    assert (base["case"] == chosen["case"]).all() and (base["target_pixels"] == chosen["target_pixels"]).all()
    present = base["target_pixels"] > 0
    assert present.sum() == cases["with_class"]
    difference = summary["paired_difference"]["present"]
    assert difference["mean"] == pytest.approx(float(np.mean(chosen["dice"][present] - base["dice"][present])))
    assert difference["low"] <= difference["mean"] <= difference["high"] and difference["n_cases"] == present.sum()
    assert "empty = 1 if none predicted" in md


def _history(path):
    """history.csv without its wall-clock column."""
    lines = [line.split(",") for line in path.read_text().splitlines()]
    keep = [i for i, name in enumerate(lines[0]) if name != "seconds"]
    return [[row[i] for i in keep] for row in lines]


def test_jobs_train_the_independent_runs_in_workers_with_the_same_results(tiny_experiment, tmp_path, caplog):
    import logging

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the fixture's thread count, so the workers get it too
    try:
        with caplog.at_level(logging.INFO, logger="medbalance.experiment"):
            result = run_experiment(
                "rare-class",
                scale="smoke",
                options=[f"sets={tiny_experiment.parent.parent / 'tiny.yaml'}", "candidates=dice_focal,tversky_ce"],
                out=tmp_path,
                progress=False,
                jobs=2,
            )
    finally:
        torch.set_num_threads(threads)
    assert "training 3 runs, 2 at a time (1 thread(s) each)" in caplog.text  # the tuning runs, in workers
    for row in ("default", "dice_focal", "tversky_ce"):
        ours, theirs = (f / "runs" / "tiny" / row / "seed0" / "history.csv" for f in (result.run_dir, tiny_experiment))
        assert _history(ours) == _history(theirs), row  # bitwise the same losses and validation scores
    assert "jobs" not in json.loads((result.run_dir / "experiment.json").read_text())
    with pytest.raises(ConfigError, match="jobs must be a whole number >= 1, got 0"):
        run_experiment("rare-class", scale="smoke", out=tmp_path, progress=False, jobs=0)


def test_selection_is_the_validation_argmax_and_reads_no_test_score(tiny_experiment):
    folder = tiny_experiment
    c = json.loads((folder / "rare_class.json").read_text())["tiny"]["rarest_class"]["index"]
    runs = folder / "runs" / "tiny"

    def val_dice(value):
        def change(m):
            m["val"]["dice"][c] = value
            m["val"]["absent_classes"] = []

        return change

    # dice_focal: best on validation; tversky_ce: far better test scores, then its test files removed
    _rewrite(runs / "dice_focal" / "seed0" / "metrics.json", val_dice(0.9))
    _rewrite(runs / "tversky_ce" / "seed0" / "metrics.json", val_dice(0.1))
    cases = runs / "tversky_ce" / "seed0" / "evaluations" / "test" / "cases.csv"
    lines = cases.read_text().splitlines()
    header = lines[0].split(",")
    perfect = []
    for line in lines[1:]:
        row = dict(zip(header, line.split(",")))
        if row["class_index"] == str(c) and row["target_pixels"] != "0":
            row.update(dice="1.0", pred_pixels=row["target_pixels"])
        perfect.append(",".join(row[h] for h in header))
    cases.write_text("\n".join([lines[0], *perfect]) + "\n")
    again = run_experiment("rare-class", resume=folder, progress=False)
    assert json.loads((again.run_dir / "rare_class.json").read_text())["tiny"]["selected"] == "dice_focal"

    cases.unlink()  # selection must not need the unselected candidate's test scores
    _rewrite(runs / "tversky_ce" / "seed0" / "metrics.json", lambda m: m.pop("test"))
    again = run_experiment("rare-class", resume=folder, progress=False)
    assert json.loads((again.run_dir / "rare_class.json").read_text())["tiny"]["selected"] == "dice_focal"


def test_case_scores_count_dice_where_the_class_is_and_false_alarms_where_it_is_not(tmp_path):
    folder = tmp_path / "evaluations" / "test"
    folder.mkdir(parents=True)
    (folder / "cases.csv").write_text(
        "case,class_index,class,target_pixels,pred_pixels,dice,iou,precision,recall\n"
        "a,1,x,10,8,0.7,0.5,0.8,0.6\n"
        "a,2,y,5,0,0.0,0.0,0.0,0.0\n"
        "b,2,y,0,0,nan,nan,nan,nan\n"
        "c,2,y,0,3,nan,nan,nan,nan\n"
        "d,2,y,4,4,0.5,0.3,0.5,0.5\n"
    )
    assert case_scores(tmp_path, 2) == {"a": (5, 0.0), "b": (0, 1.0), "c": (0, 0.0), "d": (4, 0.5)}
    with pytest.raises(Exception, match="no row of class 3"):
        case_scores(tmp_path, 3)


def test_pooled_dice_matches_the_masks():
    rng = np.random.default_rng(0)
    truth, pred = rng.integers(0, 4, 500), rng.integers(0, 4, 500)
    matrix = np.zeros((4, 4), int)
    np.add.at(matrix, (truth, pred), 1)
    for c in range(4):
        t, p = truth == c, pred == c
        assert _pooled_dice({"confusion": {"matrix": matrix.tolist()}}, c) == pytest.approx(
            2 * (t & p).sum() / (t.sum() + p.sum())
        )


def test_rarest_class_is_the_least_counted_present_foreground():
    counts = np.array([10_000, 300, 0, 12, 45])
    fg = np.where(counts[1:] > 0, counts[1:], np.iinfo(np.int64).max)
    assert rarest_class(counts) == int(np.argmin(fg)) + 1 == 3
    assert rarest_class([900, 100]) == 1
    with pytest.raises(Exception, match="no foreground"):
        rarest_class([10, 0])


def test_select_skips_nan_and_averages_seeds():
    assert select({"a": [0.5, 0.7], "b": [0.65], "c": [math.nan]}) == "b"
    with pytest.raises(Exception, match="no candidate"):
        select({"a": [math.nan]})


def test_candidate_recipes_are_valid_and_reuse_background_keeps_the_budget():
    from medbalance.config import parse_config

    facts = SetFacts((0.9, 0.07, 0.03), 25)
    base = default_recipe(dict(TINY))
    for name, candidate in CANDIDATES.items():
        parse_config(_merge(base, candidate.keys(facts)), source=name)
    reuse = CANDIDATES["reuse_background"].keys(facts)
    assert reuse["epochs"] + reuse["method"]["binary_epochs"] == 25
    loss = CANDIDATES["dice_ce_invsqrt"].keys(facts)["loss"][1]["class_weight"]
    from medbalance.losses import class_weights

    weights = class_weights(loss["fractions"], loss["scheme"]).numpy()
    expected = 1 / np.sqrt(facts.fractions)
    np.testing.assert_allclose(weights, expected / expected.sum(), rtol=1e-5)


@pytest.mark.parametrize("binary", [True, False])
def test_every_loss_of_the_grid_leaves_out_ignored_pixels(binary):
    # DRIVE marks the pixels outside the field of view 255: every row's loss must take ignore_index
    import torch

    from medbalance.losses import build_loss

    counts = [900, 100] if binary else [900, 70, 30]
    facts = SetFacts(tuple(c / sum(counts) for c in counts), 20)
    specs = [default_recipe({})["loss"]] + [
        c.keys(facts)["loss"] for c in CANDIDATES.values() if "loss" in c.keys(facts)
    ]
    logits = torch.randn(2, 1 if binary else 3, 8, 8, requires_grad=True)
    target = torch.randint(0, len(counts), (2, 8, 8))
    ignored = target.clone()
    ignored[:, :4] = 255
    for spec in specs:
        loss = build_loss(spec, class_counts=counts, binary=binary, ignore_index=255)
        (grad,) = torch.autograd.grad(loss(logits, ignored), logits)
        assert torch.isfinite(grad).all() and grad[..., :4, :].abs().max() == 0, spec


def test_unknown_candidate_and_tune_seeds_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="option 'candidates' has 'dice_focl' \\(did you mean 'dice_focal'"):
        run_experiment("rare-class", scale="smoke", options=["candidates=dice_focl"], out=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="tune_seeds"):
        run_experiment("rare-class", scale="smoke", options=["tune_seeds=2"], out=tmp_path, progress=False)
    binary = tmp_path / "binary.yaml"
    binary.write_text(yaml.safe_dump({**TINY, "data": {"kind": "intraclass_phantom", "size": 32, "n_train": 4}}))
    with pytest.raises(ConfigError, match="none of rare_class_p1 applies"):
        run_experiment(
            "rare-class",
            scale="smoke",
            options=[f"sets={binary}", "candidates=rare_class_p1"],
            out=tmp_path,
            progress=False,
        )
    with pytest.raises(ConfigError, match="config file 'nope' does not exist"):
        run_experiment("rare-class", scale="smoke", options=[f"sets={binary},nope"], out=tmp_path, progress=False)
    assert not list(tmp_path.glob("*/runs/*"))  # refused before any training
