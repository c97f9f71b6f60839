"""Experiment tracking with the real clients: MLflow (a SQLite database, a parent run per sweep, a
resumed job continuing its run) and TensorBoard (event files read back); a missing extra and a
tracker failing mid-run."""
import importlib.util
import json

import pandas as pd
import pytest

from helpers.commands import run_cli
from helpers.configs import compose_config, tiny_universe_overrides
from sweep.run.job import run

# mlflow itself is imported by the tests that use it, not at collection (it takes a second)
pytestmark = pytest.mark.skipif(importlib.util.find_spec("mlflow") is None,
                                reason="the mlflow extra is not installed (pip install -e '.[mlflow]')")


@pytest.mark.slow  # two sweeps with MLflow's start-up; .ci/run runs it after the default suite
def test_a_sweep_logs_to_mlflow_as_nested_runs_and_a_rerun_adds_none(tmp_path, cache_dir):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep = tmp_path / "sweep"
    command = ["-m", "lr=3e-5,6e-5", "sample_size=6", "max_steps=60", "progress=false", "logger=mlflow",
               f"logger.tracking_uri={uri}", f"hydra.sweep.dir={sweep}", *tiny_universe_overrides(cache_dir)]
    code, output = run_cli(*command, cwd=tmp_path)
    assert code == 0, output[-2000:]
    runs = _runs(uri)
    parents = runs[runs["tags.mlflow.parentRunId"].isna()]
    jobs = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert len(parents) == 1 and len(jobs) == 2 and set(jobs["tags.mlflow.parentRunId"]) == set(parents["run_id"])
    assert sorted(jobs["params.lr"]) == ["3e-05", "6e-05"] and set(jobs["params.model.arch"]) == {"test_resnet"}
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=uri)
    for job, lr in (("0", "3e-05"), ("1", "6e-05")):
        summary = json.loads((sweep / job / "training_summary.json").read_text())
        run_id = jobs[jobs["params.lr"] == lr]["run_id"].iloc[0]
        assert jobs[jobs["params.lr"] == lr]["metrics.rho_loss_sum"].iloc[0] == summary["statistics"]["rho_loss_sum"]
        rows = pd.read_csv(sweep / job / "single_example_results.csv")
        history = client.get_metric_history(run_id, "loss_sum")
        logged = sorted((m.step, m.value) for m in history)
        written = sorted(zip(rows["example_index"], rows["loss_sum"], strict=True))
        assert [s for s, _ in logged] == [s for s, _ in written]  # step = example_index
        assert [v for _, v in logged] == pytest.approx([v for _, v in written], rel=1e-12)  # (the CSV's float parse)
        assert "single_example_results.csv" in {a.path for a in client.list_artifacts(run_id)}
    assert "report.md" in {a.path for a in client.list_artifacts(parents["run_id"].iloc[0])}
    # the same command into the same directories (its report left as it is: the parent run's
    # artifacts are checked above; here the runs are counted)
    code, output = run_cli(*command, "aggregate=false", cwd=tmp_path)
    assert code == 0, output[-2000:]
    assert len(_runs(uri)) == 3


def _runs(uri: str) -> pd.DataFrame:
    import mlflow
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=["loss-to-correct"])


def test_tensorboard_event_files_hold_the_summary(tmp_path, cache_dir):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    cfg = compose_config(*tiny_universe_overrides(cache_dir), "sample_size=6", "lr=3e-5", "max_steps=60",
                         "progress=false", "logger=tensorboard")
    summary = run(cfg, tmp_path)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert events.Scalars("rho_loss_sum")[0].value == pytest.approx(summary["statistics"]["rho_loss_sum"], rel=1e-6)
    rows = pd.read_csv(tmp_path / "single_example_results.csv")
    assert sorted((e.step, e.value) for e in events.Scalars("example/steps_to_correct")) == \
        sorted(zip(rows["example_index"], rows["steps_to_correct"].astype(float), strict=True))
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")


def test_a_missing_tracker_package_is_one_error_line_naming_the_extra(tmp_path, cache_dir, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else find_spec(name, *a))
    code, output = run_cli("logger=mlflow", "sample_size=2", f"hydra.run.dir={tmp_path / 'run'}",
                           *tiny_universe_overrides(cache_dir))
    assert code == 2 and "Traceback" not in output, output[-2000:]
    assert output.strip().splitlines()[-1] == ("error: logger=mlflow needs mlflow, an optional extra of this tool: "
                                               "pip install -e '.[mlflow]' (or logger=none)")
    assert not (tmp_path / "run" / "single_example_results.csv").exists()


def test_a_tracker_failing_mid_run_warns_once_and_loses_no_row(tmp_path, cache_dir, monkeypatch, caplog):
    from sweep.tracking.mlflow_run import MlflowJob
    calls = []

    def locked(self, row):
        calls.append(row["example_index"])
        if len(calls) == 2:
            raise RuntimeError("database is locked")
    monkeypatch.setattr(MlflowJob, "row", locked)
    cfg = compose_config(*tiny_universe_overrides(cache_dir), "sample_size=5", "max_steps=20", "progress=false",
                         "logger=mlflow", f"logger.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
                         "execution.workers=1")
    summary = run(cfg, tmp_path / "run")
    assert len(pd.read_csv(tmp_path / "run" / "single_example_results.csv")) == 5 and summary["complete"]
    assert len(calls) == 2  # off after the failure
    warnings = [r for r in caplog.records if "logger=mlflow failed" in r.getMessage()]
    assert len(warnings) == 1 and "database is locked" in warnings[0].getMessage()


@pytest.mark.parametrize("logger", ["mlflow", "tensorboard"])
def test_a_job_that_fails_closes_its_tracker(tmp_path, cache_dir, monkeypatch, logger):
    """An error mid-run: the MLflow run ends FAILED (not left RUNNING), TensorBoard's writer is closed."""
    import sweep.run.job
    from sweep.tracking.mlflow_run import RUN_JSON
    closed = []
    if logger == "tensorboard":
        pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
        from sweep.tracking.tensorboard_run import TensorboardJob
        close = TensorboardJob.abort
        monkeypatch.setattr(TensorboardJob, "abort", lambda self, error: closed.append(error) or close(self, error))

    class Failing:
        def __init__(self, lr):
            pass

        def check(self, row):
            raise RuntimeError("a failure after the first row")
    monkeypatch.setattr(sweep.run.job, "DivergenceGuard", Failing)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = compose_config(*tiny_universe_overrides(cache_dir), "sample_size=3", "max_steps=10", "progress=false",
                         f"logger={logger}", f"logger.tracking_uri={uri}", "execution.workers=1")
    with pytest.raises(RuntimeError, match="a failure after the first row"):
        run(cfg, tmp_path / "run")
    if logger == "mlflow":
        from mlflow.tracking import MlflowClient
        run_id = json.loads((tmp_path / "run" / RUN_JSON).read_text())["run_id"]
        assert MlflowClient(tracking_uri=uri).get_run(run_id).info.status == "FAILED"
    else:
        assert len(closed) == 1 and isinstance(closed[0], RuntimeError)
