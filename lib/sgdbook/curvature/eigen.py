"""Extreme eigenpairs of a symmetric operator: thick-restart Lanczos and power iteration."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ._common import Operator, _apply_block, _default_generator, _gaussian, _orthogonalize, _space, _start_vector

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

    Computes ``H u_i = λ_i u_i`` for the ``k`` extreme eigenvalues of ``H``: ``which="largest"``
    takes the largest *algebraic* ones (not the largest in magnitude), ``"smallest"`` the most
    negative; the ``u_i`` are orthonormal.

    Arguments: ``hvp`` any operator (``v ↦ Hv`` on ``[p]`` vectors, optionally ``batch(V)``);
    ``p`` its dimension; ``1 ≤ k ≤ p``; ``tol`` the relative residual tolerance (default ``√ε``:
    1.5e-8 in float64, 3.5e-4 in float32); ``max_basis`` the largest Krylov basis (default
    ``max(2k + 20, 40)``, at most ``p``); ``max_products`` a bound on the work (default
    ``max(20 · max_basis, 2000)``); ``check_every`` the products between the first convergence
    checks; ``v0`` the start vector, else a Gaussian draw from ``generator`` (default: a fresh
    generator seeded 0, never the global RNG); ``exact_residuals`` recomputes the residuals as
    ``‖Hu − λu‖`` at ``k`` extra products; ``dtype``/``device`` of the vectors (default: the
    operator's).

    Returns a :class:`LanczosResult`: the eigenvalues (descending for ``"largest"``, ascending for
    ``"smallest"``), the eigenvectors as columns ``[p, k]``, the residual norms (the Lanczos
    estimates ``|β_m (y)_m|``, exact in exact arithmetic, unless ``exact_residuals``), the
    products used, whether all ``k`` pairs converged within ``max_products``, the restarts.

    Convergence: a Ritz pair ``(θ, y)`` has converged when ``‖Hy − θy‖ ≤ tol · max(|θ|, ε^{1/3}‖H‖)``
    (``ε`` the dtype's machine epsilon, ``‖H‖`` the running estimate from the products). For a
    symmetric ``H`` some eigenvalue then lies within ``‖Hy − θy‖`` of ``θ`` (a relative error of
    at most ``tol``); the error is typically about ``‖Hy − θy‖² / gap``.

    Method: thick-restart Lanczos (Wu & Simon 2000) with full reorthogonalization: each new
    direction gets two classical Gram–Schmidt passes, the first against the recurrence's two
    directions inside a tridiagonal run (against the whole basis at the first step of a sequence:
    the start, a restart's arrowhead), the second against the whole basis. A single pass against the
    whole basis, with a second one only where the first took the norm down by more than κ = 4
    (Kahan and Parlett's criterion), lost the
    basis's orthogonality on low-rank operators with slowly decaying spectra (a gradient
    second-moment operator; ``GᵀG/n`` with 512 random rows, in float32 and float64): ghost copies
    of the top eigenvalues, reported as converged (tested). The returned eigenvectors are
    checked: ``converged`` is False when they are not orthonormal to within ``√ε``. A basis of
    ``max_basis`` vectors without ``k`` converged pairs is compressed to the
    ``k + (max_basis − k) // 2`` best Ritz vectors plus the residual direction and grown again.
    Checks come ``check_every`` products after the first ``k``, then where the worst residual,
    extrapolated at the rate seen between the last two checks, meets the tolerance (1 to
    ``3·check_every`` products ahead). A breakdown (an invariant subspace) is continued with a
    fresh random vector orthogonal to the basis, which must run ``k`` steps before convergence is
    declared. A single Krylov sequence sees one copy of a repeated eigenvalue; further copies
    (e.g. the null space of a ReLU net's Hessian) come from the fresh sequences after breakdowns,
    so multiplicities are found in practice but not guaranteed.

    Cost: the products (their number depends on the spectrum's gaps; ``max_products`` bounds it),
    plus ``O(m p)`` per product for the reorthogonalization against the ``m`` basis vectors and one
    ``m × m`` symmetric eigenproblem (float64, on the host) per check. Memory: ``max_basis + 1``
    vectors of length ``p`` on the operator's device; on a GPU the loop does not synchronise
    between checks. Timings against scipy's ``eigsh`` and PyHessian: the performance appendix.

    Example::

        op = HVP.from_model(model, F.cross_entropy, x, y)
        top = lanczos(op, op.p, 10)                    # the 10 largest Hessian eigenvalues
        bottom = lanczos(op, op.p, 3, "smallest")      # the most negative ones
        top.eigenvalues, top.converged, top.n_products
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
                # two classical Gram–Schmidt passes, as on a GPU (see there and the docstring)
                if j > kept:
                    h = pair @ w
                    w = torch.addmv(w, pair_t, h, alpha=-1, out=work)
                else:
                    h = pre @ w
                    w = torch.addmv(w, pre_t, h, alpha=-1, out=work)
                h2 = pre @ w
                w.addmv_(pre_t, h2, alpha=-1)
                bf = float(torch.linalg.vector_norm(w))
                af = float(h[-1] + h2[-1])  # α_j: the coefficient of v_j in both passes
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
    # the residual estimates hold only for an orthonormal basis: check what is returned
    gram = vecs.mT @ vecs
    converged = converged and float((gram - torch.eye(gram.shape[0], dtype=dtype, device=device)).abs().max()) <= math.sqrt(eps)
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

    Returns a :class:`PowerResult` (eigenvalue, unit eigenvector, residual, shift, products,
    converged). Cost: one product per iteration, at most ``max_iter`` per run, two runs when the
    dominant eigenvalue is negative; memory: a few ``[p]`` vectors.

    Example::

        r = power_iteration(HVP.from_model(model, F.cross_entropy, x, y), p, tol=1e-6)
        r.eigenvalue, r.converged
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


