"""The report's section on agreement between models, readable at 5, 50 and 500 models: a headline
per group (Kendall's W of the loss to correct against the initial loss's, the universal correction
cost's association with difficulty), a table per score, the models sorted by accuracy (the ends only,
beyond MAX_MODEL_ROWS), the cost matrix's heat map, and pairs of models only while they are few."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.blocks import EMPTY, Block
from analysis.universality import __doc__ as UNIVERSALITY_DOC
from analysis.universality import accuracy_association, universal_association
from sweep.stats.estimates import Estimate, with_ci

MAX_MODEL_ROWS = 20  # more models: the 10 most and the 10 least accurate shown, all in universality_models.csv
MAX_PAIR_ROWS = 10   # more pairs of models: in universality_pairs.csv only
CAPTION = ("The loss to correct's rank within each model (rows, most accurate first) of every shared image "
           "(columns, easiest first by universal difficulty); black: never corrected (the costliest).")


@dataclass
class Population:
    """universality()'s tables and model_table()'s."""
    tables: dict = field(default_factory=dict)
    models: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def empty(self) -> bool:
        return self.tables.get("overall", pd.DataFrame()).empty


def population_blocks(population: Population, figures: dict[str, list[Path]]) -> list[Block]:
    if population.empty:
        return []
    overall, pairs = population.tables["overall"], population.tables["pairs"]
    images = population.tables["images"]
    association = universal_association(images) if len(images) else {}
    accuracy = accuracy_association(population.models) if len(population.models) else {}
    blocks = [Block("h2", "Is the cost universal? Agreement between models"),
              Block("p", "Do models agree on which mistakes are costly, more than they agree on the cheap scores? "
                         "Over the images every model of a group measured, each score ranked within each model "
                         "(never-corrected costs above every corrected one): Kendall's W over all models (1: one "
                         "order; 0: unrelated) and the mean Spearman rho over pairs, 95% bootstrap CIs over images; "
                         "ΔW against the initial loss on the same resamples."),
              Block("list", [_headline(group, rows, association.get(group, {}), accuracy.get(group))
                             for group, rows in overall.groupby("group", sort=False)])]
    rows = [row for _, row in overall.iterrows()]
    table = overall.assign(**{"Kendall's W": [_text(row, "kendall_w") for row in rows],
                              "mean pairwise rho": [_text(row, "mean_rho", signed=True) for row in rows],
                              "ΔW vs initial loss": [_text(row, "delta_w_vs_initial_loss", signed=True)
                                                     for row in rows]})
    blocks.append(Block("table", table[["group", "score", "models", "images", "Kendall's W", "mean pairwise rho",
                                        "ΔW vs initial loss"]]))
    blocks += _model_blocks(population.models)
    if figures.get("cost_matrix"):
        blocks.append(Block("figure", figures["cost_matrix"][0], CAPTION))
    headline_pairs = pairs[pairs["score"].isin(["loss_sum", "initial_loss"])] if len(pairs) else pairs
    if 0 < len(headline_pairs) <= 2 * MAX_PAIR_ROWS * overall["group"].nunique():
        shown = headline_pairs.assign(rho=[_text(row, "rho", signed=True) for _, row in headline_pairs.iterrows()])
        blocks += [Block("p", "Spearman rho between pairs of models (every score's in `universality_pairs.csv`)."),
                   Block("table", shown[["group", "score", "model_a", "model_b", "rho"]])]
    elif len(pairs):
        blocks.append(Block("p", f"Spearman rho of every pair of models ({len(pairs):,} rows): "
                                 f"`universality_pairs.csv`."))
    return blocks


def method_block(population: Population) -> list[Block]:
    return [] if population.empty else [Block("p", UNIVERSALITY_DOC.strip())]


def _headline(group: str, rows: pd.DataFrame, association: dict[str, Estimate], accuracy: Estimate | None) -> str:
    by_score = rows.set_index("score")
    first = rows.iloc[0]
    parts = [f"**{group}**: {int(first['models'])} models on {int(first['images']):,} images"]
    if "loss_sum" in by_score.index:
        cost = by_score.loc["loss_sum"]
        text = f"Kendall's W of the loss to correct {_text(cost, 'kendall_w')}"
        if "initial_loss" in by_score.index:
            text += (f" against {_text(by_score.loc['initial_loss'], 'kendall_w')} for the initial loss "
                     f"(ΔW {_text(cost, 'delta_w_vs_initial_loss', signed=True)})")
        parts.append(text)
    if "rho_universal_cost" in association:
        text = f"the universal correction cost's rho with difficulty {association['rho_universal_cost'].text()}"
        if "delta_universal_cost_vs_initial_loss" in association:
            text += (f" (the universal initial loss's {association['rho_universal_initial_loss'].text()}; Δ "
                     f"{association['delta_universal_cost_vs_initial_loss'].text()})")
        parts.append(text)
    if accuracy is not None:
        parts.append(f"across models, rho of accuracy with C {accuracy.text()}")
    return "; ".join(parts) + "."


def _model_blocks(models: pd.DataFrame) -> list[Block]:
    if models.empty:
        return []
    shown = models.assign(**{"accuracy": [f"{v:.1%}" if math.isfinite(v) else EMPTY for v in models["accuracy"]],
                             "C of the loss to correct": [_text(row, "concordance_loss_sum")
                                                          for _, row in models.iterrows()]})
    shown = shown[["group", "model", "accuracy", "C of the loss to correct"]]
    note = "The models, most accurate first, with Harrell's C of their loss to correct against rank."
    if len(shown) > MAX_MODEL_ROWS:
        half = MAX_MODEL_ROWS // 2
        shown = pd.concat([shown.head(half), shown.tail(half)], ignore_index=True)
        note += f" The {half} most and the {half} least accurate of {len(models):,}; all in `universality_models.csv`."
    return [Block("p", note), Block("table", shown)]


def _text(row: pd.Series, name: str, signed: bool = False) -> str:
    value, low, high, n = (row.get(f"{name}{end}") for end in ("", "_ci_low", "_ci_high", "_n"))
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        reasons = str(row.get("reason") or "")  # "statistic: why; statistic: why" (or one reason for the row)
        mine = [part.split(": ", 1)[1] for part in reasons.split("; ") if part.startswith(f"{name}: ")]
        reason = mine[0] if mine else (reasons if ": " not in reasons else "")
        return f"n/c ({reason})" if reason else EMPTY
    return with_ci(value, low, high, "{:+.2f}" if signed else "{:.2f}") + \
        (f" n={int(n)}" if n is not None and math.isfinite(n) else "")
