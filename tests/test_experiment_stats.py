"""Paired bootstrap intervals and the plateau test (medbalance.experiments.stats)."""

import numpy as np
import pytest

from medbalance.errors import ConfigError
from medbalance.experiments.stats import paired_difference, plateau


def _numpy_percentile_bootstrap(diff, *, n, confidence, seed):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, diff.size, size=(n, diff.size))
    means = diff[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    return np.quantile(means, alpha), np.quantile(means, 1 - alpha)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_interval_matches_an_independent_numpy_bootstrap(seed):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.5, 0.9, size=40)
    method = base + rng.normal(0.01, 0.03, size=40)
    d = paired_difference(method, base, n_resamples=20_000, seed=seed)
    low, high = _numpy_percentile_bootstrap(method - base, n=20_000, confidence=0.95, seed=seed + 100)
    assert d.mean == pytest.approx((method - base).mean())
    # two independent Monte-Carlo estimates of the same quantiles
    assert d.low == pytest.approx(low, abs=2e-3) and d.high == pytest.approx(high, abs=2e-3)
    assert d.n_cases == 40 and d.n_seeds == 1


def test_seeds_are_averaged_per_case_before_resampling():
    rng = np.random.default_rng(3)
    method = rng.uniform(size=(3, 12))
    base = rng.uniform(size=(2, 12))
    d = paired_difference(method, base, n_resamples=1000)
    assert d.mean == pytest.approx(method.mean(0).mean() - base.mean(0).mean())
    assert d.n_seeds == 3 and d.n_cases == 12


def test_verdicts():
    base = np.linspace(0.6, 0.8, 30)
    noise = np.random.default_rng(0).normal(0, 0.005, 30)
    assert paired_difference(base + 0.05 + noise, base, n_resamples=2000).holds is True
    assert paired_difference(base - 0.05 + noise, base, n_resamples=2000).holds is False
    assert paired_difference(base + noise, base, n_resamples=2000).holds is None
    same = paired_difference(base, base)
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0) and same.holds is None
    assert paired_difference(base + 0.01, base).text() == "+0.010 [+0.010, +0.010]"


@pytest.mark.parametrize(
    "method, baseline, kwargs, match",
    [
        ([0.1, 0.2], [0.1, 0.2, 0.3], {}, "same cases"),
        ([0.1, float("nan")], [0.1, 0.2], {}, "not finite"),
        ([[[0.1]]], [0.1], {}, "shape"),
        ([0.1], [0.2], {"confidence": 1.5}, "confidence"),
    ],
)
def test_bad_input_is_one_line(method, baseline, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        paired_difference(method, baseline, **kwargs)


def test_plateau():
    assert plateau([0.1, 0.5, 0.7, 0.8]) == (False, pytest.approx(0.1))
    flat, gain = plateau([0.5, 0.7, 0.78, 0.80, 0.801, 0.802, 0.80, 0.803])
    assert flat and gain == pytest.approx(0.001)
    assert plateau([0.5, 0.6, 0.7, 0.8, 0.81, 0.83], fraction=0.5)[0] is False
    with pytest.raises(ConfigError, match="more than"):
        plateau([0.5])
