"""Tests of the loss core: cross entropy, Dice, compound losses and the registry."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss as MonaiDiceCELoss
from monai.losses import DiceLoss as MonaiDiceLoss

from medbalance.losses import (
    LOSSES,
    CompoundLoss,
    CrossEntropyLoss,
    DiceCELoss,
    DiceFocalLoss,
    DiceLoss,
    build_loss,
)
from medbalance.losses import functional as LF
from medbalance.losses._reduction import reduce_loss
from medbalance.losses._target import expand_binary_logits, format_target, probabilities
from medbalance.losses._validate import class_weight
from tests._loss_cases import CASES, LossCase, LossTester, make_inputs, one_hot
from tests._reference import losses_numpy as ref


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _close(actual: torch.Tensor, expected, atol: float = 1e-5) -> None:
    np.testing.assert_allclose(_np(actual), np.asarray(expected), rtol=1e-4, atol=atol)


# --------------------------------------------------------------------------- property suites


class TestCrossEntropyProperties(LossTester):
    functional = staticmethod(LF.cross_entropy)
    module = CrossEntropyLoss


class TestDiceProperties(LossTester):
    functional = staticmethod(LF.dice_loss)
    module = DiceLoss


class TestDiceBatchSquaredProperties(LossTester):
    functional = staticmethod(LF.dice_loss)
    module = DiceLoss
    kwargs = {"batch_reduction": "batch", "squared": True, "include_background": False}


class TestDiceCEProperties(LossTester):
    functional = staticmethod(LF.dice_ce_loss)
    module = DiceCELoss


# --------------------------------------------------------------------------- shared helpers


class TestTargetFormatting:
    def test_label_forms(self) -> None:
        logits = torch.zeros(2, 3, 4, 4)
        labels = torch.randint(0, 3, (2, 4, 4))
        for target in (labels, labels.unsqueeze(1), labels.to(torch.uint8), labels.int()):
            tgt = format_target(logits, target)
            assert tgt.labels is not None and tgt.labels.dtype == torch.int64 and tgt.mask is None
            torch.testing.assert_close(tgt.dense(), one_hot(labels, 3))

    def test_binary_bool_target(self) -> None:
        mask = torch.rand(2, 1, 5, 5) > 0.5
        tgt = format_target(torch.zeros(2, 1, 5, 5), mask)
        torch.testing.assert_close(tgt.dense(), mask.float())

    def test_ignore_index_masks_and_zeroes_dense(self) -> None:
        labels = torch.tensor([[0, 2, 255, 1]])
        tgt = format_target(torch.zeros(1, 3, 4), labels, ignore_index=255)
        assert tgt.mask is not None and tgt.mask.tolist() == [[True, True, False, True]]
        assert tgt.dense()[0, :, 2].tolist() == [0.0, 0.0, 0.0]

    def test_ignore_index_in_label_error(self) -> None:
        with pytest.raises(ValueError, match=r"label 9 .* \(expected values in \[0, 3\) or ignore_index=255\)"):
            format_target(torch.zeros(1, 3, 4), torch.tensor([[0, 9, 255, 1]]), ignore_index=255)

    def test_classification_shapes(self) -> None:
        tgt = format_target(torch.zeros(4, 5), torch.tensor([0, 4, 2, 1]))
        assert tgt.dense().shape == (4, 5)
        with pytest.raises(ValueError, match=r"target label map must have shape \(4,\) or \(4, 1\)"):
            format_target(torch.zeros(4, 5), torch.tensor([0, 4]))

    @pytest.mark.parametrize(
        ("logits", "target", "error", "message"),
        [
            ([1.0], torch.zeros(1), TypeError, "logits must be a torch.Tensor"),
            (torch.zeros(5), torch.zeros(5), ValueError, r"logits must have shape \(N, C, \*spatial\)"),
            (torch.zeros(2, 0, 3), torch.zeros(2, 3), ValueError, "with C >= 1, got"),
            (torch.zeros(2, 3), torch.zeros(2, dtype=torch.complex64), TypeError, "integer, bool or float"),
        ],
    )
    def test_bad_arguments(self, logits, target, error, message) -> None:
        with pytest.raises(error, match=message):
            format_target(logits, target)

    def test_ignore_index_type(self) -> None:
        with pytest.raises(TypeError, match="ignore_index must be an int or None, got 2.5"):
            format_target(torch.zeros(1, 3, 4), torch.zeros(1, 4, dtype=torch.long), ignore_index=2.5)

    def test_binary_labels_keep_the_float_map(self) -> None:
        # the binary 0/1 map is made once, range-checked, and is what dense() returns
        labels = torch.randint(0, 2, (2, 5, 5))
        tgt = format_target(torch.zeros(2, 1, 5, 5), labels)
        assert tgt.foreground is not None and tgt.foreground.dtype == torch.float32
        torch.testing.assert_close(tgt.dense(), labels.unsqueeze(1).float())
        assert format_target(torch.zeros(2, 3, 5), torch.zeros(2, 5, dtype=torch.long)).foreground is None
        with pytest.raises(ValueError, match=r"target has label 2 but logits have 1 channel \(binary"):
            format_target(torch.zeros(1, 1, 3), torch.tensor([[0, 2, 1]]))
        with pytest.raises(ValueError, match=r"target has label -1 but logits have 1 channel"):
            format_target(torch.zeros(1, 1, 3), torch.tensor([[0, -1, 1]]))

    def test_validated_target_passes_through(self) -> None:
        logits = torch.zeros(2, 3, 4)
        tgt = format_target(logits, torch.tensor([[0, 2, 255, 1], [1, 1, 0, 2]]), ignore_index=255)
        assert format_target(logits, tgt, ignore_index=255) is tgt
        with pytest.raises(ValueError, match="target was validated with ignore_index=255, but this loss has"):
            format_target(logits, tgt)
        with pytest.raises(ValueError, match=r"validated for 3 class\(es\) and shape \(2, 1, 4\), but logits"):
            format_target(torch.zeros(2, 3, 5), tgt, ignore_index=255)
        soft = format_target(logits, torch.full((2, 3, 4), 1 / 3))
        assert format_target(logits, soft) is soft

    def test_probabilities_are_float32(self) -> None:
        logits = torch.randn(2, 3, 4).half()
        probs = probabilities(logits)
        assert probs.dtype == torch.float32
        torch.testing.assert_close(probs.sum(1), torch.ones(2, 4))
        binary = torch.randn(2, 1, 4)
        torch.testing.assert_close(probabilities(binary), torch.sigmoid(binary))

    def test_expand_binary_logits(self) -> None:
        z = torch.tensor([[[-50.0, -1.0, 0.0, 3.0, 50.0]]])
        two = torch.softmax(expand_binary_logits(z), dim=1)
        torch.testing.assert_close(two[:, 1:], torch.sigmoid(z))
        torch.testing.assert_close(two[:, :1], torch.sigmoid(-z))
        with pytest.raises(ValueError, match="needs binary logits"):
            expand_binary_logits(torch.zeros(1, 2, 3))


class TestClassWeight:
    def test_one_weight_per_channel(self) -> None:
        message = "weight has 2 entries but logits have 3 channel(s) (expected one weight per channel, background"
        with pytest.raises(ValueError, match=re.escape(message)):
            class_weight([1.0, 2.0], torch.zeros(1, 3, 4))
        with pytest.raises(ValueError, match="binary logits take one weight, for the positive class, or two"):
            class_weight([1.0, 2.0, 3.0], torch.zeros(1, 1, 4))
        assert class_weight([1.0, 2.0], torch.zeros(1, 1, 4)).tolist() == [1.0, 2.0]  # background, foreground

    @pytest.mark.parametrize(
        ("weight", "message"),
        [
            ([[1.0, 2.0]], r"1-D sequence .* got shape \(1, 2\)"),
            ([1.0, -1.0], "finite non-negative values"),
            ([1.0, float("nan")], "finite non-negative values"),
            ([0.0, 0.0], "zero for every class"),
        ],
    )
    def test_bad_values(self, weight, message) -> None:
        with pytest.raises(ValueError, match=message):
            class_weight(weight, torch.zeros(1, 2, 4))

    def test_include_background_zeroes_channel_zero(self) -> None:
        w = class_weight([2.0, 1.0, 3.0], torch.zeros(1, 3, 4), include_background=False)
        assert w is not None and w.tolist() == [0.0, 1.0, 3.0]
        assert class_weight(None, torch.zeros(1, 3, 4), include_background=False).tolist() == [0.0, 1.0, 1.0]
        assert class_weight(None, torch.zeros(1, 1, 4), include_background=False) is None
        with pytest.raises(ValueError, match="include_background=False leaves no class"):
            class_weight([1.0, 0.0], torch.zeros(1, 2, 4), include_background=False)

    def test_module_weight_is_buffer_copy(self) -> None:
        source = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
        loss = CrossEntropyLoss(weight=source)
        source[0] = 100.0
        assert loss.weight.dtype == torch.float32 and loss.weight.tolist() == [1.0, 2.0, 3.0]
        assert "weight" in loss.state_dict()
        assert "weight" in dict(loss.named_buffers())


class TestReduceLoss:
    def test_modes(self) -> None:
        loss = torch.tensor([1.0, 2.0, 3.0, 4.0])
        mask = torch.tensor([True, False, True, True])
        assert reduce_loss(loss, "sum", mask=mask).item() == 8.0
        assert reduce_loss(loss, "mean", mask=mask).item() == pytest.approx(8.0 / 3)
        assert reduce_loss(loss, "none", mask=mask).tolist() == [1.0, 0.0, 3.0, 4.0]
        norm = torch.tensor([2.0, 1.0, 1.0, 1.0])
        assert reduce_loss(loss, "mean", mask=mask, normalizer=norm).item() == pytest.approx(2.0)

    def test_empty_mean_is_zero_with_graph(self) -> None:
        loss = torch.tensor([1.0, 2.0], requires_grad=True)
        value = reduce_loss(loss, "mean", mask=torch.zeros(2, dtype=torch.bool))
        value.backward()
        assert value.item() == 0.0 and loss.grad.tolist() == [0.0, 0.0]

    @pytest.mark.parametrize("fn", [LF.cross_entropy, LF.dice_loss])
    def test_bad_reduction_message(self, fn) -> None:
        with pytest.raises(ValueError, match="reduction must be one of 'mean', 'sum', 'none', got 'avg'"):
            fn(torch.zeros(1, 2, 3), torch.zeros(1, 3, dtype=torch.long), reduction="avg")


# --------------------------------------------------------------------------- cross entropy


class TestCrossEntropy:
    @pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
    @pytest.mark.parametrize("spatial", [(), (9, 7), (4, 5, 3)], ids=["cls", "2d", "3d"])
    @pytest.mark.parametrize("weighted", [False, True])
    def test_labels_match_torch(self, spatial, reduction, weighted) -> None:
        logits, target = make_inputs(4, spatial, "labels", batch=3, seed=1)
        weight = torch.tensor([0.1, 1.0, 2.0, 5.0]) if weighted else None
        expected = F.cross_entropy(logits, target, weight=weight, reduction=reduction)
        torch.testing.assert_close(LF.cross_entropy(logits, target, weight=weight, reduction=reduction), expected)

    @pytest.mark.parametrize("ignore_index", [255, -100, 0])
    def test_ignore_index_matches_torch(self, ignore_index) -> None:
        logits, target = make_inputs(3, (8, 8), "labels", seed=2, ignore_index=ignore_index)
        weight = torch.tensor([0.5, 1.0, 3.0])
        for reduction in ("mean", "sum", "none"):
            expected = F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index, reduction=reduction)
            actual = LF.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index, reduction=reduction)
            torch.testing.assert_close(actual, expected)

    @pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
    def test_soft_targets_match_torch_without_weights(self, reduction) -> None:
        logits, target = make_inputs(3, (4, 5, 6), "soft", seed=3)
        expected = F.cross_entropy(logits, target, reduction=reduction)
        torch.testing.assert_close(LF.cross_entropy(logits, target, reduction=reduction), expected)

    def test_weighted_one_hot_equals_labels(self) -> None:
        # torch divides weighted soft targets by the element count; ours keeps labels == one-hot
        logits, target = make_inputs(3, (6, 6), "labels", seed=4)
        weight = [0.2, 1.0, 4.0]
        expected = F.cross_entropy(logits, target, weight=torch.tensor(weight))
        torch.testing.assert_close(LF.cross_entropy(logits, one_hot(target, 3), weight=weight), expected)

    @pytest.mark.parametrize("kind", ["labels", "soft"])
    @pytest.mark.parametrize("include_background", [True, False])
    def test_weighted_matches_numpy(self, kind, include_background) -> None:
        logits, target = make_inputs(4, (5, 6), kind, seed=5)
        weight = [0.3, 1.0, 2.0, 0.5]
        for reduction in ("mean", "sum", "none"):
            kwargs = dict(weight=weight, include_background=include_background, reduction=reduction)
            _close(LF.cross_entropy(logits, target, **kwargs), ref.cross_entropy(_np(logits), _np(target), **kwargs))

    def test_include_background_false_is_zero_background_weight(self) -> None:
        logits, target = make_inputs(3, (8, 8), "labels", seed=6)
        expected = F.cross_entropy(logits, target, weight=torch.tensor([0.0, 1.0, 1.0]))
        torch.testing.assert_close(LF.cross_entropy(logits, target, include_background=False), expected)

    @pytest.mark.parametrize("kind", ["labels", "labels_ch", "soft"])
    @pytest.mark.parametrize("pos_weight", [None, 4.0])
    def test_binary_is_bce_with_logits(self, kind, pos_weight) -> None:
        logits, target = make_inputs(1, (6, 5, 4), kind, seed=7)
        dense = target.float().reshape(logits.shape)
        pw = None if pos_weight is None else torch.tensor([pos_weight])
        weight = None if pos_weight is None else [pos_weight]
        for reduction in ("mean", "sum"):
            expected = F.binary_cross_entropy_with_logits(logits, dense, pos_weight=pw, reduction=reduction)
            torch.testing.assert_close(LF.cross_entropy(logits, target, weight=weight, reduction=reduction), expected)
        none = LF.cross_entropy(logits, target, weight=weight, reduction="none")
        assert none.shape == (2, 6, 5, 4)
        expected = F.binary_cross_entropy_with_logits(logits, dense, pos_weight=pw, reduction="none")
        torch.testing.assert_close(none, expected[:, 0])

    def test_binary_is_never_identically_zero(self) -> None:
        # a one-channel softmax CE would be exactly 0 whatever the logits
        logits = torch.tensor([[[-3.0, 3.0]]])
        assert LF.cross_entropy(logits, torch.tensor([[1, 0]])).item() > 3.0

    def test_binary_ignore_index_matches_numpy(self) -> None:
        logits, target = make_inputs(1, (8, 8), "labels", seed=8, ignore_index=255)
        value = LF.cross_entropy(logits, target, weight=[2.0], ignore_index=255)
        _close(value, ref.cross_entropy(_np(logits), _np(target), weight=[2.0], ignore_index=255))

    def test_all_ignored_is_zero_not_nan(self) -> None:
        logits = torch.randn(2, 3, 4, 4, requires_grad=True)
        value = LF.cross_entropy(logits, torch.full((2, 4, 4), 255), ignore_index=255)
        value.backward()
        assert value.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


# --------------------------------------------------------------------------- dice


def _monai_dice(logits, target, **kwargs) -> torch.Tensor:
    binary = logits.shape[1] == 1
    labels = not target.dtype.is_floating_point
    if labels and target.ndim == logits.ndim - 1:
        target = target.unsqueeze(1)
    if binary:  # MONAI ignores (and warns about) include_background for one channel, as we do
        kwargs.pop("include_background", None)
    loss = MonaiDiceLoss(sigmoid=binary, softmax=not binary, to_onehot_y=labels and not binary, **kwargs)
    return loss(logits, target.float() if binary else target)


class TestDice:
    @pytest.mark.parametrize("case", [c for c in CASES if c.ignore_index is None], ids=lambda c: c.name)
    @pytest.mark.parametrize(
        ("include_background", "batch", "squared"),
        [(True, False, False), (False, False, True), (True, True, True), (False, True, False)],
    )
    def test_matches_monai(self, case: LossCase, include_background, batch, squared) -> None:
        logits, target = case.make()
        kwargs = dict(include_background=include_background, squared=squared, smooth=1e-3)
        ours = LF.dice_loss(logits, target, batch_reduction="batch" if batch else "image", **kwargs)
        monai = _monai_dice(
            logits,
            target,
            include_background=include_background,
            batch=batch,
            squared_pred=squared,
            smooth_nr=1e-3,
            smooth_dr=1e-3,
        )
        torch.testing.assert_close(ours, monai)

    def test_reductions_match_monai(self) -> None:
        logits, target = make_inputs(3, (7, 6), "labels", batch=4, seed=9)
        per_class = _monai_dice(logits, target, reduction="none")  # (N, C, 1, 1)
        torch.testing.assert_close(LF.dice_loss(logits, target, reduction="none"), per_class.flatten(1).mean(1))
        torch.testing.assert_close(LF.dice_loss(logits, target, reduction="sum"), per_class.flatten(1).mean(1).sum())

    def test_batch_reduction_ignores_reduction(self) -> None:
        logits, target = make_inputs(3, (7, 6), "labels", batch=4, seed=9)
        values = [LF.dice_loss(logits, target, batch_reduction="batch", reduction=r) for r in ("mean", "sum", "none")]
        assert all(v.ndim == 0 for v in values)
        torch.testing.assert_close(values[0], values[2])
        assert not torch.allclose(values[0], LF.dice_loss(logits, target))

    def test_ignore_index_matches_monai(self) -> None:
        logits, target = make_inputs(4, (8, 8), "labels", seed=10, ignore_index=255)
        for include_background in (True, False):
            ours = LF.dice_loss(logits, target, ignore_index=255, include_background=include_background)
            monai = _monai_dice(logits, target, ignore_index=255, include_background=include_background)
            torch.testing.assert_close(ours, monai)

    def test_class_weights_vs_monai(self) -> None:
        # ours: sum(w L) / sum(w) per image; MONAI: mean(w L), i.e. ours * sum(w) / C
        logits, target = make_inputs(4, (8, 8), "labels", seed=11)
        weight = torch.tensor([0.5, 1.0, 2.0, 4.0])
        ours = LF.dice_loss(logits, target, weight=weight)
        torch.testing.assert_close(ours * weight.sum() / 4, _monai_dice(logits, target, weight=weight))
        # excluding the background: still one weight per logit channel here, MONAI takes weight[1:]
        ours = LF.dice_loss(logits, target, weight=weight, include_background=False)
        monai = _monai_dice(logits, target, weight=weight[1:], include_background=False)
        torch.testing.assert_close(ours * weight[1:].sum() / 3, monai)

    @pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
    def test_matches_numpy(self, case: LossCase) -> None:
        logits, target = case.make()
        weight = [float(k + 1) for k in range(case.num_classes)]
        for kwargs in (
            dict(),
            dict(weight=weight, include_background=False, reduction="sum"),
            dict(batch_reduction="batch", squared=True, smooth=0.0),
            dict(reduction="none", smooth=1.0),
        ):
            if case.ignore_index is not None:
                kwargs = {**kwargs, "ignore_index": case.ignore_index}
            _close(LF.dice_loss(logits, target, **kwargs), ref.dice_loss(_np(logits), _np(target), **kwargs))

    @pytest.mark.parametrize("kind", ["labels", "soft"])
    def test_two_sided_binary(self, kind) -> None:
        logits, target = make_inputs(1, (6, 6), kind, seed=12)
        for weight in (None, [3.0]):
            value = LF.dice_loss(logits, target, two_sided=True, weight=weight)
            _close(value, ref.dice_loss(_np(logits), _np(target), two_sided=True, weight=weight))
        # equal weights: the mean of the foreground Dice loss and the complement's Dice loss
        g = target.float().reshape(logits.shape)
        expected = (
            0.5 * (LF.dice_loss(logits, g, reduction="none") + LF.dice_loss(-logits, 1.0 - g, reduction="none")).mean()
        )
        torch.testing.assert_close(LF.dice_loss(logits, target, two_sided=True), expected)
        with pytest.raises(ValueError, match="two_sided applies to binary logits \\(C == 1\\), got C=3"):
            LF.dice_loss(torch.zeros(1, 3, 4), torch.zeros(1, 4, dtype=torch.long), two_sided=True)

    def test_binary_include_background_has_no_effect(self) -> None:
        logits, target = make_inputs(1, (6, 6), "labels", seed=13)
        torch.testing.assert_close(LF.dice_loss(logits, target, include_background=False), LF.dice_loss(logits, target))

    def test_empty_prediction_and_mask(self) -> None:
        target = torch.zeros(2, 1, 8, 8)
        logits = torch.full((2, 1, 8, 8), -1e4, requires_grad=True)  # sigmoid underflows to exactly 0
        value = LF.dice_loss(logits, target, smooth=0.0)
        (grad,) = torch.autograd.grad(value, logits)
        assert value.item() == 0.0 and torch.isfinite(grad).all()
        # a class absent from the target but predicted costs ~1
        assert LF.dice_loss(torch.full((2, 1, 8, 8), 10.0), target).item() == pytest.approx(1.0, abs=1e-6)

    def test_large_image_sums_in_float32(self) -> None:
        # a 512 x 512 half-precision sum would overflow fp16 (max 65504)
        logits = torch.full((1, 2, 512, 512), 4.0).half()
        logits[:, 0] = -4.0
        target = torch.ones(1, 512, 512, dtype=torch.long)
        value = LF.dice_loss(logits, target, include_background=False)
        p = torch.sigmoid(torch.tensor(8.0, dtype=torch.float64)).item()
        assert value.item() == pytest.approx(1 - 2 * p / (p + 1), abs=1e-6)

    def test_bad_arguments(self) -> None:
        with pytest.raises(ValueError, match="smooth must be a finite number >= 0, got -1"):
            DiceLoss(smooth=-1)
        with pytest.raises(ValueError, match="batch_reduction must be one of 'image', 'batch', got 'volume'"):
            DiceLoss(batch_reduction="volume")
        with pytest.raises(ValueError, match="weight has 2 entries but logits have 3 channel"):
            DiceLoss(weight=[1.0, 2.0])(torch.zeros(1, 3, 4), torch.zeros(1, 4, dtype=torch.long))


# --------------------------------------------------------------------------- compound


class TestCompound:
    @pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[4], CASES[5]], ids=lambda c: c.name)
    def test_dice_ce_matches_monai(self, case: LossCase) -> None:
        logits, target = case.make()
        binary = case.num_classes == 1
        labels = not target.dtype.is_floating_point
        monai_target = target.reshape(logits.shape[0], 1, *logits.shape[2:]) if labels else target
        monai = MonaiDiceCELoss(
            sigmoid=binary, softmax=not binary, to_onehot_y=labels and not binary, lambda_dice=0.7, lambda_ce=1.3
        )(logits, monai_target.float() if binary else monai_target)
        torch.testing.assert_close(DiceCELoss(lambda_dice=0.7, lambda_ce=1.3)(logits, target), monai)

    def test_dice_ce_passes_shared_arguments_to_both(self) -> None:
        logits, target = make_inputs(3, (8, 8), "labels", seed=14, ignore_index=255)
        kwargs = dict(weight=[0.5, 1.0, 2.0], include_background=False, ignore_index=255)
        loss = DiceCELoss(lambda_ce=0.5, **kwargs)
        terms = loss.terms(logits, target)
        assert list(terms) == ["dice", "ce"]
        torch.testing.assert_close(terms["dice"], LF.dice_loss(logits, target, **kwargs))
        torch.testing.assert_close(terms["ce"], LF.cross_entropy(logits, target, **kwargs))
        torch.testing.assert_close(loss(logits, target), terms["dice"] + 0.5 * terms["ce"])
        torch.testing.assert_close(loss(logits, target), LF.dice_ce_loss(logits, target, lambda_ce=0.5, **kwargs))
        assert all(m.include_background is False for m in loss.losses.values())

    def test_terms_and_names(self) -> None:
        logits, target = make_inputs(3, (6, 6), "labels", seed=15)
        loss = CompoundLoss([(DiceLoss(), 1.0), (DiceLoss(squared=True), 0.5), ("xent", CrossEntropyLoss(), 2.0)])
        terms = loss.terms(logits, target)
        assert list(terms) == ["dice", "dice_2", "xent"]
        torch.testing.assert_close(loss(logits, target), terms["dice"] + 0.5 * terms["dice_2"] + 2.0 * terms["xent"])
        assert CompoundLoss([(CrossEntropyLoss(), 1.0)]).terms(logits, target).keys() == {"cross_entropy"}
        assert "term_weights={'dice': 1.0, 'dice_2': 0.5, 'xent': 2.0}" in repr(loss)

    def test_class_weight_buffers_follow_module(self) -> None:
        loss = DiceCELoss(weight=[1.0, 2.0])
        assert set(loss.state_dict()) == {"losses.dice.weight", "losses.ce.weight"}
        assert loss.to(torch.float64).losses["ce"].weight.dtype == torch.float64
        value = loss(torch.randn(2, 2, 4, 4), torch.randint(0, 2, (2, 4, 4)))
        assert value.dtype == torch.float32

    @pytest.mark.parametrize(
        ("terms", "error", "message"),
        [
            ([], ValueError, "at least one"),
            ([(DiceLoss(), -1.0)], ValueError, "weight of term 0 must be a finite number >= 0, got -1.0"),
            ([(DiceLoss(), float("inf"))], ValueError, "weight of term 0 must be a finite number"),
            ([(LF.dice_loss, 1.0)], TypeError, "term 0 must hold an nn.Module loss, got function"),
            ([DiceLoss()], ValueError, r"term 0 must be \(loss, weight\) or \(name, loss, weight\)"),
            ([("a", DiceLoss(), 1.0), ("a", DiceLoss(), 1.0)], ValueError, "term 1 repeats the name 'a'"),
        ],
    )
    def test_bad_terms(self, terms, error, message) -> None:
        with pytest.raises(error, match=message):
            CompoundLoss(terms)

    def test_non_scalar_term_raises(self) -> None:
        loss = CompoundLoss([(DiceLoss(), 1.0), (CrossEntropyLoss(reduction="none"), 1.0)])
        with pytest.raises(ValueError, match=r"term 1 of a compound loss must be a scalar, got shape \(2, 4, 4\)"):
            loss(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long))

    @pytest.mark.parametrize("case", [CASES[i] for i in (0, 2, 3, 4, 7, 8)], ids=lambda c: c.name)
    def test_shared_target_equals_separate_terms(self, case: LossCase) -> None:
        # DiceCELoss / DiceFocalLoss validate the target once and hand it to both parts
        logits, target = case.make()
        kwargs = {} if case.ignore_index is None else {"ignore_index": case.ignore_index}
        separate = LF.dice_loss(logits, target, **kwargs) + LF.cross_entropy(logits, target, **kwargs)
        torch.testing.assert_close(DiceCELoss(**kwargs)(logits, target), separate)
        separate = LF.dice_loss(logits, target, **kwargs) + LF.focal_loss(logits, target, **kwargs)
        torch.testing.assert_close(DiceFocalLoss(**kwargs)(logits, target), separate)
        torch.testing.assert_close(LF.dice_focal_loss(logits, target, **kwargs), separate)

    def test_dice_ce_rejects_none_reduction(self) -> None:
        with pytest.raises(ValueError, match="reduction must be one of 'mean', 'sum', got 'none'"):
            DiceCELoss(reduction="none")


# --------------------------------------------------------------------------- registry


class TestRegistry:
    def test_names(self) -> None:
        import medbalance.losses as L

        assert LOSSES["ce"] is CrossEntropyLoss and LOSSES["dice"] is DiceLoss and LOSSES["dice_ce"] is DiceCELoss
        assert isinstance(build_loss("dice"), DiceLoss)
        for name, cls in LOSSES.items():  # every registered loss is public and builds from its name
            assert getattr(L, cls.__name__) is cls
            assert isinstance(build_loss(name, class_counts=[50, 30, 20]), cls)

    def test_docs_catalogue_lists_every_name(self) -> None:
        from pathlib import Path

        doc = (Path(__file__).parents[1] / "docs" / "losses.md").read_text()
        assert all(f"`{name}`" in doc for name in LOSSES)

    def test_dict_with_class_weight(self) -> None:
        loss = build_loss({"name": "ce", "class_weight": [0.1, 1.0, 1.0], "ignore_index": 255})
        assert isinstance(loss, CrossEntropyLoss) and loss.ignore_index == 255
        assert loss.weight.tolist() == pytest.approx([0.1, 1.0, 1.0])

    def test_term_weight_wraps_single_loss(self) -> None:
        loss = build_loss({"name": "dice", "weight": 0.5})
        assert isinstance(loss, CompoundLoss) and loss.term_weights == {"dice": 0.5}

    def test_list_builds_compound(self) -> None:
        loss = build_loss(
            [
                {"name": "dice", "include_background": False},
                {"name": "ce", "weight": 0.5, "class_weight": [0.2, 1.0, 1.0]},
                "dice",
            ]
        )
        assert isinstance(loss, CompoundLoss)
        assert loss.term_weights == {"dice": 1.0, "ce": 0.5, "dice_2": 1.0}
        assert loss.losses["dice"].include_background is False
        logits, target = make_inputs(3, (6, 6), "labels", seed=16)
        terms = loss.terms(logits, target)
        torch.testing.assert_close(loss(logits, target), terms["dice"] + 0.5 * terms["ce"] + terms["dice_2"])

    @pytest.mark.parametrize(
        ("spec", "error", "message"),
        [
            ("dise", ValueError, "unknown loss 'dise' (did you mean 'dice'? known losses: ce, wce, focal, dice, iou,"),
            (
                {"name": "dice", "smoth": 1},
                ValueError,
                "unknown argument 'smoth' for loss 'dice' (did you mean 'smooth'?",
            ),
            (
                {"name": "ce", "smooth": 1},
                ValueError,
                "unknown argument 'smooth' for loss 'ce' (accepted: weight (term",
            ),
            ({"weight": 1.0}, ValueError, "has no 'name'"),
            ([], ValueError, "loss spec list is empty"),
            (3, TypeError, "loss spec must be a name, a dict or a list of them, got int"),
            ([3], TypeError, "a loss spec must be a name or a dict"),
            ({"name": "dice", "weight": -2.0}, ValueError, "weight of term 0 must be a finite number >= 0"),
        ],
    )
    def test_bad_specs(self, spec, error, message) -> None:
        with pytest.raises(error, match=re.escape(message)):
            build_loss(spec)

    def test_class_weight_scheme_uses_given_fractions(self) -> None:
        from medbalance.losses import class_weights

        loss = build_loss({"name": "ce", "class_weight": {"scheme": "inverse", "fractions": [0.9, 0.1]}})
        torch.testing.assert_close(loss.weight, class_weights([0.9, 0.1], "inverse"))

    def test_class_weight_scheme_counts_lazily_once(self) -> None:
        from medbalance.losses import class_weights

        calls = []

        def counts():
            calls.append(1)
            return torch.tensor([80, 15, 5])

        assert isinstance(build_loss("dice", class_counts=counts), DiceLoss) and calls == []
        loss = build_loss(
            [{"name": "ce", "class_weight": "exp_decreasing_fg"}, {"name": "dice", "class_weight": "inverse"}],
            class_counts=counts,
        )
        assert calls == [1]
        torch.testing.assert_close(loss.losses["ce"].weight, class_weights([80, 15, 5], "exp_decreasing_fg"))
        torch.testing.assert_close(loss.losses["dice"].weight, class_weights([80, 15, 5], "inverse"))

    def test_binary_scheme_keeps_background_and_foreground_weights(self) -> None:
        loss = build_loss({"name": "ce", "class_weight": "inverse"}, class_counts=[90, 10], binary=True)
        assert loss.weight.tolist() == pytest.approx([0.1, 0.9])  # sums to 1, as the scheme (not [9.0])
        nobg = build_loss({"name": "ce", "class_weight": "exp_decreasing_fg_nobg"}, class_counts=[90, 10], binary=True)
        assert nobg.weight.tolist() == [0.0, 1.0]
        with pytest.raises(ValueError, match="gives 3 weights for binary logits"):
            build_loss({"name": "ce", "class_weight": "inverse"}, class_counts=[80, 10, 10], binary=True)

    def test_scheme_without_counts_says_so(self) -> None:
        from medbalance.losses import MissingClassCounts

        with pytest.raises(MissingClassCounts, match="needs class counts for class_weight scheme 'inverse'"):
            build_loss({"name": "ce", "class_weight": "inverse"})
        with pytest.raises(ValueError, match="unknown class-weight scheme 'invers'"):
            build_loss({"name": "ce", "class_weight": "invers"}, class_counts=[1, 1])
        with pytest.raises(ValueError, match="got keys \\['fractoins', 'scheme'\\]"):
            build_loss({"name": "ce", "class_weight": {"scheme": "inverse", "fractoins": [1, 1]}})


@pytest.mark.parametrize("name", ["dice", "iou", "generalized_dice", "sens_spec", "exp_log", "dice_ce", "dice_focal"])
def test_region_losses_name_a_bad_label_next_to_ignored_ones(name):
    # their label range is checked by the one-hot encoding on CPU: the same one-line error
    from medbalance.losses import build_loss

    target = torch.zeros(2, 6, 6, dtype=torch.long)
    target[0, 0, :3] = 255
    target[1, 5, 5] = 9
    loss = build_loss({"name": name, "ignore_index": 255})
    message = "target has label 9 but logits have 3 classes (expected values in [0, 3) or ignore_index=255)"
    with pytest.raises(ValueError, match=re.escape(message)):
        loss(torch.zeros(2, 3, 6, 6), target)
    target[1, 5, 5] = 2
    assert torch.isfinite(loss(torch.zeros(2, 3, 6, 6), target))
