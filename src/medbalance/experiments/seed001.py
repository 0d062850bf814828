"""``medbalance experiment longtail``: seed 001's tables (LSKBB and its baselines) as one command.

Every method is trained on long-tailed training sets at imbalance ratios 10 / 50 / 100 and
tested on a balanced test set (SPEC section 6):

- tables 2 / 3 (accuracy), plus macro precision and macro sensitivity in the same layout:
  Focal loss (ResNet-32), LDAM-DRW (ResNet-32 with a cosine classifier), BBN (bilateral
  ResNet-32, CE), MiSLAS (mixup, then classifier re-training, :mod:`medbalance.methods.mislas`)
  and LSKBB (bilateral improved ResNet-32, DFLCE, :mod:`medbalance.methods.bilateral`);
- table 4, backbones of the bilateral network with CE: ResNet-32, ResNet-32 + BiFormer,
  ResNet-32 + SimAM, improved ResNet-32 with the LSK module on the residual branch and on
  the shortcut (seed 001's VGG16 and ResNet-18 rows are ``vgg16`` / ``resnet18`` in
  :data:`medbalance.nets.NETS`, single-branch networks not run here);
- table 5, losses of the bilateral network: CE, Focal, DFLCSCE, DFLCE on both backbones.

Rows shared by several tables (BBN = ResNet-32 + CE, LSKBB = improved + DFLCE) are trained
once. Each row is a recipe (:data:`METHODS`: network, loss, method) trained by
:func:`medbalance.engine.run.train` into the run folder ``runs/<row>/ir<IR>/seed<s>/``, whose
``splits.json`` records the long-tailed subset drawn (SPEC section 10) and which ``predict``,
``evaluate``, ``export`` and ``report`` take like any run. ``--data`` takes the long-tailed phantoms
(default), ``pneumoniamnist`` / ``breastmnist`` of ``../shared/data``, a BreaKHis or Kermany
chest X-ray tree, a MedMNIST ``.npz`` or a one-folder-per-class tree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medbalance._suggest import suggest
from medbalance.errors import ConfigError

__all__ = ["BACKBONES", "LOSS_ROWS", "METHODS", "OPTIONS", "SCALES", "recipe_config", "run"]

# fmt: off
#: Presets per scale. Phantoms: ``num_classes`` classes, head ``n_max``, ``n_val`` / ``n_test``
#: images per class; real data: the head class capped at ``real_n_max`` (``None``: all of it).
#: ``table_irs``: the ratios of tables 4 and 5 (the paper: 10 for table 4, all for table 5).
#: ``protocol``: the ``data.protocol`` of BreaKHis / chest X-ray data; ``paper`` is seed 001's
#: (section 4.2: 224 x 224 inputs, 80 images per class for validation and test; section 4.3: SGD
#: lr 0.05, 200 epochs; ResNet-32: widths [16, 32, 64], 5 blocks per stage). The batch of 128 per
#: branch is BBN's CIFAR setting: the seed gives none.
SCALES: dict[str, dict[str, Any]] = {
    "smoke": dict(
        size=16, num_classes=4, n_max=16, n_val=3, n_test=3, real_n_max=32, widths=[4, 8], blocks=1,
        epochs=1, classifier_epochs=1, batch_size=8, irs=[10], table_irs=[10], seeds=(0,), protocol="default",
    ),
    "small": dict(
        size=32, num_classes=5, n_max=100, n_val=10, n_test=20, real_n_max=300, widths=[8, 16, 32], blocks=1,
        epochs=15, classifier_epochs=3, batch_size=32, irs=[10, 50, 100], table_irs=[10], protocol="default",
    ),
    "paper": dict(
        size=32, num_classes=8, n_max=500, n_val=50, n_test=80, real_n_max=None, widths=[16, 32, 64], blocks=5,
        epochs=200, classifier_epochs=10, batch_size=128, irs=[10, 50, 100], table_irs=[10, 50, 100],
        protocol="seed001",
    ),
}
# fmt: on
#: The data kinds that have a ``protocol`` (:mod:`medbalance.data.readers.classification`).
_PROTOCOL_KINDS = ("breakhis", "chestxray")
_PROTOCOLS = ("default", "seed001")

#: ``--set`` options (0 / empty: the scale's value).
OPTIONS: dict[str, object] = {
    "methods": [],  # rows of tables 2 / 3 (default: all of METHODS)
    "irs": [],  # imbalance ratios of tables 2 / 3
    "table_irs": [],  # imbalance ratios of tables 4 (the first) and 5
    "epochs": 0,  # training epochs (MiSLAS: of its mixup stage)
    "batch_size": 0,  # per branch for the bilateral networks
    "lr": 0.05,  # SGD, momentum 0.9, weight decay 2e-4, cosine schedule (seed 001 section 4.3)
    "tables": True,  # also tables 4 (backbones) and 5 (losses)
    "real_n_max": -1,  # cap on the largest real class (-1: the scale's, 0: no cap)
    "size": 0,  # image side (phantoms; real data: resize, 0 keeps the source size)
    "protocol": "",  # BreaKHis / chest X-ray: "default" or "seed001" (section 4.2); "": the scale's
}

#: Backbones of the bilateral network: name -> (network, its keyword arguments).
BACKBONES: dict[str, tuple[str, dict[str, str | None]]] = {
    "ResNet-32": ("bbn", {"lsk_position": None}),
    "ResNet-32 + BiFormer": ("bbn", {"attention": "biformer"}),
    "ResNet-32 + SimAM": ("bbn", {"attention": "simam"}),
    "improved ResNet-32 (LSK residual)": ("lskbb", {"lsk_position": "residual"}),
    "improved ResNet-32 (LSK shortcut)": ("lskbb", {"lsk_position": "shortcut"}),
}
#: Losses of table 5 by row name.
LOSS_ROWS = ("CE", "Focal", "DFLCSCE", "DFLCE")


#: Loss specs of table 5 by row name.
LOSSES: dict[str, Any] = {"CE": "ce", "Focal": {"name": "focal", "gamma": 2.0}, "DFLCSCE": "dflcsce", "DFLCE": "dflce"}


@dataclass(frozen=True)
class Recipe:
    """One row as recipe data: the network, its loss spec and the method (``model``, ``loss``,
    ``method`` of the run's config)."""

    net: str
    loss: Any
    net_kwargs: dict = field(default_factory=dict)
    method: dict = field(default_factory=lambda: {"name": "plain"})


def _bilateral(backbone: str, loss: str) -> Recipe:
    net, net_kwargs = BACKBONES[backbone]
    return Recipe(net, LOSSES[loss], dict(net_kwargs), {"name": "bilateral"})


#: Rows of tables 2 / 3 in the paper's order.
METHODS: dict[str, Recipe] = {
    "Focal Loss": Recipe("resnet32", LOSSES["Focal"]),
    # DRW from epoch 160 of 200 (SPEC section 10), i.e. progress 0.8 at any length.
    "LDAM-DRW": Recipe("resnet32", {"name": "ldam", "drw_start": 0.8}, {"head": "cosine"}),
    "BBN": _bilateral("ResNet-32", "CE"),
    "MiSLAS": Recipe("resnet32", "ce", method={"name": "mislas"}),
    "LSKBB": _bilateral("improved ResNet-32 (LSK residual)", "DFLCE"),
}
# A bilateral (backbone, loss) pair that is also a row of tables 2 / 3 trains once.
_SAME_RUN = {("ResNet-32", "CE"): "BBN", ("improved ResNet-32 (LSK residual)", "DFLCE"): "LSKBB"}


def recipe_config(ctx: Any, recipe: Recipe, preset: dict, *, data: dict, seed: int) -> Any:
    """The run config of a row: ``recipe`` at the preset's widths, blocks, epochs and batch size, trained
    with seed 001's SGD (``ctx.options["lr"]``, momentum 0.9, weight decay 2e-4, cosine schedule)."""
    model = {"name": recipe.net, "widths": preset["widths"], "blocks_per_stage": preset["blocks"], **recipe.net_kwargs}
    method = dict(recipe.method)
    if method["name"] == "mislas":
        method.setdefault("classifier_epochs", preset["classifier_epochs"])
    return ctx.base_config(
        seed=seed,
        epochs=preset["epochs"],
        batch_size=preset["batch_size"],
        optimizer="sgd",
        lr=ctx.options["lr"],
        momentum=0.9,
        weight_decay=2e-4,
        data=data,
        model=model,
        loss=recipe.loss,
        method=method,
    )


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_").replace("__", "_")


class _Experiment:
    """State of one ``run``: data per (IR, seed), trained rows and their test scores."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        preset = dict(SCALES[ctx.scale])
        opts = ctx.options
        for key in ("epochs", "batch_size", "size"):
            if opts[key]:
                preset[key] = opts[key]
        for key in ("irs", "table_irs"):
            if opts[key]:
                preset[key] = [float(v) for v in opts[key]]
        if opts["real_n_max"] >= 0:
            preset["real_n_max"] = opts["real_n_max"] or None
        self.preset = preset
        unknown = [m for m in opts["methods"] if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown} in --set methods (expected some of: {', '.join(METHODS)})")
        self.methods = list(opts["methods"]) or list(METHODS)
        self.protocol = opts["protocol"] or preset["protocol"]
        if self.protocol not in _PROTOCOLS:
            raise ConfigError(f"option 'protocol' is {self.protocol!r}{suggest(self.protocol, _PROTOCOLS)}")
        self.phantom = ctx.data == "phantom"
        self.scores: dict[tuple[str, float, int], dict] = {}

    # ------------------------------------------------------------------ data
    def data_section(self, ir: float, seed: int) -> dict:
        p = self.preset
        phantom = {
            "kind": "longtail_phantom",
            "size": p["size"],
            "num_classes": p["num_classes"],
            "n_max": p["n_max"],
            "imbalance_ratio": ir,
            "n_val_per_class": p["n_val"],
            "n_test_per_class": p["n_test"],
            "seed": seed,
        }
        section = self.ctx.data_section(phantom)
        if self.ctx.options["protocol"] and section["kind"] not in _PROTOCOL_KINDS:
            raise ConfigError(
                f"option 'protocol' applies to BreaKHis and chest X-ray data, not to --data {self.ctx.data}"
            )
        if self.phantom:
            return section
        if section["kind"] == "folder":  # one folder per class
            raise ValueError(
                "--data: a one-folder-per-class tree has no long-tail option; use a MedMNIST .npz, "
                "a BreaKHis or chest X-ray tree, or a shared set"
            )
        # the reader draws the seeded long-tailed subset (its indices go to splits.json)
        section.update(imbalance_ratio=ir, n_max=self.preset["real_n_max"], seed=seed)
        if section["kind"] in _PROTOCOL_KINDS:
            section["protocol"] = self.protocol
        if self.ctx.options["size"] and section["kind"] != "medmnist":
            section["size"] = self.ctx.options["size"]
        return section

    # ------------------------------------------------------------------ training
    def scores_of(self, row: str, recipe: Recipe, ir: float, seed: int) -> dict:
        """Test scores of ``row`` at ``ir`` / ``seed``, training it unless done before."""
        key = (row, ir, seed)
        if key in self.scores:
            return self.scores[key]
        cfg = recipe_config(self.ctx, recipe, self.preset, data=self.data_section(ir, seed), seed=seed)
        metrics = self.ctx.run(f"{_slug(row)}/ir{ir:g}/seed{seed}", cfg)
        scores = dict(metrics["test"])
        scores["train_counts"] = metrics["train_counts"]
        scores["class_names"] = metrics["class_names"]
        self.scores[key] = scores
        return scores


def _percent(scores: dict) -> dict[str, float]:
    return {
        "accuracy": 100 * scores["accuracy"],
        "precision": 100 * scores["macro_precision"],
        "sensitivity": 100 * scores["macro_recall"],
    }


def _ir_columns(irs: list[float]) -> list[str]:
    return [f"IR {ir:g}" for ir in irs]


def _main_tables(exp: _Experiment) -> None:
    ctx, irs = exp.ctx, exp.preset["irs"]
    columns = [*_ir_columns(irs), "mean"]
    what = {"accuracy": "accuracy", "precision": "macro precision", "sensitivity": "macro sensitivity (recall)"}
    tables = {
        metric: ctx.table(
            f"Tables 2 / 3: {label} (%) on {ctx.data}",
            columns,
            note="Balanced test set; 'mean' is the mean over the imbalance ratios (seed 001's 平均值).",
            digits=1,
        )
        for metric, label in what.items()
    }
    for row in exp.methods:
        for seed in ctx.seeds:
            values = {ir: _percent(exp.scores_of(row, METHODS[row], ir, seed)) for ir in irs}
            for metric, table in tables.items():
                cells = {col: values[ir][metric] for col, ir in zip(columns, irs)}
                cells["mean"] = float(np.mean([values[ir][metric] for ir in irs]))
                table.add(row, cells, seed=seed)


def _bilateral_scores(exp: _Experiment, backbone: str, loss: str, ir: float, seed: int) -> dict:
    row = _SAME_RUN.get((backbone, loss), f"bilateral {backbone} {loss}")
    recipe = METHODS.get(row) or _bilateral(backbone, loss)
    return exp.scores_of(row, recipe, ir, seed)


def _backbone_table(exp: _Experiment) -> None:
    ctx, ir = exp.ctx, exp.preset["table_irs"][0]
    table = ctx.table(
        f"Table 4: backbones of the bilateral network at IR {ir:g} (%)",
        ("accuracy", "precision", "sensitivity"),
        row_label="backbone",
        note="Bilateral branches with CE (seed 001 table 4's ResNet-32 row equals its table 5 ResNet-32 + CE row). "
        "LSK residual: the module on the residual branch before the addition (the default); shortcut: on the "
        "shortcut path.",
        digits=1,
    )
    for backbone in BACKBONES:
        for seed in ctx.seeds:
            table.add(backbone, _percent(_bilateral_scores(exp, backbone, "CE", ir, seed)), seed=seed)


def _loss_table(exp: _Experiment) -> None:
    ctx, irs = exp.ctx, exp.preset["table_irs"]
    columns = [f"{m} IR {ir:g}" for ir in irs for m in ("accuracy", "precision")]
    table = ctx.table(
        "Table 5: losses of the bilateral network (%)",
        columns,
        row_label="backbone + loss",
        note="Bilateral branches; precision is macro precision. ResNet-32 + CE is BBN, improved + DFLCE is LSKBB.",
        digits=1,
    )
    for backbone in ("ResNet-32", "improved ResNet-32 (LSK residual)"):
        for loss in LOSS_ROWS:
            for seed in ctx.seeds:
                cells = {}
                for ir in irs:
                    values = _percent(_bilateral_scores(exp, backbone, loss, ir, seed))
                    cells[f"accuracy IR {ir:g}"] = values["accuracy"]
                    cells[f"precision IR {ir:g}"] = values["precision"]
                table.add(f"{backbone.split(' (')[0]} + {loss}", cells, seed=seed)


def _per_class(exp: _Experiment) -> tuple[list[Path], list[str]]:
    """Per-class test accuracy (recall) table at the largest IR, one PNG per IR, and findings."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ctx, irs = exp.ctx, exp.preset["irs"]
    figures, findings = [], []
    fig, axes = plt.subplots(1, len(irs), figsize=(5 * len(irs), 3.8), squeeze=False)
    for ax, ir in zip(axes[0], irs):
        first = exp.scores[(exp.methods[0], ir, ctx.seeds[0])]
        order = np.argsort(-np.asarray(first["train_counts"]), kind="stable")  # head -> tail
        counts = np.asarray(first["train_counts"])[order]
        twin = ax.twinx()
        twin.bar(range(len(order)), counts, color="0.88", zorder=0)
        twin.set_yscale("log")
        twin.set_ylabel("training images")
        ax.set_zorder(twin.get_zorder() + 1)
        ax.patch.set_visible(False)
        for row in exp.methods:
            recall = np.mean([exp.scores[(row, ir, s)]["recall"] for s in ctx.seeds], axis=0)[order]
            ax.plot(range(len(order)), 100 * recall, marker="o", label=row)
            never = [
                first["class_names"][i]
                for i in order
                if all(exp.scores[(row, ir, s)]["recall"][i] == 0 for s in ctx.seeds)
            ]
            if never:
                findings.append(f"{row} at IR {ir:g}: test recall 0 on every seed for {', '.join(never)}")
        ax.set_xticks(range(len(order)), [first["class_names"][i] for i in order], rotation=45, ha="right")
        ax.set_ylim(-3, 103)
        ax.set_ylabel("test accuracy of the class (%)")
        ax.set_title(f"IR {ir:g} (head -> tail)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    path = ctx.artefacts() / "per_class_accuracy.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    figures.append(path)

    ir = irs[-1]
    first = exp.scores[(exp.methods[0], ir, ctx.seeds[0])]
    order = range(len(first["train_counts"]))  # by label; n tells head from tail
    names = [f"{first['class_names'][i]} (n={first['train_counts'][i]})" for i in order]
    table = ctx.table(
        f"Per-class test accuracy (recall, %) at IR {ir:g}, by label",
        names,
        note="n = training images of the class.",
        digits=1,
    )
    for row in exp.methods:
        for seed in ctx.seeds:
            recall = exp.scores[(row, ir, seed)]["recall"]
            table.add(row, {n: 100 * recall[i] for n, i in zip(names, order)}, seed=seed)
    return figures, findings


def run(ctx: Any) -> dict:
    """Train every row at every imbalance ratio and seed, write the tables, the plot and the report."""
    exp = _Experiment(ctx)
    p = exp.preset
    _main_tables(exp)
    if ctx.options["tables"]:
        _backbone_table(exp)
        _loss_table(exp)
    figures, findings = _per_class(exp)
    if exp.phantom:
        data = (
            f"long-tailed phantoms: {p['num_classes']} classes of {p['size']} px, head class {p['n_max']} images, "
            f"balanced validation ({p['n_val']} per class) and test ({p['n_test']} per class) sets; the images "
            "and the subset depend on the seed"
        )
    else:
        cap = f"largest class capped at {p['real_n_max']} images" if p["real_n_max"] else "largest class kept whole"
        first = exp.data_section(p["irs"][0], ctx.seeds[0])
        held_out = (
            "seed 001's protocol (section 4.2): 224 x 224 inputs, 80 images per class for validation (and for "
            "the BreaKHis test set; chest X-ray: the official test folder)"
            if first.get("protocol") == "seed001"
            else "validation and test sets balanced by subsampling every class to the smallest one"
        )
        data = (
            f"'{ctx.data}': long-tailed training subset per (IR, seed) ({cap}), {held_out}; the subset of each run "
            "is in its splits.json"
        )
    intro = [
        f"Data: {data}.",
        f"Networks: CIFAR ResNet layout with widths {p['widths']} and {p['blocks']} basic block(s) per stage "
        f"(ResNet-32 is widths [16, 32, 64] with 5). Bilateral networks: the branches share all but the last "
        f"residual block; {p['batch_size']} images per branch per step; lambda = 1 - (epoch / epochs)^2; "
        "test lambda 0.5.",
        f"Training: SGD lr {ctx.options['lr']:g}, momentum 0.9, weight decay 2e-4, cosine schedule, {p['epochs']} "
        f"epochs (MiSLAS: {p['epochs']} mixup epochs + {p['classifier_epochs']} classifier epochs), no augmentation; "
        "the checkpoint with the best balanced validation accuracy is tested.",
    ]
    if findings:
        intro.append("Classes with test recall 0 on every seed: " + "; ".join(findings) + ".")
    return ctx.write_report("\n\n".join(intro), figures=figures)
