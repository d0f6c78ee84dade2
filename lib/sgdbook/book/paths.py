"""Where things live: the repository, the build folder, the vendored claims, the data."""

from __future__ import annotations

import os
from pathlib import Path

#: The repository root (the package is installed in editable mode from ``lib/``).
ROOT = Path(__file__).resolve().parents[3]


def build_dir() -> Path:
    """The build folder (``_build`` in the repository, or ``$SGDBOOK_BUILD``)."""
    return Path(os.environ.get("SGDBOOK_BUILD", ROOT / "_build"))


def papers_dir() -> Path:
    """The folder with one ``<slug>/claims.yaml`` per paper (a copy of ``shared/papers``)."""
    return Path(os.environ.get("SGDBOOK_PAPERS", ROOT / "papers"))


def data_dir() -> Path:
    """Where data sets are looked for first (``data/`` in the repository, or ``$SGDBOOK_DATA``)."""
    return Path(os.environ.get("SGDBOOK_DATA", ROOT / "data"))
