"""Tests of the pixel / sample-wise and long-tail losses: WCE, focal, Dice + Focal, online
bootstrapping, CSCE, LDAM-DRW and the dynamic losses (DFLCE, DFLCSCE)."""

from __future__ import annotations

import re
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceFocalLoss as MonaiDiceFocalLoss
from monai.losses import FocalLoss as MonaiFocalLoss
from torch import Tensor, nn

from medbalance.losses.balanced import (
    ClassBalancedCELoss,
    LDAMLoss,
    class_balanced_cross_entropy,
    ldam_loss,
    ldam_margins,
)
from medbalance.losses.bootstrap import (
    OnlineBootstrappingLoss,
    _largest_by_partition,
    _largest_by_topk,
    hard_pixel_fractions,
    online_bootstrapping_loss,
)
from medbalance.losses.ce import CrossEntropyLoss, WeightedCrossEntropyLoss, cross_entropy, weighted_cross_entropy
from medbalance.losses.compound import CompoundLoss, DiceFocalLoss, dice_focal_loss
from medbalance.losses.dice import dice_loss
from medbalance.losses.dynamic import (
    DFLCELoss,
    DFLCSCELoss,
    DynamicLoss,
    dflce_loss,
    dflcsce_loss,
    dynamic_loss,
    set_progress,
)
from medbalance.losses.focal import FocalLoss, focal_loss
from medbalance.losses.weights import effective_number_weights
from tests._loss_cases import CASES, LossCase, LossTester, make_inputs, one_hot
from tests._reference import losses_numpy as ref_core
from tests._reference import pixel_numpy as ref


def _np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _close(actual: Tensor, expected: Any) -> None:
    np.testing.assert_allclose(_np(actual), np.asarray(expected), rtol=1e-5, atol=1e-5)


def _ignore(case: LossCase) -> dict[str, Any]:
    return {} if case.ignore_index is None else {"ignore_index": case.ignore_index}


# --------------------------------------------------------------------------- property suites
# Losses built on class counts need one count per class of the input; the LossTester inputs vary
# C, so these adapters pick long-tailed counts for the C at hand.


def _counts(num_channels: int) -> list[float]:
    return [1000.0 / (k + 1) ** 2 for k in range(max(num_channels, 2))]


def _with_counts(fn, **fixed):
    def loss(logits: Tensor, target: Tensor, **kwargs: Any) -> Tensor:
        return fn(logits, target, class_counts=_counts(logits.shape[1]), **fixed, **kwargs)

    return loss


class _CountsAdapter(nn.Module):
    """Builds ``loss_cls(counts for C, **kwargs)`` at the logits' C, ``progress`` applied."""

    loss_cls: ClassVar[type[nn.Module]]
    progress: ClassVar[float | None] = None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.kwargs = kwargs

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        loss = self.loss_cls(_counts(logits.shape[1]), **self.kwargs)
        if self.progress is not None:
            set_progress(loss, self.progress)
        return loss(logits, target)


class _CSCEAdapter(_CountsAdapter):
    loss_cls = ClassBalancedCELoss


class _LDAMAdapter(_CountsAdapter):
    loss_cls = LDAMLoss
    progress = 0.9


class _DFLCSCEAdapter(_CountsAdapter):
    loss_cls = DFLCSCELoss
    progress = 0.5


class _HalfwayDFLCE(DFLCELoss):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        set_progress(self, 0.5)


class TestWCEProperties(LossTester):
    functional = staticmethod(weighted_cross_entropy)
    module = WeightedCrossEntropyLoss


class TestFocalProperties(LossTester):
    functional = staticmethod(focal_loss)
    module = FocalLoss


class TestFocalAlphaProperties(LossTester):
    functional = staticmethod(focal_loss)
    module = FocalLoss
    kwargs = {"gamma": 0.5, "alpha": 0.25}


class TestDiceFocalProperties(LossTester):
    functional = staticmethod(dice_focal_loss)
    module = DiceFocalLoss
    kwargs = {"lambda_focal": 2.0, "include_background": False}


class TestOnlineBootstrappingProperties(LossTester):
    functional = staticmethod(online_bootstrapping_loss)
    module = OnlineBootstrappingLoss
    kwargs = {"hard_num": 16}


class TestClassBalancedCEProperties(LossTester):
    functional = staticmethod(_with_counts(class_balanced_cross_entropy))
    module = _CSCEAdapter


class TestLDAMProperties(LossTester):
    functional = staticmethod(_with_counts(ldam_loss, progress=0.9))
    module = _LDAMAdapter


class TestDFLCEProperties(LossTester):
    functional = staticmethod(lambda logits, target, **kw: dflce_loss(logits, target, progress=0.5, **kw))
    module = _HalfwayDFLCE


class TestDFLCSCEProperties(LossTester):
    functional = staticmethod(_with_counts(dflcsce_loss, progress=0.5))
    module = _DFLCSCEAdapter


# --------------------------------------------------------------------------- weighted CE (seed 003)


class TestWeightedCrossEntropy:
    @pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
    @pytest.mark.parametrize("count_from", ["target", "prediction"])
    def test_matches_numpy(self, case: LossCase, count_from) -> None:
        logits, target = case.make()
        for kwargs in (dict(), dict(include_background=False, reduction="sum"), dict(reduction="none")):
            kwargs = {**kwargs, **_ignore(case), "count_from": count_from}
            _close(weighted_cross_entropy(logits, target, **kwargs), ref.wce(_np(logits), _np(target), **kwargs))

    def test_seed_003_binary_formula_is_the_default(self) -> None:
        # seed 003 / SPEC 2: WCE = -1/N sum(w r log p + (1 - r) log(1 - p)), w = (N - sum p) / sum p
        logits, target = make_inputs(1, (9, 7), "labels", batch=3, seed=21)
        r = target.float()
        n, p = r.numel(), torch.sigmoid(logits[:, 0])
        w_pred = (n - p.sum()) / p.sum()
        expected_pred = -(w_pred * r * torch.log(p) + (1 - r) * torch.log(1 - p)).mean()
        torch.testing.assert_close(weighted_cross_entropy(logits, target), expected_pred)
        torch.testing.assert_close(WeightedCrossEntropyLoss()(logits, target), expected_pred)
        # the option counts the target: w = (N - sum r) / sum r
        w = (n - r.sum()) / r.sum()
        expected = -(w * r * torch.log(p) + (1 - r) * torch.log(1 - p)).mean()
        torch.testing.assert_close(weighted_cross_entropy(logits, target, count_from="target"), expected)

    def test_is_cross_entropy_with_batch_weights(self) -> None:
        logits, target = make_inputs(3, (8, 8), "labels", seed=22)
        n = torch.bincount(target.flatten(), minlength=3).float()
        w = (target.numel() - n) / n
        w[0] = 1.0
        torch.testing.assert_close(
            weighted_cross_entropy(logits, target, count_from="target"), cross_entropy(logits, target, weight=w)
        )

    @pytest.mark.parametrize("count_from", ["target", "prediction"])
    @pytest.mark.parametrize("fill", [0, 1])
    def test_finite_without_positives_or_negatives(self, fill, count_from) -> None:
        logits = torch.randn(2, 1, 6, 6, requires_grad=True)
        target = torch.full((2, 6, 6), fill)
        value = weighted_cross_entropy(logits, target, count_from=count_from)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(logits.grad).all()
        if count_from == "target" or fill == 0:  # nothing to balance, or no positive term to weigh: plain BCE
            torch.testing.assert_close(value, cross_entropy(logits, target))

    def test_bad_count_from(self) -> None:
        with pytest.raises(ValueError, match="count_from must be one of 'target', 'prediction', got 'pred'"):
            WeightedCrossEntropyLoss(count_from="pred")


# --------------------------------------------------------------------------- focal


def _monai_focal(logits: Tensor, target: Tensor, **kwargs: Any) -> Tensor:
    binary = logits.shape[1] == 1
    if not target.dtype.is_floating_point and target.ndim == logits.ndim - 1:
        target = target.unsqueeze(1)
    labels = not target.dtype.is_floating_point
    loss = MonaiFocalLoss(use_softmax=not binary, to_onehot_y=labels and not binary, **kwargs)
    return loss(logits, target.float() if binary else target)


class TestFocal:
    @pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
    def test_matches_numpy(self, case: LossCase) -> None:
        logits, target = case.make()
        k = max(case.num_classes, 2)
        alpha_list = [0.1 * (j + 1) for j in range(k)]
        weight = [float(j + 1) for j in range(case.num_classes)]
        for kwargs in (
            dict(),
            dict(gamma=0.5, alpha=0.25, reduction="sum"),
            dict(gamma=3.0, alpha=alpha_list, weight=weight, include_background=False),
            dict(gamma=1.0, weight=weight, reduction="none"),
        ):
            kwargs = {**kwargs, **_ignore(case)}
            _close(focal_loss(logits, target, **kwargs), ref.focal(_np(logits), _np(target), **kwargs))

    @pytest.mark.parametrize(
        "case", [c for c in CASES if c.num_classes == 1 and c.target_kind != "soft"], ids=lambda c: c.name
    )
    @pytest.mark.parametrize("alpha", [None, 0.25, 0.8])
    @pytest.mark.parametrize("gamma", [0.0, 2.0, 3.5])
    def test_binary_matches_monai_sigmoid(self, case: LossCase, alpha, gamma) -> None:
        # ours(gamma, alpha) == MONAI FocalLoss(gamma, alpha) (sigmoid); same mean over the elements
        logits, target = case.make()
        for reduction in ("mean", "sum"):
            ours = focal_loss(logits, target, gamma=gamma, alpha=alpha, reduction=reduction, **_ignore(case))
            monai_reduction = "mean" if reduction == "mean" else "none"  # MONAI's "sum" averages space first
            monai = _monai_focal(logits, target, gamma=gamma, alpha=alpha, reduction=monai_reduction, **_ignore(case))
            torch.testing.assert_close(ours, monai if reduction == "mean" else monai.sum())

    @pytest.mark.parametrize("case", [CASES[4], CASES[5], CASES[6], CASES[9]], ids=lambda c: c.name)
    @pytest.mark.parametrize("option", ["plain", "alpha-scalar", "alpha-list", "weight"])
    def test_multiclass_matches_monai_softmax(self, case: LossCase, option) -> None:
        # MONAI FocalLoss(use_softmax=True) averages over N * C * spatial elements, ours over
        # N * spatial (a per-element sum over classes): ours == C * MONAI. alpha and weight map
        # one to one (scalar alpha: background 1 - alpha, others alpha, in both).
        logits, target = case.make()
        c = case.num_classes
        kwargs = {
            "plain": {},
            "alpha-scalar": {"alpha": 0.3},
            "alpha-list": {"alpha": [0.1 * (j + 1) for j in range(c)]},
            "weight": {"weight": [float(j + 1) for j in range(c)]},
        }[option]
        ours = focal_loss(logits, target, gamma=1.5, **kwargs)
        torch.testing.assert_close(ours, c * _monai_focal(logits, target, gamma=1.5, **kwargs))

    def test_ignore_index_matches_monai_softmax(self) -> None:
        # with an ignore mask MONAI divides by the number of kept pixels, as ours does
        logits, target = make_inputs(4, (8, 8), "labels", seed=23, ignore_index=255)
        ours = focal_loss(logits, target, alpha=[0.1, 0.2, 0.3, 0.4], ignore_index=255)
        monai = _monai_focal(logits, target, alpha=[0.1, 0.2, 0.3, 0.4], ignore_index=255)
        torch.testing.assert_close(ours, monai)

    @pytest.mark.parametrize("alpha", [0.25, None])
    def test_binary_matches_torchvision_form(self, alpha) -> None:
        # torchvision.ops.sigmoid_focal_loss(x, y, alpha, gamma) for 0/1 targets (alpha=None: -1 there)
        logits, target = make_inputs(1, (6, 5, 4), "labels", seed=24, scale=4.0)
        expected = ref.sigmoid_focal_torchvision(_np(logits[:, 0]), _np(target), alpha=alpha, gamma=2.0)
        _close(focal_loss(logits, target, alpha=alpha), expected)

    @pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
    def test_gamma_zero_is_cross_entropy(self, case: LossCase) -> None:
        logits, target = case.make()
        torch.testing.assert_close(
            focal_loss(logits, target, gamma=0.0, **_ignore(case)), cross_entropy(logits, target, **_ignore(case))
        )

    def test_alpha_is_never_renormalised(self) -> None:
        logits, target = make_inputs(3, (8, 8), "labels", seed=25)
        base = focal_loss(logits, target)
        torch.testing.assert_close(focal_loss(logits, target, alpha=[2.0, 2.0, 2.0]), 2 * base)
        assert FocalLoss(alpha=[0.1, 0.2, 0.7]).alpha.tolist() == pytest.approx([0.1, 0.2, 0.7])

    def test_alpha_buffer_and_scalar(self) -> None:
        loss = FocalLoss(alpha=[0.2, 0.8])
        assert "alpha_vector" in loss.state_dict() and loss.to(torch.float64).alpha.dtype == torch.float64
        assert "alpha=0.25" in repr(FocalLoss(alpha=0.25)) and FocalLoss(alpha=0.25).state_dict() == {}

    @pytest.mark.parametrize(
        ("alpha", "channels", "message"),
        [
            ([0.2, 0.3], 3, "alpha has 2 entries but the loss has 3 classes; alpha is never renormalised"),
            ([0.2, 0.3, 0.5], 1, "alpha has 3 entries but the loss has 2 classes (binary logits: 2 values"),
            (1.5, 3, "alpha must be in [0, 1] when a scalar"),
            ([[0.5]], 1, "alpha must be a scalar or a 1-D sequence with one value per class, got shape (1, 1)"),
            ([0.5, -1.0], 1, "alpha must hold finite non-negative values"),
        ],
    )
    def test_bad_alpha(self, alpha, channels, message) -> None:
        with pytest.raises(ValueError, match=re.escape(message)):
            focal_loss(torch.zeros(2, channels, 4), torch.zeros(2, 4, dtype=torch.long), alpha=alpha)

    def test_bad_gamma(self) -> None:
        with pytest.raises(ValueError, match="gamma must be a finite number >= 0, got -1"):
            FocalLoss(gamma=-1)


# --------------------------------------------------------------------------- Dice + Focal


class TestDiceFocal:
    @pytest.mark.parametrize("kind", ["labels", "labels_ch", "onehot"])
    @pytest.mark.parametrize("alpha", [None, 0.25])
    def test_binary_matches_monai(self, kind, alpha) -> None:
        # MONAI DiceFocalLoss(sigmoid=True, gamma, alpha, lambda_*) == ours on binary logits.
        # (Its focal term is always a sigmoid one, so for C >= 2 it is a different loss.)
        logits, target = make_inputs(1, (6, 7), kind, seed=26)
        monai_target = target.reshape(logits.shape).float()
        kwargs = dict(gamma=1.5, alpha=alpha, lambda_dice=0.6, lambda_focal=1.7)
        monai = MonaiDiceFocalLoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5, **kwargs)(logits, monai_target)
        torch.testing.assert_close(DiceFocalLoss(**kwargs)(logits, target), monai)

    def test_shared_arguments_reach_both_terms(self) -> None:
        logits, target = make_inputs(3, (8, 8), "labels", seed=27, ignore_index=255)
        shared = dict(weight=[0.5, 1.0, 2.0], include_background=False, ignore_index=255)
        loss = DiceFocalLoss(lambda_focal=0.5, gamma=1.0, alpha=[0.2, 0.3, 0.5], squared=True, **shared)
        terms = loss.terms(logits, target)
        assert list(terms) == ["dice", "focal"]
        torch.testing.assert_close(terms["dice"], dice_loss(logits, target, squared=True, **shared))
        torch.testing.assert_close(
            terms["focal"], focal_loss(logits, target, gamma=1.0, alpha=[0.2, 0.3, 0.5], **shared)
        )
        expected = dice_focal_loss(
            logits, target, lambda_focal=0.5, gamma=1.0, alpha=[0.2, 0.3, 0.5], squared=True, **shared
        )
        torch.testing.assert_close(loss(logits, target), expected)
        assert all(m.include_background is False for m in loss.losses.values())

    def test_rejects_none_reduction(self) -> None:
        with pytest.raises(ValueError, match="reduction must be one of 'mean', 'sum', got 'none'"):
            DiceFocalLoss(reduction="none")
        with pytest.raises(ValueError, match="class_reduction must be one of 'mean', 'sum', got 'max'"):
            DiceFocalLoss(class_reduction="max")

    @pytest.mark.parametrize("num_classes", [1, 4])
    def test_anatomynet_summed_form_matches_numpy(self, num_classes) -> None:
        # seed 003: L = C - sum_c Dice_c - lambda / N sum_c sum_n g_n(c) (1 - p_n(c))^2 log p_n(c),
        # Dice per image (batch_reduction="image"), alpha = beta = 1/2 (the Dice), no smoothing
        logits, target = make_inputs(num_classes, (7, 6), "labels", batch=2, seed=33)
        x = logits.double().numpy()
        if num_classes == 1:
            p = 1 / (1 + np.exp(-x))
            g = target.double().numpy()[:, None]
        else:
            p = np.exp(x) / np.exp(x).sum(1, keepdims=True)
            g = np.eye(num_classes)[target.numpy()].transpose(0, 3, 1, 2)
        lam = 0.7
        per_image = []
        for pi, gi in zip(p, g):
            dice = [2 * (pi[c] * gi[c]).sum() / (pi[c].sum() + gi[c].sum()) for c in range(len(pi))]
            per_image.append(len(dice) - sum(dice))
        if num_classes == 1:  # the focal term over both labels of the sigmoid
            p, g = np.concatenate([1 - p, p], 1), np.concatenate([1 - g, g], 1)
        focal = -(g * (1 - p) ** 2 * np.log(p)).sum(1).mean()
        expected = np.mean(per_image) + lam * focal
        ours = DiceFocalLoss(lambda_focal=lam, smooth=0.0, class_reduction="sum")(logits, target)
        assert float(ours) == pytest.approx(expected, rel=1e-5)
        functional = dice_focal_loss(logits, target, lambda_focal=lam, smooth=0.0, class_reduction="sum")
        torch.testing.assert_close(functional, ours)
        # the default averages the Dice: C times smaller
        terms = DiceFocalLoss(lambda_focal=lam, smooth=0.0).terms(logits, target)
        assert float(terms["dice"]) * max(num_classes, 1) == pytest.approx(np.mean(per_image), rel=1e-5)


# --------------------------------------------------------------------------- online bootstrapping


class TestOnlineBootstrapping:
    @pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
    @pytest.mark.parametrize("hard_num", [1, 10, 1000])
    def test_matches_numpy(self, case: LossCase, hard_num) -> None:
        logits, target = case.make()
        weight = [float(j + 1) for j in range(case.num_classes)]
        for kwargs in (dict(), dict(weight=weight, reduction="sum"), dict(include_background=False, reduction="none")):
            kwargs = {**kwargs, **_ignore(case), "hard_num": hard_num}
            expected = ref.online_bootstrapping(_np(logits), _np(target), **kwargs)
            _close(online_bootstrapping_loss(logits, target, **kwargs), expected)

    @pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
    def test_hard_pixel_fractions_match_numpy(self, case: LossCase) -> None:
        logits, target = case.make()
        for hard_num in (3, 20):
            expected = ref.hard_pixel_fractions(_np(logits), _np(target), hard_num=hard_num, **_ignore(case))
            actual = hard_pixel_fractions(logits, target, hard_num=hard_num, **_ignore(case))
            assert actual.shape == (max(case.num_classes, 2),)
            _close(actual, expected)
            module = OnlineBootstrappingLoss(hard_num=hard_num, **_ignore(case))
            torch.testing.assert_close(module.hard_pixel_fractions(logits, target), actual)

    def test_label_and_soft_selection_agree(self) -> None:
        # labels rank pixels by -log p_y, soft targets by mean |p - y|: the same order
        logits, target = make_inputs(5, (16, 16), "labels", batch=3, seed=28)
        for hard_num in (7, 50, 200):
            torch.testing.assert_close(
                online_bootstrapping_loss(logits, target, hard_num=hard_num),
                online_bootstrapping_loss(logits, one_hot(target, 5), hard_num=hard_num),
            )

    def test_all_pixels_or_classification_is_cross_entropy(self) -> None:
        logits, target = make_inputs(4, (8, 8), "labels", seed=29, ignore_index=255)
        kwargs = dict(weight=[0.5, 1.0, 2.0, 1.0], ignore_index=255)
        torch.testing.assert_close(
            online_bootstrapping_loss(logits, target, hard_num=64, **kwargs), cross_entropy(logits, target, **kwargs)
        )
        logits, target = make_inputs(4, (), "labels", batch=6, seed=30)
        torch.testing.assert_close(online_bootstrapping_loss(logits, target, hard_num=1), cross_entropy(logits, target))

    def test_keeps_exactly_hard_num_per_image(self) -> None:
        logits, target = make_inputs(3, (8, 8), "labels", batch=4, seed=31)
        per_pixel = online_bootstrapping_loss(logits, target, hard_num=5, reduction="none")
        assert per_pixel.shape == (4, 8, 8) and ((per_pixel > 0).flatten(1).sum(1) == 5).all()
        ce = cross_entropy(logits, target, reduction="none").flatten(1)
        torch.testing.assert_close(per_pixel.flatten(1).sum(1), ce.topk(5, dim=1).values.sum(1))

    @pytest.mark.parametrize("num_classes", [1, 4])
    @pytest.mark.parametrize("hard_num", [1, 7, 63, 64, 500])
    def test_threshold_path_equals_selection_path(self, num_classes, hard_num) -> None:
        # the unweighted mean takes the threshold path; the per-pixel map the selection mask
        logits, target = make_inputs(num_classes, (8, 8), "labels", batch=3, seed=32)
        fast = logits.clone().requires_grad_()
        slow = logits.clone().requires_grad_()
        for reduction in ("mean", "sum"):
            fast.grad = slow.grad = None
            value = online_bootstrapping_loss(fast, target, hard_num=hard_num, reduction=reduction)
            per_pixel = online_bootstrapping_loss(slow, target, hard_num=hard_num, reduction="none")
            expected = per_pixel.sum() / (3 * min(hard_num, 64) if reduction == "mean" else 1)
            torch.testing.assert_close(value, expected)
            value.backward()
            expected.backward()
            torch.testing.assert_close(fast.grad, slow.grad)

    @pytest.mark.parametrize("reduction", ["mean", "none"])
    def test_ties_keep_the_lower_index(self, reduction) -> None:
        # constant logits: every pixel of a class has the same loss; 2 x 2 tied groups per image
        logits = torch.zeros(2, 3, 4, 4)
        logits[:, 1] = 1.0
        target = torch.zeros(2, 4, 4, dtype=torch.long)
        target[:, 2:] = 1  # labels 0 in rows 0-1 (harder), 1 in rows 2-3 (easier)
        ce = cross_entropy(logits, target, reduction="none")
        z = logits.clone().requires_grad_()
        loss = online_bootstrapping_loss(z, target, hard_num=11, reduction=reduction)
        # rows 0-1 (8 pixels) all kept, then the first 3 pixels of row 2 among the 8 tied ones
        expected_keep = torch.zeros(2, 4, 4, dtype=torch.bool)
        expected_keep[:, :2] = True
        expected_keep[:, 2, :3] = True
        if reduction == "none":
            torch.testing.assert_close(loss, ce * expected_keep)
            return
        torch.testing.assert_close(loss, (ce * expected_keep).sum() / 22)
        loss.backward()
        kept_grad = z.grad.abs().sum(dim=1) > 0
        assert torch.equal(kept_grad, expected_keep)

    @pytest.mark.parametrize("k", [1, 5, 99, 100])
    def test_partition_and_topk_select_alike(self, k) -> None:
        # the CPU (numpy partition) and other-device (topk) order statistics
        g = torch.Generator().manual_seed(34)
        for bits in (torch.randint(0, 1000, (3, 100), generator=g), torch.randint(0, 3, (3, 100), generator=g)):
            bits = bits.to(torch.int32)
            by_partition, by_topk = _largest_by_partition(bits, k), _largest_by_topk(bits, k)
            torch.testing.assert_close(by_partition[0], by_topk[0])
            assert (by_partition[1] is None) == (by_topk[1] is None) == (k == 100)
            if k < 100:
                torch.testing.assert_close(by_partition[1], by_topk[1])
            expected = bits.sort(dim=1, descending=True).values
            torch.testing.assert_close(by_topk[0][:, 0], expected[:, k - 1])
            for top in (by_partition[2], by_topk[2]):  # the k largest, in any order
                torch.testing.assert_close(top.sort(dim=1, descending=True).values, expected[:, :k])

    @pytest.mark.parametrize(
        ("spatial", "scale", "layout", "dtype"),
        [
            ((16, 16), 2.0, "nchw", torch.float32),
            ((16, 16), 2.0, "channels_last", torch.float32),
            ((6, 8, 10), 3.0, "nchw", torch.float32),
            ((16, 16), 40.0, "nchw", torch.float32),  # losses up to ~150: overflow, the loss path
            ((16, 16), 2.0, "nchw", torch.bfloat16),
        ],
    )
    @pytest.mark.parametrize("reduction", ["mean", "sum"])
    def test_binary_margin_path_equals_the_loss_path(self, spatial, scale, layout, dtype, reduction) -> None:
        # binary labels rank by exp2 of the margin and take the loss at the kept pixels only;
        # the per-pixel map (reduction "none") computes every loss and selects by it
        logits, target = make_inputs(1, spatial, "labels", batch=3, seed=35, scale=scale)
        logits = logits.to(dtype)
        if layout == "channels_last":
            logits = logits.contiguous(memory_format=torch.channels_last)
        pixels = int(np.prod(spatial))
        for hard_num in (1, 37, pixels - 1, pixels):
            fast = logits.clone().requires_grad_()
            slow = logits.clone().requires_grad_()
            value = online_bootstrapping_loss(fast, target, hard_num=hard_num, reduction=reduction)
            per_pixel = online_bootstrapping_loss(slow, target, hard_num=hard_num, reduction="none")
            expected = per_pixel.sum() / (3 * hard_num if reduction == "mean" else 1)
            torch.testing.assert_close(value, expected)
            value.backward()
            expected.backward()
            assert fast.grad.dtype == dtype
            torch.testing.assert_close(fast.grad, slow.grad)

    def test_binary_threshold_path_matches_numpy(self) -> None:
        logits, target = make_inputs(1, (16, 16), "labels", batch=4, seed=33)
        for hard_num in (1, 100, 256):
            expected = ref.online_bootstrapping(_np(logits), _np(target), hard_num=hard_num)
            _close(online_bootstrapping_loss(logits, target, hard_num=hard_num), expected)

    @pytest.mark.parametrize("hard_num", [0, 2.5, True])
    def test_bad_hard_num(self, hard_num) -> None:
        with pytest.raises(
            ValueError, match=re.escape(f"hard_num must be an int >= 1 (hard pixels kept per image), got {hard_num!r}")
        ):
            OnlineBootstrappingLoss(hard_num=hard_num)


# --------------------------------------------------------------------------- CSCE and LDAM


CLS_CASES = [
    LossCase("cls-labels", 5, (), "labels", batch=12, seed=40, scale=1.0),
    LossCase("cls-soft", 4, (), "soft", batch=9, seed=41, scale=1.0),
    LossCase("cls-binary", 1, (), "labels", batch=10, seed=42, scale=1.0),
    LossCase("cls-ignore", 3, (), "labels", batch=12, seed=43, scale=1.0, ignore_index=-100),
    LossCase("seg-2d", 3, (5, 4), "labels", seed=44, scale=1.0),
]


class TestClassBalancedCE:
    @pytest.mark.parametrize("case", CLS_CASES, ids=lambda c: c.name)
    @pytest.mark.parametrize("beta", [0.9999, 0.99, 0.0])
    def test_matches_numpy(self, case: LossCase, beta) -> None:
        logits, target = case.make()
        counts = _counts(case.num_classes)
        for kwargs in (dict(), dict(include_background=False, reduction="sum"), dict(reduction="none")):
            kwargs = {**kwargs, **_ignore(case), "beta": beta, "class_counts": counts}
            _close(class_balanced_cross_entropy(logits, target, **kwargs), ref.csce(_np(logits), _np(target), **kwargs))

    def test_is_torch_cross_entropy_with_effective_number_weights(self) -> None:
        # LDAM-DRW / CB-loss reference: F.cross_entropy(logits, y, weight=(1-b)/(1-b^n) scaled to sum C)
        logits, target = make_inputs(5, (), "labels", batch=16, seed=45)
        counts = [4000, 1000, 250, 60, 15]
        weight = effective_number_weights(counts, beta=0.999)
        assert weight.sum().item() == pytest.approx(5.0)
        expected = F.cross_entropy(logits, target, weight=weight)
        torch.testing.assert_close(
            class_balanced_cross_entropy(logits, target, class_counts=counts, beta=0.999), expected
        )
        torch.testing.assert_close(ClassBalancedCELoss(counts, beta=0.999)(logits, target), expected)

    def test_counts_buffer_and_errors(self) -> None:
        loss = ClassBalancedCELoss([10, 5, 1])
        assert loss.state_dict()["class_counts"].tolist() == [10.0, 5.0, 1.0]
        message = "class_counts has 3 entries but logits have 4 channel(s) (expected one count per class)"
        with pytest.raises(ValueError, match=re.escape(message)):
            loss(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))
        with pytest.raises(ValueError, match=re.escape("binary logits take 2 counts, background then foreground")):
            loss(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long))
        with pytest.raises(ValueError, match=re.escape("beta must be a number in [0, 1), got 1.0")):
            ClassBalancedCELoss([10, 5], beta=1.0)


class TestLDAM:
    def test_margins(self) -> None:
        torch.testing.assert_close(ldam_margins([10000, 625, 16]), torch.tensor([0.1, 0.2, 0.5]))
        torch.testing.assert_close(ldam_margins([1, 16], max_margin=1.0), torch.tensor([1.0, 0.5]))

    @pytest.mark.parametrize("case", CLS_CASES, ids=lambda c: c.name)
    @pytest.mark.parametrize("progress", [0.0, 0.79, 0.8, 1.0])
    def test_matches_numpy_with_drw_switch(self, case: LossCase, progress) -> None:
        logits, target = case.make()
        counts = _counts(case.num_classes)
        for kwargs in (
            dict(),
            dict(drw_start=None, reduction="sum"),
            dict(max_margin=0.3, scale=10.0, reduction="none"),
        ):
            kwargs = {**kwargs, **_ignore(case), "class_counts": counts, "progress": progress}
            _close(ldam_loss(logits, target, **kwargs), ref.ldam(_np(logits), _np(target), **kwargs))

    def test_matches_reference_code_form(self) -> None:
        # LDAM-DRW code: x_m = x - m[y] at the true class; F.cross_entropy(s * x_m, y, weight=drw)
        logits, target = make_inputs(4, (), "labels", batch=16, seed=46, scale=0.5)
        counts = [500, 120, 30, 8]
        m = ldam_margins(counts)
        x_m = logits - F.one_hot(target, 4) * m[target].unsqueeze(1)
        loss = LDAMLoss(counts)
        torch.testing.assert_close(loss(logits, target), F.cross_entropy(30.0 * x_m, target))
        set_progress(loss, 0.8)
        weight = effective_number_weights(counts)
        torch.testing.assert_close(loss(logits, target), F.cross_entropy(30.0 * x_m, target, weight=weight))

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            (dict(class_counts=[10, 0, 3]), "class_counts must be a 1-D vector of positive finite counts for LDAM"),
            (dict(class_counts=[10, 3], scale=0.0), "scale must be a finite number > 0, got 0.0"),
            (
                dict(class_counts=[10, 3], drw_start=1.5),
                "drw_start must be None or a progress value in [0, 1], got 1.5",
            ),
            (dict(class_counts=[10, 3], max_margin=-1), "max_margin must be a finite number > 0, got -1"),
        ],
    )
    def test_bad_arguments(self, kwargs, message) -> None:
        with pytest.raises(ValueError, match=re.escape(message)):
            LDAMLoss(**kwargs)

    def test_bad_progress(self) -> None:
        with pytest.raises(ValueError, match=re.escape("progress must be a number in [0, 1] (T / T_max), got 1.2")):
            ldam_loss(torch.zeros(2, 2), torch.zeros(2, dtype=torch.long), class_counts=[3, 1], progress=1.2)


# --------------------------------------------------------------------------- dynamic losses


class TestDynamic:
    @pytest.mark.parametrize("case", [CASES[0], CASES[6], CASES[7], CLS_CASES[0]], ids=lambda c: c.name)
    @pytest.mark.parametrize("progress", [0.0, 0.25, 0.5, 0.9, 1.0])
    def test_dflce_matches_numpy(self, case: LossCase, progress) -> None:
        logits, target = case.make()
        x, t = _np(logits), _np(target)
        kwargs = dict(gamma=2.0, alpha=0.25, **_ignore(case))
        expected = ref.dynamic(ref.focal(x, t, **kwargs), ref_core.cross_entropy(x, t, **_ignore(case)), progress)
        _close(dflce_loss(logits, target, progress=progress, **kwargs), expected)
        module = DFLCELoss(**kwargs)
        set_progress(module, progress)
        torch.testing.assert_close(module(logits, target), dflce_loss(logits, target, progress=progress, **kwargs))

    @pytest.mark.parametrize("case", CLS_CASES[:3], ids=lambda c: c.name)
    @pytest.mark.parametrize("progress", [0.0, 0.3, 0.7, 1.0])
    def test_dflcsce_matches_numpy(self, case: LossCase, progress) -> None:
        logits, target = case.make()
        x, t = _np(logits), _np(target)
        counts = _counts(case.num_classes)
        expected = ref.dynamic(ref.focal(x, t), ref.csce(x, t, class_counts=counts), progress)
        _close(dflcsce_loss(logits, target, class_counts=counts, progress=progress), expected)
        module = DFLCSCELoss(counts)
        set_progress(module, progress)
        _close(module(logits, target), expected)

    def test_set_progress_reaches_nested_modules(self) -> None:
        dflce, ldam = DFLCELoss(), LDAMLoss([100, 10])
        loss = CompoundLoss([(dflce, 1.0), (ldam, 0.5)])
        set_progress(loss, 0.6)
        assert dflce.progress == 0.6 and ldam.progress == 0.6
        logits, target = make_inputs(2, (), "labels", batch=8, seed=47)
        loss(logits, target)
        assert dflce.progress == 0.6 and ldam.progress == 0.6  # forward never moves it
        for bad in (-0.1, 1.5, True, "0.5"):
            with pytest.raises(ValueError, match="progress must be a number in \\[0, 1\\]"):
                set_progress(loss, bad)

    def test_dynamic_loss_module_and_terms(self) -> None:
        logits, target = make_inputs(3, (6, 6), "labels", seed=48)
        loss = DynamicLoss(FocalLoss(gamma=1.0), CrossEntropyLoss())
        set_progress(loss, 0.5)
        terms = loss.terms(logits, target)
        torch.testing.assert_close(loss(logits, target), 0.75 * terms["first"] + 0.25 * terms["second"])
        assert "progress=0.5" in repr(loss)

    def test_bad_inputs(self) -> None:
        with pytest.raises(TypeError, match="second must be an nn.Module loss, got function"):
            DynamicLoss(FocalLoss(), cross_entropy)
        with pytest.raises(ValueError, match=re.escape("term 1 of a compound loss must be a scalar, got shape (3,)")):
            dynamic_loss(torch.tensor(1.0), torch.ones(3), progress=0.5)
        with pytest.raises(ValueError, match="reduction must be one of 'mean', 'sum', got 'none'"):
            DFLCELoss(reduction="none")
