"""Bilateral-branch training with cumulative learning (BBN, Zhou et al. CVPR 2020; LSKBB, seed 001).

Each step reads ``2B`` samples from :func:`medbalance.data.samplers.bilateral`: ``B`` from a
uniform sampler for the conventional branch, then ``B`` from a reversed sampler for the
re-balancing branch. :class:`BilateralMethod` feeds the halves to a two-branch network
(:class:`medbalance.nets.BBN`, :class:`medbalance.nets.LSKBB`), which returns both branch
logits; :class:`BilateralLoss` mixes them with the cumulative weight
``lambda = 1 - (T / T_max)^2`` (T = epoch) as ``z = lambda z_c + (1 - lambda) z_r`` and returns
``lambda L(z, y_c) + (1 - lambda) L(z, y_r)``. Validation and test batches go through the
network once, both branches weighted 0.5 (SPEC section 6). The whole recipe is one stage
(``method: {name: bilateral}``; :func:`bilateral_stage` in Python) run by the one engine.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from medbalance.data.samplers import BatchSamplerFactory, bilateral, reversed_sampler, uniform
from medbalance.engine.engine import Engine, Stage
from medbalance.engine.hooks import Method
from medbalance.losses._validate import check_progress

__all__ = ["BilateralMethod", "BilateralLoss", "bilateral_loss", "bilateral_stage", "cumulative_lambda"]


def cumulative_lambda(progress: float, epochs: int | None = None) -> float:
    """BBN's cumulative-learning weight ``lambda = 1 - (T / T_max)^2`` of the conventional branch.

    Args:
        progress: ``T / T_max`` in ``[0, 1]`` (step-wise, as the engine reports it).
        epochs: epochs of the stage; ``T`` is then the finished epoch count, as in the BBN code
            (``lambda`` constant within an epoch). ``None`` uses ``progress`` as it is.

    Example:
        >>> cumulative_lambda(0.55, epochs=10), cumulative_lambda(0.5)
        (0.75, 0.75)
    """
    progress = check_progress(progress)
    if epochs is not None:
        # floor(T) with a margin for float error at epoch boundaries (5 / 10 * 10 = 4.999...)
        progress = math.floor(progress * epochs + 1e-9) / epochs
    return 1.0 - progress**2


def bilateral_loss(loss: nn.Module, z_c: Tensor, z_r: Tensor, y_c: Tensor, y_r: Tensor, *, lam: float) -> Tensor:
    """``lam * loss(z, y_c) + (1 - lam) * loss(z, y_r)`` with ``z = lam * z_c + (1 - lam) * z_r``.

    Args:
        loss: ``loss(logits, target) -> scalar`` (CE, DFLCE, ...).
        z_c: ``(B, C)`` logits of the conventional branch (uniform batch).
        z_r: ``(B, C)`` logits of the re-balancing branch (reversed batch).
        y_c: ``(B,)`` labels of the uniform batch.
        y_r: ``(B,)`` labels of the reversed batch.
        lam: weight of the conventional branch in ``[0, 1]``.

    Example:
        >>> ce = nn.CrossEntropyLoss()
        >>> z, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
        >>> bool(torch.isclose(bilateral_loss(ce, z, torch.zeros(4, 3), y, y.flip(0), lam=1.0), ce(z, y)))
        True
    """
    if z_c.shape != z_r.shape:
        raise ValueError(f"z_c and z_r must have the same shape, got {tuple(z_c.shape)} and {tuple(z_r.shape)}")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam!r}")
    z = lam * z_c + (1.0 - lam) * z_r
    return lam * loss(z, y_c) + (1.0 - lam) * loss(z, y_r)


class BilateralLoss(nn.Module):
    """The cumulative-learning loss of BBN around any classification loss.

    ``forward(outputs, target)``: with the branch pair ``(z_c, z_r)`` of a training step and
    the ``2B`` labels (uniform half first), :func:`bilateral_loss` at
    ``lambda = cumulative_lambda(progress, epochs)``; with one logits tensor (validation,
    both branches already mixed 0.5 / 0.5) the wrapped loss itself. ``progress`` is set by
    the engine (:func:`medbalance.losses.set_progress`), which also reaches a dynamic wrapped
    loss such as DFLCE.

    Args:
        loss: the wrapped loss module.
        epochs: epochs of the stage, so ``lambda`` steps once per epoch (``None``: per step).

    Example:
        >>> from medbalance.losses import DFLCELoss, set_progress
        >>> loss = BilateralLoss(DFLCELoss(), epochs=10)
        >>> set_progress(loss, 0.5)
        >>> loss.lam, loss.loss.progress
        (0.75, 0.5)
    """

    def __init__(self, loss: nn.Module, *, epochs: int | None = None) -> None:
        super().__init__()
        if not isinstance(loss, nn.Module):
            raise TypeError(f"loss must be an nn.Module, got {type(loss).__name__}")
        self.loss = loss
        self.epochs = epochs
        self.progress = 0.0

    @property
    def lam(self) -> float:
        """The current weight of the conventional branch."""
        return cumulative_lambda(self.progress, self.epochs)

    def forward(self, outputs: Tensor | tuple[Tensor, Tensor], target: Tensor) -> Tensor:
        if isinstance(outputs, Tensor):
            return self.loss(outputs, target)
        z_c, z_r = outputs
        if target.shape[0] != 2 * z_c.shape[0]:
            raise ValueError(f"target must hold the labels of both batches ({2 * z_c.shape[0]}), got {target.shape[0]}")
        half = z_c.shape[0]
        return bilateral_loss(self.loss, z_c, z_r, target[:half], target[half:], lam=self.lam)

    def extra_repr(self) -> str:
        return f"epochs={self.epochs}, progress={self.progress}"


class BilateralMethod(Method):
    """BBN / LSKBB training (``method: {name: bilateral}``): a ``2B`` training batch is split into
    the uniform and the reversed half (``module(x[:B], x[B:])``) and the stage's loss is wrapped
    in :class:`BilateralLoss`; evaluation runs the network once per batch. A stage of this
    method draws ``bilateral`` batches unless its recipe says otherwise."""

    name = "bilateral"

    def default_stages(self, cfg) -> list[dict]:
        return [{"name": "bilateral", "epochs": cfg.epochs, "batches": "bilateral"}]

    def stage_loss(self, loss: nn.Module, stage: dict) -> BilateralLoss:
        return BilateralLoss(loss, epochs=stage["epochs"])

    def forward(self, engine: Engine, module: nn.Module, batch: dict) -> Tensor | tuple[Tensor, Tensor]:
        x = batch["image"]
        if not module.training:
            return module(x)
        if len(x) % 2:
            raise ValueError(f"a bilateral training batch holds two halves; got an odd batch of {len(x)}")
        half = len(x) // 2
        return module(x[:half], x[half:])

    def compute_loss(
        self, engine: Engine, stage: Stage, outputs: Tensor | tuple[Tensor, Tensor], batch: dict
    ) -> Tensor:
        # The branch pair is not deep supervision: the loss itself takes it.
        return stage.loss(outputs, batch["target"])


def bilateral_stage(
    loss: nn.Module,
    epochs: int,
    *,
    name: str = "bilateral",
    first: BatchSamplerFactory = uniform,
    second: BatchSamplerFactory = reversed_sampler,
    lr: float | None = None,
) -> Stage:
    """The one stage of BBN / LSKBB: ``loss`` wrapped in :class:`BilateralLoss`, bilateral batches.

    Example:
        >>> from medbalance.losses import DFLCELoss
        >>> stage = bilateral_stage(DFLCELoss(), 200)
        >>> type(stage.loss).__name__, stage.epochs
        ('BilateralLoss', 200)
    """
    return Stage(name, epochs, BilateralLoss(loss, epochs=epochs), lr=lr, sampler=bilateral(first, second))
