"""Shared input bank and property tester for every loss in ``medbalance.losses``.

A new loss gets the SPEC property tests (non-negative, ~0 at a perfect prediction, finite at
extreme logits / under autocast / in half precision / on empty masks, label == one-hot,
module == functional, no mutation in forward, clear errors) by subclassing
:class:`LossTester`::

    class TestFocalProperties(LossTester):
        functional = staticmethod(LF.focal_loss)
        module = FocalLoss
        kwargs = {"gamma": 2.0}
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

TARGET_KINDS = ("labels", "labels_ch", "onehot", "soft")


@dataclass(frozen=True)
class LossCase:
    """One seeded ``(logits, target)`` input: ``target_kind`` is one of :data:`TARGET_KINDS`."""

    name: str
    num_classes: int
    spatial: tuple[int, ...]
    target_kind: str
    batch: int = 2
    seed: int = 0
    scale: float = 2.0
    ignore_index: int | None = None

    def make(self) -> tuple[Tensor, Tensor]:
        return make_inputs(
            self.num_classes,
            self.spatial,
            self.target_kind,
            batch=self.batch,
            seed=self.seed,
            scale=self.scale,
            ignore_index=self.ignore_index,
        )


def make_inputs(
    num_classes: int,
    spatial: tuple[int, ...],
    target_kind: str,
    *,
    batch: int = 2,
    seed: int = 0,
    scale: float = 2.0,
    ignore_index: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Seeded logits ``(batch, C, *spatial)`` and a target of the requested kind.

    ``labels``: int64 ``(N, *spatial)``; ``labels_ch``: uint8 ``(N, 1, *spatial)``; ``onehot``:
    float one-hot of the logits' shape; ``soft``: float in [0, 1] of the logits' shape (rows
    summing to 1 for C >= 2). ``ignore_index`` replaces about a quarter of the labels.
    """
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, num_classes, *spatial, generator=g) * scale
    labels = torch.randint(0, max(num_classes, 2), (batch, *spatial), generator=g)
    if target_kind == "labels":
        target = labels
    elif target_kind == "labels_ch":
        target = labels.unsqueeze(1).to(torch.uint8)
    elif target_kind == "onehot":
        target = one_hot(labels, num_classes)
    elif target_kind == "soft":
        raw = torch.rand(batch, num_classes, *spatial, generator=g)
        target = raw if num_classes == 1 else raw / raw.sum(dim=1, keepdim=True)
    else:
        raise ValueError(f"unknown target_kind {target_kind!r}")
    if ignore_index is not None:
        drop = torch.rand(labels.shape, generator=g) < 0.25
        target = target.clone()
        if target_kind == "labels_ch":
            target[drop.unsqueeze(1)] = ignore_index
        else:
            target[drop] = ignore_index
    return logits, target


def one_hot(labels: Tensor, num_classes: int) -> Tensor:
    """Float one-hot ``(N, C, *spatial)`` of int labels; for C == 1 the 0/1 foreground map."""
    if num_classes == 1:
        return labels.unsqueeze(1).float()
    return torch.nn.functional.one_hot(labels.long(), num_classes).movedim(-1, 1).float()


def labels_of(target: Tensor, num_classes: int) -> Tensor:
    """The int64 label map ``(N, *spatial)`` of a hard target from :func:`make_inputs`."""
    if target.dtype.is_floating_point:  # one-hot
        return target.argmax(1) if num_classes > 1 else target[:, 0].long()
    return target.squeeze(1).long() if target.dtype == torch.uint8 else target  # uint8: labels_ch


def perfect_logits(target: Tensor, num_classes: int, magnitude: float = 40.0) -> Tensor:
    """Logits of ``magnitude`` that agree with a hard target from :func:`make_inputs`."""
    return (2.0 * one_hot(labels_of(target, num_classes), num_classes) - 1.0) * magnitude


CASES: list[LossCase] = [
    LossCase("binary-2d-labels", 1, (8, 8), "labels"),
    LossCase("binary-2d-labels_ch", 1, (8, 8), "labels_ch"),
    LossCase("binary-3d-soft", 1, (4, 5, 6), "soft"),
    LossCase("binary-2d-ignore", 1, (8, 8), "labels", ignore_index=255),
    LossCase("multi-2d-labels", 4, (8, 8), "labels"),
    LossCase("multi-3d-onehot", 3, (4, 4, 4), "onehot"),
    LossCase("multi-2d-soft", 3, (6, 7), "soft"),
    LossCase("multi-2d-ignore", 4, (8, 8), "labels", ignore_index=255),
    LossCase("multi-3d-labels_ch-ignore", 3, (4, 4, 4), "labels_ch", ignore_index=7),
    LossCase("multi-1d-labels", 2, (16,), "labels"),
]
HARD_CASES = [c for c in CASES if c.target_kind != "soft" and c.ignore_index is None]


@st.composite
def loss_inputs(draw: Callable, *, hard: bool = False, min_spatial_dims: int = 0) -> tuple[Tensor, Tensor]:
    """Hypothesis strategy for ``(logits, target)`` with C in {1, 2, 3, 5}.

    Args:
        hard: restrict targets to labels / one-hot (no soft targets).
        min_spatial_dims: 0 includes classification logits ``(N, C)``; up to 3 spatial dims.
    """
    kinds = TARGET_KINDS[:3] if hard else TARGET_KINDS
    spatial = tuple(draw(st.lists(st.integers(1, 5), min_size=min_spatial_dims, max_size=3)))
    return make_inputs(
        draw(st.sampled_from([1, 2, 3, 5])),
        spatial,
        draw(st.sampled_from(kinds)),
        batch=draw(st.integers(1, 3)),
        seed=draw(st.integers(0, 2**31 - 1)),
        scale=draw(st.sampled_from([0.1, 1.0, 5.0, 30.0])),
    )


# The property tests live on the base class and run once per subclass (loss); hypothesis flags
# that as "differing executors" because its example database is keyed by the shared function.
PROPERTY_SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.differing_executors])


class LossTester:
    """Property tests every loss must pass; subclass it with ``Test...`` to collect them.

    Attributes:
        functional: the snake_case function ``f(logits, target, **kwargs)``.
        module: the ``nn.Module`` class, constructed with ``**kwargs``.
        kwargs: arguments valid for any C (no class weights here).
        supports_ignore_index: whether the loss takes ``ignore_index``.
        atol: tolerance of the "~0 at a perfect prediction" check.
    """

    functional: ClassVar[Callable[..., Tensor]]
    module: ClassVar[type[nn.Module]]
    kwargs: ClassVar[dict[str, Any]] = {}
    supports_ignore_index: ClassVar[bool] = True
    atol: ClassVar[float] = 1e-4

    def loss(self, logits: Tensor, target: Tensor, **extra: Any) -> Tensor:
        return type(self).functional(logits, target, **{**self.kwargs, **extra})

    def _case_kwargs(self, case: LossCase) -> dict[str, Any]:
        return {} if case.ignore_index is None else {"ignore_index": case.ignore_index}

    @pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
    def test_module_matches_functional(self, case: LossCase) -> None:
        if case.ignore_index is not None and not self.supports_ignore_index:
            pytest.skip("loss takes no ignore_index")
        logits, target = case.make()
        extra = self._case_kwargs(case)
        module = self.module(**{**self.kwargs, **extra})
        value = module(logits, target)
        assert value.dtype == torch.float32 and value.ndim == 0
        torch.testing.assert_close(value, self.loss(logits, target, **extra))

    @pytest.mark.parametrize("case", HARD_CASES, ids=lambda c: c.name)
    def test_label_forms_agree(self, case: LossCase) -> None:
        logits, target = case.make()
        labels = labels_of(target, case.num_classes)
        expected = self.loss(logits, labels)
        torch.testing.assert_close(self.loss(logits, labels.unsqueeze(1)), expected)
        torch.testing.assert_close(self.loss(logits, one_hot(labels, case.num_classes)), expected)

    @PROPERTY_SETTINGS
    @given(inputs=loss_inputs())
    def test_non_negative_and_finite(self, inputs: tuple[Tensor, Tensor]) -> None:
        value = self.loss(*inputs)
        assert torch.isfinite(value) and value >= -1e-6

    @PROPERTY_SETTINGS
    @given(inputs=loss_inputs(hard=True))
    def test_near_zero_at_perfect_prediction(self, inputs: tuple[Tensor, Tensor]) -> None:
        logits, target = inputs
        value = self.loss(perfect_logits(target, logits.shape[1]), target)
        assert value.abs() < self.atol

    @PROPERTY_SETTINGS
    @given(inputs=loss_inputs(), sign_seed=st.integers(0, 2**31 - 1))
    def test_finite_gradients_at_extreme_logits(self, inputs: tuple[Tensor, Tensor], sign_seed: int) -> None:
        logits, target = inputs
        g = torch.Generator().manual_seed(sign_seed)
        extreme = (torch.randint(0, 2, logits.shape, generator=g) * 2.0 - 1.0) * 1e4
        extreme.requires_grad_(True)
        value = self.loss(extreme, target)
        value.backward()
        assert torch.isfinite(value)
        assert extreme.grad is not None and torch.isfinite(extreme.grad).all()

    @pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
    @pytest.mark.parametrize("case", [CASES[0], CASES[4], CASES[5]], ids=lambda c: c.name)
    def test_autocast_is_float32_and_finite(self, case: LossCase, dtype: torch.dtype) -> None:
        logits, target = case.make()
        conv = nn.Conv3d if logits.ndim == 5 else nn.Conv2d
        net = conv(case.num_classes, case.num_classes, 1)
        with torch.autocast("cpu", dtype=dtype):
            out = net(logits * 1e3)
            assert out.dtype == dtype
            value = self.module(**self.kwargs)(out, target)
        value.backward()
        assert value.dtype == torch.float32 and torch.isfinite(value)
        assert all(torch.isfinite(p.grad).all() for p in net.parameters())

    @pytest.mark.parametrize("case", CASES[:6], ids=lambda c: c.name)
    def test_half_logits(self, case: LossCase) -> None:
        logits, target = case.make()
        extra = self._case_kwargs(case)
        half = (logits * 1e3).clamp(-6e4, 6e4).half()
        value = self.loss(half, target, **extra)
        assert value.dtype == torch.float32 and torch.isfinite(value)
        torch.testing.assert_close(value, self.loss(half.float(), target, **extra))
        value = self.loss(logits.half(), target, **extra)
        torch.testing.assert_close(value, self.loss(logits.half().float(), target, **extra))

    @pytest.mark.parametrize("num_classes", [1, 3])
    @pytest.mark.parametrize("side", [6, 1])  # 1: a single pixel
    def test_empty_and_full_masks_are_finite(self, num_classes: int, side: int) -> None:
        logits = torch.randn(2, num_classes, side, side, requires_grad=True)
        last = max(num_classes - 1, 1)
        full_soft = torch.zeros(2, num_classes, side, side)
        full_soft[:, num_classes - 1] = 1.0
        targets = (
            torch.zeros(2, side, side, dtype=torch.long),  # empty foreground
            torch.zeros(2, num_classes, side, side),  # empty, soft form
            torch.full((2, side, side), last, dtype=torch.long),  # all foreground
            full_soft,
        )
        for target in targets:
            value = self.loss(logits, target)
            (grad,) = torch.autograd.grad(value, logits)
            assert torch.isfinite(value) and torch.isfinite(grad).all()
        logits = torch.randn(2, num_classes, 6, 6, requires_grad=True)
        if self.supports_ignore_index:
            value = self.loss(logits, torch.full((2, 6, 6), 255), ignore_index=255)
            (grad,) = torch.autograd.grad(value, logits)
            assert torch.isfinite(value) and torch.isfinite(grad).all()

    @pytest.mark.parametrize("num_classes", [1, 3])
    @pytest.mark.parametrize("shape", [(0, 4, 4), (2, 0, 4)], ids=["no-image", "no-pixel"])
    def test_empty_input_is_finite(self, num_classes: int, shape: tuple[int, ...]) -> None:
        # an empty batch (a filtered batch, an idle shard) or zero pixels: the mean over nothing
        logits = torch.randn(shape[0], num_classes, *shape[1:], requires_grad=True)
        value = self.loss(logits, torch.zeros(shape, dtype=torch.long))
        (grad,) = torch.autograd.grad(value, logits)
        assert value.shape == () and torch.isfinite(value) and grad.shape == logits.shape

    def test_forward_does_not_mutate_module(self) -> None:
        logits, target = CASES[4].make()
        module = self.module(**self.kwargs)
        before_attrs = copy.deepcopy({k: v for k, v in vars(module).items() if not k.startswith("_")})
        before_state = copy.deepcopy(module.state_dict())
        first = module(logits, target)
        torch.testing.assert_close(module(logits, target), first)
        assert {k: v for k, v in vars(module).items() if not k.startswith("_")} == before_attrs
        after_state = module.state_dict()
        assert before_state.keys() == after_state.keys()
        assert all(torch.equal(before_state[k], after_state[k]) for k in before_state)

    @pytest.mark.parametrize(
        ("num_classes", "target", "message"),
        [
            (
                3,
                torch.full((2, 4, 4), 3),
                "target has label 3 but logits have 3 classes (expected values in [0, 3))",
            ),
            (1, torch.full((2, 4, 4), 2), "target has label 2 but logits have 1 channel (binary: expected"),
            (3, torch.full((2, 4, 4), -1), "target has label -1 but"),
            # one bad pixel among good ones (region losses find it through the one-hot encoding)
            (
                3,
                torch.zeros(2, 4, 4, dtype=torch.long).index_put_((torch.tensor([1]),) * 3, torch.tensor(5)),
                "target has label 5 but logits have 3 classes",
            ),
            (
                3,
                torch.zeros(2, 5, 5, dtype=torch.long),
                "target label map must have shape (2, 4, 4) or (2, 1, 4, 4) to match logits (2, 3, 4, 4), "
                "got (2, 5, 5)",
            ),
            (3, torch.zeros(2, 1, 4, 4), "float target must have the logits' shape (2, 3, 4, 4)"),
            (3, torch.full((2, 3, 4, 4), 1.5), "target has values in [1.5, 1.5] (expected one-hot or soft"),
            (3, torch.full((2, 3, 4, 4), float("nan")), "target contains NaN or inf"),
        ],
        ids=[
            "label-high",
            "binary-label-2",
            "label-negative",
            "one-bad-pixel",
            "label-shape",
            "float-shape",
            "range",
            "nan",
        ],
    )
    def test_bad_target_raises(self, num_classes: int, target: Tensor, message: str) -> None:
        with pytest.raises(ValueError, match=re.escape(message)):
            self.loss(torch.zeros(2, num_classes, 4, 4), target)

    def test_bad_dtypes_raise(self) -> None:
        with pytest.raises(TypeError, match="logits must be a floating-point tensor"):
            self.loss(torch.zeros(2, 3, 4, 4, dtype=torch.long), torch.zeros(2, 4, 4, dtype=torch.long))
        if self.supports_ignore_index:
            with pytest.raises(ValueError, match="ignore_index=255 needs an integer label target"):
                self.loss(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4), ignore_index=255)
