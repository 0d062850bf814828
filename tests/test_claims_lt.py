"""``medbalance experiment longtail-claims`` (issue 22): counts per IR, refused ratios, paired verdicts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medbalance.cli.main import main
from medbalance.data.readers.classification import read_medmnist
from medbalance.experiments.claims_lt import epochs_for, paired_scores, train_counts


def _npz(path, *, counts=(60, 12), val=(6, 6), test=(8, 5), side=12):
    """A tiny MedMNIST-layout file: class 1 images brighter, so a network can learn them."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, per_class in (("train", counts), ("val", val), ("test", test)):
        labels = np.repeat(np.arange(len(per_class)), per_class).astype(np.uint8)
        images = rng.integers(0, 120, (len(labels), side, side)) + 100 * labels[:, None, None]
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images.astype(np.uint8), labels[:, None]
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("seed", range(3))
def test_paired_scores_average_to_the_balanced_accuracy(seed):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 3, 50)
    correct = rng.integers(0, 2, 50).astype(float)
    recalls = [correct[target == c].mean() for c in np.unique(target)]
    assert paired_scores(target, correct, 4).mean() == pytest.approx(np.mean(recalls))


def test_train_counts_refuse_a_tail_below_the_minimum():
    # BreastMNIST's 147 malignant / 399 benign + normal training images
    plan = train_counts([147, 399], [10, 50, 100], n_max=None, min_tail=20)
    assert [(p["counts"], p["tail"], p["real"]) for p in plan] == [
        ([40, 399], 40, True),
        ([8, 399], 8, False),
        ([4, 399], 4, False),
    ]
    # PneumoniaMNIST's 1214 normal / 3494 pneumonia: every ratio is real
    assert [p["counts"] for p in train_counts([1214, 3494], [10, 50, 100], n_max=None, min_tail=20)] == [
        [349, 3494],
        [70, 3494],
        [35, 3494],
    ]


@pytest.mark.parametrize("n_train", [1, 63, 64, 439, 3_843, 10_000])
@pytest.mark.parametrize("min_steps", [0, 1, 600])
def test_epochs_for_gives_the_fewest_epochs_reaching_min_steps(n_train, min_steps):
    preset = {"epochs": 15, "batch_size": 64, "min_steps": min_steps}
    epochs = epochs_for(preset, n_train)
    steps = max(1, n_train // 64)
    assert epochs >= 15 and epochs * steps >= min_steps
    assert epochs == 15 or (epochs - 1) * steps < min_steps  # no more than needed


def test_smoke_run_pairs_every_method_with_ce_and_lskbb_with_the_others(tmp_path, one_thread):
    data = _npz(tmp_path / "toymnist.npz")
    args = ["experiment", "longtail-claims", "--scale", "smoke", "--data", str(data), "--out", str(tmp_path)]
    opts = ["--set", "methods=LDAM-DRW,LSKBB", "--set", "irs=5,20", "--set", "min_tail=3", "--set", "n_resamples=200"]
    opts += ["--set", "min_steps=5"]  # 48 images, batch 16: 3 steps an epoch, so 2 epochs instead of smoke's 1
    assert main([*args, *opts, "-q"]) == 0
    (folder,) = tmp_path.glob("longtail-claims-*")
    claims = json.loads((folder / "claims.json").read_text())
    # smoke caps the head at 40 images: IR 5 leaves 8 tail images (trained), IR 20 leaves 2 (< 3: refused)
    assert [(p["ir"], p["counts"], p["real"]) for p in claims["plan"]] == [(5.0, [40, 8], True), (20.0, [40, 2], False)]
    assert [(c["ir"], c["method"], c["baseline"]) for c in claims["claims"]] == [
        (5.0, "LDAM-DRW", "CE"),
        (5.0, "LSKBB", "CE"),
        (5.0, "LSKBB", "LDAM-DRW"),
    ]
    assert not list(folder.glob("runs/*/ir20"))
    assert claims["plan"][0]["epochs"] == 2
    for row in ("ce", "ldam_drw", "lskbb"):
        history = (folder / "runs" / row / "ir5" / "seed0" / "history.csv").read_text().splitlines()
        assert len(history) - 1 == 2, row
    # the whole test split (8 + 5 images), the same for every run: the differences are of these images
    test = read_medmnist(data).test
    for row in ("ce", "ldam_drw", "lskbb"):
        rows = (folder / "runs" / row / "ir5" / "seed0" / "predictions" / "predictions.csv").read_text()
        assert [r.split(",")[0] for r in rows.splitlines()[1:]] == list(test.names)
    ce = json.loads((folder / "runs" / "ce" / "ir5" / "seed0" / "metrics.json").read_text())["test"]
    ldam = json.loads((folder / "runs" / "ldam_drw" / "ir5" / "seed0" / "metrics.json").read_text())["test"]
    first = claims["claims"][0]
    assert first["balanced_accuracy"]["mean"] == pytest.approx(ldam["macro_recall"] - ce["macro_recall"])
    assert first["balanced_accuracy"]["n_cases"] == 13 and first["tail_recall"]["n_cases"] == 5
    assert first["tail_recall"]["mean"] == pytest.approx(ldam["recall"][1] - ce["recall"][1])
    lskbb = json.loads((folder / "runs" / "lskbb" / "ir5" / "seed0" / "metrics.json").read_text())["test"]
    own = claims["claims"][2]["balanced_accuracy"]
    assert own["mean"] == pytest.approx(lskbb["macro_recall"] - ldam["macro_recall"])
    results = (folder / "results.md").read_text()
    assert "## Claims: each method vs plain CE" in results and "| LDAM-DRW - CE |" in results
    assert "## Seed 001's claim: LSKBB vs each other long-tail method" in results and "| LSKBB - LDAM-DRW |" in results
    assert "IR 5: test scores (whole test split)" in results and "AUC" in results
    assert "Refused (tail class under 3 images): IR 20 (tail 2)." in results


def test_phantoms_and_unknown_methods_are_refused(tmp_path, capsys):
    assert main(["experiment", "longtail-claims", "--scale", "smoke", "--out", str(tmp_path), "-q"]) == 2
    assert "longtail-claims needs a real dataset" in capsys.readouterr().err
    data = str(_npz(tmp_path / "toymnist.npz"))
    args = ["experiment", "longtail-claims", "--scale", "smoke", "--data", data, "--out", str(tmp_path), "-q"]
    assert main([*args, "--set", "methods=LSKB"]) == 2
    assert "option 'methods' has 'LSKB' (did you mean 'LSKBB'? expected some of: LDAM-DRW, BBN, LSKBB, MiSLAS)" in (
        capsys.readouterr().err
    )
    assert main([*args, "--set", "methods=CE"]) == 2  # the baseline is always a row, never a method
    assert "option 'methods' has 'CE'" in capsys.readouterr().err
