"""A suite's results as one static HTML page (the report's table, rendered from ``table.md``), linking to its
runs in the MLflow UI. A page without scripts: it shows its table in any browser at once, a headless screenshot
included, where the MLflow UI first draws a skeleton and then fetches the runs."""

from __future__ import annotations

import html
from pathlib import Path

import markdown

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em; color: #1a1a1a; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; }
td { text-align: right; font-variant-numeric: tabular-nums; } td:first-child { text-align: left; }
th { background: #f2f2f2; } p { max-width: 60em; line-height: 1.4; } a { color: #0b5cad; }
"""


def render_page(name: str, report: Path, runs_url: str | None, store: str) -> str:
    """The page of suite ``name``: ``report/table.md`` (written by ``bench report``), its runs' address in the
    MLflow UI (``runs_url``; None: no runs yet in ``store``)."""
    table = report / "table.md"
    if table.is_file():
        body = markdown.markdown(table.read_text(encoding="utf-8"), extensions=["tables"])
    else:
        where, command = html.escape(str(report)), html.escape(f"bench report {name}")
        body = f"<p>No report yet in {where}/: <code>{command}</code> writes it.</p>"
    runs = (
        f'<a href="{html.escape(runs_url)}">every run of {html.escape(name)} in the MLflow UI</a>'
        if runs_url
        else f"no runs of {html.escape(name)} yet"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(name)}: results</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(name)}</h1>"
        f"<p>{runs}; store {html.escape(store)}; report files in {html.escape(str(report))}/.</p>{body}</body></html>"
    )
