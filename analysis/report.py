"""report.md: what a sweep shows, in tables a reader can trust: every number with its n and CI,
every statistic that cannot be computed named with the reason, never a bare NaN."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from analysis.pairs import __doc__ as PAIRS_DOC
from sweep.outputs import BASELINES, EPSILON_COSTS, SCORES
from sweep.stats.research import SUBSETS, verdict
from sweep.stats.research import __doc__ as STATISTICS_DOC

COUNTS = ["run", "n_examples", "n_correct", "n_never_correct", "n_diverged", "n_unreadable", "n_reached_epsilon",
          "n_never_reached_epsilon", "frac_never_corrected", "median_steps_to_correct", "iqr_steps_to_correct",
          "median_loss_sum", "iqr_loss_sum", "median_total_loss_to_correct"]


def cell(values: pd.Series, reasons: dict, name: str) -> str:
    """An estimate as `+0.25 [+0.10, +0.40] n=50`, or `n/c (reason)`."""
    value = values.get(name, math.nan)
    if name not in reasons and (value is None or not math.isfinite(value)):
        return "—"  # the run records nothing to compute it from
    if value is None or not math.isfinite(value):
        return f"n/c ({reasons[name]})"
    low, high = values.get(f"{name}_ci_low", math.nan), values.get(f"{name}_ci_high", math.nan)
    n = values.get(f"{name}_n")
    ci = f" [{low:+.2f}, {high:+.2f}]" if math.isfinite(low) and math.isfinite(high) else \
        f" [CI n/c: {reasons.get(name, 'not computable')}]"
    return f"{value:+.2f}{ci}" + (f" n={int(n)}" if n is not None and math.isfinite(n) else "")


def _estimates_table(table: pd.DataFrame, reasons: dict, names: list[tuple[str, str]]) -> str:
    """run x (header, statistic name) table of estimates; columns no run has are left out."""
    names = [(header, name) for header, name in names if name in table]
    if not names:
        return ""
    frame = pd.DataFrame([{"run": row["run"],
                           **{header: cell(row, reasons[row["run"]], name) for header, name in names}}
                          for _, row in table.iterrows()])
    return frame.to_markdown(index=False)


def _numbers(frame: pd.DataFrame) -> str:
    """A table with numbers to 3 significant digits and `—` where a run records nothing to compute from."""
    shown = frame.apply(lambda column: column.map(lambda v: f"{v:.3g}" if isinstance(v, float) and math.isfinite(v)
                                                  else ("—" if isinstance(v, float) else v)))
    return shown.to_markdown(index=False)


def write_report(path: Path, table: pd.DataFrame, reasons: dict, pairs: pd.DataFrame, runs, keys: list[str],
                 figures: list[Path]) -> None:
    parts = ["# Sweep report", "", f"{len(table)} runs; parameters that vary: {', '.join(keys) or 'none'}.", "",
             "## Counts and costs", "", _numbers(table[[c for c in COUNTS if c in table]]), "",
             "## Does the cost to correct say more than the baselines?", ""]
    for _, row in table.iterrows():
        cost = row.get("cost")
        parts.append(f"- **{row['run']}**: " + (verdict(row.to_dict(), cost) if isinstance(cost, str) else
                                               "records no cost to correct (the original epsilon variant)."))
    parts.append("")
    for suffix, title in SUBSETS.items():
        rhos = _estimates_table(table, reasons, [(s, f"rho_{s}{suffix}") for s in SCORES])
        if rhos:
            parts += [f"## Spearman rho against universal difficulty rank: {title} (95% bootstrap CI)", "", rhos, ""]
    deltas = _estimates_table(table, reasons, [(f"Δ {b}{suffix}", f"delta_{b}{suffix}") for suffix in SUBSETS
                                               for b in BASELINES])
    partials = _estimates_table(table, reasons, [(f"partial rho{suffix}", f"partial_rho_{c}_given_initial_loss{suffix}")
                                                 for suffix in SUBSETS for c in ("loss_sum", "total_loss_to_correct")])
    if deltas:
        parts += ["## Δ = rho(cost, rank) - rho(baseline, rank) (paired bootstrap 95% CI)", "", deltas, ""]
    if partials:
        parts += ["## Partial rho of the cost and rank, given the initial loss", "", partials, ""]
    epsilon = _estimates_table(table, reasons, [(c, f"rho_{c}") for c in EPSILON_COSTS])
    if epsilon:
        parts += ["## The original epsilon variant (steps and summed loss until the loss reached 1e-3)", "", epsilon,
                  ""]
    worst = [c for c in table.columns if c.endswith("_censored_worst")]
    if worst:
        parts += ["## Spearman rho with never-corrected examples tied at the worst cost", "",
                  _numbers(table[["run", *worst]]), ""]
    if len(pairs):
        parts += ["## Paired comparisons (runs that differ in one parameter)", "", _numbers(pairs), ""]
    parts += ["## Method", "", "`n/c`: not computable, with the reason; `—`: the run records nothing to compute "
              "it from.", "", STATISTICS_DOC.strip(), "", PAIRS_DOC.strip(), ""]
    parts += ["## Figures", "", *[f"- `{f.name}`" for f in figures if f.suffix == ".png"], ""]
    notes = [f"- `{r.directory}`: {n}" for r in runs for n in r.notes]
    if notes:
        parts += ["## Notes", "", *notes, ""]
    path.write_text("\n".join(parts))
