"""Run, comparison, experiment reports (``report.html`` / ``report.md``) and their figures."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from medbalance.cli.main import main
from medbalance.experiments.runner import ResultTable
from medbalance.report import plots, write_comparison, write_experiment_report
from medbalance.report.overlays import PRED_COLOUR, TARGET_COLOUR, palette
from tests._reference.report_checks import assert_real_png, check_html, check_markdown

TINY = ["--set", "epochs=2", "--set", "model.base_channels=4", "--set", "progress=false"]
SEG = ["--set", "data.size=32", "--set", "data.n_train=8", "--set", "data.n_val=4", "--set", "data.n_test=4"]
LONGTAIL = [
    "--set", "data.n_max=12", "--set", "data.imbalance_ratio=4", "--set", "data.num_classes=3",
    "--set", "data.n_val_per_class=2", "--set", "data.n_test_per_class=3", "--set", "data.size=16",
    "--set", "epochs=2", "--set", "progress=false",
]  # fmt: skip


def _train(out, *argv) -> "Path":  # noqa: F821
    assert main([*argv, "--out", str(out)]) == 0
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A binary (demo), a 7-class (nuclei) and a classification (longtail) run, trained for 2 epochs."""
    root = tmp_path_factory.mktemp("runs")
    return {
        "binary": _train(root / "binary", "demo", *TINY, *SEG),
        "multi": _train(root / "multi", "train", "nuclei", *TINY, *SEG),
        "classification": _train(root / "cls", "train", "longtail", *LONGTAIL),
    }


@pytest.mark.parametrize("kind", ["binary", "multi", "classification"])
def test_run_report_parses_and_every_figure_is_a_real_png(runs, kind):
    run = runs[kind]
    headings = check_html(run / "report.html")
    figures = {p.name for p in check_markdown(run / "report.md")}
    expected = {
        "binary": {"examples.png", "precision_recall.png", "case_scores.png", "worst_cases.png"},
        "multi": {"examples.png", "case_scores.png", "worst_cases.png"},
        "classification": {"reliability.png"},
    }[kind] | {"curves.png", "class_curves.png", "lr.png", "per_class.png", "confusion.png"}
    assert figures == expected
    for section in ("Training curves", "Scores", "Confusion matrix", "Environment", "Resolved config"):
        assert section in headings, section
    assert any(h.startswith("Per-class scores") for h in headings)
    assert ("Examples" in headings) == (kind != "classification")
    env = json.loads((run / "environment.json").read_text())
    assert env["device"] == "cpu" and env["torch"]


@pytest.mark.parametrize("kind", ["binary", "multi", "classification"])
def test_confusion_matrix_agrees_with_the_scores(runs, kind):
    metrics = json.loads((runs[kind] / "metrics.json").read_text())
    cm = np.asarray(metrics["confusion"]["matrix"])
    scores = metrics[metrics["confusion"]["split"]]
    assert cm.shape == (len(metrics["class_names"]),) * 2
    if kind == "classification":
        assert metrics["confusion"]["unit"] == "samples"
        assert cm.sum(1).tolist() == scores["support"]
        assert np.trace(cm) / cm.sum() == pytest.approx(scores["accuracy"])
    else:
        assert metrics["confusion"]["unit"] == "pixels" and cm.sum() == 4 * 32 * 32
        # images of one size: the mean per-image accuracy is the pooled one
        assert np.trace(cm) / cm.sum() == pytest.approx(scores["pixel_accuracy"])


def test_report_command_rewrites_a_run_report_and_keeps_its_examples(runs, capsys):
    run = runs["binary"]
    (run / "report.html").unlink()
    assert main(["report", str(run)]) == 0
    assert capsys.readouterr().out.strip() == f"report: {run / 'report.html'}"
    assert "Examples" in check_html(run / "report.html")


def test_comparison_of_several_runs(runs, tmp_path, capsys):
    twin = tmp_path / runs["binary"].name
    shutil.copytree(runs["binary"], twin)
    (twin / "config.yaml").write_text((twin / "config.yaml").read_text().replace("lr: 0.002", "lr: 0.01"))
    out = tmp_path / "cmp"
    assert main(["report", str(runs["binary"]), str(twin), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "| lr | 0.002 | 0.01 |" in text  # the config keys that differ, and only those
    assert "| seed |" not in text
    assert "Per-class dice" in check_html(out / "report.html")
    assert {p.name for p in check_markdown(out / "report.md")} == {
        "curves.png",
        "per_class_dice.png",
        "per_class_iou.png",
    }
    # the same folder name twice: labels get the parent folder
    assert f"{runs['binary'].parent.name}/{runs['binary'].name}" in text
    assert main(["report", str(runs["binary"]), str(twin), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_comparison_refuses_bad_input(runs, tmp_path, capsys):
    with pytest.raises(ValueError, match="at least 2 runs"):
        write_comparison([runs["binary"]], tmp_path / "c")
    with pytest.raises(ValueError, match="one task"):
        write_comparison([runs["binary"], runs["classification"]], tmp_path / "c")
    assert main(["report", str(tmp_path)]) == 2
    assert "neither a finished run" in capsys.readouterr().err


def test_experiment_report_shows_tables_and_curves(runs, tmp_path):
    exp = tmp_path / "exp"
    table = ResultTable("Dice of the toy rows", ("dice",), note="toy note")
    for seed, value in enumerate((0.5, 0.7)):
        table.add("U-Net", {"dice": value}, seed=seed)
    results = {"experiment": "toy", "scale": "smoke", "seeds": [0, 1], "machine": "2-core CPU", "figures": []}
    results["tables"] = [table.to_dict()]
    (exp / "runs" / "unet" / "seed0").mkdir(parents=True)
    shutil.copy(runs["binary"] / "history.csv", exp / "runs" / "unet" / "seed0" / "history.csv")
    (exp / "results.json").write_text(json.dumps(results))
    assert main(["report", str(exp)]) == 0
    headings = check_html(exp / "report.html")
    assert "Dice of the toy rows" in headings and "Training curves" in headings
    assert "| U-Net | 0.6000 ± 0.1414 |" in (exp / "report.md").read_text()
    assert write_experiment_report(exp) == exp / "report.html"


# ----------------------------------------------------------------------------- figures
def test_label_overlay_binary_contours_and_multiclass_fill():
    image = np.full((1, 12, 12), 0.5, np.float32)
    pred = np.zeros((12, 12), np.int64)
    pred[2:6, 2:6] = 1
    target = np.zeros_like(pred)
    target[6:10, 6:10] = 1
    binary = plots.label_overlay(image, pred, 2, target)
    assert binary[2, 2].tolist() == list(PRED_COLOUR) and binary[6, 6].tolist() == list(TARGET_COLOUR)
    multi = plots.label_overlay(image, pred * 3, 4, target)
    colour = palette(4)[3].astype(float)
    np.testing.assert_allclose(multi[3, 3], np.round(0.55 * 127.5 + 0.45 * colour), atol=1)
    assert multi[6, 6].tolist() == [255, 255, 255]  # ground-truth boundary
    assert multi[0, 0].tolist() == [128, 128, 128]  # untouched background


def test_figures_are_real_pngs_and_bad_input_is_refused(tmp_path):
    names = ["background", "a", "b"]
    cm = np.array([[50, 2, 1], [3, 9, 0], [0, 1, 4]])
    assert_real_png(plots.plot_confusion(cm, names, tmp_path / "cm.png").read_bytes())
    assert_real_png(plots.plot_class_counts([500, 40, 3], names, tmp_path / "counts.png").read_bytes())
    sizes = np.random.default_rng(0).integers(1, 400, 50)
    assert_real_png(plots.plot_histogram(sizes, tmp_path / "h.png", title="t", xlabel="x", log_x=True).read_bytes())
    assert_real_png(plots.plot_histogram([], tmp_path / "empty.png", title="t", xlabel="x").read_bytes())
    with pytest.raises(ValueError, match=r"cm must be \(3, 3\)"):
        plots.plot_confusion(cm[:2], names, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="scores\\['dice'\\] has 2 values but there are 3 classes"):
        plots.plot_per_class({"dice": [0.1, 0.2]}, names, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="examples is empty"):
        plots.plot_examples([], 2, tmp_path / "bad.png")


# ----------------------------------------------------------------------------- issue 21: pages a person reads
def test_worst_cases_are_the_lowest_mean_dice_of_cases_csv(runs):
    """The overlays show the three cases with the lowest mean Dice over classes in cases.csv, named with it."""
    import csv

    for kind in ("binary", "multi"):
        run = runs[kind]
        with open(run / "evaluations" / "test" / "cases.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        means = {}
        for case in {r["case"] for r in rows}:
            dice = [float(r["dice"]) for r in rows if r["case"] == case and r["dice"] not in ("", "nan")]
            if dice:
                means[case] = float(np.mean(dice))
        worst = sorted(means, key=lambda c: (means[c], c))[:3]
        listed = ", ".join(f"{c} ({means[c]:.3f})" for c in worst)
        assert f"the worst cases by their mean Dice over the classes: {listed}" in (run / "report.md").read_text()
        assert_real_png((run / "report" / "worst_cases.png").read_bytes())


def test_report_samples_keeps_the_worst_cases_and_a_pixel_sample_of_the_pass():
    """ReportSamples against a direct computation: worst-k by mean Dice; the pixel sample keeps (p, y) pairs."""
    import torch

    from medbalance.metrics.cases import CaseTable
    from medbalance.report.collect import ReportSamples

    rng = np.random.default_rng(3)
    names = [f"case{i}" for i in range(7)]
    table = CaseTable(2, class_names=["bg", "fg"])
    shown = []
    example = lambda i, y: (names[i], np.zeros((1, 8, 8)), np.zeros((8, 8), int), y)  # noqa: E731
    samples = ReportSamples(table, names, example, binary=True, max_pixels=100, worst=3)
    everything = ReportSamples(None, names, example, binary=True, max_pixels=10_000)  # more than the pass has
    logits_all, target_all = [], []
    for start in range(0, 7, 2):  # batches of 2 (the last of 1)
        index = list(range(start, min(start + 2, 7)))
        target = torch.from_numpy(rng.integers(0, 2, (len(index), 8, 8)))
        logits = torch.from_numpy(rng.normal(size=(len(index), 1, 8, 8))).float() + 2.0 * target[:, None] - 1
        labels = (logits[:, 0] > 0).long()
        for i, y, t in zip(index, labels.numpy(), target.numpy()):
            table.update(names[i], y, t)
            shown.append((names[i], 2 * ((y == 1) & (t == 1)).sum() / max((y == 1).sum() + (t == 1).sum(), 1)))
        for callback in (samples, everything):
            callback({"index": torch.tensor(index), "target": target}, logits, labels)
        logits_all.append(logits[:, 0].reshape(-1))
        target_all.append(target.reshape(-1))
    expected = sorted(shown, key=lambda cv: cv[1])[:3]
    got = samples.worst_cases
    assert [example[0] for example, _ in got] == [name for name, _ in expected]
    np.testing.assert_allclose([score for _, score in got], [d for _, d in expected])
    probs, truth = samples.pixels
    assert probs.shape == truth.shape == (100,)
    # every sampled pixel is one of the pass: its probability and its truth together
    pairs = set(zip(torch.sigmoid(torch.cat(logits_all)).numpy().round(6), torch.cat(target_all).numpy()))
    assert set(zip(probs.round(6), truth)) <= pairs
    probs, truth = everything.pixels  # a sample larger than the pass: every pixel, each once
    expected = sorted(zip(torch.sigmoid(torch.cat(logits_all)).numpy().tolist(), torch.cat(target_all).tolist()))
    np.testing.assert_allclose(sorted(zip(probs.tolist(), truth.tolist())), expected, rtol=1e-6)
    assert everything.worst_cases == []


def test_precision_recall_points_equal_a_threshold_by_threshold_count():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 2, 300)
    probs = np.round(np.clip(rng.normal(0.3 + 0.4 * target, 0.2), 0, 1), 2)  # rounding makes ties
    precision, recall, thresholds = plots.precision_recall_points(probs, target)
    assert len(thresholds) == len(np.unique(probs)) and np.all(np.diff(thresholds) < 0)
    for p, r, t in zip(precision, recall, thresholds):
        chosen = probs >= t
        assert p == pytest.approx((chosen & (target == 1)).sum() / chosen.sum())
        assert r == pytest.approx((chosen & (target == 1)).sum() / (target == 1).sum())


def test_run_warnings(tmp_path):
    from medbalance.report.html import run_warnings

    history = [{"epoch": str(e), "val_mean_dice_fg": "0.0"} for e in (1, 2, 3)]
    metrics = {"monitor": "mean_dice_fg", "best_epoch": 1, "epochs": 3}
    warnings = run_warnings(tmp_path, metrics, history)
    assert len(warnings) == 2
    assert "best epoch is the first of 3" in warnings[0] and "was 0 in every epoch" in warnings[1]
    history[1]["val_mean_dice_fg"] = "0.1"
    assert run_warnings(tmp_path, {**metrics, "best_epoch": 2}, history) == []
    assert run_warnings(tmp_path, {**metrics, "epochs": 1}, history[:1])[0].startswith("validation mean_dice_fg")


def test_class_count_axis_starts_at_the_power_of_ten_below_the_smallest_count(tmp_path, monkeypatch):
    import matplotlib.figure

    seen = {}
    real = matplotlib.figure.Figure.savefig

    def keep(fig, *args, **kwargs):
        ax = fig.axes[0]
        seen["ylim"] = ax.get_ylim()
        seen["ticks"] = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
        return real(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    plots.plot_class_counts([523000, 41000, 3100, 87], ["bg", "a", "b", "c"], tmp_path / "c.png")
    assert seen["ylim"][0] == pytest.approx(10)
    assert "1,000" in seen["ticks"] and "100,000" in seen["ticks"]
    assert not any("^" in t or "e" in t for t in seen["ticks"]), seen["ticks"]  # one plain number format


_BROWSERS = ("chromium", "chromium-headless-shell", "chromium-browser", "chrome-headless-shell", "google-chrome")


@pytest.mark.parametrize("kind", ["binary", "multi", "classification"])
def test_report_renders_in_a_headless_browser(runs, kind, tmp_path):
    """report.html in headless Chromium: the screenshot shows the figures at the page width; no image is blank."""
    import base64
    import io
    import re
    import subprocess

    from PIL import Image

    browser = next((b for b in map(shutil.which, _BROWSERS) if b), None)
    if browser is None:
        pytest.skip(f"no headless browser ({', '.join(_BROWSERS)}) on this machine")
    page = runs[kind] / "report.html"
    shot = tmp_path / "shot.png"
    command = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,6000", "--virtual-time-budget=5000",
        f"--screenshot={shot}", page.as_uri(),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if not shot.is_file():
        pytest.skip(f"{browser} did not start here (exit {done.returncode}): {done.stderr.strip()[-200:]}")
    screen = assert_real_png(shot.read_bytes(), min_side=1000).astype(np.int16)
    ink = (screen < 235).any(axis=2)  # not the white page
    ink = ink[: np.flatnonzero(ink.any(axis=1)).max(initial=0) + 1]  # down to the end of the page
    assert ink.mean() > 0.05, "the page is (almost) blank"
    packed = (screen[..., 0] << 16) | (screen[..., 1] << 8) | screen[..., 2]
    assert len(np.unique(packed)) > 500, "no figure was drawn (too few colours)"
    # a full-width figure: rows whose ink spans nearly the whole content column (1150 px wide, 1 em padding)
    columns = [np.flatnonzero(row) for row in ink]
    spans = np.array([c[-1] - c[0] if c.size else 0 for c in columns])
    assert (spans > 1000).sum() > 100, f"no figure spans the page width (widest span {spans.max()} px)"
    # every embedded image is drawn: more than one colour over a visible share of it
    sources = re.findall(r"src='data:image/png;base64,([^']+)'", page.read_text())
    assert len(sources) >= 5
    for data in sources:
        with Image.open(io.BytesIO(base64.b64decode(data))) as img:
            pixels = np.asarray(img.convert("L"), np.int16)
        assert (pixels < 235).mean() > 0.01 and pixels.std() > 10, "an embedded figure is (almost) blank"


def test_legends_sit_beside_the_bars_and_curves(tmp_path, monkeypatch):
    """per_class.png and the comparison figures: no legend overlaps the axes it explains (issue 21)."""
    import matplotlib.figure

    overlaps = []
    real = matplotlib.figure.Figure.savefig

    def check(fig, *args, **kwargs):
        result = real(fig, *args, **kwargs)  # drawn: the extents are final
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            legend = ax.get_legend()
            if legend is not None and legend.get_frame_on() is False:  # the outside legends
                overlaps.append(legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer)))
        return result

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", check)
    names = ["background", "a long class name", "b"]
    plots.plot_per_class({"dice": [0.99, 1.0, 0.5], "recall": [1.0, 0.98, 0.4]}, names, tmp_path / "p.png")
    history = [{"epoch": "1", "train_loss": "1.0", "val_loss": "0.9", "val_dice": "0.5"}]
    plots.plot_curves({"run-one": history, "run-two": history}, "dice", tmp_path / "c.png")
    assert overlaps == [False, False]
