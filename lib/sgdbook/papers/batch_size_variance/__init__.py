"""batch-size-variance: The Impact of the Mini-batch Size on the Dynamics of SGD: Variance and Beyond."""
