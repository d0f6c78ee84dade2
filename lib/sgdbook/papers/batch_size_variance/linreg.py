"""Exact first and second moments of minibatch SGD on linear regression, for all batch sizes.

Setting (Section 3.1 of the batch-size paper): ``L(w) = (1/n) Σ_i ½ (x_iᵀw − y_i)²``, SGD
``w_{t+1} = w_t − α_t g_t`` with ``g_t = (1/b) Σ_{i∈B_t} ∇L_i(w_t)``, ``B_t`` a uniformly random
``b``-subset of ``[n]`` (without replacement inside a batch), independent across steps; ``w_0``
and the schedule ``α_t`` are fixed and the same for every ``b``.

With the augmented state ``w̃ = (w, 1)``, ``f_i = (x_i, −y_i)`` and ``e_i = (x_i, 0)`` one step
is ``w̃_{t+1} = (I − α_t E_B) w̃_t`` with ``E_B = (1/b) Σ_{i∈B} e_i f_iᵀ``. The finite-population
moments of a minibatch mean (``E E_B = Ḡ = (1/n) Σ e_i f_iᵀ`` and
``E[E_B S E_Bᵀ] = Ḡ S Ḡᵀ + c_b((1/n) Σ_i (f_iᵀ S f_i) e_i e_iᵀ − Ḡ S Ḡᵀ)``,
``c_b = (n − b)/(b (n − 1))``) make the recursion of ``μ_t = E[w̃_t | F_0]`` and
``S_t = E[w̃_t w̃_tᵀ | F_0]`` closed and linear, and affine in ``c_b``: every moment at step
``t`` is a polynomial in ``c_b`` (equivalently in ``1/b``) of degree at most ``t`` (``t + 1``
for quantities that take one more minibatch, like ``E‖g_t‖²``). Cost O(n p²) per step and
batch size; all ``b`` are batched in the leading dimension.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from sgdbook.gradients import all_minibatches


def c_b(n: int, b) -> torch.Tensor:
    """``(n − b)/(b (n − 1))`` for a tensor (or list) of batch sizes, float64."""
    b = torch.as_tensor(b, dtype=torch.float64)
    return (n - b) / (b * (n - 1))


@dataclass(frozen=True)
class Problem:
    """A linear-regression data set in augmented form (float64)."""

    x: torch.Tensor  # [n, p]
    y: torch.Tensor  # [n]
    f: torch.Tensor  # [n, p+1] (x_i, −y_i): residual r_i = f_iᵀ w̃
    e: torch.Tensor  # [n, p+1] (x_i, 0)
    G: torch.Tensor  # [p+1, p+1] Ḡ = (1/n) Σ e_i f_iᵀ
    C: torch.Tensor  # [p, p] (1/n) Σ x_i x_iᵀ (the Hessian)

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def p(self) -> int:
        return self.x.shape[1]

    def augment(self, w: torch.Tensor) -> torch.Tensor:
        return torch.cat([w, torch.ones(w.shape[:-1] + (1,), dtype=w.dtype, device=w.device)], -1)


def problem(x: torch.Tensor, y: torch.Tensor) -> Problem:
    x = x.to(torch.float64)
    y = y.to(torch.float64)
    n = x.shape[0]
    f = torch.cat([x, -y[:, None]], 1)
    e = torch.cat([x, torch.zeros_like(y)[:, None]], 1)
    return Problem(x=x, y=y, f=f, e=e, G=e.T @ f / n, C=x.T @ x / n)


def standardise(x: torch.Tensor, y: torch.Tensor, intercept: bool = True, scale_y: bool = False):
    """Features to mean 0 and variance 1 (population sd), an intercept column of ones appended;
    the target centred and scaled only if ``scale_y``."""
    x = x.to(torch.float64)
    y = y.to(torch.float64)
    x = (x - x.mean(0)) / x.std(0, unbiased=False)
    if intercept:
        x = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], 1)
    if scale_y:
        y = (y - y.mean()) / y.std(unbiased=False)
    return x, y


def harmonic_schedule(scale: float, steps: int, dtype=torch.float64) -> torch.Tensor:
    """The paper's schedules ``α_t = scale / t`` for ``t = 1 … steps`` (``1/(2t)`` in Figure 2,
    ``1/(10t)`` in Figure 3); entry ``t − 1`` moves ``w_{t−1} → w_t``."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    return scale / torch.arange(1, steps + 1, dtype=dtype)


# ----------------------------------------------------------------------------- the recursion


def _sandwich(P: Problem, S: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``E[E_B S E_Bᵀ]`` for a batch of ``S`` ([..., p+1, p+1]) and ``c`` ([...])."""
    GSG = P.G @ S @ P.G.T
    q = torch.einsum("ni,...ij,nj->...n", P.f, S, P.f)  # f_iᵀ S f_i
    D = torch.einsum("...n,ni,nj->...ij", q, P.e, P.e) / P.n
    return GSG + c[..., None, None] * (D - GSG)


def step(P: Problem, mu: torch.Tensor, S: torch.Tensor, c: torch.Tensor, alpha: float):
    """One SGD step of the exact moments: ``(μ_t, S_t) → (μ_{t+1}, S_{t+1})``."""
    GS = P.G @ S
    S_new = S - alpha * (GS + GS.transpose(-1, -2)) + alpha**2 * _sandwich(P, S, c)
    mu_new = mu - alpha * (mu @ P.G.T)
    return mu_new, S_new


@dataclass(frozen=True)
class Quantities:
    """Exact conditional moments given ``F_0``, shape ``[T+1, len(b)]`` unless noted."""

    b: torch.Tensor  # [B]
    var_g: torch.Tensor  # var(B g_t | F_0)
    var_grad: torch.Tensor  # var(B ∇L(w_t) | F_0)
    mean_sq_g: torch.Tensor  # E‖B g_t‖²
    loss: torch.Tensor  # E[L(w_t) | F_0]
    mean_w: torch.Tensor  # [T+1, p] E[w_t | F_0] (the same for every b)
    cov_w_trace: torch.Tensor  # tr Cov(w_t | F_0)


def _outputs(P: Problem, mu, S, c, B):
    p = P.p
    BB = torch.eye(p + 1, dtype=S.dtype) if B is None else torch.block_diag(B.to(S.dtype), torch.ones(1, 1, dtype=S.dtype))
    M = BB @ _sandwich(P, S, c) @ BB.T
    mean_sq_g = torch.diagonal(M, dim1=-2, dim2=-1)[..., :p].sum(-1)
    GS = BB @ P.G @ S @ P.G.T @ BB.T
    sq_grad = torch.diagonal(GS, dim1=-2, dim2=-1)[..., :p].sum(-1)
    m = (mu @ P.G.T @ BB.T)[..., :p]
    mean_norm = (m * m).sum(-1)
    q = torch.einsum("ni,...ij,nj->...n", P.f, S, P.f)
    loss = q.mean(-1) / 2
    cov_w = torch.diagonal(S, dim1=-2, dim2=-1)[..., :p].sum(-1) - (mu[..., :p] ** 2).sum(-1)
    return mean_sq_g - mean_norm, sq_grad - mean_norm, mean_sq_g, loss, cov_w


def moments(
    P: Problem,
    w0: torch.Tensor,
    alphas: torch.Tensor,
    b: Sequence[int] | torch.Tensor,
    B: torch.Tensor | None = None,
    keep: Sequence[int] | None = None,
) -> Quantities:
    """Exact ``var(B g_t|F_0)``, ``var(B ∇L(w_t)|F_0)``, ``E‖B g_t‖²``, ``E[L(w_t)|F_0]`` for
    ``t = 0 … len(alphas)`` and every batch size in ``b`` at once (``B = I`` by default)."""
    b = torch.as_tensor(b, dtype=torch.int64)
    c = c_b(P.n, b)
    w = P.augment(w0.to(torch.float64))
    mu = w.expand(len(b), -1).clone()
    S = (w[:, None] * w[None, :]).expand(len(b), -1, -1).clone()
    keep = set(range(len(alphas) + 1)) if keep is None else set(keep)
    rows = []
    means = []
    for t in range(len(alphas) + 1):
        if t in keep:
            rows.append(_outputs(P, mu, S, c, B))
            means.append(mu[0, : P.p].clone())
        if t < len(alphas):
            mu, S = step(P, mu, S, c, float(alphas[t]))
    vg, vgrad, msq, loss, cw = (torch.stack(r) for r in zip(*rows))
    return Quantities(b=b, var_g=vg, var_grad=vgrad, mean_sq_g=msq, loss=loss, mean_w=torch.stack(means), cov_w_trace=cw)


def second_moments(P: Problem, w0: torch.Tensor, alphas: torch.Tensor, b) -> tuple[torch.Tensor, torch.Tensor]:
    """``(μ_t, S_t)`` for every step: shapes ``[T+1, B, p+1]`` and ``[T+1, B, p+1, p+1]``."""
    b = torch.as_tensor(b, dtype=torch.int64)
    c = c_b(P.n, b)
    w = P.augment(w0.to(torch.float64))
    mu = w.expand(len(b), -1).clone()
    S = (w[:, None] * w[None, :]).expand(len(b), -1, -1).clone()
    mus, Ss = [mu], [S]
    for a in alphas:
        mu, S = step(P, mu, S, c, float(a))
        mus.append(mu)
        Ss.append(S)
    return torch.stack(mus), torch.stack(Ss)


def combination_sq_norm(P: Problem, S: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """``E‖Σ_i A_i ∇L_i(w_t)‖² = tr(K S Kᵀ)`` with ``K = Σ_i A_i x_i f_iᵀ`` (``A``: [n, p, p])."""
    K = torch.einsum("nij,nj,nk->ik", A.to(S.dtype), P.x, P.f)
    return torch.einsum("ij,...jk,ik->...", K, S, K)


def pair_sum(P: Problem, S: torch.Tensor, A: torch.Tensor, sign: int = -1) -> torch.Tensor:
    """``Σ_{k≠l} E‖A∇L_k(w) + sign·A∇L_l(w)‖²`` over ordered pairs, from ``S = E[w̃ w̃ᵀ]``."""
    K = torch.einsum("ij,nj,nk->nik", A.to(S.dtype), P.x, P.f)  # A x_k f_kᵀ
    diag = torch.einsum("nij,...jk,nik->...", K, S, K)  # Σ_k E‖A∇L_k‖²
    Ks = K.sum(0)
    cross = torch.einsum("ij,...jk,ik->...", Ks, S, Ks)  # E‖Σ_k A∇L_k‖²
    n = P.n
    # Σ_{k,l} ‖u_k + s u_l‖² = 2n Σ‖u_k‖² + 2 s ‖Σu_k‖²; the k = l terms give (1+s)² Σ‖u_k‖².
    return 2 * n * diag + 2 * sign * cross - (1 + sign) ** 2 * diag


def var_g_polynomial(P: Problem, w0: torch.Tensor, alphas: torch.Tensor, keep: Sequence[int]) -> dict[int, torch.Tensor]:
    """Coefficients ``β_0 … β_{t+1}`` of ``var(g_t|F_0) = Σ_k β_k c_b^k`` for each ``t`` in ``keep``.

    The step is ``S ↦ P(S) + c·Q(S)`` with ``P, Q`` linear, so the coefficient matrices of
    ``S_t = Σ_k c^k S_t^{(k)}`` obey ``S^{(k)} ↦ P(S^{(k)}) + Q(S^{(k−1)})``.
    """
    w = P.augment(w0.to(torch.float64))
    S = (w[:, None] * w[None, :])[None]  # [1, p+1, p+1]: coefficient list
    mu = w[None]
    zero, one = torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    out = {}
    keep = set(keep)
    for t in range(max(keep) + 1):
        if t in keep:
            k = S.shape[0]
            cz = torch.zeros(k, dtype=torch.float64)
            v0 = _outputs(P, mu.expand(k, -1), S, cz, None)[2]  # E‖g‖² at c = 0, per coefficient
            v1 = _outputs(P, mu.expand(k, -1), S, cz + 1, None)[2] - v0
            coef = torch.zeros(k + 1, dtype=torch.float64)
            coef[:k] += v0
            coef[1:] += v1
            m = (mu[0] @ P.G.T)[: P.p]
            coef[0] -= (m * m).sum()
            out[t] = coef
        if t < max(keep):
            a = float(alphas[t])
            _, SP = step(P, mu, S, zero.expand(S.shape[0]), a)
            _, S1 = step(P, mu, S, one.expand(S.shape[0]), a)
            SQ = S1 - SP
            new = torch.zeros((S.shape[0] + 1,) + S.shape[1:], dtype=torch.float64)
            new[:-1] += SP
            new[1:] += SQ
            S = new
            mu = mu - a * (mu @ P.G.T)
    return out


# ---------------------------------------------------------------------- Monte Carlo and brute force


def sample_batches(n: int, b: int, runs: int, gen: torch.Generator) -> torch.Tensor:
    """``[runs, b]`` indices: one uniform ``b``-subset of ``[n]`` per run (without replacement)."""
    return torch.rand(runs, n, generator=gen, dtype=torch.float32).topk(b, dim=1).indices


@dataclass(frozen=True)
class MonteCarlo:
    """Sample estimates over ``runs`` independent SGD runs from the same ``w_0`` (``[T+1]`` each),
    with standard errors of the variance estimates."""

    var_g: torch.Tensor
    var_g_se: torch.Tensor
    var_grad: torch.Tensor
    var_grad_se: torch.Tensor
    loss: torch.Tensor
    loss_se: torch.Tensor
    runs: int


def _var_and_se(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    d = ((v - v.mean(0)) ** 2).sum(-1)  # [R]
    R = v.shape[0]
    return d.sum() / (R - 1), d.std() / R**0.5


def monte_carlo(P: Problem, w0: torch.Tensor, alphas: torch.Tensor, b: int, runs: int, gen: torch.Generator) -> MonteCarlo:
    """Run ``runs`` SGD trajectories in lockstep and estimate the conditional variances."""
    w = w0.to(torch.float64).expand(runs, -1).clone()
    out = {k: [] for k in ("vg", "vgs", "vf", "vfs", "l", "ls")}
    for t in range(len(alphas) + 1):
        r = w @ P.x.T - P.y  # [R, n] residuals
        full = r @ P.x / P.n
        idx = sample_batches(P.n, b, runs, gen)
        xb = P.x[idx]  # [R, b, p]
        rb = torch.gather(r, 1, idx)
        g = (rb[..., None] * xb).mean(1)
        vg, vgs = _var_and_se(g)
        vf, vfs = _var_and_se(full)
        loss = (r**2).mean(1) / 2
        for k, v in zip(out, (vg, vgs, vf, vfs, loss.mean(), loss.std() / runs**0.5)):
            out[k].append(v)
        if t < len(alphas):
            w = w - float(alphas[t]) * g
    s = {k: torch.stack(v) for k, v in out.items()}
    return MonteCarlo(s["vg"], s["vgs"], s["vf"], s["vfs"], s["l"], s["ls"], runs)


def enumerate_paths(P: Problem, w0: torch.Tensor, alphas: Sequence[float], b: int):
    """Every sequence of minibatches for ``len(alphas)`` steps (equally likely): returns the
    iterates ``w_T`` as ``[N, p]`` (for tiny ``n`` and ``T`` only)."""
    from itertools import combinations

    subsets = [list(s) for s in combinations(range(P.n), b)]
    ws = w0.to(torch.float64)[None]
    for a in alphas:
        new = []
        for s in subsets:
            xb, yb = P.x[s], P.y[s]
            g = ((ws @ xb.T - yb) @ xb) / b
            new.append(ws - float(a) * g)
        ws = torch.cat(new)
    return ws, subsets


# ------------------------------------------------------------------------- exact rational arithmetic


def var_g_rational(x, y, w0, alphas, b: int) -> list:
    """``var(g_t|F_0)`` for ``t = 0 … len(alphas)`` in exact rational arithmetic.

    ``x`` ([n][p]), ``y``, ``w0``, ``alphas`` are :class:`fractions.Fraction` (or ints); the same
    recursion as :func:`moments`, written out with Python fractions (tiny problems only).
    """
    from fractions import Fraction

    n, p = len(x), len(x[0])
    d = p + 1
    f = [list(map(Fraction, r)) + [-Fraction(yi)] for r, yi in zip(x, y)]
    e = [list(map(Fraction, r)) + [Fraction(0)] for r in x]
    G = [[sum(e[i][a] * f[i][k] for i in range(n)) / n for k in range(d)] for a in range(d)]
    c = Fraction(n - b, b * (n - 1))
    w = list(map(Fraction, w0)) + [Fraction(1)]
    mu = w[:]
    S = [[w[a] * w[k] for k in range(d)] for a in range(d)]

    def mm(A, B):
        return [[sum(A[i][k] * B[k][j] for k in range(d)) for j in range(d)] for i in range(d)]

    def tr(A):
        return [list(r) for r in zip(*A)]

    def sandwich(S):
        GSG = mm(mm(G, S), tr(G))
        q = [sum(f[i][a] * S[a][k] * f[i][k] for a in range(d) for k in range(d)) for i in range(n)]
        D = [[sum(q[i] * e[i][a] * e[i][k] for i in range(n)) / n for k in range(d)] for a in range(d)]
        return [[GSG[a][k] + c * (D[a][k] - GSG[a][k]) for k in range(d)] for a in range(d)]

    out = []
    for t in range(len(alphas) + 1):
        M = sandwich(S)
        m = [sum(G[a][k] * mu[k] for k in range(d)) for a in range(p)]
        out.append(sum(M[a][a] for a in range(p)) - sum(v * v for v in m))
        if t < len(alphas):
            al = Fraction(alphas[t])
            GS = mm(G, S)
            M = sandwich(S)
            S = [[S[a][k] - al * (GS[a][k] + GS[k][a]) + al * al * M[a][k] for k in range(d)] for a in range(d)]
            mu = [mu[a] - al * sum(G[a][k] * mu[k] for k in range(d)) for a in range(d)]
    return out


def exact_degree(xs, ys) -> int:
    """The degree of the interpolating polynomial through the points ``(xs, ys)`` (exact
    fractions; Newton divided differences): −1 for all zeros."""
    xs, ys = list(xs), list(ys)
    coef = ys[:]
    for j in range(1, len(xs)):
        for i in range(len(xs) - 1, j - 1, -1):
            coef[i] = (coef[i] - coef[i - 1]) / (xs[i] - xs[i - j])
    deg = -1
    for k, v in enumerate(coef):
        if v != 0:
            deg = k
    return deg


#: Figure 2(b)'s grid: every power of 2 or multiple of 40 in [2, n] (App. A.2).
def fig2b_grid(n: int) -> list[int]:
    return sorted({2**k for k in range(1, 20) if 2**k <= n} | {40 * k for k in range(1, n // 40 + 1)})


# ---------------------------------------------------------------------- the chapter's checks


def worst_increase(v: torch.Tensor) -> float:
    """Largest increase from ``b`` to ``b + 1`` (the last dimension) relative to the largest value at
    the same ``t`` (the first dimension), over all ``t``: ``≤ 0`` for a non-increasing function of ``b``."""
    scale = v.abs().amax(-1, keepdim=True).clamp_min(1e-300)
    return float((torch.diff(v, dim=-1) / scale).max())


def lemma1_errors(P: Problem, A: torch.Tensor, w: torch.Tensor) -> list[float]:
    """Lemma 1 by enumeration: for every ``b ∈ [1, n]`` the variance of ``A g`` over *all* ``C(n, b)``
    minibatches at ``w`` against ``c_b((1/n)Σ‖A∇L_i‖² − ‖A∇L‖²)``; relative errors (absolute at
    ``b = n``, where both are 0). Cost ``Σ_b C(n, b)`` minibatches: keep ``n`` ≲ 14."""
    per = ((P.x @ w - P.y)[:, None] * P.x) @ A.T  # A ∇L_i(w)
    full = per.mean(0)
    spread = (per**2).sum(-1).mean() - (full**2).sum()
    out = []
    for b in range(1, P.n + 1):
        gb = per[all_minibatches(P.n, b)].mean(1)
        enum = ((gb - gb.mean(0)) ** 2).sum(-1).mean()
        formula = float(c_b(P.n, [b])[0]) * spread
        out.append(abs(float(enum - formula)) / max(float(formula), 1e-300) if b < P.n else abs(float(enum)))
    return out


#: The three readings of Lemma 2's correction term: (sign of B_i^{kl} at i = l ≠ k, divisor of α²c_b/n²).
LEMMA2_READINGS = {"printed (+A, 1/n^2)": (+1, 1), "sign fixed (-A, 1/n^2)": (-1, 1), "corrected (-A, 1/(2n^2))": (-1, 2)}


def lemma2_table(P: Problem, w0: torch.Tensor, A: torch.Tensor, alphas: Sequence[float]) -> list[tuple[int, float, dict]]:
    """Lemma 2 at ``t = 1`` for every ``b``: the left side ``E‖Σ_i A_i∇L_i(w_2)‖²`` by enumerating every
    two-step minibatch sequence (:func:`enumerate_paths`), and the right side from the exact moments
    at ``t = 1`` under each reading of :data:`LEMMA2_READINGS`. Rows ``(b, left, {reading: right})``."""
    n = P.n
    Abig = torch.einsum("nij,nj,nk->ik", A, P.x, P.x)
    Bi = A - float(alphas[1]) / n * Abig
    rows = []
    for b in range(1, n + 1):
        ws, _ = enumerate_paths(P, w0, list(alphas), b)  # w_2 over all paths
        grads = (ws @ P.x.T - P.y)[..., None] * P.x
        lhs = float((torch.einsum("nij,Nnj->Ni", A, grads) ** 2).sum(-1).mean())
        S1 = second_moments(P, w0, torch.as_tensor(alphas[:1], dtype=torch.float64), [b])[1][1, 0]
        first = float(combination_sq_norm(P, S1, Bi))
        k2 = float(alphas[1]) ** 2 * float(c_b(n, [b])[0]) / n**2
        rhs = {name: first + k2 / d * float(pair_sum(P, S1, Abig, s)) for name, (s, d) in LEMMA2_READINGS.items()}
        rows.append((b, lhs, rhs))
    return rows


def proof_identity_errors(P: Problem, w0: torch.Tensor, alphas: torch.Tensor, B: torch.Tensor, t: int) -> dict[str, dict[str, float]]:
    """The identities inside the proofs of Theorems 6 and 7 at step ``t`` for every ``b < n``, with the
    printed constant ``c_b/n² Σ_{i≠j}`` and with ``c_b/(2n²)``: largest relative errors
    ``{"thm6": {"printed": …, "corrected": …}, "thm7": {…}}``.

    Theorem 6: ``var(B∇L(w_t)) = var(B(I − α_t C)∇L(w_{t−1})) + α_t² c_b/n² Σ_{i≠j} E‖BC(∇L_i − ∇L_j)(w_{t−1})‖²``;
    Theorem 7: ``var(B g_t) = c_b/n² Σ_{i≠j} E‖B(∇L_i − ∇L_j)(w_t)‖² + var(B∇L(w_t))``."""
    bs = list(range(1, P.n + 1))
    S = second_moments(P, w0, alphas[:t], bs)[1]
    q = moments(P, w0, alphas[:t], bs, B=B)
    cb = c_b(P.n, bs)
    a = float(alphas[t - 1])
    Bp = B @ (torch.eye(P.p, dtype=torch.float64) - a * P.C)
    prev = moments(P, w0, alphas[: t - 1], bs, B=Bp, keep=[t - 1]).var_grad[0]
    pairs6, pairs7 = pair_sum(P, S[t - 1], B @ P.C, -1), pair_sum(P, S[t], B, -1)
    out = {"thm6": {}, "thm7": {}}
    for name, d in (("printed", 1), ("corrected", 2)):
        lhs6, rhs6 = q.var_grad[t], prev + a**2 * cb / P.n**2 / d * pairs6
        lhs7, rhs7 = q.var_g[t], cb / P.n**2 / d * pairs7 + q.var_grad[t]
        out["thm6"][name] = float(((rhs6 - lhs6).abs() / lhs6.abs().clamp_min(1e-300))[:-1].max())
        out["thm7"][name] = float(((rhs7 - lhs7).abs() / lhs7.abs().clamp_min(1e-300))[:-1].max())
    return out
