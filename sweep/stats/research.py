"""The research question's statistics for one run: does the cost to correct a mistake track
universal difficulty, and does it say more than the cheap scores at the pretrained weights?

Two kinds, side by side:
- **Over corrected examples** (costs observed): `rho_<score>`, Spearman rho against rank with a
  95% bootstrap CI, for every cost and baseline (the baselines on the same examples, so the
  comparison is like for like); `delta_<cost>_vs_<baseline>` = rho(cost, rank) - rho(baseline,
  rank) with a paired bootstrap CI (both terms on the same resamples); and
  `partial_rho_<cost>_given_initial_loss`, rho of cost and rank with the initial loss held fixed.
- **Censoring-aware, over every measured example** (corrected, and never corrected with the cost
  censored at its lower bound: the summed loss of the updates taken, or for steps the updates
  taken): `concordance_<score>`, Harrell's C against rank (0.5: no association; above 0.5: harder
  examples cost more), with a bootstrap CI; `delta_concordance_<cost>_vs_<baseline>`, the paired
  difference of C; and `km_median_<cost>`, the Kaplan-Meier median with its CI
  (sweep/stats/censoring.py). Where a run censors examples, these are the figures to read: rho over
  corrected examples leaves out the costliest.

Baselines, oriented so that larger means harder: initial loss and EL2N (Paul et al. 2021: the norm
of softmax minus one-hot) as they are, the margin negated. The gradient norm's (GraNd's) direction
is not given beforehand, so it is compared by absolute rho (and by |C - 0.5|). A cost says more than
a baseline when the difference's CI lies above 0.

Label noise: on ImageNet validation images every statistic is also given over the *clean* mistakes
(the label is among the image's ReaL labels and the prediction is not; suffix `_clean`) and over
the *flagged* rest (`_flagged`).

Drawdown (runs with a probe): `mean_drawdown` and `mean_probe_loss_increase` over every measured
example with bootstrap CIs; their C and rho against rank; `rho_<damage>_with_loss_sum`, the
association with the loss to correct; `delta_<damage>_vs_loss_sum` and
`delta_concordance_<damage>_vs_loss_sum`, paired differences: above 0, the damage says more about
difficulty than the loss to correct.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from sweep.outputs import BASELINES, COSTS, DAMAGE, EPSILON_COSTS, MEASURED, RANK, SCORES, Status
from sweep.stats.censoring import concordance_estimates, km_median
from sweep.stats.estimates import Estimate, interval, mean, partial_rho, rho, rho_difference, with_ci

# Which statistics run_statistics computes, and how: a run's summary records it, and the aggregate takes
# the summary's statistics instead of recomputing them only when it matches. Bump it with any change.
STATISTICS_VERSION = 2  # 2: n_correct_at_step_0; reasons name missing values
SUBSETS = {"": "all", "_clean": "clean mistakes", "_flagged": "flagged (label noise)"}
# +1: larger means harder; -1: larger means easier; None: direction not given (absolute values compared)
ORIENTATION = {"initial_loss": 1, "initial_margin": -1, "initial_grad_norm": None, "initial_el2n": 1}


def primary_cost(rows: pd.DataFrame) -> str | None:
    """The loss to correct where a run has it: our `loss_sum`, else the original scripts' costs."""
    return next((c for c in COSTS if c in rows), None)


def lower_bound(rows: pd.DataFrame, cost: str) -> pd.Series | None:
    """What a never-corrected example's `cost` is known to exceed (it is censored there): the summed
    loss of the updates taken, for `loss_sum` and for `total_loss_to_correct`; the updates taken, for
    `steps_to_correct`. None where the rows record no bound (the original scripts' outputs)."""
    column = {"loss_sum": "loss_sum", "total_loss_to_correct": "loss_sum", "steps_to_correct": "updates"}[cost]
    return rows[column] if column in rows else None


def censored_cost(rows: pd.DataFrame, cost: str) -> tuple[pd.Series, pd.Series] | None:
    """(the cost of each measured row, observed): the observed cost where corrected, the lower bound
    where never corrected; None where a censored row has no bound."""
    observed = rows["status"] == Status.CORRECT
    bound = lower_bound(rows, cost)
    if bound is None and not observed.all():
        return None
    values = rows[cost] if bound is None else rows[cost].where(observed, bound)
    return values.astype(float), observed


def flag(column: pd.Series) -> pd.Series:
    """A True/False column as read back from CSV (empty cells: unknown)."""
    return column.map({True: True, False: False, "True": True, "False": False})


def subsets(rows: pd.DataFrame) -> dict[str, tuple[pd.DataFrame, str]]:
    """suffix -> (the rows of the subset, why it is empty): all rows, and where ReaL labels are known,
    the clean mistakes and the flagged rest."""
    out = {"": (rows, "")}
    label_in = flag(rows.get("label_in_real", pd.Series(index=rows.index, dtype=object)))
    prediction_in = flag(rows.get("prediction_in_real", pd.Series(index=rows.index, dtype=object)))
    known = label_in.notna() & prediction_in.notna()
    if not known.any():
        reason = ("no ReaL labels (not ImageNet validation images)" if not label_in.notna().any() else
                  "no initial prediction recorded, so clean and flagged mistakes cannot be told apart")
        return {**out, "_clean": (rows.iloc[:0], reason), "_flagged": (rows.iloc[:0], reason)}
    clean = known & label_in.eq(True) & prediction_in.eq(False)
    out["_clean"] = (rows[clean], "no clean mistake")
    out["_flagged"] = (rows[known & ~clean], "no flagged mistake")
    return out


def has_real_labels(rows: pd.DataFrame) -> bool:
    return bool(flag(rows.get("label_in_real", pd.Series(dtype=object))).notna().any())


def run_statistics(rows: pd.DataFrame) -> tuple[dict, dict]:
    """(statistics, reasons): one flat row of runs.csv, and why each statistic that is NaN is not computable."""
    status = rows["status"] if "status" in rows else pd.Series(dtype=str)
    values: dict = {"n_examples": len(rows), **{f"n_{s}": int((status == s).sum()) for s in Status}}
    if "steps_to_correct" in rows:  # right at the pretrained weights: corrected at no cost, not a mistake
        values["n_correct_at_step_0"] = int(((status == Status.CORRECT) & (rows["steps_to_correct"] == 0)).sum())
    measured_count = values["n_correct"] + values["n_never_correct"]
    values["frac_never_corrected"] = values["n_never_correct"] / measured_count if measured_count else math.nan
    values["cost"] = primary_cost(rows)
    estimates: dict[str, Estimate] = {}
    measured = rows[status.isin(MEASURED)]
    for suffix, (subset, empty) in subsets(measured).items():
        corrected = subset[subset["status"] == Status.CORRECT]
        values[f"n_measured{suffix}"], values[f"n_corrected{suffix}"] = len(subset), len(corrected)
        if suffix and not len(subset) and not has_real_labels(rows):
            continue  # no ReaL labels at all: the subsets do not exist, rather than being empty
        estimates.update(_over_corrected(corrected, rows.columns, suffix, empty))
        estimates.update(_censoring_aware(subset, rows.columns, suffix, empty))
    reached = rows[status == Status.REACHED_EPSILON]
    for epsilon_cost in EPSILON_COSTS:
        if epsilon_cost in rows:
            pair = reached[[epsilon_cost, RANK]].dropna()
            estimates[f"rho_{epsilon_cost}"] = rho(pair[epsilon_cost], pair[RANK])
    for name, estimate in estimates.items():
        values.update(estimate.columns(name))
    reasons = {name: e.reason for name, e in estimates.items() if e.reason}
    return values, reasons


def _over_corrected(corrected: pd.DataFrame, columns, suffix: str, empty: str) -> dict[str, Estimate]:
    """rho of every score against rank, the rho deltas of every cost against every baseline, and the
    partial rho given the initial loss, over the corrected examples; with a probe, the damage's rho
    against rank and against the loss to correct, and whether it says more about difficulty."""
    costs, baselines = [c for c in COSTS if c in columns], [b for b in BASELINES if b in columns]
    damage = _damage(corrected, columns)
    out = {}
    for score in costs + baselines + damage:
        pair = corrected[[score, RANK]].dropna()
        out[f"rho_{score}"] = rho(pair[score], pair[RANK])
    for cost in costs:
        for baseline in baselines:
            out[f"delta_{cost}_vs_{baseline}"] = _rho_delta(corrected, cost, baseline)
        if "initial_loss" in columns:
            data = corrected[[cost, RANK, "initial_loss"]].dropna()
            out[f"partial_rho_{cost}_given_initial_loss"] = partial_rho(data[cost], data[RANK], data["initial_loss"])
    if costs:
        for score in damage:  # the first cost is the loss to correct
            data = corrected[[score, costs[0], RANK]].dropna()
            out[f"rho_{score}_with_{costs[0]}"] = rho(data[score], data[costs[0]])
            out[f"delta_{score}_vs_{costs[0]}"] = rho_difference(data[score], data[costs[0]], data[RANK])
    if not len(corrected):
        out = {name: Estimate.not_computable(empty or "none corrected") for name in out}
    return {f"{name}{suffix}": estimate for name, estimate in out.items()}


def _rho_delta(corrected: pd.DataFrame, cost: str, baseline: str) -> Estimate:
    data = corrected[[cost, baseline, RANK]].dropna()
    orientation = ORIENTATION[baseline]
    return rho_difference(data[cost], data[baseline] * (orientation or 1), data[RANK], absolute=orientation is None)


def _censoring_aware(measured: pd.DataFrame, columns, suffix: str, empty: str) -> dict[str, Estimate]:
    """Harrell's C of every cost (censored at its lower bound) and baseline against rank, the C deltas
    of every cost against every baseline, and the Kaplan-Meier median of every cost, over every
    measured example."""
    if not len(measured):
        names = [f"concordance_{s}" for s in SCORES if s in columns] + [f"km_median_{c}" for c in COSTS if c in columns]
        names += [f"delta_concordance_{c}_vs_{b}" for c in COSTS if c in columns for b in BASELINES if b in columns]
        return {f"{name}{suffix}": Estimate.not_computable(empty or "no measured example") for name in names}
    scores, out = {}, {}
    for cost in (c for c in COSTS if c in columns):
        censored = censored_cost(measured, cost)
        if censored is None:
            out[f"concordance_{cost}{suffix}"] = out[f"km_median_{cost}{suffix}"] = Estimate.not_computable(
                "never-corrected examples record no lower bound of this cost", len(measured))
            continue
        scores[cost] = (censored[0].to_numpy(), censored[1].to_numpy())
        with warnings.catch_warnings():  # scipy: "the confidence interval is undefined at some observations"
            warnings.simplefilter("ignore", RuntimeWarning)
            out[f"km_median_{cost}{suffix}"] = km_median(*scores[cost])
    for baseline in (b for b in BASELINES if b in columns):
        values = measured[baseline].astype(float) * (ORIENTATION[baseline] or 1)
        if values.isna().all():  # e.g. a gradient norm that overflowed in fp16 for every example
            out[f"concordance_{baseline}{suffix}"] = Estimate.not_computable(f"no finite {baseline}", len(measured))
            continue
        scores[baseline] = (values.fillna(values.median()).to_numpy(), np.ones(len(measured), bool))
    contrasts = {f"delta_concordance_{cost}_vs_{baseline}": (cost, baseline, ORIENTATION[baseline] is None)
                 for cost in scores if cost in COSTS for baseline in scores if baseline in BASELINES}
    probed = measured.dropna(subset=_damage(measured, columns))
    if len(probed) == len(measured):  # damage (the probe) is observed for every measured example
        for score in _damage(measured, columns):
            scores[score] = (measured[score].astype(float).to_numpy(), np.ones(len(measured), bool))
            out[f"mean_{score}{suffix}"] = mean(measured[score])
            contrasts.update({f"delta_concordance_{score}_vs_{cost}": (score, cost, False)
                              for cost in list(scores)[:1] if cost in COSTS})
    estimates = concordance_estimates(scores, measured[RANK].to_numpy(float), contrasts)
    out.update({f"concordance_{name}{suffix}": e for name, e in estimates.items() if name in scores})
    out.update({f"{name}{suffix}": e for name, e in estimates.items() if name not in scores})
    return out


def _damage(rows: pd.DataFrame, columns) -> list[str]:
    """The probe's scores the rows hold (a run with probe.size=0 leaves them empty)."""
    return [d for d in DAMAGE if d in columns and rows[d].notna().any()]


def headline(values: dict) -> str:
    """One sentence on the research question for a run: the censoring-aware figure when the run
    censors examples, else rho over corrected examples; and whether the cost says more than the
    initial loss."""
    cost = values.get("cost")
    if not isinstance(cost, str):
        return "records no cost to correct (the original epsilon variant)."
    censored = (values.get("frac_never_corrected") or 0) > 0
    kind, name = ("C", f"concordance_{cost}") if censored else ("rho", f"rho_{cost}")
    value, low, high = (values.get(f"{name}{end}", math.nan) for end in ("", "_ci_low", "_ci_high"))
    if value is None or not math.isfinite(value):
        return f"{cost} against difficulty is not computable here."
    null = 0.5 if kind == "C" else 0.0
    direction = ("higher for harder mistakes" if low > null else "lower for harder mistakes" if high < null
                 else "not distinguishable from no association with difficulty") if math.isfinite(low) else \
        "of unknown precision (no CI)"
    text = f"{cost} is {direction} ({kind} = {with_ci(value, low, high, no_ci=' CI not computable')}"
    text += f", {values['frac_never_corrected']:.0%} never corrected)" if censored else ", corrected examples)"
    delta = values.get(f"delta_concordance_{cost}_vs_initial_loss" if censored else f"delta_{cost}_vs_initial_loss")
    if delta is not None and math.isfinite(delta):
        d_low = values[f"delta_concordance_{cost}_vs_initial_loss_ci_low" if censored else
                       f"delta_{cost}_vs_initial_loss_ci_low"]
        d_high = values[f"delta_concordance_{cost}_vs_initial_loss_ci_high" if censored else
                        f"delta_{cost}_vs_initial_loss_ci_high"]
        if math.isfinite(d_low) and math.isfinite(d_high):
            more = "says more than" if d_low > 0 else "says less than" if d_high < 0 else "cannot be told apart from"
            text += f"; it {more} the initial loss (Δ = {with_ci(delta, d_low, d_high, '{:+.2f}')})"
        else:
            text += f"; against the initial loss Δ = {delta:+.2f} (CI not computable)"
    return text + "."


def verdict(values: dict, cost: str) -> str:
    """One sentence: does the cost say more than each baseline? It follows from the CIs alone: of the
    concordance difference when the run censors examples, else of the rho difference."""
    censored = (values.get("frac_never_corrected") or 0) > 0
    parts = []
    for baseline in BASELINES:
        name = f"delta_concordance_{cost}_vs_{baseline}" if censored else f"delta_{cost}_vs_{baseline}"
        if name not in values:
            continue
        value, low, high = values[name], values[f"{name}_ci_low"], values[f"{name}_ci_high"]
        label = baseline.replace("_", " ")
        if ORIENTATION[baseline] is None:
            label = f"|{label}| (compared by absolute association: its direction is not given beforehand)"
        if value is None or low is None or not (math.isfinite(value) and math.isfinite(low)):
            parts.append(f"cannot be compared with {label} (not computable)")
        else:
            what, where = ("says more than", "above 0") if low > 0 else ("says less than", "below 0") if high < 0 \
                else ("cannot be told apart from", "includes 0")
            parts.append(f"{what} {label} (Δ = {value:+.2f}, 95% CI {interval(low, high, '{:+.2f}')} {where})")
    if not parts:
        return f"No baseline to compare {cost} with (the rows hold no initial loss, margin, gradient norm or EL2N)."
    measure = "concordance (never-corrected examples censored)" if censored else "Spearman rho (corrected examples)"
    return f"Against universal difficulty rank, by {measure}, {cost} " + "; ".join(parts) + "."
