"""Self-contained evaluation reports: one HTML file (PNG figures inlined as base64 data
URIs, CSS inline, no external URL — it opens offline, from a kfp HTML artifact or an email
attachment) and a Markdown twin that links the PNG files next to it."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif;
       margin: 2em auto; max-width: 1100px; color: #222; line-height: 1.45; padding: 0 1em; }
h1 { border-bottom: 2px solid #4C72B0; padding-bottom: .2em; }
h2 { margin-top: 1.8em; color: #2b4a80; }
table { border-collapse: collapse; margin: .8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: .3em .7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #eef2f8; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .88em; color: #555; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: .5em .8em; }
"""


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Figure:
    path: Path
    caption: str


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)


def fmt(value: float | int | str | None, kind: str = "") -> str:
    """Format a number for a table: kind '%' (fraction → percent), 'ms', 'int', or general."""
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    if value != value:  # NaN
        return "n/a"
    if kind == "%":
        return f"{value * 100:.2f} %"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "ms":
        return f"{value:.3f} ms"
    if kind == "x":
        return f"{value:.2f}×"
    return f"{value:.4g}"


def _table_html(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in table.rows)
    caption = f"<caption>{html.escape(table.caption)}</caption>" if table.caption else ""
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure_html(figure: Figure) -> str:
    data = base64.b64encode(Path(figure.path).read_bytes()).decode()
    alt = html.escape(figure.caption)
    return (f'<figure><img alt="{alt}" src="data:image/png;base64,{data}">'
            f"<figcaption>{alt}</figcaption></figure>")


def section_id(title: str) -> str:
    """The HTML id of a section: its title in lower case, runs of other characters as one '-'
    ("Explain: disagreement atlas" → "explain-disagreement-atlas"), for links and screenshots."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def write_html(title: str, sections: list[Section], path: str | Path) -> Path:
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             f"<title>{html.escape(title)}</title>",
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    for section in sections:
        parts.append(f"<section id='{section_id(section.title)}'><h2>{html.escape(section.title)}</h2>")
        parts += [f"<p>{html.escape(p)}</p>" for p in section.paragraphs]
        parts += [_table_html(t) for t in section.tables]
        parts += [_figure_html(f) for f in section.figures]
        parts.append("</section>")
    parts.append("</body></html>")
    path = Path(path)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _table_md(table: Table) -> str:
    def esc(c: str) -> str:
        return c.replace("|", "\\|")

    lines = ["| " + " | ".join(map(esc, table.headers)) + " |",
             "|" + "|".join("---" for _ in table.headers) + "|"]
    lines += ["| " + " | ".join(map(esc, row)) + " |" for row in table.rows]
    return (f"*{table.caption}*\n\n" if table.caption else "") + "\n".join(lines)


def write_markdown(title: str, sections: list[Section], path: str | Path) -> Path:
    """Markdown twin; figures are linked relative to the report (they sit in the same folder)."""
    path = Path(path)
    out = [f"# {title}", ""]
    for section in sections:
        out += [f"## {section.title}", ""]
        for p in section.paragraphs:
            out += [p, ""]
        for t in section.tables:
            out += [_table_md(t), ""]
        for f in section.figures:
            rel = Path(f.path).name if Path(f.path).parent == path.parent else str(f.path)
            out += [f"![{f.caption}]({rel})", ""]
    path.write_text("\n".join(out), encoding="utf-8")
    return path
