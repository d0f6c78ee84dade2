"""Per-scale settings of the hessian-sgd notebooks, one module per notebook."""
