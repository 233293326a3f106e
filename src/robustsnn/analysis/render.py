"""Rendering a report document (:mod:`robustsnn.analysis.document` blocks) as markdown or HTML.

Two writers of the same blocks: :func:`render_markdown` links images relative to the report's
folder; :func:`render_html` makes one self-contained file, its CSS inline and its images as
base64 data URIs, so it can be mailed or archived alone. Verdict cells ("pass" / "fail") are
bold in markdown and coloured in HTML; accuracies stay on one line in HTML.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence
from pathlib import Path

from robustsnn.analysis.document import Block, Cell, Code, Heading, Image, Paragraph, Table


def _md_cell(cell: Cell | str) -> str:
    if isinstance(cell, Cell):
        text = f"**{cell.text}**" if cell.style in ("pass", "fail") else cell.text
    else:
        text = cell
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: Sequence[Block], out_dir: Path) -> str:
    """Markdown text of the report (images linked relative to ``out_dir``)."""
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            text = f"**{block.text}**" if block.style == "fail" else block.text
            lines += [f"> {text}" if block.style == "verdict" else text, ""]
        elif isinstance(block, Table):
            lines.append("| " + " | ".join(_md_cell(h) for h in block.headers) + " |")
            lines.append("|" + "|".join("---" for _ in block.headers) + "|")
            for row in block.rows:
                lines.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
            lines += ["", f"_source: {block.source}_", ""]
        elif isinstance(block, Code):
            lines += ["```yaml", block.text, "```", "", f"_source: {block.source}_", ""]
        elif isinstance(block, Image):
            rel = Path(os.path.relpath(block.path, out_dir)).as_posix()
            lines += [f"![{block.caption}]({rel})", "", f"_figure: {block.caption}_", ""]
    return "\n".join(lines).rstrip() + "\n"


CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #1a1a1a; line-height: 1.45; }
h1 { border-bottom: 2px solid #333; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #aaa; margin-top: 2em; }
table { border-collapse: collapse; margin: .6em 0 0 0; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: .25em .6em; text-align: left; vertical-align: top;
         overflow-wrap: break-word; }
div.table { max-width: 100%; overflow-x: auto; }
th { background: #eef1f5; }
tr:nth-child(even) td { background: #fafafa; }
caption { caption-side: bottom; text-align: left; font-size: .8em; color: #666;
          padding-top: .2em; font-style: italic; }
td.pass, p.pass { color: #146c2e; font-weight: bold; }
td.fail, p.fail { color: #b00020; font-weight: bold; }
td.pass { background: #e6f4ea; } td.fail { background: #fde7e9; }
td.acc { font-variant-numeric: tabular-nums; }
pre { background: #f5f5f5; border: 1px solid #ddd; padding: .6em; overflow-x: auto; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption, p.source { font-size: .8em; color: #666; font-style: italic; }
p.note { font-size: .9em; color: #444; }
p.verdict { background: #f3f6fb; border-left: 4px solid #3b6fb6; padding: .6em .9em; }
"""


def _html_cell(cell: Cell | str, tag: str = "td") -> str:
    if isinstance(cell, Cell):
        cls = f' class="{cell.style}"' if cell.style else ""
        text = html.escape(cell.text)
        if cell.style == "acc":  # "91.25% [81.16, 96.85]" stays on one line, n may wrap
            head, sep, tail = text.partition(" n=")
            text = head.replace(" ", "&nbsp;") + sep + tail
        else:
            text = _breakable(text)
        return f"<{tag}{cls}>{text}</{tag}>"
    return f"<{tag}>{_breakable(html.escape(cell))}</{tag}>"


def _breakable(text: str) -> str:
    """Let long paths and file lists wrap after ``/``, ``_`` and ``;`` (the overview stays as
    wide as the page)."""
    for mark in ("/", "_", ";"):
        text = text.replace(mark, mark + "<wbr>")
    return text


def render_html(blocks: Sequence[Block], title: str) -> str:
    """A single-file HTML5 document: inline CSS, images as base64 data URIs, no external links."""
    body: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            cls = f' class="{block.style}"' if block.style else ""
            body.append(f"<p{cls}>{html.escape(block.text)}</p>")
        elif isinstance(block, Table):
            body.append('<div class="table"><table>')
            body.append(f"<caption>source: {html.escape(block.source)}</caption>")
            body.append("<thead><tr>" + "".join(_html_cell(h, "th") for h in block.headers))
            body.append("</tr></thead><tbody>")
            for row in block.rows:
                body.append("<tr>" + "".join(_html_cell(c) for c in row) + "</tr>")
            body.append("</tbody></table></div>")
        elif isinstance(block, Code):
            body.append(f"<pre><code>{html.escape(block.text)}</code></pre>")
            body.append(f'<p class="source">source: {html.escape(block.source)}</p>')
        elif isinstance(block, Image):
            try:
                data = base64.b64encode(block.path.read_bytes()).decode("ascii")
            except OSError as exc:
                body.append(
                    f'<p class="fail">figure {html.escape(block.caption)} unreadable: {html.escape(str(exc))}</p>'
                )
                continue
            body.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(block.caption)}">'
                f"<figcaption>figure: {html.escape(block.caption)}</figcaption></figure>"
            )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
