"""Bilateral-branch networks for long-tailed classification: BBN (Zhou et al., CVPR 2020) and
LSKBB (seed 001), SPEC section 6."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import nn

from medbalance.nets.blocks import ConvNormAct, require_choice
from medbalance.nets.resnet import channels_last, check_resnet_args, init_weights_, make_head, resnet_stage

__all__ = ["BBN", "LSKBB"]


class BBN(nn.Module):
    """Bilateral-branch network on a CIFAR ResNet-32 trunk.

    One trunk (the stem and every residual block but the last) is shared; the *conventional*
    and the *re-balancing* branch each own a copy of the last residual block and a classifier. In training
    the conventional branch reads a batch from a uniform sampler and the re-balancing branch
    one from a reversed sampler; :meth:`forward` with both batches returns the two branch
    logits ``W_c f_c`` and ``W_r f_r``, which the cumulative-learning loss mixes as
    ``z = lambda W_c f_c + (1 - lambda) W_r f_r``
    (:class:`medbalance.methods.bilateral.BilateralLoss`). With one batch (inference) both
    branches see the same image and are weighted equally: ``z = (W_c f_c + W_r f_r) / 2``.

    As in the BBN code and seed 001 ("shared weights except for the last residual block"),
    ``branch_blocks=1`` is the default: at ResNet-32 width for 10 classes that is 541,540
    parameters, the 466,906 of :class:`~medbalance.nets.resnet.ResNet32` plus a second copy of
    the last block (73,984) and of the classifier (650). ``branch_blocks=None`` gives each
    branch the whole last stage instead (our earlier default; 821,220 parameters).

    Reference:
        B. Zhou, Q. Cui, X.-S. Wei, Z.-M. Chen, "BBN: Bilateral-Branch Network with
        Cumulative Learning for Long-Tailed Visual Recognition", CVPR 2020.

    Args:
        in_channels: image channels.
        num_classes: number of classes.
        widths: channels per stage (ResNet-32: ``(16, 32, 64)``).
        blocks_per_stage: basic blocks per stage (ResNet-32: 5).
        branch_blocks: trailing blocks of the last stage each branch owns (**Default** 1, the
            paper's; ``None``: the whole stage).
        lsk_position: ``None`` (ResNet-32), ``"residual"`` or ``"shortcut"`` (improved
            ResNet-32, see :class:`~medbalance.nets.resnet.LSKBasicBlock`).
        head: ``"linear"`` or ``"cosine"`` classifiers.
        attention: ``None``, ``"simam"`` or ``"biformer"`` in every block (seed 001 table 4,
            see :class:`~medbalance.nets.resnet.AttentionBasicBlock`).

    Shape:
        ``forward(x)``: ``(N, in_channels, H, W) -> (N, num_classes)``;
        ``forward(x_c, x_r)``: two such batches -> a pair of ``(N, num_classes)`` logits.

    Example:
        >>> net = BBN(1, 4, widths=(8, 16), blocks_per_stage=2)
        >>> x = torch.randn(3, 1, 16, 16)
        >>> z_c, z_r = net(x, x.flip(0))
        >>> net.eval()(x).shape, z_c.shape
        (torch.Size([3, 4]), torch.Size([3, 4]))
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        *,
        widths: Sequence[int] = (16, 32, 64),
        blocks_per_stage: int = 5,
        branch_blocks: int | None = 1,
        lsk_position: str | None = None,
        head: str = "linear",
        attention: str | None = None,
    ) -> None:
        super().__init__()
        self.in_channels, self.num_classes = in_channels, num_classes
        # at least two stages: the last one is per branch
        widths = check_resnet_args(in_channels, num_classes, widths, blocks_per_stage, lsk_position, head, min_stages=2)
        branch_blocks = blocks_per_stage if branch_blocks is None else branch_blocks
        if (
            isinstance(branch_blocks, bool)
            or not isinstance(branch_blocks, int)
            or not 1 <= branch_blocks <= blocks_per_stage
        ):
            raise ValueError(f"branch_blocks must be an int in [1, {blocks_per_stage}] or None, got {branch_blocks!r}")

        stage = functools.partial(resnet_stage, lsk_position=lsk_position, attention=attention)
        self.stem = ConvNormAct(in_channels, widths[0])
        ins = (widths[0], *widths[:-1])
        shared = [
            stage(c_in, c_out, blocks_per_stage, stride=1 if i == 0 else 2)
            for i, (c_in, c_out) in enumerate(zip(ins[:-1], widths[:-1]))
        ]
        last_in, last_out = ins[-1], widths[-1]
        if branch_blocks < blocks_per_stage:  # the first blocks of the last stage are shared
            shared.append(stage(last_in, last_out, blocks_per_stage - branch_blocks, stride=2))
            last_in, stride = last_out, 1
        else:
            stride = 2
        self.trunk = nn.Sequential(*shared)
        self.conventional = stage(last_in, last_out, branch_blocks, stride=stride)
        self.rebalancing = stage(last_in, last_out, branch_blocks, stride=stride)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = last_out
        self.classifier_c = make_head(head, last_out, num_classes)
        self.classifier_r = make_head(head, last_out, num_classes)
        self.lsk_position, self.attention = lsk_position, attention
        init_weights_(self)

    def _check(self, x: torch.Tensor, name: str) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{name} must have shape (N, {self.in_channels}, H, W), got {tuple(x.shape)}")

    def branch_features(self, x: torch.Tensor, branch: str) -> torch.Tensor:
        """Pooled features ``(N, feature_dim)`` of ``branch`` (``"conventional"`` or ``"rebalancing"``)."""
        require_choice("branch", branch, ("conventional", "rebalancing"))
        self._check(x, "x")
        return self.pool(getattr(self, branch)(self.trunk(channels_last(self.stem(x))))).flatten(1)

    def forward(
        self, x: torch.Tensor, x_r: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Inference logits of ``x``, or with ``x_r`` the branch logits ``(W_c f_c(x), W_r f_r(x_r))``."""
        if x_r is not None:
            self._check(x_r, "x_r")
            # Two passes, as in the BBN code: each batch keeps its own BatchNorm statistics.
            f_c = self.branch_features(x, "conventional")
            return self.classifier_c(f_c), self.classifier_r(self.branch_features(x_r, "rebalancing"))
        self._check(x, "x")
        shared = self.trunk(channels_last(self.stem(x)))  # both branches see the same image: one trunk pass
        f_c = self.pool(self.conventional(shared)).flatten(1)
        f_r = self.pool(self.rebalancing(shared)).flatten(1)
        return 0.5 * (self.classifier_c(f_c) + self.classifier_r(f_r))


class LSKBB(BBN):
    """LSKBB (seed 001): :class:`BBN` on the improved ResNet-32 (``lsk_position="residual"``).

    Trained with the DFLCE loss (:class:`medbalance.losses.DFLCELoss`) by the bilateral
    recipe of :mod:`medbalance.methods.bilateral`; every argument is that of :class:`BBN`.

    Reference:
        T. Sun, G. Zhao, M. Guo, "Long-tail Distributed Medical Image Classification Based on
        Large Selective Nuclear Bilateral-branch Networks", Computer Science 52(4), 2025.

    Example:
        >>> LSKBB(1, 4, widths=(8, 16), blocks_per_stage=1).lsk_position
        'residual'
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        *,
        widths: Sequence[int] = (16, 32, 64),
        blocks_per_stage: int = 5,
        branch_blocks: int | None = 1,
        lsk_position: str | None = "residual",
        head: str = "linear",
    ) -> None:
        super().__init__(
            in_channels,
            num_classes,
            widths=widths,
            blocks_per_stage=blocks_per_stage,
            branch_blocks=branch_blocks,
            lsk_position=lsk_position,
            head=head,
        )
