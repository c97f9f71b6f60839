"""Per-run outputs: the results CSV (one row per example, durable as written), the summary and the plot."""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

RESULTS_CSV = "single_example_results.csv"
SUMMARY_JSON = "training_summary.json"
PLOT_PNG = "loss_vs_difficulty.png"

# The original scripts' columns first, so downstream scripts keep working.
COLUMNS = ["example_index", "path", "total_loss_to_correct", "universal_difficulty_rank", "label",
           "initial_prediction", "status", "steps_to_correct", "loss_sum", "initial_loss", "final_loss",
           "initial_margin", "initial_grad_norm", "weight_distance", "seconds"]
# Scores related to difficulty in the summary: costs to correct, then the cheap baselines at the
# pretrained weights. Statistics use corrected examples only (the costs of the others are censored).
SCORES = ["loss_sum", "total_loss_to_correct", "steps_to_correct", "initial_loss", "initial_margin",
          "initial_grad_norm"]


class ResultsWriter:
    """Appends rows to the results CSV, each flushed and fsynced, so a crash loses no finished row."""

    def __init__(self, path: Path):
        self.path = Path(path)
        _drop_torn_last_line(self.path)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self.file = open(self.path, "a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=COLUMNS)
        if new:
            self.writer.writeheader()
            self._sync()

    def write(self, row: dict) -> None:
        self.writer.writerow(row)
        self._sync()

    def _sync(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


def _drop_torn_last_line(path: Path) -> None:
    """Cut a row left half-written by a killed process (every complete row ends with a newline)."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as file:
        data = file.read()
        if not data.endswith(b"\n"):
            file.truncate(data.rfind(b"\n") + 1)


def read_rows(path: Path) -> pd.DataFrame:
    """The rows of a results CSV written so far (empty if none), a torn last line ignored."""
    _drop_torn_last_line(path)
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame(columns=COLUMNS)
    return pd.read_csv(path)


def atomic_write_text(path: Path, text: str) -> None:
    staging = Path(f"{path}.partial")
    staging.write_text(text)
    os.replace(staging, path)


def spearman_vs_rank(rows: pd.DataFrame) -> dict:
    """Spearman rho (and p, n) of each score against universal difficulty rank, over corrected examples."""
    corrected = rows[rows["status"] == "correct"]
    out = {}
    for score in SCORES:
        pair = corrected[[score, "universal_difficulty_rank"]].dropna()
        if len(pair) >= 3 and pair[score].nunique() > 1:
            rho, p = stats.spearmanr(pair[score], pair["universal_difficulty_rank"])
            out[score] = {"rho": float(rho), "p": float(p), "n": len(pair)}
        else:
            out[score] = {"rho": None, "p": None, "n": len(pair)}
    return out


def plot_loss_vs_difficulty(rows: pd.DataFrame, path: Path, title: str) -> None:
    """Loss to correct (log x) against difficulty rank (y); never-corrected at their lower bound, marked."""
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=150)
    corrected = rows[rows["status"] == "correct"]
    censored = rows[rows["status"] == "never_correct"]
    floor = rows.loc[rows["loss_sum"] > 0, "loss_sum"].min()
    floor = floor / 2 if isinstance(floor, float) and math.isfinite(floor) else 1e-3
    ax.scatter(corrected["loss_sum"].clip(lower=floor), corrected["universal_difficulty_rank"], s=14, alpha=0.7,
               label=f"corrected (n={len(corrected)})")
    if len(censored):
        ax.scatter(censored["loss_sum"].clip(lower=floor), censored["universal_difficulty_rank"], marker="x", s=22,
                   color="tab:red", label=f"never corrected, lower bound (n={len(censored)})")
    rho = spearman_vs_rank(rows)
    ax.set_xscale("log")
    ax.set_xlabel("loss to correct (summed loss of the updates taken)")
    ax.set_ylabel("universal difficulty rank (1 = easiest)")
    if rho["loss_sum"]["rho"] is not None:
        title += (f"\nSpearman rho vs rank (corrected): loss to correct {rho['loss_sum']['rho']:.3f}, "
                  f"initial loss {rho['initial_loss']['rho']:.3f}")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    staging = Path(f"{path}.partial.png")
    fig.savefig(staging)
    plt.close(fig)
    os.replace(staging, path)


def write_summary(path: Path, summary: dict) -> None:
    atomic_write_text(path, json.dumps(summary, indent=2, default=str) + "\n")
