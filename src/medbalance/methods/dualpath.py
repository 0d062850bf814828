"""Dual-path framework for intra-class imbalance in binary segmentation (seed 000, SPEC section 5).

A discriminator U-Net trained on (image, GT) splits the target of every training image into
the part it segments (MaC, majority sub-class) and the part it misses (MiC, minority
sub-class). Two soft weight maps follow (:func:`weight_maps`); two U-Nets (:class:`DualPathNet`'s
``mac`` and ``mic`` paths) learn them with BCE, and a small :class:`FusionModule` turns
``P_MaC + P_MiC`` into the final probability map. Training is three :class:`~medbalance.engine.Stage`
objects run by the one :class:`~medbalance.engine.Engine` (:func:`dualpath_stages`): paths
with the fusion frozen, the fusion with the paths frozen, then everything.

Weight maps come from the discriminator's predictions of its own training set (``"train"``,
the paper) or from K-fold out-of-fold predictions (``"oof"``, SPEC 5.1's decision: a network
that memorised its training set leaves MiC empty).

The experiment behind ``medbalance experiment dualpath`` (seed 000's tables) is :func:`run`;
its ``--set`` options are :data:`OPTIONS`.

Reference:
    Lin Xiaolu, "针对类内不平衡医学图像分割的双路径框架" (A dual-path framework for
    intra-class imbalanced medical image segmentation), SUSTech bachelor thesis, 2023.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor, nn

from medbalance.engine.engine import Stage
from medbalance.engine.hooks import Method, MethodOptions
from medbalance.losses.functional import cross_entropy
from medbalance.nets import UNet
from medbalance.nets.blocks import ConvNormAct, conv_layer, init_kaiming_, require_positive_int

__all__ = [
    "ABLATION_ROWS",
    "OPTIONS",
    "OUTPUT_CHANNELS",
    "SCALES",
    "DualPathLoss",
    "DualPathMethod",
    "DualPathNet",
    "DualPathOptions",
    "FusionModule",
    "ablation_labels",
    "dualpath_loss",
    "dualpath_stages",
    "kfold_indices",
    "run",
    "split_mac_mic",
    "weight_maps",
]

#: Channels of :class:`DualPathNet`'s output: the fused logit first, so that a binary
#: :class:`~medbalance.engine.tasks.SegmentationTask` (which reads channel 0) scores the final map.
OUTPUT_CHANNELS = ("fusion", "mac", "mic")

#: Rows of seed 000's ablation table computed from one dual-path output (SPEC 5.7).
ABLATION_ROWS = ("MaC", "MaC+MiC", "MaC+MiC+Fusion")

#: Presets per scale. ``size`` is the phantom side, ``real_size`` the side real images are
#: resized to; ``epochs`` trains the baselines and dual-path steps 1 and 2, step 3 gets
#: ``epochs // 4`` (the paper: 200 / 200 / 50); ``sweep_seeds`` seeds run the sweeps.
# fmt: off
SCALES: dict[str, dict[str, Any]] = {
    "smoke": dict(
        size=32, real_size=32, n_train=12, n_val=4, n_test=4, width=4, depth=2, fusion_channels=4,
        epochs=1, folds=2, batch_size=4, lr=1e-3, sweep_seeds=1,
    ),
    "small": dict(
        size=64, real_size=128, n_train=128, n_val=32, n_test=32, width=8, depth=4, fusion_channels=8,
        epochs=16, folds=5, batch_size=8, lr=1e-3, sweep_seeds=1,
    ),
    "paper": dict(
        size=256, real_size=256, n_train=576, n_val=64, n_test=160, width=64, depth=4, fusion_channels=16,
        epochs=200, folds=5, batch_size=8, lr=1e-4, sweep_seeds=3,
    ),
}
# fmt: on

#: ``--set`` options of ``medbalance experiment dualpath`` (0 / empty: the scale's default).
OPTIONS: dict[str, object] = {
    "alpha": 0.5,  # weight of the other sub-class in each weight map (SPEC 5.2)
    "weight_maps": "train",  # "train" (the paper; the main rows) or "oof" (K-fold out-of-fold, an extra row)
    "folds": 0,  # K of the out-of-fold weight maps
    "size": 0,  # image side
    "width": 0,  # base_channels of every network
    "epochs": 0,  # epochs of the baselines and of dual-path steps 1 and 2 (step 3: a quarter)
    "lr": 0.0,  # initial learning rate of every stage
    "batch_size": 0,  # training batch size (small real sets: a smaller batch gives more steps)
    "sweep": True,  # also run the alpha sweep and the train-vs-oof comparison
}


def _binary_map(name: str, x: Tensor) -> Tensor:
    """``(N, H, W)`` view of a ``(N, H, W)`` or ``(N, 1, H, W)`` tensor."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, found {type(x).__name__}")
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 3:
        raise ValueError(f"{name} must have shape (N, H, W) or (N, 1, H, W), found {tuple(x.shape)}")
    return x


def split_mac_mic(pred_prob: Tensor, target: Tensor, *, threshold: float = 0.5) -> tuple[Tensor, Tensor]:
    """Split the foreground of ``target`` into what a discriminator finds (MaC) and misses (MiC).

    ``P = pred_prob > threshold``; ``MaC = P AND GT`` (correctly segmented majority),
    ``MiC = GT AND NOT P`` (under-segmented minority). False positives stay background
    (SPEC 5.1).

    Args:
        pred_prob: discriminator foreground probabilities ``(N, H, W)`` or ``(N, 1, H, W)``
            in ``[0, 1]``.
        target: binary ground truth of the same spatial shape, integer / bool ``{0, 1}``.
        threshold: probability above which a pixel is predicted foreground, in ``(0, 1)``.

    Returns:
        ``(mac, mic)``: float32 ``(N, H, W)`` maps in ``{0, 1}``, disjoint, summing to ``target``.

    Example:
        >>> p = torch.tensor([[[0.9, 0.2, 0.8, 0.1]]])
        >>> gt = torch.tensor([[[1, 1, 0, 0]]])
        >>> mac, mic = split_mac_mic(p, gt)
        >>> mac.tolist(), mic.tolist()
        ([[[1.0, 0.0, 0.0, 0.0]]], [[[0.0, 1.0, 0.0, 0.0]]])
    """
    prob, gt = _binary_map("pred_prob", pred_prob), _binary_map("target", target)
    if prob.shape != gt.shape:
        raise ValueError(f"pred_prob has shape {tuple(prob.shape)} but target has {tuple(gt.shape)}")
    if not prob.dtype.is_floating_point:
        raise TypeError(f"pred_prob must be a float tensor of probabilities, found dtype {prob.dtype}")
    if gt.dtype.is_floating_point or gt.dtype.is_complex:
        raise TypeError(f"target must be an integer or bool label map, found dtype {gt.dtype}")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), found {threshold!r}")
    if prob.numel():
        low, high = torch.aminmax(prob)
        if low < 0 or high > 1:
            raise ValueError(
                f"pred_prob must hold probabilities in [0, 1], found values in [{float(low):.4g}, {float(high):.4g}] "
                "(apply a sigmoid to logits first)"
            )
        bad = gt[(gt != 0) & (gt != 1)]
        if bad.numel():
            raise ValueError(f"target must be binary (values in {{0, 1}}), found label {int(bad[0])}")
    fg = gt.bool()
    found = prob > threshold
    return (fg & found).float(), (fg & ~found).float()


def weight_maps(mac: Tensor, mic: Tensor, *, alpha: float = 0.5) -> tuple[Tensor, Tensor]:
    """Soft targets of the two paths: ``W_MaC = MaC + alpha * MiC``, ``W_MiC = MiC + alpha * MaC``.

    Background is 0 in both. ``alpha`` in ``(0, 1)``: 0 would teach each path that the other
    sub-class is background, 1 would make both maps the plain binary target (SPEC 5.2).

    Args:
        mac: MaC map ``(N, H, W)`` in ``{0, 1}`` (from :func:`split_mac_mic`).
        mic: MiC map of the same shape, disjoint from ``mac``.
        alpha: weight of the other sub-class.

    Returns:
        ``(w_mac, w_mic)``: float32 ``(N, H, W)`` maps with values in ``{0, alpha, 1}``.

    Example:
        >>> mac, mic = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 1.0, 0.0]])
        >>> [w.tolist() for w in weight_maps(mac, mic, alpha=0.5)]
        [[[1.0, 0.5, 0.0]], [[0.5, 1.0, 0.0]]]
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1) (0 confuses the other sub-class with background), found {alpha!r}")
    if not isinstance(mac, Tensor) or not isinstance(mic, Tensor):
        raise TypeError("mac and mic must be torch.Tensors")
    if mac.shape != mic.shape:
        raise ValueError(f"mac has shape {tuple(mac.shape)} but mic has {tuple(mic.shape)}")
    mac, mic = mac.float(), mic.float()
    if ((mac != 0) & (mac != 1)).any() or ((mic != 0) & (mic != 1)).any():
        raise ValueError("mac and mic must be binary maps with values in {0, 1}")
    if (mac * mic).any():
        raise ValueError("mac and mic overlap; expected disjoint maps (a pixel is MaC or MiC, not both)")
    return mac + alpha * mic, mic + alpha * mac


def kfold_indices(n: int, folds: int, seed: int) -> list[np.ndarray]:
    """Seeded partition of ``range(n)`` into ``folds`` sorted index arrays of near-equal size.

    Example:
        >>> [len(f) for f in kfold_indices(11, 3, seed=0)]
        [4, 4, 3]
    """
    if folds < 2 or folds > n:
        raise ValueError(f"folds must be in [2, {n}] for {n} training images, found {folds}")
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, folds)]


class FusionModule(nn.Module):
    """Two Conv-BatchNorm-ReLU groups and a 1x1 conv: ``P_MaC + P_MiC`` -> final logit (SPEC 5.4).

    The paper ends with a sigmoid; this module returns the logit (every medbalance loss takes
    logits), so ``torch.sigmoid(fusion(x))`` is the paper's output.

    Args:
        channels: width of the two groups (not given in the paper; **Default** 16).
        norm: normalisation of the groups (the paper: ``"batch"``).

    Shape:
        ``(N, 1, H, W) -> (N, 1, H, W)``.
    """

    def __init__(self, *, channels: int = 16, norm: str = "batch") -> None:
        super().__init__()
        require_positive_int("channels", channels)
        self.body = nn.Sequential(
            ConvNormAct(1, channels, norm=norm),
            ConvNormAct(channels, channels, norm=norm),
            conv_layer(channels, 1, kernel_size=1),
        )
        init_kaiming_(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class DualPathNet(nn.Module):
    """MaC U-Net, MiC U-Net and the fusion module in one module (SPEC 5.3-5.4).

    Parameters are named ``mac.*``, ``mic.*`` and ``fusion.*``, the prefixes
    :func:`dualpath_stages` trains and freezes.

    Args:
        in_channels: image channels.
        base_channels: width of both U-Nets (64 in the paper).
        depth: downsamplings of both U-Nets.
        fusion_channels: width of the fusion module.
        norm: normalisation of every block.
        paths: the MaC and MiC networks (one output channel each) instead of two U-Nets of
            ``base_channels`` / ``depth`` (a recipe's ``model``).

    Shape:
        ``(N, in_channels, H, W) -> (N, 3, H, W)`` logits, channels :data:`OUTPUT_CHANNELS`
        (fused, MaC, MiC). The fusion sees ``sigmoid(mac) + sigmoid(mic)``.

    Example:
        >>> net = DualPathNet(1, base_channels=4, depth=2).eval()
        >>> net(torch.randn(2, 1, 32, 32)).shape
        torch.Size([2, 3, 32, 32])
    """

    def __init__(
        self,
        in_channels: int,
        *,
        base_channels: int = 64,
        depth: int = 4,
        fusion_channels: int = 16,
        norm: str = "batch",
        paths: tuple[nn.Module, nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        if paths is None:
            paths = tuple(UNet(in_channels, 1, base_channels=base_channels, depth=depth, norm=norm) for _ in range(2))
        self.mac, self.mic = paths
        self.fusion = FusionModule(channels=fusion_channels, norm=norm)

    def forward(self, x: Tensor) -> Tensor:
        mac, mic = self.mac(x), self.mic(x)
        fused = self.fusion(torch.sigmoid(mac) + torch.sigmoid(mic))
        return torch.cat([fused, mac, mic], dim=1)


def _check_outputs(outputs: Tensor) -> None:
    if not isinstance(outputs, Tensor) or outputs.ndim != 4 or outputs.shape[1] != len(OUTPUT_CHANNELS):
        shape = tuple(outputs.shape) if isinstance(outputs, Tensor) else type(outputs).__name__
        raise ValueError(f"outputs must be DualPathNet logits (N, 3, H, W) (fusion, mac, mic), found {shape}")


def _soft_target(batch: dict, key: str) -> Tensor:
    if key not in batch:
        have = ", ".join(sorted(batch))
        raise ValueError(f"the batch has no '{key}' entry (have: {have}); add the weight maps as dataset extras")
    return batch[key].float().unsqueeze(1)


def dualpath_loss(outputs: Tensor, batch: dict, *, paths: bool = True, fusion: bool = True) -> Tensor:
    """The three training steps' losses on one batch (SPEC 5.5), BCE on logits throughout.

    ``L1 = BCE(mac, W_MaC) + BCE(mic, W_MiC)`` (soft targets), ``L2 = BCE(fusion, GT)``;
    ``paths`` and ``fusion`` choose the terms (step 1: ``L1``, step 2: ``L2``, step 3: both).

    Args:
        outputs: :class:`DualPathNet` logits ``(N, 3, H, W)``.
        batch: dict with ``target`` ``(N, H, W)`` labels and the weight maps ``w_mac``,
            ``w_mic`` ``(N, H, W)`` (needed when ``paths``).
        paths: include ``L1``.
        fusion: include ``L2``.

    Example:
        >>> outputs = torch.zeros(1, 3, 2, 2)
        >>> batch = {"target": torch.ones(1, 2, 2, dtype=torch.long)}
        >>> round(float(dualpath_loss(outputs, batch, paths=False)), 4)  # log 2
        0.6931
    """
    _check_outputs(outputs)
    if not (paths or fusion):
        raise ValueError("dualpath_loss needs paths=True, fusion=True or both")
    terms = []
    if paths:
        terms.append(cross_entropy(outputs[:, 1:2], _soft_target(batch, "w_mac")))
        terms.append(cross_entropy(outputs[:, 2:3], _soft_target(batch, "w_mic")))
    if fusion:
        terms.append(cross_entropy(outputs[:, 0:1], batch["target"]))
    return torch.stack(terms).sum()


class DualPathLoss(nn.Module):
    """Module form of :func:`dualpath_loss` (a :class:`~medbalance.engine.Stage` loss with ``target_key=None``)."""

    def __init__(self, *, paths: bool = True, fusion: bool = True) -> None:
        super().__init__()
        if not (paths or fusion):
            raise ValueError("DualPathLoss needs paths=True, fusion=True or both")
        self.paths, self.fusion = paths, fusion

    def forward(self, outputs: Tensor, batch: dict) -> Tensor:
        return dualpath_loss(outputs, batch, paths=self.paths, fusion=self.fusion)

    def extra_repr(self) -> str:
        return f"paths={self.paths}, fusion={self.fusion}"


def dualpath_stages(epochs: tuple[int, int, int] = (200, 200, 50), *, lr: float | None = None) -> list[Stage]:
    """The three training steps of SPEC 5.5 as engine stages (a step with 0 epochs is left out).

    1. ``paths``: ``mac`` and ``mic`` train on ``L1``, ``fusion`` frozen (weights and
       BatchNorm statistics).
    2. ``fusion``: the fusion trains on ``L2``, both paths frozen.
    3. ``finetune``: everything trains on ``L1 + L2``.

    Each stage gets its own optimiser and cosine schedule from the engine (SPEC 5.6). Every
    stage monitors the fused validation Dice. ``best.pt`` is the best epoch over steps 2 and 3,
    the steps whose output is the final model's (``Stage.select_best``); during step 1 the
    untrained fusion's Dice is shown but selects nothing (unless step 1 is the only step).

    Args:
        epochs: epochs of the three steps (the paper: 200, 200, 50).
        lr: initial learning rate of every step (``None``: the config's ``lr``).

    Example:
        >>> [(s.name, s.epochs, s.trainable, s.frozen) for s in dualpath_stages((2, 1, 0))]
        [('paths', 2, ('mac', 'mic'), ('fusion',)), ('fusion', 1, ('fusion',), ('mac', 'mic'))]
    """
    if len(epochs) != 3 or any(e < 0 for e in epochs) or not any(epochs):
        raise ValueError(f"epochs must be three non-negative step lengths, not all 0, found {tuple(epochs)}")
    stages = [
        Stage(
            "paths",
            epochs[0],
            DualPathLoss(fusion=False),
            trainable=("mac", "mic"),
            frozen=("fusion",),
            lr=lr,
            target_key=None,
            select_best=len([e for e in epochs if e > 0]) == 1,  # the fusion is untrained in step 1
        ),
        Stage(
            "fusion",
            epochs[1],
            DualPathLoss(paths=False),
            trainable=("fusion",),
            frozen=("mac", "mic"),
            lr=lr,
            target_key=None,
        ),
        Stage("finetune", epochs[2], DualPathLoss(), lr=lr, target_key=None),
    ]
    return [s for s in stages if s.epochs > 0]


class DualPathOptions(MethodOptions):
    """``method:`` keys of dual-path: ``alpha`` (weight of the other sub-class in each map,
    SPEC 5.2), ``weight_maps`` (``train``: the discriminator's predictions of its own training
    set, the paper), ``fusion_channels`` (width of the fusion module), ``threshold`` (the
    discriminator's foreground probability), and the discriminator run's ``discriminator_epochs``
    (``None``: the recipe's ``epochs``) and ``discriminator_loss`` (binary CE, the paper)."""

    alpha: float = Field(0.5, gt=0.0, lt=1.0)
    weight_maps: Literal["train"] = "train"
    fusion_channels: int = Field(16, ge=1)
    threshold: float = Field(0.5, gt=0.0, lt=1.0)
    discriminator_epochs: int | None = Field(None, ge=1)
    discriminator_loss: Any = "ce"


class DualPathMethod(Method):
    """Dual-path as a recipe (``method: {name: dualpath}``), binary segmentation.

    :meth:`prepare` trains the discriminator, a plain run of the recipe's ``model`` under
    ``parts/discriminator/``, and adds the weight maps of its predictions on the training and
    validation images (native size, sliding window) to the data; the model is two paths of the
    recipe's ``model`` and the fusion module (:class:`DualPathNet`); the default stages are
    :func:`dualpath_stages`' three steps with ``epochs``, ``epochs`` and ``epochs // 4``
    (the paper: 200 / 200 / 50), each stage's loss ``{name: dualpath, paths, fusion}``. The
    out-of-fold weight maps stay an option of ``medbalance experiment dualpath``.
    """

    name = "dualpath"
    Options = DualPathOptions

    def default_stages(self, cfg: Any) -> list[dict]:
        e = cfg.epochs
        both = {"trainable": None, "frozen": []}
        steps = [
            ("paths", e, True, False, {"trainable": ["mac", "mic"], "frozen": ["fusion"]}),
            ("fusion", e, False, True, {"trainable": ["fusion"], "frozen": ["mac", "mic"]}),
            ("finetune", max(1, e // 4), True, True, both),
        ]
        return [
            {
                "name": name,
                "epochs": epochs,
                "loss": {"name": "dualpath", "paths": paths, "fusion": fusion},
                "target": None,
                "select_best": name != "paths",  # the fusion is untrained in step 1
                **parts,
            }
            for name, epochs, paths, fusion, parts in steps
        ]

    def named_losses(self) -> dict[str, Any]:
        return {"dualpath": DualPathLoss}

    def build_model(self, build: Callable[[], nn.Module], *, in_channels: int) -> nn.Module:
        return DualPathNet(in_channels, fusion_channels=self.options.fusion_channels, paths=(build(), build()))

    def prepare(self, parts: Any, cfg: Any, splits: Any, model: nn.Module) -> Any:
        from medbalance.config import MethodConfig

        if splits.train.num_classes != 2:
            raise ValueError(
                f"dual-path is binary segmentation; the data has {splits.train.num_classes} classes (set data.binary)"
            )
        o = self.options
        plain = cfg.model_copy(
            update={
                "name": "discriminator",
                "method": MethodConfig(),
                "stages": None,
                "loss": o.discriminator_loss,
                "epochs": o.discriminator_epochs or cfg.epochs,
            }
        )
        run = parts.train("discriminator", plain)
        out = {}
        for name in ("train", "val"):
            data = getattr(splits, name)
            maps = [self._maps(p[0], data, i) for i, p in enumerate(parts.probabilities(run, data))]
            out[name] = data.with_extras(w_mac=[m[0] for m in maps], w_mic=[m[1] for m in maps])
        return type(splits)(out["train"], out["val"], splits.test, info=splits.info)

    def _maps(self, prob: np.ndarray, data: Any, i: int) -> tuple[np.ndarray, np.ndarray]:
        target = torch.as_tensor(np.asarray(data.target[i]))[None]
        if data.ignore_index is not None:  # ignored pixels count as background in the maps
            target = torch.where(target == data.ignore_index, 0, target)
        mac, mic = split_mac_mic(torch.from_numpy(prob)[None], target, threshold=self.options.threshold)
        w_mac, w_mic = weight_maps(mac, mic, alpha=self.options.alpha)
        return w_mac[0].numpy(), w_mic[0].numpy()


def ablation_labels(outputs: Tensor, *, threshold: float = 0.5) -> dict[str, Tensor]:
    """Binary predictions of the ablation rows (SPEC 5.7) from :class:`DualPathNet` logits.

    ``MaC``: ``sigmoid(mac) > t``; ``MaC+MiC``: ``sigmoid(mac) + sigmoid(mic) > t``
    (**Decision** of SPEC 5.7); ``MaC+MiC+Fusion``: ``sigmoid(fusion) > t``.

    Returns:
        ``{row: (N, H, W) int64 labels}`` keyed by :data:`ABLATION_ROWS`.
    """
    _check_outputs(outputs)
    p = torch.sigmoid(outputs.float())
    return {
        "MaC": (p[:, 1] > threshold).long(),
        "MaC+MiC": (p[:, 1] + p[:, 2] > threshold).long(),
        "MaC+MiC+Fusion": (p[:, 0] > threshold).long(),
    }


def run(ctx: Any) -> dict:
    """``medbalance experiment dualpath``: seed 000's comparison and ablation tables, the alpha
    sweep and train-vs-oof weight maps, with per-image artefacts (see
    :mod:`medbalance.methods._dualpath_experiment`)."""
    # Imported here: the experiment pulls in plotting and data readers the method does not need.
    from medbalance.methods._dualpath_experiment import run_experiment

    return run_experiment(ctx)
