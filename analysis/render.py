"""The report's blocks rendered: report.md (Markdown) and a self-contained report.html (figures
inlined as PNG data, tables in boxes that scroll sideways, prose through markdown-it-py)."""
from __future__ import annotations

import base64
import html
import math
import re
from pathlib import Path

from markdown_it import MarkdownIt

from analysis.blocks import EMPTY, Block
from sweep.files import atomic_write_text

MARKDOWN = MarkdownIt("commonmark", {"html": False})


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
    """Markdown paragraphs and lists as HTML (raw HTML in the text is escaped, never passed through)."""
    return MARKDOWN.render(text).strip()


def _inline(text: str) -> str:
    """A line of Markdown (bold, code, links) as HTML, escaped."""
    return MARKDOWN.renderInline(text)


def write_report(out: Path, blocks: list[Block]) -> list[Path]:
    """report.md and report.html in `out`."""
    paths = [out / "report.md", out / "report.html"]
    atomic_write_text(paths[0], to_markdown(blocks, out))
    atomic_write_text(paths[1], to_html(blocks))
    return paths
