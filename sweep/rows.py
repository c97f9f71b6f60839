"""Reading a run's rows: one reader for the run (resuming, its statistics) and the analysis. Torch-free.

Rows are appended as examples finish, in any order, and the last line of a killed writer's file may
be torn; a reader takes the complete lines, in selection order, each example once.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from sweep.errors import UserError
from sweep.files import read_csv

log = logging.getLogger(__name__)


def read_rows(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """The complete rows of a results or steps CSV (empty, with `columns` where given, if there are
    none); a torn last line is left out and logged, and the file left as it is. A file that is not a
    CSV is refused, naming it."""
    try:
        rows, torn = read_csv(path)
    except pd.errors.EmptyDataError:
        rows, torn = pd.DataFrame(), False
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: not a readable CSV ({str(error).splitlines()[0]}); "
                        f"expected a results table") from None
    if torn:
        log.warning("%s: 1 torn last line (a writer killed mid-row) left out", path)
    return rows if len(rows.columns) or columns is None else pd.DataFrame(columns=columns)


def in_selection_order(rows: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The rows by `example_index` (the order examples finished in does not change a statistic), each
    example once (two writers into one directory, before directories were locked, or shards that
    overlap), and how many repeats were dropped."""
    if "example_index" not in rows:
        return rows, 0
    rows = rows.sort_values("example_index", kind="stable", ignore_index=True)
    duplicated = rows["example_index"].duplicated()
    return rows[~duplicated].reset_index(drop=True), int(duplicated.sum())
