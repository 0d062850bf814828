"""CAMUS reader (both releases: .mhd/.raw and .nii.gz) and the medical formats of the generic
folder reader (MetaImage, NIfTI, 16-bit TIFF), written as tiny files here."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from medbalance.cli.main import main
from medbalance.config import CamusData, parse_config
from medbalance.data.build import build_splits
from medbalance.data.folder import read_segmentation_folder
from medbalance.data.io import DataError, image_stem, list_images, read_image, read_mask
from medbalance.data.readers.camus import build_camus, find_patients


def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.3,) * array.ndim)
    sitk.WriteImage(image, str(path))


def _frame(patient: int, view: str, phase: str, hw=(24, 20)):
    """An echo-like frame and its 4-label ground truth (0 bg, 1 LV, 2 myocardium, 3 atrium)."""
    rng = np.random.default_rng([patient, view == "4CH", phase == "ES"])
    image = rng.integers(0, 255, hw, dtype=np.uint8)
    gt = np.zeros(hw, np.uint8)
    gt[4:16, 4:14] = 2
    gt[6:14, 6:12] = 1
    gt[16:22, 6:12] = 3
    return image, gt


def make_camus(root, patients, *, suffix=".mhd", with_gt=True, hw=(24, 20)):
    for p in patients:
        pid = f"patient{p:04d}"
        for view in ("2CH", "4CH"):
            for phase in ("ED", "ES"):
                image, gt = _frame(p, view, phase, hw)
                if suffix == ".mhd":  # the first release stores ED/ES frames as 3D images of one slice
                    image, gt = image[None], gt[None]
                _write(root / pid / f"{pid}_{view}_{phase}{suffix}", image)
                if with_gt:
                    _write(root / pid / f"{pid}_{view}_{phase}_gt{suffix}", gt)
    return root


def test_mhd_layout_with_training_and_testing_folders(tmp_path):
    make_camus(tmp_path / "training", range(1, 11))
    make_camus(tmp_path / "testing", range(401, 403), with_gt=False)  # the original test patients: no GT
    assert (tmp_path / "training" / "patient0001" / "patient0001_2CH_ED.raw").is_file()
    assert len(find_patients(tmp_path)) == 12
    splits = build_camus(CamusData(path=str(tmp_path), size=None, val_fraction=0.1, test_fraction=0.2))
    total = len(splits.train) + len(splits.val) + len(splits.test)
    assert total == 40  # 10 patients x 2 views x 2 phases; testing frames skipped
    assert (len(splits.train), len(splits.val), len(splits.test)) == (28, 4, 8)  # 7 / 1 / 2 patients
    patients = [set(splits.info[f"{k}_patients"]) for k in ("train", "val", "test")]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    # the split is by patient: every frame of a test patient is in test
    assert sorted({n.split("_")[0] for n in splits.test.names}) == sorted(patients[2])
    assert splits.train.images.shape[1:] == (1, 24, 20) and splits.train.images.dtype == np.uint8  # stored values
    # label 1 (LV endocardium) by default: the 8 x 6 box
    assert splits.train.num_classes == 2 and splits.train.class_names == ("background", "LV endocardium")
    assert splits.train.target.sum(axis=(1, 2)).tolist() == [48] * len(splits.train)
    again = build_camus(CamusData(path=str(tmp_path), size=None))
    assert again.test.names == build_camus(CamusData(path=str(tmp_path), size=None)).test.names


def test_nifti_release_views_phases_label_and_resizing(tmp_path):
    make_camus(tmp_path / "database_nifti", range(1, 6), suffix=".nii.gz")
    data = CamusData(path=str(tmp_path), views=["4CH"], phases=["ES"], label=3, size=16, val_fraction=0.2)
    splits = build_camus(data)
    names = splits.train.names + splits.val.names + splits.test.names
    assert len(names) == 5 and all(n.endswith("_4CH_ES") for n in names)
    assert splits.train.images.shape[1:] == (1, 16, 16) and splits.train.target.shape[1:] == (16, 16)
    assert splits.train.class_names[1] == "left atrium"
    image, gt = _frame(1, "4CH", "ES")
    assert 0 < splits.train.target.mean() < (gt == 3).mean() * 1.5


def test_camus_through_a_run_config(tmp_path):
    make_camus(tmp_path, range(1, 6), suffix=".nii.gz")
    cfg = parse_config({"data": {"kind": "camus", "path": str(tmp_path), "size": 16, "label": 2}})
    splits = build_splits(cfg)
    assert splits.train.class_names == ("background", "myocardium") and splits.test is not None


def test_camus_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        build_camus(CamusData(path=str(tmp_path / "missing")))
    with pytest.raises(DataError, match="holds no 'patient\\*' folders"):
        build_camus(CamusData(path=str(tmp_path)))
    make_camus(tmp_path / "testing", [401], with_gt=False)
    with pytest.raises(DataError, match="no CAMUS frame with a ground truth"):
        build_camus(CamusData(path=str(tmp_path)))
    bad = tmp_path / "bad"
    make_camus(bad, [1])
    _write(bad / "patient0001" / "patient0001_2CH_ED_gt.mhd", np.zeros((10, 10), np.uint8))
    with pytest.raises(DataError, match=r"is \(24, 20\) but its ground truth is \(10, 10\)"):
        build_camus(CamusData(path=str(bad)))
    (bad / "patient0001" / "patient0001_2CH_ED_gt.raw").unlink()
    with pytest.raises(DataError, match="patient0001_2CH_ED_gt.mhd.*data file .* does not exist"):
        build_camus(CamusData(path=str(bad)))


def test_dualpath_experiment_reads_a_camus_folder(tmp_path):
    data = make_camus(tmp_path / "camus", range(1, 6), suffix=".nii.gz")
    args = ["experiment", "dualpath", "--scale", "smoke", "--data", str(data), "--set", "sweep=false"]
    assert main([*args, "--out", str(tmp_path / "out"), "-q"]) == 0
    (exp,) = (tmp_path / "out").iterdir()
    results = json.loads((exp / "results.json").read_text())
    assert "Dual-path" in results["tables"][0]["rows"]
    assert len(list((exp / "artefacts" / "test").iterdir())) == 4  # one patient's 4 frames


# ----------------------------------------------------------------------------- generic folder, medical formats
def test_medical_suffixes_and_stems():
    from pathlib import Path

    assert image_stem(Path("a.nii.gz")) == "a" and image_stem(Path("b.mhd")) == "b" and image_stem(Path("c.png")) == "c"


def test_generic_folder_reads_nifti_mhd_and_16bit_tiff(tmp_path):
    rng = np.random.default_rng(0)
    mask = np.zeros((12, 16), np.uint8)
    mask[3:8, 4:10] = 1
    _write(tmp_path / "images" / "a.nii.gz", rng.integers(-1000, 1000, (12, 16)).astype(np.int16))
    _write(tmp_path / "masks" / "a.nii.gz", mask)
    _write(tmp_path / "images" / "b.mhd", rng.integers(0, 255, (12, 16), dtype=np.uint8))
    _write(tmp_path / "masks" / "b.mhd", mask)
    Image.fromarray(rng.integers(0, 65535, (12, 16), dtype=np.uint16)).save(tmp_path / "images" / "c.tif")
    Image.fromarray(mask * 255).save(tmp_path / "masks" / "c.png")
    assert [p.name for p in list_images(tmp_path / "images")] == ["a.nii.gz", "b.mhd", "c.tif"]  # .raw not listed
    ds = read_segmentation_folder(tmp_path, size=8)
    assert ds.names == ["a", "b", "c"] and ds.images.shape == (3, 1, 8, 8)
    assert ds.images.min() >= 0.0 and ds.images.max() <= 1.0
    a = read_image(tmp_path / "images" / "a.nii.gz")  # int16 (CT-like): min-max scaled
    assert a.min() == 0.0 and a.max() == 1.0
    assert read_mask(tmp_path / "masks" / "b.mhd").sum() == mask.sum()


def test_medical_format_errors(tmp_path):
    _write(tmp_path / "vol.nii.gz", np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(DataError, match="is a volume of size \\(8, 8, 3\\)"):
        read_image(tmp_path / "vol.nii.gz")
    one = tmp_path / "one.nii.gz"
    _write(one, np.ones((1, 8, 8), np.uint8))  # a single slice is a 2D image
    assert read_mask(one).shape == (8, 8)
    stack = tmp_path / "stack.tif"
    frames = [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (0, 1)]
    frames[0].save(stack, save_all=True, append_images=frames[1:])
    with pytest.raises(DataError, match="holds 2 frames"):
        read_image(stack)
    header = "NDims = 2\nDimSize = 4 4\nElementType = MET_UCHAR\nElementDataFile = nowhere.raw\n"
    (tmp_path / "broken.mhd").write_text(header)
    with pytest.raises(DataError, match="broken.mhd.*data file .nowhere.raw. does not exist"):
        read_image(tmp_path / "broken.mhd")
    folder = tmp_path / "dup"
    _write(folder / "images" / "x.png", np.zeros((4, 4), np.uint8))
    _write(folder / "masks" / "x.png", np.zeros((4, 4), np.uint8))
    _write(folder / "masks" / "x.nii.gz", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match="have the same stem"):
        read_segmentation_folder(folder)
