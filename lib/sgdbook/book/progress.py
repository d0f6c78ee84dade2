"""Progress bars for long loops: ``tqdm.auto`` where ipywidgets can draw a widget, plain text
otherwise, refreshed rarely. They belong to interactive runs: the pipeline sets
``SGDBOOK_PROGRESS=off`` for the notebooks it executes, so the book's pages show none."""

from __future__ import annotations

import os
from typing import Iterable, TypeVar

T = TypeVar("T")

#: Set to ``off`` (or ``0``) to turn every bar off; the loop runs unchanged.
PROGRESS_ENV = "SGDBOOK_PROGRESS"


def enabled() -> bool:
    """Whether progress bars are drawn (not in the pipeline's executions)."""
    return os.environ.get(PROGRESS_ENV, "on").strip().lower() not in ("off", "0", "false", "no")


def progress(iterable: Iterable[T], desc: str = "", total: int | None = None, **kwargs) -> Iterable[T]:
    try:
        import ipywidgets  # noqa: F401  (tqdm.auto warns and falls back to text without it)

        from tqdm.auto import tqdm
    except ImportError:
        from tqdm.std import tqdm

    kwargs.setdefault("disable", not enabled())
    kwargs.setdefault("mininterval", 10.0)
    kwargs.setdefault("ascii", True)
    return tqdm(iterable, desc=desc, total=total, **kwargs)
