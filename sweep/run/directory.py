"""A run's output directory: what it holds, and resuming into it.

It records the settings that define its results (`run_identity.json`, refusing to resume under
others), persists the sampled selection (`selection.csv`, `selection.json`), appends result rows
and replaces the summary and plot atomically.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Optional

import pandas as pd
from omegaconf import OmegaConf

from sweep.config import Config, flatten
from sweep.data.examples import examples_table, table_examples
from sweep.errors import DirectoryInUse, UserError
from sweep.files import atomic_write_text
from sweep.outputs import (
    COLUMNS,
    IDENTITY_JSON,
    LOCK_FILE,
    NON_RESULT_KEYS,
    PLOT_PNG,
    PROBE_CSV,
    RESULTS_CSV,
    SELECTION_CSV,
    SELECTION_JSON,
    STEP_COLUMNS,
    STEPS_CSV,
    SUMMARY_JSON,
)
from sweep.plots import plot_loss_vs_difficulty
from sweep.rows import in_selection_order, read_rows
from sweep.run.draw import Selection
from sweep.run.results import Finished, ResultsWriter, check_layout

log = logging.getLogger(__name__)


def identity(cfg: Config) -> dict:
    """The settings that define what a run's results mean: all but how the work is executed."""
    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    return {key: value for key, value in config.items() if key not in NON_RESULT_KEYS}


class RunDirectory:
    """A run's output directory. One process writes into it at a time (`lock`)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.results_csv = self.path / RESULTS_CSV
        self.steps_csv = self.path / STEPS_CSV

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold this directory for the block: a second process is refused with the holder named.
        The lock is the kernel's (flock): it dies with its holder, so a killed run never blocks its
        resume (worker processes die with their parent too)."""
        path = self.path / LOCK_FILE
        file = open(path, "a+")
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "a process that has not yet said who it is"
            file.close()
            raise DirectoryInUse(f"{self.path} is in use by another run ({holder}); wait for it to finish, or run "
                                 f"into another directory (hydra.run.dir=... or hydra.sweep.dir=...)") from None
        file.seek(0)
        file.truncate()
        file.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        file.flush()
        try:
            yield
        finally:
            file.close()  # releases the lock

    def claim(self, settings: dict) -> None:
        """Record what this directory holds, or refuse to resume a run whose results (selection or
        rows) were made with other settings, or whose files have another version's columns."""
        check_layout(self.results_csv, COLUMNS)
        check_layout(self.steps_csv, STEP_COLUMNS)
        path = self.path / IDENTITY_JSON
        if path.exists() and self.has_results():
            previous = {key: value for key, value in json.loads(path.read_text()).items() if key != "weights"}
            self._refuse_other(previous, settings, "configuration")
        else:
            atomic_write_text(path, json.dumps(settings, indent=2, default=str))

    def claim_weights(self, weights: dict) -> None:
        """Add the pretrained weights (`digest` of their content, and where they came from) to the
        identity, or refuse to resume results that were computed from other weights."""
        path = self.path / IDENTITY_JSON
        settings = json.loads(path.read_text())
        if "weights" in settings and self.has_results():
            self._refuse_other({"digest": settings["weights"]["digest"]}, {"digest": weights["digest"]},
                               f"weights ({settings['weights'].get('source')}, now {weights.get('source')})")
        else:
            atomic_write_text(path, json.dumps({**settings, "weights": weights}, indent=2, default=str))

    def has_results(self) -> bool:
        return (self.path / SELECTION_CSV).exists() or len(self.rows()) > 0

    def _refuse_other(self, previous: dict, current: dict, what: str) -> None:
        previous, current = flatten(previous), flatten(current)
        differing = sorted(k for k in set(current) | set(previous) if current.get(k) != previous.get(k))
        if differing:
            raise UserError(f"{self.path} holds results of a different {what} (differing keys: "
                            f"{', '.join(differing)}); use a fresh output directory")

    def selection(self) -> Optional[Selection]:
        """The persisted selection, if a run already made one here."""
        path, info_path = self.path / SELECTION_CSV, self.path / SELECTION_JSON
        if not (path.exists() and info_path.exists()):
            return None
        frame = pd.read_csv(path)
        return Selection(table_examples(frame), _known(frame, "initial_loss", float), json.loads(info_path.read_text()),
                         _known(frame, "prediction", int))

    def save_selection(self, selection: Selection) -> Selection:
        chosen = selection.examples
        frame = examples_table(
            chosen, initial_loss=[selection.initial_losses.get(e.path, float("nan")) for e in chosen],
            prediction=pd.array([selection.predictions.get(e.path) for e in chosen], dtype="Int64"))
        atomic_write_text(self.path / SELECTION_CSV, frame.to_csv(index=False))
        atomic_write_text(self.path / SELECTION_JSON, json.dumps(selection.info, indent=2))
        return Selection(chosen, _known(frame, "initial_loss", float), selection.info, _known(frame, "prediction", int))

    def probe_set(self) -> Optional[pd.DataFrame]:
        """The persisted probe (path, label, rank, right_before, loss_before), if a run drew one here."""
        path = self.path / PROBE_CSV
        return pd.read_csv(path) if path.exists() else None

    def save_probe_set(self, table: pd.DataFrame) -> None:
        atomic_write_text(self.path / PROBE_CSV, table.to_csv(index=False))

    def done_paths(self) -> set[str]:
        return set(self.rows()["path"])

    @contextlib.contextmanager
    def recorder(self, log_steps: bool, arithmetic: str) -> Iterator[Callable[[Finished], None]]:
        """A function that records one finished example: its step losses first (with `log_steps`),
        then its row, stamped with the `arithmetic` that computed it (device, threads, layout), so a
        row on disk always has its steps. Steps of examples without a row (a kill between the two)
        are dropped on opening."""
        steps = None
        if log_steps:
            done = set(self.rows()["example_index"])
            kept = read_rows(self.steps_csv, STEP_COLUMNS)
            if len(kept) and not kept["example_index"].isin(done).all():
                atomic_write_text(self.steps_csv, kept[kept["example_index"].isin(done)].to_csv(index=False))
            steps = ResultsWriter(self.steps_csv, STEP_COLUMNS)
        with ResultsWriter(self.results_csv) as rows:
            def record(result: Finished) -> None:
                if steps is not None and result.losses is not None:
                    index = result.row["example_index"]
                    steps.write_many([{"example_index": index, "step": t, "loss": loss}
                                      for t, loss in enumerate(result.losses)])
                rows.write({**result.row, "arithmetic": arithmetic})
            try:
                yield record
            finally:
                if steps is not None:
                    steps.close()

    def rows(self) -> pd.DataFrame:
        """The rows written so far in selection order (workers and the engine append them as they
        finish), so that statistics over them do not depend on the order examples finished in; an
        example recorded twice (by two writers into one directory, before directories were locked)
        counts once."""
        rows, repeated = in_selection_order(read_rows(self.results_csv, COLUMNS))
        if repeated:
            log.warning("%s: %d examples recorded more than once; each counts once", self.results_csv, repeated)
        return rows

    def plot(self, rows: pd.DataFrame, title: str) -> None:
        """Draw the run's plot (replaced atomically)."""
        plot_loss_vs_difficulty(rows, self.path / PLOT_PNG, title)

    def save_summary(self, summary: dict) -> None:
        """Write the summary (replaced atomically)."""
        atomic_write_text(self.path / SUMMARY_JSON, json.dumps(summary, indent=2, default=str) + "\n")


def _known(selection: pd.DataFrame, column: str, kind: type) -> dict:
    """path -> `column` (the loss at the pretrained weights, or the prediction that made the example
    a mistake), for the selected examples that have one (older selection files have neither, and
    wrong sets from a correctness matrix no loss)."""
    if column not in selection:
        return {}
    known = selection.dropna(subset=[column])
    return {path: kind(value) for path, value in zip(known["path"], known[column], strict=True)}
