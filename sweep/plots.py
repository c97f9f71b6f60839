"""The loss-vs-difficulty scatter, drawn the same way for one run and for each run of an aggregate."""
from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from sweep.schema import RANK, Status
from sweep.stats import spearman


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (plots are written, never shown)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def loss_floor(rows: pd.DataFrame) -> float:
    """Where to draw zero losses on a log axis: half the smallest positive loss."""
    positive = rows.loc[rows["loss_sum"] > 0, "loss_sum"] if "loss_sum" in rows else pd.Series(dtype=float)
    floor = positive.min() if len(positive) else math.nan
    return floor / 2 if math.isfinite(floor) else 1e-3


def draw_loss_vs_difficulty(ax, rows: pd.DataFrame, floor: float) -> str:
    """Loss to correct (log x) against rank (y) on `ax`; never-corrected at their lower bound, marked.
    Returns the correlation line for the title."""
    corrected = rows[rows["status"] == Status.CORRECT]
    censored = rows[rows["status"] == Status.NEVER_CORRECT]
    ax.scatter(corrected["loss_sum"].clip(lower=floor), corrected[RANK], s=14, alpha=0.7,
               label=f"corrected (n={len(corrected)})")
    if len(censored):
        ax.scatter(censored["loss_sum"].clip(lower=floor), censored[RANK], marker="x", s=22,
                   color="tab:red", label=f"never corrected, lower bound (n={len(censored)})")
    ax.set_xscale("log")
    rho = spearman(corrected["loss_sum"], corrected[RANK])
    if math.isnan(rho):
        return ""
    line = f"Spearman rho vs rank (corrected): loss to correct {rho:.3f}"
    if "initial_loss" in corrected:
        line += f", initial loss {spearman(corrected['initial_loss'], corrected[RANK]):.3f}"
    return line


def plot_loss_vs_difficulty(rows: pd.DataFrame, path: Path, title: str) -> None:
    """One run's plot, replaced atomically."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=150)
    correlation = draw_loss_vs_difficulty(ax, rows, loss_floor(rows))
    ax.set_xlabel("loss to correct (summed loss of the updates taken)")
    ax.set_ylabel("universal difficulty rank (1 = easiest)")
    ax.set_title(f"{title}\n{correlation}" if correlation else title, fontsize=9)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    staging = Path(f"{path}.partial.png")
    fig.savefig(staging)
    plt.close(fig)
    os.replace(staging, path)
