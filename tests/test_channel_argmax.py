"""channel_argmax (the segmentation prediction) equals torch's argmax(dim=1)."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medbalance.engine.tasks import SegmentationTask, channel_argmax


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 3),
    c=st.integers(1, 9),
    h=st.integers(1, 7),
    w=st.integers(1, 7),
    levels=st.integers(2, 5),
    channels_last=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]),
    seed=st.integers(0, 2**31 - 1),
)
def test_equals_argmax_with_ties_layouts_and_dtypes(n, c, h, w, levels, channels_last, dtype, seed) -> None:
    # Few distinct values, so ties between channels are frequent.
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randint(0, levels, (n, c, h, w), generator=gen).to(dtype)
    if channels_last:
        logits = logits.contiguous(memory_format=torch.channels_last)
    labels = channel_argmax(logits)
    assert labels.dtype == torch.int64
    assert torch.equal(labels, logits.argmax(dim=1))


def test_equals_argmax_on_3d_and_1d_spatial_and_non_contiguous_views() -> None:
    gen = torch.Generator().manual_seed(0)
    for shape in [(2, 4, 3, 5, 6), (3, 5, 11)]:
        logits = torch.randn(shape, generator=gen)
        assert torch.equal(channel_argmax(logits), logits.argmax(dim=1))
    view = torch.randn(2, 6, 8, 8, generator=gen)[:, ::2, :, 1::2]
    assert torch.equal(channel_argmax(view), view.argmax(dim=1))


def test_segmentation_task_predicts_with_it() -> None:
    logits = torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(SegmentationTask(4).predict(logits), logits.argmax(dim=1))
