"""`explorer.html`, beside the report: every measured example of every run as a point, to find which
mistakes are cheap or costly to correct, and why.

One self-contained page (plotly.js inlined: it opens offline, from a file, with no server): the cost
to correct against universal difficulty by default, any of the costs, baselines, the drawdown and the
rank on either axis, runs shown or hidden from the legend. Hovering or clicking a point shows its
image, its true class and the prediction that made it a mistake, its status, steps, loss sum and
drawdown, and its ReaL verdict where the data has ReaL labels. A never-corrected example is drawn as
an open triangle at its lower bound. Images go in as thumbnails of at most THUMBNAIL pixels, inlined
up to INLINE_IMAGES distinct images; beyond, they are written to `explorer/` beside the page and
linked by relative path (the page then needs that folder beside it).
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

import pandas as pd

from sweep.data.class_names import class_name
from sweep.data.image_files import ImageReadError, UnreadableImage, load_image
from sweep.files import atomic_write_text
from sweep.outputs import MEASURED, RANK, Status

EXPLORER_HTML = "explorer.html"
THUMBNAIL = 96      # pixels, the longer side
INLINE_IMAGES = 3000  # distinct images inlined; more are written to explorer/ and linked
AXES = {RANK: "universal difficulty rank (1 = easiest)", "loss_sum": "loss to correct (summed loss)",
        "steps_to_correct": "steps to correct", "updates": "updates taken", "initial_loss": "initial loss",
        "initial_margin": "initial margin", "initial_grad_norm": "GraNd (initial gradient norm)",
        "initial_el2n": "EL2N (initial error norm)", "drawdown": "drawdown",
        "probe_loss_increase": "probe loss increase"}
LOG_BY_DEFAULT = ("loss_sum", "initial_loss", "initial_grad_norm", "updates")
SVG_POINTS = 20_000  # up to this many points drawn as SVG (any browser); beyond, WebGL (faster, needs a GPU or
#                      a software renderer)

# The glue between the page's two selects and plotly: a few lines, the rest is plotly's.
GLUE = """
const data = JSON.parse(document.getElementById('explorer-data').textContent);
const plot = document.getElementById('{plot_id}');
function axis(id) { return document.getElementById(id).value; }
function redraw() {
  const x = axis('x-axis'), y = axis('y-axis');
  Plotly.restyle(plot, {x: data.runs.map(r => r.values[x]), y: data.runs.map(r => r.values[y])});
  Plotly.relayout(plot, {'xaxis.title.text': data.axes[x], 'yaxis.title.text': data.axes[y],
    'xaxis.type': data.log.includes(x) ? 'log' : 'linear', 'yaxis.type': data.log.includes(y) ? 'log' : 'linear'});
}
function show(event) {
  const point = event.points[0], run = data.runs[point.curveNumber], i = point.pointIndex;
  const example = data.examples[run.example[i]];
  document.getElementById('details-image').src = example.image;
  const lines = [run.label, ...run.details[i]].map(function (text, n) {
    const line = document.createElement('div');
    line.textContent = text;  // text, never HTML: labels and paths are the user's strings
    if (n === run.details[i].length) line.className = 'path';
    return line;
  });
  document.getElementById('details-text').replaceChildren(...lines);
}
document.getElementById('x-axis').onchange = redraw;
document.getElementById('y-axis').onchange = redraw;
plot.on('plotly_click', show);
plot.on('plotly_hover', show);
"""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Explorer: {title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.2em; color: #222; }}
#controls label {{ margin-right: 1.5em; }} #main {{ display: flex; gap: 1.5em; align-items: flex-start; }}
#plot-box {{ flex: 1 1 auto; min-width: 0; }} #details {{ flex: 0 0 15em; font-size: 0.95em; }}
#details img {{ width: 12em; image-rendering: pixelated; border: 1px solid #ccc; }}
#details .path {{ font-size: 0.8em; overflow-wrap: anywhere; }}
</style></head><body>
<h1>Explorer: {title}</h1>
{body}
</body></html>
"""
BODY = """<p>Every measured example of every run ({points:,} points). Click a run in the legend to hide or show it;
hover or click a point for its image and numbers. Open triangles: never corrected, drawn at their lower
bound (the loss summed and the steps run so far). The report: <a href="report.html">report.html</a>.</p>
<script type="application/json" id="explorer-data">{data}</script>
<div id="controls"><label>x <select id="x-axis">{x_options}</select></label>
<label>y <select id="y-axis">{y_options}</select></label></div>
<div id="main"><div id="plot-box">{plot}</div>
<div id="details"><img id="details-image" alt="the example's image">
<div id="details-text">Hover over a point.</div></div></div>"""
NOTHING = """<p>Nothing to plot: no run has an example that was corrected or never corrected (each row is
{statuses}). The report: <a href="report.html">report.html</a>.</p>"""


def write_explorer(merged: pd.DataFrame, data_of: dict[str, str | None], out: Path, title: str) -> Path:
    """The explorer of the merged rows (a `run` column, `data_of` run -> its data option's name) in `out`."""
    import plotly.graph_objects as go
    rows = merged[merged["status"].isin(MEASURED)].reset_index(drop=True)
    axes = {column: name for column, name in AXES.items() if column in rows and rows[column].notna().any()}
    path = out / EXPLORER_HTML
    if RANK not in axes:
        statuses = ", ".join(sorted(map(str, merged["status"].dropna().unique()))) or "without a status"
        atomic_write_text(path, PAGE.format(title=html.escape(title), body=NOTHING.format(
            statuses=html.escape(statuses))))
        return path
    paths = list(dict.fromkeys(rows["path"]))
    examples = _examples(rows, paths, data_of, out)
    position = {path: i for i, path in enumerate(paths)}
    runs = []
    figure = go.Figure()
    for label, run in rows.groupby("run", sort=False):
        corrected = (run["status"] == Status.CORRECT).to_numpy()
        runs.append({"label": str(label), "example": [position[p] for p in run["path"]],
                     "values": {column: [_number(v) for v in _at_lower_bound(run, column)] for column in axes},
                     "details": [_details(row, data_of.get(str(label))) for _, row in run.iterrows()]})
        figure.add_trace((go.Scatter if len(rows) <= SVG_POINTS else go.Scattergl)(
            x=runs[-1]["values"][RANK], y=runs[-1]["values"].get("loss_sum", runs[-1]["values"][RANK]),
            mode="markers", name=html.escape(str(label)), hoverinfo="name",
            marker={"size": 7, "opacity": 0.75,
                    "symbol": ["circle" if c else "triangle-up-open" for c in corrected]}))
    y = "loss_sum" if "loss_sum" in axes else RANK
    figure.update_layout(height=620, margin={"l": 60, "r": 10, "t": 10, "b": 50}, legend={"title": "runs"},
                         xaxis={"title": axes[RANK]}, yaxis={"title": axes[y], "type": "log" if y in LOG_BY_DEFAULT
                                                                                      else "linear"})
    plot_id = "explorer-plot"
    plot = figure.to_html(full_html=False, include_plotlyjs=True, div_id=plot_id, config={"responsive": True},
                          post_script=GLUE.replace("{plot_id}", plot_id))
    payload = {"runs": runs, "examples": examples, "axes": axes, "log": list(LOG_BY_DEFAULT)}
    body = BODY.format(points=len(rows), plot=plot, data=_json(payload), x_options=_options(axes, RANK),
                       y_options=_options(axes, y))
    atomic_write_text(path, PAGE.format(title=html.escape(title), body=body))
    return path


def _at_lower_bound(run: pd.DataFrame, column: str) -> pd.Series:
    """A column's values, with never-corrected examples at their lower bound where the column is a cost
    that has one: on the steps axis, the steps they ran (their updates), not the -1 that marks them."""
    if column == "steps_to_correct" and "updates" in run:
        return run[column].where(run["status"] == Status.CORRECT, run["updates"])
    return run[column]


def _examples(rows: pd.DataFrame, paths: list[str], data_of: dict[str, str | None], out: Path) -> list[dict]:
    """Per distinct image: its thumbnail (a data URI, or beyond INLINE_IMAGES a file in explorer/)."""
    folder = out / "explorer"
    inline = len(paths) <= INLINE_IMAGES
    examples = []
    for i, path in enumerate(paths):
        thumbnail = _thumbnail(path)
        if thumbnail is None:
            examples.append({"image": ""})
        elif inline:
            examples.append({"image": f"data:{thumbnail[0]};base64," + base64.b64encode(thumbnail[1]).decode()})
        else:
            folder.mkdir(exist_ok=True)
            name = f"{i}.{thumbnail[0].split('/')[1]}"
            (folder / name).write_bytes(thumbnail[1])
            examples.append({"image": f"explorer/{name}"})
    return examples


def _thumbnail(path: str) -> tuple[str, bytes] | None:
    """(MIME type, bytes) of the image at `path` at most THUMBNAIL pixels a side: small images (the demo's)
    as PNG, pixel for pixel, photographs as JPEG; None where it cannot be read."""
    try:
        image = load_image(path, attempts=1)
    except (ImageReadError, UnreadableImage):
        return None
    small = max(image.size) <= THUMBNAIL // 1.5
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG" if small else "JPEG", **({"optimize": True} if small else {"quality": 80}))
    return ("image/png" if small else "image/jpeg"), buffer.getvalue()


def _details(row: pd.Series, data: str | None) -> list[str]:
    """One example's numbers, as the details panel shows them: lines of plain text, its path last."""
    corrected = row["status"] == Status.CORRECT
    parts = [f"true class: {class_name(row.get('label'), row['path'], data)}",
             f"mistaken for: {class_name(row.get('initial_prediction'), row['path'], data)}",
             f"status: {row['status']}", f"rank: {_format(row.get(RANK))}",
             f"steps: {_format(row.get('steps_to_correct')) if corrected else '> ' + _format(row.get('updates'))}",
             f"loss sum: {'' if corrected else '≥ '}{_format(row.get('loss_sum'), 6)}",
             f"drawdown: {_format(row.get('drawdown'))}"]
    if isinstance(row.get("label_in_real"), (bool, str)) and str(row.get("label_in_real")) not in ("", "nan"):
        parts.append(f"ReaL: label {'among' if _true(row['label_in_real']) else 'not among'} the image's ReaL "
                     f"labels; the prediction {'is' if _true(row.get('prediction_in_real')) else 'is not'} one")
    parts.append(str(row["path"]))
    return parts


def _true(value) -> bool:
    return str(value).strip().lower() in ("true", "1", "1.0")


def _format(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _number(value):
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else \
        (float(value) if isinstance(value, float) else int(value) if not isinstance(value, str) else value)


def _options(axes: dict[str, str], chosen: str) -> str:
    return "".join(f"<option value='{c}'{' selected' if c == chosen else ''}>{html.escape(n)}</option>"
                   for c, n in axes.items())


# In a <script> element, any `<` can start `</script` or `<!--`, which change how the element ends; JSON
# may spell each of these characters as a \\u escape, which parses to the same string.
_SCRIPT_SAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
                              "\u2029": "\\u2029"})


def _json(payload: dict) -> str:
    """JSON safe inside a <script> element, whatever its strings hold."""
    return json.dumps(payload, separators=(",", ":")).translate(_SCRIPT_SAFE)
