"""The figures of run, comparison and dataset reports, each written as one PNG.

Every function takes the data to draw and a ``path``, writes a PNG there (folders created)
and returns the path. Matplotlib runs on the non-interactive ``Agg`` backend, so nothing
needs a display. Class colours come from :func:`medbalance.report.overlays.palette`, so a
class has the same colour in the bars, the heat maps and the label overlays.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from inspect import signature
from pathlib import Path

import numpy as np

from medbalance.report.overlays import colorize, contours, overlay_contours, palette, save_png, to_rgb

__all__ = [
    "label_overlay",
    "plot_case_scores",
    "plot_class_counts",
    "plot_class_curves",
    "plot_confusion",
    "plot_curves",
    "plot_lr",
    "plot_examples",
    "plot_histogram",
    "plot_per_class",
    "plot_precision_recall",
    "plot_reliability",
    "plot_weight_functions",
    "plot_weights",
    "precision_recall_points",
    "save_overlay",
]

_DPI = 110  # a 10-inch figure fills the report page (1150 px)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path, *, rect: tuple[float, float, float, float] = (0, 0, 1, 1)) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout(rect=rect)
    fig.savefig(path, format="png", dpi=_DPI)
    _pyplot().close(fig)
    return path


def _number(value: object) -> float:
    """A history cell as a float (empty cells, e.g. no validation that epoch, become NaN)."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def _class_colours(num_classes: int) -> np.ndarray:
    """Palette colours for bars, background grey (a black bar hides its edges)."""
    colours = palette(num_classes).astype(float) / 255
    colours[0] = (0.6, 0.6, 0.6)
    return colours


def plot_curves(histories: Mapping[str, Sequence[Mapping[str, object]]], monitor: str, path: str | Path) -> Path:
    """Loss and validation metric per epoch of one or several runs.

    Args:
        histories: run name -> rows of its ``history.csv`` (``epoch``, ``train_loss``,
            optionally ``val_loss``, ``val_<monitor>`` and ``stage``).
        monitor: the validation score to draw, e.g. ``"mean_dice_fg"``.
        path: the PNG to write.

    With a single run, stage changes (multi-stage methods) are marked by dotted lines.
    """
    plt = _pyplot()
    fig, (ax_loss, ax_score) = plt.subplots(1, 2, figsize=(10, 3.4))
    single = len(histories) == 1
    for k, (name, rows) in enumerate(histories.items()):
        epochs = [_number(r.get("epoch")) for r in rows]
        colour = f"C{k % 10}"
        ax_loss.plot(epochs, [_number(r.get("train_loss")) for r in rows], "-o", ms=3, color=colour)
        if any(r.get("val_loss") not in (None, "") for r in rows):
            ax_loss.plot(epochs, [_number(r.get("val_loss")) for r in rows], "--", color=colour)
        ax_score.plot(epochs, [_number(r.get(f"val_{monitor}")) for r in rows], "-o", ms=3, color=colour, label=name)
        if single:
            stages = [r.get("stage") for r in rows]
            for i in range(1, len(rows)):
                if stages[i] != stages[i - 1]:
                    for ax in (ax_loss, ax_score):
                        ax.axvline(epochs[i] - 0.5, color="k", ls=":", lw=1)
                    ax_score.annotate(str(stages[i]), (epochs[i] - 0.5, 1), xycoords=("data", "axes fraction"))
    ax_loss.set_title("loss")
    ax_score.set_title(f"validation {monitor}")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_score):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    from matplotlib.lines import Line2D

    # line styles in the loss panel (where it covers least), runs by colour beside the score panel
    styles = [Line2D([], [], color="k", ls="-", marker="o", ms=3), Line2D([], [], color="k", ls="--")]
    ax_loss.legend(styles, ["train", "validation"], fontsize=8)
    if not single:
        _legend_outside(ax_score)
    return _save(fig, path)


def _grouped_bars(ax, groups: Sequence[str], series: Mapping[str, Sequence[float]]) -> None:
    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for k, (name, values) in enumerate(series.items()):
        bars = ax.bar(x + (k - (len(series) - 1) / 2) * width, values, width, label=name, color=f"C{k % 10}")
        if len(groups) * len(series) <= 24:
            ax.bar_label(bars, fmt="%.2f", fontsize=7)
    rotate = max(map(len, groups), default=0) > 8
    ax.set_xticks(x, groups, rotation=30 if rotate else 0, ha="right" if rotate else "center")
    ax.grid(axis="y", alpha=0.3)


def plot_per_class(
    scores: Mapping[str, Sequence[float]], class_names: Sequence[str], path: str | Path, *, title: str = ""
) -> Path:
    """Grouped bars of per-class scores (one group per class, one bar per score).

    Args:
        scores: score name -> one value per class, e.g. ``{"dice": [...], "recall": [...]}``.
        class_names: the ``C`` class names.
        path: the PNG to write.
        title: figure title.
    """
    for name, values in scores.items():
        if len(values) != len(class_names):
            raise ValueError(f"scores['{name}'] has {len(values)} values but there are {len(class_names)} classes")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10.0, 3.4))  # the page width (1100 px)
    _grouped_bars(ax, list(class_names), scores)
    ax.set_ylim(0, 1.12)  # room for the value labels above a bar at 1
    ax.set_title(title)
    _legend_outside(ax)
    return _save(fig, path)


def _legend_outside(ax) -> None:
    """The legend right of the axes, where it covers no bar, label or line."""
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)


def plot_confusion(cm: np.ndarray, class_names: Sequence[str], path: str | Path, *, unit: str = "pixels") -> Path:
    """Confusion-matrix heat map, rows normalised to the share of each true class.

    Cells show the row share and the raw count, so a rare class is readable next to the
    background. Rows are the target, columns the prediction (as :mod:`medbalance.metrics`).

    Args:
        cm: ``(C, C)`` counts.
        class_names: the ``C`` class names.
        path: the PNG to write.
        unit: what is counted, for the title ("pixels" or "samples").
    """
    cm = np.asarray(cm, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(class_names):
        raise ValueError(f"cm must be ({len(class_names)}, {len(class_names)}), got shape {cm.shape}")
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    plt = _pyplot()
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(2.2 + 0.75 * n, 1.8 + 0.7 * n))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    if n <= 12:
        for i in range(n):
            for j in range(n):
                colour = "white" if share[i, j] > 0.6 else "black"
                ax.text(j, i, f"{share[i, j]:.2f}\n{int(cm[i, j])}", ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(n), class_names, rotation=30, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix ({unit})")
    return _save(fig, path)


def label_overlay(
    image: np.ndarray, pred: np.ndarray, num_classes: int, target: np.ndarray | None = None, *, alpha: float = 0.45
) -> np.ndarray:
    """An image with its predicted labels drawn on it, uint8 ``(H, W, 3)``.

    Binary (``num_classes == 2``): prediction contour red, ground-truth contour green,
    both yellow (:func:`~medbalance.report.overlays.overlay_contours`, seed 000 figure 4).
    Multi-class: predicted classes filled in their palette colour (blended with
    ``alpha``) and the ground-truth boundaries drawn in white.

    Args:
        image: ``(H, W)``, ``(H, W, 1|3)`` or ``(1|3, H, W)``, float in [0, 1] or uint8.
        pred: integer labels ``(H, W)``.
        num_classes: classes including background.
        target: integer labels ``(H, W)`` or None.
        alpha: opacity of the class colours (multi-class).
    """
    if num_classes == 2:
        return overlay_contours(image, pred, target)
    pred = np.asarray(pred)
    rgb = to_rgb(image, pred.shape).astype(np.float32)
    colours = colorize(pred, num_classes).astype(np.float32)
    fg = (pred > 0)[..., None]
    out = np.where(fg, (1 - alpha) * rgb + alpha * colours, rgb).round().astype(np.uint8)
    if target is not None:
        out[contours(np.asarray(target))] = 255
    return out


def plot_examples(
    examples: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
    num_classes: int,
    path: str | Path,
    class_names: Sequence[str] | None = None,
) -> Path:
    """A grid of qualitative segmentation examples.

    Per example: the image; the overlay of :func:`label_overlay` (binary: prediction red,
    ground truth green); for multi-class also the colour-coded ground truth and prediction.
    Binary examples go two to a row, multi-class examples one.

    Args:
        examples: ``(name, image (C, H, W) in [0, 1], target (H, W), pred (H, W))`` tuples.
        num_classes: classes including background.
        path: the PNG to write.
        class_names: legend of the class colours (multi-class).
    """
    if not examples:
        raise ValueError("examples is empty; expected at least one (name, image, target, pred)")
    multi = num_classes > 2
    if multi:
        titles, per_row = ["image", "prediction over image", "ground truth", "prediction"], 1
    else:
        titles, per_row = ["image", "prediction (red) / truth (green)"], min(2, len(examples))
    rows, columns = -(-len(examples) // per_row), len(titles) * per_row
    plt = _pyplot()
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.4 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, (name, image, target, pred) in enumerate(examples):
        row, first = divmod(k, per_row)
        panels = [to_rgb(image, pred.shape), label_overlay(image, pred, num_classes, target)]
        if multi:
            panels += [colorize(np.asarray(target), num_classes), colorize(np.asarray(pred), num_classes)]
        for j, panel in enumerate(panels):
            ax = axes[row, first * len(titles) + j]
            ax.axis("on")
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(titles[j], fontsize=8)
        axes[row, first * len(titles)].set_ylabel(str(name)[-24:], fontsize=8)
    if multi and class_names is not None:
        from matplotlib.patches import Patch

        colours = palette(num_classes) / 255
        handles = [Patch(color=colours[i], label=n) for i, n in enumerate(class_names)]
        fig.legend(handles=handles, loc="lower center", ncols=min(len(handles), 7), fontsize=8)
        return _save(fig, path, rect=(0, 0.3 / fig.get_figheight(), 1, 1))  # room for the legend
    return _save(fig, path)


def plot_class_counts(
    counts: Sequence[int], class_names: Sequence[str], path: str | Path, *, unit: str = "samples"
) -> Path:
    """Class counts sorted from head to tail on a log axis (the long-tail plot).

    Args:
        counts: one count per class.
        class_names: one name per class.
        path: the PNG to write.
        unit: what is counted ("samples" or "pixels"), for the axis label.
    """
    counts = np.asarray(counts, dtype=np.int64)
    order = np.argsort(-counts, kind="stable")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10.0, 3.4))
    colours = _class_colours(len(counts))[order]
    bars = ax.bar(range(len(counts)), np.maximum(counts[order], 0), color=colours)
    if len(counts) <= 30:
        ax.bar_label(bars, labels=[f"{c:,}" for c in counts[order]], fontsize=7)
    if counts.max() > 0:
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        ax.set_yscale("log")
        # from the power of ten below the smallest count: bar heights compare as the counts do
        low = 10.0 ** math.floor(math.log10(counts[counts > 0].min()))
        ax.set_ylim(low, counts.max() * 3)
        ax.yaxis.set_major_locator(LogLocator(base=10))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(range(len(counts)), [class_names[i] for i in order], rotation=30, ha="right")
    ax.set_ylabel(f"{unit} (log scale)")
    present = counts[counts > 0]
    ratio = present.max() / present.min() if len(present) else float("nan")
    ax.set_title(f"class counts, head to tail (imbalance ratio {ratio:,.1f})", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_histogram(
    values: Sequence[float], path: str | Path, *, title: str, xlabel: str, bins: int = 30, log_x: bool = False
) -> Path:
    """A histogram of per-image or per-object values (``log_x``: logarithmic bins)."""
    values = np.asarray(values, dtype=np.float64)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10.0, 3.2))
    if values.size:
        if log_x and values.min() > 0:
            edges = np.geomspace(values.min(), max(values.max(), values.min() * 1.01), bins + 1)
            ax.set_xscale("log")
        else:
            edges = bins
        ax.hist(values, bins=edges, color="C0", edgecolor="white")
    else:
        ax.text(0.5, 0.5, "nothing to count", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_weights(weights: Mapping[str, Sequence[float]], class_names: Sequence[str], path: str | Path) -> Path:
    """The class weights of every scheme, one panel per scheme (bars in the class colours)."""
    plt = _pyplot()
    n = len(weights)
    columns = min(3, n)
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 2.6 * rows), squeeze=False)
    colours = _class_colours(len(class_names))
    for ax, (scheme, values) in zip(axes.flat, weights.items()):
        ax.bar(range(len(values)), values, color=colours)
        ax.set_title(scheme, fontsize=9)
        labels = class_names if len(class_names) <= 10 else [str(i) for i in range(len(class_names))]
        ax.set_xticks(range(len(values)), labels, rotation=45, ha="right", fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return _save(fig, path)


def plot_reliability(probs, target, path: str | Path, *, num_bins: int = 15, title: str = "") -> Path:
    """Reliability diagram of a classifier: accuracy per confidence bin against the diagonal.

    Bars are the accuracy of each of ``num_bins`` equal-width confidence bins
    (:func:`medbalance.metrics.calibration_bins`), the red part the gap to the bin's mean
    confidence; the dashed diagonal is perfect calibration. The title carries the ECE
    (:func:`medbalance.metrics.expected_calibration_error`), the lower panel the share of the
    samples in each bin.

    Args:
        probs: ``(N, C)`` class probabilities (tensor).
        target: ``(N,)`` integer labels (tensor).
        path: the PNG to write.
        num_bins: equal-width bins (**Default** 15, as MiSLAS).
        title: text before the ECE in the title.
    """
    from medbalance.metrics.calibration import calibration_bins, expected_calibration_error

    bins = {k: v.numpy() for k, v in calibration_bins(probs, target, num_bins=num_bins).items()}
    ece = expected_calibration_error(probs, target, num_bins=num_bins)
    plt = _pyplot()
    fig, (ax, ax_n) = plt.subplots(2, 1, figsize=(4.2, 5.0), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    edges, width = bins["edges"], 1.0 / num_bins
    centres, filled = edges[:-1] + width / 2, bins["count"] > 0
    ax.bar(centres[filled], bins["accuracy"][filled], width=width, color="C0", edgecolor="white", label="accuracy")
    gap = bins["confidence"] - bins["accuracy"]
    ax.bar(
        centres[filled],
        gap[filled],
        bottom=bins["accuracy"][filled],
        width=width,
        color="C3",
        alpha=0.35,
        edgecolor="C3",
        label="gap to confidence",
    )
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title + ': ' if title else ''}ECE {ece:.4f} ({num_bins} bins)", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    total = max(bins["count"].sum(), 1.0)
    ax_n.bar(centres, bins["count"] / total, width=width, color="C7", edgecolor="white")
    ax_n.set_xlabel("confidence (largest probability)")
    ax_n.set_ylabel("share")
    return _save(fig, path)


def plot_weight_functions(
    path: str | Path, *, background_fraction: float = 0.83975, num_classes: int = 7, points: int = 400
) -> Path:
    """Seed 002's figure 4.3: the raw weight of a class against its pixel fraction, functions 1-6.

    Functions 1-4 (:func:`medbalance.losses.weights.weight_function`) over ``x`` in ``(0, 1]``;
    ``inverse`` is ``1 / (C x)`` and is cut at the top of the plot. Functions 5 and 6 weigh a
    foreground class by its share of the foreground, so their curves run over ``x`` in
    ``(0, 1 - p_0]``; their background weight (function 5: ``exp(-e p_0)``, function 6: 0) is
    a marker at ``x = p_0``. The defaults are the CoNIC values of the seed (background 83.975%,
    7 classes). The weights are before the normalisation to sum 1, which depends on all the
    classes of a data set.

    Args:
        path: the PNG to write.
        background_fraction: ``p_0`` of functions 5 and 6.
        num_classes: ``C`` of the inverse function.
        points: samples per curve.
    """
    from medbalance.losses.weights import CLASS_WEIGHT_SCHEMES, weight_function

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    x = np.linspace(1.0 / points, 1.0, points)
    x_fg = np.linspace(1.0 / points, 1.0 - background_fraction, points)
    top = math.e + 0.3
    for number, scheme in enumerate(CLASS_WEIGHT_SCHEMES, start=1):
        label = f"{number}: {scheme}"
        if number <= 4:
            ax.plot(x, weight_function(scheme, x, num_classes=num_classes).numpy(), label=label, color=f"C{number - 1}")
            continue
        fg = weight_function(scheme, x_fg, background_fraction=background_fraction).numpy()
        style = "-" if number == 5 else ":"
        (line,) = ax.plot(x_fg, fg, style, color=f"C{number - 1}", label=label + " (foreground)")
        bg = weight_function("exp_decreasing", [background_fraction]).item() if number == 5 else 0.0
        ax.plot([background_fraction], [bg], "o", color=line.get_color(), label=f"{number}: background")
    ax.set_ylim(0, top)
    ax.set_xlim(0, 1)
    ax.set_xlabel("class pixel fraction")
    ax.set_ylabel("weight (before normalisation)")
    title = f"Seed 002 fig. 4.3: class-weight functions (C = {num_classes}, p_0 = {background_fraction:g})"
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def save_overlay(path: str | Path, image: np.ndarray, pred: np.ndarray, num_classes: int) -> Path:
    """Write :func:`label_overlay` of a prediction (no ground truth) as a PNG."""
    return save_png(path, label_overlay(image, pred, num_classes))


def plot_class_curves(
    history: Sequence[Mapping[str, object]],
    class_names: Sequence[str],
    path: str | Path,
    *,
    scores: Sequence[str] = ("dice", "recall"),
    skip_background: bool = False,
) -> Path:
    """Per-class validation scores over epochs, one panel per score, one line per class in its colour.

    Args:
        history: rows of ``history.csv`` with ``epoch`` and ``val_<score>/<class>`` columns
            (:func:`medbalance.engine.trainlog.per_class_columns`).
        class_names: the ``C`` class names.
        path: the PNG to write.
        scores: the per-class scores to draw, each in its own panel (those without columns are left out).
        skip_background: leave class 0 out (segmentation: its score sits near 1 and says little).

    Raises:
        ValueError: the history has no ``val_<score>/<class>`` column of any of ``scores``.
    """
    shown = [k for k in scores if any(f"val_{k}/{n}" in row for row in history for n in class_names)]
    if not shown:
        raise ValueError(f"history has no per-class columns val_<score>/<class> for scores {list(scores)}")
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(shown), figsize=(10, 3.4), squeeze=False)
    colours = _class_colours(len(class_names))
    epochs = [_number(r.get("epoch")) for r in history]
    from matplotlib.ticker import MaxNLocator

    for ax, key in zip(axes[0], shown):
        for c, name in enumerate(class_names):
            if c == 0 and skip_background:
                continue
            values = [_number(r.get(f"val_{key}/{name}")) for r in history]
            ax.plot(epochs, values, "-o", ms=3, color=colours[c], label=name)
        ax.set_title(f"validation {key} per class")
        ax.set_xlabel("epoch")
        ax.set_ylim(-0.02, 1.02)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    _legend_outside(axes[0, -1])
    return _save(fig, path)


def plot_lr(history: Sequence[Mapping[str, object]], path: str | Path) -> Path:
    """The learning rate at the end of each epoch (``history.csv`` column ``lr``)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 2.6))
    ax.plot([_number(r.get("epoch")) for r in history], [_number(r.get("lr")) for r in history], "-o", ms=3)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def precision_recall_points(probs, target) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall of ``probs > t`` for every distinct probability ``t``, as the threshold falls.

    Args:
        probs: ``(N,)`` foreground probabilities.
        target: ``(N,)`` 0/1 truth.

    Returns:
        ``precision``, ``recall`` and the ``thresholds`` they belong to: the point ``j`` counts
        every sample with a probability ``>= thresholds[j]`` as positive.

    Example:
        >>> p, r, t = precision_recall_points(np.array([0.9, 0.8, 0.3]), np.array([1, 0, 1]))
        >>> p.round(3).tolist(), r.tolist(), t.tolist()
        ([1.0, 0.5, 0.667], [0.5, 0.5, 1.0], [0.9, 0.8, 0.3])
    """
    probs, target = np.asarray(probs, np.float64).ravel(), np.asarray(target).ravel().astype(bool)
    if probs.shape != target.shape:
        raise ValueError(f"probs and target must have the same size, got {probs.size} and {target.size}")
    order = np.argsort(-probs, kind="stable")
    probs, target = probs[order], target[order]
    last = np.r_[np.flatnonzero(np.diff(probs)), probs.size - 1]  # the end of each run of equal values
    tp = np.cumsum(target)[last]
    fp = (last + 1) - tp
    positives = max(int(target.sum()), 1)
    return tp / np.maximum(tp + fp, 1), tp / positives, probs[last]


def plot_precision_recall(probs, target, threshold: float, path: str | Path, *, title: str = "") -> Path:
    """Precision-recall curve of a binary segmentation's foreground pixels, the run's ``threshold`` marked.

    The average precision (the sum of precision times recall steps) is in the title; the point
    of the best F1 is marked too, so a better threshold can be read off.

    Args:
        probs: ``(N,)`` foreground probabilities of (a sample of) the pixels.
        target: ``(N,)`` their 0/1 truth.
        threshold: the probability above which the run predicts foreground.
        path: the PNG to write.
        title: text before the average precision in the title.
    """
    precision, recall, thresholds = precision_recall_points(probs, target)
    probs, target = np.asarray(probs).ravel(), np.asarray(target).ravel().astype(bool)
    ap = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    chosen = probs > threshold
    tp = int((chosen & target).sum())
    at_p, at_r = tp / max(int(chosen.sum()), 1), tp / max(int(target.sum()), 1)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best = int(np.argmax(f1))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.6, 4.2))
    ax.plot(recall, precision, color="C0", label="precision-recall")
    ax.plot([at_r], [at_p], "o", color="C3", ms=8, label=f"threshold {threshold:g}: P {at_p:.3f}, R {at_r:.3f}")
    best_label = f"best F1 {f1[best]:.3f} at {thresholds[best]:.3f}"
    ax.plot([recall[best]], [precision[best]], "s", color="C2", ms=7, label=best_label)
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("recall (foreground pixels)")
    ax.set_ylabel("precision")
    ax.set_title(f"{title + ': ' if title else ''}average precision {ap:.3f} ({probs.size:,} pixels)", fontsize=10)
    ax.grid(alpha=0.3)
    _legend_outside(ax)  # a poor model's curve runs along the bottom, a good one's along the top
    return _save(fig, path)


def plot_case_scores(
    scores: Mapping[str, Sequence[tuple[str, float]]], path: str | Path, *, metric: str = "dice", worst: int = 3
) -> Path:
    """Per-case scores of each class as a box plot with every case a dot; the ``worst`` cases named.

    Args:
        scores: class name -> ``(case, score)`` of every scored case (NaN scores left out).
        path: the PNG to write.
        metric: the score's name, for the axis.
        worst: how many of the lowest cases of each class to name.
    """
    plt = _pyplot()
    names = list(scores)
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.7 * max(1, len(names))))
    from matplotlib.transforms import blended_transform_factory as blended

    # matplotlib 3.10 renamed vert=False; the older spelling warns from 3.11 on
    horizontal = {"orientation": "horizontal"} if "orientation" in signature(ax.boxplot).parameters else {"vert": False}
    rng = np.random.default_rng(0)  # the jitter only spreads the dots; fixed so a report redraws the same
    for k, name in enumerate(names):
        cases = [(c, v) for c, v in scores[name] if not math.isnan(v)]
        values = np.asarray([v for _, v in cases])
        if values.size:
            ax.boxplot(values, positions=[k], widths=0.5, showfliers=False, **horizontal)
            y = k + rng.uniform(-0.15, 0.15, values.size)
            ax.plot(values, y, "o", ms=4, alpha=0.6, color="C0")
            lowest = np.argsort(values, kind="stable")[:worst]
            for rank, j in enumerate(lowest, start=1):
                ax.plot(values[j], y[j], "o", ms=6, color="C3")
                where = dict(xytext=(0, 6), textcoords="offset points", fontsize=7, ha="center", color="C3")
                ax.annotate(str(rank), (values[j], y[j]), **where)
            # the names beside the row, where they overprint no dot
            listed = "\n".join(f"{r}: {str(cases[j][0])[-20:]} ({values[j]:.3f})" for r, j in enumerate(lowest, 1))
            beside = blended(ax.transAxes, ax.transData)
            ax.text(1.01, k, listed, transform=beside, fontsize=7, va="center", color="C3")
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(len(names) - 0.4, -0.6)  # the first class on top, as in the tables
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel(f"{metric} per case")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)
