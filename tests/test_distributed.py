"""Two CPU processes (Fabric DDP on gloo) train exactly like one process with twice the batch.

Each process trains on its slice of one shuffled global batch, so the all-reduced gradient is
the global batch's gradient. With a per-sample normalisation (instance norm) and a loss that is
a mean over samples (BCE), ``devices: 2, batch_size: B`` and ``devices: 1, batch_size: 2B``
are the same computation up to float summation order, augmentation included.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

COMMON = [
    "train",
    "intraclass",
    "--quiet",
    "--set",
    "device=cpu",
    "--set",
    "epochs=2",
    "--set",
    "data.size=32",
    "--set",
    "data.n_train=16",
    "--set",
    "data.n_val=8",
    "--set",
    "data.n_test=8",
    "--set",
    "model.base_channels=4",
    "--set",
    "model.depth=2",
    "--set",
    "model.norm=instance",
    "--set",
    "loss=ce",
    # augmentation is drawn for the global batch and sliced per process (noise aside)
    "--set",
    "augment.flip=true",
    "--set",
    "augment.rotate=20",
    "--set",
    "augment.affine_p=0.5",
    "--set",
    "augment.gamma=0.3",
]


def _train(out: Path, devices: int, batch_size: int) -> Path:
    args = [*COMMON, "--set", f"devices={devices}", "--set", f"batch_size={batch_size}", "--out", str(out)]
    res = subprocess.run([sys.executable, "-m", "medbalance", *args], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return run


def _history(run: Path) -> list[dict]:
    with open(run / "history.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_two_processes_equal_one_process_with_twice_the_batch(tmp_path):
    one = _train(tmp_path / "one", devices=1, batch_size=8)
    two = _train(tmp_path / "two", devices=2, batch_size=4)
    h1, h2 = _history(one), _history(two)
    assert len(h1) == len(h2) == 2
    for a, b in zip(h1, h2):
        assert float(a["train_loss"]) == pytest.approx(float(b["train_loss"]), rel=1e-4)
        assert float(a["val_loss"]) == pytest.approx(float(b["val_loss"]), rel=1e-4)
    m1, m2 = (json.loads((r / "metrics.json").read_text()) for r in (one, two))
    for key in ("mean_dice_fg", "mean_iou_fg", "pixel_accuracy"):
        assert m1["test"][key] == pytest.approx(m2["test"][key], abs=1e-4)
