"""What the generated pages may be trusted for: only the ledger files of notebooks in the
sources whose last run at that scale finished cleanly; everything else is flagged, never shown
as a verdict. And the pages themselves: scorecard, status, errata, summaries, rerun times."""

import json
import re
import time

import pytest

from sgdbook.book import ledger as lg
from sgdbook.book import report

NB = "01_kappa_bias"  # a notebook that exists in the sources
PAPER = "vmf-directional"


def _status(build, notebook, ok=True, state="finished", started=None, scale="smoke", seconds=12.0, device="cpu"):
    folder = build / "status" / scale
    folder.mkdir(parents=True, exist_ok=True)
    st = {"paper": PAPER, "notebook": notebook, "scale": scale, "device": device, "seconds": seconds, "ok": ok,
          "state": state, "started": time.time() - 60 if started is None else started, "error": "" if ok else "boom",
          "finished": "2026-01-01 00:00:00"}
    (folder / f"{PAPER}__{notebook}.json").write_text(json.dumps(st))


def _record(notebook, *items, scale="smoke"):
    led = lg.Ledger(PAPER, notebook, scale, "cpu")
    for item_id, verdict, extra in items:
        led.record(item_id, verdict, "a criterion fixed before the run", {"z": 1.5, "n": 4}, **extra)
    return led.path


def _row(md, item_id):
    m = re.search(rf'<tr class="sgdbook-item"[^>]*data-sgdbook-item="{PAPER}:{item_id}"[^>]*>.*?</tr>', md, re.S)
    assert m, item_id
    return m.group(0)


def test_a_clean_run_is_trusted_and_linked_to_its_chapter(build):
    _status(build, NB)
    _record(NB, ("table1", "reproduced", {}), ("fig8", "inconclusive", {"why": "this scale: 3 runs", "decide": "40 runs"}))
    coll = report.collect("smoke")
    assert [r["id"] for r in coll.trusted] == ["table1", "fig8"] and not coll.flagged
    assert report.expected_records("smoke") == [
        {"paper": PAPER, "id": "table1", "verdict": "reproduced"}, {"paper": PAPER, "id": "fig8", "verdict": "inconclusive"}]
    md = report.scorecard_markdown("smoke")
    row = _row(md, "table1")
    assert 'data-verdict="reproduced"' in row and 'class="sgdbook-verdict sgdbook-v-reproduced"' in row
    assert f'href="{PAPER}/{NB}.html#verdict-table1"' in row and "<details" in row and "criterion fixed" in row
    fig8 = _row(md, "fig8")
    assert "What would decide it" in fig8 and "40 runs" in fig8 and "this scale: 3 runs" in fig8
    # every other item is "not yet covered"; the counts include inconclusive
    assert md.count('data-state="not-yet-covered"') == sum(len(lg.load_claims(p)) for p in lg.papers()) - 2
    assert '1 <span class="sgdbook-verdict sgdbook-v-inconclusive">inconclusive</span>' in md
    for block in re.findall(r'<div class="sgdbook-fit.*?</table></div>', md, re.S):
        assert "\n\n" not in block  # a blank line would end MyST's raw HTML block


@pytest.mark.parametrize(
    "case, reason",
    [
        ("failed", "the last run failed"),
        ("running", "did not finish"),
        ("removed", "not in the sources"),
        ("no-status", "no status record"),
        ("stale", "stale"),
        ("not-in-toc", "not in the book's table of contents"),
    ],
)
def test_untrusted_records_are_flagged_never_shown(build, case, reason, monkeypatch):
    notebook = "99_removed_chapter" if case == "removed" else NB
    if case == "not-in-toc":  # in the sources, but no page of the book
        monkeypatch.setattr(report, "toc_files", lambda: set())
    path = _record(notebook, ("table1", "reproduced", {}), ("lemma1", "erratum", {"why": "printed derivative wrong"}))
    if case == "failed":
        _status(build, notebook, ok=False)
    elif case == "running":
        _status(build, notebook, ok=None, state="running")
    elif case in ("removed", "stale", "not-in-toc"):
        _status(build, notebook, started=time.time() + (3600 if case == "stale" else -60))
    coll = report.collect("smoke")
    assert coll.trusted == [] and report.expected_records("smoke") == []
    assert len(coll.flagged) == 1 and reason in coll.flagged[0].problem
    md = report.scorecard_markdown("smoke")
    row = _row(md, "table1")
    assert 'data-state="flagged"' in row and "data-verdict" not in row and report._e(reason) in row
    assert "reproduced" not in row
    status = report.status_markdown("smoke")
    assert "Records not shown" in status and f"`{path.name}`" in status
    errata = report.errata_markdown("smoke")
    assert "lemma1" not in errata and "No erratum is recorded" in errata


def test_invalid_records_are_flagged(build):
    _status(build, NB)
    folder = build / "ledger" / "smoke"
    folder.mkdir(parents=True)
    rec = dict(paper=PAPER, id="table1", verdict="looks-fine", criterion="c", evidence={}, scale="smoke",
               device="cpu", seconds=1.0, notebook=NB)
    (folder / f"{PAPER}__{NB}.json").write_text(json.dumps([rec]))
    coll = report.collect("smoke")
    assert coll.trusted == [] and "unknown verdict" in coll.flagged[0].problem


def test_errata_page_from_the_ledger(build):
    _status(build, NB)
    _record(NB, ("lemma1", "erratum", {"why": "the printed derivative is off by d(1 - r^2); the correct one holds"}))
    md = report.errata_markdown("smoke")
    claims = lg.load_claims(PAPER)
    assert "1 errata recorded" in md and f"(errata-{PAPER})=" in md
    card = re.search(r'<div class="sgdbook-erratum.*?</div>', md, re.S).group(0)
    assert report._e(claims["lemma1"]["summary"]) in card  # the statement as printed
    assert "off by d(1 - r^2)" in card and "a criterion fixed before the run" in card
    assert "<code>z</code> = 1.5" in card and f'href="{PAPER}/{NB}.html#verdict-lemma1"' in card


def test_status_summary_and_rerun_pages(build):
    _status(build, NB, seconds=75.0)
    _status(build, NB, scale="book", seconds=150.0)
    _status(build, "02_norms_and_angles", ok=False)
    _record(NB, ("table1", "not-reproduced", {"why": "the paper: its Table 1 is off"}))
    st = report.status_markdown("smoke")
    assert st.startswith("Scale: **smoke**. 2 notebooks executed with papermill; 1 ran cleanly.")
    assert f'id="status-{PAPER}-{NB}"' in st and "ran cleanly" in st and "boom" in st and "75 s" in st
    summary = report.paper_summary_markdown(PAPER, "smoke")
    assert f'data-sgdbook-summary="{PAPER}"' in summary and f'href="{NB}.html"' in summary
    assert "1 <span class=\"sgdbook-verdict sgdbook-v-not-reproduced\">not-reproduced</span>" in summary
    papers = report.papers_markdown("smoke")
    assert all(f'data-sgdbook-paper="{p}"' in papers for p in lg.papers())
    rerun = report.rerun_markdown([f"book/{PAPER}/{NB}.ipynb", f"book/{PAPER}/02_norms_and_angles.ipynb"])
    assert "75 s on cpu" in rerun and "2.5 min on cpu" in rerun and "not run here" in rerun and "failed after" in rerun
    verdicts = report.verdicts_markdown()
    assert all(f"sgdbook-v-{v}" in verdicts for v in lg.VERDICTS)


def test_titles_keep_their_math_for_mathjax():
    assert report.title_html("at $b=32$ & <x>") == (
        'at <span class="math notranslate nohighlight">\\(b=32\\)</span> &amp; &lt;x&gt;')
    assert report.short_claim("word " * 40).endswith(" …") and len(report.short_claim("word " * 40)) < 115


def test_only_runs_whose_executed_copy_the_book_shows(build):
    """A run executed elsewhere (e.g. `--out /tmp/x.ipynb`) has no page in this book."""
    executed = build / "executed" / "smoke"
    copy = executed / "book" / PAPER / f"{NB}.ipynb"
    _status(build, NB)
    _record(NB, ("table1", "reproduced", {}))
    assert "no executed copy" in report.collect("smoke", executed).flagged[0].problem
    copy.parent.mkdir(parents=True)
    copy.write_text("{}")
    st_path = build / "status" / "smoke" / f"{PAPER}__{NB}.json"
    st = json.loads(st_path.read_text())
    st_path.write_text(json.dumps({**st, "out": str(build / "elsewhere.ipynb")}))
    assert "elsewhere" in report.collect("smoke", executed).flagged[0].problem
    st_path.write_text(json.dumps({**st, "out": str(copy)}))
    assert [r["id"] for r in report.collect("smoke", executed).trusted] == ["table1"]
    assert report.expected_records("smoke", executed) == [{"paper": PAPER, "id": "table1", "verdict": "reproduced"}]
    assert "elsewhere" not in report.scorecard_markdown("smoke", executed)


def test_status_page_times_the_build_and_marks_notebooks_over_the_budget(build):
    t0 = 1_000_000.0
    _status(build, NB, scale="book", seconds=400.0, started=t0)
    _status(build, "02_norms_and_angles", scale="book", seconds=100.0, started=t0 + 350.0)
    st = report.status_markdown("book")  # one build: the first start to the last end, 450 s
    assert "ran in one build: **7.5 min** from the first start" in st and "add up to 8.3 min" in st
    assert "within it, 1 notebook over 5.0 min" in st and st.count('(over 5.0 min)</span>') == 1
    assert "budget" not in report.status_markdown("smoke")
    _status(build, "02_norms_and_angles", scale="book", seconds=100.0, started=t0 + 400.0 + report.BUILD_GAP_S + 1)
    st = report.status_markdown("book")  # rerun later: the sum, and the last build's own time
    assert "one after another: **8.3 min**" in st and "ran at different times" not in st  # a build of one is no build


def test_status_page_says_how_many_ran_at_once_and_on_how_many_threads(build):
    for nb, t in ((NB, 0.0), ("02_norms_and_angles", 10.0), ("03_vmf_theory", 20.0)):
        _status(build, nb, scale="book", seconds=3400.0 if nb == NB else 60.0, started=1e6 + t)
        path = build / "status" / "book" / f"{PAPER}__{nb}.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "at_once": 2, "threads": 1, "cores": 2}))
    st = report.status_markdown("book")
    assert "ran in one build, 2 at a time: **56.7 min**" in st and "within it" in st
    assert "(over 5.0 min, run beside others on 1 of 2 cores)" in st and "cpu, 1 thread<" in st
    path = build / "status" / "book" / f"{PAPER}__03_vmf_theory.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "at_once": 1, "threads": 2}))  # e.g. the appendix
    assert "ran in one build, 2 at a time (1 of them alone)" in report.status_markdown("book")


def test_build_span_groups_runs_that_follow_each_other():
    runs = [{"started": 0, "seconds": 100}, {"started": 50, "seconds": 100}, {"started": 150 + report.BUILD_GAP_S, "seconds": 10}]
    assert report.build_span(runs[:2]) == (150.0, 2)
    assert report.build_span(runs) == (160.0 + report.BUILD_GAP_S, 3)  # within the gap: the same build
    runs[2]["started"] += 1
    assert report.build_span(runs) == (10.0, 1)  # past it: a later build of its own
    assert report.build_span([{"started": 0, "seconds": 0}]) is None
