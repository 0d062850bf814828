"""Build losses from configuration: names, dicts and lists of dicts.

A YAML config such as::

    loss:
      - {name: dice, weight: 1.0, include_background: false}
      - {name: ce, weight: 1.0, class_weight: [0.1, 1.0, 1.0]}

becomes ``CompoundLoss([("dice", DiceLoss(...), 1.0), ("ce", CrossEntropyLoss(...), 1.0)])``.
``class_weight: exp_decreasing_fg`` instead of a list weighs the classes by that scheme of
seed 002 on the class fractions of the training split (counted when the run starts).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

from torch import Tensor, nn

from medbalance._suggest import did_you_mean
from medbalance.losses.balanced import ClassBalancedCELoss, LDAMLoss
from medbalance.losses.bootstrap import OnlineBootstrappingLoss
from medbalance.losses.ce import CrossEntropyLoss, WeightedCrossEntropyLoss
from medbalance.losses.compound import CompoundLoss, DiceCELoss, DiceFocalLoss
from medbalance.losses.dice import DiceLoss
from medbalance.losses.dynamic import DFLCELoss, DFLCSCELoss
from medbalance.losses.focal import FocalLoss
from medbalance.losses.region import (
    ExpLogLoss,
    FocalTverskyLoss,
    GeneralizedDiceLoss,
    IoULoss,
    SensitivitySpecificityLoss,
    TverskyLoss,
)
from medbalance.losses.smoothing import LabelAwareSmoothingLoss
from medbalance.losses.weights import class_weights

__all__ = ["LOSSES", "MissingClassCounts", "build_loss"]

LOSSES: dict[str, type[nn.Module]] = {
    "ce": CrossEntropyLoss,
    "wce": WeightedCrossEntropyLoss,
    "focal": FocalLoss,
    "dice": DiceLoss,
    "iou": IoULoss,
    "tversky": TverskyLoss,
    "focal_tversky": FocalTverskyLoss,
    "sens_spec": SensitivitySpecificityLoss,
    "generalized_dice": GeneralizedDiceLoss,
    "exp_log": ExpLogLoss,
    "ob": OnlineBootstrappingLoss,
    "dice_ce": DiceCELoss,
    "bce_dice": DiceCELoss,  # BCE + Dice is Dice + CE on binary (one-channel) logits
    "dice_focal": DiceFocalLoss,
    "csce": ClassBalancedCELoss,
    "ldam": LDAMLoss,
    "dflce": DFLCELoss,
    "dflcsce": DFLCSCELoss,
    "label_aware_smoothing": LabelAwareSmoothingLoss,
}


class MissingClassCounts(ValueError):
    """A loss spec needs class counts (a weight scheme, CSCE, LDAM) and none were given.

    A run counts them on its training split, so configuration checks let this one pass.
    """


CountsSource = Union[Sequence[float], Tensor, Callable[[], Union[Sequence[float], Tensor]], None]


class _Counts:
    """Class counts given as values or as a callable evaluated once, on first use."""

    def __init__(self, source: CountsSource, *, binary: bool) -> None:
        self._source = source
        self._values: list[float] | None = None
        self.binary = binary

    def get(self, name: str, what: str) -> list[float]:
        if self._values is None:
            if self._source is None:
                raise MissingClassCounts(
                    f"loss {name!r} needs class counts for {what}: give them in the spec, or train it in a run, "
                    "which counts them on the training split"
                )
            values = self._source() if callable(self._source) else self._source
            self._values = [float(v) for v in (values.tolist() if isinstance(values, Tensor) else values)]
        return self._values


def _class_weight(value: Any, name: str, counts: _Counts) -> Any:
    """A scheme name or ``{scheme, fractions}`` becomes the weight vector of that scheme."""
    if isinstance(value, str):
        value = {"scheme": value}
    if not isinstance(value, Mapping):
        return value
    unknown = set(value) - {"scheme", "fractions"}
    if unknown or "scheme" not in value:
        raise ValueError(
            f"class_weight of loss {name!r} must be a list of weights, a scheme name, or a dict with 'scheme' "
            f"and optional 'fractions', got keys {sorted(value)}"
        )
    fractions = value.get("fractions")
    if fractions is None:
        fractions = counts.get(name, f"class_weight scheme {value['scheme']!r}")
    weights = class_weights(fractions, value["scheme"]).tolist()
    # one sigmoid channel takes the (background, foreground) pair as it is: dividing by the background
    # weight would change the scheme's normalisation (sum 1) and so the term's scale in a compound
    if counts.binary and len(weights) != 2:
        raise ValueError(
            f"class_weight scheme {value['scheme']!r} of loss {name!r} gives {len(weights)} weights for binary "
            "logits (expected two classes: background, foreground)"
        )
    return weights


def _build_one(
    spec: str | Mapping[str, Any], counts: _Counts, ignore_index: int | None = None
) -> tuple[str, nn.Module, float]:
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, Mapping):
        raise TypeError(f"a loss spec must be a name or a dict with a 'name' key, got {type(spec).__name__}")
    if "name" not in spec:
        raise ValueError(f"loss spec {dict(spec)!r} has no 'name' (known losses: {', '.join(LOSSES)})")
    kwargs = dict(spec)
    name = kwargs.pop("name")
    if name not in LOSSES:
        raise ValueError(
            f"unknown loss {name!r} ({did_you_mean(str(name), list(LOSSES))}known losses: {', '.join(LOSSES)})"
        )
    term_weight = kwargs.pop("weight", 1.0)
    cls = LOSSES[name]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    # the loss's own `weight` (class weights) is spelled `class_weight` here: `weight` is the term weight
    allowed = [p for p in accepted if p != "weight"] + (["class_weight"] if "weight" in accepted else [])
    for key in kwargs:
        if key not in allowed:
            raise ValueError(
                f"unknown argument {key!r} for loss {name!r} ({did_you_mean(key, allowed)}accepted: "
                f"{', '.join(['weight (term weight)', *allowed])})"
            )
    if "class_weight" in kwargs:
        kwargs["weight"] = _class_weight(kwargs.pop("class_weight"), name, counts)
    if "class_counts" in accepted and "class_counts" not in kwargs:
        kwargs["class_counts"] = counts.get(name, "its class-count-dependent weights or margins")
    if ignore_index is not None and "ignore_index" not in kwargs:
        if "ignore_index" not in accepted:
            raise ValueError(
                f"loss {name!r} cannot leave out the data's ignored pixels (ignore_index={ignore_index}); "
                "choose a loss that takes ignore_index"
            )
        kwargs["ignore_index"] = ignore_index
    return name, cls(**kwargs), term_weight


def build_loss(
    spec: str | Mapping[str, Any] | Sequence[Mapping[str, Any] | str],
    *,
    class_counts: CountsSource = None,
    binary: bool = False,
    ignore_index: int | None = None,
) -> nn.Module:
    """Build a loss module from a name, a dict or a list of dicts.

    Args:
        spec: a name from :data:`LOSSES` (``"dice"``); a dict ``{"name": "dice", "weight":
            1.0, **kwargs}`` where ``weight`` is the term weight in a compound and
            ``class_weight`` (list of floats, one per logit channel) goes to the loss's
            ``weight`` argument; or a list of names / dicts, which becomes a
            :class:`CompoundLoss` with one term per item (named after the loss, numbered when
            repeated). ``class_weight`` may also name a scheme of
            :func:`medbalance.losses.class_weights` (``"exp_decreasing_fg"``) or be a dict
            ``{"scheme": ..., "fractions": [...]}``; without fractions the scheme uses
            ``class_counts``.
        class_counts: ``(C,)`` class counts (pixels or samples) of the training data, or a
            callable returning them, called at most once and only if a term needs them
            (a ``class_weight`` scheme, or a loss taking ``class_counts`` such as CSCE and LDAM).
        binary: the logits have one sigmoid channel; a scheme's two class weights are passed
            as the pair ``(background, foreground)``, normalised as the scheme normalises them.
        ignore_index: the data's label of pixels to leave out, given to every term that does
            not set its own (a term that cannot take it is refused).

    Returns:
        The loss module; a single spec with a term weight other than 1 is wrapped in a
        one-term :class:`CompoundLoss` so the weight is not lost.

    Raises:
        MissingClassCounts: (a ``ValueError``) when a term needs class counts and none are given.
        ValueError: on an unknown loss name or argument (with the closest known name), or an
            empty list.
        TypeError: if ``spec`` is neither a name, a dict nor a list.

    Example:
        >>> build_loss([{"name": "dice"}, {"name": "ce", "class_weight": [0.5, 1.0]}])
        CompoundLoss(...)
        >>> build_loss("dise")
        Traceback (most recent call last):
        ...
        ValueError: unknown loss 'dise' (did you mean 'dice'? known losses: ce, wce, focal, dice, ...)
    """
    counts = _Counts(class_counts, binary=binary)
    if isinstance(spec, (str, Mapping)):
        name, loss, term_weight = _build_one(spec, counts, ignore_index)
        return loss if term_weight == 1.0 else CompoundLoss([(name, loss, term_weight)])
    if not isinstance(spec, Sequence):
        raise TypeError(f"loss spec must be a name, a dict or a list of them, got {type(spec).__name__}")
    if len(spec) == 0:
        raise ValueError("loss spec list is empty (expected at least one loss)")
    terms: list[tuple[str, nn.Module, float]] = []
    seen: dict[str, int] = {}
    for item in spec:
        name, loss, term_weight = _build_one(item, counts, ignore_index)
        seen[name] = seen.get(name, 0) + 1
        terms.append((name if seen[name] == 1 else f"{name}_{seen[name]}", loss, term_weight))
    return CompoundLoss(terms)
