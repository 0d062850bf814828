"""Tests of the region (overlap) losses: IoU, Tversky, focal Tversky, generalized Dice,
sensitivity-specificity, exponential-logarithmic, and the per-class soft sums they share with Dice.

Argument mapping to MONAI 1.6.1 (``monai.losses``), used by every equality test below:

- activation: ``C == 1`` -> ``sigmoid=True``, ``C >= 2`` -> ``softmax=True``; label targets
  -> ``to_onehot_y=True`` with the ``(N, 1, *spatial)`` label map (binary: the float map).
- ``batch_reduction="batch"`` -> ``batch=True``; ``squared`` -> ``squared_pred``.
- Dice smoothing ``s`` -> ``smooth_nr = smooth_dr = s``; IoU ``s`` -> ``DiceLoss(jaccard=True,
  smooth_nr = smooth_dr = 2 s)`` (MONAI smooths ``2 TP`` and ``2 (TP + FP + FN)``);
  Tversky and generalized Dice ``s`` -> ``smooth_nr = smooth_dr = s``.
- ``weight`` (ours: one per channel, mean ``sum(w L) / sum(w)``) -> MONAI ``weight`` (mean
  of ``w L``; without the background it takes ``weight[1:]``): ours ``* sum(w) / K``.
- ``reduction="none"``: ours ``(N,)`` per image = MONAI's ``(N, K, 1...)`` averaged over K.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from monai.losses import DiceLoss as MonaiDiceLoss
from monai.losses import GeneralizedDiceLoss as MonaiGeneralizedDiceLoss
from monai.losses import TverskyLoss as MonaiTverskyLoss

from medbalance.losses.dice import dice_loss
from medbalance.losses.region import (
    ExpLogLoss,
    FocalTverskyLoss,
    GeneralizedDiceLoss,
    IoULoss,
    SensitivitySpecificityLoss,
    TverskyLoss,
    exp_log_loss,
    focal_tversky_loss,
    generalized_dice_loss,
    iou_loss,
    sensitivity_specificity_loss,
    tversky_loss,
)
from tests._loss_cases import CASES, LossCase, LossTester, make_inputs
from tests._reference import region_numpy as ref

PLAIN_CASES = [c for c in CASES if c.ignore_index is None]
IGNORE_CASES = [c for c in CASES if c.ignore_index is not None]


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _close(actual: torch.Tensor, expected, atol: float = 1e-5) -> None:
    np.testing.assert_allclose(_np(actual), np.asarray(expected), rtol=1e-4, atol=atol)


def _monai(loss_cls, logits: torch.Tensor, target: torch.Tensor, **kwargs) -> torch.Tensor:
    """MONAI ``loss_cls`` on our ``(logits, target)``, with the mapping of the module docstring."""
    binary = logits.shape[1] == 1
    labels = not target.dtype.is_floating_point
    if labels:
        target = target.reshape(logits.shape[0], 1, *logits.shape[2:])
    if binary:  # MONAI ignores (and warns about) include_background for one channel, as we do
        kwargs.pop("include_background", None)
    loss = loss_cls(sigmoid=binary, softmax=not binary, to_onehot_y=labels and not binary, **kwargs)
    return loss(logits, target.float() if binary else target)


def _two_channel(logits: torch.Tensor) -> torch.Tensor:
    """Binary logits ``z`` as the softmax logits ``[0, z]`` (background, foreground)."""
    return torch.cat([torch.zeros_like(logits), logits], dim=1)


def _two_channel_target(target: torch.Tensor) -> torch.Tensor:
    """A binary float target ``G`` as ``[1 - G, G]``; labels stay labels."""
    return torch.cat([1.0 - target, target], dim=1) if target.dtype.is_floating_point else target


# --------------------------------------------------------------------------- property suites


class TestIoUProperties(LossTester):
    functional = staticmethod(iou_loss)
    module = IoULoss


class TestTverskyProperties(LossTester):
    functional = staticmethod(tversky_loss)
    module = TverskyLoss
    kwargs = {"batch_reduction": "batch", "include_background": False}


class TestFocalTverskyProperties(LossTester):
    functional = staticmethod(focal_tversky_loss)
    module = FocalTverskyLoss


class TestGeneralizedDiceProperties(LossTester):
    functional = staticmethod(generalized_dice_loss)
    module = GeneralizedDiceLoss


class TestSensitivitySpecificityProperties(LossTester):
    functional = staticmethod(sensitivity_specificity_loss)
    module = SensitivitySpecificityLoss


class TestExpLogProperties(LossTester):
    functional = staticmethod(exp_log_loss)
    module = ExpLogLoss
    # At "perfect" logits (+-40) the true value is not 0: (-ln Dice)^0.3 turns the e^-40
    # residue of a sigmoid into ~2e-4 (a float64 evaluation of the formula agrees).
    atol = 1e-3


# --------------------------------------------------------------------------- MONAI equality

# (include_background, batch, squared): every combination is covered across the suite
OPTIONS = [(True, False, False), (False, False, True), (True, True, True), (False, True, False)]


class TestMatchesMonai:
    @pytest.mark.parametrize("case", PLAIN_CASES, ids=lambda c: c.name)
    @pytest.mark.parametrize(("include_background", "batch", "squared"), OPTIONS)
    def test_iou_is_monai_jaccard(self, case: LossCase, include_background, batch, squared) -> None:
        logits, target = case.make()
        ours = iou_loss(
            logits,
            target,
            smooth=1e-3,
            include_background=include_background,
            batch_reduction="batch" if batch else "image",
            squared=squared,
        )
        monai = _monai(
            MonaiDiceLoss,
            logits,
            target,
            jaccard=True,
            smooth_nr=2e-3,
            smooth_dr=2e-3,
            include_background=include_background,
            batch=batch,
            squared_pred=squared,
        )
        torch.testing.assert_close(ours, monai, rtol=1e-5, atol=1e-5)

    @pytest.mark.parametrize("case", PLAIN_CASES, ids=lambda c: c.name)
    @pytest.mark.parametrize(
        ("include_background", "batch", "alpha", "beta"),
        [(True, False, 0.3, 0.7), (False, True, 0.3, 0.7), (False, False, 0.8, 0.1), (True, True, 1.0, 0.0)],
    )
    def test_tversky(self, case: LossCase, include_background, batch, alpha, beta) -> None:
        logits, target = case.make()
        kwargs = dict(alpha=alpha, beta=beta, include_background=include_background)
        ours = tversky_loss(logits, target, smooth=1e-3, batch_reduction="batch" if batch else "image", **kwargs)
        monai = _monai(MonaiTverskyLoss, logits, target, smooth_nr=1e-3, smooth_dr=1e-3, batch=batch, **kwargs)
        torch.testing.assert_close(ours, monai, rtol=1e-5, atol=1e-5)

    @pytest.mark.parametrize("case", PLAIN_CASES, ids=lambda c: c.name)
    @pytest.mark.parametrize(
        ("include_background", "batch", "w_type"),
        [(True, False, "square"), (False, True, "square"), (False, False, "simple"), (True, True, "uniform")],
    )
    def test_generalized_dice(self, case: LossCase, include_background, batch, w_type) -> None:
        logits, target = case.make()
        kwargs = dict(w_type=w_type, include_background=include_background)
        ours = generalized_dice_loss(
            logits, target, smooth=1e-3, batch_reduction="batch" if batch else "image", **kwargs
        )
        if logits.shape[1] == 1:
            # binary GDL runs over both labels (seed 003): MONAI's softmax GDL of the logits [0, z]
            logits, target = _two_channel(logits), _two_channel_target(target)
            kwargs["include_background"] = True
        monai = _monai(MonaiGeneralizedDiceLoss, logits, target, smooth_nr=1e-3, smooth_dr=1e-3, batch=batch, **kwargs)
        torch.testing.assert_close(ours, monai, rtol=1e-5, atol=1e-5)

    @pytest.mark.parametrize("case", IGNORE_CASES, ids=lambda c: c.name)
    @pytest.mark.parametrize("include_background", [True, False])
    def test_ignore_index(self, case: LossCase, include_background) -> None:
        logits, target = case.make()
        kwargs = dict(ignore_index=case.ignore_index, include_background=include_background)
        ours = iou_loss(logits, target, **kwargs)
        monai = _monai(MonaiDiceLoss, logits, target, jaccard=True, smooth_nr=2e-5, smooth_dr=2e-5, **kwargs)
        torch.testing.assert_close(ours, monai, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            tversky_loss(logits, target, **kwargs),
            _monai(MonaiTverskyLoss, logits, target, alpha=0.3, beta=0.7, **kwargs),
        )

    @pytest.mark.parametrize("include_background", [True, False])
    def test_iou_class_weights(self, include_background) -> None:
        logits, target = make_inputs(4, (8, 8), "labels", seed=21)
        weight = torch.tensor([0.5, 1.0, 2.0, 4.0])
        ours = iou_loss(logits, target, weight=weight, include_background=include_background)
        kept = weight if include_background else weight[1:]
        monai = _monai(
            MonaiDiceLoss,
            logits,
            target,
            jaccard=True,
            smooth_nr=2e-5,
            smooth_dr=2e-5,
            weight=kept,
            include_background=include_background,
        )
        torch.testing.assert_close(ours * kept.sum() / kept.numel(), monai)

    def test_per_image_reductions(self) -> None:
        logits, target = make_inputs(3, (7, 6), "labels", batch=4, seed=22)
        pairs = [
            (
                iou_loss(logits, target, reduction="none"),
                _monai(MonaiDiceLoss, logits, target, jaccard=True, smooth_nr=2e-5, smooth_dr=2e-5, reduction="none"),
            ),
            (
                tversky_loss(logits, target, reduction="none"),
                _monai(MonaiTverskyLoss, logits, target, alpha=0.3, beta=0.7, reduction="none"),
            ),
            (
                generalized_dice_loss(logits, target, reduction="none"),
                _monai(MonaiGeneralizedDiceLoss, logits, target, reduction="none"),
            ),
        ]
        for ours, monai in pairs:
            assert ours.shape == (4,)
            torch.testing.assert_close(ours, monai.flatten(1).mean(1))
        ours = iou_loss(logits, target, reduction="sum")
        torch.testing.assert_close(ours, iou_loss(logits, target, reduction="none").sum())


# --------------------------------------------------------------------------- one shared core


class TestSharedCore:
    def test_tversky_special_cases(self) -> None:
        logits, target = make_inputs(3, (6, 5, 4), "soft", seed=23)
        for batch_reduction in ("image", "batch"):
            kwargs = dict(batch_reduction=batch_reduction, weight=[0.2, 1.0, 3.0])
            # Dice's s is the Tversky index's 2 s
            torch.testing.assert_close(
                tversky_loss(logits, target, alpha=0.5, beta=0.5, smooth=1e-3, **kwargs),
                dice_loss(logits, target, smooth=2e-3, **kwargs),
            )
            torch.testing.assert_close(
                tversky_loss(logits, target, alpha=1.0, beta=1.0, **kwargs), iou_loss(logits, target, **kwargs)
            )
            torch.testing.assert_close(
                focal_tversky_loss(logits, target, gamma=1.0, **kwargs), tversky_loss(logits, target, **kwargs)
            )

    @pytest.mark.parametrize("case", [CASES[i] for i in (0, 2, 3, 4, 7)], ids=lambda c: c.name)
    def test_unweighted_shortcut_equals_weighted_path(self, case: LossCase) -> None:
        # no weight, gamma 1: one mean over (image, class); unit weights: the general path
        logits, target = case.make()
        ones = [1.0] * case.num_classes
        extra = {} if case.ignore_index is None else {"ignore_index": case.ignore_index}
        for fn in (dice_loss, iou_loss, tversky_loss):
            for kwargs in (dict(), dict(batch_reduction="batch"), dict(smooth=0.0), dict(include_background=False)):
                z = logits.clone().requires_grad_()
                z_weighted = logits.clone().requires_grad_()
                value = fn(z, target, **kwargs, **extra)
                weighted = fn(z_weighted, target, weight=ones, **kwargs, **extra)
                torch.testing.assert_close(value, weighted)
                value.backward()
                weighted.backward()
                torch.testing.assert_close(z.grad, z_weighted.grad)

    def test_alpha_weighs_false_positives(self) -> None:
        logits = torch.tensor([[[-20.0, 20.0, 20.0, 20.0]]])  # predicts 3 pixels, one of them right
        target = torch.tensor([[0, 1, 0, 0]])
        fp_only = tversky_loss(logits, target, alpha=1.0, beta=0.0, smooth=0.0)
        assert fp_only.item() == pytest.approx(2 / 3, abs=1e-4)
        assert tversky_loss(logits, target, alpha=0.0, beta=1.0, smooth=0.0).item() == pytest.approx(0.0, abs=1e-4)

    def test_classification_logits_are_one_image_per_sample(self) -> None:
        # (N, C) logits: every sample is its own image, as a (N, C, 1) input
        logits, target = make_inputs(4, (), "labels", batch=6, seed=24)
        for fn in (dice_loss, iou_loss, tversky_loss, generalized_dice_loss, exp_log_loss):
            for batch_reduction in ("image", "batch"):
                torch.testing.assert_close(
                    fn(logits, target, batch_reduction=batch_reduction, reduction="none"),
                    fn(logits[..., None], target[..., None], batch_reduction=batch_reduction, reduction="none"),
                )

    def test_batch_reduction_returns_one_scalar(self) -> None:
        logits, target = make_inputs(3, (5, 5), "labels", batch=3, seed=25)
        for fn in (
            iou_loss,
            tversky_loss,
            focal_tversky_loss,
            generalized_dice_loss,
            sensitivity_specificity_loss,
            exp_log_loss,
        ):
            values = [fn(logits, target, batch_reduction="batch", reduction=r) for r in ("mean", "sum", "none")]
            assert all(v.ndim == 0 for v in values)
            torch.testing.assert_close(values[0], values[2])


# --------------------------------------------------------------------------- numpy re-derivations


def _numpy_kwargs(case: LossCase) -> list[dict]:
    weight = [float(k + 1) for k in range(case.num_classes)]
    variants = [
        dict(),
        dict(weight=weight, include_background=False, reduction="sum"),
        dict(batch_reduction="batch", smooth=0.0),
        dict(reduction="none", smooth=1.0),
    ]
    extra = {} if case.ignore_index is None else {"ignore_index": case.ignore_index}
    return [{**v, **extra} for v in variants]


class TestMatchesNumpy:
    @pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
    def test_focal_tversky(self, case: LossCase) -> None:
        logits, target = case.make()
        for kwargs in _numpy_kwargs(case):
            for params in (dict(), dict(gamma=2.0, alpha=0.6, beta=0.2)):
                value = focal_tversky_loss(logits, target, **params, **kwargs)
                _close(value, ref.focal_tversky_loss(_np(logits), _np(target), **params, **kwargs))

    @pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
    def test_sensitivity_specificity(self, case: LossCase) -> None:
        logits, target = case.make()
        for kwargs in _numpy_kwargs(case):
            for lam in (0.05, 0.7):
                value = sensitivity_specificity_loss(logits, target, lam=lam, **kwargs)
                _close(value, ref.sensitivity_specificity_loss(_np(logits), _np(target), lam=lam, **kwargs))

    @pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
    def test_exp_log(self, case: LossCase) -> None:
        logits, target = case.make()
        frequencies = [float(2**k) for k in range(max(case.num_classes, 2))]
        for kwargs in _numpy_kwargs(case):
            for params in (
                dict(),
                dict(gamma_dice=1.0, gamma_cross=0.5, w_dice=0.3, w_cross=1.5, class_frequencies=frequencies),
            ):
                value = exp_log_loss(logits, target, **params, **kwargs)
                _close(value, ref.exp_log_loss(_np(logits), _np(target), **params, **kwargs))

    @pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
    def test_generalized_dice_with_weights_and_ignore_index(self, case: LossCase) -> None:
        logits, target = case.make()
        for kwargs in _numpy_kwargs(case):
            _close(
                generalized_dice_loss(logits, target, **kwargs),
                ref.generalized_dice_loss(_np(logits), _np(target), **kwargs),
            )

    @pytest.mark.parametrize("kind", ["labels", "soft"])
    @pytest.mark.parametrize("batch_reduction", ["image", "batch"])
    def test_two_sided_dice_is_seed_dl2(self, kind, batch_reduction) -> None:
        # ours (2 TP + s) / (sum P + sum G + s) per side = seed DL_2 with e = s / 2 on top, s below
        ignore_index = 255 if kind == "labels" else None
        logits, target = make_inputs(1, (6, 7), kind, batch=3, seed=26, ignore_index=ignore_index)
        for smooth in (0.0, 1e-2):
            value = dice_loss(
                logits,
                target,
                two_sided=True,
                smooth=smooth,
                batch_reduction=batch_reduction,
                ignore_index=ignore_index,
            )
            expected = ref.two_sided_dice_loss(
                _np(logits),
                _np(target),
                smooth_nr=smooth / 2,
                smooth_dr=smooth,
                batch_reduction=batch_reduction,
                ignore_index=ignore_index,
            )
            _close(value, expected)


# --------------------------------------------------------------------------- empty classes, frequencies


class TestGeneralizedDiceEmptyClasses:
    def test_absent_class_takes_largest_present_weight(self) -> None:
        # class 2 is absent from image 0: it weighs like the smallest present class, as in MONAI
        logits, _ = make_inputs(3, (6, 6), "labels", seed=27)
        target = torch.zeros(2, 6, 6, dtype=torch.long)
        target[:, :2, :2] = 1
        target[1, 4:, 4:] = 2
        value = generalized_dice_loss(logits, target)
        assert torch.isfinite(value)
        torch.testing.assert_close(value, _monai(MonaiGeneralizedDiceLoss, logits, target))
        _close(value, ref.generalized_dice_loss(_np(logits), _np(target)))

    def test_false_positive_on_absent_class_costs(self) -> None:
        target = torch.zeros(1, 8, 8, dtype=torch.long)
        target[:, :3, :3] = 1
        clean = (torch.nn.functional.one_hot(target, 3).movedim(-1, 1) * 2.0 - 1.0) * 20.0
        noisy = clean.clone()
        noisy[:, 2, 6:, 6:], noisy[:, 0, 6:, 6:] = 20.0, -20.0  # predicts the absent class 2
        assert generalized_dice_loss(clean, target).item() < 1e-4
        assert generalized_dice_loss(noisy, target).item() > 0.05

    @pytest.mark.parametrize("smooth", [0.0, 1e-5])
    def test_no_counted_class_is_zero_and_finite(self, smooth) -> None:
        # only the left-out background in the target: every weight is 0, loss 0 (MONAI: 1 - s / s; NaN with s = 0)
        logits = torch.randn(2, 3, 6, 6, requires_grad=True)
        target = torch.zeros(2, 6, 6, dtype=torch.long)
        value = generalized_dice_loss(logits, target, smooth=smooth, include_background=False)
        (grad,) = torch.autograd.grad(value, logits)
        assert value.item() == 0.0 and torch.isfinite(grad).all()


class TestGeneralizedDiceBinary:
    def test_binary_uses_both_labels(self) -> None:
        # seed 003 writes GDL over 2 labels; over the foreground channel alone it is the foreground Dice
        logits, target = make_inputs(1, (9, 8), "labels", batch=3, seed=31)
        p = torch.sigmoid(logits[:, 0]).double().flatten(1).numpy()
        g = target.double().flatten(1).numpy()
        expected = []
        for pi, gi in zip(p, g):
            pl, gl = np.stack([1 - pi, pi]), np.stack([1 - gi, gi])
            w = 1.0 / gl.sum(axis=1) ** 2
            expected.append(1 - 2 * (w * (pl * gl).sum(1)).sum() / (w * (pl + gl).sum(1)).sum())
        _close(generalized_dice_loss(logits, target, smooth=0.0), np.mean(expected))
        _close(GeneralizedDiceLoss(smooth=0.0)(logits, target), np.mean(expected))
        # the same loss as on the two-channel softmax logits [0, z]
        torch.testing.assert_close(
            generalized_dice_loss(logits, target), generalized_dice_loss(_two_channel(logits), target)
        )
        foreground_dice = dice_loss(logits, target, smooth=0.0)
        assert abs(generalized_dice_loss(logits, target, smooth=0.0).item() - foreground_dice.item()) > 1e-3


class TestExpLog:
    def test_frequencies_from_batch_equal_given_counts(self) -> None:
        logits, target = make_inputs(3, (6, 6), "labels", batch=2, seed=28)
        counts = torch.bincount(target.flatten(), minlength=3).float()
        torch.testing.assert_close(exp_log_loss(logits, target), exp_log_loss(logits, target, class_frequencies=counts))
        # only ratios matter: fractions give the same weights
        torch.testing.assert_close(
            exp_log_loss(logits, target, class_frequencies=counts / counts.sum()), exp_log_loss(logits, target)
        )

    def test_terms(self) -> None:
        logits, target = make_inputs(4, (5, 6), "labels", seed=29)
        # gamma_dice = 1: mean_c -ln Dice_c; a one-hot weight picks class c's Dice loss
        dice_only = exp_log_loss(logits, target, gamma_dice=1.0, w_dice=1.0, w_cross=0.0, reduction="none")
        per_class = torch.stack(
            [dice_loss(logits, target, weight=torch.eye(4)[k], reduction="none") for k in range(4)], dim=-1
        )
        torch.testing.assert_close(dice_only, (-torch.log(1.0 - per_class)).mean(-1))
        # gamma_cross = 1 with equal frequencies is the plain cross entropy
        equal = [1.0, 1.0, 1.0, 1.0]
        cross = exp_log_loss(logits, target, gamma_cross=1.0, w_dice=0.0, w_cross=1.0, class_frequencies=equal)
        expected = torch.nn.functional.cross_entropy(logits, target) * 2.0  # w_l = sqrt(4 / 1)
        torch.testing.assert_close(cross, expected)

    def test_frequencies_buffer(self) -> None:
        loss = ExpLogLoss(class_frequencies=[0.9, 0.1])
        assert "class_frequencies" in loss.state_dict()
        assert "class_frequencies=[0.9, 0.1]" in repr(loss)
        assert ExpLogLoss().class_frequencies is None


# --------------------------------------------------------------------------- errors


class TestBadArguments:
    @pytest.mark.parametrize(
        ("factory", "message"),
        [
            (lambda: TverskyLoss(alpha=-0.1), "alpha must be a finite number >= 0, got -0.1"),
            (lambda: TverskyLoss(beta=float("nan")), "beta must be a finite number >= 0, got nan"),
            (lambda: FocalTverskyLoss(gamma=0.0), "gamma must be a finite number > 0, got 0.0"),
            (lambda: IoULoss(smooth=-1), "smooth must be a finite number >= 0, got -1"),
            (
                lambda: IoULoss(batch_reduction="volume"),
                "batch_reduction must be one of 'image', 'batch', got 'volume'",
            ),
            (
                lambda: GeneralizedDiceLoss(w_type="cubic"),
                "w_type must be one of 'square', 'simple', 'uniform', got 'cubic'",
            ),
            (lambda: SensitivitySpecificityLoss(lam=1.5), "lam must be a number in [0, 1], got 1.5"),
            (lambda: ExpLogLoss(gamma_dice=-1.0), "gamma_dice must be a finite number > 0, got -1.0"),
            (lambda: ExpLogLoss(w_cross=-1.0), "w_cross must be a finite number >= 0, got -1.0"),
            (lambda: ExpLogLoss(class_frequencies=[0.5, 0.0]), "class_frequencies must hold finite positive values"),
            (
                lambda: ExpLogLoss(class_frequencies=[1.0]),
                "class_frequencies must be a 1-D sequence with one frequency",
            ),
        ],
    )
    def test_init(self, factory, message) -> None:
        with pytest.raises(ValueError, match=re.escape(message)):
            factory()

    def test_call(self) -> None:
        logits, target = torch.zeros(1, 3, 4), torch.zeros(1, 4, dtype=torch.long)
        with pytest.raises(ValueError, match=re.escape("class_frequencies has 2 entries but the target has 3 classes")):
            exp_log_loss(logits, target, class_frequencies=[1.0, 2.0])
        with pytest.raises(ValueError, match=re.escape("binary logits take 2: background, foreground")):
            exp_log_loss(torch.zeros(1, 1, 4), target, class_frequencies=[1.0, 2.0, 3.0])
        with pytest.raises(ValueError, match="weight has 2 entries but logits have 3 channel"):
            GeneralizedDiceLoss(weight=[1.0, 2.0])(logits, target)
        with pytest.raises(ValueError, match="reduction must be one of 'mean', 'sum', 'none', got 'avg'"):
            tversky_loss(logits, target, reduction="avg")


def test_exp_log_dice_term_has_no_cancellation_near_a_perfect_prediction():
    # sum P + sum G - 2 TP in float32 left a 6e-8 error that the 0.3 power made 0.007 (3D, 2 classes)
    target = torch.randint(0, 2, (1, 3, 4, 5), generator=torch.Generator().manual_seed(0))
    logits = torch.nn.functional.one_hot(target, 2).movedim(-1, 1).float() * 80.0 - 40.0
    assert exp_log_loss(logits, target, w_cross=0.0) < 1e-9
