"""The page shell shared by report.html and the leaderboard: templates, assets, escaping, CSP.

Pages are Jinja2 templates (``report/templates``) with autoescaping on, so every value from data or
models is escaped by the template engine, never by hand. The CSS and JavaScript are package data
files (``report/static``) inlined into each page: a page fetches nothing, and its
Content-Security-Policy forbids any network access and runs only the page's own script (by hash).
The only markup that bypasses escaping is ours: those assets and the sample browser's JSON block,
which ``script_json`` makes unable to end its <script> element.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from aigc_eval.files import finite_or_none
from aigc_eval.report.formatting import ARROWS, ci_text, format_score, short_time, sort_key

# One colour per model row, in suite order, on every chart and table of a page.
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f")


@dataclass(frozen=True)
class Fact:
    """One entry of a page header's facts (``macros.facts``): shown as code when ``code``."""

    key: str
    value: str
    code: bool = False
    title: str | None = None
    wide: bool = False


@cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("aigc_eval.report", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html", "j2"), default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(score=format_score, ci=ci_text, when=short_time, sort_key=sort_key)
    env.globals.update(ARROWS=ARROWS)
    return env


@cache
def asset(name: str) -> str:
    """A file of ``report/static`` (the page's CSS or script), read once."""
    return resources.files("aigc_eval.report").joinpath("static", name).read_text(encoding="utf-8")


def colors(rows: list[str]) -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(rows)}


def script_json(value: Any) -> Markup:
    """JSON that cannot end its <script> element: '<', '>' and '&' become \\u escapes."""
    text = json.dumps(finite_or_none(value), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return Markup(
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def render_page(
    template: str, title: str, nav: list[tuple[str, str]], data: Any = None, **context: Any
) -> str:
    """A whole page from a template that extends ``page.html.j2``.

    ``nav`` is the (anchor, title) of each section; ``data`` (optional) becomes the JSON block the
    sample browser reads.
    """
    script = asset("report.js")
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    csp = (
        f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )
    return (
        environment()
        .get_template(template)
        .render(
            title=title,
            nav=nav,
            csp=csp,
            css=Markup(asset("report.css")),
            js=Markup(script),
            data=None if data is None else script_json(data),
            **context,
        )
    )
