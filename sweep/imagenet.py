"""Real image folders (ImageNet validation): local images matched to a difficulty file, with labels.

Difficulty paths usually point at another machine: they are matched to local files by rewriting
a prefix, or by file name. Labels come from the synset directory in a path (timm's class order)
or from a labels CSV.
"""
from __future__ import annotations

import functools
import logging
import re
from pathlib import Path
from typing import Optional

import pandas as pd
from timm.data import ImageNetInfo

from sweep.config import Match
from sweep.data import Example
from sweep.difficulty import read_difficulty
from sweep.errors import UserError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
SYNSET = re.compile(r"^n\d{8}$")


def index_images(root: Path) -> list[Path]:
    """Image files under `root` (flat, or in synset subdirectories)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"data.images={root}: no such directory")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def match_paths(difficulty: pd.DataFrame, images: list[Path], root: Path, match: Match | str,
                prefix: Optional[str]) -> pd.DataFrame:
    """Difficulty rows with a local image: column `local` added; reports what did not match."""
    if match not in {m.value for m in Match}:
        raise UserError(f"data.match={match!r}: expected 'prefix' or 'filename'")
    match = Match(match)
    if match == Match.filename:
        by_name = {p.name: p for p in images}
        local = difficulty["path"].map(lambda p: by_name.get(Path(p).name))
    else:
        existing = {str(p) for p in images}
        rewrite = (lambda p: str(Path(root) / Path(p).relative_to(prefix)) if p.startswith(prefix) else None) \
            if prefix else (lambda p: str(Path(root) / p))
        local = difficulty["path"].map(lambda p: (lambda q: q if q in existing else None)(rewrite(p)))
    matched = difficulty.assign(local=[str(p) if pd.notna(p) else None for p in local]).dropna(subset=["local"])
    summary = (f"{len(matched)} of {len(difficulty)} difficulty entries match one of the {len(images)} images under "
               f"{root} (data.match={match.value}" + (f", data.prefix={prefix}" if match == Match.prefix else "") + ")")
    if matched.empty:
        raise UserError(f"{summary}. Example difficulty path: {difficulty['path'].iloc[0]!r}; example local image: "
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
                raise UserError(f"{path}: unknown ImageNet synset {part!r}")
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
            raise UserError(f"data.labels={data.labels}: expected columns file,label; found {list(table.columns)}")
        by_name = dict(zip(table["file"].map(lambda f: Path(f).name), table["label"].astype(int)))
        labels = matched["local"].map(lambda p: by_name.get(Path(p).name))
        if labels.isna().any():
            missing = matched["local"][labels.isna()].iloc[0]
            raise UserError(f"data.labels={data.labels}: no label for {labels.isna().sum()} images (e.g. {missing})")
    else:  # the synset directory of the local file, else of the difficulty path
        labels = [_first_label(local, original) for local, original in zip(matched["local"], matched["path"])]
        unlabelled = [p for p, y in zip(matched["local"], labels) if y is None]
        if unlabelled:
            raise UserError(f"no synset directory in the path of {len(unlabelled)} images (e.g. {unlabelled[0]}): "
                             f"set data.labels to a CSV with columns file,label")
    return [Example(str(p), int(y), int(r)) for p, y, r in zip(matched["local"], labels, matched["rank"])]
