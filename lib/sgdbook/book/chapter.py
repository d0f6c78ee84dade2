"""The chapter object: what every notebook does before and after its own computation.

A notebook's second cell is::

    from sgdbook.book import Chapter
    ch = Chapter(scale, seed, device)

which finds the notebook (``book/<folder>/NN_<topic>.ipynb``; the pipeline passes its path, an
interactive Jupyter session names it), checks the scale, loads the per-scale settings
``sgdbook.papers.<pkg>.settings.<topic>.SETTINGS`` and shows them as a table, resolves the device
once, applies the book's matplotlib style and opens the claims ledger under the notebook's own
name. Then:

- ``ch.cfg`` (the settings at this scale), ``ch.device``, ``ch.generator(offset)``;
- ``ch.record(id, verdict, criterion, evidence, ...)`` writes the ledger record and glues every
  scalar of the evidence as ``"<id>.<key>"`` and the verdict as ``"<id>.verdict"`` for
  ``{glue:text}`` in the prose;
- ``ch.glue(name, value)`` and ``ch.figure(name, fig)`` publish other numbers and figures;
- ``ch.verdicts()`` shows the closing verdict boxes.
"""

from __future__ import annotations

import numbers
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from . import layout, style
from .device import resolve_device
from .ledger import Ledger, LedgerError, Record
from .paths import ROOT
from .scales import check_scale

#: Set by the pipeline to the source notebook's path (relative to the repository root).
NOTEBOOK_ENV = "SGDBOOK_NOTEBOOK"
#: The same path as a papermill parameter in the executed copy (read back when nbval re-runs it).
NOTEBOOK_PARAMETER = "sgdbook_notebook"


class ChapterError(RuntimeError):
    """A chapter that cannot tell which notebook it is, or a misuse of the chapter object."""


def _locate(notebook: str | Path | None) -> Path:
    """The source notebook's path relative to the repository root."""
    candidates = [notebook]
    user_ns = {}
    try:
        from IPython import get_ipython

        ip = get_ipython()
        user_ns = ip.user_ns if ip is not None else {}
    except ImportError:
        pass
    candidates += [
        user_ns.get(NOTEBOOK_PARAMETER),  # injected by the pipeline into the executed copy
        os.environ.get(NOTEBOOK_ENV),
        os.environ.get("JPY_SESSION_NAME"),  # Jupyter Server names the notebook of a session
        user_ns.get("__vsc_ipynb_file__"),  # VS Code's kernel does it here
    ]
    for c in candidates:
        if not c:
            continue
        p = Path(c)
        if not p.is_absolute():
            p = (ROOT / p) if (ROOT / p).exists() else (Path.cwd() / p)
        p = p.resolve()
        try:
            rel = p.relative_to(ROOT.resolve())
        except ValueError:
            continue
        if rel.parts[:1] == ("book",) and rel.suffix == ".ipynb":
            return rel
    here = sorted(Path.cwd().glob("*.ipynb"))
    if len(here) == 1 and Path.cwd().resolve().parent == (ROOT / "book").resolve():
        return here[0].resolve().relative_to(ROOT.resolve())
    raise ChapterError(
        "cannot tell which notebook this is: run it through `make chapter NB=...` or Jupyter, "
        f"or pass Chapter(..., notebook='book/<folder>/NN_<topic>.ipynb') (or set ${NOTEBOOK_ENV})"
    )


def _plain(value: Any) -> Any:
    """A glue-able plain Python value (numpy/torch scalars become float/int), or None."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, bool) or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return None


class Chapter:
    """One executed chapter notebook (see the module's docstring).

    Parameters: ``scale`` (``smoke``, ``book`` or ``paper``), ``seed`` (the base seed of
    :meth:`generator`), ``device`` (``auto``, ``cpu``, ``cuda``; resolved once), ``notebook`` (the
    source path, when neither the pipeline nor Jupyter tells), ``show_settings`` (display the
    settings table of all scales).
    """

    def __init__(
        self,
        scale: str,
        seed: int = 0,
        device: str | torch.device = "auto",
        *,
        notebook: str | Path | None = None,
        show_settings: bool = True,
    ) -> None:
        self.scale = check_scale(scale)
        self.seed = int(seed)
        self.path = _locate(notebook)
        self.folder = self.path.parent.name
        self.notebook = self.path.stem
        self.topic = layout.topic_of(self.notebook)
        self.settings = layout.settings_of(self.folder, self.notebook)
        self.cfg: dict[str, Any] = self.settings(self.scale)
        self.device = resolve_device(device)
        self.paper = self.folder if layout.is_paper(self.folder) else None
        self.ledger = Ledger(self.paper, self.notebook, self.scale, self.device) if self.paper else None
        style.apply()
        if show_settings:
            self.show_settings()

    def __repr__(self) -> str:
        return f"Chapter({self.path}, scale={self.scale!r}, seed={self.seed}, device={self.device})"

    # ------------------------------------------------------------------ set-up

    def show_settings(self) -> None:
        """Display the settings of every scale, this run's column marked."""
        from IPython.display import Markdown, display

        display(Markdown(self.settings.to_markdown(current=self.scale)))

    def generator(self, offset: int = 0, device: str | torch.device | None = None) -> torch.Generator:
        """A fresh ``torch.Generator`` on ``device`` (default: the chapter's) seeded ``seed + offset``."""
        dev = self.device if device is None else torch.device(device)
        return torch.Generator(device=dev).manual_seed(self.seed + int(offset))

    # ------------------------------------------------------------------ publishing

    def glue(self, name: str, value: Any) -> Any:
        """Publish ``value`` for ``{glue:text}`name`` `` (numbers become plain Python); returns it."""
        from myst_nb import glue

        plain = _plain(value)
        if plain is None:
            raise ChapterError(f"glue {name!r}: {type(value).__name__} is not a number, string or boolean")
        glue(name, plain, display=False)
        return plain

    def figure(self, name: str, fig) -> None:
        """Publish ``fig`` under ``name`` (for ``{glue:figure}``) and show it in the page."""
        import matplotlib.pyplot as plt
        from myst_nb import glue

        glue(name, fig, display=False)
        plt.show()

    def record(
        self,
        id: str,
        verdict: str,
        criterion: str,
        evidence: Mapping[str, Any],
        *,
        basis: str = "measured",
        why: str = "",
        decide: str = "",
        pilot: str = "",
        glue: bool = True,
    ) -> Record:
        """Record item ``id`` in the ledger (see :meth:`sgdbook.book.ledger.Ledger.record`) and glue
        its verdict as ``"<id>.verdict"`` and every scalar of ``evidence`` as ``"<id>.<key>"``."""
        if self.ledger is None:
            raise ChapterError(f"book/{self.folder} is not a paper's folder: it has no claims to record")
        rec = self.ledger.record(id, verdict, criterion, evidence, basis=basis, why=why, decide=decide, pilot=pilot)
        if glue:
            self.glue(f"{id}.verdict", verdict)
            for key, value in evidence.items():
                if _plain(value) is not None:
                    self.glue(f"{id}.{key}", value)
        return rec

    def box(self, id: str):
        """The verdict box of one recorded item."""
        if self.ledger is None or id not in self.ledger.records:
            raise ChapterError(f"{id!r} has not been recorded by this notebook")
        return self.ledger.box(id)

    def verdicts(self) -> None:
        """Display the verdict box of every item this notebook recorded, in claims.yaml order."""
        from IPython.display import display

        if self.ledger is None:
            raise ChapterError(f"book/{self.folder} records no verdicts")
        if not self.ledger.records:
            raise LedgerError(f"{self.path} has recorded no item")
        for id in self.ledger.claims:
            if id in self.ledger.records:
                display(self.ledger.box(id))
