"""Issue 9, interruption: kill -9 at seeded random points, then ``--resume``, ends like an unbroken run.

One run is killed four times (while training, while a checkpoint file is half written, while
starting up, and mid-write again), resumed after each kill, and must finish with the same
``metrics.json`` and ``history.csv`` (timings aside) as an uninterrupted run: CPU, one thread,
deterministic. A non-finite loss stops training with the epoch and step and keeps ``last.pt``.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from medbalance.cli.main import main
from medbalance.engine.checkpoint import load_checkpoint
from medbalance.engine.engine import Engine

ARGS = [
    "train",
    "intraclass",
    "--set",
    "epochs=10",
    "--set",
    "data.size=32",
    "--set",
    "data.n_train=24",
    "--set",
    "data.n_val=8",
    "--set",
    "data.n_test=4",
    "--set",
    "batch_size=4",
    "--set",
    "model.base_channels=4",
    "--set",
    "progress=false",
    "-q",
]

# Runs the CLI with torch.save writing half of each checkpoint, touching MARKER, then pausing:
# a kill -9 after MARKER appears lands while save_checkpoint is writing its temporary file.
SLOW_SAVE = """
import io, pathlib, sys, time
import torch
from medbalance.cli.main import main

marker, real_save = pathlib.Path(sys.argv[1]), torch.save

def half_then_pause(obj, fh, *args, **kwargs):
    buf = io.BytesIO()
    real_save(obj, buf, *args, **kwargs)
    data = buf.getvalue()
    fh.write(data[: len(data) // 2])
    fh.flush()
    marker.write_text(fh.name)
    time.sleep(30)
    fh.write(data[len(data) // 2 :])

torch.save = half_then_pause
sys.exit(main(sys.argv[2:]))
"""

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _start(argv: list[str], *, marker: Path | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "medbalance"] if marker is None else [sys.executable, "-c", SLOW_SAVE, str(marker)]
    return subprocess.Popen([*cmd, *argv], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, (
            f"the run ended (code {proc.returncode}) before the kill point: {proc.stderr.read()}"
        )
        assert time.monotonic() < deadline, "kill point not reached in time"
        time.sleep(0.02)


def _kill(proc: subprocess.Popen) -> None:
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _epochs_done(run: Path | None) -> int:
    history = run / "history.csv" if run is not None else None
    return len(history.read_text().splitlines()) - 1 if history is not None and history.exists() else 0


def _history_without_timings(run: Path) -> list[dict]:
    with open(run / "history.csv", newline="") as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


def test_four_kill_9_at_random_points_then_resume_reproduce_the_uninterrupted_run(tmp_path):
    rng = random.Random(9)  # the kill points are random but the same on every run of the test
    reference = subprocess.run(
        [sys.executable, "-m", "medbalance", *ARGS, "--out", str(tmp_path / "full")], env=ENV, capture_output=True
    )
    assert reference.returncode == 0, reference.stderr
    (full,) = (tmp_path / "full").iterdir()

    # 1. during training: a seeded random moment after the first checkpoint.
    proc = _start([*ARGS, "--out", str(tmp_path / "killed")])
    runs = lambda: list((tmp_path / "killed").glob("*/checkpoints/last.pt"))  # noqa: E731
    _wait_for(lambda: bool(runs()), proc)
    time.sleep(rng.uniform(0.0, 0.5))
    _kill(proc)
    run = runs()[0].parents[1]
    assert not (run / "metrics.json").exists()
    kills = [("training", _epochs_done(run))]

    # 2. and 4. while save_checkpoint has written half of a checkpoint; 3. while starting up.
    for point in ("checkpoint write", "start-up", "checkpoint write"):
        marker = tmp_path / f"marker-{len(kills)}"
        proc = _start(["train", "--resume", str(run)], marker=marker if point == "checkpoint write" else None)
        if point == "checkpoint write":
            _wait_for(marker.exists, proc)
            torn = Path(marker.read_text())
            assert torn.exists() and torn.parent == run / "checkpoints"
        else:
            time.sleep(rng.uniform(0.5, 2.0))
        _kill(proc)
        load_checkpoint(run / "checkpoints" / "last.pt")  # always whole, whatever the kill cut
        kills.append((point, _epochs_done(run)))

    resumed = subprocess.run(
        [sys.executable, "-m", "medbalance", "train", "--resume", str(run), "-q"],
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run / "metrics.json").read_text()) == json.loads((full / "metrics.json").read_text())
    assert _history_without_timings(run) == _history_without_timings(full)
    assert not list((run / "checkpoints").glob(".*tmp*")), "a torn temporary checkpoint was left behind"
    assert len(kills) == 4, kills


def test_a_non_finite_loss_stops_with_epoch_and_step_and_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    real = Engine.compute_loss
    calls = {"train": 0}

    def nan_from_epoch_2(self, stage, outputs, batch):
        loss = real(self, stage, outputs, batch)
        if torch.is_grad_enabled():
            calls["train"] += 1
            if calls["train"] > 6 + 1:  # 6 steps per epoch: NaN at epoch 2, step 2
                return loss * float("nan")
        return loss

    monkeypatch.setattr(Engine, "compute_loss", nan_from_epoch_2)
    assert main([*ARGS, "--set", "epochs=3", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    # the loss is read back at most twice a second (no device sync per step): the step is where it was seen
    match = re.fullmatch(
        r"error: loss became nan in stage 'train' epoch 2 by step (\d+); .*last good checkpoint.*", err
    )
    assert match and 2 <= int(match[1]) <= 6, err
    assert len(err.splitlines()) == 1
    (run,) = tmp_path.iterdir()
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (run / "metrics.json").exists()
    assert _epochs_done(run) == 1


@pytest.mark.parametrize("kind", ["missing", "torn"])
def test_resume_refuses_a_run_without_a_whole_last_checkpoint(tmp_path, capsys, kind):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    if kind == "torn":
        (run / "checkpoints" / "last.pt").write_bytes(b"PK\x03\x04 torn")
        (run / "config.yaml").write_text("epochs: 2\n")
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "last.pt" in err and len(err.splitlines()) == 1
