"""The experiment runner behind ``medbalance experiment NAME``: the seeds' tables as commands.

An experiment module (one per paper, named in :data:`medbalance.experiments.EXPERIMENTS`)
defines ``SCALES`` (presets per scale), ``OPTIONS`` (its ``--set`` options with defaults) and
``run(ctx) -> dict``. The runner gives it
an :class:`ExperimentContext`: one fresh experiment folder, validated options, the seeds, a
way to build validated run configs, a ``run`` that trains every recipe in its own resumable
sub-folder, and :class:`ResultTable` objects that become ``results.md`` / ``results.html`` /
``results.json`` with mean ± std over seeds.

Layout of an experiment folder::

    <name>-<scale>-<time>/experiment.json        what was asked (scale, data, seeds, options)
                          runs/<key>/...          one run folder per trained model
                          artefacts/...           PNGs the experiment saves
                          results.{md,html,json}  the tables
                          report.{html,md}        the tables, every model's curves, the figures

``--resume EXP_DIR`` re-runs the experiment in its folder: finished models are loaded, an
interrupted one continues from its ``last.pt``. Runs an experiment declares independent
(:meth:`ExperimentContext.run_many`) train ``jobs`` at a time in worker processes
(``--jobs N``); the others one after another. Every model is a recipe trained by
:meth:`ExperimentContext.run`, i.e. :func:`medbalance.engine.run.train` (the one writer of run
folders; finished: ``metrics.json``), so each run folder predicts, evaluates, exports and
reports like any other.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import medbalance
from medbalance._atomic import atomic_write_text
from medbalance.config import RunConfig, _suggest, parse_config, parse_override
from medbalance.engine.rundir import create_run_dir
from medbalance.errors import ConfigError, DataError
from medbalance.experiments import EXPERIMENTS, SCALE_NAMES
from medbalance.report.html import ReportPage, html_table

__all__ = [
    "EXPERIMENTS",
    "SCALE_NAMES",
    "ResultTable",
    "ExperimentContext",
    "ExperimentResult",
    "run_experiment",
    "parse_options",
    "mean_std",
]

log = logging.getLogger("medbalance.experiment")

_DEFAULT_SEEDS = {"smoke": (0,), "small": (0, 1, 2), "paper": (0, 1, 2)}


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value).

    Example:
        >>> mean_std([0.8, 0.9, 1.0])
        (0.9, 0.1)
    """
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return round(mean, 12), round(std, 12)


@dataclass
class ResultTable:
    """A table of scores: rows (methods) x metrics, one value per seed in every cell.

    Example:
        >>> t = ResultTable("Dice", ("dice",))
        >>> t.add("U-Net", {"dice": 0.80}, seed=0); t.add("U-Net", {"dice": 0.90}, seed=1)
        >>> print(t.to_markdown(digits=2).splitlines()[-1])
        | U-Net | 0.85 ± 0.07 |
    """

    title: str
    metrics: tuple[str, ...]
    row_label: str = "method"
    note: str = ""
    digits: int = 4  # decimals shown (1 for percentages)
    rows: dict[str, dict[str, dict[int, float]]] = field(default_factory=dict)
    columns: tuple[str, ...] = ()  # text columns after the metrics (a paired difference, a verdict)
    texts: dict[str, dict[str, str]] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # results.json only (per-case scores, intervals)

    def add(self, row: str, scores: Mapping[str, float], *, seed: int) -> None:
        """Record ``scores[m]`` for every metric ``m`` of the table (missing ones are an error)."""
        missing = [m for m in self.metrics if m not in scores]
        if missing:
            raise KeyError(f"table '{self.title}': row '{row}' lacks {', '.join(missing)}")
        cells = self.rows.setdefault(row, {m: {} for m in self.metrics})
        for m in self.metrics:
            cells[m][int(seed)] = float(scores[m])

    def put(self, row: str, column: str, text: str) -> None:
        """Set the text of ``column`` (one of :attr:`columns`) in ``row``."""
        if column not in self.columns:
            raise KeyError(f"table '{self.title}' has no text column '{column}'")
        self.texts.setdefault(row, {})[column] = text

    @property
    def header(self) -> tuple[str, ...]:
        return (self.row_label, *self.metrics, *self.columns)

    def cell(self, row: str, metric: str) -> tuple[float, float, int]:
        values = list(self.rows[row][metric].values())
        return (*mean_std(values), len(values))

    def _text(self, row: str, metric: str, digits: int) -> str:
        mean, std, n = self.cell(row, metric)
        if n == 0 or math.isnan(mean):
            return "-"
        return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if n > 1 else "")

    def text_rows(self, digits: int | None = None) -> list[list[str]]:
        """Every row as its label and one ``mean ± std`` text per metric (``-`` when empty)."""
        digits = self.digits if digits is None else digits
        return [
            [
                r,
                *(self._text(r, m, digits) for m in self.metrics),
                *(self.texts.get(r, {}).get(c, "") for c in self.columns),
            ]
            for r in self.rows
        ]

    def to_markdown(self, digits: int | None = None) -> str:
        head = "| " + " | ".join(self.header) + " |"
        rule = "|---|" + "---:|" * len(self.metrics) + "---|" * len(self.columns)
        body = ["| " + " | ".join(row) + " |" for row in self.text_rows(digits)]
        return "\n".join([head, rule, *body])

    def to_html(self, digits: int | None = None) -> str:
        return html_table(self.header, self.text_rows(digits))

    def to_dict(self) -> dict:
        out = {}
        for r in self.rows:
            out[r] = {}
            for m in self.metrics:
                mean, std, n = self.cell(r, m)
                out[r][m] = {"mean": mean, "std": std, "n": n, "per_seed": self.rows[r][m]}
        content = {
            "title": self.title,
            "row_label": self.row_label,
            "metrics": list(self.metrics),
            "note": self.note,
            "rows": out,
        }
        if self.columns:
            content.update(columns=list(self.columns), texts=self.texts)
        return {**content, **self.extra}


def _cast(name: str, default: Any, value: Any) -> Any:
    """Cast a ``--set`` value to the type of the option's default; one-line error otherwise."""
    if isinstance(default, (list, tuple)):
        items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            items = [items]
        kind = type(default[0]) if default else None
        return [_cast(name, kind(), v) if kind is not None else v for v in items]
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"option '{name}' expects true or false, got {value!r}")
    if isinstance(default, (int, float)) and not isinstance(value, bool):
        try:
            cast = type(default)(value)
        except (TypeError, ValueError):
            cast = None
        if cast is not None and (not isinstance(default, int) or float(value) == cast):
            return cast
        raise ConfigError(f"option '{name}' expects a number like {default!r}, got {value!r}")
    if isinstance(default, str):
        return str(value)
    return value


def parse_options(defaults: Mapping[str, Any], given: Sequence[str] | Mapping[str, Any] | None) -> dict:
    """``defaults`` updated with ``key=value`` strings (values read as YAML) or a mapping.

    Raises:
        ConfigError: an unknown option (with a suggestion) or a value of the wrong type.
    """
    options = dict(defaults)
    items = given.items() if isinstance(given, Mapping) else [parse_override(text) for text in given or []]
    for key, value in items:
        if key not in defaults:
            raise ConfigError(f"unknown option '{key}'{_suggest(key, list(defaults))}")
        options[key] = _cast(key, defaults[key], value)
    return options


def machine_description() -> str:
    """One line naming the machine a result was measured on."""
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    cpu = platform.processor() or platform.machine()
    return (
        f"{cpu}, {os.cpu_count()} CPU cores, {device}; Python {platform.python_version()}, "
        f"torch {torch.__version__}, medbalance {medbalance.__version__}"
    )


@dataclass
class ExperimentContext:
    """What an experiment's ``run`` gets: its folder, scale, seeds, data, options and helpers."""

    name: str
    scale: str
    run_dir: Path
    seeds: tuple[int, ...]
    data: str
    options: dict
    progress: bool = True
    device: str = "auto"
    command: str = ""
    jobs: int = 1
    log: logging.Logger = field(default=log, repr=False)
    tables: list[ResultTable] = field(default_factory=list, repr=False)

    # ------------------------------------------------------------------ configs and data
    def base_config(self, **raw: Any) -> RunConfig:
        """A validated :class:`RunConfig` from top-level keys, with this context's device / progress."""
        raw.setdefault("progress", self.progress)
        raw.setdefault("device", self.device)
        raw.setdefault("name", self.name)
        return parse_config(raw, source=f"experiment {self.name}")

    def data_section(self, phantom: Mapping[str, Any]) -> dict:
        """The ``data:`` section for ``--data``: the phantom section given, a shared set, or a path."""
        from medbalance.data.catalog import SHARED_LOADERS

        if self.data == "phantom":
            return dict(phantom)
        if self.data in SHARED_LOADERS:
            return {"kind": "shared", "name": self.data}
        path = Path(self.data)
        if path.suffix == ".npz" and path.is_file():
            return {"kind": "medmnist", "path": str(path)}
        if not path.is_dir():
            raise DataError(
                f"--data '{self.data}' is neither 'phantom', a shared dataset ({', '.join(sorted(SHARED_LOADERS))}) "
                "nor an existing folder or .npz file"
            )
        if (path / "images.npy").is_file() and (path / "labels.npy").is_file():
            return {"kind": "conic", "path": str(path)}
        if any(path.glob("patient*")) or any(path.glob("*/patient*")):
            return {"kind": "camus", "path": str(path)}
        if any(path.glob("*/*.xml")):  # MoNuSAC: <root>/<patient>/<image>.xml
            return {"kind": "monusac", "path": str(path)}
        from medbalance.data.readers.classification import detect_layout

        return {"kind": detect_layout(path) or "folder", "path": str(path)}

    # ------------------------------------------------------------------ training
    def run(self, key: str, cfg: RunConfig) -> dict:
        """Train the recipe ``cfg`` into ``runs/<key>/`` with :func:`~medbalance.engine.run.train`
        (or read the metrics of that run when it finished before; continue it when interrupted).

        Returns:
            The run's ``metrics.json`` content (``val``, ``test`` scores, ``best_epoch``...).
        """
        return self.run_many([(key, cfg)])[0]

    def run_many(self, items: Sequence[tuple[str, RunConfig]]) -> list[dict]:
        """:meth:`run` for runs that do not depend on each other, ``jobs`` at a time.

        With ``jobs`` > 1 the unfinished runs train in ``spawn``-ed worker processes (fresh
        interpreters: no forked torch thread pools), each with ``torch.get_num_threads() // jobs``
        threads (at least 1) and no progress bar. Every run is seeded and writes only its own
        folder, so the folders are those of :meth:`run` one after another (bitwise on CPU at the
        same thread count). A failed run cancels the runs not yet started, lets the running ones
        finish and raises its error; ``--resume`` trains the rest.

        Args:
            items: ``(key, cfg)`` pairs as :meth:`run` takes them.

        Returns:
            The runs' ``metrics.json`` contents, in the order of ``items``.
        """
        from medbalance.engine.run import ensure_trained

        folders = [self.run_dir / "runs" / key for key, _ in items]
        todo = [(f, cfg) for f, (_, cfg) in zip(folders, items) if not (f / "metrics.json").is_file()]
        if self.jobs > 1 and len(todo) > 1:
            import multiprocessing
            from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

            workers = min(self.jobs, len(todo))
            threads = max(1, torch.get_num_threads() // self.jobs)
            self.log.info("training %d runs, %d at a time (%d thread(s) each)", len(todo), workers, threads)
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=context) as pool:
                level = logging.getLogger("medbalance").getEffectiveLevel()
                futures = [pool.submit(_train_worker, str(f), cfg, threads, level) for f, cfg in todo]
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
                failed = [f for f in done if f.exception() is not None]
                if failed:
                    for future in futures:
                        future.cancel()
                    raise failed[0].exception()
        else:  # in this process, with its progress bar
            for folder, cfg in todo:
                ensure_trained(folder, cfg, progress=self.progress)
        return [json.loads((f / "metrics.json").read_text()) for f in folders]

    # ------------------------------------------------------------------ outputs
    def artefacts(self, *parts: str) -> Path:
        """A folder under ``artefacts/`` for images and other outputs (created)."""
        folder = self.run_dir.joinpath("artefacts", *parts)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def table(
        self,
        title: str,
        metrics: Sequence[str],
        *,
        row_label: str = "method",
        note: str = "",
        digits: int = 4,
        columns: Sequence[str] = (),
    ) -> ResultTable:
        """A new table that :meth:`write_report` will include (in creation order)."""
        table = ResultTable(
            title, tuple(metrics), row_label=row_label, note=note, digits=digits, columns=tuple(columns)
        )
        self.tables.append(table)
        return table

    def write_report(self, intro_md: str = "", figures: Sequence[str | Path] = ()) -> dict:
        """Write ``results.md``, ``results.html`` and ``results.json``; returns the JSON content."""
        figures = [Path(f) for f in figures]
        rel = [os.path.relpath(f, self.run_dir) for f in figures]
        facts = {
            "experiment": self.name,
            "scale": self.scale,
            "data": self.data,
            "seeds": list(self.seeds),
            "options": self.options,
            "command": self.command,
            "machine": machine_description(),
            "date": time.strftime("%Y-%m-%d %H:%M"),
        }
        md = [f"# {self.name} ({self.scale} scale, data: {self.data})", ""]
        md += [f"- {k}: `{v}`" if k == "command" else f"- {k}: {v}" for k, v in facts.items() if k != "experiment"]
        if intro_md:
            md += ["", intro_md.strip()]
        for t in self.tables:
            md += ["", f"## {t.title}", ""]
            if t.note:
                md += [t.note, ""]
            md.append(t.to_markdown())
        for f in rel:
            md += ["", f"![{Path(f).stem}]({f})"]
        atomic_write_text(self.run_dir / "results.md", "\n".join(md) + "\n")

        page = ReportPage(f"{self.name} ({self.scale} scale, data: {self.data})")
        page.items([f"{k}: {v}" for k, v in facts.items() if k != "experiment"])
        if intro_md:
            page.code(intro_md.strip())
        for t in self.tables:
            page.heading(t.title)
            if t.note:
                page.para(t.note)
            page.table(t.header, t.text_rows())
        for f in figures:
            page.figure(f, f.stem)
        atomic_write_text(self.run_dir / "results.html", page.to_html(self.run_dir))

        content = {**facts, "figures": rel, "tables": [t.to_dict() for t in self.tables]}
        atomic_write_text(self.run_dir / "results.json", json.dumps(content, indent=1))
        return content


def _train_worker(folder: str, cfg: RunConfig, threads: int, level: int) -> None:
    """One run of :meth:`ExperimentContext.run_many` in a worker process."""
    from medbalance.engine.run import ensure_trained

    torch.set_num_threads(threads)
    logging.basicConfig(level=level, format="%(message)s")
    ensure_trained(Path(folder), cfg, progress=False)


@dataclass
class ExperimentResult:
    run_dir: Path
    results: dict


def _module(name: str):
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment '{name}'{_suggest(name, list(EXPERIMENTS))}")
    return importlib.import_module(EXPERIMENTS[name])


def run_experiment(
    name: str,
    *,
    scale: str = "small",
    data: str = "phantom",
    seeds: Sequence[int] | None = None,
    options: Sequence[str] | Mapping[str, Any] | None = None,
    out: str | Path = "runs",
    resume: str | Path | None = None,
    progress: bool = True,
    device: str = "auto",
    command: str = "",
    jobs: int = 1,
) -> ExperimentResult:
    """Run experiment ``name`` in a new folder under ``out`` (or continue ``resume``).

    With ``resume`` the folder's ``experiment.json`` supplies scale, data, seeds and options.
    ``jobs`` runs that many independent runs at once (:meth:`ExperimentContext.run_many`); it
    changes how long the experiment takes, not what it computes, and is not stored.
    """
    if int(jobs) != jobs or jobs < 1:
        raise ConfigError(f"jobs must be a whole number >= 1, got {jobs!r}")
    if resume is not None:
        # absolute: runs inside keep paths to each other (dual-path's discriminator) that must
        # still resolve when the experiment is resumed from another directory
        run_dir = Path(os.path.abspath(resume))
        try:
            asked = json.loads((run_dir / "experiment.json").read_text())
        except (OSError, ValueError):
            raise ConfigError(f"'{run_dir}' is not an experiment folder (no readable experiment.json)") from None
        if asked["experiment"] != name:
            raise ConfigError(f"'{run_dir}' holds experiment '{asked['experiment']}', not '{name}'")
        scale, data, seeds, options = asked["scale"], asked["data"], asked["seeds"], asked["options"]
    module = _module(name)
    if scale not in SCALE_NAMES:
        raise ConfigError(f"unknown scale '{scale}' (expected one of: {', '.join(SCALE_NAMES)})")
    options = parse_options(module.OPTIONS, options)
    if "sets" in module.OPTIONS:  # its data are the recipes named by `--set sets=...`
        if resume is None and data != "phantom":
            raise ConfigError(f"experiment '{name}' reads its data from its recipes (--set sets=...), not --data")
        data = ", ".join(map(str, options["sets"]))
    preset_seeds = module.SCALES[scale].get("seeds", _DEFAULT_SEEDS[scale])
    seeds = tuple(int(s) for s in (seeds if seeds is not None else preset_seeds))
    if not seeds:
        raise ConfigError("--seeds needs at least one seed")
    if resume is None:
        run_dir = create_run_dir(os.path.abspath(out), f"{name}-{scale}")
        for empty in ("checkpoints", "predictions"):  # a run folder's, not an experiment's
            (run_dir / empty).rmdir()
        asked = {"experiment": name, "scale": scale, "data": data, "seeds": list(seeds), "options": options}
        atomic_write_text(run_dir / "experiment.json", json.dumps(asked, indent=1))
    ctx = ExperimentContext(
        name=name,
        scale=scale,
        run_dir=run_dir,
        seeds=seeds,
        data=data,
        options=options,
        progress=progress,
        device=device,
        command=command,
        jobs=int(jobs),
    )
    t0 = time.perf_counter()
    results = module.run(ctx)
    if (run_dir / "results.json").is_file():  # report.html: the tables, every run's curves, the figures
        from medbalance.report import write_experiment_report

        write_experiment_report(run_dir)
    log.info("%s (%s) finished in %.0f s: %s", name, scale, time.perf_counter() - t0, run_dir / "results.md")
    return ExperimentResult(run_dir, results)
