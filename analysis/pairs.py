"""Paired comparisons of runs that share their examples (runs that differ in one parameter).

Runs that share their whole selection are always compared; others when they share at least
`MIN_SHARED` examples (the overlap is reported either way). The test is censoring-aware: a sign
test with Gehan's scoring (sweep/stats/estimates.py), in which a never-corrected example (cost
censored at its lower bound: the summed loss of the updates taken for `loss_sum` and
`total_loss_to_correct`, the updates taken for `steps_to_correct`) counts as costlier than an
example corrected at a cost at or below that bound, and two never-corrected examples are
undetermined; where a run records no bound (the original scripts' outputs), the test is skipped
with the reason. Dropping never-corrected examples, as a Wilcoxon test
over the examples corrected in both would, drops the costliest ones when one run censors more.
"""
from __future__ import annotations

import math

import pandas as pd

from sweep.outputs import COSTS, MEASURED, Status
from sweep.stats.estimates import censored_sign_test, spearman
from sweep.stats.research import lower_bound

MIN_SHARED = 20


def paired_comparison(a: pd.DataFrame, b: pd.DataFrame) -> dict:
    """The overlap of two runs and, where they share enough examples, the censoring-aware sign test
    on the loss to correct and the rank correlation of their costs over the examples corrected in both."""
    same_selection = set(a["path"]) == set(b["path"])
    shared = a[a["status"].isin(MEASURED)].merge(b[b["status"].isin(MEASURED)], on="path", suffixes=("_a", "_b"))
    out = {"same_selection": same_selection, "n_shared": len(shared)}
    cost = next((c for c in COSTS if c in a and c in b), None)
    if cost is None:
        return {**out, "test": "skipped: no cost to correct recorded by both runs"}
    if len(shared) < MIN_SHARED and not same_selection:
        return {**out, "test": f"skipped: {len(shared)} shared examples < {MIN_SHARED}"}
    censored_a, censored_b = (shared[f"status_{s}"] == Status.NEVER_CORRECT for s in "ab")
    bounds = {}
    for side, rows in (("a", a), ("b", b)):
        bound = lower_bound(rows, cost)
        bounds[side] = None if bound is None else shared["path"].map(dict(zip(rows["path"], bound, strict=True)))
    if (censored_a.any() and bounds["a"] is None) or (censored_b.any() and bounds["b"] is None):
        return {**out, "cost": cost, "test": f"skipped: never-corrected examples record no lower bound of {cost}"}
    cost_a = shared[f"{cost}_a"].where(~censored_a, bounds["a"])
    cost_b = shared[f"{cost}_b"].where(~censored_b, bounds["b"])
    both = shared[~censored_a & ~censored_b]
    return {**out, "cost": cost, "test": "censored sign test", "n_corrected_in_both": len(both),
            f"median_{cost}_a": both[f"{cost}_a"].median() if len(both) else math.nan,
            f"median_{cost}_b": both[f"{cost}_b"].median() if len(both) else math.nan,
            **censored_sign_test(cost_a, censored_a, cost_b, censored_b),
            "rho_between_runs": spearman(both[f"{cost}_a"], both[f"{cost}_b"])}
