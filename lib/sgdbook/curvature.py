"""Curvature of neural-network losses: Hessian-vector products and what they estimate.

Everything works on a loss written as a function of one flat parameter vector ``θ ∈ R^p``:

- :func:`flat_loss` turns ``(model, loss_fn, x, y)`` into ``f(θ)`` through
  ``torch.func.functional_call``, leaving the model, its mode, its ``.grad`` and its buffers
  alone (batch-norm layers evaluated in the mode the caller names).
- :class:`HVP` is the Hessian-vector product operator ``v ↦ ∇²f(θ) v`` (one vector or a block),
  :class:`MatrixHVP` the same interface over an explicit symmetric matrix, and
  :func:`full_hessian` the dense Hessian of a small net.
- :func:`lanczos` (top-k eigenpairs, thick-restart Lanczos with full reorthogonalization),
  :func:`power_iteration` (largest algebraic eigenvalue), :func:`hutchinson_trace`,
  :func:`hutchinson_diag` and :func:`spectral_density` (stochastic Lanczos quadrature) take any
  operator: a callable ``v ↦ Hv`` on vectors of length ``p``, optionally with a ``batch(V)``
  method for a block of row vectors ``V`` (shape ``[b, p]``) and ``dtype``/``device``
  attributes. They count the products they use and keep all work on the operator's device.
- :func:`principal_angles` compares subspaces (e.g. top eigenspaces at two times).

Randomness comes only from the ``torch.Generator`` passed in (drawn on the generator's device
and moved to the operator's); no function touches the global RNG.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .gradients import _linear_leaves, sharing_copy

Operator = Callable[[torch.Tensor], torch.Tensor]

# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class LanczosResult:
    """Eigenpairs from :func:`lanczos`.

    ``eigenvalues`` sorted (descending for ``which="largest"``, ascending for ``"smallest"``),
    ``eigenvectors`` as orthonormal columns ``[p, k]``, ``residuals`` the norms
    ``‖Hv − λv‖`` (Lanczos estimates ``|β_m y_m|`` unless the true ones were asked for),
    ``n_products`` the Hessian-vector products used, ``converged`` whether every residual met
    the tolerance, ``n_restarts`` the thick restarts.
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    residuals: torch.Tensor
    n_products: int
    converged: bool
    n_restarts: int


@dataclass(frozen=True)
class PowerResult:
    """Largest algebraic eigenvalue from :func:`power_iteration`.

    ``shift`` is the σ of the second phase run on ``H − σI`` (0.0 when none was needed).
    """

    eigenvalue: float
    eigenvector: torch.Tensor
    residual: float
    shift: float
    n_products: int
    converged: bool


@dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson trace: mean of ``zᵀHz`` over Rademacher ``z``, its standard error and sd."""

    value: float
    se: float
    sd: float
    n_probes: int
    n_products: int


@dataclass(frozen=True)
class DiagEstimate:
    """Hutchinson diagonal: mean of ``z ⊙ Hz`` per coordinate and its standard error."""

    value: torch.Tensor
    se: torch.Tensor
    n_probes: int
    n_products: int


@dataclass(frozen=True)
class SpectralDensity:
    """Stochastic Lanczos quadrature of the eigenvalue density of ``H`` (mass 1 in total).

    ``density`` on ``grid`` is the Gaussian-smoothed (``sigma``) quadrature averaged over probes,
    ``density_se`` its pointwise standard error across probes; ``nodes`` and ``weights``
    (``[n_probes, n_steps]``, each row's weights summing to 1) are the Gauss quadrature of each
    probe's spectral measure ``vᵀ δ(H − λ) v``, with ``v`` a unit Rademacher vector.
    """

    grid: torch.Tensor
    density: torch.Tensor
    density_se: torch.Tensor
    nodes: torch.Tensor
    weights: torch.Tensor
    sigma: float
    n_products: int


# ----------------------------------------------------------------------------- the loss


def _has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def flat_loss(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    bn_mode: str | None = None,
) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
    """``(f, θ₀)``: the loss ``loss_fn(model(x), y)`` as a function of a flat parameter vector.

    ``θ₀`` is a detached copy of the trainable parameters (``requires_grad=True`` ones, in
    ``named_parameters`` order) concatenated; frozen parameters and buffers are used as they
    are. ``f`` evaluates a shallow copy of the model (sharing its parameter and buffer tensors)
    through ``torch.func.functional_call``, so the model itself, its ``training`` flag, its
    ``.grad`` and its buffers are never touched. The copy runs in eval mode (dropout off: ``f``
    is deterministic) except for batch-norm layers, which follow ``bn_mode``:

    - ``"eval"``: normalise with the running statistics;
    - ``"train"`` (or ``"batch"``, as in :mod:`sgdbook.gradients`): normalise with the statistics
      of the batch ``x`` (the training loss), without
      updating any running statistic (``torch.func.replace_all_batch_norm_modules_`` on the copy).

    A model with batch norm needs ``bn_mode`` stated; without batch norm it is ignored.
    """
    if bn_mode == "batch":  # the name sgdbook.gradients uses for the same mode
        bn_mode = "train"
    if bn_mode not in (None, "eval", "train"):
        raise ValueError(f"bn_mode must be 'eval' or 'train' (alias 'batch'), got {bn_mode!r}")
    has_bn = _has_batch_norm(model)
    if has_bn and bn_mode is None:
        raise ValueError("the model has batch norm: say bn_mode='eval' or bn_mode='train'")
    named = [(n, q) for n, q in model.named_parameters() if q.requires_grad]
    if not named:
        raise ValueError("the model has no trainable parameters")
    names = [n for n, _ in named]
    shapes = [q.shape for _, q in named]
    sizes = [q.numel() for _, q in named]
    theta0 = torch.cat([q.detach().reshape(-1) for _, q in named]).clone()

    clone = sharing_copy(model)  # shares every tensor with the model: no parameter memory
    clone.eval()
    if has_bn and bn_mode == "train":
        torch.func.replace_all_batch_norm_modules_(clone)  # drops the copy's running stats only
        for m in clone.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.train()

    def f(theta: torch.Tensor) -> torch.Tensor:
        params = {n: t.view(s) for n, t, s in zip(names, theta.split(sizes), shapes)}
        return loss_fn(torch.func.functional_call(clone, params, (x,)), y)

    return f, theta0


# ----------------------------------------------------------------------------- operators


def _default_chunk(p: int, itemsize: int, device: torch.device) -> int:
    """Rows per batched product (see :class:`HVP`): on the CPU as many ``p``-vectors as fit in
    1 MiB, at most 32; 16 elsewhere."""
    return max(1, min(32, (1 << 20) // (p * itemsize))) if device.type == "cpu" else 16


class HVP:
    """The Hessian-vector product ``v ↦ ∇²f(θ) v`` at a fixed ``θ``, counting its products.

    The gradient graph is built once (``create_graph=True``) and every product is one more
    backward pass through it (reverse-over-reverse), which measured 2.5–3.3× faster per product
    than ``torch.func``'s forward-over-reverse ``jvp(grad(f))`` at p ≈ 100,000 on these CPUs.

    ``batch(V)`` (rows of ``V`` are the vectors) runs the same double backward vmapped over the
    rows (``is_grads_batched=True``) in chunks of ``chunk`` rows. Measured for 100 probes,
    one thread, median of 7 (784-128-10 and 50-16-10-10 ReLU MLPs, cross-entropy on 512 points),
    per product relative to a Python loop of single products:
    p = 101,770: chunks of 16 0.97× (float32) and 1.05× (float64), one chunk of 100 1.2–1.4×;
    p = 1,096: chunks of 16 0.47× (float32) and 0.61× (float64). vmap over
    ``jvp(grad(f))`` was 1.1–1.3× slower than the vmapped double backward at both sizes.
    With two threads the chunked double backward was 0.4–0.75× the loop at p = 101,770.
    Measured again later (float64, 32 products, median of 3) on one thread: p = 101,770 single
    products 4.1 ms, chunks of 2/4/8/16/32 4.5/4.3/4.5/5.1/6.2 ms; p = 1,096: single 0.49 ms,
    chunks of 4/8/16/32 0.44/0.36/0.35/0.34 ms; on two threads p = 101,770: single 2.5 ms,
    chunks of 4/8/16 2.5/2.5/2.9 ms. Hence the default on the CPU: chunks whose vectors take
    at most 1 MiB (32 rows at most), i.e. single products at p ≈ 100,000 in float64 and chunks
    of 32 at p ≈ 1,000; 16 rows on other devices.

    ``loss`` and ``gradient`` hold ``f(θ)`` and ``∇f(θ)`` (detached). The graph keeps the
    activations of one forward/backward pass alive for the operator's lifetime.
    """

    def __init__(
        self, f: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, chunk: int | None = None
    ):
        if theta.ndim != 1:
            raise ValueError(f"theta must be a flat vector, got shape {tuple(theta.shape)}")
        self._leaf = theta.detach().clone().requires_grad_(True)
        self.theta = self._leaf.detach()
        self.p = self.theta.numel()
        self.dtype = self.theta.dtype
        self.device = self.theta.device
        self.chunk = int(chunk or _default_chunk(self.p, self.theta.element_size(), self.device))
        self.n_products = 0
        with torch.enable_grad():
            loss = f(self._leaf)
            (grad,) = torch.autograd.grad(loss, self._leaf, create_graph=True)
        self.loss = loss.detach()
        self.gradient = grad.detach()
        self._grad = grad if grad.requires_grad else None  # None: f is affine in θ, H = 0

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
        bn_mode: str | None = None,
        chunk: int | None = None,
        fast_path: bool = True,
    ) -> HVP | LinearNetHVP:
        """The operator at the model's current parameters (see :func:`flat_loss`).

        For an ``nn.Sequential`` of Linear, ReLU, Identity and Flatten layers with the mean
        cross-entropy of integer labels, the products come from :class:`LinearNetHVP` (the
        R-operator written out: equal to this class's products, tested, and 0.6–0.9× their
        time per product); ``fast_path=False`` forces the autograd graph.
        """
        if fast_path and LinearNetHVP.applies(model, loss_fn, x, y):
            return LinearNetHVP(model, x, y, chunk=chunk)
        f, theta0 = flat_loss(model, loss_fn, x, y, bn_mode=bn_mode)
        return cls(f, theta0, chunk=chunk)

    def _backward(self, v: torch.Tensor, batched: bool) -> torch.Tensor:
        if self._grad is None:
            return torch.zeros_like(v)
        (hv,) = torch.autograd.grad(
            self._grad,
            self._leaf,
            v,
            retain_graph=True,
            is_grads_batched=batched,
            allow_unused=True,
        )
        return torch.zeros_like(v) if hv is None else hv

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        self.n_products += 1
        return self._backward(v, False)

    def batch(self, V: torch.Tensor) -> torch.Tensor:
        """``V @ H`` for a block of row vectors ``V`` (shape ``[b, p]``): ``b`` products."""
        self.n_products += V.shape[0]
        if V.shape[0] == 1 or self.chunk == 1:
            return torch.stack([self._backward(v, False) for v in V])
        return torch.cat([self._backward(c, True) for c in V.split(self.chunk)])


class LinearNetHVP:
    """Hessian-vector products of the mean cross-entropy of a Linear/ReLU network, written out.

    Pearlmutter's R-operator for ``nn.Sequential`` nets of Linear, ReLU, Identity and
    Flatten layers: the activations ``a_l``, ReLU masks, softmax ``π`` and output signals
    ``δ_l = ∂L/∂z_l`` are computed once; a direction ``v = (V_l, c_l)`` then goes forward as
    ``R(z_l) = R(a_{l−1}) W_lᵀ + a_{l−1} V_lᵀ + c_l`` (``R(a) = mask ⊙ R(z)``: a ReLU has no
    second derivative), turns at the loss into ``R(δ_L) = (π ⊙ R(z_L) − π (πᵀR(z_L)))/n``, and
    goes back as ``R(δ_{l−1}) = mask ⊙ (R(δ_l) W_l + δ_l V_l)``, giving
    ``(Hv)_{W_l} = R(δ_l)ᵀ a_{l−1} + δ_lᵀ R(a_{l−1})`` and ``(Hv)_{b_l} = Σ R(δ_l)``. A block of
    vectors goes through the same matrix products with the block folded into them. Same
    interface as :class:`HVP` (``p``, ``theta``, ``loss``, ``gradient``, ``n_products``,
    ``__call__``, ``batch``); parameters in ``named_parameters`` order, as :func:`flat_loss`.

    Measured (512 points, float64, one thread, median of 3 over 32 products): 784-128-10
    (p = 101,770) 3.55 ms per product against 4.1 ms through the autograd graph (the two
    512 × 784 × 128 matrix products take 2.9 ms of either); 50-16-10-10 (p = 1,096) 0.30 ms
    against 0.49 ms single, 0.16–0.18 ms per product in blocks of 8–32.
    """

    _ACTS = (nn.ReLU, nn.Identity, nn.Flatten)

    @classmethod
    def _leaves(cls, model: nn.Module) -> list[nn.Module] | None:
        """The layers in the order of the forward pass, or None where the class does not apply."""
        leaves = _linear_leaves(model)  # None also for hooks and for a layer used twice
        if leaves is None or any(type(m) is not nn.Linear and type(m) not in cls._ACTS for m in leaves):
            return None
        return leaves

    @classmethod
    def applies(cls, model, loss_fn, x: torch.Tensor, y: torch.Tensor) -> bool:
        if loss_fn is not nn.functional.cross_entropy or y.ndim != 1 or y.is_floating_point():
            return False
        leaves = cls._leaves(model)
        if leaves is None:
            return False
        if any(not q.requires_grad or q.dtype != x.dtype or q.device != x.device for q in model.parameters()):
            return False
        if x.shape[0] != y.shape[0]:
            return False
        ndim = x.ndim  # every Linear must see [n, features]; Flatten only as Flatten(1, -1)
        for m in leaves:
            if type(m) is nn.Flatten:
                if (m.start_dim, m.end_dim) != (1, -1):
                    return False
                ndim = 2
            elif type(m) is nn.Linear and ndim != 2:
                return False
        return ndim == 2

    def __init__(self, model: nn.Sequential, x: torch.Tensor, y: torch.Tensor, chunk: int | None = None):
        leaves = self._leaves(model)
        if leaves is None:
            raise ValueError("LinearNetHVP needs an nn.Sequential of Linear, ReLU, Identity and Flatten layers")
        offsets, at = {}, 0
        for q in model.parameters():
            offsets[id(q)] = at
            at += q.numel()
        self.p = at
        self.theta = torch.cat([q.detach().reshape(-1) for q in model.parameters()])
        self.dtype, self.device = self.theta.dtype, self.theta.device
        self.chunk = int(chunk or _default_chunk(self.p, self.theta.element_size(), self.device))
        self.n_products = 0
        n = x.shape[0]
        # forward: each step is ["linear", W, b, a_in, weight offset, bias offset, δ at its output]
        # (δ filled in by the backward pass below), ["mask", ReLU mask] or ["flat", shape before]
        steps: list[tuple] = []
        h = x.detach()
        with torch.no_grad():
            for mod in leaves:
                if type(mod) is nn.Linear:
                    W = mod.weight.detach()
                    b = None if mod.bias is None else mod.bias.detach()
                    ob = None if b is None else offsets[id(mod.bias)]
                    steps.append(["linear", W, b, h, offsets[id(mod.weight)], ob, None])
                    h = nn.functional.linear(h, W, b)
                elif type(mod) is nn.ReLU:
                    mask = (h > 0).to(h.dtype)
                    steps.append(["mask", mask])
                    h = h * mask
                elif type(mod) is nn.Flatten:
                    steps.append(["flat", h.shape])
                    h = h.flatten(1)
            if h.ndim != 2:
                raise ValueError(f"the network's output must be [n, classes], got shape {tuple(h.shape)}")
            logp = torch.log_softmax(h, dim=1)
            self.loss = nn.functional.nll_loss(logp, y)
            self._pi = logp.exp()
            d = self._pi.clone()
            d[torch.arange(n, device=d.device), y] -= 1
            d /= n
            grads = torch.empty(self.p, dtype=self.dtype, device=self.device)
            for st in reversed(steps):
                if st[0] == "linear":
                    _, W, b, a, ow, ob, _ = st
                    st[6] = d  # δ at this layer's output
                    grads[ow : ow + W.numel()] = (d.mT @ a).reshape(-1)
                    if b is not None:
                        grads[ob : ob + b.numel()] = d.sum(0)
                    d = d @ W
                elif st[0] == "mask":
                    d = d * st[1]
                else:
                    d = d.reshape(st[1])
        self.gradient = grads
        self._steps = steps
        self._n = n
        self._first = next(i for i, st in enumerate(steps) if st[0] == "linear")

    def _products(self, V: torch.Tensor) -> torch.Tensor:
        c = V.shape[0]
        out = torch.empty(c, self.p, dtype=self.dtype, device=self.device)
        Ra = None  # R(a) of the current activation, [c, n, f]; None: zero (the input)
        r_in = []  # R(a_in) of each linear step
        for st in self._steps:
            if st[0] == "linear":
                _, W, b, a, ow, ob, _ = st
                Vw = V[:, ow : ow + W.numel()].view(c, *W.shape)
                Rz = torch.matmul(a, Vw.mT)  # [c, n, out]: a_in V_lᵀ
                if Ra is not None:
                    Rz = Rz + Ra @ W.mT
                if b is not None:
                    Rz = Rz + V[:, ob : ob + b.numel()][:, None, :]
                r_in.append(Ra)
                Ra = Rz
            elif st[0] == "mask":
                Ra = Ra * st[1] if Ra is not None else None
            elif Ra is not None:
                Ra = Ra.flatten(2)
        pi = self._pi
        Rd = pi * (Ra - (pi * Ra).sum(-1, keepdim=True)) / self._n  # R(δ_L)
        for i in range(len(self._steps) - 1, self._first - 1, -1):
            st = self._steps[i]
            if st[0] == "linear":
                _, W, b, a, ow, ob, d = st
                Ra_in = r_in.pop()
                hw = out[:, ow : ow + W.numel()].view(c, *W.shape)
                hw.copy_(Rd.mT @ a)  # R(δ_l)ᵀ a_{l−1}
                if Ra_in is not None:
                    hw += d.mT @ Ra_in  # δ_lᵀ R(a_{l−1})
                if b is not None:
                    out[:, ob : ob + b.numel()] = Rd.sum(1)
                if i > self._first:
                    Vw = V[:, ow : ow + W.numel()].view(c, *W.shape)
                    Rd = Rd @ W + d @ Vw
            elif st[0] == "mask":
                Rd = Rd * st[1]
            else:
                Rd = Rd.reshape(c, *st[1])
        return out

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        self.n_products += 1
        return self._products(v.reshape(1, -1))[0]

    def batch(self, V: torch.Tensor) -> torch.Tensor:
        """``V @ H`` for a block of row vectors ``V`` (shape ``[b, p]``): ``b`` products."""
        self.n_products += V.shape[0]
        return torch.cat([self._products(c) for c in V.split(self.chunk)])


class MatrixHVP:
    """The :class:`HVP` interface over an explicit symmetric matrix ``H`` (tests, quadratics)."""

    def __init__(self, H: torch.Tensor):
        if H.ndim != 2 or H.shape[0] != H.shape[1]:
            raise ValueError(f"H must be square, got shape {tuple(H.shape)}")
        self.H = H
        self.p = H.shape[0]
        self.dtype = H.dtype
        self.device = H.device
        self.n_products = 0

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        self.n_products += 1
        return self.H @ v

    def batch(self, V: torch.Tensor) -> torch.Tensor:
        self.n_products += V.shape[0]
        return V @ self.H.mT


def full_hessian(f: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor) -> torch.Tensor:
    """The dense ``[p, p]`` Hessian of ``f`` at ``θ``: ``torch.func.jacfwd(torch.func.grad(f))``.

    For small nets only (``p`` forward-mode passes, vmapped, and ``p²`` numbers). Not
    ``torch.func.hessian`` (= ``jacfwd(jacrev(f))``): on torch 2.14 it returns wrong mixed
    second derivatives between a batch-norm layer's weight and the parameters before it when
    the layer normalises with batch statistics (``bn_mode="train"``); ``jacrev(jacrev(f))`` is
    wrong the same way, while ``jacfwd(grad(f))``, looped double backward and finite differences
    agree to 1e-9 (see the tests; a related silent-correctness report is pytorch/pytorch#196699).
    Elsewhere the two agree to rounding.
    """
    return torch.func.jacfwd(torch.func.grad(f))(theta.detach())


# ----------------------------------------------------------------------------- helpers


def _space(hvp, p: int, dtype, device, like: torch.Tensor | None = None):
    """dtype and device of the operator's vectors: explicit, else from ``like``, else the operator."""
    if like is not None:
        dtype = dtype or like.dtype
        device = device or like.device
    dtype = dtype or getattr(hvp, "dtype", None) or torch.get_default_dtype()
    device = torch.device(device or getattr(hvp, "device", None) or "cpu")
    op_p = getattr(hvp, "p", None)
    if op_p is not None and op_p != p:
        raise ValueError(f"p = {p} but the operator acts on vectors of length {op_p}")
    return dtype, device


def _apply_block(hvp, V: torch.Tensor) -> torch.Tensor:
    """``H`` applied to the rows of ``V``: batched where the operator has ``batch``."""
    if hasattr(hvp, "batch"):
        return hvp.batch(V)
    return torch.stack([hvp(v) for v in V])  # plain callables (autograd inside is not vmappable)


def _gaussian(shape, generator: torch.Generator, dtype, device) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=dtype, device=generator.device).to(device)


def _rademacher(shape, generator: torch.Generator, dtype, device) -> torch.Tensor:
    z = torch.randint(0, 2, shape, generator=generator, device=generator.device, dtype=dtype)
    return z.mul_(2).sub_(1).to(device)


def _start_vector(v0, generator, p: int, dtype, device) -> torch.Tensor:
    if v0 is None:
        return _gaussian((p,), generator, dtype, device)
    if v0.numel() != p:
        raise ValueError(f"v0 has {v0.numel()} entries, expected p = {p}")
    return v0.reshape(-1).to(device, dtype)


def _default_generator(generator: torch.Generator | None) -> torch.Generator:
    # a fresh, fixed-seed generator: reproducible and independent of the global RNG
    return generator if generator is not None else torch.Generator().manual_seed(0)


def _orthogonalize(w: torch.Tensor, V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Classical Gram–Schmidt twice ("twice is enough") of ``w`` against the rows of ``V``."""
    h = V @ w
    w = w - h @ V
    h2 = V @ w
    return w - h2 @ V, h + h2


# ----------------------------------------------------------------------------- Lanczos


_READ_AT_ONCE = ("cpu",)  # devices whose Lanczos records are read every step (tests empty it)


def lanczos(
    hvp: Operator,
    p: int,
    k: int,
    which: str = "largest",
    *,
    tol: float | None = None,
    max_basis: int | None = None,
    max_products: int | None = None,
    check_every: int = 4,
    generator: torch.Generator | None = None,
    v0: torch.Tensor | None = None,
    exact_residuals: bool = False,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> LanczosResult:
    """The ``k`` largest (or smallest) algebraic eigenpairs of the symmetric operator ``hvp``.

    Thick-restart Lanczos (Wu & Simon 2000) with full reorthogonalization: on the CPU each new
    direction gets a classical Gram–Schmidt pass against the whole basis and a second one where
    the first took its norm down by more than κ = 4 (Kahan and Parlett's "twice is enough"
    criterion). In the Lanczos recurrence the first pass typically removes a factor 1–3 (at most
    2.3 over the 52 steps of the appendix's p ≈ 1,000 problem, 4.3 at p ≈ 100,000), so the
    second pass is rare; a laxer κ = 100 let the loss of orthogonality grow to 6e-12 from
    start vectors close to an invariant subspace (tested, with a bound of 1e-13). On a GPU,
    where β is not read in the loop, the recurrence's two directions and then the whole basis,
    always (the whole basis twice at the first step of a sequence). The Krylov basis grows to ``max_basis``
    vectors (default ``max(2k + 20, 40)``, at most ``p``); if the ``k`` wanted Ritz pairs have
    not converged by then, the basis is compressed to the ``k + (max_basis − k) // 2`` best
    Ritz vectors plus the residual direction and grown again. The basis stays on the
    operator's device; on a GPU the hot loop never synchronises, and only at the checks do the
    recorded coefficients come to the host, where the ``m × m`` projection is solved (float64).
    A check comes ``check_every`` products after the first ``k``, then where the worst residual,
    extrapolated at the rate seen between the last two checks, meets the tolerance (1 to
    ``3·check_every`` products ahead; straight at the restart where that is fewer than
    ``check_every`` further and convergence is not expected before it): at p ≈ 1,000 a check
    costs about half a product.

    A Ritz pair ``(θ, y)`` has converged when ``‖Hy − θy‖ ≤ tol · max(|θ|, ε^{1/3}‖H‖)``
    (``ε`` the dtype's machine epsilon, ``‖H‖`` the running estimate from the products). For a
    symmetric ``H`` some eigenvalue then lies within ``‖Hy − θy‖`` of ``θ`` (so the relative
    error is at most ``tol``); in practice the error is about ``‖Hy − θy‖² / gap``. Default
    ``tol = √ε`` (1.5e-8 in float64, 3.5e-4 in float32). ``max_products`` (default
    ``max(20 · max_basis, 2000)``) bounds the work; ``converged`` says whether it sufficed.

    The start vector is ``v0`` or a Gaussian draw from ``generator`` (default: a fresh generator
    seeded 0, never the global RNG). An invariant subspace (breakdown) is continued with a
    fresh random vector orthogonal to the basis, which must then run ``k`` steps before
    convergence is declared. A single-vector Krylov sequence sees one copy of a repeated
    eigenvalue; further copies (e.g. the null space of a ReLU net's Hessian with dead units)
    come from these fresh sequences after breakdowns, so exact multiplicities are found
    in practice but not guaranteed.

    ``residuals`` are the Lanczos estimates ``|β_m (y)_m|``, exact in exact arithmetic; with
    ``exact_residuals=True`` they are recomputed as ``‖Hv − λv‖`` at ``k`` extra products.
    """
    if which not in ("largest", "smallest"):
        raise ValueError(f"which must be 'largest' or 'smallest', got {which!r}")
    if not 1 <= k <= p:
        raise ValueError(f"need 1 <= k <= p, got k = {k}, p = {p}")
    dtype, device = _space(hvp, p, dtype, device, v0)
    eps = torch.finfo(dtype).eps
    tol = math.sqrt(eps) if tol is None else float(tol)
    m_max = min(max_basis or max(2 * k + 20, 40), p)
    if m_max < k + 1 and m_max < p:
        raise ValueError(f"max_basis must exceed k, got {m_max} for k = {k}")
    keep = min(k + (m_max - k) // 2, m_max - 1) if m_max < p else m_max
    max_products = max(20 * m_max, 2000) if max_products is None else int(max_products)
    gen = _default_generator(generator)
    largest = which == "largest"

    V = torch.empty(m_max + 1, p, dtype=dtype, device=device)  # rows: the basis (row j written before use)
    v = _start_vector(v0, gen, p, dtype, device)
    torch.div(v, v.norm(), out=V[0])
    rows, Vt = V.unbind(0), V.mT
    work = torch.empty(p, dtype=dtype, device=device)  # the new direction while it is orthogonalised
    views: dict[int, tuple] = {}  # j -> rows [0, j], rows j − 1 and j, and their transposes

    def views_at(i: int) -> tuple:
        i0 = max(i - 1, 0)
        views[i] = (V[: i + 1], Vt[:, : i + 1], V[i0 : i + 1], Vt[:, i0 : i + 1])
        return views[i]

    floor = eps ** (2 / 3)  # a coupling below floor·‖H‖ is a breakdown
    kappa = 4.0  # a second Gram–Schmidt pass where ‖w‖ fell by more (see the docstring)
    tiny = torch.finfo(dtype).tiny
    # The projection VᵀHV is an arrow (restart block: diag(θ_kept) bordered by s in row/column
    # `kept`) followed by a tridiagonal (α on the diagonal, β beside it). On a GPU the hot loop
    # only keeps each step's Gram–Schmidt coefficients and β as tensors on the device (no host
    # synchronisation, no further operations); at a check they come to the host in one
    # transfer, where α is read off and the small projected problem is solved. On the CPU they
    # are read at once.
    kept = 0
    a_host: list[float] = []  # α and β of the current tridiagonal run, on the host
    b_host: list[float] = []
    anorm_host = 0.0  # ‖H‖ ≥ max |α|, β seen so far
    last = None  # (products, worst residual / threshold) at the previous check

    # the projection, filled in as α and β arrive (entries beyond the basis size are stale)
    T = np.zeros((m_max + 1, m_max + 1))

    j = 0  # current basis size
    products = restarts = 0
    since_breakdown, needed = 0, 0  # steps of the current Krylov sequence; steps it must run
    probe = None  # rows of a sequence that must run `needed` steps but broke down before
    interval = check_every
    on_cpu = device.type in _READ_AT_ONCE
    while True:
        # steps until the next check: `interval`, but no check before k vectors exist
        stop = min(max(j + interval, k), m_max, j + max(max_products - products, 1))
        hs, h2s, bs = [], [], []  # records kept on a GPU until the check
        a_new, b_new = [], []  # α, β of this block on the host
        while j < stop:  # the hot loop: no host synchronisation
            w = hvp(rows[j])
            products += 1
            pre, pre_t, pair, pair_t = views.get(j) or views_at(j)
            if on_cpu:  # reading a CPU tensor costs no synchronisation
                # one classical Gram–Schmidt pass against the whole basis, repeated only where it
                # removed most of w (‖w‖ fell by more than κ: Kahan and Parlett's criterion)
                h = pre @ w
                w = torch.addmv(w, pre_t, h, alpha=-1, out=work)
                bf = float(torch.linalg.vector_norm(w))
                hl = h.tolist()
                af = hl[-1]  # α_j: the coefficient of v_j
                if kappa * bf < math.hypot(bf, *hl):
                    h = pre @ w
                    w.addmv_(pre_t, h, alpha=-1)
                    bf = float(torch.linalg.vector_norm(w))
                    af += h.tolist()[-1]
                T[j, j] = af
                T[j, j + 1] = T[j + 1, j] = bf
                a_new.append(af)
                b_new.append(bf)
                # bf = 0 only for w = 0; after a breakdown the check below replaces the new row
                torch.mul(w, 1.0 / max(bf, tiny), out=rows[j + 1])
                anorm_host = max(anorm_host, abs(af), bf)
            else:
                # β is not read here, so both passes always run: inside a tridiagonal run the
                # recurrence's two directions first (they carry nearly all of w), then the whole
                # basis for the rounding-level rest; at the first step of a sequence (start,
                # restart's arrowhead) the whole basis twice
                if j > kept:
                    h = pair @ w
                    w = torch.addmv(w, pair_t, h, alpha=-1, out=work)
                else:
                    h = pre @ w
                    w = torch.addmv(w, pre_t, h, alpha=-1, out=work)
                h2 = pre @ w
                w.addmv_(pre_t, h2, alpha=-1)
                b = torch.linalg.vector_norm(w)
                hs.append(h)
                h2s.append(h2)
                bs.append(b)
                torch.div(w, b.clamp_min(tiny), out=rows[j + 1])
            j += 1
            since_breakdown += 1
            if on_cpu and b_new[-1] <= floor * anorm_host:  # a breakdown: to the check at once
                break

        scanned = len(b_host)  # records before this block have been checked (and cut where needed)
        if not on_cpu:  # one transfer per check
            block = torch.cat([*hs, *h2s, torch.stack(bs)]).cpu().double().numpy()
            ends, at = [], -1
            for h in (*hs, *h2s):
                at += h.shape[0]
                ends.append(at)
            a_new = (block[ends[: len(hs)]] + block[ends[len(hs) :]]).tolist()  # α_j: v_j's coefficients in both passes
            b_new = block[at + 1 :].tolist()
            t = np.arange(j - len(a_new), j)
            T[t, t] = a_new
            T[t, t + 1] = T[t + 1, t] = b_new
        a_host += a_new
        b_host += b_new
        anorm_host = max(anorm_host, max(map(abs, a_new)), max(b_new))
        # breakdown (an invariant subspace): cut the coupling, continue with a random vector
        cut = floor * anorm_host
        broke = min(b_new) <= cut
        if broke:
            i = scanned + next(t for t, bt in enumerate(b_new) if bt <= cut)
            del a_host[i + 1 :], b_host[i + 1 :]
            b_host[i] = 0.0
            j = kept + i + 1
            T[j - 1, j] = T[j, j - 1] = 0.0
            V[j] = 0
            # the new sequence must run k steps before convergence is declared, so that further
            # copies of a repeated eigenvalue (invisible to the old sequence) can show up; unless
            # the old one was itself such a sequence, broke down sooner (it spanned a whole
            # invariant subspace: a null space does this at once) and found no wanted eigenvalue
            # (decided below, once the wanted ones are known)
            length = since_breakdown - (len(b_new) - 1 - (i - scanned))  # steps of the old sequence
            if 0 < needed and length < needed and j - length > kept:
                probe = (j - length, j)  # its rows, a block of their own in the projection
            since_breakdown, needed = 0, min(k, p - j)
            if j < p:
                r = _gaussian((p,), gen, dtype, device)
                for _ in range(2):
                    r, _ = _orthogonalize(r / r.norm(), V[:j])
                V[j] = r / r.norm()

        theta, Y = (t.numpy() for t in torch.linalg.eigh(torch.from_numpy(T[:j, :j])))
        # θ comes ascending: the wanted pairs are the last (largest) or the first (smallest);
        # the test in plain Python (a handful of numbers; numpy calls cost more here)
        want = list(range(j - 1, j - 1 - min(k, j), -1) if largest else range(min(k, j)))
        th, y_last = theta.tolist(), Y[j - 1].tolist()
        beta, floor_scale = abs(b_host[-1]), eps ** (1 / 3) * anorm_host
        res = [beta * abs(y_last[i]) for i in want]
        thresholds = [tol * max(abs(th[i]), floor_scale) for i in want]
        # ≤ 1: every wanted pair has converged (a zero threshold only for a zero operator)
        worst = max(r / t if t else (0.0 if r == 0 else math.inf) for r, t in zip(res, thresholds))
        if probe is not None:  # a probing sequence ended: were its (exact) eigenvalues all unwanted?
            edge, margin = th[want[-1]], thresholds[-1]
            found = np.linalg.eigvalsh(T[probe[0] : probe[1], probe[0] : probe[1]])
            unwanted = (found < edge - margin) if largest else (found > edge + margin)
            if j >= k and unwanted.all():
                needed = 0
            probe = None
        converged = j >= k and since_breakdown >= needed and worst <= 1
        exhausted = j >= p  # the whole space is spanned: the projection is exact
        if converged or exhausted or products >= max_products:
            break
        # next check: where the worst residual, falling at the rate seen since the last check,
        # meets the tolerance (between 1 and 3·check_every products; check_every without a rate;
        # at the restart, if that comes within check_every and convergence is not expected before)
        interval = check_every
        if last is not None and 0 < worst < last[1]:
            rate = math.log(worst / last[1]) / (products - last[0])
            ahead = max(math.ceil(math.log(worst) / -rate), 1)
            interval = min(ahead, 3 * check_every)
            # convergence expected only after the restart: no check just before it
            if j + ahead > m_max > j + interval > m_max - check_every:
                interval = m_max - j
        if broke and not on_cpu:  # probing sequences often break down at once: look after one step
            interval = 1
        last = (products, worst)
        if j < m_max:
            continue
        # thick restart: keep the best Ritz vectors and the residual direction
        best = list(range(j - 1, j - 1 - keep, -1) if largest else range(keep))
        V[:keep] = torch.as_tensor(Y[:, best], dtype=dtype, device=device).mT @ V[:j]
        V[keep] = V[j]
        T[:keep, :keep] = np.diag(theta[best])
        T[keep, :keep] = T[:keep, keep] = b_host[-1] * Y[j - 1, best]
        a_host, b_host = [], []
        j = kept = keep
        restarts += 1

    vals = torch.as_tensor(theta[want], dtype=dtype, device=device)
    vecs = (torch.as_tensor(Y[:, want], dtype=dtype, device=device).mT @ V[:j]).mT
    if exhausted:
        converged = True
    if exact_residuals:
        R = _apply_block(hvp, vecs.mT.contiguous()) - vals[:, None] * vecs.mT
        products += vecs.shape[1]
        res_out = R.norm(dim=1)
    else:
        res_out = torch.as_tensor(res, dtype=dtype, device=device)
    return LanczosResult(vals, vecs, res_out, products, bool(converged), restarts)


# ----------------------------------------------------------------------------- power iteration


def _power(op, v, tol, max_iter, check_every, scale_floor):
    """Power iteration on ``op`` from ``v``: (Rayleigh quotient, vector, residual, products, converged)."""
    v = v / v.norm()
    n = 0
    theta = res = None
    while n < max_iter:
        for _ in range(min(check_every, max_iter - n)):  # no host synchronisation in here
            w = op(v)
            n += 1
            theta = v @ w
            res = (w - theta * v).norm()
            v = w / w.norm().clamp_min(torch.finfo(v.dtype).tiny)
        if bool(res <= tol * torch.maximum(theta.abs(), scale_floor)):
            return theta, v, res, n, True
    return theta, v, res, n, False


def power_iteration(
    hvp: Operator,
    p: int,
    *,
    tol: float = 1e-5,
    max_iter: int = 1000,
    check_every: int = 5,
    generator: torch.Generator | None = None,
    v0: torch.Tensor | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> PowerResult:
    """The largest *algebraic* eigenvalue of ``hvp`` by power iteration (shifted if needed).

    Plain power iteration converges to the eigenvalue of largest *magnitude* (PyHessian's
    ``eigenvalues`` returns that, negative ones included). Here a first run finds the dominant
    eigenvalue ``θ``; if ``θ ≥ 0`` it is the largest algebraic one. If ``θ < 0``, a second run
    iterates ``H − θI`` (spectrum shifted to ``≥ 0`` up to the first run's error), whose dominant
    eigenvalue is ``λ_max − θ``; ``shift`` reports the ``θ`` used. Convergence: the residual
    ``‖Hv − λv‖ ≤ tol · |λ|`` (the eigenvalue error is about its square over the gap), checked
    every ``check_every`` products, at most ``max_iter`` products per run. For several or
    accurate eigenpairs use :func:`lanczos`, which needs far fewer products.
    """
    dtype, device = _space(hvp, p, dtype, device, v0)
    gen = _default_generator(generator)
    start = _start_vector(v0, gen, p, dtype, device)
    zero = torch.zeros((), dtype=dtype, device=device)
    theta, v, res, n, ok = _power(hvp, start, tol, max_iter, check_every, zero)
    shift = 0.0
    if float(theta) < 0:
        shift = float(theta)
        floor = torch.full((), abs(shift), dtype=dtype, device=device)
        mu, v, res, n2, ok = _power(
            lambda u: hvp(u) - shift * u, start, tol, max_iter, check_every, floor
        )
        theta, n = mu + shift, n + n2
    return PowerResult(float(theta), v, float(res), shift, n, bool(ok))


# ----------------------------------------------------------------------------- Hutchinson


def _chan_update(count, mean, m2, block):
    """Merge a block of samples (rows) into running (count, mean, M2) — Chan et al.'s formula."""
    nb = block.shape[0]
    mb = block.mean(0)
    m2b = ((block - mb) ** 2).sum(0)
    total = count + nb
    delta = mb - mean
    mean = mean + delta * (nb / total)
    m2 = m2 + m2b + delta**2 * (count * nb / total)
    return total, mean, m2


def hutchinson_trace(
    hvp: Operator,
    p: int,
    n_probes: int,
    generator: torch.Generator,
    *,
    batch_size: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> TraceEstimate:
    """``tr H`` by Hutchinson's estimator with ``n_probes`` Rademacher probes (all of them used).

    Unbiased; its variance per probe is ``2(‖H‖_F² − Σ H_ii²)``. ``se`` is the sample sd over
    probes divided by ``√n_probes`` (NaN for one probe). There is no early stop on a tolerance
    (PyHessian stops after as few as two probes); any ``n_probes ≥ 1`` is allowed, also more than
    ``p``. Probes are drawn and go through ``hvp.batch`` in blocks of ``batch_size`` (default:
    the operator's ``chunk``, else 64), and only ``zᵀHz`` is kept of each: large blocks of fresh
    ``p``-vectors cost more in first-touch page faults than they save (at p = 101,770 in float64,
    blocks of 64 took 0.66 s for 100 probes against 0.43 s one probe at a time).
    """
    if n_probes < 1:
        raise ValueError("need at least one probe")
    dtype, device = _space(hvp, p, dtype, device)
    batch_size = batch_size or getattr(hvp, "chunk", None) or 64
    samples = []
    done = 0
    while done < n_probes:
        b = min(batch_size, n_probes - done)
        Z = _rademacher((b, p), generator, dtype, device)
        samples.append((Z * _apply_block(hvp, Z)).sum(1))
        done += b
    s = torch.cat(samples)
    sd = float(s.std()) if n_probes > 1 else float("nan")
    return TraceEstimate(float(s.mean()), sd / math.sqrt(n_probes), sd, n_probes, n_probes)


def hutchinson_diag(
    hvp: Operator,
    p: int,
    n_probes: int,
    generator: torch.Generator,
    *,
    batch_size: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> DiagEstimate:
    """``diag H`` by the mean of ``z ⊙ Hz`` over ``n_probes`` Rademacher probes.

    Unbiased; coordinate ``i`` has per-probe variance ``Σ_{j≠i} H_ij²``; ``se`` is the sample sd
    per coordinate over ``√n_probes`` (NaN for one probe). Running moments are merged block by
    block (Chan et al.), so memory is ``O(batch_size · p)`` whatever ``n_probes``; the default
    block is the operator's ``chunk`` (else 64), as in :func:`hutchinson_trace`.
    """
    if n_probes < 1:
        raise ValueError("need at least one probe")
    dtype, device = _space(hvp, p, dtype, device)
    batch_size = batch_size or getattr(hvp, "chunk", None) or 64
    mean = torch.zeros(p, dtype=dtype, device=device)
    m2 = torch.zeros(p, dtype=dtype, device=device)
    count = 0
    while count < n_probes:
        b = min(batch_size, n_probes - count)
        Z = _rademacher((b, p), generator, dtype, device)
        count, mean, m2 = _chan_update(count, mean, m2, Z * _apply_block(hvp, Z))
    se = (
        (m2 / (n_probes - 1) / n_probes).sqrt()
        if n_probes > 1
        else torch.full_like(mean, float("nan"))
    )
    return DiagEstimate(mean, se, n_probes, n_probes)


# ----------------------------------------------------------------------------- spectral density


def _lanczos_tridiag(hvp, V0: torch.Tensor, n_steps: int, reorthogonalize: bool):
    """Independent Lanczos runs from the unit rows of ``V0`` in lockstep: tridiagonals ``[b, m, m]``.

    One batched product per step for all probes. A run that meets an invariant subspace gets a
    zero coupling from then on, so its later (meaningless) steps carry no quadrature weight.
    """
    b, p = V0.shape
    dtype = V0.dtype
    eps = torch.finfo(dtype).eps
    basis = V0.new_zeros(b, n_steps, p) if reorthogonalize else None
    alpha = V0.new_zeros(b, n_steps)
    beta = V0.new_zeros(b, n_steps)
    anorm = V0.new_zeros(b)
    alive = torch.ones(b, dtype=torch.bool, device=V0.device)
    v, v_prev, b_prev = V0, torch.zeros_like(V0), V0.new_zeros(b)
    for j in range(n_steps):
        if basis is not None:
            basis[:, j] = v
        w = _apply_block(hvp, v)
        anorm = torch.maximum(anorm, w.norm(dim=1))
        a = (w * v).sum(1)
        w = w - a[:, None] * v - b_prev[:, None] * v_prev
        if basis is not None:  # full reorthogonalization, twice
            for _ in range(2):
                c = torch.einsum("bjp,bp->bj", basis[:, : j + 1], w)
                w = w - torch.einsum("bjp,bj->bp", basis[:, : j + 1], c)
                a = a + c[:, j]
        alpha[:, j] = a
        bn = w.norm(dim=1)
        alive = alive & (bn > eps ** (2 / 3) * anorm)
        bn = torch.where(alive, bn, torch.zeros_like(bn))
        beta[:, j] = bn
        # a finished run continues with zero vectors: zero blocks of T, zero weight
        v_prev, v = (
            v,
            torch.where(alive[:, None], w / bn.clamp_min(torch.finfo(dtype).tiny)[:, None], 0),
        )
        b_prev = bn
    T = (
        torch.diag_embed(alpha)
        + torch.diag_embed(beta[:, :-1], 1)
        + torch.diag_embed(beta[:, :-1], -1)
    )
    return T


def spectral_density(
    hvp: Operator,
    p: int,
    n_probes: int,
    n_steps: int,
    generator: torch.Generator,
    grid: torch.Tensor | int | None = None,
    sigma: float | None = None,
    *,
    batch_size: int = 16,
    reorthogonalize: bool = True,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> SpectralDensity:
    """Eigenvalue density of ``H`` by stochastic Lanczos quadrature (Golub & Meurant; Ghorbani et al. 2019).

    For each unit Rademacher probe ``v``, ``n_steps`` Lanczos steps give the Gauss quadrature
    ``(nodes θ_i, weights τ_i = (Y_{0i})²)`` of the measure ``Σ_λ (vᵀu_λ)² δ_λ``, exact for
    polynomials of degree ``< 2·n_steps``; its mean over probes estimates ``(1/p) Σ_λ δ_λ``. The
    density is ``mean_probes Σ_i τ_i N(x; θ_i, sigma²)`` on ``grid`` (a tensor, or a number of
    points spanning the nodes ± 5 sigma; default 1000). Default ``sigma`` is 1 % of the nodes'
    range. The smoothed density integrates to 1 and has mean ``Σ τθ`` (whose expectation is
    ``tr H / p``) and second moment ``Σ τθ² + sigma²`` (expectation ``tr H² / p + sigma²``).

    Probes run in lockstep, ``batch_size`` at a time, one batched product per step; with
    ``reorthogonalize`` (default) each keeps its whole basis (``batch_size · n_steps · p``
    numbers) for full reorthogonalization. ``n_steps`` is capped at ``p``.
    """
    if n_probes < 1 or n_steps < 1:
        raise ValueError("need n_probes >= 1 and n_steps >= 1")
    dtype, device = _space(hvp, p, dtype, device)
    n_steps = min(n_steps, p)
    nodes, weights = [], []
    done = 0
    while done < n_probes:
        b = min(batch_size, n_probes - done)
        V0 = _rademacher((b, p), generator, dtype, device) / math.sqrt(p)
        theta, Y = torch.linalg.eigh(_lanczos_tridiag(hvp, V0, n_steps, reorthogonalize))
        nodes.append(theta)
        weights.append(Y[:, 0, :] ** 2)
        done += b
    nodes = torch.cat(nodes)
    weights = torch.cat(weights)
    if sigma is None:
        span = float(nodes.max() - nodes.min())
        sigma = 0.01 * span if span > 0 else 1e-3 * max(1.0, float(nodes.abs().max()))
    sigma = float(sigma)
    if grid is None or isinstance(grid, int):
        lo = float(nodes.min()) - 5 * sigma
        hi = float(nodes.max()) + 5 * sigma
        grid = torch.linspace(lo, hi, 1000 if grid is None else grid, dtype=dtype, device=device)
    grid = grid.to(device, dtype)
    kernel = torch.exp(-0.5 * ((grid[None, None, :] - nodes[:, :, None]) / sigma) ** 2)
    per_probe = (weights[:, :, None] * kernel).sum(1) / (sigma * math.sqrt(2 * math.pi))
    density = per_probe.mean(0)
    if n_probes > 1:
        se = per_probe.std(0) / math.sqrt(n_probes)
    else:
        se = torch.full_like(density, float("nan"))
    return SpectralDensity(grid, density, se, nodes, weights, sigma, n_probes * n_steps)


# ----------------------------------------------------------------------------- subspaces


def principal_angles(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Principal angles (radians, ascending) between the column spaces of ``A`` and ``B``.

    ``min(rank)`` angles for full-column-rank ``A`` (``[n, a]``) and ``B`` (``[n, b]``): QR of
    each, then the singular values of ``Q_Aᵀ Q_B`` (cosines) and of ``Q_B − Q_A Q_Aᵀ Q_B``
    (sines); small angles come from the sines, large ones from the cosines (Knyazev & Argentati
    2002), as in ``scipy.linalg.subspace_angles`` (which lists them in descending order).
    """
    if A.ndim != 2 or B.ndim != 2 or A.shape[0] != B.shape[0]:
        raise ValueError(
            f"need two matrices with the same number of rows, got {tuple(A.shape)}, {tuple(B.shape)}"
        )
    qa = torch.linalg.qr(A).Q
    qb = torch.linalg.qr(B).Q
    if qa.shape[1] < qb.shape[1]:
        qa, qb = qb, qa
    m = qa.mT @ qb
    cos = torch.linalg.svdvals(m).clamp(-1, 1)  # descending → ascending angles
    sin = torch.linalg.svdvals(qb - qa @ m).flip(0).clamp(-1, 1)  # ascending
    return torch.where(cos**2 >= 0.5, torch.arcsin(sin), torch.arccos(cos))


class ResidualOperator:
    """``H_p v = M v − H v``: the part of the Hessian that the second moment ``M`` of the
    per-example gradients does not explain (the Hessian paper's Proposition 1, ``H = M − H_p``;
    for cross-entropy ``H_p = (1/n) Σ ∇²p_i / p_i`` with ``p_i`` the probability of the label).

    ``hvp`` is an :class:`HVP` (or anything with ``__call__``), ``second_moment`` a
    :class:`sgdbook.gradients.SecondMomentOperator` (or anything with ``@``) at the same point.
    """

    def __init__(self, hvp, second_moment) -> None:
        self.hvp = hvp
        self.second_moment = second_moment

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        return self.second_moment @ v - self.hvp(v)

    def batch(self, V: torch.Tensor) -> torch.Tensor:
        """Rows of ``V`` (``[b, p]``) mapped to rows of ``H_p V``."""
        MV = (self.second_moment @ V.T).T
        HV = self.hvp.batch(V) if hasattr(self.hvp, "batch") else torch.stack([self.hvp(v) for v in V])
        return MV - HV
