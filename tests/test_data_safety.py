"""Data safety: one writer per run directory, no process outliving its run, results files of another
layout refused untouched, torn lines left out everywhere, the weights in the run's identity,
throughput and nondeterminism recorded honestly, and the statistics' edge cases."""
import io
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from scipy import stats

from analysis.aggregate import aggregate
from analysis.pairs import paired_comparison
from helpers.commands import main_command, run_cli, wait_for_rows
from helpers.configs import compose_config, tiny_universe_overrides
from sweep.outputs import COLUMNS, OUTCOME_COLUMNS
from sweep.run.directory import RunDirectory
from sweep.run.job import run
from sweep.stats.research import run_statistics
from sweep.training.engine import BatchedTrainer

RUN = ["lr=1e-5", "sample_size=6", "max_steps=300", "progress=false"]


def outcomes(directory: Path) -> pd.DataFrame:
    rows = pd.read_csv(directory / "single_example_results.csv")
    return rows[OUTCOME_COLUMNS].sort_values("example_index").reset_index(drop=True)


def children(pid: int) -> list[int]:
    """The process ids whose parent is `pid` (Linux's /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_run_into_a_directory_held_by_another_is_refused_untouched(tmp_path, cache_dir):
    out = tmp_path / "run"
    with RunDirectory(out).lock():  # as another run holds it (flock refuses a second open file, same process or not)
        code, output = run_cli(*RUN, f"hydra.run.dir={out}", *tiny_universe_overrides(cache_dir))
    assert code == 2 and "Traceback" not in output, output[-2000:]
    last = output.strip().splitlines()[-1]
    assert last.startswith(f"error: {out} is in use by another run (pid {os.getpid()} on ")
    assert sorted(p.name for p in out.iterdir() if p.name != ".hydra") == [".run.lock", "main.log"]


@pytest.mark.slow  # two processes; the test above refuses a run while another open file holds the lock
def test_a_second_process_into_a_directory_in_use_is_refused(tmp_path, cache_dir):
    out = tmp_path / "run"
    slow = [*RUN, "sample_size=3", "lr=1e-8", "max_steps=150", "execution.workers=1"]  # a few s of training
    arguments = [*slow, f"hydra.run.dir={out}", *tiny_universe_overrides(cache_dir)]
    first = subprocess.Popen(main_command(*arguments), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / ".run.lock").exists() or not (out / ".run.lock").read_text():  # the first holds the directory
        assert first.poll() is None and time.time() < deadline
        time.sleep(0.05)
    code, output = run_cli(*arguments)  # the second: this process
    assert code == 2 and "Traceback" not in output, output[-2000:]
    last = output.strip().splitlines()[-1]
    assert last.startswith(f"error: {out} is in use by another run (pid {first.pid} on ")
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr[-2000:]
    rows = pd.read_csv(out / "single_example_results.csv")
    selection = pd.read_csv(out / "selection.csv")
    assert sorted(rows["path"]) == sorted(selection["path"]) and len(rows) == 3
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["complete"] and summary["examples_processed"] == 3


def test_no_process_of_the_run_outlives_a_sigkill_of_the_main_process(tmp_path, cache_dir):
    out = tmp_path / "run"
    slow = [*RUN, "lr=1e-8", "max_steps=20000"]  # examples that take minutes: orphans would go on computing
    process = subprocess.Popen(main_command(*slow, "execution.workers=2", f"hydra.run.dir={out}",
                                            *tiny_universe_overrides(cache_dir)),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(workers := children(process.pid)) < 2:
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.1)
    time.sleep(1)  # training under way
    process.kill()
    process.wait()
    deadline = time.time() + 8
    while time.time() < deadline and any(alive(pid) for pid in workers):
        time.sleep(0.1)
    assert not any(alive(pid) for pid in workers)
    code, output = run_cli(*slow, "max_steps=3", "execution.workers=2", f"hydra.run.dir={out}",
                           *tiny_universe_overrides(cache_dir))
    assert code == 2 and "holds results of a different configuration" in output, output[-2000:]  # not "in use":
    # the dead run's lock died with it


def test_sigterm_to_the_process_group_hands_back_and_resumes(tmp_path, cache_dir):
    """As a scheduler sends it: to the main process and its workers together."""
    out, args = tmp_path / "run", [*RUN, "sample_size=5", "execution.workers=2"]
    process = subprocess.Popen(main_command(*args, f"hydra.run.dir={out}", *tiny_universe_overrides(cache_dir)),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    wait_for_rows(out / "single_example_results.csv", 1, process)
    workers = children(process.pid)
    os.killpg(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0 and "stopped by SIGTERM" in stderr and "to resume" in stderr, stderr[-2000:]
    assert not any(alive(pid) for pid in workers)
    kept = outcomes(out)
    assert 1 <= len(kept) < 5 and (out / "training_summary.json").exists()
    code, output = run_cli(*args, f"hydra.run.dir={out}", *tiny_universe_overrides(cache_dir))
    assert code == 0, output[-2000:]
    resumed = outcomes(out)
    assert len(resumed) == 5 and resumed["path"].is_unique
    pd.testing.assert_frame_equal(resumed[resumed["path"].isin(kept["path"])].reset_index(drop=True), kept)


def test_a_results_file_of_another_layout_is_refused_and_left_untouched(tmp_path, cache_dir):
    out = tmp_path / "run"
    code, output = run_cli(*RUN, "sample_size=2", "max_steps=3", f"hydra.run.dir={out}",
                           *tiny_universe_overrides(cache_dir))
    assert code == 0, output[-2000:]
    results = out / "single_example_results.csv"
    older = pd.read_csv(results).drop(columns=["arithmetic", "updates"]).iloc[:1]  # as an older version wrote it
    older.to_csv(results, index=False)
    before = results.read_bytes()
    code, output = run_cli(*RUN, "sample_size=2", "max_steps=3", f"hydra.run.dir={out}",
                           *tiny_universe_overrides(cache_dir))
    assert code == 2 and "Traceback" not in output, output[-2000:]
    last = output.strip().splitlines()[-1]
    assert last.startswith(f"error: {results}: written by another version") and "missing updates, arithmetic" in last
    assert results.read_bytes() == before


def test_the_aggregate_leaves_a_torn_last_line_out(tmp_path, cache_dir, caplog):
    out = tmp_path / "sweep" / "0"
    cfg = compose_config(*tiny_universe_overrides(cache_dir), *RUN, "sample_size=3", "max_steps=5")
    run(cfg, out)  # in this process without Hydra's logging set-up, which would take the log from caplog
    (out / ".hydra").mkdir()
    OmegaConf.save(cfg, out / ".hydra" / "config.yaml")
    results = out / "single_example_results.csv"
    with open(results, "a") as file:
        file.write("7,/elsewhere/x.png,0.12")  # a kill in the middle of a row
    torn = results.read_bytes()
    merged = aggregate([tmp_path / "sweep"], tmp_path / "agg", figures=False)["merged"]
    assert len(merged) == 3 and "/elsewhere/x.png" not in set(merged["path"])
    assert "1 torn last line" in caplog.text and results.read_bytes() == torn


def test_resuming_with_other_weights_at_the_same_path_is_refused(tmp_path, cache_dir):
    from helpers.configs import TINY_UNIVERSE
    from sweep.data.demo import open_demo
    checkpoint = tmp_path / "weights.pth"
    torch.save(open_demo(dict(TINY_UNIVERSE), cache_dir).pretrained("test_resnet").state_dict(), checkpoint)
    args = [*RUN, "sample_size=2", "max_steps=3", f"model.checkpoint={checkpoint}", f"hydra.run.dir={tmp_path / 'run'}",
            *tiny_universe_overrides(cache_dir)]
    code, output = run_cli(*args)
    assert code == 0, output[-2000:]
    identity = json.loads((tmp_path / "run" / "run_identity.json").read_text())
    assert identity["weights"]["source"] == f"model.checkpoint={checkpoint}"
    assert len(identity["weights"]["digest"]) == 16
    state = torch.load(checkpoint, weights_only=True)
    state["fc.bias"] = state["fc.bias"] + 1e-3  # the checkpoint file changes, its path does not
    torch.save(state, checkpoint)
    code, output = run_cli(*args)
    assert code == 2 and "holds results of a different weights" in output, output[-2000:]
    assert "(differing keys: digest)" in output


def test_throughput_is_wall_clock_and_every_row_says_its_arithmetic(tmp_path, cache_dir):
    cfg = compose_config(*tiny_universe_overrides(cache_dir), *RUN, "execution.workers=2")
    summary = run(cfg, tmp_path)
    rows = pd.read_csv(tmp_path / "single_example_results.csv")
    throughput = summary["throughput"]
    assert throughput["updates"] == summary["optimizer_updates"] == rows["updates"].sum() > 0
    assert throughput["updates_per_second"] == pytest.approx(throughput["updates"] / throughput["training_seconds"])
    assert throughput["updates_per_second_per_worker"] == pytest.approx(throughput["updates_per_second"] / 2)
    assert rows["seconds"].sum() > throughput["training_seconds"]  # two workers: per-example time adds up to more
    assert set(rows["arithmetic"]) == {"CPU, 1 torch thread, contiguous"}
    assert summary["execution"]["arithmetic_of_rows"] == {"CPU, 1 torch thread, contiguous": 6}


def test_out_of_gpu_memory_halves_k_and_keeps_the_outcomes(tmp_path, cache_dir, monkeypatch, caplog):
    engine = ["execution.workers=1", "execution.parallel=4", "execution.kernels=exact", "max_steps=40", "sample_size=4"]
    simple = outcomes_of(tmp_path / "simple", cache_dir, "execution.workers=1", "execution.parallel=1", "max_steps=40",
                         "sample_size=4")
    step, calls = BatchedTrainer._loss, []

    def flaky(self, *args):
        calls.append(1)
        if len(calls) == 20:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return step(self, *args)

    monkeypatch.setattr(BatchedTrainer, "_loss", flaky)
    got = outcomes_of(tmp_path / "engine", cache_dir, *engine)
    assert "out of GPU memory" in caplog.text and "with K=2 copies" in caplog.text
    exact = ["example_index", "path", "status", "steps_to_correct", "initial_prediction"]
    pd.testing.assert_frame_equal(got[exact], simple[exact])
    assert ((got["loss_sum"] - simple["loss_sum"]).abs() <= 1e-4 * simple["loss_sum"]).all()


def outcomes_of(out: Path, cache_dir: Path, *overrides: str) -> pd.DataFrame:
    run(compose_config(*tiny_universe_overrides(cache_dir), *RUN, "execution.threads=1", *overrides), out)
    return outcomes(out)


def test_nondeterministic_operations_are_recorded_in_every_job_of_a_process():
    import warnings

    from sweep.training.hardware import nondeterministic_operations

    def operation():  # one call site, as torch's kernels warn from theirs
        warnings.warn("index_add_cuda_ does not have a deterministic implementation, but you set ...",
                      UserWarning, stacklevel=1)

    jobs = []
    for _ in range(2):  # two sequential jobs of a multirun
        with pytest.warns(UserWarning), nondeterministic_operations() as recorded:
            operation()
            operation()
        jobs.append(recorded)
    assert jobs == [["index_add_cuda_"], ["index_add_cuda_"]]


def shard_dir(root: Path, index: int, workers: int, rows: pd.DataFrame) -> None:
    directory = root / str(index)
    (directory / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"lr": 1e-5, "model": {"arch": "m"}, "shard": {"index": index, "count": 2},
                                     "execution": {"workers": workers}, "log_steps": index == 0}),
                   directory / ".hydra" / "config.yaml")
    rows.to_csv(directory / "single_example_results.csv", index=False)
    (directory / "training_summary.json").write_text("{}")


def synthetic_rows(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    steps = rng.integers(1, 30, n)
    status = np.where(steps > 25, "never_correct", "correct")
    return pd.DataFrame({
        "example_index": range(n), "path": [f"/d/{i}.png" for i in range(n)],
        "total_loss_to_correct": np.where(status == "correct", steps * 1.1, -1),
        "universal_difficulty_rank": np.arange(1, n + 1), "label": 1, "initial_prediction": 2, "status": status,
        "steps_to_correct": np.where(status == "correct", steps, -1), "loss_sum": steps * 1.0,
        "initial_loss": rng.uniform(1, 3, n), "final_loss": 0.5, "initial_margin": -1.0, "initial_grad_norm": 1.0,
        "initial_el2n": 1.0,
        "weight_distance": 0.1, "updates": np.where(status == "correct", steps, 25), "skipped_updates": 0,
        "probe_images": 50, "probe_error_after": 0.2, "drawdown": 0.0, "probe_flips_to_wrong": 0,
        "probe_flips_to_right": 0, "probe_loss_after": 0.5, "probe_loss_increase": 0.0,
        "real_labels": "", "label_in_real": "", "prediction_in_real": "", "arithmetic": "CPU", "seconds": 0.1})[COLUMNS]


def test_shards_merge_whatever_their_execution_settings(tmp_path):
    rows = synthetic_rows(10, 0)
    shard_dir(tmp_path / "sweep", 0, 1, rows.iloc[0::2])
    shard_dir(tmp_path / "sweep", 1, 2, rows.iloc[1::2])
    result = aggregate([tmp_path / "sweep"], tmp_path / "agg", figures=False)
    assert len(result["runs"]) == 1
    merged = result["merged"].sort_values("example_index")[COLUMNS].reset_index(drop=True)
    as_written = pd.read_csv(io.StringIO(rows.to_csv(index=False)))  # what a CSV gives back ("" as NaN)
    pd.testing.assert_frame_equal(merged, as_written, check_dtype=False)  # every row of both shards, none twice
    values, _ = run_statistics(rows)
    assert result["runs"]["concordance_loss_sum"].iloc[0] == pytest.approx(values["concordance_loss_sum"])


def test_runs_sharing_their_selection_are_compared_however_few_examples():
    a, b = synthetic_rows(8, 0), synthetic_rows(8, 1)
    result = paired_comparison(a, b)
    assert result["same_selection"] and result["test"] == "censored sign test" and result["cost"] == "loss_sum"
    # the counts, by hand: both corrected, the larger loss is costlier; one censored (its loss_sum a lower
    # bound), costlier when its bound is at or above the other's cost; both censored, undetermined
    a_costlier = b_costlier = 0
    for (_, x), (_, y) in zip(a.iterrows(), b.iterrows(), strict=True):
        x_open, y_open = x["status"] == "never_correct", y["status"] == "never_correct"
        if x_open and y_open:
            continue
        a_costlier += (not y_open) and (x["loss_sum"] > y["loss_sum"] or (x_open and x["loss_sum"] >= y["loss_sum"]))
        b_costlier += (not x_open) and (y["loss_sum"] > x["loss_sum"] or (y_open and y["loss_sum"] >= x["loss_sum"]))
    assert (result["n_a_costlier"], result["n_b_costlier"]) == (a_costlier, b_costlier)
    assert a_costlier + b_costlier > 0 and result["n_shared"] == 8
    assert result["sign_test_p"] == pytest.approx(stats.binomtest(a_costlier, a_costlier + b_costlier).pvalue)


def test_gehan_bounds_for_steps_are_the_updates_taken():
    """A never-corrected example needed more than the updates it took: for steps_to_correct that is
    its bound (not +inf); without a bound recorded (the original scripts' rows), the test is skipped."""
    a, b = synthetic_rows(8, 0), synthetic_rows(8, 0)
    a.loc[0, ["status", "steps_to_correct", "updates"]] = ["never_correct", -1, 25]
    b.loc[0, ["status", "steps_to_correct", "updates"]] = ["correct", 30, 30]  # corrected beyond a's bound
    a, b = a.drop(columns=["loss_sum", "total_loss_to_correct"]), b.drop(columns=["loss_sum", "total_loss_to_correct"])
    result = paired_comparison(a, b)
    assert result["cost"] == "steps_to_correct"
    assert (result["n_a_costlier"], result["n_b_costlier"]) == (0, 0)  # 25 < 30: undetermined, not "a costlier"
    result = paired_comparison(a.drop(columns=["updates"]), b.drop(columns=["updates"]))
    assert result["test"] == "skipped: never-corrected examples record no lower bound of steps_to_correct"


def test_replaced_files_are_readable_as_the_umask_allows(tmp_path):
    """Atomic writes stage in a private temporary file; the file they leave has the mode a plain open() gives."""
    from sweep.files import UMASK, atomic_write_text
    path = tmp_path / "report.md"
    atomic_write_text(path, "# report\n")
    plain = tmp_path / "plain.md"
    plain.write_text("x")
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == 0o666 & ~UMASK
    assert path.read_text() == "# report\n" and not list(tmp_path.glob(".*partial"))
