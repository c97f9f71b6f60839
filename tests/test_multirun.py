"""A real `python main.py -m ...` sweep in a subprocess writes one complete output directory per job."""
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from helpers.commands import run_cli, run_main
from helpers.configs import ROOT, TINY_UNIVERSE, compose_config, tiny_universe_overrides
from sweep.data.demo import open_demo
from sweep.outputs import COLUMNS


@pytest.mark.slow  # a sweep in a subprocess; the in-process sweeps below run the same launcher path
def test_multirun_writes_complete_job_directories(tmp_path, cache_dir):
    sweep_dir = tmp_path / "sweep"
    run_main("-m", "lr=1e-3,5e-4", "sample_size=3", "max_steps=20", "progress=false", "aggregate=false",
             f"hydra.sweep.dir={sweep_dir}", *tiny_universe_overrides(cache_dir), cwd=tmp_path)
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert [j.name for j in jobs] == ["0", "1"]
    assert not (sweep_dir / "report.md").exists()  # aggregate=false: the sweep did not aggregate itself
    selections = {}
    for job in jobs:
        for name in ("single_example_results.csv", "training_summary.json", "loss_vs_difficulty.png",
                     ".hydra/config.yaml", ".hydra/overrides.yaml", "main.log"):
            assert (job / name).is_file(), f"{job}/{name} missing"
        rows = pd.read_csv(job / "single_example_results.csv")
        assert list(rows.columns) == COLUMNS and len(rows) == 3
        summary = json.loads((job / "training_summary.json").read_text())
        assert sum(summary["counts"].values()) == 3
        assert summary["nondeterministic_operations"] == []  # none on a CPU
        model = summary["config"]["model"]["arch"]
        selections.setdefault(model, []).append(sorted(rows["path"]))
    # jobs that differ only in lr see the same sampled examples
    assert list(selections) == ["test_resnet"] and selections["test_resnet"][0] == selections["test_resnet"][1]


def test_single_run_writes_into_hydra_run_dir(tmp_path, cache_dir):
    out = tmp_path / "run"
    code, output = run_cli("sample_size=2", "max_steps=5", f"hydra.run.dir={out}", *tiny_universe_overrides(cache_dir),
                           cwd=tmp_path)
    assert code == 0 and re.search(r"test_resnet lr=1e-05: 100%.*\| 2/2 ", output), output[-2000:]  # the progress bar
    rows = pd.read_csv(out / "single_example_results.csv")
    assert len(rows) == 2 and set(rows["status"]) <= {"correct", "never_correct"}
    assert (out / ".hydra" / "config.yaml").is_file()


def test_random_view_is_the_same_for_search_and_training(tmp_path, cache_dir):
    """With one random training view per example, step 0 is still wrong by construction."""
    from sweep.run.job import run
    cfg = compose_config(*tiny_universe_overrides(cache_dir), "sample_size=6", "train.augmentation=one_view",
                         "lr=3e-5", "max_steps=50", "progress=false")
    run(cfg, tmp_path)
    rows = pd.read_csv(tmp_path / "single_example_results.csv")
    assert len(rows) == 6 and (rows["initial_prediction"] != rows["label"]).all()


def test_a_two_lr_sweep_searches_the_wrong_set_once(tmp_path, cache_dir, monkeypatch):
    import sweep.run.selection as selection
    searches, search = [], selection.find_wrong
    monkeypatch.setattr(selection, "find_wrong", lambda *args, **kwargs: searches.append(1) or search(*args, **kwargs))
    sweep_dir = tmp_path / "sweep"
    # a cache that holds the session's universes but no wrong set yet (LTC_CACHE_DIR may name a kept one)
    open_demo(dict(TINY_UNIVERSE), cache_dir)
    fresh_cache = tmp_path / "cache"
    fresh_cache.mkdir()
    for universe in filter(Path.is_dir, cache_dir.glob("demo-*")):
        (fresh_cache / universe.name).symlink_to(universe)
    code, output = run_cli("-m", "lr=1e-5,2e-5", "sample_size=2", "max_steps=5", "progress=false",
                           "train.augmentation=one_view", f"hydra.sweep.dir={sweep_dir}",
                           *tiny_universe_overrides(fresh_cache), cwd=tmp_path)
    assert code == 0, output[-2000:]
    assert len(searches) == 1
    assert "wrong set from the cache" not in (sweep_dir / "0" / "main.log").read_text()
    assert "wrong set from the cache" in (sweep_dir / "1" / "main.log").read_text()
    # the sweep aggregated itself at its end: a report labelled by what varies
    report = (sweep_dir / "report.md").read_text()
    assert "**lr=1e-05**:" in report and "**lr=2e-05**:" in report
    html = (sweep_dir / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "data:image/png;base64," in html and "lr=2e-05" in html


def test_a_train_mode_sweep_over_seeds_searches_once_per_seed(tmp_path, cache_dir, monkeypatch):
    """In train mode the search's forward passes draw from the seed (as the loop's do): each seed's
    wrong set is its own, never read from another seed's cache entry."""
    import sweep.run.selection as selection
    searches, search = [], selection.find_wrong
    monkeypatch.setattr(selection, "find_wrong", lambda *args, **kwargs: searches.append(1) or search(*args, **kwargs))
    open_demo(dict(TINY_UNIVERSE), cache_dir)
    fresh_cache = tmp_path / "cache"
    fresh_cache.mkdir()
    for universe in filter(Path.is_dir, cache_dir.glob("demo-*")):
        (fresh_cache / universe.name).symlink_to(universe)
    sweep_dir = tmp_path / "sweep"
    code, output = run_cli("-m", "seed=0,1", "model.arch=test_vit", "train.mode=train", "sample_size=2",
                           "max_steps=3", "progress=false", "aggregate=false", f"hydra.sweep.dir={sweep_dir}",
                           *tiny_universe_overrides(fresh_cache), cwd=tmp_path)
    assert code == 0, output[-2000:]
    assert len(searches) == 2  # seeds 0 and 1 each searched (the key's seed: test_the_wrong_set_key_holds...)
    logs = [(sweep_dir / str(job) / "main.log").read_text() for job in range(2)]
    assert not any("wrong set from the cache" in log for log in logs)


def test_the_wrong_set_key_holds_what_the_wrong_set_depends_on(mistakes):
    from sweep.config import MemoryFormat, Precision
    from sweep.run.selection import WRONG_SET_VERSION, wrong_set_key
    model, _ = mistakes
    examples = []

    def key(seed=0, training=False, arch="test_resnet"):
        model.train(training)
        try:
            return wrong_set_key(arch, model, "digest", examples, seed, False, torch.device("cpu"),
                                 MemoryFormat.contiguous, Precision.fp32)
        finally:
            model.eval()
    assert key()["version"] == WRONG_SET_VERSION and key()["preprocessing"]["input_size"] == [3, 32, 32]
    assert key(seed=0) == key(seed=1)  # eval mode: the forward is deterministic, whatever the seed
    assert key(seed=0, training=True) != key(seed=1, training=True)  # dropout draws from the seed
    assert key(arch="test_resnet") != key(arch="test_resnet.other_tag")


@pytest.mark.parametrize("values, expected", [
    (["lr=1e-5,abc"], ["error: 1 of the sweep's 2 jobs cannot run", "job 1 (lr=abc): "]),
    # glob() over the model group's options, which only Hydra's own expansion knows; every job refused
    (["model=glob([test_res*,resnet1*])", "lr=-1"], ["error: 2 of the sweep's 2 jobs cannot run",
                                                     "job 0 (model=resnet18): lr=-1.0: expected",
                                                     "job 1 (model=test_resnet): lr=-1.0: expected"])])
def test_a_sweep_is_expanded_and_composed_as_hydra_does(tmp_path, cache_dir, values, expected):
    """Composition errors are checked job by job, as values are: one error block, no Hydra warning."""
    sweep_dir = tmp_path / "sweep"
    code, output = run_cli("-m", *values, "sample_size=2", "max_steps=5", "progress=false", "aggregate=false",
                           f"hydra.sweep.dir={sweep_dir}", *tiny_universe_overrides(cache_dir), cwd=tmp_path)
    assert code == 2 and "Traceback" not in output and "Warning" not in output, output[-2000:]
    assert all(line in output for line in expected), output[-2000:]
    assert not sweep_dir.exists()


def test_a_sweep_checks_every_job_before_starting_any(tmp_path, cache_dir):
    sweep_dir = tmp_path / "sweep"
    code, output = run_cli("-m", "lr=1e-5,-1,5e-6", "sample_size=2", "max_steps=5", "progress=false",
                           f"hydra.sweep.dir={sweep_dir}", *tiny_universe_overrides(cache_dir), cwd=tmp_path)
    assert code == 2 and "Traceback" not in output, output[-2000:]
    errors = output[output.index("error: "):].strip().splitlines()
    assert errors == ["error: 1 of the sweep's 3 jobs cannot run, so none was started:",
                      "job 1 (lr=-1): lr=-1.0: expected a finite learning rate > 0"]
    assert not sweep_dir.exists()  # no job started, nothing written


def test_a_job_that_fails_at_run_time_loses_nothing_of_the_others(tmp_path, cache_dir):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a state dict")  # passes the check (the file exists), fails when loaded
    sweep_dir = tmp_path / "sweep"
    code, output = run_cli("-m", f"model.checkpoint=null,{broken},null", "sample_size=2", "max_steps=5",
                           "progress=false", f"hydra.sweep.dir={sweep_dir}", *tiny_universe_overrides(cache_dir),
                           cwd=tmp_path)
    assert code == 1, output[-2000:]
    assert "error: 1 job of the sweep failed" in output and f"job 1 ({sweep_dir / '1'})" in output
    assert f"model.checkpoint={broken}: not a state dict" in output
    for job in ("0", "2"):
        assert len(pd.read_csv(sweep_dir / job / "single_example_results.csv")) == 2
    failure = json.loads((sweep_dir / "1" / "job_failure.json").read_text())
    assert failure["error"].startswith(f"model.checkpoint={broken}") and "Traceback" in failure["traceback"]
    report = (sweep_dir / "report.md").read_text()
    assert "1 job failed" in report and str(sweep_dir / "1") in report
    # fixed (a readable checkpoint at the same path) and resumed into the same sweep: every job finished
    from sweep.data.universe.build import pretrained_weights
    universe = open_demo(dict(TINY_UNIVERSE), cache_dir).universe
    broken.write_bytes(pretrained_weights(universe, "test_resnet", TINY_UNIVERSE["pretrain_epochs"], 0).read_bytes())
    code, output = run_cli("-m", f"model.checkpoint=null,{broken},null", "sample_size=2", "max_steps=5",
                           "progress=false", f"hydra.sweep.dir={sweep_dir}", *tiny_universe_overrides(cache_dir),
                           cwd=tmp_path)
    assert code == 0 and "error:" not in output, output[-2000:]
    assert not (sweep_dir / "1" / "job_failure.json").exists()
    assert len(pd.read_csv(sweep_dir / "1" / "single_example_results.csv")) == 2
    assert "failed" not in (sweep_dir / "report.md").read_text()


def test_a_job_refused_by_another_run_s_hold_leaves_that_run_alone(tmp_path, cache_dir):
    """A sweep whose job directory another process holds: the refusal is recorded in the sweep's
    directory, not in the held one (whose run is healthy), and the sweep exits non-zero naming it."""
    from sweep.run.directory import RunDirectory
    sweep_dir = tmp_path / "sweep"
    held = RunDirectory(sweep_dir / "0")
    with held.lock():  # this process holds job 0's directory, as another run would
        code, output = run_cli("-m", "lr=1e-5,2e-5", "sample_size=2", "max_steps=5", "progress=false",
                               "aggregate=false", f"hydra.sweep.dir={sweep_dir}", *tiny_universe_overrides(cache_dir),
                               cwd=tmp_path)
    assert code == 1 and "error: 1 job of the sweep failed" in output, output[-2000:]
    assert "is in use by another run" in output and f"({sweep_dir / 'refused' / '0'})" in output
    assert not (sweep_dir / "0" / "job_failure.json").exists()  # nothing written into the held directory
    assert len(pd.read_csv(sweep_dir / "1" / "single_example_results.csv")) == 2
    code, output = run_cli("-m", "lr=1e-5,2e-5", "sample_size=2", "max_steps=5", "progress=false",
                           "aggregate=false", f"hydra.sweep.dir={sweep_dir}", *tiny_universe_overrides(cache_dir),
                           cwd=tmp_path)  # released: the rerun completes job 0, and the refusal is history
    assert code == 0, output[-2000:]
    assert not (sweep_dir / "refused" / "0").exists()


def test_a_bug_in_the_aggregate_makes_the_sweep_fail(tmp_path, cache_dir, monkeypatch):
    import analysis.aggregate

    def broken(*args, **kwargs):
        raise KeyError("a bug")
    monkeypatch.setattr(analysis.aggregate, "aggregate", broken)
    sweep_dir = tmp_path / "sweep"
    code, output = run_cli("-m", "lr=1e-5,2e-5", "sample_size=2", "max_steps=5", "progress=false",
                           f"hydra.sweep.dir={sweep_dir}", *tiny_universe_overrides(cache_dir), cwd=tmp_path)
    assert code == 1, output[-2000:]
    assert "error: the sweep's report could not be made" in output and "KeyError: 'a bug'" in output
    assert "Traceback" in json.loads((sweep_dir / "aggregate_failure.json").read_text())["traceback"]


@pytest.mark.parametrize("launcher", ["hydra/launcher=parallel", "hydra/launcher=slurm"])
def test_every_launcher_checks_every_job_first(tmp_path, cache_dir, launcher):
    """The check runs before the launcher is asked for anything: no joblib worker, no SLURM job."""
    sweep_dir = tmp_path / "sweep"
    code, output = run_cli("-m", launcher, "lr=1e-5,5e-6", "train.momentum=1.5", "sample_size=2", "progress=false",
                           f"hydra.sweep.dir={sweep_dir}", *tiny_universe_overrides(cache_dir), cwd=tmp_path)
    assert code == 2 and "error: 2 of the sweep's 2 jobs cannot run" in output, output[-2000:]
    assert "job 0 (lr=1e-05): train.momentum=1.5: expected a finite value in [0, 1)" in output
    assert not sweep_dir.exists()


def test_a_sweep_shows_its_jobs_done_and_the_time_left(tmp_path, cache_dir):
    """The basic launcher runs the jobs in this process: one bar over every example of every job, with
    the jobs done; each job's own bar says which job it is."""
    code, output = run_cli("-m", "lr=1e-5,2e-5", "sample_size=2", "max_steps=5", "aggregate=false",
                           f"hydra.sweep.dir={tmp_path / 'sweep'}", *tiny_universe_overrides(cache_dir), cwd=tmp_path)
    assert code == 0, output[-2000:]
    assert "job 1/2 test_resnet lr=1e-05:" in output and "job 2/2 test_resnet lr=2e-05:" in output, output[-2000:]
    assert re.search(r"sweep: 1/2 jobs done:  50%.*\| 2/4 \[", output)
    assert re.search(r"sweep: 2/2 jobs done: 100%.*\| 4/4 \[", output)


def test_a_model_preset_describes_the_model_and_sample_size_auto_is_a_stated_rule():
    """No model preset sets the sample size; sample_size=auto draws 200, 50 for a large model on the demo
    universe (the design card's resnets), and says so; an explicit value or an experiment's wins."""
    from sweep.run.sample_size import sample_size_of
    for preset in (ROOT / "conf" / "model").glob("*.yaml"):
        assert "sample_size" not in preset.read_text(), preset
    large, rule = sample_size_of(compose_config("model=resnet18"))
    assert large == 50 and rule.startswith("sample_size=auto: 50") and "resnet18 has 11.2M" in rule
    assert sample_size_of(compose_config("model=resnet34"))[0] == 50
    assert sample_size_of(compose_config("model=test_resnet")) == (200, "sample_size=auto: 200")
    assert sample_size_of(compose_config("model=resnet18", "sample_size=200")) == (200, "sample_size=200")
    assert sample_size_of(compose_config("model=resnet34", "experiment=original"))[0] == 1000  # the original's


def _zoo(cache_dir, tmp_path, *extra):
    return run_cli("-m", "model.arch=test_resnet,test_efficientnet", "selection.shared=true", "sample_size=6",
                   "max_steps=20", "lr=3e-5", "progress=false", f"hydra.sweep.dir={tmp_path / 'sweep'}", *extra,
                   *tiny_universe_overrides(cache_dir), cwd=tmp_path)


def test_a_shared_selection_gives_every_model_the_same_mistakes(tmp_path, cache_dir):
    """selection.shared: the images every model of the sweep gets wrong, drawn once before any job and
    kept in the sweep's directory; every job corrects those; a rerun reuses them; the aggregate writes
    the cost matrix and the agreement between models."""
    code, output = _zoo(cache_dir, tmp_path)
    assert code == 0, output[-2000:]
    sweep = tmp_path / "sweep"
    shared = pd.read_csv(sweep / "shared_selection" / "seed0-n6.csv")
    record = json.loads((sweep / "shared_selection" / "seed0-n6.json").read_text())
    assert record["models"] == ["test_efficientnet", "test_resnet"] and len(shared) == 6
    assert record["shared_pool"] <= min(record["wrong"].values())
    wrong = {}
    for job in ("0", "1"):
        rows = pd.read_csv(sweep / job / "single_example_results.csv")
        assert sorted(rows["path"]) == sorted(shared["path"])  # the same images for both models
        assert (rows["initial_prediction"] != rows["label"]).all()  # each a mistake of each model at step 0
        wrong[job] = json.loads((sweep / job / "training_summary.json").read_text())["selection"]["wrong"]
    assert sorted(wrong.values()) == sorted(record["wrong"].values())
    costs = pd.read_parquet(sweep / "costs.parquet")
    assert len(costs) == 12 and set(costs["model"]) == {"test_resnet", "test_efficientnet"}
    matrix = costs.pivot_table(index="model", columns="path", values="loss_sum")
    assert matrix.shape == (2, 6) and (costs["censored"] == (costs["status"] == "never_correct")).all()
    overall = pd.read_csv(sweep / "universality.csv").set_index("score")
    assert overall.loc["loss_sum", "models"] == 2 and overall.loc["loss_sum", "images"] == 6
    assert 0 <= overall.loc["loss_sum", "kendall_w"] <= 1
    assert "Kendall's W of the loss to correct" in (sweep / "report.md").read_text()
    code, output = _zoo(cache_dir, tmp_path, "aggregate=false")  # resumed: the same draw, read back
    assert code == 0 and "shared selection reused" in output, output[-2000:]


def test_too_few_shared_mistakes_stop_the_sweep_before_any_job(tmp_path, cache_dir):
    code, output = _zoo(cache_dir, tmp_path, "selection.min_shared=100000")
    assert code == 2 and "Traceback" not in output, output[-2000:]
    line = output.strip().splitlines()[-1]
    assert re.match(r"error: selection\.shared: only \d+ images are mistakes of all 2 models and settings of the sweep "
                    r"\(selection\.min_shared=100000\); fewest in common because of test_", line), line
    assert "(without it: " in line
    assert not (tmp_path / "sweep" / "0").exists()


def test_a_single_run_cannot_share_a_selection(tmp_path, cache_dir):
    code, output = run_cli("selection.shared=true", f"hydra.run.dir={tmp_path}", *tiny_universe_overrides(cache_dir))
    assert code == 2 and "selection.shared=true shares one selection among a sweep's models" in output


def test_a_shared_sweep_over_augmentation_gives_each_job_only_its_own_mistakes(tmp_path, cache_dir):
    """The view changes a model's mistakes: each distinct wrong set of the sweep is searched, and the
    shared images are wrong under all of them, so that no job trains an image it already gets right."""
    code, output = run_cli("-m", "train.augmentation=none,one_view", "selection.shared=true", "sample_size=200",
                           "max_steps=2", "aggregate=false", "progress=false", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                           *tiny_universe_overrides(cache_dir), cwd=tmp_path)
    assert code == 0, output[-2000:]
    sweep = tmp_path / "sweep"
    record = json.loads((sweep / "shared_selection" / "seed0-n200.json").read_text())
    assert sorted(record["wrong"]) == ["test_resnet (train.augmentation=none)",
                                       "test_resnet (train.augmentation=one_view)"], record
    assert len(set(record["definitions"])) == 2
    for job in ("0", "1"):
        rows = pd.read_csv(sweep / job / "single_example_results.csv")
        assert len(rows) == record["selected"]
        assert not ((rows["status"] == "correct") & (rows["steps_to_correct"] == 0)).any()  # none right at step 0
        assert (rows["initial_prediction"] != rows["label"]).all()


def test_a_shared_sweep_with_two_sample_sizes_is_refused_before_any_job(tmp_path, cache_dir):
    code, output = run_cli("-m", "sample_size=6,7", "model.arch=test_resnet,test_efficientnet",
                           "selection.shared=true", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                           *tiny_universe_overrides(cache_dir), cwd=tmp_path)
    assert code == 2 and "Traceback" not in output, output[-2000:]
    line = output.strip().splitlines()[-1]
    assert line.startswith("error: selection.shared: the sweep's jobs ask for different sample sizes") and \
        "sample_size=6: test_resnet, test_efficientnet" in line and "sample_size=7" in line, line
    assert not (tmp_path / "sweep" / "0").exists()


def test_a_job_refuses_shared_images_that_are_not_its_own_mistakes(tmp_path, cache_dir):
    from sweep.errors import UserError
    from sweep.run.context import set_up
    from sweep.run.selection import select, wrong_set
    cfg = compose_config(*tiny_universe_overrides(cache_dir), "progress=false")
    job = set_up(cfg, cache_dir, torch.device("cpu"), 1, "test")
    own = {e.path for e in wrong_set(job).pool}
    right = [e for e in job.source.examples if e.path not in own][:2]
    assert len(select(job, [e for e in job.source.examples if e.path in own][:3]).examples) == 3
    with pytest.raises(UserError, match=r"selection\.shared: 2 of the 2 shared images are not mistakes of this "
                                        r"job's model test_resnet"):
        select(job, right)


def test_the_shared_search_runs_in_the_jobs_arithmetic(tmp_path, cache_dir, monkeypatch):
    """The sweep's pre-pass searches each wrong set set up as its job is: its threads, and exact fp32 on
    its device (on a GPU: no TF32, deterministic algorithms), before the search."""
    import sweep.run.context as context
    from sweep.run.shared import prepare_shared
    calls = []
    monkeypatch.setattr(context, "exact_arithmetic",
                        lambda device, precision: calls.append((device.type, precision.value, torch.get_num_threads())))
    threads = torch.get_num_threads()
    try:
        jobs = [compose_config(*tiny_universe_overrides(cache_dir), f"model.arch={arch}", "selection.shared=true",
                               "sample_size=5", "execution.threads=1", "progress=false")
                for arch in ("test_resnet", "test_efficientnet")]
        prepare_shared(tmp_path, [([], job) for job in jobs])
    finally:
        torch.set_num_threads(threads)
    assert calls == [("cpu", "fp32", 1), ("cpu", "fp32", 1)]
    assert len(pd.read_csv(tmp_path / "shared_selection" / "seed0-n5.csv")) == 5


def test_a_stale_aggregate_failure_is_cleared_when_the_sweep_starts(tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "aggregate_failure.json").write_text(json.dumps({"error": "an earlier bug", "traceback": ""}))
    code, output = run_cli("-m", "sample_size=2", "max_steps=5", "aggregate=false", "progress=false",
                           f"hydra.sweep.dir={sweep}", *tiny_universe_overrides(cache_dir), cwd=tmp_path)
    assert code == 0 and "could not be made" not in output, output[-2000:]
    assert not (sweep / "aggregate_failure.json").exists()


@pytest.mark.slow  # two sweeps; CI runs test_multirun.py's slow tests (.ci/run)
def test_a_failed_search_task_stops_the_sweep_before_the_draw(tmp_path, cache_dir, monkeypatch):
    """The shared selection's searches run as tasks of the sweep's launcher (here the basic one, in this
    process); one that fails is named, and no job starts."""
    import sweep.run.shared as shared
    found = shared.find

    def failing(cfg, *args):
        if cfg.model.arch == "test_efficientnet":
            raise RuntimeError("out of memory, say")
        return found(cfg, *args)
    monkeypatch.setattr(shared, "find", failing)
    code, output = _zoo(cache_dir, tmp_path)
    assert code == 1, output[-2000:]
    assert "error: 1 search task of the sweep's shared selection failed, so no job was started" in output
    assert "search/1 (test_efficientnet): RuntimeError: out of memory, say" in output
    sweep = tmp_path / "sweep"
    assert (sweep / "search" / "0" / "wrong_set.csv").exists() and not (sweep / "0").exists()
    monkeypatch.setattr(shared, "find", found)  # run again: the written wrong set is read back, not searched
    code, output = _zoo(cache_dir, tmp_path, "aggregate=false")
    assert code == 0 and "searching 1 wrong set as tasks of the sweep's launcher: test_efficientnet" in output, \
        output[-2000:]
