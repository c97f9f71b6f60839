"""Figures of a whole study (seaborn, in the style of `analysis/figures.py`): a swept parameter's grid
(`grid_<parameter>`) and a zoo's models x images cost matrix (`cost_matrix`)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.figures import save, seaborn
from analysis.settings import GRID_STATISTICS, grid_lines
from sweep.outputs import RANK
from sweep.plots import pyplot


def evenly_spaced_ticks(values: list, most: int = 8) -> list:
    """At most `most` of the sorted `values`, evenly spaced, as tick positions."""
    step = max(1, math.ceil(len(values) / most))
    return values[::step]


def grid(data: pd.DataFrame, parameter: str, out: Path) -> list[Path]:
    """How the answer depends on a swept parameter: C and rho of the loss to correct, ΔC against the
    initial loss and the Kaplan-Meier median cost, with 95% CIs, against `parameter` (log x for lr),
    one line per value of the other parameters (`grid_table`'s rows)."""
    lines = grid_lines(data, parameter)
    sns = seaborn()
    plt = pyplot()
    fig, axes = plt.subplots(1, len(GRID_STATISTICS), figsize=(3.0 * len(GRID_STATISTICS), 3.0), squeeze=False)
    palette = sns.color_palette("deep", max(1, len(lines)))
    for (name, part), color in zip(lines, palette, strict=False):  # a palette of one where no line
        for ax, statistic in zip(axes[0], GRID_STATISTICS, strict=True):
            known = part.dropna(subset=[statistic])
            errors = np.vstack([known[statistic] - known[f"{statistic}_ci_low"],
                                known[f"{statistic}_ci_high"] - known[statistic]])
            errors = np.where(np.isfinite(errors), errors, 0).clip(min=0)  # an unbounded CI: no bar
            ax.errorbar(known[parameter], known[statistic], yerr=errors, fmt="o-", ms=3,
                        lw=1, capsize=2, color=color, label=name)
    nulls = {"C": 0.5, "rho": 0.0, "ΔC vs initial loss": 0.0}
    cost = data["cost"].dropna().iloc[0] if data["cost"].notna().any() else "cost"
    import matplotlib.ticker as ticker
    values = sorted(data[parameter].dropna().unique())
    plain = ticker.FuncFormatter(lambda v, _: f"{v:g}")
    for ax, statistic in zip(axes[0], GRID_STATISTICS, strict=True):
        if statistic in nulls:
            ax.axhline(nulls[statistic], color="0.4", lw=0.8, ls="--")
        if parameter == "lr":
            ax.set_xscale("log")
        if statistic == "KM median cost":
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        shown = evenly_spaced_ticks(values)
        ax.set_xticks(shown, [f"{v:g}" for v in shown], rotation=45, ha="right")
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set(xlabel=parameter, title=f"{statistic} ({cost})" if statistic != "KM median cost" else
               f"Kaplan-Meier median {cost}")
    if len(lines) > 1:
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper center", ncol=min(4, len(labels)), frameon=False, fontsize=7,
                   bbox_to_anchor=(0.5, 1.08))
    fig.tight_layout()
    return save(fig, out, f"grid_{parameter}")


def cost_matrix(matrix: pd.DataFrame, models: pd.DataFrame, out: Path) -> list[Path]:
    """The models x images heat map of a zoo study, a panel per group: each model's rank of the loss to
    correct (rows, most accurate first), images easiest first by universal difficulty, never-corrected
    costs in black. Readable from a handful of models to hundreds (one pixel row each at most)."""
    plt = pyplot()
    seaborn()
    groups = list(dict.fromkeys(matrix["group"]))
    fig, axes = plt.subplots(len(groups), 1, squeeze=False,
                             figsize=(7.0, sum(min(6.0, 1.0 + 0.22 * matrix[matrix["group"] == g]["model"].nunique())
                                               for g in groups)))
    for ax, group in zip(axes[:, 0], groups, strict=True):
        rows = matrix[matrix["group"] == group]
        order = [m for m in models[models["group"] == group]["model"] if m in set(rows["model"])] if len(models) \
            else sorted(set(rows["model"]))
        order += sorted(set(rows["model"]) - set(order))
        images = rows.drop_duplicates("path").sort_values([RANK, "path"])["path"]
        grid = rows.pivot(index="model", columns="path", values="cost_rank").loc[order, images]
        censored = rows.pivot(index="model", columns="path", values="censored").loc[order, images].astype(bool)
        cmap = plt.get_cmap("viridis").with_extremes(bad="black")
        shown = ax.imshow(grid.mask(censored).to_numpy(float), aspect="auto", interpolation="nearest", cmap=cmap,
                          vmin=0, vmax=1)
        ax.set_yticks(range(len(order)) if len(order) <= 40 else [])
        ax.set_yticklabels(order if len(order) <= 40 else [], fontsize=6)
        ax.set_xticks([])
        ax.grid(False)
        ax.set_xlabel(f"{len(images):,} images, easiest to hardest by universal difficulty", fontsize=7)
        ax.set_title(f"{group}: {len(order)} models, most accurate at the top", fontsize=8)
        fig.colorbar(shown, ax=ax, fraction=0.03, pad=0.01).set_label("rank of the loss to correct (0: cheapest)",
                                                                       fontsize=6)
    return save(fig, out, "cost_matrix", formats=("png",))
