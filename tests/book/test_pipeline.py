"""The pipeline's and the Makefile's answers to bad input: an unknown scale, CUDA without CUDA,
a notebook run at an unknown scale."""

import runpy
import subprocess
import sys
import warnings

import pytest

from sgdbook.book import pipeline
from sgdbook.book.paths import ROOT


def test_make_rejects_an_unknown_scale():
    res = subprocess.run(["make", "-n", "book", "SCALE=bogus"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode != 0
    assert "unknown SCALE 'bogus': valid scales are smoke book paper" in res.stderr



def test_pipeline_check_rejects_bad_scale_and_missing_cuda(capsys, monkeypatch):
    # the command line `python -m sgdbook.book.pipeline check ...`, its __main__ run in this process:
    # the exit status and the message
    monkeypatch.setattr(sys, "argv", ["pipeline", "check", "--scale", "huge"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # runpy: the module is already imported
        with pytest.raises(SystemExit) as stop:
            runpy.run_module("sgdbook.book.pipeline", run_name="__main__")
    assert stop.value.code == 2 and "valid scales are smoke, book, paper" in capsys.readouterr().err
    import torch

    if not torch.cuda.is_available():
        assert pipeline.main(["check", "--scale", "smoke", "--device", "cuda"]) == 2
        assert "no usable CUDA device" in capsys.readouterr().err


@pytest.mark.slow
def test_a_notebook_with_an_unknown_scale_fails_at_once(tmp_path):
    import papermill

    nb = ROOT / "book" / "vmf-directional" / "01_kappa_bias.ipynb"
    with pytest.raises(papermill.PapermillExecutionError, match="valid scales are smoke, book, paper"):
        papermill.execute_notebook(str(nb), str(tmp_path / "out.ipynb"), parameters={"scale": "bogus"},
                                   cwd=str(nb.parent), progress_bar=False, kernel_name="python3")


@pytest.mark.parametrize(
    "makeflags, cores, threads",
    [("", 2, None), (" -j2 --jobserver-auth=3,4", 2, 1), (" -j4 --jobserver-auth=3,4", 16, 4), ("s -j1", 2, None),
     (" -j", 8, 1), ("k -j3", 2, 1), ("--no-print-directory", 2, None)],
)
def test_kernels_share_the_cores_under_make_j(makeflags, cores, threads):
    assert pipeline.kernel_threads(makeflags, cores) == threads


def test_make_jobs_reads_how_many_run_at_once():
    assert [pipeline.make_jobs(f) for f in ("", " -j2 --jobserver-auth=3,4", "k -j3", " -j", "s -j1", "-jx")] == [1, 2, 3, 0, 1, 1]


def test_kernel_env_shares_threads_and_workers_and_keeps_the_users_settings():
    j2 = " -j2 --jobserver-auth=3,4"
    assert pipeline.kernel_env("", 2, {}) == {}
    assert pipeline.kernel_env(j2, 2, {}) == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "SGDBOOK_WORKERS": "1"}
    assert pipeline.kernel_env(j2, 8, {"OMP_NUM_THREADS": "3"}) == {"SGDBOOK_WORKERS": "4"}
    assert pipeline.kernel_env(j2, 8, {"SGDBOOK_WORKERS": "2"}) == {"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4"}


def test_papermill_warning_about_the_pipelines_own_parameter_is_dropped():
    import logging

    def record(msg):
        return logging.LogRecord("papermill", logging.WARNING, __file__, 1, msg, None, None)

    assert not pipeline._quiet_own_parameter(record("Passed unknown parameter: sgdbook_notebook"))
    assert pipeline._quiet_own_parameter(record("Passed unknown parameter: scael"))  # a user's typo still shows


def test_build_order_is_longest_first_and_covers_every_chapter(tmp_path, monkeypatch):
    import json
    import os

    from sgdbook.book import order

    sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "book").rglob("*.ipynb") if ".ipynb_checkpoints" not in str(p))
    committed = json.loads(order.DEFAULTS.read_text())
    missing = [s for s in sources if order.key(s) not in committed]
    assert not missing, f"no committed book-scale time in {order.DEFAULTS.name} for {missing}: add the measured seconds"
    # the Makefile starts the chapters in that order (the performance appendix first, alone)
    env = {**os.environ, "SGDBOOK_BUILD": str(tmp_path / "none")}  # no measurements: the committed times
    res = subprocess.run(["make", "-n", "-B", "-j2", "SCALE=book", "DEVICE=cpu", "execute"], cwd=ROOT, capture_output=True,
                         text=True, env=env)  # -B: every chapter, up to date or not
    started = [ln.split(" execute ")[1].split()[0] for ln in res.stdout.splitlines() if "pipeline execute" in ln]
    assert len(started) == len(sources), res.stdout[-2000:]
    monkeypatch.setenv("SGDBOOK_BUILD", str(tmp_path / "none"))
    timed = "book/appendix/performance.ipynb"
    expected = [timed] + [s for s in order.longest_first(sources, "book") if s != timed]
    assert started == [s for s in expected if s in started]
    # measured times of this scale over book's over the committed ones; unmeasured first
    monkeypatch.setenv("SGDBOOK_BUILD", str(tmp_path))
    a, b, c, new = "book/p/a.ipynb", "book/p/b.ipynb", "book/p/c.ipynb", "book/p/new.ipynb"
    monkeypatch.setattr(order, "DEFAULTS", tmp_path / "defaults.json")
    order.DEFAULTS.write_text(json.dumps({"p__a": 10, "p__b": 20, "p__c": 30}))
    assert order.longest_first([a, b, c, new], "smoke") == [new, c, b, a]
    for scale, k, s in (("book", "p__a", 50), ("smoke", "p__c", 1), ("smoke", "p__b", 5)):
        (tmp_path / "status" / scale).mkdir(parents=True, exist_ok=True)
        (tmp_path / "status" / scale / f"{k}.json").write_text(json.dumps({"state": "finished", "ok": True, "seconds": s}))
    (tmp_path / "status" / "smoke" / "p__new.json").write_text(json.dumps({"state": "running", "seconds": None}))
    (tmp_path / "status" / "book" / "p__b.json").write_text(json.dumps({"state": "finished", "ok": False, "seconds": 1}))
    (tmp_path / "status" / "book" / "p__c.json").write_text("[1, 2]")  # not a status record: ignored
    assert order.longest_first([a, b, c, new], "smoke") == [new, a, b, c]
    assert order.longest_first([a, b, c], "book") == [a, c, b]
