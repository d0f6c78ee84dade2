"""Section 5 of the Hessian paper as numbers: Δ samples, Theorems 1–3 and Corollaries 1–2.

Notation (paper, Sec. 3 and 5.2): per-example gradients ``g_i`` (rows of ``G``, ``n × p``),
``μ = (1/n) Σ g_i``, ``Σ = (1/n) Σ (g_i − μ)(g_i − μ)ᵀ``, ``M = Σ + μμᵀ`` (Eqs. 4–7), a minibatch
of ``m`` indices drawn uniformly **with replacement** gives ``∇f̃ = (1/m) Σ_{i∈I} g_i`` with mean ``μ``
and covariance ``Σ/m`` (Eq. 8), second moment ``M^(m) = Σ/m + μμᵀ`` (Eq. 26), and
``Δ_t = f(θ_t − η∇f̃) − f(θ_t)`` (Eq. 22).

Everything about ``Σ`` is read off the ``n × n`` Gram matrix ``K = G Gᵀ`` (``p`` can be large,
``n`` is small): with ``P = I − 11ᵀ/n``, ``‖μ‖² = 1ᵀK1/n²``, ``Tr M = tr K/n``, the non-zero
eigenvalues of ``Σ`` are those of ``PKP/n``, and ``μᵀΣμ = ‖PK1‖²/n³`` (:class:`SGStats`).

Each statement comes in the versions the paper's text gives, named as such:

- Theorem 1 (Eqs. 27–29) ``printed`` with ``Tr M_t``; ``batch`` with ``Tr M_t^(m)`` (what the
  proof's Eq. 76 computes); the tail scales ``α_{t,1}, β_{t,1}, α_{t,2}, α_{t,3}`` as printed and
  the proof's ``ς_t`` (Eq. 78, ``1 − ηL/√m``); the escape remark's centre ``(η²/2) L Tr M_t``;
  the second-order (Taylor) mean ``−η‖μ‖² + (η²/2) Tr(H_f M^(m))`` (:func:`theorem1`).
- Corollary 1 (Eq. 30, least squares): printed constants (``σ = 1`` implicit), the proof's
  (App. E.1: ``σ_min(XXᵀ/n²)``, ``x_iᵀH_f x_i ≤ β``, ``η = α/(βLn)``) and the corrected mean bound
  for a general noise scale ``σ``, ``−α²‖Xθ−y‖²/(2βLnσ⁴)`` (:func:`corollary1`); the loss is
  quadratic, so ``E[Δ|θ]`` is exact.
- Corollary 2 (Eq. 31, logistic regression): ``α`` from the printed ``p × p`` matrix
  ``(1/n)Σ x_i x_iᵀ`` (singular when ``n < p``) and from the proof's ``n × n`` Gram ``XXᵀ/n``;
  ``E[Δ|θ]`` exact by enumerating all ``n^m`` minibatches (:func:`corollary2`).
- Theorem 2's ``K_2`` (Eq. 33) from plug-in bounds (:func:`theorem2_k2`).
- Theorem 3's iteration counts (printed ``2L(f₀−f*)(σ²/m+ε)/ε²``, the proof's
  ``4L(f₀−f*)(σ²+ε)/ε²``, and what its argument gives: a step ``η = c‖μ‖²/(2L Tr M)`` lowers the
  mean loss by at least ``c(4−c)/8 · ‖μ‖⁴/(L Tr M)``, i.e. ``1/2`` at the midpoint ``c = 2`` and
  ``3/8`` over the whole interval ``1 < c < 3``) (:func:`theorem3_iterations`).

Bad input (``σ``, ``η``, ``L`` ≤ 0, a batch size < 1, a fraction outside ``[0, 1)``) raises a
``ValueError`` that says what to pass instead. Functions are stateless and float64-exact where
the inputs are float64; random draws use an explicit ``torch.Generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from sgdbook.gradients import all_minibatches, gram_moments

from .decomposition import least_squares_table1, logistic_table1

__all__ = [
    "Corollary1",
    "Corollary2",
    "DeltaSamples",
    "SGStats",
    "Theorem1",
    "check_fraction",
    "check_positive",
    "corollary1",
    "corollary2",
    "delta_samples",
    "extreme_eigenvalues",
    "logistic_mle",
    "segment_smoothness",
    "sphere_model_grads",
    "least_squares",
    "logistic",
    "tail_constant",
    "taylor_curvature",
    "theorem1",
    "theorem2_k2",
    "theorem3_decrease_factor",
    "theorem3_eps",
    "theorem3_iterations",
]


# ----------------------------------------------------------------------------- checks


def check_positive(name: str, value, fix: str = "") -> None:
    """Raise a ValueError unless every entry of ``value`` is a finite number > 0."""
    t = torch.as_tensor(value, dtype=torch.float64)
    if not bool(torch.isfinite(t).all()) or not bool((t > 0).all()):
        raise ValueError(f"{name} must be > 0 (and finite), got {value!r}" + (f": {fix}" if fix else ""))


def check_fraction(r: float, name: str = "r (the fraction of random labels)") -> float:
    """``r`` in ``[0, 1)``: the share of each class whose labels are redrawn (A.1); else a ValueError."""
    if not (isinstance(r, (int, float)) and 0 <= r < 1):
        raise ValueError(f"{name} must be in [0, 1) (0 = clean labels; 1 would leave no label signal), got {r!r}")
    return float(r)


def _check_batch(m: int, n: int | None = None) -> None:
    if not isinstance(m, int) or m < 1 or (n is not None and m > n):
        bound = f" and at most n = {n}" if n is not None else ""
        raise ValueError(f"the batch size m must be an integer >= 1{bound}, got {m!r}")


# ------------------------------------------------------------------- gradient statistics


@dataclass(frozen=True, eq=False)
class SGStats:
    """Statistics of the per-example gradients at ``θ_t`` (each a tensor over leading run dims).

    ``mu_sq`` = ‖μ‖², ``trace_m`` = Tr M, ``trace_sigma`` = Tr Σ, ``sigma_fro`` = ‖Σ‖_F,
    ``sigma_op`` = ‖Σ‖₂, ``sigma_half_mu`` = ‖Σ^{1/2}μ‖₂ = √(μᵀΣμ), ``n`` examples.
    """

    n: int
    mu_sq: torch.Tensor
    trace_m: torch.Tensor
    trace_sigma: torch.Tensor
    sigma_fro: torch.Tensor
    sigma_op: torch.Tensor
    sigma_half_mu: torch.Tensor

    def trace_m_batch(self, m: int) -> torch.Tensor:
        """``Tr M^(m) = Tr Σ/m + ‖μ‖²`` (Eq. 26)."""
        _check_batch(m)
        return self.trace_sigma / m + self.mu_sq

    @classmethod
    def from_gram(cls, K: torch.Tensor) -> "SGStats":
        """From ``K = G Gᵀ`` (``[..., n, n]``, ``G`` the per-example gradients as rows) alone, e.g.
        :func:`.stacked_mlp.exact_moments` ``(gram=True)``, which never forms ``G``."""
        n = K.shape[-1]
        if K.shape[-2] != n:
            raise ValueError(f"the Gram matrix must be square [..., n, n], got {tuple(K.shape)}")
        K = 0.5 * (K + K.mT)
        k1 = K.sum(-1)  # K 1
        mu_sq = k1.sum(-1) / n**2
        trace_m = K.diagonal(dim1=-2, dim2=-1).sum(-1) / n
        # P K P with P = I − 11ᵀ/n
        kc = K - k1[..., :, None] / n - k1[..., None, :] / n + k1.sum(-1)[..., None, None] / n**2
        ev = torch.linalg.eigvalsh(kc / n).clamp_min(0)
        pk1 = k1 - k1.mean(-1, keepdim=True)  # P K 1
        return cls(
            n=n,
            mu_sq=mu_sq,
            trace_m=trace_m,
            trace_sigma=(trace_m - mu_sq).clamp_min(0),
            sigma_fro=ev.square().sum(-1).sqrt(),
            sigma_op=ev[..., -1],
            sigma_half_mu=(pk1.square().sum(-1) / n**3).sqrt(),
        )

    @classmethod
    def from_grads(cls, G: torch.Tensor) -> "SGStats":
        """From the per-example gradients ``G`` ``[..., n, p]`` (:func:`sgdbook.gradients.gram_moments`)."""
        g = gram_moments(G)
        return cls(n=g.n, mu_sq=g.mu_sq, trace_m=g.tr_M, trace_sigma=g.tr_Sigma, sigma_fro=g.sigma_fro,
                   sigma_op=g.sigma_2, sigma_half_mu=g.sigma_half_mu)


# -------------------------------------------------------------------------- Δ samples


@dataclass(frozen=True, eq=False)
class DeltaSamples:
    """``K`` draws of ``Δ = f(θ − η∇f̃) − f(θ)`` at each of ``P`` points: ``samples`` ``[P, K]``."""

    samples: torch.Tensor
    mean: torch.Tensor  # [P]
    var: torch.Tensor  # [P], divisor K − 1
    se: torch.Tensor  # [P], standard error of the mean
    f0: torch.Tensor  # [P], f(θ)


def delta_samples(
    batched_loss: Callable[[torch.Tensor], torch.Tensor],
    theta: torch.Tensor,
    grads: torch.Tensor,
    lr: float,
    batch_size: int,
    draws: int,
    generator: torch.Generator,
    *,
    indices: torch.Tensor | None = None,
    chunk: int = 8192,
) -> DeltaSamples:
    """Δ for ``draws`` minibatches (with replacement) at every point ``θ`` (``[P, p]`` or ``[p]``).

    ``grads`` are the per-example gradients at each point (``[P, n, p]`` or ``[n, p]``);
    ``batched_loss`` maps ``[B, p]`` parameter vectors to their full training losses ``[B]``
    (e.g. a ``vmap`` of the flat loss, or :func:`stacked_mlp.losses` averaged). ``lr`` is a step
    size (> 0), or a tensor of per-point step sizes ``[P]`` or per-point diagonal preconditioners
    ``[P, p]`` (entries ≥ 0; Eq. 24). ``indices`` (``[P, K, m]`` or ``[K, m]``) fixes the
    minibatches instead of drawing them.
    """
    if theta.ndim == 1:
        theta, grads = theta[None], grads[None]
    P, n, p = grads.shape
    if isinstance(lr, torch.Tensor):
        lr_t = lr.to(theta)
        if not bool(torch.isfinite(lr_t).all()) or bool((lr_t < 0).any()):
            raise ValueError("per-point step sizes must be finite and >= 0")
        lr_t = lr_t.reshape(P, 1) if lr_t.numel() == P else lr_t.reshape(P, p)
    else:
        check_positive("lr", lr)
        lr_t = torch.full((P, 1), float(lr), dtype=theta.dtype, device=theta.device)
    _check_batch(batch_size)
    if indices is None:
        indices = torch.randint(0, n, (P, draws, batch_size), generator=generator, device=generator.device)
    elif indices.ndim == 2:
        indices = indices.expand(P, *indices.shape)
    indices = indices.to(grads.device)
    K = indices.shape[1]
    sg = torch.stack([grads[j].index_select(0, indices[j].reshape(-1)).view(K, -1, p).mean(1) for j in range(P)])
    f0 = batched_loss(theta)
    moved = (theta[:, None, :] - lr_t[:, None, :] * sg).reshape(P * K, p)
    vals = torch.cat([batched_loss(moved[a : a + chunk]) for a in range(0, P * K, chunk)]).view(P, K)
    d = vals - f0[:, None]
    var = d.var(1) if K > 1 else torch.full_like(f0, float("nan"))
    return DeltaSamples(d, d.mean(1), var, (var / K).sqrt(), f0)


def taylor_curvature(hvp_batch: Callable[[torch.Tensor], torch.Tensor], G: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``Tr(H_f M^(m)) = (1/m)(1/n) Σ (g_i − μ)ᵀ H (g_i − μ) + μᵀ H μ`` at one point.

    ``hvp_batch`` maps rows ``[b, p]`` to rows of ``H v``; ``G`` is ``[n, p]``: ``n + 1`` products.
    """
    _check_batch(batch_size)
    mu = G.mean(0)
    V = torch.cat([G - mu, mu[None]])
    HV = hvp_batch(V)
    q = (V * HV).sum(1)
    return q[:-1].mean() / batch_size + q[-1]


# ------------------------------------------------------------------------------ Theorem 1


@dataclass(frozen=True, eq=False)
class Theorem1:
    """Theorem 1's quantities at ``θ_t`` (tensors over the leading dims of the statistics).

    ``drift`` = −η‖μ‖². Interval (27) ``[lower, upper]`` = drift ∓ (η²/2) L Tr M_t (printed);
    ``[lower_batch, upper_batch]`` the same with Tr M_t^(m) (the proof's Eq. 76).
    ``alpha1, beta1, alpha2, alpha3``: tail scales as printed; ``varsigma`` and ``varsigma_prime``:
    the proof's ``ς_t, ς'_t`` (Eq. 78, factor ``1 ∓ ηL/√m`` and no ``1/√m``).
    ``escape_centre`` = (η²/2) L Tr M_t (the escape remark); ``taylor`` = −η‖μ‖² + (η²/2) Tr(H M^(m))
    where ``Tr(H M^(m))`` was given (else ``None``).
    """

    drift: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    lower_batch: torch.Tensor
    upper_batch: torch.Tensor
    alpha1: torch.Tensor
    beta1: torch.Tensor
    alpha2: torch.Tensor
    alpha3: torch.Tensor
    varsigma: torch.Tensor
    varsigma_prime: torch.Tensor
    escape_centre: torch.Tensor
    escape_centre_batch: torch.Tensor
    taylor: torch.Tensor | None


def theorem1(stats: SGStats, lr: float, batch_size: int, L, tr_h_mm: torch.Tensor | None = None) -> Theorem1:
    """Theorem 1 (Eqs. 27–29) at step size ``lr``, batch ``batch_size`` and smoothness ``L``."""
    check_positive("lr", lr)
    check_positive("L", L, "an upper bound on ‖H_f‖₂ near θ_t (Assumption 1)")
    _check_batch(batch_size)
    eta, m = lr, batch_size
    L = torch.as_tensor(L, dtype=stats.mu_sq.dtype, device=stats.mu_sq.device)
    drift = -eta * stats.mu_sq
    hw = 0.5 * eta**2 * L * stats.trace_m
    hw_b = 0.5 * eta**2 * L * stats.trace_m_batch(m)
    s = stats.sigma_half_mu
    return Theorem1(
        drift=drift,
        lower=drift - hw,
        upper=drift + hw,
        lower_batch=drift - hw_b,
        upper_batch=drift + hw_b,
        alpha1=eta * (1 - eta * L).abs() * s / math.sqrt(m),
        beta1=eta * (1 + eta * L).abs() * s / math.sqrt(m),
        alpha2=eta**2 * L * stats.sigma_fro / (2 * m),
        alpha3=eta**2 * L * stats.sigma_op / (2 * m),
        varsigma=eta * (1 - eta * L / math.sqrt(m)).abs() * s,
        varsigma_prime=eta * (1 + eta * L / math.sqrt(m)).abs() * s,
        escape_centre=hw,
        escape_centre_batch=hw_b,
        taylor=None if tr_h_mm is None else drift + 0.5 * eta**2 * tr_h_mm,
    )


def tail_constant(excess: torch.Tensor, scales: tuple, s: torch.Tensor) -> torch.Tensor:
    """The largest ``c`` with ``P[X ≥ s] ≤ 2 exp(−c min(s²/a₁², s²/a₂², s/a₃))`` at every ``s`` given.

    ``excess`` ``[..., K]`` are draws of ``X`` (e.g. ``Δ − upper``), ``scales = (a₁, a₂, a₃)`` tensors
    over the leading dims, ``s`` ``[S]`` positive thresholds. Empirical ``P = 0`` constrains nothing;
    ``inf`` where no threshold is ever exceeded. Since ``P ≤ 1 < 2`` the answer is always > 0: with
    an unknown absolute constant only its stability across points is informative.
    """
    a1, a2, a3 = (torch.as_tensor(a, dtype=excess.dtype, device=excess.device) for a in scales)
    s = s.to(excess)
    prob = (excess[..., None, :] >= s[:, None]).to(excess.dtype).mean(-1)  # [..., S]
    rate = torch.minimum(torch.minimum(s**2 / a1[..., None] ** 2, s**2 / a2[..., None] ** 2), s / a3[..., None])
    c = torch.where(prob > 0, torch.log(2 / prob) / rate, torch.full_like(prob, float("inf")))
    return c.amin(-1)



# ------------------------------------------------------------------ Assumption 1: local L


def extreme_eigenvalues(
    hvp: Callable[[torch.Tensor], torch.Tensor],
    points: int,
    dim: int,
    steps: int,
    generator: torch.Generator,
    dtype=torch.float64,
    device=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Smallest and largest eigenvalue of ``points`` symmetric operators at once (Lanczos, full
    re-orthogonalisation), e.g. the Hessians at many parameter vectors.

    ``hvp`` maps ``[points, dim]`` (row ``j`` a vector for operator ``j``) to the products ``[points, dim]``.
    After ``steps`` products the extreme Ritz values bound the spectrum from inside
    (``λ_min ≤ ritz_min``, ``ritz_max ≤ λ_max``) and converge fast for the extremes; returns
    ``(ritz_min, ritz_max)``, each ``[points]``. Cost: ``steps`` batched products.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    steps = min(steps, dim)
    v = torch.randn(points, dim, generator=generator, dtype=dtype, device=generator.device).to(device)
    v = v / v.norm(dim=1, keepdim=True)
    V = torch.zeros(points, steps, dim, dtype=dtype, device=v.device)
    alpha = torch.zeros(points, steps, dtype=dtype, device=v.device)
    beta = torch.zeros(points, steps, dtype=dtype, device=v.device)
    k_used = steps
    for k in range(steps):
        V[:, k] = v
        w = hvp(v)
        alpha[:, k] = (w * v).sum(1)
        # full re-orthogonalisation against the basis so far (twice: classical Gram–Schmidt)
        for _ in range(2):
            w = w - torch.einsum("pk,pkd->pd", torch.einsum("pkd,pd->pk", V[:, : k + 1], w), V[:, : k + 1])
        b = w.norm(dim=1)
        if k + 1 < steps:
            beta[:, k] = b
            if bool((b <= 1e-12 * alpha[:, : k + 1].abs().amax(1).clamp_min(1e-300)).all()):
                k_used = k + 1
                break
            v = torch.where(b[:, None] > 0, w / b.clamp_min(1e-300)[:, None], torch.zeros_like(w))
    T = torch.diag_embed(alpha[:, :k_used])
    if k_used > 1:
        off = beta[:, : k_used - 1]
        T = T + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
    ev = torch.linalg.eigvalsh(T)
    return ev[:, 0], ev[:, -1]


def segment_smoothness(
    hvp_at: Callable[[torch.Tensor], Callable[[torch.Tensor], torch.Tensor]],
    theta: torch.Tensor,
    grads: torch.Tensor,
    lr: float,
    batch_size: int,
    draws: int,
    generator: torch.Generator,
    *,
    taus=(0.5, 1.0),
    steps: int = 25,
) -> torch.Tensor:
    """An estimate of Assumption 1's ``L`` at each point ``θ`` (``[P, p]``): the largest ``|λ|`` of
    ``H_f`` (both ends of the spectrum, Lanczos) over ``θ`` itself and the points ``θ − τη∇f̃`` of
    ``draws`` minibatch steps (with replacement) at the fractions ``taus`` of the step.

    ``hvp_at(points)`` returns a batched Hessian-vector product at ``points`` ``[B, p]`` (e.g.
    :func:`.stacked_mlp.hvp_at_points`); ``grads`` are the per-example gradients ``[P, n, p]``.
    A search over a few sampled points: a lower estimate of the supremum the assumption asks for.
    """
    P, n, p = grads.shape
    idx = torch.randint(0, n, (P, draws, batch_size), generator=generator, device=generator.device).to(grads.device)
    sg = torch.stack([grads[j][idx[j].reshape(-1)].view(draws, batch_size, p).mean(1) for j in range(P)])  # [P, J, p]
    pts = [theta[:, None, :]] + [theta[:, None, :] - tau * lr * sg for tau in taus]
    pts = torch.cat(pts, 1)  # [P, 1 + J·len(taus), p]
    flat = pts.reshape(-1, p)
    lo, hi = extreme_eigenvalues(hvp_at(flat), flat.shape[0], p, steps, generator, dtype=theta.dtype, device=theta.device)
    return torch.maximum(lo.abs(), hi.abs()).view(P, -1).amax(1)


def sphere_model_grads(G: torch.Tensor, batch_size: int, draws: int, generator: torch.Generator) -> torch.Tensor:
    """``draws`` stochastic gradients of the model (25), ``μ + Σ^{1/2} g/√m`` with ``g`` uniform on
    the sphere of radius ``√p``, for per-example gradients ``G`` ``[n, p]``: ``[draws, p]``.

    ``Σ^{1/2} = V S Vᵀ`` from the thin SVD ``(G − μ)/√n = U S Vᵀ``.
    """
    _check_batch(batch_size)
    n, p = G.shape
    mu = G.mean(0)
    _, S, Vh = torch.linalg.svd((G - mu) / math.sqrt(n), full_matrices=False)
    z = torch.randn(draws, p, generator=generator, dtype=G.dtype, device=generator.device).to(G.device)
    g = math.sqrt(p) * z / z.norm(dim=1, keepdim=True)
    return mu + ((g @ Vh.T) * S) @ Vh / math.sqrt(batch_size)


def logistic_mle(X: torch.Tensor, y: torch.Tensor, iters: int = 100, tol: float = 1e-13) -> torch.Tensor:
    """The minimiser of the mean logistic loss (labels {0, 1}) by Newton's method: a stationary point
    (``μ = 0``) with ``M ≠ 0`` when the classes overlap; a ValueError if it does not converge
    (separable data have no finite minimiser)."""
    n, p = X.shape
    theta = torch.zeros(p, dtype=X.dtype, device=X.device)
    for _ in range(iters):
        cf = logistic(X, y, theta)
        step = torch.linalg.solve(cf.H, cf.mu)
        theta = theta - step
        if float(step.norm()) <= tol * max(1.0, float(theta.norm())):
            return theta
    raise ValueError("Newton's method did not converge: are the classes linearly separable (no finite minimiser)?")

# ------------------------------------------------------------------- closed-form models


@dataclass(frozen=True, eq=False)
class ClosedForm:
    """Per-example gradients ``G`` ``[n, p]``, ``μ``, ``H_f``, ``M`` and the loss of a closed-form model."""

    G: torch.Tensor
    mu: torch.Tensor
    H: torch.Tensor
    M: torch.Tensor
    loss: torch.Tensor


def least_squares(X: torch.Tensor, y: torch.Tensor, theta: torch.Tensor, sigma: float = 1.0) -> ClosedForm:
    """Example 1 / Table 1: ``f = (1/(2nσ²))‖Xθ − y‖²``, ``g_i = r_i x_i/σ²``; ``H_f`` and ``M`` from
    :func:`.decomposition.least_squares_table1`."""
    check_positive("sigma", sigma, "the noise scale σ of the Gaussian likelihood (Table 1)")
    n = X.shape[0]
    r = X @ theta - y
    G = r[:, None] * X / sigma**2
    t1 = least_squares_table1(X, y, theta, sigma)
    return ClosedForm(G, G.mean(0), t1["H_f"], t1["M"], r.square().sum() / (2 * n * sigma**2))


def _ls_loss(X, y, sigma):
    n = X.shape[0]
    return lambda th: (th @ X.T - y).square().sum(-1) / (2 * n * sigma**2)


def _sigmoid_loss(X, y):
    def f(th):
        z = th @ X.T  # [B, n]
        return (torch.nn.functional.softplus(z) - y * z).mean(-1)

    return f


def logistic(X: torch.Tensor, y: torch.Tensor, theta: torch.Tensor) -> ClosedForm:
    """Example 2 / Table 1, labels in {0, 1}: ``g_i = (p_i − y_i) x_i``; ``H_f`` and ``M`` from
    :func:`.decomposition.logistic_table1`."""
    p = torch.sigmoid(X @ theta)
    G = (p - y)[:, None] * X
    t1 = logistic_table1(X, y, theta)
    return ClosedForm(G, G.mean(0), t1["H_f"], t1["M"], _sigmoid_loss(X, y)(theta[None])[0])


def _exact_mean_delta(loss, theta, G, lr, m):
    """E[Δ|θ] over all ``n^m`` with-replacement minibatches (exact, by enumeration)."""
    n = G.shape[0]
    if n**m > 50_000_000:
        raise ValueError(f"n^m = {n}^{m} minibatches are too many to enumerate")
    idx = all_minibatches(n, m, device=G.device, replacement=True)
    sg = G[idx].mean(1)
    return (loss(theta[None] - lr * sg) - loss(theta[None])).mean()


# ---------------------------------------------------------------------------- Corollary 1


@dataclass(frozen=True)
class Corollary1:
    """Corollary 1 at one ``θ_t`` (least squares, noise scale ``sigma``, batch ``m``).

    Printed: ``alpha = σ_min(XXᵀ/n)``, ``beta = max‖x_i‖²``, ``L = ‖H_f‖₂``, ``lr = α/(βL)``,
    ``bound_printed = −α²‖r‖²/(2βLn)``; ``alpha_t1_printed = |1 − α/(2β)| ‖Σ^{1/2}μ‖/√m`` against
    Theorem 1's ``alpha_t1_theorem1 = η|1 − ηL| ‖Σ^{1/2}μ‖/√m`` at the same ``η``.
    Corrected: ``bound_corrected = bound_printed/σ⁴`` (what the argument gives for general ``σ``).
    ``exact_mean`` = E[Δ|θ] at ``lr`` (exact: the loss is quadratic).
    Proof (App. E.1): ``alpha_proof = σ_min(XXᵀ/n²)``, ``beta_proof = max x_iᵀH_f x_i``,
    ``lr_proof = α'/(β'Ln)``, ``bound_proof = −α'²‖r‖²/(2β'Ln)``, ``exact_mean_proof`` at ``lr_proof``.
    """

    alpha: float
    beta: float
    L: float
    lr: float
    residual_sq: float
    bound_printed: float
    bound_corrected: float
    exact_mean: float
    alpha_t1_printed: float
    alpha_t1_theorem1: float
    alpha_t2: float
    alpha_t3: float
    alpha_proof: float
    beta_proof: float
    lr_proof: float
    bound_proof: float
    exact_mean_proof: float


def _ls_exact_mean(cf: ClosedForm, lr: float, m: int) -> float:
    """−η‖μ‖² + (η²/2) Tr(H_f M^(m)), exact for a quadratic loss."""
    mu = cf.mu
    sigma = cf.M - torch.outer(mu, mu)
    mm = sigma / m + torch.outer(mu, mu)
    return float(-lr * mu.square().sum() + 0.5 * lr**2 * (cf.H * mm).sum())


def corollary1(X: torch.Tensor, y: torch.Tensor, theta: torch.Tensor, sigma: float, batch_size: int) -> Corollary1:
    """Corollary 1's constants and mean bounds, printed, as in the proof, and corrected (see class)."""
    n = X.shape[0]
    _check_batch(batch_size)
    cf = least_squares(X, y, theta, sigma)
    gram = X @ X.T
    ev = torch.linalg.eigvalsh(gram / n)
    alpha = float(ev[0])
    if alpha <= 1e-12 * float(ev[-1]):
        raise ValueError("σ_min(XXᵀ/n) = 0: Corollary 1 needs linearly independent rows x_i (n ≤ p)")
    beta = float(X.square().sum(1).max())
    L = float(torch.linalg.eigvalsh(cf.H)[-1])
    lr = alpha / (beta * L)
    r2 = float((X @ theta - y).square().sum())
    st = SGStats.from_grads(cf.G)
    m = batch_size
    alpha_p = float(torch.linalg.eigvalsh(gram / n**2)[0])
    beta_p = float(((X @ cf.H) * X).sum(1).max())
    lr_p = alpha_p / (beta_p * L * n)
    return Corollary1(
        alpha=alpha,
        beta=beta,
        L=L,
        lr=lr,
        residual_sq=r2,
        bound_printed=-(alpha**2) * r2 / (2 * beta * L * n),
        bound_corrected=-(alpha**2) * r2 / (2 * beta * L * n * sigma**4),
        exact_mean=_ls_exact_mean(cf, lr, m),
        alpha_t1_printed=abs(1 - alpha / (2 * beta)) * float(st.sigma_half_mu) / math.sqrt(m),
        alpha_t1_theorem1=lr * abs(1 - lr * L) * float(st.sigma_half_mu) / math.sqrt(m),
        alpha_t2=alpha**2 / (2 * beta**2 * L * m) * float(st.sigma_fro),
        alpha_t3=alpha**2 / (2 * beta**2 * L * m) * float(st.sigma_op),
        alpha_proof=alpha_p,
        beta_proof=beta_p,
        lr_proof=lr_p,
        bound_proof=-(alpha_p**2) * r2 / (2 * beta_p * L * n),
        exact_mean_proof=_ls_exact_mean(cf, lr_p, m),
    )


def ls_delta(X: torch.Tensor, y: torch.Tensor, theta: torch.Tensor, sigma: float, lr: float, indices: torch.Tensor) -> torch.Tensor:
    """Exact Δ for each minibatch (rows of ``indices`` ``[B, m]``) of least squares at ``θ``."""
    cf = least_squares(X, y, theta, sigma)
    sg = cf.G[indices].mean(1)
    f = _ls_loss(X, y, sigma)
    return f(theta[None] - lr * sg) - f(theta[None])


# ---------------------------------------------------------------------------- Corollary 2


@dataclass(frozen=True)
class Corollary2:
    """Corollary 2 at one ``θ_t`` (binary logistic regression, labels {0, 1}, batch ``m``).

    ``alpha_printed = σ_min((1/n) Σ x_i x_iᵀ)`` (``p × p``: ≤ 0 up to rounding when ``n < p``);
    ``alpha = σ_min(XXᵀ/n)`` (``n × n``, the proof's); ``beta = max‖x_i‖²``; ``L`` = the global
    ``λ_max(XᵀX)/(4n) ≥ sup ‖H_f‖₂`` unless given; ``lr = α/(βL)``;
    ``bound = −α² Σ(y_i − p_i)²/(2βLn)``; ``exact_mean`` = E[Δ|θ] over all ``n^m`` minibatches.
    """

    alpha_printed: float
    alpha: float
    beta: float
    L: float
    lr: float
    bound: float
    exact_mean: float
    minibatches: int


def corollary2(X: torch.Tensor, y: torch.Tensor, theta: torch.Tensor, batch_size: int, L: float | None = None) -> Corollary2:
    """Corollary 2's constants, mean bound and the exact mean change (see class)."""
    n, p = X.shape
    _check_batch(batch_size)
    alpha_printed = float(torch.linalg.eigvalsh(X.T @ X / n)[0])
    ev = torch.linalg.eigvalsh(X @ X.T / n)
    alpha = float(ev[0])
    if alpha <= 1e-12 * float(ev[-1]):
        raise ValueError("σ_min(XXᵀ/n) = 0: Corollary 2 needs linearly independent rows x_i (n ≤ p)")
    beta = float(X.square().sum(1).max())
    if L is None:
        L = float(torch.linalg.eigvalsh(X.T @ X)[-1]) / (4 * n)
    check_positive("L", L)
    lr = alpha / (beta * L)
    cf = logistic(X, y, theta)
    res = float((y - torch.sigmoid(X @ theta)).square().sum())
    exact = float(_exact_mean_delta(_sigmoid_loss(X, y), theta, cf.G, lr, batch_size))
    return Corollary2(alpha_printed, alpha, beta, L, lr, -(alpha**2) * res / (2 * beta * L * n), exact, n**batch_size)


# ---------------------------------------------------------------------------- Theorem 2


def theorem2_k2(lr: float, mu: float, sigma: float, p: int, batch_size: int, L: float, L1: float) -> dict[str, float]:
    """Eq. (33): ``K = η²L(σ + μ²) + (ημ²/√m)(1 + ηL)√σ + (m+1)η²Lσ/(2m)`` (the proof's ``K`` without
    its ``1/(4c)``), ``K_1 = 2L_1η(μ + √(σp)/√m)`` and ``K_2 = max(K_1, K)``.

    ``mu`` bounds ‖μ_t‖, ``sigma`` bounds ‖Σ_t‖₂, ``L1`` is the Lipschitz constant of ``f``.
    """
    for name, v in (("lr", lr), ("L", L), ("L1", L1)):
        check_positive(name, v)
    if mu < 0 or sigma < 0:
        raise ValueError(f"mu and sigma are bounds on norms and must be >= 0, got {mu}, {sigma}")
    _check_batch(batch_size)
    eta, m = lr, batch_size
    K = eta**2 * L * (sigma + mu**2) + eta * mu**2 / math.sqrt(m) * (1 + eta * L) * math.sqrt(sigma) + (m + 1) * eta**2 * L * sigma / (2 * m)
    K1 = 2 * L1 * eta * (mu + math.sqrt(sigma * p) / math.sqrt(m))
    return {"K": K, "K1": K1, "K2": max(K, K1)}


# ---------------------------------------------------------------------------- Theorem 3


def theorem3_decrease_factor(c):
    """``κ(c) = c(4 − c)/8``: with ``η = c‖μ‖²/(2L Tr M)`` the bound (27) gives
    ``E[Δ|θ] ≤ −κ(c) ‖μ‖⁴/(L Tr M)`` (``κ = 1/2`` at ``c = 2``, ``> 3/8`` on ``1 < c < 3``)."""
    return c * (4 - c) / 8


_KAPPA = {"printed": 0.5, "midpoint": 0.5, "interval": 3 / 8, "proof": 0.25}


def theorem3_iterations(L: float, gap: float, sigma2: float, eps, batch_size: int = 1, variant: str = "printed"):
    """Iterations after which Theorem 3 promises ``min_t E‖∇f(θ_t)‖² ≤ ε``.

    ``T = L·gap·(s² + ε)/(κ ε²)`` with ``gap = f(θ₀) − f*``, ``Tr Σ_t ≤ sigma2`` and
    ``printed``: κ = 1/2, s² = σ²/m (Thm 3 as stated); ``proof``: κ = 1/4, s² = σ² (App. G);
    ``midpoint``: κ = 1/2, s² = σ²/m (what the argument gives at ``c = 2`` with Tr M^(m));
    ``interval``: κ = 3/8, s² = σ²/m (anywhere in the open interval (35), with Tr M^(m)).
    """
    if variant not in _KAPPA:
        raise ValueError(f"unknown variant {variant!r}: use one of {sorted(_KAPPA)}")
    check_positive("L", L)
    check_positive("eps", eps)
    s2 = sigma2 if variant == "proof" else sigma2 / batch_size
    return L * gap * (s2 + eps) / (_KAPPA[variant] * eps**2)


def theorem3_eps(T, L: float, gap: float, sigma2: float, batch_size: int = 1, variant: str = "printed"):
    """Inverse of :func:`theorem3_iterations`: the ``ε`` promised after ``T`` iterations."""
    if variant not in _KAPPA:
        raise ValueError(f"unknown variant {variant!r}: use one of {sorted(_KAPPA)}")
    check_positive("T", T)
    s2 = sigma2 if variant == "proof" else sigma2 / batch_size
    k = _KAPPA[variant]
    a = L * gap
    T = torch.as_tensor(T, dtype=torch.float64)
    return (a + torch.sqrt(a**2 + 4 * k * T * a * s2)) / (2 * k * T)
