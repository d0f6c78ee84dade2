"""Per-scale settings of the walk-with-sgd chapters, one module per notebook."""
