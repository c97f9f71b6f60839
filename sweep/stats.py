"""Rank statistics of scores against universal difficulty, shared by run summaries and the aggregate."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

BOOTSTRAP_RESAMPLES = 2000


def computable(x, y) -> bool:
    """Spearman rho needs at least 3 pairs and variation on both sides."""
    return len(x) >= 3 and pd.Series(x).nunique() > 1 and pd.Series(y).nunique() > 1


def spearman(x, y) -> float:
    """Spearman rho, NaN when not computable."""
    return float(stats.spearmanr(x, y).statistic) if computable(x, y) else math.nan


def spearman_test(x, y) -> dict:
    """{"rho", "p", "n"}; rho and p are None when not computable."""
    if not computable(x, y):
        return {"rho": None, "p": None, "n": len(x)}
    result = stats.spearmanr(x, y)
    return {"rho": float(result.statistic), "p": float(result.pvalue), "n": len(x)}


def spearman_ci(x, y, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap CI of Spearman rho over paired resamples of examples."""
    if len(x) < 5:
        return math.nan, math.nan
    result = stats.bootstrap((np.asarray(x), np.asarray(y)), lambda a, b: stats.spearmanr(a, b).statistic,
                             paired=True, vectorized=False, n_resamples=BOOTSTRAP_RESAMPLES, method="percentile",
                             rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def partial_spearman(x, y, z) -> float:
    """Spearman rho of x and y controlling for z (partial correlation of the ranks)."""
    r_xy, r_xz, r_yz = spearman(x, y), spearman(x, z), spearman(y, z)
    denominator = math.sqrt(max((1 - r_xz ** 2) * (1 - r_yz ** 2), 0.0))
    return (r_xy - r_xz * r_yz) / denominator if denominator > 0 else math.nan
