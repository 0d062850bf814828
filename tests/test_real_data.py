"""The generic readers and the CLI on real public data (../shared/data; skipped when absent)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from medbalance.cli.main import main
from medbalance.data.folder import read_segmentation_folder

pytestmark = pytest.mark.data


def test_kvasir_jpeg_images_and_masks_in_the_generic_layout(shared_data):
    root = shared_data / "kvasir_seg_mini" / "Kvasir-SEG"
    if not root.is_dir():
        pytest.skip("kvasir_seg_mini not present")
    ds = read_segmentation_folder(root, channels=3, size=64)
    assert len(ds) == 5 and ds.images.shape == (5, 3, 64, 64)
    assert set(np.unique(ds.target)) == {0, 1}
    fg = ds.target.mean()
    assert 0.02 < fg < 0.6  # polyps: a minority of the pixels, never empty


def test_train_and_predict_on_kvasir(shared_data, tmp_path, capsys):
    root = shared_data / "kvasir_seg_mini" / "Kvasir-SEG"
    if not root.is_dir():
        pytest.skip("kvasir_seg_mini not present")
    cfg = tmp_path / "kvasir.yaml"
    cfg.write_text(
        f"epochs: 1\nbatch_size: 2\nprogress: false\ndata: {{kind: folder, path: '{root}', size: 32, "
        "channels: 3, val_fraction: 0.4}\nmodel: {name: unet, base_channels: 4}\n"
    )
    assert main(["train", str(cfg), "--out", str(tmp_path / "runs")]) == 0
    run = next((tmp_path / "runs").iterdir())
    assert json.loads((run / "metrics.json").read_text())["val"]["num_images"] == 2
    assert main(["predict", str(run), "--input", str(root / "images"), "--out", str(tmp_path / "pred")]) == 0
    masks = sorted((tmp_path / "pred").glob("*.png"))
    assert len(masks) == 5
    for mask in masks:  # trained at 32 x 32; each mask comes back at its image's own size
        with Image.open(mask) as m, Image.open(root / "images" / f"{mask.stem}.jpg") as im:
            assert m.size == im.size
