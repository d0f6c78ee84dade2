"""Curvature of neural-network losses: Hessian-vector products and what they estimate.

Everything works on a loss written as a function of one flat parameter vector ``θ ∈ R^p``
(:func:`sgdbook.functional.flat_loss`), in families:

- :mod:`.hvp`: :class:`HVP` (``v ↦ ∇²f(θ) v`` through the autograd graph, one vector or a block),
  :class:`LinearNetHVP` (the R-operator written out for Linear/ReLU nets with cross-entropy),
  :class:`MatrixHVP` (the same interface over an explicit symmetric matrix) and
  :func:`full_hessian` (the dense Hessian of a small net).
- :mod:`.eigen`: :func:`lanczos` (top/bottom-k eigenpairs, thick-restart Lanczos with full
  reorthogonalisation) and :func:`power_iteration` (largest algebraic eigenvalue).
- :mod:`.stochastic`: :func:`hutchinson_trace`, :func:`hutchinson_diag` and
  :func:`spectral_density` (stochastic Lanczos quadrature).
- :mod:`.subspace`: :func:`principal_angles` between subspaces.
- :mod:`.residual`: :class:`ResidualOperator`, ``H_p = M − H``.

The solvers take any operator: a callable ``v ↦ Hv`` on vectors of length ``p``, optionally with a
``batch(V)`` method for a block of row vectors ``V`` (``[b, p]``) and ``dtype``/``device``
attributes. They count the products they use and keep all work on the operator's device.
Randomness comes only from the ``torch.Generator`` passed in; nothing touches the global RNG.
"""

from ._common import Operator
from .eigen import LanczosResult, PowerResult, lanczos, power_iteration
from .hvp import HVP, LinearNetHVP, MatrixHVP, full_hessian
from .residual import ResidualOperator
from .stochastic import DiagEstimate, SpectralDensity, TraceEstimate, hutchinson_diag, hutchinson_trace, spectral_density
from .subspace import principal_angles

__all__ = [
    "HVP",
    "DiagEstimate",
    "LanczosResult",
    "LinearNetHVP",
    "MatrixHVP",
    "Operator",
    "PowerResult",
    "ResidualOperator",
    "SpectralDensity",
    "TraceEstimate",
    "full_hessian",
    "hutchinson_diag",
    "hutchinson_trace",
    "lanczos",
    "power_iteration",
    "principal_angles",
    "spectral_density",
]
