"""Per-scale settings of the vmf-directional notebooks, one module per notebook."""
