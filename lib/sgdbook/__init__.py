"""sgdbook: estimators for the SGD-dynamics book."""
