"""Monte Carlo of online minibatch SGD on a deep linear teacher–student network, many runs and
batch sizes in lockstep (Section 3.2, App. A.1.2 and B.3 of the batch-size paper).

Setting. A depth-``L`` linear student ``f(x) = W_L ⋯ W_1 x`` with ``W_k ∈ R^{p_k × p_{k−1}}``
learns a teacher of the same shape, ``P̄ = W̄_L ⋯ W̄_1``, under the population loss
``L(w) = E_{x~N(0,I)} ½‖W_L⋯W_1 x − P̄ x‖² = ½‖Δ‖_F²`` with ``Δ = W_L⋯W_1 − P̄``. Each step draws
``b`` fresh inputs ``x ~ N(0, I_{p_0})``; with ``Σ̂ = (1/b) Σ_i x_i x_iᵀ = XᵀX/b`` the minibatch
gradient of layer ``k`` is ``g_k = A_kᵀ Δ Σ̂ B_kᵀ`` and the population gradient ``G_k = A_kᵀ Δ B_kᵀ``,
where ``A_k = W_L⋯W_{k+1}`` and ``B_k = W_{k−1}⋯W_1`` (identities at the ends). SGD:
``W_{t+1,k} = W_{t,k} − α_{t+1} g_{t,k}`` (``α`` indexed from 1, as in ``α_t = 1/(10t)``: the schedule
:func:`sgdbook.papers.batch_size_variance.linreg.harmonic_schedule`).

Conditional variance given the current weights (Isserlis' theorem, one sample, divided by ``b``):
``var(g_k | F_t) = (‖A_kᵀΔ‖² ‖B_k‖² + ‖A_kᵀΔB_kᵀ‖²)/b``; for two layers this is Section 3.2's
``(p+1)‖W_2ᵀΔ‖²/b`` and ``(‖ΔW_1ᵀ‖² + ‖Δ‖²‖W_1‖²)/b``.

Estimators of ``var(g_t | F_0)`` over ``R`` runs from one ``w_0`` (``var`` = sum of coordinate
variances): the plain sample variance ``(1/(R−1)) Σ_r ‖g^r − ḡ‖²`` (the paper's), and the
Rao–Blackwellised ``mean_r var(g | F_t^r) + var̂_r(G^r)`` (law of total variance; less noise).
Standard errors use the influence function of a variance estimate: the estimate is (up to
``O(1/R)``) the mean over runs of ``d_r = ‖g^r − ḡ‖²`` (or ``c_r + ‖G^r − Ḡ‖²`` for the
Rao–Blackwellised one), so ``se ≈ sd_r(d_r)/√R``, with no Gaussian assumption.

All runs of all batch sizes are one batched tensor ``[n_b, R, p_k, p_{k−1}]`` per layer; the
only Python loops are over time steps and over the (few) batch sizes when the ragged inputs
``X ∈ R^{R × b × p_0}`` are drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch


# --------------------------------------------------------------------------- set-up


def check_dims(dims: Sequence[int]) -> list[int]:
    dims = [int(d) for d in dims]
    if len(dims) < 2 or min(dims) < 1:
        raise ValueError(f"dims must list p_0, p_1, …, p_L (at least two positive widths), got {dims}")
    return dims


def init_linear(dims: Sequence[int], gen: torch.Generator, dtype=torch.float64, device=None) -> list[torch.Tensor]:
    """Weights ``W_k ∈ R^{p_k × p_{k−1}}`` drawn like PyTorch's ``nn.Linear`` default (no bias):
    ``U(−1/√fan_in, 1/√fan_in)`` with ``fan_in = p_{k−1}``."""
    dims = check_dims(dims)
    out = []
    for fan_in, fan_out in zip(dims[:-1], dims[1:]):
        bound = fan_in**-0.5
        u = torch.rand(fan_out, fan_in, generator=gen, dtype=dtype)
        out.append(((2 * u - 1) * bound).to(device))
    return out


def product(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """``W_L ⋯ W_1`` (batched over leading dimensions)."""
    p = weights[0]
    for w in weights[1:]:
        p = w @ p
    return p


# --------------------------------------------------------------------------- gradients


def _partials(weights: Sequence[torch.Tensor]):
    """Right products ``B_k = W_{k−1}⋯W_1`` (None for k = 1) and left products
    ``A_k = W_L⋯W_{k+1}`` (None for k = L), and the full product."""
    L = len(weights)
    right: list[torch.Tensor | None] = [None] * L
    acc = None
    for k in range(L):
        right[k] = acc
        acc = weights[k] if acc is None else weights[k] @ acc
    left: list[torch.Tensor | None] = [None] * L
    lacc = None
    for k in range(L - 1, -1, -1):
        left[k] = lacc
        lacc = weights[k] if lacc is None else lacc @ weights[k]
    return left, right, acc


def _sqnorm(m: torch.Tensor) -> torch.Tensor:
    return (m * m).sum((-2, -1))


def step_quantities(weights: Sequence[torch.Tensor], teacher: torch.Tensor, sigma: torch.Tensor | None, b=None):
    """Everything one SGD step needs, sharing the partial products: ``(g, G, c, Δ)`` with the
    minibatch gradients ``g_k = M_k Σ̂ B_kᵀ`` (None when ``sigma`` is None), the population gradients
    ``G_k = M_k B_kᵀ``, where ``M_k = A_kᵀΔ``, and the conditional variances
    ``c_k = (‖M_k‖²‖B_k‖² + ‖G_k‖²)/b`` stacked in the last dimension (None when ``b`` is None)."""
    left, right, prod = _partials(weights)
    delta = prod - teacher
    p0 = weights[0].shape[-1]
    g, G, c = [], [], []
    for k in range(len(weights)):
        m = delta if left[k] is None else left[k].transpose(-1, -2) @ delta
        if right[k] is None:
            G.append(m)
            if sigma is not None:
                g.append(m @ sigma)
        else:
            rt = right[k].transpose(-1, -2)
            G.append(m @ rt)
            if sigma is not None:
                g.append((m @ sigma) @ rt)
        if b is not None:
            nb = float(p0) if right[k] is None else _sqnorm(right[k])
            c.append(_sqnorm(m) * nb + _sqnorm(G[-1]))
    cv = None
    if b is not None:
        bt = torch.as_tensor(b, dtype=weights[0].dtype, device=weights[0].device)
        cv = torch.stack(torch.broadcast_tensors(*c), -1) / bt[..., None]
    return (g if sigma is not None else None), G, cv, delta


def gradients(weights: Sequence[torch.Tensor], teacher: torch.Tensor, sigma: torch.Tensor | None = None):
    """Per-layer gradients and ``Δ``.

    ``sigma`` is ``Σ̂ = XᵀX/b`` (broadcast over the leading dimensions): the minibatch gradients
    ``A_kᵀ Δ Σ̂ B_kᵀ``; ``None``: the population gradients ``A_kᵀ Δ B_kᵀ``.
    Returns ``(list of gradients, Δ)``."""
    g, G, _, delta = step_quantities(weights, teacher, sigma)
    return (G if sigma is None else g), delta


def conditional_variance(weights: Sequence[torch.Tensor], teacher: torch.Tensor, b) -> torch.Tensor:
    """``var(g_k | F_t) = (‖A_kᵀΔ‖² ‖B_k‖² + ‖A_kᵀΔB_kᵀ‖²)/b`` for every layer, stacked in the last
    dimension (``b`` broadcasts against the leading dimensions of the weights)."""
    return step_quantities(weights, teacher, None, b)[2]


# --------------------------------------------------------------------------- sampling


def check_bs(bs: Sequence[int]) -> list[int]:
    bs = [int(b) for b in bs]
    if not bs or min(bs) < 1:
        raise ValueError(f"batch sizes must be positive integers, got {bs}")
    return bs


def draw_inputs(gen: torch.Generator, runs: int, bs: Sequence[int], p: int, dtype=torch.float64, device=None):
    """One step's inputs: for each batch size ``b`` (in order) a tensor ``X ∈ R^{runs × b × p}`` of
    i.i.d. N(0, 1) entries, drawn on the generator's device and moved to ``device``. The shapes are
    ragged in ``b``, hence a list (a short loop over the batch sizes, not over runs)."""
    return [torch.randn(runs, b, p, generator=gen, dtype=dtype, device=gen.device).to(device) for b in bs]


def sigma_hat(xs: Sequence[torch.Tensor]) -> torch.Tensor:
    """``Σ̂ = XᵀX/b`` for each batch size and run, stacked: ``[n_b, runs, p, p]``."""
    return torch.stack([x.transpose(-1, -2) @ x / x.shape[-2] for x in xs])


# --------------------------------------------------------------------------- the runner


@dataclass(frozen=True)
class VarianceTrace:
    """A variance estimate per step, batch size and layer, its influence-function standard error,
    and the same for the sum over layers (all parameters)."""

    layer: torch.Tensor  # [T+1, n_b, L]
    layer_se: torch.Tensor  # [T+1, n_b, L]
    total: torch.Tensor  # [T+1, n_b]
    total_se: torch.Tensor  # [T+1, n_b]


@dataclass(frozen=True)
class LockstepResult:
    bs: list[int]
    runs: int
    dims: list[int]
    var_g: VarianceTrace  # plain Monte Carlo var(g_t | F_0)
    var_grad: VarianceTrace  # var(∇L(w_t) | F_0)
    var_rb: VarianceTrace  # Rao–Blackwellised var(g_t | F_0)
    cond_var: torch.Tensor  # [T+1, n_b, L] mean over runs of var(g_t | F_t)
    sq_delta: torch.Tensor  # [T+1, n_b] mean over runs of ‖Δ_t‖² (= 2 × the loss)
    sq_delta_se: torch.Tensor  # [T+1, n_b]
    weights: list[torch.Tensor]  # final weights, [n_b, runs, p_k, p_{k−1}] per layer
    diverged: torch.Tensor  # [n_b] number of runs whose weights are not finite at the end

    @property
    def steps(self) -> int:
        return self.sq_delta.shape[0] - 1


def _spread(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``d_r = ‖x^r − x̄‖²`` per layer over the run dimension (-3): ``[n_b, R, L]``."""
    return torch.stack([_sqnorm(x - x.mean(-3, keepdim=True)) for x in tensors], -1)


def _trace(d: torch.Tensor, runs: int):
    """Variance estimate ``Σ_r d_r/(R−1)`` and influence-function se ``sd_r(d_r)/√R``, per layer
    and for the layer sum; ``d``: [n_b, R, L]."""
    tot = d.sum(-1)
    scale = runs / (runs - 1)
    return (
        d.mean(1) * scale,
        d.std(1) * scale / runs**0.5,
        tot.mean(1) * scale,
        tot.std(1) * scale / runs**0.5,
    )


def run_lockstep(
    w0: Sequence[torch.Tensor],
    teacher: Sequence[torch.Tensor] | torch.Tensor,
    bs: Sequence[int],
    runs: int,
    alphas: torch.Tensor,
    gen: torch.Generator,
    progress=None,
) -> LockstepResult:
    """``runs`` SGD runs per batch size in ``bs`` (repeats allowed: independent replicates), all from
    ``w0``, for ``len(alphas)`` steps; statistics at every ``t = 0 … T``.

    ``teacher``: the teacher's layers (or their product ``P̄``). Device and dtype come from ``w0``;
    the inputs are drawn on ``gen``'s device (one :func:`draw_inputs` call per step, so a
    reference implementation can replay them) and moved to the device. ``progress``: an optional
    wrapper of the step iterator (e.g. ``sgdbook.book.progress.progress``)."""
    if runs < 2:
        raise ValueError(f"need at least 2 runs to estimate a variance, got {runs}")
    bs = check_bs(bs)
    w0 = list(w0)
    dims = [w0[0].shape[1]] + [w.shape[0] for w in w0]
    for k, w in enumerate(w0):
        if w.ndim != 2 or w.shape[1] != dims[k]:
            raise ValueError(f"layer {k + 1} has shape {tuple(w.shape)}; expected [p_{k + 1}, {dims[k]}]")
    tp = product(list(teacher)) if isinstance(teacher, (list, tuple)) else teacher
    if tp.shape != (dims[-1], dims[0]):
        raise ValueError(f"teacher product has shape {tuple(tp.shape)}, expected {(dims[-1], dims[0])}")
    dtype, device = w0[0].dtype, w0[0].device
    tp = tp.to(dtype=dtype, device=device)
    alphas = torch.as_tensor(alphas, dtype=dtype).to(device)
    nb, L, T = len(bs), len(w0), int(alphas.shape[0])
    bvec = torch.tensor(bs, dtype=dtype, device=device)[:, None]  # [n_b, 1]
    W = [w.expand(nb, runs, *w.shape).clone() for w in w0]

    def zeros(*shape):
        return torch.zeros(T + 1, *shape, dtype=dtype, device=device)

    out = {k: [zeros(nb, L), zeros(nb, L), zeros(nb), zeros(nb)] for k in ("g", "grad", "rb")}
    cond, sq, sq_se = zeros(nb, L), zeros(nb), zeros(nb)
    steps = range(T + 1)
    if progress is not None:
        steps = progress(steps)
    for t in steps:
        sig = sigma_hat(draw_inputs(gen, runs, bs, dims[0], dtype, device))
        g, G, c, delta = step_quantities(W, tp, sig, bvec)  # c: [n_b, R, L]
        dG = _spread(G)
        # Rao–Blackwellised: mean_r c_r + Σ_r ‖G^r − Ḡ‖²/(R−1), written as one per-run quantity
        for key, d in (("g", _spread(g)), ("grad", dG), ("rb", c * ((runs - 1) / runs) + dG)):
            for slot, v in zip(out[key], _trace(d, runs)):
                slot[t] = v
        cond[t] = c.mean(1)
        s = _sqnorm(delta)
        sq[t] = s.mean(1)
        sq_se[t] = s.std(1) / runs**0.5
        if t < T:
            W = [w - alphas[t] * gk for w, gk in zip(W, g)]
    cpu = torch.device("cpu")

    def trace(key):
        return VarianceTrace(*(v.to(cpu) for v in out[key]))

    return LockstepResult(
        bs=bs, runs=runs, dims=dims, var_g=trace("g"), var_grad=trace("grad"), var_rb=trace("rb"),
        cond_var=cond.to(cpu), sq_delta=sq.to(cpu), sq_delta_se=sq_se.to(cpu), weights=W,
        diverged=(~torch.stack([torch.isfinite(w).flatten(2).all(-1) for w in W]).all(0)).sum(-1).to(cpu),
    )


def exact_var_g0(w0: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor] | torch.Tensor, bs: Sequence[int]):
    """``var(g_0 | F_0)`` per batch size and layer, exactly (all runs share ``w_0``): ``[n_b, L]``."""
    tp = product(list(teacher)) if isinstance(teacher, (list, tuple)) else teacher
    b = torch.tensor(check_bs(bs), dtype=w0[0].dtype, device=w0[0].device)
    return conditional_variance(list(w0), tp, 1.0)[None, :] / b[:, None]


# --------------------------------------------------------------------------- fits in 1/b


@dataclass(frozen=True)
class InverseBFit:
    """Weighted least-squares fit ``v(b) ≈ β_0 + β_1/b + … + β_r/b^r``."""

    beta: list[float]  # β_0 (0.0 when no intercept), β_1, …, β_r
    se: list[float]
    intercept: bool
    chi2: float
    dof: int
    p_value: float

    @property
    def degree(self) -> int:
        return len(self.beta) - 1

    def __call__(self, b):
        b = torch.as_tensor(b, dtype=torch.float64)
        return sum(c * b ** (-k) for k, c in enumerate(self.beta))


def fit_inverse_b(bs, values, se, degree: int, intercept: bool) -> InverseBFit:
    """Fit ``values`` (independent estimates with standard errors ``se``) at batch sizes ``bs`` by
    a polynomial of ``degree`` in ``1/b``, with or without the constant term, weights ``1/se²``."""
    from scipy import stats

    u = 1.0 / torch.as_tensor(bs, dtype=torch.float64)
    v = torch.as_tensor(values, dtype=torch.float64)
    s = torch.as_tensor(se, dtype=torch.float64)
    if degree < 1:
        raise ValueError(f"degree must be >= 1, got {degree}")
    k0 = 0 if intercept else 1
    X = torch.stack([u**k for k in range(k0, degree + 1)], 1)
    n, m = X.shape
    if n < m:
        raise ValueError(f"{n} points cannot fit {m} coefficients")
    if not (torch.isfinite(v).all() and torch.isfinite(s).all()):
        raise ValueError("values and standard errors must be finite (did a run diverge?)")
    if (s <= 0).any():
        raise ValueError("standard errors must be positive")
    Xw, vw = X / s[:, None], v / s
    cov = torch.linalg.inv(Xw.T @ Xw)
    beta = cov @ (Xw.T @ vw)
    chi2 = float(((Xw @ beta - vw) ** 2).sum())
    dof = n - m
    p = float(stats.chi2.sf(chi2, dof)) if dof > 0 else float("nan")
    b = beta.tolist()
    e = cov.diagonal().sqrt().tolist()
    if not intercept:
        b, e = [0.0] + b, [0.0] + e
    return InverseBFit(beta=b, se=e, intercept=intercept, chi2=chi2, dof=dof, p_value=p)


def select_degree(bs, values, se, intercept: bool, max_degree: int, level: float = 0.01) -> InverseBFit:
    """The lowest-degree fit whose χ² goodness-of-fit p-value is at least ``level`` (else the
    ``max_degree`` fit)."""
    fit = None
    for deg in range(1, max_degree + 1):
        fit = fit_inverse_b(bs, values, se, deg, intercept)
        if fit.dof > 0 and fit.p_value >= level:
            return fit
    return fit


def b0_roots(beta: Sequence[float]) -> tuple[float, float]:
    """For ``v(b) = Σ_{k≥1} β_k/b^k`` (``beta[0]``, the constant, ignored): the largest real root of
    the proof's derivative polynomial ``Σ_k k β_k b^{r−k}`` (``v`` decreases for ``b`` above it) and
    of the main text's ``Σ_k β_k b^{r−k}``; ``-inf`` where there is no real root. The fitted
    floats are converted exactly to rationals and passed to :func:`sgdbook.deeplinear.b0_derivative`
    and :func:`sgdbook.deeplinear.b0_main_text` (exact root isolation)."""
    from fractions import Fraction

    from .deeplinear import b0_derivative, b0_main_text

    if not all(math.isfinite(x) for x in beta):
        raise ValueError(f"coefficients must be finite, got {list(beta)}")
    exact = [Fraction(0)] + [Fraction(float(x)) for x in beta[1:]]
    if not any(exact):
        return float("-inf"), float("-inf")
    return b0_derivative(exact), b0_main_text(exact)


# --------------------------------------------------------------------------- the chapter's statistics


def finite_batch_sizes(res: LockstepResult) -> torch.Tensor:
    """Indices of the batch sizes whose runs all stayed finite (and whose statistics are finite)."""
    ok = res.diverged == 0
    for tr in (res.var_g, res.var_grad, res.var_rb):
        ok &= torch.isfinite(tr.layer).all(0).all(-1) & torch.isfinite(tr.layer_se).all(0).all(-1)
    return ok.nonzero().squeeze(1)


def adjacent_log_ratio(v: torch.Tensor, se: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For estimates ``v`` with standard errors ``se`` over a grid of batch sizes (last dimension,
    independent runs per batch size): the gaps ``ln v_b − ln v_{b'}`` of adjacent batch sizes and their
    z-scores, ``gap / √((se_b/v_b)² + (se_{b'}/v_{b'})²)``. Returns ``(z, gap)``."""
    v, se = v.double(), se.double()
    lv, rel = v.clamp_min(1e-300).log(), se / v.clamp_min(1e-300)
    gap = lv[..., :-1] - lv[..., 1:]
    return gap / (rel[..., :-1] ** 2 + rel[..., 1:] ** 2).sqrt(), gap


@dataclass(frozen=True)
class B0Fit:
    """Theorem 5's threshold at one step from the fits in ``1/b``."""

    t: int
    fit: InverseBFit  # without constant term, the lowest adequate degree
    free: InverseBFit  # with a constant term
    b0: float  # the derivative rule (the proof's)
    b0_main: float  # the main text's rule
    b0_plain: float  # the derivative rule on the plain (not Rao–Blackwellised) estimate


def b0_fits(res: LockstepResult, keep: torch.Tensor, ts: Sequence[int], max_degree: int, level: float = 0.05) -> list[B0Fit]:
    """At each ``t`` of ``ts``: weighted fits (:func:`select_degree`) of the Rao–Blackwellised
    ``var(g_t | F_0)`` over the kept batch sizes, without and with a constant term, the two ``b_0`` rules
    (:func:`b0_roots`) and the derivative rule on the plain estimate."""
    bs = [res.bs[j] for j in keep.tolist()]
    out = []
    for t in ts:
        v, se = res.var_rb.total[t, keep].double(), res.var_rb.total_se[t, keep].double()
        fit = select_degree(bs, v, se, intercept=False, max_degree=max_degree, level=level)
        free = select_degree(bs, v, se, intercept=True, max_degree=max_degree, level=level)
        plain = select_degree(bs, res.var_g.total[t, keep].double(), res.var_g.total_se[t, keep].double(), intercept=False,
                              max_degree=max_degree, level=level)
        b0, b0_main = b0_roots(fit.beta)
        out.append(B0Fit(t, fit, free, b0, b0_main, b0_roots(plain.beta)[0]))
    return out
