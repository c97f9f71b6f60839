"""Experiment tracking: each job as an MLflow run (nested in its sweep's parent run) or as TensorBoard
event files in its directory. A tracker only mirrors what the run writes anyway: one that fails
(a locked database, a full disk) warns once and is switched off, and no result row is lost."""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from sweep.config import LoggerConfig, Tracker
from sweep.errors import UserError
from sweep.tracking.sweep_run import TrackSweep

log = logging.getLogger(__name__)

__all__ = ["TrackSweep", "check_tracker", "open_tracker"]

PACKAGES = {Tracker.mlflow: "mlflow", Tracker.tensorboard: "tensorboard"}


def check_tracker(logger: LoggerConfig) -> None:
    """The tracker's package is installed (it is an optional extra)."""
    package = PACKAGES.get(logger.name)
    if package and importlib.util.find_spec(package) is None:
        raise UserError(f"logger={logger.name.value} needs {package}, an optional extra of this tool: "
                        f"pip install -e '.[{logger.name.value}]' (or logger=none)")


class Guarded:
    """A tracker whose every call is allowed to fail: the first failure is logged, then it is off."""

    def __init__(self, tracker, name: str):
        self.tracker, self.name = tracker, name

    def row(self, row: dict) -> None:
        """One example's results row."""
        self._call("row", row)

    def finish(self, summary: dict, directory: Path) -> None:
        """The run's end: its statistics and files."""
        self._call("finish", summary, directory)

    def abort(self, error: BaseException) -> None:
        """The run ended with `error`: the tracker's run is closed as failed, not left running."""
        self._call("abort", error)

    def _call(self, method: str, *args) -> None:
        if self.tracker is None:
            return
        try:
            getattr(self.tracker, method)(*args)
        except Exception as error:  # whatever the tracker's trouble, the run goes on
            log.warning("logger=%s failed (%s: %s); tracking is off for the rest of this job, its results "
                        "are written as usual", self.name, type(error).__name__, str(error).splitlines()[0])
            self.tracker = None


def open_tracker(logger: LoggerConfig, directory: Path, params: dict) -> Guarded:
    """The job's tracker, started (a resumed job continues its MLflow run), with `params` (the flat config)."""
    if logger.name == Tracker.mlflow:
        from sweep.tracking.mlflow_run import MlflowJob
        make = lambda: MlflowJob(logger, directory, params)
    elif logger.name == Tracker.tensorboard:
        from sweep.tracking.tensorboard_run import TensorboardJob
        make = lambda: TensorboardJob(directory, params)
    else:
        return Guarded(None, "none")  # logger=none: every call does nothing
    guarded = Guarded(None, logger.name.value)
    try:
        guarded.tracker = make()
    except Exception as error:
        log.warning("logger=%s could not start (%s: %s); this job runs without it", logger.name.value,
                    type(error).__name__, str(error).splitlines()[0])
    return guarded
