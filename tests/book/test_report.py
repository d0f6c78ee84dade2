"""The generated pages (sgdbook.book.report): scorecard and status from ledger and status files,
Markdown escaping. (tests/book/test_book_report.py has the rest.)"""

import json


from sgdbook.book import ledger as lg
from sgdbook.book import report


def test_scorecard_and_status_pages(build):
    # a notebook that exists in the sources and whose run finished cleanly (tests/book/ has the rest)
    led = lg.Ledger("vmf-directional", "01_kappa_bias", "book", "cpu")
    led.record("table1", "erratum", "c | with a pipe <b>", {"p": 0.25})
    status = build / "status" / "book"
    status.mkdir(parents=True)
    (status / "vmf-directional__01_kappa_bias.json").write_text(json.dumps(dict(
        paper="vmf-directional", notebook="01_kappa_bias", scale="book", device="cpu", seconds=3.0, ok=True,
        error="", finished="2026-01-01 00:00:00")))
    md = report.scorecard_markdown("book")
    assert 'data-sgdbook-item="vmf-directional:table1" data-verdict="erratum"' in md
    assert "c | with a pipe &lt;b&gt;" in md
    assert md.count('data-state="not-yet-covered"') == sum(len(lg.load_claims(p)) for p in lg.papers()) - 1
    st = report.status_markdown("book")
    assert "ran cleanly" in st and "vmf-directional/01_kappa_bias" in st


def test_md_escape_neutralises_markdown_and_math():
    assert report.md_escape("a_b | $x$ *y*") == "a\\_b \\| \\$x\\$ \\*y\\*"
