"""The generated pages of the book: scorecard, status, errata, the papers' verdict summaries and
the reading guide's rerun table, built from the ledger and status records at build time.

What the pages may be trusted for: a ledger file counts only when its notebook still exists in
the sources and the pipeline's status record says that the notebook's last run at that scale
finished cleanly (and the file was written by that run). Records of a renamed or removed
notebook, of a failed or interrupted run, or older than the last run are *flagged* on the status
page and the scorecard, never shown as verdicts (:func:`collect`).

Nothing on these pages is typed by hand; the HTML they hold is plain, with the classes of
``book/_static/sgdbook.css`` (coloured verdicts, tables that fit the page) and ``data-``
attributes that the browser test reads (``sgdbook.book.browser``).
"""

from __future__ import annotations

import html
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from .ledger import VERDICT_MEANING, VERDICTS, load_claims, papers, validate
from .paths import ROOT, build_dir, papers_dir
from .scales import SCALES, check_scale
from .staging import fmt_seconds

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>|$#])")
NOT_COVERED = "not-yet-covered"
#: Seconds of slack between a status record's start time and its ledger file's mtime.
_CLOCK_SLACK = 2.0


def md_escape(text: str) -> str:
    """Escape Markdown/MyST punctuation (``$`` too: the book renders dollar math)."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def _e(text: Any) -> str:
    return html.escape(" ".join(str(text).split()), quote=True)


def anchor(*parts: str) -> str:
    """An HTML id from parts (letters, digits, ``-`` and ``_`` only)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", "-".join(parts)).strip("-").lower()


def verdict_anchor(item_id: str) -> str:
    """The id of an item's verdict box on its chapter page (see ``ledger.verdict_box_html``)."""
    return anchor("verdict", item_id)


def _title(paper: str) -> str:
    doc = yaml.safe_load((papers_dir() / paper / "claims.yaml").read_text())
    return doc.get("title", paper)


def short_claim(text: str, limit: int = 110) -> str:
    """The claim's summary cut at a word boundary near ``limit`` characters."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0].rstrip(",;:.")
    return cut + " …"


def chip(verdict: str, label: str | None = None) -> str:
    """A coloured verdict label."""
    return f'<span class="sgdbook-verdict sgdbook-v-{_e(verdict)}">{_e(label or verdict)}</span>'


def _fmt_value(v: Any, digits: int = 4) -> str:
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    if isinstance(v, list):
        inner = ", ".join(_fmt_value(x, digits) for x in v[:8])
        return "[" + inner + (", …" if len(v) > 8 else "") + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_fmt_value(x, digits)}" for k, x in list(v.items())[:8]) + "}"
    return str(v)


def evidence_html(evidence: Mapping[str, Any]) -> str:
    if not evidence:
        return "<p>(no numbers recorded)</p>"
    items = "".join(f"<li><code>{_e(k)}</code> = {_e(_fmt_value(v))}</li>" for k, v in evidence.items())
    return f'<ul class="sgdbook-evidence-list">{items}</ul>'


# ----------------------------------------------------------------------------- what to trust


@dataclass
class Run:
    """One notebook's records at one scale and whether they may be shown."""

    paper: str
    notebook: str
    source: Path
    status: dict[str, Any] | None
    ledger_file: Path | None
    records: list[dict[str, Any]] = field(default_factory=list)
    problem: str = ""  # why the records are flagged ("" when they are trusted)

    @property
    def key(self) -> str:
        return f"{self.paper}__{self.notebook}"

    @property
    def trusted(self) -> bool:
        return not self.problem


@dataclass
class Collected:
    scale: str
    runs: list[Run]  # every notebook with a status record or a ledger file at this scale

    @property
    def trusted(self) -> list[dict[str, Any]]:
        return [r for run in self.runs if run.trusted for r in run.records]

    @property
    def flagged(self) -> list[Run]:
        return [run for run in self.runs if run.problem and run.records]

    def by_item(self) -> dict[tuple[str, str], dict[str, Any]]:
        return {(r["paper"], r["id"]): r for r in self.trusted}

    def flagged_by_item(self) -> dict[tuple[str, str], Run]:
        return {(r["paper"], r["id"]): run for run in self.flagged for r in run.records}

    def run_of(self, paper: str, notebook: str) -> Run | None:
        return next((r for r in self.runs if r.paper == paper and r.notebook == notebook), None)


def _split_key(stem: str) -> tuple[str, str]:
    paper, _, notebook = stem.partition("__")
    return paper, notebook


def read_status(scale: str) -> list[dict[str, Any]]:
    folder = build_dir() / "status" / check_scale(scale)
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def collect(scale: str, executed: Path | None = None, root: Path | None = None) -> Collected:
    """Every notebook's status and ledger records at ``scale``, each judged trusted or flagged.

    ``executed``: the folder of executed notebooks the book is built from; a run is trusted only
    if its executed copy is the one there (a run executed elsewhere has no page in this book).
    """
    check_scale(scale)
    build = root or build_dir()
    stems: set[str] = set()
    status_dir, ledger_dir = build / "status" / scale, build / "ledger" / scale
    stems.update(p.stem for p in status_dir.glob("*.json"))
    stems.update(p.stem for p in ledger_dir.glob("*.json"))
    runs = []
    for stem in sorted(stems):
        paper, notebook = _split_key(stem)
        source = ROOT / "book" / paper / f"{notebook}.ipynb"
        st_path, lg_path = status_dir / f"{stem}.json", ledger_dir / f"{stem}.json"
        status = json.loads(st_path.read_text()) if st_path.is_file() else None
        run = Run(paper, notebook, source, status, lg_path if lg_path.is_file() else None)
        if run.ledger_file is not None:
            try:
                run.records = json.loads(run.ledger_file.read_text())
                for rec in run.records:
                    rec["_file"] = run.ledger_file.name
            except (OSError, ValueError) as err:
                run.problem = f"the ledger file cannot be read ({err})"
        if not run.problem:
            run.problem = _judge(run, executed)
        runs.append(run)
    return Collected(scale, runs)


def toc_files() -> set[str]:
    """The pages of the book: every ``file:`` of ``_toc.yml`` (``book/<folder>/<stem>``, no suffix)."""
    def walk(node) -> Iterable[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("file", "root") and isinstance(value, str):
                    yield str(Path(value).with_suffix("")) if Path(value).suffix in (".md", ".ipynb") else value
                else:
                    yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    path = ROOT / "_toc.yml"
    return set(walk(yaml.safe_load(path.read_text()))) if path.is_file() else set()


def in_book(paper: str, notebook: str) -> bool:
    """Whether ``book/<paper>/<notebook>.ipynb`` is in the sources and in the table of contents."""
    return (ROOT / "book" / paper / f"{notebook}.ipynb").is_file() and f"book/{paper}/{notebook}" in toc_files()


def _judge(run: Run, executed: Path | None = None) -> str:
    rel = run.source.relative_to(ROOT)
    if not run.source.is_file():
        return f"its notebook {rel} is not in the sources (renamed or removed)"
    if not in_book(run.paper, run.notebook):
        return f"its notebook {rel} is not in the book's table of contents (_toc.yml)"
    st = run.status
    if st is None:
        return "no status record: not written by a pipeline run"
    state = st.get("state") or ("finished" if st.get("ok") is not None else "running")
    if state == "running" or st.get("ok") is None:
        return "the last run did not finish (interrupted, or still running)"
    if not st.get("ok"):
        return "the last run failed: these are the partial records it left"
    started = st.get("started")
    if run.ledger_file is not None and started is not None:
        if run.ledger_file.stat().st_mtime < float(started) - _CLOCK_SLACK:
            return "written before the notebook's last run (stale)"
    if executed is not None:
        copy = (Path(executed) / rel).resolve()
        out = st.get("out")
        if not copy.is_file():
            return f"this book shows no executed copy of the run (it wrote {out or 'elsewhere'})"
        if out is not None and Path(out).resolve() != copy:
            return f"the last run wrote its executed copy elsewhere ({out}), not the page this book shows"
        if out is None and started is not None and copy.stat().st_mtime < float(started) - _CLOCK_SLACK:
            return "the book's executed copy is older than the notebook's last run"
    problems = validate(run.records) if run.records else []
    if problems:
        return "invalid records: " + "; ".join(problems[:3])
    return ""


def expected_records(scale: str, executed: Path | None = None) -> list[dict[str, str]]:
    """The records the scorecard must show (for the browser test): paper, id, verdict."""
    return [{"paper": r["paper"], "id": r["id"], "verdict": r["verdict"]} for r in collect(scale, executed).trusted]


# ----------------------------------------------------------------------------- helpers


def notebook_title(paper: str, notebook: str) -> str:
    """The first ``# `` heading of the source notebook (its name if none)."""
    path = ROOT / "book" / paper / f"{notebook}.ipynb"
    try:
        nb = json.loads(path.read_text())
    except (OSError, ValueError):
        return notebook
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "markdown":
            continue
        for line in "".join(cell.get("source", "")).splitlines():
            if line.startswith("# "):
                return line[2:].strip()
        break
    return notebook


def title_html(text: str) -> str:
    """A heading for raw HTML: escaped, ``$…$`` math kept for MathJax as ``\\(…\\)``."""
    parts = re.split(r"(\$[^$]+\$)", text)
    # the book's MathJax typesets only elements of class "math" (as Sphinx writes them)
    return "".join(
        f'<span class="math notranslate nohighlight">\\({html.escape(p[1:-1])}\\)</span>'
        if p.startswith("$") and p.endswith("$") and len(p) > 2
        else html.escape(re.sub(r"\s+", " ", p))
        for p in parts
    )


def _chapter_href(paper: str, notebook: str, base: str = "") -> str:
    return f"{base}{paper}/{notebook}.html"


def _counts(paper: str, coll: Collected) -> Counter:
    trusted, flagged = coll.by_item(), coll.flagged_by_item()
    out = Counter()
    for item_id in load_claims(paper):
        if (paper, item_id) in trusted:
            out[trusted[(paper, item_id)]["verdict"]] += 1
        elif (paper, item_id) in flagged:
            out["flagged"] += 1
        else:
            out[NOT_COVERED] += 1
    return out


def counts_html(counts: Counter) -> str:
    order = [*VERDICTS, "flagged", NOT_COVERED]
    labels = {NOT_COVERED: "not yet covered", "flagged": "flagged records"}
    chips = [
        f'<span class="sgdbook-count">{counts[v]} {chip(v, labels.get(v, v))}</span>' for v in order if counts.get(v)
    ]
    return '<span class="sgdbook-counts">' + " ".join(chips) + "</span>"


def _bar(counts: Counter) -> str:
    total = sum(counts.values()) or 1
    segs = "".join(
        f'<span class="sgdbook-bar-seg sgdbook-v-{_e(v)}" style="width:{100 * counts[v] / total:.2f}%" '
        f'title="{counts[v]} {_e(v)}"></span>'
        for v in (*VERDICTS, "flagged", NOT_COVERED)
        if counts.get(v)
    )
    return f'<span class="sgdbook-bar">{segs}</span>'


def _html_block(text: str) -> str:
    """A raw HTML block for MyST: one block, no blank line inside."""
    return "\n".join(line for line in text.splitlines() if line.strip()) + "\n"


# ----------------------------------------------------------------------------- scorecard


def scorecard_markdown(scale: str, executed: Path | None = None) -> str:
    coll = collect(scale, executed)
    trusted, flagged = coll.by_item(), coll.flagged_by_item()
    out = [
        f"Scale of the records on this page: **{scale}**. {len(coll.trusted)} verdicts recorded by "
        f"{sum(1 for r in coll.runs if r.trusted and r.records)} executed notebooks"
        + (f"; {len(coll.flagged)} ledger files flagged and not shown (see the [status page](status.md))" if coll.flagged else "")
        + ".",
        "",
    ]
    rows = []
    total = Counter()
    for paper in papers():
        c = _counts(paper, coll)
        total.update(c)
        rows.append(
            f'<tr><td><a href="#{anchor("scorecard", paper)}">{_e(_title(paper))}</a></td>'
            f"<td>{sum(c.values())}</td><td>{_bar(c)}{counts_html(c)}</td></tr>"
        )
    rows.append(f"<tr><td><b>all papers</b></td><td>{sum(total.values())}</td><td>{_bar(total)}{counts_html(total)}</td></tr>")
    out.append(
        _html_block(
            '<div class="sgdbook-fit sgdbook-summary-wrap"><table class="sgdbook-summary" id="scorecard-summary">'
            '<colgroup><col class="sgdbook-col-paper"><col class="sgdbook-col-n"><col></colgroup>'
            "<thead><tr><th>paper</th><th>items</th><th>verdicts</th></tr></thead><tbody>"
            + "\n".join(rows)
            + "</tbody></table></div>"
        )
    )
    for paper in papers():
        out += ["", f"({anchor('scorecard', paper)})=", f"## {md_escape(_title(paper))}", ""]
        out.append(_html_block(f"<p>{counts_html(_counts(paper, coll))}</p>"))
        body = []
        for item_id, item in load_claims(paper).items():
            rec = trusted.get((paper, item_id))
            body.append(_item_row(paper, item_id, item, rec, flagged.get((paper, item_id)), scale))
        out.append(
            _html_block(
                f'<div class="sgdbook-fit sgdbook-items-wrap"><table class="sgdbook-items" id="{anchor("items", paper)}">'
                '<colgroup><col class="sgdbook-col-id"><col><col class="sgdbook-col-verdict"></colgroup>'
                "<thead><tr><th>item</th><th>claim (evidence on demand)</th><th>verdict</th></tr></thead><tbody>"
                + "\n".join(body)
                + "</tbody></table></div>"
            )
        )
    return "\n".join(out)


def _item_row(paper: str, item_id: str, item: Mapping[str, Any], rec, flagged_run, scale: str) -> str:
    kind = f'{item.get("kind", "")} · {item.get("section", "")}'
    head = (
        f'<tr class="sgdbook-item" id="{anchor("sc", paper, item_id)}" data-sgdbook-item="{_e(paper)}:{_e(item_id)}"'
    )
    first = f'<td class="sgdbook-id"><code>{_e(item_id)}</code><span class="sgdbook-kind">{_e(kind)}</span></td>'
    if rec is None:
        if flagged_run is not None:
            note = f"record not shown: {flagged_run.problem}"
            cell = (
                f'<span class="sgdbook-verdict sgdbook-v-flagged" title="{_e(note)}">flagged</span>'
                f'<span class="sgdbook-note">{_e(note)}</span>'
            )
            state = "flagged"
        else:
            cell = chip(NOT_COVERED, "not yet covered")
            state = NOT_COVERED
        claim = f'<td class="sgdbook-claim">{_e(short_claim(item["summary"]))}</td>'
        return f'{head} data-state="{state}">{first}{claim}<td class="sgdbook-verdict-cell">{cell}</td></tr>'
    details = (
        f"<p><b>Claim.</b> {_e(item['summary'])}</p>"
        f"<p><b>Criterion.</b> {_e(rec.get('criterion', ''))}</p>"
        f"<p><b>Evidence.</b></p>{evidence_html(rec.get('evidence') or {})}"
        + (f"<p><b>Why.</b> {_e(rec['why'])}</p>" if rec.get("why") else "")
        + (f"<p><b>What would decide it.</b> {_e(rec['decide'])}</p>" if rec.get("decide") else "")
        + (f"<p><b>Pilot.</b> {_e(rec['pilot'])}</p>" if rec.get("pilot") else "")
        + (f"<p><b>Basis.</b> {_e(rec['basis'])}</p>" if rec.get("basis", "measured") != "measured" else "")
        + f"<p>Recorded by <code>{_e(rec['notebook'])}</code> at scale {_e(rec.get('scale', scale))} on "
        f"{_e(rec.get('device', '?'))}.</p>"
    )
    claim = (
        f'<td class="sgdbook-claim">{_e(short_claim(item["summary"]))}'
        f'<details class="sgdbook-details"><summary>evidence</summary>{details}</details></td>'
    )
    href = _chapter_href(paper, rec["notebook"]) + "#" + verdict_anchor(item_id)
    verdict = (
        f'<td class="sgdbook-verdict-cell">{chip(rec["verdict"])}'
        f'<a class="sgdbook-record" href="{href}" title="the verdict box in its chapter">in the chapter →</a></td>'
    )
    return f'{head} data-verdict="{_e(rec["verdict"])}">{first}{claim}{verdict}</tr>'


# ----------------------------------------------------------------------------- status


# The time budget of each scale on the CI machine (2 CPU cores): seconds a notebook, seconds the whole book.
TIME_BUDGET = {"book": (300.0, 3600.0)}


#: Notebooks whose runs start within this many seconds of the last one's end belong to one build.
BUILD_GAP_S = 300.0


def _over_budget(scale: str, st: Mapping[str, Any]) -> str:
    if scale in TIME_BUDGET and float(st.get("seconds", 0)) > TIME_BUDGET[scale][0]:
        shared = int(st.get("at_once", 1)) != 1
        return (f' <span class="sgdbook-failed">(over {fmt_seconds(TIME_BUDGET[scale][0])}'
                + (f", run beside others on {st.get('threads', '?')} of {st.get('cores', '?')} cores" if shared else "")
                + ")</span>")
    return ""


def build_span(statuses) -> tuple[float, int] | None:
    """The last build's wall time in the status records ``statuses`` (dicts with ``started`` and
    ``seconds``): runs grouped while each starts at most :data:`BUILD_GAP_S` after the group's end
    so far; returns (the last group's first start to its last end, in seconds; its number of runs),
    or None without timed runs."""
    runs = sorted((float(st["started"]), float(st["started"]) + float(st.get("seconds", 0)))
                  for st in statuses if st.get("started") is not None and float(st.get("seconds", 0)) > 0)
    if not runs:
        return None
    first, end, n = runs[0][0], runs[0][1], 1
    for a, b in runs[1:]:
        if a > end + BUILD_GAP_S:
            first, end, n = a, b, 1
        else:
            end, n = max(end, b), n + 1
    return end - first, n


def _device_cell(st: Mapping[str, Any]) -> str:
    threads = st.get("threads")
    return _e(st.get("device", "?")) + (f", {threads} thread{'s' if threads != 1 else ''}"
                                          if threads is not None and st.get("device") == "cpu" else "")


def _at_once_phrase(statuses) -> str:
    """", 2 at a time (1 of them alone)", ", one at a time", or nothing where the records do not say."""
    if any("at_once" not in st for st in statuses):
        return ""
    counts = [int(st["at_once"]) for st in statuses]
    shared = sorted(set(counts) - {1})
    if not shared:
        return ", one at a time"
    if len(shared) > 1:
        return ""
    alone = counts.count(1)
    return f", {shared[0] or 'all'} at a time" + (f" ({alone} of them alone)" if alone else "")


def status_markdown(scale: str, executed: Path | None = None) -> str:
    coll = collect(scale, executed)
    finished = [r for r in coll.runs if r.status is not None]
    ok = [r for r in finished if r.status.get("ok")]
    out = [
        f"Scale: **{scale}**. {len(finished)} notebooks executed with papermill; {len(ok)} ran cleanly.",
        "",
    ]
    total = sum(float(r.status.get("seconds", 0)) for r in finished)
    span = build_span([r.status for r in finished])
    if span is not None and span[1] == len(finished) and len(finished) > 1:
        wall = span[0]
        line = (f"The {len(finished)} notebooks ran in one build{_at_once_phrase([r.status for r in finished])}"
                + f": **{fmt_seconds(wall)}** from the first start to the last end (building the HTML adds a "
                f"minute or two); their wall times add up to {fmt_seconds(total)}.")
    else:
        wall = total
        line = f"Wall time of all {len(finished)} notebooks, one after another: **{fmt_seconds(total)}**." + (
            f" They ran at different times; the last build, {span[1]} of them, took {fmt_seconds(span[0])}."
            if span is not None and 1 < span[1] < len(finished) else "")
    if scale in TIME_BUDGET:
        per_nb, whole = TIME_BUDGET[scale]
        over = [r for r in finished if float(r.status.get("seconds", 0)) > per_nb]
        line += (
            f" The budget at this scale on 2 CPU cores: {fmt_seconds(per_nb)} a notebook, {fmt_seconds(whole)} the whole "
            f"book; {'within it' if wall <= whole else 'over it'}"
            + (f", {len(over)} notebook{'s' if len(over) != 1 else ''} over {fmt_seconds(per_nb)} (marked below)." if over else ".")
        )
    out += [line, ""]
    rows = []
    for run in coll.runs:
        st = run.status
        if st is None:
            continue
        if st.get("ok"):
            result = '<span class="sgdbook-ok">ran cleanly</span>'
        elif st.get("ok") is None:
            result = '<span class="sgdbook-failed">did not finish</span>'
        else:
            result = f'<span class="sgdbook-failed">failed</span><details><summary>error</summary><pre>{_e(str(st.get("error", ""))[-600:])}</pre></details>'
        if run.records:
            ledger = f"{len(run.records)} records" if run.trusted else f'<span class="sgdbook-failed">flagged</span>: {_e(run.problem)}'
        else:
            ledger = "—"
        if in_book(run.paper, run.notebook):
            name = f'<a href="{_chapter_href(run.paper, run.notebook)}">{title_html(notebook_title(run.paper, run.notebook))}</a>'
        elif run.source.is_file():
            name = f"{title_html(notebook_title(run.paper, run.notebook))} (not in the table of contents)"
        else:
            name = f"<code>{_e(run.key)}</code> (no longer in the sources)"
        rows.append(
            f'<tr id="{anchor("status", run.paper, run.notebook)}" data-sgdbook-status="{_e(run.key)}">'
            f"<td>{name}<br><code>{_e(run.paper)}/{_e(run.notebook)}</code></td>"
            f"<td>{_device_cell(st)}</td><td>{fmt_seconds(st.get('seconds', 0))}{_over_budget(scale, st)}</td>"
            f"<td>{result}<br><small>{_e(st.get('finished', ''))}</small></td><td>{ledger}</td></tr>"
        )
    out.append(
        _html_block(
            '<div class="sgdbook-fit"><table class="sgdbook-status" id="status-table">'
            '<colgroup><col><col class="sgdbook-col-dev"><col class="sgdbook-col-time"><col class="sgdbook-col-result"><col class="sgdbook-col-ledger"></colgroup>'
            "<thead><tr><th>chapter</th><th>device</th><th>wall time</th><th>result</th><th>ledger</th></tr></thead><tbody>"
            + "\n".join(rows)
            + "</tbody></table></div>"
        )
    )
    flagged = [r for r in coll.runs if r.problem and r.records]
    out += ["", "(status-flagged)=", "## Records not shown", ""]
    if flagged:
        out.append(
            "These ledger files are on disk but are not shown as verdicts on the scorecard or the "
            "errata page, for the reason given:"
        )
        out.append("")
        for run in flagged:
            out.append(f"- `{run.ledger_file.name}` ({len(run.records)} records): {md_escape(run.problem)}.")
    else:
        out.append("None: every ledger file at this scale comes from a clean run of a notebook in the sources.")
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- errata


def errata_markdown(scale: str, executed: Path | None = None) -> str:
    coll = collect(scale, executed)
    errata = [r for r in coll.trusted if r["verdict"] == "erratum"]
    out = [
        f"Scale of the records on this page: **{scale}**. {len(errata)} errata recorded"
        + (f" ({len(coll.flagged)} ledger files flagged and not read: see the [status page](status.md))" if coll.flagged else "")
        + ".",
        "",
    ]
    for paper in papers():
        mine = [r for r in errata if r["paper"] == paper]
        if not mine:
            continue
        claims = load_claims(paper)
        out += [f"({anchor('errata', paper)})=", f"## {md_escape(_title(paper))}", ""]
        cards = []
        for rec in mine:
            item = claims[rec["id"]]
            href = _chapter_href(paper, rec["notebook"]) + "#" + verdict_anchor(rec["id"])
            cards.append(
                f'<div class="sgdbook-erratum sgdbook-fit" id="{anchor("erratum", paper, rec["id"])}" '
                f'data-sgdbook-erratum="{_e(paper)}:{_e(rec["id"])}">'
                f'<p class="sgdbook-erratum-title"><code>{_e(rec["id"])}</code> '
                f'{_e(item.get("kind", ""))}, section {_e(item.get("section", ""))} {chip("erratum")} '
                f'<a class="sgdbook-record" href="{href}">in the chapter →</a></p>'
                f"<p><b>As printed.</b> {_e(rec.get('printed') or item['summary'])}</p>"
                + (f"<p><b>What holds instead.</b> {_e(holds)}</p>" if (holds := rec.get("corrected") or rec.get("why")) else "")
                + f"<p><b>How it was decided.</b> {_e(rec.get('criterion', ''))}</p>"
                f"<p><b>The numbers.</b></p>{evidence_html(rec.get('evidence') or {})}</div>"
            )
        out.append(_html_block("\n".join(cards)))
        out.append("")
    if not errata:
        out.append("No erratum is recorded at this scale.")
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- paper summaries


def paper_summary_markdown(paper: str, scale: str, executed: Path | None = None) -> str:
    """The opening of a paper's index page: its verdicts at this scale, per chapter."""
    coll = collect(scale, executed)
    c = _counts(paper, coll)
    per_nb: dict[str, Counter] = {}
    for run in coll.runs:
        if run.paper == paper and run.trusted:
            per_nb[run.notebook] = Counter(r["verdict"] for r in run.records)
    rows = "".join(
        f'<li><a href="{nb}.html">{title_html(notebook_title(paper, nb))}</a>: {counts_html(cnt)}</li>'
        for nb, cnt in sorted(per_nb.items())
    )
    return _html_block(
        f'<div class="sgdbook-paper-summary sgdbook-fit" data-sgdbook-summary="{_e(paper)}">'
        f"<p><b>Verdicts at scale {_e(scale)}</b> for the {sum(c.values())} items of this paper's checklist "
        f'(<a href="../scorecard.html#{anchor("scorecard", paper)}">scorecard</a>, '
        f'<a href="../errata.html">errata</a>):</p>'
        f"<p>{_bar(c)}{counts_html(c)}</p>"
        + (f"<ul>{rows}</ul>" if rows else "<p>No chapter of this paper has recorded a verdict at this scale yet.</p>")
        + "</div>"
    )


def papers_markdown(scale: str, executed: Path | None = None) -> str:
    """The reading guide's list of the papers, with their verdict counts at this scale."""
    coll = collect(scale, executed)
    pages = toc_files()
    items = []
    for paper in papers():
        c = _counts(paper, coll)
        name = _e(_title(paper))
        link = f'<a href="{paper}/index.html">{name}</a>' if f"book/{paper}/index" in pages else name
        items.append(f'<li data-sgdbook-paper="{_e(paper)}">{link} (<code>{_e(paper)}</code>): {counts_html(c)}</li>')
    return _html_block(f'<ul class="sgdbook-papers sgdbook-fit">{"".join(items)}</ul>')


def verdicts_markdown() -> str:
    """What each verdict means, for the reading guide (from the ledger's vocabulary)."""
    rows = "".join(f"<dt>{chip(v)}</dt><dd>{_e(VERDICT_MEANING.get(v, ''))}</dd>" for v in VERDICTS)
    return _html_block(f'<dl class="sgdbook-verdict-meanings sgdbook-fit">{rows}</dl>')


def rerun_markdown(notebooks: Iterable[Path]) -> str:
    """Per chapter, its last wall time at every scale from the status records on this machine."""
    status = {s: {f"{r['paper']}__{r['notebook']}": r for r in read_status(s)} for s in SCALES}
    rows = []
    for nb in notebooks:
        nb = Path(nb)
        paper, stem = nb.parent.name, nb.stem
        if not in_book(paper, stem):
            continue
        cells = []
        for s in SCALES:
            st = status[s].get(f"{paper}__{stem}")
            if st is None:
                cells.append('<td class="sgdbook-muted">not run here</td>')
            elif st.get("ok"):
                cells.append(f"<td>{fmt_seconds(st['seconds'])} on {_e(st.get('device', '?'))}</td>")
            else:
                cells.append(f'<td class="sgdbook-failed">failed after {fmt_seconds(st.get("seconds", 0))}</td>')
        rows.append(
            f'<tr><td><a href="{paper}/{stem}.html">{title_html(notebook_title(paper, stem))}</a>'
            f"<br><code>{_e(nb.as_posix())}</code></td>{''.join(cells)}</tr>"
        )
    head = "".join(f"<th>{_e(s)}</th>" for s in SCALES)
    return _html_block(
        '<div class="sgdbook-fit"><table class="sgdbook-rerun" id="rerun-times">'
        '<colgroup><col>' + '<col class="sgdbook-col-time">' * len(SCALES) + "</colgroup>"
        f"<thead><tr><th>chapter (notebook)</th>{head}</tr></thead><tbody>" + "\n".join(rows) + "</tbody></table></div>"
    )
