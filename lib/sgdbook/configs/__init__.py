"""Per-scale settings of every chapter (read by the notebooks and by the tests)."""
