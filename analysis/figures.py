"""Paper-size figures of a merged sweep, each saved as PNG and SVG."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from sweep.outputs import EPSILON_COSTS, MEASURED, RANK, SCORES
from sweep.run.difficulty_plot import cost_label, draw_loss_vs_difficulty, loss_floor, pyplot
from sweep.stats.research import primary_cost
from sweep.training.stopping import Status

SUBSET_STYLE = {"": ("all with an observed cost", "black"), "_clean": ("clean", "tab:blue"), "_flagged": ("flagged",
                                                                                                          "tab:orange")}


def _save(fig, out: Path, name: str) -> list[Path]:
    paths = [out / f"{name}.{ext}" for ext in ("png", "svg")]
    for path in paths:
        fig.savefig(path, dpi=200, bbox_inches="tight")
    pyplot().close(fig)
    return paths


def loss_vs_difficulty(runs, keys: list[str], out: Path) -> list[Path]:
    """One panel per run with a cost to correct: a model x lr grid when those two parameters tell
    the runs apart, else a row-wrapped list; axes shared per cost."""
    runs = [(run, lab) for run, lab in runs if primary_cost(run.rows) in ("loss_sum", "total_loss_to_correct")]
    if not runs:
        return []
    grid = {(run.params.get("model"), run.params.get("lr")): (run, lab) for run, lab in runs}
    if {"model", "lr"} <= set(keys) and len(grid) == len(runs):
        models = sorted({m for m, _ in grid}, key=str)
        lrs = sorted({lr for _, lr in grid}, key=float, reverse=True)
        panels = [grid.get((m, lr)) for m in models for lr in lrs]
        titles = [f"model={m}, lr={lr}" for m in models for lr in lrs]
        columns = len(lrs)
    else:
        panels, titles, columns = runs, [lab for _, lab in runs], min(3, len(runs))
    plt = pyplot()
    rows_of_panels = math.ceil(len(panels) / columns)
    shared = len({primary_cost(run.rows) for run, _ in runs}) == 1
    fig, axes = plt.subplots(rows_of_panels, columns, figsize=(max(3.6 * columns, 5.0), 3.2 * rows_of_panels + 0.4),
                             sharex=shared, sharey=True, squeeze=False)
    floor = min(loss_floor(run.rows, primary_cost(run.rows)) for run, _ in runs)
    for ax, panel, title in zip(axes.flat, panels, titles):
        if panel is None:
            ax.set_visible(False)
            continue
        run, _ = panel
        cost = primary_cost(run.rows)
        correlation = draw_loss_vs_difficulty(ax, run.rows, floor, cost)
        ax.set_title(f"{title}\n{correlation}" if correlation else title, fontsize=8)
        ax.legend(fontsize=6, loc="lower right")
        ax.set_xlabel(f"{cost_label(cost)}, log scale", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("universal difficulty rank\n(1 = easiest)", fontsize=8)
    fig.tight_layout()
    return _save(fig, out, "loss_vs_difficulty")


def forest(table: pd.DataFrame, out: Path) -> list[Path]:
    """Spearman rho against rank with 95% bootstrap CIs: one panel per score, one row per run, one
    marker per subset (all corrected, clean, flagged). Statistics that are not computable are left out."""
    scores = [s for s in SCORES + EPSILON_COSTS if f"rho_{s}" in table and table[f"rho_{s}"].notna().any()]
    if not scores:
        return []
    plt = pyplot()
    columns = min(3, len(scores))
    rows_of_panels = math.ceil(len(scores) / columns)
    height = (0.5 * len(table) + 1.2) * rows_of_panels + 0.6
    fig, axes = plt.subplots(rows_of_panels, columns, figsize=(2.8 * columns + 1.8, height),
                             sharey=True, squeeze=False)
    y = np.arange(len(table))
    for ax in list(axes.flat)[len(scores):]:
        ax.set_visible(False)
    for ax, score in zip(axes.flat, scores):
        for offset, (suffix, (name, color)) in zip((-0.2, 0.0, 0.2), SUBSET_STYLE.items()):
            column = f"rho_{score}{suffix}"
            if column not in table or table[column].isna().all():
                continue
            rho = table[column].to_numpy(dtype=float)
            low = table[f"{column}_ci_low"].to_numpy(dtype=float)
            high = table[f"{column}_ci_high"].to_numpy(dtype=float)
            # a percentile CI can exclude the point estimate: draw the interval as it is
            errors = np.nan_to_num(np.vstack([rho - low, high - rho]).clip(min=0))
            ax.errorbar(rho, y + offset, xerr=errors, fmt="o", color=color, ecolor=color, alpha=0.8, capsize=2,
                        ms=3.5, label=name)
        ax.axvline(0, color="tab:red", lw=0.8, ls="--")
        ax.set_title(score.replace("_", " "), fontsize=9)
        ax.set_xlim(-1, 1)
        ax.set_xticks([-1, 0, 1])
    for ax in axes[:, 0]:
        ax.set_yticks(y, table["run"], fontsize=8)
    axes[0][0].invert_yaxis()
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=3, fontsize=8, frameon=False, bbox_to_anchor=(0.5, 1.02))
    fig.supxlabel("Spearman rho against universal difficulty rank (95% bootstrap CI)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    return _save(fig, out, "rho_forest")


def steps_ecdf(merged: pd.DataFrame, out: Path) -> list[Path]:
    """Fraction of each run's examples corrected within s steps; curves end below 1 when some never were."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for run, rows in merged.groupby("run", sort=False):
        measured = rows[rows["status"].isin(MEASURED)]
        if "steps_to_correct" not in rows or not len(measured):
            continue
        steps = np.sort(measured.loc[measured["status"] == Status.CORRECT, "steps_to_correct"].to_numpy())
        if len(steps):
            ax.step(np.maximum(steps, 0.5), np.arange(1, len(steps) + 1) / len(measured), where="post", label=run)
    if not ax.lines:
        pyplot().close(fig)
        return []
    ax.set_xscale("log")
    ax.set_xlabel("steps to correct (0 drawn at 0.5)")
    ax.set_ylabel("fraction of examples corrected")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _save(fig, out, "steps_ecdf")


def loss_trajectories(runs: list[tuple[str, object]], out: Path) -> list[Path]:
    """Median loss by step per difficulty group (deciles, or fewer groups of at least 5 examples) of
    each run's examples (runs with log_steps=true). A group's curve stops where fewer than half of
    its examples are still being trained, so the median is over the majority."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(runs), figsize=(4.4 * len(runs), 3.4), squeeze=False, sharey=True)
    colors = plt.get_cmap("viridis")
    for ax, (title, run) in zip(axes[0], runs):
        ranks = run.rows.set_index("example_index")[RANK]
        groups = max(1, min(10, len(ranks) // 5))
        group_of = pd.qcut(ranks.rank(method="first"), groups, labels=False)
        steps = run.steps[run.steps["example_index"].isin(ranks.index)]
        for group, losses in steps.groupby(steps["example_index"].map(group_of)):
            size = int((group_of == group).sum())
            curve = losses.groupby("step")["loss"].agg(["median", "count"])
            curve = curve[curve["count"] >= size / 2]
            ax.plot(curve.index, curve["median"], color=colors(group / max(groups - 1, 1)), lw=1.2,
                    label=f"{int(group) + 1} of {groups} (n={size})")
        ax.set_yscale("log")
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("step t")
    axes[0][0].set_ylabel("median loss")
    axes[0][-1].legend(fontsize=6, title="difficulty group (1 = easiest)", title_fontsize=6, loc="upper right")
    fig.tight_layout()
    return _save(fig, out, "loss_trajectories")
