"""Open every page of the built book in headless Chromium and check what a reader sees.

The book is opened from disk (``file://``), as a reader without a network would open it, in
Debian's Chromium (``/usr/bin/chromium``) driven by Playwright for Python (only its driver is
used: no browser is ever downloaded). For every page:

- no console error, no uncaught script error, no failed load, no request that leaves the disk;
- every image loaded (no missing image), every figure holds a loaded image;
- the mathematics typeset: MathJax ran, no MathJax error, and no raw ``\\[``, ``\\(``, ``$$`` or
  TeX command left in the text outside code;
- no horizontal scrolling of the page; generated tables (class ``sgdbook-fit``) within the
  article's width;
- no build noise: no progress-bar text, no papermill injected-parameters cell;
- every link inside the book resolves (the file exists and so does its ``#fragment``);
- no script, stylesheet or image from another host (the book works from disk, offline).

On the scorecard page each expected record (``paper``, ``id``, ``verdict``) must show its verdict,
visible and inside the article's width, with a link to the chapter section that records it.
Screenshots of a few pages are kept for people to look at.

``python -m sgdbook.book.browser --html <build>/html --scale smoke`` runs the checks and prints
the problems (exit status 1 if any).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Mapping
from urllib.parse import unquote, urldefrag, urlparse

from .staging import PROGRESS_LINE as PROGRESS_RE

#: Flags for a root user on a machine without a network (no background connections at all).
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
VIEWPORT = {"width": 1280, "height": 900}

#: Pages (paths relative to the html folder, without ``.html``) screenshotted when present.
SCREENSHOT_PAGES = (
    "book/intro",
    "book/scorecard",
    "book/errata",
    "book/status",
    "book/notation",
    "book/vmf-directional/index",
    "book/vmf-directional/01_kappa_bias",
    "book/batch-size-variance/01_linear_regression",
)
#: Pages screenshotted whole (the others: the first screen).
FULL_PAGE = ("book/scorecard", "book/errata")

RAW_MATH_RE = re.compile(
    r"\\\[|\\\]|\\\(|\\\)|\$\$|\\begin\{|\\end\{"
    r"|\\(?:frac|hat|bar|tilde|mathrm|mathbb|mathcal|operatorname|sum|sqrt|left|right|cdot|le|ge|kappa|eta|theta|lambda|mu|sigma|nabla)(?![A-Za-z])"
)


class BrowserError(RuntimeError):
    """No usable Chromium, or no Playwright to drive it."""


@dataclass
class Problem:
    page: str
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.page}: {self.kind}: {self.detail}"


@dataclass
class Report:
    html: str
    pages: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    screenshots: list[str] = field(default_factory=list)
    scorecard_items: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> str:
        d = asdict(self)
        d["ok"] = self.ok
        return json.dumps(d, indent=1)


def find_chromium() -> str:
    """The system Chromium: ``$SGDBOOK_CHROMIUM``, ``/usr/bin/chromium`` or ``chromium`` on PATH."""
    for cand in (os.environ.get("SGDBOOK_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                 shutil.which("chromium-browser")):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return str(cand)
    raise BrowserError(
        "no Chromium found: install Debian's package (apt-get install chromium) or set "
        "SGDBOOK_CHROMIUM to the browser's executable; nothing downloads a browser of its own"
    )


def html_pages(html: Path) -> list[Path]:
    """Every page of the book: the .html files outside the build's asset folders."""
    skip = {"_static", "_sources", "_images", "_downloads", "_panels_static", ".doctrees"}
    return sorted(p for p in html.rglob("*.html") if not skip & set(p.relative_to(html).parts))


_PAGE_JS = r"""
async ([mathTimeout]) => {
  const out = {};
  const mathNodes = document.querySelectorAll('.math, span.math, div.math');
  out.mathjaxLoaded = !!(window.MathJax && window.MathJax.startup && window.MathJax.startup.promise);
  if (out.mathjaxLoaded) {
    const done = (async () => {
      await MathJax.startup.promise;
      if (MathJax.typesetPromise) await MathJax.typesetPromise();
      return true;
    })();
    const timer = new Promise(r => setTimeout(() => r(false), mathTimeout));
    out.mathjaxFinished = await Promise.race([done, timer]);
  }
  out.mathNodes = mathNodes.length;
  out.mathUntypeset = [...mathNodes].filter(e => !e.querySelector('mjx-container')).map(
    e => e.textContent.trim().slice(0, 80));
  out.mathErrors = [...document.querySelectorAll('mjx-merror')].map(
    e => (e.getAttribute('data-mjx-error') || e.textContent).slice(0, 120));
  out.typeset = document.querySelectorAll('mjx-container').length;

  const article = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
  // text a reader sees as prose (the navigation included): drop code, scripts, typeset math
  const clone = document.body.cloneNode(true);
  clone.querySelectorAll('pre, code, script, style, mjx-container, .highlight, textarea, .cell_input').forEach(e => e.remove());
  out.proseText = clone.textContent;
  out.outputText = [...article.querySelectorAll('.cell_output')].map(e => e.textContent).join('\n');

  out.brokenImages = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(
    i => i.getAttribute('src'));
  out.emptyFigures = [...article.querySelectorAll('figure')].filter(f => {
    const imgs = [...f.querySelectorAll('img')];
    const svgs = f.querySelectorAll('svg');
    return (imgs.length === 0 && svgs.length === 0) || imgs.some(i => !(i.complete && i.naturalWidth > 0));
  }).map(f => (f.id || (f.querySelector('figcaption') || f).textContent.trim().slice(0, 60)));
  out.injected = document.querySelectorAll('.tag_injected-parameters').length;

  out.scrollWidth = document.documentElement.scrollWidth;
  out.innerWidth = window.innerWidth;
  const ar = article.getBoundingClientRect();
  out.articleRight = ar.right;
  out.tooWide = [...article.querySelectorAll('.sgdbook-fit')].filter(e => {
    const r = e.getBoundingClientRect();
    return e.scrollWidth > e.clientWidth + 1 || r.right > ar.right + 1 || r.left < ar.left - 1;
  }).map(e => (e.id || e.className) + ` (${e.scrollWidth}px in ${e.clientWidth}px)`);

  out.external = [...document.querySelectorAll(
      'script[src], link[rel~="stylesheet"][href], link[rel~="preload"][href], img[src], iframe[src], source[src]')]
    .map(e => e.src || e.href).filter(u => /^(https?:)?\/\//.test(u));
  out.links = [...document.querySelectorAll('a[href]')].map(a => a.href);
  out.resources = [...document.querySelectorAll('link[href], script[src]')].map(e => e.href || e.src);
  out.ids = [...document.querySelectorAll('[id]')].map(e => e.id);
  out.names = [...document.querySelectorAll('a[name]')].map(e => e.getAttribute('name'));

  out.scorecard = [...document.querySelectorAll('[data-sgdbook-item]')].map(e => {
    const v = e.querySelector('.sgdbook-verdict');
    const link = e.querySelector('a.sgdbook-record');
    let box = null, visible = false;
    if (v) {
      const r = v.getBoundingClientRect();
      box = [r.left, r.right];
      visible = r.width > 0 && r.height > 0 && getComputedStyle(v).visibility !== 'hidden';
    }
    return {item: e.getAttribute('data-sgdbook-item'), verdict: e.getAttribute('data-verdict'),
            shown: v ? v.textContent.trim() : null, box, visible, link: link ? link.href : null};
  });
  return out;
}
"""


def _rel(html: Path, page: Path) -> str:
    return page.relative_to(html).with_suffix("").as_posix()


def _local_target(url: str) -> tuple[Path | None, str]:
    """(file, fragment) of a file:// URL; (None, '') for anything else."""
    base, frag = urldefrag(url)
    parsed = urlparse(base)
    if parsed.scheme != "file":
        return None, ""
    return Path(unquote(parsed.path)), unquote(frag)


_REFRESH_RE = re.compile(r"<meta\s+http-equiv=[\"']refresh[\"']\s+content=[\"']\d+;\s*url=([^\"']+)[\"']", re.I)


def _redirect_target(path: Path) -> Path | None:
    """The target of a page that is only a ``<meta http-equiv="refresh">`` forward, else None."""
    text = path.read_text(errors="replace")
    m = _REFRESH_RE.search(text)
    if m is None or "<body" in text.lower():
        return None
    return (path.parent / unquote(m.group(1).split("#")[0])).resolve()


_ID_RE = re.compile(r"""\b(?:id|name)\s*=\s*["']([^"']+)["']""")


def _static_ids(path: Path, cache: dict[Path, set[str]]) -> set[str]:
    if path not in cache:
        try:
            cache[path] = set(_ID_RE.findall(path.read_text(errors="replace")))
        except OSError:
            cache[path] = set()
    return cache[path]


def check_book(
    html: Path,
    expected: Iterable[Mapping[str, str]] = (),
    screenshots: Path | None = None,
    pages: Iterable[Path] | None = None,
    scorecard_page: str = "book/scorecard",
    math_timeout_ms: int = 20000,
) -> Report:
    """Open every page of ``html`` in headless Chromium; return the problems found.

    ``expected``: records (``paper``, ``id``, ``verdict``) the scorecard must show.
    ``screenshots``: a folder for screenshots of :data:`SCREENSHOT_PAGES` (kept as artifacts).
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as err:  # pragma: no cover - dev dependency
        raise BrowserError("the browser test needs Playwright for Python: pip install playwright") from err

    start = time.perf_counter()
    expected = list(expected)
    html = Path(html).resolve()
    if not (html / "index.html").is_file():
        raise FileNotFoundError(f"no built book at {html} (index.html missing): build it first (make book)")
    page_files = sorted(Path(p).resolve() for p in pages) if pages is not None else html_pages(html)
    report = Report(html=str(html), pages=[_rel(html, p) for p in page_files])
    problems = report.problems
    if screenshots is not None:
        screenshots = Path(screenshots)
        screenshots.mkdir(parents=True, exist_ok=True)
        for old in screenshots.glob("*.png"):
            old.unlink()

    ids: dict[Path, set[str]] = {}
    links: list[tuple[str, str]] = []
    scorecard_rows: list[dict] = []

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=find_chromium(), args=list(CHROMIUM_ARGS), headless=True)
        try:
            context = browser.new_context(viewport=VIEWPORT, service_workers="block")
            for path in page_files:
                name = _rel(html, path)
                events: list[tuple[str, str]] = []
                page = context.new_page()
                page.on("console", lambda m, ev=events: m.type == "error" and ev.append(("console error", m.text)))
                page.on("pageerror", lambda e, ev=events: ev.append(("script error", str(e))))
                page.on(
                    "requestfailed",
                    lambda r, ev=events: ev.append(("failed load", f"{r.url} ({r.failure})")),
                )
                page.on(
                    "request",
                    lambda r, ev=events: urlparse(r.url).scheme not in ("file", "data", "blob", "about")
                    and ev.append(("network request", r.url)),
                )
                redirect = _redirect_target(path)
                if redirect is not None:  # the root index.html only forwards to the first page
                    if not redirect.is_file():
                        problems.append(Problem(name, "broken link", f"redirects to missing {redirect}"))
                    page.close()
                    continue
                try:
                    page.goto(path.as_uri(), wait_until="load", timeout=60000)
                    info = page.evaluate(_PAGE_JS, [math_timeout_ms])
                    page.wait_for_timeout(50)  # late console messages
                except Exception as err:  # a page that does not load is a problem, not a crash
                    problems.append(Problem(name, "page did not load", f"{type(err).__name__}: {err}"))
                    page.close()
                    continue
                for kind, detail in events:
                    problems.append(Problem(name, kind, detail[:300]))
                problems.extend(_page_problems(name, info))
                ids[path] = set(info["ids"]) | set(info["names"])
                links.extend((name, u) for u in info["links"] + info["resources"])
                if name == scorecard_page:
                    scorecard_rows = info["scorecard"]
                    report.scorecard_items = len(scorecard_rows)
                    problems.extend(_scorecard_problems(name, scorecard_rows, info["articleRight"], expected))
                if screenshots is not None and name in SCREENSHOT_PAGES:
                    shot = screenshots / (name.replace("/", "__") + ".png")
                    page.screenshot(path=str(shot), full_page=name in FULL_PAGE)
                    report.screenshots.append(str(shot))
                page.close()
        finally:
            browser.close()

    if scorecard_page not in report.pages and expected:
        problems.append(Problem(scorecard_page, "missing page", "the scorecard page was not built"))
    problems.extend(_link_problems(html, links, ids))
    report.seconds = round(time.perf_counter() - start, 1)
    return report


def _page_problems(name: str, info: dict) -> list[Problem]:
    out = []
    if info["mathNodes"] and not info["mathjaxLoaded"]:
        out.append(Problem(name, "math not typeset", f"{info['mathNodes']} formulas and no MathJax loaded"))
    elif info["mathjaxLoaded"] and not info.get("mathjaxFinished"):
        out.append(Problem(name, "math not typeset", "MathJax did not finish"))
    for text in info["mathUntypeset"][:5]:
        out.append(Problem(name, "math not typeset", text))
    for err in info["mathErrors"][:5]:
        out.append(Problem(name, "math error", err))
    for m in list(RAW_MATH_RE.finditer(info["proseText"]))[:5]:
        ctx = info["proseText"][max(0, m.start() - 40) : m.end() + 40].replace("\n", " ")
        out.append(Problem(name, "raw TeX in the text", ctx))
    for url in info["external"]:
        out.append(Problem(name, "external resource", f"{url} (the book must work from disk)"))
    for src in info["brokenImages"]:
        out.append(Problem(name, "missing image", str(src)))
    for fig in info["emptyFigures"]:
        out.append(Problem(name, "figure without its image", fig))
    if info["injected"]:
        out.append(Problem(name, "injected-parameters cell shown", f"{info['injected']} cell(s)"))
    for text in (info["proseText"], info["outputText"]):  # code may print such text; outputs may not
        m = PROGRESS_RE.search(text)
        if m:
            ctx = text[max(0, m.start() - 40) : m.end() + 20].replace("\n", " ")
            out.append(Problem(name, "progress bar in the output", ctx))
            break
    if info["scrollWidth"] > info["innerWidth"] + 1:
        out.append(
            Problem(name, "wider than the window", f"{info['scrollWidth']}px in a {info['innerWidth']}px window")
        )
    for what in info["tooWide"]:
        out.append(Problem(name, "wider than the page", what))
    return out


def _scorecard_problems(name: str, rows: list[dict], right: float, expected: Iterable[Mapping[str, str]]):
    out = []
    shown = {r["item"]: r for r in rows}
    for rec in expected:
        key = f"{rec['paper']}:{rec['id']}"
        row = shown.get(key)
        if row is None:
            out.append(Problem(name, "recorded item missing", key))
            continue
        if row["shown"] is None or not row["visible"]:
            out.append(Problem(name, "verdict not shown", key))
        elif row["shown"] != rec["verdict"] or row["verdict"] != rec["verdict"]:
            out.append(Problem(name, "wrong verdict", f"{key}: shows {row['shown']!r}, ledger {rec['verdict']!r}"))
        elif row["box"][1] > right + 1:
            out.append(Problem(name, "verdict outside the page", f"{key}: right edge {row['box'][1]:.0f} > {right:.0f}"))
        if not row["link"]:
            out.append(Problem(name, "no link to the recording section", key))
    return out


def _link_problems(html: Path, links: list[tuple[str, str]], ids: dict[Path, set[str]]) -> list[Problem]:
    out, cache, seen = [], {}, set()
    for page, url in links:
        target, frag = _local_target(url)
        if target is None or (page, url) in seen:
            continue
        seen.add((page, url))
        if target.is_dir():
            target = target / "index.html"
        if not target.exists():
            out.append(Problem(page, "broken link", url))
            continue
        if frag and target.suffix == ".html":
            known = ids.get(target.resolve()) or _static_ids(target, cache)
            if frag not in known:
                out.append(Problem(page, "broken link", f"{url} (no #{frag} there)"))
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    from . import report as pages
    from .paths import build_dir
    from .scales import check_scale

    ap = argparse.ArgumentParser(prog="python -m sgdbook.book.browser", description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", required=True, help="the scale of the built book (its ledger says what to expect)")
    ap.add_argument("--html", type=Path, help="the built book's html folder (default: the staged book's)")
    ap.add_argument("--screenshots", type=Path, help="folder for screenshots (default: _build/screenshots/<scale>)")
    ap.add_argument("--report", type=Path, help="the report as JSON (default: _build/browser/<scale>.json)")
    args = ap.parse_args(argv)
    scale = check_scale(args.scale)
    html = args.html or build_dir() / "stage" / scale / "_build" / "html"
    shots = args.screenshots or build_dir() / "screenshots" / scale
    out = args.report or build_dir() / "browser" / f"{scale}.json"
    report = check_book(html, pages.expected_records(scale, build_dir() / "executed" / scale), shots)
    args.report = out
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(report.to_json())
    for p in report.problems:
        print(p)
    print(
        f"browser check: {len(report.pages)} pages, {len(report.problems)} problems, "
        f"{report.scorecard_items} scorecard items, {len(report.screenshots)} screenshots, {report.seconds} s"
    )
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
