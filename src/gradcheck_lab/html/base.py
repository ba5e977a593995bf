"""The page shell shared by every page: escaping, numbers, CSS, embedded data.

Every page is one self-contained HTML file: inline CSS, inline SVG and a
little inline JavaScript, no external resource of any kind (no server, no
network, no CDN), so it opens from disk and works offline. Content comes
first: everything a page says is in its static HTML (tables, SVG), readable
with JavaScript off; scripts only add stepping and highlighting.

Numbers are shown with 6 significant digits (as the ``explain`` command
prints them); the exact float (Python's ``repr``) is in each cell's
``title`` and ``data-value`` attributes.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

__all__ = ["esc", "num", "exact", "cell", "page", "json_script", "external_references", "check_path", "write_page"]


def esc(text: Any) -> str:
    """HTML-escape ``text`` (quotes too: safe in attributes)."""
    return html.escape(str(text), quote=True)


def num(x: Any, digits: int = 6) -> str:
    """``x`` with ``digits`` significant digits (``-0`` shown as ``0``; ``None`` as ``n/a``)."""
    if x is None:
        return "n/a"
    x = float(x)
    if math.isnan(x):
        return "nan"
    return f"{x + 0.0:.{digits}g}"


def exact(x: Any) -> str:
    """The float's shortest round-trip text (Python's ``repr``), ``n/a`` for None."""
    return "n/a" if x is None else repr(float(x) + 0.0)


def cell(x: Any, digits: int = 6, cls: str = "num") -> str:
    """A ``<td>`` with the number shown to ``digits`` digits and its exact value in ``title``."""
    return f'<td class="{cls}" title="{esc(exact(x))}" data-value="{esc(exact(x))}">{esc(num(x, digits))}</td>'


def json_script(element_id: str, data: Any) -> str:
    """``data`` as a ``<script type="application/json">`` block (``</`` escaped)."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    return f'<script type="application/json" id="{esc(element_id)}">{text}</script>'


CSS = """
:root { --fwd: #1f6fd1; --bwd: #d9480f; --ok: #2b8a3e; --bad: #c92a2a; --kink: #9c6b00;
  --muted: #667085; --line: #d0d5dd; --bg: #ffffff; --soft: #f5f7fa; --param: #fff3c4; --input: #eef6ff; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  color: #1d2939; background: var(--bg); margin: 0; }
main { max-width: 1180px; margin: 0 auto; padding: 18px 24px 60px; }
h1 { font-size: 1.5em; margin: 0.2em 0 0.1em; }
h2 { font-size: 1.2em; margin: 1.6em 0 0.5em; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 1.02em; margin: 1.2em 0 0.4em; }
p { margin: 0.4em 0 0.7em; }
.sub { color: var(--muted); margin: 0 0 0.8em; }
code, .mono, td.num { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace; font-size: 0.92em; }
table { border-collapse: collapse; margin: 0.4em 0 1em; font-size: 0.93em; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 10px; text-align: left; vertical-align: top; }
th { background: var(--soft); font-weight: 600; }
td.num { text-align: right; white-space: nowrap; }
tr.cur td { background: #e7f0ff; }
tr.cur.bwd td { background: #fff0e6; }
tr.bad td { background: #fff0f0; }
.verdict { display: inline-block; padding: 1px 8px; border-radius: 10px; font-weight: 600; font-size: 0.9em; }
.verdict.ok { background: #e6f4ea; color: var(--ok); }
.verdict.bad { background: #fde8e8; color: var(--bad); }
.verdict.kink { background: #fff4d6; color: var(--kink); }
.banner { padding: 10px 14px; border-radius: 8px; margin: 0.8em 0; font-weight: 600; }
.banner.ok { background: #e6f4ea; color: #14532d; }
.banner.bad { background: #fde8e8; color: #7f1d1d; }
.na { color: var(--muted); font-style: italic; padding: 8px 12px; background: var(--soft); border-radius: 6px; }
.facts { display: flex; flex-wrap: wrap; gap: 6px 22px; margin: 0.4em 0 0.8em; }
.facts div { max-width: 100%; overflow-wrap: anywhere; }
.facts b { white-space: nowrap; }
.facts b { color: var(--muted); font-weight: 500; margin-right: 4px; }
.scroll { overflow-x: auto; }
.charts { display: flex; flex-wrap: wrap; gap: 12px 24px; }
figure { margin: 0; max-width: 560px; }
figcaption { color: var(--muted); font-size: 0.85em; margin: 2px 0 0 4px; }
svg text { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; }
svg .axis line, svg .axis path { stroke: #98a2b3; }
svg .axis line.grid { stroke: #eaecf0; }
svg .tick { font-size: 10px; fill: #475467; }
svg .lab { font-size: 11px; fill: #344054; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 14px; font-size: 0.85em; margin: 2px 0 6px 4px; }
.legend i { display: inline-block; width: 12px; height: 3px; vertical-align: middle; margin-right: 4px; }
.js-only { display: none; }
.has-js .js-only { display: block; }
.has-js .no-js { display: none; }
button { font: inherit; padding: 4px 12px; border: 1px solid var(--line); border-radius: 6px; background: #fff; cursor: pointer; }
button:hover { background: var(--soft); }
button:focus-visible { outline: 2px solid var(--fwd); }
kbd { font-family: ui-monospace, monospace; font-size: 0.85em; border: 1px solid var(--line); border-bottom-width: 2px;
  border-radius: 4px; padding: 0 4px; background: var(--soft); }
footer { margin-top: 3em; color: var(--muted); font-size: 0.85em; }
math[display="block"] { margin: 0.3em 0; }
"""


def page(title: str, body: str, *, css: str = "", script: str = "", data: str = "") -> str:
    """A complete HTML document: ``body`` inside ``<main>``, CSS and script inline.

    ``data`` is inserted before the script (``json_script`` blocks). The
    ``has-js`` class is set on ``<html>`` by the first line of script, so
    JavaScript-only controls stay hidden when scripts are off.
    """
    js = ""
    if script:
        js = "<script>\n\"use strict\";\ndocument.documentElement.classList.add('has-js');\n" + script + "\n</script>"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        # No resource of any origin may load: the page is self-contained by construction.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">\n"
        f"<title>{esc(title)}</title>\n<style>{CSS}{css}</style>\n</head>\n<body>\n<main>\n{body}\n"
        "<footer>Made by gradcheck_lab. This page is self-contained: it loads nothing from anywhere "
        "and works offline.</footer>\n</main>\n"
        f"{data}\n{js}\n</body>\n</html>\n"
    )


def _scoped(css: str, scope: str) -> str:
    """``css`` with every selector confined to ``scope`` (a notebook fragment must not restyle the notebook)."""
    import re

    out = []
    for selectors, rules in re.findall(r"([^{}]+)\{([^{}]*)\}", css):
        parts = []
        for sel in selectors.split(","):
            sel = sel.strip()
            if sel in (":root", "body", "main", "html"):
                parts.append(scope)
            elif sel.startswith(".has-js"):
                parts.append(f"{scope}{sel[len('.has-js'):]}")  # scripts do not run in a fragment
            else:
                parts.append(f"{scope} {sel}")
        out.append(f"{', '.join(parts)} {{{rules}}}")
    return "\n".join(out)


def fragment(body: str, *, css: str = "", scope: str = "gcl-report") -> str:
    """``body`` as a self-contained HTML fragment for a notebook (``_repr_html_``): styles scoped, no script.

    >>> text = fragment("<h1>x</h1>")
    >>> text.startswith('<div class="gcl-report">') and ".gcl-report h1" in text and "<script" not in text
    True
    """
    return f'<div class="{scope}"><style>{_scoped(CSS + css, "." + scope)}</style>\n{body}\n</div>'


def external_references(text: str) -> list[str]:
    """Everything in ``text`` that could load a resource: ``src``/``href``/``url()`` not to ``#...``, ``<link>``, ``@import``.

    A page from this package has none (the tests check it).

    >>> external_references('<a href="#x">x</a><img src="https://example.org/a.png">')
    ['src=https://example.org/a.png']
    """
    import re

    out = [f"{k}={v}" for k, v in re.findall(r'\b(src|href)\s*=\s*"([^"]*)"', text) if not v.startswith("#")]
    out += [f"url({v})" for v in re.findall(r"url\(([^)]*)\)", text) if not v.strip("'\" ").startswith("#")]
    out += [tag for tag in ("<link", "@import", "<iframe", "<object", "<embed") if tag in text]
    return out


def check_path(path: str | Path, flag: str = "--html") -> Path:
    """``path`` as a Path if it ends in .html/.htm and its directory exists, else a :class:`UsageError`."""
    from ..errors import UsageError

    p = Path(path)
    if not str(path).lower().endswith((".html", ".htm")):
        raise UsageError(f"Expected {flag} FILE ending in .html but got {str(path)!r}.")
    if not p.parent.is_dir():
        raise UsageError(f"Expected an existing directory for {flag} but {str(p.parent)!r} does not exist.")
    return p


def write_page(text: str, path: str | Path, flag: str = "--html") -> Path:
    """Write a page to ``path`` (UTF-8); a bad suffix, missing directory or unwritable path is a usage error."""
    from ..errors import UsageError

    p = check_path(path, flag)
    try:
        p.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"Expected a writable {flag} path but writing {str(path)!r} failed: {exc.strerror or exc}.") from None
    return p
