"""Rank statistics with bootstrap confidence intervals, and what to say when there are too few data.

Every estimate carries its n, a 95% percentile-bootstrap CI over resamples of examples, and, when
it cannot be computed (too few examples, no variation), the reason instead of a number.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

MIN_EXAMPLES = 5            # fewer: no rho, no CI
RESAMPLES = 2000            # bootstrap resamples of examples
CONFIDENCE = 0.95
MIN_DEFINED_RESAMPLES = 0.9  # a CI needs the statistic defined on this share of resamples


@dataclass(frozen=True)
class Estimate:
    """A statistic with its 95% bootstrap CI and n; `reason` says why `value` is NaN."""
    value: float
    low: float = math.nan
    high: float = math.nan
    n: int = 0
    reason: str = ""

    @classmethod
    def not_computable(cls, reason: str, n: int = 0) -> Estimate:
        return cls(math.nan, n=n, reason=reason)

    @property
    def computable(self) -> bool:
        return math.isfinite(self.value)

    def columns(self, name: str) -> dict:
        return {name: self.value, f"{name}_ci_low": self.low, f"{name}_ci_high": self.high, f"{name}_n": self.n}

    def text(self) -> str:
        if not self.computable:
            return f"n/c ({self.reason})"
        return f"{with_ci(self.value, self.low, self.high, '{:+.2f}', ' [CI n/c]')} n={self.n}"


def with_ci(value: float, low: float, high: float, number: str = "{:.2f}", no_ci: str = "") -> str:
    """`value [low, high]`, each in `number`'s format (`0.35 [0.21, 0.47]`); `no_ci` in place of the
    interval where it is not finite. Every estimate the tool prints goes through here."""
    finite = low is not None and high is not None and math.isfinite(low) and math.isfinite(high)
    return number.format(value) + (f" {interval(low, high, number)}" if finite else no_ci)


def interval(low: float, high: float, number: str = "{:.2f}") -> str:
    """A CI as `[low, high]`."""
    return f"[{number.format(low)}, {number.format(high)}]"


def from_resamples(value: float, samples: np.ndarray, n: int) -> Estimate:
    """`value` with the percentile CI of its statistic on bootstrap resamples (NaN where undefined on
    one); no CI, with the reason, where it is undefined on more than 1 - MIN_DEFINED_RESAMPLES of them."""
    defined = samples[np.isfinite(samples)]
    if len(defined) < MIN_DEFINED_RESAMPLES * len(samples):
        return Estimate(value, n=n, reason=f"undefined on {len(samples) - len(defined)} of {len(samples)} "
                                           f"bootstrap resamples")
    alpha = (1 - CONFIDENCE) / 2
    low, high = np.quantile(defined, [alpha, 1 - alpha])
    return Estimate(value, float(low), float(high), n)


def spearman(x, y) -> float:
    """Spearman rho, NaN when not computable."""
    return float(stats.spearmanr(x, y).statistic) if why_not(x, y) is None else math.nan


def why_not(*columns) -> str | None:
    """Why a rank correlation of these paired columns cannot be computed, or None."""
    n = len(columns[0])
    if n < MIN_EXAMPLES:
        return f"n={n} < {MIN_EXAMPLES}"
    for column in columns:
        missing = int(pd.Series(column).isna().sum())
        if missing:
            return f"{missing} missing value{'s' * (missing > 1)} in {getattr(column, 'name', None) or 'a column'}"
        if pd.Series(column).nunique() < 2:
            return f"no variation in {getattr(column, 'name', None) or 'a column'}"
    return None


def rho(x, y, seed: int = 0) -> Estimate:
    """Spearman rho of x and y with its bootstrap CI."""
    return _estimate([x, y], lambda r: r[0, 1], seed)


def mean(x, seed: int = 0) -> Estimate:
    """The mean of x with its percentile bootstrap CI over resamples of the values."""
    values = pd.Series(x, dtype=float).dropna().to_numpy()
    n = len(values)
    if n < MIN_EXAMPLES:
        return Estimate.not_computable(f"n={n} < {MIN_EXAMPLES}", n)
    rng = np.random.default_rng(seed)
    samples = values[rng.integers(0, n, size=(RESAMPLES, n))].mean(axis=1)
    return from_resamples(float(values.mean()), samples, n)


def rho_difference(cost, baseline, rank, absolute: bool = False, seed: int = 0) -> Estimate:
    """rho(cost, rank) - rho(baseline, rank) (of absolute values with `absolute`), with a paired
    bootstrap CI: both terms on the same resampled examples."""
    if absolute:
        return _estimate([cost, baseline, rank], lambda r: np.abs(r[0, 2]) - np.abs(r[1, 2]), seed)
    return _estimate([cost, baseline, rank], lambda r: r[0, 2] - r[1, 2], seed)


def partial_rho(x, y, z, seed: int = 0) -> Estimate:
    """Spearman rho of x and y given z (partial correlation of the ranks), with its bootstrap CI."""
    def partial(r):
        with np.errstate(invalid="ignore", divide="ignore"):
            return (r[0, 1] - r[0, 2] * r[1, 2]) / np.sqrt((1 - r[0, 2] ** 2) * (1 - r[1, 2] ** 2))
    return _estimate([x, y, z], partial, seed)


def _estimate(columns: list, statistic: Callable[[np.ndarray], np.ndarray], seed: int) -> Estimate:
    """`statistic` of the Spearman correlation matrix r[i, j] of `columns`, on the data and on
    bootstrap resamples of rows (vectorised over resamples)."""
    columns = [pd.Series(c).reset_index(drop=True) for c in columns]
    n = len(columns[0])
    reason = why_not(*columns)
    if reason:
        return Estimate.not_computable(reason, n)
    data = np.stack([c.to_numpy(dtype=float) for c in columns])  # (k, n)
    ranking = ResampleRanking(data)
    value = float(statistic(_spearman_matrix(ranking.ranks(np.arange(n)[None]))[0]))
    if not math.isfinite(value):
        return Estimate.not_computable("undefined (a perfect correlation between the controls)", n)
    rng = np.random.default_rng(seed)
    samples = []
    chunk = min(RESAMPLES, max(1, 4_000_000 // (n * len(columns))))
    for start in range(0, RESAMPLES, chunk):
        index = rng.integers(0, n, size=(min(chunk, RESAMPLES - start), n))
        draw = (seed, n, chunk, start)  # what fixes `index`
        ranks = np.stack([_resample_ranks(column, draw, index) for column in data], axis=1)
        samples.append(statistic(np.moveaxis(_spearman_matrix(ranks), 0, -1)))
    return from_resamples(value, np.concatenate(samples), n)


class ResampleRanking:
    """Ranks of columns within resamples of their rows, as `scipy.stats.rankdata` gives them
    (average ranks for ties, NaN for a resample of a column that draws a NaN), without sorting
    each resample: the values' order is found once, then a resample's ranks follow from how often
    it draws each distinct value. Bootstrap CIs rank thousands of resamples; this is what keeps
    a job's summary fast."""

    def __init__(self, data: np.ndarray):
        self.codes = np.stack([np.unique(column, return_inverse=True)[1] for column in data])  # (k, n) value order
        self.levels = int(self.codes.max()) + 1
        self.nan = np.isnan(data)

    def ranks(self, index: np.ndarray) -> np.ndarray:
        """(B, n) row indices, one resample per row -> (B, k, n) ranks of each column in each resample."""
        k, (b, n) = len(self.codes), index.shape
        drawn = self.codes[:, index].reshape(k * b, n)
        counts = np.bincount((drawn + self.levels * np.arange(k * b)[:, None]).ravel(),
                             minlength=k * b * self.levels).reshape(k * b, self.levels)
        average = np.cumsum(counts, axis=-1) - (counts - 1) / 2  # the mean of the ranks a value's ties share
        ranks = np.take_along_axis(average, drawn, axis=-1)
        ranks[self.nan[:, index].reshape(k * b, n).any(axis=-1)] = np.nan
        return ranks.reshape(k, b, n).transpose(1, 0, 2)


class ResampleRanks:
    """Each column's ranks within bootstrap resamples, kept for the next estimate that ranks the same
    values on the same resamples: a run's statistics rank the same few columns (the rank, each cost,
    each baseline) on the same resamples (same seed and n) in dozens of estimates. A column's ranks
    are the same alone as beside others, so every estimate is unchanged to the bit. The least
    recently used are dropped beyond `limit` bytes."""

    def __init__(self, limit: int = 256 * 2 ** 20):
        self.limit, self.size, self.kept = limit, 0, OrderedDict()

    def __call__(self, column: np.ndarray, draw: tuple, index: np.ndarray) -> np.ndarray:
        """(B, n) ranks of `column` in the resamples `index`, which `draw` identifies."""
        key = (column.tobytes(), draw)
        if key in self.kept:
            self.kept.move_to_end(key)
            return self.kept[key]
        ranks = ResampleRanking(column[None]).ranks(index)[:, 0]
        self.kept[key] = ranks
        self.size += ranks.nbytes
        while self.size > self.limit and len(self.kept) > 1:
            self.size -= self.kept.popitem(last=False)[1].nbytes
        return ranks


_resample_ranks = ResampleRanks()


def _spearman_matrix(ranks: np.ndarray) -> np.ndarray:
    """(B, k, n) ranks of k columns -> (B, k, k) Spearman correlations (NaN where a column is constant)."""
    centred = ranks - ranks.mean(axis=-1, keepdims=True)
    norms = np.sqrt((centred ** 2).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.einsum("bin,bjn->bij", centred, centred) / (norms[:, :, None] * norms[:, None, :])


def censored_sign_test(a: np.ndarray, a_censored: np.ndarray, b: np.ndarray, b_censored: np.ndarray) -> dict:
    """Paired comparison of two runs' costs on the same examples when some are censored (never
    corrected: the recorded cost is a lower bound; pass +inf where none is recorded).

    Gehan's scoring, example by example: a is costlier when both costs are observed and a's is
    larger, or a is censored with a lower bound at or above b's observed cost (and likewise for b).
    Two censored costs, or a lower bound below the other's observed cost, are undetermined. Then a
    two-sided sign test (binomial, p = 1/2) over the determined examples.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    a_censored, b_censored = np.asarray(a_censored, bool), np.asarray(b_censored, bool)
    a_costlier = ~b_censored & ((a > b) | (a_censored & (a >= b)))
    b_costlier = ~a_censored & ((b > a) | (b_censored & (b >= a)))
    k, m = int(a_costlier.sum()), int(b_costlier.sum())
    p = float(stats.binomtest(k, k + m, 0.5).pvalue) if k + m else math.nan
    return {"n_a_costlier": k, "n_b_costlier": m, "n_tied_or_undetermined": len(a) - k - m, "sign_test_p": p}
