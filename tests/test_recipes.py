"""Issue 18: every method is a recipe trained from YAML, and every run folder is a tool.

For each built-in recipe, at smoke size through the CLI: train with a kill in the middle of its
stages, resume, and end with the scores of an uninterrupted run; then predict a folder,
evaluate, export (parity-checked) and report. An experiment's run folders pass the same checks;
a recipe round-trips YAML -> object -> YAML; a 0.1.0 experiment run is refused in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from medbalance.cli.main import main
from medbalance.config import dump_config, load_config, parse_config
from medbalance.engine.engine import Engine
from medbalance.engine.run import resolve_recipe

SEG = ["epochs=2", "batch_size=4", "data.size=32", "data.n_train=8", "data.n_val=4", "data.n_test=4"]
SEG += ["model.base_channels=4", "model.depth=2"]
CLS = ["epochs=2", "batch_size=8", "data.size=16", "data.num_classes=3", "data.n_max=12"]
CLS += ["data.imbalance_ratio=4", "data.n_val_per_class=3", "data.n_test_per_class=3"]
CLS += ["model.widths=[4, 8]", "model.blocks_per_stage=1"]
#: built-in recipe -> smoke overrides, image channels of its data, whether it segments, and the
#: epoch of its own stages after which it is killed (dual-path: in the fusion step; MiSLAS: between stages)
RECIPES = {
    "nnunet": ([*SEG, "patch_size=16"], 3, True, 1),
    "dualpath": ([*SEG, "method.fusion_channels=4"], 1, True, 3),
    "reuse_background": (SEG, 3, True, 1),
    "ldam_drw": (CLS, 1, False, 1),
    "bbn": (CLS, 1, False, 1),
    "lskbb": (CLS, 1, False, 1),
    "mislas": ([*CLS, "method.classifier_epochs=1"], 1, False, 2),
    "dflce": (CLS, 1, False, 1),
}


def _sets(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def _run_in(out: Path) -> Path:
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return run


def _images(folder: Path, channels: int, size: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        shape = (size + i, size) if channels == 1 else (size + i, size, channels)
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(folder / f"img{i}.png")
    return folder


def _tool_checks(run: Path, tmp: Path, *, channels: int, size: int, segmentation: bool) -> None:
    """predict a folder, evaluate on the run's own test split, export with parity, report."""
    images = _images(tmp / "in", channels, size)
    assert main(["predict", str(run), "--input", str(images), "--out", str(tmp / "pred"), "-q"]) == 0
    written = sorted(p.name for p in (tmp / "pred").iterdir())
    assert written == (["img0.png", "img1.png", "img2.png"] if segmentation else ["predictions.csv"])
    if segmentation:
        assert np.asarray(Image.open(tmp / "pred" / "img1.png")).shape[:2] == (size + 1, size)
    assert main(["evaluate", str(run), "--data", str(run / "config.yaml"), "-q"]) == 0
    assert list((run / "evaluations").glob("eval-*/scores.json"))
    assert main(["export", str(run), "--out", str(tmp / "model.onnx"), "-q"]) == 0
    assert (tmp / "model.onnx").stat().st_size > 1000
    assert main(["report", str(run), "-q"]) == 0


class _Kill(BaseException):
    """Stands for a kill: not an Exception, so nothing on the way catches it."""


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_trains_resumes_and_its_run_folder_is_a_tool(name, tmp_path, monkeypatch, one_thread):
    overrides, channels, segmentation, kill_at = RECIPES[name]
    args = ["train", name, *_sets([*overrides, "progress=false"]), "-q"]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    whole = _run_in(tmp_path / "whole")

    # killed after an epoch of the run's own stages (a method's parts, if any, have finished by then)
    end_epoch, seen = Engine._end_epoch, []

    def killing(self, ckpt, row, history, *, improved):
        end_epoch(self, ckpt, row, history, improved=improved)
        if self.run_dir is not None and self.run_dir.parent.name != "parts":
            seen.append(ckpt["epoch"])
            if len(seen) == kill_at:
                raise _Kill

    monkeypatch.setattr(Engine, "_end_epoch", killing)
    with pytest.raises(_Kill):
        main([*args, "--out", str(tmp_path / "killed")])
    monkeypatch.setattr(Engine, "_end_epoch", end_epoch)
    run = _run_in(tmp_path / "killed")
    parts = sorted((run / "parts").glob("*/metrics.json")) if (run / "parts").exists() else []
    stamps = [p.stat().st_mtime_ns for p in parts]
    assert main(["train", "--resume", str(run), "-q"]) == 0
    assert [p.stat().st_mtime_ns for p in parts] == stamps  # a finished part is loaded, not retrained
    resumed, expected = (json.loads((r / "metrics.json").read_text()) for r in (run, whole))
    scalars = {k: v for k, v in expected["test"].items() if isinstance(v, float)}
    assert scalars and {k: resumed["test"][k] for k in scalars} == pytest.approx(scalars, abs=1e-6)
    assert resumed["best_epoch"] == expected["best_epoch"]

    # the saved recipe is complete: its stages, the method's options, and the same YAML again
    cfg = load_config(run / "config.yaml")
    assert cfg.stages and all(s.loss is not None for s in cfg.stages)
    assert dump_config(resolve_recipe(cfg)) == (run / "config.yaml").read_text()
    size = 32 if segmentation else 16
    _tool_checks(run, tmp_path, channels=channels, size=size, segmentation=segmentation)


def test_experiment_runs_are_tools(tmp_path, one_thread):
    out = tmp_path / "exp"
    sets = _sets(["tables=false", "methods=[BBN, MiSLAS]"])
    assert main(["experiment", "longtail", "--scale", "smoke", "--out", str(out), *sets, "-q"]) == 0
    runs = sorted(p.parent for p in out.glob("*/runs/*/ir10/seed0/metrics.json"))
    assert [r.parent.parent.name for r in runs] == ["bbn", "mislas"]
    for i, run in enumerate(runs):
        assert yaml.safe_load((run / "config.yaml").read_text())["method"]["name"] in ("bilateral", "mislas")
        _tool_checks(run, tmp_path / str(i), channels=1, size=16, segmentation=False)
    # --resume of the finished experiment loads every run instead of training it again
    stamps = [(r / "metrics.json").stat().st_mtime_ns for r in runs]
    assert main(["experiment", "longtail", "--resume", str(runs[0].parents[3]), "-q"]) == 0
    assert [(r / "metrics.json").stat().st_mtime_ns for r in runs] == stamps


def test_a_recipe_round_trips_through_yaml():
    raw = {
        "name": "x",
        "epochs": 3,
        "data": {"kind": "longtail_phantom", "size": 16},
        "model": {"name": "resnet32"},
        "method": {"name": "mislas", "classifier_epochs": 2},
        "stages": [
            {"name": "mixup", "epochs": 3, "frozen": ["scale"]},
            {"name": "classifier", "epochs": 2, "trainable": ["net.classifier", "scale"], "batches": "class_balanced"},
        ],
    }
    cfg = resolve_recipe(parse_config(raw))
    text = dump_config(cfg)
    again = parse_config(yaml.safe_load(text))
    assert again == cfg and dump_config(again) == text
    assert [s.loss for s in again.stages] == ["dice_ce", "dice_ce"]  # the run's loss, spelled out


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"method": {"name": "bilaterl"}}, "unknown method 'bilaterl' (did you mean 'bilateral'?)"),
        ({"method": {"name": "mislas", "mixup": 1.0}}, "unknown key 'mixup' under 'method'"),
        ({"method": {"name": "dualpath", "alpha": 1.5}}, "invalid value for 'method.alpha'"),
        ({"stages": [{"name": "a", "epochs": 1, "froze": ["x"]}]}, "unknown key 'froze' under 'stages[0]'"),
        ({"stages": [{"name": "a", "epochs": 1, "batches": "random"}]}, "invalid value for 'stages.0.batches'"),
        ({"stages": [{"name": "a", "epochs": 1, "loss": "dise"}]}, "invalid 'stages[0].loss'"),
    ],
)
def test_bad_recipes_are_one_line_errors(raw, message):
    from medbalance.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_run_folder_of_version_0_1_0_is_refused_in_one_line(tmp_path, capsys, one_thread):
    assert (
        main(
            [
                "train",
                "demo",
                *_sets(SEG[:-1] + ["model.base_channels=4", "progress=false"]),
                "--out",
                str(tmp_path),
                "-q",
            ]
        )
        == 0
    )
    run = _run_in(tmp_path)
    for name in ("best.pt", "last.pt"):  # as an experiment of 0.1.0 wrote them: no task, classes nor channels
        state = torch.load(run / "checkpoints" / name, weights_only=False)
        state["meta"] = {"medbalance": "0.1.0"}
        torch.save(state, run / "checkpoints" / name)
    capsys.readouterr()
    assert (
        main(["predict", str(run), "--input", str(_images(tmp_path / "in", 1, 32)), "--out", str(tmp_path / "p")]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert "written by medbalance 0.1.0" in err and "\n" not in err
