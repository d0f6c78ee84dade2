"""Per-scale settings of the appendix notebooks."""
