"""The one "did you mean" matcher (medbalance/_suggest.py) that config, losses, networks and experiments share."""

from __future__ import annotations

import difflib

import pytest

from medbalance._suggest import closest, did_you_mean, suggest
from medbalance.losses.weights import CLASS_WEIGHT_SCHEMES


@pytest.mark.parametrize(
    "word, candidates, expected",
    [
        ("dise", ["dice", "focal", "ce"], "dice"),  # a typo: edit similarity
        ("lr_rate", ["strategy", "lr", "epochs"], "lr"),  # extends a name; similarity alone says 'strategy'
        ("inverse_frequency", CLASS_WEIGHT_SCHEMES, "inverse"),  # extends two: the longest
        ("exp_dec", CLASS_WEIGHT_SCHEMES, "exp_decreasing"),  # abbreviates three: the shortest
        ("exp_decreasing_fg_no_bg", CLASS_WEIGHT_SCHEMES, "exp_decreasing_fg_nobg"),  # near-identical first
        ("zzz", ["dice", "focal"], None),
        ("", ["dice"], None),
    ],
)
def test_closest(word, candidates, expected):
    assert closest(word, candidates) == expected


def test_closest_falls_back_to_difflib_with_the_cutoff():
    # no prefix relation: the answer is difflib's at the given cutoff
    candidates = ["alphas", "epochs", "width"]
    for word in ("alpah", "epoks", "widht", "xyz"):
        for cutoff in (0.5, 0.6):
            expected = difflib.get_close_matches(word, candidates, n=1, cutoff=cutoff)
            assert closest(word, candidates, cutoff=cutoff) == (expected[0] if expected else None)


def test_the_two_message_forms():
    assert did_you_mean("dise", ["dice"]) == "did you mean 'dice'? "
    assert did_you_mean("zzz", ["dice"]) == ""
    assert suggest("n_trian", ["n_train", "size"]) == " (did you mean 'n_train'?)"
    assert suggest("zzz", ["size", "n_train"]) == " (expected one of: n_train, size)"
