"""The claims ledger (sgdbook.book.ledger): records as plain JSON, validation of ids, verdicts and
criteria, coverage of every checklist."""

import json

import pytest

from sgdbook.book import ledger as lg


def test_record_writes_plain_json(build):
    import numpy as np

    led = lg.Ledger("vmf-directional", "01_test", "smoke", "cpu")
    led.record("table1", "reproduced", "a stated criterion", {"p": np.float64(0.5), "z": np.array([1.0, 2.0]), "n": np.int64(3)})
    path = build / "ledger" / "smoke" / "vmf-directional__01_test.json"
    recs = json.loads(path.read_text())
    assert len(recs) == 1
    rec = recs[0]
    assert set(rec) == {"paper", "id", "verdict", "criterion", "evidence", "scale", "device", "seconds", "notebook",
                        "basis", "why", "decide", "pilot"}
    assert rec["evidence"] == {"p": 0.5, "z": [1.0, 2.0], "n": 3}
    assert rec["scale"] == "smoke" and rec["device"] == "cpu" and rec["notebook"] == "01_test"
    assert "reproduced" in led.box("table1").data


def test_record_rejects_unknown_id_verdict_and_empty_criterion(build):
    led = lg.Ledger("vmf-directional", "01_test", "smoke", "cpu")
    with pytest.raises(lg.LedgerError, match="not an item"):
        led.record("thm99", "reproduced", "c", {})
    with pytest.raises(lg.LedgerError, match="unknown verdict"):
        led.record("table1", "looks-fine", "c", {})
    with pytest.raises(lg.LedgerError, match="criterion"):
        led.record("table1", "reproduced", "  ", {})
    with pytest.raises(lg.LedgerError, match="not a number"):
        led.record("table1", "reproduced", "c", {"x": object()})


def test_inconclusive_needs_why_and_what_would_decide_it(build):
    led = lg.Ledger("vmf-directional", "01_test", "smoke", "cpu")
    with pytest.raises(lg.LedgerError, match="why"):
        led.record("table1", "inconclusive", "c", {}, decide="more seeds")
    with pytest.raises(lg.LedgerError, match="decide"):
        led.record("table1", "inconclusive", "c", {}, why="4 seeds cannot resolve a 5 % effect")
    with pytest.raises(lg.LedgerError, match="basis"):
        led.record("table1", "reproduced", "c", {}, basis="vibes")
    rec = led.record("table1", "inconclusive", "c", {"n": 4}, why="this scale: 4 seeds", decide="16 seeds")
    assert rec.why and rec.decide
    box = led.box("table1").data
    assert "What would decide it" in box and "16 seeds" in box
    assert lg.validate(lg.read_records("smoke")) == []
    # an old record without the optional fields still validates; an inconclusive one without `decide` does not
    old = [{"paper": "vmf-directional", "id": "fig8", "verdict": "reproduced", "criterion": "c", "evidence": {},
            "scale": "smoke", "device": "cpu", "seconds": 0.0, "notebook": "x"}]
    assert lg.validate(old) == []
    bad = [dict(old[0], verdict="inconclusive", why="w")]
    assert any("decide" in p for p in lg.validate(bad))


def test_unknown_scale_and_paper():
    with pytest.raises(ValueError, match="valid scales are smoke, book, paper"):
        lg.Ledger("vmf-directional", "x", "huge", "cpu")
    with pytest.raises(lg.LedgerError, match="no claims checklist"):
        lg.Ledger("no-such-paper", "x", "smoke", "cpu")


def test_validate_and_coverage_catch_bad_files(build, capsys):
    folder = build / "ledger" / "smoke"
    folder.mkdir(parents=True)
    good = dict(paper="vmf-directional", id="fig8", verdict="reproduced", criterion="c", evidence={},
                scale="smoke", device="cpu", seconds=1.0, notebook="n")
    (folder / "a.json").write_text(json.dumps([good, dict(good, id="made-up"), dict(good, id="fig1", verdict="fine")]))
    recs = lg.read_records("smoke")
    problems = lg.validate(recs)
    assert any("'made-up' is not in vmf-directional/claims.yaml" in p for p in problems)
    assert any("unknown verdict 'fine'" in p for p in problems)
    cov = lg.coverage(recs)
    done, total, missing = cov["vmf-directional"]
    assert total == len(lg.load_claims("vmf-directional")) and "fig8" not in missing
    assert lg.main(["--scale", "smoke"]) == 1
    out = capsys.readouterr().out
    assert "not yet covered" in out and "ERROR" in out


def test_ledger_check_fails_without_records(build):
    assert lg.main(["--scale", "smoke"]) == 1


def test_every_paper_has_a_checklist():
    assert lg.papers() == ["batch-size-variance", "hessian-sgd", "vmf-directional", "walk-with-sgd"]
