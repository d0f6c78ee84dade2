"""The browser test: every page of the built book opened from disk in headless Chromium.

``test_built_book`` checks the book that ``make book`` built (``make browser`` / ``make test``
run it with ``SGDBOOK_BROWSER_SCALE``); the other tests prove on a small hand-made site that the
checker finds what it must find (console errors, missing images, raw TeX, build noise, pages and
tables wider than the page, broken links, wrong or missing verdicts on the scorecard).
"""

import base64
import json
import os
from pathlib import Path

import pytest

from sgdbook.book import browser, report
from sgdbook.book.paths import build_dir

try:
    CHROMIUM = browser.find_chromium()
except browser.BrowserError:
    CHROMIUM = None
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="no Chromium here (.ci/run installs Debian's chromium; CI fails instead of skipping)",
)

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def _mathjax_dir() -> Path:
    import importlib

    return Path(importlib.import_module("sphinx-mathjax-offline").__file__).parent / "static" / "mathjax"


def _page(body: str, math: bool = False) -> str:
    head = ""
    if math:
        head = (
            '<script>window.MathJax = {options: {ignoreHtmlClass: "tex2jax_ignore|mathjax_ignore|document", '
            'processHtmlClass: "tex2jax_process|mathjax_process|math|output_area"}}</script>'
            '<script defer src="_static/mathjax/tex-chtml.js"></script>'
        )
    return (
        f'<!doctype html><html><head><meta charset="utf-8">{head}</head>'
        f'<body class="document"><main><article class="bd-article" style="width:600px">{body}</article></main></body></html>'
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    (root / "_static").mkdir()
    (root / "_static" / "mathjax").symlink_to(_mathjax_dir(), target_is_directory=True)
    (root / "dot.png").write_bytes(PNG)
    (root / "index.html").write_text('<meta http-equiv="Refresh" content="0; url=good.html" />')
    (root / "good.html").write_text(_page(
        '<h1 id="top">Good</h1><p>Math <span class="math notranslate nohighlight">\\(\\hat\\kappa=\\frac{a}{b}\\)</span>.</p>'
        '<div class="math notranslate nohighlight">\\[\\sum_i x_i\\]</div>'
        '<figure id="fig-a"><img src="dot.png"><figcaption>A figure</figcaption></figure>'
        '<pre>code may say \\[ and $$ and 40%|####| 4/10</pre>'
        '<a href="good.html#top">self</a> <a href="book/scorecard.html#row">scorecard</a>'
        ' <a href="https://example.org/">an outside link is not followed</a>',
        math=True,
    ))
    (root / "bad.html").write_text(_page(
        '<p>Raw \\[ \\frac{a}{b} \\] left in the text, and $$x$$.</p>'
        '<img src="missing.png">'
        '<figure><figcaption>No image</figcaption></figure>'
        '<div class="cell tag_injected-parameters"><pre># Parameters</pre></div>'
        '<div class="cell_output"><pre>Figure 2:  40%|####      | 4/10 [00:01&lt;00:02,  2.9it/s]</pre></div>'
        '<div class="sgdbook-fit" style="overflow:auto"><table><tr><td style="white-space:nowrap">'
        + "wide " * 300 + "</td></tr></table></div>"
        '<div style="width:3000px">a page wider than the window</div>'
        '<a href="good.html#nowhere">bad fragment</a> <a href="gone.html">bad file</a>'
        "<script>console.error('something broke')</script>"
        '<script src="https://cdn.example.org/mathjax.js"></script>'
    ))
    (root / "book").mkdir()
    rows = "".join(
        f'<tr data-sgdbook-item="p:{i}" data-verdict="{v}"><td><span class="sgdbook-verdict"{style}>{v}</span>'
        f'<a class="sgdbook-record" href="../good.html#top">in the chapter</a></td></tr>'
        for i, v, style in [("a", "reproduced", ""), ("b", "erratum", ""), ("c", "reproduced", ' style="margin-left:900px"')]
    )
    (root / "book" / "scorecard.html").write_text(_page(f'<table id="row">{rows}</table>').replace('"_static', '"../_static'))
    return root


@needs_chromium
def test_checker_finds_what_a_reader_would_see(site, tmp_path):
    expected = [{"paper": "p", "id": "a", "verdict": "reproduced"}, {"paper": "p", "id": "b", "verdict": "reproduced"},
                {"paper": "p", "id": "c", "verdict": "reproduced"}, {"paper": "p", "id": "d", "verdict": "reproduced"}]
    rep = browser.check_book(site, expected, screenshots=tmp_path / "shots", scorecard_page="book/scorecard")
    by_page = {}
    for p in rep.problems:
        by_page.setdefault(p.page, set()).add(p.kind)
    assert sorted(rep.pages) == ["bad", "book/scorecard", "good", "index"]
    assert "good" not in by_page and "index" not in by_page, by_page.get("good")
    assert {
        "raw TeX in the text", "missing image", "figure without its image", "injected-parameters cell shown",
        "progress bar in the output", "wider than the page", "wider than the window", "broken link", "console error",
        "failed load", "external resource", "network request",
    } <= by_page["bad"], by_page["bad"]
    assert {"wrong verdict", "verdict outside the page", "recorded item missing"} <= by_page["book/scorecard"]
    assert rep.scorecard_items == 3 and not rep.ok
    broken = {p.detail for p in rep.problems if p.kind == "broken link"}
    assert any("good.html#nowhere" in d for d in broken) and any("gone.html" in d for d in broken)
    assert not any("example.org" in d for d in broken)
    assert json.loads(rep.to_json())["ok"] is False


def test_no_browser_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("SGDBOOK_CHROMIUM", str(tmp_path / "none"))
    monkeypatch.setattr(browser.shutil, "which", lambda name: None)
    monkeypatch.setattr(browser.Path, "is_file", lambda self: False)
    with pytest.raises(browser.BrowserError, match="apt-get install chromium"):
        browser.find_chromium()


@pytest.mark.skipif(not os.environ.get("SGDBOOK_BROWSER_SCALE"), reason="run by `make browser` after `make book`")
def test_built_book():
    """Every page of the built book: what `make test` checks at the smoke scale."""
    scale = os.environ["SGDBOOK_BROWSER_SCALE"]
    html = build_dir() / "stage" / scale / "_build" / "html"
    expected = report.expected_records(scale, build_dir() / "executed" / scale)  # the Makefile's EXEC
    assert expected, f"no trusted ledger records at scale {scale}: run `make book SCALE={scale}` first"
    rep = browser.check_book(html, expected, screenshots=build_dir() / "screenshots" / scale)
    out = build_dir() / "browser" / f"{scale}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(rep.to_json())
    print(f"{len(rep.pages)} pages in {rep.seconds} s; screenshots in {build_dir() / 'screenshots' / scale}")
    assert rep.scorecard_items >= len(expected) and len(rep.screenshots) >= 3
    assert rep.ok, f"{len(rep.problems)} problems (report: {out}):\n" + "\n".join(map(str, rep.problems[:60]))
