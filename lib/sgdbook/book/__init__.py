"""The book machinery: where things live (:mod:`.paths`, :mod:`.layout`), scales and settings
tables (:mod:`.scales`), devices (:mod:`.device`), progress bars (:mod:`.progress`), the claims
ledger (:mod:`.ledger`), the chapter object (:mod:`.chapter`), the book's figure style
(:mod:`.style`), the generated pages (:mod:`.report`) and the notebook pipeline (:mod:`.pipeline`).

``paths``, ``device``, ``progress`` and ``scales`` import nothing else from ``sgdbook``: the
estimators may use them. The rest may import the estimators but never a paper's package.
"""

__all__ = ["Chapter"]


def __getattr__(name: str):
    # lazy, so that the estimators' imports of the leaf modules do not pull in matplotlib/IPython
    if name == "Chapter":
        from .chapter import Chapter

        return Chapter
    raise AttributeError(name)
