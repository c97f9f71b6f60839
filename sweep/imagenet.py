"""Real image folders (ImageNet validation) with universal difficulty from the original project's files.

Difficulty files, by format:
- the original single line: comma-separated image paths, easiest first (rank = position + 1);
- a CSV with a header: a path column (`path` or `file`) and `rank` (1 = easiest) or `score`
  (higher = easier, e.g. fraction of models correct; ranked descending, ties by position);
- a correctness matrix `.npy` (bool, models x examples) with its examples list, ranked by
  `sweep.difficulty.rank_examples`.
Difficulty paths usually point at another machine: they are matched to local files by rewriting
a prefix, or by file name.
"""
from __future__ import annotations

import functools
import logging
import re
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
from timm.data import ImageNetInfo

from sweep.data import Example
from sweep.difficulty import rank_examples

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
SYNSET = re.compile(r"^n\d{8}$")


def read_list(path: Path) -> list[str]:
    """A list file in the original format (one comma-separated line) or one entry per line."""
    text = Path(path).read_text().strip()
    return [item.strip() for item in re.split(r"[,\n]", text) if item.strip()]


def read_difficulty(path: Path, examples_file: Optional[Path] = None) -> pd.DataFrame:
    """Columns `path`, `rank` (1 = easiest) from any supported difficulty file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data.difficulty={path}: no such file")
    if path.suffix == ".npy":
        if examples_file is None:
            raise ValueError(f"data.difficulty={path} is a correctness matrix: set data.difficulty_examples "
                             f"to its examples list")
        matrix = np.load(path)
        examples = read_list(examples_file)
        if matrix.ndim != 2 or matrix.shape[1] != len(examples):
            raise ValueError(f"{path}: shape {matrix.shape} does not fit the {len(examples)} examples of "
                             f"{examples_file} (expected models x examples)")
        return pd.DataFrame({"path": examples, "rank": rank_examples(matrix.astype(bool))})
    first_line = path.open().readline()
    header = [c.strip().lower() for c in first_line.split(",")]
    path_column = next((c for c in ("path", "file") if c in header), None)
    if path_column is None:  # the original single-line order
        paths = read_list(path)
        return pd.DataFrame({"path": paths, "rank": np.arange(1, len(paths) + 1)})
    table = pd.read_csv(path)
    table.columns = [c.strip().lower() for c in table.columns]
    if "rank" in table:
        return pd.DataFrame({"path": table[path_column], "rank": table["rank"].astype(int)})
    if "score" in table:
        order = np.lexsort((np.arange(len(table)), -table["score"].to_numpy()))
        ranks = np.empty(len(table), dtype=np.int64)
        ranks[order] = np.arange(1, len(table) + 1)
        return pd.DataFrame({"path": table[path_column], "rank": ranks})
    raise ValueError(f"{path}: expected a 'rank' or 'score' column beside '{path_column}', found {list(table.columns)}")


def index_images(root: Path) -> list[Path]:
    """Image files under `root` (flat, or in synset subdirectories)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data.images={root}: no such directory")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def match_paths(difficulty: pd.DataFrame, images: list[Path], root: Path, match: str,
                prefix: Optional[str]) -> pd.DataFrame:
    """Difficulty rows with a local image: column `local` added; reports what did not match."""
    if match == "filename":
        by_name = {p.name: p for p in images}
        local = difficulty["path"].map(lambda p: by_name.get(Path(p).name))
    elif match == "prefix":
        existing = {str(p) for p in images}
        rewrite = (lambda p: str(Path(root) / Path(p).relative_to(prefix)) if p.startswith(prefix) else None) \
            if prefix else (lambda p: str(Path(root) / p))
        local = difficulty["path"].map(lambda p: (lambda q: q if q in existing else None)(rewrite(p)))
    else:
        raise ValueError(f"data.match={match!r}: expected 'prefix' or 'filename'")
    matched = difficulty.assign(local=[str(p) if pd.notna(p) else None for p in local]).dropna(subset=["local"])
    summary = (f"{len(matched)} of {len(difficulty)} difficulty entries match one of the {len(images)} images under "
               f"{root} (data.match={match}" + (f", data.prefix={prefix}" if match == "prefix" else "") + ")")
    if matched.empty:
        raise ValueError(f"{summary}. Example difficulty path: {difficulty['path'].iloc[0]!r}; example local image: "
                         f"{str(images[0]) if images else 'none'!r}. Set data.prefix to the part of the difficulty "
                         f"paths that stands for data.images, or data.match=filename")
    unmatched_images = sorted({str(p) for p in images} - set(matched["local"]))
    if unmatched_images:
        unmatched_entry = difficulty["path"][~difficulty.index.isin(matched.index)].iloc[0]
        log.warning("%s; %d local images have no difficulty entry (e.g. %s; an unmatched difficulty path: %s)",
                    summary, len(unmatched_images), unmatched_images[0], unmatched_entry)
    else:
        log.info(summary)
    return matched


def synset_label(path: str) -> Optional[int]:
    """Class index (timm's ImageNet order) of the synset directory in `path`, if any."""
    for part in reversed(Path(path).parts[:-1]):
        if SYNSET.match(part):
            if part not in _synset_indices():
                raise ValueError(f"{path}: unknown ImageNet synset {part!r}")
            return _synset_indices()[part]
    return None


def _first_label(*paths: str) -> Optional[int]:
    """The synset label of the first path that has one."""
    return next((label for label in map(synset_label, paths) if label is not None), None)


@functools.cache
def _synset_indices() -> dict[str, int]:
    return {name: index for index, name in enumerate(ImageNetInfo().label_names())}


def imagenet_examples(data) -> list[Example]:
    """Examples of `data` (a DataConfig with name=imagenet): local images with a label and a rank."""
    root = Path(data.images).expanduser()
    difficulty = read_difficulty(Path(data.difficulty).expanduser(),
                                 Path(data.difficulty_examples).expanduser() if data.difficulty_examples else None)
    matched = match_paths(difficulty, index_images(root), root, data.match, data.prefix)
    if data.labels:
        table = pd.read_csv(Path(data.labels).expanduser())
        if not {"file", "label"} <= set(table.columns):
            raise ValueError(f"data.labels={data.labels}: expected columns file,label; found {list(table.columns)}")
        by_name = dict(zip(table["file"].map(lambda f: Path(f).name), table["label"].astype(int)))
        labels = matched["local"].map(lambda p: by_name.get(Path(p).name))
        if labels.isna().any():
            missing = matched["local"][labels.isna()].iloc[0]
            raise ValueError(f"data.labels={data.labels}: no label for {labels.isna().sum()} images (e.g. {missing})")
    else:  # the synset directory of the local file, else of the difficulty path
        labels = [_first_label(local, original) for local, original in zip(matched["local"], matched["path"])]
        unlabelled = [p for p, y in zip(matched["local"], labels) if y is None]
        if unlabelled:
            raise ValueError(f"no synset directory in the path of {len(unlabelled)} images (e.g. {unlabelled[0]}): "
                             f"set data.labels to a CSV with columns file,label")
    return [Example(str(p), int(y), int(r)) for p, y, r in zip(matched["local"], labels, matched["rank"])]


def wrong_from_matrix(data, examples: list[Example]) -> list[Example]:
    """The examples that model `data.wrong_from_model` got wrong, from the correctness-matrix row
    (the original `--model_csv_name`)."""
    models = read_list(Path(data.difficulty_models).expanduser())
    if data.wrong_from_model not in models:
        close = [m for m in models if data.wrong_from_model.split(".")[0] in m][:5]
        raise ValueError(f"data.wrong_from_model={data.wrong_from_model!r} is not in {data.difficulty_models} "
                         f"({len(models)} models; similar: {close})")
    row = np.load(Path(data.difficulty).expanduser())[models.index(data.wrong_from_model)].astype(bool)
    correct = dict(zip(read_list(Path(data.difficulty_examples).expanduser()), row))
    by_name = {Path(k).name: v for k, v in correct.items()}
    return [e for e in examples if not correct.get(e.path, by_name.get(Path(e.path).name, True))]
