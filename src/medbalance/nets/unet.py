"""U-Net (Ronneberger, Fischer & Brox, MICCAI 2015), 2D and 3D, optionally deep-supervised."""

from __future__ import annotations

import torch
from torch import nn

from medbalance.nets.blocks import (
    UPSAMPLE_MODES,
    SegmentationNet,
    UNetDecoder,
    init_kaiming_,
    require_choice,
)

__all__ = ["UNet", "UNetDecoder"]


class UNet(SegmentationNet):
    """Classic U-Net: ``depth`` max-pool downsamplings and ``depth`` upsamplings with skip
    concatenation, each level a double 3x3 conv-norm-ReLU, widths ``base_channels * 2**i``.

    Any spatial size is accepted: the input is padded (``pad_mode``, split evenly before /
    after) to a multiple of ``2**depth`` and the logits are cropped back, so the output
    always has the input's spatial size. In training mode the padded border takes part in
    the BatchNorm statistics; sizes that are already multiples avoid padding entirely.
    Convolutions followed by a norm have no bias; weights use Kaiming-normal init.

    Deep supervision (nnU-Net style, Isensee et al. 2021): a 1x1 head on each of the
    ``depth - 1`` coarser decoder stages; in training mode ``forward`` returns
    ``(main, aux_1/2, aux_1/4, ...)``, the auxiliary logits at ``1/2, 1/4, ...`` of the input
    size (see :class:`~medbalance.nets.blocks.SegmentationNet`). The heads exist only when
    ``deep_supervision=True``.

    Reference:
        O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks for Biomedical
        Image Segmentation", MICCAI 2015. Differences from the paper, shared with common
        implementations (MONAI ``BasicUNet``, nnU-Net): "same" padding instead of valid
        convolutions, and a normalisation after every convolution.

    Args:
        in_channels: image channels.
        num_classes: output channels (1 for binary segmentation with a sigmoid, else one
            per class including background, for a softmax).
        base_channels: width of the first level (64 in the paper).
        depth: number of downsamplings (4 in the paper).
        spatial_dims: 2 (``(N, C, H, W)``) or 3 (``(N, C, D, H, W)``).
        norm: ``"batch"``, ``"instance"``, ``"group"`` or ``"none"`` (see
            :func:`~medbalance.nets.blocks.norm_layer`).
        dropout: element-wise dropout after every double conv (0 disables it).
        upsample: ``"transpose"`` (2x2 transposed conv, as the paper), ``"linear"`` or
            ``"nearest"`` (interpolation followed by a 1x1 conv).
        pad_mode: ``"replicate"`` (default) or ``"zeros"`` for the internal padding.
        deep_supervision: return the auxiliary decoder outputs in training mode.

    Shape:
        ``(N, in_channels, *spatial) -> (N, num_classes, *spatial)`` raw logits.

    Example:
        >>> net = UNet(1, 3, base_channels=8).eval()
        >>> net(torch.randn(2, 1, 37, 53)).shape
        torch.Size([2, 3, 37, 53])
        >>> outs = UNet(1, 3, base_channels=8, deep_supervision=True).train()(torch.randn(2, 1, 64, 64))
        >>> [tuple(o.shape[2:]) for o in outs]
        [(64, 64), (32, 32), (16, 16), (8, 8)]
    """

    #: Gate every skip with an :class:`~medbalance.nets.blocks.AttentionGate` (Attention U-Net).
    attention_gates = False

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        base_channels: int = 64,
        depth: int = 4,
        spatial_dims: int = 2,
        norm: str = "batch",
        dropout: float = 0.0,
        upsample: str = "transpose",
        pad_mode: str = "replicate",
        deep_supervision: bool = False,
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
        require_choice("upsample", upsample, UPSAMPLE_MODES)
        widths = self.widths
        kwargs = self.block_kwargs
        self.decoder = UNetDecoder(widths, upsample=upsample, attention=self.attention_gates, **kwargs)
        self.head = self.head_layer(widths[0])
        # Decoder stages at 1/2 .. 1/2**(depth-1); the coarsest stage gets no head, as in nnU-Net.
        self.aux_heads = (
            nn.ModuleList(self.head_layer(widths[i]) for i in range(1, depth)) if deep_supervision else None
        )
        init_kaiming_(self)

    def forward_padded(self, x: torch.Tensor) -> list[torch.Tensor]:
        stages = self.decoder.stages(self.encoder(x))
        outputs = [self.head(stages[-1])]
        if self.with_aux:
            outputs += [head(stage) for head, stage in zip(self.aux_heads, reversed(stages[:-1]))]
        return outputs
