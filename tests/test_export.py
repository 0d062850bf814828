"""``medbalance export``: ONNX and torch.export programs with dynamic batch / spatial sizes, parity with PyTorch."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from medbalance.cli.main import main
from medbalance.engine.run import load_run
from medbalance.export import export_model, export_run, load_exported
from medbalance.nets import NETS


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 2-level U-Net of width 4 (exporting costs seconds per level), trained one epoch."""
    out = tmp_path_factory.mktemp("runs")
    argv = ["--set", "epochs=1", "--set", "data.size=32", "--set", "data.n_train=8", "--set", "data.n_val=4"]
    argv += ["--set", "data.n_test=0", "--set", "model.base_channels=4", "--set", "model.depth=2"]
    assert main(["demo", "--out", str(out), *argv, "--set", "progress=false", "-q"]) == 0
    return next(p for p in out.iterdir() if p.is_dir())


def _torch_logits(run_dir, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return load_run(run_dir).model(torch.from_numpy(x)).numpy()


def test_onnx_export_through_the_cli_matches_torch_at_other_sizes(run, capsys):
    assert main(["export", str(run), "--format", "onnx"]) == 0
    out = capsys.readouterr().out
    assert "max |difference|" in out
    path = run / "export" / "model.onnx"
    record = json.loads((run / "export" / "model.onnx.json").read_text())
    assert record["max_abs_diff"] <= 1e-4 and record["format"] == "onnx"
    # dynamic batch, height and width, none of them the traced (2, 1, 33, 35)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for shape in [(1, 1, 37, 53), (4, 1, 64, 64), (2, 1, 20, 31)]:
        x = rng.random(shape, dtype=np.float32)
        got = session.run(None, {"image": x})[0]
        np.testing.assert_allclose(got, _torch_logits(run, x), atol=1e-4, rtol=0)
    # the preprocessing facts travel with the model
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["in_channels"] == "1" and meta["task"] == "segmentation" and meta["threshold"] == "0.5"
    assert json.loads(meta["class_names"]) == ["background", "target"]
    assert json.loads(meta["preprocessing"])["resize"]["size"] == [32, 32]


def test_pt2_format_is_a_dynamic_torch_export_program(run):
    result = export_run(run, format="pt2")
    assert result.path.name == "model.pt2" and result.max_abs_diff <= 1e-4
    model = load_exported(result.path)
    # any batch and any size, whatever its padding to a multiple of 2**depth
    for shape in [(3, 1, 44, 20), (1, 1, 45, 29), (2, 1, 8, 97)]:
        x = np.random.default_rng(1).random(shape, dtype=np.float32)
        np.testing.assert_allclose(model(x), _torch_logits(run, x), atol=1e-4, rtol=0)
    extra = {"medbalance.json": ""}
    torch.export.load(str(result.path), extra_files=extra)
    assert json.loads(extra["medbalance.json"])["in_channels"] == "1"


def test_export_bad_input(run, tmp_path, capsys):
    assert main(["export", str(tmp_path), "--format", "onnx"]) == 2
    assert "not a run folder" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="2"):  # argparse's own check, one line
        main(["export", str(run), "--format", "tflite"])
    assert "invalid choice: 'tflite'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="format must be one of onnx, pt2, got 'tflite'"):
        export_run(run, format="tflite")
    assert main(["export", str(run), "--format", "pt2", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "out must end with .pt2 for format 'pt2', got 'm.onnx'" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["cenet", "resnet32"])
def test_pt2_of_nets_with_size_dependent_layers_takes_any_size(name, tmp_path):
    # CE-Net pools its deepest map by 2-6 pixels (1x1 maps at small sizes); the classifiers
    # convert to channels-last: both used to tie a .pt2 to the traced size class.
    torch.manual_seed(0)
    net = NETS[name](in_channels=1, num_classes=3).eval()
    model = load_exported(export_model(net, tmp_path / "m.pt2", format="pt2", in_channels=1))
    for shape in [(1, 1, 64, 64), (3, 1, 37, 53), (2, 1, 256, 96), (1, 1, 100, 33)]:
        x = torch.rand(shape, generator=torch.Generator().manual_seed(sum(shape)))
        with torch.inference_mode():
            expected = net(x).numpy()
        np.testing.assert_allclose(model(x.numpy()), expected, atol=1e-4, rtol=0)
