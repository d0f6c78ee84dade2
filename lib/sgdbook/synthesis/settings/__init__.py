"""Per-scale settings of the synthesis chapter."""
