"""Per-scale settings of the batch-size-variance notebooks, one module per notebook."""
