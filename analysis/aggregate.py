"""Merge runs into tables, statistics and figures.

    python analysis/aggregate.py                      # the most recent multirun sweep
    python analysis/aggregate.py DIR [DIR ...] [--out OUT] [--no-figures]

DIR may be a sweep directory, a single run directory, or a folder written by the original scripts.
Writes merged.csv (every example row of every run, with the runs' varying parameters as columns),
runs.csv (one row per run, every statistic), paired.csv, universality.csv, universality_pairs.csv,
universal_cost.csv and universality_models.csv (agreement between models), costs.parquet (the cost
matrix: a row per run and image), report.md and a self-contained report.html, and the figures (PNG and
SVG) into the sweep directory or --out. A sweep run with `python main.py -m` aggregates itself
at its end (`aggregate=false` turns that off).
"""
from __future__ import annotations

import argparse
import itertools
import logging
from pathlib import Path

import pandas as pd

from analysis import figures as plots
from analysis import study_figures as study
from analysis.costs import cost_matrix, write_cost_matrix
from analysis.explorer import write_explorer
from analysis.gallery import galleries
from analysis.pairs import paired_comparison
from analysis.parallel import run_all
from analysis.population import Population
from analysis.render import write_report
from analysis.report import build, panel_text
from analysis.runs import Run, find_run_dirs, latest_sweep, load_run, merge_shards, result_params
from analysis.settings import (
    SEED,
    evenly,
    figure_runs,
    grid_parameters,
    grid_table,
    replicates,
    settings_of,
)
from analysis.sweep_report import Sweep
from analysis.universality import model_table, universality
from sweep.errors import UserError
from sweep.files import atomic_write_text
from sweep.outputs import failed_jobs
from sweep.stats.research import run_statistics

log = logging.getLogger("aggregate")


def varying_parameters(runs: list[Run]) -> list[str]:
    """Config keys whose values differ between runs (how runs are executed and sharded excepted).
    A model preset sets several `model.*` keys (arch, package); where the model varies, the keys its
    value determines are not parameters of their own."""
    keys = sorted({k for run in runs for k in result_params(run.params) if k != "shard.count"})
    varying = [k for k in keys if len({repr(run.params.get(k)) for run in runs}) > 1]
    if "model" in varying:
        varying = [k for k in varying if not k.startswith("model.") or _varies_within_a_model(runs, k)]
    return sorted(varying, key=lambda k: ({"model": 0, "lr": 1}.get(k, 2), k))


def _varies_within_a_model(runs: list[Run], key: str) -> bool:
    values: dict[str, set] = {}
    for run in runs:
        values.setdefault(repr(run.params.get("model")), set()).add(repr(run.params.get(key)))
    return any(len(v) > 1 for v in values.values())


def label(run: Run, keys: list[str]) -> str:
    """What tells a run apart (with nothing varying: its model and lr)."""
    keys = keys or [k for k in ("model", "lr") if k in run.params]
    return ", ".join(f"{k}={run.params.get(k)}" for k in keys) or run.directory.name


def load_runs(paths: list[Path]) -> list[Run]:
    """Every run under `paths`, shards merged; a folder that cannot be read is skipped with one line."""
    runs = []
    for directory in find_run_dirs(paths):
        try:
            runs.append(load_run(directory))
        except UserError as error:
            log.warning("skipped: %s", error)
    if not runs:
        raise UserError(f"no readable run under: {', '.join(map(str, paths))}")
    return merge_shards(runs)


def aggregate(paths: list[Path], out: Path, figures: bool = True) -> dict:
    """Merge the runs under `paths` into `out`: tables, statistics, figures (unless `figures` is
    false: the tables and the report in a moment) and the report."""
    runs = load_runs(paths)
    keys = varying_parameters(runs)
    with_rows = labelled(runs, keys)
    settings = settings_of(with_rows, keys)  # runs that differ only in their seed, in the sweep's order
    with_rows = [entry for setting in settings for entry in setting.runs]

    merged = pd.concat([run.rows.assign(run=lab, run_dir=str(run.directory),
                                        **{k: run.params.get(k) for k in keys}) for run, lab in with_rows],
                       ignore_index=True)
    replicated = SEED in keys
    # each run's statistics as its job computed them at its end, where they are of its rows; else now
    missing = [run for run, _ in with_rows if run.statistics is None]
    computed = run_all([(run_statistics, run.rows) for run in missing]
                       + [(run_statistics, s.rows) for s in settings if replicated])
    fresh = dict(zip(map(id, missing), computed[:len(missing)], strict=True))
    statistics = [run.statistics or fresh[id(run)] for run, _ in with_rows]
    pooled_statistics = computed[len(missing):]
    table = pd.DataFrame([{"run": lab, "run_dir": str(run.directory), **{k: run.params.get(k) for k in keys},
                           **{column: run.selection.get(k) for k, column in SELECTION_COUNTS.items()},
                           **{f"probe_{k}": v for k, v in run.probe.items()}, **values,
                           "notes": "; ".join(run.notes)}
                          for (run, lab), (values, _) in zip(with_rows, statistics, strict=True)])
    reasons = {lab: why for (_, lab), (_, why) in zip(with_rows, statistics, strict=True)}
    pairs = paired(with_rows, keys)
    agreement = universality(with_rows, keys)
    models = model_table(table, keys)
    per_run = {lab: values for (_, lab), (values, _) in zip(with_rows, statistics, strict=True)}
    pooled, pooled_reasons = replicates(settings, per_run, pooled_statistics) if replicated else (None, {})
    by_setting = pooled if replicated else table.rename(columns={"run": "setting"})
    grids = {parameter: grid_table(by_setting, parameter, keys) for parameter in grid_parameters(keys, by_setting)}

    out.mkdir(parents=True, exist_ok=True)
    tables = {"merged.csv": merged, "runs.csv": table, "paired.csv": pairs, "universality.csv": agreement["overall"],
              "universality_pairs.csv": agreement["pairs"], "universal_cost.csv": agreement["images"],
              "universality_models.csv": models, "replicates.csv": pooled if replicated else pd.DataFrame(),
              **{f"grid_{parameter}.csv": frame for parameter, frame in grids.items()}}
    for name, frame in tables.items():
        if len(frame):
            atomic_write_text(out / name, frame.to_csv(index=False))
    write_cost_matrix(cost_matrix(merged, keys), out)
    drawn, images = {}, []
    if figures:  # per setting (seeds pooled), so that a grid's figures grow with its settings, not its runs
        drawn, images = draw(figure_runs(settings), [k for k in keys if k != SEED],
                             by_setting.rename(columns={"setting": "run"}), grids, out, agreement["matrix"], models)
        drawn["explorer"] = [write_explorer(merged, {lab: run.params.get("data.name") for run, lab in with_rows},
                                            out, f"{len(with_rows)} run{'s' * (len(with_rows) != 1)}")]
    failures = [(directory, error) for path in paths for directory, error in failed_jobs(path)]
    written = write_report(out, build(table, reasons, runs, keys, drawn, images, pairs, Population(agreement, models),
                                      failures, Sweep(pooled, pooled_reasons, grids)))
    log.info("%d runs (%d rows) -> %s", len(table), len(merged), written[1])
    return {"runs": table, "merged": merged, "pairs": pairs, "figures": drawn, "reasons": reasons,
            "universality": agreement, "galleries": images, "report": written, "replicates": pooled,
            "grids": grids}


def labelled(runs: list[Run], keys: list[str]) -> list[tuple[Run, str]]:
    """(run, label) of the runs with rows, labelled by what varies (and by directory where two runs share
    their parameters, as two sweeps may); each run's notes logged."""
    labels = [label(run, keys) for run in runs]
    if len(set(labels)) < len(labels):
        labels = [f"{lab} [{run.directory.name}]" for lab, run in zip(labels, runs, strict=True)]
    for run in runs:
        for note in run.notes:
            log.warning("%s: %s", run.directory, note)
    with_rows = [(run, lab) for run, lab in zip(runs, labels, strict=True) if len(run.rows)]
    if not with_rows:
        raise UserError("no run has any result rows yet: " + ", ".join(str(r.directory) for r in runs))
    return with_rows


def paired(with_rows: list[tuple[Run, str]], keys: list[str]) -> pd.DataFrame:
    """Paired comparisons of the runs that differ in one parameter other than the seed (runs that differ
    in their seed alone are replicates, pooled, not compared): every pair up to ALL_PAIRS_UP_TO values
    of the parameter, neighbouring values beyond."""
    orders = {k: list(dict.fromkeys(repr(run.params.get(k)) for run, _ in with_rows)) for k in keys}
    return pd.DataFrame([
        {"run_a": la, "run_b": lb, "differs_in": diff[0], **paired_comparison(a.rows, b.rows), "neighbours": near}
        for (a, la), (b, lb) in itertools.combinations(with_rows, 2)
        if len(diff := [k for k in keys if repr(a.params.get(k)) != repr(b.params.get(k))]) == 1
        and diff[0] != SEED
        and ((near := neighbours(a, b, orders[diff[0]], diff[0])) or len(orders[diff[0]]) <= ALL_PAIRS_UP_TO)])


def neighbours(a: Run, b: Run, order: list[str], key: str) -> bool:
    """Whether two runs that differ in `key` alone hold neighbouring values of it in `order` (the
    sweep's order of its values, as repr)."""
    return abs(order.index(repr(a.params.get(key))) - order.index(repr(b.params.get(key)))) == 1


def draw(with_rows: list[tuple[Run, str]], keys: list[str], table: pd.DataFrame, grids: dict[str, pd.DataFrame],
         out: Path, matrix: pd.DataFrame, models: pd.DataFrame) -> tuple[dict[str, list[Path]],
                                                                         list[tuple[str, list[Path]]]]:
    """Every figure of the merged runs (or settings), drawn side by side: name -> the files written
    (none where nothing could be drawn), and the galleries. Figures with a panel, line or row per
    run show at most MAX_PANELS, evenly spaced (the grids show every value)."""
    annotations = {row["run"]: panel_text(row) for _, row in table.iterrows()}
    panels = evenly(with_rows, MAX_PANELS)
    note = f"{len(panels)} of {len(with_rows)} settings, evenly spaced" if len(panels) < len(with_rows) else ""
    shown = [lab for _, lab in panels]
    merged = pd.concat([run.rows.assign(run=lab) for run, lab in panels], ignore_index=True)
    calls = {"cost_vs_difficulty": (plots.cost_vs_difficulty, panels, keys, out, annotations, note),
             "damage_vs_difficulty": (plots.damage_vs_difficulty, panels, out, note),
             "cost_by_decile": (plots.cost_by_decile, panels, out),
             "association_forest": (plots.association_forest, table[table["run"].isin(shown)], out),
             "steps_ecdf": (plots.steps_ecdf, merged, out),
             **{f"grid_{parameter}": (study.grid, frame, parameter, out) for parameter, frame in grids.items()},
             "galleries": (galleries, with_rows, out)}
    if len(matrix):
        calls["cost_matrix"] = (study.cost_matrix, matrix, models, out)
    trajectories = [(lab, run) for run, lab in with_rows if run.steps is not None]
    if trajectories:
        calls["loss_trajectories"] = (plots.loss_trajectories, trajectories, out)
    drawn = dict(zip(calls, run_all(list(calls.values())), strict=True))
    return drawn, drawn.pop("galleries")


MAX_PANELS = 12  # panels (or lines) of the figures drawn per run or setting
# A parameter with more values (a zoo's models): only runs of neighbouring values are compared in pairs
# (paired.csv would grow with the square of the runs; agreement between models has its own tables).
ALL_PAIRS_UP_TO = 12

# from each run's summary: the data set's images, the model's mistakes among them, the sample
SELECTION_COUNTS = {"examples": "n_images", "wrong": "n_wrong_at_pretrained", "selected": "n_selected"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", type=Path, help="sweep, run or original-output directories")
    parser.add_argument("--out", type=Path, help="output directory (default: the sweep or first directory)")
    parser.add_argument("--no-figures", action="store_true",
                        help="tables and the report only, without figures or galleries (a quick merge)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        paths = args.paths or [latest_sweep()]
        aggregate(paths, args.out or paths[0], figures=not args.no_figures)
    except UserError as error:
        parser.exit(2, f"aggregate: error: {error}\n")


if __name__ == "__main__":
    main()
