"""The experiment runner: tables with mean ± std, options, resumable model folders, the CLI."""

from __future__ import annotations

import json
import math
import os
from html.parser import HTMLParser

import numpy as np
import pytest

from medbalance.cli.main import main
from medbalance.errors import ConfigError, DataError
from medbalance.experiments import EXPERIMENTS
from medbalance.experiments.runner import ExperimentContext, ResultTable, mean_std, parse_options, run_experiment
from medbalance.report.overlays import save_png
from tests import _toy_experiment


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(EXPERIMENTS, "toy", "tests._toy_experiment")
    _toy_experiment.TRAINED.clear()
    return _toy_experiment


def test_mean_std_is_the_sample_std():
    values = [0.1, 0.4, 0.35, 0.9]
    mean, std = mean_std(values)
    assert mean == pytest.approx(np.mean(values)) and std == pytest.approx(np.std(values, ddof=1))
    assert mean_std([0.5]) == (0.5, 0.0)
    assert all(math.isnan(v) for v in mean_std([]))


def test_table_cells_markdown_html_and_json():
    t = ResultTable("T", ("dice", "iou"), row_label="net", note="n")
    t.add("a", {"dice": 0.8, "iou": 0.6, "extra": 1.0}, seed=0)
    t.add("a", {"dice": 0.9, "iou": 0.7}, seed=1)
    t.add("b", {"dice": 0.5, "iou": 0.4}, seed=0)
    assert t.cell("a", "dice") == (pytest.approx(0.85), pytest.approx(0.0707107, abs=1e-6), 2)
    md = t.to_markdown(digits=3).splitlines()
    assert md[0] == "| net | dice | iou |" and md[2] == "| a | 0.850 ± 0.071 | 0.650 ± 0.071 |"
    assert md[3] == "| b | 0.500 | 0.400 |"  # one seed: no std shown
    assert "<td>0.8500 ± 0.0707</td>" in t.to_html()
    d = t.to_dict()
    assert d["rows"]["a"]["dice"]["per_seed"] == {0: 0.8, 1: 0.9} and d["rows"]["b"]["iou"]["n"] == 1
    with pytest.raises(KeyError, match="lacks iou"):
        t.add("c", {"dice": 1.0}, seed=0)


class _Page(HTMLParser):
    """Headings, table cells (one list per row), image sources and preformatted text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.headings, self.rows, self.images, self.pre, self._tag = [], [], [], [], None

    def handle_starttag(self, tag, attrs):
        self._tag = tag
        if tag == "tr":
            self.rows.append([])
        if tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_endtag(self, tag):
        self._tag = None

    def handle_data(self, data):
        if self._tag in ("h1", "h2"):
            self.headings.append(data)
        elif self._tag in ("td", "th"):
            self.rows[-1].append(data)
        elif self._tag == "pre":
            self.pre.append(data)


def test_results_html_is_a_report_page_with_the_tables_and_linked_figures(tmp_path):
    ctx = ExperimentContext("toy<1>", "smoke", tmp_path, (0, 1), "a & b", {"k": "v"}, command="medbalance x")
    t = ctx.table("Dice <&>", ("dice", "iou"), note="n")
    t.add("U-Net <2>", {"dice": 0.5, "iou": 0.25}, seed=0)
    t.add("U-Net <2>", {"dice": 0.7, "iou": math.nan}, seed=1)
    figure = save_png(ctx.artefacts("figures") / "grid.png", np.zeros((8, 8, 3), np.uint8))
    ctx.write_report("intro <x>", [figure])
    text = (tmp_path / "results.html").read_text()
    page = _Page()
    page.feed(text)
    assert page.headings == ["toy<1> (smoke scale, data: a & b)", "Dice <&>"]
    # the cells read back by an HTML parser are the Markdown table's
    assert page.rows == [["method", "dice", "iou"], ["U-Net <2>", "0.6000 ± 0.1414", "-"]]
    assert "| U-Net <2> | 0.6000 ± 0.1414 | - |" in (tmp_path / "results.md").read_text()
    assert t.to_html() in text  # one table renderer for both
    assert page.images == ["artefacts/figures/grid.png"] and page.pre == ["intro <x>"]


def test_options_are_cast_and_unknown_ones_refused():
    defaults = {"alphas": [0.5], "nets": ["unet"], "k": 5, "oof": False, "tau": 0.5}
    opts = parse_options(defaults, ["alphas=0.1,0.3", "nets=[unet, cenet]", "k=3", "oof=true", "tau=1"])
    assert opts == {"alphas": [0.1, 0.3], "nets": ["unet", "cenet"], "k": 3, "oof": True, "tau": 1.0}
    assert parse_options(defaults, {"k": 2})["k"] == 2
    with pytest.raises(ConfigError, match="unknown option 'alpha' .*did you mean 'alphas'"):
        parse_options(defaults, ["alpha=0.1"])
    with pytest.raises(ConfigError, match="option 'k' expects a number"):
        parse_options(defaults, ["k=2.5"])
    with pytest.raises(ConfigError, match="option 'oof' expects true or false"):
        parse_options(defaults, ["oof=3"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_options(defaults, ["k"])


def test_data_section_maps_phantom_shared_names_and_paths(tmp_path):
    ctx = ExperimentContext("x", "smoke", tmp_path, (0,), "phantom", {})
    assert ctx.data_section({"kind": "nuclei_phantom"}) == {"kind": "nuclei_phantom"}
    ctx.data = "drive"
    assert ctx.data_section({}) == {"kind": "shared", "name": "drive"}
    (tmp_path / "camus" / "patient0001").mkdir(parents=True)
    ctx.data = str(tmp_path / "camus")
    assert ctx.data_section({})["kind"] == "camus"
    (tmp_path / "conic").mkdir()
    for f in ("images.npy", "labels.npy"):
        (tmp_path / "conic" / f).touch()
    ctx.data = str(tmp_path / "conic")
    assert ctx.data_section({})["kind"] == "conic"
    (tmp_path / "plain" / "images").mkdir(parents=True)
    ctx.data = str(tmp_path / "plain")
    assert ctx.data_section({}) == {"kind": "folder", "path": str(tmp_path / "plain")}
    ctx.data = str(tmp_path / "missing")
    with pytest.raises(DataError, match="neither 'phantom'"):
        ctx.data_section({})


def test_run_writes_tables_and_resume_loads_finished_models(toy, tmp_path):
    result = run_experiment("toy", scale="smoke", seeds=[0, 1], options=["widths=4"], out=tmp_path, progress=False)
    folder = result.run_dir
    assert folder.name.startswith("toy-smoke-") and sorted(toy.TRAINED) == ["w4/seed0", "w4/seed1"]
    asked = json.loads((folder / "experiment.json").read_text())
    assert asked == {
        "experiment": "toy",
        "scale": "smoke",
        "data": "phantom",
        "seeds": [0, 1],
        "options": {"widths": [4], "note": "toy"},
    }
    res = json.loads((folder / "results.json").read_text())
    row = res["tables"][0]["rows"]["U-Net w4"]
    assert row["dice"]["n"] == 2 and 0.0 <= row["dice"]["mean"] <= 1.0
    assert "| U-Net w4 | " in (folder / "results.md").read_text()
    assert "<table>" in (folder / "results.html").read_text()
    assert "U-Net w4" in (folder / "report.html").read_text()
    for key in ("w4/seed0", "w4/seed1"):
        run = folder / "runs" / key
        assert (run / "metrics.json").is_file() and (run / "config.yaml").is_file()
        assert (run / "checkpoints" / "best.pt").is_file()
    # An interrupted experiment: one model's run lost its end (killed after its last epoch).
    (folder / "runs" / "w4/seed1" / "metrics.json").unlink()
    toy.TRAINED.clear()
    again = run_experiment("toy", resume=folder, progress=False)
    assert again.run_dir == folder and toy.TRAINED == ["w4/seed1"]  # seed 0 loaded, seed 1 resumed
    assert len((folder / "runs" / "w4/seed1" / "history.csv").read_text().splitlines()) == 2  # no epoch redone
    assert json.loads((folder / "results.json").read_text())["tables"] == res["tables"]


def test_experiment_folder_is_absolute_so_it_resumes_from_another_directory(toy, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = run_experiment("toy", scale="smoke", seeds=[0], options=["widths=4"], out="exp", progress=False).run_dir
    assert folder.is_absolute() and folder.parent == tmp_path / "exp"
    (folder / "runs" / "w4/seed0" / "metrics.json").unlink()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    again = run_experiment("toy", resume=os.path.join("..", "exp", folder.name), progress=False)
    assert again.run_dir == folder and (folder / "runs" / "w4/seed0" / "metrics.json").is_file()


def test_cli_experiment_and_its_errors(toy, tmp_path, capsys):
    assert main(["experiment", "toy", "--scale", "smoke", "--set", "widths=4", "--out", str(tmp_path), "-q"]) == 0
    assert "results.md" in capsys.readouterr().out
    assert main(["experiment", "toy", "--scale", "smoke", "--set", "width=4", "--out", str(tmp_path)]) == 2
    assert "unknown option 'width'" in capsys.readouterr().err
    assert main(["experiment", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown experiment 'nope'" in capsys.readouterr().err
    assert main(["experiment", "toy", "--resume", str(tmp_path / "nothing")]) == 2
    assert "not an experiment folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["experiment", "toy", "--seeds", "a,b"])
    assert exit_info.value.code == 2 and "comma-separated integers" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["experiment", "toy", "--jobs", "0"])
    assert exit_info.value.code == 2 and "expected a whole number >= 1, got '0'" in capsys.readouterr().err
