"""Do several models agree on which mistakes are costly? Kendall's coefficient of concordance W of
m models' scores over the same n examples, with a bootstrap CI over examples.

W = 12 S / (m^2 (n^3 - n) - m T), S the sum of squared deviations of the examples' rank sums from
their mean, T the tie correction sum over models of sum(t^3 - t) over groups of t tied values. W is
1 when the models order the examples alike and near 0 when they are unrelated; for two models,
W = (1 + rho) / 2 in the absence of ties. The average Spearman rho over pairs of models is
(m W - 1) / (m - 1).
"""
from __future__ import annotations

import math

import numpy as np

from sweep.stats.estimates import (
    MIN_EXAMPLES,
    RESAMPLES,
    Estimate,
    ResampleRanking,
    from_resamples,
)


def kendall_w(ranks: np.ndarray, ties: np.ndarray) -> np.ndarray:
    """W from average ranks (..., m, n) and each model's tie correction sum (..., m)."""
    m, n = ranks.shape[-2:]
    sums = ranks.sum(axis=-2)
    spread = ((sums - sums.mean(axis=-1, keepdims=True)) ** 2).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 12 * spread / (m ** 2 * (n ** 3 - n) - m * ties.sum(axis=-1))


def tie_sums(ranks: np.ndarray) -> np.ndarray:
    """sum(t^3 - t) over the groups of t equal values, per model: (..., m, n) -> (..., m)."""
    n = ranks.shape[-1]
    ordered = np.sort(ranks, axis=-1).reshape(-1, n)
    starts = np.ones(ordered.shape, bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    group = np.cumsum(starts, axis=1) - 1 + (np.arange(len(ordered)) * n)[:, None]  # a group id per row
    counts = np.bincount(group.ravel(), minlength=len(ordered) * n).astype(float)
    return (counts ** 3 - counts).reshape(len(ordered), n).sum(axis=1).reshape(ranks.shape[:-1])


def concordance_w(scores: np.ndarray, seed: int = 0, models: list[str] | None = None) -> Estimate:
    """Kendall's W of `scores` (m models x n examples, no NaN), with a percentile bootstrap CI over
    resamples of the examples (the same resamples for every model). A model whose scores do not
    vary orders nothing: W is not computable then (it would count that model as disagreeing)."""
    scores = np.asarray(scores, float)
    m, n = scores.shape
    if m < 2:
        return Estimate.not_computable(f"{m} model: agreement needs two or more", n)
    if n < MIN_EXAMPLES:
        return Estimate.not_computable(f"n={n} < {MIN_EXAMPLES}", n)
    names = models or [f"model {i + 1}" for i in range(m)]
    constant = [name for name, row in zip(names, scores, strict=True) if np.ptp(row) == 0]
    if constant:
        return Estimate.not_computable(f"no variation in {constant[0]}", n)
    ranking = ResampleRanking(scores)
    data = ranking.ranks(np.arange(n)[None])  # (1, m, n)
    value = float(kendall_w(data, tie_sums(data))[0])
    if not math.isfinite(value):
        return Estimate.not_computable("no variation", n)
    rng = np.random.default_rng(seed)
    ranks = ranking.ranks(rng.integers(0, n, size=(RESAMPLES, n)))
    return from_resamples(value, kendall_w(ranks, tie_sums(ranks)), n)


def agreement_in_resamples(scores: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kendall's W (tie-corrected) and the mean Spearman rho over pairs of models of `scores` (m models x
    n examples, no NaN; +inf ranks above every finite value) in each resample of `index` ((B, n) example
    indices), each (B,).

    A few passes over the m x B x n drawn values: each model's ranks in a resample follow from how often
    it draws each distinct value (average ranks for ties, as scipy's rankdata), the ties' correction sum
    from the same counts, and the mean pairwise rho from the sum over models of each model's centred
    ranks scaled to unit norm: (|sum|^2 - m) / (m (m - 1)), without the m x m matrix."""
    m, n = scores.shape
    b = len(index)
    codes = np.stack([np.unique(row, return_inverse=True)[1] for row in scores])  # (m, n): each value's order
    levels = int(codes.max()) + 1
    # one key per (model, resample, value): counts and ranks are both read through it
    keys = (codes + (np.arange(m) * b * levels)[:, None])[:, index]  # (m, B, n)
    keys += (np.arange(b) * levels)[None, :, None]
    counts = np.bincount(keys.ravel(), minlength=m * b * levels).reshape(m, b, levels)
    average = np.cumsum(counts, axis=-1, dtype=np.float32)
    half = counts.astype(np.float32)
    half *= 0.5
    average -= half
    average += 0.5  # a value's mean rank among its ties: its last rank - (ties - 1) / 2
    ranks = average.ravel()[keys]  # (m, B, n), float32
    sums = ranks.sum(axis=0, dtype=np.float64)  # (B, n)
    spread = ((sums - sums.mean(axis=-1, keepdims=True)) ** 2).sum(axis=-1)
    counts = counts.astype(np.float64)
    ties = np.einsum("ibv,ibv,ibv->b", counts, counts, counts) - m * n  # sum of t^3 - t; the t sum to n
    centre = (n + 1) / 2
    squares = np.einsum("ibv,ibv,ibv->ib", counts, average, average)  # (m, B): the sum of squared ranks
    with np.errstate(invalid="ignore", divide="ignore"):
        w = 12 * spread / (m ** 2 * (n ** 3 - n) - m * ties)
        inverse = 1 / np.sqrt(squares - n * centre ** 2)  # inf for a model whose values do not vary
        unit = np.einsum("ibj,ib->bj", ranks, inverse.astype(np.float32), dtype=np.float64) \
            - centre * inverse.sum(axis=0)[:, None]
        mean_rho = ((unit ** 2).sum(axis=-1) - m) / (m * (m - 1))
    return w, mean_rho
