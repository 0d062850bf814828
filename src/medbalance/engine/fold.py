"""BatchNorm folded into the preceding convolution, on a copy of a network made for inference.

In eval mode a BatchNorm is an affine map per channel, ``y = (x - mean) / sqrt(var + eps) *
gamma + beta``, so after a convolution it can be merged into the convolution's weight and bias:
``w' = w * s``, ``b' = (b - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)`` per output
channel. The folded network computes the same function (up to float rounding) with one pass
over every activation fewer; sliding-window inference spends ~90% of its time in the network
(benchmarks/RESULTS.md, "Sliding-window inference").
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["fold_batchnorm", "foldable_pairs"]


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    return (
        isinstance(conv, nn.modules.conv._ConvNd)
        and isinstance(norm, nn.modules.batchnorm._BatchNorm)
        and not norm.training
        and norm.running_mean is not None  # without running statistics eval mode normalises by the batch's
        and norm.num_features == conv.out_channels
    )


def foldable_pairs(model: nn.Module) -> list[tuple[nn.Sequential, str, str]]:
    """``(sequential, conv_name, norm_name)`` for every eval-mode BatchNorm that directly follows a
    convolution (transposed ones included) in an ``nn.Sequential`` of ``model``.

    Only ``nn.Sequential`` neighbours are taken: there the convolution's output is known to be the
    norm's input, whatever the network's ``forward`` does elsewhere.
    """
    pairs = []
    for seq in model.modules():
        if isinstance(seq, nn.Sequential):
            names = list(seq._modules)
            pairs += [(seq, a, b) for a, b in zip(names, names[1:]) if _foldable(seq._modules[a], seq._modules[b])]
    return pairs


@torch.no_grad()
def _fold(conv: nn.modules.conv._ConvNd, norm: nn.modules.batchnorm._BatchNorm) -> None:
    # the per-channel factors in float64, so that the folded weights round once more than the originals
    scale = norm.running_var.double().add(norm.eps).rsqrt()
    if norm.weight is not None:
        scale = scale * norm.weight.double()
    shift = -norm.running_mean.double() * scale
    if conv.bias is not None:
        shift = shift + conv.bias.double() * scale
    if norm.bias is not None:
        shift = shift + norm.bias.double()
    scale = scale.to(conv.weight.dtype)
    weight = conv.weight
    if conv.transposed:  # weight (C_in, C_out / groups, *k): output channel g * C_out / groups + j is [g-th block, j]
        weight = weight.unflatten(0, (conv.groups, -1))
        scale = scale.view(conv.groups, 1, -1, *(1,) * (weight.ndim - 3))
    else:  # weight (C_out, C_in / groups, *k)
        scale = scale.view(-1, *(1,) * (weight.ndim - 1))
    weight.mul_(scale)  # in place: the weight keeps its memory layout (channels_last)
    conv.bias = nn.Parameter(shift.to(conv.weight.dtype), requires_grad=False)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every BatchNorm of :func:`foldable_pairs` folded into its convolution
    (and replaced by ``nn.Identity``); ``model`` itself when there is none.

    ``model`` is never changed: its parameters, buffers and ``training`` flag stay as they are. A
    model in training mode is returned as is (its BatchNorms normalise by the batch), as is one
    without BatchNorm after a convolution, so calling this on a folded copy costs a scan only.
    The copy is for inference: its parameters do not require gradients.

    Args:
        model: a network, typically in eval mode.

    Returns:
        The folded copy, or ``model``.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU()).eval()
        >>> folded = fold_batchnorm(net)
        >>> x = torch.randn(1, 1, 8, 8)
        >>> type(folded[1]).__name__, torch.allclose(folded(x), net(x), atol=1e-6), fold_batchnorm(folded) is folded
        ('Identity', True, True)
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
    if model.training or not foldable_pairs(model):
        return model
    # normal tensors even when called under torch.inference_mode (the copy may be fed outside it)
    with torch.inference_mode(False):
        folded = copy.deepcopy(model)
    for seq, conv_name, norm_name in foldable_pairs(folded):
        _fold(seq._modules[conv_name], seq._modules[norm_name])
        seq._modules[norm_name] = nn.Identity()
    folded.requires_grad_(False)
    return folded
