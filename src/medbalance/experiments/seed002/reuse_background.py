"""``medbalance experiment reuse-background``: plain vs reuse background (seed 002, SPEC section 7).

Trains both models of :mod:`medbalance.methods.reuse_background` and an nnU-Net-style baseline
(Dice + CE, deep supervision, foreground oversampling) through the one engine, writes the
prediction sets (colour-coded PNGs and contour overlays) and the tables "plain vs reuse
background" (seed tables 4.20 / 4.21), per-class Dice / IoU, the binary model's scores
(table 4.19) and where the combination changed pixels.

``--set claims=true`` trains only issue 22's claim instead: the composite reuse-background
recipe against the plain model of the dataset's built-in recipe at its own schedule and at the
method's total optimiser steps, with paired bootstrap intervals over the test tiles
(:mod:`medbalance.experiments.claims`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medbalance.experiments import claims
from medbalance.experiments.seed002.tables import COMBO_TABLES, combos_for, patch_size
from medbalance.methods.reuse_background import COMBINE_MODES, combine_predictions

__all__ = ["OPTIONS", "SCALES", "loss_spec", "run"]

# The seed's losses by the names of its demo options (--m_focal_loss ...), and the spec
# each becomes (see medbalance.losses.build_loss).
_LOSS_TERMS = ("ce", "focal", "dice", "tversky", "ob")

SCALES: dict[str, dict[str, Any]] = {
    # seconds on 2 CPU cores
    "smoke": {
        "size": 32,
        "n_train": 12,
        "n_val": 4,
        "n_test": 4,
        "width": 4,
        "backbone": "resnet18",
        "epochs": 1,
        "batch_size": 4,
        "lr": 1e-3,
        "net": "unet",
        "seeds": (0,),
        "patch_size": "auto",
    },
    # about 10 minutes on 2 idle CPU cores on phantoms
    "small": {
        "size": 64,
        "n_train": 96,
        "n_val": 16,
        "n_test": 32,
        "width": 8,
        "backbone": "resnet18",
        "epochs": 20,
        "batch_size": 8,
        "lr": 2e-3,
        "net": "unet",
        "seeds": (0, 1, 2),
        "patch_size": "auto",
    },
    # seed 002 chapter 4-5: CoNIC 256 px, 9:1 split (section 4.1), Adam lr 1e-3, 10 epochs, batch 1
    # (the demo, section 5.4), DeepLabv3+ on ResNet-101 (section 2.1.2) at the paper's widths (stem
    # 64, ASPP 256; the U-Net family at the original papers' 64: the seed names no other width);
    # whole images, one pass per epoch ("auto" would draw 100 patches of 128 x 128 per epoch)
    "paper": {
        "size": 256,
        "n_train": 4234,
        "n_val": 249,
        "n_test": 498,
        "width": 64,
        "backbone": "resnet101",
        "epochs": 10,
        "batch_size": 1,
        "lr": 1e-3,
        "net": "deeplabv3plus",
        "seeds": (0, 1, 2),
        "patch_size": None,
    },
}

#: ``--set`` options. Empty strings and zeros take the scale's preset.
OPTIONS: dict[str, Any] = {
    "net": "",  # multi-class network (seed --m_net); "": the scale's
    "binary_net": "",  # binary network (seed --b_net); "": same as net
    "multi_loss": "focal+dice",  # terms joined by '+' (seed --m_focal_loss --m_dice_loss ...)
    "binary_loss": "",  # "": same as multi_loss (seed --b_*_loss)
    "focal_weight": 5,  # seed's class-weight function 1-6 for the Focal term (--focal_weight); 0: none
    "hard_num": 4096,  # hard pixels of the OB term (--hard_num)
    "optimizer": "adam",  # --optimizer
    "epochs": 0,
    "batch_size": 0,
    "lr": 0.0,
    "size": 0,  # image size (phantoms and resized real data)
    "width": 0,  # base_channels of every network
    "patch_size": 0,  # real data at native geometry: N x N training patches (0: the scale's)
    # "": one multi-class model (net, multi_loss); conic / monusac / auto: one per combination of seed
    # table 4.15 / 4.17 (auto: by the data), each combined with one binary model (binary_net,
    # binary_loss; default: the seed's best combination, 4.16's no. 7 / 4.18's no. 1, as section 4.6.2)
    "combos": "",
    "tau": 0.5,  # binary threshold of the combination
    "baseline": True,  # also train the nnU-Net-style baseline
    "all_seed_predictions": False,  # write the prediction PNGs of every seed, not only the first
    "claims": False,  # only issue 22's claims at equal compute (medbalance.experiments.claims)
}


def loss_spec(recipe: str, *, focal_weight: int = 5, hard_num: int = 4096) -> list[dict]:
    """The :func:`~medbalance.losses.build_loss` spec of a ``"focal+dice"``-style recipe.

    Args:
        recipe: loss names from ``ce, focal, dice, tversky, ob`` joined by ``+`` (the seed's
            ``--m_focal_loss 1 --m_dice_loss 1`` is ``"focal+dice"``); the terms are summed.
        focal_weight: the seed's class-weight function number (1-6, see
            :data:`medbalance.losses.weights.CLASS_WEIGHT_SCHEMES`) for the Focal term; 0 none.
        hard_num: hard pixels per batch of the online-bootstrapping term.

    Example:
        >>> loss_spec("focal+dice")
        [{'name': 'focal', 'class_weight': 'exp_decreasing_fg'}, {'name': 'dice'}]
    """
    from medbalance.losses.weights import CLASS_WEIGHT_SCHEMES

    terms = [t.strip() for t in recipe.split("+")]
    if not recipe.strip() or any(t not in _LOSS_TERMS for t in terms):
        raise ValueError(f"loss recipe must join {', '.join(_LOSS_TERMS)} with '+', got {recipe!r}")
    if not 0 <= focal_weight <= len(CLASS_WEIGHT_SCHEMES):
        raise ValueError(f"focal_weight must be 0 (none) or 1-{len(CLASS_WEIGHT_SCHEMES)}, got {focal_weight}")
    spec = []
    for term in terms:
        item: dict[str, Any] = {"name": term}
        if term == "focal" and focal_weight:
            item["class_weight"] = CLASS_WEIGHT_SCHEMES[focal_weight - 1]
        if term == "ob":
            item["hard_num"] = hard_num
        spec.append(item)
    return spec


def _settings(ctx) -> dict[str, Any]:
    """The scale's preset with the non-empty options on top."""
    preset, opts = dict(SCALES[ctx.scale]), ctx.options
    for key in ("net", "epochs", "batch_size", "lr", "size", "width"):
        if opts[key]:
            preset[key] = opts[key]
    preset["binary_net"] = opts["binary_net"] or preset["net"]
    preset["multi_loss"] = opts["multi_loss"]
    preset["binary_loss"] = opts["binary_loss"] or opts["multi_loss"]
    return preset


def _data_section(ctx, s: Mapping[str, Any]) -> dict:
    phantom = {
        "kind": "nuclei_phantom",
        "size": s["size"],
        "n_train": s["n_train"],
        "n_val": s["n_val"],
        "n_test": s["n_test"],
        "seed": 0,
    }
    section = ctx.data_section(phantom)
    # Real data keeps its native geometry (patches, sliding windows) unless --set size resizes it.
    if section["kind"] != "nuclei_phantom" and ctx.options["size"]:
        section["size"] = s["size"]
    return section


def _scores(pred: np.ndarray, target: np.ndarray, num_classes: int) -> dict:
    """Dataset-level scores of the summed confusion matrix (the pooling seed 002 reports)."""
    from medbalance.metrics.evaluation import evaluate_labels

    return evaluate_labels(torch.from_numpy(pred), torch.from_numpy(target), num_classes).pooled_scores()


def _per_class(scores: dict, key: str, names: list[str]) -> dict:
    # A class absent from both prediction and truth scores 1.0 by convention; show it as "-".
    return {n: float("nan") if i in scores["absent_classes"] else v for i, (n, v) in enumerate(zip(names, scores[key]))}


_MAIN_METRICS = {
    "Dice": "mean_dice",
    "mIoU": "mean_iou",
    "mAP": "mean_precision",
    "mean recall": "mean_recall",
    "Dice fg": "mean_dice_fg",
    "IoU fg": "mean_iou_fg",
}


def _change_stats(plain: np.ndarray, combined: np.ndarray, target: np.ndarray) -> dict:
    """How the combination changed the plain prediction, in percent of all test pixels."""
    changed = plain != combined
    bg = target == 0
    return {
        "changed %": 100 * changed.mean(),
        "fixed %": 100 * (changed & (combined == target)).mean(),
        "broken %": 100 * (changed & (plain == target)).mean(),
        "bg FP before %": 100 * (bg & (plain > 0)).sum() / max(1, bg.sum()),
        "bg FP after %": 100 * (bg & (combined > 0)).sum() / max(1, bg.sum()),
        "fg lost %": 100 * (~bg & (plain > 0) & (combined == 0)).sum() / max(1, (~bg).sum()),
    }


def _save_prediction_sets(folder: Path, data, sets: Mapping[str, np.ndarray]) -> None:
    from medbalance.report.overlays import colorize, overlay_contours, save_png

    c = data.num_classes
    for name, labels in sets.items():
        k = 2 if name == "binary" else c
        for i, stem in enumerate(data.names):
            truth = (data.target[i] > 0).astype(np.int64) if name == "binary" else data.target[i]
            save_png(folder / name / "classes" / f"{stem}.png", colorize(labels[i], k))
            save_png(folder / name / "overlays" / f"{stem}.png", overlay_contours(data.images[i], labels[i], truth))


def _figure(path: Path, data, sets: Mapping[str, np.ndarray], count: int = 4) -> Path:
    """Rows of image | ground truth | each prediction set, for the images with most classes."""
    from medbalance.report.overlays import colorize, save_png, tile_grid, to_rgb

    order = np.argsort([-len(np.unique(t)) for t in data.target], kind="stable")[:count]
    hw = data.target.shape[1:]
    rows = []
    for i in order:
        tiles = [to_rgb(data.images[i], hw), colorize(data.target[i], data.num_classes)]
        tiles += [colorize(labels[i], 2 if name == "binary" else data.num_classes) for name, labels in sets.items()]
        rows.append(tiles)
    k = -(-96 // hw[0])  # small images enlarged (sharp pixels) to at least 96 px
    return save_png(path, tile_grid(rows, gap=2 * k, scale=k))


def run(ctx) -> dict:
    """``medbalance experiment reuse-background``: plain vs reuse background (seed tables 4.19-4.21)."""
    from medbalance.data.build import build_splits
    from medbalance.engine.run import Parts, load_run

    s = _settings(ctx)
    opts = ctx.options
    data = _data_section(ctx, s)
    if opts["claims"]:
        return _claims(ctx, s, data)
    # The data (and its split) stay fixed; the seeds vary initial weights and batch order.
    splits = build_splits(ctx.base_config(data=data, epochs=1))
    if splits.test is None:
        raise ValueError("reuse-background needs a test split (set data test_fraction > 0)")
    num_classes, names = splits.train.num_classes, list(splits.train.class_names)
    patch = patch_size(opts["patch_size"], s["patch_size"], ragged=splits.train.ragged, data=ctx.data)
    target = splits.test.target

    def config(seed: int, net: str, loss: Any, *, binary: bool = False, deep: bool = False, **extra: Any):
        model = {"name": net, "base_channels": s["width"], **({"deep_supervision": True} if deep else {})}
        if net == "deeplabv3plus":
            model["backbone"] = s["backbone"]
        return ctx.base_config(
            seed=seed,
            epochs=s["epochs"],
            batch_size=s["batch_size"],
            lr=s["lr"],
            optimizer=opts["optimizer"],
            data={**data, "binary": binary},
            model=model,
            loss=loss,
            patch_size=patch,
            **extra,
        )

    def train(key: str, cfg) -> np.ndarray:
        """Test-split probabilities ``(N, C_out, *spatial)`` of the recipe ``cfg``, trained in ``runs/<key>``."""
        ctx.run(key, cfg)
        run = load_run(ctx.run_dir / "runs" / key)
        return np.stack(Parts.probabilities(run, run_test_split(run)))

    def run_test_split(run):
        # the run's own data: binary runs see every cell class merged, as they trained
        return build_splits(run.cfg).test

    def spec(recipe: str) -> list[dict]:
        return loss_spec(recipe, focal_weight=opts["focal_weight"], hard_num=opts["hard_num"])

    multis = _multi_models(s, opts["combos"], data["kind"])
    if opts["combos"]:  # the binary model: the seed's best combination (section 4.6.2) unless asked
        name, chosen = combos_for(opts["combos"], data["kind"])
        best_net, best_loss = chosen[COMBO_TABLES[name][2] - 1]
        s["binary_net"], s["binary_loss"] = opts["binary_net"] or best_net, opts["binary_loss"] or best_loss
    rows = {
        "multi": "plain (multi-class)",
        "reuse_paper": "reuse background (paper)",
        "reuse_fg_argmax": "reuse background (fg_argmax)",
        "nnunet": "nnU-Net-style baseline",
    }
    main = ctx.table(
        "Plain vs reuse background (seed tables 4.20 / 4.21)",
        list(_MAIN_METRICS),
        note="Test split, scores of the summed confusion matrix; Dice / mIoU / mAP (mean precision) / "
        "mean recall include the background like the seed's; 'fg' columns average the cell classes. "
        "results.json keeps the per-case Dice of the rows that are run folders (plain, nnU-Net-style), from "
        "each run's own evaluation; the combinations are no run folders (`--set claims=true` trains one)."
        + (f" Rows 'k: ...': combination k of seed table {multis[0].table}." if multis[0].table else ""),
    )
    absent = "'-': the class is absent from both the prediction and the truth of the test split (in some seed)."
    per_dice = ctx.table("Per-class Dice", names, note=absent)
    per_iou = ctx.table("Per-class IoU", names, note=absent)
    binary_table = ctx.table(
        "Binary model (seed table 4.19)", ["Dice fg", "mIoU", "mAP", "mean recall", "bg precision", "bg recall"]
    )
    change = ctx.table(
        f"What the combination changed (tau {opts['tau']:g}; % of test pixels, bg FP % of "
        "background pixels, fg lost % of cell pixels)",
        ["changed %", "fixed %", "broken %", "bg FP before %", "bg FP after %", "fg lost %"],
    )
    figures = []
    for n, seed in enumerate(ctx.seeds):
        fg = train(f"binary/seed{seed}", config(seed, s["binary_net"], spec(s["binary_loss"]), binary=True))
        fg = fg[:, 0]
        binary = (fg > opts["tau"]).astype(np.int64)
        baseline = None
        if opts["baseline"]:  # the nnunet recipe: Dice + CE, deep supervision, a third of each batch on foreground
            batches = [{"name": "train", "epochs": s["epochs"], "batches": "foreground"}]  # whole images
            cfg = config(seed, "unet", "dice_ce", deep=True, sampler="foreground", stages=batches)
            baseline = train(f"nnunet/seed{seed}", cfg).argmax(1)
        for i, model in enumerate(multis):
            key = f"multi/{model.tag}/seed{seed}" if model.tag else f"multi/seed{seed}"
            multi = train(key, config(seed, model.net, spec(model.loss)))
            sets = {"multi": multi.argmax(1), "binary": binary}
            for mode in COMBINE_MODES:
                sets[f"reuse_{mode}"] = combine_predictions(multi, fg, tau=opts["tau"], mode=mode)
            if baseline is not None and i == 0:  # one baseline row per seed
                sets["nnunet"] = baseline
            for name, labels in sets.items():
                if name == "binary":
                    continue
                sc = _scores(labels, target, num_classes)
                row = rows[name] if name == "nnunet" else model.prefix + rows[name]
                main.add(row, {m: sc[k] for m, k in _MAIN_METRICS.items()}, seed=seed)
                if name in ("multi", "nnunet"):  # per-case test scores of the rows that are run folders
                    run = ctx.run_dir / "runs" / (key if name == "multi" else f"nnunet/seed{seed}")
                    claims.keep_cases(main, row, seed, run)
                per_dice.add(row, _per_class(sc, "dice", names), seed=seed)
                per_iou.add(row, _per_class(sc, "iou", names), seed=seed)
            for mode in COMBINE_MODES:
                change.add(model.prefix + mode, _change_stats(sets["multi"], sets[f"reuse_{mode}"], target), seed=seed)
            where = [model.tag] if model.tag else []
            if n == 0 or opts["all_seed_predictions"]:
                _save_prediction_sets(ctx.artefacts("predictions", f"seed{seed}", *where), splits.test, sets)
            if n == 0:
                name = "_".join([f"test_seed{seed}", *where])
                figures.append(_figure(ctx.artefacts("figures") / f"{name}.png", splits.test, sets))
        bs = _scores(binary, (target > 0).astype(np.int64), 2)
        binary_table.add(
            "binary model",
            {
                "Dice fg": bs["mean_dice_fg"],
                "mIoU": bs["mean_iou"],
                "mAP": bs["mean_precision"],
                "mean recall": bs["mean_recall"],
                "bg precision": bs["precision"][0],
                "bg recall": bs["recall"][0],
            },
            seed=seed,
        )
        # Tables after every seed: an experiment stopped early still reports the seeds it finished.
        multi_text = (
            f"Multi-class {s['net']} with loss `{s['multi_loss']}`"
            if not multis[0].tag
            else f"Multi-class: the {len(multis)} combinations of seed table {multis[0].table}"
        )
        deeplab = "deeplabv3plus" in {m.net for m in multis} | {s["binary_net"]}
        intro = (
            f"Seeds finished: {n + 1} of {len(ctx.seeds)}. {multi_text}, "
            f"binary {s['binary_net']} with loss `{s['binary_loss']}` (Focal class weights: function "
            f"{opts['focal_weight']}, OB hard_num {opts['hard_num']}); width {s['width']}"
            f"{', DeepLabv3+ on ' + s['backbone'] if deeplab else ''}, {s['epochs']} epochs, batch {s['batch_size']}, "
            f"lr {s['lr']:g}, {opts['optimizer']}. Data {data}; {len(splits.train)} train / {len(splits.val)} val / "
            f"{len(splits.test)} test images; best.pt chosen on validation mean foreground Dice. Figure columns: "
            f"image, truth, {', '.join(sets)}."
        )
        results = ctx.write_report(intro, figures)
    return results


def _claim_rows(ctx, s: Mapping[str, Any], data: dict):
    """The claims rows (label -> (run key, config of a seed)), the method's step budget, the
    recipe's epochs, the splits and the dataset recipe's name (``None`` on phantoms).

    Rows: the plain multi-class model of the dataset recipe at its own schedule, the same model
    given the method's total steps (binary part + multi-class stage), and reuse background as one
    composite recipe (:class:`~medbalance.methods.reuse_background.ReuseBackgroundMethod`, the
    paper's combination), whose test evaluation scores the combined prediction.
    """
    from medbalance.config import method_of
    from medbalance.data.build import build_splits

    opts = ctx.options
    native = data["kind"] != "nuclei_phantom" and not opts["size"]
    recipe = claims.dataset_recipe(ctx.data) if native else None
    if recipe is not None:  # every row starts from the dataset's built-in recipe, its data section too
        data = dict(recipe["data"])
    fallback = {
        "epochs": s["epochs"],
        "batch_size": s["batch_size"],
        "lr": s["lr"],
        "optimizer": opts["optimizer"],
        "model": {"name": s["net"], "base_channels": s["width"]},
        "loss": loss_spec(s["multi_loss"], focal_weight=opts["focal_weight"], hard_num=opts["hard_num"]),
    }
    base = claims.claims_base(recipe, fallback, opts)

    def config(seed: int, **changes: Any):
        return ctx.base_config(**{**base, "data": data, "seed": seed, **changes})

    def reuse(seed: int):
        method = {"name": "reuse_background", "tau": opts["tau"], "mode": "paper"}
        if s["binary_net"] != s["net"] and recipe is None:
            method["binary_model"] = {"name": s["binary_net"]}
        return config(seed, method=method)

    splits = build_splits(config(ctx.seeds[0]))
    if splits.test is None:
        raise ValueError("reuse-background needs a test split (set data test_fraction > 0)")
    steps, _ = claims.epoch_steps(config(ctx.seeds[0]), splits.train)
    method_cfg = reuse(ctx.seeds[0])
    method = method_of(method_cfg)
    binary_epochs = method.options.binary_epochs or method_cfg.epochs
    stages = method.default_stages(method_cfg)
    budget = claims.StepBudget({"binary": binary_epochs, **{st["name"]: st["epochs"] for st in stages}}, steps)
    e = base["epochs"]
    rows = {
        "plain (recipe schedule)": ("plain", lambda seed: config(seed)),
        "plain (equal steps)": ("plain_equal", lambda seed: config(seed, epochs=budget.epochs)),
        "reuse background": ("reuse", reuse),
    }
    return rows, budget, e, splits, claims.DATASET_RECIPES[ctx.data] if recipe is not None else None


def _claims(ctx, s: Mapping[str, Any], data: dict) -> dict:
    """Issue 22: reuse background vs plain at equal optimiser steps (``--set claims=true``)."""
    opts = ctx.options
    rows, budget, e, splits, recipe = _claim_rows(ctx, s, data)
    steps = budget.steps_per_epoch
    origin = f"the built-in recipe '{recipe}'" if recipe else f"the '{ctx.scale}' preset (no dataset recipe)"
    note = (
        f"Test split of '{ctx.data}', {len(splits.test)} cases; every row starts from {origin}: its data section, "
        "patch size, sampler, augmentation, network, loss, batch, learning rate. Dice: mean over the test cases "
        "of the per-case mean foreground Dice (the mean over the cell classes in the case's truth; a class absent "
        "from it is left out, evaluation.empty 'skip', and a case with no cell class is left out); 'Dice <class>': "
        "mean over the cases whose truth holds the class. 'reuse background - row': mean over cases of the "
        "per-case difference of mean foreground Dice (each case averaged over the seeds) with its 95% "
        "percentile-bootstrap interval over cases (per class: results.json); verdict 'holds' when the interval is "
        "above 0, 'does not hold' below 0, 'no difference shown' when it contains 0. reuse background: one "
        f"composite run, tau {opts['tau']:g}, the paper's combination, best.pt chosen on the combined validation "
        f"score. Optimiser steps: reuse background {budget.text()}; plain (equal steps): {budget.epochs} epochs "
        f"x {steps} = {budget.epochs * steps}; plain (recipe schedule): {e} x {steps} = {e * steps}. Plateau: seeds "
        "whose last quarter of validation epochs improved the best score by less than 0.005."
    )
    return claims.run_claims(
        ctx,
        rows,
        method="reuse background",
        baselines=list(rows)[:2],
        converged=["plain (recipe schedule)"],
        note=note,
        extra={"steps": {"reuse": budget.to_dict(), "equal_epochs": budget.epochs, "recipe_epochs": e}},
        intro=f"Reuse background (seed 002) claims on {ctx.data}.",
    )


@dataclass(frozen=True)
class _Multi:
    """One multi-class model of the experiment: its run-key tag and row prefix ("" for the single model)."""

    net: str
    loss: str
    tag: str = ""
    prefix: str = ""
    table: str = ""


def _multi_models(s: Mapping[str, Any], combos: str, data_kind: str) -> list[_Multi]:
    """The single multi-class model of ``s``, or one per combination of seed table 4.15 / 4.17."""
    if not combos:
        return [_Multi(s["net"], s["multi_loss"])]
    name, chosen = combos_for(combos, data_kind)
    table = COMBO_TABLES[name][0]
    return [
        _Multi(net, loss, tag=f"combo{k}", prefix=f"{k}: {net} / {loss}: ", table=table)
        for k, (net, loss) in enumerate(chosen, start=1)
    ]
