"""The results CSV: one row per example, appended and fsynced as each finishes, torn rows left out on read;
and, with log_steps, the per-step losses beside it."""
from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sweep.data.examples import Example
from sweep.data.real_labels import real_columns
from sweep.errors import UserError
from sweep.files import complete_lines, csv_header
from sweep.outputs import COLUMNS, Status
from sweep.training.loop import Outcome

log = logging.getLogger(__name__)


@dataclass
class Finished:
    """One example done: its results row, with log_steps the loss of every state evaluated, and the
    seconds its probe took (for the summary's phases)."""
    row: dict
    losses: Optional[list[float]] = None
    probe_seconds: float = 0.0


def finished(index: int, example: Example, outcome: Optional[Outcome], seconds: float,
             mistake_predictions: Optional[dict[str, int]] = None) -> Finished:
    """An example's row, and its step losses with log_steps; `mistake_predictions` (path -> class)
    are the predictions that made the examples mistakes, where the selection recorded them."""
    mistake = (mistake_predictions or {}).get(example.path)
    row = make_row(index, example, outcome, seconds, mistake)
    if outcome is None:
        return Finished(row)
    return Finished(row, outcome.losses, outcome.probe.seconds if outcome.probe is not None else 0.0)


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
        return {**row, "status": Status.UNREADABLE.value, "total_loss_to_correct": -1, "steps_to_correct": -1,
                "updates": 0}
    return {**row, "total_loss_to_correct": outcome.total_loss_to_correct,
            "initial_prediction": outcome.initial_prediction, "status": Status(outcome.status).value,
            "steps_to_correct": outcome.steps_to_correct, "loss_sum": outcome.loss_sum,
            "initial_loss": outcome.initial_loss, "final_loss": outcome.final_loss,
            "initial_margin": outcome.initial_margin, "initial_grad_norm": outcome.initial_grad_norm,
            "initial_el2n": outcome.initial_el2n,
            "weight_distance": outcome.weight_distance, "updates": outcome.steps_taken,
            "skipped_updates": outcome.skipped_updates, **(outcome.probe.columns() if outcome.probe else {})}


class ResultsWriter:
    """Appends rows to a CSV of this version's `columns`, each flushed and fsynced, so a crash loses
    no finished row. A torn last line (a writer killed mid-row) is cut on opening; a file of another
    column layout is refused, unchanged."""

    def __init__(self, path: Path, columns: list[str] = COLUMNS):
        self.path = Path(path)
        check_layout(self.path, columns)
        complete, torn = complete_lines(self.path)
        if torn:
            with open(self.path, "rb+") as file:
                file.truncate(len(complete))
        self.file = open(self.path, "a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=columns)
        if not complete:
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


def check_layout(path: Path, columns: list[str]) -> None:
    """Refuse to append to `path` if its header is not `columns` (a file of another version)."""
    header = csv_header(path)
    if header is None or header == columns:
        return
    missing, extra = [c for c in columns if c not in header], [c for c in header if c not in columns]
    differences = "; ".join(part for part in (f"missing {', '.join(missing)}" if missing else "",
                                              f"unexpected {', '.join(extra)}" if extra else "") if part) \
        or "the same columns in another order"
    raise UserError(f"{path}: written by another version of this tool, its columns differ from this version's "
                    f"({differences}); it is left untouched. Run into a fresh directory (hydra.run.dir=...), or "
                    f"move the file aside to start this run over")
