"""Wall time of every experiment at ``--scale paper`` on one NVIDIA H100, estimated from FLOPs.

An estimate, not a measurement (no GPU was available): each network of an experiment is built
on the ``meta`` device (shapes only, nothing allocated, nothing computed) and one training step
(forward, loss, backward; the parts a stage freezes get no gradient) and one inference pass are
run under :class:`torch.utils.flop_counter.FlopCounterMode` and a dispatch mode that records
every kernel's FLOPs and bytes. The step counts come from the presets
(``medbalance.experiments.*.SCALES["paper"]``) and from the seeds' datasets (:data:`DATA`):
every row, seed, stage and part (the dual-path discriminators and fold U-Nets), the validation
pass after every epoch and the test predictions.

Time model, per kernel, at two ends of a range (:data:`FAST`, :data:`SLOW`)::

    GPU time  = sum over kernels of max(FLOPs / (compute * peak), bytes / (memory * bandwidth))
    step time = max(GPU time, kernels * launch overhead) + input values * loading time per value

``peak`` is the H100 SXM's dense TF32 tensor-core rate, 494.7 TFLOP/s: runs are fp32 by default
(``precision: 32``) and PyTorch lets cuDNN convolutions use TF32 (``torch.backends.cudnn.
allow_tf32`` defaults to True); ``--precision bf16`` uses the dense BF16 rate, 989.4 TFLOP/s
(``--set`` of the run configs cannot choose it: a `train` recipe can). Bandwidth: HBM3, 3.35
TB/s. Achieved fractions: 50% / 20% of the peak on convolutions and matrix products, 80% / 50%
of the bandwidth on the other kernels; 10 / 25 us of CPU per kernel (eager PyTorch: Python,
dispatch, autograd, launch; ``--measure-overhead`` measured 20-27 us per kernel for whole steps of
narrow copies of the networks on a loaded 2-core CPU, where the kernels themselves cost little);
batches are read in the main process (``num_workers`` 0, the default): 1.0 / 1.8 ns per input
value copied, from the measured 88 us per 3 x 128 x 128 patch on a loaded 2-core machine
(``benchmarks/RESULTS.md``, "Patch sampling"). FLOPs count convolutions and matrix products
only (FlopCounterMode's registry); element-wise kernels enter through their bytes. Memory
(``memory GB (bound)``): every byte the forward pass writes, an upper bound of what autograd
keeps, plus weights, gradients and Adam moments. Not counted: the optimiser step's time,
host-device copies, checkpoint writes, the deterministic algorithms the engine asks for
(``deterministic: true``) and the CPU-side scoring (HD95 / NSD at validation).

Usage::

    python -m benchmarks estimate-gpu [--experiment NAME ...] [--precision tf32|bf16] [--json]
    python -m benchmarks estimate-gpu --measure-overhead
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from medbalance.config import read_yaml
from medbalance.configs import config_path
from medbalance.data.longtail import longtail_targets
from medbalance.engine.sliding_window import window_starts
from medbalance.experiments import baselines, rare_class, seed000, seed001
from medbalance.experiments.seed002 import loss_study, reuse_background
from medbalance.experiments.seed002.tables import SEED_COMBOS
from medbalance.methods.dualpath import DualPathNet
from medbalance.nets import build_net

__all__ = ["DATA", "FAST", "H100", "SLOW", "Gpu", "Efficiency", "StepCost", "Work", "count_step", "estimate", "main"]

log = logging.getLogger("benchmarks")


# ----------------------------------------------------------------------------- assumptions
@dataclass(frozen=True)
class Gpu:
    """Peak rates of one GPU (dense, no sparsity)."""

    name: str
    tf32: float  # FLOP/s
    bf16: float  # FLOP/s
    bandwidth: float  # bytes/s


#: NVIDIA H100 SXM5 80 GB, the datasheet's dense tensor-core rates.
H100 = Gpu("NVIDIA H100 SXM5 80 GB", tf32=494.7e12, bf16=989.4e12, bandwidth=3.35e12)


@dataclass(frozen=True)
class Efficiency:
    """One end of the estimate's range."""

    name: str
    compute: float  # achieved fraction of the peak on convolutions / matrix products
    memory: float  # achieved fraction of the bandwidth on every other kernel
    launch: float  # CPU seconds per launched kernel
    per_value: float  # CPU seconds per input value a batch copies (main-process loading)


FAST = Efficiency("fast", compute=0.5, memory=0.8, launch=10e-6, per_value=1.0e-9)
SLOW = Efficiency("slow", compute=0.2, memory=0.5, launch=25e-6, per_value=1.8e-9)

#: The seeds' datasets as ``--scale paper`` reads them (counts after our splits).
DATA: dict[str, dict] = {
    # CAMUS 2023 release: 500 patients x 2 views x 2 phases, split by patient (val 0.1, test 0.2);
    # frames taken at the seed's 864 x 768 (section 4.1.2; native frames are of that order)
    "camus": {"train": 1400, "val": 200, "test": 400, "frame": (768, 864), "channels": 1},
    # CoNIC: 4981 patches of 256 x 256 x 3, 9:1 train / test, validation out of the train part
    "conic": {"train": 4000, "val": 483, "test": 498, "side": 256, "channels": 3, "classes": 7},
    # BreaKHis: 7909 images of 8 types (444, 1014, 453, 569, 3451, 626, 792, 560); seed 001
    # protocol: 80 per class for test and for validation, 224 x 224 crops
    "breakhis": {"counts": (444, 1014, 453, 569, 3451, 626, 792, 560), "held_out": 80, "side": 224, "channels": 3},
    # Kermany chest X-ray: train 1341 / 3875 + val 8 / 8 (normal / pneumonia); test 234 / 390; 80
    # per class for validation; 224 x 224, one channel (the reader's default)
    "chestxray": {"counts": (1349, 3883), "held_out": 80, "test": 624, "side": 224, "channels": 1},
}

#: The real sets of ``../shared/data`` as their built-in recipes read them (``build_splits``,
#: 2026-12-05): images per split, the frame a validation / test image is inferred at (HC18: at the
#: recipe's spacing 4), channels and classes (with background).
LOCAL: dict[str, dict] = {
    "drive": {"train": 16, "val": 4, "test": 20, "frame": (584, 565), "channels": 3, "classes": 2},
    "hc18": {"train": 105, "val": 13, "test": 32, "frame": (135, 200), "channels": 1, "classes": 2},
    "isbi": {"train": 18, "val": 6, "test": 6, "frame": (512, 512), "channels": 1, "classes": 2},
    "consep": {"train": 352, "val": 80, "test": 224, "frame": (256, 256), "channels": 3, "classes": 5},
    "pneumoniamnist": {"train": 4708, "val": 524, "test": 624, "frame": (28, 28), "channels": 1, "classes": 2},
    "breastmnist": {"train": 546, "val": 78, "test": 156, "frame": (28, 28), "channels": 1, "classes": 2},
}


# ----------------------------------------------------------------------------- counting
#: Kernels that allocate without writing (no launch, no traffic).
_FREE = {torch.ops.aten.empty.memory_format, torch.ops.aten.empty_strided.default, torch.ops.aten.empty_like.default}


def _nbytes(tree) -> float:
    return float(sum(t.numel() * t.element_size() for t in tree_leaves(tree) if isinstance(t, torch.Tensor)))


class _KernelCosts(TorchDispatchMode):
    """FLOPs (FlopCounterMode's formulas) and bytes read + written of every non-view aten op, and
    the bytes written in all (``written``)."""

    def __init__(self) -> None:
        super().__init__()
        self.registry = FlopCounterMode(display=False).flop_registry
        self.flops: list[float] = []
        self.bytes: list[float] = []
        self.written = 0.0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func.is_view or func in _FREE:
            return out
        packet = func._overloadpacket
        self.flops.append(
            float(self.registry[packet](*args, **kwargs, out_val=out)) if packet in self.registry else 0.0
        )
        self.bytes.append(_nbytes((args, kwargs, out)))
        self.written += _nbytes(out)
        return out


@dataclass(frozen=True)
class StepCost:
    """The kernels of one step (or one inference pass) of ``batch`` samples."""

    flops: float  # FlopCounterMode's total
    kernel_flops: np.ndarray = field(repr=False)
    kernel_bytes: np.ndarray = field(repr=False)
    values: int  # input values copied per step (the loading term)
    memory: float = 0.0  # bytes: what the forward pass writes (an upper bound of the activations kept) + weights

    @property
    def kernels(self) -> int:
        return len(self.kernel_flops)

    def seconds(self, gpu: Gpu, eff: Efficiency, *, bf16: bool = False) -> float:
        """Wall seconds of the step under ``eff`` (see the module docstring)."""
        peak = (gpu.bf16 if bf16 else gpu.tf32) * eff.compute
        traffic = self.kernel_bytes * (0.5 if bf16 else 1.0)  # activations in bf16 under autocast
        device = float(np.maximum(self.kernel_flops / peak, traffic / (gpu.bandwidth * eff.memory)).sum())
        return max(device, self.kernels * eff.launch) + self.values * eff.per_value


def _loss(out, outputs: tuple[int, int] | None) -> torch.Tensor:
    """A scalar over every output tensor (deep supervision, both bilateral branches), or over the
    channels ``outputs`` selects (a dual-path stage's loss)."""
    leaves = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
    if outputs is not None:
        leaves = [t[:, slice(*outputs)] for t in leaves]
    return sum(t.float().sum() for t in leaves)


@functools.cache
def count_step(
    key: str,
    factory: Callable[[], torch.nn.Module],
    shape: tuple[int, ...],
    *,
    batch: int,
    train: bool = True,
    trainable: tuple[str, ...] | None = None,
    outputs: tuple[int, int] | None = None,
    pair: bool = False,
) -> StepCost:
    """Count one training step (``train``) or one no-grad forward pass of ``batch`` inputs of
    ``shape`` (``(C, H, W)``) through the network ``factory`` builds, on the meta device.

    Args:
        key: names the network (the cache key with the other arguments).
        factory: builds the network (called under ``torch.device("meta")``).
        trainable: parameter-name prefixes that get gradients (None: all).
        outputs: ``(start, stop)`` of the output channels the loss sees (None: all outputs).
        pair: the bilateral step: ``model(x, x_r)`` with ``batch`` images per branch.

    Example:
        >>> conv = lambda: torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
        >>> count_step("conv", conv, (3, 16, 16), batch=2, train=False).flops == 2 * 2 * 3 * 8 * 9 * 16 * 16
        True
    """
    with torch.device("meta"):
        model = factory()
        x = torch.empty(batch, *shape)
    model.train(train)
    for name, p in model.named_parameters():
        p.requires_grad_(train and (trainable is None or name.startswith(trainable)))
    with FlopCounterMode(display=False) as counter, _KernelCosts() as kernels:
        if train:
            loss = _loss(model(x, x) if pair else model(x), outputs)
            activations = kernels.written
            loss.backward()
        else:
            with torch.no_grad():
                model(x)
            activations = 0.0
    values = (2 if pair else 1) * batch * math.prod(shape)
    # weights, gradients and two Adam moments of the trained parameters, float32
    weights = sum(p.numel() * (16 if p.requires_grad else 4) for p in model.parameters())
    cost = StepCost(
        counter.get_total_flops(), np.asarray(kernels.flops), np.asarray(kernels.bytes), values, activations + weights
    )
    if not math.isclose(float(cost.kernel_flops.sum()), cost.flops, rel_tol=1e-3):
        log.warning(
            "%s: per-kernel FLOPs %.4g differ from FlopCounterMode's %.4g", key, cost.kernel_flops.sum(), cost.flops
        )
    return cost


# ----------------------------------------------------------------------------- work of an experiment
@dataclass(frozen=True)
class Work:
    """``runs`` identical runs (seeds x rows) of one network: ``steps`` training steps of ``batch``
    inputs of ``shape`` each, and ``infer`` inference inputs (images or sliding windows) of that shape."""

    part: str
    key: str
    factory: Callable[[], torch.nn.Module] = field(repr=False)
    shape: tuple[int, ...]
    batch: int
    steps: int
    runs: int
    infer: int = 0
    trainable: tuple[str, ...] | None = None
    outputs: tuple[int, int] | None = None
    pair: bool = False
    later_stage: bool = False  # a later stage of runs counted by an earlier Work

    def flops(self) -> float:
        total = self.steps * self.train_cost().flops
        if self.infer:
            total += self.infer * self.infer_cost().flops / self.batch
        return total * self.runs

    def seconds(self, gpu: Gpu, eff: Efficiency, *, bf16: bool = False) -> float:
        total = self.steps * self.train_cost().seconds(gpu, eff, bf16=bf16)
        if self.infer:  # inference in batches of the training batch size
            total += math.ceil(self.infer / self.batch) * self.infer_cost().seconds(gpu, eff, bf16=bf16)
        return total * self.runs

    def train_cost(self) -> StepCost:
        return count_step(
            self.key,
            self.factory,
            self.shape,
            batch=self.batch,
            trainable=self.trainable,
            outputs=self.outputs,
            pair=self.pair,
        )

    def infer_cost(self) -> StepCost:
        return count_step(self.key, self.factory, self.shape, batch=self.batch, train=False)


@functools.cache
def _net(name: str, in_channels: int, num_classes: int, **kwargs) -> tuple[str, Callable[[], torch.nn.Module]]:
    key = f"{name}({in_channels}->{num_classes}, {', '.join(f'{k}={v}' for k, v in sorted(kwargs.items()))})"
    return key, functools.partial(build_net, name, in_channels=in_channels, num_classes=num_classes, **kwargs)


def _windows(frame: Sequence[int], patch: int | Sequence[int], overlap: float = 0.5) -> int:
    """Sliding windows over a frame: what validation and test infer per image."""
    patch = (patch,) * len(frame) if isinstance(patch, int) else tuple(patch)
    return math.prod(len(starts) for starts in window_starts(tuple(frame), patch, overlap))


def dualpath_work() -> list[Work]:
    """``experiment dualpath --scale paper --data CAMUS`` (seed 000): the comparison rows, the five
    alphas (sweep on every seed), the oof dual-path with its K fold U-Nets; all at native geometry."""
    p, d = seed000.SCALES["paper"], DATA["camus"]
    seeds, c, patch = 3, d["channels"], p["patch_size"]
    shape, windows = (c, patch, patch), _windows(d["frame"], patch)
    steps, epochs = p["steps"], p["epochs"]
    val = d["val"] * windows  # inference inputs of one validation pass
    test = d["test"] * windows
    kw = {"base_channels": p["width"], "depth": p["depth"]}
    work = []
    for row, (name, extra) in {
        "U-Net": ("unet", kw),
        "U-Net++": ("unetpp", kw),
        "CE-Net": ("cenet", {"base_channels": p["width"]}),
        "nnU-Net-style (deep supervision)": ("unet", {**kw, "deep_supervision": True}),
    }.items():
        key, factory = _net(name, c, 1, **extra)
        work.append(
            Work(f"baseline {row}", key, factory, shape, p["batch_size"], epochs * steps, seeds, epochs * val + test)
        )
    # the dual-path model: step 1 paths (fusion frozen), step 2 fusion (paths frozen), step 3 all;
    # the main row (alpha 0.5, 'train' maps), then the sweep's (the other alphas, the 'oof' maps)
    dual_key = f"dualpath(width {p['width']}, fusion {p['fusion_channels']})"
    dual = functools.partial(
        DualPathNet, c, base_channels=p["width"], depth=p["depth"], fusion_channels=p["fusion_channels"]
    )
    unet_key, unet = _net("unet", c, 1, **kw)
    stages = (
        ("step 1 (paths)", epochs, ("mac.", "mic."), (1, 3)),
        ("step 2 (fusion)", epochs, ("fusion.",), (0, 1)),
        ("step 3 (all)", epochs // 4, None, None),
    )
    sweep = len(seed000.ALPHAS)  # four more alphas with 'train' maps, and alpha 0.5 with 'oof' maps
    for label, models in (("dual-path", 1), (f"sweep: {sweep} more dual-path models", sweep)):
        for stage, n, trainable, outputs in stages:
            work.append(
                Work(
                    f"{label}, {stage}",
                    dual_key,
                    dual,
                    shape,
                    p["batch_size"],
                    n * steps,
                    seeds * models,
                    n * val + (test if stage == stages[-1][0] else 0),  # the last step's model is tested
                    trainable=trainable,
                    outputs=outputs,
                    later_stage=stage != stages[0][0],
                )
            )
        # weight maps: the discriminator predicts the training images
        work.append(
            Work(
                f"{label}, weight maps", unet_key, unet, shape, p["batch_size"], 0, seeds * models, d["train"] * windows
            )
        )
    folds = p["folds"]  # the oof model's fold U-Nets, each predicting its held-out fold
    work.append(
        Work(
            f"sweep: oof discriminators ({folds} U-Nets)",
            unet_key,
            unet,
            shape,
            p["batch_size"],
            epochs * steps,
            seeds * folds,
            epochs * val + d["train"] // folds * windows,
        )
    )
    return work


def longtail_work(dataset: str = "breakhis") -> list[Work]:
    """``experiment longtail --scale paper --data BREAKHIS`` (tables 2, 4, 5; ``chestxray``: table 3
    with ``--set tables=false``): every row at its imbalance ratios, three seeds, 200 epochs."""
    p, d = seed001.SCALES["paper"], DATA[dataset]
    held, side, c = d["held_out"], d["side"], d["channels"]
    pool = [n - (2 if dataset == "breakhis" else 1) * held for n in d["counts"]]
    classes, batch, epochs = len(pool), p["batch_size"], p["epochs"]
    train = {ir: sum(longtail_targets(pool, ir)) for ir in p["irs"]}
    val = classes * held
    test = classes * held if dataset == "breakhis" else d["test"]
    arch = {"widths": tuple(p["widths"]), "blocks_per_stage": p["blocks"]}
    irs, first = list(p["irs"]), list(p["table_irs"][:1])
    # (row, network, its arguments, bilateral, the IRs it trains at): tables 2 / 3, then the runs
    # tables 4 and 5 add (BBN and LSKBB are rows of both, trained once)
    rows = [
        ("Focal", "resnet32", {}, False, irs),
        ("LDAM-DRW", "resnet32", {"head": "cosine"}, False, irs),
        ("BBN", "bbn", {"lsk_position": None}, True, irs),
        ("MiSLAS (mixup stage)", "resnet32", {}, False, irs),
        ("LSKBB", "lskbb", {"lsk_position": "residual"}, True, irs),
    ]
    if dataset == "breakhis":
        table5 = list(p["table_irs"])
        rows += [
            ("table 4: ResNet-32 + BiFormer", "bbn", {"attention": "biformer"}, True, first),
            ("table 4: ResNet-32 + SimAM", "bbn", {"attention": "simam"}, True, first),
            (
                "table 4: improved ResNet-32, LSK residual / shortcut",
                "lskbb",
                {"lsk_position": "residual"},
                True,
                first * 2,
            ),
            # ResNet-32 with Focal, DFLCSCE, DFLCE; the improved one with CE (IR 10 is table 4's), Focal, DFLCSCE
            ("table 5: ResNet-32, 3 more losses", "bbn", {"lsk_position": None}, True, table5 * 3),
            (
                "table 5: improved ResNet-32, 3 more losses",
                "lskbb",
                {"lsk_position": "residual"},
                True,
                table5[1:] + table5 * 2,
            ),
        ]
    work = []
    for row, name, extra, pair, at in rows:
        key, factory = _net(name, c, classes, **arch, **extra)
        for ir in at:
            steps = epochs * math.ceil(train[ir] / batch)
            work.append(Work(row, key, factory, (c, side, side), batch, steps, 3, epochs * val + test, pair=pair))
    key, factory = _net("resnet32", c, classes, **arch)
    for ir in irs:  # MiSLAS's classifier re-training, the backbone frozen
        steps = p["classifier_epochs"] * math.ceil(train[ir] / batch)
        work.append(
            Work(
                "MiSLAS (classifier stage)",
                key,
                factory,
                (c, side, side),
                batch,
                steps,
                3,
                p["classifier_epochs"] * val,
                trainable=("classifier",),
                later_stage=True,
            )
        )
    return work


def loss_study_work() -> list[Work]:
    """``experiment loss-study --scale paper --data CONIC`` (seed 002 chapter 4, the default parts
    grid, weights, hard_num, nnunet): whole 256 x 256 images, batch 1, 10 epochs, three seeds."""
    p, d = loss_study.SCALES["paper"], DATA["conic"]
    seeds, side, c, k = 3, d["side"], d["channels"], d["classes"]
    steps = p["epochs"] * math.ceil(d["train"] / p["batch_size"])
    infer = p["epochs"] * d["val"] + d["test"]
    losses = len(p["losses"])
    weights = len(p["weight_functions"]) - 1  # function 2 (inverse) is the grid's Focal run
    hard = len(loss_study.hard_num_rows(side * side, "scaled", (), scaled=p["hard_nums"]))
    work = []

    def add(part: str, net: str, runs: int, extra_infer: int = 0, **extra) -> None:
        key, factory = _net(net, c, k, **loss_study._net_kwargs(net, p), **extra)
        work.append(
            Work(part, key, factory, (c, side, side), p["batch_size"], steps, seeds * runs, infer + extra_infer)
        )

    for net in p["nets"]:
        add(f"grid: {net} x {losses} losses", net, losses)
    add("nnunet: U-Net + DS (+/- fg sampler)", "unet", 2, deep_supervision=True)
    add("nnunet: U-Net (+/- fg sampler)", "unet", 2)
    add(f"weights: {p['sweep_net']} x {weights} functions", p["sweep_net"], weights)
    # hard_num: the grid's OB run is the first row; every row also scores OB's selection on the training split
    add(f"hard_num: {p['sweep_net']} x {hard - 1} values", p["sweep_net"], hard - 1, extra_infer=d["train"])
    grid_ob = work[-1]  # its selection pass on the training split, trained in the grid
    work.append(
        Work(
            "hard_num: the grid's OB run scored on the training split",
            grid_ob.key,
            grid_ob.factory,
            grid_ob.shape,
            grid_ob.batch,
            0,
            seeds,
            d["train"],
        )
    )
    return work


def loss_study_combos_work() -> list[Work]:
    """``experiment loss-study --scale paper --data CONIC --set parts=combos``: the eight
    multi-class combinations of seed 002 table 4.15 (results: table 4.16), three seeds."""
    p, d = loss_study.SCALES["paper"], DATA["conic"]
    side, c, k = d["side"], d["channels"], d["classes"]
    steps = p["epochs"] * math.ceil(d["train"] / p["batch_size"])
    work = []
    for number, (net, loss) in enumerate(SEED_COMBOS["conic"], start=1):
        key, factory = _net(net, c, k, **loss_study._net_kwargs(net, p))
        part = f"{number}: {net} / {loss}"
        work.append(
            Work(part, key, factory, (c, side, side), p["batch_size"], steps, 3, p["epochs"] * d["val"] + d["test"])
        )
    return work


def reuse_background_work() -> list[Work]:
    """``experiment reuse-background --scale paper --data CONIC`` (seed 002 tables 4.19-4.21): the
    binary and multi-class DeepLabv3+ and the nnU-Net-style U-Net, three seeds."""
    p, d = reuse_background.SCALES["paper"], DATA["conic"]
    side, c, k = d["side"], d["channels"], d["classes"]
    steps = p["epochs"] * math.ceil(d["train"] / p["batch_size"])
    infer = p["epochs"] * d["val"] + d["test"]
    deeplab = {"base_channels": p["width"], "backbone": p["backbone"]}
    models = {
        "binary DeepLabv3+": _net("deeplabv3plus", c, 1, **deeplab),
        "multi-class DeepLabv3+": _net("deeplabv3plus", c, k, **deeplab),
        "nnU-Net-style U-Net + DS": _net("unet", c, k, base_channels=p["width"], deep_supervision=True),
    }
    return [
        Work(part, key, factory, (c, side, side), p["batch_size"], steps, len(p["seeds"]), infer)
        for part, (key, factory) in models.items()
    ]


def _recipe_work(name: str, part: str, *, runs: int, epochs_factor: int, deep_supervision: bool = False) -> Work:
    """``runs`` trainings of the built-in recipe ``name`` on its local set (:data:`LOCAL`) at
    ``epochs_factor`` times its epochs: patch batches and sliding-window validation and test for
    segmentation, whole images for classification."""
    raw, d = read_yaml(config_path(name)), LOCAL[name]
    model = dict(raw["model"])
    net = model.pop("name")
    if deep_supervision:
        model["deep_supervision"] = True
    key, factory = _net(net, d["channels"], d["classes"], **model)
    epochs, batch = int(raw["epochs"]) * epochs_factor, int(raw["batch_size"])
    patch = raw.get("patch_size")
    if patch is None:  # classification: every training image once per epoch, whole images at inference
        shape, per_image = (d["channels"], *d["frame"]), 1
        steps = epochs * max(1, d["train"] // batch)
    else:
        overlap = float((raw.get("evaluation") or {}).get("overlap", 0.5))
        shape, per_image = (d["channels"], *patch), _windows(d["frame"], patch, overlap)
        steps = epochs * int(raw["steps_per_epoch"])
    return Work(part, key, factory, shape, batch, steps, runs, (epochs * d["val"] + d["test"]) * per_image)


def baselines_work() -> list[Work]:
    """``experiment baselines --scale paper``: every local set's built-in recipe at 4x its epochs, three seeds."""
    factor = baselines.SCALES["paper"]["epochs_factor"]
    return [_recipe_work(name, name, runs=3, epochs_factor=factor) for name in baselines.OPTIONS["sets"]]


def rare_class_work() -> list[Work]:
    """``experiment rare-class --scale paper``: per set, the nnU-Net-style default row (deep
    supervision) with three seeds, each candidate once (``tune_seeds`` 1) and the selected one on
    two more seeds, every row at the recipe's geometry and 4x its epochs."""
    factor = rare_class.SCALES["paper"]["epochs_factor"]
    tune = int(rare_class.OPTIONS["tune_seeds"])
    work = []
    for name in rare_class.OPTIONS["sets"]:
        multiclass = LOCAL[name]["classes"] > 2
        candidates = sum(1 for c in rare_class.CANDIDATES.values() if multiclass or not c.multiclass)
        work.append(_recipe_work(name, f"{name}: default", runs=3, epochs_factor=factor, deep_supervision=True))
        runs = candidates * tune + 3 - tune  # the selected candidate on the other seeds
        work.append(_recipe_work(name, f"{name}: {candidates} candidates", runs=runs, epochs_factor=factor))
    return work


def measure_overhead(repeats: int = 20) -> dict[str, tuple[int, float]]:
    """The framework's CPU cost per kernel: CPU seconds of a whole training step (forward, backward,
    Adam) of width-4 copies of three networks on tiny inputs, one thread, where the kernels
    compute almost nothing; returns ``{network: (kernels per step, CPU seconds per step)}``."""
    torch.set_num_threads(1)
    cases = {
        "DeepLabv3+ (ResNet-101)": ("deeplabv3plus", {"base_channels": 4, "backbone": "resnet101"}, (3, 32, 32), 1),
        "U-Net + deep supervision": ("unet", {"base_channels": 4, "deep_supervision": True}, (3, 32, 32), 1),
        "BBN (bilateral step)": ("bbn", {"widths": (4, 4, 4)}, (3, 8, 8), 2),
    }
    out = {}
    for label, (name, kwargs, shape, batch) in cases.items():
        torch.manual_seed(0)
        key, factory = _net(name, shape[0], 7, **kwargs)
        net, pair = factory().train(), name == "bbn"
        optimizer = torch.optim.Adam(net.parameters(), 1e-3)
        x = torch.randn(batch, *shape)

        def step() -> None:
            _loss(net(x, x) if pair else net(x), None).backward()
            optimizer.step()
            optimizer.zero_grad()

        for _ in range(3):  # warm-up
            step()
        start = time.process_time()
        for _ in range(repeats):
            step()
        cpu = (time.process_time() - start) / repeats
        out[label] = (count_step(key, factory, shape, batch=batch, pair=pair).kernels, cpu)
    return out


#: What ``python -m benchmarks estimate-gpu`` estimates: one command each (see docs/results/).
PLANS: dict[str, Callable[[], list[Work]]] = {
    "dualpath": dualpath_work,
    "longtail-breakhis": longtail_work,
    "longtail-chestxray": functools.partial(longtail_work, "chestxray"),
    "loss-study": loss_study_work,
    "loss-study-combos": loss_study_combos_work,
    "reuse-background": reuse_background_work,
    "baselines": baselines_work,
    "rare-class": rare_class_work,
}


def estimate(name: str, *, gpu: Gpu = H100, bf16: bool = False) -> dict:
    """Per part and in total: runs, training steps, FLOPs and the hours at both ends of the range."""
    parts: dict[str, dict] = {}
    for w in PLANS[name]():
        row = parts.setdefault(
            w.part, {"runs": 0, "steps": 0, "pflop": 0.0, "hours_fast": 0.0, "hours_slow": 0.0, "memory_gb": 0.0}
        )
        row["memory_gb"] = max(row["memory_gb"], w.train_cost().memory / 1e9 if w.steps else 0.0)
        row["runs"] += w.runs if w.steps and not w.later_stage else 0
        row["steps"] += w.steps * w.runs
        row["pflop"] += w.flops() / 1e15
        row["hours_fast"] += w.seconds(gpu, FAST, bf16=bf16) / 3600
        row["hours_slow"] += w.seconds(gpu, SLOW, bf16=bf16) / 3600
    total = {k: sum(r[k] for r in parts.values()) for k in ("runs", "steps", "pflop", "hours_fast", "hours_slow")}
    total["memory_gb"] = max(r["memory_gb"] for r in parts.values())
    return {
        "experiment": name,
        "gpu": gpu.name,
        "precision": "bf16" if bf16 else "tf32",
        "parts": parts,
        "total": total,
    }


def _table(result: dict) -> str:
    # an experiment under an hour (the CPU-sized recipes at 4x their epochs) is given in minutes
    unit, scale = ("hours", 1) if result["total"]["hours_slow"] >= 1 else ("minutes", 60)
    lines = [
        f"## {result['experiment']} ({result['gpu']}, {result['precision']}; estimate from FLOPs, not measured)",
        "",
        f"| part | runs | training steps | PFLOP | {unit} (fast - slow) | memory GB (bound) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for part, r in [*result["parts"].items(), ("**total**", result["total"])]:
        span = f"{r['hours_fast'] * scale:.1f} - {r['hours_slow'] * scale:.1f}"
        lines.append(f"| {part} | {r['runs']} | {r['steps']:,} | {r['pflop']:,.1f} | {span} | {r['memory_gb']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks estimate-gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", choices=list(PLANS), action="append", help="default: all")
    parser.add_argument("--precision", choices=("tf32", "bf16"), default="tf32")
    parser.add_argument("--json", action="store_true", help="one JSON object per experiment instead of tables")
    parser.add_argument(
        "--measure-overhead", action="store_true", help="time CPU steps of narrow networks: CPU us per kernel"
    )
    args = parser.parse_args(argv)
    if args.measure_overhead:
        for name, (kernels, cpu) in measure_overhead().items():
            sys.stdout.write(
                f"{name}: {kernels} kernels, {cpu * 1e3:.1f} ms CPU per step, {cpu / kernels * 1e6:.1f} us per kernel\n"
            )
        return 0
    for name in args.experiment or list(PLANS):
        result = estimate(name, bf16=args.precision == "bf16")
        sys.stdout.write((json.dumps(result) if args.json else _table(result) + "\n") + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
