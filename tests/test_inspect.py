"""Dataset class statistics (``medbalance.data.stats``) and the ``medbalance inspect`` command."""

from __future__ import annotations

import doctest
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from PIL import Image

import medbalance.data.stats as stats_module
from medbalance.cli.main import main
from medbalance.data.datasets import ArrayDataset
from medbalance.data.stats import class_counts, class_fractions, dataset_stats
from medbalance.losses.weights import CLASS_WEIGHT_SCHEMES, class_weights, effective_number_weights, effective_numbers
from medbalance.report.dataset import foreground_fractions, object_sizes
from tests._reference.class_balance_numpy import dataset_stats_np
from tests._reference.objects_numpy import object_sizes_np
from tests._reference.report_checks import check_html, check_markdown


def _masks(seed: int = 0, n: int = 6, shape=(9, 7), num_classes: int = 4) -> np.ndarray:
    prior = np.linspace(8, 1, num_classes)  # imbalanced: class 0 commonest
    masks = np.random.default_rng(seed).choice(num_classes, size=(n, *shape), p=prior / prior.sum())
    masks[1] = 0  # an empty mask
    return masks


def _dataset(masks: np.ndarray, num_classes: int = 4) -> ArrayDataset:
    return ArrayDataset(np.zeros((len(masks), 1, *masks.shape[1:]), np.float32), masks, num_classes=num_classes)


# ----------------------------------------------------------------------------- class_counts


def test_every_source_form_gives_the_same_counts():
    masks = _masks()
    expected, _ = dataset_stats_np(masks, 4)
    ds = _dataset(masks)
    for source in (
        masks,
        torch.from_numpy(masks),
        list(masks),
        [torch.from_numpy(m) for m in masks],
        (m for m in masks),
        ds,
        list(ds),  # sample dicts
        [{"target": m, "image": None} for m in masks],
    ):
        got = class_counts(source, 4)
        assert got.dtype == torch.int64 and got.tolist() == expected.tolist(), type(source)


def test_counts_ignore_index_bool_and_volumes():
    labels = torch.tensor([[0, 1, 255], [2, 255, 0]])
    assert class_counts(labels, 3, ignore_index=255).tolist() == [2, 1, 1]
    assert class_counts(torch.tensor([True, False, True]), 2).tolist() == [1, 2]
    volume = np.zeros((2, 3, 4, 5), np.uint8)
    volume[0, 1, 2, 3] = 1
    assert class_counts(volume, 2).tolist() == [119, 1]
    assert class_counts([], 3).tolist() == [0, 0, 0]
    assert class_counts(torch.tensor(2), 3).tolist() == [0, 0, 1]  # one classification label


def test_fractions_sum_to_one():
    fractions = class_fractions(_masks(), 4)
    assert fractions.dtype == torch.float64 and abs(float(fractions.sum()) - 1) < 1e-12
    with pytest.raises(ValueError, match="no labelled element"):
        class_fractions(torch.full((3,), 9), 2, ignore_index=9)


@pytest.mark.parametrize(
    "source,num_classes,kwargs,error,message",
    [
        (torch.tensor([7]), 7, {}, ValueError, "target has label 7 but num_classes is 7 (expected values in [0, 7))"),
        (torch.tensor([0, -1]), 2, {}, ValueError, "target has label -1 but num_classes is 2"),
        (torch.tensor([0, 5]), 2, {"ignore_index": 255}, ValueError, "or ignore_index=255)"),
        (torch.rand(3), 2, {}, TypeError, "integer class labels, got dtype float32"),
        ([{"label": 1}], 2, {}, ValueError, "must have a 'target' key"),
        (3.5, 2, {}, TypeError, "source must be a label tensor/array"),
        (torch.tensor([0]), 0, {}, ValueError, "num_classes must be an int >= 1, got 0"),
    ],
)
def test_counts_reject_bad_input_with_one_line(source, num_classes, kwargs, error, message):
    with pytest.raises(error) as info:
        class_counts(source, num_classes, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


@settings(max_examples=25, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(1, 5),
    st.integers(1, 40),
    st.integers(0, 2**31 - 1),
    st.sampled_from([None, 0, 3]),
)
def test_chunking_changes_nothing(n, num_classes, chunk, seed, ignore_index):
    masks = np.random.default_rng(seed).integers(0, num_classes, size=(n, 5, 4))
    counts, empty = dataset_stats_np(masks, num_classes, ignore_index)
    assume(counts.sum() > 0)
    ds = _dataset(masks, num_classes)
    whole = dataset_stats(list(ds), num_classes, "segmentation", ignore_index=ignore_index)
    saved = stats_module._CHUNK_ELEMENTS
    stats_module._CHUNK_ELEMENTS = chunk  # tiny chunks: several images, one image, or less
    try:
        chunked = dataset_stats(ds, num_classes, "segmentation", ignore_index=ignore_index)
    finally:
        stats_module._CHUNK_ELEMENTS = saved
    assert chunked.counts == whole.counts == tuple(counts.tolist())
    assert chunked.empty_masks == whole.empty_masks == empty and chunked.num_images == n


# ----------------------------------------------------------------------------- dataset_stats


def test_segmentation_stats():
    masks = _masks()
    stats = dataset_stats(_dataset(masks), 4, "segmentation")
    counts, empty = dataset_stats_np(masks, 4)
    assert stats.task == "segmentation" and stats.num_images == 6 and stats.num_classes == 4
    assert stats.counts == tuple(counts.tolist()) and stats.empty_masks == empty == 1
    assert stats.class_names == ("class0", "class1", "class2", "class3")  # ArrayDataset default names
    assert stats.imbalance_ratio == counts.max() / counts.min()
    assert abs(sum(stats.fractions) - 1) < 1e-12 and stats.absent_classes == ()
    json.dumps(stats.to_dict())  # JSON-ready


def test_ignored_pixels_are_not_foreground():
    masks = torch.zeros(3, 4, 4, dtype=torch.long)
    masks[0, 0, 0] = 255
    masks[1, 0, 0] = 1
    stats = dataset_stats(masks, 2, "segmentation", ignore_index=255)
    assert stats.empty_masks == 2 and stats.counts == (46, 1)  # 48 pixels, one ignored


def test_classification_stats_count_samples_and_report_absent_classes():
    labels = np.array([0, 0, 0, 0, 2, 2, 3])
    ds = ArrayDataset(np.zeros((7, 1, 4, 4), np.float32), labels, num_classes=4, class_names=list("abcd"))
    stats = dataset_stats(ds, 4, "classification")
    assert stats.counts == (4, 0, 2, 1) and stats.num_images == 7 and stats.empty_masks is None
    assert stats.class_names == ("a", "b", "c", "d") and stats.absent_classes == (1,)
    assert stats.imbalance_ratio == 4.0
    assert dataset_stats(list(ds), 4, "classification", class_names=list("abcd")) == stats


def test_stats_add_up_over_splits():
    masks = _masks(n=8)
    a = dataset_stats(masks[:5], 4, "segmentation")
    b = dataset_stats(masks[5:], 4, "segmentation")
    assert a + b == dataset_stats(masks, 4, "segmentation")
    with pytest.raises(ValueError, match="cannot add stats"):
        a + dataset_stats(np.array([0, 1]), 2, "classification")


@pytest.mark.parametrize(
    "source,task,kwargs,message",
    [
        (np.zeros((2, 3, 3), int), "detection", {}, "task must be one of 'segmentation', 'classification'"),
        (np.array([0, 1, 1]), "segmentation", {}, "use task='classification'"),
        (np.zeros((2, 3, 3), int), "classification", {}, "one scalar label per sample"),
        (np.zeros((2, 3, 3), int), "segmentation", {"class_names": ["bg"]}, "class_names has 1 entries"),
        (np.full((2, 3, 3), 9), "segmentation", {"ignore_index": 9}, "no labelled element"),
    ],
)
def test_stats_reject_bad_input(source, task, kwargs, message):
    with pytest.raises(ValueError) as info:
        dataset_stats(source, 2, task, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_docstring_examples():
    assert doctest.testmod(stats_module).failed == 0


# ----------------------------------------------------------------------------- medbalance inspect


@pytest.fixture(scope="module")
def seg_folder(tmp_path_factory):
    """Five 12x10 PNG masks with classes 0-2 (one of them empty) and their images."""
    root = tmp_path_factory.mktemp("seg")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    masks = _masks(seed=3, n=5, shape=(12, 10), num_classes=3)
    for i, mask in enumerate(masks):
        Image.fromarray(np.full((12, 10), 40, np.uint8)).save(root / "images" / f"case{i}.jpg")
        Image.fromarray(mask.astype(np.uint8)).save(root / "masks" / f"case{i}.png")
    return root, masks


def _inspect_json(capsys, *args: str) -> dict:
    assert main(["inspect", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_inspect_folder_counts_every_pixel_of_the_chosen_split(seg_folder, capsys):
    root, masks = seg_folder
    report = _inspect_json(capsys, str(root), "--split", "all")
    counts, empty = dataset_stats_np(masks, 3)
    assert report["task"] == "segmentation" and report["split"] == "all" and report["num_images"] == 5
    assert report["counts"] == counts.tolist() and report["empty_masks"] == empty == 1
    assert report["class_names"] == ["background", "class1", "class2"]
    assert set(report["weights"]) == set(CLASS_WEIGHT_SCHEMES) and report["effective_number_weights"] is None
    for scheme, weights in report["weights"].items():
        np.testing.assert_allclose(weights, class_weights(counts, scheme).tolist(), atol=1e-7)
    # default: the training split, the same seeded 80/20 split `train` makes of a folder
    train = _inspect_json(capsys, str(root))
    assert train["split"] == "train" and train["num_images"] == 4


def test_inspect_folder_text_table(seg_folder, capsys):
    root, masks = seg_folder
    assert main(["inspect", str(root), "--split", "all"]) == 0
    out = capsys.readouterr().out
    assert "all splits (all), segmentation, 5 images" in out
    assert "images whose mask has no foreground: 1 of 5" in out
    row = next(line for line in out.splitlines() if line.startswith("background"))
    assert row.split()[1] == str(int((masks == 0).sum()))
    assert "w6 exp_decreasing_fg_nobg" in out


def test_inspect_classification_folder_adds_effective_number_weights(tmp_path, capsys):
    for name, n in (("benign", 6), ("malignant", 2)):
        (tmp_path / name).mkdir()
        for i in range(n):
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / name / f"{i}.png")
    report = _inspect_json(capsys, str(tmp_path), "--split", "all", "--beta", "0.99")
    assert report["task"] == "classification" and report["counts"] == [6, 2]
    assert report["class_names"] == ["benign", "malignant"] and report["empty_masks"] is None
    # the _fg schemes assume a background class, which classification data does not have
    assert list(report["weights"]) == ["uniform", "inverse", "exp_increasing", "exp_decreasing"]
    np.testing.assert_allclose(report["effective_number_weights"], effective_number_weights([6, 2], beta=0.99).tolist())
    assert report["beta"] == 0.99


def test_inspect_builtin_demo(capsys):
    args = ["--set", "data.n_train=6", "--set", "data.n_val=2", "--set", "data.n_test=0", "--set", "data.size=32"]
    assert main(["inspect", "demo", *args]) == 0
    out = capsys.readouterr().out
    assert out.startswith("demo: train split, segmentation, 6 images")
    rows = [line.split() for line in out.splitlines() if line.startswith(("background", "target"))]
    assert [r[0] for r in rows] == ["background", "target"] and sum(int(r[1]) for r in rows) == 6 * 32 * 32
    report = _inspect_json(capsys, "demo", *args, "--split", "all")
    assert report["num_images"] == 8 and report["class_names"] == ["background", "target"]
    assert sum(report["counts"]) == 8 * 32 * 32
    assert main(["inspect", "demo", *args, "--split", "test"]) == 2
    assert capsys.readouterr().err.strip() == "error: 'demo' has no test split (try --split train, val or all)"


def test_inspect_builtin_longtail(capsys):
    report = _inspect_json(capsys, "longtail", "--set", "data.n_max=20", "--set", "data.size=8")
    assert report["task"] == "classification" and report["num_classes"] == 8
    assert report["counts"][0] == 20 and report["imbalance_ratio"] == pytest.approx(20 / min(report["counts"]))
    assert abs(sum(report["effective_number_weights"]) - 8) < 1e-4


@pytest.mark.parametrize(
    "argv,message",
    [
        (["inspect", "no/such/place"], "is neither a data folder, a config file nor a built-in config"),
        (["inspect", "demo", "--beta", "1"], "--beta must be in [0, 1), got 1"),
        (["inspect", "demo", "--set", "data.sise=8"], "did you mean 'size'?"),
    ],
)
def test_inspect_bad_input_is_one_line_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_inspect_set_on_a_folder_and_a_bad_folder(seg_folder, tmp_path, capsys):
    root, _ = seg_folder
    # issue 21: --set data.* applies to a folder as to a config (the error before it suggested data.size)
    assert main(["inspect", str(root), "--set", "data.size=8", "--json"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(root), "--set", "data.sise=8"]) == 2
    assert "did you mean 'size'" in capsys.readouterr().err
    (tmp_path / "images").mkdir()
    assert main(["inspect", str(tmp_path)]) == 2
    assert "has no 'masks/' folder" in capsys.readouterr().err


def test_inspect_from_the_shell():
    res = subprocess.run(
        [sys.executable, "-m", "medbalance", "inspect", "no/such/place"], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.startswith("error: 'no/such/place' is neither") and len(res.stderr.strip().splitlines()) == 1
    help_ = subprocess.run(
        [sys.executable, "-m", "medbalance", "inspect", "--help"], capture_output=True, text=True, timeout=120
    )
    assert help_.returncode == 0 and "usage: medbalance inspect" in help_.stdout


# ----------------------------------------------------------------------------- shape of the data (report.dataset)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 4),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    num_classes=st.integers(2, 4),
    seed=st.integers(0, 2**16),
)
def test_object_sizes_match_a_flood_fill(n, h, w, num_classes, seed):
    masks = np.random.default_rng(seed).integers(0, num_classes, (n, h, w))
    sizes = object_sizes(masks, num_classes)
    assert [sorted(s.tolist()) for s in sizes] == object_sizes_np(masks, num_classes)
    # objects never merge across images: every pixel of a class is in exactly one object
    assert [int(s.sum()) for s in sizes[1:]] == [int((masks == c).sum()) for c in range(1, num_classes)]


def test_foreground_fractions_and_effective_numbers():
    masks = _masks(seed=5, n=4, shape=(6, 5))
    np.testing.assert_allclose(foreground_fractions(masks), (masks > 0).mean(axis=(1, 2)))
    masks[0, 0, :] = 255
    np.testing.assert_allclose(
        foreground_fractions(masks, ignore_index=255)[0], ((masks[0] > 0) & (masks[0] != 255)).sum() / 25
    )
    counts = [300, 40, 2]
    eff = effective_numbers(counts, beta=0.99)
    np.testing.assert_allclose(eff, [(1 - 0.99**n) / 0.01 for n in counts])
    # the effective-number weights are the inverse effective numbers, scaled to sum to C
    weights = effective_number_weights(counts, beta=0.99).numpy()
    np.testing.assert_allclose(weights, 3 * (1 / eff) / (1 / eff).sum(), rtol=1e-5)
    # beta = 0: every present class counts once, so the effective-number weights are uniform
    assert effective_numbers(counts + [0], beta=0.0).tolist() == [1.0, 1.0, 1.0, 0.0]
    assert effective_number_weights(counts, beta=0.0).tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match=r"beta must be a number in \[0, 1\)"):
        effective_numbers(counts, beta=1.0)


def test_inspect_out_writes_a_report_with_plots(seg_folder, tmp_path, capsys):
    root, masks = seg_folder
    assert main(["inspect", str(root), "--split", "all", "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "foreground fraction per image: median" in out and "objects, med.px" in out
    headings = check_html(tmp_path / "r" / "report.html")
    assert {"Class counts", "Foreground per image", "Object sizes", "Class weights"} <= set(headings)
    figures = {p.name for p in check_markdown(tmp_path / "r" / "report.md")}
    assert figures == {"class_counts.png", "foreground_fraction.png", "object_sizes.png", "weights.png"}
    stats = json.loads((tmp_path / "r" / "stats.json").read_text())
    reference = object_sizes_np(masks, 3)
    assert stats["object_sizes"]["class1"]["count"] == len(reference[1])
    assert stats["foreground_fraction"]["max"] == pytest.approx((masks > 0).mean(axis=(1, 2)).max())
    report = _inspect_json(capsys, str(root), "--split", "all")
    assert report["object_sizes"] == stats["object_sizes"]


def test_inspect_out_for_classification(tmp_path, capsys):
    for name, n in (("benign", 5), ("malignant", 2)):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "data" / name / f"{i}.png")
    assert (
        main(["inspect", str(tmp_path / "data"), "--split", "all", "--beta", "0.9", "--out", str(tmp_path / "r")]) == 0
    )
    assert "eff.n" in capsys.readouterr().out
    assert {p.name for p in check_markdown(tmp_path / "r" / "report.md")} == {"class_counts.png", "weights.png"}
    stats = json.loads((tmp_path / "r" / "stats.json").read_text())
    np.testing.assert_allclose(stats["effective_numbers"], effective_numbers([5, 2], beta=0.9))
    assert "effective_number (beta 0.9)" in stats["weights"]
