"""Run, experiment and comparison reports: ``report.html`` and ``report.md`` with their figures.

A report is built once as a list of blocks (headings, paragraphs, tables, figures, code)
and rendered twice: ``report.html`` embeds every figure as a base64 PNG, so the single file
can be mailed or archived; ``report.md`` links the same PNGs, written to ``report/`` beside
it. What each report shows is described in ``docs/artefacts.md``.

- :func:`write_report`: one training run (``medbalance train`` / ``demo`` write it at the end;
  ``medbalance report RUN_DIR`` rewrites it from the folder).
- :func:`write_experiment_report`: an experiment folder (``results.json``): its comparison
  tables, the training curves of its runs and its figures.
- :func:`write_comparison`: several runs side by side.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import logging
import math
import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medbalance._atomic import atomic_write_text
from medbalance.errors import DataError
from medbalance.report import plots

__all__ = [
    "ASSETS",
    "ReportPage",
    "environment",
    "html_table",
    "is_run_dir",
    "read_json",
    "run_warnings",
    "write_comparison",
    "write_experiment_report",
    "write_report",
]

log = logging.getLogger(__name__)

#: Folder beside ``report.html`` / ``report.md`` that holds the report's PNGs.
ASSETS = "report"
_EXAMPLES = "examples.png"
# Scores listed first in summaries, when a run has them.
_HEADLINE = (
    "mean_dice_fg",
    "mean_iou_fg",
    "recall_majority",
    "recall_minority",
    "accuracy",
    "macro_recall",
    "macro_precision",
    "macro_f1",
)

_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1150px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}pre{background:#f7f7f7;padding:1em;overflow:auto}
figure{margin:.5em 0 1.5em}figure img{max-width:100%}figure img.full{width:100%}figcaption{font-size:.85em;color:#555}
.warning{background:#fff4e5;border-left:4px solid #e67e00;padding:.5em 1em;margin:.5em 0}"""


# ----------------------------------------------------------------------------- page model
@dataclass
class ReportPage:
    """A report as blocks, rendered to ``report.html`` (figures embedded) and ``report.md`` (figures linked).

    Example:
        >>> page = ReportPage("scores")
        >>> page.table(["class", "dice"], [["target", 0.8125]])
        >>> print(page.to_markdown(Path(".")).splitlines()[-1])
        | target | 0.8125 |
    """

    title: str
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def items(self, lines: Sequence[str]) -> None:
        self.blocks.append(("ul", list(lines)))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        self.blocks.append(("table", list(header), [list(r) for r in rows]))

    def figure(self, path: Path, caption: str, *, full: bool | None = None) -> None:
        """A PNG with its caption; ``full``: shown at the page width (``None``: when it is drawn at least
        :data:`_FULL_WIDTH` pixels wide, so a small square figure keeps its size)."""
        self.blocks.append(("img", Path(path), caption, full))

    def warning(self, text: str) -> None:
        self.blocks.append(("warning", text))

    def code(self, text: str) -> None:
        self.blocks.append(("pre", text))

    def write(self, folder: Path) -> Path:
        """Write ``folder/report.html`` and ``folder/report.md``; returns the HTML path."""
        atomic_write_text(folder / "report.md", self.to_markdown(folder))
        path = folder / "report.html"
        atomic_write_text(path, self.to_html())
        return path

    def to_html(self, folder: Path | None = None) -> str:
        """The page as one HTML document, figures embedded as base64 PNG (linked relative to ``folder``
        when given, where the page goes)."""
        esc = html.escape
        out = [
            "<!doctype html>",
            "<html lang='en'><head><meta charset='utf-8'>",
            f"<title>{esc(self.title)}</title><style>{_CSS}</style></head><body>",
            f"<h1>{esc(self.title)}</h1>",
        ]
        for kind, *args in self.blocks:
            if kind in ("h2", "p"):
                out.append(f"<{kind}>{esc(args[0])}</{kind}>")
            elif kind == "ul":
                out.append("<ul>" + "".join(f"<li>{esc(line)}</li>" for line in args[0]) + "</ul>")
            elif kind == "table":
                out.append(html_table(args[0], args[1]))
            elif kind == "warning":
                out.append(f"<p class='warning'><strong>Warning:</strong> {esc(args[0])}</p>")
            elif kind == "img":
                if folder is None:
                    src = "data:image/png;base64," + base64.b64encode(args[0].read_bytes()).decode("ascii")
                else:
                    src = Path(os.path.relpath(args[0], folder)).as_posix()
                wide = args[2] if args[2] is not None else _png_width(args[0]) >= _FULL_WIDTH
                full = " class='full'" if wide else ""
                out.append(
                    f"<figure><img{full} alt='{esc(args[1])}' src='{esc(src)}'>"
                    f"<figcaption>{esc(args[1])}</figcaption></figure>"
                )
            else:
                out.append(f"<pre>{esc(args[0])}</pre>")
        out.append("</body></html>")
        return "\n".join(out) + "\n"

    def to_markdown(self, folder: Path) -> str:
        """The page as Markdown, figures linked relative to ``folder`` (where ``report.md`` goes)."""
        out = [f"# {self.title}"]
        for kind, *args in self.blocks:
            if kind == "h2":
                out.append(f"## {args[0]}")
            elif kind == "p":
                out.append(args[0])
            elif kind == "warning":
                out.append(f"> **Warning:** {args[0]}")
            elif kind == "ul":
                out.append("\n".join(f"- {line}" for line in args[0]))
            elif kind == "table":
                rows = [args[0], *args[1]]
                lines = ["| " + " | ".join(_cell(v).replace("|", "\\|") for v in r) + " |" for r in rows]
                lines.insert(1, "|" + "---|" * len(args[0]))
                out.append("\n".join(lines))
            elif kind == "img":
                out.append(f"![{args[1]}]({Path(os.path.relpath(args[0], folder)).as_posix()})")
            else:
                out.append(f"```\n{args[0].rstrip()}\n```")
        return "\n\n".join(out) + "\n"


#: Figures drawn at least this wide (pixels) fill the page; the page is 1150 px, a 10-inch figure 1100.
_FULL_WIDTH = 700


def _png_width(path: Path) -> int:
    """Width of a PNG from its header (0 when it is not a PNG)."""
    with open(path, "rb") as fh:
        head = fh.read(24)
    return int.from_bytes(head[16:20], "big") if head[:8] == b"\x89PNG\r\n\x1a\n" else 0


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def html_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """One ``<table>``: a header row and body rows, every cell escaped (floats with 4 decimals, NaN as ``-``).

    The one table renderer of the HTML pages: report pages and experiment results.

    Example:
        >>> html_table(["a<b"], [[0.5]])
        '<table><thead><tr><th>a&lt;b</th></tr></thead><tbody><tr><td>0.5000</td></tr></tbody></table>'
    """
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(_cell(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# ----------------------------------------------------------------------------- run folders
def environment(device: str = "cpu") -> dict[str, str]:
    """Versions and machine of the current process, as a run's ``environment.json`` records them."""
    import numpy
    import torch

    import medbalance

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "medbalance": medbalance.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "cpu": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "gpu": gpu,
        "device": device,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def is_run_dir(path: str | Path) -> bool:
    """A finished training run: ``config.yaml`` and ``metrics.json``."""
    path = Path(path)
    return (path / "config.yaml").is_file() and (path / "metrics.json").is_file()


def _read_history(run_dir: Path) -> list[dict]:
    path = run_dir / "history.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def read_json(path: Path) -> dict:
    """A JSON object written by medbalance (``metrics.json``, ...); ``{}`` when the file is absent.

    Raises:
        DataError: the file is not a JSON object (hand-edited, torn by a foreign writer).
    """
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read '{path}': not valid JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise DataError(f"cannot read '{path}': expected a JSON object, found {type(data).__name__}")
    return data


def _config_facts(config_text: str) -> dict:
    import yaml

    from medbalance.config import parse_config

    raw = yaml.safe_load(config_text) or {}
    try:
        cfg = parse_config(raw)
        task, threshold = cfg.task, cfg.threshold
    except (ValueError, TypeError):  # a config of another medbalance version: the report still shows it
        task, threshold = "?", 0.5
    loss = raw.get("loss")
    if isinstance(loss, list):
        loss = " + ".join(f"{t.get('weight', 1)} x {_loss_term(t)}" for t in loss if isinstance(t, Mapping))
    elif isinstance(loss, Mapping):
        loss = _loss_term(loss)
    data = raw.get("data") or {}
    return {
        "model": (raw.get("model") or {}).get("name", "?"),
        "loss": loss or "?",
        "data": data.get("kind", "?") + (f" ({data['path']})" if data.get("path") else ""),
        "task": task,
        "threshold": threshold,
    }


def _loss_term(term: Mapping) -> str:
    """``dice(include_background=False)``: a loss entry of the config with its options."""
    options = ", ".join(f"{k}={v}" for k, v in term.items() if k not in ("name", "weight"))
    return f"{term.get('name')}({options})" if options else str(term.get("name"))


def _per_class_keys(scores: Mapping, num_classes: int) -> list[str]:
    """Per-class score lists of a score dict (not counts such as ``support``)."""
    skip = {"support", "empty_per_class"}
    return [
        k
        for k, v in scores.items()
        if k not in skip and isinstance(v, list) and len(v) == num_classes and all(isinstance(x, float) for x in v)
    ]


def _headline(scores: Mapping) -> list[str]:
    return [k for k in _HEADLINE if isinstance(scores.get(k), (int, float))]


def write_report(
    run_dir: str | Path,
    metrics: Mapping,
    *,
    examples: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = (),
    pixels: tuple[np.ndarray, np.ndarray] | None = None,
    worst: Sequence[tuple[tuple[str, np.ndarray, np.ndarray, np.ndarray], float]] = (),
) -> Path:
    """Write ``report.html`` and ``report.md`` of a training run, figures in ``report/``.

    Warnings come first (:func:`run_warnings`). Besides the scores and the confusion matrix the
    report draws, where the run folder has them: the loss and score curves, the per-class
    validation curves and the learning rate (``history.csv``), the per-case scores of the
    final split (``evaluations/<split>/cases.csv``) and, for classification, the reliability
    diagram (``predictions/predictions.csv``).

    Args:
        run_dir: the run folder (``config.yaml``, ``history.csv``, optionally
            ``environment.json``).
        metrics: what ``metrics.json`` holds: ``val`` and optionally ``test`` score dicts,
            ``class_names``, ``best_epoch``, ``epochs``, ``monitor`` and optionally
            ``confusion`` (``{"split", "unit", "matrix"}``).
        examples: segmentation examples ``(name, image (C, H, W), target (H, W), pred (H, W))``
            for the qualitative grid; without them an existing ``report/examples.png`` is kept.
        pixels: ``(probabilities, truth)`` of a sample of the final split's pixels (binary
            segmentation) for the precision-recall curve; without them an existing
            ``report/precision_recall.png`` is kept.
        worst: the worst cases of the final split as ``(example, mean Dice)``, worst first;
            without them an existing ``report/worst_cases.png`` is kept.

    Returns:
        The path of ``report.html``.
    """
    run_dir = Path(run_dir)
    assets = run_dir / ASSETS
    config_text = (run_dir / "config.yaml").read_text(encoding="utf-8")
    facts = _config_facts(config_text)
    history = _read_history(run_dir)
    names = list(metrics.get("class_names") or [])
    monitor = str(metrics.get("monitor", "loss"))
    split = "test" if "test" in metrics else "val"
    scores = metrics.get(split, {})
    page = ReportPage(f"medbalance run {run_dir.name}")
    page.para(
        f"{facts['task'].capitalize()} with {facts['model']} trained with loss {facts['loss']} on {facts['data']} "
        f"data ({len(names)} classes: {', '.join(names)}). Best epoch {metrics.get('best_epoch')} of "
        f"{metrics.get('epochs')}, selected on validation {monitor}; scores below are on the {split} split."
    )
    for warning in run_warnings(run_dir, metrics, history):
        page.warning(warning)
    if scores:
        page.items([f"{k}: {scores[k]:.4f}" for k in _headline(scores)])
    if history:
        page.heading("Training curves")
        curves = plots.plot_curves({run_dir.name: history}, monitor, assets / "curves.png")
        page.figure(curves, f"loss per epoch and validation {monitor}")
        shown = [k for k in ("dice", "recall") if f"val_{k}/{names[-1]}" in history[-1]] if names else []
        if shown:
            segmentation = facts["task"] == "segmentation"
            path = plots.plot_class_curves(
                history, names, assets / "class_curves.png", scores=shown, skip_background=segmentation
            )
            page.figure(path, f"validation {' and '.join(shown)} of each class per epoch")
        if any(r.get("lr") not in (None, "") for r in history):
            page.figure(plots.plot_lr(history, assets / "lr.png"), "learning rate at the end of each epoch")
    page.heading("Scores")
    splits = [s for s in ("test", "val") if s in metrics]
    scalar_keys = [k for k, v in metrics[splits[0]].items() if isinstance(v, (int, float))] if splits else []
    page.table(["score", *splits], [[k, *(metrics[s].get(k, "-") for s in splits)] for k in scalar_keys])
    per_class = _per_class_keys(scores, len(names))
    if per_class:
        page.heading(f"Per-class scores ({split} split)")
        page.table(["class", *per_class], [[n, *(scores[k][i] for k in per_class)] for i, n in enumerate(names)])
        bars = plots.plot_per_class({k: scores[k] for k in per_class}, names, assets / "per_class.png")
        page.figure(bars, f"per-class scores on the {split} split")
    confusion = metrics.get("confusion")
    if confusion:
        page.heading("Confusion matrix")
        path = plots.plot_confusion(
            np.asarray(confusion["matrix"]), names, assets / "confusion.png", unit=confusion.get("unit", "pixels")
        )
        page.figure(path, f"rows: true class, columns: predicted class ({confusion.get('split')} split)")
    _threshold_and_calibration(page, run_dir, facts, names, split, pixels)
    _case_scores(page, run_dir, split, names, worst)
    if examples:
        plots.plot_examples(examples, len(names), assets / _EXAMPLES, names)
    if (assets / _EXAMPLES).is_file():
        page.heading("Examples")
        legend = (
            "prediction contour red, ground truth green, both yellow"
            if len(names) == 2
            else "predicted classes filled in their colour, ground-truth boundaries white"
        )
        page.figure(assets / _EXAMPLES, f"{split} images: {legend}")
    env = read_json(run_dir / "environment.json")
    page.heading("Environment")
    page.table(["", "value"], list(env.items()) or [["environment", "not recorded (run older than this report)"]])
    page.heading("Resolved config")
    page.code(config_text)
    page.heading("Files")
    page.items(
        [
            "config.yaml: the resolved config (train --resume reads it)",
            "metrics.json: these scores, machine-readable; history.csv: one row per epoch",
            "checkpoints/best.pt, checkpoints/last.pt; predictions/: the predicted masks or predictions.csv",
        ]
    )
    path = page.write(run_dir)
    log.debug("report: %s", path)
    return path


def run_warnings(run_dir: str | Path, metrics: Mapping, history: Sequence[Mapping]) -> list[str]:
    """What a reader should know before trusting a run's scores, one sentence each.

    The best epoch being the first (of several), a validation score that stayed at 0 in every
    epoch, a resumed run and a stop by the non-finite guard (the last two read from
    ``train.log``, :mod:`medbalance.engine.trainlog`).
    """
    from medbalance.engine.trainlog import NAN_GUARD, RESUMED

    out = []
    monitor = str(metrics.get("monitor", "loss"))
    epochs = metrics.get("epochs") or len(history)
    if metrics.get("best_epoch") == 1 and isinstance(epochs, int) and epochs > 1:
        out.append(
            f"the best epoch is the first of {epochs}: no later epoch improved validation {monitor}, "
            "so training diverged, over-fitted at once or is too short to judge (see the curves)"
        )
    values = [plots._number(r.get(f"val_{monitor}")) for r in history]
    values = [v for v in values if not math.isnan(v)]
    if monitor != "loss" and values and all(v == 0 for v in values):
        out.append(f"validation {monitor} was 0 in every epoch: the model never found the scored classes")
    log_path = Path(run_dir) / "train.log"
    lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines() if log_path.is_file() else []
    resumed = sum(RESUMED in line for line in lines)
    if resumed:
        out.append(f"the run was resumed {resumed} time{'s' * (resumed > 1)} (train.log has the details)")
    stops = [line.split(NAN_GUARD, 1)[1].strip() for line in lines if NAN_GUARD in line]
    if stops:
        out.append(
            f"the non-finite guard stopped this run {len(stops)} time{'s' * (len(stops) > 1)} before it "
            f"finished (last: {stops[-1]})"
        )
    return out


def _threshold_and_calibration(
    page: ReportPage, run_dir: Path, facts: Mapping, names: Sequence[str], split: str, pixels
) -> None:
    """The precision-recall curve of a binary segmentation or the reliability diagram of a classifier."""
    assets = run_dir / ASSETS
    if facts["task"] == "segmentation" and len(names) == 2:
        path = assets / "precision_recall.png"
        if pixels is not None:
            plots.plot_precision_recall(*pixels, facts["threshold"], path)
        if path.is_file():
            page.heading("Precision and recall against the threshold")
            page.figure(
                path,
                f"foreground pixels of the {split} split (a random sample); the marked point is the run's "
                f"threshold {facts['threshold']:g}",
                full=False,  # a square plot: at the page width it would fill the screen
            )
    elif facts["task"] == "classification":
        table = run_dir / "predictions" / "predictions.csv"
        if not table.is_file():
            return
        import torch

        with open(table, newline="") as fh:
            rows = list(csv.DictReader(fh))
        columns = [f"p_{n}" for n in names]
        if not rows or any(c not in rows[0] for c in columns):
            log.warning("report: '%s' lacks the columns %s; no reliability diagram", table, ", ".join(columns))
            return
        probs = torch.tensor([[float(r[c]) for c in columns] for r in rows])
        target = torch.tensor([int(r["target"]) for r in rows])
        page.heading("Calibration")
        path = plots.plot_reliability(probs, target, assets / "reliability.png", title=f"{split} split")
        page.figure(path, f"reliability diagram of the {split} split (predictions/predictions.csv)")


def _case_scores(page: ReportPage, run_dir: Path, split: str, names: Sequence[str], worst: Sequence) -> None:
    """Per-case Dice of the final split (``cases.csv``) and its worst cases drawn on their images."""
    table = run_dir / "evaluations" / split / "cases.csv"
    if not table.is_file():
        return
    with open(table, newline="") as fh:
        rows = list(csv.DictReader(fh))
    by_class: dict[str, list[tuple[str, float]]] = {}
    for row in rows:
        by_class.setdefault(row["class"], []).append((row["case"], plots._number(row.get("dice"))))
    if not by_class:
        return
    assets = run_dir / ASSETS
    page.heading(f"Per-case scores ({split} split)")
    path = plots.plot_case_scores(by_class, assets / "case_scores.png")
    page.figure(path, f"Dice of every case and class (evaluations/{split}/cases.csv); the worst three named")
    if worst:
        shown = [(f"{name} Dice {score:.3f}", *rest) for (name, *rest), score in worst]
        plots.plot_examples(shown, len(names), assets / "worst_cases.png", names)
        listed = [(str(example[0]), score) for example, score in worst]
    else:  # a rewritten report: the same ranking, from the table
        means: dict[str, list[float]] = {}
        for row in rows:
            means.setdefault(row["case"], []).append(plots._number(row.get("dice")))
        ranked = {c: float(np.nanmean(v)) for c, v in means.items() if not all(math.isnan(x) for x in v)}
        listed = sorted(ranked.items(), key=lambda cv: cv[1])[:3]
    if (assets / "worst_cases.png").is_file():
        cases = ", ".join(f"{name} ({score:.3f})" for name, score in listed)
        page.figure(assets / "worst_cases.png", f"the worst cases by their mean Dice over the classes: {cases}")


# ----------------------------------------------------------------------------- experiments
def write_experiment_report(exp_dir: str | Path) -> Path:
    """Write ``report.html`` / ``report.md`` of an experiment folder (one with ``results.json``).

    Shows what the experiment recorded (command, machine, seeds), its comparison tables
    (mean ± std over seeds), the training curves of every run in ``runs/`` and the figures
    the experiment saved.
    """
    exp_dir = Path(exp_dir)
    results = read_json(exp_dir / "results.json")
    page = ReportPage(f"medbalance experiment {results.get('experiment', exp_dir.name)}")
    page.items(
        [
            f"{k}: {results[k]}"
            for k in ("scale", "data", "seeds", "options", "command", "machine", "date")
            if k in results
        ]
    )
    for table in results.get("tables", []):
        page.heading(table["title"])
        if table.get("note"):
            page.para(table["note"])
        rows, columns, texts = [], table.get("columns", []), table.get("texts", {})
        for row, cells in table["rows"].items():
            rows.append([row, *(_mean_std(cells[m]) for m in table["metrics"])])
            rows[-1] += [texts.get(row, {}).get(c, "") for c in columns]  # a claim's difference and verdict
        page.table([table.get("row_label", "method"), *table["metrics"], *columns], rows)
    histories = {
        str(p.parent.relative_to(exp_dir / "runs")): _read_history(p.parent)
        for p in sorted((exp_dir / "runs").glob("**/history.csv"))
    }
    histories = {k: v for k, v in histories.items() if v}
    if histories:
        page.heading("Training curves")
        monitor = _monitor_of(next(iter(histories.values())))
        path = plots.plot_curves(histories, monitor, exp_dir / ASSETS / "curves.png")
        page.figure(path, f"loss and validation {monitor} of every run")
    for figure in results.get("figures", []):
        if (exp_dir / figure).is_file():
            page.figure(exp_dir / figure, Path(figure).stem)
    return page.write(exp_dir)


def _mean_std(cell: Mapping) -> str:
    if not cell.get("n") or cell.get("mean") is None or math.isnan(cell["mean"]):
        return "-"
    return f"{cell['mean']:.4f}" + (f" ± {cell['std']:.4f}" if cell["n"] > 1 else "")


def _monitor_of(history: Sequence[Mapping]) -> str:
    """The first validation score of a history (the runs of an experiment have no metrics.json)."""
    keys = [k[4:] for k in history[0] if k.startswith("val_") and k != "val_loss"]
    return next((k for k in _HEADLINE if k in keys), keys[0] if keys else "loss")


# ----------------------------------------------------------------------------- comparisons
def _flatten(raw: Mapping, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in raw.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return out


def write_comparison(run_dirs: Sequence[str | Path], out: str | Path) -> Path:
    """Compare finished runs side by side in ``out/report.html`` and ``out/report.md``.

    Shows each run's setup and headline scores, the config keys in which the runs differ,
    their training curves overlaid, per-class scores grouped by class, and links to each
    run's own report.

    Args:
        run_dirs: two or more run folders (each with ``config.yaml`` and ``metrics.json``).
        out: the folder to write (created).

    Raises:
        ValueError: fewer than two runs, a folder that is not a finished run, or runs of
            different tasks.
    """
    import yaml

    dirs = [Path(d) for d in run_dirs]
    if len(dirs) < 2:
        raise ValueError(f"run_dirs must name at least 2 runs to compare, got {len(dirs)}")
    bad = next((d for d in dirs if not is_run_dir(d)), None)
    if bad is not None:
        raise ValueError(f"'{bad}' is not a finished run folder (expected config.yaml and metrics.json)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    labels = _unique_labels(dirs)
    metrics = {label: read_json(d / "metrics.json") for label, d in zip(labels, dirs)}
    configs = {label: (d / "config.yaml").read_text(encoding="utf-8") for label, d in zip(labels, dirs)}
    tasks = {_config_facts(c)["task"] for c in configs.values()}
    if len(tasks) > 1:
        raise ValueError(f"runs must share one task to be compared, got {', '.join(sorted(tasks))}")
    page = ReportPage(f"medbalance comparison of {len(dirs)} runs")
    page.para("Scores on each run's test split (its validation split when it has none).")
    split_of = {k: ("test" if "test" in m else "val") for k, m in metrics.items()}
    keys = [k for k in _HEADLINE if all(isinstance(m[split_of[r]].get(k), (int, float)) for r, m in metrics.items())]
    rows = []
    for label, d in zip(labels, dirs):
        facts = _config_facts(configs[label])
        m = metrics[label]
        rows.append(
            [label, facts["model"], facts["loss"], split_of[label], f"{m.get('best_epoch')}/{m.get('epochs')}"]
            + [m[split_of[label]][k] for k in keys]
        )
    page.table(["run", "model", "loss", "split", "best/epochs", *keys], rows)

    flat = {label: _flatten(yaml.safe_load(c) or {}) for label, c in configs.items()}
    all_keys = sorted(set().union(*flat.values()) - {"name"})
    differing = [k for k in all_keys if len({f.get(k, "-") for f in flat.values()}) > 1]
    page.heading("Config differences")
    if differing:
        page.table(["key", *labels], [[k, *(flat[r].get(k, "-") for r in labels)] for k in differing])
    else:
        page.para("The runs have the same config (apart from their names).")

    histories = {label: _read_history(d) for label, d in zip(labels, dirs)}
    histories = {k: v for k, v in histories.items() if v}
    monitors = {m.get("monitor") for m in metrics.values()}
    if histories:
        monitor = monitors.pop() if len(monitors) == 1 else _monitor_of(next(iter(histories.values())))
        page.heading("Training curves")
        page.figure(
            plots.plot_curves(histories, monitor, out / ASSETS / "curves.png"), f"loss and validation {monitor}"
        )

    names = list(next(iter(metrics.values())).get("class_names") or [])
    same_classes = all(list(m.get("class_names") or []) == names for m in metrics.values())
    per_class = _per_class_keys(metrics[labels[0]][split_of[labels[0]]], len(names)) if same_classes else []
    for key in per_class[:2]:
        if all(key in m[split_of[r]] for r, m in metrics.items()):
            series = {r: m[split_of[r]][key] for r, m in metrics.items()}
            page.heading(f"Per-class {key}")
            page.table(["class", *labels], [[n, *(series[r][i] for r in labels)] for i, n in enumerate(names)])
            page.figure(plots.plot_per_class(series, names, out / ASSETS / f"per_class_{key}.png"), f"{key} per class")

    page.heading("Run reports")
    page.items([f"{label}: {os.path.relpath(d / 'report.html', out)}" for label, d in zip(labels, dirs)])
    return page.write(out)


def _unique_labels(dirs: Sequence[Path]) -> list[str]:
    """Folder names, with their parent prepended where two runs share a name."""
    names = [d.name for d in dirs]
    labels = [f"{d.parent.name}/{d.name}" if names.count(d.name) > 1 else d.name for d in dirs]
    return [f"{label} [{i}]" if labels.count(label) > 1 else label for i, label in enumerate(labels)]
