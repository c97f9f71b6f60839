"""A multirun aggregates itself: at its end, Hydra calls this callback (conf/config.yaml), which
merges the sweep's jobs into its directory (report.md, report.html, tables, figures), as
`python analysis/aggregate.py <sweep dir>` would. `aggregate=false` turns it off."""
from __future__ import annotations

import logging
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from sweep.errors import UserError
from sweep.outputs import AGGREGATE_FAILURE_JSON, record_failure

log = logging.getLogger(__name__)


class AggregateSweep(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if not config.get("aggregate", True):
            return
        from analysis.aggregate import aggregate  # imported here: a sweep that does not aggregate never loads it
        directory = Path(config.hydra.sweep.dir)
        (directory / AGGREGATE_FAILURE_JSON).unlink(missing_ok=True)
        try:
            result = aggregate([directory], directory)
        except UserError as error:  # e.g. every job failed: nothing to merge; the sweep's own errors stand
            log.warning("the sweep was not aggregated: %s", error)
            return
        except Exception as error:  # a bug: recorded, so that the sweep's end names it and exits non-zero
            log.error("the sweep's aggregate failed: %s", record_failure(directory, error, AGGREGATE_FAILURE_JSON),
                      exc_info=True)
            return
        log.info("sweep report: %s (and %s)", result["report"][1], result["report"][0])
