"""Tests of sliding-window inference (``medbalance.engine.sliding_window``).

References: MONAI 1.6.1 ``sliding_window_inference`` / ``compute_importance_map`` /
``dense_patch_slices`` (same grid, same map), ``scipy.signal.windows.gaussian`` for the map,
and a numpy re-derivation of the weighted blend with explicit loops.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.data.utils import compute_importance_map, dense_patch_slices
from monai.inferers import sliding_window_inference as monai_sliding_window
from scipy.signal.windows import gaussian as scipy_gaussian
from torch import nn

from medbalance.engine import gaussian_importance, sliding_window_inference, window_starts
from medbalance.nets import UNet

SRC = Path(__file__).resolve().parents[1] / "src"


def _scipy_map(patch, sigma_scale: float = 0.125) -> np.ndarray:
    """The Gaussian map from scipy's window (``exp(-n**2 / (2 std**2))``, n centred at ``(M - 1) / 2``)."""
    profiles = [scipy_gaussian(p, std=sigma_scale * p) for p in patch]
    return np.clip(functools.reduce(np.multiply, np.ix_(*profiles)), 1e-3, None)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _conv_net(spatial_dims: int, in_channels: int = 2, out_channels: int = 3) -> nn.Module:
    """A small random conv net with zero padding: its output depends on where the window is cut."""
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    torch.manual_seed(0)
    return nn.Sequential(
        conv(in_channels, 4, 3, padding=1), nn.ReLU(), conv(4, 4, 3, padding=1), nn.Tanh(), conv(4, out_channels, 1)
    ).eval()


# --- the importance map -------------------------------------------------------------------


@pytest.mark.parametrize("patch", [(1,), (2,), (7,), (64, 64), (5, 4), (9, 8, 6)])
@pytest.mark.parametrize("sigma_scale", [0.125, 0.3, 0.01])
def test_gaussian_equals_monai(patch, sigma_scale):
    expected = compute_importance_map(patch, mode="gaussian", sigma_scale=sigma_scale)
    torch.testing.assert_close(gaussian_importance(patch, sigma_scale=sigma_scale), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("patch", [(8,), (13, 6), (4, 5, 6)])
def test_gaussian_equals_scipy_outer_product(patch):
    np.testing.assert_allclose(gaussian_importance(patch, dtype=torch.float64).numpy(), _scipy_map(patch), rtol=1e-12)


def test_gaussian_is_clamped_and_symmetric():
    weight = gaussian_importance((16, 11), sigma_scale=0.05)
    assert weight.min().item() == pytest.approx(1e-3)  # the tails underflow below 1e-3 and are clamped
    torch.testing.assert_close(weight, weight.flip(0).flip(1))
    assert weight[8, 5] == weight.max()
    assert gaussian_importance((4, 4), dtype=torch.float16).dtype == torch.float16


def test_gaussian_per_axis_sigma():
    weight = gaussian_importance((9, 9), sigma_scale=(0.1, 0.4))
    expected = compute_importance_map((9, 9), mode="gaussian", sigma_scale=(0.1, 0.4))
    torch.testing.assert_close(weight, expected, rtol=0, atol=1e-6)


# --- the window grid ----------------------------------------------------------------------


def _reference_starts(size: int, patch: int, overlap: float) -> list[int]:
    """MONAI's documented rule, re-derived: step int(patch (1 - overlap)) >= 1, last window flush."""
    step = patch if size == patch else max(int(patch * (1 - overlap)), 1)
    starts, start = [], 0
    while True:
        starts.append(min(start, size - patch))
        if start + patch >= size:
            return starts
        start += step


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.tuples(st.integers(1, 40), st.integers(0, 90)), min_size=1, max_size=3),
    overlap=st.sampled_from([0.0, 0.25, 0.5, 0.7, 0.9, 0.99]),
)
def test_window_starts_equal_monai_grid(sizes, overlap):
    patch = tuple(p for p, _ in sizes)
    shape = tuple(p + extra for p, extra in sizes)
    starts = window_starts(shape, patch, overlap)
    assert starts == tuple(_reference_starts(s, p, overlap) for s, p in zip(shape, patch))
    interval = [p if s == p else max(int(p * (1 - overlap)), 1) for s, p in zip(shape, patch)]
    monai = {tuple(sl.start for sl in slices) for slices in dense_patch_slices(shape, patch, interval)}
    assert set(itertools.product(*starts)) == monai
    for axis_starts, s, p in zip(starts, shape, patch):
        assert axis_starts[0] == 0 and axis_starts[-1] == s - p  # the image is covered, border flush
        assert all(b > a for a, b in zip(axis_starts, axis_starts[1:]))


def test_window_starts_examples():
    assert window_starts((128,), (128,), 0.5) == ([0],)
    assert window_starts((565, 584), (128, 128), 0.5) == (
        [0, 64, 128, 192, 256, 320, 384, 437],
        [0, 64, 128, 192, 256, 320, 384, 448, 456],
    )
    assert window_starts((10,), (4,), 0.0) == ([0, 4, 6],)


# --- identity, constant mode, weight sums -------------------------------------------------

SHAPES = [
    ((16, 16), (16, 16)),  # equal to the window
    ((9, 12), (16, 16)),  # smaller on both axes: padded, cropped back
    ((9, 40), (16, 16)),  # smaller on one axis
    ((37, 50), (16, 16)),  # larger, not a multiple
    ((48, 64), (16, 32)),  # larger, multiples
    ((10, 9, 21), (8, 8, 8)),  # 3D larger, non-multiples
    ((5, 8, 13), (8, 8, 8)),  # 3D smaller, equal and larger
]


@pytest.mark.parametrize("shape,patch", SHAPES)
@pytest.mark.parametrize("mode", ["gaussian", "constant"])
@pytest.mark.parametrize("overlap", [0.0, 0.5, 0.75])
def test_identity_reproduces_input(shape, patch, mode, overlap):
    image = torch.rand(2, 3, *shape, generator=torch.Generator().manual_seed(1))
    out = sliding_window_inference(image, _identity, patch_size=patch, overlap=overlap, mode=mode, batch_size=3)
    assert out.shape == image.shape and out.dtype == torch.float32 and out.is_contiguous()
    torch.testing.assert_close(out, image, rtol=0, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(1, 30), min_size=2, max_size=3),
    patch=st.integers(1, 12),
    overlap=st.sampled_from([0.0, 0.3, 0.5, 0.9]),
    batch_size=st.integers(1, 5),
    sigma_scale=st.sampled_from([0.125, 0.02]),
)
def test_identity_property(shape, patch, overlap, batch_size, sigma_scale):
    image = torch.rand(1, 2, *shape, generator=torch.Generator().manual_seed(0))
    out = sliding_window_inference(
        image, _identity, patch_size=patch, overlap=overlap, batch_size=batch_size, sigma_scale=sigma_scale
    )
    # overlap 0.9 puts up to 12**3 windows on a voxel, each adding a float32 rounding (6e-8 relative)
    torch.testing.assert_close(out, image, rtol=1e-4, atol=1e-6)


def _reference_blend(image: np.ndarray, predict, patch, overlap, weight: np.ndarray) -> np.ndarray:
    """numpy re-derivation: sum over windows of weight * prediction, divided by the summed weights
    (images at least the window; ``predict`` maps one window (C, *patch) to (C_out, *patch))."""
    shape = image.shape[2:]
    grid = itertools.product(*[_reference_starts(s, p, overlap) for s, p in zip(shape, patch)])
    total, weight_sum = None, np.zeros(shape)
    for start in grid:
        region = tuple(slice(s, s + p) for s, p in zip(start, patch))
        weight_sum[region] += weight
        for n in range(image.shape[0]):
            pred = predict(image[(n, slice(None), *region)])
            if total is None:
                total = np.zeros((image.shape[0], pred.shape[0], *shape))
            total[(n, slice(None), *region)] += weight * pred
    return total / weight_sum


def _window_mean(x: torch.Tensor) -> torch.Tensor:
    """A predictor that is not translation-equivariant: each window's mean, broadcast over it."""
    return x.mean(dim=tuple(range(2, x.ndim)), keepdim=True).expand_as(x) * 2 + 1


@pytest.mark.parametrize("mode", ["gaussian", "constant"])
@pytest.mark.parametrize(
    "shape,patch,overlap", [((30, 23), (8, 8), 0.5), ((17, 20), (6, 9), 0.25), ((9, 11, 10), (4, 5, 6), 0.5)]
)
def test_blend_equals_numpy_reference(mode, shape, patch, overlap):
    image = torch.rand(2, 2, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    out = sliding_window_inference(image, _window_mean, patch_size=patch, overlap=overlap, mode=mode)
    weight = _scipy_map(patch) if mode == "gaussian" else np.ones(patch)
    predict = lambda w: _window_mean(torch.from_numpy(w)[None])[0].numpy()  # noqa: E731
    expected = _reference_blend(image.numpy(), predict, patch, overlap, weight)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_constant_mode_is_the_mean_of_covering_windows():
    # 1 x 10 image, window 4, overlap 0.5: starts 0, 2, 4, 6; predictor returns each window's start
    image = torch.arange(10.0).view(1, 1, 1, 10)
    out = sliding_window_inference(image, lambda x: x[..., :1].expand_as(x), patch_size=(1, 4), mode="constant")
    covering = [[s for s in (0, 2, 4, 6) if s <= i < s + 4] for i in range(10)]
    expected = torch.tensor([sum(c) / len(c) for c in covering]).view(1, 1, 1, 10)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("sigma_scale", [0.125, 0.02])
def test_weight_sums_at_the_borders(sigma_scale):
    """Each output voxel is its covering windows' values weighted by the map at that voxel: at the
    image borders (one window, weight 1e-3 when clamped) as well as inside."""
    size, patch = 13, 6  # starts 0, 3, 6, 7: the last two overlap more, the borders see one window
    image = torch.zeros(1, 1, size, size)
    values = []

    def predictor(x):
        # one value per window, in the order the windows come (row-major over the grid)
        out = torch.empty_like(x)
        for i in range(x.shape[0]):
            values.append(2 + math.sin(len(values)))
            out[i] = values[-1]
        return out

    out = sliding_window_inference(image, predictor, patch_size=patch, sigma_scale=sigma_scale, batch_size=5)
    starts = window_starts((size, size), (patch, patch), 0.5)
    assert starts == ([0, 3, 6, 7], [0, 3, 6, 7])
    weight = gaussian_importance((patch, patch), sigma_scale=sigma_scale, dtype=torch.float64)
    numerator, weight_sum = torch.zeros(size, size, dtype=torch.float64), torch.zeros(size, size, dtype=torch.float64)
    for k, (r, c) in enumerate(itertools.product(*starts)):  # the windows' order: row-major over the grid
        numerator[r : r + patch, c : c + patch] += weight * values[k]
        weight_sum[r : r + patch, c : c + patch] += weight
    # the corners: a single window, whose value passes unchanged whatever its (tiny) weight
    assert out[0, 0, 0, 0].item() == pytest.approx(values[0], rel=1e-6)
    assert out[0, 0, -1, -1].item() == pytest.approx(values[15], rel=1e-6)
    assert weight_sum[0, 0].item() == pytest.approx(weight[0, 0].item())
    np.testing.assert_allclose(out[0, 0].numpy(), (numerator / weight_sum).numpy(), rtol=1e-5)


# --- MONAI equality -----------------------------------------------------------------------


@pytest.mark.parametrize("overlap", [0.5, 0.25])
@pytest.mark.parametrize(
    "shape,patch",
    [((40, 37), (16, 16)), ((12, 50), (16, 16)), ((14, 19, 11), (8, 8, 8)), ((6, 20, 9), (8, 8, 8))],
)
@pytest.mark.parametrize("mode", ["gaussian", "constant"])
def test_equals_monai(overlap, shape, patch, mode):
    net = _conv_net(len(shape))
    image = torch.randn(2, 2, *shape, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        expected = monai_sliding_window(image, patch, 3, net, overlap=overlap, mode=mode, sigma_scale=0.125)
    out = sliding_window_inference(image, net, patch_size=patch, overlap=overlap, mode=mode, batch_size=3)
    assert out.shape == (2, 3, *shape)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("channels_last", [True, False, "auto"])
def test_equals_monai_unet_any_layout(channels_last):
    torch.manual_seed(0)
    net = UNet(3, 2, base_channels=4, depth=2).eval()
    image = torch.randn(1, 3, 45, 38, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        expected = monai_sliding_window(image, (32, 32), 4, net, overlap=0.5, mode="gaussian", sigma_scale=0.125)
    out = sliding_window_inference(image, net, patch_size=32, channels_last=channels_last)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_channels_last_windows():
    layouts = []

    def record(x):
        layouts.append(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())
        return x

    image = torch.rand(1, 3, 20, 20)
    sliding_window_inference(image, record, patch_size=8, channels_last=True)
    sliding_window_inference(image, record, patch_size=8)  # "auto": a plain function keeps the layout
    assert layouts[0] and not layouts[-1]
    net = UNet(3, 1, base_channels=4, depth=1).eval()
    assert net.prefers_channels_last
    seen = []
    net.register_forward_pre_hook(lambda _, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    sliding_window_inference(image, net, patch_size=8)
    assert all(seen)


# --- test-time augmentation, deep supervision, batching -----------------------------------


@pytest.mark.parametrize("flip_axes", [(0,), (1,), (0, 1)])
def test_flip_tta_is_the_mean_of_flipped_predictions(flip_axes):
    net = _conv_net(2)
    image = torch.randn(1, 2, 30, 21, generator=torch.Generator().manual_seed(5))
    out = sliding_window_inference(image, net, patch_size=16, flip_axes=flip_axes)
    subsets = [s for k in range(len(flip_axes) + 1) for s in itertools.combinations(flip_axes, k)]
    assert len(subsets) == 2 ** len(flip_axes)
    expected = 0
    for subset in subsets:
        dims = [a + 2 for a in subset]
        with torch.inference_mode():
            expected = expected + sliding_window_inference(
                image, lambda x, dims=dims: net(x.flip(dims)).flip(dims) if dims else net(x), patch_size=16
            )
    torch.testing.assert_close(out, expected / len(subsets), rtol=0, atol=1e-6)
    assert not torch.allclose(out, sliding_window_inference(image, net, patch_size=16), atol=1e-3)


def test_flip_tta_3d_calls_every_combination():
    calls = []

    def predictor(x):
        calls.append(x.shape[0])
        return x * 3

    image = torch.rand(1, 1, 8, 9, 10)
    out = sliding_window_inference(image, predictor, patch_size=8, flip_axes=(0, 1, 2), batch_size=2)
    # an equivariant predictor: the mean of the 8 mirrored predictions is the prediction
    torch.testing.assert_close(out, image * 3, rtol=0, atol=1e-6)
    windows = 1 * 2 * 2
    assert len(calls) == 8 * windows // 2 and max(calls) <= 2


def test_deep_supervision_takes_the_first_output():
    net = _conv_net(2)
    image = torch.randn(1, 2, 25, 19)

    def deep(x):
        main = net(x)
        return (main, main[..., ::2, ::2] * 100)

    expected = sliding_window_inference(image, net, patch_size=(8, 16))
    torch.testing.assert_close(sliding_window_inference(image, deep, patch_size=(8, 16)), expected)
    torch.testing.assert_close(sliding_window_inference(image, lambda x: list(deep(x)), patch_size=(8, 16)), expected)


def test_windows_are_cut_lazily_in_batches():
    sizes = []
    image = torch.rand(3, 1, 20, 20)
    sliding_window_inference(image, lambda x: sizes.append(x.shape[0]) or x, patch_size=8, batch_size=5)
    assert window_starts((20, 20), (8, 8), 0.5) == ([0, 4, 8, 12], [0, 4, 8, 12])
    assert sizes == [5] * 9 + [3]  # 3 images x 16 windows, 5 at a time


def test_half_precision_input_accumulates_in_float32():
    image = torch.rand(1, 1, 20, 24).to(torch.bfloat16)
    out = sliding_window_inference(image, lambda x: x * 2, patch_size=8)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, image.float() * 2, rtol=0, atol=1e-6)


def test_output_device_and_no_autograd():
    net = _conv_net(2)
    out = sliding_window_inference(torch.randn(1, 2, 12, 12), net, patch_size=8, output_device="cpu")
    assert out.device.type == "cpu" and not out.requires_grad


# --- argument errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"patch_size": (8, 8, 8)}, "patch_size must have 2 values"),
        ({"patch_size": 0}, "patch_size must hold positive integers"),
        ({"patch_size": (8, 2.5)}, "patch_size must hold positive integers"),
        ({"patch_size": 8, "overlap": 1.0}, r"overlap must be in \[0, 1\)"),
        ({"patch_size": 8, "overlap": -0.1}, r"overlap must be in \[0, 1\)"),
        ({"patch_size": 8, "overlap": (0.5,)}, "overlap must have one value per spatial axis"),
        ({"patch_size": 8, "mode": "mean"}, "mode must be one of"),
        ({"patch_size": 8, "batch_size": 0}, "batch_size must be a positive int"),
        ({"patch_size": 8, "flip_axes": (2,)}, "flip_axes must be distinct spatial axes"),
        ({"patch_size": 8, "flip_axes": (0, 0)}, "flip_axes must be distinct spatial axes"),
        ({"patch_size": 8, "sigma_scale": 0.0}, "sigma_scale must be positive"),
        ({"patch_size": 8, "channels_last": "yes"}, "channels_last must be True, False or 'auto'"),
    ],
)
def test_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sliding_window_inference(torch.rand(1, 1, 10, 10), _identity, **kwargs)


def test_image_and_predictor_errors():
    for image in (torch.rand(10, 10), torch.rand(0, 1, 10, 10), np.zeros((1, 1, 10, 10))):
        with pytest.raises(ValueError, match="image must be a non-empty"):
            sliding_window_inference(image, _identity, patch_size=4)
    with pytest.raises(ValueError, match="predictor must return"):
        sliding_window_inference(torch.rand(1, 1, 10, 10), lambda x: x[..., :-1], patch_size=4)
    with pytest.raises(ValueError, match="shape must be at least patch_size"):
        window_starts((3, 10), (4, 4), 0.5)
    with pytest.raises(ValueError, match="patch_size must be a sequence"):
        gaussian_importance(8)


# --- memory -------------------------------------------------------------------------------

_MEMORY_SCRIPT = textwrap.dedent(
    """
    import resource, torch
    from torch import nn
    from medbalance.engine import sliding_window_inference
    torch.set_num_threads(1)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()
    image = torch.rand(1, 1, 4096, 4096)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = sliding_window_inference(image, net, patch_size=256, batch_size=8)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert out.shape == (1, 2, 4096, 4096) and bool(torch.isfinite(out).all())
    print(before // 1024, after // 1024)
    """
)


@pytest.mark.slow
def test_4096_image_memory_is_bounded():
    """Peak RSS growth of a 4096 x 4096 predict: the 2-channel float32 output (128 MiB) and the
    weight sum (64 MiB) plus a few window batches. All 961 windows at once would add 750 MiB."""
    proc = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    assert proc.returncode == 0, proc.stderr
    before_mib, after_mib = map(int, proc.stdout.split())
    assert after_mib - before_mib < 600, (before_mib, after_mib)
