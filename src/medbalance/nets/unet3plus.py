"""U-Net 3+ (Huang et al., ICASSP 2020): full-scale skips and full-scale deep supervision."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medbalance.nets.blocks import (
    ConvNormAct,
    SegmentationNet,
    conv_layer,
    init_kaiming_,
    interpolate_layer,
    pool_layer,
    resize_linear,
)

__all__ = ["UNet3Plus"]

#: Log-odds added to the foreground logits of an image the CGM calls organ-free (eval mode):
#: large enough to make every pixel background, small enough to stay finite in float16.
_ABSENT_LOG_ODDS = -1e4

#: Dropout before the CGM classifier, as in the paper's code.
_CGM_DROPOUT = 0.5


class _FullScaleNode(nn.Module):
    """One U-Net 3+ decoder node at level ``level``.

    Every source, ordered by level (the encoder levels ``<= level``, the deeper decoder nodes,
    the bottleneck), is resized to this level -- max-pooled when finer, bi-/trilinearly
    upsampled when coarser -- and mapped by a 3x3 conv-norm-ReLU to ``branch_channels``; the
    concatenation is fused by one more 3x3 conv-norm-ReLU.
    """

    def __init__(
        self,
        source_channels: Sequence[int],
        level: int,
        branch_channels: int,
        *,
        spatial_dims: int,
        norm: str,
        dropout: float,
    ) -> None:
        super().__init__()
        kwargs = {"spatial_dims": spatial_dims, "norm": norm}
        branches = []
        for source_level, channels in enumerate(source_channels):
            shift = source_level - level
            if shift < 0:
                resize: nn.Module = pool_layer(2**-shift, spatial_dims=spatial_dims)
            elif shift > 0:
                resize = interpolate_layer(2**shift, spatial_dims=spatial_dims)
            else:
                resize = nn.Identity()
            branches.append(nn.Sequential(resize, ConvNormAct(channels, branch_channels, **kwargs)))
        self.branches = nn.ModuleList(branches)
        fused = branch_channels * len(source_channels)
        self.fuse = nn.Sequential(
            ConvNormAct(fused, fused, **kwargs), nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        )

    def forward(self, sources: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.fuse(torch.cat([branch(s) for branch, s in zip(self.branches, sources)], dim=1))


class UNet3Plus(SegmentationNet):
    """U-Net 3+: a U-Net encoder (widths ``base_channels * 2**i``) whose decoder node at level
    ``i`` receives *every* scale -- the encoder features of levels ``<= i`` (max-pooled), the
    bottleneck and the deeper decoder nodes (upsampled) -- each mapped to ``base_channels``
    by a 3x3 conv-norm-ReLU, concatenated (``(depth + 1) * base_channels`` channels) and fused
    by a 3x3 conv-norm-ReLU. The main head is a 3x3 conv on the level-0 node.

    Full-scale deep supervision (``deep_supervision=True``, training mode): a 3x3 head on every
    deeper decoder node and on the bottleneck, each upsampled bi-/trilinearly to full
    resolution as in the paper; ``forward`` returns ``(main, level 1, ..., level depth)``,
    ``depth + 1`` full-resolution logits.

    Classification-guided module (``cgm=True``; off by default): a classifier on the
    bottleneck (dropout 0.5, 1x1 conv to one "organ present" logit ``c``, global max-pool)
    gates every output: ``log g`` is added to the foreground logits (all channels when
    ``num_classes == 1``, channels ``1..`` otherwise; "present" means "any foreground"),
    i.e. the foreground odds are multiplied by the gate ``g``.

    * eval mode: ``g = 1[c > 0]`` as the paper's argmax -- unchanged logits for images
      classified as containing the organ, every pixel background for the others (a finite
      ``-1e4`` is added instead of ``-inf``).
    * training mode: ``g = sigmoid(c)``, a soft gate, so the classifier learns from the
      segmentation loss alone (organ-free images push ``c`` down, missed organs push it up);
      the paper instead trains it with a separate BCE loss on an image-level label, which the
      single-target training loop does not have.

    Reference:
        H. Huang, L. Lin, R. Tong et al., "UNet 3+: A Full-Scale Connected UNet for Medical
        Image Segmentation", ICASSP 2020. Paper widths: encoder 64..1024, 64 channels per
        branch, 320 fused (``base_channels=64``); the default here is 16 for CPU budgets
        (about 1/16 of the parameters and FLOPs). Outputs are logits, not the paper's sigmoid
        probabilities; the CGM gate acts on odds because a logit multiplied by 0 would
        mean probability 0.5, not "absent".

    Args:
        in_channels: image channels.
        num_classes: output channels (1: one binary logit).
        base_channels: encoder level-0 width and channels per full-scale branch (64 in the
            paper).
        depth: number of downsamplings (4 in the paper).
        spatial_dims: 2 or 3.
        norm: one of :data:`~medbalance.nets.blocks.NORMS`.
        dropout: dropout after every encoder double conv and every decoder fusion.
        pad_mode: ``"replicate"`` or ``"zeros"``.
        deep_supervision: return the full-scale side outputs too in training mode.
        cgm: add the classification-guided module.

    Shape:
        ``(N, in_channels, *spatial) -> (N, num_classes, *spatial)`` raw logits.

    Example:
        >>> net = UNet3Plus(1, 2, base_channels=4, deep_supervision=True)
        >>> [tuple(o.shape) for o in net(torch.randn(1, 1, 37, 53))]
        [(1, 2, 37, 53), (1, 2, 37, 53), (1, 2, 37, 53), (1, 2, 37, 53), (1, 2, 37, 53)]
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        base_channels: int = 16,
        depth: int = 4,
        spatial_dims: int = 2,
        norm: str = "batch",
        dropout: float = 0.0,
        pad_mode: str = "replicate",
        deep_supervision: bool = False,
        cgm: bool = False,
    ) -> None:
        super().__init__(
            in_channels,
            num_classes,
            base_channels=base_channels,
            depth=depth,
            spatial_dims=spatial_dims,
            norm=norm,
            dropout=dropout,
            pad_mode=pad_mode,
            deep_supervision=deep_supervision,
        )
        if not isinstance(cgm, bool):
            raise ValueError(f"cgm must be a bool, got {cgm!r}")
        widths = self.widths
        fused = base_channels * (depth + 1)
        kwargs = self.block_kwargs
        # decoder[k] is the node of level depth - 1 - k (built and run coarse to fine); its
        # sources are the encoder levels 0..level, then the deeper nodes, then the bottleneck.
        self.decoder = nn.ModuleList(
            _FullScaleNode(
                [*widths[: level + 1], *[fused] * (depth - 1 - level), widths[depth]], level, base_channels, **kwargs
            )
            for level in reversed(range(depth))
        )
        self.head = self.head_layer(fused, kernel_size=3)
        self.aux_heads = (
            nn.ModuleList(
                [
                    *(self.head_layer(fused, kernel_size=3) for _ in range(depth - 1)),
                    self.head_layer(widths[depth], kernel_size=3),
                ]
            )
            if deep_supervision
            else None
        )
        self.classifier = (
            nn.Sequential(
                nn.Dropout(_CGM_DROPOUT), conv_layer(widths[depth], 1, spatial_dims=spatial_dims, kernel_size=1)
            )
            if cgm
            else None
        )
        init_kaiming_(self)

    def forward_padded(self, x: torch.Tensor) -> list[torch.Tensor]:
        encoded = self.encoder(x)
        bottleneck = encoded[-1]
        decoded: list[torch.Tensor] = []  # decoder nodes built so far, finest first
        for k, node in enumerate(self.decoder):
            level = self.depth - 1 - k
            decoded.insert(0, node([*encoded[: level + 1], *decoded, bottleneck]))
        outputs = [self.head(decoded[0])]
        if self.with_aux:
            sides = [head(f) for head, f in zip(self.aux_heads, [*decoded[1:], bottleneck])]
            outputs += [resize_linear(side, x.shape[2:]) for side in sides]
        if self.classifier is not None:
            log_gate = self._log_gate(bottleneck)
            outputs = [self._gate(out, log_gate) for out in outputs]
        return outputs

    def _log_gate(self, bottleneck: torch.Tensor) -> torch.Tensor:
        """``log g`` of the CGM, ``(N, 1, 1, ...)``: soft in training, hard in eval."""
        organ_logit = torch.amax(self.classifier(bottleneck), dim=tuple(range(2, bottleneck.ndim)), keepdim=True)
        if self.training:
            return F.logsigmoid(organ_logit)
        return (organ_logit <= 0).to(bottleneck.dtype) * _ABSENT_LOG_ODDS

    def _gate(self, logits: torch.Tensor, log_gate: torch.Tensor) -> torch.Tensor:
        if self.num_classes == 1:
            return logits + log_gate
        return torch.cat([logits[:, :1], logits[:, 1:] + log_gate], dim=1)
