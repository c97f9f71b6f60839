"""A sweep as one unit: every job's config is checked before the first job starts, and a job that
fails at run time leaves a record in its directory while the others go on (Hydra callbacks in
conf/config.yaml, and `record_failure` in main.py)."""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from sweep.errors import UserError
from sweep.outputs import AGGREGATE_FAILURE_JSON, failed_jobs
from sweep.process import composition_message, report_errors
from sweep.run.progress import JOBS_ENV, end_sweep, start_sweep

log = logging.getLogger(__name__)

BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
# draws a shared selection itself, its searches run as tasks
STAGED_SWEEPER = "hydra_plugins.loss_to_correct.staged_sweeper.StagedSweeper"


def sweep_jobs(config: DictConfig) -> tuple[list[list[str]], set[str]]:
    """Each job's overrides, in job-number order, exactly as Hydra's basic sweeper expands the command
    line (and hydra.sweeper.params): its parser, with the config loader that expands glob() over a
    group's options, and its cartesian product, the first key varying slowest; and the swept keys."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()] + list(config.hydra.overrides.task)
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    overrides = parser.parse_overrides(arguments)
    swept = {override.get_key_element() for override in overrides if override.is_sweep_override()}
    return BasicSweeper.split_arguments(overrides, None)[0], swept


class CheckEveryJob(Callback):
    """Before a multirun launches anything: compose every job's config and check it as a job would
    before any work (schema, values, input files, the model's name), whatever the launcher; and the
    launcher's own settings. Bad jobs are one `error:` block naming each job's overrides, and nothing
    is written."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        # a sweep run again into its directory: an earlier aggregate's failure is history (this run's end
        # reports its own, aggregated or not)
        (Path(config.hydra.sweep.dir) / AGGREGATE_FAILURE_JSON).unlink(missing_ok=True)
        with report_errors():  # exits here: Hydra turns a callback's exception into a warning and goes on
            self._check(config)

    @staticmethod
    def _check(config: DictConfig) -> None:
        from hydra.core.global_hydra import GlobalHydra
        from hydra.errors import HydraException

        from sweep.run.job import check_before_work
        check_launcher(config)
        try:
            jobs, swept = sweep_jobs(config)
        except HydraException as error:  # a sweep Hydra cannot expand (e.g. interval() needs another sweeper)
            raise UserError(composition_message(error)) from None
        problems, composed = [], []
        for num, overrides in enumerate(jobs):
            try:
                job = task_config(GlobalHydra.instance().config_loader().load_sweep_config(config, overrides))
                composed.append(job)
                check_before_work(job)
            except UserError as error:
                problems.append((num, overrides, str(error)))
            except HydraException as error:  # a value the schema refuses, an unknown key or option
                problems.append((num, overrides, composition_message(error).splitlines()[0]))
        if problems:
            named = [" ".join(o for o in overrides if o.split("=", 1)[0] in swept) or " ".join(overrides)
                     for _, overrides, _ in problems]
            lines = [f"job {num} ({name}): {error}" for (num, _, error), name in zip(problems, named, strict=True)]
            raise UserError(f"{len(problems)} of the sweep's {len(jobs)} jobs cannot run, so none was started:\n"
                            + "\n".join(lines))
        from sweep.run.sample_size import sample_size_of
        from sweep.run.shared import check_shared, prepare_shared
        check_shared(composed)
        COMPOSED[str(config.hydra.sweep.dir)] = list(zip(jobs, composed, strict=True))
        log.info("all %d jobs of the sweep checked", len(jobs))
        if any(job.selection.shared for job in composed) and \
                OmegaConf.select(config, "hydra.sweeper._target_") != STAGED_SWEEPER:
            # another sweeper than ours: the selection is drawn here, its searches in this process
            prepare_shared(Path(config.hydra.sweep.dir), list(zip(jobs, composed, strict=True)))
        os.environ[JOBS_ENV] = str(len(jobs))  # for each job's progress bar, in whatever process it runs
        if OmegaConf.select(config, "hydra.launcher._target_") == BASIC_LAUNCHER:  # the jobs run in this process
            start_sweep([sample_size_of(job)[0] for job in composed], enabled=bool(config.get("progress", True)))

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        end_sweep()


# Each sweep's jobs as (overrides, task config), composed once by the check before any job starts, for
# the staged sweeper, which runs next in the same process (composing hundreds of jobs takes seconds).
COMPOSED: dict[str, list[tuple[list[str], DictConfig]]] = {}


def composed_jobs(config: DictConfig) -> list[tuple[list[str], DictConfig]]:
    """The sweep's jobs as (overrides, task config): as the check composed them, or composed now."""
    from hydra.core.global_hydra import GlobalHydra
    if str(config.hydra.sweep.dir) in COMPOSED:
        return COMPOSED[str(config.hydra.sweep.dir)]
    loader = GlobalHydra.instance().config_loader()
    return [(overrides, task_config(loader.load_sweep_config(config, overrides)))
            for overrides in sweep_jobs(config)[0]]


def task_config(config: DictConfig) -> DictConfig:
    """A job's config as its task sees it: without the `hydra` node (composed as Hydra composes the job:
    with the sweep's hydra overrides, its config search path among them)."""
    with open_dict(config):
        config.pop("hydra", None)
    return config


def check_launcher(config: DictConfig) -> None:
    """The launcher's settings that would otherwise fail once jobs start."""
    n_jobs = OmegaConf.select(config, "hydra.launcher.n_jobs")
    if n_jobs is not None and n_jobs == 0:
        raise UserError("hydra.launcher.n_jobs=0: expected the number of jobs run at once, >= 1 (or -1: one per "
                        "core)")


class ReportFailures(Callback):
    """At the end of a multirun (after its report): name the jobs that failed, and an aggregate that
    failed, and exit non-zero."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        directory = Path(config.hydra.sweep.dir)
        failed = failed_jobs(directory)
        lines = [f"{len(failed)} job{'s' * (len(failed) > 1)} of the sweep failed (the others finished, and the "
                 f"sweep's report covers them):"] if failed else []
        lines += [f"  job {job.name} ({job}): {error}" for job, error in failed]
        aggregate = directory / AGGREGATE_FAILURE_JSON
        if aggregate.exists():
            lines.append(f"the sweep's report could not be made (a bug; its traceback is in {aggregate}): "
                         f"{json.loads(aggregate.read_text())['error']}")
        if lines:
            print("error: " + "\n".join(lines), file=sys.stderr)
            sys.exit(1)
