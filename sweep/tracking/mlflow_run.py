"""A job as an MLflow run (MlflowClient: no process-wide active run, so jobs run one after another in
one process stay apart): the flat config as params, loss_sum and steps_to_correct per example as
step-indexed metrics (step = example_index), every scalar statistic of the summary as a metric, the
run directory's files as artifacts. Its id is kept in the run directory, so a resumed job continues
its run; a sweep's jobs nest in the sweep's parent run (sweep_run.py)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import urlparse

from sweep.config import LoggerConfig
from sweep.tracking.metrics import example_metrics, scalars_of

RUN_JSON = "mlflow_run.json"        # in a run directory: the MLflow run it logs to
PARENT_JSON = "mlflow_parent.json"  # in a sweep directory: the sweep's parent run
ARTIFACTS = ("single_example_results.csv", "training_summary.json", "loss_vs_difficulty.png", "selection.csv",
             "probe.csv", "steps.csv", "main.log")


def tracking_uri(logger: LoggerConfig) -> str:
    """logger.tracking_uri, or a SQLite database in the launch directory (beside outputs/ and multirun/)."""
    return logger.tracking_uri or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def client_and_experiment(logger: LoggerConfig):
    """(MlflowClient, experiment id), the experiment created on first use; for a SQLite database its
    artifacts go beside it (mlartifacts/), not into the working directory."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient
    uri = tracking_uri(logger)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(logger.experiment)
    if experiment is not None:
        return client, experiment.experiment_id
    parsed = urlparse(uri)
    # sqlite:///relative.db or sqlite:////absolute.db: the path after the third slash
    artifacts = (Path(parsed.path[1:]).resolve().parent / "mlartifacts").as_uri() if parsed.scheme == "sqlite" \
        else None
    try:
        return client, client.create_experiment(logger.experiment, artifact_location=artifacts)
    except MlflowException:  # created meanwhile by a parallel job
        return client, client.get_experiment_by_name(logger.experiment).experiment_id


def resumed_or_new(client, experiment: str, record: Path, uri: str, name: str, tags: dict, params: dict) -> str:
    """The run recorded in `record` (same tracking URI) set running again, or a new one recorded there."""
    if record.exists():
        saved = json.loads(record.read_text())
        if saved.get("tracking_uri") == uri:
            client.update_run(saved["run_id"], status="RUNNING")
            return saved["run_id"]
    from mlflow.entities import Param
    run = client.create_run(experiment, run_name=name, tags=tags)
    client.log_batch(run.info.run_id, params=[Param(k, v[:6000]) for k, v in params.items()])
    record.write_text(json.dumps({"tracking_uri": uri, "run_id": run.info.run_id}) + "\n")
    return run.info.run_id


class MlflowJob:
    def __init__(self, logger: LoggerConfig, directory: Path, params: dict):
        self.client, experiment = client_and_experiment(logger)
        uri = tracking_uri(logger)
        parent = directory.parent / PARENT_JSON
        tags = {"mlflow.parentRunId": json.loads(parent.read_text())["run_id"]} if parent.exists() else {}
        name = directory.name if tags else f"{params.get('model.arch')} lr={params.get('lr')}"
        self.run_id = resumed_or_new(self.client, experiment, directory / RUN_JSON, uri, name, tags, params)

    def row(self, row: dict) -> None:
        from mlflow.entities import Metric
        stamp = int(time.time() * 1000)
        metrics = [Metric(key, value, stamp, int(row["example_index"])) for key, value in example_metrics(row).items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, summary: dict, directory: Path) -> None:
        from mlflow.entities import Metric
        stamp = int(time.time() * 1000)
        metrics = [Metric(key, value, stamp, 0) for key, value in scalars_of(summary).items()]
        for start in range(0, len(metrics), 1000):  # log_batch takes at most 1,000 metrics
            self.client.log_batch(self.run_id, metrics=metrics[start:start + 1000])
        for name in ARTIFACTS:
            if (directory / name).is_file():
                self.client.log_artifact(self.run_id, str(directory / name))
        self.client.set_terminated(self.run_id, "FINISHED" if summary.get("complete") else "KILLED")

    def abort(self, error: BaseException) -> None:
        """A job that ended with an error (KILLED: interrupted by a signal or the user; FAILED: anything else)."""
        interrupted = isinstance(error, (KeyboardInterrupt, SystemExit))
        self.client.set_terminated(self.run_id, "KILLED" if interrupted else "FAILED")
