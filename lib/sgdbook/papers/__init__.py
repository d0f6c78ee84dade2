"""One sub-package per paper (the slug with ``-`` → ``_``): the paper's theory and chapter support,
``settings/<topic>.py`` (the per-scale settings of notebook ``NN_<topic>.ipynb``) and ``dry_run.py``
(one function per notebook that builds every ``paper``-scale configuration and runs one step)."""
