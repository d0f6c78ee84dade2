"""The notebook pipeline behind ``make book`` and ``make test``.

``execute``: run one source notebook with papermill at a scale and device into the build
folder, never into the sources, and write a status record (scale, device, wall time,
whether it ran cleanly; "running" while it runs). The notebook's earlier ledger file is removed
first, so that its records always come from its last run; progress bars are turned off. Every
file a run writes is its own (``<paper>__<notebook>``), so ``make -j`` runs notebooks at once;
under ``make -j N`` each notebook's kernel gets ``cores // N`` threads (see :func:`kernel_threads`).
``stage``: assemble the book (configuration, pages, the reader's notebooks, the generated
scorecard, status, errata and summaries) in ``_build/stage/<scale>`` for jupyter-book to build.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
import traceback
from pathlib import Path

from .device import DeviceError, resolve_device
from .paths import ROOT, build_dir
from ..parallel import WORKERS_ENV, usable_cores
from .progress import PROGRESS_ENV
from .scales import ScaleError, check_scale

BOOK_FILES = ("_config.yml", "_toc.yml", "references.bib")


def notebook_key(source: Path) -> tuple[str, str]:
    """(paper or folder, notebook stem) of ``book/<paper>/<stem>.ipynb``."""
    return source.parent.name, source.stem


THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def make_jobs(makeflags: str) -> int:
    """How many jobs ``make`` runs at once by its ``MAKEFLAGS``: N for ``-j N``, 0 for an unlimited
    ``-j``, 1 without ``-j``."""
    m = re.search(r"(?:^|\s)-j(\d*)(?:\s|$)", " " + makeflags + " ")
    return 1 if m is None else int(m.group(1) or 0)


def kernel_threads(makeflags: str, cores: int) -> int | None:
    """Threads for each kernel when ``make`` runs ``-j N`` jobs at once on ``cores`` cores: ``max(1,
    cores // N)`` (one for an unlimited ``-j``), None when make runs one job at a time.

    Several kernels with torch's default of one thread per core oversubscribe the cores, and
    OpenMP's spinning threads then slow every notebook severalfold."""
    jobs = make_jobs(makeflags)
    if jobs == 1:
        return None
    return 1 if jobs == 0 else max(1, cores // jobs)


def kernel_env(makeflags: str, cores: int, environ) -> dict[str, str]:
    """The variables :func:`execute` sets for its kernel under ``make -j N``: :func:`kernel_threads`
    threads (unless ``environ`` sets one of :data:`THREAD_VARS`: the user's setting wins) and as
    many worker processes for independent runs (``SGDBOOK_WORKERS``, :mod:`sgdbook.parallel`,
    unless set). Nothing when make runs one job at a time."""
    threads = kernel_threads(makeflags, cores)
    if threads is None:
        return {}
    out = {} if any(v in environ for v in THREAD_VARS) else {v: str(threads) for v in THREAD_VARS}
    if WORKERS_ENV not in environ:
        out[WORKERS_ENV] = str(threads)
    return out


def _threads_now() -> int:
    """The threads a kernel started now gets: ``OMP_NUM_THREADS`` where it is a number, else one per
    usable core (torch's default)."""
    v = os.environ.get("OMP_NUM_THREADS", "")
    return int(v) if v.isdigit() and int(v) > 0 else usable_cores()


def _quiet_own_parameter(record) -> bool:
    """Drop papermill's warning about ``sgdbook_notebook``: the notebooks' parameter cells do not
    declare it on purpose (it is the pipeline's note to the chapter object, not a setting)."""
    return "unknown parameter: sgdbook_notebook" not in record.getMessage()


def execute(source: Path, out: Path, scale: str, device: str, alone: bool = False) -> int:
    """Execute ``source`` into ``out`` at ``scale`` on ``device`` with papermill, writing its status
    record. Under ``make -j N`` the kernel shares the cores (:func:`kernel_env`), unless ``alone``:
    make runs nothing beside it (the performance appendix, which the Makefile runs first and alone),
    so it keeps every core."""
    check_scale(scale)
    dev = resolve_device(device)  # fails at once with a clear message for DEVICE=cuda without CUDA
    import papermill
    from papermill.log import logger as papermill_logger

    if _quiet_own_parameter not in papermill_logger.filters:
        papermill_logger.addFilter(_quiet_own_parameter)

    paper, stem = notebook_key(source)
    # The chapter object reads the notebook's own path from here (the kernel inherits it), so a
    # renamed notebook records under its new name; the device is passed resolved, once.
    os.environ["SGDBOOK_NOTEBOOK"] = _repo_relative(source)
    # Progress bars belong to interactive runs, not to the book's pages.
    os.environ[PROGRESS_ENV] = "off"
    if alone:
        at_once = 1
    else:
        os.environ.update(kernel_env(os.environ.get("MAKEFLAGS", ""), usable_cores(), os.environ))
        at_once = make_jobs(os.environ.get("MAKEFLAGS", ""))
    status_path = build_dir() / "status" / scale / f"{paper}__{stem}.json"
    ledger_path = build_dir() / "ledger" / scale / f"{paper}__{stem}.json"
    status_path.parent.mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".running.ipynb")
    print(f"executing {source} at scale={scale} on {dev} -> {out}", flush=True)
    # This run's records replace the last run's: none of those may pass for this run's, and the
    # status says "running" until the run ends (a killed run leaves it so: its records are flagged).
    ledger_path.unlink(missing_ok=True)
    out.unlink(missing_ok=True)  # nor may the last run's executed copy stand for a failed run
    base = {"paper": paper, "notebook": stem, "source": str(source), "scale": scale, "device": str(dev),
            "out": str(out.resolve()), "cores": usable_cores(), "at_once": at_once,
            "threads": _threads_now()}
    started = time.time()
    _write_json(status_path, {**base, "state": "running", "ok": None, "started": round(started, 3),
                              "seconds": 0.0, "error": "", "finished": ""})
    start = time.perf_counter()
    error = None
    try:
        papermill.execute_notebook(
            str(source),
            str(tmp),
            # sgdbook_notebook: the source's path, for the chapter object in any later re-execution
            # of the executed copy (nbval), where no environment variable names the notebook
            parameters={"scale": scale, "device": str(dev), "sgdbook_notebook": os.environ["SGDBOOK_NOTEBOOK"]},
            cwd=str(source.parent.resolve()),
            progress_bar=False,
            kernel_name="python3",
        )
    except Exception as err:  # papermill.PapermillExecutionError carries the cell's traceback
        error = f"{type(err).__name__}: {err}"
    seconds = time.perf_counter() - start
    status = {
        **base,
        "state": "finished",
        "started": round(started, 3),
        "seconds": round(seconds, 1),
        "ok": error is None,
        "error": (error or "")[-2000:],
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    _write_json(status_path, status)
    if error is not None:
        failed = out.with_name(out.stem + ".failed.ipynb")
        if tmp.exists():
            os.replace(tmp, failed)
        print(f"FAILED {source} after {seconds:.1f} s (executed copy: {failed})\n{error}", file=sys.stderr)
        return 1
    os.replace(tmp, out)
    print(f"done {source} in {seconds:.1f} s", flush=True)
    return 0


def stage(scale: str, executed: Path, partial: bool = False) -> Path:
    """Assemble ``_build/stage/<scale>``: book files, pages, the reader's notebooks, generated pages.

    Each executed notebook becomes the reader's page (:mod:`.staging`: one parameters cell with
    the values that ran, no progress bars, a line on where it ran and a closing section on how to
    rerun it), with the executed notebook and its ledger records beside it for download; a
    paper's index page opens with the summary of its verdicts. Only files whose content changed
    are written, so that jupyter-book rebuilds only the pages that changed. ``partial``: a
    chapter not executed at this scale gets a page saying so (``make chapter``) instead of
    stopping the build.
    """
    from . import layout, report, staging

    check_scale(scale)
    dest = build_dir() / "stage" / scale
    dest.mkdir(parents=True, exist_ok=True)
    for name in BOOK_FILES:
        shutil.copy2(ROOT / name, dest / name)
    wanted: set[Path] = set()

    def put(target: Path, data: bytes) -> None:
        wanted.add(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.read_bytes() != data:
            target.write_bytes(data)

    static = ROOT / "book" / "_static"
    statuses = {f"{r['paper']}__{r['notebook']}": r for r in report.read_status(scale)}
    for page in sorted((ROOT / "book").rglob("*")):
        if page.is_dir() or ".ipynb_checkpoints" in page.parts:
            continue
        if static in page.parents:  # the book's stylesheet: jupyter-book serves <book>/_static
            put(dest / "_static" / page.relative_to(static), page.read_bytes())
            continue
        rel = page.relative_to(ROOT)
        folder, stem = page.parent.name, page.stem
        if page.suffix == ".ipynb":
            run = executed / rel
            if not run.is_file():
                if not partial:
                    raise FileNotFoundError(f"{rel} has not been executed at scale {scale} ({run} missing)")
                stub = staging.stub_notebook(report.notebook_title(folder, stem), folder, stem, scale)
                put(dest / rel, (json.dumps(stub, indent=1, ensure_ascii=False) + "\n").encode())
                continue
            raw = run.read_bytes()
            files = dest / rel.parent / "_files"
            put(files / f"{stem}.ipynb", raw)
            ledger = build_dir() / "ledger" / scale / f"{folder}__{stem}.json"
            if ledger.is_file():
                put(files / f"{stem}.ledger.json", ledger.read_bytes())
            nb = staging.strip_progress(staging.merge_parameters(json.loads(raw)))
            nb = staging.add_page_info(
                nb,
                folder=folder,
                stem=stem,
                scale=scale,
                status=statuses.get(f"{folder}__{stem}"),
                is_paper=layout.is_paper(folder),
                notebook_download=f"_files/{stem}.ipynb",
                ledger_download=f"_files/{stem}.ledger.json" if ledger.is_file() else None,
            )
            put(dest / rel, (json.dumps(nb, indent=1, ensure_ascii=False) + "\n").encode())
        elif page.name == "index.md" and page.parent.parent == ROOT / "book" and layout.is_paper(folder):
            block = f"```{{include}} ../_generated/summary-{folder}.md\n```"
            put(dest / rel, staging.insert_after_title(page.read_text(), block).encode())
        else:
            put(dest / rel, page.read_bytes())
    for top in (dest / "book", dest / "_static"):  # pages removed from the sources
        for old in top.rglob("*"):
            if old.is_file() and old not in wanted and "_generated" not in old.relative_to(dest).parts:
                old.unlink()
    # and their built pages: jupyter-book leaves a removed or renamed chapter's HTML in place
    built = dest / "_build" / "html" / "book"
    for html in built.rglob("*.html") if built.is_dir() else []:
        src = dest / html.relative_to(built.parent).with_suffix("")
        if not any(src.with_suffix(ext).is_file() for ext in (".ipynb", ".md")):
            html.unlink()
    gen = dest / "book" / "_generated"
    gen.mkdir(parents=True, exist_ok=True)
    # the generated pages trust only the runs whose executed copies this book shows
    pages = {
        "scorecard.md": report.scorecard_markdown(scale, executed),
        "status.md": report.status_markdown(scale, executed),
        "errata.md": report.errata_markdown(scale, executed),
        "papers.md": report.papers_markdown(scale, executed),
        "verdicts.md": report.verdicts_markdown(),
        "rerun.md": report.rerun_markdown(layout.notebooks()),
    }
    for paper in report.papers():
        pages[f"summary-{paper}.md"] = report.paper_summary_markdown(paper, scale, executed)
    for name, text in pages.items():
        _write_if_changed(gen / name, text)
    for old in gen.glob("*.md"):
        if old.name not in pages:
            old.unlink()
    return dest


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _write_json(path: Path, obj: dict) -> None:
    """Write a JSON file atomically (a reader never sees half of it; parallel runs are safe)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _repo_relative(source: Path) -> str:
    """The notebook's path relative to the repository root (as given if it lies elsewhere)."""
    try:
        return str(source.resolve().relative_to(ROOT.resolve()))
    except ValueError:
        return str(source)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sgdbook.book.pipeline")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("execute", help="execute one notebook with papermill")
    ex.add_argument("source", type=Path)
    ex.add_argument("--out", type=Path, required=True)
    ex.add_argument("--scale", required=True)
    ex.add_argument("--device", default="auto")
    ex.add_argument("--alone", action="store_true", help="make runs nothing beside it: keep every core under make -j")
    st = sub.add_parser("stage", help="assemble the book for jupyter-book")
    st.add_argument("--scale", required=True)
    st.add_argument("--executed", type=Path, required=True)
    st.add_argument("--partial", action="store_true", help="a page saying so for chapters not executed at this scale")
    ck = sub.add_parser("check", help="check a scale and a device, then exit")
    ck.add_argument("--scale", required=True)
    ck.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "execute":
            return execute(args.source, args.out, args.scale, args.device, alone=args.alone)
        if args.cmd == "stage":
            print(stage(args.scale, args.executed, args.partial))
            return 0
        check_scale(args.scale)
        print(f"scale={args.scale} device={resolve_device(args.device)}")
        return 0
    except (ScaleError, DeviceError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception:
        traceback.print_exc()
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
