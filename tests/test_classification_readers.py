"""Readers of seed 001's classification datasets on tiny generated trees, and the shared MedMNIST copies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medbalance.config import BreakhisData, ChestXrayData, MedmnistData, SharedData, parse_config
from medbalance.data.build import build_splits
from medbalance.data.readers.classification import (
    BREAKHIS_CLASSES,
    build_breakhis,
    build_chestxray,
    build_medmnist,
    detect_layout,
    load_medmnist_shared,
    read_medmnist,
)
from medbalance.errors import DataError

_CODES = {"adenosis": "A", "fibroadenoma": "F", "phyllodes_tumor": "PT", "tubular_adenoma": "TA",
          "ductal_carcinoma": "DC", "lobular_carcinoma": "LC", "mucinous_carcinoma": "MC",
          "papillary_carcinoma": "PC"}  # fmt: skip


def _png(path: Path, value: int, size=(16, 12), mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(value)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(np.clip(value + g.integers(0, 20, shape), 0, 255).astype(np.uint8), mode).save(path)


def _breakhis(root: Path, patients: dict[str, int] | None = None) -> Path:
    """``root/BreaKHis_v1/histology_slides/breast/...``: per type ``patients[type]`` patients (3)."""
    breast = root / "BreaKHis_v1" / "histology_slides" / "breast"
    for label, (kind, tumour) in enumerate(BREAKHIS_CLASSES):
        code = _CODES[tumour]
        for p in range((patients or {}).get(tumour, 3)):
            patient = f"{10 + label}-{1000 + p}{code}"
            folder = breast / kind / "SOB" / tumour / f"SOB_{kind[0].upper()}_{code}_{patient}"
            for mag in ("40X", "100X"):
                for i in range(2):
                    name = f"SOB_{kind[0].upper()}_{code}-{patient}-{mag[:-1]}-{i + 1:03d}.png"
                    _png(folder / mag / name, 20 * label + 10)
    return breast


def test_breakhis_reads_eight_types_split_by_patient(tmp_path):
    breast = _breakhis(tmp_path)
    splits = build_breakhis(BreakhisData(path=str(breast), size=8, val_fraction=0.2, test_fraction=0.3))
    assert splits.train.class_names == tuple(t for _, t in BREAKHIS_CLASSES)
    assert splits.train.images.shape[1:] == (3, 8, 8)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 8 * 3 * 2 * 2
    for data in (splits.train, splits.val, splits.test):
        assert np.bincount(data.target, minlength=8).min() > 0  # every class in every split
    patients = splits.info["patients"]
    assert not set(patients["train"]) & set(patients["test"])
    assert not set(patients["train"]) & set(patients["val"]) and not set(patients["val"]) & set(patients["test"])
    assert "10-1000A" in patients["train"] + patients["val"] + patients["test"]  # id from the file name
    # Images of one patient never straddle splits.
    train_ids = {n.split("-", 1)[1].rsplit("-", 2)[0] for n in splits.train.names}
    test_ids = {n.split("-", 1)[1].rsplit("-", 2)[0] for n in splits.test.names}
    assert train_ids == set(patients["train"]) and not train_ids & test_ids


@pytest.mark.parametrize("level", ["", "BreaKHis_v1", "BreaKHis_v1/histology_slides"])
def test_breakhis_tree_from_any_level_and_magnification(tmp_path, level):
    _breakhis(tmp_path)
    splits = build_breakhis(BreakhisData(path=str(tmp_path / level), magnification="40X", size=8, channels=1))
    names = splits.train.names + splits.val.names + splits.test.names
    assert len(names) == 8 * 3 * 2 and all("-40-" in n for n in names)
    assert splits.train.in_channels == 1
    assert detect_layout(tmp_path / level) == "breakhis"


def test_breakhis_long_tail_and_balanced_evaluation(tmp_path):
    _breakhis(tmp_path, patients={"fibroadenoma": 6, "ductal_carcinoma": 9})
    splits = build_breakhis(BreakhisData(path=str(tmp_path), size=8, imbalance_ratio=5, val_fraction=0.2))
    counts = splits.info["longtail"]["train_counts"]
    assert max(counts) / min(counts) == 5
    assert len(set(np.bincount(splits.test.target).tolist())) == 1  # balanced test


def test_breakhis_errors(tmp_path):
    with pytest.raises(DataError, match="holds no folder with benign/, malignant/"):
        build_breakhis(BreakhisData(path=str(tmp_path)))
    breast = _breakhis(tmp_path / "a", patients={"adenosis": 2})
    with pytest.raises(DataError, match="class adenosis has 2 patient"):
        build_breakhis(BreakhisData(path=str(breast), size=8))
    breast = _breakhis(tmp_path / "b")
    with pytest.raises(DataError, match="has no 400X images under 'benign/SOB/adenosis/'"):
        build_breakhis(BreakhisData(path=str(breast), magnification="400X", size=8))
    for f in (breast / "malignant" / "SOB" / "lobular_carcinoma").rglob("*.png"):
        f.unlink()
    for d in sorted((breast / "malignant" / "SOB" / "lobular_carcinoma").rglob("*"), reverse=True):
        d.rmdir()
    (breast / "malignant" / "SOB" / "lobular_carcinoma").rmdir()
    with pytest.raises(DataError, match="lacks 'malignant/SOB/lobular_carcinoma/'"):
        build_breakhis(BreakhisData(path=str(breast), size=8))


def _chestxray(root: Path, *, val: bool = True) -> Path:
    splits = {"train": (6, 14), "test": (4, 4), **({"val": (2, 2)} if val else {})}
    for split, (normal, pneumonia) in splits.items():
        for cls, n in (("NORMAL", normal), ("PNEUMONIA", pneumonia)):
            for i in range(n):
                _png(root / "chest_xray" / split / cls / f"person{i}_{cls.lower()}.jpeg", 40 + 100 * (cls == "NORMAL"),
                     size=(20 + i, 14), mode="L")  # fmt: skip
    return root / "chest_xray"


def test_chestxray_keeps_the_source_split(tmp_path):
    root = _chestxray(tmp_path)
    splits = build_chestxray(ChestXrayData(path=str(tmp_path), size=8))
    assert splits.train.class_names == ("normal", "pneumonia")
    counts = [np.bincount(d.target).tolist() for d in (splits.train, splits.val, splits.test)]
    assert counts == [[6, 14], [2, 2], [4, 4]]
    assert splits.train.images.shape[1:] == (1, 8, 8)  # centre square crop of sides 20..33 x 14, resized
    assert splits.train.names[0] == "train/NORMAL/person0_normal"
    assert detect_layout(root) == "chestxray"
    lt = build_chestxray(ChestXrayData(path=str(root), size=8, imbalance_ratio=7))
    assert lt.info["longtail"]["train_counts"] == [2, 14]


def test_chestxray_without_val_folder(tmp_path):
    _chestxray(tmp_path, val=False)
    splits = build_chestxray(ChestXrayData(path=str(tmp_path), size=8))
    assert len(splits.train) + len(splits.val) == 20 and len(splits.val) == 2
    with pytest.raises(DataError, match="holds no folder with train/, test/"):
        build_chestxray(ChestXrayData(path=str(tmp_path / "chest_xray" / "train"), size=8))


def _npz(path: Path, *, classes: int = 3, flat: bool = False, rgb: bool = False, **replace) -> Path:
    g = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 40), ("val", 10), ("test", 12)):
        labels = np.arange(n) % classes
        shape = (n, 10, 10, 3) if rgb else (n, 10, 10)
        arrays[f"{split}_images"] = g.integers(0, 256, shape).astype(np.uint8)
        arrays[f"{split}_labels"] = labels.astype(np.uint8) if flat else labels[:, None].astype(np.uint8)
    arrays.update(replace)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def test_medmnist_layouts(tmp_path):
    splits = read_medmnist(_npz(tmp_path / "toy.npz"))
    assert splits.train.images.shape == (40, 1, 10, 10) and splits.train.images.max() <= 1.0
    assert splits.train.class_names == ("class0", "class1", "class2") and len(splits.test) == 12
    rgb = read_medmnist(_npz(tmp_path / "rgb.npz", flat=True, rgb=True), size=16, channels=1)
    assert rgb.val.images.shape == (10, 1, 16, 16)
    named = read_medmnist(_npz(tmp_path / "breastmnist_copy.npz", classes=2))
    assert named.train.class_names == ("malignant", "normal_or_benign")
    lt = build_medmnist(MedmnistData(path=str(tmp_path / "toy.npz"), imbalance_ratio=2, seed=1))
    assert lt.info["longtail"]["train_counts"] == [14, 10, 7]
    assert detect_layout(tmp_path / "toy.npz") == "medmnist"


def test_medmnist_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_medmnist(tmp_path / "none.npz")
    with pytest.raises(DataError, match="lacks key\\(s\\) val_labels"):
        read_medmnist(_npz(tmp_path / "a.npz", val_labels=None))
    with pytest.raises(DataError, match="multi-label data is not supported"):
        read_medmnist(_npz(tmp_path / "b.npz", train_labels=np.zeros((40, 14), np.uint8)))
    with pytest.raises(DataError, match="only 2 class names"):
        read_medmnist(_npz(tmp_path / "c.npz"), class_names=["a", "b"])


def test_shared_loader_on_a_copy(tmp_path):
    root = tmp_path / "pneumoniamnist"
    root.mkdir()
    _npz(root / "pneumoniamnist_reconstructed.npz", classes=2)
    splits = load_medmnist_shared(root, SharedData(name="pneumoniamnist", imbalance_ratio=4, size=12, channels=3))
    assert splits.train.class_names == ("normal", "pneumonia") and splits.train.images.shape[1:] == (3, 12, 12)
    assert splits.info["longtail"]["train_counts"] == [20, 5] and splits.info["dataset"] == "pneumoniamnist"
    (tmp_path / "breastmnist").mkdir()
    with pytest.raises(DataError, match="holds neither breastmnist_reconstructed.npz nor breastmnist.npz"):
        load_medmnist_shared(tmp_path / "breastmnist", SharedData(name="breastmnist"))


@pytest.mark.data
@pytest.mark.parametrize(
    "name, full, ir10",
    [("pneumoniamnist", [[1214, 3494], [135, 389], [234, 390]], [349, 3494]),
     ("breastmnist", [[147, 399], [21, 57], [42, 114]], [40, 399])],
)  # fmt: skip
def test_shared_medmnist_sets(shared_data, monkeypatch, name, full, ir10):
    monkeypatch.setenv("MEDBALANCE_DATA", str(shared_data))
    cfg = parse_config({"data": {"kind": "shared", "name": name}})
    assert cfg.task == "classification"
    splits = build_splits(cfg)
    assert [np.bincount(d.target).tolist() for d in (splits.train, splits.val, splits.test)] == full
    assert splits.train.images.shape[1:] == (1, 28, 28)
    lt = build_splits(parse_config({"data": {"kind": "shared", "name": name, "imbalance_ratio": 10}}))
    assert np.bincount(lt.train.target).tolist() == ir10
    assert len(set(np.bincount(lt.test.target).tolist())) == 1
