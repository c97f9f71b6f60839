"""What a run directory holds: file names, result columns, statuses and scores.

One definition for the tool that writes runs (`sweep`) and the analysis that reads them.
"""
from __future__ import annotations

import json
import traceback
from enum import StrEnum
from pathlib import Path

from sweep.errors import UserError

RESULTS_CSV = "single_example_results.csv"  # the original scripts' file names
SUMMARY_JSON = "training_summary.json"
PLOT_PNG = "loss_vs_difficulty.png"
SELECTION_CSV = "selection.csv"
SELECTION_JSON = "selection.json"
IDENTITY_JSON = "run_identity.json"
STEPS_CSV = "steps.csv"  # with log_steps=true: example_index, step, loss
PROBE_CSV = "probe.csv"  # the probe set: path, label, rank, and the pretrained model's verdict on each
LOCK_FILE = ".run.lock"  # held by the one process writing into the directory
FAILURE_JSON = "job_failure.json"  # in a job's directory: the error that ended it
AGGREGATE_FAILURE_JSON = "aggregate_failure.json"  # in a sweep's directory: the error that ended its aggregate
REFUSED = "refused"  # in a sweep's directory: <job number>/FAILURE_JSON of the jobs another run's lock refused


class Status(StrEnum):
    """How an example's loop ended."""
    CORRECT = "correct"              # argmax == label at step t
    NEVER_CORRECT = "never_correct"  # still wrong after max_steps updates (censored)
    DIVERGED = "diverged"            # the loss became non-finite
    UNREADABLE = "unreadable"        # the image could not be decoded
    # the original scripts' epsilon variant: trained until the loss reached 1e-3 (read by the aggregate)
    REACHED_EPSILON = "reached_epsilon"
    NEVER_REACHED_EPSILON = "never_reached_epsilon"


MEASURED = (Status.CORRECT, Status.NEVER_CORRECT)  # examples whose cost to correct is observed or censored

# The original scripts' columns first, so downstream scripts keep working.
ORIGINAL_COLUMNS = ["example_index", "path", "total_loss_to_correct", "universal_difficulty_rank"]
COLUMNS = ORIGINAL_COLUMNS + ["label", "initial_prediction", "status", "steps_to_correct", "loss_sum",
                              "initial_loss", "final_loss", "initial_margin", "initial_grad_norm",
                              "initial_el2n", "weight_distance", "updates", "skipped_updates", "probe_images",
                              "probe_error_after", "drawdown", "probe_flips_to_wrong", "probe_flips_to_right",
                              "probe_loss_after", "probe_loss_increase", "real_labels", "label_in_real",
                              "prediction_in_real", "arithmetic", "seconds"]
# What a run computes, equal across execution paths (not the timing, nor the arithmetic's description)
OUTCOME_COLUMNS = [c for c in COLUMNS if c not in ("seconds", "arithmetic")]
STEP_COLUMNS = ["example_index", "step", "loss"]  # steps.csv
RANK = "universal_difficulty_rank"

# Scores related to difficulty: the costs to correct, then the cheap baselines at the pretrained weights.
COSTS = ["loss_sum", "total_loss_to_correct", "steps_to_correct"]
BASELINES = ["initial_loss", "initial_margin", "initial_grad_norm", "initial_el2n"]
# Baselines by the names the data-pruning literature gives them (Paul et al. 2021: the gradient norm
# and the error vector's norm at the pretrained weights are its GraNd and EL2N scores)
SCORE_NAMES = {"initial_grad_norm": "GraNd (initial_grad_norm)", "initial_el2n": "EL2N (initial_el2n)"}
SCORES = COSTS + BASELINES
# What a correction did to the rest of the model (the probe): observed for every measured example.
DAMAGE = ["drawdown", "probe_loss_increase"]
# The original epsilon variant's costs (reaching loss <= 1e-3, not correctness): never pooled with COSTS.
EPSILON_COSTS = ["loss_sum_to_epsilon", "steps_to_epsilon"]

# Config keys that do not change a run's results (how it is executed, what else it writes): left
# out of a run's identity (resuming with other values is allowed), never parameters of a sweep.
NON_RESULT_KEYS = ("execution", "progress", "cache_dir", "log_steps", "aggregate", "logger", "stage")


# The record of a failure: a job's (or a sweep's aggregate's) error, kept in its directory.
def record_failure(out_dir: Path, error: BaseException, name: str = FAILURE_JSON) -> str:
    """Write the error that ended a job into its directory (FAILURE_JSON); returns its one line."""
    text = str(error).strip()
    line = text.splitlines()[0] if text else ""
    if not isinstance(error, UserError):  # a bug or a crash: say what kind
        line = f"{type(error).__name__}: {line}" if line else type(error).__name__
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / name).write_text(json.dumps(
        {"error": line, "traceback": "".join(traceback.format_exception(error))}, indent=1) + "\n")
    return line


def clear_failure(directory: Path) -> None:
    """Remove the record of an earlier failure from a job's directory (the job is run again)."""
    (directory / FAILURE_JSON).unlink(missing_ok=True)


def refusal_directory(sweep_dir: Path, job_num: int) -> Path:
    """Where a job refused by another process's hold on its directory records that: in the sweep's
    directory, not the held one (whose run is healthy and not this job's)."""
    return sweep_dir / REFUSED / str(job_num)


def failed_jobs(directory: Path) -> list[tuple[Path, str]]:
    """(job directory, error line) of every failed job at or below `directory`, by job number."""
    found = [(path.parent, json.loads(path.read_text())["error"]) for path in directory.rglob(FAILURE_JSON)]
    return sorted(found, key=lambda item: (int(item[0].name) if item[0].name.isdigit() else -1, str(item[0])))
