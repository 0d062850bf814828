"""Export metadata reproduces ``medbalance predict``: the onnxruntime procedure of docs/onnx.md,
reading only the model file, gives the masks ``predict`` writes (native 2D with sliding window
and flip TTA, a 3D volume, a run on resized data); format names and axis names."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import SimpleITK as sitk
import torch
from PIL import Image

from medbalance.cli.main import main
from medbalance.data.normalization import Normalization
from medbalance.engine.run import load_run, predict_arrays, predict_image

DOC = Path(__file__).resolve().parents[1] / "docs" / "onnx.md"


@pytest.fixture(scope="module")
def doc():
    """The namespace of docs/onnx.md's script (its one python block)."""
    [code] = re.findall(r"```python\n(.*?)\n```", DOC.read_text(), flags=re.S)
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    return namespace


def _train(tmp: Path, config: str) -> Path:
    cfg = tmp / "cfg.yaml"
    cfg.write_text(config)
    assert main(["train", str(cfg), "--out", str(tmp / "runs"), "-q"]) == 0
    [run] = list((tmp / "runs").iterdir())
    return run


def _logits(run_dir: Path, image: np.ndarray) -> np.ndarray:
    """The PyTorch logits medbalance predict thresholds, for the explanation of a differing pixel."""
    from medbalance.engine.engine import infer_logits

    run = load_run(run_dir)
    x = torch.from_numpy(Normalization.from_dict(run.meta["normalization"]).for_image(image)(image))
    with torch.inference_mode():
        return infer_logits(run.model, x[None], run.cfg)[0].numpy()


def _assert_same_mask(ours: np.ndarray, theirs: np.ndarray, logits: np.ndarray | None = None) -> None:
    """Identical, except pixels within 1e-4 of the decision boundary (onnxruntime's rounding)."""
    assert ours.shape == theirs.shape
    differ = ours != theirs
    if differ.any():
        assert logits is not None, f"{int(differ.sum())} pixels differ"
        top = np.sort(logits, axis=0)
        margin = np.abs(logits[0]) if len(logits) == 1 else top[-1] - top[-2]
        assert margin[differ].max() < 1e-4 and differ.mean() < 1e-3


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    """A 3-class native-geometry run on mixed-size 8-bit images (one smaller than the patch)."""
    tmp = tmp_path_factory.mktemp("native")
    rng = np.random.default_rng(0)
    data = tmp / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    for i, (h, w) in enumerate([(40, 52), (48, 36), (24, 41), (56, 56), (45, 33)]):
        yy, xx = np.mgrid[:h, :w]
        mask = ((yy - h / 2) ** 2 + (xx - w / 3) ** 2 <= (0.25 * min(h, w)) ** 2).astype(np.uint8)
        mask[(yy - h / 2) ** 2 + (xx - 2 * w / 3) ** 2 <= (0.15 * min(h, w)) ** 2] = 2
        image = np.clip(50 + 60 * mask + rng.normal(0, 15, (h, w)), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(data / "images" / f"case{i}.png")
        Image.fromarray(mask).save(data / "masks" / f"case{i}.png")
    run = _train(
        tmp,
        "name: native\nepochs: 1\nbatch_size: 2\nsteps_per_epoch: 2\nprogress: false\npatch_size: [32, 32]\n"
        f"data: {{kind: folder, path: {data}, val_fraction: 0.4, test_fraction: 0.0}}\n"
        "evaluation: {overlap: 0.5, flip_tta: true}\n"
        "model: {name: unet, base_channels: 4, depth: 2}\nloss: [dice, ce]\n",
    )
    assert main(["export", str(run), "--format", "onnx", "-q"]) == 0
    return run, data


def test_native_run_metadata_states_normalisation_window_and_activation(native):
    run, _ = native
    path = run / "export" / "model.onnx"
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    splits = json.loads((run / "splits.json").read_text())
    pre, inf, post = (json.loads(meta[k]) for k in ("preprocessing", "inference", "postprocessing"))
    assert pre["geometry"] == "native" and pre["normalization"] == splits["normalization"]
    assert pre["normalization"]["scheme"] == "uint8" and len(pre["normalization"]["mean"]) == 1
    assert inf == {**inf, "mode": "sliding_window", "window": [32, 32], "overlap": 0.5, "flip_tta": True}
    assert inf["sigma_scale"] == 0.125 and inf["min_weight"] == 1e-3
    assert post["activation"] == "softmax" and json.loads(meta["class_names"]) == ["background", "class1", "class2"]
    assert meta["out_channels"] == "3" and meta["in_channels"] == "1" and json.loads(meta["ignore_index"]) is None
    # named dynamic axes, not torch.export's s77
    for value in (proto.graph.input[0], proto.graph.output[0]):
        dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        assert dims[0] == "batch" and dims[2:] == ["height", "width"]
    record = json.loads((run / "export" / "model.onnx.json").read_text())
    assert record["metadata"]["preprocessing"] == pre and record["metadata"]["inference"] == inf


def test_doc_procedure_on_onnxruntime_equals_predict_on_native_images(native, doc, tmp_path):
    run, data = native
    out = tmp_path / "pred"
    assert main(["predict", str(run), "--input", str(data / "images"), "--out", str(out), "-q"]) == 0
    for file in sorted((data / "images").glob("*.png")):
        image = np.asarray(Image.open(file))[None]  # (1, H, W) uint8, as stored
        ours = doc["predict"](run / "export" / "model.onnx", image)
        theirs = np.asarray(Image.open(out / file.name)).astype(np.int64)
        _assert_same_mask(ours, theirs, _logits(run, image))


def test_doc_procedure_equals_predict_for_a_run_trained_at_a_target_spacing(native, doc, tmp_path):
    _, data = native
    run = _train(
        tmp_path,
        "name: spaced\nepochs: 1\nbatch_size: 2\nsteps_per_epoch: 2\nprogress: false\npatch_size: [16, 16]\n"
        f"data: {{kind: folder, path: {data}, val_fraction: 0.4, test_fraction: 0.0, spacing: [2, 2]}}\n"
        "model: {name: unet, base_channels: 4, depth: 2}\nloss: [dice, ce]\n",
    )
    assert main(["export", str(run), "--format", "onnx", "-q"]) == 0
    path = run / "export" / "model.onnx"
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["preprocessing"])["resample"]["target_spacing"] == [2.0, 2.0]
    out = tmp_path / "pred"
    assert main(["predict", str(run), "--input", str(data / "images"), "--out", str(out), "-q"]) == 0
    loaded = load_run(run)
    for file in sorted((data / "images").glob("*.png")):
        image = np.asarray(Image.open(file))[None]  # a PNG: no spacing, 1 per axis
        theirs = np.asarray(Image.open(out / file.name)).astype(np.int64)
        _assert_same_mask(doc["predict"](path, image), theirs, _logits(run, image))
    # a stated spacing (as a NIfTI header gives) is honoured the same way by both
    _, labels = predict_image(loaded, image, spacing=(0.5, 1.5))
    _assert_same_mask(doc["predict"](path, image, spacing=(0.5, 1.5)), labels)


@pytest.mark.slow  # trains and exports a 3D network: 12-18 s on the shared machine
def test_doc_procedure_equals_predict_on_a_3d_volume(tmp_path, doc):
    rng = np.random.default_rng(5)
    root = tmp_path / "vol"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, shape in enumerate([(12, 20, 24), (10, 24, 20), (14, 18, 18), (6, 22, 22)]):
        zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
        mask = (zz - shape[0] / 2) ** 2 / 9 + (yy - shape[1] / 2) ** 2 / 25 + (xx - shape[2] / 2) ** 2 / 25 <= 1
        image = (rng.normal(0, 15, shape) + 80 * mask - 200).astype(np.int16)
        for arr, folder in ((image, "images"), (mask.astype(np.uint8), "masks")):
            sitk.WriteImage(sitk.GetImageFromArray(arr), str(root / folder / f"v{i}.nii.gz"))
    run = _train(
        tmp_path,
        "name: vol\nepochs: 1\nbatch_size: 2\nsteps_per_epoch: 2\nprogress: false\npatch_size: [8, 16, 16]\n"
        f"data: {{kind: folder, path: {root}, val_fraction: 0.25}}\n"
        "model: {name: unet, spatial_dims: 3, base_channels: 4, depth: 2}\nloss: [dice, ce]\n",
    )
    assert main(["export", str(run), "-q"]) == 0
    path = run / "export" / "model.onnx"
    proto = onnx.load(str(path))
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 1, "depth", "height", "width"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["preprocessing"])["normalization"]["scheme"] == "ct" and meta["spatial_dims"] == "3"
    assert json.loads(meta["postprocessing"])["activation"] == "sigmoid"
    out = tmp_path / "pred"
    assert main(["predict", str(run), "--input", str(root / "images"), "--out", str(out), "-q"]) == 0
    for i in range(4):  # v3 has 6 slices: padded to the 8 of the window
        image = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "images" / f"v{i}.nii.gz")))[None]
        theirs = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"v{i}.nii.gz"))).astype(np.int64)
        _assert_same_mask(doc["predict"](path, image), theirs, _logits(run, image))


def test_doc_procedure_equals_predict_for_a_run_on_resized_data(tmp_path, doc):
    argv = ["--set", "epochs=1", "--set", "data.size=32", "--set", "data.n_train=8", "--set", "data.n_val=4"]
    argv += ["--set", "data.n_test=0", "--set", "model.base_channels=4", "--set", "model.depth=2"]
    assert main(["demo", "--out", str(tmp_path / "runs"), *argv, "--set", "progress=false", "-q"]) == 0
    [run] = list((tmp_path / "runs").iterdir())
    assert main(["export", str(run), "--no-check", "-q"]) == 0
    path = run / "export" / "model.onnx"
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    pre = json.loads(meta["preprocessing"])
    assert pre["geometry"] == "resized"
    assert pre["resize"] == {"size": [32, 32], "mode": "bilinear", "align_corners": False, "antialias": False}
    assert json.loads(meta["inference"]) == {"mode": "whole_image"}
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(2)
    for name, shape in (("a.png", (45, 61)), ("b.png", (32, 32)), ("c.png", (20, 27))):
        Image.fromarray((rng.random(shape) * 255).astype(np.uint8)).save(images / name)
    out = tmp_path / "pred"
    assert main(["predict", str(run), "--input", str(images), "--out", str(out), "-q"]) == 0
    loaded = load_run(run)
    for name in ("a.png", "b.png", "c.png"):
        image = np.asarray(Image.open(images / name))[None]
        theirs = (np.asarray(Image.open(out / name)) > 0).astype(np.int64)  # a binary mask: 0 / 255
        probs, _ = predict_arrays(loaded, image[None] / np.float32(255))
        logit = np.log(probs[0]) - np.log1p(-probs[0])
        _assert_same_mask(doc["predict"](path, image), theirs, logit)


def test_doc_resize_is_torchs_bilinear_without_antialiasing(doc):
    x = np.random.default_rng(3).random((2, 3, 17, 23), dtype=np.float32)
    for size in [(32, 32), (9, 40), (17, 5)]:
        expected = torch.nn.functional.interpolate(
            torch.from_numpy(x), size=size, mode="bilinear", align_corners=False, antialias=False
        ).numpy()
        np.testing.assert_allclose(doc["resize"](x, size), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "norm",
    [
        Normalization("none"),
        Normalization("uint8", mean=(0.31, 0.5, 0.2), std=(0.12, 0.3, 0.07)),
        Normalization("ct", mean=(40.0, 3.0, -7.5), std=(55.0, 9.0, 3.0), clip=((-100, 200), (0, 9), (-50, 50))),
        Normalization("zscore"),
    ],
)
def test_doc_normalisation_equals_medbalances_bit_for_bit(doc, norm):
    rng = np.random.default_rng(4)
    image = (
        rng.integers(0, 255, (3, 9, 13)).astype(np.uint8)
        if norm.scheme == "uint8"
        else (rng.normal(20, 80, (3, 5, 9, 13)).astype(np.int16))
    )
    expected = norm.for_image(image)(image)  # what predict_image applies
    got = doc["normalize"](image, norm.to_dict())
    assert got.dtype == np.float32 and np.array_equal(got, expected)


@pytest.mark.parametrize(
    ("shape", "window", "overlap", "flip"),
    [((37, 50), [16, 24], 0.5, True), ((9, 30), [16, 16], 0.25, False), ((7, 20, 19), [8, 8, 16], 0.5, True)],
)
def test_doc_sliding_window_equals_medbalances(doc, shape, window, overlap, flip):
    """Against medbalance.engine.sliding_window with one position-dependent, non-linear predictor:
    grid, padding, Gaussian map, flips and crop all have to agree."""
    from medbalance.engine.sliding_window import sliding_window_inference

    x = np.random.default_rng(6).normal(size=(2, 2, *shape)).astype(np.float32)
    ramp = np.linspace(-1, 1, int(np.prod(window)), dtype=np.float32).reshape(window)

    def net(batch):  # (n, 2, *window) -> (n, 3, *window); not flip-equivariant
        a, b = batch[:, :1], batch[:, 1:]
        return np.concatenate([np.tanh(a) * ramp, a * b, b + ramp], axis=1).astype(np.float32)

    inf = {"window": window, "overlap": overlap, "flip_tta": flip, "sigma_scale": 0.125, "min_weight": 1e-3}
    expected = sliding_window_inference(
        torch.from_numpy(x),
        lambda t: torch.from_numpy(net(t.numpy())),
        patch_size=window,
        overlap=overlap,
        batch_size=3,
        flip_axes=tuple(range(len(shape))) if flip else (),
        channels_last=False,
    ).numpy()
    np.testing.assert_allclose(doc["sliding_window"](net, x, inf), expected, rtol=0, atol=1e-5)


def test_pt2_format_and_the_deprecated_torchscript_alias(native, tmp_path, caplog):
    from medbalance.export import export_run

    run, _ = native
    result = export_run(run, format="pt2", out=tmp_path / "m.pt2", check=False)
    assert result.format == "pt2" and result.path.suffix == ".pt2"
    extra = {"medbalance.json": ""}
    torch.export.load(str(result.path), extra_files=extra)
    assert json.loads(json.loads(extra["medbalance.json"])["inference"])["window"] == [32, 32]
    with caplog.at_level(logging.WARNING, logger="medbalance.export"):
        alias = export_run(run, format="torchscript", out=tmp_path / "old.pt2", check=False)
    assert alias.format == "pt2" and alias.path.suffix == ".pt2"
    assert "format 'torchscript' is deprecated" in caplog.text
    assert json.loads((tmp_path / "old.pt2.json").read_text())["format"] == "pt2"
