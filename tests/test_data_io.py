"""Generic folder layout and image/mask readers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medbalance.data.build import split_indices
from medbalance.data.folder import read_classification_folder, read_segmentation_folder
from medbalance.data.io import DataError, read_image, read_mask


def _write(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_segmentation_folder_matches_by_stem_whatever_the_extension(tmp_path):
    rng = np.random.default_rng(0)
    for name, ext in (("a", ".jpg"), ("b", ".png")):
        _write(tmp_path / "images" / f"{name}{ext}", rng.integers(0, 255, (20, 24, 3), dtype=np.uint8))
        mask = np.zeros((20, 24), np.uint8)
        mask[5:10, 3:9] = 255
        _write(tmp_path / "masks" / f"{name}.png", mask)
    ds = read_segmentation_folder(tmp_path, channels=1)
    assert ds.names == ["a", "b"] and ds.images.shape == (2, 1, 20, 24) and ds.num_classes == 2
    assert set(np.unique(ds.target)) == {0, 1} and ds.target[0, 6, 4] == 1
    assert ds.images.dtype == np.uint8 and ds.spacing == [(1.0, 1.0), (1.0, 1.0)]  # native: stored values
    resized = read_segmentation_folder(tmp_path, channels=3, size=16)
    assert resized.images.shape == (2, 3, 16, 16) and resized.target.shape == (2, 16, 16)


def test_segmentation_folder_errors(tmp_path):
    with pytest.raises(DataError, match="no 'images/' folder"):
        read_segmentation_folder(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        read_segmentation_folder(tmp_path)
    _write(tmp_path / "images" / "x.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match="image 'x.png' has no mask"):
        read_segmentation_folder(tmp_path)
    _write(tmp_path / "masks" / "x.png", np.zeros((9, 8), np.uint8))
    with pytest.raises(DataError, match=r"is \(8, 8\) but its mask is \(9, 8\)"):
        read_segmentation_folder(tmp_path)


def test_readers_reject_corrupt_and_non_finite_files(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage")
    with pytest.raises(DataError, match="cannot read image"):
        read_image(bad)
    nan = tmp_path / "nan.npy"
    np.save(nan, np.full((4, 4), np.nan, np.float32))
    with pytest.raises(DataError, match="NaN"):
        read_image(nan)
    frac = tmp_path / "frac.npy"
    np.save(frac, np.full((4, 4), 0.5, np.float32))
    with pytest.raises(DataError, match="non-integer"):
        read_mask(frac)


def test_classification_folder(tmp_path):
    for cls, n in (("benign", 3), ("malignant", 1)):
        for i in range(n):
            _write(tmp_path / cls / f"{i}.png", np.full((8, 8), 40 * i, np.uint8))
    ds = read_classification_folder(tmp_path)
    assert ds.class_names == ("benign", "malignant") and ds.target.tolist() == [0, 0, 0, 1]
    assert ds.names[-1] == "malignant/0"


def test_split_indices_is_seeded_disjoint_and_complete():
    tr, va, te = split_indices(50, (0.2, 0.1), seed=3)
    assert len(va) == 10 and len(te) == 5 and len(tr) == 35
    assert sorted(np.concatenate([tr, va, te]).tolist()) == list(range(50))
    assert all((a == b).all() for a, b in zip((tr, va, te), split_indices(50, (0.2, 0.1), seed=3)))
    assert not (va == split_indices(50, (0.2, 0.1), seed=4)[1]).all()
    with pytest.raises(ValueError, match="cannot be split"):
        split_indices(2, (0.5, 0.5), seed=0)


def test_a_mask_is_a_png_whatever_its_name(tmp_path):
    from medbalance.data.io import write_mask

    write_mask(tmp_path / ".png", np.array([[0, 1], [1, 0]]), binary=True)  # a sample named ""
    assert Image.open(tmp_path / ".png").format == "PNG"
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / ".png")), [[0, 255], [255, 0]])


def test_array_dataset_names_the_bad_label_low_or_high():
    from medbalance.data.datasets import ArrayDataset

    images = np.zeros((2, 1, 3, 3), np.float32)
    for bad in (-1, 5):
        target = np.zeros((2, 3, 3), np.int64)
        target[1, 2, 2] = bad
        with pytest.raises(
            ValueError, match=rf"target has label {bad} but num_classes is 3 \(expected values in \[0, 3\)\)"
        ):
            ArrayDataset(images, target, num_classes=3)
