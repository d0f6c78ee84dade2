"""hessian-sgd: Hessian based analysis of SGD for Deep Nets: Dynamics and Generalization (Li et al.)."""
