"""Is the cost to correct universal? Whether models agree on which mistakes are costly, on the images
they all measured (a shared selection, `selection.shared=true`, makes those every image of the sweep),
beside the same agreement for the cheap scores at the pretrained weights: if the costs agree more
than the initial losses do, the cost is a property of the image more than of the model.

Runs are grouped by everything that varies except the model (e.g. one group per learning rate).
Within a group of two or more models, over the images every model measured (corrected or never
corrected), each score is ranked within each model, a never-corrected cost above every corrected one
(tied among themselves: its cost is a lower bound). Then: Kendall's W over all models and the mean
Spearman rho over pairs, each with a 95% bootstrap CI over images (the same resamples for every
score, so that ΔW against the initial loss is paired); a *universal correction cost* per image, its
mean rank across the models (0: the cheapest for every model, 1: the costliest), and its Spearman rho
with universal difficulty; rho per pair of models; and, across models, how each model's Harrell's C
against rank relates to its accuracy.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

from analysis.parallel import run_all
from sweep.outputs import MEASURED, RANK, Status
from sweep.stats.agreement import agreement_in_resamples
from sweep.stats.estimates import (
    MIN_EXAMPLES,
    RESAMPLES,
    Estimate,
    ResampleRanking,
    from_resamples,
    rho,
    rho_difference,
)

MODEL = "model"
SCORES = ["loss_sum", "steps_to_correct", "drawdown", "probe_loss_increase", "initial_loss",
          "initial_margin"]  # the costs (to reach the answer, and to the rest of the model), then baselines
CENSORED_SCORES = ("loss_sum", "steps_to_correct")  # a never-corrected example's is a lower bound
BASELINE = "initial_loss"
PAIRS_WITH_CI = 45  # pairs of models (10 models) up to which each pair's rho gets its bootstrap CI
CELLS_PER_CHUNK = 2_000_000  # bootstrap resamples are ranked this many (model, image) cells at a time
ALL_CIS_UP_TO = 200_000  # model-image cells (200 models x 1,000 images) up to which every score's W gets a CI


def universality(runs: list[tuple[object, str]], keys: list[str]) -> dict[str, pd.DataFrame]:
    """Every table of agreement between models, each empty when no model varies: `overall` (a row per
    group and score), `pairs` (per pair of models), `images` (the universal cost of each image) and
    `matrix` (models x images ranks of the loss to correct, for the heat map)."""
    empty = {name: pd.DataFrame() for name in ("overall", "pairs", "images", "matrix")}
    if MODEL not in keys:
        return empty
    others = [k for k in keys if k != MODEL]
    groups: dict[tuple, list] = {}
    for run, _ in runs:
        groups.setdefault(tuple(repr(run.params.get(k)) for k in others), []).append(run)
    tables: dict[str, list[pd.DataFrame]] = {name: [] for name in empty}
    for members in groups.values():
        models = {str(run.params.get(MODEL)): run for run in members}
        if len(models) < 2:
            continue
        context = ", ".join(f"{k}={members[0].params.get(k)}" for k in others) or "all runs"
        for name, frame in _group(context, models).items():
            tables[name].append(frame)
    return {name: pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
            for name, frames in tables.items()}


def _group(context: str, models: dict[str, object]) -> dict[str, pd.DataFrame]:
    """The tables of one group of runs of different models."""
    measured = {name: run.rows[run.rows["status"].isin(MEASURED)].drop_duplicates("path").set_index("path")
                for name, run in models.items()}
    shared = sorted(set.intersection(*(set(rows.index) for rows in measured.values())))
    names = list(measured)
    ranks = measured[names[0]].loc[shared, RANK].to_numpy(float) if shared else np.array([])
    scores = {score: np.stack([_censored(measured[name].loc[shared], score) for name in names])
              for score in SCORES if all(score in rows for rows in measured.values())}
    scores = {score: values for score, values in scores.items() if values.size and not np.isnan(values).any()}
    overall = pd.DataFrame([{"group": context, "score": score, "models": len(names), "images": len(shared),
                             **_columns(estimates)} for score, estimates in _agreement(scores).items()])
    return {"overall": overall, "pairs": _pairs(context, names, scores),
            "images": _universal_cost(context, shared, ranks, scores, measured, names),
            "matrix": _matrix(context, names, shared, ranks, scores)}


def _censored(rows: pd.DataFrame, score: str) -> np.ndarray:
    """A model's score per image, a never-corrected example's cost as +inf (above every corrected one)."""
    values = rows[score].to_numpy(float)
    if score in CENSORED_SCORES:
        values = np.where(rows["status"].to_numpy() == Status.NEVER_CORRECT, np.inf, values)
    return values


def _agreement(scores: dict[str, np.ndarray]) -> dict[str, dict[str, Estimate]]:
    """Per score: Kendall's W and the mean pairwise rho over models, and ΔW against the initial loss,
    each with a percentile-bootstrap CI over images (the same resamples for every score). Beyond
    ALL_CIS_UP_TO model-image cells only the loss to correct and the initial loss get CIs."""
    if not scores:
        return {}
    m, n = next(iter(scores.values())).shape
    reason = f"n={n} < {MIN_EXAMPLES}" if n < MIN_EXAMPLES else None
    constant = {score: next((f"no variation for model {i + 1}" for i, row in enumerate(values)
                             if np.unique(row).size < 2), None) for score, values in scores.items()}
    full = {score: agreement_in_resamples(values, np.arange(n)[None]) for score, values in scores.items()} \
        if reason is None else {}
    with_ci = [s for s in scores if m * n <= ALL_CIS_UP_TO or s in ("loss_sum", BASELINE)]
    samples = _bootstrap({s: scores[s] for s in with_ci}) if reason is None else {}
    out = {}
    for score in scores:
        why = reason or constant[score]
        if why:
            out[score] = {"kendall_w": Estimate.not_computable(why, n), "mean_rho": Estimate.not_computable(why, n)}
            continue
        (w, mean_rho) = full[score]
        if score not in samples:
            note = f"CI over images for the loss to correct and the initial loss only, beyond {ALL_CIS_UP_TO:,} cells"
            out[score] = {"kendall_w": Estimate(float(w[0]), n=n, reason=note),
                          "mean_rho": Estimate(float(mean_rho[0]), n=n, reason=note)}
            continue
        ws, rhos = samples[score]
        out[score] = {"kendall_w": _percentile(float(w[0]), ws, n),
                      "mean_rho": _percentile(float(mean_rho[0]), rhos, n)}
        if score != BASELINE and BASELINE in samples and not constant[BASELINE]:
            out[score]["delta_w_vs_initial_loss"] = _percentile(float(w[0] - full[BASELINE][0][0]),
                                                                 ws - samples[BASELINE][0], n)
    return out


def _bootstrap(scores: dict[str, np.ndarray], seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(W, mean rho) of every score on RESAMPLES resamples of the images, the same for every score,
    in chunks of at most CELLS_PER_CHUNK ranked values, whatever the number of models."""
    if not scores:
        return {}
    m, n = next(iter(scores.values())).shape
    index = np.random.default_rng(seed).integers(0, n, size=(RESAMPLES, n))
    chunk = max(1, CELLS_PER_CHUNK // (m * n))
    calls = [(agreement_in_resamples, values, index[start:start + chunk]) for values in scores.values()
             for start in range(0, RESAMPLES, chunk)]
    parts = iter(run_all(calls))  # on every core
    out = {}
    for score in scores:
        drawn = [next(parts) for _ in range(0, RESAMPLES, chunk)]
        out[score] = (np.concatenate([w for w, _ in drawn]), np.concatenate([r for _, r in drawn]))
    return out


def _percentile(value: float, samples: np.ndarray, n: int) -> Estimate:
    if not math.isfinite(value):
        return Estimate.not_computable("no variation", n)
    return from_resamples(value, samples, n)


def _columns(estimates: dict[str, Estimate]) -> dict:
    reasons = "; ".join(f"{name}: {e.reason}" for name, e in estimates.items() if e.reason)
    return {**{k: v for name, e in estimates.items() for k, v in e.columns(name).items()}, "reason": reasons}


def _pairs(context: str, names: list[str], scores: dict[str, np.ndarray]) -> pd.DataFrame:
    """Spearman rho of every score between every pair of models: with its bootstrap CI up to
    PAIRS_WITH_CI pairs, else the value alone (a correlation matrix, whatever the number of models)."""
    rows = []
    pairs = list(itertools.combinations(range(len(names)), 2))
    for score, values in scores.items():
        if len(pairs) <= PAIRS_WITH_CI:
            for i, j in pairs:
                estimate = rho(values[i], values[j])
                rows.append({"group": context, "score": score, "model_a": names[i], "model_b": names[j],
                             **estimate.columns("rho"), "reason": estimate.reason})
            continue
        ranked = ResampleRanking(values).ranks(np.arange(values.shape[1])[None])[0]
        with np.errstate(invalid="ignore", divide="ignore"):
            matrix = np.corrcoef(ranked)
        upper = np.triu_indices(len(names), 1)
        rows.append(pd.DataFrame({"group": context, "score": score, "model_a": np.array(names)[upper[0]],
                                  "model_b": np.array(names)[upper[1]], "rho": matrix[upper],
                                  "rho_n": values.shape[1], "reason": ""}))
    frames = [row for row in rows if isinstance(row, pd.DataFrame)]
    records = pd.DataFrame([row for row in rows if isinstance(row, dict)])
    return pd.concat([records, *frames], ignore_index=True) if frames else records


def _universal_cost(context: str, shared: list[str], ranks: np.ndarray, scores: dict[str, np.ndarray],
                    measured: dict[str, pd.DataFrame], names: list[str]) -> pd.DataFrame:
    """Per image: its mean rank across the models (0 cheapest, 1 costliest) of the loss to correct and of
    the initial loss, and how many models never corrected it."""
    if "loss_sum" not in scores or len(shared) < 2:
        return pd.DataFrame()
    table = pd.DataFrame({"group": context, "path": shared, RANK: ranks.astype(int),
                          "universal_cost": _mean_rank(scores["loss_sum"]),
                          "never_corrected_by": sum((measured[name].loc[shared, "status"] == Status.NEVER_CORRECT)
                                                    .to_numpy(int) for name in names)})
    if BASELINE in scores:
        table["universal_initial_loss"] = _mean_rank(scores[BASELINE])
    return table


def _mean_rank(values: np.ndarray) -> np.ndarray:
    """Each image's rank within each model (ties averaged), scaled to [0, 1], averaged over models."""
    n = values.shape[1]
    ranks = ResampleRanking(values).ranks(np.arange(n)[None])[0]
    return ((ranks - 1) / max(n - 1, 1)).mean(axis=0)


def universal_association(images: pd.DataFrame) -> dict[str, dict[str, Estimate]]:
    """Per group: Spearman rho of the universal correction cost with universal difficulty, the same of
    the universal initial loss, and their paired difference, each with a bootstrap CI over images."""
    out = {}
    for group, rows in images.groupby("group", sort=False):
        found = {"rho_universal_cost": rho(rows["universal_cost"], rows[RANK])}
        if "universal_initial_loss" in rows:
            found["rho_universal_initial_loss"] = rho(rows["universal_initial_loss"], rows[RANK])
            found["delta_universal_cost_vs_initial_loss"] = rho_difference(rows["universal_cost"],
                                                                           rows["universal_initial_loss"], rows[RANK])
        out[group] = found
    return out


def model_table(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per run of a group with two or more models: the model's accuracy on the data set (1 - its
    mistakes over the images, as its run found them) and Harrell's C of its loss to correct against rank
    (the run's own, over its selection: with a shared selection, the shared images), most accurate first."""
    if MODEL not in keys or not {"n_images", "n_wrong_at_pretrained", "concordance_loss_sum"} <= set(table):
        return pd.DataFrame()
    others = [k for k in keys if k != MODEL]
    groups = [", ".join(f"{k}={row[k]}" for k in others) or "all runs" for _, row in table.iterrows()]
    frame = table.assign(group=groups, accuracy=1 - table["n_wrong_at_pretrained"] / table["n_images"])
    frame = frame[frame.groupby("group")[MODEL].transform("nunique") > 1]
    columns = ["group", MODEL, "accuracy", *[c for c in frame if c.startswith("concordance_loss_sum")]]
    return frame[columns].sort_values(["group", "accuracy"], ascending=[True, False], kind="stable",
                                      ignore_index=True)


def accuracy_association(models: pd.DataFrame) -> dict[str, Estimate]:
    """Per group: Spearman rho, across the models that have both (a model without C, or a run without
    its summary's counts, is left out; n says how many are left), of each model's accuracy with its C
    (bootstrap over models)."""
    return {group: rho(both["accuracy"], both["concordance_loss_sum"])
            for group, rows in models.groupby("group", sort=False)
            for both in [rows.dropna(subset=["accuracy", "concordance_loss_sum"])]}


def _matrix(context: str, names: list[str], shared: list[str], ranks: np.ndarray,
            scores: dict[str, np.ndarray]) -> pd.DataFrame:
    """The loss to correct's rank within each model, scaled to [0, 1], long: group, model, path, the
    image's universal difficulty rank, cost_rank, and whether never corrected (ranked the costliest)."""
    if "loss_sum" not in scores or not shared:
        return pd.DataFrame()
    values = scores["loss_sum"]
    n = values.shape[1]
    scaled = (ResampleRanking(values).ranks(np.arange(n)[None])[0] - 1) / max(n - 1, 1)
    return pd.DataFrame({"group": context, "model": np.repeat(names, n), "path": np.tile(shared, len(names)),
                         RANK: np.tile(ranks, len(names)), "cost_rank": scaled.ravel(),
                         "censored": np.isinf(values).ravel()})
