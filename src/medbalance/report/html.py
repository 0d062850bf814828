"""``report.html``: one self-contained page per run (images embedded as base64 PNG)."""

from __future__ import annotations

import base64
import csv
import html
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from medbalance._atomic import atomic_write_text

__all__ = ["write_report", "preview_strip"]

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}pre{background:#f7f7f7;padding:1em;overflow:auto}
figure{display:inline-block;margin:.3em}figcaption{font-size:.8em;color:#555}"""

# Class colours for label maps (background black).
_PALETTE = np.array(
    [
        [0, 0, 0],
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
    ],
    dtype=np.uint8,
)


def _png_b64(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _to_rgb(image: np.ndarray) -> np.ndarray:
    img = np.clip(image, 0, 1)
    img = np.repeat(img[:1], 3, axis=0) if img.shape[0] == 1 else img[:3]
    return (np.moveaxis(img, 0, -1) * 255).astype(np.uint8)


def preview_strip(image: np.ndarray, target: np.ndarray, pred: np.ndarray, *, min_height: int = 160) -> np.ndarray:
    """Image | ground truth | prediction side by side, label maps colour-coded.

    Small images are enlarged by an integer factor (pixels stay sharp) to at least ``min_height``.
    """
    colours = lambda lab: _PALETTE[np.asarray(lab) % len(_PALETTE)]  # noqa: E731
    gap = np.full((image.shape[1], 2, 3), 255, np.uint8)
    strip = np.concatenate([_to_rgb(image), gap, colours(target), gap, colours(pred)], axis=1)
    k = max(1, -(-min_height // image.shape[1]))
    return strip.repeat(k, axis=0).repeat(k, axis=1)


def _table(rows: Sequence[Sequence], header: Sequence[str]) -> str:
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))  # noqa: E731
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{fmt(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _curves(history: list[dict], monitor: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [int(r["epoch"]) for r in history]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2), dpi=90)
    for key, axis, title in (
        ("train_loss", ax[0], "training loss"),
        (f"val_{monitor}", ax[1], f"validation {monitor}"),
    ):
        values = [float(r[key]) if r.get(key) not in (None, "") else np.nan for r in history]
        axis.plot(epochs, values, marker="o", ms=3)
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _score_section(name: str, scores: dict, class_names: Sequence[str]) -> str:
    scalars = [(k, v) for k, v in scores.items() if isinstance(v, (int, float))]
    out = f"<h3>{html.escape(name)}</h3>" + _table(scalars, ["score", "value"])
    per_class = [k for k, v in scores.items() if isinstance(v, list) and len(v) == len(class_names)]
    if per_class:
        rows = [[c, *[scores[k][i] for k in per_class]] for i, c in enumerate(class_names)]
        out += _table(rows, ["class", *per_class])
    return out


def write_report(run_dir: str | Path, metrics: dict, previews: Sequence[tuple[str, np.ndarray]] = ()) -> Path:
    """Write ``run_dir/report.html`` from its config, history and ``metrics``.

    Args:
        run_dir: the run folder.
        metrics: what ``metrics.json`` holds (``val``, optionally ``test`` score dicts).
        previews: ``(name, RGB uint8 image)`` pairs, e.g. from :func:`preview_strip`.
    """
    run_dir = Path(run_dir)
    config_text = (run_dir / "config.yaml").read_text(encoding="utf-8")
    with open(run_dir / "history.csv", newline="") as fh:
        history = list(csv.DictReader(fh))
    class_names = metrics.get("class_names", [])
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>medbalance run {html.escape(run_dir.name)}</title>",
        f"<style>{_CSS}</style></head><body><h1>Run {html.escape(run_dir.name)}</h1>",
        f"<p>Best epoch {metrics.get('best_epoch')} of {metrics.get('epochs')} "
        f"(selected on validation <code>{html.escape(str(metrics.get('monitor')))}</code>).</p>",
    ]
    if history:
        parts.append(
            f"<h2>Training curves</h2><img alt='training curves' src='data:image/png;base64,"
            f"{_curves(history, metrics.get('monitor', 'loss'))}'>"
        )
    parts.append("<h2>Scores</h2>")
    for split in ("test", "val"):
        if split in metrics:
            parts.append(
                _score_section({"test": "Test split", "val": "Validation split"}[split], metrics[split], class_names)
            )
    if previews:
        parts.append("<h2>Examples</h2><p>image | ground truth | prediction</p>")
        parts += [
            f"<figure><img alt='{html.escape(n)}' src='data:image/png;base64,{_png_b64(a)}'>"
            f"<figcaption>{html.escape(n)}</figcaption></figure>"
            for n, a in previews
        ]
    keys = list(history[0]) if history else []
    parts.append("<h2>History</h2>" + _table([[r[k] for k in keys] for r in history], keys))
    parts.append(f"<h2>Resolved config</h2><pre>{html.escape(config_text)}</pre></body></html>")
    path = run_dir / "report.html"
    atomic_write_text(path, "\n".join(parts))
    return path
