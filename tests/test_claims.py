"""Issue 22's claims at equal compute: step budgets, per-case scores from run folders, the claims tables."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
import yaml

from medbalance.config import read_yaml
from medbalance.configs import config_path
from medbalance.errors import ConfigError
from medbalance.experiments import claims
from medbalance.experiments.runner import ExperimentContext, ResultTable, run_experiment
from medbalance.experiments.seed000 import SCALES
from medbalance.experiments.stats import paired_difference


# ----------------------------------------------------------------------------- pieces
def test_step_budget_arithmetic():
    budget = claims.StepBudget({"discriminator": 25, "paths": 25, "fusion": 25, "finetune": 6}, 50)
    assert budget.total_steps == (25 + 25 + 25 + 6) * 50 == 4050 and budget.epochs == 81
    assert claims.StepBudget({"binary": 10, "multi": 10}, 50).epochs == 20
    assert budget.to_dict()["total_steps"] == 4050
    with pytest.raises(ConfigError, match="epochs >= 1"):
        claims.StepBudget({"paths": 0}, 50)
    with pytest.raises(ConfigError, match="steps >= 1"):
        claims.StepBudget({"paths": 3}, 0)


def test_dataset_recipes_are_read_at_run_time_and_options_override_them():
    drive = claims.dataset_recipe("drive")
    assert drive == {k: v for k, v in read_yaml(config_path("drive")).items() if k not in ("name", "seed")}
    assert claims.dataset_recipe("phantom") is None and claims.dataset_recipe("/some/folder") is None
    base = claims.claims_base(drive, {}, {"epochs": 3, "width": 4, "lr": 0.0, "batch_size": 0})
    assert base["epochs"] == 3 and base["model"]["base_channels"] == 4 and base["lr"] == drive["lr"]
    assert drive["model"]["base_channels"] == read_yaml(config_path("drive"))["model"]["base_channels"]  # a copy
    nnunet = read_yaml(config_path("nnunet"))
    assert claims.nnunet_settings() == {
        "loss": nnunet["loss"],
        "sampler": nnunet["sampler"],
        "foreground_fraction": nnunet["foreground_fraction"],
        "deep_supervision": nnunet["model"]["deep_supervision"],
    }


def _cases_json(folder, rows, means=None):
    folder.mkdir(parents=True)
    summary = {"empty": "skip", **({"mean": means} if means is not None else {})}
    (folder / "cases.json").write_text(json.dumps({"summary": summary, "rows": rows}))


def test_case_scores_read_the_runs_table_and_average_the_scored_classes(tmp_path):
    rows = [
        {"case": "a", "class": "x", "dice": 0.5},
        {"case": "a", "class": "y", "dice": None},  # y absent from a's truth: skipped
        {"case": "b", "class": "x", "dice": 0.25},
        {"case": "b", "class": "y", "dice": 0.75},
        {"case": "c", "class": "x", "dice": None},
        {"case": "c", "class": "y", "dice": None},
    ]
    _cases_json(tmp_path / "run" / "evaluations" / "test", rows)
    s = claims.case_scores(tmp_path / "run")
    assert s.cases == ("a", "b", "c") and s.classes == ("x", "y") and s.empty == "skip"
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):  # numpy's nanmean as the reference
        reference = np.nanmean(np.array([[0.5, np.nan], [0.25, 0.75], [np.nan, np.nan]]), axis=1)
    np.testing.assert_allclose(s.mean_fg, reference)
    with pytest.raises(ConfigError, match=r"evaluations/test/cases.json' is missing"):
        claims.case_scores(tmp_path / "nothing")


def test_verdict_words_and_table_text_columns():
    assert [claims.verdict(v) for v in (True, False, None)] == ["holds", "does not hold", "no difference shown"]
    t = ResultTable("T", ("Dice",), columns=("diff", "verdict"))
    t.add("a", {"Dice": 0.5}, seed=0)
    t.add("b", {"Dice": 0.7}, seed=0)
    t.put("a", "verdict", "holds")
    assert t.to_markdown().splitlines() == [
        "| method | Dice | diff | verdict |",
        "|---|---:|---|---|",
        "| a | 0.5000 |  | holds |",
        "| b | 0.7000 |  |  |",
    ]
    assert t.to_dict()["texts"] == {"a": {"verdict": "holds"}} and "<th>verdict</th>" in t.to_html()
    with pytest.raises(KeyError, match="no text column 'p'"):
        t.put("a", "p", "x")


def test_add_claims_pairs_seeds_and_cases_and_leaves_out_unscored_ones(tmp_path):
    # two classes, three cases, two seeds per row; case "c" has neither class in its truth
    truth = {"a": (True, False), "b": (True, True), "c": (False, False)}
    rng = np.random.default_rng(0)
    runs: dict[str, dict[int, object]] = {}
    dice = {}
    for row, shift in (("base", 0.0), ("method", 0.1)):
        for seed in (0, 1):
            values = np.clip(rng.uniform(0.3, 0.8, (3, 2)) + shift, 0, 1)
            values[~np.array(list(truth.values()))] = np.nan
            dice[row, seed] = values
            rows = [
                {"case": case, "class": cls, "dice": None if np.isnan(values[i, k]) else float(values[i, k])}
                for i, case in enumerate(truth)
                for k, cls in enumerate(("x", "y"))
            ]
            folder = tmp_path / row / str(seed)
            means = {"precision": 0.9 - shift, "recall": 0.6 + shift + seed / 10, "hd95": None, "nsd": 0.5}
            _cases_json(folder / "evaluations" / "test", rows, means)
            (folder / "history.csv").write_text(f"epoch,seconds\n1,{seed + 1.5}\n2,1\n")
            runs.setdefault(row, {})[seed] = folder
    ctx = ExperimentContext("t", "smoke", tmp_path, (0, 1), "phantom", {})
    table = claims.add_claims(ctx, "T", runs, method="method", baselines=["base"])
    assert table.metrics == ("Dice", "Dice x", "Dice y", "precision", "recall", "HD95") and ctx.tables == [table]
    # the evaluation summary's means, as each run wrote them (an undefined HD95 stays NaN)
    assert table.rows["method"]["recall"] == {0: pytest.approx(0.7), 1: pytest.approx(0.8)}
    assert table.rows["base"]["precision"][1] == pytest.approx(0.9) and np.isnan(table.rows["base"]["HD95"][0])
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        fg = {key: np.nanmean(v, axis=1) for key, v in dice.items()}  # per-case mean fg Dice, NaN for "c"
    for seed in (0, 1):
        assert table.rows["method"]["Dice"][seed] == pytest.approx(np.nanmean(fg["method", seed]))
        assert table.rows["base"]["Dice y"][seed] == pytest.approx(dice["base", seed][1, 1])  # only "b" holds y
    expected = ((fg["method", 0] + fg["method", 1]) / 2 - (fg["base", 0] + fg["base", 1]) / 2)[:2]
    d = table.extra["differences"]["base"]
    assert d["mean_fg"]["mean"] == pytest.approx(expected.mean()) and d["mean_fg"]["n_cases"] == 2
    assert d["y"]["n_cases"] == 1 and d["mean_fg"]["n_seeds"] == 2
    assert table.texts["base"]["verdict"] == claims.verdict(d["mean_fg"]["holds"])
    assert table.extra["per_case"]["method"][0]["mean_fg"][2] is None
    assert table.extra["epoch_seconds"]["base"] == {0: 2.5, 1: 3.5}
    with pytest.raises(ConfigError, match="row .odd. seed 0 .* scored different test cases"):
        _cases_json(tmp_path / "odd" / "evaluations" / "test", [{"case": "z", "class": "x", "dice": 0.5}])
        (tmp_path / "odd" / "history.csv").write_text("epoch,seconds\n1,1\n")
        claims.add_claims(ctx, "T2", {**runs, "odd": {0: tmp_path / "odd"}}, method="method", baselines=["odd"])


# ----------------------------------------------------------------------------- the experiments at smoke size
def _cases_csv(run, column="dice"):
    """Per-case foreground Dice of a run, read from its cases.csv (mean over the scored classes)."""
    per_case: dict[str, list[float]] = {}
    with open(run / "evaluations" / "test" / "cases.csv", newline="") as f:
        for row in csv.DictReader(f):
            per_case.setdefault(row["case"], []).append(float(row[column]))
    return {
        case: (float(np.mean([v for v in vs if not math.isnan(v)])) if any(not math.isnan(v) for v in vs) else None)
        for case, vs in per_case.items()
    }


@pytest.fixture(scope="module")
def dualpath_claims(tmp_path_factory):
    out = tmp_path_factory.mktemp("claims-dualpath")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: a second thread only adds synchronisation
    try:
        return run_experiment("dualpath", scale="smoke", options=["claims=true"], out=out, progress=False, device="cpu")
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_dualpath_claims_table_per_case_scores_and_equal_steps(dualpath_claims):
    exp = dualpath_claims.run_dir
    (table,) = json.loads((exp / "results.json").read_text())["tables"]
    rows = ["U-Net (recipe schedule)", "U-Net (equal steps)", "nnU-Net-style (equal steps)", "Dual-path"]
    assert list(table["rows"]) == rows and table["columns"] == ["Dual-path - row [95% CI]", "verdict", "plateau"]
    keys = dict(zip(rows, ("unet", "unet_equal", "nnunet_equal", "dualpath")))
    runs = {row: {0: exp / "runs" / "claims" / keys[row] / "seed0"} for row in rows}
    # per-case scores are the run folders' own tables; the row's Dice their mean over cases
    for row in rows:
        for seed in (0,):
            reference = _cases_csv(runs[row][seed])
            assert table["cases"] == list(reference)
            assert table["per_case"][row][str(seed)]["mean_fg"] == pytest.approx(list(reference.values()))
            mean = np.mean(list(reference.values()))
            assert table["rows"][row]["Dice"]["per_seed"][str(seed)] == pytest.approx(mean)
    # the paired differences: per case averaged over seeds, method minus baseline
    method = np.array(list(_cases_csv(runs["Dual-path"][0]).values()))
    for base in rows[:3]:
        baseline = np.array(list(_cases_csv(runs[base][0]).values()))
        d = table["differences"][base]["mean_fg"]
        assert d["mean"] == pytest.approx(float((method - baseline).mean()))
        assert d["low"] <= d["mean"] <= d["high"] and d["n_seeds"] == 1 and d["n_cases"] == len(table["cases"])
        assert table["texts"][base]["verdict"] == claims.verdict(d["holds"])
        assert d["holds"] == paired_difference(method, baseline).holds
    assert "plateau" in table["texts"]["U-Net (recipe schedule)"]
    # equal steps: the U-Net's one cosine schedule spans the steps dual-path's parts took
    per_epoch = SCALES["smoke"]["n_train"] // SCALES["smoke"]["batch_size"]  # whole images: batches per epoch
    with open(runs["Dual-path"][0] / "history.csv", newline="") as f:
        dual_epochs = len(list(csv.DictReader(f)))
    with open(runs["U-Net (recipe schedule)"][0] / "history.csv", newline="") as f:
        disc_epochs = len(list(csv.DictReader(f)))
    method_steps = (dual_epochs + disc_epochs) * per_epoch
    assert table["steps"]["dualpath"]["total_steps"] == method_steps
    for row in ("U-Net (equal steps)", "nnU-Net-style (equal steps)"):
        last = torch.load(runs[row][0] / "checkpoints" / "last.pt", weights_only=False)
        assert last["scheduler"]["T_max"] == method_steps
    # the discriminator of dual-path is the recipe-schedule U-Net; the nnU-Net-style row is the nnunet recipe's
    dual = yaml.safe_load((runs["Dual-path"][0] / "config.yaml").read_text())
    assert dual["method"]["discriminator"] == str(runs["U-Net (recipe schedule)"][0])
    nn = yaml.safe_load((runs["nnU-Net-style (equal steps)"][0] / "config.yaml").read_text())
    assert nn["model"]["deep_supervision"] is True and nn["loss"] == "dice_ce"
    md = (exp / "results.md").read_text()
    assert "| U-Net (equal steps) |" in md and "optimiser steps" in md
    verdict = table["texts"]["U-Net (equal steps)"]["verdict"]
    for page in ("results.html", "report.html"):  # the verdict column on both pages
        assert f"<td>{verdict}</td>" in (exp / page).read_text()


@pytest.mark.slow
def test_resumed_claims_experiment_reuses_finished_runs(dualpath_claims):
    exp = dualpath_claims.run_dir
    finished = sorted((exp / "runs" / "claims").glob("*/seed*/metrics.json"))
    stamps = {p: p.stat().st_mtime_ns for p in finished}
    before = json.loads((exp / "results.json").read_text())["tables"]
    again = run_experiment("dualpath", resume=exp, progress=False, device="cpu")
    assert {p: p.stat().st_mtime_ns for p in finished} == stamps  # nothing retrained
    assert json.loads((again.run_dir / "results.json").read_text())["tables"] == before


def test_claims_refuse_out_of_fold_maps(tmp_path):
    with pytest.raises(ConfigError, match="weight_maps 'train'"):
        run_experiment(
            "dualpath", scale="smoke", options=["claims=true", "weight_maps=oof"], out=tmp_path, progress=False
        )
    with pytest.raises(ConfigError, match="did you mean 'claims'"):
        run_experiment("dualpath", scale="smoke", options=["claim=true"], out=tmp_path, progress=False)


@pytest.mark.slow
def test_reuse_background_claims_table(tmp_path, one_thread):
    result = run_experiment(
        "reuse-background", scale="smoke", options=["claims=true"], out=tmp_path, progress=False, device="cpu"
    )
    (table,) = json.loads((result.run_dir / "results.json").read_text())["tables"]
    assert list(table["rows"]) == ["plain (recipe schedule)", "plain (equal steps)", "reuse background"]
    assert table["metrics"][0] == "Dice" and len(table["metrics"]) == 1 + len(table["classes"]) + 3 == 10
    assert table["steps"]["reuse"]["parts"] == {"binary": 1, "multi": 1} and table["steps"]["equal_epochs"] == 2
    reuse = result.run_dir / "runs" / "claims" / "reuse" / "seed0"
    assert (reuse / "parts" / "binary" / "metrics.json").is_file()  # the binary part of the composite run
    reference = _cases_csv(reuse)
    assert table["per_case"]["reuse background"]["0"]["mean_fg"] == [
        pytest.approx(v) if v is not None else None for v in reference.values()
    ]
    for base in ("plain (recipe schedule)", "plain (equal steps)"):
        d = table["differences"][base]
        assert set(d) == {"mean_fg", *table["classes"]}
        assert table["texts"][base]["verdict"] in ("holds", "does not hold", "no difference shown", "no scored case")


@pytest.mark.slow
def test_thin_recall_ablation_scores_the_fused_output_as_the_run_saved_it(dualpath_claims):
    from tests.test_thin_recall import thin_recall

    runs = dualpath_claims.run_dir / "runs" / "claims"
    dual = runs / "dualpath" / "seed0"
    rows = thin_recall.ablation_recall(dual)
    assert list(rows) == ["MaC", "MaC+MiC", "MaC+MiC+Fusion"]
    # the fused output predicted again equals the run's own predictions and its per-case Dice
    assert rows["MaC+MiC+Fusion"] == pytest.approx(thin_recall.thin_recall(dual))
    assert rows["MaC+MiC+Fusion"]["dice"] == pytest.approx(np.mean(list(_cases_csv(dual).values())))
    with pytest.raises(ValueError, match="expects a dual-path run"):
        thin_recall.ablation_recall(runs / "unet" / "seed0")
