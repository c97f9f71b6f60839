"""State files, written and read safely.

Writes replace a file at once: the new content goes to a staging file of a unique name beside it,
is flushed to disk, and is renamed over the file, and the rename itself is flushed; a reader sees
the old file or the new one, never a part, and a crash leaves no half-written state. Reads never
change a file: an append-only CSV whose writer was killed may end in a torn line (no final
newline), which a read leaves out.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from sweep.errors import UserError

UMASK = os.umask(0o022)  # the process's umask, read once at import (setting it is the only way to read it)
os.umask(UMASK)


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A staging path to write `path`'s new content to; on leaving the block it is flushed to disk
    and renamed over `path` (on an exception it is removed and `path` left as it was)."""
    path = Path(path)
    descriptor, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(descriptor)
    staging = Path(staging)
    os.chmod(staging, 0o666 & ~UMASK)  # as open() would create it (mkstemp's is private to its owner)
    try:
        yield staging
        with open(staging, "rb+") as file:
            os.fsync(file.fileno())
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    _sync_directory(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace `path` with `text` at once."""
    with replacing(path) as staging:
        staging.write_text(text)


def _sync_directory(directory: Path) -> None:
    """Flush a directory's entries (a rename) to disk, where the platform allows it."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def complete_lines(path: Path) -> tuple[bytes, int]:
    """The bytes of `path` up to its last newline, and how many torn bytes (a line without a newline,
    left by a writer killed in the middle of it) were left out. Empty if the file is missing."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return b"", 0
    end = data.rfind(b"\n") + 1
    return data[:end], len(data) - end


def read_csv(path: Path) -> tuple[pd.DataFrame, bool]:
    """The complete rows of an append-only CSV (an empty frame if the file is missing or holds no
    header), and whether a torn last line was left out. The file is not changed."""
    data, torn = complete_lines(path)
    if not data.strip():
        return pd.DataFrame(), bool(torn)
    return pd.read_csv(io.BytesIO(data)), bool(torn)


def csv_header(path: Path) -> list[str] | None:
    """The column names in the first line of a CSV, or None if it has no complete first line."""
    data, _ = complete_lines(path)
    if not data:
        return None
    return data.split(b"\n", 1)[0].decode("utf-8").strip().split(",")


def existing(path: Path | str, key: str) -> Path:
    """`path` (with ~ expanded), refused with `key` named when it is not a file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{key}={path}: no such file")
    return path
