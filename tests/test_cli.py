"""The command line end to end: demo, train for each phantom kind, kill -9 + resume, predict, evaluate."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medbalance.cli.main import main

TINY_SEG = [
    "--set",
    "epochs=2",
    "--set",
    "data.size=32",
    "--set",
    "data.n_train=16",
    "--set",
    "data.n_val=8",
    "--set",
    "data.n_test=4",
    "--set",
    "model.base_channels=4",
    "--set",
    "progress=false",
]


def _only_run(out: Path) -> Path:
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medbalance", *args], capture_output=True, text=True, timeout=timeout)


def test_demo_writes_a_complete_run_folder(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), *TINY_SEG]) == 0
    out = capsys.readouterr().out
    assert "mean_dice_fg" in out and "recall_minority" in out
    run = _only_run(tmp_path)
    for name in (
        "config.yaml",
        "metrics.json",
        "history.csv",
        "report.html",
        "splits.json",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
    ):
        assert (run / name).is_file(), name
    masks = sorted((run / "predictions").glob("*.png"))
    assert len(masks) == 4
    assert set(np.unique(np.asarray(Image.open(masks[0])))) <= {0, 255}
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["test"]["mean_dice_fg"] <= 1.0 and metrics["epochs"] == 2
    assert "<img" in (run / "report.html").read_text()
    # A second run never reuses the folder.
    assert main(["demo", "--out", str(tmp_path), *TINY_SEG]) == 0
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2


@pytest.mark.parametrize(
    "config,extra",
    [
        ("nuclei", []),
        (
            "longtail",
            [
                "--set",
                "data.n_max=40",
                "--set",
                "data.imbalance_ratio=10",
                "--set",
                "data.num_classes=4",
                "--set",
                "data.n_val_per_class=4",
                "--set",
                "data.n_test_per_class=4",
                "--set",
                "data.size=16",
            ],
        ),
    ],
)
def test_train_each_phantom_kind(tmp_path, capsys, config, extra):
    overrides = TINY_SEG if config != "longtail" else ["--set", "epochs=2", "--set", "progress=false"]
    assert main(["train", config, "--out", str(tmp_path), *overrides, *extra]) == 0
    run = _only_run(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    if config == "nuclei":
        assert len(metrics["test"]["dice"]) == 7
        assert len(list((run / "predictions").glob("*.png"))) == 4
    else:
        assert {"accuracy", "macro_precision", "macro_recall"} <= set(metrics["test"])
        lines = (run / "predictions" / "predictions.csv").read_text().splitlines()
        assert len(lines) == 1 + 16 and lines[0].startswith("name,target,prediction")
        assert json.loads((run / "splits.json").read_text())["class_counts"][0] == 40


def test_train_from_a_yaml_file_and_folder_data(tmp_path, capsys):
    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for i in range(10):
        img = rng.integers(0, 80, (24, 24), dtype=np.uint8)
        mask = np.zeros((24, 24), np.uint8)
        mask[4 + i % 5 : 12 + i % 5, 6:14] = 255
        img[mask > 0] += 120
        (data / "images").mkdir(parents=True, exist_ok=True)
        (data / "masks").mkdir(exist_ok=True)
        Image.fromarray(img).save(data / "images" / f"case{i}.png")
        Image.fromarray(mask).save(data / "masks" / f"case{i}.png")
    cfg = tmp_path / "folder.yaml"
    cfg.write_text(
        f"epochs: 2\nbatch_size: 4\nprogress: false\ndata:\n  kind: folder\n  path: {data}\n"
        "  size: 16\n  val_fraction: 0.2\n  test_fraction: 0.2\nmodel:\n  name: unet\n  base_channels: 4\n"
    )
    assert main(["train", str(cfg), "--out", str(tmp_path / "runs")]) == 0
    run = _only_run(tmp_path / "runs")
    splits = json.loads((run / "splits.json").read_text())
    assert len(splits["test_names"]) == 2 and not set(splits["test_names"]) & set(splits["train_names"])

    # predict: a folder in, one mask per image out; refuses to overwrite.
    assert main(["predict", str(run), "--input", str(data / "images"), "--out", str(tmp_path / "pred")]) == 0
    preds = sorted(p.name for p in (tmp_path / "pred").glob("*.png"))
    assert preds == sorted(f"case{i}.png" for i in range(10))
    assert np.asarray(Image.open(tmp_path / "pred" / "case0.png")).shape == (24, 24)  # trained at 16, back at 24
    assert (
        main(["predict", str(run), "--input", str(data / "images" / "case0.png"), "--out", str(tmp_path / "pred")]) == 2
    )
    assert "already exists" in capsys.readouterr().err

    # evaluate: on a labelled folder, and on a config's test split.
    assert main(["evaluate", str(run), "--data", str(data)]) == 0
    assert "mean_dice_fg" in capsys.readouterr().out
    assert main(["evaluate", str(run), "--data", str(cfg)]) == 0
    evaluations = list((run / "evaluations").glob("eval-*/scores.json"))
    assert len(evaluations) == 2 and all((e.parent / "cases.csv").is_file() for e in evaluations)


def test_kill_9_then_resume_reproduces_the_uninterrupted_run(tmp_path):
    args = [
        "train",
        "intraclass",
        "--set",
        "epochs=4",
        "--set",
        "data.size=32",
        "--set",
        "data.n_train=32",
        "--set",
        "data.n_val=8",
        "--set",
        "data.n_test=8",
        "--set",
        "model.base_channels=4",
        "--set",
        "progress=false",
    ]
    full = _cli(*args, "--out", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr
    proc = subprocess.Popen(
        [sys.executable, "-m", "medbalance", *args, "--out", str(tmp_path / "killed")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    history = None
    while time.time() < deadline and proc.poll() is None:
        found = list((tmp_path / "killed").glob("*/history.csv"))
        if found and len(found[0].read_text().splitlines()) >= 3:  # header + 2 epochs
            history = found[0]
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    run = history.parent
    assert not (run / "metrics.json").exists()
    resumed = _cli("train", "--resume", str(run), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    a = json.loads((_only_run(tmp_path / "full") / "metrics.json").read_text())
    b = json.loads((run / "metrics.json").read_text())
    assert a == b
    assert len((run / "history.csv").read_text().splitlines()) == 5
    again = _cli("train", "--resume", str(run))
    assert again.returncode == 2 and "is a finished run" in again.stderr


def test_bad_input_is_one_line_with_exit_code_2(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("lr_rate: 0.1\n")
    res = _cli("train", str(cfg), "--out", str(tmp_path / "runs"))
    assert res.returncode == 2
    assert res.stderr.strip() == "error: unknown key 'lr_rate' in config.yaml (did you mean 'lr'?)"
    assert not (tmp_path / "runs").exists()
    (tmp_path / "runs").mkdir()
    for argv, message in (
        (["train", str(tmp_path / "nope.yaml")], "does not exist"),
        (["train", "--resume", str(tmp_path)], "no checkpoints/last.pt"),
        (["predict", str(tmp_path / "runs"), "--input", "x", "--out", "y"], "not a run folder"),
        (["train", "demo", "--set", "epochs=zero"], "'epochs'"),
        (
            ["train", "demo", "--set", "model.num_classes=5", "--out", str(tmp_path / "runs")],
            "invalid value for 'model.num_classes' in the config of run",
        ),
        (["frobnicate"], "invalid choice"),
    ):
        res = _cli(*argv)
        assert res.returncode == 2, (argv, res.stderr)
        assert res.stderr.startswith("error: ") and message in res.stderr, res.stderr
        assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not any((tmp_path / "runs").iterdir())  # no run folder for a refused config


def test_help_for_every_command():
    commands = ["demo", "train", "predict", "evaluate", "inspect", "report", "export", "experiment", "combine"]
    for cmd in ([], *([c] for c in commands)):
        res = _cli(*cmd, "--help")
        assert res.returncode == 0 and "usage: medbalance" in res.stdout


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), *TINY_SEG]) == 0
    run = _only_run(tmp_path)
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("base_channels: 4", "base_channels: 8"))
    assert main(["predict", str(run), "--input", str(tmp_path), "--out", str(tmp_path / "pred")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: checkpoint in") and "does not fit model 'unet'" in err
    assert not (tmp_path / "pred").exists()


def test_two_cpu_processes_train_through_fabric_ddp(tmp_path):
    res = _cli(
        "train",
        "intraclass",
        *TINY_SEG[2:],
        "--set",
        "devices=2",
        "--set",
        "device=cpu",
        "--set",
        "epochs=1",
        "--out",
        str(tmp_path),
        "--quiet",
    )
    assert res.returncode == 0, res.stderr[-2000:]
    run = _only_run(tmp_path)  # one folder, shared by both processes
    assert (run / "metrics.json").is_file() and len((run / "history.csv").read_text().splitlines()) == 2
    assert res.stdout.count("run folder:") == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_asking_for_a_missing_gpu_is_a_config_error(tmp_path):
    res = _cli("train", "demo", "--set", "device=cuda", "--out", str(tmp_path / "runs"))
    assert res.returncode == 2 and res.stderr.startswith("error: cannot run with device=cuda"), res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "runs").exists()
