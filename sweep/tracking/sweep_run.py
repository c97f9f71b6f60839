"""logger=mlflow in a multirun: a parent run for the sweep, created before its jobs (which nest in it)
and given the sweep's report as artifacts at its end; rerun into the same sweep directory, it is
reused."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from sweep.config import LoggerConfig, Tracker

log = logging.getLogger(__name__)
REPORT = ("report.md", "report.html", "runs.csv", "replicates.csv", "paired.csv")


def _logger(config: DictConfig) -> LoggerConfig | None:
    logger = OmegaConf.to_object(config.logger) if "logger" in config else None
    return logger if logger is not None and logger.name == Tracker.mlflow else None


class TrackSweep(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        logger = _logger(config)
        if logger is None:
            return
        from sweep.tracking.mlflow_run import PARENT_JSON, client_and_experiment, resumed_or_new, tracking_uri
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        try:
            client, experiment = client_and_experiment(logger)
            resumed_or_new(client, experiment, sweep_dir / PARENT_JSON, tracking_uri(logger), sweep_dir.name, {},
                           {"sweep": " ".join(config.hydra.overrides.task)})
        except Exception as error:
            log.warning("logger=mlflow: no parent run for the sweep (%s); its jobs log as separate runs", error)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        logger = _logger(config)
        if logger is None:
            return
        from sweep.tracking.mlflow_run import PARENT_JSON, client_and_experiment
        sweep_dir = Path(config.hydra.sweep.dir)
        if not (sweep_dir / PARENT_JSON).exists():
            return
        try:
            client, _ = client_and_experiment(logger)
            run_id = json.loads((sweep_dir / PARENT_JSON).read_text())["run_id"]
            for name in REPORT:
                if (sweep_dir / name).is_file():
                    client.log_artifact(run_id, str(sweep_dir / name))
            client.set_terminated(run_id)
        except Exception as error:
            log.warning("logger=mlflow: the sweep's report was not logged (%s)", error)
