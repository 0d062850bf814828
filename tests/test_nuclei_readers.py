"""CoNIC, MoNuSAC and consep_patches256 readers on tiny generated files (and the real set when present)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medbalance.config import ConicData, MonusacData, SharedData, parse_config
from medbalance.data.build import build_splits
from medbalance.data.readers.nuclei import (
    CONIC_CLASSES,
    CONSEP_CLASSES,
    MONUSAC_CLASSES,
    build_conic,
    build_monusac,
    convert_monusac,
    load_consep,
    rasterize_monusac_xml,
    read_conic,
    read_monusac,
)
from medbalance.errors import DataError


# ----------------------------------------------------------------------------- CoNIC
def _write_conic(root: Path, n: int = 10, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    labels = np.zeros((n, size, size, 2), np.int32)
    labels[..., 1] = rng.integers(0, 7, (n, size, size))
    labels[..., 0] = labels[..., 1] * 10  # instance ids are ignored by the reader
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "images.npy", images)
    np.save(root / "labels.npy", labels)
    return images, labels


def test_read_conic_keeps_class_map_and_scales_images(tmp_path):
    images, labels = _write_conic(tmp_path)
    data = read_conic(tmp_path)
    assert data.images.shape == (10, 3, 16, 16) and data.num_classes == 7
    assert data.class_names == CONIC_CLASSES
    np.testing.assert_array_equal(data.target, labels[..., 1])
    np.testing.assert_allclose(data.images[3, 1], images[3, ..., 1] / 255.0, atol=1e-7)


def test_read_conic_resizes_labels_with_nearest(tmp_path):
    _write_conic(tmp_path, size=16)
    data = read_conic(tmp_path, size=8)
    assert data.images.shape == (10, 3, 8, 8) and data.target.shape == (10, 8, 8)
    assert set(np.unique(data.target)) <= set(range(7))


def test_build_conic_splits_are_disjoint_and_seeded(tmp_path):
    _write_conic(tmp_path, n=20)
    cfg = ConicData(path=str(tmp_path), val_fraction=0.1, test_fraction=0.2, seed=3)
    a, b = build_conic(cfg), build_conic(cfg)
    assert (len(a.train), len(a.val), len(a.test)) == (14, 2, 4)
    assert a.info["test_names"] == b.info["test_names"]
    assert not set(a.info["train_names"]) & set(a.info["test_names"])


def test_conic_through_the_config(tmp_path):
    _write_conic(tmp_path, n=20)
    splits = build_splits(parse_config({"data": {"kind": "conic", "path": str(tmp_path)}}))
    assert splits.train.num_classes == 7


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (np.zeros((2, 4, 4, 3), np.float32), np.zeros((2, 4, 4, 2), np.int32), "expected uint8"),
        (np.zeros((2, 4, 4, 3), np.uint8), np.zeros((2, 4, 4), np.int32), "instance map, class map"),
        (np.zeros((2, 4, 4, 3), np.uint8), np.full((2, 4, 4, 2), 7, np.int32), "class 7"),
    ],
)
def test_read_conic_rejects_bad_arrays(tmp_path, images, labels, message):
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "labels.npy", labels)
    with pytest.raises(DataError, match=message):
        read_conic(tmp_path)


def test_read_conic_names_missing_file(tmp_path):
    with pytest.raises(DataError, match="has no images.npy"):
        read_conic(tmp_path)


# ----------------------------------------------------------------------------- MoNuSAC
def _xml(regions: list[tuple[str, list[tuple[float, float]]]]) -> str:
    parts = ["<Annotations>"]
    for name, points in regions:
        vertices = "".join(f'<Vertex X="{x}" Y="{y}" Z="0"/>' for x, y in points)
        parts.append(
            f'<Annotation Id="1"><Attributes><Attribute Name="{name}" Id="0" Value=""/></Attributes>'
            f'<Regions><RegionAttributeHeaders/><Region Id="1"><Attributes/><Vertices>{vertices}</Vertices>'
            "</Region></Regions></Annotation>"
        )
    parts.append("</Annotations>")
    return "".join(parts)


def _square(x0: int, y0: int, x1: int, y1: int) -> list[tuple[float, float]]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _write_monusac(root: Path, size: tuple[int, int] = (20, 24)) -> None:
    layout = {
        "patA": {
            "patA_1": [("Epithelial", _square(2, 2, 6, 6)), ("Lymphocyte", _square(10, 10, 14, 12))],
            "patA_2": [("Macrophage", _square(0, 0, 3, 3))],
        },
        "patB": {"patB_1": [("Neutrophil", _square(5, 5, 8, 8)), ("Ambiguous", _square(15, 2, 18, 5))]},
        "patC": {"patC_1": []},
        "patD": {"patD_1": [("Epithelial", _square(1, 1, 4, 4))]},
    }
    h, w = size
    for patient, images in layout.items():
        (root / patient).mkdir(parents=True)
        for stem, regions in images.items():
            Image.fromarray(np.full((h, w, 3), 200, np.uint8)).save(root / patient / f"{stem}.tif")
            (root / patient / f"{stem}.xml").write_text(_xml(regions))


def test_rasterize_fills_polygons_with_their_class(tmp_path):
    xml = tmp_path / "a.xml"
    xml.write_text(_xml([("Epithelial", _square(2, 2, 6, 6)), ("Neutrophil", _square(5, 5, 8, 8))]))
    mask = rasterize_monusac_xml(xml, (12, 10))
    assert mask.shape == (12, 10)
    assert mask[3, 3] == MONUSAC_CLASSES.index("epithelial")
    assert mask[7, 7] == MONUSAC_CLASSES.index("neutrophil")
    assert mask[5, 5] == MONUSAC_CLASSES.index("neutrophil")  # later region wins the overlap
    assert mask[0, 0] == 0 and mask[11, 9] == 0
    assert (mask == 1).sum() == 25 - 4  # 5x5 square (outline included) minus the overlap


def test_rasterize_rejects_unknown_class(tmp_path):
    xml = tmp_path / "a.xml"
    xml.write_text(_xml([("Mitosis", _square(0, 0, 3, 3))]))
    with pytest.raises(DataError, match="class 'mitosis'"):
        rasterize_monusac_xml(xml, (5, 5))


def test_rasterize_rejects_broken_xml(tmp_path):
    xml = tmp_path / "a.xml"
    xml.write_text("<Annotations><Annotation>")
    with pytest.raises(DataError, match="cannot read MoNuSAC annotation"):
        rasterize_monusac_xml(xml, (5, 5))


def test_convert_monusac_caches_masks_and_reuses_them(tmp_path):
    root = tmp_path / "monusac"
    _write_monusac(root)
    masks = convert_monusac(root)
    assert [m.relative_to(root / ".medbalance_masks").as_posix() for m in masks] == [
        "patA/patA_1.png",
        "patA/patA_2.png",
        "patB/patB_1.png",
        "patC/patC_1.png",
        "patD/patD_1.png",
    ]
    first = np.asarray(Image.open(masks[2]))
    assert first.shape == (20, 24) and set(np.unique(first)) == {0, 4}  # ambiguous stays background
    stamp = masks[0].stat().st_mtime_ns
    time.sleep(0.01)
    convert_monusac(root)
    assert masks[0].stat().st_mtime_ns == stamp
    # An edited annotation is rasterised again.
    xml = root / "patA" / "patA_1.xml"
    os.utime(xml, (time.time() + 5, time.time() + 5))
    convert_monusac(root)
    assert masks[0].stat().st_mtime_ns != stamp


def test_read_monusac_resizes_and_reports_patients(tmp_path):
    root = tmp_path / "monusac"
    _write_monusac(root)
    data, patients = read_monusac(root, cache=tmp_path / "cache", size=16)
    assert data.images.shape == (5, 3, 16, 16) and data.num_classes == 5
    assert patients == ["patA", "patA", "patB", "patC", "patD"]
    assert data.names[0] == "patA_1" and (tmp_path / "cache" / "patA" / "patA_1.png").is_file()


def test_build_monusac_keeps_patients_in_one_split(tmp_path):
    root = tmp_path / "monusac"
    _write_monusac(root)
    splits = build_monusac(MonusacData(path=str(root), size=16, val_fraction=0.25, test_fraction=0.25))
    owner = {}
    for split in ("train", "val", "test"):
        for name in splits.info[f"{split}_names"]:
            owner.setdefault(name.split("_")[0], set()).add(split)
    assert all(len(s) == 1 for s in owner.values())


def test_monusac_image_without_xml_is_named(tmp_path):
    root = tmp_path / "monusac"
    _write_monusac(root)
    (root / "patA" / "patA_2.xml").unlink()
    with pytest.raises(DataError, match="patA_2.tif' has no annotation 'patA_2.xml'"):
        convert_monusac(root)


def test_monusac_different_sizes_stay_native_without_a_size(tmp_path):
    root = tmp_path / "monusac"
    _write_monusac(root)
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(root / "patC" / "patC_1.tif")
    data, _ = read_monusac(root, size=None)
    assert data.ragged and data.images[0].dtype == np.uint8
    assert all(im.shape[1:] == t.shape for im, t in zip(data.images, data.target))


# ----------------------------------------------------------------------------- consep_patches256
def _write_consep(root: Path) -> None:
    rng = np.random.default_rng(1)
    for split, tiles in (("train", 4), ("test", 2)):
        for kind in ("images", "seg_mask"):
            (root / kind / split).mkdir(parents=True)
        for t in range(1, tiles + 1):
            for k in range(2):
                stem = f"{split}_{t}_{k:03d}"
                image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(image).save(root / "images" / split / f"{stem}.jpg")
                Image.fromarray(rng.integers(0, 5, (8, 8), dtype=np.uint8)).save(
                    root / "seg_mask" / split / f"{stem}.png"
                )


def test_load_consep_keeps_official_test_and_carves_val_tiles(tmp_path):
    _write_consep(tmp_path)
    splits = load_consep(tmp_path, SharedData(name="consep_patches256", val_fraction=0.25))
    assert len(splits.test) == 4 and all(n.startswith("test_") for n in splits.test.names)
    assert len(splits.val) == 2 and len(splits.train) == 6
    val_tiles = {n.rsplit("_", 1)[0] for n in splits.val.names}
    assert val_tiles == set(splits.info["val_tiles"]) and len(val_tiles) == 1
    assert not val_tiles & {n.rsplit("_", 1)[0] for n in splits.train.names}
    assert splits.train.class_names == CONSEP_CLASSES and splits.train.in_channels == 3


def test_load_consep_missing_mask_is_named(tmp_path):
    _write_consep(tmp_path)
    (tmp_path / "seg_mask" / "train" / "train_1_000.png").unlink()
    with pytest.raises(DataError, match="train_1_000.jpg' has no class map"):
        load_consep(tmp_path, SharedData(name="consep_patches256"))


def test_real_consep_patches(shared_data):
    if not (shared_data / "consep_patches256").is_dir():
        pytest.skip("consep_patches256 not in the shared data")
    cfg = parse_config({"data": {"kind": "shared", "name": "consep_patches256", "size": 64, "val_fraction": 0.2}})
    splits = build_splits(cfg)
    assert (len(splits.train) + len(splits.val), len(splits.test)) == (432, 224)
    assert splits.train.images.shape[1:] == (3, 64, 64)
    assert splits.train.target.max() == 4
    fg = (splits.test.target > 0).mean()
    assert 0.1 < fg < 0.3  # PROVENANCE.md: background about 80% of the test pixels
