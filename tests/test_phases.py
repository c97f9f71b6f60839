"""Where a run's time goes (the summary's phases), what a step costs in FLOPs, and a probe whose cost
stays within its budget of each example's correction."""
import json
import math
import zlib

import pandas as pd
import pytest
import timm
import torch

from helpers.commands import run_cli
from helpers.configs import compose_config, tiny_universe_overrides
from sweep.run.job import run
from sweep.training.flops import StepCost, count_step
from sweep.training.probe import Probe

PHASE_KEYS = {"search_seconds", "probe_seconds", "corrections_seconds", "statistics_seconds", "figures_seconds",
              "forward_flops", "update_flops", "correction_flops", "correction_flops_per_second",
              "probe_flops_after", "probe_share"}


@pytest.mark.parametrize("arch, forward, update", [
    ("tf_efficientnet_lite0", 0.77e9, 2.3e9),  # depthwise convolutions: torch's own backward count says 32e9
    ("resnet34", 7.33e9, 21.8e9),
])
def test_step_flops_at_224_px(arch, forward, update):
    model = timm.create_model(arch)
    before = [p.detach().clone() for p in model.parameters()]
    cost = count_step(model, (3, 224, 224))
    assert cost.forward_flops == pytest.approx(forward, rel=0.1)
    assert cost.update_flops == pytest.approx(update, rel=0.1)
    assert all(torch.equal(p, q) and p.grad is None for p, q in zip(model.parameters(), before, strict=True))


def test_a_depthwise_convolution_update_costs_three_forward_passes():
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 1), torch.nn.Conv2d(64, 64, 3, groups=64, padding=1))
    cost = count_step(conv, (3, 8, 8))
    first, depthwise = 2 * 3 * 64 * 64, 2 * 9 * 64 * 64  # multiply-adds x 2 per output pixel
    assert cost.forward_flops == first + depthwise
    assert cost.update_flops == 2 * first + 3 * depthwise  # the first layer needs no input gradient


def test_a_step_is_counted_once_per_architecture_and_input_size(monkeypatch):
    import sweep.training.flops as flops
    counted, count = [], flops._count
    monkeypatch.setattr(flops, "_count", lambda *args: counted.append(args[1]) or count(*args))

    def model(width):
        return torch.nn.Sequential(torch.nn.Conv2d(3, width, 3), torch.nn.ReLU())
    first = count_step(model(13), (3, 9, 9))
    assert count_step(model(13), (3, 9, 9)) == first and len(counted) == 1  # another copy, other weights
    assert count_step(model(14), (3, 9, 9)).forward_flops > first.forward_flops  # other parameter shapes
    assert count_step(model(13), (3, 11, 11)).forward_flops > first.forward_flops  # another input size
    with_tanh = torch.nn.Sequential(torch.nn.Conv2d(3, 13, 3), torch.nn.Tanh())
    count_step(with_tanh, (3, 9, 9))  # other modules, the same parameters
    assert counted == [(3, 9, 9), (3, 9, 9), (3, 11, 11), (3, 9, 9)]


def test_a_budgeted_probe_judges_each_example_on_images_within_its_budget():
    cost = StepCost(forward_flops=10, update_flops=30)
    probe = Probe(torch.zeros(50, 1), torch.zeros(50, dtype=torch.long), torch.ones(50, dtype=torch.bool),
                  torch.zeros(50), budget=0.25, cost=cost)
    for updates in (0, 1, 2, 10, 100, 1000):
        n = probe.images_for(updates)
        assert n == max(1, min(50, math.floor(0.25 * (30 * updates + 10) / 10)))
        assert n == 1 or n * cost.forward_flops <= 0.25 * cost.correction_flops(updates)
    assert Probe(probe.x, probe.y, probe.right_before, probe.loss_before).images_for(1) == 50  # explicit size


def _summary(path):
    return json.loads((path / "training_summary.json").read_text())


@pytest.fixture(scope="module")
def auto_probe_run(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("auto_probe")
    cfg = compose_config(*tiny_universe_overrides(cache_dir), "sample_size=8", "lr=3e-5", "max_steps=60",
                         "progress=false", "execution.workers=1")
    return out, run(cfg, out), cfg


def test_phases_say_where_the_time_went(auto_probe_run):
    out, summary, cfg = auto_probe_run
    phases = summary["phases"]
    assert set(phases) == PHASE_KEYS and phases == _summary(out)["phases"]
    rows = pd.read_csv(out / "single_example_results.csv")
    cost = StepCost(phases["forward_flops"], phases["update_flops"])
    assert phases["correction_flops"] == sum(cost.correction_flops(u) for u in rows["updates"])
    assert phases["probe_flops_after"] == rows["probe_images"].sum() * cost.forward_flops
    assert phases["correction_flops_per_second"] == pytest.approx(phases["correction_flops"]
                                                                  / phases["corrections_seconds"])
    seconds = sum(phases[f"{p}_seconds"] for p in ("search", "probe", "corrections", "statistics", "figures"))
    assert 0 < seconds <= summary["wall_seconds"]
    assert phases["probe_share"] == pytest.approx(phases["probe_seconds"] / summary["wall_seconds"])


def test_the_log_ends_with_the_probe_share(tmp_path, cache_dir):
    code, output = run_cli(*tiny_universe_overrides(cache_dir), "sample_size=2", "max_steps=20", "progress=false",
                           f"hydra.run.dir={tmp_path}")
    assert code == 0, output[-2000:]
    share = _summary(tmp_path)["phases"]["probe_share"]
    last = (tmp_path / "main.log").read_text().strip().splitlines()[-1]
    assert f"the probe took {100 * share:.0f}% of it" in last and "corrections" in last


def test_the_auto_probe_costs_each_example_at_most_its_budget(auto_probe_run):
    out, summary, cfg = auto_probe_run
    rows = pd.read_csv(out / "single_example_results.csv")
    phases = summary["phases"]
    probe = pd.read_csv(out / "probe.csv")
    assert len(probe) == 50 and summary["probe"]["size"] == 50  # auto on a CPU, 32 px images
    costs = rows["updates"] * phases["update_flops"] + phases["forward_flops"]
    images = rows["probe_images"]
    assert (images >= 1).all() and (images <= 50).all() and images.nunique() > 1
    assert ((images == 1) | (images * phases["forward_flops"] <= cfg.probe.budget * costs)).all()
    # each drawdown is measured on the same images before and after: probe_images of the set from the
    # example's own offset (a hash of its path), round the end of the set
    starts = set()
    for _, row in rows.iterrows():
        start = zlib.crc32(f"probe/{row['path']}".encode()) % len(probe)
        images = [(start + i) % len(probe) for i in range(row["probe_images"])]
        before = 1 - probe["right_before"].iloc[images].mean()
        assert row["drawdown"] == pytest.approx(row["probe_error_after"] - before)
        assert row["probe_flips_to_wrong"] - row["probe_flips_to_right"] == round(row["drawdown"] * row["probe_images"])
        starts.add(start)
    assert len(starts) > len(rows) / 2  # the cheap corrections are not all judged on the same first images


def test_the_workers_and_the_engine_give_the_same_rows_and_phases(auto_probe_run, tmp_path, cache_dir):
    """The automatic probe's prefixes and outcomes of worker processes running the batched engine are
    those of one process on the simple path (tests/test_workers.py and test_engine.py compare each
    path alone without the automatic probe)."""
    out, summary, cfg = auto_probe_run
    other = run(compose_config(*tiny_universe_overrides(cache_dir), "sample_size=8", "lr=3e-5", "max_steps=60",
                               "progress=false", "execution.workers=2", "execution.parallel=3"), tmp_path)
    assert other["execution"]["workers"] == 2 and other["execution"]["parallel"] == 3
    assert set(other["phases"]) == PHASE_KEYS
    columns = ["path", "status", "updates", "probe_images", "probe_error_after", "drawdown", "probe_flips_to_wrong",
               "probe_flips_to_right"]
    full = [pd.read_csv(d / "single_example_results.csv").sort_values("path").reset_index(drop=True)
            for d in (out, tmp_path)]
    pd.testing.assert_frame_equal(*(rows[columns] for rows in full))
    assert (full[1]["loss_sum"] - full[0]["loss_sum"]).abs().max() <= 1e-4 * full[0]["loss_sum"].max()
    # equal rows: equal FLOPs of every phase that counts them
    for key in ("forward_flops", "update_flops", "correction_flops", "probe_flops_after"):
        assert other["phases"][key] == summary["phases"][key], key


def test_a_resumed_run_has_the_same_phases_for_the_work_it_did(tmp_path, cache_dir):
    cfg = compose_config(*tiny_universe_overrides(cache_dir), "sample_size=4", "lr=3e-5", "max_steps=30",
                         "progress=false")
    first = run(cfg, tmp_path)
    rows = pd.read_csv(tmp_path / "single_example_results.csv")
    rows.iloc[:2].to_csv(tmp_path / "single_example_results.csv", index=False)  # as if stopped after two
    resumed = run(cfg, tmp_path)
    assert set(resumed["phases"]) == set(first["phases"]) == PHASE_KEYS
    redone = rows.iloc[2:]["updates"]
    phases = resumed["phases"]
    assert phases["correction_flops"] == sum(u * phases["update_flops"] + phases["forward_flops"] for u in redone)
    assert resumed["examples_processed"] == 4


def test_the_summary_records_the_versions_the_run_used(auto_probe_run):
    """Installed ranges differ between machines (a node keeps its own torch): each result says which ran."""
    import importlib.metadata

    import timm
    versions = auto_probe_run[1]["versions"]
    assert versions["torch"] == torch.__version__ and versions["timm"] == timm.__version__
    for name in ("torchvision", "hydra-core", "omegaconf", "loss-to-correct"):
        assert versions[name] == importlib.metadata.version(name)
