"""A sweep in stages: Hydra's basic sweeper, which first searches the wrong sets a shared selection
needs as tasks of the sweep's own launcher, then draws the selection, then launches the jobs.

With `selection.shared=true`, each distinct wrong set of the sweep (one per model and settings that
change its mistakes) is found by a search task (`stage=search`) on the machines that run the jobs,
never in the launching process, which on a cluster is the login node; its tasks run in
`search/<n>/` of the sweep's directory and leave the wrong set there, so that a rerun launches only
those not yet written. A search task that fails stops the sweep before the draw, naming it. A sweep
without a shared selection is the basic sweeper's, unchanged.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

from sweep.outputs import FAILURE_JSON
from sweep.run.shared import Definition, prepare_shared
from sweep.run.wrong_sets import Found

log = logging.getLogger(__name__)

SEARCH_DIR = "search"  # in the sweep's directory: one folder per search task


class StagedSweeper(BasicSweeper):
    """The basic sweeper (conf: `hydra/sweeper=staged`, the default of conf/config.yaml), with a stage of
    search tasks before a shared selection's draw."""

    def sweep(self, arguments: list[str]) -> Any:
        from sweep.multirun import composed_jobs
        jobs = composed_jobs(self.config)
        if any(cfg.selection.shared for _, cfg in jobs):
            prepare_shared(Path(self.config.hydra.sweep.dir), jobs, self.search_in_tasks)
        return super().sweep(arguments)

    def search_in_tasks(self, definitions: list[Definition]) -> dict[str, Found]:
        """Each definition's wrong set, searched by a task of this sweep's launcher (those a task of an
        earlier run of the sweep wrote are read back); a failed task stops the sweep here."""
        directory = Path(self.config.hydra.sweep.dir) / SEARCH_DIR
        found = {d.digest: Found.read(directory / str(n), d.digest) for n, d in enumerate(definitions)}
        todo = [n for n, d in enumerate(definitions) if found[d.digest] is None]
        if todo:
            log.info("searching %d wrong set%s as tasks of the sweep's launcher: %s", len(todo), "s" * (len(todo) > 1),
                     ", ".join(definitions[n].label for n in todo))
            self.launcher.launch([[*definitions[n].overrides, "stage=search", f"hydra.sweep.subdir={SEARCH_DIR}/{n}"]
                                  for n in todo], initial_job_idx=0)
        failed = []
        for n in todo:
            definition = definitions[n]
            found[definition.digest] = Found.read(directory / str(n), definition.digest)
            if found[definition.digest] is None:
                failure = directory / str(n) / FAILURE_JSON
                error = json.loads(failure.read_text())["error"] if failure.exists() else "it wrote no wrong set"
                failed.append(f"  {SEARCH_DIR}/{n} ({definition.label}): {error}")
        if failed:
            print(f"error: {len(failed)} search task{'s' * (len(failed) > 1)} of the sweep's shared selection failed, "
                  f"so no job was started (their logs are in {directory}):\n" + "\n".join(failed), file=sys.stderr)
            sys.exit(1)
        return found
