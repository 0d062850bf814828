"""Build losses from configuration: names, dicts and lists of dicts.

A YAML config such as::

    loss:
      - {name: dice, weight: 1.0, include_background: false}
      - {name: ce, weight: 1.0, class_weight: [0.1, 1.0, 1.0]}

becomes ``CompoundLoss([("dice", DiceLoss(...), 1.0), ("ce", CrossEntropyLoss(...), 1.0)])``.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from medbalance.losses.ce import CrossEntropyLoss
from medbalance.losses.compound import CompoundLoss, DiceCELoss
from medbalance.losses.dice import DiceLoss

__all__ = ["LOSSES", "build_loss"]

LOSSES: dict[str, type[nn.Module]] = {
    "ce": CrossEntropyLoss,
    "dice": DiceLoss,
    "dice_ce": DiceCELoss,
}


def _suggest(word: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, known, n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def _build_one(spec: str | Mapping[str, Any]) -> tuple[str, nn.Module, float]:
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
            f"unknown loss {name!r} ({_suggest(str(name), list(LOSSES))}known losses: {', '.join(LOSSES)})"
        )
    term_weight = kwargs.pop("weight", 1.0)
    cls = LOSSES[name]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    # the loss's own `weight` (class weights) is spelled `class_weight` here: `weight` is the term weight
    allowed = [p for p in accepted if p != "weight"] + (["class_weight"] if "weight" in accepted else [])
    for key in kwargs:
        if key not in allowed:
            raise ValueError(
                f"unknown argument {key!r} for loss {name!r} ({_suggest(key, allowed)}accepted: "
                f"{', '.join(['weight (term weight)', *allowed])})"
            )
    if "class_weight" in kwargs:
        kwargs["weight"] = kwargs.pop("class_weight")
    return name, cls(**kwargs), term_weight


def build_loss(spec: str | Mapping[str, Any] | Sequence[Mapping[str, Any] | str]) -> nn.Module:
    """Build a loss module from a name, a dict or a list of dicts.

    Args:
        spec: a name from :data:`LOSSES` (``"dice"``); a dict ``{"name": "dice", "weight":
            1.0, **kwargs}`` where ``weight`` is the term weight in a compound and
            ``class_weight`` (list of floats, one per logit channel) goes to the loss's
            ``weight`` argument; or a list of names / dicts, which becomes a
            :class:`CompoundLoss` with one term per item (named after the loss, numbered when
            repeated).

    Returns:
        The loss module; a single spec with a term weight other than 1 is wrapped in a
        one-term :class:`CompoundLoss` so the weight is not lost.

    Raises:
        ValueError: on an unknown loss name or argument (with the closest known name), or an
            empty list.
        TypeError: if ``spec`` is neither a name, a dict nor a list.

    Example:
        >>> build_loss([{"name": "dice"}, {"name": "ce", "class_weight": [0.5, 1.0]}])
        CompoundLoss(...)
        >>> build_loss("dise")
        Traceback (most recent call last):
        ...
        ValueError: unknown loss 'dise' (did you mean 'dice'? known losses: ce, dice, dice_ce)
    """
    if isinstance(spec, (str, Mapping)):
        name, loss, term_weight = _build_one(spec)
        return loss if term_weight == 1.0 else CompoundLoss([(name, loss, term_weight)])
    if not isinstance(spec, Sequence):
        raise TypeError(f"loss spec must be a name, a dict or a list of them, got {type(spec).__name__}")
    if len(spec) == 0:
        raise ValueError("loss spec list is empty (expected at least one loss)")
    terms: list[tuple[str, nn.Module, float]] = []
    seen: dict[str, int] = {}
    for item in spec:
        name, loss, term_weight = _build_one(item)
        seen[name] = seen.get(name, 0) + 1
        terms.append((name if seen[name] == 1 else f"{name}_{seen[name]}", loss, term_weight))
    return CompoundLoss(terms)
