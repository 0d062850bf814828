"""Two-stage "reuse background" segmentation (seed 002, SPEC section 7).

A multi-class model (softmax over background + C-1 cell classes) and a binary
foreground/background model (one sigmoid channel, same labels with every cell class merged)
are trained with the same loss family; their predictions are combined per pixel
(:func:`combine_predictions`): where the binary model says background the pixel is
background, elsewhere the multi-class model decides. Imbalance losses (class-weighted Focal,
online bootstrapping) push the multi-class model to paint background as cells; the binary
model, whose background is far less down-weighted, removes those pixels (seed 002 section 3).

The experiment behind ``medbalance experiment reuse-background`` is
:mod:`medbalance.experiments.seed002.reuse_background`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor, nn

from medbalance.engine.hooks import Method, MethodOptions

__all__ = [
    "COMBINE_MODES",
    "combine_predictions",
    "ReuseBackgroundNet",
    "ReuseBackgroundMethod",
    "ReuseBackgroundOptions",
]

CombineMode = Literal["paper", "fg_argmax"]
COMBINE_MODES: tuple[str, ...] = ("paper", "fg_argmax")


def combine_predictions(
    multi_probs: Tensor | np.ndarray,
    fg_prob: Tensor | np.ndarray,
    *,
    tau: float = 0.5,
    mode: CombineMode = "paper",
) -> Tensor | np.ndarray:
    """Reuse the binary model's background in a multi-class prediction (seed 002, eq. 3.4).

    A pixel whose foreground probability is ``<= tau`` is background. Elsewhere:

    * ``mode="paper"``: the multi-class argmax over all classes (which may still be
      background), as in the seed;
    * ``mode="fg_argmax"``: the argmax over the foreground classes ``1..C-1`` only, so the
      binary model alone decides foreground vs background (SPEC 7, **Decision**).

    Args:
        multi_probs: class probabilities (or any scores with the same argmax)
            ``(N, C, *spatial)``, ``C >= 2``, channel 0 background.
        fg_prob: foreground probability of the binary model ``(N, *spatial)`` or
            ``(N, 1, *spatial)``, values in ``[0, 1]``.
        tau: threshold on ``fg_prob``, in ``[0, 1)``.
        mode: ``"paper"`` or ``"fg_argmax"``.

    Returns:
        int64 labels ``(N, *spatial)``; a numpy array if ``multi_probs`` is one, else a tensor.

    Reference:
        Seed 002 section 3.4 (combination), 3.5.3 (``tau = 0.5`` on the sigmoid output).

    Example:
        >>> multi = torch.tensor([[[[0.6, 0.1]], [[0.3, 0.2]], [[0.1, 0.7]]]])  # (1, 3, 1, 2)
        >>> fg = torch.tensor([[[0.9, 0.2]]])
        >>> combine_predictions(multi, fg).tolist(), combine_predictions(multi, fg, mode="fg_argmax").tolist()
        ([[[0, 0]]], [[[1, 0]]])
    """
    as_numpy = isinstance(multi_probs, np.ndarray)
    multi = torch.as_tensor(multi_probs)
    fg = torch.as_tensor(fg_prob)
    if mode not in COMBINE_MODES:
        raise ValueError(f"mode must be one of {', '.join(COMBINE_MODES)}, got {mode!r}")
    if not (isinstance(tau, (int, float)) and 0.0 <= tau < 1.0):
        raise ValueError(f"tau must be a number in [0, 1), got {tau!r}")
    for name, value in (("multi_probs", multi), ("fg_prob", fg)):
        if not value.is_floating_point():
            raise TypeError(f"{name} must hold floating-point probabilities, got dtype {value.dtype}")
    if multi.ndim < 3 or multi.shape[1] < 2:
        raise ValueError(f"multi_probs must be (N, C, *spatial) with C >= 2, got shape {tuple(multi.shape)}")
    spatial = (multi.shape[0], *multi.shape[2:])
    if fg.ndim == multi.ndim and fg.shape[1] == 1:
        fg = fg[:, 0]
    if tuple(fg.shape) != spatial:
        raise ValueError(
            f"fg_prob must be (N, *spatial) = {spatial} or (N, 1, *spatial) to match multi_probs, got {tuple(fg.shape)}"
        )
    if fg.numel() and not ((fg >= 0) & (fg <= 1)).all():
        raise ValueError("fg_prob must hold probabilities in [0, 1] (apply a sigmoid to binary logits first)")
    labels = multi.argmax(1) if mode == "paper" else multi[:, 1:].argmax(1) + 1
    labels = torch.where(fg > tau, labels, torch.zeros_like(labels))
    return labels.numpy() if as_numpy else labels


class ReuseBackgroundNet(nn.Module):
    """A multi-class and a binary network as one model whose prediction is the combination.

    In training mode it is the multi-class network (the binary one is trained before, as a
    part). In evaluation mode it returns log-probabilities whose argmax is
    :func:`combine_predictions` of the two networks: background where the binary foreground
    probability is ``<= tau``, elsewhere the multi-class probabilities (``paper``) or those
    of the foreground classes renormalised (``fg_argmax``). One graph, so ``predict``,
    ``evaluate`` and ``export`` see the combined model.

    Args:
        multi: ``(N, C, *spatial)`` logits, channel 0 background.
        binary: ``(N, 1, *spatial)`` foreground logits.
        tau: threshold on the binary foreground probability, in ``[0, 1)``.
        mode: ``"paper"`` or ``"fg_argmax"``.

    Example:
        >>> from medbalance.nets import UNet
        >>> net = ReuseBackgroundNet(UNet(1, 3, base_channels=4, depth=2), UNet(1, 1, base_channels=4, depth=2))
        >>> net.eval()(torch.randn(2, 1, 16, 16)).shape
        torch.Size([2, 3, 16, 16])
    """

    def __init__(self, multi: nn.Module, binary: nn.Module, *, tau: float = 0.5, mode: CombineMode = "paper") -> None:
        super().__init__()
        if mode not in COMBINE_MODES:
            raise ValueError(f"mode must be one of {', '.join(COMBINE_MODES)}, got {mode!r}")
        if not 0.0 <= tau < 1.0:
            raise ValueError(f"tau must be in [0, 1), got {tau!r}")
        self.multi, self.binary, self.tau, self.mode = multi, binary, float(tau), mode

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, ...]:
        if self.training:
            return self.multi(x)
        probs = torch.softmax(self.multi(x).float(), dim=1)
        if self.mode == "fg_argmax":
            probs = torch.cat([torch.zeros_like(probs[:, :1]), probs[:, 1:]], dim=1)
            probs = probs / probs.sum(dim=1, keepdim=True).clamp_min(1e-12)
        background = torch.zeros_like(probs)
        background[:, 0] = 1.0
        keep = torch.sigmoid(self.binary(x)[:, :1].float()) > self.tau
        return torch.log(torch.where(keep, probs, background).clamp_min(1e-12))


class ReuseBackgroundOptions(MethodOptions):
    """``method:`` keys of reuse-background: the combination's ``tau`` and ``mode``, and the
    binary part's ``binary_model`` (keys replacing the recipe's ``model``, e.g. another
    ``name``), ``binary_loss`` (``None``: the recipe's loss) and ``binary_epochs`` (``None``:
    the recipe's ``epochs``)."""

    tau: float = Field(0.5, ge=0.0, lt=1.0)
    mode: Literal["paper", "fg_argmax"] = "paper"
    binary_model: dict = {}
    binary_loss: Any = None
    binary_epochs: int | None = Field(None, ge=1)


class ReuseBackgroundMethod(Method):
    """Reuse-background as one composite recipe (``method: {name: reuse_background}``).

    :meth:`prepare` trains the binary part (the recipe's data with ``binary: true``, under
    ``parts/binary/``) and loads it into the model, a :class:`ReuseBackgroundNet`; the one
    default stage trains the multi-class network with the binary one frozen, and validation
    scores the combination, so ``best.pt`` is the best combined model.
    """

    name = "reuse_background"
    Options = ReuseBackgroundOptions

    def default_stages(self, cfg: Any) -> list[dict]:
        return [{"name": "multi", "epochs": cfg.epochs, "trainable": ["multi"], "frozen": ["binary"]}]

    def build_model(self, build: Callable[..., nn.Module], *, in_channels: int, num_classes: int) -> nn.Module:
        o = self.options
        return ReuseBackgroundNet(build(), build(**{**o.binary_model, "num_classes": 1}), tau=o.tau, mode=o.mode)

    def prepare(self, parts: Any, cfg: Any, splits: Any, model: nn.Module) -> Any:
        from medbalance.config import MethodConfig, ModelConfig

        if splits.train.num_classes < 3:
            raise ValueError(
                f"reuse-background needs background and at least two classes; the data has {splits.train.num_classes}"
            )
        o = self.options
        binary = cfg.model_copy(
            update={
                "name": "binary",
                "data": cfg.data.model_copy(update={"binary": True}),
                "model": ModelConfig(**{**cfg.model.model_dump(), **o.binary_model}),
                "method": MethodConfig(),
                "stages": None,
                "loss": o.binary_loss if o.binary_loss is not None else cfg.loss,
                "epochs": o.binary_epochs or cfg.epochs,
            }
        )
        model.binary.load_state_dict(parts.train("binary", binary).model.state_dict())
        return splits
