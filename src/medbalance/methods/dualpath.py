"""Dual-path framework for intra-class imbalance in segmentation (seed 000, SPEC section 5).

A discriminator U-Net trained on (image, GT) splits the target of every training image into
the part it segments (MaC, majority sub-class) and the part it misses (MiC, minority
sub-class). Two soft weight maps follow (:func:`weight_maps`); two U-Nets (:class:`DualPathNet`'s
``mac`` and ``mic`` paths) learn them with BCE, and a small :class:`FusionModule` turns
``P_MaC + P_MiC`` into the final probability map. Training is three :class:`~medbalance.engine.Stage`
objects run by the one :class:`~medbalance.engine.Engine` (:func:`dualpath_stages`): paths
with the fusion frozen, the fusion with the paths frozen, then everything.

Multi-class targets (SPEC 5.9) get one MaC/MiC split per foreground class: the
discriminator's softmax labels ``P`` give ``MaC_c = (P == c) AND (GT == c)`` and
``MiC_c = (GT == c) AND (P != c)``; each path is a softmax over the ``C`` classes trained with
cross entropy against the per-class weight maps (background gets the rest of the
probability), and the fusion maps the summed path probabilities to ``C`` logits. With two
classes every function keeps the binary form above (one sigmoid channel per output).

Weight maps come from the discriminator's predictions of its own training set (``"train"``,
the paper) or from K-fold out-of-fold predictions (``"oof"``, SPEC 5.1's decision: a network
that memorised its training set leaves MiC empty).

The experiment behind ``medbalance experiment dualpath`` (seed 000's tables) is
:mod:`medbalance.experiments.seed000`.

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
from medbalance.engine.tasks import channel_argmax
from medbalance.losses.functional import cross_entropy
from medbalance.nets import UNet
from medbalance.nets.blocks import ConvNormAct, conv_layer, init_kaiming_, require_positive_int

__all__ = [
    "ABLATION_ROWS",
    "OUTPUT_CHANNELS",
    "DualPathLoss",
    "DualPathMethod",
    "DualPathNet",
    "DualPathOptions",
    "FusionModule",
    "ablation_labels",
    "dualpath_loss",
    "dualpath_stages",
    "kfold_indices",
    "split_mac_mic",
    "split_outputs",
    "weight_maps",
]

#: Outputs of :class:`DualPathNet`, in channel order: the fused logits first, so that a
#: :class:`~medbalance.engine.tasks.SegmentationTask` (which reads the first ``out_channels``:
#: 1 when binary, ``C`` otherwise) scores the final map. Binary: one channel each; ``C`` classes:
#: ``C`` channels each.
OUTPUT_CHANNELS = ("fusion", "mac", "mic")

#: Rows of seed 000's ablation table computed from one dual-path output (SPEC 5.7).
ABLATION_ROWS = ("MaC", "MaC+MiC", "MaC+MiC+Fusion")


def _binary_map(name: str, x: Tensor) -> Tensor:
    """``(N, H, W)`` view of a ``(N, H, W)`` or ``(N, 1, H, W)`` tensor."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, found {type(x).__name__}")
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 3:
        raise ValueError(f"{name} must have shape (N, H, W) or (N, 1, H, W), found {tuple(x.shape)}")
    return x


def _check_split_inputs(prob: Tensor, gt: Tensor, threshold: float, num_classes: int) -> None:
    """Dtypes, value ranges and the threshold of :func:`split_mac_mic`'s inputs (shapes checked by the caller)."""
    if not prob.dtype.is_floating_point:
        raise TypeError(f"pred_prob must be a float tensor of probabilities, found dtype {prob.dtype}")
    if gt.dtype.is_floating_point or gt.dtype.is_complex:
        raise TypeError(f"target must be an integer or bool label map, found dtype {gt.dtype}")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), found {threshold!r}")
    if prob.numel():
        low, high = torch.aminmax(prob)
        if low < 0 or high > 1:
            how = "a sigmoid" if num_classes == 2 else "a softmax over the channels"
            raise ValueError(
                f"pred_prob must hold probabilities in [0, 1], found values in [{float(low):.4g}, {float(high):.4g}] "
                f"(apply {how} to logits first)"
            )
        bad = gt[(gt < 0) | (gt >= num_classes)] if num_classes > 2 else gt[(gt != 0) & (gt != 1)]
        if bad.numel():
            allowed = f"[0, {num_classes})" if num_classes > 2 else "{0, 1}"
            kind = f"hold the {num_classes} classes of pred_prob" if num_classes > 2 else "be binary"
            raise ValueError(f"target must {kind} (values in {allowed}), found label {int(bad[0])}")


def _split_per_class(prob: Tensor, target: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """:func:`split_mac_mic` for ``(N, C, H, W)`` softmax probabilities, ``C >= 3``."""
    num_classes = prob.shape[1]
    gt = _binary_map("target", target)
    if (prob.shape[0], *prob.shape[2:]) != tuple(gt.shape):
        raise ValueError(f"pred_prob has shape {tuple(prob.shape)} but target has {tuple(gt.shape)}")
    if threshold != 0.5:
        raise ValueError(
            f"threshold applies to a binary discriminator, found {threshold!r} with {num_classes} classes "
            "(a multi-class discriminator predicts the argmax of its softmax)"
        )
    _check_split_inputs(prob, gt, threshold, num_classes)
    gt = gt.long()
    own = gt.unsqueeze(1) == torch.arange(num_classes, device=gt.device).view(1, -1, 1, 1)  # one-hot GT
    own[:, 0] = False  # background is split into nothing
    found = (channel_argmax(prob) == gt).unsqueeze(1)
    return (own & found).float(), (own & ~found).float()


def split_mac_mic(pred_prob: Tensor, target: Tensor, *, threshold: float = 0.5) -> tuple[Tensor, Tensor]:
    """Split the foreground of ``target`` into what a discriminator finds (MaC) and misses (MiC).

    Binary: ``P = pred_prob > threshold``; ``MaC = P AND GT`` (correctly segmented majority),
    ``MiC = GT AND NOT P`` (under-segmented minority). False positives stay background
    (SPEC 5.1).

    Multi-class (``pred_prob`` of shape ``(N, C, H, W)``, ``C >= 3``; SPEC 5.9): ``P`` is the
    argmax of the softmax and every foreground class ``c`` is split on its own,
    ``MaC_c = (P == c) AND (GT == c)``, ``MiC_c = (GT == c) AND (P != c)``: a pixel of class ``c``
    given to another foreground class is ``c``'s minority, like one given to background.

    Args:
        pred_prob: discriminator foreground probabilities ``(N, H, W)`` or ``(N, 1, H, W)``
            in ``[0, 1]``; or softmax probabilities ``(N, C, H, W)`` over ``C >= 3`` classes.
        target: ground truth of the same spatial shape ``(N, H, W)`` (or ``(N, 1, H, W)``),
            integer / bool, with values in ``{0, 1}`` (binary) or ``[0, C)``.
        threshold: probability above which a pixel is predicted foreground, in ``(0, 1)``
            (binary only; a multi-class discriminator's labels are its argmax).

    Returns:
        ``(mac, mic)``: float32 maps in ``{0, 1}``, disjoint. Binary: ``(N, H, W)``, summing to
        ``target``. Multi-class: ``(N, C, H, W)``, channel ``c`` the split of class ``c``
        (``mac[:, c] + mic[:, c] == (target == c)``), channel 0 (background) all 0.

    Example:
        >>> p = torch.tensor([[[0.9, 0.2, 0.8, 0.1]]])
        >>> gt = torch.tensor([[[1, 1, 0, 0]]])
        >>> mac, mic = split_mac_mic(p, gt)
        >>> mac.tolist(), mic.tolist()
        ([[[1.0, 0.0, 0.0, 0.0]]], [[[0.0, 1.0, 0.0, 0.0]]])
        >>> p3 = torch.tensor([[0.1, 0.1, 0.8], [0.1, 0.8, 0.1], [0.8, 0.1, 0.1]]).T.reshape(1, 3, 1, 3)
        >>> mac, mic = split_mac_mic(p3, torch.tensor([[[2, 2, 1]]]))  # predicted [2, 1, 0]
        >>> mac[0, :, 0].tolist(), mic[0, :, 0].tolist()
        ([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], [[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    """
    if isinstance(pred_prob, Tensor) and pred_prob.ndim == 4 and pred_prob.shape[1] >= 3:
        return _split_per_class(pred_prob, target, threshold)
    if isinstance(pred_prob, Tensor) and pred_prob.ndim == 4 and pred_prob.shape[1] == 2:
        raise ValueError(
            "pred_prob has 2 channels: a binary discriminator gives one foreground probability map (N, H, W) "
            "and a multi-class one C >= 3 softmax channels"
        )
    prob, gt = _binary_map("pred_prob", pred_prob), _binary_map("target", target)
    if prob.shape != gt.shape:
        raise ValueError(f"pred_prob has shape {tuple(prob.shape)} but target has {tuple(gt.shape)}")
    _check_split_inputs(prob, gt, threshold, 2)
    fg = gt.bool()
    found = prob > threshold
    return (fg & found).float(), (fg & ~found).float()


def weight_maps(mac: Tensor, mic: Tensor, *, alpha: float = 0.5) -> tuple[Tensor, Tensor]:
    """Soft targets of the two paths: ``W_MaC = MaC + alpha * MiC``, ``W_MiC = MiC + alpha * MaC``.

    Background is 0 in both. ``alpha`` in ``(0, 1)``: 0 would teach each path that the other
    sub-class is background, 1 would make both maps the plain binary target (SPEC 5.2).
    Element-wise, so the ``(N, C, H, W)`` per-class splits of a multi-class target give the
    per-class maps ``W_MaC_c = MaC_c + alpha * MiC_c`` (channel 0 stays 0; :func:`dualpath_loss`
    gives background the rest of the probability).

    Args:
        mac: MaC map ``(N, H, W)`` or ``(N, C, H, W)`` in ``{0, 1}`` (from :func:`split_mac_mic`).
        mic: MiC map of the same shape, disjoint from ``mac``.
        alpha: weight of the other sub-class.

    Returns:
        ``(w_mac, w_mic)``: float32 maps of ``mac``'s shape with values in ``{0, alpha, 1}``.

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
    logits), so ``torch.sigmoid(fusion(x))`` is the paper's output. With ``classes=C`` it maps
    the summed ``C``-class softmax maps of the paths to ``C`` logits (SPEC 5.9; the final map is
    their softmax).

    Args:
        channels: width of the two groups (not given in the paper; **Default** 16).
        norm: normalisation of the groups (the paper: ``"batch"``).
        classes: input and output channels: 1 (binary) or the number of classes ``C``.

    Shape:
        ``(N, classes, H, W) -> (N, classes, H, W)``.
    """

    def __init__(self, *, channels: int = 16, norm: str = "batch", classes: int = 1) -> None:
        super().__init__()
        require_positive_int("channels", channels)
        require_positive_int("classes", classes)
        self.body = nn.Sequential(
            ConvNormAct(classes, channels, norm=norm),
            ConvNormAct(channels, channels, norm=norm),
            conv_layer(channels, classes, kernel_size=1),
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
        num_classes: classes including background; 2 (the paper) gives one sigmoid channel per
            output, ``C >= 3`` gives ``C`` softmax channels per output (SPEC 5.9).
        paths: the MaC and MiC networks (``out_channels`` outputs each) instead of two U-Nets
            of ``base_channels`` / ``depth`` (a recipe's ``model``).

    Shape:
        ``(N, in_channels, H, W) -> (N, 3 K, H, W)`` logits with ``K = 1`` (binary) or ``C``:
        :data:`OUTPUT_CHANNELS` (fused, MaC, MiC), ``K`` channels each (:func:`split_outputs`).
        The fusion sees ``sigmoid(mac) + sigmoid(mic)`` (binary) or
        ``softmax(mac) + softmax(mic)`` over the ``C`` channels.

    Example:
        >>> net = DualPathNet(1, base_channels=4, depth=2).eval()
        >>> net(torch.randn(2, 1, 32, 32)).shape
        torch.Size([2, 3, 32, 32])
        >>> DualPathNet(3, num_classes=4, base_channels=4, depth=2).eval()(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 12, 32, 32])
    """

    def __init__(
        self,
        in_channels: int,
        *,
        base_channels: int = 64,
        depth: int = 4,
        fusion_channels: int = 16,
        norm: str = "batch",
        num_classes: int = 2,
        paths: tuple[nn.Module, nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2 (background included), found {num_classes!r}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.out_channels = 1 if num_classes == 2 else num_classes  # per output, as SegmentationTask
        k = self.out_channels
        if paths is None:
            paths = tuple(UNet(in_channels, k, base_channels=base_channels, depth=depth, norm=norm) for _ in range(2))
        self.mac, self.mic = paths
        self.fusion = FusionModule(channels=fusion_channels, norm=norm, classes=k)

    def forward(self, x: Tensor) -> Tensor:
        mac, mic = self.mac(x), self.mic(x)
        if self.out_channels == 1:
            summed = torch.sigmoid(mac) + torch.sigmoid(mic)
        else:
            summed = torch.softmax(mac, dim=1) + torch.softmax(mic, dim=1)
        return torch.cat([self.fusion(summed), mac, mic], dim=1)


def _path_channels(outputs: Tensor) -> int:
    """Channels ``K`` of each output in :class:`DualPathNet` logits ``(N, 3 K, H, W)`` (1 or ``C >= 3``)."""
    if not isinstance(outputs, Tensor) or outputs.ndim != 4 or outputs.shape[1] % 3 or outputs.shape[1] in (0, 6):
        shape = tuple(outputs.shape) if isinstance(outputs, Tensor) else type(outputs).__name__
        raise ValueError(
            f"outputs must be DualPathNet logits (N, 3, H, W) (fusion, mac, mic) or (N, 3C, H, W) for C >= 3 "
            f"classes, found {shape}"
        )
    return outputs.shape[1] // 3


def split_outputs(outputs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The fused, MaC and MiC logits ``(N, K, H, W)`` of :class:`DualPathNet` logits ``(N, 3 K, H, W)``.

    Example:
        >>> [t.shape[1] for t in split_outputs(torch.zeros(2, 15, 4, 4))]  # five classes
        [5, 5, 5]
    """
    return tuple(outputs.split(_path_channels(outputs), dim=1))


def _soft_target(batch: dict, key: str, like: Tensor) -> Tensor:
    """The soft target of one path: the weight map ``(N, 1, H, W)`` (binary), or the per-class maps
    ``(N, C, H, W)`` with background ``1 - sum_c W_c`` in channel 0 (whatever channel 0 held)."""
    if key not in batch:
        have = ", ".join(sorted(batch))
        raise ValueError(f"the batch has no '{key}' entry (have: {have}); add the weight maps as dataset extras")
    if like.shape[1] == 1:
        return batch[key].float().unsqueeze(1)
    w = batch[key].float()
    if w.shape != like.shape:
        raise ValueError(
            f"batch '{key}' has shape {tuple(w.shape)}; {like.shape[1]} classes need per-class weight maps "
            f"{tuple(like.shape)} (split_mac_mic on (N, C, H, W) probabilities, then weight_maps)"
        )
    return torch.cat([1.0 - w[:, 1:].sum(1, keepdim=True), w[:, 1:]], dim=1)


def dualpath_loss(
    outputs: Tensor, batch: dict, *, paths: bool = True, fusion: bool = True, ignore_index: int | None = None
) -> Tensor:
    """The three training steps' losses on one batch (SPEC 5.5), BCE on logits throughout.

    ``L1 = BCE(mac, W_MaC) + BCE(mic, W_MiC)`` (soft targets), ``L2 = BCE(fusion, GT)``;
    ``paths`` and ``fusion`` choose the terms (step 1: ``L1``, step 2: ``L2``, step 3: both).

    Multi-class (``C`` channels per output, SPEC 5.9): the same terms with softmax cross
    entropy; each path's soft target is its per-class weight maps, background
    ``1 - sum_c W_c`` (at ``MiC_c`` the MaC path learns class ``c`` with probability ``alpha``
    and background with ``1 - alpha``, as a sigmoid path does with ``W = alpha``). Each term is
    a mean over pixels, as in the binary case.

    Args:
        outputs: :class:`DualPathNet` logits ``(N, 3, H, W)``, or ``(N, 3C, H, W)``.
        batch: dict with ``target`` ``(N, H, W)`` labels and the weight maps ``w_mac``,
            ``w_mic`` (needed when ``paths``): ``(N, H, W)`` binary, ``(N, C, H, W)`` per class
            (channel 0 is not read).
        paths: include ``L1``.
        fusion: include ``L2``.
        ignore_index: a target label left out of ``L2`` (e.g. DRIVE's outside of the field of
            view); the weight maps hold background there, so the paths learn it as background.

    Example:
        >>> outputs = torch.zeros(1, 3, 2, 2)
        >>> batch = {"target": torch.ones(1, 2, 2, dtype=torch.long)}
        >>> round(float(dualpath_loss(outputs, batch, paths=False)), 4)  # log 2
        0.6931
    """
    fused, mac, mic = split_outputs(outputs)
    if not (paths or fusion):
        raise ValueError("dualpath_loss needs paths=True, fusion=True or both")
    terms = []
    if paths:
        terms.append(cross_entropy(mac, _soft_target(batch, "w_mac", mac)))
        terms.append(cross_entropy(mic, _soft_target(batch, "w_mic", mic)))
    if fusion:
        terms.append(cross_entropy(fused, batch["target"], ignore_index=ignore_index))
    return torch.stack(terms).sum()


class DualPathLoss(nn.Module):
    """Module form of :func:`dualpath_loss` (a :class:`~medbalance.engine.Stage` loss with ``target_key=None``)."""

    def __init__(self, *, paths: bool = True, fusion: bool = True, ignore_index: int | None = None) -> None:
        super().__init__()
        if not (paths or fusion):
            raise ValueError("DualPathLoss needs paths=True, fusion=True or both")
        self.paths, self.fusion, self.ignore_index = paths, fusion, ignore_index

    def forward(self, outputs: Tensor, batch: dict) -> Tensor:
        return dualpath_loss(outputs, batch, paths=self.paths, fusion=self.fusion, ignore_index=self.ignore_index)

    def extra_repr(self) -> str:
        return f"paths={self.paths}, fusion={self.fusion}, ignore_index={self.ignore_index}"


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
    SPEC 5.2); ``weight_maps`` (``train``: the discriminator's predictions of its own training
    set, the paper; ``oof``: out-of-fold predictions of ``folds`` discriminators, each trained
    without one fold, SPEC 5.1); ``discriminator`` (a finished run folder to use as the
    discriminator of ``train`` maps instead of training one); ``fusion_channels`` (width of the
    fusion module); ``threshold`` (the discriminator's foreground probability); and the
    discriminator runs' ``discriminator_epochs`` (``None``: the recipe's ``epochs``) and
    ``discriminator_loss`` (CE, the paper)."""

    alpha: float = Field(0.5, gt=0.0, lt=1.0)
    weight_maps: Literal["train", "oof"] = "train"
    folds: int = Field(5, ge=2)
    discriminator: str | None = None
    fusion_channels: int = Field(16, ge=1)
    threshold: float = Field(0.5, gt=0.0, lt=1.0)
    discriminator_epochs: int | None = Field(None, ge=1)
    discriminator_loss: Any = "ce"


class DualPathMethod(Method):
    """Dual-path as a recipe (``method: {name: dualpath}``), binary or multi-class (SPEC 5.9).

    :meth:`prepare` trains the discriminator, a plain run of the recipe's ``model`` under
    ``parts/discriminator/`` (or uses the run ``discriminator`` names; with ``oof`` maps, one
    run per fold under ``parts/fold<k>/``, trained on the other folds, whose mean predicts the
    validation images), and adds the weight maps of its predictions on the training and
    validation images (native size, sliding window) to the data; ``splits.json`` records the
    split's statistics (``weight_maps``: MiC share, images with an empty MiC). The model is two paths of the
    recipe's ``model`` and the fusion module (:class:`DualPathNet`); the default stages are
    :func:`dualpath_stages`' three steps with ``epochs``, ``epochs`` and ``epochs // 4``
    (the paper: 200 / 200 / 50), each stage's loss ``{name: dualpath, paths, fusion}``.
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

    def build_model(self, build: Callable[[], nn.Module], *, in_channels: int, num_classes: int) -> nn.Module:
        paths = (build(), build())
        return DualPathNet(
            in_channels, fusion_channels=self.options.fusion_channels, num_classes=num_classes, paths=paths
        )

    def prepare(self, parts: Any, cfg: Any, splits: Any, model: nn.Module) -> Any:
        from medbalance.config import MethodConfig

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
        train, val = splits.train, splits.val
        if o.weight_maps == "train":
            run = parts.load(o.discriminator) if o.discriminator else parts.train("discriminator", plain)
            probs = {"train": parts.probabilities(run, train), "val": parts.probabilities(run, val)}
        else:
            probs = {"train": [None] * len(train), "val": None}
            for k, held in enumerate(kfold_indices(len(train), o.folds, cfg.seed)):
                rest = train.subset(np.setdiff1d(np.arange(len(train)), held))
                run = parts.train(f"fold{k}", plain, data=(rest, val))
                for i, p in zip(held, parts.probabilities(run, train.subset(held))):
                    probs["train"][i] = p
                fold_val = parts.probabilities(run, val)
                probs["val"] = fold_val if probs["val"] is None else [a + b for a, b in zip(probs["val"], fold_val)]
            probs["val"] = [p / o.folds for p in probs["val"]]
        out, mic_share, empty = {}, [], 0
        for name, data in (("train", train), ("val", val)):
            maps = [self._maps(p, data, i) for i, p in enumerate(probs[name])]
            out[name] = data.with_extras(w_mac=[m[0] for m in maps], w_mic=[m[1] for m in maps])
            if name == "train":
                for mac, mic in (m[2] for m in maps):
                    gt = mac.sum() + mic.sum()
                    if gt > 0:
                        mic_share.append(float(mic.sum() / gt))
                    empty += int(mic.sum() == 0)
        stats = {
            "mode": o.weight_maps,
            "MiC share": float(np.mean(mic_share)) if mic_share else 0.0,
            "empty MiC": empty / max(1, len(train)),
        }
        return type(splits)(out["train"], out["val"], splits.test, info={**splits.info, "weight_maps": stats})

    def _maps(self, prob: np.ndarray, data: Any, i: int) -> tuple[np.ndarray, np.ndarray, tuple]:
        """Weight maps of image ``i`` from the discriminator's ``(C_out, *spatial)`` probabilities,
        and its MaC / MiC split."""
        target = torch.as_tensor(np.asarray(data.target[i]))[None]
        if data.ignore_index is not None:  # ignored pixels count as background in the maps
            target = torch.where(target == data.ignore_index, 0, target)
        prob = torch.from_numpy(prob)[None]  # binary: (1, 1, *spatial) foreground; else (1, C, *spatial)
        mac, mic = split_mac_mic(prob, target, threshold=self.options.threshold)
        w_mac, w_mic = weight_maps(mac, mic, alpha=self.options.alpha)
        return w_mac[0].numpy(), w_mic[0].numpy(), (mac[0].numpy(), mic[0].numpy())


def ablation_labels(outputs: Tensor, *, threshold: float = 0.5) -> dict[str, Tensor]:
    """Predictions of the ablation rows (SPEC 5.7) from :class:`DualPathNet` logits.

    Binary: ``MaC``: ``sigmoid(mac) > t``; ``MaC+MiC``: ``sigmoid(mac) + sigmoid(mic) > t``
    (**Decision** of SPEC 5.7); ``MaC+MiC+Fusion``: ``sigmoid(fusion) > t``.

    ``C`` classes: ``MaC`` and ``MaC+MiC+Fusion`` are the argmax of the MaC path and of the
    fusion; ``MaC+MiC`` sums the two paths' softmax maps ``S = P_MaC + P_MiC`` and, as in the
    binary rule, predicts foreground where the foreground mass ``sum_{c >= 1} S_c`` exceeds
    ``t``, with the class of the largest ``S_c`` (with two classes this is the binary rule).

    Returns:
        ``{row: (N, H, W) int64 labels}`` keyed by :data:`ABLATION_ROWS`.

    Example:
        >>> logits = torch.zeros(1, 9, 1, 1)  # 3 classes, every output uniform
        >>> {row: labels.item() for row, labels in ablation_labels(logits).items()}
        {'MaC': 0, 'MaC+MiC': 1, 'MaC+MiC+Fusion': 0}
    """
    fused, mac, mic = (x.float() for x in split_outputs(outputs))
    if mac.shape[1] > 1:
        summed = (torch.softmax(mac, dim=1) + torch.softmax(mic, dim=1))[:, 1:]
        found = summed.sum(1) > threshold
        return {
            "MaC": channel_argmax(mac),
            "MaC+MiC": torch.where(found, channel_argmax(summed) + 1, 0),
            "MaC+MiC+Fusion": channel_argmax(fused),
        }
    p = torch.sigmoid(outputs.float())
    return {
        "MaC": (p[:, 1] > threshold).long(),
        "MaC+MiC": (p[:, 1] + p[:, 2] > threshold).long(),
        "MaC+MiC+Fusion": (p[:, 0] > threshold).long(),
    }
