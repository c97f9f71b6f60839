"""Find run directories and load each run's rows and parameters (ours, or the original scripts')."""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from sweep.config import flatten
from sweep.data.imagenet_classes import synset_label
from sweep.data.real_labels import real_columns
from sweep.errors import UserError
from sweep.outputs import FAILURE_JSON, NON_RESULT_KEYS, RANK, RESULTS_CSV, STEPS_CSV, SUMMARY_JSON, Status
from sweep.rows import in_selection_order, read_rows
from sweep.stats.research import STATISTICS_VERSION

log = logging.getLogger("aggregate")


@dataclass
class Run:
    directory: Path
    params: dict                       # flattened config (ours) or {"model": <folder name>} (original scripts)
    rows: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    steps: pd.DataFrame | None = None  # steps.csv (log_steps=true): example_index, step, loss
    selection: dict = field(default_factory=dict)  # the summary's counts: examples, wrong, unreadable, selected
    probe: dict = field(default_factory=dict)      # the summary's probe: size, error_before, loss_before
    statistics: tuple[dict, dict] | None = None    # the summary's (values, reasons), where they are of these rows

    @property
    def rank_range(self) -> int:
        """The largest difficulty rank of the data set, as far as known: its number of images, or the
        largest rank in the rows where the ranks come from a longer order (a sample of ImageNet's
        validation images ranked among all 50,000)."""
        ranks = self.rows[RANK].dropna() if RANK in self.rows else pd.Series(dtype=float)
        return max(int(self.selection.get("examples") or 0), int(ranks.max()) if len(ranks) else 0)


def latest_sweep(root: Path = Path("multirun")) -> Path:
    """The most recent `multirun/<date>/<time>-<pid>` directory."""
    sweeps = [p for p in root.glob("*/*") if p.is_dir()]
    if not sweeps:
        raise UserError(f"no sweep found under {root.resolve()}; pass run or sweep directories explicitly")
    return max(sweeps, key=lambda p: (p.parent.name, p.name[:8], p.stat().st_mtime))


def find_run_dirs(paths: list[Path]) -> list[Path]:
    """Every directory at or below `paths` that holds a results CSV or an original summary JSON."""
    found = []
    for path in paths:
        if not path.exists():
            raise UserError(f"{path}: no such file or directory")
        found += [p.parent for name in (RESULTS_CSV, SUMMARY_JSON) for p in path.rglob(name)]
    if not found:
        raise UserError(f"no {RESULTS_CSV} (or original {SUMMARY_JSON}) found under: {', '.join(map(str, paths))}")
    return sorted(set(found), key=natural_order)


def natural_order(path: Path) -> tuple:
    """A path's sort key with numbers compared as numbers: a sweep's jobs 0, 1, 2, ..., 10 in job order."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in path.parts)


def load_run(directory: Path) -> Run:
    """Rows and parameters of one run, ours or the original scripts' (their columns normalised, and noted)."""
    hydra_config = directory / ".hydra" / "config.yaml"
    if hydra_config.exists():
        params = flatten(OmegaConf.to_container(OmegaConf.load(hydra_config)))
        params = {("model" if k == "model.arch" else k): v for k, v in params.items()}
        rows, repeated = in_selection_order(read_rows(directory / RESULTS_CSV))
        notes = [f"{repeated} examples recorded more than once: each counts once"] if repeated else []
        summary = _summary(directory / SUMMARY_JSON)
        selection, probe = (None, {}) if summary is None else (summary.get("selection", {}), summary.get("probe", {}))
        statistics = _statistics(summary, rows)
        if (directory / FAILURE_JSON).exists():
            notes.append(f"failed: {json.loads((directory / FAILURE_JSON).read_text())['error']}; partial rows")
        elif len(rows) and selection is None:
            notes.append("in progress or interrupted (no training_summary.json): partial rows")
    else:
        selection, probe, statistics = None, {}, None
        params = {"model": directory.name}
        rows, notes = _original_rows(directory)
    if rows.empty:
        notes.append("no rows yet")
    steps = read_rows(directory / STEPS_CSV)
    return Run(directory, params, rows, notes, steps if len(steps) else None, selection or {}, probe or {},
               statistics)


def _statistics(summary: dict | None, rows: pd.DataFrame) -> tuple[dict, dict] | None:
    """The statistics the job computed at its end, when they are of these rows (every row counted then,
    none since) and computed as this version computes them; else None (the aggregate computes them)."""
    if not summary or summary.get("statistics_version") != STATISTICS_VERSION or "statistics" not in summary:
        return None
    if summary.get("examples_processed") != len(rows):
        return None
    values = {k: math.nan if v is None else v for k, v in summary["statistics"].items()}
    return values, summary.get("not_computable", {})


def _summary(path: Path) -> dict | None:
    """A run's summary ({} where it cannot be read), None without one (a run in progress)."""
    if not path.exists():
        return None
    try:
        summary = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return summary if isinstance(summary, dict) else {}


def _original_rows(directory: Path) -> tuple[pd.DataFrame, list[str]]:
    """The rows the original scripts wrote (their CSV, and the `results` of their summary JSON),
    in our columns. Their three variants: steps to correct (1-based steps, converted to our t),
    summed loss to correct (`total_loss_to_correct`) and the epsilon variant (steps and summed loss
    until the loss reached 1e-3: `steps_to_epsilon`, `loss_sum_to_epsilon`, never pooled with "to correct")."""
    notes = ["the original scripts' output (no .hydra/config.yaml): parameters unknown"]
    rows = read_rows(directory / RESULTS_CSV)
    summary = _original_summary(directory / SUMMARY_JSON)
    if summary is not None and (rows.empty or "total_loss_to_correct" not in rows):
        if rows.empty:
            rows = summary
        elif "total_loss_to_correct" in summary and set(summary["path"]) == set(rows["path"]):
            rows = rows.merge(summary[["path", "total_loss_to_correct"]], on="path", how="left")
        notes.append(f"costs from the results list of its {SUMMARY_JSON}")
    if rows.empty:
        return rows, notes
    missing = {"path", RANK} - set(rows.columns)
    if missing:
        raise UserError(f"{directory / RESULTS_CSV}: columns {list(rows.columns)}; expected at least path and {RANK} "
                        f"with one of steps_to_correct, total_loss_to_correct or total_steps_to_epsilon")
    if "total_steps_to_epsilon" in rows:
        rows = rows.rename(columns={"total_steps_to_epsilon": "steps_to_epsilon",
                                    "total_loss_sum": "loss_sum_to_epsilon"})
        rows["status"] = np.where(rows["steps_to_epsilon"] >= 0, Status.REACHED_EPSILON, Status.NEVER_REACHED_EPSILON)
        notes.append("epsilon variant: steps and summed loss until the loss reached epsilon, reported as "
                     "steps_to_epsilon and loss_sum_to_epsilon (original counting), not as costs to correct")
        return rows, notes
    if "steps_to_correct" in rows:
        rows["steps_to_correct"] = np.where(rows["steps_to_correct"] >= 1, rows["steps_to_correct"] - 1, -1)
        rows["status"] = np.where(rows["steps_to_correct"] >= 0, Status.CORRECT, Status.NEVER_CORRECT)
        notes.append("original 1-based steps converted to t (steps - 1; the original checked the prediction of "
                     "the state before each update)")
    if "total_loss_to_correct" in rows:
        corrected = rows["total_loss_to_correct"] >= 0
        if "status" in rows and (corrected != (rows["status"] == Status.CORRECT)).any():
            notes.append("its summed losses and its steps disagree on which examples were corrected")
        rows["status"] = np.where(corrected, Status.CORRECT, Status.NEVER_CORRECT)
    if "status" not in rows:
        raise UserError(f"{directory / RESULTS_CSV}: columns {list(rows.columns)}; expected one of steps_to_correct, "
                        f"total_loss_to_correct or total_steps_to_epsilon beside path and {RANK}")
    return _with_real_labels(rows), notes


def _with_real_labels(rows: pd.DataFrame) -> pd.DataFrame:
    """The ReaL columns the original scripts did not write, where the path names an ImageNet validation
    image and its synset (their rows hold no prediction, so prediction_in_real stays unknown)."""
    labels = [synset_label(p) for p in rows["path"]]
    real = [real_columns(p, y, None) if y is not None else real_columns("", 0, None)
            for p, y in zip(rows["path"], labels, strict=True)]
    return rows.assign(**pd.DataFrame(real, index=rows.index))


def _original_summary(path: Path) -> pd.DataFrame | None:
    """The `results` list of an original summary JSON as rows in our column names, or None."""
    if not path.exists():
        return None
    try:
        summary = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: not valid JSON ({error}); expected a training summary") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("results"), list) or not summary["results"]:
        return None
    results = pd.DataFrame(summary["results"])
    if "path" not in results or "rank" not in results:
        raise UserError(f"{path}: its results entries have keys {list(results.columns)}; expected path, rank and "
                        f"total_loss (or total_steps)")
    renamed = results.rename(columns={"rank": RANK, "total_loss": "total_loss_to_correct",
                                      "total_steps": "total_steps_to_epsilon"})
    return renamed.assign(example_index=range(len(renamed)))


def result_params(params: dict) -> dict:
    """The parameters that define a run's results: all but how it was executed and what else it wrote."""
    return {k: v for k, v in params.items() if k.split(".")[0] not in NON_RESULT_KEYS}


def merge_shards(runs: list[Run]) -> list[Run]:
    """Runs that differ only in `shard.index` (with shard.count > 1) become one run over all their
    rows, whatever their execution settings (threads, workers, device...) or log_steps."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        sharded = (run.params.get("shard.count") or 1) > 1
        key = repr(sorted((k, repr(v)) for k, v in result_params(run.params).items() if k != "shard.index")) \
            if sharded else str(run.directory)
        groups.setdefault(key, []).append(run)
    merged = []
    for group in groups.values():
        if (group[0].params.get("shard.count") or 1) == 1:
            merged += group
            continue
        count = group[0].params["shard.count"]
        indices = sorted(run.params["shard.index"] for run in group)
        rows = pd.concat([run.rows for run in group], ignore_index=True)
        rows, _ = in_selection_order(rows)
        notes = [n for run in group for n in run.notes] + [f"merged shards {indices} of {count}"]
        missing = sorted(set(range(count)) - set(indices))
        if missing:
            notes.append(f"shards {missing} of {count} missing: statistics cover part of the selection")
        directory = Path(os.path.commonpath([str(run.directory) for run in group]))
        params = {k: v for k, v in group[0].params.items() if k != "shard.index"}
        steps = [run.steps for run in group if run.steps is not None]
        merged.append(Run(directory, params, rows, notes, pd.concat(steps, ignore_index=True) if steps else None,
                          group[0].selection, group[0].probe))
    return merged
