"""``--scale paper`` pinned to the seeds' protocols (issue 22 item 4): epochs, sizes, widths,
optimiser and data splits of each experiment, with the section of the seed each value is from.
Seed 002's networks and batch are pinned in ``tests/test_seed002_presets.py``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medbalance.config import parse_config
from medbalance.errors import ConfigError
from medbalance.experiments import seed000, seed001
from medbalance.experiments.runner import ExperimentContext, parse_options
from medbalance.experiments.seed002 import loss_study, reuse_background
from medbalance.experiments.seed002.tables import patch_size


def _ctx(module, tmp_path: Path, *, data: str, scale: str = "paper", **options) -> ExperimentContext:
    return ExperimentContext(
        name="test",
        scale=scale,
        run_dir=tmp_path,
        seeds=(0,),
        data=data,
        options=parse_options(module.OPTIONS, options),
        progress=False,
        device="cpu",
    )


# ----------------------------------------------------------------------------- seed 000
def test_dualpath_paper_preset_is_seed000s_protocol():
    p = seed000.SCALES["paper"]
    # section 4.1.2: CAMUS, 800 images split 8:2 (our validation split comes out of the 640)
    assert (p["n_train"] + p["n_val"], p["n_test"]) == (640, 160)
    # section 4.2: Adam, lr 1e-4 (cosine to 0); steps 1 and 2 200 epochs, step 3 50 (a quarter)
    assert (p["lr"], p["epochs"], p["epochs"] // 4) == (1e-4, 200, 50)
    # U-Net of the original width (the seed names no other) and four downsamplings
    assert (p["width"], p["depth"]) == (64, 4)
    # whole 864 x 768 images per epoch in the seed (640 of them); GPU-sized patches here, about as many pixels
    seed_pixels, our_pixels = 640 * 864 * 768, p["steps"] * p["batch_size"] * p["patch_size"] ** 2
    assert 1.0 <= our_pixels / seed_pixels <= 1.5
    # the CPU scales keep the CPU-sized automatic patch
    assert seed000.SCALES["small"]["patch_size"] == seed000.SCALES["smoke"]["patch_size"] == "auto"


def _folder(root: Path, n: int = 12, side: int = 48) -> Path:
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (side, side), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        mask = np.zeros((side, side), np.uint8)
        mask[10:30, 12 : 20 + i] = 255
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
    return root


def test_dualpath_paper_configs_on_native_data(tmp_path):
    data = _folder(tmp_path / "data")
    setup = seed000._Setup(_ctx(seed000, tmp_path / "exp", data=str(data)))
    assert setup.native and setup.steps == (200, 200, 50)
    cfg = setup.config(0, "unet", "ce", setup.epochs, depth=setup.depth)
    assert cfg.patch_size == 512 and cfg.steps_per_epoch == 250
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.batch_size) == ("adam", 1e-4, 1e-4, 8)
    assert (cfg.model.base_channels, cfg.model.depth) == (64, 4)
    # --set patch_size overrides the preset; --set size resizes instead (whole images, automatic patch)
    small_patch = seed000._Setup(_ctx(seed000, tmp_path / "exp2", data=str(data), patch_size=256))
    assert small_patch.config(0, "unet", "ce", 1).patch_size == 256
    resized = seed000._Setup(_ctx(seed000, tmp_path / "exp3", data=str(data), size=32))
    cfg = resized.config(0, "unet", "ce", 1)
    assert not resized.native and cfg.patch_size == "auto" and cfg.steps_per_epoch is None


# ----------------------------------------------------------------------------- seed 001
def test_longtail_paper_preset_is_seed001s_protocol():
    p = seed001.SCALES["paper"]
    # section 4.3: SGD lr 0.05 (momentum 0.9, weight decay 2e-4 in the run config); figure 9: 200 epochs
    assert (seed001.OPTIONS["lr"], p["epochs"]) == (0.05, 200)
    # ResNet-32 (CIFAR layout): three stages of 5 basic blocks, 16 / 32 / 64 channels
    assert (p["widths"], p["blocks"]) == ([16, 32, 64], 5)
    # tables 2 / 3 and 5 at IR 10 / 50 / 100; table 4 at IR 10 (the first)
    assert p["irs"] == p["table_irs"] == [10, 50, 100]
    # MiSLAS's classifier re-training: 10 epochs (SPEC section 10); no cap on the real head class
    assert (p["classifier_epochs"], p["real_n_max"], p["protocol"]) == (10, None, "seed001")


def _chest_tree(root: Path) -> Path:
    for split in ("train", "val", "test"):
        for cls in ("NORMAL", "PNEUMONIA"):
            (root / "chest_xray" / split / cls).mkdir(parents=True)
    return root


def test_longtail_paper_uses_seed001s_data_protocol(tmp_path):
    data = str(_chest_tree(tmp_path / "data"))
    section = seed001._Experiment(_ctx(seed001, tmp_path / "a", data=data)).data_section(50, 0)
    assert (section["kind"], section["protocol"], section["imbalance_ratio"]) == ("chestxray", "seed001", 50)
    # section 4.2: 224 x 224 inputs, the reader's seed001 default
    assert parse_config({"data": section}).data.size == 224
    small = seed001._Experiment(_ctx(seed001, tmp_path / "b", data=data, scale="small")).data_section(10, 0)
    assert small["protocol"] == "default"
    chosen = seed001._Experiment(_ctx(seed001, tmp_path / "c", data=data, scale="small", protocol="seed001"))
    assert chosen.data_section(10, 0)["protocol"] == "seed001"


def test_longtail_protocol_option_is_checked(tmp_path):
    with pytest.raises(ConfigError, match=r"option 'protocol' is 'seed01' \(did you mean 'seed001'\?\)"):
        seed001._Experiment(_ctx(seed001, tmp_path, data="phantom", protocol="seed01"))
    phantom = seed001._Experiment(_ctx(seed001, tmp_path, data="phantom", protocol="seed001"))
    with pytest.raises(ConfigError, match="applies to BreaKHis and chest X-ray data, not to --data phantom"):
        phantom.data_section(10, 0)


# ----------------------------------------------------------------------------- seed 002
def test_seed002_paper_presets_split_conic_9_to_1():
    # section 4.1: CoNIC's 4981 patches of 256 x 256, 9:1 train / test (validation out of the 9)
    for preset in (loss_study.SCALES["paper"], reuse_background.SCALES["paper"]):
        assert (preset["n_train"] + preset["n_val"], preset["n_test"], preset["size"]) == (4483, 498, 256)
    # section 5.4 (the demo's printout): 10 epochs, Adam lr 1e-3
    assert (loss_study.SCALES["paper"]["epochs"], loss_study.OPTIONS["lr"]) == (10, 1e-3)
    assert (reuse_background.SCALES["paper"]["epochs"], reuse_background.OPTIONS["optimizer"]) == (10, "adam")


def test_seed002_paper_trains_whole_images():
    # the seed trains whole 256 x 256 patches, one pass per epoch; "auto" would cut 128 x 128 patches
    assert loss_study.SCALES["paper"]["patch_size"] is None is reuse_background.SCALES["paper"]["patch_size"]
    assert loss_study.SCALES["small"]["patch_size"] == reuse_background.SCALES["small"]["patch_size"] == "auto"
    assert patch_size(0, None, ragged=False, data="conic") is None
    assert patch_size(0, "auto", ragged=True, data="x") == "auto"
    assert patch_size(192, None, ragged=True, data="x") == 192
    with pytest.raises(ConfigError, match=r"images of --data monusac differ in size: resize them with --set size=N"):
        patch_size(0, None, ragged=True, data="monusac")
    with pytest.raises(ConfigError, match="option 'patch_size' must be >= 0"):
        patch_size(-1, None, ragged=False, data="x")
