"""Real image folders (ImageNet validation): local images matched to a difficulty file, with labels.

Difficulty paths usually point at another machine: they are matched to local files by rewriting
a prefix, or by file name. Labels come from the synset directory in a path (timm's class order)
or from a labels CSV.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import pandas as pd

from sweep.config import ImageFolderDataConfig, Match
from sweep.data.difficulty import read_difficulty
from sweep.data.examples import Example
from sweep.data.file_formats import IMAGE_SUFFIXES, refuse_duplicates
from sweep.data.imagenet_classes import synset_label
from sweep.errors import UserError

log = logging.getLogger(__name__)



def index_images(root: Path) -> list[Path]:
    """Image files under `root` (flat, or in synset subdirectories)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"data.images={root}: {'a file' if root.exists() else 'no such directory'}; expected the "
                        f"folder of validation images")
    images = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise UserError(f"data.images={root}: holds no images (files ending in {', '.join(IMAGE_SUFFIXES)}, "
                        f"searched in subfolders too)")
    return images


class PathMatcher:
    """Maps paths from another machine (a difficulty file, a matrix's examples list) to local images:
    by replacing `prefix` (compared path component by component) with `root`, or by file name."""

    def __init__(self, images: list[Path], root: Path, match: Match | str, prefix: Optional[str]):
        if match not in {m.value for m in Match}:
            raise UserError(f"data.match={match!r}: expected 'prefix' or 'filename'")
        self.images, self.root, self.match, self.prefix = images, Path(root), Match(match), prefix
        self.existing = {str(p) for p in images}
        self._by_name = {p.name: str(p) for p in images}
        self._root_text = str(self.root)
        self._prefix_text = str(Path(prefix)) + "/" if prefix else ""

    def local(self, path: str) -> Optional[str]:
        """The local image `path` stands for, or None."""
        if self.match == Match.filename:
            return self._by_name.get(Path(path).name)
        rest = path[len(self._prefix_text):] if path.startswith(self._prefix_text) else None
        if rest is None or not _normal(rest):  # the exact rule, component by component (slow, rarely needed)
            if self.prefix:
                if not Path(path).is_relative_to(self.prefix):
                    return None
                path = Path(path).relative_to(self.prefix)
            candidate = str(self.root / path)
        else:  # a plain string prefix: 50,000 paths in a moment
            candidate = os.path.join(self._root_text, rest)
        return candidate if candidate in self.existing else None

    def describe(self) -> str:
        return f"data.match={self.match.value}" + (f", data.prefix={self.prefix}" if self.match == Match.prefix else "")

    def no_match_hint(self, example_path: str) -> str:
        return (f"Example path: {example_path!r}; example local image: "
                f"{str(self.images[0]) if self.images else 'none'!r}. Set data.prefix to the part of those "
                f"paths that stands for data.images, or data.match=filename")


def _normal(relative: str) -> bool:
    """Whether a relative path string is already as pathlib writes it (nothing for it to collapse)."""
    return not (relative.startswith(("/", "./")) or relative.endswith(("/", "/.")) or "//" in relative
                or "/./" in relative or relative == ".")


def match_paths(difficulty: pd.DataFrame, matcher: PathMatcher) -> pd.DataFrame:
    """Difficulty rows with a local image: column `local` added; reports what did not match."""
    local = [matcher.local(p) for p in difficulty["path"]]
    matched = difficulty.assign(local=local).dropna(subset=["local"])
    summary = (f"{len(matched)} of {len(difficulty)} difficulty entries match one of the {len(matcher.images)} "
               f"images under {matcher.root} ({matcher.describe()})")
    if matched.empty:
        raise UserError(f"{summary}. {matcher.no_match_hint(difficulty['path'].iloc[0])}")
    unmatched_images = sorted(matcher.existing - set(matched["local"]))
    if unmatched_images:
        unmatched_entry = difficulty["path"][~difficulty.index.isin(matched.index)]
        log.warning("%s; %d local images have no difficulty entry (e.g. %s%s)", summary, len(unmatched_images),
                    unmatched_images[0], f"; an unmatched difficulty path: {unmatched_entry.iloc[0]}"
                    if len(unmatched_entry) else "")
    else:
        log.info(summary)
    return matched


def _first_label(*paths: str) -> Optional[int]:
    """The synset label of the first path that has one."""
    return next((label for label in map(synset_label, paths) if label is not None), None)


def read_labels(path: Path) -> dict[str, int]:
    """file name -> class index from a labels CSV (columns file,label), each file once, labels whole numbers."""
    key = "data.labels"
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise UserError(f"{key}={path}: the file is empty; expected a CSV with columns file,label") from None
    if not {"file", "label"} <= set(table.columns):
        raise UserError(f"{key}={path}: expected columns file,label; found {list(table.columns)}")
    labels = pd.to_numeric(table["label"], errors="coerce")
    bad = labels.isna() | (labels != labels.round()) | (labels < 0)
    if bad.any():
        first = int(bad.to_numpy().argmax())
        raise UserError(f"{key}={path}, line {first + 2}: label {table['label'].iloc[first]!r} is not a class index "
                        f"(a whole number >= 0)")
    names = [Path(f).name for f in table["file"]]
    refuse_duplicates(names, path, key, where=lambda i: f"line {i + 2}")
    return dict(zip(names, labels.astype(int), strict=True))


def path_matcher(data: ImageFolderDataConfig) -> PathMatcher:
    """The matcher of `data` (an ImageFolderDataConfig) over its local images."""
    root = Path(data.images).expanduser()
    return PathMatcher(index_images(root), root, data.match, data.prefix)


def image_folder_examples(data: ImageFolderDataConfig, matcher: PathMatcher) -> list[Example]:
    """Examples of `data` (an ImageFolderDataConfig): local images with a label and a rank."""
    difficulty = read_difficulty(Path(data.difficulty).expanduser(),
                                 Path(data.difficulty_examples).expanduser() if data.difficulty_examples else None)
    matched = match_paths(difficulty, matcher)
    if data.labels:
        by_name = read_labels(Path(data.labels).expanduser())
        labels = matched["local"].map(lambda p: by_name.get(Path(p).name))
        if labels.isna().any():
            missing = matched["local"][labels.isna()].iloc[0]
            raise UserError(f"data.labels={data.labels}: no label for {labels.isna().sum()} images (e.g. {missing})")
    else:  # the synset directory of the local file, else of the difficulty path
        labels = [_first_label(local, original)
                  for local, original in zip(matched["local"], matched["path"], strict=True)]
        unlabelled = [p for p, y in zip(matched["local"], labels, strict=True) if y is None]
        if unlabelled:
            raise UserError(f"no synset directory in the path of {len(unlabelled)} images (e.g. {unlabelled[0]}): "
                             f"set data.labels to a CSV with columns file,label")
    return [Example(str(p), int(y), int(r)) for p, y, r in zip(matched["local"], labels, matched["rank"], strict=True)]
