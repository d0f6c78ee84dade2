"""The order in which ``make -j`` starts the chapters: longest first.

Under ``make -j N`` the notebooks start in the order of their prerequisites list; started
alphabetically, the walk-with-sgd chapters (the longest) came last and one of them ran alone at
the end. Longest-processing-time-first keeps both cores busy to the end (simulated on the status
times of the clean builds at de62005 and b553201: 58.0 and 53.2 min against 59.6 and 55.3 min for
the alphabetical order, the performance appendix first and alone in all four; b553201's build,
started in this order, took 54.3 min from the first notebook's start to the last one's end).

A notebook's expected time is its last measured time at this scale (``_build/status/<scale>``),
else at ``book``, else ``build_seconds.json`` (book-scale times of a clean build, committed: only
the order depends on them), else it goes first (an unmeasured notebook may be long).
Standard library only: the Makefile runs it with the system Python, before the environment exists::

    python3 lib/sgdbook/book/order.py --scale book book/*/*.ipynb
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
DEFAULTS = HERE / "build_seconds.json"


# The status files' names and the build folder mirror sgdbook.book.pipeline and sgdbook.book.paths, which
# this script cannot import (it runs before the environment exists).
def key(source: str) -> str:
    """``book/<folder>/<stem>.ipynb`` → ``<folder>__<stem>`` (the status files' names)."""
    p = Path(source)
    return f"{p.parent.name}__{p.stem}"


def _measured(scale: str) -> dict[str, float]:
    folder = Path(os.environ.get("SGDBOOK_BUILD", ROOT / "_build")) / "status" / scale
    out = {}
    for f in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            rec = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if (isinstance(rec, dict) and rec.get("state") == "finished" and rec.get("ok") is True
                and isinstance(rec.get("seconds"), (int, float))):  # a failed run's time says nothing of a full one
            out[f.stem] = float(rec["seconds"])
    return out


def expected_seconds(scale: str) -> dict[str, float]:
    """Each notebook key's expected time: this scale's measurement over book's over the committed one."""
    table = json.loads(DEFAULTS.read_text()) if DEFAULTS.is_file() else {}
    if scale != "book":
        table.update(_measured("book"))
    table.update(_measured(scale))
    return table


def longest_first(sources, scale: str) -> list[str]:
    """``sources`` sorted by expected time, longest first; unmeasured ones first; ties by name."""
    t = expected_seconds(scale)
    return sorted(sources, key=lambda s: (-t.get(key(s), float("inf")), s))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", required=True)
    ap.add_argument("sources", nargs="*")
    args = ap.parse_args(argv)
    print(" ".join(longest_first(args.sources, args.scale)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
