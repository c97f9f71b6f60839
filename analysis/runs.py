"""Find run directories and load each run's rows and parameters (ours, or the original scripts')."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from sweep.config import flatten
from sweep.schema import RESULTS_CSV, SUMMARY_JSON, Status

# Columns of the original scripts' later versions, mapped to ours.
LEGACY_COLUMNS = {"total_steps_to_epsilon": "steps_to_correct", "total_loss_sum": "loss_sum"}

log = logging.getLogger(__name__)


@dataclass
class Run:
    directory: Path
    params: dict                       # flattened config (ours) or {"model": <folder name>} (original scripts)
    rows: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def latest_sweep(root: Path = Path("multirun")) -> Path:
    """The most recent `multirun/<date>/<time>-<pid>` directory."""
    sweeps = [p for p in root.glob("*/*") if p.is_dir()]
    if not sweeps:
        raise FileNotFoundError(f"no sweep found under {root.resolve()}; pass run or sweep directories explicitly")
    return max(sweeps, key=lambda p: (p.parent.name, p.name[:8], p.stat().st_mtime))


def find_run_dirs(paths: list[Path]) -> list[Path]:
    """Every directory at or below `paths` that holds a results CSV."""
    found = []
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or directory")
        found += [p.parent for p in sorted(path.rglob(RESULTS_CSV))]
    if not found:
        raise FileNotFoundError(f"no {RESULTS_CSV} found under: {', '.join(map(str, paths))}")
    return sorted(set(found))


def load_run(directory: Path) -> Run:
    """Rows and parameters of one run; older column sets are normalised and noted."""
    notes = []
    try:
        rows = pd.read_csv(directory / RESULTS_CSV)
    except pd.errors.EmptyDataError:
        rows = pd.DataFrame()
    hydra_config = directory / ".hydra" / "config.yaml"
    if hydra_config.exists():
        params = flatten(OmegaConf.to_container(OmegaConf.load(hydra_config)))
        params = {("model" if k == "model.arch" else k): v for k, v in params.items()}
    else:
        params = {"model": directory.name}
        notes.append("no .hydra/config.yaml: parameters unknown (original scripts' output?)")
    renamed = {old: new for old, new in LEGACY_COLUMNS.items() if old in rows.columns and new not in rows.columns}
    if renamed:
        rows = rows.rename(columns=renamed)
        notes.append("legacy columns " + ", ".join(f"{a} -> {b}" for a, b in renamed.items()))
    if len(rows) and "status" not in rows.columns:
        rows["status"] = rows["steps_to_correct"].map(lambda s: Status.CORRECT if s >= 0 else Status.NEVER_CORRECT)
        notes.append("no status column: derived from steps_to_correct (-1 = never corrected)")
    if rows.empty:
        notes.append("no rows yet")
    summary = directory / SUMMARY_JSON
    if hydra_config.exists() and not summary.exists() and len(rows):
        notes.append("in progress or interrupted (no training_summary.json): partial rows")
    return Run(directory, params, rows, notes)


def merge_shards(runs: list[Run]) -> list[Run]:
    """Runs that differ only in `shard.index` (with shard.count > 1) become one run over all their rows."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        sharded = (run.params.get("shard.count") or 1) > 1
        key = repr(sorted((k, repr(v)) for k, v in run.params.items() if k != "shard.index")) if sharded \
            else str(run.directory)
        groups.setdefault(key, []).append(run)
    merged = []
    for group in groups.values():
        if (group[0].params.get("shard.count") or 1) == 1:
            merged += group
            continue
        count = group[0].params["shard.count"]
        indices = sorted(run.params["shard.index"] for run in group)
        rows = pd.concat([run.rows for run in group], ignore_index=True)
        if "example_index" in rows:
            rows = rows.sort_values("example_index", kind="stable").drop_duplicates("path").reset_index(drop=True)
        notes = [n for run in group for n in run.notes] + [f"merged shards {indices} of {count}"]
        missing = sorted(set(range(count)) - set(indices))
        if missing:
            notes.append(f"shards {missing} of {count} missing: statistics cover part of the selection")
        directory = Path(os.path.commonpath([str(run.directory) for run in group]))
        params = {k: v for k, v in group[0].params.items() if k != "shard.index"}
        merged.append(Run(directory, params, rows, notes))
    return merged
