"""Curvature of neural-network losses: Hessian-vector products and what they estimate.

Everything works on a loss written as a function of one flat parameter vector ``θ ∈ R^p``
(:func:`sgdbook.functional.flat_loss`), in families:

- :mod:`.hvp`: :class:`HVP` (``v ↦ ∇²f(θ) v`` through the autograd graph, one vector or a block),
  :class:`LinearNetHVP` (the R-operator written out for Linear/ReLU nets with cross-entropy),
  :class:`ConvNetHVP` (in :mod:`.convnet`: the same for plain conv/max-pool nets),
  :class:`MatrixHVP` (the same interface over an explicit symmetric matrix) and
  :func:`full_hessian` (the dense Hessian of a small net).
- :mod:`.eigen`: :func:`lanczos` (top/bottom-k eigenpairs, thick-restart Lanczos with full
  reorthogonalisation) and :func:`power_iteration` (largest algebraic eigenvalue).
- :mod:`.stochastic`: :func:`hutchinson_trace`, :func:`hutchinson_diag` and
  :func:`spectral_density` (stochastic Lanczos quadrature).
- :mod:`.subspace`: :func:`principal_angles` between subspaces; :func:`davis_kahan` (the
  Davis–Kahan bounds on the angles between top eigenvectors of a matrix and a perturbed one).
- :mod:`.residual`: :class:`ResidualOperator`, ``H_p = M − H``; :func:`residual_hessian` and
  :func:`residual_hvp`, ``H_p = (1/n) Σ ∇²p_i / p_i`` computed directly from the probabilities.
- :mod:`.dense`: :func:`stacked_hessians` (dense Hessians of many runs of a small net at once).
- :mod:`.layers`: :func:`layer_index` (a network's layers in the flat layout),
  :func:`layer_blocks` (diagonal blocks ``G_h`` and trailing blocks ``H_h`` of a Hessian) and
  :func:`layer_loadings` (how much of an eigenvector lies in each layer).

The solvers take any operator: a callable ``v ↦ Hv`` on vectors of length ``p``, optionally with a
``batch(V)`` method for a block of row vectors ``V`` (``[b, p]``) and ``dtype``/``device``
attributes. They count the products they use and keep all work on the operator's device.
Randomness comes only from the ``torch.Generator`` passed in; nothing touches the global RNG.
"""

from ._common import Operator
from .eigen import LanczosResult, PowerResult, lanczos, power_iteration
from .convnet import ConvNetHVP
from .dense import DENSE_MAX_P, stacked_hessians
from .hvp import HVP, LinearNetHVP, MatrixHVP, full_hessian
from .layers import LayerBlock, layer_blocks, layer_index, layer_loadings
from .residual import ProbabilityUnderflowError, ResidualOperator, residual_function, residual_hessian, residual_hvp
from .stochastic import DiagEstimate, SpectralDensity, TraceEstimate, hutchinson_diag, hutchinson_trace, spectral_density
from .subspace import DavisKahan, davis_kahan, principal_angles

__all__ = [
    "ConvNetHVP",
    "DENSE_MAX_P",
    "HVP",
    "DavisKahan",
    "DiagEstimate",
    "LanczosResult",
    "LayerBlock",
    "LinearNetHVP",
    "MatrixHVP",
    "Operator",
    "PowerResult",
    "ProbabilityUnderflowError",
    "ResidualOperator",
    "SpectralDensity",
    "TraceEstimate",
    "davis_kahan",
    "full_hessian",
    "hutchinson_diag",
    "hutchinson_trace",
    "lanczos",
    "layer_blocks",
    "layer_index",
    "layer_loadings",
    "power_iteration",
    "principal_angles",
    "residual_function",
    "residual_hessian",
    "residual_hvp",
    "spectral_density",
    "stacked_hessians",
]
