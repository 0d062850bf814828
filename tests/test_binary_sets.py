"""Loaders of the real binary segmentation sets in ../shared/data (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medbalance.config import SharedData, parse_config
from medbalance.data.build import build_splits
from medbalance.data.readers.binary_sets import (
    load_drive,
    load_hc18_subset,
    load_isbi2012_em_membrane,
    load_kvasir_seg_mini,
)
from medbalance.errors import DataError

pytestmark = pytest.mark.data


def _root(shared_data: Path, name: str) -> Path:
    root = shared_data / name
    if not root.is_dir():
        pytest.skip(f"{name} not present")
    return root


def _disjoint(splits) -> None:
    names = [set(d.names) for d in (splits.train, splits.val, splits.test)]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])


def test_drive_keeps_the_source_split_and_carves_val_from_training(shared_data):
    splits = load_drive(_root(shared_data, "drive"), SharedData(name="drive", size=64, val_fraction=0.2))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (16, 4, 20)
    assert all(n.endswith("_training") for n in splits.train.names + splits.val.names)
    assert splits.test.names[0] == "01_test" and all(n.endswith("_test") for n in splits.test.names)
    assert splits.train.images.shape[1:] == (3, 64, 64)  # RGB fundus by default
    assert 0.04 < splits.test.target.mean() < 0.15  # vessels, about 9% of the image
    fov = splits.test.extras["fov"]
    assert fov.shape == (20, 64, 64) and 0.6 < fov.mean() < 0.8
    assert (splits.test.target <= fov).mean() > 0.99  # vessels lie inside the field of view
    _disjoint(splits)


def test_isbi_foreground_is_the_membrane_and_the_split_follows_the_stack(shared_data):
    data = SharedData(name="isbi2012_em_membrane", size=64, channels=1)
    splits = load_isbi2012_em_membrane(_root(shared_data, "isbi2012_em_membrane"), data)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (18, 6, 6)
    assert splits.train.names[:3] == ["0", "1", "2"] and splits.test.names == [str(i) for i in range(24, 30)]
    # label 0 in the files (membrane, ~22% of the pixels) becomes the foreground class 1
    assert 0.12 < splits.train.target.mean() < 0.35
    assert splits.train.class_names == ("background", "membrane")


def test_hc18_splits_by_subject(shared_data):
    splits = load_hc18_subset(_root(shared_data, "hc18_subset"), SharedData(name="hc18_subset", size=32))
    assert len(splits.train) + len(splits.val) + len(splits.test) == 150
    subjects = [{n.split("_")[0] for n in d.names} for d in (splits.train, splits.val, splits.test)]
    assert not (subjects[0] & subjects[1] or subjects[0] & subjects[2] or subjects[1] & subjects[2])
    assert 0.08 < splits.train.target.mean() < 0.3  # filled heads, ~18%
    assert not any(n.endswith("Annotation") for n in splits.train.names)
    _disjoint(splits)


def test_kvasir_loads_at_native_sizes_or_resized(shared_data):
    root = _root(shared_data, "kvasir_seg_mini")
    native = load_kvasir_seg_mini(root, SharedData(name="kvasir_seg_mini"))
    assert native.train.ragged and native.train.images[0].dtype == np.uint8
    assert all(im.shape[1:] == t.shape for im, t in zip(native.train.images, native.train.target))
    cfg = parse_config({"data": {"kind": "shared", "name": "kvasir_seg_mini", "size": 32}})
    splits = build_splits(cfg)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (3, 1, 1)
    assert splits.train.images.shape[1:] == (3, 32, 32) and set(np.unique(splits.train.target)) == {0, 1}


def test_missing_files_are_named(tmp_path):
    (tmp_path / "train" / "image").mkdir(parents=True)
    with pytest.raises(DataError, match="no files matching"):
        load_isbi2012_em_membrane(tmp_path, SharedData(name="isbi2012_em_membrane"))
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "train" / "image" / "0.png")
    with pytest.raises(DataError, match="label .*0.png' is missing"):
        load_isbi2012_em_membrane(tmp_path, SharedData(name="isbi2012_em_membrane"))
