"""Theory of online SGD on a two-layer linear teacher–student network (batch-size paper, §3.2, App. B.2).

Setting: population loss ``L(W_1, W_2) = E_x ½‖(W_2W_1 − W̄_2W̄_1) x‖² = ½‖Δ‖_F²`` with
``x ~ N(0, I_p)``; at every step ``b`` fresh samples give the minibatch gradients (Eqs. 1–2)
``g_1 = W_2ᵀ Δ Σ̂`` and ``g_2 = Δ Σ̂ W_1ᵀ`` with ``Σ̂ = (1/b) Σ_i x_i x_iᵀ``; ``W_{t+1,j} = W_{t,j} − α_t g_{t,j}``.

What is here (all stateless):

* the gradient formulas, batched over runs, and the closed-form conditional moments of Lemma 8;
* Gaussian moments of matrix chains by Wick/Isserlis pairing (Lemmas 6 and 7), with a general
  perfect-matching enumerator, and the minibatch expectation of ``tr(Σ̂A_1 ⋯ Σ̂A_d)`` as an exact
  polynomial in ``1/b`` (set partitions of the sample indices);
* multiplicative terms as words of symbols (Definition 1): degrees, evaluation, the trace
  rotation of Lemma 5 and the substitution expansion of Lemma 9;
* the scalar network (``p = p_1 = p_2 = 1``) in exact rational arithmetic: ``Σ̂ = s = χ²_b/b`` with
  ``E[s^k] = Π_{j<k}(1 + 2j/b)``, so every conditional moment given ``w_0`` is an exact polynomial
  in ``u = 1/b`` (sympy's sparse polynomial rings), checked by tensor Gauss–Laguerre quadrature
  and Monte Carlo;
* ``b_0`` of Theorem 5 by exact real-root isolation, for the main-text and the proof's rule.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator, Sequence

import numpy as np
import torch

# ----------------------------------------------------------------------------- Eqs. (1)–(2)


def _check_shapes(W1: torch.Tensor, W2: torch.Tensor, Wb1: torch.Tensor, Wb2: torch.Tensor) -> None:
    if W1.shape[-1] != Wb1.shape[-1] or W2.shape[-2] != Wb2.shape[-2] or W2.shape[-1] != W1.shape[-2]:
        raise ValueError(
            f"shapes do not chain: W1 {tuple(W1.shape)}, W2 {tuple(W2.shape)}, teacher {tuple(Wb1.shape)}, {tuple(Wb2.shape)}"
        )
    if Wb2.shape[-1] != Wb1.shape[-2]:
        raise ValueError(f"teacher shapes do not chain: {tuple(Wb1.shape)}, {tuple(Wb2.shape)}")


def gap(W1: torch.Tensor, W2: torch.Tensor, Wb1: torch.Tensor, Wb2: torch.Tensor) -> torch.Tensor:
    """``Δ = W_2W_1 − W̄_2W̄_1`` (batched over leading dimensions of ``W1``, ``W2``)."""
    _check_shapes(W1, W2, Wb1, Wb2)
    return W2 @ W1 - Wb2 @ Wb1


def minibatch_loss(W1, W2, Wb1, Wb2, x: torch.Tensor) -> torch.Tensor:
    """``(1/b) Σ_i ½‖W_2W_1x_i − W̄_2W̄_1x_i‖²`` for ``x`` of shape ``[b, p]`` (one minibatch)."""
    if x.dim() != 2:
        raise ValueError(f"x must be [b, p], got {tuple(x.shape)}")
    r = x @ (W2 @ W1 - Wb2 @ Wb1).T
    return 0.5 * (r**2).sum(-1).mean()


def minibatch_grads(W1, W2, Wb1, Wb2, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eqs. (1)–(2): ``g_1 = W_2ᵀΔΣ̂``, ``g_2 = ΔΣ̂W_1ᵀ`` with ``Σ̂ = xᵀx/b``.

    ``x``: ``[..., b, p]``; the weights broadcast against the leading dimensions (runs).
    """
    if x.dim() < 2:
        raise ValueError(f"x must be [..., b, p], got {tuple(x.shape)}")
    D = gap(W1, W2, Wb1, Wb2)
    b = x.shape[-2]
    Dx = x @ D.transpose(-1, -2)  # [..., b, p2] rows (Δx_i)ᵀ
    S_D = Dx.transpose(-1, -2) @ x / b  # ΔΣ̂  [..., p2, p]
    g1 = W2.transpose(-1, -2) @ S_D
    g2 = S_D @ W1.transpose(-1, -2)
    return g1, g2


def population_grads(W1, W2, Wb1, Wb2) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradients of ``½‖Δ‖_F²``: ``(W_2ᵀΔ, ΔW_1ᵀ)``."""
    D = gap(W1, W2, Wb1, Wb2)
    return W2.transpose(-1, -2) @ D, D @ W1.transpose(-1, -2)


def conditional_sq_norms(W1, W2, Wb1, Wb2, b) -> tuple[torch.Tensor, torch.Tensor]:
    """Lemma 8 examples: ``E[‖g_1‖² | F_t] = (1 + (p+1)/b)‖W_2ᵀΔ‖²`` and
    ``E[‖g_2‖² | F_t] = ‖ΔW_1ᵀ‖² + (‖ΔW_1ᵀ‖² + ‖Δ‖²‖W_1‖²)/b``."""
    b = torch.as_tensor(b, dtype=W1.dtype, device=W1.device)
    if (b < 1).any():
        raise ValueError("batch sizes must be >= 1")
    p = W1.shape[-1]
    D = gap(W1, W2, Wb1, Wb2)
    K = W2.transpose(-1, -2) @ D
    J = D @ W1.transpose(-1, -2)
    nK = (K**2).sum((-1, -2))
    nJ = (J**2).sum((-1, -2))
    return (1 + (p + 1) / b) * nK, nJ + (nJ + (D**2).sum((-1, -2)) * (W1**2).sum((-1, -2))) / b


def conditional_variances(W1, W2, Wb1, Wb2, b) -> tuple[torch.Tensor, torch.Tensor]:
    """``var(g_1 | F_t) = (p+1)‖W_2ᵀΔ‖²/b`` and ``var(g_2 | F_t) = (‖ΔW_1ᵀ‖² + ‖Δ‖²‖W_1‖²)/b``."""
    e1, e2 = conditional_sq_norms(W1, W2, Wb1, Wb2, b)
    G1, G2 = population_grads(W1, W2, Wb1, Wb2)
    return e1 - (G1**2).sum((-1, -2)), e2 - (G2**2).sum((-1, -2))


# ----------------------------------------------------------------------------- Wick pairings


def perfect_matchings(items: Sequence) -> Iterator[list[tuple]]:
    """Every partition of ``items`` (even length) into unordered pairs: ``(2k − 1)!!`` of them."""
    items = list(items)
    if len(items) % 2:
        raise ValueError(f"a perfect matching needs an even number of items, got {len(items)}")
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for i, partner in enumerate(rest):
        for m in perfect_matchings(rest[:i] + rest[i + 1 :]):
            yield [(first, partner)] + m


def set_partitions(items: Sequence) -> Iterator[list[list]]:
    """Every partition of ``items`` into non-empty blocks (Bell-number many)."""
    items = list(items)
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in set_partitions(rest):
        for i in range(len(part)):
            yield part[:i] + [[first] + part[i]] + part[i + 1 :]
        yield [[first]] + part


_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def chain_moment(mats: Sequence[torch.Tensor], idx: Sequence[tuple[int, int]], p: int | None = None) -> tuple[torch.Tensor, int]:
    """Exact ``E[x_{i_1}x_{i'_1}ᵀ A_1 x_{i_2}x_{i'_2}ᵀ A_2 ⋯ A_{m−1} x_{i_m}x_{i'_m}ᵀ]`` for i.i.d.
    ``x_i ~ N(0, I_p)`` (Lemmas 6 and 7) by Isserlis/Wick: the sum over every perfect matching of
    the ``2m`` vector slots that pairs only equal sample indices of the contraction with ``δ``'s.

    ``mats``: the ``m − 1`` matrices ``A_j`` (``p × p``); ``idx``: the ``m`` pairs ``(i_j, i'_j)``.
    Returns the ``p × p`` expectation and the number of matchings that contributed (0 when some
    index appears an odd number of times, and then the expectation is 0). ``p`` is needed only
    for ``m = 1`` (no matrices).
    """
    m = len(idx)
    if m < 1 or len(mats) != m - 1:
        raise ValueError(f"need m >= 1 index pairs and m − 1 matrices, got {len(idx)} and {len(mats)}")
    if 2 * m > len(_LETTERS):
        raise ValueError("chain too long for the einsum alphabet")
    if mats:
        p = mats[0].shape[0]
    elif p is None:
        raise ValueError("a chain without matrices (m = 1) needs p")
    for A in mats:
        if A.dim() != 2 or A.shape[0] != A.shape[1] or A.shape[0] != p:
            raise ValueError("the matrices A_j must be square and of one size")
    # slot 2j is the column vector x_{i_j}, slot 2j+1 the row vector x_{i'_j}ᵀ
    sample = [v for pair in idx for v in pair]
    dtype = mats[0].dtype if mats else torch.float64
    dev = mats[0].device if mats else torch.device("cpu")
    result = torch.zeros(p, p, dtype=dtype, device=dev)
    count = 0
    for matching in perfect_matchings(range(2 * m)):
        if any(sample[a] != sample[c] for a, c in matching):
            continue
        count += 1
        letter = {}
        for k, (a, c) in enumerate(matching):
            letter[a] = letter[c] = _LETTERS[k]
        # factor A_j sits between slot 2j−1 (row vector x_{i'_j}ᵀ) and slot 2j (column vector x_{i_{j+1}})
        operands = [letter[2 * j + 1] + letter[2 * j + 2] for j in range(m - 1)]
        first, last = letter[0], letter[2 * m - 1]
        if first == last:  # the outer slots are paired: δ_rs times a scalar
            scalar = torch.einsum(",".join(operands) + "->", *mats) if operands else torch.ones((), dtype=dtype, device=dev)
            result = result + scalar * torch.eye(p, dtype=result.dtype, device=result.device)
        else:
            result = result + torch.einsum(",".join(operands) + "->" + first + last, *mats)
    return result, count


def magnus_m2(A: torch.Tensor) -> torch.Tensor:
    """``E[xxᵀAxxᵀ] = A + Aᵀ + tr(A) I``."""
    return A + A.T + torch.trace(A) * torch.eye(A.shape[0], dtype=A.dtype, device=A.device)


def magnus_m3(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """``E[xxᵀAxxᵀBxxᵀ]`` written out from the 15 pairings:
    ``(A+Aᵀ)(B+Bᵀ) + (B+Bᵀ)(A+Aᵀ) + tr(B)(A+Aᵀ) + tr(A)(B+Bᵀ) + (trA trB + tr(AᵀB) + tr(AB)) I``."""
    SA, SB = A + A.T, B + B.T
    eye = torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
    s = torch.trace(A) * torch.trace(B) + (A * B).sum() + torch.trace(A @ B)
    return SA @ SB + SB @ SA + torch.trace(B) * SA + torch.trace(A) * SB + s * eye


def _chunk_size(n: int, per_item: int, budget: int = 2**24) -> int:
    """Items per chunk so that one chunk's largest tensor holds about ``budget`` numbers."""
    return max(1, min(n, budget // max(per_item, 1)))


class _Moments:
    """Running sums for means and standard errors over chunks (float64)."""

    def __init__(self):
        self.n, self.s1, self.s2 = 0, 0.0, 0.0

    def add(self, v: torch.Tensor) -> None:  # v: [chunk, ...]
        v = v.to(torch.float64)
        self.n += v.shape[0]
        self.s1 = self.s1 + v.sum(0)
        self.s2 = self.s2 + (v * v).sum(0)

    def result(self):
        mean = self.s1 / self.n
        var = (self.s2 - self.n * mean * mean) / (self.n - 1)
        return mean, (var.clamp_min(0) / self.n).sqrt()


def chain_monte_carlo(mats, idx, n: int, gen: torch.Generator, chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Monte Carlo of :func:`chain_moment`: the mean and the standard error of every entry over
    ``n`` independent draws (batched, in chunks of bounded memory)."""
    m = len(idx)
    if len(mats) != m - 1 or m < 2:
        raise ValueError("need m >= 2 index pairs and m − 1 matrices")
    if n < 2:
        raise ValueError("need n >= 2 draws")
    p = mats[0].shape[0]
    nsamp = 1 + max(max(pair) for pair in idx)
    chunk = chunk or _chunk_size(n, p * p)
    acc = _Moments()
    done = 0
    while done < n:
        k = min(chunk, n - done)
        x = torch.randn(k, nsamp, p, generator=gen, dtype=mats[0].dtype, device=mats[0].device)
        left = x[:, idx[0][0], :, None] * x[:, idx[0][1], None, :]  # [k, p, p]
        for j in range(1, m):
            Xj = x[:, idx[j][0], :, None] * x[:, idx[j][1], None, :]
            left = left @ mats[j - 1] @ Xj
        acc.add(left)
        done += k
    return acc.result()


def minibatch_trace_poly(mats: Sequence[torch.Tensor]) -> torch.Tensor:
    """``E[tr(Σ̂A_1Σ̂A_2 ⋯ Σ̂A_d)] = Σ_k N_k / b^k`` with ``Σ̂ = (1/b)Σ_{i≤b} x_ix_iᵀ``: the coefficients
    ``N_0 … N_{d−1}`` (Lemma 8's polynomial in ``1/b``), exactly.

    The ``b^d`` index tuples are grouped by the set partition they induce on the ``d`` factors; a
    partition with ``k`` blocks is realised by ``b(b−1)⋯(b−k+1)`` tuples, each with the Wick
    expectation of :func:`chain_moment`; expanding the falling factorial over ``b^d`` gives the
    polynomial in ``1/b``.
    """
    d = len(mats)
    if d < 1:
        raise ValueError("need at least one matrix")
    coef = torch.zeros(d, dtype=mats[0].dtype, device=mats[0].device)
    for part in set_partitions(range(d)):
        label = {i: k for k, block in enumerate(part) for i in block}
        # tr(X_1 A_1 X_2 A_2 ⋯ X_d A_d) = tr(E[X_1 A_1 ⋯ X_d] A_d) with X_j = x_{l_j} x_{l_j}ᵀ
        if d == 1:
            value = torch.trace(mats[0])  # E[xxᵀ] = I
        else:
            M, _ = chain_moment(list(mats[:-1]), [(label[j], label[j]) for j in range(d)])
            value = torch.trace(M @ mats[-1])
        # b(b−1)⋯(b−k+1) / b^d = Σ_j s(k, k−j) b^{k−j−d}: coefficients of 1/b^{d−k+j}
        k = len(part)
        ff = np.poly1d([1.0])
        for r in range(k):
            ff = ff * np.poly1d([1.0, -float(r)])
        for power, c in enumerate(ff.coeffs[:k]):  # c multiplies b^{k−power}; the b^0 coefficient is 0
            coef[d - k + power] += float(c) * value
    return coef


def minibatch_trace_monte_carlo(mats, b: int, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Monte Carlo of ``E[tr(Σ̂A_1 ⋯ Σ̂A_d)]``: mean and standard error over ``n`` minibatches."""
    p = mats[0].shape[0]
    x = torch.randn(n, b, p, generator=gen, dtype=mats[0].dtype, device=mats[0].device)
    S = x.transpose(-1, -2) @ x / b
    P = torch.eye(p, dtype=x.dtype, device=x.device).expand(n, p, p)
    for A in mats:
        P = P @ S @ A
    v = torch.diagonal(P, dim1=-2, dim2=-1).sum(-1)
    return v.mean(), v.std() / math.sqrt(n)


def gradient_monte_carlo(W1, W2, Wb1, Wb2, b: int, n: int, gen: torch.Generator, chunk: int | None = None) -> dict:
    """Monte Carlo over ``n`` fresh minibatches of size ``b`` at fixed weights (batched, in chunks):
    means and standard errors of the entries of ``g_1``, ``g_2`` and of ``‖g_1‖²``, ``‖g_2‖²``,
    ``‖g_1g_1ᵀ‖_F²`` (a degree-4 trace-product), as ``{name: (mean, se)}``."""
    if n < 2 or b < 1:
        raise ValueError("need n >= 2 minibatches and b >= 1")
    p, p1 = W1.shape[-1], W1.shape[-2]
    chunk = chunk or _chunk_size(n, max(b * p, p1 * p, p1 * p1, W2.shape[-2] * p1))
    names = ("g1", "g2", "sq1", "sq2", "quart1")
    acc = {k: _Moments() for k in names}
    done = 0
    while done < n:
        k = min(chunk, n - done)
        x = torch.randn(k, b, p, generator=gen, dtype=W1.dtype, device=W1.device)
        g1, g2 = minibatch_grads(W1, W2, Wb1, Wb2, x)
        acc["g1"].add(g1)
        acc["g2"].add(g2)
        acc["sq1"].add((g1**2).sum((-1, -2)))
        acc["sq2"].add((g2**2).sum((-1, -2)))
        acc["quart1"].add(((g1 @ g1.transpose(-1, -2)) ** 2).sum((-1, -2)))
        done += k
    return {k: acc[k].result() for k in names}


def lemma8_monte_carlo(W1, W2, Wb1, Wb2, b: int, n: int, gen: torch.Generator, chunk: int | None = None):
    """Monte Carlo of ``E[‖g_1‖²|F_t]`` and ``E[‖g_2‖²|F_t]`` over ``n`` minibatches:
    ``(mean_1, se_1, mean_2, se_2)``."""
    r = gradient_monte_carlo(W1, W2, Wb1, Wb2, b, n, gen, chunk)
    return (*r["sq1"], *r["sq2"])


# ----------------------------------------------------------------------------- multiplicative terms


Factor = tuple[str, bool]  # (symbol, transposed)


def word(spec: str) -> tuple[Factor, ...]:
    """A multiplicative term from a space-separated spec: ``"W2' D x x'"`` is ``W_2ᵀ Δ x xᵀ``
    (a trailing ``'`` transposes)."""
    out = []
    for tok in spec.split():
        t = tok.endswith("'")
        name = tok[:-1] if t else tok
        if not name:
            raise ValueError(f"empty symbol in {spec!r}")
        out.append((name, t))
    if not out:
        raise ValueError("empty term")
    return tuple(out)


def degrees(term: Sequence[Factor], symbols: Sequence[str]) -> dict[str, int]:
    """Definition 1: ``deg(X; M)`` = the number of occurrences of ``X`` or ``Xᵀ`` in ``M``."""
    return {s: sum(1 for name, _ in term if name == s) for s in symbols}


def total_degree(term: Sequence[Factor], parameters: Sequence[str]) -> int:
    """Definition 1: ``deg(M) = Σ_j deg(X_j; M)`` over the parameter matrices only."""
    return sum(degrees(term, parameters).values())


def evaluate(term: Sequence[Factor], env: dict[str, torch.Tensor]) -> torch.Tensor:
    """The matrix product of a term (vectors in ``env`` are columns ``[n, 1]``)."""
    out = None
    for name, t in term:
        if name not in env:
            raise ValueError(f"symbol {name!r} has no value")
        M = env[name].T if t else env[name]
        out = M if out is None else out @ M
    return out


def rotate_trace(term: Sequence[Factor], k: int, u: str, v: str) -> tuple[str, tuple[Factor, ...], str]:
    """Lemma 5: if ``term = M_1 (u vᵀ) M_2`` with the outer product at positions ``k, k+1`` (the
    symbols ``u`` and ``v'``), then ``tr(term) = vᵀ (M_2 M_1) u``. Returns ``(v, M_2M_1, u)``."""
    term = tuple(term)
    if k < 0 or k + 1 >= len(term) or term[k] != (u, False) or term[k + 1] != (v, True):
        raise ValueError(f"positions {k}, {k + 1} do not hold the outer product {u} {v}'")
    return v, term[k + 2 :] + term[:k], u


def expand_substitution(
    traces: Sequence[Sequence[Factor]], m0: Sequence[Factor], subs: dict[str, list[tuple[float, str]]]
) -> list[tuple[float, list[tuple[Factor, ...]], tuple[Factor, ...]]]:
    """Lemma 9: substitute ``X → Σ_j c_j Y_j`` for every occurrence of every symbol ``X`` in
    ``subs`` in the trace-product ``Π tr(traces[i]) · m0`` and expand all parentheses.

    Returns the terms ``(coefficient, traces, m0)``: ``Π_X (#options of X)^{deg X}`` of them
    (``2^{Σ d_i}`` for two-option substitutions). Transposes carry over to the substitutes.
    """
    parts = [tuple(t) for t in traces] + [tuple(m0)]
    slots = [(i, j) for i, part in enumerate(parts) for j, (name, _) in enumerate(part) if name in subs]
    options = [subs[parts[i][j][0]] for i, j in slots]
    out = []
    for choice in itertools.product(*options):
        coef = 1.0
        new = [list(p) for p in parts]
        for (i, j), (c, name) in zip(slots, choice):
            coef *= c
            new[i][j] = (name, parts[i][j][1])
        out.append((coef, [tuple(p) for p in new[:-1]], tuple(new[-1])))
    return out


def evaluate_trace_product(traces, m0, env) -> torch.Tensor:
    """``Π_i tr(traces[i]) · m0`` numerically."""
    out = evaluate(m0, env)
    for t in traces:
        out = out * torch.trace(evaluate(t, env))
    return out


# ----------------------------------------------------------------------------- the scalar network, exactly


@dataclass(frozen=True)
class ScalarNet:
    """A scalar teacher–student net (``p = p_1 = p_2 = 1``) with a learning-rate schedule
    ``α_t = lr_c/(t+1)`` for the step ``w_t → w_{t+1}`` (``t = 0, 1, …``), all exact rationals."""

    w1: Fraction
    w2: Fraction
    teacher: Fraction  # the product W̄_2 W̄_1
    lr_c: Fraction

    def alpha(self, t: int) -> Fraction:
        return Fraction(self.lr_c) / (t + 1)


@dataclass(frozen=True)
class ScalarTrajectory:
    """The iterates of the scalar net as exact polynomials in the step scalars ``s_0 … s_{T−1}``
    (``s_t = Σ̂_t = χ²_b/b``), in a sympy sparse polynomial ring whose last generator is ``u = 1/b``."""

    ring: object
    s: tuple
    u: object
    w1: tuple  # w1[t], t = 0 … T
    w2: tuple
    delta: tuple
    T: int


def scalar_trajectory(net: ScalarNet, T: int) -> ScalarTrajectory:
    """Build ``w_{t,1}, w_{t,2}, Δ_t`` for ``t = 0 … T`` as polynomials in ``s_0 … s_{T−1}``."""
    from sympy import QQ
    from sympy.polys.rings import ring

    if T < 0:
        raise ValueError("T must be >= 0")
    names = ",".join([f"s{j}" for j in range(T)] + ["u"])
    R, *gens = ring(names, QQ)
    s, u = tuple(gens[:T]), gens[T]
    q = lambda f: QQ(f.numerator, f.denominator)
    w1, w2 = R(q(Fraction(net.w1))), R(q(Fraction(net.w2)))
    c = q(Fraction(net.teacher))
    W1s, W2s, Ds = [], [], []
    for t in range(T + 1):
        D = w2 * w1 - c
        W1s.append(w1)
        W2s.append(w2)
        Ds.append(D)
        if t < T:
            a = q(net.alpha(t))
            w1, w2 = w1 - a * w2 * D * s[t], w2 - a * D * w1 * s[t]
    return ScalarTrajectory(R, s, u, tuple(W1s), tuple(W2s), tuple(Ds), T)


def scalar_coefficient_degrees(net: ScalarNet, t: int, g1: int = 0, g2: int = 0, w1: int = 0, w2: int = 0, delta: int = 0) -> list[int]:
    """Theorem 3's second bound in the scalar case: with the initial weights ``w_{0,1}, w_{0,2}`` kept
    symbolic (the teacher and the learning rates numeric), the total degree in ``(w_{0,1}, w_{0,2})``
    of the coefficient of every power of ``u = 1/b`` in ``E[g_{t,1}^{g1} g_{t,2}^{g2} w_{t,1}^{w1}
    w_{t,2}^{w2} Δ_t^{delta} | F_0]`` (−1 where the coefficient is 0). Small ``t`` only."""
    from sympy import QQ
    from sympy.polys.rings import ring

    if t < 0:
        raise ValueError("t must be >= 0")
    names = ",".join([f"s{j}" for j in range(t)] + ["a0", "b0", "u"])
    R, *gens = ring(names, QQ)
    s, a0, b0, u = tuple(gens[:t]), gens[t], gens[t + 1], gens[t + 2]
    q = lambda f: QQ(f.numerator, f.denominator)
    c = q(Fraction(net.teacher))
    x1, x2 = a0, b0
    for j in range(t):
        D = x2 * x1 - c
        a = q(net.alpha(j))
        x1, x2 = x1 - a * x2 * D * s[j], x2 - a * D * x1 * s[j]
    D = x2 * x1 - c
    P = x2 ** (g1 + w2) * x1 ** (g2 + w1) * D ** (g1 + g2 + delta)
    tr = ScalarTrajectory(R, s, u, (), (), (), t)
    E = _expect_steps(tr, P)
    m = R(1)
    for j in range(1, g1 + g2):
        m = m * (1 + 2 * j * u)
    E = E * m
    out: dict[int, int] = {}
    for mon, _ in E.terms():
        k = mon[-1]
        out[k] = max(out.get(k, -1), mon[t] + mon[t + 1])
    return [out.get(k, -1) for k in range(max(out) + 1)] if out else [-1]


def chi2_moment_poly(k: int) -> list[Fraction]:
    """``E[s^k]`` for ``s = χ²_b/b`` as coefficients in ``u = 1/b``: ``Π_{j<k}(1 + 2j u)``."""
    if k < 0:
        raise ValueError("k must be >= 0")
    c = [Fraction(1)]
    for j in range(1, k):
        c = poly_mul(c, [Fraction(1), Fraction(2 * j)])
    return c


def _expect_steps(tr: ScalarTrajectory, P):
    """Replace every ``s_j^k`` by ``E[s^k](u)``: the expectation over the independent steps."""
    R, u = tr.ring, tr.u
    cache = {}

    def mom(k):
        if k not in cache:
            m = R(1)
            for j in range(1, k):
                m = m * (1 + 2 * j * u)
            cache[k] = m
        return cache[k]

    for j in range(tr.T):
        groups: dict[int, dict] = {}
        for mon, c in P.terms():
            k = mon[j]
            rest = list(mon)
            rest[j] = 0
            groups.setdefault(k, {})[tuple(rest)] = c
        out = R(0)
        for k, terms in groups.items():
            out += R(terms) * mom(k)
        P = out
    return P


def _to_fractions(tr: ScalarTrajectory, P) -> list[Fraction]:
    """Coefficients of a polynomial in ``u`` alone (index = power of ``u``)."""
    if P == 0:
        return [Fraction(0)]
    deg = max(mon[-1] for mon in P.monoms())
    out = [Fraction(0)] * (deg + 1)
    for mon, c in P.terms():
        if any(mon[:-1]):
            raise ValueError("polynomial still depends on the step variables")
        out[mon[-1]] = Fraction(int(c.numerator), int(c.denominator))
    return out


def scalar_moment(tr: ScalarTrajectory, t: int, g1: int = 0, g2: int = 0, w1: int = 0, w2: int = 0, delta: int = 0) -> list[Fraction]:
    """``E[g_{t,1}^{g1} g_{t,2}^{g2} w_{t,1}^{w1} w_{t,2}^{w2} Δ_t^{delta} | F_0]`` as exact coefficients
    of a polynomial in ``u = 1/b`` (``g_{t,1} = w_{t,2}Δ_t s_t``, ``g_{t,2} = Δ_t w_{t,1} s_t``)."""
    if not 0 <= t <= tr.T:
        raise ValueError(f"t must lie in [0, {tr.T}]")
    if min(g1, g2, w1, w2, delta) < 0:
        raise ValueError("exponents must be >= 0")
    P = tr.w2[t] ** (g1 + w2) * tr.w1[t] ** (g2 + w1) * tr.delta[t] ** (g1 + g2 + delta)
    E = _expect_steps(tr, P)
    m = tr.ring(1)
    for j in range(1, g1 + g2):  # E[s_t^k], s_t independent of the past
        m = m * (1 + 2 * j * tr.u)
    return _to_fractions(tr, E * m)


def poly_add(a: Sequence[Fraction], b: Sequence[Fraction], cb: Fraction = Fraction(1)) -> list[Fraction]:
    n = max(len(a), len(b))
    return [(a[i] if i < len(a) else 0) + cb * (b[i] if i < len(b) else 0) for i in range(n)]


def poly_mul(a: Sequence[Fraction], b: Sequence[Fraction]) -> list[Fraction]:
    out = [Fraction(0)] * (len(a) + len(b) - 1)
    for i, x in enumerate(a):
        if x:
            for j, y in enumerate(b):
                out[i + j] += x * y
    return out


def poly_degree(c: Sequence[Fraction]) -> int:
    """Degree of a coefficient list (−1 for the zero polynomial)."""
    d = -1
    for k, v in enumerate(c):
        if v != 0:
            d = k
    return d


def poly_eval(c: Sequence[Fraction], b) -> Fraction | float:
    """The polynomial in ``u`` at ``u = 1/b`` (exact for an int or Fraction ``b``)."""
    u = Fraction(1, b) if isinstance(b, int) else (1 / Fraction(b) if isinstance(b, Fraction) else 1.0 / b)
    out = 0 * u
    for v in reversed(c):
        out = out * u + v
    return out


@dataclass(frozen=True)
class ScalarPolys:
    """Exact polynomials in ``u = 1/b`` (coefficient lists) of the scalar network at step ``t``."""

    t: int
    EK: list  # E[w_2Δ]
    EK2: list  # E[(w_2Δ)²]
    EJ: list  # E[Δw_1]
    EJ2: list
    var_g1: list  # var(g_{t,1} | F_0) = (1+2u)E[K²] − (E K)²
    var_g2: list
    loss2: list  # E[Δ_t² | F_0] (twice the expected loss)
    display_g1: list  # the proof of Theorem 4's display: u((p+2)E[K²] − (EK)²), p = 1


def scalar_polys(tr: ScalarTrajectory, t: int) -> ScalarPolys:
    """The conditional variances, the loss and the proof-of-Theorem-4 display at step ``t``."""
    one_2u = [Fraction(1), Fraction(2)]
    EK = scalar_moment(tr, t, w2=1, delta=1)
    EK2 = scalar_moment(tr, t, w2=2, delta=2)
    EJ = scalar_moment(tr, t, w1=1, delta=1)
    EJ2 = scalar_moment(tr, t, w1=2, delta=2)
    var1 = poly_add(poly_mul(one_2u, EK2), poly_mul(EK, EK), Fraction(-1))
    var2 = poly_add(poly_mul(one_2u, EJ2), poly_mul(EJ, EJ), Fraction(-1))
    loss2 = scalar_moment(tr, t, delta=2)
    disp = [Fraction(0)] + poly_add([3 * v for v in EK2], poly_mul(EK, EK), Fraction(-1))
    return ScalarPolys(t, EK, EK2, EJ, EJ2, var1, var2, loss2, disp)


# ----------------------------------------------------------------------------- quadrature and Monte Carlo


def _chi2_rule(b: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of ``s = χ²_b/b``: generalised Gauss–Laguerre with ``n`` points (exact for
    polynomials of degree ``≤ 2n − 1``)."""
    from scipy.special import roots_genlaguerre

    x, w = roots_genlaguerre(n, b / 2 - 1)
    return 2 * x / b, w / w.sum()


def scalar_quadrature(net: ScalarNet, T: int, b: int) -> dict[str, np.ndarray]:
    """``var(g_{t,1}|F_0)``, ``var(g_{t,2}|F_0)``, ``E[Δ_t²|F_0]`` for ``t = 0 … T`` in float64 by tensor
    Gauss–Laguerre quadrature over ``s_0 … s_{T−1}`` (``3^{T−j}+1`` nodes for step ``j``: exact for
    these polynomial integrands). Vectorised over the grid; loops over steps only."""
    if b < 1 or T < 0:
        raise ValueError("need b >= 1 and T >= 0")
    nodes, weights = [], []
    for j in range(T):
        s, w = _chi2_rule(b, 3 ** (T - j) + 1)
        nodes.append(s)
        weights.append(w)
    if T:
        grid = np.meshgrid(*nodes, indexing="ij")
        W = np.ones_like(grid[0])
        for j, w in enumerate(weights):
            shape = [1] * T
            shape[j] = -1
            W = W * w.reshape(shape)
        S = [g.ravel() for g in grid]
        W = W.ravel()
    else:
        S, W = [], np.ones(1)
    w1 = np.full(W.shape, float(net.w1))
    w2 = np.full(W.shape, float(net.w2))
    c = float(net.teacher)
    out = {k: np.zeros(T + 1) for k in ("var_g1", "var_g2", "loss2")}
    for t in range(T + 1):
        D = w2 * w1 - c
        K, J = w2 * D, D * w1
        Es2 = 1 + 2 / b
        out["var_g1"][t] = Es2 * (W * K**2).sum() - (W * K).sum() ** 2
        out["var_g2"][t] = Es2 * (W * J**2).sum() - (W * J).sum() ** 2
        out["loss2"][t] = (W * D**2).sum()
        if t < T:
            a = float(net.alpha(t))
            w1, w2 = w1 - a * K * S[t], w2 - a * J * S[t]
    return out


def scalar_monte_carlo(net: ScalarNet, T: int, b: int, runs: int, gen: torch.Generator, dtype=torch.float64, device="cpu"):
    """Monte Carlo of the scalar net with real Gaussian minibatches (``runs`` runs in lockstep):
    per ``t``, estimates and standard errors of ``var(g_{t,1})``, ``var(g_{t,2})`` and ``E[Δ_t²]``."""
    if runs < 2 or b < 1:
        raise ValueError("need runs >= 2 and b >= 1")
    w1 = torch.full((runs,), float(net.w1), dtype=dtype, device=device)
    w2 = torch.full((runs,), float(net.w2), dtype=dtype, device=device)
    res = {k: [] for k in ("var_g1", "var_g1_se", "var_g2", "var_g2_se", "loss2", "loss2_se")}
    r = math.sqrt(runs)
    for t in range(T + 1):
        s = (torch.randn(runs, b, generator=gen, dtype=dtype, device=device) ** 2).mean(1)
        D = w2 * w1 - float(net.teacher)
        g1, g2 = w2 * D * s, D * w1 * s
        for name, g in (("var_g1", g1), ("var_g2", g2)):
            d = (g - g.mean()) ** 2
            res[name].append(float(d.sum() / (runs - 1)))
            res[name + "_se"].append(float(d.std() / r))
        res["loss2"].append(float((D**2).mean()))
        res["loss2_se"].append(float((D**2).std() / r))
        if t < T:
            a = float(net.alpha(t))
            w1, w2 = w1 - a * g1, w2 - a * g2
    return {k: np.array(v) for k, v in res.items()}


# ----------------------------------------------------------------------------- b_0 of Theorem 5


def _largest_real_root(coeffs_high_first: Sequence[Fraction]) -> float:
    """The largest real root (exact isolation, then refined) of a polynomial given by its
    coefficients from the highest power down; ``-inf`` if it has none."""
    from sympy import Poly, QQ, Symbol

    x = Symbol("b")
    c = [QQ(int(Fraction(v).numerator), int(Fraction(v).denominator)) for v in coeffs_high_first]
    while c and c[0] == 0:
        c = c[1:]
    if len(c) <= 1:
        return -math.inf
    P = Poly(c, x, domain=QQ)
    iv = P.intervals(eps=Fraction(1, 10**9))
    if not iv:
        return -math.inf
    (lo, hi), _ = max(iv, key=lambda z: z[0][1])
    return float((Fraction(lo) + Fraction(hi)) / 2)


def b0_main_text(beta: Sequence[Fraction]) -> float:
    """Main text of Theorem 5: the largest root of ``β_1b^{r−1} + β_2b^{r−2} + ⋯ + β_r``
    (``beta[k]`` is the coefficient of ``1/b^k``; ``beta[0]`` must be 0)."""
    beta = _check_beta(beta)
    r = len(beta) - 1
    return _largest_real_root([beta[k] for k in range(1, r + 1)])


def b0_derivative(beta: Sequence[Fraction]) -> float:
    """The proof's condition: the largest root of ``β_1b^{r−1} + 2β_2b^{r−2} + ⋯ + rβ_r``; beyond it
    ``d/db Σβ_k b^{−k} = −b^{−r−1} Σ kβ_k b^{r−k} < 0`` when ``β_1 > 0``."""
    beta = _check_beta(beta)
    r = len(beta) - 1
    return _largest_real_root([k * beta[k] for k in range(1, r + 1)])


def _check_beta(beta):
    beta = [Fraction(v) for v in beta]
    while len(beta) > 1 and beta[-1] == 0:
        beta = beta[:-1]
    if beta[0] != 0:
        raise ValueError("Theorem 5 is about polynomials without a constant term: beta[0] must be 0")
    if len(beta) < 2:
        raise ValueError("the zero polynomial has no b_0")
    return beta


def increases_on(beta: Sequence[Fraction], bs: Sequence[int]) -> list[int]:
    """The integers ``b`` of ``bs`` with ``f(b+1) > f(b)`` for ``f(b) = Σ_k β_k/b^k`` (exact)."""
    vals = {b: poly_eval(beta, b) for b in set(bs) | {b + 1 for b in bs}}
    return [b for b in bs if vals[b + 1] > vals[b]]


# ----------------------------------------------------------------------------- the chapter's checks

#: Theorem 3's monomials g_1^a g_2^c w_1^e w_2^f of the scalar network, as (a, c, e, f).
THM3_MONOMIALS = [(a, c, e, f) for a, c in ((1, 0), (0, 1), (2, 0), (1, 1), (0, 2)) for e, f in ((0, 0), (1, 0), (0, 1), (1, 1))]
#: Corollary 2's monomials w_1^e w_2^f Δ^k, as (e, f, k).
COR2_MONOMIALS = [(0, 0, 1), (0, 0, 2), (1, 0, 0), (0, 1, 0), (1, 1, 0), (1, 0, 1), (1, 1, 2)]


def thm3_bound(t: int, d: int, dp: int) -> Fraction:
    """Theorem 3's bound on the degree in 1/b, ``½(3^{t+1} − 1)d + ½(3^t − 1)d'`` (the lost operator read as "−")."""
    return Fraction((3 ** (t + 1) - 1) * d + (3**t - 1) * dp, 2)


def degree_table(tr: ScalarTrajectory, T: int) -> tuple[list, list]:
    """Exact degrees in ``1/b`` against the bounds of Theorem 3 and Corollary 2 for ``t ≤ T``:
    rows ``(t, monomial, degree, bound)`` for :data:`THM3_MONOMIALS` and for :data:`COR2_MONOMIALS`
    (Corollary 2: ``q ≤ 3^t(d + 2d')``)."""
    rows3, rows2 = [], []
    for t in range(T + 1):
        for a, c, e, f in THM3_MONOMIALS:
            q = poly_degree(scalar_moment(tr, t, g1=a, g2=c, w1=e, w2=f))
            rows3.append((t, (a, c, e, f), q, float(thm3_bound(t, a + c, e + f))))
        for e, f, k in COR2_MONOMIALS:
            q = poly_degree(scalar_moment(tr, t, w1=e, w2=f, delta=k))
            rows2.append((t, (e, f, k), q, 3**t * (e + f + 2 * k)))
    return rows3, rows2


def term_degree_slacks(net: ScalarNet, T: int) -> list[int]:
    """Theorem 3's second bound: for every monomial of :data:`THM3_MONOMIALS` and ``t ≤ T`` (at ``t = T``
    the gradient-only ones, the expensive step), the bound ``3^t(3d + d')`` minus the largest total
    degree in the symbolic initial weights of a coefficient."""
    out = []
    for t in range(T + 1):
        for a, c, e, f in THM3_MONOMIALS:
            if t == T and (e, f) != (0, 0):
                continue
            degs = scalar_coefficient_degrees(net, t, g1=a, g2=c, w1=e, w2=f)
            out.append(3**t * (3 * (a + c) + e + f) - max(degs))
    return out


def thm4_decomposition_holds(P: ScalarPolys) -> bool:
    """Exactly: ``var(g_{t,1}) = (p+1)u E[K²] + var(K)`` (p = 1, ``K = w_2Δ``), and the proof's display
    misses it by exactly ``(1 − u) var(K)``."""
    varK = poly_add(P.EK2, poly_mul(P.EK, P.EK), Fraction(-1))
    correct = poly_add([Fraction(0)] + [2 * v for v in P.EK2], varK)
    gap = poly_add(P.var_g1, P.display_g1, Fraction(-1))
    return all(v == 0 for v in poly_add(correct, P.var_g1, Fraction(-1))) and all(
        v == 0 for v in poly_add(gap, poly_mul([Fraction(1), Fraction(-1)], varK), Fraction(-1)))


def b0_search(net: ScalarNet, count: int, t: int, gen: torch.Generator) -> dict:
    """Theorem 5's two rules on ``count`` random scalar nets (initial weights and teacher in
    ``{±1/8, …, ±12/8}``, ``net``'s schedule) at step ``t``: how often the main-text ``b_0`` is not
    sufficient (the derivative root lies above ``max(main-text root, 1)``), how often ``β_1 < 0``,
    and the derivative roots."""
    fails, neg, roots = 0, 0, []
    for _ in range(count):
        v = [k if k != 0 else 1 for k in torch.randint(-12, 13, (3,), generator=gen).tolist()]
        rnet = ScalarNet(Fraction(v[0], 8), Fraction(v[1], 8), Fraction(v[2], 8), net.lr_c)
        rp = scalar_polys(scalar_trajectory(rnet, t), t)
        for poly in (rp.var_g1, rp.var_g2):
            if poly_degree(poly) < 1:
                continue  # started at the teacher: zero variance
            bd, bm = b0_derivative(poly), b0_main_text(poly)
            neg += poly[1] < 0
            fails += bd > max(bm, 1.0)
            roots.append(bd)
    return {"main_rule_failures": fails, "beta1_negative": neg, "b0_derivative": roots}
