"""Native geometry end to end: images keep their size, aspect, intensities and spacing through
train (patches), validation / evaluate / predict (sliding window) and the run folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import yaml
from PIL import Image

from medbalance.cli.main import main
from medbalance.config import parse_config
from medbalance.data.build import build_splits
from medbalance.data.cache import cached_dataset, list_entries
from medbalance.data.folder import read_segmentation_folder
from medbalance.data.io import read_labels, read_raw
from medbalance.data.normalization import Normalization, fit_normalization
from medbalance.engine import engine as engine_module
from medbalance.engine.native import AugmentingCollate, StreamBatches, resolve_patch_size
from medbalance.engine.run import load_run, train
from medbalance.losses import build_loss

SIZES = [(40, 52), (64, 48), (33, 70), (56, 56), (48, 40), (61, 37)]


def _blob(shape, rng) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    cy, cx = rng.uniform(0.3, 0.7) * shape[0], rng.uniform(0.3, 0.7) * shape[1]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= (0.2 * min(shape)) ** 2).astype(np.uint8)


def _folder(root: Path, sizes=SIZES, *, rgb: bool = False, ignore: bool = False) -> Path:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, shape in enumerate(sizes):
        mask = _blob(shape, rng)
        image = np.clip(60 + 120 * mask + rng.normal(0, 20, shape), 0, 255).astype(np.uint8)
        if rgb:
            image = np.stack([image, image // 2, 255 - image], axis=-1)
        if ignore:
            mask[:3] = 255  # an ignored border: labels 0, 1 and 255
        else:
            mask *= 255  # a binary 0/255 mask
        Image.fromarray(image).save(root / "images" / f"case{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"case{i}.png")
    return root


# ----------------------------------------------------------------------------- patch size


def test_patch_size_auto_whole_images_when_small_and_uniform_else_median_clipped():
    assert resolve_patch_size("auto", [(96, 96)] * 4) is None
    assert resolve_patch_size("auto", [(584, 565)] * 4) == (128, 128)
    assert resolve_patch_size("auto", [(40, 52), (64, 48), (33, 70)]) == (32, 48)
    assert resolve_patch_size("auto", [(20, 300, 300)]) == (16, 64, 64)
    assert resolve_patch_size([32, 48], [(10, 10)]) == (32, 48)
    assert resolve_patch_size(None, [(10, 10), (20, 20)]) is None
    with pytest.raises(ValueError, match="2 sides but the images have 3"):
        resolve_patch_size([32, 32], [(8, 8, 8)])


# ----------------------------------------------------------------------------- normalisation


def test_uint8_normalisation_is_over_every_pixel_of_the_training_images():
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (3, *s), dtype=np.uint8) for s in SIZES[:3]]
    norm = fit_normalization(images)
    flat = np.concatenate([im.reshape(3, -1) for im in images], axis=1) / 255.0
    assert norm.scheme == "uint8"
    np.testing.assert_allclose(norm.mean, flat.mean(axis=1), atol=1e-6)
    np.testing.assert_allclose(norm.std, flat.std(axis=1), atol=1e-6)
    out = norm(images[0])
    assert out.dtype == np.float32
    np.testing.assert_allclose(
        out, (images[0] / 255.0 - flat.mean(1)[:, None, None]) / flat.std(1)[:, None, None], atol=1e-5
    )


def test_ct_normalisation_clips_to_foreground_percentiles_then_z_scores():
    rng = np.random.default_rng(2)
    images = [rng.normal(40, 30, (1, 20, 30)).astype(np.int16) - 0 for _ in range(3)]
    images[0][0, 0, 0] = -1024  # air: makes `auto` pick CT
    targets = [np.zeros((20, 30), np.uint8) for _ in range(3)]
    for t in targets:
        t[5:15, 5:25] = 1
    norm = fit_normalization(images, targets)
    fg = np.concatenate([im[0][t > 0] for im, t in zip(images, targets)]).astype(np.float64)
    low, high = np.percentile(fg, [0.5, 99.5])
    clipped = np.clip(fg, low, high)
    assert norm.scheme == "ct"
    np.testing.assert_allclose(norm.clip[0], (low, high))
    np.testing.assert_allclose((norm.mean[0], norm.std[0]), (clipped.mean(), clipped.std()), rtol=1e-9)
    assert norm(images[0]).min() >= (low - clipped.mean()) / clipped.std() - 1e-5  # air clipped


def test_zscore_is_per_image_and_a_patch_uses_its_whole_image_statistics():
    rng = np.random.default_rng(3)
    image = rng.normal(500, 80, (2, 30, 40)).astype(np.float32)
    norm = fit_normalization([image], scheme="auto")
    assert norm.scheme == "zscore"
    whole = norm(image)
    np.testing.assert_allclose(whole.mean(axis=(1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(norm.for_image(image)(image[:, :10, :10]), whole[:, :10, :10], atol=1e-4)


def test_normalisation_round_trips_and_refuses_unknown_schemes():
    norm = Normalization("ct", (1.0,), (2.0,), ((-5.0, 5.0),))
    assert Normalization.from_dict(json.loads(json.dumps(norm.to_dict()))) == norm
    with pytest.raises(ValueError, match="scheme must be one of"):
        Normalization.from_dict({"scheme": "minmax"})


# ----------------------------------------------------------------------------- readers and cache


def test_raw_reading_keeps_dtype_size_and_nifti_spacing(tmp_path):
    rgb = np.random.default_rng(4).integers(0, 256, (13, 17, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    image, spacing = read_raw(tmp_path / "a.png", channels=3)
    assert image.dtype == np.uint8 and image.shape == (3, 13, 17) and spacing == (1.0, 1.0)
    np.testing.assert_array_equal(image, np.moveaxis(rgb, -1, 0))
    volume = sitk.GetImageFromArray(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6) - 60)
    volume.SetSpacing((0.5, 0.7, 3.0))  # x, y, z
    sitk.WriteImage(volume, str(tmp_path / "v.nii.gz"))
    image, spacing = read_raw(tmp_path / "v.nii.gz")
    assert image.dtype == np.int16 and image.shape == (1, 4, 5, 6) and spacing == pytest.approx((3.0, 0.7, 0.5))
    labels = sitk.GetImageFromArray((np.arange(120).reshape(4, 5, 6) % 3).astype(np.uint8))
    sitk.WriteImage(labels, str(tmp_path / "l.nii.gz"))
    assert read_labels(tmp_path / "l.nii.gz").shape == (4, 5, 6)


def test_mixed_size_folder_is_ragged_and_the_cache_keeps_uint8_parts(tmp_path):
    root = _folder(tmp_path / "data")
    ds = read_segmentation_folder(root)
    assert ds.ragged and [ds.shape(i) for i in range(len(ds))] == SIZES
    assert ds.images[0].dtype == np.uint8 and ds.target[0].dtype == np.uint8
    cache = tmp_path / "cache"
    first = cached_dataset(root, {"reader": "test"}, lambda: read_segmentation_folder(root), cache_dir=cache)
    again = cached_dataset(root, {"reader": "test"}, lambda: pytest.fail("rebuilt"), cache_dir=cache)
    for a, b in zip(first.images + first.target, again.images + again.target):
        np.testing.assert_array_equal(a, b)
    assert again.images[2].dtype == np.uint8 and again.target[2].shape == SIZES[2]
    [entry] = list_entries(cache)
    assert entry.samples == len(SIZES) and entry.bytes > 0 and str(root) in entry.source


# ----------------------------------------------------------------------------- engine pieces


def test_stream_batches_split_an_epoch_between_processes_in_batch_blocks():
    ranks = [
        list(StreamBatches(lambda e: range(e * 24, (e + 1) * 24), 3, 4, lambda: 2, rank=r, world=2)) for r in (0, 1)
    ]
    assert ranks[0][0] == [48, 49, 50, 51] and ranks[1][0] == [52, 53, 54, 55]
    seen = sorted(i for r in ranks for b in r for i in b)
    assert seen == list(range(48, 72))


def test_worker_side_augmentation_depends_on_the_stream_index_only():
    from medbalance.data.augment import Augment

    collate = AugmentingCollate(Augment(flip=True, brightness=0.2), seed=3)
    samples = [
        {
            "image": torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(k)),
            "target": torch.zeros(8, 8).long(),
            "stream": torch.tensor(k),
        }
        for k in (10, 11)
    ]
    a, b = collate(samples), collate(samples)
    assert torch.equal(a["image"], b["image"])
    other = collate([{**s, "stream": s["stream"] + 100} for s in samples])
    assert not torch.equal(a["image"], other["image"])


def test_losses_take_the_data_ignore_index_and_a_loss_without_it_is_refused():
    loss = build_loss([{"name": "dice"}, {"name": "ce"}], ignore_index=255)
    logits = torch.randn(1, 2, 6, 6, requires_grad=True)
    target = torch.randint(0, 2, (1, 6, 6))
    ignored = target.clone()
    ignored[:, :2] = 255
    changed = ignored.clone()
    changed[:, :2] = 1 - target[:, :2].clamp(max=1)
    # ignored pixels do not count: what the target says there is irrelevant
    assert torch.allclose(loss(logits, ignored), loss(logits, torch.where(ignored == 255, ignored, changed)))
    loss(logits, ignored).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[:, :, :2].abs().sum() == 0


# ----------------------------------------------------------------------------- through the CLI


def _train_args(data: Path, out: Path, *extra: str) -> list[str]:
    cfg = out.parent / "cfg.yaml"
    cfg.write_text(
        "name: native\nepochs: 2\nbatch_size: 4\nsteps_per_epoch: 3\nprogress: false\n"
        f"data: {{kind: folder, path: {data}, val_fraction: 0.34, test_fraction: 0.0}}\n"
        "model: {name: unet, base_channels: 4, depth: 2}\nloss: [{name: dice}, {name: ce}]\n"
    )
    return ["train", str(cfg), "--out", str(out), "-q", *extra]


def test_mixed_size_folder_through_train_predict_and_evaluate(tmp_path, capsys):
    data = _folder(tmp_path / "data", rgb=True)
    assert main(_train_args(data, tmp_path / "runs")) == 0
    [run] = list((tmp_path / "runs").iterdir())
    patch = yaml.safe_load((run / "config.yaml").read_text())["patch_size"]
    assert len(patch) == 2 and all(p % 16 == 0 for p in patch)  # auto, resolved and saved
    splits = json.loads((run / "splits.json").read_text())
    assert splits["normalization"]["scheme"] == "uint8"
    meta = load_run(run).meta
    assert meta["normalization"] == splits["normalization"] and meta["patch_size"] == patch
    # the validation predictions have the native sizes of their images
    for mask in (run / "predictions").glob("*.png"):
        stem = mask.stem
        assert Image.open(mask).size == Image.open(data / "images" / f"{stem}.png").size
    out = tmp_path / "pred"
    assert main(["predict", str(run), "--input", str(data / "images"), "--out", str(out), "-q"]) == 0
    for i, (h, w) in enumerate(SIZES):
        assert np.asarray(Image.open(out / f"case{i}.png")).shape == (h, w)
    capsys.readouterr()
    assert main(["inspect", str(data), "--split", "all"]) == 0  # fractions and object sizes of mixed sizes
    assert f"segmentation, {len(SIZES)} images" in capsys.readouterr().out
    assert main(["evaluate", str(run), "--data", str(data), "-q"]) == 0
    [folder] = list((run / "evaluations").glob("eval-*"))
    rows = (folder / "cases.csv").read_text().splitlines()
    assert len(rows) == 1 + len(SIZES) and "hd95" in rows[0] and "nsd" in rows[0]
    scores = json.loads((folder / "scores.json").read_text())["scores"]
    assert scores["cases"]["num_cases"] == len(SIZES)


def test_ignored_pixels_change_neither_training_nor_scores(tmp_path):
    data = _folder(tmp_path / "data", ignore=True)
    cfg = parse_config({"data": {"kind": "folder", "path": str(data), "ignore_index": 255}})
    splits = build_splits(cfg)
    assert splits.train.num_classes == 2 and splits.train.ignore_index == 255
    run = load_run(
        train(
            parse_config(
                {
                    "epochs": 1,
                    "batch_size": 2,
                    "steps_per_epoch": 2,
                    "progress": False,
                    "data": {"kind": "folder", "path": str(data), "ignore_index": 255, "val_fraction": 0.34},
                    "model": {"name": "unet", "base_channels": 4, "depth": 2},
                    "loss": ["dice", "ce"],
                }
            ),
            out=tmp_path / "runs",
        ).run_dir
    )
    assert run.task.ignore_index == 255 and run.meta["ignore_index"] == 255


def test_a_patch_run_resumed_after_an_interruption_ends_like_an_unbroken_run(tmp_path, monkeypatch):
    data = _folder(tmp_path / "data")
    raw = {
        "epochs": 3,
        "batch_size": 2,
        "steps_per_epoch": 2,
        "progress": False,
        "num_workers": 0,
        "augment": {"flip": True, "brightness": 0.1},
        "data": {"kind": "folder", "path": str(data), "val_fraction": 0.34},
        "model": {"name": "unet", "base_channels": 4, "depth": 2},
        "loss": ["dice", "ce"],
    }
    whole = train(parse_config(raw), out=tmp_path / "a")
    real = engine_module.Engine._end_epoch

    def stop_after_two(self, ckpt, row, history, *, improved):
        real(self, ckpt, row, history, improved=improved)
        if ckpt["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(engine_module.Engine, "_end_epoch", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        train(parse_config(raw), out=tmp_path / "b")
    monkeypatch.setattr(engine_module.Engine, "_end_epoch", real)
    [broken] = list((tmp_path / "b").iterdir())
    resumed = train(resume=broken)
    a = torch.load(whole.run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(resumed.run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (
        whole.metrics["test" if "test" in whole.metrics else "val"]
        == resumed.metrics["test" if "test" in resumed.metrics else "val"]
    )


def test_3d_volumes_train_predict_and_evaluate_in_their_geometry(tmp_path):
    rng = np.random.default_rng(5)
    root = tmp_path / "vol"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, shape in enumerate([(12, 20, 24), (10, 24, 20), (14, 18, 18), (12, 22, 22)]):
        zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
        mask = (zz - shape[0] / 2) ** 2 / 9 + (yy - shape[1] / 2) ** 2 / 25 + (xx - shape[2] / 2) ** 2 / 25 <= 1
        image = (rng.normal(0, 15, shape) + 80 * mask - 200).astype(np.int16)
        for arr, folder in ((image, "images"), (mask.astype(np.uint8), "masks")):
            itk = sitk.GetImageFromArray(arr)
            itk.SetSpacing((0.8, 0.9, 2.5))
            itk.SetOrigin((10.0, -4.0, 3.0))
            sitk.WriteImage(itk, str(root / folder / f"v{i}.nii.gz"))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "name: vol\nepochs: 1\nbatch_size: 2\nsteps_per_epoch: 2\nprogress: false\npatch_size: [8, 16, 16]\n"
        f"data: {{kind: folder, path: {root}, val_fraction: 0.25}}\n"
        "model: {name: unet, spatial_dims: 3, base_channels: 4, depth: 2}\nloss: [dice, ce]\n"
    )
    assert main(["train", str(cfg), "--out", str(tmp_path / "runs"), "-q"]) == 0
    [run] = list((tmp_path / "runs").iterdir())
    assert json.loads((run / "splits.json").read_text())["normalization"]["scheme"] == "ct"  # int16 below -100
    out = tmp_path / "pred"
    assert main(["predict", str(run), "--input", str(root / "images"), "--out", str(out), "-q"]) == 0
    source = sitk.ReadImage(str(root / "images" / "v1.nii.gz"))
    mask = sitk.ReadImage(str(out / "v1.nii.gz"))
    assert mask.GetSize() == source.GetSize() and mask.GetSpacing() == pytest.approx(source.GetSpacing())
    assert mask.GetOrigin() == pytest.approx(source.GetOrigin())
    assert main(["evaluate", str(run), "--data", str(root), "-q"]) == 0
    [folder] = list((run / "evaluations").glob("eval-*"))
    cases = json.loads((folder / "cases.json").read_text())
    assert cases["summary"]["num_cases"] == 4


def test_a_ragged_dataset_without_patches_is_refused_in_one_line(tmp_path, capsys):
    data = _folder(tmp_path / "data")
    assert main(_train_args(data, tmp_path / "runs", "--set", "patch_size=null")) == 2
    assert "set patch_size" in capsys.readouterr().err


def _multiclass_folder(root: Path, dims: int) -> Path:
    """Four cases with labels 0, 1, 2 and an ignored (255) border: PNGs (2D) or NIfTI volumes (3D)."""
    rng = np.random.default_rng(7)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    shapes = (
        [(40, 52), (48, 40), (44, 44), (36, 50)]
        if dims == 2
        else [(12, 20, 24), (14, 18, 18), (12, 22, 22), (10, 24, 20)]
    )
    for i, shape in enumerate(shapes):
        grid = np.indices(shape)
        centre = np.array(shape)[(slice(None),) + (None,) * dims] / 2
        radius = np.sqrt((((grid - centre) / (np.array(shape)[(slice(None),) + (None,) * dims] / 2)) ** 2).sum(0))
        mask = np.where(radius < 0.4, 2, np.where(radius < 0.8, 1, 0)).astype(np.uint8)
        mask[(slice(None),) * (dims - 1) + (slice(0, 2),)] = 255  # an ignored border along the last axis
        image = np.clip(50 + 60 * np.minimum(mask, 3) + rng.normal(0, 15, shape), 0, 255).astype(np.uint8)
        if dims == 2:
            Image.fromarray(image).save(root / "images" / f"c{i}.png")
            Image.fromarray(mask).save(root / "masks" / f"c{i}.png")
        else:
            sitk.WriteImage(sitk.GetImageFromArray(image), str(root / "images" / f"c{i}.nii.gz"))
            sitk.WriteImage(sitk.GetImageFromArray(mask), str(root / "masks" / f"c{i}.nii.gz"))
    return root


@pytest.mark.parametrize("dims", [2, 3])
def test_uint8_patch_targets_train_exactly_like_int64_ones(tmp_path, monkeypatch, one_thread, dims):
    """Multi-class patches with ignore_index 255 and label-moving augmentation: the stream cuts
    uint8 targets and the training step widens them; the weights equal an int64-target run's
    whose batches come from a worker."""
    from medbalance.data import patches as patches_module

    data = _multiclass_folder(tmp_path / "data", dims)
    cfg = {
        "epochs": 1,
        "batch_size": 2,
        "steps_per_epoch": 3,
        "progress": False,
        "patch_size": [16, 16] if dims == 2 else [8, 16, 16],
        "data": {"kind": "folder", "path": str(data), "ignore_index": 255, "val_fraction": 0.25},
        "model": {"name": "unet", "base_channels": 4, "depth": 2, "spatial_dims": dims},
        "loss": ["dice", "ce"],
        "augment": {"flip": True, "rotate": 30.0, "affine_p": 1.0, "outside_label": 255},
    }
    cut = []
    original = patches_module.target_dtype

    def spy(num_classes, ignore_index=None):
        cut.append(original(num_classes, ignore_index))
        return cut[-1]

    monkeypatch.setattr(patches_module, "target_dtype", spy)
    compact = load_run(train(parse_config(cfg), out=tmp_path / "uint8").run_dir)
    assert cut == [np.uint8] and compact.task.ignore_index == 255 and compact.task.num_classes == 3
    monkeypatch.setattr(patches_module, "target_dtype", lambda *args: np.dtype(np.int64))  # the former items
    # and batches cut in a DataLoader worker (batch_size=None: one PatchDataset.batch per step)
    wide = load_run(train(parse_config({**cfg, "num_workers": 1}), out=tmp_path / "int64").run_dir)
    a, b = compact.model.state_dict(), wide.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
