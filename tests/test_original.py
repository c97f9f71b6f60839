"""The original single-loss script, reproduced: its selection through main.py, its loop's counting,
its fp16 loss scaler, its summary keys, and the README's account of the preset."""
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
from helpers.configs import ROOT, compose_config
from sweep.config import ModelMode, Precision, TrainConfig
from sweep.training.loop import SingleExampleTrainer
from sweep.training.stopping import Status

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
              "data.correctness": root / "m.npy", "data.correctness_examples": root / "examples.csv",
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


def test_the_preset_selects_exactly_the_original_examples(inputs, tmp_path):
    code, output = run_cli("experiment=original", *args(inputs), "sample_size=30", "max_steps=1", "progress=false",
                           f"hydra.run.dir={tmp_path}")
    assert code == 0, output[-3000:]
    selection = pd.read_csv(tmp_path / "selection.csv")
    ours = [(f"{FOREIGN}/{Path(p).relative_to(inputs / 'val')}", r) for p, r in zip(selection["path"],
                                                                                    selection["rank"])]
    expected = original_selection(inputs, 30)
    assert len(expected) == 30 and ours == expected
    rows = pd.read_csv(tmp_path / "single_example_results.csv")
    assert list(rows.sort_values("example_index")["path"]) == list(selection["path"]) and len(rows) == 30
    # the draw depends on the pool's order: rank order would have picked other examples
    by_rank = sorted(original_selection(inputs, 10_000), key=lambda pr: pr[1])
    assert sorted(random.Random(42).sample(by_rank, 30), key=lambda pr: pr[1]) != expected


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
                loss = F.cross_entropy(logits, target)
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


def readme_table(title: str) -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split(title, 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")][2:]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_the_readme_table_of_default_and_original_is_true():
    default, original = compose_config(), compose_config("experiment=original")
    claims = 0
    for row in readme_table("## The original scripts"):
        for cfg, cell in ((default, row[1]), (original, row[2])):
            for key, value in re.findall(r"`([a-z_.]+)=([^`\s]+)`", cell):
                actual = cfg
                for part in key.split("."):
                    actual = actual[part]
                actual = getattr(actual, "value", actual)
                stated = OmegaConf.create(f"v: {value}").v  # read as a command-line value would be
                assert actual == stated, f"README says {key}={value}, the config has {actual}"
                claims += 1
    assert claims >= 16


def test_the_summary_has_the_original_keys(inputs, tmp_path):
    code, output = run_cli("experiment=original", *args(inputs), "sample_size=5", "max_steps=1", "progress=false",
                           f"hydra.run.dir={tmp_path}")
    assert code == 0, output[-3000:]
    import json
    summary = json.loads((tmp_path / "training_summary.json").read_text())
    rows = pd.read_csv(tmp_path / "single_example_results.csv")
    assert summary["model_name"] == "test_resnet" and summary["total_examples_attempted"] == 5
    assert summary["successful_examples"] + summary["failed_examples"] == 5
    assert summary["successful_examples"] == (rows["status"] == "correct").sum()
    assert [r["path"] for r in summary["results"]] == list(rows["path"])
    assert [r["total_loss"] for r in summary["results"]] == pytest.approx(list(rows["total_loss_to_correct"]))
