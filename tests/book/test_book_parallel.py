"""`make -j N book` runs independent notebooks at once: each writes its own executed copy, its
own status record and its own ledger file, none clobbers another's, and a rerun replaces (never
merges with) the last run's records. Two tiny notebooks of a made-up paper, run by the real
Makefile with `make -j 2 execute` in a scratch folder."""

import json
import os
import shutil
import subprocess
import time

import pytest

from sgdbook.book.paths import ROOT


def _notebook(stem: str, item: str) -> dict:
    code = (
        "import time\n"
        "from sgdbook.book.ledger import Ledger\n"
        f'led = Ledger("fakepaper", "{stem}", scale, device)\n'
        "time.sleep(1.0)\n"
        f'led.record("{item}", "reproduced", "a criterion", {{"stem": "{stem}"}})\n'
        "print('recorded')\n"
    )
    cells = [
        {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": 'scale = "book"\ndevice = "auto"',
         "outputs": [], "execution_count": None, "id": "params"},
        {"cell_type": "code", "metadata": {}, "source": code, "outputs": [], "execution_count": None, "id": "run"},
    ]
    return {"nbformat": 4, "nbformat_minor": 5, "cells": cells,
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}}


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_j2_keeps_each_notebooks_records(tmp_path):
    (tmp_path / "papers" / "fakepaper").mkdir(parents=True)
    (tmp_path / "papers" / "fakepaper" / "claims.yaml").write_text(
        "paper: fakepaper\ntitle: A made-up paper\nitems:\n"
        + "".join(f"  - {{id: {i}, kind: claim, section: '1', summary: s, check: qualitative}}\n" for i in ("x1", "x2", "x3"))
    )
    book = tmp_path / "book" / "fakepaper"
    book.mkdir(parents=True)
    (book / "01_a.ipynb").write_text(json.dumps(_notebook("01_a", "x1")))
    (book / "02_b.ipynb").write_text(json.dumps(_notebook("02_b", "x2")))
    (tmp_path / "pyproject.toml").write_text("")  # the Makefile's install stamp depends on it
    os.utime(tmp_path / "pyproject.toml", (0, 0))
    build = tmp_path / "_build"
    stale = build / "ledger" / "smoke" / "fakepaper__02_b.json"  # left by an earlier run of 02_b
    stale.parent.mkdir(parents=True)
    stale.write_text(json.dumps([{"paper": "fakepaper", "id": "x3", "verdict": "reproduced"}]))
    env = {**os.environ, "SGDBOOK_BUILD": str(build), "SGDBOOK_PAPERS": str(tmp_path / "papers")}
    cmd = ["make", "-C", str(tmp_path), "-f", str(ROOT / "Makefile"), "-j", "2", "--no-print-directory",
           "SCALE=smoke", "DEVICE=cpu", f"VENV={ROOT / '.venv'}", "execute"]
    t = time.perf_counter()
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    status = {s: json.loads((build / "status" / "smoke" / f"fakepaper__{s}.json").read_text()) for s in ("01_a", "02_b")}
    ledger = {s: json.loads((build / "ledger" / "smoke" / f"fakepaper__{s}.json").read_text()) for s in ("01_a", "02_b")}
    assert all(st["ok"] and st["state"] == "finished" for st in status.values())
    assert [r["id"] for r in ledger["01_a"]] == ["x1"] and [r["id"] for r in ledger["02_b"]] == ["x2"]
    assert ledger["01_a"][0]["evidence"] == {"stem": "01_a"} and ledger["02_b"][0]["evidence"] == {"stem": "02_b"}
    for s in ("01_a", "02_b"):
        executed = build.parent / "_build" / "executed" / "smoke" / "book" / "fakepaper" / f"{s}.ipynb"
        nb = json.loads(executed.read_text())
        assert any("recorded" in "".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))
    # the two runs overlapped in time (make ran them at once) and left no temporary file behind
    (a0, a1), (b0, b1) = [(st["started"], st["started"] + st["seconds"]) for st in status.values()]
    assert a0 < b1 and b0 < a1, (status, time.perf_counter() - t)
    leftovers = [p for p in build.rglob("*") if p.name.endswith(".tmp") or ".running." in p.name or ".failed." in p.name]
    assert leftovers == []
