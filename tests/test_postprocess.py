"""Post-processing of predicted labels (``evaluation.largest_component`` / ``fill_holes``): against a
breadth-first flood fill written here and MONAI's ``FillHoles``; applied by the task, a run's
``predict``, ``evaluate`` and the export metadata; keys validated."""

from __future__ import annotations

import itertools
import json
import re
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from monai.transforms import FillHoles
from PIL import Image

from medbalance.api import evaluate
from medbalance.cli.main import main
from medbalance.config import load_config
from medbalance.data.build import build_splits
from medbalance.engine.postprocess import VARIANTS, compare_postprocessing, postprocess_labels
from medbalance.engine.run import load_run, predict_image
from medbalance.engine.tasks import SegmentationTask
from medbalance.errors import ConfigError

DOC = Path(__file__).resolve().parents[1] / "docs" / "onnx.md"


def _neighbours(index: tuple[int, ...], shape: tuple[int, ...]):
    for axis, step in itertools.product(range(len(shape)), (-1, 1)):
        j = list(index)
        j[axis] += step
        if 0 <= j[axis] < shape[axis]:
            yield tuple(j)


def _regions(inside: np.ndarray) -> list[list[tuple[int, ...]]]:
    """Face-connected regions of ``inside``, in C order of their first pixel (breadth-first search)."""
    seen, regions = np.zeros(inside.shape, bool), []
    for start in zip(*np.nonzero(inside)):
        if seen[start]:
            continue
        seen[start], queue, region = True, deque([start]), []
        while queue:
            index = queue.popleft()
            region.append(index)
            for j in _neighbours(index, inside.shape):
                if inside[j] and not seen[j]:
                    seen[j] = True
                    queue.append(j)
        regions.append(region)
    return regions


def _reference(labels: np.ndarray, *, largest: bool, fill: bool) -> np.ndarray:
    out = labels.copy()
    for c in sorted(set(np.unique(out)) - {0}):
        if largest:
            regions = _regions(out == c)
            keep = max(range(len(regions)), key=lambda k: (len(regions[k]), -k))
            for k, region in enumerate(regions):
                if k != keep:
                    out[tuple(np.array(region).T)] = 0
        if fill:  # a hole: a region outside c that touches no border
            for region in _regions(out != c):
                if not any(min(i) == 0 or any(v == s - 1 for v, s in zip(i, out.shape)) for i in region):
                    for i in region:
                        out[i] = c if out[i] == 0 else out[i]
    return out


label_maps = st.one_of(
    arrays(np.int64, st.tuples(st.integers(1, 9), st.integers(1, 9)), elements=st.integers(0, 2)),
    arrays(np.int64, st.tuples(st.integers(1, 4), st.integers(1, 5), st.integers(1, 5)), elements=st.integers(0, 2)),
)


@settings(max_examples=150, deadline=None)
@given(labels=label_maps, largest=st.booleans(), fill=st.booleans())
def test_equals_a_flood_fill_reference(labels, largest, fill):
    before = labels.copy()
    out = postprocess_labels(labels, largest_component=largest, fill_holes=fill)
    np.testing.assert_array_equal(out, _reference(labels, largest=largest, fill=fill))
    np.testing.assert_array_equal(labels, before)  # the input is kept
    assert out.dtype == labels.dtype


@settings(max_examples=100, deadline=None)
@given(
    mask=st.one_of(
        arrays(np.int64, st.tuples(st.integers(1, 12), st.integers(1, 12)), elements=st.integers(0, 1)),
        arrays(
            np.int64, st.tuples(st.integers(1, 5), st.integers(1, 6), st.integers(1, 6)), elements=st.integers(0, 1)
        ),
    )
)
def test_binary_hole_filling_equals_monai(mask):
    theirs = np.asarray(FillHoles(applied_labels=[1], connectivity=1)(torch.from_numpy(mask)[None]))[0]
    np.testing.assert_array_equal(postprocess_labels(mask, fill_holes=True), theirs)


def test_a_ring_is_filled_and_a_speck_removed_other_classes_kept():
    labels = np.zeros((9, 9), np.int64)
    labels[1:6, 1:6] = 1
    labels[2:5, 2:5] = 0
    labels[3, 3] = 2  # another class inside the ring stays
    labels[8, 8] = 1  # a speck
    out = postprocess_labels(labels, largest_component=True, fill_holes=True)
    expected = np.zeros_like(labels)
    expected[1:6, 1:6] = 1
    expected[3, 3] = 2
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(postprocess_labels(labels), labels)  # both off: unchanged


def test_task_predict_post_processes_binary_and_softmax_logits():
    labels = torch.zeros(2, 8, 8, dtype=torch.long)
    labels[:, 1:5, 1:5] = 1
    labels[:, 2:4, 2:4] = 0
    labels[0, 7, 7] = 1
    logits = torch.where(labels[:, None] == 1, 3.0, -3.0)
    binary = SegmentationTask(2, largest_component=True, fill_holes=True).predict(logits)
    expected = torch.zeros_like(labels)
    expected[:, 1:5, 1:5] = 1
    assert torch.equal(binary, expected)
    softmax = torch.cat([-logits, logits, torch.full_like(logits, -9.0)], dim=1)
    assert torch.equal(SegmentationTask(3, largest_component=True, fill_holes=True).predict(softmax), expected)
    assert torch.equal(SegmentationTask(2).predict(logits), labels)


def test_keys_are_validated_with_a_suggestion(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("evaluation: {largest_componet: true}\n")
    with pytest.raises(
        ConfigError, match=r"unknown key 'largest_componet' under 'evaluation'.*did you mean 'largest_component'"
    ):
        load_config(cfg)
    cfg.write_text("evaluation: {fill_holes: maybe}\n")
    with pytest.raises(ConfigError, match=r"evaluation.fill_holes"):
        load_config(cfg)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny native run with both operations on, trained 1 epoch on discs with a speckled background."""
    tmp = tmp_path_factory.mktemp("post")
    rng = np.random.default_rng(0)
    data = tmp / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    for i in range(5):
        yy, xx = np.mgrid[:36, :40]
        mask = ((yy - 18) ** 2 + (xx - 20) ** 2 <= 64).astype(np.uint8)
        image = np.clip(60 + 80 * mask + rng.normal(0, 40, mask.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(data / "images" / f"case{i}.png")
        Image.fromarray(mask).save(data / "masks" / f"case{i}.png")
    cfg = tmp / "cfg.yaml"
    cfg.write_text(
        "name: post\nepochs: 1\nbatch_size: 2\nsteps_per_epoch: 2\nprogress: false\npatch_size: [16, 16]\n"
        f"data: {{kind: folder, path: {data}, val_fraction: 0.4, test_fraction: 0.0}}\n"
        "evaluation: {largest_component: true, fill_holes: true, surface: false}\n"
        "model: {name: unet, base_channels: 4, depth: 2}\nloss: [dice, ce]\n"
    )
    assert main(["train", str(cfg), "--out", str(tmp / "runs"), "-q"]) == 0
    [folder] = list((tmp / "runs").iterdir())
    return folder, data


def test_predict_and_evaluate_apply_the_run_s_post_processing(run, tmp_path):
    folder, data = run
    loaded = load_run(folder)
    assert loaded.task.largest_component and loaded.task.fill_holes
    image = np.asarray(Image.open(data / "images" / "case0.png"))[None]
    _, labels = predict_image(loaded, image)
    loaded.task.largest_component = loaded.task.fill_holes = False  # the same run, raw
    _, raw = predict_image(loaded, image)
    np.testing.assert_array_equal(labels, postprocess_labels(raw, largest_component=True, fill_holes=True))
    assert (labels != raw).any()  # the untrained network's speckle: post-processing has work to do
    out = tmp_path / "masks"
    assert main(["predict", str(folder), "--input", str(data / "images" / "case0.png"), "--out", str(out), "-q"]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(out / "case0.png")) > 0, labels > 0)  # binary: 0 / 255
    assert main(["evaluate", str(folder), "--data", str(data), "-q"]) == 0
    [cases] = (folder / "evaluations").glob("eval-*/cases.json")
    [row] = [r for r in json.loads(cases.read_text())["rows"] if r["case"] == "case0"]
    assert row["pred_pixels"] == int((labels == 1).sum())  # scored on the post-processed labels


def test_export_metadata_states_the_post_processing(run, tmp_path):
    folder, _ = run
    out = tmp_path / "model.onnx"
    assert main(["export", str(folder), "--out", str(out), "--no-check", "-q"]) == 0
    record = json.loads(Path(str(out) + ".json").read_text())
    post = record["metadata"]["postprocessing"]
    assert (
        post["largest_component"] is True and post["fill_holes"] is True and "binary_fill_holes" in post["label_rule"]
    )


def test_the_onnx_doc_procedure_applies_the_post_processing(run, tmp_path):
    folder, data = run
    [code] = re.findall(r"```python\n(.*?)\n```", DOC.read_text(), flags=re.S)
    doc: dict = {}
    exec(compile(code, "docs/onnx.md", "exec"), doc)
    out = tmp_path / "model.onnx"
    assert main(["export", str(folder), "--out", str(out), "-q"]) == 0
    image = np.asarray(Image.open(data / "images" / "case1.png"))[None]
    np.testing.assert_array_equal(doc["predict"](out, image), predict_image(load_run(folder), image)[1])


def test_compare_postprocessing_matches_evaluate_with_each_setting(run):
    folder, _ = run
    loaded = load_run(folder)
    cases = build_splits(loaded.cfg).val  # the run's validation split, as the decision takes it
    result = compare_postprocessing(loaded, cases)
    assert result["cases"] == list(cases.names) and (loaded.task.largest_component, loaded.task.fill_holes) == (
        True,
        True,
    )
    for name, keys in VARIANTS.items():
        loaded.task.largest_component = keys.get("largest_component", False)
        loaded.task.fill_holes = keys.get("fill_holes", False)
        scores = evaluate(loaded, cases)
        assert result["mean"][name] == pytest.approx(scores["mean_dice_fg"], abs=1e-9), name
    assert result["mean"]["both"] != result["mean"]["none"]
