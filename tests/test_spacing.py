"""Resampling to a target spacing (``data.spacing``): the interpolators against independent
references, nnU-Net's median / anisotropy rule on hand-made spacings, and 2D and 3D runs that
train at the target spacing but validate, evaluate and predict at each input's own geometry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F
import yaml
from scipy import ndimage

from medbalance.cli.main import main
from medbalance.config import load_config, parse_config
from medbalance.data import build as build_module
from medbalance.data.build import build_splits
from medbalance.data.folder import read_folder
from medbalance.data.io import read_raw
from medbalance.data.normalization import Normalization
from medbalance.data.spacing import (
    median_spacing,
    resample_image,
    resample_labels,
    resample_logits,
    resampled_shape,
)
from medbalance.engine.engine import infer_logits
from medbalance.engine.folds import evaluate_ensemble
from medbalance.engine.run import evaluate_run, load_run, predict_image
from medbalance.errors import ConfigError
from medbalance.export import inference_spec
from medbalance.nets import build_net

# ----------------------------------------------------------------------------- interpolators


@pytest.mark.parametrize("factor", [2, 3])
@pytest.mark.parametrize("shape", [(7, 9), (3, 5, 4)])
def test_labels_are_exact_under_nearest_at_integer_factors(shape, factor):
    labels = np.random.default_rng(0).integers(0, 5, shape).astype(np.uint8)
    up = resample_labels(labels, [n * factor for n in shape])
    expected = labels
    for axis in range(labels.ndim):  # nearest at an integer factor = each label repeated
        expected = np.repeat(expected, factor, axis=axis)
    np.testing.assert_array_equal(up, expected)
    assert up.dtype == np.uint8
    np.testing.assert_array_equal(resample_labels(up, shape), labels)  # and back, exactly


def test_image_resampling_matches_scipy_and_a_smooth_function():
    rng = np.random.default_rng(1)
    image = rng.normal(size=(2, 13, 17)).astype(np.float32)
    for shape in [(26, 34), (7, 9), (13, 40)]:
        # cubic spline at the centres of the new pixels, edges aligned (reference: map_coordinates)
        centres = [(np.arange(n) + 0.5) * old / n - 0.5 for n, old in zip(shape, image.shape[1:])]
        coords = np.meshgrid(*centres, indexing="ij")
        expected = np.stack([ndimage.map_coordinates(c, coords, order=3, mode="nearest") for c in image])
        got = resample_image(image, shape)
        assert got.dtype == np.float32 and got.shape == (2, *shape)
        np.testing.assert_allclose(got, expected, atol=1e-5)
        # linear: torch's bilinear with align_corners=False
        reference = F.interpolate(torch.from_numpy(image)[None], size=shape, mode="bilinear", align_corners=False)
        np.testing.assert_allclose(resample_image(image, shape, order=1), reference[0].numpy(), atol=1e-5)
    # a smooth image doubled in resolution is the function sampled at the new centres
    x = (np.arange(64) + 0.5) / 64
    smooth = np.sin(2 * np.pi * x)[None, None, :].repeat(4, axis=1).astype(np.float32)
    fine = (np.arange(128) + 0.5) / 128
    got = resample_image(smooth, (4, 128))[0, 0]
    np.testing.assert_allclose(got[8:-8], np.sin(2 * np.pi * fine)[8:-8], atol=1e-3)


def test_integer_images_keep_their_dtype_rounded_and_clipped():
    image = np.array([[[0, 255, 0, 255], [255, 0, 255, 0]]], np.uint8)
    got = resample_image(image, (4, 8))
    expected = np.clip(np.rint(resample_image(image.astype(np.float32), (4, 8))), 0, 255)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)  # the cubic spline overshoots; clipped to 0..255


def test_logits_are_resampled_linearly_like_scipy_order_one():
    logits = torch.from_numpy(np.random.default_rng(2).normal(size=(1, 3, 6, 7, 5)).astype(np.float32))
    shape = (12, 5, 9)
    factors = [n / old for n, old in zip(shape, logits.shape[2:])]
    expected = np.stack([ndimage.zoom(c, factors, order=1, mode="nearest", grid_mode=True) for c in logits[0].numpy()])
    np.testing.assert_allclose(resample_logits(logits, shape)[0].numpy(), expected, atol=1e-5)


def test_resampled_shape_rounds_the_physical_extent():
    assert resampled_shape((540, 800), (1.0, 1.0), (4.0, 4.0)) == (135, 200)
    assert resampled_shape((10, 100, 3), (5.0, 0.5, 1.0), (2.5, 1.0, 10.0)) == (20, 50, 1)


# ----------------------------------------------------------------------------- target spacing rule


def test_median_spacing_is_the_per_axis_median_without_anisotropy():
    spacings = [(1.0, 0.7), (1.2, 0.5), (0.9, 0.9), (1.1, 0.6)]
    assert median_spacing(spacings, [(100, 100)] * 4) == pytest.approx((1.05, 0.65))


def test_thick_few_slices_take_the_tenth_percentile():
    # median z = 5 > 3 * 1 and median 12 slices * 3 < 200: anisotropic, z takes its 10th percentile
    spacings = [(5.0, 1.0, 1.0), (3.0, 1.0, 1.0), (8.0, 1.0, 1.0), (5.0, 1.0, 1.0), (4.0, 0.8, 0.8)]
    shapes = [(12, 200, 200)] * 5
    expected = np.percentile([5.0, 3.0, 8.0, 5.0, 4.0], 10)  # 3.4 by linear interpolation
    assert median_spacing(spacings, shapes) == pytest.approx((expected, 1.0, 1.0))
    # many slices: anisotropic spacing alone keeps the median
    assert median_spacing(spacings, [(100, 200, 200)] * 5) == pytest.approx((5.0, 1.0, 1.0))
    # the percentile is never finer than the in-plane spacing: clamped just above it
    spacings = [(0.5, 0.4, 0.4), (4.0, 0.4, 0.4), (4.0, 0.4, 0.4)]
    shapes = [(10, 300, 300)] * 3
    assert median_spacing(spacings, shapes) == pytest.approx((np.percentile([0.5, 4.0, 4.0], 10), 0.4, 0.4))
    spacings = [(0.2, 1.0, 1.0), (4.0, 1.0, 1.0), (4.0, 1.0, 1.0)]
    assert median_spacing(spacings, shapes)[0] == pytest.approx(1.0 + 1e-5)


# ----------------------------------------------------------------------------- runs


def _blob(shape, rng) -> np.ndarray:
    grids = np.mgrid[tuple(slice(0, n) for n in shape)]
    centre = [rng.uniform(0.35, 0.65) * n for n in shape]
    return (sum(((g - c) / (0.3 * n)) ** 2 for g, c, n in zip(grids, centre, shape)) <= 1).astype(np.uint8)


def _itk_folder(root: Path, cases) -> Path:
    """``cases``: (shape, spacing in array order) per case, written as NIfTI images and masks."""
    rng = np.random.default_rng(3)
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
    for i, (shape, spacing) in enumerate(cases):
        mask = _blob(shape, rng)
        image = (rng.normal(0, 15, shape) + 100 * mask + 40).astype(np.int16)
        for array, folder in ((image, "images"), (mask, "masks")):
            itk = sitk.GetImageFromArray(array)
            itk.SetSpacing(tuple(reversed(spacing)))
            itk.SetOrigin((1.0, -2.0, 3.0)[: len(shape)])
            sitk.WriteImage(itk, str(root / folder / f"c{i}.nii.gz"))
    return root


CASES_2D = [
    ((40, 48), (0.5, 0.5)),
    ((24, 30), (1.0, 1.0)),
    ((30, 36), (0.8, 0.8)),
    ((44, 40), (0.6, 0.5)),
    ((28, 28), (0.9, 1.0)),
]
CASES_3D = [
    ((6, 20, 24), (3.0, 1.0, 1.0)),
    ((8, 16, 16), (2.0, 1.25, 1.25)),
    ((5, 22, 20), (4.0, 0.9, 0.9)),
    ((7, 18, 18), (2.5, 1.0, 1.0)),
]


def _run(tmp_path: Path, root: Path, dims: int) -> Path:
    net, patch = ("spatial_dims: 3, ", "[8, 16, 16]") if dims == 3 else ("", "[32, 32]")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"name: sp\nepochs: 2\nbatch_size: 2\nsteps_per_epoch: 2\nprogress: false\npatch_size: {patch}\n"
        f"data: {{kind: folder, path: {root}, val_fraction: 0.25, spacing: median, cache: false}}\n"
        f"model: {{name: unet, {net}base_channels: 4, depth: 2}}\nloss: [dice, ce]\n"
    )
    assert main(["train", str(cfg), "--out", str(tmp_path / "runs"), "-q"]) == 0
    [run] = list((tmp_path / "runs").iterdir())
    return run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``trained(dims) -> (data folder, run folder)``: one tiny ``spacing: median`` run per dimensionality."""
    runs = {}

    def get(dims: int) -> tuple[Path, Path]:
        if dims not in runs:
            base = tmp_path_factory.mktemp(f"spacing{dims}d")
            root = _itk_folder(base / "data", CASES_3D if dims == 3 else CASES_2D)
            calls = []
            resample = build_module.resample_dataset
            build_module.resample_dataset = lambda data, target: calls.append(target) or resample(data, target)
            try:
                runs[dims] = root, _run(base, root, dims)
            finally:
                build_module.resample_dataset = resample
            assert len(calls) == 1  # the training cases are resampled once per run, not per epoch
        return runs[dims]

    return get


@pytest.mark.parametrize("dims", [2, 3])
def test_median_spacing_run_trains_resampled_and_predicts_and_scores_at_native_geometry(tmp_path, trained, dims):
    cases = CASES_3D if dims == 3 else CASES_2D
    root, run = trained(dims)
    splits = json.loads((run / "splits.json").read_text())
    train = [int(name[1:]) for name in splits["train_names"]]
    expected = median_spacing([cases[i][1] for i in train], [cases[i][0] for i in train])
    # the resolved spacing in splits.json, config.yaml and the checkpoint (meta round trip)
    assert splits["target_spacing"] == pytest.approx(list(expected))
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["spacing"] == pytest.approx(list(expected))
    loaded = load_run(run)
    assert loaded.meta["target_spacing"] == pytest.approx(list(expected))
    assert loaded.cfg.data.spacing == pytest.approx(list(expected))
    assert inference_spec(loaded)["preprocessing"]["resample"]["target_spacing"] == pytest.approx(list(expected))
    # validation predictions and `predict` keep each input's size and spacing
    for mask in (run / "predictions").glob("*.nii.gz"):
        source = sitk.ReadImage(str(root / "images" / mask.name))
        assert sitk.ReadImage(str(mask)).GetSize() == source.GetSize()
    out = tmp_path / "pred"
    assert main(["predict", str(run), "--input", str(root / "images"), "--out", str(out), "-q"]) == 0
    for i in range(len(cases)):
        source, mask = sitk.ReadImage(str(root / "images" / f"c{i}.nii.gz")), sitk.ReadImage(str(out / f"c{i}.nii.gz"))
        assert mask.GetSize() == source.GetSize() and mask.GetSpacing() == pytest.approx(source.GetSpacing())
    # evaluate scores every case against its original mask, with its own spacing
    assert main(["evaluate", str(run), "--data", str(root), "-q"]) == 0
    [folder] = list((run / "evaluations").glob("eval-*"))
    assert json.loads((folder / "cases.json").read_text())["summary"]["num_cases"] == len(cases)


def test_predict_image_resamples_to_the_run_spacing_and_back(trained):
    root, folder = trained(2)
    run = load_run(folder)
    image, spacing = read_raw(root / "images" / "c0.nii.gz")
    _, labels = predict_image(run, image, spacing=spacing)
    # the same composition by hand: normalise, resample, window at the target, logits back, argmax
    target = tuple(run.meta["target_spacing"])
    x = Normalization.from_dict(run.meta["normalization"]).for_image(image)(image)
    small = resample_image(x, resampled_shape(x.shape[1:], spacing, target))
    at_target = run.cfg.model_copy(update={"data": run.cfg.data.model_copy(update={"spacing": "keep"})})
    with torch.inference_mode():
        logits = infer_logits(run.model, torch.from_numpy(small)[None], at_target)
        expected = run.task.predict(resample_logits(logits, x.shape[1:]))[0].numpy()
    assert labels.shape == image.shape[1:]
    np.testing.assert_array_equal(labels, expected)


def test_a_fold_ensemble_resamples_each_case_by_its_spacing_like_evaluate(trained, tmp_path):
    root, folder = trained(2)
    run = load_run(folder)
    data = read_folder(root, task="segmentation")
    evaluate_run(run, data, cases=tmp_path / "one")
    evaluate_ensemble([run, run], data, cases=tmp_path / "two")  # predict_image per case, by its spacing
    one, two = (json.loads((tmp_path / k / "cases.json").read_text())["rows"] for k in ("one", "two"))
    assert [c["pred_pixels"] for c in one] == [c["pred_pixels"] for c in two]


def test_inference_runs_the_network_at_the_target_spacing_and_returns_the_native_shape():
    cfg = parse_config({"patch_size": None, "data": {"kind": "folder", "path": "x", "spacing": [2.0, 2.0]}})
    seen = []

    def forward(x: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(x.shape))
        return torch.zeros(x.shape[0], 2, *x.shape[2:])

    image = torch.zeros(2, 1, 40, 60)
    logits = infer_logits(forward, image, cfg, spacing=torch.tensor([[1.0, 1.0], [0.5, 2.0]]))
    assert seen == [(1, 1, 20, 30), (1, 1, 10, 60)]
    assert logits.shape == (2, 2, 40, 60)
    assert infer_logits(forward, image[:1], cfg).shape == (1, 2, 40, 60)  # no spacing: 1 per axis
    assert seen[-1] == (1, 1, 20, 30)


def test_spacing_is_refused_for_resized_data_and_for_the_wrong_number_of_axes(tmp_path):
    with pytest.raises(ConfigError, match="data.spacing resamples native-size"):
        build_splits(
            parse_config(
                {
                    "data": {
                        "kind": "intraclass_phantom",
                        "n_train": 2,
                        "n_val": 1,
                        "n_test": 0,
                        "size": 16,
                        "spacing": "median",
                    }
                }
            )
        )
    root = _itk_folder(tmp_path / "data", CASES_2D)
    cfg = parse_config({"data": {"kind": "folder", "path": str(root), "spacing": [1.0, 1.0, 1.0], "cache": False}})
    with pytest.raises(ConfigError, match=r"data.spacing \[1.0, 1.0, 1.0\] has 3 values but the images have 2 axes"):
        build_splits(cfg)
    for bad in ("mean", [0, 1], [1.0, 2.0, 3.0, 4.0], [True, 1.0], ["1", "2"]):
        with pytest.raises(ConfigError, match="invalid value for 'data.spacing' .* expected keep, median or 2 or 3"):
            parse_config({"data": {"kind": "folder", "path": "x", "spacing": bad}})
    with pytest.raises(ConfigError, match="did you mean 'spacing'"):
        parse_config({"data": {"kind": "shared", "name": "hc18_subset", "spacng": "median"}})
    assert parse_config({"data": {"kind": "camus", "path": "x", "spacing": [0.5, 0.5]}}).data.spacing == [0.5, 0.5]


@pytest.mark.slow  # decodes and resamples the 150 HC18 images: about 7 CPU s
def test_hc18_trains_at_spacing_4_and_keeps_validation_and_test_native(shared_data, monkeypatch):
    monkeypatch.setenv("MEDBALANCE_DATA", str(shared_data))
    cfg = load_config(Path(__file__).parents[1] / "src" / "medbalance" / "configs" / "hc18.yaml")
    assert cfg.data.spacing == [4.0, 4.0]
    splits = build_splits(cfg)
    assert splits.info["target_spacing"] == [4.0, 4.0]
    assert {splits.train.shape(i) for i in range(len(splits.train))} == {(135, 200)}
    assert {splits.test.shape(i) for i in range(len(splits.test))} == {(540, 800)}
    assert splits.train.images[0].dtype == np.uint8 and set(np.unique(splits.train.target[0])) <= {0, 1}


def test_hc18_network_maps_the_whole_resampled_image_to_logits_of_its_size():
    """The recipe's 5-level U-Net pads 135 x 200 (not a multiple of 2**5) and crops the logits back,
    so validation and test can infer on the whole resampled image, not only on 128 x 192 patches."""
    cfg = load_config(Path(__file__).parents[1] / "src" / "medbalance" / "configs" / "hc18.yaml")
    net = build_net(cfg.model.name, in_channels=1, num_classes=2, **cfg.model.model_extra).eval()
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in net.modules()) == cfg.model.model_extra["depth"] == 5
    with torch.no_grad():
        assert net(torch.zeros(1, 1, 135, 200)).shape == (1, 2, 135, 200)
        assert net(torch.zeros(1, 1, *cfg.patch_size)).shape == (1, 2, 128, 192)
