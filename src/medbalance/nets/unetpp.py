"""U-Net++ (Zhou et al., DLMIA 2018): a U-Net with nested, dense skip pathways."""

from __future__ import annotations

import torch
from torch import nn

from medbalance.nets.blocks import UPSAMPLE_MODES, SegmentationNet, Up, init_kaiming_, require_choice

__all__ = ["UNetPlusPlus"]


class UNetPlusPlus(SegmentationNet):
    """U-Net++: encoder nodes ``X^{i,0}`` and nested decoder nodes ``X^{i,j}`` (``j >= 1``,
    ``i + j <= depth``), each ``X^{i,j} = DoubleConv([X^{i,0}, ..., X^{i,j-1}, up(X^{i+1,j-1})])``,
    so every skip pathway is a dense block of convolutions that bridges the semantic gap
    between encoder and decoder features. Node ``X^{i,j}`` has ``base_channels * 2**i``
    channels; the upsampling (:class:`~medbalance.nets.blocks.Up`) halves the coarser width.

    Deep supervision: a 1x1 head on every top node ``X^{0,1..depth}``, all at full
    resolution. The main output is ``X^{0,depth}``; in training mode with
    ``deep_supervision=True``, ``forward`` returns ``(X^{0,depth}, X^{0,depth-1}, ...,
    X^{0,1})`` logits (deepest sub-network first). Eval mode returns ``X^{0,depth}`` only
    (the paper's "accurate" mode averages the heads and its pruned mode reads a shallower
    head; both can be obtained from the training-mode tuple).

    Any input size is padded to a multiple of ``2**depth`` and cropped back (see
    :class:`~medbalance.nets.blocks.SegmentationNet`).

    Reference:
        Z. Zhou, M. M. Rahman Siddiquee, N. Tajbakhsh, J. Liang, "UNet++: A Nested U-Net
        Architecture for Medical Image Segmentation", DLMIA 2018. Paper widths 32..512
        (``base_channels=32``, the default), transposed-conv upsampling to the finer width,
        9.04M parameters for one class without normalisation (this implementation:
        9,041,601 with ``norm="none"``). Unlike the paper (no norm) a norm follows every
        convolution by default. MONAI ``BasicUNetPlusPlus`` has the same node wiring but
        returns every head as a list (shallowest first) even in eval mode, and its default
        widths are (32, 32, 64, 128, 256).

    Args:
        in_channels: image channels.
        num_classes: output channels (1: one binary logit).
        base_channels: width of level 0 (32 in the paper).
        depth: number of downsamplings (4 in the paper).
        spatial_dims: 2 or 3.
        norm: one of :data:`~medbalance.nets.blocks.NORMS`.
        dropout: dropout after every double conv.
        upsample: ``"transpose"``, ``"linear"`` or ``"nearest"`` (see
            :class:`~medbalance.nets.blocks.Up`).
        pad_mode: ``"replicate"`` or ``"zeros"``.
        deep_supervision: return the heads of ``X^{0,depth-1..1}`` too in training mode.

    Shape:
        ``(N, in_channels, *spatial) -> (N, num_classes, *spatial)`` raw logits.

    Example:
        >>> net = UNetPlusPlus(1, 2, base_channels=4, deep_supervision=True)
        >>> [tuple(o.shape) for o in net(torch.randn(1, 1, 37, 53))]
        [(1, 2, 37, 53), (1, 2, 37, 53), (1, 2, 37, 53), (1, 2, 37, 53)]
        >>> net.eval()(torch.randn(1, 1, 37, 53)).shape
        torch.Size([1, 2, 37, 53])
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        base_channels: int = 32,
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
        # nodes[f"{i}_{j}"] computes X^{i,j} from X^{i+1,j-1} and the j nodes X^{i,0..j-1}.
        self.nodes = nn.ModuleDict(
            {
                f"{i}_{j}": Up(widths[i + 1], j * widths[i], widths[i], upsample=upsample, **kwargs)
                for j in range(1, depth + 1)
                for i in range(depth + 1 - j)
            }
        )
        self.head = self.head_layer(widths[0])
        self.aux_heads = (
            nn.ModuleList(self.head_layer(widths[0]) for _ in range(depth - 1)) if deep_supervision else None
        )
        init_kaiming_(self)

    def forward_padded(self, x: torch.Tensor) -> list[torch.Tensor]:
        grid = [[feature] for feature in self.encoder(x)]  # grid[i][j] = X^{i,j}
        for j in range(1, self.depth + 1):
            for i in range(self.depth + 1 - j):
                grid[i].append(self.nodes[f"{i}_{j}"](grid[i + 1][j - 1], torch.cat(grid[i], dim=1)))
        top = grid[0]
        outputs = [self.head(top[self.depth])]
        if self.with_aux:
            outputs += [head(node) for head, node in zip(self.aux_heads, reversed(top[1:-1]))]
        return outputs
