"""The bootstrap's ranking shortcut against scipy, a bootstrap CI against resampling by hand, Kendall's W."""
import math

import numpy as np
import pytest
from scipy import stats

import sweep.stats.estimates as estimates
from sweep.stats.agreement import concordance_w
from sweep.stats.estimates import (
    CONFIDENCE,
    RESAMPLES,
    ResampleRanking,
    ResampleRanks,
    partial_rho,
    rho,
    rho_difference,
)


@pytest.mark.parametrize("seed", range(6))
def test_resample_ranks_are_scipys_average_ranks(seed):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(5, 200)), int(rng.integers(1, 4))
    data = rng.integers(0, int(rng.integers(2, 30)), size=(k, n)).astype(float)  # many ties, more in resamples
    if seed % 2:
        data += rng.random((k, n))
    if seed % 3 == 0:
        data[0, rng.integers(0, n)] = np.nan  # a resample drawing it has no ranks for that column
    index = rng.integers(0, n, size=(25, n))
    expected = stats.rankdata(data[:, index].transpose(1, 0, 2), axis=-1)
    assert np.array_equal(ResampleRanking(data).ranks(index), expected, equal_nan=True)


# n=900: three columns draw their resamples in two chunks, two columns in one, so they share none
@pytest.mark.parametrize("n, columns_ranked", [(40, 3), (900, 3 + 2 * 3)])
def test_ranks_kept_across_estimates_change_no_estimate(monkeypatch, n, columns_ranked):
    rng = np.random.default_rng(n)
    cost, baseline, rank = rng.gamma(2, size=n).round(1), rng.random(n), rng.permutation(n).astype(float)

    def all_estimates():
        return [rho(cost, rank), rho(baseline, rank), rho_difference(cost, baseline, rank),
                rho_difference(cost, baseline, rank, absolute=True), partial_rho(cost, rank, baseline), rho(cost, rank)]
    monkeypatch.setattr(estimates, "_resample_ranks", ResampleRanks(limit=0))  # nothing kept: each ranked anew
    anew = all_estimates()
    kept = ResampleRanks()
    monkeypatch.setattr(estimates, "_resample_ranks", kept)
    assert all_estimates() == anew  # to the bit
    assert len(kept.kept) == columns_ranked  # cost, baseline and rank once per way of drawing the resamples
    small = ResampleRanks(limit=RESAMPLES * n * 8)  # room for one column's ranks
    for column in (cost, baseline, rank):
        small(column, (0, n, RESAMPLES, 0), rng.integers(0, n, size=(RESAMPLES, n)))
    assert len(small.kept) == 1 and small.size <= small.limit


def test_rho_ci_is_the_percentile_interval_of_resampled_spearman():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 12, 60).astype(float)
    y = x + rng.normal(0, 4, 60).round()
    estimate = rho(x, y, seed=7)
    assert estimate.value == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    index = np.random.default_rng(7).integers(0, 60, size=(RESAMPLES, 60))  # the draws rho makes for seed 7
    by_hand = [stats.spearmanr(x[i], y[i]).statistic for i in index]
    low, high = np.quantile(by_hand, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    assert (estimate.low, estimate.high) == pytest.approx((low, high), abs=1e-12)
    assert estimate.low < estimate.value < estimate.high


def test_kendall_w_is_one_plus_rho_over_two_for_two_models_and_needs_variation():
    rng = np.random.default_rng(3)
    a = rng.normal(size=30)
    b = a + rng.normal(size=30)
    w = concordance_w(np.vstack([a, b]))
    assert w.value == pytest.approx((1 + stats.spearmanr(a, b).statistic) / 2)
    assert w.low <= w.value <= w.high
    flat = concordance_w(np.vstack([a, b, np.zeros(30)]), models=["lite0", "lite1", "lite2"])
    assert math.isnan(flat.value) and flat.reason == "no variation in lite2"


def test_agreement_in_resamples_is_kendall_w_and_the_mean_pairwise_rho():
    """W (tie-corrected, +inf ranked above every value) and the mean Spearman rho over pairs, in each
    resample, against ranks made one resample at a time (scipy's rankdata) and numpy's correlations."""
    from scipy.stats import rankdata

    from sweep.stats.agreement import agreement_in_resamples, kendall_w, tie_sums
    rng = np.random.default_rng(3)
    m, n = 6, 30
    scores = rng.normal(size=(m, n)).round(1)  # ties within models
    scores[1, :4] = np.inf  # never corrected: above every corrected cost, tied among themselves
    index = rng.integers(0, n, size=(12, n))
    w, mean_rho = agreement_in_resamples(scores, index)
    for b, rows in enumerate(index):
        ranks = np.stack([rankdata(scores[i, rows]) for i in range(m)])
        assert w[b] == pytest.approx(kendall_w(ranks, tie_sums(ranks)), rel=1e-12)
        assert mean_rho[b] == pytest.approx(np.corrcoef(ranks)[np.triu_indices(m, 1)].mean(), abs=1e-6)
    same = np.tile(rng.normal(size=n), (m, 1))  # every model the same order
    assert agreement_in_resamples(same, np.arange(n)[None])[0][0] == pytest.approx(1.0)
    assert agreement_in_resamples(same, np.arange(n)[None])[1][0] == pytest.approx(1.0)
