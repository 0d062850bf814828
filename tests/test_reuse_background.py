"""Seed 002's two-stage "reuse background" method: the combination, the experiment and ``medbalance combine``."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from medbalance.cli.combine import add_parser
from medbalance.data.io import read_mask
from medbalance.data.medical import read_slices
from medbalance.engine.run import load_run, predict_arrays
from medbalance.errors import CheckpointError
from medbalance.experiments.runner import run_experiment
from medbalance.experiments.seed002.reuse_background import OPTIONS, SCALES, loss_spec
from medbalance.methods.reuse_background import combine_predictions


def _reference(multi: np.ndarray, fg: np.ndarray, tau: float, mode: str) -> np.ndarray:
    """Seed 002 eq. (3.4), pixel by pixel."""
    out = np.zeros(fg.shape, np.int64)
    for idx in np.ndindex(*fg.shape):
        scores = multi[(idx[0], slice(None), *idx[1:])]
        if fg[idx] > tau:  # binary model says foreground
            out[idx] = int(np.argmax(scores)) if mode == "paper" else 1 + int(np.argmax(scores[1:]))
    return out


def _probs(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    x = rng.random(shape).astype(np.float32)
    return x / x.sum(1, keepdims=True)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    c=st.integers(2, 6),
    tau=st.floats(0.0, 0.99),
    mode=st.sampled_from(["paper", "fg_argmax"]),
)
def test_combine_matches_pixelwise_reference(seed, c, tau, mode):
    rng = np.random.default_rng(seed)
    multi, fg = _probs(rng, (2, c, 5, 4)), rng.random((2, 5, 4)).astype(np.float32)
    got = combine_predictions(multi, fg, tau=tau, mode=mode)
    assert isinstance(got, np.ndarray) and got.dtype == np.int64
    np.testing.assert_array_equal(got, _reference(multi, fg, tau, mode))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), tau=st.floats(0.0, 0.99))
def test_combine_properties(seed, tau):
    rng = np.random.default_rng(seed)
    multi, fg = torch.from_numpy(_probs(rng, (3, 4, 6, 6))), torch.from_numpy(rng.random((3, 6, 6)).astype(np.float32))
    paper = combine_predictions(multi, fg, tau=tau)
    fg_argmax = combine_predictions(multi, fg, tau=tau, mode="fg_argmax")
    plain = multi.argmax(1)
    # paper: only ever removes foreground; the binary background always wins
    assert torch.equal(paper, torch.where(fg > tau, plain, 0))
    # fg_argmax: the binary model alone decides foreground vs background
    assert torch.equal(fg_argmax > 0, fg > tau)
    assert torch.equal(paper[paper > 0], fg_argmax[paper > 0])


def test_combine_accepts_channel_axis_and_3d():
    rng = np.random.default_rng(0)
    multi = torch.from_numpy(_probs(rng, (2, 3, 4, 5, 6)))
    fg = torch.from_numpy(rng.random((2, 1, 4, 5, 6)).astype(np.float32))
    out = combine_predictions(multi, fg)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 4, 5, 6)
    assert torch.equal(out, combine_predictions(multi, fg[:, 0]))


def test_combine_seed_example():
    # Seed 002 fig. 3.2: background predicted by the binary model overrides the multi-class cells.
    multi = np.zeros((1, 3, 1, 3), np.float32)
    multi[0, :, 0, 0] = [0.1, 0.8, 0.1]  # cell 1, binary agrees
    multi[0, :, 0, 1] = [0.2, 0.1, 0.7]  # cell 2, binary says background
    multi[0, :, 0, 2] = [0.6, 0.3, 0.1]  # background, binary says cell
    fg = np.array([[[0.9, 0.3, 0.8]]], np.float32)
    assert combine_predictions(multi, fg).tolist() == [[[1, 0, 0]]]
    assert combine_predictions(multi, fg, mode="fg_argmax").tolist() == [[[1, 0, 1]]]
    assert combine_predictions(multi, fg, tau=0.85).tolist() == [[[1, 0, 0]]]


_P = np.zeros((1, 3, 2, 2), np.float32)
_FG = np.zeros((1, 2, 2), np.float32)


@pytest.mark.parametrize(
    ("multi", "fg", "kwargs", "error", "message"),
    [
        (_P, _FG, {"mode": "max"}, ValueError, "mode must be"),
        (_P, _FG, {"tau": 1.0}, ValueError, r"tau must be a number in \[0, 1\)"),
        (_P[:, :1], _FG, {}, ValueError, "C >= 2"),
        (_P, np.zeros((1, 2, 3), np.float32), {}, ValueError, "fg_prob must be"),
        (_P, _FG + 3.0, {}, ValueError, "sigmoid"),
        (_P.astype(np.int64), _FG, {}, TypeError, "multi_probs must hold floating"),
        (_P, _FG.astype(np.int64), {}, TypeError, "fg_prob must hold floating"),
    ],
)
def test_combine_rejects_bad_input(multi, fg, kwargs, error, message):
    with pytest.raises(error, match=message):
        combine_predictions(multi, fg, **kwargs)


def test_loss_spec_maps_seed_options():
    assert loss_spec("dice") == [{"name": "dice"}]
    assert loss_spec("focal+dice+ob", focal_weight=2, hard_num=512) == [
        {"name": "focal", "class_weight": "inverse"},
        {"name": "dice"},
        {"name": "ob", "hard_num": 512},
    ]
    assert loss_spec("focal", focal_weight=0) == [{"name": "focal"}]
    with pytest.raises(ValueError, match="loss recipe must join"):
        loss_spec("focal+lovasz")
    with pytest.raises(ValueError, match="focal_weight must be"):
        loss_spec("focal", focal_weight=7)


def test_scales_and_options_are_complete():
    assert set(SCALES) == {"smoke", "small", "paper"}
    assert len(SCALES["small"]["seeds"]) >= 3
    assert OPTIONS["tau"] == 0.5 and OPTIONS["focal_weight"] == 5


# ----------------------------------------------------------------------------- experiment + CLI
@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("rb")
    return run_experiment("reuse-background", scale="smoke", out=out, progress=False, device="cpu")


def test_smoke_experiment_writes_tables_and_prediction_sets(smoke):
    results = json.loads((smoke.run_dir / "results.json").read_text())
    titles = [t["title"] for t in results["tables"]]
    assert titles[0].startswith("Plain vs reuse background")
    main = results["tables"][0]["rows"]
    assert list(main) == [
        "plain (multi-class)",
        "reuse background (paper)",
        "reuse background (fg_argmax)",
        "nnU-Net-style baseline",
    ]
    assert all(0.0 <= cell["mean"] <= 1.0 for row in main.values() for cell in row.values())
    # per-case test Dice of the rows that are run folders, from their own cases.json (issue 22)
    kept = results["tables"][0]["per_case"]
    assert set(kept) == {"plain (multi-class)", "nnU-Net-style baseline"}
    rows = json.loads((smoke.run_dir / "runs" / "multi" / "seed0" / "evaluations" / "test" / "cases.json").read_text())
    third = [r["dice"] for r in rows["rows"] if r["class"] == results["tables"][0]["classes"][2]]
    assert kept["plain (multi-class)"]["0"][results["tables"][0]["classes"][2]] == third
    per_class = results["tables"][1]
    assert per_class["metrics"][0] == "background" and len(per_class["metrics"]) == 7
    preds = smoke.run_dir / "artefacts" / "predictions" / "seed0"
    for name in ("multi", "binary", "reuse_paper", "reuse_fg_argmax", "nnunet"):
        for kind in ("classes", "overlays"):
            files = sorted((preds / name / kind).glob("*.png"))
            assert len(files) == 4
            assert np.asarray(Image.open(files[0])).shape == (32, 32, 3)
    assert (smoke.run_dir / "results.md").read_text().count("![") == 1
    for key in ("multi", "binary", "nnunet"):
        assert (smoke.run_dir / "runs" / key / "seed0" / "metrics.json").is_file()


def test_smoke_experiment_resumes_without_retraining(smoke):
    again = run_experiment("reuse-background", resume=smoke.run_dir, progress=False, device="cpu")
    first = json.loads((smoke.run_dir / "results.json").read_text())["tables"][0]
    assert json.loads((again.run_dir / "results.json").read_text())["tables"][0] == first


def _combine(argv):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    add_parser(sub, argparse.ArgumentParser(add_help=False))
    args = parser.parse_args(["combine", *argv])
    args.func(args)


def test_combine_command_matches_functional_core(smoke, tmp_path, capsys):
    runs = smoke.run_dir / "runs"
    multi_dir, binary_dir = runs / "multi" / "seed0", runs / "binary" / "seed0"
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(inputs / f"img{i}.png")
    _combine([str(multi_dir), str(binary_dir), "--input", str(inputs), "--out", str(tmp_path / "out"), "--tau", "0.3"])
    assert "wrote 2 combined prediction(s)" in capsys.readouterr().out
    multi, binary = load_run(multi_dir), load_run(binary_dir)
    for i in range(2):
        image, _ = read_slices(inputs / f"img{i}.png", channels=multi.meta["in_channels"])
        expected = combine_predictions(predict_arrays(multi, image)[0], predict_arrays(binary, image)[0], tau=0.3)
        np.testing.assert_array_equal(read_mask(tmp_path / "out" / f"img{i}.png"), expected[0])
    with pytest.raises(Exception, match="already exists"):
        _combine([str(multi_dir), str(binary_dir), "--input", str(inputs), "--out", str(tmp_path / "out")])


def test_combine_command_rejects_swapped_runs(smoke, tmp_path):
    runs = smoke.run_dir / "runs"
    with pytest.raises(CheckpointError, match="MULTI_RUN .* is a binary model"):
        _combine([str(runs / "binary" / "seed0"), str(runs / "multi" / "seed0"), "--input", ".", "--out", "."])
