"""Where a chapter's parts live: its notebook, its package, its settings and its dry run.

A notebook ``book/<folder>/NN_<topic>.ipynb`` belongs to

- the package :func:`package_of` ``(folder)``: ``sgdbook.papers.<pkg>`` when ``<folder>`` is a
  paper slug (a folder of ``papers/`` with a ``claims.yaml``; ``pkg`` is the slug with ``-`` →
  ``_``), else ``sgdbook.<pkg>`` (the appendix, the synthesis);
- its settings, ``<package>.settings.<topic>.SETTINGS`` (a :class:`~sgdbook.book.scales.ScaleTable`);
- its dry run, ``<package>.dry_run.<topic>(cfg, device)``: builds every ``paper``-scale
  configuration and runs one step of it (``tests/test_paper_scale.py`` calls it on CPU).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from types import ModuleType
from typing import Callable

from .paths import ROOT, papers_dir
from .scales import ScaleTable

_STEM = re.compile(r"^(?:\d+_)?(?P<topic>[a-z][a-z0-9_]*)$")


class LayoutError(LookupError):
    """A notebook whose settings or dry run cannot be found where the layout says."""


def book_dir() -> Path:
    return ROOT / "book"


def notebooks() -> list[Path]:
    """Every source notebook of the book, relative to the repository root, sorted."""
    return sorted(
        p.relative_to(ROOT)
        for p in book_dir().rglob("*.ipynb")
        if ".ipynb_checkpoints" not in p.parts and not p.name.startswith("_")
    )


def is_paper(folder: str) -> bool:
    return (papers_dir() / folder / "claims.yaml").is_file()


def package_of(folder: str) -> str:
    """The Python package of the chapters in ``book/<folder>``."""
    pkg = folder.replace("-", "_")
    return f"sgdbook.papers.{pkg}" if is_paper(folder) else f"sgdbook.{pkg}"


def topic_of(stem: str) -> str:
    """``"01_kappa_bias"`` → ``"kappa_bias"`` (the settings module's name)."""
    m = _STEM.match(stem)
    if not m:
        raise LayoutError(
            f"notebook name {stem!r} does not follow NN_<topic> with a lower-case Python identifier as topic"
        )
    return m["topic"]


def _import(name: str, what: str, notebook: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name and name.startswith(err.name):
            raise LayoutError(f"{notebook}: no {what} module {name} (see CONTRIBUTING.md, 'Adding a chapter')") from None
        raise


def settings_of(folder: str, stem: str) -> ScaleTable:
    """The ``SETTINGS`` table of notebook ``book/<folder>/<stem>.ipynb``."""
    name = f"{package_of(folder)}.settings.{topic_of(stem)}"
    mod = _import(name, "settings", f"book/{folder}/{stem}.ipynb")
    table = getattr(mod, "SETTINGS", None)
    if not isinstance(table, ScaleTable):
        raise LayoutError(f"{name} must define SETTINGS = ScaleTable(...)")
    return table


def dry_run_of(folder: str, stem: str) -> Callable:
    """The dry-run function of notebook ``book/<folder>/<stem>.ipynb``."""
    name = f"{package_of(folder)}.dry_run"
    mod = _import(name, "dry-run", f"book/{folder}/{stem}.ipynb")
    fn = getattr(mod, topic_of(stem), None)
    if not callable(fn):
        raise LayoutError(f"{name} has no function {topic_of(stem)}(cfg, device) for book/{folder}/{stem}.ipynb")
    return fn
