"""Issue 19 item 4: ``best.pt`` is the best epoch over every stage whose outputs are the final
model's (``Stage.select_best``), not only the last stage's."""

from __future__ import annotations

import pytest
import torch

from medbalance.config import parse_config
from medbalance.data.datasets import ArrayDataset
from medbalance.data.phantoms import intraclass_phantoms
from medbalance.engine.checkpoint import load_checkpoint
from medbalance.engine.engine import Engine, Stage
from medbalance.engine.tasks import SegmentationTask
from medbalance.losses import DiceCELoss
from medbalance.nets import UNet


def _engine(tmp_path, scores: list[float]) -> Engine:
    ps = intraclass_phantoms(4, size=16)
    data = ArrayDataset(ps.images, ps.target, num_classes=2)
    cfg = parse_config({"progress": False, "batch_size": 4})
    (tmp_path / "checkpoints").mkdir()
    engine = Engine(UNet(1, 1, base_channels=2, depth=1), SegmentationTask(2), cfg, run_dir=tmp_path)
    engine.data = data
    scripted = iter(scores)
    real = engine.evaluate

    def evaluate(loader, *, stage=None, on_batch=None):
        out = real(loader, stage=stage, on_batch=on_batch)
        out["mean_dice_fg"] = next(scripted)  # the validation score each epoch reports
        return out

    engine.evaluate = evaluate
    return engine


def _stages(first_selects: bool) -> list[Stage]:
    return [Stage("one", 2, DiceCELoss(), select_best=first_selects), Stage("two", 2, DiceCELoss(), lr=1e-2)]


def test_an_earlier_stage_epoch_stays_best_when_a_later_stage_scores_lower(tmp_path):
    engine = _engine(tmp_path, [0.5, 0.8, 0.3, 0.6])
    engine.fit(_stages(True), engine.data, engine.data)
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert best["epoch"] == 2 and best["best"]["value"] == 0.8 and best["stage_name"] == "one"
    # best.pt holds the weights of that epoch, not the last one
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert not all(torch.equal(best["model"][k], last["model"][k]) for k in best["model"])


def test_a_stage_that_does_not_select_never_writes_best(tmp_path):
    engine = _engine(tmp_path, [0.5, 0.8, 0.3, 0.6])
    engine.fit(_stages(False), engine.data, engine.data)
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert best["epoch"] == 4 and best["best"]["value"] == 0.6 and best["stage_name"] == "two"


def test_no_selecting_stage_is_refused(tmp_path):
    engine = _engine(tmp_path, [])
    with pytest.raises(ValueError, match="no stage selects"):
        engine.fit([Stage("one", 1, DiceCELoss(), select_best=False)], engine.data, engine.data)
