"""Input list files (one comma-separated line, or one entry per line) and correctness-matrix files."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from sweep.errors import UserError
from sweep.files import existing

NPY_MAGIC = b"\x93NUMPY"


def load_matrix(path: Path, key: str) -> np.ndarray:
    """A bool models x examples matrix from a .npy file (config key `key`, named in errors)."""
    path = existing(path, key)
    with open(path, "rb") as file:
        start = file.read(len(NPY_MAGIC))
    if start != NPY_MAGIC:
        raise UserError(f"{key}={path}: not a NumPy .npy file (it starts with {start!r}); expected the bool "
                        f"models x examples correctness matrix saved by numpy.save")
    matrix = np.load(path, allow_pickle=False)
    if matrix.ndim != 2 or matrix.dtype != bool:
        raise UserError(f"{key}={path}: a {matrix.ndim}-D {matrix.dtype} array of shape {matrix.shape}; expected a "
                        f"2-D bool matrix (models x examples)")
    return matrix


PATH_COLUMNS = ("path", "file")  # accepted names of a CSV's path column


IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def read_list(path: Path, key: str = "a list") -> list[str]:
    """A list file: the original format (one comma-separated line) or one entry per line. Empty
    files and duplicate entries are refused, naming `key`, the file and where."""
    path = existing(path, key)
    lines = path.read_text().splitlines()
    entries = [(number, item.strip()) for number, line in enumerate(lines, 1) for item in line.split(",")
               if item.strip()]
    if not entries:
        raise UserError(f"{key}={path}: the file is empty; expected paths or names separated by commas or lines")
    refuse_duplicates([item for _, item in entries], path, key,
                      where=lambda i: f"line {entries[i][0]}" if len(lines) > 1 else f"entry {i + 1}")
    return [item for _, item in entries]


def refuse_duplicates(items: list[str], path: Path, key: str, where) -> None:
    """Refuse a file that names the same example twice: it would be sampled twice and resumed once."""
    first: dict[str, int] = {}
    repeats = []
    for i, item in enumerate(items):
        if item in first:
            repeats.append(f"{item!r} ({where(first[item])} and {where(i)})")
        first.setdefault(item, i)
    if repeats:
        count = f"{len(repeats)} duplicate entr{'y' if len(repeats) == 1 else 'ies'}"
        raise UserError(f"{key}={path}: {count}, e.g. {'; '.join(repeats[:3])}; each example must appear once")

