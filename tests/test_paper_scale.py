"""The `paper` scale of every chapter, built and stepped once on the CPU.

For each notebook ``book/<folder>/NN_<topic>.ipynb`` the layout names a settings table and a dry
run (``sgdbook.book.layout``); the dry run gets ``SETTINGS("paper")`` and the CPU, builds every
paper-scale configuration with the paper's own numbers asserted, and runs one step of it. A
notebook without either fails here, with what to write and where.
"""

import pytest
import torch

from sgdbook.book import layout

NOTEBOOKS = layout.notebooks()


def _parts(nb):
    """The notebook's settings table and dry-run function, or a failure saying what is missing."""
    folder, stem = nb.parent.name, nb.stem
    try:
        return layout.settings_of(folder, stem), layout.dry_run_of(folder, stem)
    except layout.LayoutError as err:
        problem = str(err)
    pytest.fail(problem, pytrace=False)


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=str)
def test_every_notebook_has_settings_and_a_dry_run(nb):
    settings, dry_run = _parts(nb)
    assert settings("paper") and callable(dry_run)


@pytest.mark.slow
@pytest.mark.parametrize("nb", NOTEBOOKS, ids=str)
def test_paper_scale_dry_run(nb):
    settings, dry_run = _parts(nb)
    dry_run(settings("paper"), torch.device("cpu"))
