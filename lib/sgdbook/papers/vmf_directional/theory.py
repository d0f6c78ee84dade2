"""The geometry behind Section 3.3 and Supplements C–D of the vMF paper.

Notation. Fixed points ``p_1 … p_{n_b}`` in ``R^d`` (local minibatch solutions) seen from a
location ``w``: unit directions ``x_j = (p_j − w)/‖p_j − w‖``, their sum ``S(w) = Σ_j x_j``
and ``κ̂(w) = h(‖S(w)‖) = κ̂(r̄ = ‖S‖/n_b)``. Moving ``w`` by ``ε v`` changes ``‖S‖²`` at the
rate ``2⟨S, J v⟩`` with the symmetric matrix ``J = −Σ_j (I − x_j x_jᵀ)/‖p_j − w‖``; the paper's
``f′(0)`` (Lemma 2) is that rate along ``v = S``. ``S`` is minus the gradient of the
Fermat–Weber objective ``Σ_j ‖p_j − w‖`` and ``−J`` its Hessian, so Lemma 2 says that a small
gradient step on a convex function shrinks its gradient.

Also here: the vMF normaliser and an exact sphere quadrature (Definition 1), the exact
maximum-likelihood κ (Bessel ratio), the Kantorovich bound that sharpens Lemma D.1, the
ball-constrained minimiser of Definition 2 for a quadratic, and SGD epochs on minibatch
quadratics ``f_i(w) = ½ (w − p_i)ᵀ H_i (w − p_i)`` batched over independent runs.

Everything works in the dtype of its inputs (use float64 for exact checks) and takes an
explicit ``torch.Generator`` where it draws random numbers.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import special

from sgdbook.directional import kappa_hat, kappa_mle, vmf_mean_cosine  # noqa: F401

# ------------------------------------------------------------------ Definition 1: the vMF law


def sphere_area(d: int) -> float:
    """Surface area ``2 π^{d/2} / Γ(d/2)`` of the unit sphere ``S^{d−1}`` in ``R^d``."""
    return 2.0 * math.pi ** (d / 2) / math.gamma(d / 2)


def vmf_log_normaliser(d: int, kappa: float) -> float:
    """``log C_d(κ)`` with ``C_d(κ) = κ^{d/2−1} / ((2π)^{d/2} I_{d/2−1}(κ))``; ``1/area`` at κ = 0."""
    if kappa < 0:
        raise ValueError(f"kappa must be >= 0, got {kappa}")
    if kappa == 0:
        return -math.log(sphere_area(d))
    # ive(ν, κ) = I_ν(κ) e^{−κ}: no overflow for large κ
    return (d / 2 - 1) * math.log(kappa) - (d / 2) * math.log(2 * math.pi) - math.log(special.ive(d / 2 - 1, kappa)) - kappa


def sphere_quadrature(d: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Points ``[N, d]`` and weights ``[N]`` with ``Σ w f(x) ≈ ∫_{S^{d−1}} f`` (surface measure).

    Hyperspherical coordinates: Gauss–Legendre with ``n`` nodes in each of the ``d − 2`` polar
    angles (weights times the ``sin^k`` Jacobian) and ``2n`` equally spaced azimuths (the
    trapezoid rule, spectrally accurate for periodic integrands). ``N = (2n)·n^{d−2}``; meant
    for ``d ≤ 4``.
    """
    if d < 2:
        raise ValueError(f"the sphere S^(d-1) needs d >= 2, got d = {d}")
    t, wt = np.polynomial.legendre.leggauss(n)
    polar, polar_w = (t + 1) * math.pi / 2, wt * math.pi / 2
    azim = np.arange(2 * n) * (math.pi / n)
    grids = np.meshgrid(*([polar] * (d - 2) + [azim]), indexing="ij")
    wgrids = np.meshgrid(*([polar_w] * (d - 2) + [np.full(2 * n, math.pi / n)]), indexing="ij")
    angles = [g.ravel() for g in grids]
    weight = np.prod([g.ravel() for g in wgrids], axis=0)
    x = np.empty((angles[0].size, d))
    sin_prod = np.ones(angles[0].size)
    for k in range(d - 2):  # polar angle k carries the Jacobian sin^{d−2−k}
        x[:, k] = sin_prod * np.cos(angles[k])
        weight = weight * np.sin(angles[k]) ** (d - 2 - k)
        sin_prod = sin_prod * np.sin(angles[k])
    x[:, d - 2] = sin_prod * np.cos(angles[-1])
    x[:, d - 1] = sin_prod * np.sin(angles[-1])
    return x, weight


# ------------------------------------------------------------------------------ Lemma 1


def kappa_hat_second_derivative(rbar, d: int):
    """``d²κ̂/dr̄² = 2 (d − 1) r̄ (r̄² + 3) / (1 − r̄²)³`` (zero at r̄ = 0, positive on (0, 1))."""
    return 2 * (d - 1) * rbar * (rbar**2 + 3) / (1 - rbar**2) ** 3


# ------------------------------------------------------- Lemma 2 and Theorem 3: the resultant


def unit_directions(p: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x_j = (p_j − w)/‖p_j − w‖`` and ``‖p_j − w‖`` for ``p`` ``[..., n_b, d]``, ``w`` ``[..., d]``."""
    diff = p - w.unsqueeze(-2)
    dist = diff.norm(dim=-1)
    return diff / dist.unsqueeze(-1), dist


def normalised_sum(p: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``S(w) = Σ_j (p_j − w)/‖p_j − w‖``, shape ``[..., d]``."""
    return unit_directions(p, w)[0].sum(-2)


def kappa_hat_at(p: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``κ̂(w) = h(‖S(w)‖)``: Banerjee's κ̂ of the directions from ``w`` to the ``p_j``."""
    n_b, d = p.shape[-2], p.shape[-1]
    return kappa_hat(normalised_sum(p, w).norm(dim=-1) / n_b, d)


def _jacobian_apply(x: torch.Tensor, dist: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``J v = −Σ_j (v − ⟨v, x_j⟩ x_j)/‖p_j − w‖`` (``v`` ``[..., d]``)."""
    along = (x * v.unsqueeze(-2)).sum(-1, keepdim=True)
    return -((v.unsqueeze(-2) - along * x) / dist.unsqueeze(-1)).sum(-2)


def resultant_slope(p: torch.Tensor, w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``d/dε ‖S(w + ε v)‖²`` at ``ε = 0``, i.e. ``2⟨S, J v⟩``."""
    x, dist = unit_directions(p, w)
    return 2 * (x.sum(-2) * _jacobian_apply(x, dist, v)).sum(-1)


def lemma2_slope(p: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The paper's ``f′(0) = −2 Σ_j (‖S‖² − ⟨S, x_j⟩²)/‖p_j − w‖``: the rate along ``v = S``."""
    x, dist = unit_directions(p, w)
    s = x.sum(-2)
    along = (x * s.unsqueeze(-2)).sum(-1)
    return -2 * ((s.norm(dim=-1, keepdim=True) ** 2 - along**2) / dist).sum(-1)


def theorem3_bound(p: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The proof's sufficient perturbation size ``ξ* = |f′(0)| · min_j ‖p_j − w‖ / (4 n_b²)``."""
    n_b = p.shape[-2]
    return lemma2_slope(p, w).abs() * unit_directions(p, w)[1].amin(-1) / (4 * n_b**2)


def theorem3_threshold(p: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact first-order threshold of Theorem 3 and the worst perturbation direction.

    A step along ``S − t`` changes ``‖S‖²`` at the rate ``f′(0) − 2⟨J S, t⟩``; over all ``t``
    of norm ``ξ`` the largest rate is ``f′(0) + 2 ξ ‖J S‖``, reached at ``t ∝ −J S``. Every
    perturbation of norm below ``ξ_true = |f′(0)| / (2 ‖J S‖)`` keeps the decrease (to first
    order) and one of norm above it does not. Returns ``(ξ_true, −J S/‖J S‖)``.
    """
    x, dist = unit_directions(p, w)
    s = x.sum(-2)
    js = _jacobian_apply(x, dist, s)
    slope = 2 * (s * js).sum(-1)
    norm = js.norm(dim=-1)
    return slope.abs() / (2 * norm), -js / norm.unsqueeze(-1)


# ----------------------------------------------------------- Supplement D: condition numbers


def condition_number(a: torch.Tensor) -> torch.Tensor:
    """Definition D.1: ``σ_max(A)/σ_min(A)`` (batched over leading dimensions)."""
    s = torch.linalg.svdvals(a)
    return s[..., 0] / s[..., -1]


def random_spd(shape: tuple[int, ...], d: int, cond: float, generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """Random symmetric positive-definite ``[*shape, d, d]`` matrices with condition number exactly ``cond``.

    Eigenvalues: ``1/cond`` and ``1`` plus ``d − 2`` log-uniform values between them; Haar-random
    eigenvectors (QR of a Gaussian matrix with the signs of R's diagonal fixed).
    """
    if d < 2:
        raise ValueError(f"need d >= 2, got {d}")
    dev = generator.device
    u = torch.rand(*shape, d, generator=generator, dtype=dtype, device=dev)
    u[..., 0], u[..., 1] = 0.0, 1.0
    lam = torch.exp((u - 1.0) * math.log(cond))
    q, r = torch.linalg.qr(torch.randn(*shape, d, d, generator=generator, dtype=dtype, device=dev))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    return (q * lam.unsqueeze(-2)) @ q.transpose(-1, -2)


def direction_gap_sq(h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``‖x/‖x‖ − Hx/‖Hx‖‖²`` (Lemma D.1's left side) for ``h`` ``[..., d, d]``, ``x`` ``[..., d]``."""
    hx = (h @ x.unsqueeze(-1)).squeeze(-1)
    u = x / x.norm(dim=-1, keepdim=True)
    v = hx / hx.norm(dim=-1, keepdim=True)
    return ((u - v) ** 2).sum(-1)


def kantorovich_min_cosine(cond):
    """``min_x cos(x, Hx) = 2√c/(1 + c)`` for a positive-definite ``H`` of condition number ``c``."""
    return 2 * cond**0.5 / (1 + cond)


def kantorovich_worst_vector(h: torch.Tensor) -> torch.Tensor:
    """The ``x`` that attains the Kantorovich bound: ``√λ_max e_min + √λ_min e_max``."""
    lam, vec = torch.linalg.eigh(h)
    return lam[..., -1:].sqrt() * vec[..., :, 0] + lam[..., :1].sqrt() * vec[..., :, -1]


# ---------------------------------------------- Definition 2 and SGD on minibatch quadratics


def ball_minimiser(h: torch.Tensor, p: torch.Tensor, w: torch.Tensor, r: torch.Tensor, iters: int = 200) -> torch.Tensor:
    """``argmin_{‖v − w‖ ≤ r} ½ (v − p)ᵀ H (v − p)`` for positive-definite ``H`` (batched).

    The local minibatch solution of Definition 2 for a quadratic minibatch loss: ``p`` itself
    when ``‖p − w‖ ≤ r``, otherwise ``w + (H + λI)⁻¹ H (p − w)`` with ``λ > 0`` chosen (by
    bisection in the eigenbasis of ``H``) so that the step has length ``r``.
    """
    lam, vec = torch.linalg.eigh(h)
    y = ((p - w).unsqueeze(-2) @ vec).squeeze(-2)  # p − w in the eigenbasis
    r = torch.as_tensor(r, dtype=y.dtype, device=y.device)
    lo = torch.zeros_like(y[..., 0] + r)
    hi = (lam * y).norm(dim=-1) / r + 0 * lo  # ‖z(λ)‖ ≤ ‖Hy‖/λ ≤ r there
    for _ in range(iters):
        mid = (lo + hi) / 2
        too_long = ((lam * y / (lam + mid.unsqueeze(-1))).norm(dim=-1)) > r
        lo, hi = torch.where(too_long, mid, lo), torch.where(too_long, hi, mid)
    z = lam * y / (lam + hi.unsqueeze(-1))
    inside = (y.norm(dim=-1) <= r).unsqueeze(-1)
    z = torch.where(inside, y, z)
    return w + (vec @ z.unsqueeze(-1)).squeeze(-1)


def minibatch_quadratics(a: torch.Tensor, c: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Minibatch losses of per-example quadratics ``f_j(w) = ½ (w − a_j)ᵀ A_j (w − a_j)``.

    ``a`` holds the Hessians ``A_j`` ``[R, n, d, d]``, ``c`` the vectors ``A_j a_j`` ``[R, n, d]``
    (``R`` independent runs), ``idx`` the minibatches: ``[k, m]`` shared by all runs or
    ``[R, k, m]`` per run. Returns ``(H_I, b_I)`` ``[R, k, d, d]``, ``[R, k, d]``, the means over
    each minibatch: the minibatch loss is ``½ wᵀ H_I w − b_Iᵀ w + const``, its minimiser
    ``p_I = H_I⁻¹ b_I`` and its negative gradient ``ĝ_I(w) = b_I − H_I w``. Summed one position
    of the minibatch at a time, so memory stays at the size of the result.
    """
    if idx.ndim == 2:
        idx = idx.expand(a.shape[0], *idx.shape)
    runs = torch.arange(a.shape[0], device=a.device)[:, None]
    h = a[runs, idx[..., 0]].clone()
    b = c[runs, idx[..., 0]].clone()
    for k in range(1, idx.shape[-1]):
        h += a[runs, idx[..., k]]
        b += c[runs, idx[..., k]]
    m = idx.shape[-1]
    return h / m, b / m


def negative_gradients(h: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``ĝ_i(w) = b_i − H_i w`` for every minibatch: ``h`` ``[..., k, d, d]``, ``w`` ``[..., d]``."""
    return b - (h @ w.unsqueeze(-2).unsqueeze(-1)).squeeze(-1)


def sgd_epoch(h: torch.Tensor, b: torch.Tensor, w: torch.Tensor, lr: float, return_path: bool = False):
    """One SGD epoch ``w ← w + η ĝ_i(w)`` over the minibatches in the order given.

    ``h`` ``[R, S, d, d]`` and ``b`` ``[R, S, d]`` are the ``S`` minibatch quadratics visited by
    ``R`` independent runs, ``w`` ``[R, d]`` their starting points. Returns the end points and
    ``Σ_i ĝ_i(w^{i−1})/‖ĝ_i(w^{i−1})‖`` along the way (the second sum of the paper's Eq. 3);
    with ``return_path`` also the iterates ``[R, S + 1, d]``.
    """
    path = [w]
    nsum = torch.zeros_like(w)
    for step in range(h.shape[1]):  # sequential by nature; batched over runs
        g = b[:, step] - (h[:, step] @ w.unsqueeze(-1)).squeeze(-1)
        nsum = nsum + g / g.norm(dim=-1, keepdim=True)
        w = w + lr * g
        if return_path:
            path.append(w)
    if return_path:
        return w, nsum, torch.stack(path, 1)
    return w, nsum
