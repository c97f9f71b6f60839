"""Bad input, through the command line: one `error:` line naming the key, file, line or value and
what was expected, exit status 2, no traceback, and nothing trained."""
import math
import os

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from helpers.commands import run_cli
from helpers.configs import tiny_universe_overrides
from sweep.config import Precision
from sweep.errors import UserError

FOREIGN = "/home/projects/bagon/shared/imagenet512/val"
SYNSETS = ["n01440764", "n01443537"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Six tiny images in synset folders, an order file for them, and a 1000-class checkpoint."""
    root = tmp_path_factory.mktemp("bad_input")
    names = []
    for i in range(6):
        path = root / "val" / SYNSETS[i % 2] / f"ILSVRC2012_val_{i + 1:08d}.JPEG"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(path)
        names.append(f"{SYNSETS[i % 2]}/{path.name}")
    (root / "order.csv").write_text(",".join(f"{FOREIGN}/{n}" for n in names))
    torch.manual_seed(0)
    torch.save(timm.create_model("test_resnet").state_dict(), root / "model.pth")
    broken = timm.create_model("test_resnet").state_dict()
    broken["fc.weight"].fill_(math.nan)
    torch.save(broken, root / "broken.pth")
    return root, names


def imagenet(folder, *extra, difficulty=None):
    root, _ = folder
    return ["data=imagenet", f"data.images={root / 'val'}", f"data.difficulty={difficulty or root / 'order.csv'}",
            f"data.prefix={FOREIGN}", "model.arch=test_resnet", f"model.checkpoint={root / 'model.pth'}",
            "max_steps=2", "progress=false", *extra]


def refused(tmp_path, *args, expect: list[str]):
    code, output = run_cli(*args, f"hydra.run.dir={tmp_path / 'run'}", f"cache_dir={tmp_path / 'cache'}")
    assert code == 2 and "Traceback" not in output, output[-3000:]
    last = output.strip().splitlines()[-1]
    assert last.startswith("error: "), output[-3000:]
    for text in expect:
        assert text in last, last
    assert not (tmp_path / "run" / "single_example_results.csv").exists()
    return last


@pytest.mark.parametrize("content, expect", [
    ("image,rank\n/a/ILSVRC2012_val_00000001.JPEG,1\n",
     ["a CSV header with columns ['image', 'rank'] but no path column", "path or file"]),
    ("path,rank\n/a/x1.JPEG,1\n/a/x2.JPEG,two\n", ["line 3: rank 'two' is not a whole number >= 1"]),
    ("path,score\n/a/x1.JPEG,0.5\n/a/x2.JPEG,high\n", ["line 3: score 'high' is not a finite number"]),
    ("path,rank\n/a/x1.JPEG,1\n/a/x2.JPEG,2\n/a/x1.JPEG,3\n", ["1 duplicate entry",
                                                               "'/a/x1.JPEG' (line 2 and line 4)"]),
    ("/a/x1.JPEG,/a/x2.JPEG,/a/x1.JPEG", ["1 duplicate entry", "'/a/x1.JPEG' (entry 1 and entry 3)"]),
    ("", ["the file is empty"]),
    ("path,rank\n", ["a header and no rows"]),
])
def test_bad_difficulty_files(folder, tmp_path, content, expect):
    (tmp_path / "difficulty.csv").write_text(content)
    refused(tmp_path, *imagenet(folder, difficulty=tmp_path / "difficulty.csv"),
            expect=[f"data.difficulty={tmp_path / 'difficulty.csv'}", *expect])


@pytest.mark.parametrize("content, expect", [
    ("file,label\nILSVRC2012_val_00000001.JPEG,0\nILSVRC2012_val_00000001.JPEG,1\n", ["(line 2 and line 3)"]),
    ("file,label\nILSVRC2012_val_00000001.JPEG,zero\n", ["line 2: label 'zero' is not a class index"]),
    ("name,class\nx,1\n", ["expected columns file,label; found ['name', 'class']"]),
])
def test_bad_labels_files(folder, tmp_path, content, expect):
    (tmp_path / "labels.csv").write_text(content)
    refused(tmp_path, *imagenet(folder, f"data.labels={tmp_path / 'labels.csv'}"),
            expect=[f"data.labels={tmp_path / 'labels.csv'}", *expect])


def test_images_folder_that_is_a_file_or_holds_no_images(folder, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    root, _ = folder
    refused(tmp_path, *imagenet(folder), f"data.images={root / 'order.csv'}",
            expect=[f"data.images={root / 'order.csv'}: a file"])
    refused(tmp_path, *imagenet(folder), f"data.images={tmp_path / 'empty'}", expect=["holds no images"])


def test_prefix_matching_compares_path_components(folder, tmp_path):
    root, names = folder
    (tmp_path / "order.csv").write_text(",".join(f"/data/val2/{n}" for n in names))
    refused(tmp_path, *imagenet(folder, "data.prefix=/data/val", difficulty=tmp_path / "order.csv"),
            expect=["0 of 6 difficulty entries match", "Set data.prefix", "'/data/val2/n01440764/"])


@pytest.mark.parametrize("override, expect", [
    ("lr=inf", "lr=inf: expected a finite learning rate > 0"),
    ("lr=nan", "lr=nan: expected a finite learning rate > 0"),
    ("train.weight_decay=nan", "train.weight_decay=nan: expected a finite value >= 0"),
    ("train.weight_decay=-0.1", "train.weight_decay=-0.1: expected a finite value >= 0"),
    ("train.momentum=-0.5", "train.momentum=-0.5: expected a finite value in [0, 1)"),
    ("train.momentum=nan", "train.momentum=nan: expected a finite value in [0, 1)"),
    ("execution.workers=0", "execution.workers=0: expected auto or an integer >= 1"),
    ("execution.threads=0", "execution.threads=0: expected auto or an integer >= 1"),
    ("shard.index=3", "shard.index=3, shard.count=1: expected 0 <= shard.index < shard.count"),
    ("max_steps=0", "max_steps=0: expected an integer >= 1"),
])
def test_impossible_numbers_fail_before_work(tmp_path, override, expect):
    refused(tmp_path, override, expect=[expect])
    assert not (tmp_path / "cache").exists()  # nothing was built


def test_a_model_with_a_non_finite_loss_is_refused_before_training(folder, tmp_path):
    root, _ = folder
    refused(tmp_path, *imagenet(folder), f"model.checkpoint={root / 'broken.pth'}",
            expect=["the loss at the pretrained weights is not finite", "nothing was trained"])


def test_a_learning_rate_that_makes_examples_diverge_stops_the_run(tmp_path, cache_dir):
    code, output = run_cli(*tiny_universe_overrides(cache_dir), "lr=1e12", "sample_size=12", "max_steps=20",
                           "progress=false", f"hydra.run.dir={tmp_path}")
    assert code == 2 and "Traceback" not in output
    last = output.strip().splitlines()[-1]
    assert "of the first" in last and "diverged" in last and "lr=1e+12 is too large" in last and "lr=1e+11" in last
    rows = (tmp_path / "single_example_results.csv").read_text().splitlines()
    assert 6 <= len(rows) - 1 <= 10  # the rows before the stop are kept


def test_a_cpu_run_directory_is_not_resumed_on_another_device(tmp_path):
    from sweep.run.directory import RunDirectory
    directory = RunDirectory(tmp_path)
    directory.claim({"lr": 1e-5, "device": "cuda"})
    directory.claim({"lr": 1e-5, "device": "cpu"})  # nothing computed yet: a corrected rerun may take it
    (tmp_path / "selection.csv").write_text("path,label,rank\n")
    directory.claim({"lr": 1e-5, "device": "cpu"})
    with pytest.raises(UserError, match="differing keys: device"):
        directory.claim({"lr": 1e-5, "device": "cuda"})


def test_exact_arithmetic_settings_for_a_gpu(monkeypatch):
    """Set on any machine (the flags are plain settings); the GPU run itself is checked where one exists."""
    from sweep.training.hardware import describe, exact_arithmetic
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark, torch.are_deterministic_algorithms_enabled(),
             torch.get_float32_matmul_precision())
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = torch.backends.cudnn.benchmark = True
        exact_arithmetic(torch.device("cuda"), Precision.fp32)
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert torch.are_deterministic_algorithms_enabled() and torch.get_float32_matmul_precision() == "highest"
        summary = describe(torch.device("cpu"))
        assert summary["deterministic_algorithms"] and summary["mkl_cbwr"] == os.environ["MKL_CBWR"]
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic, \
            torch.backends.cudnn.benchmark = saved[:4]
        torch.use_deterministic_algorithms(saved[4])
        torch.set_float32_matmul_precision(saved[5])


def test_cache_location_follows_the_conventions(monkeypatch, tmp_path):
    from pathlib import Path

    from sweep.run.cache import cache_root
    monkeypatch.delenv("LTC_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_root(None) == Path.home() / ".cache" / "loss-to-correct"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root(None) == tmp_path / "xdg" / "loss-to-correct"
    monkeypatch.setenv("LTC_CACHE_DIR", str(tmp_path / "ltc"))
    assert cache_root(None) == tmp_path / "ltc"
    assert cache_root(str(tmp_path / "explicit")) == tmp_path / "explicit"


def test_a_cache_directory_that_cannot_be_created_is_named(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    code, output = run_cli(f"cache_dir={tmp_path / 'file' / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}")
    assert code == 2 and "Traceback" not in output, output[-3000:]
    last = output.strip().splitlines()[-1]
    assert last.startswith(f"error: cache_dir {tmp_path / 'file' / 'cache'}: cannot create it")


def test_zoo_command_refuses_a_bad_labels_file(tmp_path, capsys):
    from sweep.data.zoo import main as zoo_command
    (tmp_path / "labels.csv").write_text("name,class\nx,1\n")
    with pytest.raises(SystemExit) as stop:
        zoo_command(["--images", str(tmp_path), "--labels", str(tmp_path / "labels.csv"), "--models", "test_resnet",
                     "--out", str(tmp_path / "zoo")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "expected columns file,label; found ['name', 'class']" in err


@pytest.mark.parametrize("case, message", [
    ("label outside", "label 5000 of b.png (and 0 more) is outside the 1000 classes of model test_resnet="),
    ("corrupt image", "b.png cannot be decoded (UnidentifiedImageError"),
    ("missing image", "b.png (and 0 more files of --labels) not found"),
    ("not a label", "label 'x' of b.png (and 0 more) is not a class index")])
def test_zoo_command_refuses_bad_images_and_labels_with_one_line(tmp_path, capsys, case, message):
    from sweep.data.zoo import main as zoo_command
    checkpoint = tmp_path / "test_resnet.pth"
    torch.save(timm.create_model("test_resnet").state_dict(), checkpoint)
    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    if case == "corrupt image":
        (tmp_path / "b.png").write_bytes(b"not an image")
    elif case != "missing image":
        Image.new("RGB", (32, 32)).save(tmp_path / "b.png")
    label = {"label outside": "5000", "not a label": "x"}.get(case, "3")
    (tmp_path / "labels.csv").write_text(f"file,label\na.png,1\nb.png,{label}\n")
    with pytest.raises(SystemExit) as stop:
        zoo_command(["--images", str(tmp_path), "--labels", str(tmp_path / "labels.csv"), "--models",
                     f"test_resnet={checkpoint}", "--out", str(tmp_path / "zoo")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err, err
    assert message in err.strip().splitlines()[-1] and not (tmp_path / "zoo").exists()  # after a progress bar


def test_rank_command_names_a_missing_file(tmp_path, capsys):
    from sweep.data.difficulty import main as rank_command
    np.save(tmp_path / "m.npy", np.ones((2, 3), bool))
    for args, named in ((["missing.npy", "--examples", "e.csv"], "MATRIX="), (["m.npy", "--examples", "e.csv"],
                                                                               "--examples=")):
        with pytest.raises(SystemExit) as stop:
            rank_command([str(tmp_path / args[0]), args[1], str(tmp_path / args[2])])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and err.startswith(f"error: {named}") and "no such file" in err, err


@pytest.mark.parametrize("content, expect", [("text", "not a state dict"), ("tensor", "not a state dict"),
                                             ("other keys", "does not fit this architecture")])
def test_a_checkpoint_that_is_no_state_dict_of_the_model_is_refused_by_name(tmp_path, content, expect):
    import timm

    from sweep.models import load_checkpoint
    path = tmp_path / "weights.pth"
    if content == "text":
        path.write_text("hello")
    else:
        torch.save(torch.zeros(3) if content == "tensor" else {"model": {"x": torch.zeros(1)}}, path)
    with pytest.raises(UserError, match=expect) as refused:
        load_checkpoint(timm.create_model("test_resnet"), path)
    assert str(path) in str(refused.value)
    wrapped = tmp_path / "wrapped.pth"
    model = timm.create_model("test_resnet")
    torch.save({"state_dict": model.state_dict()}, wrapped)  # as training scripts save it
    assert load_checkpoint(timm.create_model("test_resnet"), wrapped).state_dict()["fc.weight"].equal(
        model.state_dict()["fc.weight"])


@pytest.mark.parametrize("args, message", [
    (["model_spec=a"], "error: images, labels: required, not set (e.g. images=...)"),
    (["images=/nonexistent", "model_spec=a"], "error: --images /nonexistent: "),
])
def test_zoo_tasks_refuse_bad_input_before_any_task(tmp_path, args, message):
    import subprocess
    import sys
    labels = tmp_path / "l.csv"
    labels.write_text("file,label\nx.jpg,1\n")
    done = subprocess.run([sys.executable, "-m", "sweep.data.zoo_tasks", "-m", f"out={tmp_path / 'out'}",
                           *([f"labels={labels}"] if any(a.startswith("images=") for a in args) else []), *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].startswith(message), done.stderr[-500:]
    assert not (tmp_path / "out" / "tasks" / "0").exists()  # no task ran
