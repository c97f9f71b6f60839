"""A sweep read as a grid: runs grouped into settings (their parameters other than the seed), seeds
pooled as replicates, and each numeric parameter with three or more values as a curve.

A setting's runs differ only in `seed`, which draws another sample of the same model's mistakes: its
statistics are computed over the pooled distinct examples of all its seeds (an example two seeds
drew counts once: in the deterministic default it gives the same row twice), and the spread between
the seeds' own estimates is reported beside them.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import pandas as pd

from analysis.runs import Run

SEED = "seed"
GRID_PARAMETERS = ("lr", "max_steps", "sample_size")  # numeric parameters drawn as curves
GRID_MIN_VALUES = 3
SPREAD = ("concordance", "rho")  # per-seed estimates whose spread between seeds is reported


@dataclass
class Setting:
    label: str
    params: dict            # the setting's values of the varying parameters other than the seed
    runs: list[tuple[Run, str]]

    @property
    def seeds(self) -> list:
        return [run.params.get(SEED) for run, _ in self.runs]

    @functools.cached_property
    def rows(self) -> pd.DataFrame:
        """The distinct examples of the setting's runs, each once (the first seed's row)."""
        rows = pd.concat([run.rows.assign(seed=run.params.get(SEED)) for run, _ in self.runs], ignore_index=True)
        return rows.drop_duplicates("path", keep="first").reset_index(drop=True) if "path" in rows else rows


def settings_of(with_rows: list[tuple[Run, str]], keys: list[str]) -> list[Setting]:
    """The runs grouped by their values of `keys` other than the seed, in order of first appearance
    (job-number order: the sweep's order of values)."""
    others = [k for k in keys if k != SEED]
    groups: dict[str, Setting] = {}
    for run, run_label in with_rows:
        params = {k: run.params.get(k) for k in others}
        name = ", ".join(f"{k}={v}" for k, v in params.items()) or "all runs"
        groups.setdefault(name, Setting(name, params, [])).runs.append((run, run_label))
    return list(groups.values())


def figure_runs(settings: list[Setting]) -> list[tuple[Run, str]]:
    """What per-run figures draw: each setting as one run, its seeds' examples pooled."""
    drawn = []
    for setting in settings:
        first, label = setting.runs[0]
        if len(setting.runs) == 1:
            drawn.append((first, label))
            continue
        params = {k: v for k, v in first.params.items() if k != SEED}
        drawn.append((Run(first.directory, params, setting.rows, selection=first.selection,
                          probe=first.probe), setting.label))
    return drawn


def evenly(items: list, most: int) -> list:
    """At most `most` of `items`, evenly spaced, the first and the last among them."""
    if len(items) <= most:
        return items
    return [items[round(i * (len(items) - 1) / (most - 1))] for i in range(most)]


def replicates(settings: list[Setting], per_run: dict[str, dict],
               pooled_statistics: list[tuple[dict, dict]]) -> tuple[pd.DataFrame, dict[str, dict]]:
    """One row per setting: its parameters, how many seeds and examples, every statistic over the
    pooled examples (`pooled_statistics`, run_statistics of each setting's rows), and for the
    primary cost the spread (sd, min, max) of the seeds' own C and rho (`per_run`: each run's
    statistics by label). Also the reasons any pooled statistic is not computable, by setting."""
    rows, reasons = [], {}
    for setting, (values, why) in zip(settings, pooled_statistics, strict=True):
        pooled = setting.rows
        reasons[setting.label] = why
        row = {"setting": setting.label, **setting.params, "n_seeds": len(setting.runs),
               "seeds": ",".join(map(str, setting.seeds)), "n_examples_pooled": len(pooled),
               "n_examples_in_seeds": sum(len(run.rows) for run, _ in setting.runs), **values}
        cost = values.get("cost")
        for kind in SPREAD:
            estimates = [per_run[label].get(f"{kind}_{cost}") for _, label in setting.runs]
            estimates = pd.Series([e for e in estimates if e is not None and math.isfinite(e)], dtype=float)
            row[f"seed_sd_{kind}_{cost}"] = estimates.std(ddof=1) if len(estimates) > 1 else math.nan
            row[f"seed_min_{kind}_{cost}"] = estimates.min() if len(estimates) else math.nan
            row[f"seed_max_{kind}_{cost}"] = estimates.max() if len(estimates) else math.nan
        rows.append(row)
    return pd.DataFrame(rows), reasons


def grid_parameters(keys: list[str], table: pd.DataFrame) -> list[str]:
    """The numeric swept parameters with at least GRID_MIN_VALUES values among the settings."""
    return [k for k in GRID_PARAMETERS if k in keys and k in table and table[k].nunique() >= GRID_MIN_VALUES]


GRID_STATISTICS = {  # name in the grid table -> statistic of the primary cost (its CI columns beside it)
    "C": "concordance_{cost}", "rho": "rho_{cost}", "ΔC vs initial loss": "delta_concordance_{cost}_vs_initial_loss",
    "KM median cost": "km_median_{cost}"}


def grid_table(table: pd.DataFrame, parameter: str, keys: list[str]) -> pd.DataFrame:
    """One row per setting, sorted by the other parameters then `parameter`: the grid statistics
    of the primary cost with their CIs."""
    others = [k for k in keys if k not in (SEED, parameter)]
    rows = []
    for _, row in table.iterrows():
        cost = row.get("cost")
        out = {**{k: row[k] for k in others}, parameter: row[parameter], "cost": cost,
               "n": row.get("n_measured")}
        for name, template in GRID_STATISTICS.items():
            statistic = template.format(cost=cost)
            for end in ("", "_ci_low", "_ci_high"):
                out[f"{name}{end}"] = row.get(f"{statistic}{end}", math.nan)
        rows.append(out)
    return pd.DataFrame(rows).sort_values([*others, parameter], kind="stable").reset_index(drop=True)


def grid_lines(grid: pd.DataFrame, parameter: str) -> list[tuple[str, pd.DataFrame]]:
    """A grid table's lines: (the other parameters' values, e.g. `model=resnet18`, or "" when there
    are none; its rows)."""
    others = [c for c in grid.columns if c not in (parameter, "cost", "n") and not c.startswith(tuple(GRID_STATISTICS))]
    if not others:
        return [("", grid)]
    return [(", ".join(f"{k}={v}" for k, v in zip(others, key if isinstance(key, tuple) else (key,), strict=True)),
             part)
            for key, part in grid.groupby(others, sort=False, dropna=False)]


def grid_headline(grid: pd.DataFrame, parameter: str) -> str:
    """Whether the association holds across the grid: at how many of its values C's CI lies above 0.5."""
    known = grid.dropna(subset=["C_ci_low"])
    if not len(known):
        return f"Across {parameter}: C is not computable at any value."
    above = int((known["C_ci_low"] > 0.5).sum())
    below = int((known["C_ci_high"] < 0.5).sum())
    values = f"{grid[parameter].min():g} to {grid[parameter].max():g}"
    if above == len(known):
        verdict = "harder mistakes cost more to correct at every value"
    elif above == 0 and below == 0:
        verdict = "no value shows an association distinguishable from none"
    else:
        verdict = f"harder mistakes cost more at {above} of {len(known)} values" + \
            (f", less at {below}" if below else "") + f", indistinguishable at {len(known) - above - below}"
    return f"Across {parameter} = {values} ({len(known)} settings): {verdict} (C's 95% CI against 0.5)."
