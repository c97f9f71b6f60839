"""Runs that survive: resume after SIGKILL, clean stop on SIGTERM, and clear errors for bad input."""
import signal
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from helpers.commands import main_command, run_cli, wait_for_rows
from helpers.configs import tiny_universe_overrides
from sweep.data.examples import Example, check_labels, read_examples
from sweep.data.image_files import load_image
from sweep.errors import UserError
from sweep.models import create_model, load_checkpoint
from sweep.rows import read_rows
from sweep.run.results import ResultsWriter

RUN_ARGS = ["model=test_resnet", "lr=2e-5", "sample_size=8", "max_steps=300", "progress=false"]


def comparable(csv: Path) -> pd.DataFrame:
    """The rows in selection order (workers append them as they finish), timing left out."""
    return pd.read_csv(csv).drop(columns=["seconds"]).sort_values("example_index").reset_index(drop=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir):
    """An uninterrupted run (also builds the tiny universe, so kills land in the loop)."""
    out = tmp_path_factory.mktemp("reference")
    code, output = run_cli(*RUN_ARGS, f"hydra.run.dir={out}", *tiny_universe_overrides(cache_dir))
    assert code == 0, output[-2000:]
    rows = comparable(out / "single_example_results.csv")
    assert len(rows) == 8 and rows["steps_to_correct"].nunique() > 1
    return rows


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path, cache_dir, reference):
    out = tmp_path / "run"
    command = main_command(*RUN_ARGS, f"hydra.run.dir={out}", *tiny_universe_overrides(cache_dir))
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_rows(out / "single_example_results.csv", 3, process)
    process.kill()
    process.wait()
    partial = read_rows(out / "single_example_results.csv")
    assert 3 <= len(partial) < 8
    code, output = run_cli(*RUN_ARGS, f"hydra.run.dir={out}", *tiny_universe_overrides(cache_dir))
    assert code == 0 and "resuming" in output, output[-2000:]
    pd.testing.assert_frame_equal(comparable(out / "single_example_results.csv"), reference)


@pytest.mark.slow  # four processes; the single-run kill test covers resuming in the default suite
def test_multirun_killed_midway_completes_only_missing_work(tmp_path, cache_dir, reference):
    sweep = tmp_path / "sweep"
    command = main_command("-m", *RUN_ARGS, "seed=0,1", f"hydra.sweep.dir={sweep}", *tiny_universe_overrides(cache_dir))
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_rows(sweep / "1" / "single_example_results.csv", 1, process)  # job 0 done, job 1 under way
    process.kill()
    process.wait()
    stamp = (sweep / "0" / "single_example_results.csv").stat().st_mtime_ns
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    assert (sweep / "0" / "single_example_results.csv").stat().st_mtime_ns == stamp  # nothing redone
    pd.testing.assert_frame_equal(comparable(sweep / "0" / "single_example_results.csv"), reference)
    uninterrupted = tmp_path / "seed1"
    subprocess.run(main_command(*RUN_ARGS, "seed=1", f"hydra.run.dir={uninterrupted}",
                                *tiny_universe_overrides(cache_dir)),
                   check=True, capture_output=True, timeout=600)
    pd.testing.assert_frame_equal(comparable(sweep / "1" / "single_example_results.csv"),
                                  comparable(uninterrupted / "single_example_results.csv"))


@pytest.mark.slow  # the process-group SIGTERM test (test_data_safety) covers hand-back, the summary and resume
def test_sigterm_finishes_the_current_row_and_exits_cleanly(tmp_path, cache_dir, reference):
    out = tmp_path / "run"
    process = subprocess.Popen(main_command(*RUN_ARGS, f"hydra.run.dir={out}", *tiny_universe_overrides(cache_dir)),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_rows(out / "single_example_results.csv", 2, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode != 0 and "stopped by SIGTERM" in stderr and "to resume" in stderr
    rows = comparable(out / "single_example_results.csv")
    assert 2 <= len(rows) < 8
    expected = reference[reference["example_index"].isin(rows["example_index"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(rows, expected)
    assert (out / "training_summary.json").exists() and (out / "loss_vs_difficulty.png").exists()


def test_run_directory_of_another_configuration_is_refused(tmp_path, cache_dir):
    out = tmp_path / "run"
    code, output = run_cli(*RUN_ARGS, "sample_size=2", f"hydra.run.dir={out}", *tiny_universe_overrides(cache_dir))
    assert code == 0, output[-2000:]
    code, output = run_cli(*RUN_ARGS, "sample_size=2", "lr=1e-3", "seed=3", f"hydra.run.dir={out}",
                           *tiny_universe_overrides(cache_dir))
    assert code == 2 and "Traceback" not in output
    assert "different configuration" in output and "lr, seed" in output


def test_a_torn_last_row_is_left_out_on_read_and_cut_by_the_next_writer(tmp_path, caplog):
    csv = tmp_path / "single_example_results.csv"
    writer = ResultsWriter(csv)
    writer.write({"example_index": 0, "path": "a.png", "status": "correct"})
    writer.close()
    with open(csv, "a") as file:
        file.write("1,b.png,3.5,12")  # a kill in the middle of a row
    torn = csv.read_bytes()
    assert list(read_rows(csv)["path"]) == ["a.png"] and "1 torn last line" in caplog.text
    assert csv.read_bytes() == torn  # reading changes nothing
    ResultsWriter(csv).close()  # the writer cuts it, and does not write the header twice
    assert csv.read_text().count("example_index") == 1 and csv.read_text().endswith("\n")
    assert list(read_rows(csv)["path"]) == ["a.png"]


@pytest.mark.parametrize("mode, make", [
    ("L", lambda: Image.fromarray(np.full((8, 8), 200, np.uint8))),
    ("CMYK", lambda: Image.new("CMYK", (8, 8), (0, 255, 0, 0))),
    ("RGBA", lambda: Image.new("RGBA", (8, 8), (10, 20, 30, 128))),
    ("P", lambda: Image.new("RGB", (8, 8), (255, 0, 0)).convert("P")),
    ("I;16", lambda: Image.fromarray(np.full((8, 8), 65535, np.uint16))),
])
def test_unusual_image_modes_just_work(tmp_path, mode, make):
    path = tmp_path / f"image.{'jpg' if mode in ('L', 'CMYK') else 'png'}"
    make().save(path)
    image = load_image(str(path))
    assert image.mode == "RGB" and image.size == (8, 8)
    if mode == "I;16":
        assert np.asarray(image).min() == 255  # scaled to 8 bits, not clipped to black or garbage


def write_dataset(root: Path, files: list[str], ranks: list[str] | None = None) -> tuple[Path, Path]:
    for name in files:
        Image.new("RGB", (8, 8)).save(root / name)
    pd.DataFrame({"file": files, "label": [1] * len(files)}).to_csv(root / "labels.csv", index=False)
    pd.DataFrame({"path": ranks or files, "rank": range(1, len(files) + 1)}).to_csv(root / "difficulty.csv",
                                                                                    index=False)
    return root / "labels.csv", root / "difficulty.csv"


def test_difficulty_paths_matching_no_image_show_both_sides(tmp_path):
    labels, difficulty = write_dataset(tmp_path, ["a.png", "b.png"], ranks=["/elsewhere/x.png", "/elsewhere/y.png"])
    with pytest.raises(UserError, match=r"'a.png'.*'/elsewhere/x.png'"):
        read_examples(tmp_path, labels, difficulty)


def test_missing_images_are_named(tmp_path, caplog):
    labels, difficulty = write_dataset(tmp_path, ["a.png", "b.png"])
    (tmp_path / "b.png").unlink()
    assert [Path(e.path).name for e in read_examples(tmp_path, labels, difficulty)] == ["a.png"]
    assert "b.png" in caplog.text and "1 of 2" in caplog.text
    (tmp_path / "a.png").unlink()
    with pytest.raises(UserError, match="a.png"):
        read_examples(tmp_path, labels, difficulty)


def test_label_outside_the_model_classes():
    with pytest.raises(UserError, match=r"x.png: label 12 is outside the 10 classes of model m"):
        check_labels([Example("ok.png", 3, 1), Example("x.png", 12, 2)], 10, "m")


def test_corrupt_image_is_unreadable_not_fatal(tmp_path):
    from sweep.run.inference import Search, find_wrong
    good, bad = tmp_path / "good.png", tmp_path / "bad.jpg"
    Image.new("RGB", (8, 8)).save(good)
    Image.new("RGB", (64, 64)).save(bad)
    bad.write_bytes(bad.read_bytes()[:200])  # truncated JPEG
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
    torch.nn.init.zeros_(model[1].weight)
    model[1].bias.data = torch.tensor([1.0, 0.0])  # always predicts class 0
    to_tensor = lambda e: torch.from_numpy(np.asarray(load_image(e.path), np.float32)).permute(2, 0, 1)
    wrong, unreadable = find_wrong(model, [Example(str(good), 1, 1), Example(str(bad), 1, 2)],
                                   Search(to_tensor, batch_size=4, progress=False))
    assert unreadable == 1 and [e.path for e in wrong] == [str(good)]
    mistake = wrong[Example(str(good), 1, 1)]
    assert mistake.loss == pytest.approx(np.log(1 + np.e)) and mistake.prediction == 0  # -log softmax(0, 1)[1]


def test_a_file_read_fails_then_succeeds_on_retry(tmp_path, monkeypatch):
    """A read error (a network file system's hiccup) is retried; only undecodable bytes are unreadable."""
    import builtins

    import sweep.data.image_files as images
    path = tmp_path / "a.png"
    Image.new("RGB", (8, 8), (10, 20, 30)).save(path)
    failures = []

    def flaky(file, *args, **kwargs):
        if str(file) == str(path) and len(failures) < 2:
            failures.append(file)
            raise OSError(5, "Input/output error")
        return builtins.open(file, *args, **kwargs)
    monkeypatch.setattr(images, "open", flaky, raising=False)
    monkeypatch.setattr(images, "READ_BACKOFF_SECONDS", 0.01)
    assert load_image(str(path)).getpixel((0, 0)) == (10, 20, 30) and len(failures) == 2
    with pytest.raises(images.ImageReadError, match=r"missing.png: cannot be read \(FileNotFoundError"):
        load_image(str(tmp_path / "missing.png"))
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(images.UnreadableImage, match="UnidentifiedImageError"):
        load_image(str(tmp_path / "bad.png"))


def test_a_transform_error_is_not_an_unreadable_image(tmp_path):
    """A bug in a view (the transform) is not the image's fault: it propagates, nothing is recorded."""
    from sweep.data.images import read_view
    path = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(path)

    def broken(example):
        load_image(example.path)
        raise ValueError("a bug in the transform")
    with pytest.raises(ValueError, match="a bug in the transform"):
        read_view(broken, Example(str(path), 0, 1))


@pytest.mark.parametrize("workers", [1, 2])
def test_a_file_that_stays_unreadable_stops_the_run_and_a_resume_retries_it(tmp_path, cache_dir, monkeypatch,
                                                                            workers):
    """An image file that cannot be read (here: an I/O error on every attempt) stops the run with the file
    named, keeping the rows finished before; rerun once the file is back, the run completes, with no
    example recorded as unreadable."""
    import builtins

    import sweep.data.image_files as images
    from helpers.configs import compose_config
    from sweep.run.job import run
    cfg = compose_config(*tiny_universe_overrides(cache_dir), "sample_size=4", "lr=3e-5", "max_steps=30",
                         "progress=false", f"execution.workers={workers}", "probe.size=0")
    first = run(cfg, tmp_path / "reference")
    selected = pd.read_csv(tmp_path / "reference" / "selection.csv")["path"].tolist()
    assert sum(first["counts"].values()) == 4 and "unreadable" not in first["counts"]
    lost = selected[2]

    def failing(file, *args, **kwargs):
        if str(file) == lost:
            raise OSError(5, "Input/output error")
        return builtins.open(file, *args, **kwargs)
    monkeypatch.setattr(images, "READ_BACKOFF_SECONDS", 0.01)
    monkeypatch.setattr(images, "open", failing, raising=False)
    out = tmp_path / "run"
    out.mkdir()
    for name in ("selection.csv", "selection.json"):  # the same selection, so that the lost file is in it
        (out / name).write_bytes((tmp_path / "reference" / name).read_bytes())
    with pytest.raises(UserError, match=f"{lost}: cannot be read .OSError: Input/output error. after 4 attempts"):
        run(cfg, out)
    kept = pd.read_csv(out / "single_example_results.csv")
    assert lost not in set(kept["path"]) and "unreadable" not in set(kept["status"])
    monkeypatch.undo()
    run(cfg, out)
    pd.testing.assert_frame_equal(comparable(out / "single_example_results.csv"),
                                  comparable(tmp_path / "reference" / "single_example_results.csv"))


def test_unknown_model_name():
    with pytest.raises(UserError, match="model.arch='resnet9000' is not a timm architecture"):
        create_model("resnet9000", 10)


def test_checkpoint_that_does_not_fit(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"state_dict": create_model("test_vit", 10, 32, (0.5,) * 3, (0.5,) * 3).state_dict()}, path)
    with pytest.raises(UserError, match=f"checkpoint {path} does not fit"):
        load_checkpoint(create_model("test_resnet", 10), path)


def test_empty_wrong_set_is_a_clear_error(tmp_path):
    from omegaconf import OmegaConf

    from helpers.configs import compose_config
    from sweep.config import MemoryFormat
    from sweep.data.sources import Source
    from sweep.run.context import JobContext
    from sweep.run.selection import select
    cfg = compose_config()
    model = create_model("test_resnet", 10)
    settings = OmegaConf.to_object(cfg)
    settings.sample_size = 200
    job = JobContext(settings, {}, torch.device("cpu"), 1, "test", tmp_path,
                     Source([Example("a.png", 1, 1)], wrong=[]), model, {"digest": "-"}, MemoryFormat.contiguous, "",
                     lambda example: torch.zeros(3, 32, 32), (3, 32, 32), "sample_size=200")
    with pytest.raises(UserError, match="model test_resnet gets no example of data=demo wrong: nothing to correct"):
        select(job)
