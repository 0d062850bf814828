"""Attention U-Net (Oktay et al., MIDL 2018): a U-Net with additive attention gates on the skips."""

from __future__ import annotations

from medbalance.nets.unet import UNet

__all__ = ["AttentionUNet"]


class AttentionUNet(UNet):
    """U-Net whose every skip connection passes an additive attention gate before the
    concatenation (:class:`~medbalance.nets.blocks.AttentionGate`), gated by the coarser
    decoder feature that is about to be upsampled (the bottleneck for the deepest skip).

    Everything else -- arguments, padding, widths, deep supervision -- is that of
    :class:`~medbalance.nets.unet.UNet`; a gate on a skip of width ``w`` adds
    ``4 w**2 + 3 w + 1`` parameters (2x2 ``W_x``, 1x1 ``W_g``, ``psi``, 1x1 conv + norm output),
    about 4.5% on top of the U-Net.

    Reference:
        O. Oktay, J. Schlemper, L. Le Folgoc et al., "Attention U-Net: Learning Where to Look
        for the Pancreas", MIDL 2018. As in the authors' code the gate sub-samples the skip
        by 2 to the gating signal's grid and uses ``inter = skip_channels // 2``; the
        reference network's widths are 64..1024 divided by ``feature_scale=4``, i.e.
        ``base_channels=16`` (the default here). Differences: the gating signal is the raw
        coarser feature (the authors add a 1x1 conv-BN-ReLU on the bottleneck first; the
        gate's own ``W_g`` projection already maps channels), a single gate per skip (the
        paper's multi-head option is not offered), and deep supervision follows the
        nnU-Net convention (auxiliary logits at lower resolution) rather than the authors'
        upsample-and-concatenate ``dsv`` heads. MONAI's ``AttentionUnet`` gates with the
        upsampled decoder feature instead and uses one convolution per decoder level.

    Args:
        in_channels: image channels.
        num_classes: output channels (1: one binary logit).
        base_channels: width of the first level (16 in the reference code).
        depth: number of downsamplings (4 in the paper).
        spatial_dims: 2 or 3.
        norm: one of :data:`~medbalance.nets.blocks.NORMS`.
        dropout: dropout after every double conv.
        upsample: ``"transpose"``, ``"linear"`` or ``"nearest"``.
        pad_mode: ``"replicate"`` or ``"zeros"``.
        deep_supervision: return the auxiliary decoder outputs in training mode (as
            :class:`~medbalance.nets.unet.UNet`).

    Shape:
        ``(N, in_channels, *spatial) -> (N, num_classes, *spatial)`` raw logits.

    Example:
        >>> net = AttentionUNet(1, 2, base_channels=4).eval()
        >>> net(torch.randn(1, 1, 37, 53)).shape
        torch.Size([1, 2, 37, 53])
    """

    attention_gates = True

    # An explicit signature (not **kwargs): the config checker reads it to validate model keys.
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
            upsample=upsample,
            pad_mode=pad_mode,
            deep_supervision=deep_supervision,
        )
