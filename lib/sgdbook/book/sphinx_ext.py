"""Sphinx glue for the book's HTML, loaded by ``_config.yml`` (``sphinx.extra_extensions``).

- MathJax on every page, not only on pages with formulas of their own: the navigation and the
  search results show chapter titles with mathematics on every page.
- No live-code (thebe) scripts: the book has no launch buttons, and their configuration names a
  script on a CDN; sphinx-thebe also registered it twice, and a second ``const THEBE_JS_URL`` is
  a script error in the reader's console. Every other script appears once.
- A colour mode for a reader's first visit: without ``default_mode`` the theme starts from an
  empty mode and logs an error to the console.
"""

from __future__ import annotations

from typing import Any


def _script_key(js: Any) -> tuple:
    # an inline script is registered with filename None by one extension and '' by another
    filename = getattr(js, "filename", js) or ""
    attributes = getattr(js, "attributes", None) or {}
    return (str(filename), tuple(sorted((k, str(v)) for k, v in attributes.items())))


def _is_thebe(key: tuple) -> bool:
    filename, attributes = key
    return filename.endswith("sphinx-thebe.js") or "THEBE_JS_URL" in dict(attributes).get("body", "")


def _unique_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for js in scripts:
        key = _script_key(js)
        if _is_thebe(key):
            continue
        if key not in seen:
            seen.add(key)
            kept.append(js)
    scripts[:] = kept


def _default_mode(app, config) -> None:
    # the pydata theme reads it from the template context, not from the theme options
    config.html_context = {"default_mode": "light", **(config.html_context or {})}


def setup(app) -> dict:
    app.set_html_assets_policy("always")
    app.connect("config-inited", _default_mode)
    # early: the event stops at the first handler that returns a template name
    app.connect("html-page-context", _unique_scripts, priority=1)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
