"""The report of a sweep: `report.md` and a self-contained `report.html` (figures inlined, opens
offline), built from the same blocks. Every number comes with its n and CI; a statistic that cannot
be computed is named with the reason, never a bare NaN; a column or section no run can fill is left
out."""
from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from analysis.blocks import EMPTY, Block, cell, estimates, score_name
from analysis.pairs import __doc__ as PAIRS_DOC
from analysis.population import Population, method_block, population_blocks
from analysis.sweep_report import Sweep, grid_blocks, headlines, paired_blocks, replicate_blocks
from sweep.outputs import BASELINES, COSTS, DAMAGE, EPSILON_COSTS, SCORES
from sweep.stats.estimates import with_ci
from sweep.stats.research import SUBSETS
from sweep.stats.research import __doc__ as STATISTICS_DOC

FEW = 30  # fewer measured examples than this: the report warns that the CIs are wide


def panel_text(row: pd.Series) -> str:
    """A run's main association with difficulty, for its figure panel: C and rho of its cost."""
    cost = row.get("cost")
    if not isinstance(cost, str):
        return ""
    lines = []
    for symbol, name in (("C", f"concordance_{cost}"), ("rho", f"rho_{cost}")):
        value, low, high = (row.get(f"{name}{end}", math.nan) for end in ("", "_ci_low", "_ci_high"))
        if value is not None and math.isfinite(value):
            lines.append(f"{symbol} = {with_ci(value, low, high)}")
    return "\n".join(lines)


def _count(value) -> str:
    return EMPTY if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{int(value):,}"


def build(table: pd.DataFrame, reasons: dict, runs: list, keys: list[str], figures: dict[str, list[Path]],
          galleries: list[tuple[str, list[Path]]], pairs: pd.DataFrame, population: Population,
          failures: list[tuple[Path, str]] = (), sweep: Sweep | None = None) -> list[Block]:
    """The report's blocks, in reading order; `runs` are all runs read (their notes are listed), `table`
    has a row per run with result rows; `failures` are the jobs that failed, with their error line."""
    varying = ", ".join(keys) if keys else "nothing (one run)"
    data = sorted({str(run.params["data.name"]) for run in runs if "data.name" in run.params})
    title = ", ".join([f"data={', '.join(data)}"] * bool(data) + [f"{len(table)} run{'s' * (len(table) != 1)}"])
    blocks = [Block("h1", f"Loss to correct: {title}"),
              Block("p", f"Runs differ in {varying}; each is labelled by its values. Read from {_sources(runs)}.")]
    if figures.get("explorer"):
        blocks.append(Block("p", "Every measured example as a point, with its image and numbers: `explorer.html`, "
                                 "beside this report."))
    if failures:
        blocks.append(Block("warning", f"{len(failures)} job{'s' * (len(failures) > 1)} failed; what they finished "
                                       f"before failing is included: "
                                       + "; ".join(f"`{directory}`: {error}" for directory, error in failures)))
    sweep = sweep or Sweep()
    blocks += headlines(table, sweep)
    few = table[table["n_measured"] < FEW] if "n_measured" in table else table.iloc[:0]
    if len(few):
        widths = [(row.get(f"{name}_ci_high", math.nan) - row.get(f"{name}_ci_low", math.nan)) / 2
                  for _, row in few.iterrows() if isinstance(row.get("cost"), str)
                  for name in (f"rho_{row['cost']}", f"concordance_{row['cost']}")]
        widths = [w for w in widths if w is not None and math.isfinite(w)]
        span = f"; CIs here span up to ±{max(widths):.2f}" if widths else ""
        which = f" ({', '.join(few['run'])})" if len(few) <= 3 else ""
        blocks.append(Block("warning", f"Too few examples for conclusions: {len(few)} of {len(table)} runs{which} "
                                       f"measured fewer than {FEW} mistakes each{span}. Sample a few hundred "
                                       f"(sample_size) before reading anything into these figures."))
    blocks += _right_at_step_0(table)
    blocks += _unlike_samples(table, keys)
    blocks += replicate_blocks(sweep)
    blocks += grid_blocks(sweep, figures)
    blocks += _selection(table, reasons)
    blocks += _association(table, reasons, figures)
    blocks += _baselines(table, reasons)
    blocks += _damage(table, reasons, figures)
    blocks += _label_noise(table, reasons)
    blocks += population_blocks(population, figures)
    blocks += paired_blocks(pairs)
    steps = [Block("figure", figures[key][0], FIGURE_CAPTIONS[key]) for key in ("steps_ecdf", "loss_trajectories")
             if figures.get(key)]
    if steps:
        blocks += [Block("h2", "Steps"), *steps]
    if galleries:
        blocks.append(Block("h2", "The images: cheapest and costliest corrected mistakes"))
        blocks += [Block("figure", paths[0], label) for label, paths in galleries]
    epsilon = estimates(table, reasons, [(c, f"rho_{c}") for c in EPSILON_COSTS])
    if epsilon is not None:
        blocks += [Block("h2", "The original epsilon variant (steps and summed loss until the loss reached 1e-3)"),
                   Block("table", epsilon)]
    blocks += [Block("h2", "Method"), Block("p", "`n/c`: not computable, with the reason; `—`: the run records "
                                                  "nothing to compute it from."),
               Block("p", STATISTICS_DOC.strip()), Block("p", PAIRS_DOC.strip())]
    blocks += method_block(population)
    notes = [f"`{run.directory}`: {note}" for run in runs for note in run.notes]
    if notes:
        blocks += [Block("h2", "Notes"), Block("list", notes)]
    return blocks


def _sources(runs: list) -> str:
    """Where the runs were read from: their directories, or for many the folder that holds them."""
    directories = list(dict.fromkeys(str(run.directory) for run in runs))
    if len(directories) <= 3:
        return ", ".join(directories)
    return f"{len(directories)} run directories under {os.path.commonpath(directories)}"


FIGURE_CAPTIONS = {
    "cost_vs_difficulty": "Cost to correct against universal difficulty (x: the whole data set's ranks; ticks at "
                          "the bottom: the sampled mistakes); never corrected at their lower bound.",
    "cost_by_decile": "Median cost per decile of universal difficulty, 95% bootstrap CI.",
    "association_forest": "Association with difficulty: rho over corrected examples, and 2C - 1 over every "
                          "measured example (never-corrected kept), 95% CIs.",
    "steps_ecdf": "Fraction of each run's examples corrected within s steps.",
    "loss_trajectories": "Median loss by step per difficulty group.",
}


def _unlike_samples(table: pd.DataFrame, keys: list[str]) -> list[Block]:
    """A warning where runs drew samples of different sizes though sample_size does not vary between them."""
    if "sample_size" in keys or "n_selected" not in table or table["n_selected"].dropna().nunique() < 2:
        return []
    sizes = "; ".join(f"{row['run']}: {int(row['n_selected'])}" for _, row in table.dropna(subset=["n_selected"])
                      .iterrows())
    return [Block("warning", f"The runs drew samples of different sizes ({sizes}) though sample_size does not vary "
                             f"between them: sample_size=auto draws fewer mistakes for a large model on the demo "
                             f"universe (each run's summary states its rule), and a model with fewer mistakes than "
                             f"asked draws them all. Compare their CIs, not their values alone, or set one "
                             f"sample_size for all.")]


def _right_at_step_0(table: pd.DataFrame) -> list[Block]:
    """A warning where a run's model got some of its examples right at the pretrained weights."""
    if "n_correct_at_step_0" not in table:
        return []
    runs = table[table["n_correct_at_step_0"].fillna(0) > 0]
    if not len(runs):
        return []
    which = "; ".join(f"{row['run']}: {int(row['n_correct_at_step_0'])} of {int(row['n_examples'])}"
                      for _, row in runs.iterrows())
    return [Block("warning", f"Some examples were right at step 0 ({which}): the model classified them correctly at "
                             f"its pretrained weights, in the mode and view it trains in, so they were no mistakes "
                             f"of it there and count as corrected at no cost (steps 0, loss 0). They come from a wrong "
                             f"set found otherwise (a correctness matrix's row, search.mode=eval) and pull every "
                             f"association towards the cheapest end.")]


def _selection(table: pd.DataFrame, reasons: dict) -> list[Block]:
    rows = []
    for _, row in table.iterrows():
        entry = {"run": row["run"], "images": _count(row.get("n_images")),
                 "wrong at the pretrained weights": _count(row.get("n_wrong_at_pretrained")),
                 "sampled": _count(row.get("n_selected")), "corrected": _count(row.get("n_correct")),
                 "right at step 0": _count(row.get("n_correct_at_step_0") or None),
                 "never corrected": _count(row.get("n_never_correct")), "diverged": _count(row.get("n_diverged")),
                 "unreadable": _count(row.get("n_unreadable"))}
        for cost in COSTS:
            if f"km_median_{cost}" in row or f"km_median_{cost}" in reasons[row["run"]]:
                entry[f"median {cost} (Kaplan-Meier)"] = cell(row, reasons[row["run"]], f"km_median_{cost}")
        rows.append(entry)
    frame = pd.DataFrame(rows)
    frame = frame[[c for c in frame.columns if c == "run" or (frame[c] != EMPTY).any()]]
    return [Block("h2", "The selection"), Block("table", frame)]


def _association(table: pd.DataFrame, reasons: dict, figures: dict[str, list[Path]]) -> list[Block]:
    blocks = [Block("h2", "Does the cost to correct track universal difficulty?")]
    blocks += [Block("figure", figures[key][0], FIGURE_CAPTIONS[key])
               for key in ("cost_vs_difficulty", "cost_by_decile") if figures.get(key)]
    concordance = estimates(table, reasons, [(score_name(s), f"concordance_{s}") for s in SCORES])
    if concordance is not None:
        blocks += [Block("p", "Harrell's concordance C against rank, over every measured example (never-corrected "
                              "costs censored at their lower bound): 0.5 is no association, above 0.5 harder mistakes "
                              "score higher. 95% bootstrap CIs."), Block("table", concordance)]
    rho = estimates(table, reasons, [(score_name(s), f"rho_{s}") for s in SCORES])
    if rho is not None:
        blocks += [Block("p", "Spearman rho against rank over the corrected examples (leaves out the costliest, "
                              "never-corrected ones). 95% bootstrap CIs."), Block("table", rho)]
    if figures.get("association_forest"):
        blocks.append(Block("figure", figures["association_forest"][0], FIGURE_CAPTIONS["association_forest"]))
    return blocks


def _baselines(table: pd.DataFrame, reasons: dict) -> list[Block]:
    blocks = [Block("h2", "Does the cost say more than the cheap scores at the pretrained weights?")]
    concordance = estimates(table, reasons, [(f"{c} vs {score_name(b)}", f"delta_concordance_{c}_vs_{b}")
                                             for c in COSTS for b in BASELINES])
    if concordance is not None:
        blocks += [Block("p", "ΔC = C(cost) − C(baseline), over every measured example, paired bootstrap 95% CI "
                              "(GraNd, the gradient norm, by |C − 0.5|): above 0, the cost says more."),
                   Block("table", concordance)]
    rho = estimates(table, reasons, [(f"{c} vs {score_name(b)}", f"delta_{c}_vs_{b}") for c in COSTS
                                     for b in BASELINES])
    if rho is not None:
        blocks += [Block("p", "Δrho = rho(cost) − rho(baseline), over corrected examples, paired bootstrap 95% CI."),
                   Block("table", rho)]
    partial = estimates(table, reasons, [(c, f"partial_rho_{c}_given_initial_loss") for c in COSTS])
    if partial is not None:
        blocks += [Block("p", "Partial rho of the cost and rank with the initial loss held fixed."),
                   Block("table", partial)]
    return blocks if len(blocks) > 1 else []


def _damage(table: pd.DataFrame, reasons: dict, figures: dict[str, list[Path]]) -> list[Block]:
    """What a correction costs the rest of the model: the probe's drawdown and loss increase."""
    means = estimates(table, reasons, [("mean drawdown", "mean_drawdown"),
                                       ("mean probe loss increase", "mean_probe_loss_increase")])
    if means is None:
        return []
    if "probe_size" in table:
        means.insert(1, "probe images", [_count(v) for v in table["probe_size"]])
        means.insert(2, "probe error before", [f"{v:.1%}" if isinstance(v, float) and math.isfinite(v) else EMPTY
                                               for v in table["probe_error_before"]])
    association = estimates(table, reasons, [
        (f"{kind} {score}", f"{name}_{score}") for score in DAMAGE
        for kind, name in (("C", "concordance"), ("rho", "rho"))] + [
        (f"rho {score} with {cost}", f"rho_{score}_with_{cost}") for score in DAMAGE for cost in COSTS[:1]] + [
        (f"Δ{kind} {score} vs {cost}", f"{name}_{score}_vs_{cost}") for score in DAMAGE for cost in COSTS[:1]
        for kind, name in (("C", "delta_concordance"), ("rho", "delta"))])
    blocks = [Block("h2", "What does a correction cost the rest of the model?"),
              Block("p", "Drawdown (Editable Neural Networks, Sinitsin et al. 2020): the error on the probe, "
                         "validation images never trained on, after the correction minus before, averaged over the "
                         "measured mistakes, with a 95% bootstrap CI. Most corrections flip few probe images, so the "
                         "drawdown is coarse; the probe's mean loss increase is the continuous measure beside it."),
              Block("table", means)]
    if association is not None:
        blocks += [Block("p", "Do harder mistakes cost the model more elsewhere (C: every measured example; rho: "
                              "corrected ones), how does that relate to the loss to correct, and does it say more "
                              "about difficulty than the loss to correct (Δ, paired bootstrap CI)?"),
                   Block("table", association)]
    if figures.get("damage_vs_difficulty"):
        blocks.append(Block("figure", figures["damage_vs_difficulty"][0], "The drawdown and the probe's loss "
                                                                           "increase against universal difficulty, "
                                                                           "with a least-squares line."))
    return blocks


def _label_noise(table: pd.DataFrame, reasons: dict) -> list[Block]:
    blocks = []
    for suffix, title in list(SUBSETS.items())[1:]:
        names = [(s, f"concordance_{s}{suffix}") for s in SCORES] + [(f"rho {s}", f"rho_{s}{suffix}") for s in SCORES]
        frame = estimates(table, reasons, names)
        if frame is not None and any(f"concordance_{s}{suffix}" in table for s in SCORES):
            blocks += [Block("p", f"{title.capitalize()}: C (every measured example) and rho (corrected)."),
                       Block("table", frame)]
    return [Block("h2", "Clean and flagged mistakes (ReaL labels)")] + blocks if blocks else []
