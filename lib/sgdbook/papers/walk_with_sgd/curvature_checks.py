"""Section 4 of the walk-with-sgd paper: the SGD noise model (Eq. 2), the Hessian–covariance
relation (Eq. 3, App. D Eq. 8) and the noise's alignment with the sharp directions.

- :func:`eq3_terms`: the dense Hessian ``H`` of the mean negative log-likelihood, the uncentered
  second moment ``M = (1/N) Σ ∇L_i ∇L_iᵀ``, the covariance ``C = M − ḡḡᵀ`` and the second term of
  Eq. 3, ``R = (1/N) Σ (∂L_i/∂p_i) ∇²p_i``, built from the Hessians of the probabilities
  ``p_i(θ)`` of the labels (not as a difference of the others). Eq. 3 holds with ``M``; with the
  covariance ``C`` the paper names, ``H − (C + R) = ḡḡᵀ`` exactly.
- :func:`softmax_mle`: the exact minimiser of a linear softmax model (Newton's method with the
  pseudo-inverse, float64), for "H ≈ C at a minimum" where the minimum is not interpolating.
- :func:`minibatch_gradients`: the gradients of given minibatches (``vmap`` over minibatches),
  optionally projected on directions, for the Monte Carlo check of Eq. 2.
- :func:`eq2_check`: Eq. 2's covariance against Monte Carlo, direction by direction, with the
  finite-population factor ``(N − B)/(N − 1)`` of sampling without replacement.
- :func:`shape_check`: is a sample (e.g. minibatch-gradient projections) approximately Gaussian,
  judged by the size of its skewness and excess kurtosis (bootstrap intervals against bounds),
  not by a normality test whose power grows without limit with the sample.
- :func:`noise_share`: the share of the minibatch noise in the top-``k`` Hessian eigenspace
  against ``k/P`` (isotropic noise) and against the best possible share (the noise's own top-``k``
  directions).

All functions work in the dtype of the model's parameters (exact checks in float64) and never
touch the model's mode, buffers or ``.grad``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats as sstats
from torch import nn
from torch.func import functional_call, grad, vmap

from ...curvature import full_hessian, lanczos
from ...functional import check_data, flat_loss, functional_view
from ...gradients import per_example_grads, second_moment_operator

__all__ = [
    "Eq2Check",
    "Eq3Terms",
    "NoiseShare",
    "ShapeCheck",
    "eq2_check",
    "eq2_check_model",
    "eq3_terms",
    "label_probabilities",
    "minibatch_gradients",
    "noise_share",
    "noise_share_of_model",
    "pooled_digits",
    "shape_check",
    "softmax_mle",
    "tiny_problem",
]


# ----------------------------------------------------------------------------------- Eq. 3


@dataclass(frozen=True, eq=False)
class Eq3Terms:
    """The matrices of Eq. 3 at one point (``[P, P]`` each) and their relations.

    ``H`` the Hessian of ``L = (1/N) Σ L_i``, ``M`` the uncentered second moment of the per-example
    gradients, ``C = M − ḡḡᵀ`` their covariance (population normalisation), ``R`` the second term
    ``(1/N) Σ (∂L_i/∂p_i) ∇²p_i``, ``g`` the mean gradient ``ḡ``, ``p`` the probabilities of the
    labels.
    """

    H: torch.Tensor
    M: torch.Tensor
    C: torch.Tensor
    R: torch.Tensor
    g: torch.Tensor
    p: torch.Tensor

    def _rel(self, A: torch.Tensor) -> float:
        return float(torch.linalg.matrix_norm(A) / torch.linalg.matrix_norm(self.H))

    @property
    def err_with_M(self) -> float:
        """``‖H − (M + R)‖_F / ‖H‖_F``: Eq. 3 with the uncentered second moment (0 up to rounding)."""
        return self._rel(self.H - (self.M + self.R))

    @property
    def err_with_C(self) -> float:
        """``‖H − (C + R)‖_F / ‖H‖_F``: Eq. 3 read with the covariance (= ``‖ḡ‖² / ‖H‖_F``)."""
        return self._rel(self.H - (self.C + self.R))

    @property
    def err_of_gap(self) -> float:
        """``‖H − (C + R) − ḡḡᵀ‖_F / ‖H‖_F``: the corrected identity (0 up to rounding)."""
        return self._rel(self.H - (self.C + self.R) - torch.outer(self.g, self.g))

    @property
    def gap_predicted(self) -> float:
        """``‖ḡḡᵀ‖_F / ‖H‖_F = ‖ḡ‖² / ‖H‖_F``."""
        return float(self.g.dot(self.g) / torch.linalg.matrix_norm(self.H))

    def ratios(self) -> dict[str, float]:
        """Frobenius norms relative to ``‖H‖_F``: ``R``, ``M``, ``C`` and ``H − C``."""
        return {"R": self._rel(self.R), "M": self._rel(self.M), "C": self._rel(self.C), "H-C": self._rel(self.H - self.C)}


def label_probabilities(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bn_mode: str | None = None):
    """``(p, θ₀)``: ``p(θ)`` the softmax probabilities of the labels ``[p_1(θ) … p_N(θ)]`` as a
    function of the flat parameter vector (the model's outputs are the logits)."""

    def probs(out, t):
        return torch.softmax(out, dim=1).gather(1, t[:, None]).squeeze(1)

    return flat_loss(model, probs, x, y, bn_mode=bn_mode)


def eq3_terms(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, bn_mode: str | None = None) -> Eq3Terms:
    """The terms of Eq. 3 for the cross-entropy (``L_i = −log p_i``) of ``model`` on ``(x, y)``.

    Dense ``[P, P]`` matrices: for small networks only. ``H`` is the Hessian of the mean
    cross-entropy (``jacfwd(grad)``), ``M`` and ``C`` come from the per-example gradients, and
    ``R = (1/N) Σ c_i ∇²p_i`` is the Hessian of ``θ ↦ (1/N) Σ c_i p_i(θ)`` with the constants
    ``c_i = ∂L_i/∂p_i`` taken by autograd of ``L(p) = −log p`` at the point (``−1/p_i``). A
    network with batch norm needs ``bn_mode="eval"`` (per-example losses).
    """
    check_data(x, y)
    if bn_mode == "train":
        raise ValueError("Eq. 3 is a statement about per-example losses: use bn_mode='eval' (or a net without batch norm)")
    f, theta = flat_loss(model, F.cross_entropy, x, y, bn_mode=bn_mode)
    H = full_hessian(f, theta)
    G = per_example_grads(model, F.cross_entropy, x, y, bn_mode=bn_mode or "eval")
    n = G.shape[0]
    g = G.mean(0)
    M = G.T @ G / n
    C = M - torch.outer(g, g)
    pfun, _ = label_probabilities(model, x, y, bn_mode=bn_mode)
    with torch.no_grad():
        p0 = pfun(theta)
    c = vmap(grad(lambda q: -torch.log(q)))(p0)  # ∂L_i/∂p_i by autograd of L(p) = −log p
    R = full_hessian(lambda t: (c * pfun(t)).sum() / n, theta)
    return Eq3Terms(H=H, M=M, C=C, R=R, g=g, p=p0)


def softmax_mle(
    x: torch.Tensor, y: torch.Tensor, classes: int, *, max_iter: int = 100, tol: float = 1e-9
) -> tuple[nn.Linear, float, int]:
    """The maximum-likelihood linear softmax model ``nn.Linear(features, classes)`` on ``(x, y)``.

    Newton's method on the mean cross-entropy in the dtype of ``x`` (use float64), the step
    ``−H⁺ ∇L`` with the pseudo-inverse (the softmax's parameters have a null direction per
    feature), halved until the loss does not increase. Returns ``(model, ‖∇L‖ at the end,
    iterations)``; raises if the gradient norm has not fallen below ``tol`` or the loss has gone
    below 1e-6 (separable data, where the loss tends to 0 and no minimiser exists).
    """
    model = nn.Linear(x.shape[1], classes).to(x.dtype)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
    f, theta = flat_loss(model, F.cross_entropy, x, y)
    gf = grad(f)
    for it in range(1, max_iter + 1):
        g = gf(theta)
        gn = float(g.norm())
        if gn < tol:
            break
        H = full_hessian(f, theta)
        step = -torch.linalg.pinv(H, hermitian=True) @ g
        f0 = float(f(theta))
        t = 1.0
        while float(f(theta + t * step)) > f0 and t > 1e-8:
            t /= 2
        theta = theta + t * step
    else:
        gn = float(gf(theta).norm())
    loss = float(f(theta))
    if loss < 1e-6:
        raise RuntimeError(
            f"Newton's method ended at ‖∇L‖ = {gn:.3g}, L = {loss:.3g} after {it} steps: the data look linearly "
            "separable (the loss goes to 0 and no finite minimiser exists); add label noise or use fewer features"
        )
    if gn >= tol:
        raise RuntimeError(f"Newton's method did not reach ‖∇L‖ < {tol:g} in {max_iter} steps (‖∇L‖ = {gn:.3g})")
    with torch.no_grad():
        k = model.weight.numel()
        model.weight.copy_(theta[:k].view_as(model.weight))
        model.bias.copy_(theta[k:])
    return model, gn, it


def pooled_digits(side: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits average-pooled from 8×8 to ``side × side`` (``side`` divides 8),
    standardised (one mean and sd), in a fixed permutation from ``seed``: ``(x [1797, 1, s, s], y)``."""
    from ...data import digits

    if 8 % side:
        raise ValueError(f"side must divide 8, got {side}")
    ds = digits()
    x = F.avg_pool2d(ds.x.to(dtype), 8 // side)
    x = (x - x.mean()) / x.std()
    perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))
    return x[perm], ds.y[perm]


def tiny_problem(n: int, side: int, widths, head, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A float64 VGG-style CNN (:func:`sgdbook.models.small_cnn` with ``widths`` and ``head``,
    initialised from ``seed``) and the first ``n`` images of :func:`pooled_digits` — small enough
    for dense ``[P, P]`` matrices."""
    from ...models import small_cnn

    x, y = pooled_digits(side)
    model = small_cnn(tuple(widths), tuple(head), generator=torch.Generator().manual_seed(seed)).double()
    return model, x[:n], y[:n]


# ----------------------------------------------------------------------------------- Eq. 2


def minibatch_gradients(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    indices: torch.Tensor,
    *,
    directions: torch.Tensor | None = None,
    bn_mode: str = "train",
    chunk: int | None = None,
) -> torch.Tensor:
    """The mean-loss gradients of the minibatches ``x[indices[j]]`` (``indices`` ``[n_s, B]``), as
    rows ``[n_s, P]``, or their projections ``[n_s, k]`` on the columns of ``directions``
    (``[P, k]``), computed ``chunk`` minibatches at a time by ``vmap`` over minibatches of ``grad``
    (default chunk: about 2²² gradient numbers)."""
    check_data(x, y)
    if indices.ndim != 2:
        raise ValueError(f"indices must be [n_s, B], got shape {tuple(indices.shape)}")
    s = functional_view(model, bn_mode)
    if directions is not None and (directions.ndim != 2 or directions.shape[0] != s.d):
        raise ValueError(f"directions must be [P = {s.d}, k], got shape {tuple(directions.shape)}")

    def batch_loss(p, xb, yb):
        return loss_fn(functional_call(s.module, p, (xb,)), yb)

    g_fn = vmap(grad(batch_loss), in_dims=(None, 0, 0))
    n_s = indices.shape[0]
    step = max(1, int(chunk) if chunk else (1 << 22) // s.d)
    out = []
    for a in range(0, n_s, step):
        idx = indices[a : a + step].to(x.device)
        G = s.flatten(g_fn(s.params, x[idx], y[idx]), batch=idx.shape[0])
        out.append(G if directions is None else G @ directions)
    return torch.cat(out)


@dataclass(frozen=True)
class Eq2Check:
    """Monte Carlo of the minibatch gradient ``ĝ`` against Eq. 2, per direction ``u_j``.

    ``mc_var[j]`` is the sample variance of ``u_jᵀĝ`` over the ``n_s`` minibatches with its standard
    error ``mc_var_se[j]`` (sd of the squared deviations over ``√n_s``); ``pred_centered[j]`` is
    Eq. 2 with the covariance, ``u_jᵀCu_j (N − B)/(B (N − 1))`` (sampling without replacement),
    ``pred_uncentered[j]`` the same with the uncentered ``M`` (and the same factor), and ``z_*`` the z-scores of the Monte
    Carlo against each. ``mean_z[j]`` compares the Monte Carlo mean of ``u_jᵀĝ`` with ``u_jᵀḡ``.
    ``normal_p[j]`` is D'Agostino–Pearson's test of normality of the projections (Eq. 2's
    Gaussian shape). ``trace_*``: the same for ``tr Cov(ĝ)``. ``sq_dev`` (``[n_s, k + 1]``): each
    minibatch's squared deviations from the exact mean ``ḡ``, ``(u_jᵀ(ĝ − ḡ))²`` and ``‖ĝ − ḡ‖²``,
    whose expectations are the predicted variances and trace: the rows of a joint test
    (:meth:`hotelling`) that accounts for the statistics' correlation (one set of minibatches, the
    trace containing every direction).
    """

    mc_var: np.ndarray
    mc_var_se: np.ndarray
    pred_centered: np.ndarray
    pred_uncentered: np.ndarray
    z_centered: np.ndarray
    z_uncentered: np.ndarray
    mean_z: np.ndarray
    normal_p: np.ndarray
    trace_mc: float
    trace_mc_se: float
    trace_centered: float
    trace_uncentered: float
    n_s: int
    batch_size: int
    n: int
    sq_dev: np.ndarray

    def hotelling(self, variances, trace):
        """Hotelling's T² test (:func:`sgdbook.stats.hotelling_test`) that the mean of
        :attr:`sq_dev` is ``(variances, trace)``, e.g. ``(pred_centered, trace_centered)``."""
        from ...stats import hotelling_test

        return hotelling_test(self.sq_dev, np.append(np.asarray(variances, dtype=float), float(trace)))


def _eq2(GU, gu, mean_sq_norm, gbar_sq, n, ZU, trace_mc, trace_se, B, trace_rows) -> Eq2Check:
    """Eq. 2 against Monte Carlo from sufficient statistics: the per-example projections ``GU``
    (``[N, k]``), the mean gradient's projections ``gu``, ``(1/N)Σ‖g_i‖²``, ``‖ḡ‖²``, the minibatch
    projections ``ZU`` (``[n_s, k]``), the Monte Carlo trace with its standard error and each
    minibatch's ``‖ĝ − ḡ‖²`` (``trace_rows``, ``[n_s]``)."""
    n_s = ZU.shape[0]
    if not 1 <= B < n:
        raise ValueError(f"batch size must be in [1, N = {n}), got {B}")
    factor = (n - B) / (B * (n - 1))
    pred_c = ((GU - gu) ** 2).mean(0) * factor
    pred_u = (GU**2).mean(0) * factor  # the same factor: only the centering differs
    dev = ZU - ZU.mean(0)
    sq = dev**2
    mc_var = sq.sum(0) / (n_s - 1)
    mc_se = sq.std(0) / math.sqrt(n_s)
    mean_z = (ZU.mean(0) - gu) / (ZU.std(0) / math.sqrt(n_s))
    normal_p = np.array([float(sstats.normaltest(dev[:, j].cpu().numpy()).pvalue) for j in range(ZU.shape[1])])
    np_ = lambda t: t.cpu().numpy()  # noqa: E731
    return Eq2Check(
        mc_var=np_(mc_var), mc_var_se=np_(mc_se), pred_centered=np_(pred_c), pred_uncentered=np_(pred_u),
        z_centered=np_((mc_var - pred_c) / mc_se), z_uncentered=np_((mc_var - pred_u) / mc_se),
        mean_z=np_(mean_z), normal_p=normal_p, trace_mc=float(trace_mc), trace_mc_se=float(trace_se),
        trace_centered=(mean_sq_norm - gbar_sq) * factor, trace_uncentered=mean_sq_norm * factor, n_s=n_s, batch_size=B, n=n,
        sq_dev=np_(torch.cat([(ZU - gu) ** 2, trace_rows.reshape(-1, 1).to(ZU.dtype)], 1)),
    )


def eq2_check(G: torch.Tensor, minibatch_grads: torch.Tensor, directions: torch.Tensor, batch_size: int) -> Eq2Check:
    """Compare Monte Carlo minibatch gradients (rows ``[n_s, P]``, minibatches of ``batch_size``
    drawn without replacement) with Eq. 2 built from the per-example gradients ``G`` (``[N, P]``),
    along the columns of ``directions`` (``[P, k]``) and in trace."""
    n = G.shape[0]
    n_s = minibatch_grads.shape[0]
    G, U, Z = G.double(), directions.double(), minibatch_grads.double()
    g = G.mean(0)
    q = ((Z - Z.mean(0)) ** 2).sum(1)
    return _eq2(G @ U, g @ U, float((G**2).sum() / n), float(g.dot(g)), n, Z @ U,
                float(q.sum() / (n_s - 1)), float(q.std() / math.sqrt(n_s)), int(batch_size), ((Z - g) ** 2).sum(1))


def eq2_check_model(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    directions: torch.Tensor,
    indices: torch.Tensor,
    *,
    chunk: int | None = None,
) -> tuple[Eq2Check, torch.Tensor]:
    """:func:`eq2_check` for ``model`` on ``(x, y)`` (no batch norm, or batch norm in eval mode)
    and the minibatches ``x[indices[j]]`` (``[n_s, B]``) without ever holding all per-example or
    minibatch gradients: per-example gradients in chunks of ``chunk`` examples (default: about 2²⁶
    numbers) reduced to their projections and norms; minibatch gradients projected on the fly
    (:func:`minibatch_gradients`) and the Monte Carlo trace from
    :func:`sgdbook.gradients.minibatch_moments`. Returns the check and the minibatch projections
    ``[n_s, k]``."""
    from ...gradients import minibatch_moments

    n = check_data(x, y)
    U = directions
    P = U.shape[0]
    step = max(1, int(chunk) if chunk else (1 << 26) // P)
    GU, s1, sq = [], torch.zeros(P, dtype=torch.float64, device=U.device), 0.0
    for a in range(0, n, step):
        G = per_example_grads(model, loss_fn, x[a : a + step], y[a : a + step], bn_mode="eval")
        GU.append((G @ U.to(G.dtype)).double())
        s1 += G.sum(0).double()
        sq += float(torch.linalg.vector_norm(G.double()) ** 2)
        del G
    GU = torch.cat(GU)
    g = s1 / n
    ZU = minibatch_gradients(model, loss_fn, x, y, indices, directions=U, bn_mode="eval").double()
    mom = minibatch_moments(model, loss_fn, x, y, indices=indices, bn_mode="eval", ddof=1, u=g)
    # ‖ĝ − ḡ‖² = ‖ĝ‖² − 2‖ĝ‖‖ḡ‖cos(ḡ, ĝ) + ‖ḡ‖² from the per-minibatch norms and cosines (their dot products in the
    # model's precision: a relative error of about eps·‖ĝ‖‖ḡ‖/‖ĝ − ḡ‖², small unless ‖ḡ‖² is far above tr Cov)
    gn = float(torch.linalg.vector_norm(g))
    trace_rows = mom.norms**2 - 2 * gn * mom.norms * mom.cosines + gn**2
    check = _eq2(GU, g @ U.double(), sq / n, float(g.dot(g)), n, ZU, mom.trace_cov, mom.trace_cov_se, indices.shape[1],
                 trace_rows)
    return check, ZU


@dataclass(frozen=True)
class ShapeCheck:
    """Skewness and excess kurtosis of each column of a sample with bootstrap intervals, against
    the bounds of "approximately Gaussian".

    ``skew[j]``, ``kurt[j]`` are the (biased, moment) estimates of :func:`scipy.stats.skew` and
    :func:`scipy.stats.kurtosis` (Fisher: 0 for a Gaussian); ``skew_ci``, ``kurt_ci`` their
    percentile bootstrap intervals (``[k, 2]``). ``status[j]`` is ``"holds"`` if both intervals lie
    within ``±skew_bound`` and ``±kurt_bound``, ``"fails"`` if either interval lies entirely
    outside its bound (the sample excludes an approximately Gaussian shape), ``"undecided"``
    otherwise; ``overall`` is ``"fails"`` if some column fails, ``"holds"`` if all hold.
    """

    skew: np.ndarray
    kurt: np.ndarray
    skew_ci: np.ndarray
    kurt_ci: np.ndarray
    status: list
    overall: str
    skew_bound: float
    kurt_bound: float
    n: int


def shape_check(
    samples, *, skew_bound: float = 0.5, kurt_bound: float = 1.0, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> ShapeCheck:
    """:class:`ShapeCheck` of the columns of ``samples`` (``[n, k]``, rows independent draws).

    The bootstrap resamples the rows ``n_boot`` times (numpy generator seeded with ``seed``; one
    column at a time, ``n_boot × n`` numbers). The default bounds, |skewness| ≤ 0.5 and |excess
    kurtosis| ≤ 1, are the usual rules of thumb for "approximately normal"."""
    x = np.asarray(samples, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    n, k = x.shape
    if n < 8:
        raise ValueError(f"a shape check needs at least 8 draws, got {n}")
    rng = np.random.default_rng(seed)
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    skew, kurt = sstats.skew(x, axis=0), sstats.kurtosis(x, axis=0)
    s_ci, k_ci = np.empty((k, 2)), np.empty((k, 2))
    for j in range(k):
        xb = x[rng.integers(0, n, size=(n_boot, n)), j]
        s_ci[j] = np.percentile(sstats.skew(xb, axis=1), q)
        k_ci[j] = np.percentile(sstats.kurtosis(xb, axis=1), q)
    status = []
    for j in range(k):
        inside = -skew_bound <= s_ci[j, 0] and s_ci[j, 1] <= skew_bound and -kurt_bound <= k_ci[j, 0] and k_ci[j, 1] <= kurt_bound
        outside = s_ci[j, 0] > skew_bound or s_ci[j, 1] < -skew_bound or k_ci[j, 0] > kurt_bound or k_ci[j, 1] < -kurt_bound
        status.append("holds" if inside else "fails" if outside else "undecided")
    overall = "fails" if "fails" in status else "holds" if all(s == "holds" for s in status) else "undecided"
    return ShapeCheck(skew=skew, kurt=kurt, skew_ci=s_ci, kurt_ci=k_ci, status=status, overall=overall,
                      skew_bound=float(skew_bound), kurt_bound=float(kurt_bound), n=n)


# ------------------------------------------------------------------- alignment with sharp directions


@dataclass(frozen=True)
class NoiseShare:
    """Share of the minibatch noise's variance in the top-``j`` Hessian eigenspace, ``j = 1 … k``.

    ``share[j−1] = tr(P_j Σ P_j) / tr Σ`` with ``Σ`` the per-example gradients' covariance (the
    minibatch noise's covariance is ``Σ`` times ``(N − B)/(B(N − 1))``, so the share does not
    depend on ``B``) and ``P_j`` the projector on the top-``j`` eigenvectors; ``isotropic[j−1] =
    j/P`` is the share of isotropic noise; ``best[j−1]`` is the largest possible share, that of
    ``Σ``'s own top-``j`` eigenvectors (sum of its top ``j`` eigenvalues over its trace).
    """

    share: np.ndarray
    isotropic: np.ndarray
    best: np.ndarray
    trace: float
    P: int


def noise_share(G: torch.Tensor, V: torch.Tensor) -> NoiseShare:
    """:class:`NoiseShare` from per-example gradients ``G`` (``[N, P]``) and orthonormal Hessian
    eigenvectors ``V`` (``[P, k]``, largest eigenvalue first). The best share comes from the
    eigenvalues of the ``min(N, P)``-sided Gram matrix of the centred gradients."""
    n, P = G.shape
    if V.ndim != 2 or V.shape[0] != P:
        raise ValueError(f"V must be [P = {P}, k], got shape {tuple(V.shape)}")
    k = V.shape[1]
    Gc = G - G.mean(0)
    total = float(torch.linalg.vector_norm(Gc.double()) ** 2)
    along = ((Gc @ V.to(G.dtype)).double() ** 2).sum(0)  # [k] variance along each eigenvector (× N)
    share = (along.cumsum(0) / total).cpu().numpy()
    gram = (Gc @ Gc.T) if n <= P else (Gc.T @ Gc)  # Σ's nonzero eigenvalues are the Gram's / N
    ev = torch.linalg.eigvalsh(gram.double()).flip(0)
    best = (ev[:k].clamp_min(0).cumsum(0) / total).cpu().numpy()
    return NoiseShare(share=share, isotropic=np.arange(1, k + 1) / P, best=best, trace=total / n, P=P)


#: Examples per chunk of the covariance operator behind :func:`noise_share_of_model`'s largest share
#: where the per-example gradients are too many to store (one chunk's forward and backward pass).
COVARIANCE_CHUNK = 500


def noise_share_of_model(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    V: torch.Tensor,
    *,
    bn_mode: str = "eval",
    chunk: int | None = None,
    max_stored: int = 1 << 27,
    tol: float = 1e-3,
) -> NoiseShare:
    """:func:`noise_share` of ``model`` on ``(x, y)`` without holding all per-example gradients
    when they would exceed ``max_stored`` numbers: chunks of ``chunk`` examples are reduced to
    float64 sums (``Σg``, ``Σ‖g‖²``, ``Σ gᵀV`` and ``Σ (gᵀV)²``), and ``best`` comes from the top
    eigenvalues of the covariance by Lanczos on its operator
    (:func:`sgdbook.gradients.second_moment_operator`, centered, in chunks; relative residual
    ``tol``; NaN where Lanczos does not converge). With at most ``max_stored`` numbers it is
    :func:`noise_share` of :func:`sgdbook.gradients.per_example_grads`."""
    n = check_data(x, y)
    P = sum(q.numel() for q in model.parameters() if q.requires_grad)
    if n * P <= max_stored:
        return noise_share(per_example_grads(model, loss_fn, x, y, bn_mode=bn_mode), V)
    step = max(1, int(chunk) if chunk else max_stored // (4 * P))
    k = V.shape[1]
    s1 = torch.zeros(P, dtype=torch.float64, device=V.device)
    sq = 0.0
    sv = torch.zeros(k, dtype=torch.float64, device=V.device)
    sv2 = torch.zeros(k, dtype=torch.float64, device=V.device)
    for a in range(0, n, step):
        G = per_example_grads(model, loss_fn, x[a : a + step], y[a : a + step], bn_mode=bn_mode)
        GV = (G @ V.to(G.dtype)).double()
        s1 += G.sum(0).double()
        sq += float(torch.linalg.vector_norm(G.double()) ** 2)
        sv += GV.sum(0)
        sv2 += (GV**2).sum(0)
        del G
    mean = s1 / n
    total = sq - n * float(mean.dot(mean))
    mv = mean @ V.double()
    along = sv2 - n * mv**2
    share = (along.cumsum(0) / total).cpu().numpy()
    # the operator stores no per-example gradients: its chunks need only bound one chunk's activations
    C = second_moment_operator(model, loss_fn, x, y, centered=True, chunk=COVARIANCE_CHUNK, bn_mode=bn_mode)
    top = lanczos(lambda v: C @ v, C.d, k, tol=tol, dtype=C.dtype, device=C.device,
                  generator=torch.Generator(device=C.device).manual_seed(0))
    lam = top.eigenvalues.double().clamp_min(0.0)  # a covariance: rounding may leave a tiny negative
    best = (lam.cumsum(0) / (total / n)).cpu().numpy() if top.converged else np.full(k, np.nan)
    return NoiseShare(share=share, isotropic=np.arange(1, k + 1) / P, best=best, trace=total / n, P=P)
