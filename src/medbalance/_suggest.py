"""The one "did you mean" matcher: every unknown name (config key, loss, network, weight scheme,
experiment option) is matched against the known ones here, so a misspelling gets the same hint
wherever it is made."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["closest", "did_you_mean", "suggest"]


def closest(word: str, candidates: Iterable[str], *, cutoff: float = 0.6) -> str | None:
    """The known name a misspelt ``word`` most likely means, or ``None``.

    A near-identical name wins; then a name ``word`` extends (``'lr_rate'`` means ``'lr'``: the
    longest such) or abbreviates (``'exp_dec'``: the shortest completion); then the closest by
    edit similarity above ``cutoff``. Plain edit similarity alone would pick ``'strategy'`` for
    ``'lr_rate'``.

    Args:
        word: the unknown name.
        candidates: the known names.
        cutoff: the lowest :func:`difflib.get_close_matches` similarity of the last resort.

    Example:
        >>> closest("lr_rate", ["strategy", "lr", "epochs"])
        'lr'
        >>> closest("dise", ["dice", "focal"]), closest("xyz", ["dice"])
        ('dice', None)
    """
    known = [str(c) for c in candidates]
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.8)
    if close:
        return close[0]
    extended = [c for c in known if len(c) >= 2 and word.startswith(c)]
    if extended:
        return max(extended, key=len)
    completions = [c for c in known if word and c.startswith(word)]
    if completions:
        return min(completions, key=len)
    close = difflib.get_close_matches(word, known, n=1, cutoff=cutoff)
    return close[0] if close else None


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """``"did you mean 'x'? "`` for the :func:`closest` name, or ``""``: the start of a parenthesis
    that goes on to list the known names.

    Example:
        >>> f"unknown loss 'dise' ({did_you_mean('dise', ['ce', 'dice'])}known: ce, dice)"
        "unknown loss 'dise' (did you mean 'dice'? known: ce, dice)"
    """
    match = closest(word, candidates)
    return f"did you mean {match!r}? " if match else ""


def suggest(key: str, candidates: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"``, or ``" (expected one of: ...)"`` listing the known names when
    none is close: the tail of a configuration error.

    Example:
        >>> suggest("lr_rate", ["lr", "epochs"]), suggest("zzz", ["lr", "epochs"])
        (" (did you mean 'lr'?)", ' (expected one of: epochs, lr)')
    """
    known = [str(c) for c in candidates]
    match = closest(key, known, cutoff=0.5)
    return f" (did you mean '{match}'?)" if match else f" (expected one of: {', '.join(sorted(known))})"
