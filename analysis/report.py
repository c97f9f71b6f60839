"""The report of a sweep: `report.md` and a self-contained `report.html` (figures inlined, opens
offline), built from the same blocks. Every number comes with its n and CI; a statistic that cannot
be computed is named with the reason, never a bare NaN; a column or section no run can fill is left
out."""
from __future__ import annotations

import base64
import html
import math
import os
import re
from pathlib import Path

import pandas as pd

from analysis.blocks import EMPTY, Block, cell, estimates, score_name
from analysis.pairs import __doc__ as PAIRS_DOC
from analysis.population import Population, method_block, population_blocks
from analysis.sweep_report import Sweep, grid_blocks, headlines, paired_blocks, replicate_blocks
from sweep.files import atomic_write_text
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


def _selection(table: pd.DataFrame, reasons: dict) -> list[Block]:
    rows = []
    for _, row in table.iterrows():
        entry = {"run": row["run"], "images": _count(row.get("n_images")),
                 "wrong at the pretrained weights": _count(row.get("n_wrong_at_pretrained")),
                 "sampled": _count(row.get("n_selected")), "corrected": _count(row.get("n_correct")),
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


def _number(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if math.isfinite(value) else EMPTY
    return "" if value is None else str(value)


def to_markdown(blocks: list[Block], base: Path) -> str:
    parts = []
    for block in blocks:
        if block.kind == "h1":
            parts.append(f"# {block.content}")
        elif block.kind == "h2":
            parts.append(f"## {block.content}")
        elif block.kind == "p":
            parts.append(str(block.content))
        elif block.kind == "warning":
            parts.append(f"> **Warning.** {block.content}")
        elif block.kind == "list":
            parts.append("\n".join(f"- {item}" for item in block.content))
        elif block.kind == "table":
            parts.append(block.content.map(_number).to_markdown(index=False))
        elif block.kind == "figure":
            parts.append(f"![{block.caption}]({Path(block.content).relative_to(base)})\n\n*{block.caption}*")
    return "\n\n".join(parts) + "\n"


STYLE = " ".join("""
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1180px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45} h1{font-size:1.6em} h2{font-size:1.25em;margin-top:1.8em;
border-bottom:1px solid #ddd} .table-box{max-width:100%;overflow-x:auto;margin:.8em 0}
table{border-collapse:collapse;font-size:.82em} th,td{border:1px solid #ddd;padding:.25em .5em;text-align:left;
white-space:nowrap} td.long{white-space:normal;min-width:24em} th{background:#f4f4f4} figure{margin:1em 0}
figure img{max-width:min(100%,960px)} figcaption{font-size:.85em;color:#555}
.warning{background:#fff4e5;border-left:4px solid #f0a020;padding:.6em 1em}
""".split())


def to_html(blocks: list[Block]) -> str:
    """A self-contained page: figures inlined as PNG data, no outside resource."""
    title = next((str(b.content) for b in blocks if b.kind == "h1"), "Report")
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body>"]
    for block in blocks:
        if block.kind in ("h1", "h2"):
            parts.append(f"<{block.kind}>{html.escape(str(block.content))}</{block.kind}>")
        elif block.kind == "p":
            parts.append(_prose(str(block.content)))
        elif block.kind == "warning":
            parts.append(f"<p class='warning'><strong>Warning.</strong> {_inline(str(block.content))}</p>")
        elif block.kind == "list":
            parts.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in block.content) + "</ul>")
        elif block.kind == "table":  # in a box of its own that scrolls sideways when wider than the page
            parts.append("<div class='table-box'>" + _long_cells(block.content.map(_number).to_html(
                index=False, border=0, escape=True)) + "</div>")
        elif block.kind == "figure":
            data = base64.b64encode(Path(block.content).read_bytes()).decode("ascii")
            parts.append(f"<figure><img alt='{html.escape(block.caption)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{html.escape(block.caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


LONG_CELL = 60  # characters: a cell this long wraps (reasons, notes) instead of widening its table


def _long_cells(table: str) -> str:
    """`table`'s cells of at least LONG_CELL characters marked to wrap."""
    return re.sub(f"<td>([^<]{{{LONG_CELL},}})</td>", r"<td class='long'>\1</td>", table)


def _prose(text: str) -> str:
    """Paragraphs (separated by blank lines) and `- ` lists of wrapped text, as HTML."""
    parts = []
    for paragraph in text.strip().split("\n\n"):
        items, current = [], []
        for line in paragraph.splitlines():
            if line.startswith("- ") and current:
                items.append(" ".join(current))
                current = []
            current.append(line[2:] if line.startswith("- ") else line.strip())
        items.append(" ".join(current))
        if paragraph.lstrip().startswith("- ") or len(items) > 1 and "\n- " in paragraph:
            head = [] if paragraph.lstrip().startswith("- ") else [items.pop(0)]
            parts.append("".join(f"<p>{_inline(h)}</p>" for h in head)
                         + "<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in items) + "</ul>")
        else:
            parts.append(f"<p>{_inline(items[0])}</p>")
    return "\n".join(parts)


def _inline(text: str) -> str:
    """Escaped text with the markdown this report uses inline: **bold** and `code`."""
    out, bold, code = [], False, False
    for index, piece in enumerate(html.escape(text).replace("**", "\x00").split("\x00")):
        if index:
            bold = not bold
            out.append("<strong>" if bold else "</strong>")
        segments = piece.split("`")
        for position, segment in enumerate(segments):
            if position:
                code = not code
                out.append("<code>" if code else "</code>")
            out.append(segment)
    return "".join(out)


def write_report(out: Path, blocks: list[Block]) -> list[Path]:
    """report.md and report.html in `out`."""
    paths = [out / "report.md", out / "report.html"]
    atomic_write_text(paths[0], to_markdown(blocks, out))
    atomic_write_text(paths[1], to_html(blocks))
    return paths
