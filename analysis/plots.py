"""Paper-size figures of a merged sweep, each saved as PNG and SVG."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from sweep.plots import draw_loss_vs_difficulty, loss_floor, pyplot
from sweep.schema import MEASURED, SCORES, Status


def _save(fig, out: Path, name: str) -> list[Path]:
    paths = [out / f"{name}.{ext}" for ext in ("png", "svg")]
    for path in paths:
        fig.savefig(path, dpi=200, bbox_inches="tight")
    pyplot().close(fig)
    return paths


def loss_vs_difficulty(merged: pd.DataFrame, panels: list[tuple[str, pd.DataFrame | None]], columns: int,
                       out: Path) -> list[Path]:
    """One loss-vs-difficulty panel per (title, rows), `columns` per figure row, axes shared; a
    panel without rows (None) stays empty."""
    plt = pyplot()
    floor = loss_floor(merged)
    rows_of_panels = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows_of_panels, columns, figsize=(3.4 * columns, 2.9 * rows_of_panels), sharex=True,
                             sharey=True, squeeze=False)
    for ax, (title, rows) in zip(axes.flat, panels):
        if rows is None:
            ax.set_visible(False)
            continue
        correlation = draw_loss_vs_difficulty(ax, rows, floor)
        ax.set_title(f"{title}\n{correlation.replace('Spearman rho vs rank (corrected): ', 'rho: ')}"
                     if correlation else title, fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7, loc="best")
    fig.supxlabel("loss to correct (summed loss; lower bound if never corrected)")
    fig.supylabel("universal difficulty rank (1 = easiest)")
    fig.tight_layout()
    return _save(fig, out, "loss_vs_difficulty")


def forest(runs: pd.DataFrame, out: Path) -> list[Path]:
    """Spearman rho against rank with 95% bootstrap CI, per run (rows) and score (panels)."""
    plt = pyplot()
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
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for run, rows in merged.groupby("run", sort=False):
        measured = rows[rows["status"].isin(MEASURED)]
        steps = np.sort(measured.loc[measured["status"] == Status.CORRECT, "steps_to_correct"].to_numpy())
        if len(steps):
            ax.step(np.maximum(steps, 0.5), np.arange(1, len(steps) + 1) / len(measured), where="post", label=run)
    ax.set_xscale("log")
    ax.set_xlabel("steps to correct")
    ax.set_ylabel("fraction of examples corrected")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _save(fig, out, "steps_ecdf")
