"""The reader's page: parameters merged, progress bars out, the chapter's opening line and
closing rerun section, stub pages for chapters not run at a scale, and the staging step."""

import json
import os

from sgdbook.book import pipeline, staging
from sgdbook.book.progress import enabled, progress


def _nb(cells, minor=5):
    return {"nbformat": 4, "nbformat_minor": minor, "metadata": {}, "cells": cells}


def _code(src, tags=(), outputs=()):
    return {"cell_type": "code", "metadata": {"tags": list(tags)}, "source": src, "outputs": list(outputs),
            "execution_count": 1}


def _md(src):
    return {"cell_type": "markdown", "metadata": {}, "source": src}


def _stderr(text):
    return {"output_type": "stream", "name": "stderr", "text": text}


def test_injected_parameters_fold_into_the_parameters_cell():
    nb = _nb([
        _md("# Title\n\nclaim"),
        _code('scale = "book"\nseed = 0\ndevice = "auto"  # auto picks CUDA', tags=["parameters"]),
        _code('# Parameters\nscale = "smoke"\ndevice = "cpu"\nextra = 3\n', tags=["injected-parameters"]),
        _code("x = 1"),
    ])
    out = staging.merge_parameters(nb)
    assert len(out["cells"]) == 3 and not any("injected-parameters" in c["metadata"].get("tags", []) for c in out["cells"])
    src = out["cells"][1]["source"]
    assert 'scale = "smoke"  # this run\'s value (the notebook\'s default: "book")' in src
    assert "seed = 0\n" in src and 'device = "cpu"' in src and "extra = 3  # set by this run" in src
    assert nb["cells"][1]["source"].startswith('scale = "book"')  # the input is not changed


def test_injected_cell_without_a_parameters_cell_becomes_it():
    nb = _nb([_code('# Parameters\nscale = "smoke"\n', tags=["injected-parameters"]), _code("x = 1")])
    out = staging.merge_parameters(nb)
    assert out["cells"][0]["metadata"]["tags"] == ["parameters"] and out["cells"][0]["source"] == 'scale = "smoke"'
    assert staging.merge_parameters(_nb([_code("x = 1")])) == _nb([_code("x = 1")])


def test_progress_bars_are_stripped_and_warnings_kept():
    bar = "\rFigure 2(a):   0%|          | 0/4 [00:00<?, ?it/s]\rFigure 2(a): 100%|##########| 4/4 [00:00<00:00,  6.12it/s]"
    nb = _nb([_code("run()", outputs=[
        _stderr(bar), _stderr("\n"),
        _stderr("/x.py:22: UserWarning: something real\n" + bar + "\n"),
        {"output_type": "stream", "name": "stdout", "text": "result 3\n"},
        {"output_type": "display_data", "metadata": {},
         "data": {"application/vnd.jupyter.widget-view+json": {"model_id": "a"}, "text/plain": "  0%|  | 0/3"}},
        _stderr("  5%|5         | 1/20 [00:01<00:19,  1.00s/it]"),
    ])])
    outs = staging.strip_progress(nb)["cells"][0]["outputs"]
    assert [o.get("name") for o in outs] == ["stderr", "stdout"]
    assert "UserWarning: something real" in outs[0]["text"] and "%|" not in outs[0]["text"]
    assert outs[1]["text"] == "result 3\n"


def test_progress_helper_is_silent_in_the_pipeline(monkeypatch, capsys):
    monkeypatch.setenv("SGDBOOK_PROGRESS", "off")
    assert not enabled()
    assert list(progress(range(3), desc="loop", mininterval=0)) == [0, 1, 2]
    assert "loop" not in capsys.readouterr().err
    monkeypatch.setenv("SGDBOOK_PROGRESS", "on")
    assert enabled()


def test_page_info_and_rerun_section():
    nb = _nb([_md("# T\n\nclaim"), _code("x", tags=["parameters"]), _md("## end")])
    st = {"device": "cpu", "seconds": 12.3, "finished": "2026-01-01 00:00:00"}
    out = staging.add_page_info(nb, folder="vmf-directional", stem="01_kappa_bias", scale="smoke", status=st,
                                is_paper=True, notebook_download="_files/01_kappa_bias.ipynb",
                                ledger_download="_files/01_kappa_bias.ledger.json")
    cells = out["cells"]
    assert cells[1]["id"] == "sgdbook-pageinfo" and cells[-1]["id"] == "sgdbook-rerun"
    info, closing = cells[1]["source"], cells[-1]["source"]
    assert "Ran at scale <b>smoke</b> on cpu in 12 s" in info
    assert '../notation.html#notation-vmf-directional' in info and "../scorecard.html#scorecard-vmf-directional" in info
    assert "../status.html#status-vmf-directional-01_kappa_bias" in info
    assert "make chapter NB=book/vmf-directional/01_kappa_bias.ipynb SCALE=book DEVICE=auto" in closing
    assert "{download}`the executed notebook <_files/01_kappa_bias.ipynb>`" in closing
    assert "<_files/01_kappa_bias.ledger.json>" in closing
    # nbformat 4.4 has no cell ids; the appendix has no scorecard section
    old = staging.add_page_info(_nb([_md("# T")], minor=4), folder="appendix", stem="performance", scale="book",
                                status=None, is_paper=False, notebook_download="_files/performance.ipynb",
                                ledger_download=None)
    assert all("id" not in c for c in old["cells"]) and "scorecard" not in old["cells"][1]["source"]
    assert "ledger records" not in old["cells"][-1]["source"]


def test_insert_after_title_and_stub_page():
    assert staging.insert_after_title("# A\n\ntext\n", "BLOCK") == "# A\n\nBLOCK\n\ntext\n"
    assert staging.insert_after_title("no title\n", "BLOCK") == "BLOCK\n\nno title\n"
    stub = staging.stub_page("The $b$ chapter", "vmf-directional", "01_kappa_bias", "paper")
    assert stub.startswith("# The $b$ chapter") and "make chapter NB=book/vmf-directional/01_kappa_bias.ipynb SCALE=paper" in stub


def test_stage_partial_book(tmp_path, monkeypatch):
    """One executed chapter: its reader's page and downloads; the others as stub pages."""
    monkeypatch.setenv("SGDBOOK_BUILD", str(tmp_path))
    rel = "book/vmf-directional/01_kappa_bias.ipynb"
    executed = tmp_path / "executed" / "smoke"
    (executed / rel).parent.mkdir(parents=True)
    nb = _nb([_md("# The bias\n\nclaim"), _code('scale = "book"', tags=["parameters"]),
              _code('# Parameters\nscale = "smoke"\n', tags=["injected-parameters"])])
    (executed / rel).write_text(json.dumps(nb))
    for kind in ("ledger", "status"):
        (tmp_path / kind / "smoke").mkdir(parents=True)
    (tmp_path / "ledger" / "smoke" / "vmf-directional__01_kappa_bias.json").write_text("[]")
    (tmp_path / "status" / "smoke" / "vmf-directional__01_kappa_bias.json").write_text(json.dumps(
        {"paper": "vmf-directional", "notebook": "01_kappa_bias", "scale": "smoke", "device": "cpu", "seconds": 1.0,
         "ok": True, "state": "finished", "started": 0.0, "error": "", "finished": "x"}))
    dest = pipeline.stage("smoke", executed, partial=True)
    staged = json.loads((dest / rel).read_text())
    assert [c["source"] for c in staged["cells"] if "parameters" in c["metadata"].get("tags", [])] == [
        'scale = "smoke"  # this run\'s value (the notebook\'s default: "book")']
    assert (dest / "book/vmf-directional/_files/01_kappa_bias.ipynb").read_text() == (executed / rel).read_text()
    assert (dest / "book/vmf-directional/_files/01_kappa_bias.ledger.json").is_file()
    stub = json.loads((dest / "book/vmf-directional/02_norms_and_angles.ipynb").read_text())
    assert stub["cells"][0]["source"].startswith("# ") and "has not been executed at scale **smoke**" in stub["cells"][0]["source"]
    assert "```{include} ../_generated/summary-vmf-directional.md" in (dest / "book/vmf-directional/index.md").read_text()
    assert (dest / "_static/sgdbook.css").is_file() and not (dest / "book/_static").exists()
    gen = {p.name for p in (dest / "book/_generated").glob("*.md")}
    assert {"scorecard.md", "status.md", "errata.md", "papers.md", "verdicts.md", "rerun.md",
            "summary-vmf-directional.md"} <= gen
    # a second stage with nothing changed rewrites nothing (jupyter-book then rebuilds no page)
    mtimes = {p: p.stat().st_mtime_ns for p in dest.rglob("*") if p.is_file()}
    os.utime(dest / rel, ns=(1, 1))
    mtimes[dest / rel] = 1
    pipeline.stage("smoke", executed, partial=True)
    assert {p: p.stat().st_mtime_ns for p in dest.rglob("*") if p.is_file()} == mtimes
    # the chapter executed later replaces its stub
    (executed / "book/vmf-directional/02_norms_and_angles.ipynb").write_text(json.dumps(_nb([_md("# N")])))
    pipeline.stage("smoke", executed, partial=True)
    page = json.loads((dest / "book/vmf-directional/02_norms_and_angles.ipynb").read_text())
    assert page["cells"][0]["source"] == "# N" and len(page["cells"]) == 3
    # the built page of a chapter that no longer exists goes; the others stay
    html = dest / "_build/html/book/vmf-directional"
    html.mkdir(parents=True)
    for name in ("04_training_dynamics.html", "02_norms_and_angles.html", "index.html"):
        (html / name).write_text("<html></html>")
    pipeline.stage("smoke", executed, partial=True)
    assert sorted(p.name for p in html.iterdir()) == ["02_norms_and_angles.html", "index.html"]
