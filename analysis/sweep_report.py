"""The report's sections for a sweep read as a grid: one headline per setting (seeds pooled), the
seeds as replicates, each numeric parameter's curve, and paired comparisons between neighbours."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.blocks import Block, estimates
from analysis.settings import grid_headline, grid_lines
from sweep.stats.estimates import with_ci
from sweep.stats.research import headline


@dataclass
class Sweep:
    """What the aggregate adds when it reads runs as a grid: the replicates table (None when no
    run differs from another in its seed alone), its statistics' reasons, and a grid table per
    numeric parameter with three or more values."""
    replicates: pd.DataFrame | None = None
    reasons: dict = field(default_factory=dict)
    grids: dict[str, pd.DataFrame] = field(default_factory=dict)


def headlines(table: pd.DataFrame, sweep: Sweep) -> list[Block]:
    """One sentence per setting (per run when no seeds are pooled), then one per grid."""
    if sweep.replicates is None:
        items = [f"**{row['run']}**: {headline(row.to_dict())}" for _, row in table.iterrows()]
    else:
        items = [f"**{row['setting']}** ({_pool(row)}): {headline(row.to_dict())}"
                 for _, row in sweep.replicates.iterrows()]
    items += [grid_headline(part, parameter) + (f" ({key})" if key else "")
              for parameter, grid in sweep.grids.items() for key, part in grid_lines(grid, parameter)]
    return [Block("h2", "Headline"), Block("list", items)]


def _pool(row: pd.Series) -> str:
    seeds = f"{int(row['n_seeds'])} seed{'s' * (row['n_seeds'] > 1)}"
    return f"{seeds} pooled, {int(row['n_examples_pooled'])} distinct examples"


def replicate_blocks(sweep: Sweep) -> list[Block]:
    """The seeds as replicates: pooled estimates per setting and the spread of the seeds' own."""
    table = sweep.replicates
    if table is None or not len(table):
        return []
    cost = next((c for c in table["cost"] if isinstance(c, str)), None)
    frame = estimates(table, sweep.reasons, [("C", f"concordance_{cost}"), ("rho", f"rho_{cost}"),
                                             ("KM median", f"km_median_{cost}")], label="setting")
    if frame is None:
        return []
    frame.insert(1, "seeds", [f"{int(n)} ({s})" for n, s in zip(table["n_seeds"], table["seeds"], strict=True)])
    frame.insert(2, "examples", [f"{int(p)} of {int(n)}" for p, n in zip(table["n_examples_pooled"],
                                                                          table["n_examples_in_seeds"], strict=True)])
    for kind, header in (("concordance", "seeds' C"), ("rho", "seeds' rho")):
        low, high = table.get(f"seed_min_{kind}_{cost}"), table.get(f"seed_max_{kind}_{cost}")
        if low is not None:
            frame[header] = [f"{a:.2f} to {b:.2f}" if math.isfinite(a) and math.isfinite(b) else "—"
                             for a, b in zip(low, high, strict=True)]
    return [Block("h2", "Seeds as replicates"),
            Block("p", f"Runs that differ only in their seed draw other samples of the same mistakes: each setting's "
                       f"statistics of {cost} are over its seeds' distinct examples pooled (an example two seeds drew "
                       f"counts once), with 95% bootstrap CIs; beside them, the range of the seeds' own estimates. "
                       f"Every pooled statistic: replicates.csv."),
            Block("table", frame)]


def grid_blocks(sweep: Sweep, figures: dict[str, list[Path]]) -> list[Block]:
    """A section per numeric parameter with three or more values: its figure and table."""
    blocks = []
    for parameter, grid in sweep.grids.items():
        blocks.append(Block("h2", f"Across {parameter}"))
        if figures.get(f"grid_{parameter}"):
            blocks.append(Block("figure", figures[f"grid_{parameter}"][0],
                                f"C, rho and ΔC against the initial loss of the loss to correct, and its Kaplan-Meier "
                                f"median, against {parameter}; 95% CIs."))
        shown = grid.copy()
        for statistic in ("C", "rho", "ΔC vs initial loss", "KM median cost"):
            shown[statistic] = [_estimate(v, lo, hi) for v, lo, hi in
                                zip(grid[statistic], grid[f"{statistic}_ci_low"], grid[f"{statistic}_ci_high"],
                                    strict=True)]
            shown = shown.drop(columns=[f"{statistic}_ci_low", f"{statistic}_ci_high"])
        blocks.append(Block("table", shown.drop(columns=["cost"])))
    return blocks


def _estimate(value, low, high) -> str:
    return "n/c" if value is None or not math.isfinite(value) else with_ci(value, low, high)


def paired_blocks(pairs: pd.DataFrame) -> list[Block]:
    """Paired comparisons between neighbouring values of one parameter (all pairs: paired.csv)."""
    if not len(pairs):
        return []
    shown = pairs[pairs["neighbours"]].drop(columns=["neighbours"])
    if not len(shown):
        return []
    note = "" if len(shown) == len(pairs) else f" ({len(shown)} of {len(pairs)}; all of them: paired.csv)"
    return [Block("h2", "Paired comparisons (runs that differ in one parameter, between neighbouring values)"),
            Block("p", f"Each run against its neighbour in the sweep's order of the parameter they differ in{note}."),
            Block("table", shown)]
