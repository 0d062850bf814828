"""Long-tail subsets (SPEC 6, 10) and ``medbalance experiment longtail`` at smoke scale."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medbalance.cli.main import main
from medbalance.data.datasets import ArrayDataset, Splits
from medbalance.data.longtail import balanced_indices, longtail_indices, longtail_splits, longtail_targets
from medbalance.experiments.seed001 import METHODS
from tests._reference import longtail_numpy as ref


def _labels(counts) -> np.ndarray:
    return np.repeat(np.arange(len(counts)), counts)


def _data(counts) -> ArrayDataset:
    y = _labels(counts)
    return ArrayDataset(np.arange(len(y), dtype=np.float32).reshape(-1, 1, 1, 1), y, num_classes=len(counts))


counts_strategy = st.lists(st.integers(0, 300), min_size=2, max_size=8).filter(lambda c: sum(v > 0 for v in c) >= 1)


@settings(max_examples=25, deadline=None)
@given(counts=counts_strategy, ir=st.floats(1.0, 200.0), n_max=st.one_of(st.none(), st.integers(1, 300)))
def test_targets_match_reference(counts, ir, n_max):
    assert longtail_targets(counts, ir, n_max=n_max) == ref.longtail_sizes(counts, ir, n_max)


@settings(max_examples=25, deadline=None)
@given(counts=counts_strategy, ir=st.floats(1.0, 200.0), seed=st.integers(0, 2**16))
def test_indices_draw_the_target_sizes(counts, ir, seed):
    y = _labels(counts)
    idx = longtail_indices(y, ir, num_classes=len(counts), seed=seed)
    assert np.all(np.diff(idx) > 0)  # sorted, unique
    assert np.bincount(y[idx], minlength=len(counts)).tolist() == ref.longtail_sizes(counts, ir)
    np.testing.assert_array_equal(idx, longtail_indices(y, ir, num_classes=len(counts), seed=seed))


def test_subsets_are_nested_across_ratios_and_vary_with_seed():
    y = np.random.default_rng(0).permutation(_labels([400, 250, 120, 60]))
    subsets = [set(longtail_indices(y, ir, seed=3).tolist()) for ir in (10, 50, 100)]
    assert subsets[2] <= subsets[1] <= subsets[0]
    assert set(longtail_indices(y, 10, seed=4).tolist()) != subsets[0]
    sizes = np.bincount(y[sorted(subsets[2])])
    assert sizes[0] == 400 and sizes.max() / sizes.min() == 100  # SPEC 6: IR = N_max / N_min


def test_two_classes_shrink_the_minority():
    y = _labels([1214, 3494])  # PneumoniaMNIST train: normal, pneumonia
    assert np.bincount(y[longtail_indices(y, 10)]).tolist() == [349, 3494]
    assert np.bincount(y[longtail_indices(y, 100, n_max=300)]).tolist() == [3, 300]


def test_balanced_indices():
    y = _labels([5, 12, 0, 9])
    assert np.bincount(y[balanced_indices(y)], minlength=4).tolist() == [5, 5, 0, 5]
    assert np.bincount(y[balanced_indices(y, per_class=7)], minlength=4).tolist() == [5, 7, 0, 7]
    with pytest.raises(ValueError, match="per_class must be a positive int"):
        balanced_indices(y, per_class=0)


def test_bad_input():
    with pytest.raises(ValueError, match="target must be a 1-D array of integer class labels"):
        longtail_indices(np.zeros((3, 2), np.int64), 10)
    with pytest.raises(ValueError, match=r"target has label 3 but num_classes is 3 \(expected values in \[0, 3\)\)"):
        longtail_indices(np.array([0, 3]), 10, num_classes=3)
    with pytest.raises(ValueError, match="imbalance_ratio must be a finite number >= 1"):
        longtail_indices(_labels([5, 5]), 0.5)
    with pytest.raises(ValueError, match="n_max must be a positive int"):
        longtail_targets([5, 5], 10, n_max=0)


def test_splits_record_what_they_kept(caplog):
    splits = Splits(_data([200, 90, 40]), _data([9, 3, 5]), _data([30, 20, 25]), info={"source": "x"})
    assert longtail_splits(splits, None) is splits
    out = longtail_splits(splits, 20, seed=1)
    lt = out.info["longtail"]
    assert out.info["source"] == "x" and lt["imbalance_ratio"] == 20 and lt["seed"] == 1
    assert lt["train_counts"] == [200, 45, 10] == np.bincount(out.train.target).tolist()
    assert np.bincount(out.val.target).tolist() == [3, 3, 3] and np.bincount(out.test.target).tolist() == [20] * 3
    # The recorded indices rebuild the subsets (the images here are their own index).
    for name in ("train", "val", "test"):
        kept = getattr(out, name).images[:, 0, 0, 0].astype(int)
        np.testing.assert_array_equal(kept, lt[f"{name}_indices"])
    with caplog.at_level(logging.WARNING, logger="medbalance.data.longtail"):
        longtail_splits(Splits(_data([50, 20]), _data([2, 2]), None), 100)
    assert "reaches IR 50.0, not 100.0" in caplog.text


# ----------------------------------------------------------------------------- the experiment
def _results(tmp_path):
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    return folder, json.loads((folder / "results.json").read_text())


def test_smoke_experiment_on_phantoms(tmp_path, one_thread):
    assert main(["experiment", "longtail", "--scale", "smoke", "--out", str(tmp_path), "-q"]) == 0
    folder, results = _results(tmp_path)
    titles = [t["title"] for t in results["tables"]]
    assert titles[:3] == [
        "Tables 2 / 3: accuracy (%) on phantom",
        "Tables 2 / 3: macro precision (%) on phantom",
        "Tables 2 / 3: macro sensitivity (recall) (%) on phantom",
    ]
    main_table, backbones, losses = results["tables"][0], results["tables"][3], results["tables"][4]
    assert list(main_table["rows"]) == list(METHODS) and main_table["metrics"] == ["IR 10", "mean"]
    assert list(backbones["rows"]) == [
        "ResNet-32",
        "ResNet-32 + BiFormer",
        "ResNet-32 + SimAM",
        "improved ResNet-32 (LSK residual)",
        "improved ResNet-32 (LSK shortcut)",
    ]
    assert len(losses["rows"]) == 8 and "improved ResNet-32 + DFLCE" in losses["rows"]
    # Shared rows train once: BBN is ResNet-32 + CE, LSKBB is improved + DFLCE.
    bbn = main_table["rows"]["BBN"]["IR 10"]["per_seed"]
    assert losses["rows"]["ResNet-32 + CE"]["accuracy IR 10"]["per_seed"] == bbn
    assert len(list((folder / "runs").glob("*/ir10/seed0/metrics.json"))) == 5 + 4 + 5
    for cells in main_table["rows"].values():
        assert 0.0 <= cells["IR 10"]["mean"] <= 100.0
    splits = json.loads((folder / "runs" / "lskbb" / "ir10" / "seed0" / "splits.json").read_text())
    assert splits["imbalance_ratio"] == 10.0
    assert (folder / "artefacts" / "per_class_accuracy.png").stat().st_size > 1000
    assert "per_class_accuracy.png" in (folder / "results.md").read_text()


def test_smoke_experiment_on_a_medmnist_file(tmp_path, one_thread):
    g = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 60), ("val", 12), ("test", 12)):
        labels = g.integers(0, 2, n)
        labels[:2] = [0, 1]
        arrays[f"{split}_images"] = (g.random((n, 12, 12)) * 80 + labels[:, None, None] * 120).astype(np.uint8)
        arrays[f"{split}_labels"] = labels[:, None].astype(np.uint8)
    np.savez(tmp_path / "toy.npz", **arrays)
    out = tmp_path / "out"
    args = ["experiment", "longtail", "--scale", "smoke", "--data", str(tmp_path / "toy.npz"), "--out", str(out)]
    assert main([*args, "--set", "tables=false", "--set", "methods=[BBN, LSKBB]", "-q"]) == 0
    folder, results = _results(out)
    assert list(results["tables"][0]["rows"]) == ["BBN", "LSKBB"]
    splits = json.loads((folder / "runs" / "bbn" / "ir10" / "seed0" / "splits.json").read_text())
    counts = splits["longtail"]["train_counts"]
    assert max(counts) / min(counts) == pytest.approx(10, rel=0.1) and max(counts) <= 32  # smoke caps the head


def test_unknown_method_is_refused(tmp_path, capsys):
    assert main(["experiment", "longtail", "--scale", "smoke", "--set", "methods=[BNN]", "--out", str(tmp_path)]) == 2
    assert "unknown method(s) ['BNN']" in capsys.readouterr().err
