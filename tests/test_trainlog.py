"""``train.log`` (issue 21): the log lines of a run, per-epoch validation detail, appended on resume."""

from __future__ import annotations

import csv
import logging
import re

import pytest

from medbalance.cli.main import main
from medbalance.engine.engine import Engine
from medbalance.engine.trainlog import NAN_GUARD, RESUMED

ARGS = [
    "demo", "--set", "epochs=3", "--set", "model.base_channels=4", "--set", "progress=false",
    "--set", "data.size=32", "--set", "data.n_train=8", "--set", "data.n_val=4", "--set", "data.n_test=4",
]  # fmt: skip


def test_train_log_holds_the_terminal_lines_the_epoch_detail_and_a_guard_stop_then_a_resume(
    tmp_path, monkeypatch, capsys, caplog
):
    caplog.set_level(logging.INFO)
    real_loss, real_eval = Engine.compute_loss, Engine.evaluate
    armed = {"on": False}

    def loss(self, stage, outputs, batch):  # NaN from the second epoch on
        value = real_loss(self, stage, outputs, batch)
        return value * float("nan") if armed["on"] and value.requires_grad else value

    def evaluate(self, *args, **kwargs):
        scores = real_eval(self, *args, **kwargs)
        armed["on"] = True  # the first validation pass has ended
        return scores

    monkeypatch.setattr(Engine, "compute_loss", loss)
    monkeypatch.setattr(Engine, "evaluate", evaluate)
    assert main([*ARGS, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert sum("became nan" in line for line in err.splitlines()) == 1  # the file's guard line is not repeated
    (run,) = tmp_path.iterdir()
    first = (run / "train.log").read_text().splitlines()
    assert re.search(r"train epoch 1/3  loss \d\.\d{4}  val mean_dice_fg", "\n".join(first))
    assert NAN_GUARD in first[-1] and "became nan" in first[-1]
    assert not any(isinstance(h, logging.FileHandler) for h in logging.getLogger("medbalance").handlers)

    monkeypatch.undo()
    assert main(["train", "--resume", str(run)]) == 0
    terminal = capsys.readouterr().err
    lines = (run / "train.log").read_text().splitlines()
    assert lines[: len(first)] == first  # appended, not rewritten
    assert sum(RESUMED in line for line in lines) == 1
    # the epoch detail against history.csv: validation loss and per-class scores, every epoch
    with open(run / "history.csv", newline="") as fh:
        history = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in history] == [1, 2, 3]
    for row in history:
        (line,) = [x for x in lines if f" epoch {row['epoch']} validation:" in x]
        assert f"loss {float(row['val_loss']):.4f}" in line
        for score in ("dice", "recall"):
            values = ", ".join(f"{c} {float(row[f'val_{score}/{c}']):.4f}" for c in ("background", "target"))
            assert f"{score} [{values}]" in line
        # per-class dice of the foreground is the monitored mean over foreground classes
        assert float(row["val_dice/target"]) == pytest.approx(float(row["val_mean_dice_fg"]))
    assert "validation:" not in terminal  # the epoch detail goes to the file, not the terminal
    report = (run / "report.html").read_text()
    assert "the run was resumed 1 time" in report
    assert "the non-finite guard stopped this run 1 time before it finished (last: loss became nan" in report


def test_lines_logged_before_the_run_folder_exists_are_written_first_and_handlers_go_away(tmp_path):
    from medbalance.engine.trainlog import TrainLog

    logger = logging.getLogger("medbalance.data.test")
    before = list(logging.getLogger("medbalance").handlers)
    with pytest.raises(KeyboardInterrupt):
        with TrainLog() as train_log:
            logger.warning("reading the data")
            train_log.open(tmp_path, resumed=False)
            logger.warning("training")
            raise KeyboardInterrupt
    lines = [line.split(" ", 2)[2] for line in (tmp_path / "train.log").read_text().splitlines()]
    assert lines == [f"=== training {tmp_path} ===", "reading the data", "training", "stopped: KeyboardInterrupt"]
    assert logging.getLogger("medbalance").handlers == before
    logger.warning("after the run")  # no longer written
    assert "after the run" not in (tmp_path / "train.log").read_text()
