"""Paper-size figures of a merged sweep, each saved as PNG and SVG."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from analysis.correlations import RANK, SCORES, spearman  # noqa: E402

sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)


def _save(fig, out: Path, name: str) -> list[Path]:
    paths = [out / f"{name}.{ext}" for ext in ("png", "svg")]
    for path in paths:
        fig.savefig(path, dpi=200, bbox_inches="tight")
    plt.close(fig)
    return paths


def loss_vs_difficulty(merged: pd.DataFrame, facets: dict, out: Path) -> list[Path]:
    """Loss to correct (log x) against difficulty rank per facet; never-corrected at their lower bound, marked."""
    data = merged[merged["status"].isin(["correct", "never_correct"])].copy()
    positive = data.loc[data["loss_sum"] > 0, "loss_sum"]
    data["loss_to_correct"] = data["loss_sum"].clip(lower=positive.min() / 2 if len(positive) else 1e-3)
    grid = sns.FacetGrid(data, **facets, height=2.8, aspect=1.2, sharex=True, sharey=True, despine=False)
    grid.map_dataframe(sns.scatterplot, x="loss_to_correct", y=RANK, hue="status", style="status",
                       hue_order=["correct", "never_correct"], style_order=["correct", "never_correct"],
                       palette={"correct": "tab:blue", "never_correct": "tab:red"},
                       markers={"correct": "o", "never_correct": "X"}, s=14, alpha=0.7, linewidth=0)
    grid.set(xscale="log")
    grid.set_axis_labels("", "")
    grid.figure.supxlabel("loss to correct (summed loss; lower bound if never corrected)", y=0.0)
    grid.figure.supylabel("universal difficulty rank (1 = easiest)", x=0.0)
    for keys, ax in grid.axes_dict.items():
        keys = keys if isinstance(keys, tuple) else (keys,)
        mask = np.ones(len(data), dtype=bool)
        for column, value in zip([facets[k] for k in ("row", "col") if k in facets], keys):
            mask &= (data[column] == value).to_numpy()
        corrected = data[mask & (data["status"] == "correct").to_numpy()]
        title = ", ".join(f"{c}={v}" for c, v in zip([facets[k] for k in ("row", "col") if k in facets], keys))
        ax.set_title(f"{title}\nrho={spearman(corrected['loss_sum'], corrected[RANK]):.2f} "
                     f"(initial loss {spearman(corrected['initial_loss'], corrected[RANK]):.2f})"
                     if "initial_loss" in corrected else title, fontsize=9)
    grid.add_legend(title="")
    return _save(grid.figure, out, "loss_vs_difficulty")


def forest(runs: pd.DataFrame, out: Path) -> list[Path]:
    """Spearman rho against rank with 95% bootstrap CI, per run (rows) and score (panels)."""
    scores = [s for s in SCORES if f"rho_{s}" in runs]
    fig, axes = plt.subplots(1, len(scores), figsize=(2.6 * len(scores), 0.45 * len(runs) + 1.4), sharey=True,
                             squeeze=False)
    y = np.arange(len(runs))
    for ax, score in zip(axes[0], scores):
        rho = runs[f"rho_{score}"].to_numpy(dtype=float)
        low, high = runs[f"rho_{score}_ci_low"].to_numpy(dtype=float), runs[f"rho_{score}_ci_high"].to_numpy(dtype=float)
        ax.errorbar(rho, y, xerr=[rho - low, high - rho], fmt="o", color="black", ecolor="gray", capsize=2, ms=4)
        ax.axvline(0, color="tab:red", lw=0.8, ls="--")
        ax.set_title(score.replace("_", " "), fontsize=9)
        ax.set_xlabel("Spearman rho vs rank")
    axes[0][0].set_yticks(y, runs["run"])
    axes[0][0].invert_yaxis()
    fig.tight_layout()
    return _save(fig, out, "rho_forest")


def steps_ecdf(merged: pd.DataFrame, out: Path) -> list[Path]:
    """Fraction of each run's examples corrected within s steps; curves end below 1 when some never were."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for run, rows in merged.groupby("run", sort=False):
        measured = rows[rows["status"].isin(["correct", "never_correct"])]
        steps = np.sort(measured.loc[measured["status"] == "correct", "steps_to_correct"].to_numpy())
        if len(steps):
            ax.step(np.maximum(steps, 0.5), np.arange(1, len(steps) + 1) / len(measured), where="post", label=run)
    ax.set_xscale("log")
    ax.set_xlabel("steps to correct")
    ax.set_ylabel("fraction of examples corrected")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _save(fig, out, "steps_ecdf")
