"""The results CSV: one row per example, appended and fsynced as each finishes, torn rows dropped;
and, with log_steps, the per-step losses beside it."""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pandas as pd

from sweep.data.examples import Example
from sweep.data.real_labels import real_columns
from sweep.outputs import COLUMNS
from sweep.training.loop import Outcome
from sweep.training.stopping import Status

STEP_COLUMNS = ["example_index", "step", "loss"]


@dataclass
class Finished:
    """One example done: its results row and, with log_steps, the loss of every state evaluated."""
    row: dict
    losses: Optional[list[float]] = None


def finished(index: int, example: Example, outcome: Optional[Outcome], seconds: float,
             mistake_predictions: Optional[dict[str, int]] = None) -> Finished:
    """An example's row, and its step losses with log_steps; `mistake_predictions` (path -> class)
    are the predictions that made the examples mistakes, where the selection recorded them."""
    mistake = (mistake_predictions or {}).get(example.path)
    row = make_row(index, example, outcome, seconds, mistake)
    return Finished(row, outcome.losses if outcome is not None else None)


def make_row(index: int, example: Example, outcome: Optional[Outcome], seconds: float,
             mistake_prediction: Optional[int] = None) -> dict:
    """The results row of one example; `outcome` None means its image could not be read. The ReaL
    columns judge `mistake_prediction`, the prediction that made the example a mistake (the
    wrong-set search's), else the prediction at step 0."""
    if mistake_prediction is None and outcome is not None:
        mistake_prediction = outcome.initial_prediction
    row = {"example_index": index, "path": example.path, "universal_difficulty_rank": example.rank,
           "label": example.label, "seconds": seconds, **real_columns(example.path, example.label, mistake_prediction)}
    if outcome is None:
        return {**row, "status": Status.UNREADABLE.value, "total_loss_to_correct": -1, "steps_to_correct": -1}
    return {**row, "total_loss_to_correct": outcome.total_loss_to_correct,
            "initial_prediction": outcome.initial_prediction, "status": Status(outcome.status).value,
            "steps_to_correct": outcome.steps_to_correct, "loss_sum": outcome.loss_sum,
            "initial_loss": outcome.initial_loss, "final_loss": outcome.final_loss,
            "initial_margin": outcome.initial_margin, "initial_grad_norm": outcome.initial_grad_norm,
            "weight_distance": outcome.weight_distance, "skipped_updates": outcome.skipped_updates}


class ResultsWriter:
    """Appends rows to a CSV, each flushed and fsynced, so a crash loses no finished row."""

    def __init__(self, path: Path, columns: list[str] = COLUMNS):
        self.path = Path(path)
        _drop_torn_last_line(self.path)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self.file = open(self.path, "a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=columns)
        if new:
            self.writer.writeheader()
            self._sync()

    def write(self, row: dict) -> None:
        self.writer.writerow(row)
        self._sync()

    def write_many(self, rows: list[dict]) -> None:
        self.writer.writerows(rows)
        self._sync()

    def _sync(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _drop_torn_last_line(path: Path) -> None:
    """Cut a row left half-written by a killed process (every complete row ends with a newline)."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as file:
        data = file.read()
        if not data.endswith(b"\n"):
            file.truncate(data.rfind(b"\n") + 1)


def read_rows(path: Path, columns: list[str] = COLUMNS) -> pd.DataFrame:
    """The rows of a CSV written so far (empty if none), a torn last line ignored."""
    _drop_torn_last_line(path)
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame(columns=columns)
    return pd.read_csv(path)


