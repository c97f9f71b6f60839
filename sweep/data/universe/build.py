"""Build (once) and cache the embedded demo universe.

The universe is laid out on disk exactly like a real data set, so the rest of the product treats it
the same way: `val/<class>/<n>.png` images, `labels.csv` (file,label), a zoo correctness matrix in
the original format (`correctness.npy` models x examples, `models.csv`, `examples.csv`),
`difficulty.csv` (path,rank), `val_meta.csv` (the generating severity) and `zoo.csv` (each zoo
member's accuracy; members not clearly above chance are left out of the matrix, since a model at
chance adds only noise to universal difficulty). Pretrained weights per
architecture are trained on the train split on first use and cached beside it. Everything is keyed
by the universe parameters and seeded, so a rebuild gives the same files.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from filelock import FileLock
from PIL import Image
from scipy import stats
from tqdm import tqdm

from sweep.data.class_names import CLASSES_TXT
from sweep.data.correctness import evaluate, write_matrix
from sweep.data.universe.shapes import CLASSES, render_split
from sweep.data.universe.supervised import train_classifier
from sweep.errors import UserError
from sweep.files import atomic_write_text, replacing
from sweep.models import create_model

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # bump when the generator or the zoo recipe changes (2: zoo members at chance left out)
CHANCE = 1 / len(CLASSES)
ABOVE_CHANCE_P = 1e-3  # a zoo member is kept when a one-sided binomial test puts its accuracy above chance
MEAN = STD = (0.5, 0.5, 0.5)
BUILD_THREADS = 2


@dataclass(frozen=True)
class Universe:
    root: Path
    image_size: int
    num_classes: int = len(CLASSES)

    @property
    def labels_csv(self) -> Path:
        return self.root / "labels.csv"

    @property
    def classes_txt(self) -> Path:
        """The class names, one a line in label order (CLASSES_TXT: how a data set names its classes)."""
        return self.root / CLASSES_TXT

    @property
    def difficulty_csv(self) -> Path:
        return self.root / "difficulty.csv"

    @property
    def val_meta_csv(self) -> Path:
        return self.root / "val_meta.csv"

    @property
    def images_root(self) -> Path:
        return self.root / "val"

    def new_model(self, arch: str) -> torch.nn.Module:
        return create_model(arch, self.num_classes, self.image_size, MEAN, STD)


def _key(params: dict) -> str:
    blob = json.dumps({"format": FORMAT_VERSION, **params}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC to normalised float NCHW, the same values the eval transform gives from the PNGs."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return (x - MEAN[0]) / STD[0]


@contextlib.contextmanager
def _build_threads():
    """Build with a fixed thread count: float reductions, and so the trained weights, depend on it.
    A universe built under a parallel launcher (1 thread per job) then equals one built by a plain run."""
    previous = torch.get_num_threads()
    torch.set_num_threads(BUILD_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _seed(*parts) -> int:
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:8], 16)


def build_universe(params: dict, cache_root: Path, progress: bool = True) -> Universe:
    """Return the cached universe for `params` (a UniverseConfig's fields), building it first if needed."""
    root = Path(cache_root) / f"demo-{_key(params)}"
    universe = Universe(root, params["image_size"])
    cache_root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root) + ".lock"):
        if not (root / "done").exists():
            log.info("building the demo universe in %s (first run only)", root)
            staging = Path(str(root) + ".partial")
            shutil.rmtree(staging, ignore_errors=True)
            with _build_threads():
                _build(params, staging, progress)
            shutil.rmtree(root, ignore_errors=True)
            os.replace(staging, root)
        if not universe.classes_txt.exists():  # a universe built before it wrote its class names
            atomic_write_text(universe.classes_txt, "\n".join(CLASSES) + "\n")
    return universe


def _build(params: dict, out: Path, progress: bool) -> None:
    size = params["image_size"]
    train_x, train_y, _ = render_split(params["n_train"], size, _seed(params["seed"], "train"))
    val_x, val_y, val_severity = render_split(params["n_val"], size, _seed(params["seed"], "val"))
    out.mkdir(parents=True)
    np.savez(out / "train.npz", images=train_x, labels=train_y)

    files = [f"{CLASSES[y]}/{i:05d}.png" for i, y in enumerate(val_y)]
    for name, image in zip(files, val_x, strict=True):
        (out / "val" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(out / "val" / name)
    pd.DataFrame({"file": files, "label": val_y}).to_csv(out / "labels.csv", index=False)
    (out / CLASSES_TXT).write_text("\n".join(CLASSES) + "\n")

    models, correct, true_prob, zoo = [], [], [], []
    train_t, train_label_t, val_t = _to_tensor(train_x), torch.from_numpy(train_y), _to_tensor(val_x)
    val_batches = [(val_t[i:i + 500], torch.from_numpy(val_y[i:i + 500])) for i in range(0, len(val_y), 500)]
    members = [(arch, epochs) for arch in params["zoo_archs"] for epochs in params["zoo_epochs"]]
    for arch, epochs in tqdm(members, desc="training the demo zoo", unit="model", disable=not progress):
        torch.manual_seed(_seed(params["seed"], arch, epochs))
        model = create_model(arch, len(CLASSES), size, MEAN, STD)
        train_classifier(model, train_t, train_label_t, epochs, seed=_seed(params["seed"], arch, epochs))
        right, prob = evaluate(model, val_batches)
        name, test = f"{arch}_e{epochs}", stats.binomtest(int(right.sum()), len(right), CHANCE, alternative="greater")
        kept = bool(test.pvalue < ABOVE_CHANCE_P)
        zoo.append({"model": name, "accuracy": float(right.mean()), "p_above_chance": float(test.pvalue),
                    "in_zoo": kept})
        log.info("zoo model %s: %.1f%% correct on val%s", name, 100 * right.mean(),
                 "" if kept else f" (not clearly above chance, {CHANCE:.0%}: left out)")
        if kept:
            models.append(name)
            correct.append(right)
            true_prob.append(prob)
    pd.DataFrame(zoo).to_csv(out / "zoo.csv", index=False)
    if not models:
        raise UserError(f"no model of the demo zoo ({', '.join(params['zoo_archs'])}) got clearly above chance on the "
                        f"universe's validation images: train them longer (data.universe.zoo_epochs) or on more "
                        f"images (data.universe.n_train)")
    correct, true_prob = np.array(correct), np.array(true_prob)
    write_matrix(out, models, files, correct, true_prob)
    ranks = pd.read_csv(out / "difficulty.csv")["rank"].to_numpy()
    pd.DataFrame({"file": files, "label": val_y, "severity": val_severity, "rank": ranks,
                  "fraction_correct": correct.mean(0)}).to_csv(out / "val_meta.csv", index=False)
    (out / "params.json").write_text(json.dumps(params, indent=2, sort_keys=True))
    (out / "done").touch()


def pretrained_weights(universe: Universe, arch: str, epochs: int, seed: int) -> Path:
    """Path of `arch` trained on the universe's train split, training it on first use."""
    path = universe.root / "weights" / f"{arch}-e{epochs}-s{seed}.pth"
    path.parent.mkdir(exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if not path.exists():
            log.info("pretraining %s on the demo universe (%d epochs, first use only)", arch, epochs)
            train = np.load(universe.root / "train.npz")
            torch.manual_seed(_seed(seed, arch, "pretrain"))
            model = universe.new_model(arch)
            with _build_threads():
                train_classifier(model, _to_tensor(train["images"]), torch.from_numpy(train["labels"]), epochs,
                                 seed=_seed(seed, arch, "pretrain"))
            # saved through a file object: the archive's inner name is then fixed ("archive"), not the
            # staging file's random one, so rebuilds give byte-identical files
            with replacing(path) as staging, open(staging, "wb") as file:
                torch.save(model.state_dict(), file)
    return path
