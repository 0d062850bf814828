"""Sliding-window inference (nnU-Net style): a network trained on patches predicts whole images.

Windows of ``patch_size`` slide over the image with a given ``overlap``; their logits are
blended with a Gaussian importance map (sigma = 1/8 of the window, nnU-Net's choice), which
down-weights the window borders where a convolutional network sees the least context.

Window grid: MONAI's (:func:`window_starts`), so that the result equals MONAI's
``sliding_window_inference`` with the same settings; nnU-Net spreads its windows evenly
instead. Importance map: MONAI's closed form (:func:`gaussian_importance`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medbalance.engine import fold
from medbalance.engine.layout import memory_format

__all__ = ["gaussian_importance", "sliding_window_inference", "window_starts"]

#: Smallest weight of the importance map: the Gaussian's tails underflow towards 0, and a
#: voxel covered only by window borders must keep a positive weight sum (MONAI's value).
MIN_WEIGHT = 1e-3

MODES = ("gaussian", "constant")

Size = Union[int, Sequence[int]]
Overlap = Union[float, Sequence[float]]
Predictor = Callable[[Tensor], Union[Tensor, Sequence[Tensor]]]


def _per_axis(name: str, value: int | float | Sequence, ndim: int) -> tuple:
    """``value`` repeated to ``ndim`` axes, or a sequence of exactly ``ndim`` values."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (value,) * ndim
    values = tuple(value)
    if len(values) != ndim:
        raise ValueError(f"{name} must have one value per spatial axis ({ndim}), got {values!r}")
    return values


def _patch(patch_size: Size, ndim: int) -> tuple[int, ...]:
    patch = _per_axis("patch_size", patch_size, ndim)
    if any(isinstance(p, bool) or not isinstance(p, int) or p < 1 for p in patch):
        raise ValueError(f"patch_size must hold positive integers, got {patch_size!r}")
    return patch


def _overlap(overlap: Overlap, ndim: int) -> tuple[float, ...]:
    overlaps = _per_axis("overlap", overlap, ndim)
    if any(isinstance(o, bool) or not isinstance(o, (int, float)) or not 0.0 <= o < 1.0 for o in overlaps):
        raise ValueError(f"overlap must be in [0, 1), got {overlap!r}")
    return overlaps


def gaussian_importance(
    patch_size: Sequence[int],
    *,
    sigma_scale: float | Sequence[float] = 0.125,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Gaussian weight map of one window: ``exp(-d**2 / (2 sigma**2))`` per axis, multiplied.

    ``d`` is the distance of a voxel centre from the window centre (half-integer on even
    axes) and ``sigma = sigma_scale * patch_size`` per axis. The map is *not* normalised: its
    peak is 1 on odd axes and ``exp(-1 / (8 sigma**2))`` (just under 1) on even ones, which
    cancels in the blend (logits are divided by the summed weights). It is clamped from below
    at ``MIN_WEIGHT`` = 1e-3 (sigma 1/8 puts the corners near ``exp(-16)``), so every voxel
    keeps a positive weight. This is exactly MONAI's ``compute_importance_map(patch_size,
    mode="gaussian", sigma_scale=sigma_scale)`` (computed here in float64, then cast).
    nnU-Net v2 differs slightly: a discrete ``scipy`` Gaussian filter, scaled to peak 10, zeros
    replaced by the smallest positive weight.

    Args:
        patch_size: window size per spatial axis.
        sigma_scale: sigma as a fraction of the window, one value or one per axis.
        dtype: dtype of the map.
        device: device of the map (default: torch's default device).

    Returns:
        Tensor of shape ``patch_size``.

    Example:
        >>> w = gaussian_importance((5, 4))
        >>> w.shape, bool(w.max() <= 1), bool(w.min() >= 1e-3)
        (torch.Size([5, 4]), True, True)
    """
    if not isinstance(patch_size, Sequence):
        raise ValueError(f"patch_size must be a sequence with one size per axis, got {patch_size!r}")
    patch = _patch(patch_size, len(patch_size))
    scales = _per_axis("sigma_scale", sigma_scale, len(patch))
    if any(isinstance(s, bool) or not isinstance(s, (int, float)) or not s > 0 for s in scales):
        raise ValueError(f"sigma_scale must be positive, got {sigma_scale!r}")
    weight = torch.ones((), dtype=torch.float64, device=device)
    for axis, (size, scale) in enumerate(zip(patch, scales)):
        d = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
        profile = torch.exp(-(d**2) / (2 * (scale * size) ** 2))
        weight = weight.unsqueeze(-1) * profile.view((1,) * axis + (size,))
    return weight.clamp_(min=MIN_WEIGHT).to(dtype)


def window_starts(shape: Sequence[int], patch_size: Sequence[int], overlap: Overlap) -> tuple[list[int], ...]:
    """Start index of every window along each spatial axis (MONAI's grid).

    The step is ``int(patch * (1 - overlap))`` (at least 1); windows start at ``0, step,
    2 step, ...`` until one reaches the border, and that last one is moved back to end flush
    with it (``shape - patch``), so the last two may overlap more than ``overlap``. An axis
    equal to the window has one window. (nnU-Net instead spreads the same number of windows
    evenly, ``round(i * (shape - patch) / (n - 1))``.)

    Args:
        shape: image size per spatial axis, each at least the window (pad smaller images).
        patch_size: window size per spatial axis.
        overlap: fraction of the window shared by neighbours, in ``[0, 1)``; one value or one
            per axis.

    Returns:
        One ascending list of start indices per axis.

    Example:
        >>> window_starts((10, 4), (4, 4), 0.5)
        ([0, 2, 4, 6], [0])
        >>> window_starts((11,), (4,), 0.5)
        ([0, 2, 4, 6, 7],)
    """
    shape = tuple(shape)
    patch = _patch(patch_size, len(shape))
    overlaps = _overlap(overlap, len(shape))
    if any(s < p for s, p in zip(shape, patch)):
        raise ValueError(f"shape must be at least patch_size on every axis (pad it first), got {shape} < {patch}")
    starts = []
    for size, window, fraction in zip(shape, patch, overlaps):
        # the same float expression as MONAI, so that the grids agree when the product is inexact
        step = max(int(window * (1 - fraction)), 1)
        count = math.ceil((size - window) / step) + 1
        starts.append([min(i * step, size - window) for i in range(count)])
    return tuple(starts)


def _flip_combinations(flip_axes: Sequence[int], ndim: int) -> list[tuple[int, ...]]:
    """All ``2**k`` subsets of the spatial ``flip_axes``, as tensor dims (``()`` first: no flip)."""
    axes = tuple(flip_axes)
    if any(isinstance(a, bool) or not isinstance(a, int) or not 0 <= a < ndim for a in axes) or len(set(axes)) != len(
        axes
    ):
        raise ValueError(f"flip_axes must be distinct spatial axes in [0, {ndim}), got {flip_axes!r}")
    dims = [a + 2 for a in axes]
    return [combo for k in range(len(dims) + 1) for combo in itertools.combinations(dims, k)]


def _predict(predictor: Predictor, windows: Tensor, flips: list[tuple[int, ...]]) -> Tensor:
    """Logits of a window batch: the mean over ``flips`` of the mirrored predictions, mirrored back."""
    total = None
    for dims in flips:
        logits = predictor(windows.flip(dims) if dims else windows)
        if isinstance(logits, (tuple, list)):  # deep supervision: the full-resolution output first
            logits = logits[0]
        if dims:
            logits = logits.flip(dims)
        # summed in float32; a copy when more terms follow, as the logits may alias the windows (an identity)
        if total is None:
            total = logits.to(torch.float32, copy=len(flips) > 1)
        else:
            total.add_(logits)
    if len(flips) > 1:
        total.div_(len(flips))
    return total


def sliding_window_inference(
    image: Tensor,
    predictor: Predictor,
    *,
    patch_size: Size,
    overlap: Overlap = 0.5,
    mode: str = "gaussian",
    sigma_scale: float | Sequence[float] = 0.125,
    batch_size: int = 4,
    flip_axes: Sequence[int] = (),
    output_device: torch.device | str | None = None,
    channels_last: bool | str = "auto",
    inference_copy: bool = True,
) -> Tensor:
    """Logits of whole images from a predictor of ``patch_size`` windows, blended.

    Every image is zero-padded (split evenly before / after, as nnU-Net and MONAI) on the axes
    where it is smaller than the window. Windows on :func:`window_starts`'s grid, of all images
    of the batch together, are cut ``batch_size`` at a time into one reused buffer (never all
    at once) and predicted; their logits, times the importance map (:func:`gaussian_importance`
    or ones), are accumulated in float32 on ``output_device``, as is the sum of the weights,
    and divided by it at the end. The padding is cropped off, so the output has the input's
    spatial size. With the window grid and map of MONAI, the result equals MONAI's
    ``sliding_window_inference(image, patch_size, batch_size, predictor, overlap, mode,
    sigma_scale)`` up to float rounding.

    Test-time augmentation: with ``flip_axes`` of ``k`` spatial axes, every window batch is
    predicted ``2**k`` times, once for each subset of the axes (the empty one included), the
    input mirrored along that subset and the logits mirrored back; the window logits are their
    mean (nnU-Net's mirroring). Memory: the padded input, the float32 output and one weight
    map of the image's size, plus the predictor's activations on ``batch_size`` windows.

    Args:
        image: ``(N, C_in, *spatial)``, 2 or 3 spatial axes.
        predictor: maps a window batch ``(n, C_in, *patch_size)`` to logits ``(n, C_out,
            *patch_size)``, e.g. a network in eval mode; a tuple or list (deep supervision)
            contributes its first element.
        patch_size: window size, one int or one per spatial axis.
        overlap: fraction of the window shared by neighbours, in ``[0, 1)``.
        mode: ``"gaussian"`` (importance weighting) or ``"constant"`` (plain mean).
        sigma_scale: Gaussian sigma as a fraction of the window (``"gaussian"`` only).
        batch_size: windows per predictor call.
        flip_axes: spatial axes (0 = the first spatial axis) to mirror for test-time
            augmentation; ``()`` disables it.
        output_device: device of the accumulated logits (default: the image's); windows are
            predicted on the image's device.
        channels_last: window batches in ``torch.channels_last`` (2D only): ``True``,
            ``False`` or ``"auto"``, which follows the predictor's ``prefers_channels_last`` on
            CPU when it is an ``nn.Module`` (see :func:`medbalance.engine.memory_format`).
        inference_copy: when the predictor is an ``nn.Module``, run an inference copy of it:
            BatchNorms folded into their convolutions, on CPU convolutions packed for oneDNN with
            their ReLU fused (:func:`medbalance.engine.fold.inference_copy`: the same outputs
            within float rounding, the predictor itself untouched); ``False`` runs it as given.

    Returns:
        float32 logits ``(N, C_out, *spatial)`` on ``output_device``.

    Example:
        >>> image = torch.rand(1, 1, 50, 70)
        >>> out = sliding_window_inference(image, lambda x: 2 * x, patch_size=32)
        >>> out.shape, torch.allclose(out, 2 * image)
        (torch.Size([1, 1, 50, 70]), True)
    """
    if not isinstance(image, Tensor) or image.ndim not in (4, 5) or image.numel() == 0:
        raise ValueError(f"image must be a non-empty (N, C, *spatial) tensor, 2 or 3 spatial axes, got {_shape(image)}")
    spatial = tuple(image.shape[2:])
    ndim = len(spatial)
    if isinstance(patch_size, Sequence) and len(patch_size) != ndim:
        raise ValueError(f"patch_size must have {ndim} values for image shape {tuple(image.shape)}, got {patch_size!r}")
    patch = _patch(patch_size, ndim)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    flips = _flip_combinations(flip_axes, ndim)
    if channels_last not in (True, False, "auto"):
        raise ValueError(f"channels_last must be True, False or 'auto', got {channels_last!r}")
    if not isinstance(inference_copy, bool):
        raise ValueError(f"inference_copy must be True or False, got {inference_copy!r}")
    if inference_copy and isinstance(predictor, nn.Module):
        predictor = fold.inference_copy(predictor)
    output_device = image.device if output_device is None else torch.device(output_device)
    if channels_last == "auto":
        channels_last = isinstance(predictor, nn.Module) and memory_format("auto", predictor, image.device) is not None
    layout = torch.channels_last if channels_last and ndim == 2 else torch.contiguous_format

    with torch.inference_mode():
        missing = [max(p - s, 0) for s, p in zip(spatial, patch)]
        before = [m // 2 for m in missing]
        if any(missing):  # F.pad takes (before, after) pairs from the last axis backwards
            image = F.pad(image, [n for b, m in zip(before[::-1], missing[::-1]) for n in (b, m - b)])
        shape = tuple(image.shape[2:])
        grid = itertools.product(*window_starts(shape, patch, overlap))
        regions = [tuple(slice(s, s + p) for s, p in zip(start, patch)) for start in grid]
        if mode == "gaussian":
            weight = gaussian_importance(patch, sigma_scale=sigma_scale, device=output_device)
        else:
            weight = torch.ones(patch, device=output_device)
        weight_sum = torch.zeros(shape, device=output_device)
        for region in regions:
            weight_sum[region] += weight

        jobs = [(n, region) for n in range(image.shape[0]) for region in regions]
        buffer = torch.empty(
            (min(batch_size, len(jobs)), image.shape[1], *patch), dtype=image.dtype, device=image.device
        ).contiguous(memory_format=layout)
        output = None
        for first in range(0, len(jobs), batch_size):
            batch = jobs[first : first + batch_size]
            windows = buffer[: len(batch)]
            for i, (n, region) in enumerate(batch):
                windows[i].copy_(image[(n, slice(None), *region)])
            logits = _predict(predictor, windows, flips)
            if logits.shape[0] != len(batch) or tuple(logits.shape[2:]) != patch:
                raise ValueError(
                    f"predictor must return (n, C_out, *patch_size) = ({len(batch)}, C_out, *{patch}) logits, "
                    f"got {tuple(logits.shape)}"
                )
            logits = logits.to(output_device)
            if output is None:
                output = torch.zeros((image.shape[0], logits.shape[1], *shape), device=output_device)
            for i, (n, region) in enumerate(batch):
                output[(n, slice(None), *region)].addcmul_(logits[i], weight)
        output.div_(weight_sum)
        if any(missing):
            crop = tuple(slice(b, b + s) for b, s in zip(before, spatial))
            output = output[(slice(None), slice(None), *crop)].contiguous()
    return output


def _shape(value: object) -> object:
    return tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
