"""Geometry-preserving reading / writing (``medbalance.data.medical``) and ``medbalance predict`` on medical formats."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from medbalance.cli.main import main
from medbalance.data.medical import PREDICT_SUFFIXES, list_inputs, mask_path, read_slices, write_labels
from medbalance.errors import DataError
from tests._reference.report_checks import assert_real_png


def _rotation(angle: float) -> tuple[float, ...]:
    c, s = math.cos(angle), math.sin(angle)
    return (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)


def _write_volume(path, array, spacing=(0.7, 0.8, 2.5), origin=(-10.0, 4.0, 30.0), direction=_rotation(0.3)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing[: image.GetDimension()])
    image.SetOrigin(origin[: image.GetDimension()])
    if image.GetDimension() == 3:
        image.SetDirection(direction)
    sitk.WriteImage(image, str(path))
    return sitk.ReadImage(str(path))  # what the format actually stores (NIfTI keeps float32 geometry)


def _assert_same_geometry(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mhd", ".mha", ".nrrd"])
def test_volume_geometry_and_labels_round_trip(tmp_path, suffix):
    rng = np.random.default_rng(0)
    volume = rng.normal(100, 30, (3, 10, 12)).astype(np.int16)
    source = _write_volume(tmp_path / f"ct{suffix}", volume)
    slices, info = read_slices(tmp_path / f"ct{suffix}")
    assert slices.shape == (3, 1, 10, 12) and slices.dtype == np.float32 and info.shape == (3, 10, 12)
    # every slice min-max scaled on its own, as a 2D network saw its training images
    assert np.allclose(slices.min(axis=(1, 2, 3)), 0) and np.allclose(slices.max(axis=(1, 2, 3)), 1)
    labels = rng.integers(0, 3, (3, 10, 12))
    out = write_labels(mask_path(tmp_path / "out", info.path), labels, info, binary=False)
    assert out.name == f"ct{suffix}"
    mask = sitk.ReadImage(str(out))
    _assert_same_geometry(mask, source)
    assert mask.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mask), labels)


@settings(max_examples=25, deadline=None)
@given(
    spacing=st.tuples(*[st.floats(0.05, 5.0)] * 3),
    origin=st.tuples(*[st.floats(-500, 500)] * 3),
    angle=st.floats(-math.pi, math.pi),
)
def test_nifti_geometry_round_trips_for_any_spacing_origin_and_rotation(tmp_path_factory, spacing, origin, angle):
    folder = tmp_path_factory.mktemp("nii")
    source = _write_volume(folder / "v.nii.gz", np.zeros((2, 4, 5), np.uint8), spacing, origin, _rotation(angle))
    _, info = read_slices(folder / "v.nii.gz")
    out = write_labels(folder / "m.nii.gz", np.ones((2, 4, 5), np.int64), info, binary=True)
    _assert_same_geometry(sitk.ReadImage(str(out)), source)


def test_2d_mhd_and_dicom_keep_their_geometry(tmp_path):
    image = np.arange(6 * 7, dtype=np.uint16).reshape(6, 7) * 50
    for name in ("us.mhd", "xray.dcm"):
        source = _write_volume(tmp_path / name, image, spacing=(0.3, 0.6), origin=(5.0, -2.0))
        slices, info = read_slices(tmp_path / name)
        assert slices.shape == (1, 1, 6, 7)
        labels = (slices[:, 0] > 0.5).astype(np.int64)
        out = write_labels(tmp_path / "out" / name, labels, info, binary=True)
        mask = sitk.ReadImage(str(out))
        _assert_same_geometry(mask, source)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(mask).reshape(6, 7), labels[0])


def test_dicom_mask_keeps_patient_and_study(tmp_path):
    image = sitk.GetImageFromArray(np.zeros((5, 5), np.int16))
    image.SetMetaData("0010|0020", "PATIENT-7")
    image.SetMetaData("0020|000d", "1.2.3.4.5")
    sitk.WriteImage(image, str(tmp_path / "in.dcm"))
    source = sitk.ReadImage(str(tmp_path / "in.dcm"))
    _, info = read_slices(tmp_path / "in.dcm")
    mask = sitk.ReadImage(str(write_labels(tmp_path / "out.dcm", np.zeros((1, 5, 5), int), info, binary=True)))
    assert mask.GetMetaData("0010|0020").strip() == "PATIENT-7"
    for same in ("0020|000d", "0020|0052"):  # study and frame of reference
        assert mask.GetMetaData(same) == source.GetMetaData(same)
    for new in ("0008|0018", "0020|000e"):  # a new instance in a new series
        assert mask.GetMetaData(new) != source.GetMetaData(new)


def test_raster_formats(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (8, 9, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.jpg")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "b.tif")
    slices, info = read_slices(tmp_path / "a.jpg", channels=3)
    assert slices.shape == (1, 3, 8, 9) and info.geometry is None
    labels = np.zeros((1, 8, 9), np.int64)
    labels[0, 2:5, 3:6] = 1
    out = write_labels(mask_path(tmp_path / "out", info.path), labels, info, binary=True)
    assert out.name == "a.png"  # JPEG would blur the labels
    np.testing.assert_array_equal(np.asarray(Image.open(out)), labels[0] * 255)
    _, info = read_slices(tmp_path / "b.tif")
    out = write_labels(mask_path(tmp_path / "out", info.path), labels * 2, info, binary=False)
    assert out.name == "b.tif" and np.asarray(Image.open(out)).max() == 2


def test_bad_input_is_refused_with_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="has format '.txt'"):
        list_inputs(tmp_path / "notes.txt")
    with pytest.raises(DataError, match="holds no images"):
        list_inputs(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        list_inputs(tmp_path / "missing")
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(DataError, match="cannot read image") as err:
        read_slices(tmp_path / "broken.nii.gz")
    assert "\n" not in str(err.value) and "0x" not in str(err.value)  # ITK's reason, one line
    # a truncated .raw: refused from the header's sizes before ITK reads it
    _write_volume(tmp_path / "cut.mhd", np.zeros((2, 4, 5), np.uint8))
    raw = tmp_path / "cut.raw"
    raw.write_bytes(raw.read_bytes()[:7])
    with pytest.raises(
        DataError, match=r"cut.raw' holds 7 bytes of pixels but the header 'cut.mhd' announces 40"
    ) as err:
        read_slices(tmp_path / "cut.mhd")
    assert "\n" not in str(err.value)
    _write_volume(tmp_path / "v.nii.gz", np.zeros((2, 4, 5), np.uint8))
    _, info = read_slices(tmp_path / "v.nii.gz")
    with pytest.raises(ValueError, match=r"labels must have shape \(2, 4, 5\)"):
        write_labels(tmp_path / "m.nii.gz", np.zeros((1, 4, 5), int), info, binary=True)
    assert ".dcm" in PREDICT_SUFFIXES and ".nii.gz" in PREDICT_SUFFIXES


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    argv = ["--set", "epochs=1", "--set", "data.size=32", "--set", "data.n_train=8", "--set", "data.n_val=4"]
    argv += ["--set", "data.n_test=0", "--set", "model.base_channels=4", "--set", "progress=false"]
    assert main(["demo", "--out", str(out), *argv]) == 0
    return next(p for p in out.iterdir() if p.is_dir())


def test_predict_a_folder_of_medical_files_keeps_format_and_geometry(run, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(2)
    sources = {
        "vol.nii.gz": _write_volume(inputs / "vol.nii.gz", rng.normal(0, 1, (3, 20, 24)).astype(np.float32)),
        "slice.mhd": _write_volume(inputs / "slice.mhd", rng.integers(0, 4000, (20, 24)).astype(np.int16)),
        "xray.dcm": _write_volume(inputs / "xray.dcm", rng.integers(0, 4000, (20, 24)).astype(np.int16)),
    }
    Image.fromarray(rng.integers(0, 256, (20, 24), dtype=np.uint8)).save(inputs / "photo.jpg")
    assert main(["predict", str(run), "--input", str(inputs), "--out", str(tmp_path / "out"), "--overlay", "-q"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote 4 prediction(s) to {tmp_path / 'out'}"
    for name, source in sources.items():
        mask = sitk.ReadImage(str(tmp_path / "out" / name))
        _assert_same_geometry(mask, source)
        assert set(np.unique(sitk.GetArrayFromImage(mask))) <= {0, 1}
    assert np.asarray(Image.open(tmp_path / "out" / "photo.png")).shape == (20, 24)
    for stem in ("vol", "slice", "xray", "photo"):
        overlay = np.asarray(Image.open(tmp_path / "out" / f"{stem}_overlay.png"))
        assert overlay.shape == (20, 24, 3)
    # a single file, and nothing is overwritten
    assert main(["predict", str(run), "--input", str(inputs / "vol.nii.gz"), "--out", str(tmp_path / "one")]) == 0
    assert [p.name for p in (tmp_path / "one").iterdir()] == ["vol.nii.gz"]
    assert main(["predict", str(run), "--input", str(inputs / "vol.nii.gz"), "--out", str(tmp_path / "one")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_overlay_png_of_a_real_image_is_not_blank(run, tmp_path):
    rng = np.random.default_rng(3)
    image = (rng.random((40, 40)) * 80).astype(np.uint8)
    image[10:30, 12:28] += 150
    Image.fromarray(image).save(tmp_path / "a.png")
    assert (
        main(["predict", str(run), "--input", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--overlay"]) == 0
    )
    assert_real_png((tmp_path / "o" / "a_overlay.png").read_bytes(), min_side=40)


def test_predict_with_a_classification_run_writes_one_row_per_image_or_slice(tmp_path, capsys):
    argv = ["--set", "epochs=1", "--set", "data.n_max=8", "--set", "data.imbalance_ratio=2", "--set", "data.size=16"]
    argv += ["--set", "data.num_classes=3", "--set", "data.n_val_per_class=1", "--set", "data.n_test_per_class=0"]
    assert main(["train", "longtail", "--out", str(tmp_path / "runs"), *argv, "--set", "progress=false", "-q"]) == 0
    run = next((tmp_path / "runs").iterdir())
    (tmp_path / "in").mkdir()
    _write_volume(tmp_path / "in" / "stack.nii.gz", np.random.default_rng(4).random((2, 16, 16)).astype(np.float32))
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "in" / "flat.png")
    assert main(["predict", str(run), "--input", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "-q"]) == 0
    header, *rows = (tmp_path / "out" / "predictions.csv").read_text().splitlines()
    names = json.loads((run / "metrics.json").read_text())["class_names"]
    assert header == "name,prediction,label," + ",".join(f"p_{n}" for n in names)
    assert [r.split(",")[0] for r in rows] == ["flat.png", "stack.nii.gz#0", "stack.nii.gz#1"]
    for row in rows:
        cells = row.split(",")
        probs = np.array(cells[3:], float)
        assert probs.sum() == pytest.approx(1, abs=1e-5) and int(cells[1]) == probs.argmax()
        assert cells[2] == names[int(cells[1])]


def test_prediction_in_channels_last_matches_nchw(run):
    from medbalance.engine.run import load_run, predict_arrays

    images = np.random.default_rng(0).random((3, 1, 40, 29), dtype=np.float32)
    fast, plain = load_run(run), load_run(run)
    plain.cfg = plain.cfg.model_copy(update={"channels_last": False})
    (p1, l1), (p2, l2) = predict_arrays(fast, images), predict_arrays(plain, images)
    conv = next(m for m in fast.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)  # the auto default on CPU
    assert p1.flags.c_contiguous and l1.flags.c_contiguous
    np.testing.assert_allclose(p1, p2, atol=1e-5)
    assert (l1 != l2).mean() < 1e-3  # labels agree up to float ties
