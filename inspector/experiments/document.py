"""The report as a list of blocks, rendered to Markdown and to a standalone HTML page.

Blocks: ``("h1"|"h2"|"h3"|"p", text)``, ``("list", [text, ...])``, ``("table", DataFrame)``,
``("image", (caption, relative path))``. Text is plain; both renderers escape it.
"""

from __future__ import annotations

import html as _html

import pandas as pd

from ..report.markdown import md

CSS = ("body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;line-height:1.45}"
       "table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.85rem}"
       "th,td{border:1px solid #ccc;padding:.2rem .45rem;text-align:right}th{background:#f3f3f3}"
       "td:first-child,th:first-child{text-align:left}img{max-width:100%}")


def to_markdown(blocks: list) -> str:
    out = []
    for kind, value in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + md(value))
        elif kind == "p":
            out.append(md(value))
        elif kind == "list":
            out.append("\n".join(f"- {md(v)}" for v in value))
        elif kind == "table":
            out.append(markdown_table(value))
        elif kind == "image":
            out.append(f"![{md(value[0])}]({value[1]})")
    return "\n\n".join(out) + "\n"


def markdown_table(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(md(c) for c in df.columns) + " |"
    rule = "|" + "|".join(":---" if i == 0 else "---:" for i in range(len(df.columns))) + "|"
    rows = ["| " + " | ".join(md(v) for v in r) + " |" for r in df.astype(str).itertuples(index=False)]
    return "\n".join([head, rule, *rows])


def to_html(blocks: list, title: str) -> str:
    e = _html.escape
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>",
           f"<style>{CSS}</style></head><body>"]
    for kind, value in blocks:
        if kind in ("h1", "h2", "h3", "p"):
            out.append(f"<{kind}>{e(str(value))}</{kind}>")
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{e(str(v))}</li>" for v in value) + "</ul>")
        elif kind == "table":
            out.append(value.astype(str).to_html(index=False, escape=True, border=0))
        elif kind == "image":
            out.append(f"<figure><img src='{e(value[1])}' alt='{e(value[0])}'>"
                       f"<figcaption>{e(value[0])}</figcaption></figure>")
    return "\n".join(out) + "\n</body></html>\n"
