"""The notebook pipeline behind ``make book`` and ``make test``.

``execute``: run one source notebook with papermill at a scale and device into the build
folder, never into the sources, and write a status record (scale, device, wall time,
whether it ran cleanly). ``stage``: assemble the book (configuration, pages, executed
notebooks, generated scorecard and status tables) in ``_build/stage/<scale>`` for
jupyter-book to build.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

from .device import DeviceError, resolve_device
from .paths import ROOT, build_dir
from .scales import ScaleError, check_scale

BOOK_FILES = ("_config.yml", "_toc.yml", "references.bib")


def notebook_key(source: Path) -> tuple[str, str]:
    """(paper or folder, notebook stem) of ``book/<paper>/<stem>.ipynb``."""
    return source.parent.name, source.stem


def execute(source: Path, out: Path, scale: str, device: str) -> int:
    check_scale(scale)
    dev = resolve_device(device)  # fails at once with a clear message for DEVICE=cuda without CUDA
    import papermill

    paper, stem = notebook_key(source)
    # The chapter object reads the notebook's own path from here (the kernel inherits it), so a
    # renamed notebook records under its new name; the device is passed resolved, once.
    os.environ["SGDBOOK_NOTEBOOK"] = str(source.resolve().relative_to(ROOT.resolve()))
    status_path = build_dir() / "status" / scale / f"{paper}__{stem}.json"
    status_path.parent.mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".running.ipynb")
    print(f"executing {source} at scale={scale} on {dev} -> {out}", flush=True)
    start = time.perf_counter()
    error = None
    try:
        papermill.execute_notebook(
            str(source),
            str(tmp),
            parameters={"scale": scale, "device": str(dev)},
            cwd=str(source.parent.resolve()),
            progress_bar=False,
            kernel_name="python3",
        )
    except Exception as err:  # papermill.PapermillExecutionError carries the cell's traceback
        error = f"{type(err).__name__}: {err}"
    seconds = time.perf_counter() - start
    status = {
        "paper": paper,
        "notebook": stem,
        "source": str(source),
        "scale": scale,
        "device": str(dev),
        "seconds": round(seconds, 1),
        "ok": error is None,
        "error": (error or "")[-2000:],
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    status_path.write_text(json.dumps(status, indent=1))
    if error is not None:
        failed = out.with_name(out.stem + ".failed.ipynb")
        if tmp.exists():
            os.replace(tmp, failed)
        print(f"FAILED {source} after {seconds:.1f} s (executed copy: {failed})\n{error}", file=sys.stderr)
        return 1
    os.replace(tmp, out)
    print(f"done {source} in {seconds:.1f} s", flush=True)
    return 0


def stage(scale: str, executed: Path) -> Path:
    """Assemble ``_build/stage/<scale>``: book files, pages, executed notebooks, tables."""
    from . import report

    check_scale(scale)
    dest = build_dir() / "stage" / scale
    dest.mkdir(parents=True, exist_ok=True)
    for name in BOOK_FILES:
        shutil.copy2(ROOT / name, dest / name)
    wanted = set()
    for page in (ROOT / "book").rglob("*"):
        if page.is_dir() or ".ipynb_checkpoints" in page.parts:
            continue
        rel = page.relative_to(ROOT)
        if page.suffix == ".ipynb":
            page = executed / rel
            if not page.is_file():
                raise FileNotFoundError(f"{rel} has not been executed at scale {scale} ({page} missing)")
        target = dest / rel
        wanted.add(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.read_bytes() != page.read_bytes():
            shutil.copy2(page, target)
    for old in (dest / "book").rglob("*"):  # pages removed from the sources
        if old.is_file() and old not in wanted and "_generated" not in old.parts:
            old.unlink()
    gen = dest / "book" / "_generated"
    gen.mkdir(parents=True, exist_ok=True)
    _write_if_changed(gen / "scorecard.md", report.scorecard_markdown(scale))
    _write_if_changed(gen / "status.md", report.status_markdown(scale))
    return dest


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sgdbook.book.pipeline")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("execute", help="execute one notebook with papermill")
    ex.add_argument("source", type=Path)
    ex.add_argument("--out", type=Path, required=True)
    ex.add_argument("--scale", required=True)
    ex.add_argument("--device", default="auto")
    st = sub.add_parser("stage", help="assemble the book for jupyter-book")
    st.add_argument("--scale", required=True)
    st.add_argument("--executed", type=Path, required=True)
    ck = sub.add_parser("check", help="check a scale and a device, then exit")
    ck.add_argument("--scale", required=True)
    ck.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "execute":
            return execute(args.source, args.out, args.scale, args.device)
        if args.cmd == "stage":
            print(stage(args.scale, args.executed))
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
