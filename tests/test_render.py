"""The report's HTML rendering: Markdown through markdown-it-py, nothing from the text let through as HTML."""
import pandas as pd

from analysis.blocks import Block
from analysis.render import to_html


def test_prose_is_markdown_and_nothing_in_it_becomes_html():
    page = to_html([Block("h1", "R"), Block("p", "**C** of `loss_sum` is *higher*.\n\n- one `a`\n- two"),
                    Block("p", "an unbalanced ` backtick <script>alert(1)</script> & more"),
                    Block("warning", "n < 30: `CI` wide"), Block("list", ["x **y**", "<b>z</b>"])])
    assert "<p><strong>C</strong> of <code>loss_sum</code> is <em>higher</em>.</p>" in page
    assert "<ul>\n<li>one <code>a</code></li>\n<li>two</li>\n</ul>" in page
    assert "an unbalanced ` backtick &lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in page  # not a code span
    assert "<script>" not in page and "<b>z</b>" not in page and "&lt;b&gt;z&lt;/b&gt;" in page
    assert "<strong>Warning.</strong> n &lt; 30: <code>CI</code> wide" in page


def test_tables_scroll_in_their_own_box_and_long_cells_wrap():
    table = pd.DataFrame({"run": ["lr=1e-05"], "note": ["n/c " + "x" * 70], "rho": [0.123456]})
    page = to_html([Block("table", table)])
    assert "<div class='table-box'><table" in page and "<td class='long'>n/c xxx" in page and "<td>0.123</td>" in page
