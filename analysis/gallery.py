"""A look at the images themselves: per run, its cheapest and its costliest corrected mistakes, each
with its true and predicted class names and its cost."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from analysis.figures import save, seaborn
from sweep.data.class_names import class_name
from sweep.data.image_files import ImageReadError, UnreadableImage, load_image
from sweep.outputs import Status
from sweep.plots import pyplot
from sweep.stats.research import primary_cost

PER_END = 8  # images at each end of the cost order


MOST = 8  # galleries in a report


def galleries(runs: list[tuple[object, str]], out: Path) -> list[tuple[str, list[Path]]]:
    """(run label, figure paths) for the first run of each model and sample (runs that differ in lr
    alone show the same images) with corrected mistakes, at most MOST: `gallery/<n>.png`."""
    folder = out / "gallery"
    made, seen = [], set()
    for number, (run, label) in enumerate(runs):
        sample = (str(run.params.get("model")), frozenset(run.rows["path"]) if "path" in run.rows else number)
        if sample in seen or len(made) == MOST:
            continue
        seen.add(sample)
        cost = primary_cost(run.rows)
        corrected = run.rows[run.rows["status"] == Status.CORRECT] if cost else pd.DataFrame()
        if corrected.empty or not any(Path(path).is_file() for path in corrected["path"]):
            continue  # nothing to look at (no corrected mistake, or its images are on another machine)
        folder.mkdir(exist_ok=True)
        ordered = corrected.sort_values(cost, kind="stable")
        ends = [("cheapest", ordered.head(PER_END)), ("costliest", ordered.tail(PER_END).iloc[::-1])]
        made.append((label, _draw(ends, cost, run.params.get("data.name"), label, folder, f"{number}")))
    return made


COLUMNS = 4  # images per row: the captions stay readable where the report shows the figure 960 px wide


def _draw(ends: list[tuple[str, pd.DataFrame]], cost: str, data: str | None, title: str, folder: Path,
          name: str) -> list[Path]:
    seaborn()
    lines = [(end, rows.iloc[start:start + COLUMNS]) for end, rows in ends for start in range(0, len(rows), COLUMNS)]
    fig, axes = pyplot().subplots(len(lines), COLUMNS, figsize=(2.3 * COLUMNS, 2.7 * len(lines)), squeeze=False)
    for index, (row_axes, (end, rows)) in enumerate(zip(axes, lines, strict=True)):
        for ax, (_, example) in zip(row_axes, rows.iterrows(), strict=False):  # a last line may be short
            try:
                ax.imshow(load_image(example["path"], attempts=1))
            except (ImageReadError, UnreadableImage):
                ax.text(0.5, 0.5, "image not\nfound", ha="center", va="center", fontsize=9)
            ax.set_title(f"{_short(class_name(example.get('label'), example['path'], data))}\n"
                         f"pred {_short(class_name(example.get('initial_prediction'), example['path'], data))}\n"
                         f"{cost} {example[cost]:.3g}, rank {int(example['universal_difficulty_rank'])}",
                         fontsize=9)
        if index == 0 or lines[index - 1][0] != end:
            row_axes[0].set_ylabel(end, fontsize=10)
        for ax in row_axes:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
        for ax in row_axes[len(rows):]:
            ax.set_visible(False)
    fig.suptitle(f"{title}: the {PER_END} cheapest and costliest corrected mistakes (true class, prediction)",
                 fontsize=10)
    fig.tight_layout()
    return save(fig, folder, name, formats=("png",))  # photographs: a vector copy would only wrap the pixels


def _short(name: str, width: int = 20) -> str:
    name = re.sub(r"\s+", " ", name)
    return name if len(name) <= width else name[:width - 1] + "…"
