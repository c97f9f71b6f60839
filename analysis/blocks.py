"""The report's building blocks: a block of content, and estimates formatted as table cells."""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from sweep.outputs import SCORE_NAMES
from sweep.stats.estimates import with_ci

EMPTY = "—"


@dataclass
class Block:
    kind: str          # "h1", "h2", "p", "warning", "list", "table", "figure"
    content: object    # text, list of texts, a DataFrame, or a figure's PNG path
    caption: str = ""


SIGNED = ("rho_", "delta_", "partial_rho_")  # statistics around 0 are shown with their sign


def cell(values: pd.Series, reasons: dict, name: str) -> str:
    """An estimate as `+0.25 [+0.10, +0.40] n=50`, or `n/c (reason)`, or `—` where the run records
    nothing to compute it from."""
    value = values.get(name, math.nan)
    if name not in reasons and (value is None or not math.isfinite(value)):
        return EMPTY
    if value is None or not math.isfinite(value):
        return f"n/c ({reasons[name]})"
    low, high = values.get(f"{name}_ci_low", math.nan), values.get(f"{name}_ci_high", math.nan)
    n = values.get(f"{name}_n")
    number = "{:+.2%}" if name.startswith("mean_drawdown") else "{:+.3f}" if name.startswith("mean_") else \
        "{:+.2f}" if name.startswith(SIGNED) else "{:.2f}" if abs(value) < 100 else "{:.4g}"
    return with_ci(value, low, high, number, f" [CI n/c: {reasons.get(name, 'not computable')}]") + \
        (f" n={int(n)}" if n is not None and math.isfinite(n) else "")


def estimates(table: pd.DataFrame, reasons: dict, names: list[tuple[str, str]],
              label: str = "run") -> pd.DataFrame | None:
    """run (or setting: `label`) x (header, statistic) table of estimates; columns no row can fill are
    left out."""
    frame = pd.DataFrame([{label: row[label], **{header: cell(row, reasons[row[label]], name)
                                                 for header, name in names if name in table}}
                          for _, row in table.iterrows()])
    filled = [c for c in frame.columns if c == label or (frame[c] != EMPTY).any()]
    return frame[filled] if len(filled) > 1 else None


def score_name(score: str) -> str:
    """A score as the tables name it: baselines known in the literature by their names there."""
    return SCORE_NAMES.get(score, score)
