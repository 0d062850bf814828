"""Every network and every kind of loss trains from YAML through the one engine (the CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from medbalance.cli.main import main
from medbalance.losses import LOSSES
from medbalance.nets import SEGMENTATION_NETS

TINY = ["--set", "epochs=1", "--set", "progress=false", "--set", "batch_size=4"]
TINY_PHANTOM = [*TINY, "--set", "data.size=32", "--set", "data.n_train=8", "--set", "data.n_val=4"]
TINY_PHANTOM += ["--set", "data.n_test=4", "--set", "model.base_channels=4"]
TINY_LONGTAIL = [*TINY, "--set", "data.n_max=24", "--set", "data.imbalance_ratio=8", "--set", "data.num_classes=4"]
TINY_LONGTAIL += ["--set", "data.n_val_per_class=2", "--set", "data.n_test_per_class=2", "--set", "data.size=16"]


def _run(tmp_path: Path, *args: str) -> tuple[dict, dict]:
    assert main([*args, "--out", str(tmp_path)]) == 0
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    return json.loads((run / "metrics.json").read_text()), yaml.safe_load((run / "config.yaml").read_text())


@pytest.mark.parametrize("net", SEGMENTATION_NETS)
def test_every_segmentation_net_trains_from_yaml(tmp_path, net):
    metrics, config = _run(tmp_path, "train", "demo", "--set", f"model.name={net}", *TINY_PHANTOM)
    assert config["model"]["name"] == net
    assert 0.0 <= metrics["test"]["mean_dice_fg"] <= 1.0


def test_deep_supervision_and_a_weighted_compound_loss_from_yaml(tmp_path):
    loss = "[{name: dice, include_background: false}, {name: focal, class_weight: exp_decreasing_fg}]"
    args = ["--set", "model.name=unetpp", "--set", "model.deep_supervision=true", "--set", f"loss={loss}"]
    metrics, config = _run(tmp_path, "train", "nuclei", *args, *TINY_PHANTOM)
    assert config["model"]["deep_supervision"] is True
    assert config["loss"][1]["class_weight"] == "exp_decreasing_fg"
    assert len(metrics["test"]["dice"]) == 7


@pytest.mark.parametrize(
    "loss", ["dflce", "dflcsce", "{name: ldam, drw_start: 0.5}", "csce", "focal", "label_aware_smoothing"]
)
def test_long_tail_losses_get_class_counts_and_progress_from_the_run(tmp_path, loss):
    metrics, _ = _run(tmp_path, "train", "longtail", "--set", f"loss={loss}", "--set", "epochs=2", *TINY_LONGTAIL)
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0


CLASSIFICATION_ONLY = ("csce", "ldam", "dflcsce", "dflce", "label_aware_smoothing")


@pytest.mark.parametrize("name", [n for n in LOSSES if n not in CLASSIFICATION_ONLY])
def test_every_segmentation_loss_trains_from_yaml(tmp_path, name):
    metrics, config = _run(tmp_path, "train", "nuclei", "--set", f"loss={name}", *TINY_PHANTOM)
    assert config["loss"] == name and metrics["epochs"] == 1


def test_a_bad_loss_argument_is_a_one_line_config_error(tmp_path, capsys):
    assert main(["train", "demo", "--set", "loss={name: focal, gama: 2}", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "'gama'" in err and "did you mean 'gamma'" in err and "\n" not in err
