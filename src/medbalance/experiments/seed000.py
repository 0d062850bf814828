"""``medbalance experiment dualpath``: seed 000's two tables with our numbers, plus what they leave out.

One command, one experiment folder, one dataset (``--data``; ``--data phantom`` with
``--set phantom=nuclei_phantom`` gives the seven-class nuclei phantoms). A dataset with more than
two classes runs the multi-class form (SPEC 5.9, :mod:`medbalance.methods.dualpath`): every
network gets one softmax channel per class and the tables add the Dice of every foreground class.

- **Comparison** (seed 000 table 1): U-Net, U-Net++, CE-Net, an nnU-Net-style U-Net (Dice + CE,
  deep supervision, 33% of each batch forced to contain foreground) and dual-path.
- **Ablation** (seed 000 table 2): U-Net, MaC, MaC+MiC, MaC+MiC+Fusion (one dual-path model).
- **Alpha sweep** (0.1 ... 0.9) and **train vs oof** weight maps, with the MiC share they produce.
- Per test image (first seed): the discriminator's MaC/MiC split, both weight maps, the three
  dual-path predictions and contour overlays (prediction red, ground truth green).

Every row is a recipe trained by ``ctx.run`` (:func:`medbalance.engine.run.train`; a killed
experiment resumes with ``--resume``), so every run folder predicts, evaluates, exports and
reports. The U-Net row is also the discriminator of the ``train`` weight maps (the dual-path
recipe's ``discriminator``); ``oof`` maps come from K more U-Nets, parts of the oof dual-path
run, each trained without one fold, whose mean predicts the validation images. Real data keeps
its native geometry (patches, sliding windows) unless ``--set size=N`` resizes it.

``--set claims=true`` trains only issue 22's claims instead: U-Net and the nnU-Net-style default
at dual-path's total optimiser steps, beside the U-Net of the dataset's built-in recipe, with
paired bootstrap intervals over the test images (:mod:`medbalance.experiments.claims`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medbalance.config import RunConfig
from medbalance.data.build import build_splits
from medbalance.data.datasets import ArrayDataset
from medbalance.engine.engine import Engine
from medbalance.engine.run import load_run
from medbalance.engine.tasks import SegmentationTask
from medbalance.errors import ConfigError, DataError
from medbalance.experiments import claims
from medbalance.methods.dualpath import ABLATION_ROWS, ablation_labels, split_mac_mic, weight_maps
from medbalance.report.overlays import overlay_contours, save_png, tile_grid, to_rgb

__all__ = ["ALPHAS", "OPTIONS", "SCALES", "run"]

#: Presets per scale. ``size`` is the phantom side; real images keep their native geometry
#: (patches of ``patch_size``, ``"auto"``: the CPU-sized rule of docs/native.md; sliding windows;
#: ``--set size=N`` resizes them instead) with ``steps`` patch batches per epoch; ``epochs``
#: trains the baselines and dual-path steps 1 and 2, step 3 gets ``epochs // 4``; ``sweep_seeds``
#: seeds run the sweeps. ``paper`` is seed 000's protocol (sections 4.1-4.2): CAMUS's 800 images
#: split 8:2 (640 = our 576 train + 64 validation, 160 test), U-Nets of width 64, Adam lr 1e-4,
#: 200 / 200 / 50 epochs; the seed trains whole 864 x 768 images (425 Mpx per epoch), we draw
#: 250 batches of 8 patches of 512 x 512 (524 Mpx per epoch; batch size: not in the seed).
# fmt: off
SCALES: dict[str, dict[str, Any]] = {
    "smoke": dict(
        size=32, steps=2, patch_size="auto", n_train=12, n_val=4, n_test=4, width=4, depth=2, fusion_channels=4,
        epochs=1, folds=2, batch_size=4, lr=1e-3, sweep_seeds=1,
    ),
    "small": dict(
        size=64, steps=50, patch_size="auto", n_train=128, n_val=32, n_test=32, width=8, depth=4, fusion_channels=8,
        epochs=16, folds=5, batch_size=8, lr=1e-3, sweep_seeds=1,
    ),
    "paper": dict(
        size=256, steps=250, patch_size=512, n_train=576, n_val=64, n_test=160, width=64, depth=4,
        fusion_channels=16, epochs=200, folds=5, batch_size=8, lr=1e-4, sweep_seeds=3,
    ),
}
# fmt: on

#: ``--set`` options of ``medbalance experiment dualpath`` (0 / empty: the scale's default).
OPTIONS: dict[str, object] = {
    "alpha": 0.5,  # weight of the other sub-class in each weight map (SPEC 5.2)
    "weight_maps": "train",  # "train" (the paper; the main rows) or "oof" (K-fold out-of-fold, an extra row)
    "folds": 0,  # K of the out-of-fold weight maps
    "size": 0,  # image side (phantoms; real data: resized to it instead of kept at native geometry)
    "width": 0,  # base_channels of every network
    "epochs": 0,  # epochs of the baselines and of dual-path steps 1 and 2 (step 3: a quarter)
    "lr": 0.0,  # initial learning rate of every stage
    "batch_size": 0,  # training batch size (small real sets: a smaller batch gives more steps)
    "patch_size": 0,  # side of the training patches on real data at native geometry (0: the scale's)
    "sweep": True,  # also run the alpha sweep and the train-vs-oof comparison
    "phantom": "intraclass_phantom",  # --data phantom: "intraclass_phantom" (binary) or "nuclei_phantom" (7 classes)
    "claims": False,  # only issue 22's claims at equal compute (medbalance.experiments.claims)
}

#: The alpha sweep (SPEC 5.2: the seed's value is not legible).
ALPHAS = (0.1, 0.3, 0.5, 0.7, 0.9)

_COMPARISON = ("U-Net", "U-Net++", "CE-Net", "nnU-Net-style", "Dual-path")
#: The run folder (``runs/<key>/seed<k>``) of each baseline row.
_RUN_KEYS = {"U-Net": "unet", "U-Net++": "unetpp", "CE-Net": "cenet", "nnU-Net-style": "nnunet"}
_WEIGHT_MODES = ("train", "oof")
_MODE_NAMES = {"train": "training-set", "oof": "out-of-fold"}
_PHANTOMS = ("intraclass_phantom", "nuclei_phantom")


# ----------------------------------------------------------------------------- helpers
def _predict(engine: Engine, data: ArrayDataset) -> tuple[list[np.ndarray], dict]:
    """Probabilities of a model on every image of ``data`` (at its own size) and its scores, in one
    pass: binary, the foreground ``(H, W)``; ``C`` classes, the softmax ``(C, H, W)``."""
    channels = engine.task.out_channels
    out: list[np.ndarray | None] = [None] * len(data)

    def keep(batch: dict, logits: torch.Tensor, labels: torch.Tensor) -> None:
        prob = engine.task.probabilities(logits)
        for i, p in zip(batch["index"].tolist(), (prob[:, 0] if channels == 1 else prob).cpu().numpy()):
            out[i] = p

    return out, engine.evaluate(data, on_batch=keep)


def _labels(prob: np.ndarray) -> np.ndarray:
    """Labels ``(H, W)`` of one image's :func:`_predict` probabilities."""
    return (prob > 0.5).astype(np.int64) if prob.ndim == 2 else prob.argmax(0)


def _shown(target: np.ndarray, ignore_index: int | None) -> np.ndarray:
    """A target for a figure: ignored pixels shown as background."""
    return target if ignore_index is None else np.where(target == ignore_index, 0, target)


def _cell(scores: dict, phantom: bool, classes: tuple[str, ...] = ()) -> dict[str, float]:
    """Table cells: foreground Dice and IoU, the phantom's minority recall, the Dice of ``classes``
    (the foreground classes of a multi-class set, in label order from 1; NaN, shown "-", for a
    class in no test image's target nor prediction, rather than the metric's 1.0)."""
    cell = {"Dice": scores["mean_dice_fg"], "IoU": scores["mean_iou_fg"]}
    if phantom:
        cell["minority recall"] = scores.get("recall_minority", float("nan"))
    absent = set(scores["absent_classes"])
    for c, name in enumerate(classes, start=1):
        cell[f"Dice {name}"] = float("nan") if c in absent else scores["dice"][c]
    return cell


def _zoom(rgb: np.ndarray, min_side: int = 128) -> np.ndarray:
    k = max(1, -(-min_side // min(rgb.shape[:2])))
    return rgb.repeat(k, axis=0).repeat(k, axis=1)


def _grey(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0.0, 1.0) * 255).round().astype(np.uint8)


def _classes_note(setup: _Setup) -> str:
    if not setup.classes:
        return ""
    return (
        f", {setup.num_classes} classes (multi-class dual-path, SPEC 5.9: one MaC/MiC split per foreground class; "
        "'Dice <class>': that class's Dice, mean over the test images where it is in the target or the prediction, "
        "'-' where it is in none)"
    )


# ----------------------------------------------------------------------------- the experiment
class _Setup:
    """Scale, options, data and config factory of one experiment run."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        preset = SCALES[ctx.scale]
        opts = ctx.options
        if opts["weight_maps"] not in _WEIGHT_MODES:
            raise ConfigError(f"option 'weight_maps' must be 'train' or 'oof', got {opts['weight_maps']!r}")
        if opts["phantom"] not in _PHANTOMS:
            raise ConfigError(f"option 'phantom' must be one of {', '.join(_PHANTOMS)}, got {opts['phantom']!r}")
        if opts["phantom"] != _PHANTOMS[0] and ctx.data != "phantom":
            raise ConfigError(f"option 'phantom' chooses the phantom of --data phantom; --data is '{ctx.data}'")
        if not 0.0 < opts["alpha"] < 1.0:
            raise ConfigError(f"option 'alpha' must be in (0, 1), got {opts['alpha']!r}")
        self.preset = preset
        self.mode, self.alpha = opts["weight_maps"], float(opts["alpha"])
        self.width = opts["width"] or preset["width"]
        self.depth = preset["depth"]
        self.epochs = opts["epochs"] or preset["epochs"]
        self.steps = (self.epochs, self.epochs, max(1, self.epochs // 4))
        self.lr = opts["lr"] or preset["lr"]
        self.batch_size = opts["batch_size"] or preset["batch_size"]
        self.folds = opts["folds"] or preset["folds"]
        self.patch_size = opts["patch_size"] or preset["patch_size"]
        # the minority recall needs the intra-class phantom's sub-regions
        self.phantom = ctx.data == "phantom" and opts["phantom"] == "intraclass_phantom"
        size = opts["size"] or preset["size"]
        section = ctx.data_section(
            {
                "kind": opts["phantom"],
                "size": size,
                "n_train": preset["n_train"],
                "n_val": preset["n_val"],
                "n_test": preset["n_test"],
                "seed": 0,
            }
        )
        self.native = section["kind"] not in _PHANTOMS and not opts["size"]
        self.claims = bool(opts["claims"])
        if self.claims and self.mode != "train":
            raise ConfigError("option 'claims' decides the paper's method: it needs weight_maps 'train'")
        # claims on real data: every row starts from the dataset's built-in recipe, its data section too
        self.recipe = claims.dataset_recipe(ctx.data) if self.claims and self.native else None
        if self.recipe is not None:
            section = dict(self.recipe["data"])
        if section["kind"] not in _PHANTOMS and opts["size"]:  # real data: native geometry unless resized
            section["size"] = size
        if section["kind"] in ("folder", "camus"):
            section.setdefault("test_fraction", 0.2)
        if section["kind"] == "folder":
            section["binary"] = True
        self.section = section
        self.splits = build_splits(self.config(0, "unet", "ce", self.epochs))
        for name, split in (("train", self.splits.train), ("val", self.splits.val), ("test", self.splits.test)):
            if split is None or len(split) == 0:
                raise DataError(f"dual-path needs a {name} split; the data '{ctx.data}' gives none")
        if self.folds > len(self.splits.train):
            raise ConfigError(f"option 'folds' is {self.folds} but there are {len(self.splits.train)} training images")
        self.in_channels = self.splits.train.in_channels
        self.num_classes = self.splits.train.num_classes
        self.task = SegmentationTask(self.num_classes)
        self.out_channels = self.task.out_channels
        # per-class Dice columns of a multi-class set
        self.classes = tuple(self.splits.train.class_names[1:]) if self.num_classes > 2 else ()

    def config(
        self,
        seed: int,
        model: str,
        loss: Any,
        epochs: int,
        *,
        method: dict | None = None,
        sampler: str = "uniform",
        stages: list | None = None,
        **model_kwargs: Any,
    ) -> RunConfig:
        return self.ctx.base_config(
            seed=seed,
            epochs=epochs,
            lr=self.lr,
            optimizer="adam",
            weight_decay=1e-4,
            batch_size=self.batch_size,
            data=self.section,
            model={"name": model, "base_channels": self.width, **model_kwargs},
            loss=loss,
            method=method or {"name": "plain"},
            sampler=sampler,
            stages=stages,
            steps_per_epoch=self.preset["steps"] if self.native else None,
            patch_size=self.patch_size if self.native else "auto",
        )

    def cell(self, scores: dict, phantom: bool = False) -> dict[str, float]:
        return _cell(scores, phantom, self.classes)


def _engine(ctx: Any, key: str, cfg: RunConfig) -> Engine:
    """The recipe ``cfg`` trained (or loaded) in ``runs/<key>``, as an engine over its ``best.pt`` model."""
    ctx.run(key, cfg)
    return load_run(ctx.run_dir / "runs" / key).engine()


def _baselines(setup: _Setup, seed: int) -> dict[str, Engine]:
    """The comparison rows other than dual-path, each a recipe; ``U-Net`` doubles as the discriminator."""
    e, d = setup.epochs, {"depth": setup.depth}
    recipes = {
        "U-Net": setup.config(seed, "unet", "ce", e, **d),
        "U-Net++": setup.config(seed, "unetpp", "ce", e, **d),
        "CE-Net": setup.config(seed, "cenet", "ce", e),
        # nnU-Net-style: Dice + CE, deep supervision, a third of each batch holding foreground
        "nnU-Net-style": setup.config(
            seed,
            "unet",
            "dice_ce",
            e,
            deep_supervision=True,
            **d,
            sampler="foreground",
            stages=[{"name": "train", "epochs": e, "batches": "foreground"}],
        ),
    }
    return {row: _engine(setup.ctx, f"{_RUN_KEYS[row]}/seed{seed}", cfg) for row, cfg in recipes.items()}


def _dualpath_key(seed: int, mode: str, alpha: float) -> str:
    return f"dualpath/{mode}/alpha{alpha:g}/seed{seed}"


def _train_dualpath(setup: _Setup, seed: int, mode: str, alpha: float) -> tuple[Engine, dict]:
    """The dual-path recipe (its ``train`` maps from the experiment's U-Net run), and its weight-map statistics."""
    method = {
        "name": "dualpath",
        "alpha": alpha,
        "weight_maps": mode,
        "folds": setup.folds,
        "fusion_channels": setup.preset["fusion_channels"],
    }
    if mode == "train":  # the U-Net row is the discriminator: trained once per seed
        method["discriminator"] = str(setup.ctx.run_dir / "runs" / "unet" / f"seed{seed}")
    cfg = setup.config(seed, "unet", "ce", setup.epochs, depth=setup.depth, method=method)
    key = _dualpath_key(seed, mode, alpha)
    engine = _engine(setup.ctx, key, cfg)
    info = json.loads((setup.ctx.run_dir / "runs" / key / "splits.json").read_text())
    return engine, {k: v for k, v in info["weight_maps"].items() if k != "mode"}


def _evaluate_dualpath(engine: Engine, test: ArrayDataset) -> tuple[dict, dict[str, dict], dict[str, list]]:
    """Scores of the fused output, scores of every ablation row, and every row's per-image labels."""
    # every row's labels scored as the pass scores the fused output (the phantom's scorers only there)
    rows = {row: engine.task.evaluator() for row in ABLATION_ROWS}
    preds: dict[str, list] = {row: [None] * len(test) for row in ABLATION_ROWS}

    def collect(batch: dict, logits: torch.Tensor, labels: torch.Tensor) -> None:
        for row, lab in ablation_labels(logits).items():
            rows[row].update(lab, batch)
            for i, y in zip(batch["index"].tolist(), lab.cpu().numpy()):
                preds[row][i] = y

    fused = engine.evaluate(test, on_batch=collect)
    return fused, {row: rows[row].compute().scores for row in ABLATION_ROWS}, preds


def _save_artefacts(
    ctx: Any,
    test: ArrayDataset,
    disc_prob: list[np.ndarray],
    ablation: dict[str, list],
    preds: dict[str, list],
    alpha: float,
) -> list[Path]:
    """Per test image: split, weight maps, three predictions, overlays; and two report figures.

    Multi-class splits and weight maps are drawn with every class together (the sum over classes:
    the classes are disjoint); predictions are label maps scaled to ``[0, 255]``.
    """
    folder = ctx.artefacts("test")
    scale = 255 // max(1, test.num_classes - 1)
    comparison_rows, map_rows = [], []
    for i, name in enumerate(test.names):
        target = _shown(np.asarray(test.target[i]), test.ignore_index)
        prob = torch.from_numpy(disc_prob[i])[None]
        mac, mic = split_mac_mic(prob, torch.from_numpy(target)[None])
        w_mac, w_mic = (w[0].numpy() for w in weight_maps(mac, mic, alpha=alpha))
        mac, mic = mac[0].numpy(), mic[0].numpy()
        if mac.ndim == 3:
            mac, mic, w_mac, w_mic = (x.sum(0) for x in (mac, mic, w_mac, w_mic))
        split = (mac * 255 + mic * 128).astype(np.uint8)  # MaC white, MiC grey (seed 000 fig. 2)
        out = folder / Path(name).name
        image = to_rgb(test.images[i], target.shape)
        save_png(out / "image.png", image)
        save_png(out / "mac_mic_split.png", split)
        save_png(out / "weight_map_mac.png", _grey(w_mac))
        save_png(out / "weight_map_mic.png", _grey(w_mic))
        for row, pred in ablation.items():
            save_png(out / f"pred_{row.lower().replace('+', '_')}.png", pred[i].astype(np.uint8) * scale)
        overlays = []
        for method, labels in preds.items():
            overlay = overlay_contours(test.images[i], labels[i], target)
            save_png(out / f"overlay_{method.lower().replace('+', 'p').replace('-', '')}.png", overlay)
            overlays.append(_zoom(overlay))
        if len(comparison_rows) < 4 and target.shape == np.shape(test.target[0]):  # a figure of equal tiles
            comparison_rows.append([_zoom(image), *overlays])
            disc = overlay_contours(test.images[i], _labels(disc_prob[i]), target)
            map_rows.append([_zoom(disc), _zoom(split), _zoom(_grey(w_mac)), _zoom(_grey(w_mic))])
    figures = [
        save_png(ctx.artefacts() / "comparison.png", tile_grid(comparison_rows)),
        save_png(ctx.artefacts() / "weight_maps.png", tile_grid(map_rows)),
    ]
    return figures


def _claim_rows(ctx: Any, setup: _Setup) -> tuple[dict, claims.StepBudget, int]:
    """The claims rows (label -> (run key, config of a seed)), dual-path's step budget and the
    recipe's epochs.

    Rows: the U-Net of the dataset recipe at its own schedule (also dual-path's discriminator),
    the same U-Net and the nnU-Net-style U-Net given dual-path's total steps (discriminator, paths,
    fusion, finetune), and dual-path on the recipe's geometry with the recipe's network as each path.
    """
    from medbalance.config import method_of

    fallback = {
        "epochs": setup.epochs,
        "lr": setup.lr,
        "optimizer": "adam",
        "weight_decay": 1e-4,
        "batch_size": setup.batch_size,
        "model": {"name": "unet", "base_channels": setup.width, "depth": setup.depth},
        "loss": "ce",
        "steps_per_epoch": setup.preset["steps"] if setup.native else None,
    }
    base = claims.claims_base(setup.recipe, fallback, ctx.options)

    def config(seed: int, **changes: Any) -> RunConfig:
        return ctx.base_config(**{**base, "data": setup.section, "seed": seed, **changes})

    def unet_run(seed: int) -> Path:
        return ctx.run_dir / "runs" / "claims" / "unet" / f"seed{seed}"

    def dualpath(seed: int) -> RunConfig:
        method = {
            "name": "dualpath",
            "alpha": setup.alpha,
            "weight_maps": "train",
            "fusion_channels": setup.preset["fusion_channels"],
            "discriminator": str(unet_run(seed)),  # the recipe's U-Net row, trained once per seed
        }
        return config(seed, method=method)

    e = base["epochs"]
    steps, patches = claims.epoch_steps(config(ctx.seeds[0]), setup.splits.train)
    stages = method_of(dualpath(ctx.seeds[0])).default_stages(dualpath(ctx.seeds[0]))
    budget = claims.StepBudget({"discriminator": e, **{st["name"]: st["epochs"] for st in stages}}, steps)
    nnunet = claims.nnunet_settings()
    nnunet_changes = {
        "epochs": budget.epochs,
        "model": {**base["model"], "deep_supervision": nnunet["deep_supervision"]},
        "loss": nnunet["loss"],
        "sampler": nnunet["sampler"],
        "foreground_fraction": nnunet.get("foreground_fraction", 0.33),
        # whole images: the foreground share comes from the batch sampler instead of patch centres
        **({} if patches else {"stages": [{"name": "train", "epochs": budget.epochs, "batches": "foreground"}]}),
    }
    rows = {
        "U-Net (recipe schedule)": ("unet", lambda seed: config(seed)),
        "U-Net (equal steps)": ("unet_equal", lambda seed: config(seed, epochs=budget.epochs)),
        "nnU-Net-style (equal steps)": ("nnunet_equal", lambda seed: config(seed, **nnunet_changes)),
        "Dual-path": ("dualpath", dualpath),
    }
    return rows, budget, e


def _claims(ctx: Any, setup: _Setup) -> dict:
    """Issue 22: dual-path vs U-Net and the nnU-Net-style default at equal optimiser steps (``--set claims=true``)."""
    rows, budget, e = _claim_rows(ctx, setup)
    steps = budget.steps_per_epoch
    recipe = claims.DATASET_RECIPES[ctx.data] if setup.recipe is not None else None
    origin = f"the built-in recipe '{recipe}'" if recipe else f"the '{ctx.scale}' preset (no dataset recipe)"
    note = (
        f"Test split of '{ctx.data}', {len(setup.splits.test)} cases; every row starts from {origin}: its data "
        "section, patch size, sampler, augmentation, network, loss, batch, learning rate. Dice: mean over the test "
        "cases of the per-case foreground Dice (multi-class: the mean over the foreground classes in the case's "
        "truth; a class absent from it is left out, evaluation.empty 'skip'). 'Dual-path - row': mean over cases of "
        "the per-case difference (each case averaged over the seeds) with its 95% percentile-bootstrap interval "
        "over cases; verdict 'holds' when the interval is above 0, 'does not hold' below 0, 'no difference shown' "
        f"when it contains 0. Optimiser steps: dual-path {budget.text()} (the discriminator is the U-Net "
        f"(recipe schedule) row); U-Net and nnU-Net-style (equal steps): {budget.epochs} epochs x {steps} = "
        f"{budget.epochs * steps}; U-Net (recipe schedule): {e} x {steps} = {e * steps}. nnU-Net-style: the "
        "'nnunet' recipe's loss, deep supervision and foreground sampler on this geometry. Plateau: seeds whose "
        "last quarter of validation epochs improved the best score by less than 0.005."
    )
    return claims.run_claims(
        ctx,
        rows,
        method="Dual-path",
        baselines=list(rows)[:3],
        converged=["U-Net (recipe schedule)"],
        note=note,
        extra={"steps": {"dualpath": budget.to_dict(), "equal_epochs": budget.epochs, "recipe_epochs": e}},
        intro=f"Dual-path (seed 000) claims on {ctx.data}.",
    )


def run(ctx: Any) -> dict:
    """Train everything, fill the tables, save the artefacts and write the report (see the module doc)."""
    setup = _Setup(ctx)
    if setup.claims:
        return _claims(ctx, setup)
    per_class = tuple(f"Dice {name}" for name in setup.classes)
    metrics = ("Dice", "IoU", *(("minority recall",) if setup.phantom else ()), *per_class)
    where = f"test split of '{ctx.data}' ({len(setup.splits.test)} images, mean over images)"
    comparison = ctx.table(
        "Comparison with other methods (seed 000 table 1)",
        metrics,
        note=f"{where}. Dual-path: weight maps '{setup.mode}', alpha {setup.alpha:g}, steps {setup.steps} epochs; "
        f"baselines {setup.epochs} epochs. nnU-Net-style: the same U-Net with Dice + CE, deep supervision and "
        "33% of each batch forced to contain foreground.",
    )
    rule = (
        "MaC: MaC path > 0.5; MaC+MiC: P_MaC + P_MiC > 0.5; MaC+MiC+Fusion: fusion > 0.5"
        if not setup.classes
        else "MaC: argmax of the MaC path; MaC+MiC: foreground where the summed foreground probability of both "
        "paths > 0.5, the class with the largest sum; MaC+MiC+Fusion: argmax of the fusion"
    )
    ablation = ctx.table(
        "Ablation (seed 000 table 2)", ("Dice", "IoU", *per_class), note=f"{rule} (same models as above)."
    )
    maps_table = ctx.table(
        "Weight maps: the discriminator's MaC / MiC split of the training set",
        ("MiC share", "empty MiC"),
        row_label="weight maps",
        note="MiC share: mean over training images of |MiC| / |GT|; empty MiC: fraction of images whose MiC is empty.",
    )
    sweep_seeds = ctx.seeds[: setup.preset["sweep_seeds"]] if ctx.options["sweep"] else ()
    sweep_note = f"seeds {list(sweep_seeds)}, weight maps '{setup.mode}'"
    alpha_table = ctx.table("Alpha sweep", ("Dice", "IoU"), row_label="alpha", note=sweep_note) if sweep_seeds else None
    mode_table = (
        ctx.table(
            "Weight maps from the training set ('train', the paper) vs out-of-fold ('oof')",
            ("Dice", "IoU", "MiC share", "empty MiC"),
            row_label="weight maps",
            note=f"seeds {list(sweep_seeds)}, alpha {setup.alpha:g}, {setup.folds} folds",
        )
        if sweep_seeds
        else None
    )

    figures: list[Path] = []
    for seed in ctx.seeds:
        baselines = _baselines(setup, seed)
        test = {row: _predict(engine, setup.splits.test) for row, engine in baselines.items()}  # (prob, scores)
        modes = _WEIGHT_MODES if seed in sweep_seeds else (setup.mode,)
        trained = {mode: _train_dualpath(setup, seed, mode, setup.alpha) for mode in modes}
        stats = {mode: trained[mode][1] for mode in modes}
        for mode in modes:
            maps_table.add(mode, stats[mode], seed=seed)

        engine = trained[setup.mode][0]
        fused, rows, dual_preds = _evaluate_dualpath(engine, setup.splits.test)
        for row in _COMPARISON[:-1]:
            comparison.add(row, setup.cell(test[row][1], setup.phantom), seed=seed)
        comparison.add("Dual-path", setup.cell(fused, setup.phantom), seed=seed)
        for row in _COMPARISON[:-1]:  # per-case test scores, from each run folder's own evaluation
            claims.keep_cases(comparison, row, seed, ctx.run_dir / "runs" / _RUN_KEYS[row] / f"seed{seed}")
        dual_run = ctx.run_dir / "runs" / _dualpath_key(seed, setup.mode, setup.alpha)
        claims.keep_cases(comparison, "Dual-path", seed, dual_run)
        ablation.add("U-Net", setup.cell(test["U-Net"][1]), seed=seed)
        for row in ABLATION_ROWS:
            ablation.add(row, setup.cell(rows[row]), seed=seed)

        if seed in sweep_seeds:

            def variant(mode: str, alpha: float, phantom: bool = False) -> dict[str, float]:
                if (mode, alpha) == (setup.mode, setup.alpha):
                    return setup.cell(fused, phantom)
                engine = trained[mode][0] if alpha == setup.alpha else _train_dualpath(setup, seed, mode, alpha)[0]
                return setup.cell(_evaluate_dualpath(engine, setup.splits.test)[0], phantom)

            for alpha in ALPHAS:
                alpha_table.add(f"{alpha:g}", variant(setup.mode, alpha), seed=seed)
            for mode in _WEIGHT_MODES:
                cell = variant(mode, setup.alpha, setup.phantom)
                mode_table.add(mode, {"Dice": cell["Dice"], "IoU": cell["IoU"], **stats[mode]}, seed=seed)
                if mode != setup.mode:  # our labelled extra row beside the paper's method
                    comparison.add(f"Dual-path ({_MODE_NAMES[mode]} maps)", cell, seed=seed)

        if seed == ctx.seeds[0]:
            preds = {row: [_labels(p) for p in prob] for row, (prob, _) in test.items()}
            preds["Dual-path"] = dual_preds["MaC+MiC+Fusion"]
            figures = _save_artefacts(ctx, setup.splits.test, test["U-Net"][0], dual_preds, preds, setup.alpha)

    sp = setup.splits
    intro = (
        f"Dual-path framework (seed 000) on {ctx.data}: {len(sp.train)} train / {len(sp.val)} val / "
        f"{len(sp.test)} test images of {sp.train.images.shape[-2]}x{sp.train.images.shape[-1]} px, "
        f"{setup.in_channels} channel(s){_classes_note(setup)}. All networks: width "
        f"{setup.width}, Adam lr {setup.lr:g} (cosine to 0 within each stage), weight decay 1e-4, batch "
        f"{setup.batch_size}"
        + (f" ({setup.preset['steps']} batches of {setup.patch_size} patches per epoch)" if setup.native else "")
        + "; best validation Dice selects the weights. Figures: `artefacts/comparison.png` "
        "(columns: image, U-Net, U-Net++, CE-Net, nnU-Net-style, dual-path; prediction red, ground truth green, "
        "both yellow) and `artefacts/weight_maps.png` (discriminator on test images, MaC/MiC split with MaC white and "
        "MiC grey, W_MaC, W_MiC); per-image PNGs in `artefacts/test/<name>/`."
    )
    return ctx.write_report(intro, figures)
