"""Seed 002's loss study as one command: ``medbalance experiment loss-study``.

Multi-class nuclei segmentation (softmax, background = class 0), five parts chosen with
``--set parts=...`` (the first four by default):

- ``grid``: networks x losses (seed 002 tables 4.3, 4.4, 4.6-4.8, 4.10), with the per-class
  IoU (tables 4.5, 4.9) and the share of the test pixels each class is predicted as (what the
  seed's chapter 3 blames for Focal's low mIoU: background predicted as nuclei).
- ``weights``: Focal with the class-weight functions 1, 2, 3, 5, 6 of SPEC section 3 on one
  network (table 4.12; the weights themselves as in table 4.11).
- ``hard_num``: the online-bootstrapping (OB) loss over a sweep of ``hard_num`` (table 4.13)
  with the per-class share of the selected pixels on the training split (table 4.14) and the
  share of each class's pixels that the selection covers (the seed's explanation of why 4096
  was best on CoNIC).
- ``nnunet``: an nnU-Net-style baseline row (SPEC section 10): U-Net with deep supervision,
  Dice + CE, one third of every batch forced to hold foreground
  (:func:`medbalance.data.samplers.foreground`), and the three rows that drop deep
  supervision, the sampler or both, to tell which ingredient does what.
- ``combos``: the multi-class combinations of seed 002 section 4.6.1 (:data:`SEED_COMBOS`):
  table 4.15 on CoNIC (results: table 4.16) or table 4.17 on MoNuSAC (table 4.18), chosen by
  ``--set combos=conic|monusac`` (``auto``: MoNuSAC data gets 4.17, anything else 4.15), with
  Focal weighted by function 5 and OB at the seed's 4096 hard pixels.

Scores are dataset level, from the confusion matrix of the whole test split pooled (as seed 002
reports them): ``Dice``, ``mIoU``, ``mAP`` (mean precision, the seed's name), ``mRecall``, each
a mean over all classes (background included, as in the seed) and, as ``... fg``, over the
foreground classes only. Every (network, loss, seed) is one resumable run folder; runs shared
by parts (the grid's Focal is the weight part's function 2, its OB the sweep's smallest
``hard_num``) are trained once.

``hard_num`` is a pixel count per image; the seed's values (512 ... 65536) are for 256 x 256
CoNIC patches, and the seed kept the same numbers on 512 x 512 MoNuSAC (where 1024 was best).
``--set hard_num_mode=`` picks ``scaled`` (the default: scaled by the image area,
:func:`scaled_hard_nums`, each row naming its 256 x 256 equivalent), ``absolute`` (the seed's
numbers as they are, :func:`absolute_hard_nums`) or ``both`` (the sweep runs both lists, rows
labelled which; the grid's and the combinations' OB take the absolute value). At 256 x 256 the
two agree and such a value is one row, trained once.

Example:
    >>> loss_spec("dice+focal", hard_num=64)
    [{'name': 'dice'}, {'name': 'focal', 'gamma': 2.0, 'class_weight': 'inverse'}]
    >>> scaled_hard_nums(64 * 64)
    [32, 64, 128, 256, 512, 1024, 2048]
    >>> absolute_hard_nums(64 * 64)
    [512, 1024, 2048, 4096]
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from medbalance._suggest import did_you_mean
from medbalance.data.build import build_splits
from medbalance.data.datasets import Splits
from medbalance.data.stats import class_counts
from medbalance.engine.run import load_run
from medbalance.engine.tasks import SegmentationTask
from medbalance.errors import ConfigError
from medbalance.experiments.runner import ExperimentContext, ResultTable
from medbalance.experiments.seed002.tables import COMBO_TABLES, SEED_COMBOS, combos_for, patch_size
from medbalance.losses import class_weights
from medbalance.losses.bootstrap import hard_pixel_fractions
from medbalance.metrics import segmentation_scores
from medbalance.report.overlays import colorize, save_png, tile_grid, to_rgb

__all__ = [
    "CATALOGUE_LOSSES",
    "COMBO_TABLES",
    "OPTIONS",
    "PARTS",
    "HARD_NUM_MODES",
    "SCALES",
    "SEED_COMBOS",
    "SEED_HARD_NUMS",
    "SEED_LOSSES",
    "SEED_NETS",
    "STUDY_TERMS",
    "WEIGHT_FUNCTIONS",
    "EvalPass",
    "absolute_hard_nums",
    "combos_for",
    "hard_num_rows",
    "loss_spec",
    "run",
    "scaled_hard_nums",
    "table_scores",
]

#: The seed's networks (chapter 4: five nets) plus CE-Net (seed 000's strongest baseline).
SEED_NETS: tuple[str, ...] = ("unet", "unetpp", "unet3plus", "attention_unet", "deeplabv3plus", "cenet")

#: Loss terms by study name; a study loss is one term or several joined by ``+`` (summed,
#: weight 1 each, as the seed's compounds). Focal's per-class weight is the function given
#: by ``focal_weight`` (the seed's grid used function 2, ``inverse``); OB's ``hard_num`` is
#: set per run.
STUDY_TERMS: dict[str, dict[str, Any]] = {
    "ce": {"name": "ce"},
    "wce": {"name": "wce"},
    "focal": {"name": "focal", "gamma": 2.0},
    "dice": {"name": "dice"},
    "iou": {"name": "iou"},
    "tversky": {"name": "tversky"},
    "focal_tversky": {"name": "focal_tversky"},
    "sens_spec": {"name": "sens_spec"},
    "generalized_dice": {"name": "generalized_dice"},
    "exp_log": {"name": "exp_log"},
    "ob": {"name": "ob"},
    "dice_ce": {"name": "dice_ce"},
}

#: Seed 002 chapter 4: five losses (tables 4.3-4.7), then the compounds of Dice, Focal, OB (4.8-4.10).
SEED_LOSSES: tuple[str, ...] = (
    "ce",
    "focal",
    "dice",
    "tversky",
    "ob",
    "dice+focal",
    "dice+ob",
    "focal+ob",
    "dice+focal+ob",
)
#: Seed 003's catalogue, the rest of the library's segmentation losses.
CATALOGUE_LOSSES: tuple[str, ...] = ("wce", "iou", "focal_tversky", "sens_spec", "generalized_dice", "exp_log")

#: Table 4.12's functions by the seed's numbers (4 is only the source of 5 and 6).
WEIGHT_FUNCTIONS: dict[int, str] = {
    1: "uniform",
    2: "inverse",
    3: "exp_increasing",
    5: "exp_decreasing_fg",
    6: "exp_decreasing_fg_nobg",
}

#: Table 4.13's hard-pixel counts, per 256 x 256 image.
SEED_HARD_NUMS: tuple[int, ...] = (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
_SEED_PIXELS = 256 * 256
_FIGURE_IMAGES = 2
#: OB's hard pixels in the grid (section 4.3.1: "only 512 pixels of a 256 x 256 image") and in
#: the combinations of section 4.6.1 ("the best, 4096").
_GRID_HARD_NUM, _COMBO_HARD_NUM = 512, 4096
#: Focal's class weights in the combinations of section 4.6.1: function 5.
_COMBO_FOCAL_WEIGHT = "exp_decreasing_fg"
#: How the ``hard_num`` values follow the image size (see the module docstring).
HARD_NUM_MODES: tuple[str, ...] = ("scaled", "absolute", "both")

PARTS: tuple[str, ...] = ("grid", "weights", "hard_num", "nnunet", "combos")

#: Per scale: phantom data, training length, network width, and what each part runs.
#: ``backbone`` is DeepLabv3+'s encoder (:class:`~medbalance.nets.backbones.ResNetEncoder`).
SCALES: dict[str, dict[str, Any]] = {
    "smoke": {
        "size": 32,
        "n_train": 8,
        "n_val": 4,
        "n_test": 4,
        "epochs": 1,
        "batch_size": 4,
        "base_channels": 4,
        "depth": 2,
        "backbone": "resnet18",
        "nets": ("unet",),
        "losses": ("ce", "dice"),
        "sweep_net": "unet",
        "weight_functions": (1, 5),
        "hard_nums": (32, 128),  # the scaled values swept (hard_num_mode scaled or both)
        "patch_size": "auto",
    },
    "small": {
        "size": 64,
        "n_train": 64,
        "n_val": 16,
        "n_test": 32,
        "epochs": 10,
        "batch_size": 8,
        "base_channels": 8,
        "depth": 3,
        "backbone": "resnet18",
        "nets": ("unet", "attention_unet", "deeplabv3plus"),
        "losses": ("ce", "focal", "dice", "tversky", "ob", "dice+focal"),
        "sweep_net": "attention_unet",
        "weight_functions": tuple(WEIGHT_FUNCTIONS),
        "hard_nums": (32, 256, 1024, 2048),
        "patch_size": "auto",
    },
    "paper": {
        # Seed 002: CoNIC, 4981 patches of 256 x 256, 9:1 train/test (section 4.1); the demo's
        # 10 epochs, batch 1, Adam lr 1e-3 (section 5.4); DeepLabv3+ on ResNet-101 (section 2.1.2)
        # at the paper's widths (stem 64, ASPP 256); the U-Net family at the original papers'
        # 64 channels and 4 downsamplings (the seed names no other width). Whole images, one pass
        # per epoch (``patch_size`` None; "auto" would draw 100 patches of 128 x 128 per epoch).
        "size": 256,
        "n_train": 4000,
        "n_val": 483,
        "n_test": 498,
        "epochs": 10,
        "batch_size": 1,
        "base_channels": 64,
        "depth": 4,
        "backbone": "resnet101",
        "nets": SEED_NETS,
        "losses": SEED_LOSSES + CATALOGUE_LOSSES,
        "sweep_net": "attention_unet",
        "weight_functions": tuple(WEIGHT_FUNCTIONS),
        "hard_nums": None,  # all of SEED_HARD_NUMS, scaled to the image area
        "patch_size": None,
    },
}

#: ``--set`` options; an empty list or 0 means "the scale's preset".
OPTIONS: dict[str, Any] = {
    "parts": list(PARTS[:4]),
    "nets": [],
    "losses": [],
    "sweep_net": "",
    "weight_functions": [],
    "hard_nums": [],
    "hard_num_mode": "scaled",
    "combos": "auto",
    "focal_weight": "inverse",
    "epochs": 0,
    "size": 0,
    "train_limit": 0,
    "lr": 1e-3,
    "patch_size": 0,  # real data at native geometry: N x N training patches (0: the scale's)
}

# Table columns: label -> key of segmentation_scores.
_METRICS: dict[str, str] = {
    "Dice": "mean_dice",
    "mIoU": "mean_iou",
    "mAP": "mean_precision",
    "mRecall": "mean_recall",
    "Dice fg": "mean_dice_fg",
    "mIoU fg": "mean_iou_fg",
}
_NET_LABELS = {
    "unet": "U-Net",
    "unetpp": "U-Net++",
    "unet3plus": "U-Net3+",
    "attention_unet": "AttU-Net",
    "deeplabv3plus": "DeepLabv3+",
    "cenet": "CE-Net",
}


def _terms(loss: str) -> list[str]:
    terms = loss.split("+")
    for term in terms:
        if term not in STUDY_TERMS:
            raise ValueError(
                f"loss {loss!r} has unknown term {term!r} ({did_you_mean(term, list(STUDY_TERMS))}"
                f"expected terms of {', '.join(STUDY_TERMS)} joined by '+')"
            )
    if len(set(terms)) != len(terms):
        raise ValueError(f"loss {loss!r} repeats a term (expected each term at most once)")
    return terms


def loss_spec(loss: str, *, hard_num: int, focal_weight: str = "inverse") -> dict | list[dict]:
    """The :func:`medbalance.losses.build_loss` spec of a study loss.

    Args:
        loss: a term of :data:`STUDY_TERMS` or several joined by ``+`` (``"dice+focal+ob"``).
        hard_num: OB's hard pixels per image.
        focal_weight: Focal's class-weight function (a scheme of
            :func:`medbalance.losses.class_weights`), evaluated on the training split's fractions.

    Raises:
        ValueError: an unknown or repeated term (with the closest known term).

    Example:
        >>> loss_spec("ob", hard_num=256)
        {'name': 'ob', 'hard_num': 256}
    """
    specs = []
    for term in _terms(loss):
        spec = dict(STUDY_TERMS[term])
        if term == "focal":
            spec["class_weight"] = focal_weight
        if term == "ob":
            spec["hard_num"] = int(hard_num)
        specs.append(spec)
    return specs[0] if len(specs) == 1 else specs


def scaled_hard_nums(pixels: int, seed_values: Sequence[int] = SEED_HARD_NUMS) -> list[int]:
    """The seed's ``hard_num`` values (per 256 x 256 image) scaled to images of ``pixels`` pixels.

    Values that would keep more than half of an image are dropped (at 256 x 256 the seed's
    65536 keeps every pixel, which is plain cross entropy); duplicates after rounding too.

    Example:
        >>> scaled_hard_nums(512 * 512)[:3]
        [2048, 4096, 8192]
    """
    if pixels < 1:
        raise ValueError(f"pixels must be >= 1, got {pixels}")
    out: list[int] = []
    for value in seed_values:
        scaled = _scaled(value, pixels)
        if scaled <= pixels // 2 and scaled not in out:
            out.append(scaled)
    return out


def absolute_hard_nums(pixels: int, seed_values: Sequence[int] = SEED_HARD_NUMS) -> list[int]:
    """The seed's ``hard_num`` values as they are, those that an image of ``pixels`` pixels holds.

    At 256 x 256 (CoNIC) and 512 x 512 (MoNuSAC, the seed's best 1024) that is all of table 4.13;
    65536 at 256 x 256 selects every pixel (plain cross entropy), as in the seed.

    Example:
        >>> absolute_hard_nums(256 * 256) == list(SEED_HARD_NUMS)
        True
    """
    if pixels < 1:
        raise ValueError(f"pixels must be >= 1, got {pixels}")
    return [int(v) for v in seed_values if v <= pixels]


def hard_num_rows(
    pixels: int, mode: str, given: Sequence[int] = (), *, scaled: Sequence[int] | None = None
) -> list[tuple[int, str]]:
    """``(hard_num, row label)`` of the sweep for images of ``pixels`` pixels.

    Args:
        pixels: pixels per training image.
        mode: ``"scaled"``, ``"absolute"`` or ``"both"`` (:data:`HARD_NUM_MODES`).
        given: values to sweep instead of the seed's (``--set hard_nums=``), taken as they are.
        scaled: the scaled values (default: :func:`scaled_hard_nums`; a CPU scale's shorter list).

    Example:
        >>> hard_num_rows(128 * 128, "both")[2:4]
        [(512, '512 absolute = scaled (2048 at 256 x 256)'), (1024, '1024 absolute = scaled (4096 at 256 x 256)')]
        >>> hard_num_rows(128 * 128, "scaled")[0]
        (128, '128 scaled (512 at 256 x 256)')
    """
    if mode not in HARD_NUM_MODES:
        raise ValueError(f"hard_num_mode must be one of {', '.join(HARD_NUM_MODES)}, got {mode!r}")
    if given:
        return [(int(h), f"{h} ({_seed_equivalent(h, pixels)} at 256 x 256)") for h in given]
    absolute = absolute_hard_nums(pixels) if mode != "scaled" else []
    scaled = [] if mode == "absolute" else list(scaled_hard_nums(pixels) if scaled is None else scaled)
    rows = []
    for h in absolute:  # a value in both lists is one run: one row
        both = f" = scaled ({_seed_equivalent(h, pixels)} at 256 x 256)" if h in scaled else ""
        rows.append((h, f"{h} absolute{both}"))
    rows += [(h, f"{h} scaled ({_seed_equivalent(h, pixels)} at 256 x 256)") for h in scaled if h not in absolute]
    return sorted(rows)


def _scaled(seed_value: int, pixels: int) -> int:
    """A hard-pixel count of a 256 x 256 image scaled to an image of ``pixels`` pixels."""
    return max(1, round(seed_value * pixels / _SEED_PIXELS))


def _seed_equivalent(hard_num: int, pixels: int) -> int:
    return round(hard_num * _SEED_PIXELS / pixels)


def table_scores(cm: Tensor) -> dict[str, Any]:
    """Table metrics (:data:`_METRICS` labels) and per-class lists from a pooled ``(C, C)`` matrix.

    Returns:
        ``{"Dice": ..., "mIoU": ..., ...}`` plus ``iou`` (per-class list), ``absent`` (classes
        neither labelled nor predicted) and ``predicted_share`` / ``true_share`` (fraction of
        the pixels predicted as / labelled with each class).

    Example:
        >>> cm = torch.tensor([[8, 0], [1, 1]])
        >>> s = table_scores(cm)
        >>> round(s["mIoU"], 4), s["predicted_share"]
        (0.6944, [0.9, 0.1])
    """
    scores = segmentation_scores(cm)
    total = float(cm.sum())
    out: dict[str, Any] = {label: scores[key] for label, key in _METRICS.items()}
    out["iou"] = scores["iou"]
    out["absent"] = list(scores["absent_classes"])
    out["predicted_share"] = (cm.sum(0).double() / total).tolist()
    out["true_share"] = (cm.sum(1).double() / total).tolist()
    return out


class EvalPass:
    """``Engine.evaluate`` callback: the label maps of some images and, with ``hard_num``, how
    many pixels of each class the OB loss would keep. The pass's pooled confusion matrix is
    its :class:`~medbalance.metrics.evaluation.Evaluation`'s (``Engine.evaluate(..., full=True)``).

    Args:
        num_classes: classes of the task (background included).
        hard_num: OB's hard pixels per image; ``None`` skips the hard-pixel count.
        keep: dataset indices (``batch["index"]``) whose predicted label maps are kept in
            :attr:`kept`, for figures.

    Example:
        >>> p = EvalPass(3, hard_num=2)
        >>> target = torch.tensor([[[0, 1], [2, 0]]])
        >>> logits = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float()
        >>> p({"target": target}, logits, target)
        >>> p.selected.tolist()
        [1.0, 0.0, 1.0]
    """

    def __init__(self, num_classes: int, *, hard_num: int | None = None, keep: Sequence[int] = ()) -> None:
        self.num_classes = num_classes
        self.hard_num = hard_num
        self.keep = set(keep)
        self.selected = torch.zeros(num_classes, dtype=torch.float64)
        self.kept: dict[int, np.ndarray] = {}

    def __call__(self, batch: dict, logits: Tensor, labels: Tensor) -> None:
        target = batch["target"]
        if self.keep:
            for i, lab in zip(batch["index"].tolist(), labels):
                if i in self.keep:
                    self.kept[i] = lab.cpu().numpy()
        if self.hard_num is not None:
            kept = len(target) * min(self.hard_num, target[0].numel())
            self.selected += hard_pixel_fractions(logits, target, hard_num=self.hard_num).double().cpu() * kept


@dataclass
class _Plan:
    """Everything ``run`` resolved from the scale preset and the options."""

    parts: tuple[str, ...]
    nets: tuple[str, ...]
    losses: tuple[str, ...]
    sweep_net: str
    weight_functions: tuple[int, ...]
    hard_nums: tuple[int, ...] | None
    hard_num_mode: str
    combos: str
    focal_weight: str
    epochs: int
    size: int
    train_limit: int
    lr: float
    preset: dict = field(repr=False, default_factory=dict)


def _choice_list(name: str, values: Sequence[Any], known: Sequence[Any]) -> tuple:
    for value in values:
        if value not in known:
            hint = did_you_mean(str(value), [str(k) for k in known])
            raise ConfigError(f"option '{name}' has {value!r} ({hint}expected some of: {', '.join(map(str, known))})")
    if not values:
        raise ConfigError(f"option '{name}' is empty (expected some of: {', '.join(map(str, known))})")
    return tuple(values)


def _int_list(name: str, values: Sequence[Any]) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in values)
    except (TypeError, ValueError):
        raise ConfigError(f"option '{name}' expects integers like 256,1024, got {list(values)!r}") from None
    if any(v < 1 for v in out):
        raise ConfigError(f"option '{name}' expects integers >= 1, got {list(out)!r}")
    return out


def _plan(ctx: ExperimentContext) -> _Plan:
    o, preset = ctx.options, SCALES[ctx.scale]
    nets = _choice_list("nets", o["nets"] or preset["nets"], SEED_NETS)
    losses = tuple(o["losses"] or preset["losses"])
    for loss in losses:
        try:
            _terms(loss)
        except ValueError as exc:
            raise ConfigError(f"option 'losses': {exc}") from None
    sweep_net = o["sweep_net"] or preset["sweep_net"]
    _choice_list("sweep_net", [sweep_net], SEED_NETS)
    functions = _choice_list(
        "weight_functions",
        _int_list("weight_functions", o["weight_functions"] or preset["weight_functions"]),
        tuple(WEIGHT_FUNCTIONS),
    )
    if o["focal_weight"] not in WEIGHT_FUNCTIONS.values():
        raise ConfigError(
            f"option 'focal_weight' is {o['focal_weight']!r} (expected one of: {', '.join(WEIGHT_FUNCTIONS.values())})"
        )
    hard_nums = _int_list("hard_nums", o["hard_nums"]) if o["hard_nums"] else None
    _choice_list("hard_num_mode", [o["hard_num_mode"]], HARD_NUM_MODES)
    _choice_list("combos", [o["combos"]], ("auto", *SEED_COMBOS))
    for name in ("epochs", "size", "train_limit"):
        if o[name] < 0:
            raise ConfigError(f"option '{name}' must be >= 0 (0: the scale's preset), got {o[name]}")
    return _Plan(
        parts=_choice_list("parts", o["parts"], PARTS),
        nets=nets,
        losses=losses,
        sweep_net=sweep_net,
        weight_functions=functions,
        hard_nums=hard_nums,
        hard_num_mode=o["hard_num_mode"],
        combos=o["combos"],
        focal_weight=o["focal_weight"],
        epochs=o["epochs"] or preset["epochs"],
        size=o["size"] or preset["size"],
        train_limit=o["train_limit"],
        lr=float(o["lr"]),
        preset=preset,
    )


def _net_kwargs(net: str, preset: dict) -> dict[str, Any]:
    """Width (and depth) of a network at this scale; DeepLabv3+ with the scale's ResNet encoder."""
    kwargs: dict[str, Any] = {"base_channels": preset["base_channels"]}
    if net in ("unet", "unetpp", "unet3plus", "attention_unet"):
        kwargs["depth"] = preset["depth"]
    if net == "deeplabv3plus":
        kwargs["backbone"] = preset["backbone"]
    return kwargs


def _fixed_hard_num(seed_value: int, pixels: int, mode: str) -> int:
    """OB's hard pixels where the seed fixed one value (512 in the grid, 4096 in the combinations):
    the value itself (``absolute``, ``both``) or scaled by the image area (``scaled``)."""
    return seed_value if mode != "scaled" else _scaled(seed_value, pixels)


def _loss_key(loss: str, *, hard_num: int, focal_weight: str) -> str:
    terms = _terms(loss)
    return "-".join(
        [loss] + ([f"w{focal_weight}"] if "focal" in terms else []) + ([f"h{hard_num}"] if "ob" in terms else [])
    )


class _Study:
    """Trains (or reloads) one run per (network, loss, seed) and keeps its test scores."""

    def __init__(self, ctx: ExperimentContext, plan: _Plan, splits: Splits, data_section: dict) -> None:
        self.ctx, self.plan, self.splits, self.data_section = ctx, plan, splits, data_section
        self.patch_size = patch_size(
            ctx.options["patch_size"], plan.preset["patch_size"], ragged=splits.train.ragged, data=ctx.data
        )
        self.num_classes = splits.train.num_classes
        self.task = SegmentationTask(self.num_classes)
        self.counts = class_counts(splits.train, self.num_classes)
        self.pixels = int(np.prod(splits.train.images.shape[2:]))
        self.test = splits.test if splits.test is not None else splits.val
        # Figures show the test images with the most classes present.
        classes_present = [len(np.unique(t)) for t in self.test.target]
        self.examples = [int(i) for i in np.argsort(classes_present, kind="stable")[::-1][:_FIGURE_IMAGES]]
        self.results: dict[str, dict[str, Any]] = {}

    def run(
        self,
        net: str,
        loss: str,
        seed: int,
        *,
        hard_num: int,
        focal_weight: str,
        deep_supervision: bool = False,
        fg_sampler: bool = False,
        diagnose_hard: bool = False,
    ) -> dict[str, Any]:
        """Test scores of ``net`` trained with ``loss``, optionally with deep supervision and
        the foreground sampler; ``diagnose_hard`` adds OB's hard-pixel shares on the training split."""
        loss_key = _loss_key(loss, hard_num=hard_num, focal_weight=focal_weight)
        key = f"{net}{'-ds' if deep_supervision else ''}/{loss_key}{'-fg' if fg_sampler else ''}/seed{seed}"
        spec = loss_spec(loss, hard_num=hard_num, focal_weight=focal_weight)
        if key in self.results and (not diagnose_hard or "hard_share" in self.results[key]):
            return self.results[key]
        plan, ctx = self.plan, self.ctx
        net_kwargs = {**_net_kwargs(net, plan.preset), **({"deep_supervision": True} if deep_supervision else {})}
        # whole images (phantoms, resized data): nnU-Net's foreground batches; patches: its patch sampler
        stages = [{"name": "train", "epochs": plan.epochs, "batches": "foreground" if fg_sampler else "shuffle"}]
        cfg = ctx.base_config(
            seed=seed,
            epochs=plan.epochs,
            batch_size=plan.preset["batch_size"],
            lr=plan.lr,
            data=self.data_section,
            model={"name": net, **net_kwargs},
            loss=spec,
            sampler="foreground" if fg_sampler else "uniform",
            stages=stages,
            patch_size=self.patch_size,
        )
        ctx.run(key, cfg)
        engine = load_run(ctx.run_dir / "runs" / key).engine()
        scores = EvalPass(self.num_classes, keep=self.examples)
        evaluation = engine.evaluate(self.test, on_batch=scores, full=True)
        with open(ctx.run_dir / "runs" / key / "history.csv", newline="") as fh:  # every epoch's seconds
            seconds = sum(float(row["seconds"]) for row in csv.DictReader(fh))
        result = {**table_scores(evaluation.confusion), "examples": scores.kept, "train s": seconds}
        if diagnose_hard:
            hard = EvalPass(self.num_classes, hard_num=hard_num)
            engine.evaluate(self.splits.train, on_batch=hard)
            total = float(hard.selected.sum())
            result["hard_share"] = (hard.selected / max(total, 1e-12)).tolist()
            result["hard_coverage"] = (hard.selected / self.counts.double().clamp_min(1)).tolist()
        self.results[key] = result
        return result


def _figure(study: _Study, columns: Sequence[tuple[str, dict]], path: Path) -> Path:
    """Test images (rows) x [image, ground truth, one prediction per run] (columns), names on top."""
    data, gap, head = study.test, 4, 14
    hw = tuple(data.images.shape[2:])
    k = max(1, -(-96 // hw[0]))  # enlarge small images by an integer factor, pixels stay sharp
    names = ["image", "ground truth", *(name for name, _ in columns)]
    width = len(names) * (hw[1] * k + gap)
    canvas = Image.new("RGB", (width, head + len(study.examples) * (hw[0] * k + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    for c, name in enumerate(names):
        draw.text((c * (hw[1] * k + gap) + 2, 1), name, fill="black")
    rows = []
    for i in study.examples:
        panels = [to_rgb(data.images[i], hw), colorize(data.target[i], study.num_classes)]
        rows.append(panels + [colorize(result["examples"][i], study.num_classes) for _, result in columns])
    canvas.paste(Image.fromarray(tile_grid(rows, gap=gap, scale=k)), (0, head))
    return save_png(path, np.asarray(canvas))


def _percent(values: Sequence[float], names: Sequence[str]) -> dict[str, float]:
    return {n: 100.0 * v for n, v in zip(names, values)}


def _per_class_iou(result: dict, names: Sequence[str]) -> dict[str, float]:
    # A class absent from both the test labels and the predictions has no IoU ("-"), not 1.0.
    return {n: float("nan") if i in result["absent"] else v for i, (n, v) in enumerate(zip(names, result["iou"]))}


class _Tables:
    """The three tables of a part: scores, per-class IoU, predicted pixel share."""

    def __init__(
        self, ctx: ExperimentContext, title: str, row_label: str, names: Sequence[str], note: str = ""
    ) -> None:
        self.names = list(names)
        self.main = ctx.table(title, [*_METRICS, "train s"], row_label=row_label, note=note)
        self.iou = ctx.table(f"Per-class IoU: {title}", self.names, row_label=row_label)
        self.share = ctx.table(
            f"Predicted pixel share per class, %: {title}",
            self.names,
            row_label=row_label,
            note="'ground truth' is the test split's own share.",
        )

    def add(self, label: str, result: dict, seed: int) -> None:
        if "ground truth" not in self.share.rows:
            self.share.add("ground truth", _percent(result["true_share"], self.names), seed=0)
        self.main.add(label, result, seed=seed)
        self.iou.add(label, _per_class_iou(result, self.names), seed=seed)
        self.share.add(label, _percent(result["predicted_share"], self.names), seed=seed)


def run(ctx: ExperimentContext) -> dict:
    """Run the parts of the study that ``ctx.options["parts"]`` names and write the report.

    Seeds are the outer loop and the report is rewritten after each, so a long run that is
    stopped still leaves every finished seed's tables (``--resume`` then continues it).
    """
    plan = _plan(ctx)
    p = plan.preset
    section = ctx.data_section(
        {
            "kind": "nuclei_phantom",
            "size": plan.size,
            "n_train": p["n_train"],
            "n_val": p["n_val"],
            "n_test": p["n_test"],
        }
    )
    if ctx.data != "phantom" and ctx.options["size"]:
        section["size"] = plan.size
    base = ctx.base_config(data=section)
    if base.task != "segmentation":
        raise ConfigError(f"the loss study needs segmentation data, but --data {ctx.data} is {base.task}")
    if plan.train_limit:
        section["train_limit"] = plan.train_limit
    splits = build_splits(ctx.base_config(data=section))
    study = _Study(ctx, plan, splits, section)
    names = list(splits.train.class_names)
    fractions = (study.counts.double() / study.counts.sum()).tolist()
    ob_default = _fixed_hard_num(_GRID_HARD_NUM, study.pixels, plan.hard_num_mode)
    ob_combo = _fixed_hard_num(_COMBO_HARD_NUM, study.pixels, plan.hard_num_mode)
    hard_rows = hard_num_rows(study.pixels, plan.hard_num_mode, plan.hard_nums or (), scaled=p["hard_nums"])
    sweep = _NET_LABELS[plan.sweep_net]
    combo_name, combos = combos_for(plan.combos, section["kind"])

    grid = weights = ob_tab = combo_tab = None
    if "grid" in plan.parts or "nnunet" in plan.parts:
        grid = _Tables(
            ctx,
            "networks x losses (seed 002 tables 4.3-4.10)",
            "network / loss",
            names,
            note=f"Focal weighs classes with function '{plan.focal_weight}'; OB keeps {ob_default} pixels per image "
            f"(the seed's 512, {plan.hard_num_mode}). +DS: deep supervision; fg sampler: 1/3 of every batch holds a "
            "foreground class (nnU-Net). Per-class IoU: seed tables 4.5 and 4.9.",
        )
    if "weights" in plan.parts:
        weight_values = ctx.table(
            "Class weights of each function on the training split (seed 002 table 4.11)",
            names,
            row_label="function",
            note="Normalised to sum 1, as the seed; the last row is each class's pixel share.",
        )
        for number in plan.weight_functions:
            scheme = WEIGHT_FUNCTIONS[number]
            weight_values.add(f"{number} {scheme}", dict(zip(names, class_weights(fractions, scheme).tolist())), seed=0)
        weight_values.add("pixel share", dict(zip(names, fractions)), seed=0)
        weights = _Tables(ctx, f"Focal with class-weight functions on {sweep} (seed 002 table 4.12)", "function", names)
    if "hard_num" in plan.parts:
        modes = "given values" if plan.hard_nums else f"hard_num_mode {plan.hard_num_mode}"
        ob_tab = ctx.table(
            f"OB loss hard_num sweep on {sweep} (seed 002 table 4.13)",
            [*_METRICS, "train s"],
            row_label="hard_num",
            note=f"{modes}: 'absolute' rows keep the seed's pixel counts as they are, 'scaled' rows scale them by "
            "the image area (their 256 x 256 equivalent in brackets).",
        )
        hard_share = ctx.table(
            "Share of the selected hard pixels per class, % (seed 002 table 4.14)",
            names,
            row_label="hard_num",
            note="Measured with the trained model (best.pt) over the training split; the seed counted during training.",
        )
        hard_cover = ctx.table(
            "Share of each class's training pixels that OB selects, %",
            names,
            row_label="hard_num",
            note="The seed's explanation of its best hard_num: there the rare classes are covered entirely.",
        )
    if "combos" in plan.parts:
        listed, results, _ = COMBO_TABLES[combo_name]
        combo_tab = _Tables(
            ctx,
            f"Multi-class combinations of seed 002 table {listed} ({combo_name}; results: table {results})",
            "combination",
            names,
            note=f"Focal weighs classes with function 5 ({_COMBO_FOCAL_WEIGHT}); OB keeps {ob_combo} pixels per "
            f"image (the seed's 4096, {plan.hard_num_mode}).",
        )

    intro = _intro(ctx, plan, splits, study)
    figures: list[Path] = []
    for seed in ctx.seeds:
        if "grid" in plan.parts:
            for net in plan.nets:
                for loss in plan.losses:
                    r = study.run(net, loss, seed, hard_num=ob_default, focal_weight=plan.focal_weight)
                    grid.add(f"{_NET_LABELS[net]} / {loss}", r, seed)
        if "nnunet" in plan.parts:
            for ds, fg in ((True, True), (True, False), (False, True), (False, False)):
                r = study.run(
                    "unet",
                    "dice_ce",
                    seed,
                    hard_num=ob_default,
                    focal_weight=plan.focal_weight,
                    deep_supervision=ds,
                    fg_sampler=fg,
                )
                label = f"U-Net{'+DS' if ds else ''} / dice_ce{' / fg sampler' if fg else ''}"
                grid.add(f"nnU-Net style: {label}" if ds and fg else label, r, seed)
        if weights is not None:
            for number in plan.weight_functions:
                scheme = WEIGHT_FUNCTIONS[number]
                r = study.run(plan.sweep_net, "focal", seed, hard_num=ob_default, focal_weight=scheme)
                weights.add(f"{number} {scheme}", r, seed)
        if combo_tab is not None:
            for number, (net, loss) in enumerate(combos, start=1):
                r = study.run(net, loss, seed, hard_num=ob_combo, focal_weight=_COMBO_FOCAL_WEIGHT)
                combo_tab.add(f"{number}: {_NET_LABELS[net]} / {loss}", r, seed)
        if ob_tab is not None:
            for h, label in hard_rows:
                r = study.run(
                    plan.sweep_net, "ob", seed, hard_num=h, focal_weight=plan.focal_weight, diagnose_hard=True
                )
                ob_tab.add(label, r, seed=seed)
                hard_share.add(label, _percent(r["hard_share"], names), seed=seed)
                hard_cover.add(label, _percent(r["hard_coverage"], names), seed=seed)
        if seed == ctx.seeds[0]:
            figures = _figures(ctx, plan, study, seed, ob_default)
        content = ctx.write_report(intro, figures)
        ctx.log.info("%s: seed %d done, report in %s", ctx.name, seed, ctx.run_dir / "results.md")

    findings = {
        part: _best_rows(table)
        for part, table in (
            ("grid", grid and grid.main),
            ("weights", weights and weights.main),
            ("hard_num", ob_tab),
            ("combos", combo_tab and combo_tab.main),
        )
        if table is not None
    }
    return {**content, "findings": findings}


def _figures(ctx: ExperimentContext, plan: _Plan, study: _Study, seed: int, ob_default: int) -> list[Path]:
    """Predictions of the first seed's runs on the same test images (seed 002 figures 4.1, 4.4)."""
    folder, out = ctx.artefacts("predictions"), []
    if "grid" in plan.parts:
        for net in plan.nets:
            runs = [
                (loss, study.run(net, loss, seed, hard_num=ob_default, focal_weight=plan.focal_weight))
                for loss in plan.losses
            ]
            out.append(_figure(study, runs, folder / f"grid_{net}_seed{seed}.png"))
    if "weights" in plan.parts:
        runs = [
            (
                f"{n} {WEIGHT_FUNCTIONS[n]}",
                study.run(plan.sweep_net, "focal", seed, hard_num=ob_default, focal_weight=WEIGHT_FUNCTIONS[n]),
            )
            for n in plan.weight_functions
        ]
        out.append(_figure(study, runs, folder / f"weights_{plan.sweep_net}_seed{seed}.png"))
    return out


def _best_rows(table: ResultTable) -> dict[str, str]:
    """Row with the highest mean per metric (ties: first row)."""
    best = {}
    for metric in ("Dice", "mIoU", "mAP", "mRecall", "mIoU fg"):
        means = {row: table.cell(row, metric)[0] for row in table.rows}
        if means:
            best[metric] = max(means, key=means.get)
    return best


def _intro(ctx: ExperimentContext, plan: _Plan, splits: Splits, study: _Study) -> str:
    p = plan.preset
    shape = "x".join(map(str, splits.train.images.shape[2:]))
    test = splits.test if splits.test is not None else splits.val
    lines = [
        f"Data: {ctx.data} ({len(splits.train)} train / {len(splits.val)} val / {len(test)} test images of {shape} px, "
        f"{study.num_classes} classes). Selection of best.pt: validation mean Dice of the foreground classes; "
        "the test split is only scored.",
        f"Training: {plan.epochs} epochs, batch {p['batch_size']}, Adam lr {plan.lr} with cosine decay, "
        f"weight decay 1e-4; networks at base_channels {p['base_channels']}"
        + (
            f", depth {p['depth']}"
            if any(n in plan.nets for n in ("unet", "unetpp", "unet3plus", "attention_unet"))
            else ""
        )
        + (f", DeepLabv3+ on {p['backbone']}" if "deeplabv3plus" in plan.nets or "combos" in plan.parts else "")
        + ".",
        f"Parts: {', '.join(plan.parts)}; networks: {', '.join(plan.nets)}; losses: {', '.join(plan.losses)}; "
        f"weight functions: {', '.join(map(str, plan.weight_functions))}; sweep network: {plan.sweep_net}.",
        "Metrics: seed 002's, from the test split's pooled confusion matrix: Dice, mIoU, mAP (mean precision) "
        "and mRecall over all classes (background included), 'fg' over the foreground classes only; "
        "'train s' is the wall time of training one run.",
    ]
    left_out = [n for n in SEED_NETS if n not in plan.nets]
    losses_out = [x for x in SEED_LOSSES + CATALOGUE_LOSSES if x not in plan.losses]
    if left_out or losses_out:
        lines.append(
            f"Left out at this scale (time): networks {', '.join(left_out) or '-'}; "
            f"losses {', '.join(losses_out) or '-'} (all of them run at --scale paper, or name them with "
            "--set nets=... --set losses=...)."
        )
    return "\n\n".join(lines)
