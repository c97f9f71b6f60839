"""A sweep as one unit: every job's config is checked before the first job starts, and a job that
fails at run time leaves a record in its directory while the others go on (Hydra callbacks in
conf/config.yaml, and `record_failure` in main.py)."""
from __future__ import annotations

import itertools
import json
import logging
import sys
import traceback
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from sweep.cli import report_errors
from sweep.errors import UserError

log = logging.getLogger(__name__)

FAILURE_JSON = "job_failure.json"  # in a job's directory: the error that ended it


def job_overrides(task: list[str]) -> list[list[str]]:
    """Each job's overrides, in job-number order, as Hydra's basic sweeper expands the command line's
    (the cartesian product of the swept values, the first key varying slowest)."""
    choices = []
    for override in OverridesParser.create().parse_overrides(task):
        key = override.get_key_element()
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                raise UserError(f"{override.input_line}: only lists and ranges of values can be swept here")
            choices.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            choices.append([f"{key}={override.get_value_element_as_str()}"])
    return [list(job) for job in itertools.product(*choices)]


def swept_keys(task: list[str]) -> set[str]:
    """The keys the command line sweeps over (those that tell its jobs apart)."""
    return {override.get_key_element() for override in OverridesParser.create().parse_overrides(task)
            if override.is_sweep_override()}


class CheckEveryJob(Callback):
    """Before a multirun launches anything: compose every job's config and check it as a job would
    before any work (schema, values, input files, the model's name), whatever the launcher. Bad jobs
    are one `error:` block naming each job's overrides, and nothing is written."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from hydra import compose

        from sweep.run.job import check_before_work
        task = list(config.hydra.overrides.task)
        swept, problems = swept_keys(task), []
        for num, overrides in enumerate(jobs := job_overrides(task)):
            try:
                check_before_work(compose(config_name="config", overrides=overrides))
            except UserError as error:
                named = " ".join(o for o in overrides if o.split("=", 1)[0] in swept) or " ".join(overrides)
                problems.append(f"job {num} ({named}): {error}")
        if problems:  # exits here: Hydra turns a callback's exception into a warning and goes on
            with report_errors():
                raise UserError(f"{len(problems)} of the sweep's {len(jobs)} jobs cannot run, so none was started:\n"
                                + "\n".join(problems))
        log.info("all %d jobs of the sweep checked", len(jobs))


def record_failure(out_dir: Path, error: BaseException) -> str:
    """Write the error that ended a job into its directory (FAILURE_JSON); returns its one line."""
    text = str(error).strip()
    line = text.splitlines()[0] if text else ""
    if not isinstance(error, UserError):  # a bug or a crash: say what kind
        line = f"{type(error).__name__}: {line}" if line else type(error).__name__
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / FAILURE_JSON).write_text(json.dumps(
        {"error": line, "traceback": "".join(traceback.format_exception(error))}, indent=1) + "\n")
    return line


def failed_jobs(directory: Path) -> list[tuple[Path, str]]:
    """(job directory, error line) of every failed job at or below `directory`, by job number."""
    found = [(path.parent, json.loads(path.read_text())["error"]) for path in directory.rglob(FAILURE_JSON)]
    return sorted(found, key=lambda item: (int(item[0].name) if item[0].name.isdigit() else -1, str(item[0])))


class ReportFailures(Callback):
    """At the end of a multirun (after its report): name the jobs that failed and exit non-zero."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        failed = failed_jobs(Path(config.hydra.sweep.dir))
        if failed:
            lines = "\n".join(f"  job {directory.name} ({directory}): {error}" for directory, error in failed)
            print(f"error: {len(failed)} job{'s' * (len(failed) > 1)} of the sweep failed (the others finished, and "
                  f"the sweep's report covers them):\n{lines}", file=sys.stderr)
            sys.exit(1)
