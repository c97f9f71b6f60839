"""The original single-loss script, reproduced: its selection through main.py, its loop's counting,
its fp16 loss scaler, its summary keys, and the documented account of the preset."""
import json
import os
import random
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from PIL import Image
from timm.data import ImageNetInfo

from helpers.commands import run_cli
from helpers.configs import ROOT, compose_config, tiny_universe_overrides
from helpers.fp16 import linear_mistake, scaler_skips
from sweep.config import ModelMode, Precision, TrainConfig
from sweep.data.examples import Example
from sweep.data.images import example_view
from sweep.data.real_labels import real_labels
from sweep.outputs import Status
from sweep.training.loop import SingleExampleTrainer

FOREIGN = "/home/projects/bagon/shared/imagenet512/val"
N_EXAMPLES, N_LOCAL, MODEL = 50_000, 400, "resnet_34_160_classification_imagenet_1k"


def make_inputs(root: Path, n_examples: int, n_local: int) -> Path:
    """A difficulty order and a correctness matrix of `n_examples` (in two different orders),
    `n_local` of whose images exist locally, and a checkpoint of a small 1000-class model."""
    rng = np.random.default_rng(0)
    synsets = ImageNetInfo().label_names()
    foreign = [f"{FOREIGN}/{synsets[i % 1000]}/ILSVRC2012_val_{i + 1:08d}.JPEG" for i in range(n_examples)]
    (root / "order.csv").write_text(",".join(foreign[i] for i in rng.permutation(n_examples)))
    (root / "examples.csv").write_text(",".join(foreign[i] for i in rng.permutation(n_examples)))
    np.save(root / "m.npy", rng.random((3, n_examples)) > 0.3)
    (root / "models.csv").write_text(f"zoo_a,{MODEL},zoo_c\n")
    for i in rng.choice(n_examples, n_local, replace=False):
        local = root / "val" / Path(foreign[i]).relative_to(FOREIGN)
        local.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(local)
    torch.manual_seed(0)
    torch.save(timm.create_model("test_resnet").state_dict(), root / "test_resnet.pth")
    return root


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Real-sized: 50,000 examples, 400 of them local."""
    return make_inputs(tmp_path_factory.mktemp("original"), N_EXAMPLES, N_LOCAL)


@pytest.fixture(scope="module")
def small_inputs(tmp_path_factory):
    """For the refusals, which do not need the size: 1,000 examples, 20 of them local."""
    return make_inputs(tmp_path_factory.mktemp("original_small"), 1000, 20)


def args(root: Path, **changes) -> list[str]:
    values = {"data": "imagenet", "data.images": root / "val", "data.difficulty": root / "order.csv",
              "data.prefix": FOREIGN, "data.correctness": root / "m.npy",
              "data.correctness_examples": root / "examples.csv",
              "data.correctness_models": root / "models.csv", "data.wrong_from_model": MODEL,
              "model.arch": "test_resnet", "model.checkpoint": root / "test_resnet.pth", **changes}
    return [f"{key}={value}" for key, value in values.items() if value is not None]


def original_selection(root: Path, n: int) -> list[tuple[str, int]]:
    """The original script's lines, run by hand: the wrong examples of the model's matrix row in
    column order, kept where the file exists and a rank is known; random.seed(42); random.sample;
    sorted by rank. Returns (path, 1-based rank)."""
    all_paths = (root / "examples.csv").read_text().strip().split(",")
    path_to_difficulty_rank = {p: i for i, p in enumerate((root / "order.csv").read_text().strip().split(","))}
    row = (root / "models.csv").read_text().strip().split(",").index(MODEL)
    wrong_indices = np.nonzero(~np.load(root / "m.npy")[row].astype(bool))[0].tolist()
    wrong = []
    for idx in wrong_indices:
        path = all_paths[idx]
        if os.path.exists(root / "val" / Path(path).relative_to(FOREIGN)) and path in path_to_difficulty_rank:
            wrong.append((path, path_to_difficulty_rank[path]))
    if len(wrong) > n:
        random.seed(42)
        selected = random.sample(wrong, n)
    else:
        selected = wrong
    selected.sort(key=lambda x: x[1])
    return [(path, rank + 1) for path, rank in selected]


@pytest.fixture(scope="module")
def preset_run(inputs, tmp_path_factory):
    """`python main.py experiment=original` on the real-sized inputs: 20 examples, one step each."""
    out = tmp_path_factory.mktemp("preset")
    code, output = run_cli("experiment=original", *args(inputs), "sample_size=20", "max_steps=1", "progress=false",
                           "probe.size=0", f"hydra.run.dir={out}")
    assert code == 0, output[-3000:]
    return out


def test_the_preset_selects_exactly_the_original_examples(inputs, preset_run):
    tmp_path = preset_run
    selection = pd.read_csv(tmp_path / "selection.csv")
    ours = [(f"{FOREIGN}/{Path(p).relative_to(inputs / 'val')}", r) for p, r in zip(selection["path"],
                                                                                    selection["rank"], strict=True)]
    expected = original_selection(inputs, 20)
    assert len(expected) == 20 and ours == expected
    rows = pd.read_csv(tmp_path / "single_example_results.csv")
    assert list(rows.sort_values("example_index")["path"]) == list(selection["path"]) and len(rows) == 20
    # the draw depends on the pool's order: rank order would have picked other examples
    by_rank = sorted(original_selection(inputs, 10_000), key=lambda pr: pr[1])
    assert sorted(random.Random(42).sample(by_rank, 20), key=lambda pr: pr[1]) != expected


@pytest.mark.parametrize("change, message", [
    (lambda i, t: {"data.correctness_models": None}, "data.correctness_models is not set"),
    (lambda i, t: {"data.correctness_examples": t / "missing.csv"}, "missing.csv: no such file"),
    (lambda i, t: {"data.correctness_models": t / "two_models.csv"}, "2 models, but data.correctness="),
    (lambda i, t: {"data.correctness_examples": t / "short.csv"}, "999 examples, but data.correctness="),
    (lambda i, t: {"data.wrong_from_model": "resnet_34_160"}, "is not in data.correctness_models="),
    (lambda i, t: {"data.correctness": t / "float.npy"}, "a 2-D float64 array of shape (3, 4); expected a 2-D bool"),
    (lambda i, t: {"data.correctness": t / "flat.npy"}, "a 1-D bool array of shape (4,); expected a 2-D bool"),
    (lambda i, t: {"data.correctness": i / "examples.csv"}, "not a NumPy .npy file (it starts with b'/home/'"),
])
def test_bad_matrix_inputs_are_refused_before_any_work(small_inputs, tmp_path, change, message):
    inputs = small_inputs
    np.save(tmp_path / "float.npy", np.zeros((3, 4)))
    np.save(tmp_path / "flat.npy", np.zeros(4, dtype=bool))
    (tmp_path / "two_models.csv").write_text(f"zoo_a,{MODEL}")
    (tmp_path / "short.csv").write_text(",".join((inputs / "examples.csv").read_text().strip().split(",")[:-1]))
    code, output = run_cli(*args(inputs, **change(inputs, tmp_path)), f"hydra.run.dir={tmp_path / 'run'}")
    assert code == 2 and "Traceback" not in output, output[-3000:]
    assert message in output and output.strip().splitlines()[-1].startswith("error: ")
    assert not (tmp_path / "run" / "selection.csv").exists()
    if "is not in" in message:
        assert f"closest: {MODEL}" in output


def cuda_autocast_cross_entropy(logits, target):
    """`nn.CrossEntropyLoss()(logits, target)` as CUDA's fp16 autocast computes it (the original ran on
    CUDA): log-probabilities in the logits' fp16, the negative log-likelihood in fp32. On a CPU,
    autocast computes cross_entropy in fp32 instead, so the decomposition is written out; the GPU
    tests check it against the real thing."""
    return F.nll_loss(torch.log_softmax(logits, 1, dtype=logits.dtype).float(), target)


def original_loop(model, x, y, lr, max_steps):
    """The original single-loss loop, by hand: (reported step, total loss), or (-1, -1.0)."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0)
    scaler = torch.amp.GradScaler("cpu")
    target = torch.tensor([y])
    total_loss = 0.0
    try:
        for step in range(1, max_steps + 1):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.float16):
                logits = model(x)
                loss = cuda_autocast_cross_entropy(logits, target)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total_loss += float(loss.item())
            if torch.argmax(logits, dim=1).item() == y:
                return step, total_loss
        return -1, -1.0
    finally:
        model.load_state_dict(state)


@pytest.mark.parametrize("max_steps", [60, 4])
def test_fp16_scaler_counts_as_the_original_loop(max_steps):
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=5)
    x = 30 * torch.randn(1, 3, 64, 64)  # large inputs: the fresh scaler's first scaled gradients overflow
    with torch.no_grad():
        y = int(model.train()(x).argmin())
    step, total = original_loop(model, x, y, 1e-3, max_steps)
    train = TrainConfig(mode=ModelMode.train, precision=Precision.fp16_scaler, check_final_state=False)
    outcome = SingleExampleTrainer(model, train, 1e-3, max_steps).fit(x, y)
    if max_steps == 60:
        assert step > 1 and outcome.status == Status.CORRECT
        assert outcome.steps_to_correct == step - 1  # the original reports t + 1
        assert outcome.total_loss_to_correct == pytest.approx(total, rel=1e-6)
        assert outcome.skipped_updates >= 1  # counted as steps, their losses summed, like the original
    else:
        assert step == -1 and outcome.status == Status.NEVER_CORRECT and outcome.total_loss_to_correct == -1


def test_the_original_step_boundary_ignores_the_state_after_the_last_update():
    from sweep.training.stopping import stop_status
    assert stop_status(1.0, 3, 3, t=5, max_steps=5) == Status.CORRECT
    assert stop_status(1.0, 3, 3, t=5, max_steps=5, check_final_state=False) == Status.NEVER_CORRECT
    assert stop_status(1.0, 3, 3, t=4, max_steps=5, check_final_state=False) == Status.CORRECT


def docs_table(title: str) -> list[list[str]]:
    text = (ROOT / "docs" / "original.md").read_text()
    section = text.split(title, 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")][2:]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_the_documented_table_of_default_and_original_is_true():
    default, original = compose_config(), compose_config("experiment=original")
    claims = 0
    for row in docs_table("## The preset against the defaults"):
        for cfg, cell in ((default, row[1]), (original, row[2])):
            for key, value in re.findall(r"`([a-z_.]+)=([^`\s]+)`", cell):
                actual = cfg
                for part in key.split("."):
                    actual = actual[part]
                actual = getattr(actual, "value", actual)
                stated = OmegaConf.create(f"v: {value}").v  # read as a command-line value would be
                assert actual == stated, f"docs/original.md says {key}={value}, the config has {actual}"
                claims += 1
    assert claims >= 16


def test_the_summary_has_the_original_keys(preset_run):
    tmp_path = preset_run
    summary = json.loads((tmp_path / "training_summary.json").read_text())
    rows = pd.read_csv(tmp_path / "single_example_results.csv").sort_values("example_index")  # selection order
    assert summary["model_name"] == "test_resnet" and summary["total_examples_attempted"] == 20
    assert summary["successful_examples"] + summary["failed_examples"] == 20
    assert summary["successful_examples"] == (rows["status"] == "correct").sum()
    assert [r["path"] for r in summary["results"]] == list(rows["path"])
    assert [r["total_loss"] for r in summary["results"]] == pytest.approx(list(rows["total_loss_to_correct"]))


def test_the_cuda_autocast_rules_the_fp16_loss_rests_on():
    """Why the original's losses are fp16 values: on CUDA, cross_entropy has no autocast rule of its
    own (it decomposes into log_softmax and nll_loss, which have one); its decomposition passes the
    logits' dtype to log_softmax explicitly, which autocast keeps. (On the CPU, autocast has a rule
    for cross_entropy itself: fp32.) Read from the dispatcher's registrations of this torch."""
    def autocast_keys(op):
        return {line.split(":")[0] for line in torch._C._dispatch_dump(op).splitlines() if line.startswith("Autocast")}
    assert "AutocastCUDA" not in autocast_keys("aten::cross_entropy_loss")
    assert "AutocastCPU" in autocast_keys("aten::cross_entropy_loss")
    assert {"AutocastCUDA"} <= autocast_keys("aten::log_softmax.int") & autocast_keys("aten::nll_loss")


def test_fp16_losses_are_fp16_values_and_every_first_update_is_skipped(mistakes):
    """The original's step logs: 99.9% of the losses are fp16 values, and the first update was
    skipped in 1,114 of 1,114 logs, whatever the initial loss (from below 0.5 to above 8)."""
    model, examples = mistakes
    train = TrainConfig(mode=ModelMode.eval, precision=Precision.fp16_scaler, check_final_state=False)
    trainer = SingleExampleTrainer(model, train, 3e-5, 12, log_steps=True)
    outcomes = [trainer.fit(x[None], y) for x, y in examples]
    losses = np.concatenate([o.losses for o in outcomes])
    assert (losses.astype(np.float16).astype(np.float64) == losses).all()
    trained = [o for o in outcomes if o.steps_taken >= 1]
    assert len(trained) >= 8
    assert all(o.skipped_updates >= 1 and o.losses[0] == o.losses[1] for o in trained if o.steps_taken >= 2)


@pytest.mark.parametrize("scale_input", [1.0, 3.0])
@pytest.mark.parametrize("initial_loss", [0.75, 2.0, 9.0])
def test_skips_follow_the_scalers_arithmetic_whatever_the_loss(initial_loss, scale_input):
    """The scaled gradient reaching the fp16 log-probabilities is -scale at the label, whatever the
    loss: -inf in fp16 at the first scale (65,536 > 65,504, fp16's largest value), so the first
    update is always skipped. After that, the weight gradient (softmax - onehot) * scale * x
    overflows while its largest entry exceeds 65,504, and each overflow halves the scale."""
    model, x, y = linear_mistake(initial_loss, scale_input)
    expected = scaler_skips(model, x, y, "cpu")
    train = TrainConfig(mode=ModelMode.eval, precision=Precision.fp16_scaler, check_final_state=False)
    outcome = SingleExampleTrainer(model, train, 1e-9, expected + 1).fit(x, y)  # a tiny lr: nothing else moves
    assert outcome.initial_loss == pytest.approx(initial_loss, abs=2e-3)
    assert expected >= 1 and outcome.skipped_updates == expected


@pytest.mark.parametrize("precision", [pytest.param("bf16", marks=pytest.mark.slow), "fp16_scaler"])
def test_the_search_runs_in_the_training_precision(tmp_path, cache_dir, precision):
    """search.mode=same claims step 0 is wrong by construction: under autocast too."""
    code, output = run_cli(*tiny_universe_overrides(cache_dir), f"train.precision={precision}", "sample_size=20",
                           "max_steps=3", "progress=false", f"hydra.run.dir={tmp_path}")
    assert code == 0, output[-3000:]
    summary = json.loads((tmp_path / "training_summary.json").read_text())
    assert summary["correct_at_step_0"] == 0 and summary["examples_processed"] == 20
    losses = pd.read_csv(tmp_path / "selection.csv").set_index("path")["initial_loss"]
    rows = pd.read_csv(tmp_path / "single_example_results.csv").set_index("path")["initial_loss"]
    # the search's loss is the loop's at step 0 (a search in fp32 differs by about 1e-3)
    assert (losses[rows.index] - rows).abs().max() < 1e-5


def test_the_readme_command_passes_every_check_up_to_the_weights(small_inputs, tmp_path, monkeypatch):
    """model.arch=resnet34.a3_in1k (a pretrained tag) passes the name check; offline (the hub made
    unreachable here, whatever this machine's network), the run ends with the error naming the
    offline alternatives."""
    import huggingface_hub.constants
    import huggingface_hub.utils

    class Unreachable:
        def head(self, url, timeout):
            raise ConnectionError("Name or service not known")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.utils, "get_session", Unreachable)
    code, output = run_cli("experiment=original", *args(small_inputs, **{"model.arch": "resnet34.a3_in1k",
                                                                         "model.checkpoint": None}),
                           f"hydra.run.dir={tmp_path}")
    assert code == 2 and "Traceback" not in output, output[-3000:]
    last = output.strip().splitlines()[-1]
    assert last.startswith("error: model.arch=resnet34.a3_in1k: its pretrained weights come from the Hugging Face "
                           "hub (https://huggingface.co), which does not answer (ConnectionError")
    assert "model.checkpoint=" in last and "model=efficientnet_lite0" in last
    code, output = run_cli(*args(small_inputs, **{"model.arch": "resnet34.a9_in1k"}), f"hydra.run.dir={tmp_path}")
    assert code == 2 and "resnet34 has no pretrained tag 'a9_in1k' (its tags: a1_in1k, a2_in1k, a3_in1k" in output


def test_the_preset_on_the_demo_data_refuses_with_one_line(tmp_path, cache_dir):
    code, output = run_cli("experiment=original", *tiny_universe_overrides(cache_dir), f"hydra.run.dir={tmp_path}")
    assert code == 2 and "Traceback" not in output, output[-3000:]
    last = output.strip().splitlines()[-1]
    assert last.startswith("error: train.mode=train (which experiment=original sets) cannot run test_resnet on "
                           "32x32 images") and "train.mode=eval" in last
    assert not (tmp_path / "selection.csv").exists()


def test_prediction_in_real_judges_the_prediction_that_made_the_mistake(inputs, preset_run):
    """With a matrix's wrong set, the prediction that made an example a mistake is the model's in
    eval mode on the eval view (as a matrix is made), not the train-mode prediction at step 0."""
    tmp_path = preset_run
    selection = pd.read_csv(tmp_path / "selection.csv").set_index("path")
    rows = pd.read_csv(tmp_path / "single_example_results.csv").set_index("path")
    model = timm.create_model("test_resnet")
    model.load_state_dict(torch.load(inputs / "test_resnet.pth", weights_only=True))
    view = example_view(model.eval(), random_view=False, seed=42)
    with torch.no_grad():
        by_hand = {p: int(model(view(Example(p, 0, 0))[None]).argmax()) for p in selection.index}
    assert selection["prediction"].to_dict() == by_hand
    for path, row in rows.iterrows():
        assert row["prediction_in_real"] == (by_hand[path] in real_labels(path))
    assert (rows["initial_prediction"] != pd.Series(by_hand)[rows.index]).any()  # train-mode step 0 differs
