"""Statistics for method comparisons: paired bootstrap intervals and a plateau test.

A claim such as "dual-path beats U-Net" is decided on the *same* test cases: each case's score
under the method minus its score under the baseline (averaged over the seeds each was trained
with), and a percentile bootstrap over the cases for the 95% interval of the mean difference.
Cases are the unit that is resampled because the test split is the sample of the population a
reader cares about; seeds only average out the training noise of each arm. The resampling is
:func:`scipy.stats.bootstrap` (a well-kept implementation, not ours).

Example:
    >>> import numpy as np
    >>> base = np.array([0.70, 0.72, 0.68, 0.75, 0.71])
    >>> method = base + np.array([0.03, 0.01, 0.02, 0.04, 0.00])
    >>> d = paired_difference(method, base, n_resamples=2000, seed=0)
    >>> round(d.mean, 3), d.low > 0, d.n_cases
    (0.02, True, 5)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medbalance.errors import ConfigError

__all__ = ["PairedDifference", "paired_difference", "plateau"]


@dataclass(frozen=True)
class PairedDifference:
    """Mean of ``method - baseline`` over the cases, its bootstrap interval, and the counts.

    ``holds`` is True when the whole interval is above 0, False when it is below 0 and None
    when it contains 0 (no difference shown at this confidence).
    """

    mean: float
    low: float
    high: float
    confidence: float
    n_cases: int
    n_seeds: int

    @property
    def holds(self) -> bool | None:
        if self.low > 0:
            return True
        if self.high < 0:
            return False
        return None

    def text(self, digits: int = 3) -> str:
        """``+0.012 [+0.004, +0.020]``: the mean difference and its interval."""
        return f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"

    def to_dict(self) -> dict:
        return {
            "mean": self.mean,
            "low": self.low,
            "high": self.high,
            "confidence": self.confidence,
            "n_cases": self.n_cases,
            "n_seeds": self.n_seeds,
            "holds": self.holds,
        }


def _per_case(scores: np.ndarray | Sequence, name: str) -> np.ndarray:
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or array.shape[1] == 0:
        raise ConfigError(f"{name}: expected scores of shape (cases,) or (seeds, cases), found shape {array.shape}")
    if not np.isfinite(array).all():
        raise ConfigError(f"{name}: {int((~np.isfinite(array)).sum())} scores are not finite (NaN or inf)")
    return array


def paired_difference(
    method: np.ndarray | Sequence,
    baseline: np.ndarray | Sequence,
    *,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> PairedDifference:
    """Paired percentile-bootstrap interval of the mean per-case difference ``method - baseline``.

    Args:
        method: per-case scores, shape ``(cases,)`` or ``(seeds, cases)``; case ``j`` of every row
            is the same test case as case ``j`` of ``baseline``.
        baseline: the same for the baseline (its number of seeds may differ).
        confidence: two-sided confidence level of the interval.
        n_resamples: bootstrap resamples of the cases.
        seed: seed of the resampling, so a page is reproducible.

    Returns:
        A :class:`PairedDifference`; with a single case the interval is the point itself.

    Raises:
        ConfigError: shapes that do not pair, non-finite scores or a confidence outside (0, 1).
    """
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence: expected a value in (0, 1), found {confidence}")
    a = _per_case(method, "method")
    b = _per_case(baseline, "baseline")
    if a.shape[1] != b.shape[1]:
        raise ConfigError(f"method and baseline must score the same cases, found {a.shape[1]} and {b.shape[1]} cases")
    diff = a.mean(axis=0) - b.mean(axis=0)
    mean = float(diff.mean())
    if diff.size == 1 or np.ptp(diff) == 0:
        low = high = mean
    else:
        from scipy.stats import bootstrap

        result = bootstrap(
            (diff,),
            np.mean,
            confidence_level=confidence,
            n_resamples=n_resamples,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return PairedDifference(mean, low, high, confidence, int(diff.size), int(max(a.shape[0], b.shape[0])))


def plateau(values: Sequence[float], *, fraction: float = 0.25, tolerance: float = 0.005) -> tuple[bool, float]:
    """Whether a validation curve has plateaued: the last ``fraction`` of its epochs improved its
    best score by less than ``tolerance``.

    Args:
        values: validation score per epoch (higher is better).
        fraction: share of the final epochs compared with the ones before.
        tolerance: largest gain of the final epochs that still counts as a plateau.

    Returns:
        ``(plateaued, gain)`` where ``gain`` is the best of the final epochs minus the best before them.

    Example:
        >>> flat, gain = plateau([0.5, 0.7, 0.78, 0.80, 0.801, 0.802, 0.80, 0.803])
        >>> flat, round(gain, 4)
        (True, 0.001)
    """
    scores = [float(v) for v in values]
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"fraction: expected a value in (0, 1), found {fraction}")
    tail = max(1, round(len(scores) * fraction))
    if len(scores) <= tail:
        raise ConfigError(f"plateau needs more than {tail} epochs of validation scores, found {len(scores)}")
    gain = max(scores[-tail:]) - max(scores[:-tail])
    return gain < tolerance, gain
