"""Seed 002's paper presets (issue 19 item 13): the network and batch of ``--scale paper``, the
multi-class combinations of tables 4.15 / 4.17 as one command each, the absolute ``hard_num`` sweep."""

from __future__ import annotations

import json
import re

import pytest
import torch
import yaml

from medbalance.errors import ConfigError
from medbalance.experiments.runner import run_experiment
from medbalance.experiments.seed002 import loss_study, reuse_background
from medbalance.experiments.seed002.loss_study import (
    COMBO_TABLES,
    SEED_COMBOS,
    SEED_HARD_NUMS,
    _net_kwargs,
    absolute_hard_nums,
    combos_for,
    hard_num_rows,
)
from medbalance.nets import build_net
from medbalance.nets.backbones import Bottleneck

# torchvision's resnet101 (44,549,160 parameters) without its 1000-class fc (2048 x 1000 + 1000).
RESNET101_TRUNK = 44_549_160 - (2048 * 1000 + 1000)


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------- presets
def test_paper_scale_is_the_seeds_network_widths_and_batch():
    study = loss_study.SCALES["paper"]
    assert (study["batch_size"], study["base_channels"], study["depth"], study["backbone"]) == (1, 64, 4, "resnet101")
    assert (study["size"], study["epochs"]) == (256, 10)
    rb = reuse_background.SCALES["paper"]
    assert (rb["batch_size"], rb["width"], rb["backbone"], rb["net"]) == (1, 64, "resnet101", "deeplabv3plus")
    assert (rb["epochs"], rb["lr"]) == (10, 1e-3)
    assert _net_kwargs("deeplabv3plus", study) == {"base_channels": 64, "backbone": "resnet101"}
    assert _net_kwargs("attention_unet", study) == {"base_channels": 64, "depth": 4}
    # CPU scales keep the light encoder
    assert _net_kwargs("deeplabv3plus", loss_study.SCALES["small"])["backbone"] == "resnet18"


def test_paper_deeplab_has_the_resnet101_encoder():
    kwargs = _net_kwargs("deeplabv3plus", loss_study.SCALES["paper"])
    with torch.device("meta"):  # shapes and counts without allocating 60M parameters
        net = build_net("deeplabv3plus", in_channels=3, num_classes=7, **kwargs)
        shapes = [tuple(f.shape[1:]) for f in net.encoder(torch.empty(1, 3, 64, 64))]
        assert net(torch.empty(1, 3, 37, 53)).shape == (1, 7, 37, 53)
    assert _params(net.encoder) == RESNET101_TRUNK == 42_500_160
    blocks = [sum(isinstance(m, Bottleneck) for m in stage.modules()) for stage in net.encoder.stages]
    assert blocks == [3, 4, 23, 3]
    assert shapes == [(64, 32, 32), (256, 16, 16), (512, 8, 8), (1024, 4, 4), (2048, 4, 4)]  # output stride 16
    # the same layout, narrow, trains on the seed's batch of one
    small = build_net("deeplabv3plus", in_channels=3, num_classes=7, **{**kwargs, "base_channels": 4}).train()
    out = small(torch.randn(1, 3, 32, 48))
    assert out.shape == (1, 7, 32, 48)
    out.mean().backward()
    assert all(p.grad is not None for p in small.parameters())


# ----------------------------------------------------------------------------- hard_num
def test_absolute_hard_nums_are_the_seeds_values():
    assert SEED_HARD_NUMS == (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
    assert absolute_hard_nums(256 * 256) == list(SEED_HARD_NUMS)
    assert absolute_hard_nums(512 * 512) == list(SEED_HARD_NUMS)  # MoNuSAC: the seed's best 1024 among them
    assert absolute_hard_nums(64 * 64) == [512, 1024, 2048, 4096]
    with pytest.raises(ValueError, match="pixels must be >= 1"):
        absolute_hard_nums(0)


def test_hard_num_rows_label_which_list_a_value_comes_from():
    # 256 x 256: the scaled values are the seed's own (65536, every pixel, only absolute)
    rows = hard_num_rows(256 * 256, "both")
    assert [h for h, _ in rows] == list(SEED_HARD_NUMS)
    assert rows[0][1] == "512 absolute = scaled (512 at 256 x 256)" and rows[-1][1] == "65536 absolute"
    # 512 x 512: 4x the area; scaled 2048 is the seed's 512, run once with absolute 2048
    rows = dict(hard_num_rows(512 * 512, "both"))
    assert rows[1024] == "1024 absolute" and rows[2048] == "2048 absolute = scaled (512 at 256 x 256)"
    assert rows[131072] == "131072 scaled (32768 at 256 x 256)"
    assert [h for h, _ in hard_num_rows(512 * 512, "absolute")] == list(SEED_HARD_NUMS)
    assert hard_num_rows(64 * 64, "scaled", scaled=(32,)) == [(32, "32 scaled (512 at 256 x 256)")]
    assert hard_num_rows(64 * 64, "absolute", (7,)) == [(7, "7 (112 at 256 x 256)")]  # given values as they are
    with pytest.raises(ValueError, match="hard_num_mode must be one of scaled, absolute, both"):
        hard_num_rows(64, "relative")


# ----------------------------------------------------------------------------- combinations
def test_combinations_are_tables_4_15_and_4_17():
    assert SEED_COMBOS["conic"] == tuple(
        (net, loss)
        for net in ("attention_unet", "deeplabv3plus")
        for loss in ("dice", "dice+ob", "focal+dice", "focal+dice+ob")
    )
    assert SEED_COMBOS["monusac"] == (
        ("attention_unet", "dice"),
        ("attention_unet", "dice+ob"),
        ("unet", "dice"),
        ("unet", "dice+ob"),
    )
    assert SEED_COMBOS["conic"][COMBO_TABLES["conic"][2] - 1] == ("deeplabv3plus", "focal+dice")  # table 4.20's plain
    assert SEED_COMBOS["monusac"][COMBO_TABLES["monusac"][2] - 1] == ("attention_unet", "dice")  # table 4.21's
    assert combos_for("auto", "monusac")[0] == "monusac" and combos_for("auto", "conic")[0] == "conic"
    assert combos_for("auto", "nuclei_phantom")[0] == "conic"


@pytest.mark.parametrize(
    ("experiment", "option", "message"),
    [
        (
            "loss-study",
            "hard_num_mode=relative",
            "option 'hard_num_mode' has 'relative' (expected some of: scaled, absolute, both)",
        ),
        ("loss-study", "combos=conik", "option 'combos' has 'conik' (did you mean 'conic'? "),
        ("loss-study", "parts=combo", "option 'parts' has 'combo' (did you mean 'combos'? "),
        ("loss-study", "hard_num_mod=absolute", "unknown option 'hard_num_mod' (did you mean 'hard_num_mode'?)"),
        ("reuse-background", "combos=monusak", "option 'combos' is 'monusak' (expected one of: auto, conic, monusac)"),
    ],
)
def test_bad_options_are_refused_before_training(tmp_path, experiment, option, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        run_experiment(experiment, scale="smoke", options=[option], out=tmp_path, progress=False, device="cpu")
    assert not list(tmp_path.glob("*/runs/*"))


# ----------------------------------------------------------------------------- smoke runs
def _table(run_dir, words):
    tables = json.loads((run_dir / "results.json").read_text())["tables"]
    return next(t for t in tables if words in t["title"])


@pytest.fixture
def two_combos(monkeypatch):
    """Table 4.17 cut to its U-Net rows (3 and 4), so that a smoke run trains two models."""
    monkeypatch.setitem(SEED_COMBOS, "monusac", SEED_COMBOS["monusac"][2:])
    monkeypatch.setitem(COMBO_TABLES, "monusac", ("4.17", "4.18", 1))


def test_loss_study_combos_and_absolute_sweep_in_one_command(tmp_path, two_combos):
    options = ["parts=combos,hard_num", "combos=monusac", "hard_num_mode=absolute"]
    result = run_experiment("loss-study", scale="smoke", options=options, out=tmp_path, progress=False, device="cpu")
    combos = _table(result.run_dir, "table 4.17")
    assert "table 4.18" in combos["title"] and "4096 pixels per image (the seed's 4096, absolute)" in combos["note"]
    assert list(combos["rows"]) == ["1: U-Net / dice", "2: U-Net / dice+ob"]
    cfg = yaml.safe_load((result.run_dir / "runs" / "unet" / "dice+ob-h4096" / "seed0" / "config.yaml").read_text())
    assert cfg["loss"] == [{"name": "dice"}, {"name": "ob", "hard_num": 4096}]
    # 32 x 32 images: the seed's 512 and 1024 fit, as they are
    assert list(_table(result.run_dir, "table 4.13")["rows"]) == ["512 absolute", "1024 absolute"]
    ob = yaml.safe_load((result.run_dir / "runs" / "unet" / "ob-h1024" / "seed0" / "config.yaml").read_text())
    assert ob["loss"] == {"name": "ob", "hard_num": 1024}
    assert set(result.results["findings"]) == {"combos", "hard_num"}


def test_reuse_background_across_the_combinations(tmp_path, two_combos):
    options = ["combos=monusac", "baseline=false"]
    result = run_experiment(
        "reuse-background", scale="smoke", options=options, out=tmp_path, progress=False, device="cpu"
    )
    rows = list(_table(result.run_dir, "Plain vs reuse background")["rows"])
    assert rows == [
        f"{k}: unet / {loss}: {row}"
        for k, loss in ((1, "dice"), (2, "dice+ob"))
        for row in ("plain (multi-class)", "reuse background (paper)", "reuse background (fg_argmax)")
    ]
    assert list(_table(result.run_dir, "What the combination changed")["rows"]) == [
        "1: unet / dice: paper",
        "1: unet / dice: fg_argmax",
        "2: unet / dice+ob: paper",
        "2: unet / dice+ob: fg_argmax",
    ]
    binary = yaml.safe_load((result.run_dir / "runs" / "binary" / "seed0" / "config.yaml").read_text())
    assert binary["model"]["name"] == "unet" and binary["loss"] == [{"name": "dice"}]  # the table's best (no. 1)
    multi = yaml.safe_load((result.run_dir / "runs" / "multi" / "combo2" / "seed0" / "config.yaml").read_text())
    assert multi["loss"] == [{"name": "dice"}, {"name": "ob", "hard_num": 4096}]
    assert (result.run_dir / "artefacts" / "predictions" / "seed0" / "combo2" / "reuse_paper" / "classes").is_dir()
    assert (result.run_dir / "artefacts" / "figures" / "test_seed0_combo1.png").is_file()


def test_monusac_folders_are_recognised_by_every_experiment(tmp_path):
    from medbalance.experiments.runner import ExperimentContext

    (tmp_path / "TCGA-55-1594").mkdir()
    (tmp_path / "TCGA-55-1594" / "TCGA-55-1594-01Z-00-DX1_1.xml").write_text("<Annotations/>")
    ctx = ExperimentContext("loss-study", "smoke", tmp_path / "run", (0,), str(tmp_path), {})
    section = ctx.data_section({"kind": "nuclei_phantom"})
    assert section == {"kind": "monusac", "path": str(tmp_path)}
    assert combos_for("auto", section["kind"])[0] == "monusac"
