"""The research question's statistics for one run: does the cost to correct a mistake track
universal difficulty, and does it say more than the cheap scores at the pretrained weights?

Censoring: an example never corrected within max_steps has no observed cost, only a lower bound.
- `rho_<score>` and its CI use corrected examples only (costs observed; the baselines on the same
  examples, so the comparison is like for like).
- `rho_<cost>_censored_worst` uses every corrected and never-corrected example, the latter tied at
  the worst cost: exact for steps (they needed more than max_steps), an assumption for summed loss.
- `frac_never_corrected` says how much was censored; medians and IQRs are over corrected examples.

Label noise: on ImageNet validation images, every statistic is also given over the *clean*
mistakes (the label is among the image's ReaL labels and the prediction is not; suffix `_clean`)
and over the *flagged* rest (`_flagged`).

Baselines, oriented so that larger means harder: initial loss as it is, the margin negated. The
gradient norm's direction is not given beforehand, so it is compared by absolute rho.
`delta_<baseline>` = rho(cost, rank) - rho(baseline, rank), with a paired bootstrap CI (both
terms on the same resampled examples); the cost says more than a baseline when the CI lies above 0.
`partial_rho_<cost>_given_initial_loss`: rho of cost and rank, the initial loss held fixed.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from sweep.outputs import BASELINES, COSTS, EPSILON_COSTS, MEASURED, RANK, SCORES
from sweep.stats.estimates import Estimate, partial_rho, rho, rho_difference, spearman
from sweep.training.stopping import Status

SUBSETS = {"": "all corrected", "_clean": "clean mistakes", "_flagged": "flagged (label noise)"}
# +1: larger means harder; -1: larger means easier; None: direction not given (absolute rho compared)
ORIENTATION = {"initial_loss": 1, "initial_margin": -1, "initial_grad_norm": None}


def primary_cost(rows: pd.DataFrame) -> str | None:
    """The loss to correct where a run has it: our `loss_sum`, else the original scripts' costs."""
    return next((c for c in COSTS if c in rows), None)


def lower_bound(rows: pd.DataFrame, cost: str) -> pd.Series | None:
    """What a never-corrected example's `cost` is known to exceed (it is censored there): the summed
    loss of the updates taken, for `loss_sum` and for `total_loss_to_correct`; the updates taken, for
    `steps_to_correct`. None where the rows record no bound (the original scripts' outputs)."""
    column = {"loss_sum": "loss_sum", "total_loss_to_correct": "loss_sum", "steps_to_correct": "updates"}[cost]
    return rows[column] if column in rows else None


def flag(column: pd.Series) -> pd.Series:
    """A True/False column as read back from CSV (empty cells: unknown)."""
    return column.map({True: True, False: False, "True": True, "False": False})


def subsets(corrected: pd.DataFrame) -> dict[str, tuple[pd.DataFrame, str]]:
    """suffix -> (the corrected examples of the subset, why it is empty)."""
    out = {"": (corrected, "")}
    label_in = flag(corrected.get("label_in_real", pd.Series(index=corrected.index, dtype=object)))
    prediction_in = flag(corrected.get("prediction_in_real", pd.Series(index=corrected.index, dtype=object)))
    known = label_in.notna() & prediction_in.notna()
    if not known.any():
        reason = ("no ReaL labels (not ImageNet validation images)" if not label_in.notna().any() else
                  "no initial prediction recorded, so clean and flagged mistakes cannot be told apart")
        return {**out, "_clean": (corrected.iloc[:0], reason), "_flagged": (corrected.iloc[:0], reason)}
    clean = known & label_in.eq(True) & prediction_in.eq(False)
    out["_clean"] = (corrected[clean], "no clean mistake corrected")
    out["_flagged"] = (corrected[known & ~clean], "no flagged mistake corrected")
    return out


def run_statistics(rows: pd.DataFrame) -> tuple[dict, dict]:
    """(statistics, reasons): one flat row of runs.csv, and why each statistic that is NaN is not computable."""
    status = rows["status"] if "status" in rows else pd.Series(dtype=str)
    corrected = rows[status == Status.CORRECT]
    values: dict = {"n_examples": len(rows), **{f"n_{s}": int((status == s).sum()) for s in Status}}
    measured = values["n_correct"] + values["n_never_correct"]
    values["frac_never_corrected"] = values["n_never_correct"] / measured if measured else math.nan
    for cost in COSTS:
        if cost in rows:
            q1, median, q3 = (corrected[cost].quantile(q) if len(corrected) else math.nan for q in (0.25, 0.5, 0.75))
            values.update({f"median_{cost}": median, f"iqr_{cost}": q3 - q1})
    estimates: dict[str, Estimate] = {}
    cost = values["cost"] = primary_cost(rows)
    for suffix, (subset, empty) in subsets(corrected).items():
        values[f"n_corrected{suffix}"] = len(subset)
        for score in SCORES:
            if score in rows:
                pair = subset[[score, RANK]].dropna()
                estimates[f"rho_{score}{suffix}"] = rho(pair[score], pair[RANK]) if len(subset) else \
                    Estimate.not_computable(empty)
        if cost is None:
            continue
        for baseline in BASELINES:
            if baseline in rows:
                estimates[f"delta_{baseline}{suffix}"] = _delta(subset, cost, baseline, empty)
        if "initial_loss" in rows:
            data = subset[[cost, RANK, "initial_loss"]].dropna()
            estimates[f"partial_rho_{cost}_given_initial_loss{suffix}"] = \
                partial_rho(data[cost], data[RANK],
                            data["initial_loss"]) if len(subset) else Estimate.not_computable(empty)
    reached = rows[status == Status.REACHED_EPSILON]
    for epsilon_cost in EPSILON_COSTS:
        if epsilon_cost in rows:
            pair = reached[[epsilon_cost, RANK]].dropna()
            estimates[f"rho_{epsilon_cost}"] = rho(pair[epsilon_cost], pair[RANK])
    measured_rows = rows[status.isin(MEASURED)]
    for censored_cost in COSTS:
        if censored_cost in rows:
            worst = measured_rows[censored_cost].where(measured_rows["status"] == Status.CORRECT, np.inf)
            values[f"rho_{censored_cost}_censored_worst"] = spearman(worst, measured_rows[RANK])
    for name, estimate in estimates.items():
        values.update(estimate.columns(name))
    reasons = {name: e.reason for name, e in estimates.items() if e.reason}
    return values, reasons


def _delta(subset: pd.DataFrame, cost: str, baseline: str, empty: str) -> Estimate:
    if not len(subset):
        return Estimate.not_computable(empty)
    data = subset[[cost, baseline, RANK]].dropna()
    orientation = ORIENTATION[baseline]
    oriented = data[baseline] * (orientation or 1)
    return rho_difference(data[cost], oriented, data[RANK], absolute=orientation is None)


def verdict(values: dict, cost: str) -> str:
    """One sentence: does the cost say more than each baseline? It follows from the Δ CIs alone."""
    parts = []
    for baseline in BASELINES:
        name = f"delta_{baseline}"
        if name not in values:
            continue
        value, low, high = values[name], values[f"{name}_ci_low"], values[f"{name}_ci_high"]
        label = baseline.replace("_", " ")
        if ORIENTATION[baseline] is None:
            label = f"|{label}| (by absolute rho: its direction is not given beforehand)"
        if not (math.isfinite(value) and math.isfinite(low)):
            parts.append(f"cannot be compared with {label} (not computable)")
        elif low > 0:
            parts.append(f"says more than {label} (Δ = {value:+.2f}, 95% CI [{low:+.2f}, {high:+.2f}] above 0)")
        elif high < 0:
            parts.append(f"says less than {label} (Δ = {value:+.2f}, 95% CI [{low:+.2f}, {high:+.2f}] below 0)")
        else:
            parts.append(f"cannot be told apart from {label} (Δ = {value:+.2f}, 95% CI [{low:+.2f}, {high:+.2f}] "
                         f"includes 0)")
    if not parts:
        return f"No baseline to compare {cost} with (the rows hold no initial loss, margin or gradient norm)."
    return f"Against universal difficulty rank, {cost} " + "; ".join(parts) + "."
