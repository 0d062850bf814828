"""Inference copies of a network: BatchNorm folded into the preceding convolution, convolutions
packed for oneDNN with their ReLU fused; the same function, computed faster.

In eval mode a BatchNorm is an affine map per channel, ``y = (x - mean) / sqrt(var + eps) *
gamma + beta``, so after a convolution it can be merged into the convolution's weight and bias:
``w' = w * s``, ``b' = (b - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)`` per output
channel. The folded network computes the same function (up to float rounding) with one pass
over every activation fewer; sliding-window inference spends ~90% of its time in the network
(benchmarks/RESULTS.md, "Sliding-window inference"). On CPU, :class:`PackedConv2d` further saves
oneDNN's per-call weight reorder and the ReLU's pass (the same outputs up to float rounding).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["PackedConv2d", "fold_batchnorm", "foldable_pairs", "inference_copy", "packable_convolutions"]


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


def _onednn_available() -> bool:
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
        and hasattr(torch._C._nn, "mkldnn_reorder_conv2d_weight")
    )


class PackedConv2d(nn.Module):
    """A 2D convolution (and the ReLU after it) as one oneDNN call on weights packed once.

    oneDNN reorders a convolution's weights into its blocked layout on every call of an
    ``nn.Conv2d``; packing them once and applying the ReLU inside the same kernel saves that
    reorder and a pass over the output. Same arithmetic: the outputs equal ``relu(conv(x))`` up to
    float rounding (bitwise for most shapes measured, within 1e-6 for all). Inference only: float32 CPU inputs without
    autograd or autocast take the packed path, anything else runs the original ``conv`` (and
    ReLU), so the module stays correct wherever it is called.
    """

    def __init__(self, conv: nn.Conv2d, *, relu: bool) -> None:
        super().__init__()
        self.conv, self.relu = conv, relu
        weight = conv.weight.detach()
        args = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
        # the input size only guides oneDNN's choice of layout; the packed weights serve any size
        self._packed = torch._C._nn.mkldnn_reorder_conv2d_weight(
            weight.to_mkldnn(), *args, [1, conv.in_channels, 64, 64]
        )
        self._bias = None if conv.bias is None else conv.bias.detach()
        self._args = args

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            x.device.type != "cpu"
            or x.dtype != torch.float32
            or torch.is_grad_enabled()
            or torch.is_autocast_enabled("cpu")
        ):
            out = self.conv(x)
            return torch.relu(out) if self.relu else out
        padding, stride, dilation, groups = self._args
        attr = "relu" if self.relu else "none"
        return torch.ops.mkldnn._convolution_pointwise(
            x, self._packed, self._bias, padding, stride, dilation, groups, attr, [], ""
        )


def _packable(conv: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
        and conv.weight.device.type == "cpu"
        and conv.weight.dtype == torch.float32
    )


def packable_convolutions(model: nn.Module) -> list[tuple[nn.Sequential, str, str | None]]:
    """``(sequential, conv_name, relu_name or None)`` for every float32 CPU ``nn.Conv2d`` of an
    ``nn.Sequential`` of ``model``, with the ReLU that follows it (after any ``nn.Identity``, e.g. a
    folded norm); ``[]`` where this torch lacks oneDNN's ops."""
    if not _onednn_available():
        return []
    sites = []
    for seq in model.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for i, name in enumerate(names):
            if _packable(seq._modules[name]):
                j = i + 1
                while j < len(names) and isinstance(seq._modules[names[j]], nn.Identity):
                    j += 1
                relu = j < len(names) and type(seq._modules[names[j]]) is nn.ReLU
                sites.append((seq, name, names[j] if relu else None))
    return sites


def inference_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` that computes the same outputs faster at inference; ``model`` itself
    when there is nothing to change (a model in training mode, or one already prepared).

    Every BatchNorm of :func:`foldable_pairs` is folded into its convolution
    (:func:`fold_batchnorm`), then every convolution of :func:`packable_convolutions` becomes a
    :class:`PackedConv2d` with its ReLU fused. ``model`` is never changed.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU()).eval()
        >>> fast = inference_copy(net)
        >>> x = torch.randn(1, 1, 8, 8)
        >>> with torch.no_grad():
        ...     same = torch.allclose(fast(x), net(x), atol=1e-6)
        >>> same, inference_copy(fast) is fast, net[1].__class__.__name__
        (True, True, 'BatchNorm2d')
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
    if model.training:
        return model
    prepared = fold_batchnorm(model)
    if prepared is model:
        if not packable_convolutions(model):
            return model
        with torch.inference_mode(False):
            prepared = copy.deepcopy(model)
        prepared.requires_grad_(False)
    for seq, conv_name, relu_name in packable_convolutions(prepared):
        seq._modules[conv_name] = PackedConv2d(seq._modules[conv_name], relu=relu_name is not None)
        if relu_name is not None:
            seq._modules[relu_name] = nn.Identity()
    return prepared
