"""The loss-vs-difficulty scatter and pyplot's file-only set-up, shared by a run (its own plot) and the
analysis (each run of an aggregate, its figures). Torch-free."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from sweep.files import replacing
from sweep.outputs import RANK, Status
from sweep.stats.estimates import spearman
from sweep.stats.research import primary_cost, subsets

GROUPS = {"": ("corrected", "o", "tab:blue"), "_clean": ("corrected, clean mistake", "o", "tab:blue"),
          "_flagged": ("corrected, flagged by ReaL labels", "^", "tab:orange")}


def cost_label(cost: str) -> str:
    return {"loss_sum": "loss to correct (loss_sum)"}.get(cost, cost)


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (plots are written, never shown)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def loss_floor(rows: pd.DataFrame, cost: str) -> float:
    """Where to draw zero costs on a log axis: half the smallest positive cost."""
    positive = rows.loc[rows[cost] > 0, cost] if cost in rows else pd.Series(dtype=float)
    floor = positive.min() if len(positive) else math.nan
    return floor / 2 if math.isfinite(floor) else 1e-3


def draw_loss_vs_difficulty(ax, rows: pd.DataFrame, floor: float, cost: str) -> str:
    """Cost to correct (log x) against rank (y) on `ax`: corrected examples (clean and flagged
    mistakes apart where ReaL labels exist), never-corrected at their lower bound, marked. Returns
    the correlation line for the title."""
    corrected = rows[rows["status"] == Status.CORRECT]
    groups = subsets(corrected)
    split = len(groups["_clean"][0]) + len(groups["_flagged"][0]) > 0
    for suffix in ("_clean", "_flagged") if split else ("",):
        subset = groups[suffix][0]
        name, marker, color = GROUPS[suffix]
        ax.scatter(subset[cost].clip(lower=floor), subset[RANK], s=14, alpha=0.7, marker=marker, color=color,
                   label=f"{name} (n={len(subset)})")
    censored = rows[rows["status"] == Status.NEVER_CORRECT]
    if len(censored) and cost == "loss_sum":  # other costs record no lower bound
        ax.scatter(censored[cost].clip(lower=floor), censored[RANK], marker="x", s=22, color="tab:red",
                   label=f"never corrected, lower bound (n={len(censored)})")
    ax.set_xscale("log")
    rho = spearman(corrected[cost], corrected[RANK])
    if math.isnan(rho):
        return ""
    line = f"rho vs rank: {cost} {rho:+.2f}"
    if "initial_loss" in corrected:
        line += f", initial loss {spearman(corrected['initial_loss'], corrected[RANK]):+.2f}"
    return line


def plot_loss_vs_difficulty(rows: pd.DataFrame, path: Path, title: str) -> None:
    """One run's plot, replaced atomically."""
    plt = pyplot()
    cost = primary_cost(rows) or "loss_sum"
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=150)
    correlation = draw_loss_vs_difficulty(ax, rows, loss_floor(rows, cost), cost)
    ax.set_xlabel(f"{cost_label(cost)}, log scale; never corrected: lower bound")
    ax.set_ylabel("universal difficulty rank (1 = easiest)")
    ax.set_title(f"{title}\n{correlation} (corrected examples)" if correlation else title, fontsize=9)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    with replacing(path) as staging:
        fig.savefig(staging, format="png")
    plt.close(fig)
