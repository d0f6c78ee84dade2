"""Progress bars for long loops: ``tqdm.auto`` where ipywidgets can draw a widget, plain text
otherwise, refreshed rarely so that executed notebooks keep a short text trace."""

from __future__ import annotations

from typing import Iterable, TypeVar

T = TypeVar("T")


def progress(iterable: Iterable[T], desc: str = "", total: int | None = None, **kwargs) -> Iterable[T]:
    try:
        import ipywidgets  # noqa: F401  (tqdm.auto warns and falls back to text without it)

        from tqdm.auto import tqdm
    except ImportError:
        from tqdm.std import tqdm

    kwargs.setdefault("mininterval", 10.0)
    kwargs.setdefault("ascii", True)
    return tqdm(iterable, desc=desc, total=total, **kwargs)
