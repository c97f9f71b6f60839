"""Paper-ready figures of a merged sweep (seaborn), each saved as PNG and SVG.

- `cost_vs_difficulty`: the cost to correct (log y) against universal difficulty rank (x, over the
  whole data set's range, so the part the sample covers shows), a panel per model and lr;
  never-corrected examples at their lower bound, marked.
- `cost_by_decile`: the median cost per decile of the data set's difficulty ranks, with 95% CIs.
- `association_forest`: every score's association with difficulty, rho over corrected examples and
  Somers' D = 2C - 1 over every measured example (never-corrected kept), with 95% CIs.
- `damage_vs_difficulty`: what each correction did to the rest of the model (the probe's drawdown
  and loss increase) against difficulty, with a least-squares line.
- `steps_ecdf`: the fraction of each run's examples corrected within s steps.
- `loss_trajectories`: median loss by step per difficulty group (runs with log_steps=true).

The figures of a whole study, a parameter's grid and a zoo's cost matrix: `analysis/study_figures.py`.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from sweep.outputs import DAMAGE, MEASURED, RANK, SCORES, Status
from sweep.plots import cost_label, pyplot
from sweep.stats.research import censored_cost, primary_cost

FIGURE_FORMATS = ("png", "svg")
DPI = 150  # the PNGs (the report embeds them); the SVGs are vector
CORRECTED, CENSORED = "corrected", "never corrected (lower bound)"


def seaborn():
    """seaborn, on matplotlib's file-only backend, in the style of these figures."""
    pyplot()
    import seaborn as sns
    sns.set_theme(context="paper", style="whitegrid", font_scale=0.9)
    logging.getLogger("matplotlib.category").setLevel(logging.WARNING)  # deciles are categories, not numbers
    return sns


def save(fig, out: Path, name: str, formats: tuple[str, ...] = FIGURE_FORMATS) -> list[Path]:
    """`fig` in `out` as `name`.png and .svg (or `formats`); the paths."""
    paths = [out / f"{name}.{ext}" for ext in formats]
    fig.set_dpi(DPI)  # the PNG's resolution: its render reuses the text layout of the pass below
    fig.draw_without_rendering()  # one layout pass for every format: the tight box around what is drawn
    box = fig.get_tightbbox().padded(0.1)
    for path in paths:
        fig.savefig(path, dpi=DPI, bbox_inches=box)
    pyplot().close(fig)
    return paths


def compact_ranks(axes) -> None:
    """Difficulty-rank x axes with three ticks at most, in thousands ("25k"), so that neighbouring facets'
    labels do not run into each other whatever the number of facets."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=2, integer=True))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value / 1000:g}k" if value >= 1000
                                                   else f"{value:g}"))


def measured_costs(runs: list[tuple[object, str]]) -> pd.DataFrame:
    """One row per measured example of every run with a cost: run, rank, cost (never-corrected at
    their lower bound), whether corrected, the model and lr where known, the data set's rank range."""
    frames = []
    for run, label in runs:
        cost = primary_cost(run.rows)
        measured = run.rows[run.rows["status"].isin(MEASURED)]
        censored = censored_cost(measured, cost) if cost is not None and len(measured) else None
        if censored is None:
            continue
        values, observed = censored
        frames.append(pd.DataFrame({"run": label, RANK: measured[RANK].to_numpy(), "cost": values.to_numpy(),
                                    "cost_name": cost, "status": np.where(observed, CORRECTED, CENSORED),
                                    "model": str(run.params.get("model", "")), "lr": run.params.get("lr"),
                                    "rank_range": run.rank_range}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _facets(data: pd.DataFrame, keys: list[str]) -> dict:
    """seaborn facet arguments: a model x lr grid when both vary, else one panel per run."""
    if {"model", "lr"} <= set(keys):
        return {"row": "model", "col": "lr"}
    return {"col": "run", "col_wrap": min(3, data["run"].nunique())}


def cost_vs_difficulty(runs: list[tuple[object, str]], keys: list[str], out: Path,
                       annotations: dict[str, str] | None = None, note: str = "") -> list[Path]:
    """The cost against rank; `annotations` (run label -> text) are written into each run's panel;
    `note` above the figure (which runs it shows)."""
    data = measured_costs(runs)
    if data.empty:
        return []
    sns = seaborn()
    floor = data.loc[data["cost"] > 0, "cost"].min() / 2 if (data["cost"] > 0).any() else 1e-3
    data = data.assign(cost=data["cost"].clip(lower=floor))
    facets = _facets(data, keys)
    grid = sns.relplot(data=data, x=RANK, y="cost", hue="status", style="status",
                       hue_order=[CORRECTED, CENSORED], style_order=[CORRECTED, CENSORED],
                       markers={CORRECTED: "o", CENSORED: "X"}, palette={CORRECTED: "tab:blue", CENSORED: "tab:red"},
                       s=16, alpha=0.75, height=2.6, aspect=1.3, facet_kws={"sharey": True, "sharex": True}, **facets)
    for (row, col, _), panel in grid.facet_data():  # the ranks the sample covers (no layout pass, as map_* makes)
        sns.rugplot(data=panel, x=RANK, height=0.03, color="0.3", alpha=0.3, ax=grid.facet_axis(row, col))
    grid.set(yscale="log", xlim=(0, int(data["rank_range"].max()) + 1))
    compact_ranks(grid.axes.flat)
    grid.set_axis_labels("universal difficulty rank (1 = easiest)", f"{cost_label(data['cost_name'].iloc[0])}")
    grid.set_titles(row_template="model={row_name}", col_template="lr={col_name}" if "row" in facets else "{col_name}")
    for label, text in (annotations or {}).items():
        first = data[data["run"] == label].iloc[:1]
        if first.empty:
            continue
        key = (first["model"].iloc[0], first["lr"].iloc[0]) if "row" in facets else label
        ax = grid.axes_dict.get(key)
        if ax is not None:
            ax.text(0.02, 0.97, text, transform=ax.transAxes, va="top", fontsize=6.5,
                    bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
    sns.move_legend(grid, "lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, title=note or None, frameon=False)
    return save(grid.figure, out, "cost_vs_difficulty")


def damage_vs_difficulty(runs: list[tuple[object, str]], out: Path, note: str = "") -> list[Path]:
    """What each correction did to the rest of the model (the probe's error increase, the drawdown,
    and its mean loss increase) against universal difficulty, a column per run."""
    frames = []
    for run, label in runs:
        measured = run.rows[run.rows["status"].isin(MEASURED)]
        for column, name in (("drawdown", "drawdown"),
                             ("probe_loss_increase", "probe loss increase")):
            if column in measured and measured[column].notna().any():
                frames.append(pd.DataFrame({"run": label, RANK: measured[RANK], "value": measured[column],
                                            "measure": name, "status": np.where(measured["status"] == Status.CORRECT,
                                                                                CORRECTED, CENSORED),
                                            "rank_range": run.rank_range}))
    if not frames:
        return []
    data = pd.concat(frames, ignore_index=True)
    sns = seaborn()
    grid = sns.relplot(data=data, x=RANK, y="value", row="measure", col="run", hue="status", style="status",
                       hue_order=[CORRECTED, CENSORED], style_order=[CORRECTED, CENSORED],
                       markers={CORRECTED: "o", CENSORED: "X"}, palette={CORRECTED: "tab:purple", CENSORED: "tab:red"},
                       s=16, alpha=0.75, height=2.4, aspect=1.3,
                       facet_kws={"sharey": "row", "sharex": True, "margin_titles": True})
    compact_ranks(grid.axes.flat)
    for (row, col, _), panel in grid.facet_data():
        if len(panel) >= 2:
            sns.regplot(data=panel, x=RANK, y="value", scatter=False, color="0.3", truncate=True, ci=None,
                        line_kws={"linewidth": 1}, ax=grid.facet_axis(row, col))
    grid.set(xlim=(0, int(data["rank_range"].max()) + 1))
    grid.set_titles(row_template="{row_name}", col_template="{col_name}")
    grid.set_axis_labels("universal difficulty rank (1 = easiest)", "")
    for ax in grid.axes.flat:
        ax.axhline(0, color="0.5", lw=0.8, ls="--")
    sns.move_legend(grid, "lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, title=note or None, frameon=False)
    return save(grid.figure, out, "damage_vs_difficulty")


def cost_by_decile(runs: list[tuple[object, str]], out: Path) -> list[Path]:
    data = measured_costs(runs)
    if data.empty:
        return []
    sns = seaborn()
    data = data.assign(decile=np.minimum(10, 1 + (10 * (data[RANK] - 1) // data["rank_range"])).astype(int))
    fig, ax = pyplot().subplots(figsize=(6.0, 3.6))
    sns.pointplot(data=data, x="decile", y="cost", hue="run", hue_order=list(dict.fromkeys(data["run"])),
                  estimator=np.median, errorbar=("ci", 95), n_boot=500,
                  dodge=0.4 if data["run"].nunique() > 1 else False, markersize=4, linewidth=1.2,
                  err_kws={"linewidth": 1}, ax=ax, order=sorted(data["decile"].unique()))
    ax.set_yscale("log")
    ax.set_xlabel("decile of universal difficulty over the whole data set (1 = easiest tenth)")
    ax.set_ylabel(f"median {cost_label(data['cost_name'].iloc[0])}\n(never corrected: lower bound), 95% CI")
    ax.legend(fontsize=7, title=None, loc="upper left")
    return save(fig, out, "cost_by_decile")


def association_forest(table: pd.DataFrame, out: Path) -> list[Path]:
    """rho (corrected examples) and Somers' D = 2C - 1 (every measured example) of each score against
    rank, per run, with 95% CIs; one panel per score; statistics that are not computable left out."""
    rows = []
    for _, run in table.iterrows():
        for score in SCORES + DAMAGE:
            for kind, name, scale in (("rho, corrected", f"rho_{score}", lambda v: v),
                                      ("2C - 1, never-corrected kept", f"concordance_{score}", lambda v: 2 * v - 1)):
                value = run.get(name)
                if value is not None and isinstance(value, float) and math.isfinite(value):
                    low, high = run.get(f"{name}_ci_low", math.nan), run.get(f"{name}_ci_high", math.nan)
                    rows.append({"run": run["run"], "score": score.replace("_", " "), "kind": kind,
                                 "value": scale(value), "low": scale(low), "high": scale(high)})
    if not rows:
        return []
    data = pd.DataFrame(rows)
    sns = seaborn()
    scores = list(dict.fromkeys(data["score"]))
    runs = list(dict.fromkeys(data["run"]))
    columns = min(3, len(scores))
    plt = pyplot()
    fig, axes = plt.subplots(math.ceil(len(scores) / columns), columns, squeeze=False, sharey=True,
                             figsize=(2.9 * columns + 1.6, (0.45 * len(runs) + 1.0) * math.ceil(len(scores) / columns)))
    colors = dict(zip(("rho, corrected", "2C - 1, never-corrected kept"), sns.color_palette("deep", 2), strict=True))
    for ax, score in zip(axes.flat, scores, strict=False):  # the last row may have axes to spare
        for offset, (kind, color) in zip((-0.15, 0.15), colors.items(), strict=True):
            part = data[(data["score"] == score) & (data["kind"] == kind)]
            y = np.array([runs.index(r) for r in part["run"]]) + offset
            errors = np.nan_to_num(np.vstack([part["value"] - part["low"], part["high"] - part["value"]]).clip(min=0))
            ax.errorbar(part["value"], y, xerr=errors, fmt="o", ms=3.5, color=color, capsize=2, label=kind)
        ax.axvline(0, color="0.4", lw=0.8, ls="--")
        ax.set(xlim=(-1, 1), title=score)
    for ax in list(axes.flat)[len(scores):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_yticks(range(len(runs)), runs)
    axes[0][0].invert_yaxis()
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=2, frameon=False, bbox_to_anchor=(0.5, 1.03))
    fig.supxlabel("association with universal difficulty rank (95% bootstrap CI; 0: none)")
    fig.tight_layout()
    return save(fig, out, "association_forest")


def steps_ecdf(merged: pd.DataFrame, out: Path) -> list[Path]:
    """Fraction of each run's examples corrected within s steps; curves end below 1 when some never were."""
    sns = seaborn()
    import matplotlib.ticker as ticker
    fig, ax = pyplot().subplots(figsize=(5.5, 3.6))
    lines = merged["run"].nunique()  # many settings: in order along a sequential palette
    palette = sns.color_palette("deep" if lines <= 6 else "viridis", lines)
    for (run, rows), color in zip(merged.groupby("run", sort=False), palette, strict=True):
        measured = rows[rows["status"].isin(MEASURED)]
        if "steps_to_correct" not in rows or not len(measured):
            continue
        steps = np.sort(measured.loc[measured["status"] == Status.CORRECT, "steps_to_correct"].to_numpy())
        if len(steps):
            ax.step(np.maximum(steps, 0.5), np.arange(1, len(steps) + 1) / len(measured), where="post", label=run,
                    color=color)
    if not ax.lines:
        pyplot().close(fig)
        return []
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("steps to correct (0 drawn at 0.5)")
    ax.set_ylabel("fraction of examples corrected")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="lower right") if lines <= 6 else \
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return save(fig, out, "steps_ecdf")


def loss_trajectories(runs: list[tuple[str, object]], out: Path) -> list[Path]:
    """Median loss by step per difficulty group (deciles, or fewer groups of at least 5 examples) of
    each run's examples (runs with log_steps=true). A group's curve stops where fewer than half of
    its examples are still being trained, so the median is over the majority."""
    seaborn()
    plt = pyplot()
    fig, axes = plt.subplots(1, len(runs), figsize=(4.4 * len(runs), 3.4), squeeze=False, sharey=True)
    colors = plt.get_cmap("viridis")
    for ax, (title, run) in zip(axes[0], runs, strict=True):
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
    return save(fig, out, "loss_trajectories")
