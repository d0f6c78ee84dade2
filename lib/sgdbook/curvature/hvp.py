"""Hessian-vector product operators: through the autograd graph (:class:`HVP`), written out for
Linear/ReLU nets with cross-entropy (:class:`LinearNetHVP`), over an explicit matrix
(:class:`MatrixHVP`), and the dense Hessian of a small net (:func:`full_hessian`).

An operator is a callable ``v ↦ Hv`` on vectors of length ``p`` with a ``batch(V)`` method for a
block of row vectors ``V`` (``[b, p]``) and ``dtype``/``device`` attributes; the eigen-solvers and
stochastic estimators of :mod:`sgdbook.curvature` take any such operator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..functional import flat_loss, linear_leaves

if TYPE_CHECKING:
    from .convnet import ConvNetHVP

def _default_chunk(p: int, itemsize: int, device: torch.device) -> int:
    """Rows per batched product (see :class:`HVP`): on the CPU as many ``p``-vectors as fit in
    1 MiB, at most 32; 16 elsewhere."""
    return max(1, min(32, (1 << 20) // (p * itemsize))) if device.type == "cpu" else 16


class HVP:
    """The Hessian-vector product ``v ↦ H v``, ``H = ∇²f(θ)``, at a fixed ``θ``, counting its products.

    Arguments: ``f`` maps a flat vector ``[p]`` to a scalar (e.g. from
    :func:`sgdbook.functional.flat_loss`); ``theta`` the point (copied); ``chunk`` the vectors per
    batched product in :meth:`batch` (default: on the CPU as many ``p``-vectors as fit in 1 MiB,
    at most 32, so single products at p ≈ 100,000 in float64; 16 on other devices); ``batch_mode``
    how :meth:`batch` forms its products: ``"reverse"`` (default) through the stored graph,
    ``"forward"`` by ``torch.func``'s ``vmap`` over the rows of ``jvp(grad(f))`` (forward-over-reverse,
    one fresh forward pass per chunk; :meth:`from_model` takes it for convolutional networks).

    The operator: ``op(v)`` returns ``Hv`` (``[p]``); ``op.batch(V)`` returns ``V H`` for a block of
    row vectors ``V`` (``[b, p]``); ``loss`` and ``gradient`` hold ``f(θ)`` and ``∇f(θ)``
    (detached); ``n_products`` counts the products; ``p``, ``dtype``, ``device`` describe the
    vectors. An ``f`` affine in ``θ`` gives ``H = 0``.

    Cost: one forward and backward pass with ``create_graph=True`` at construction, whose graph
    (the activations of one pass) stays alive with the operator; then one backward pass through
    that graph per product (reverse-over-reverse), vmapped over the rows of each chunk in
    :meth:`batch` (``is_grads_batched=True``). With ``batch_mode="forward"``, one vmapped
    forward-over-reverse pass per chunk, and the graph is built only when a single product,
    ``loss`` or ``gradient`` is first asked for (a Hutchinson estimate never builds it). ``f`` is
    then evaluated when asked, not at construction: an ``f`` that reads a module's state (e.g. the
    batch-norm buffers that :func:`~sgdbook.functional.flat_loss` shares with its model) sees that
    state as it is then. Timings against ``torch.func``'s forward-over-reverse
    ``jvp(grad(f))``, curvlinops and BackPACK, and across chunk sizes: the performance appendix.

    Example::

        f, theta = flat_loss(model, F.cross_entropy, x, y)
        op = HVP(f, theta)
        hv = op(torch.ones_like(theta))          # one product
        rows = op.batch(torch.eye(op.p)[:8])     # the first 8 rows of H (8 products)
    """

    def __init__(
        self, f: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, chunk: int | None = None,
        batch_mode: str = "reverse",
    ):
        if theta.ndim != 1:
            raise ValueError(f"theta must be a flat vector, got shape {tuple(theta.shape)}")
        if batch_mode not in ("reverse", "forward"):
            raise ValueError(f"batch_mode must be 'reverse' or 'forward', got {batch_mode!r}")
        self.batch_mode = batch_mode
        self._f = f
        self._leaf = theta.detach().clone().requires_grad_(True)
        self.theta = self._leaf.detach()
        self.p = self.theta.numel()
        self.dtype = self.theta.dtype
        self.device = self.theta.device
        self.chunk = int(chunk or _default_chunk(self.p, self.theta.element_size(), self.device))
        self.n_products = 0
        self._built = False
        if batch_mode == "reverse":
            self._build()

    def _build(self) -> None:
        """The forward and backward pass with ``create_graph=True`` whose graph the products reuse;
        built at construction in ``"reverse"`` mode, at the first single product (or the first
        request for ``loss``/``gradient``) in ``"forward"`` mode, whose blocks do not use it."""
        if self._built:
            return
        with torch.enable_grad():
            loss = self._f(self._leaf)
            (grad,) = torch.autograd.grad(loss, self._leaf, create_graph=True)
        self._loss = loss.detach()
        self._gradient = grad.detach()
        self._grad = grad if grad.requires_grad else None  # None: f is affine in θ, H = 0
        self._built = True

    @property
    def loss(self) -> torch.Tensor:
        self._build()
        return self._loss

    @property
    def gradient(self) -> torch.Tensor:
        self._build()
        return self._gradient

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
    ) -> HVP | LinearNetHVP | ConvNetHVP:
        """The operator at the model's current parameters (see :func:`flat_loss`).

        For an ``nn.Sequential`` of Linear, ReLU, Identity and Flatten layers with the mean
        cross-entropy of integer labels, the products come from :class:`LinearNetHVP` (the
        R-operator written out; the same products, tested), and where the ``nn.Sequential`` also
        has 2-d convolutions and max-pooling (no batch norm) from
        :class:`~sgdbook.curvature.convnet.ConvNetHVP`; ``fast_path=False`` forces the autograd
        graph. ``bn_mode`` (``"train"`` or ``"eval"``) is required for a network with batch norm.
        Any other network with convolutions (batch norm, residual connections) gets
        ``batch_mode="forward"`` for its blocks of products (measured faster or equal there, see
        the performance appendix). The model is left untouched (modes, ``.grad``, buffers,
        parameters).
        """
        if fast_path and LinearNetHVP.applies(model, loss_fn, x, y):
            return LinearNetHVP(model, x, y, chunk=chunk)
        from .convnet import ConvNetHVP  # it builds on this module

        if fast_path and ConvNetHVP.applies(model, loss_fn, x, y):
            return ConvNetHVP(model, x, y, chunk=chunk)
        f, theta0 = flat_loss(model, loss_fn, x, y, bn_mode=bn_mode)
        conv = any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())
        return cls(f, theta0, chunk=chunk, batch_mode="forward" if conv else "reverse")

    def _backward(self, v: torch.Tensor, batched: bool) -> torch.Tensor:
        self._build()
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
        if self.batch_mode == "forward":  # an affine f gives zero tangents here too
            theta, g = self.theta, torch.func.grad(self._f)
            fo = torch.func.vmap(lambda v: torch.func.jvp(g, (theta,), (v,))[1])
            return torch.cat([fo(c) for c in V.split(self.chunk)])
        return torch.cat([self._backward(c, True) for c in V.split(self.chunk)])


class _WrittenOut:
    """``__call__`` and ``batch`` of the written-out operators, over their ``_products(V)``."""

    chunk: int
    n_products: int

    def _flat_layout(self, model: nn.Module) -> dict[int, int]:
        """Set ``p``, ``theta``, ``dtype``, ``device``, ``n_products``; return each parameter's
        offset in the flat layout (``named_parameters`` order), keyed by ``id``."""
        offsets, at = {}, 0
        for q in model.parameters():
            offsets[id(q)] = at
            at += q.numel()
        self.p = at
        self.theta = torch.cat([q.detach().reshape(-1) for q in model.parameters()])
        self.dtype, self.device = self.theta.dtype, self.theta.device
        self.n_products = 0
        return offsets

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        self.n_products += 1
        return self._products(v.reshape(1, -1))[0]

    def batch(self, V: torch.Tensor) -> torch.Tensor:
        """``V @ H`` for a block of row vectors ``V`` (shape ``[b, p]``): ``b`` products."""
        self.n_products += V.shape[0]
        return torch.cat([self._products(c) for c in V.split(self.chunk)])


def _owns_every_parameter_once(model: nn.Module, leaves) -> bool:
    """Whether the weights and biases of the Linear/Conv2d ``leaves`` are exactly the model's
    parameters, each owned by one layer: a parameter shared by two layers (its gradient sums both
    uses) or one the forward pass never touches would be written wrongly (or not at all) by the
    written-out operators."""
    owned = [id(q) for m in leaves if type(m) in (nn.Linear, nn.Conv2d) for q in (m.weight, m.bias) if q is not None]
    return len(owned) == len(set(owned)) and set(owned) == {id(q) for q in model.parameters()}


def _softmax_head(logits: torch.Tensor, y: torch.Tensor):
    """Mean cross-entropy of ``logits`` ``[n, K]``: ``(loss, π, δ = ∂L/∂logits)``."""
    if logits.ndim != 2:
        raise ValueError(f"the network's output must be [n, classes], got shape {tuple(logits.shape)}")
    n = logits.shape[0]
    logp = torch.log_softmax(logits, dim=1)
    pi = logp.exp()
    d = pi.clone()
    d[torch.arange(n, device=d.device), y] -= 1
    return nn.functional.nll_loss(logp, y), pi, d / n


def _r_delta_head(pi: torch.Tensor, Rz: torch.Tensor, n: int) -> torch.Tensor:
    """``R(δ_L) = (π ⊙ R(z_L) − π (πᵀR(z_L)))/n`` at the logits of the mean cross-entropy."""
    return pi * (Rz - (pi * Rz).sum(-1, keepdim=True)) / n


def _linear_backward(st: list, d: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """The gradient pass through a linear step: keep ``δ`` (its output signal) in the step, write
    ``∂L/∂W = δᵀ a`` and ``∂L/∂b = Σ δ`` into ``grads``, return the input's signal ``δ W``."""
    _, W, b, a, ow, ob, _ = st
    st[6] = d
    grads[ow : ow + W.numel()] = (d.mT @ a).reshape(-1)
    if b is not None:
        grads[ob : ob + b.numel()] = d.sum(0)
    return d @ W


def _linear_r_forward(st: list, V: torch.Tensor, Ra: torch.Tensor | None) -> torch.Tensor:
    """``R(z) = R(a) Wᵀ + a V_Wᵀ + V_b`` of a linear step ``["linear", W, b, a, ow, ob, δ]``, ``[c, n, out]``."""
    _, W, b, a, ow, ob, _ = st
    c = V.shape[0]
    Rz = torch.matmul(a, V[:, ow : ow + W.numel()].view(c, *W.shape).mT)  # [c, n, out]: a V_Wᵀ
    if Ra is not None:
        Rz = Rz + Ra @ W.mT
    if b is not None:
        Rz = Rz + V[:, ob : ob + b.numel()][:, None, :]
    return Rz


def _linear_r_backward(st: list, V: torch.Tensor, Rd: torch.Tensor, Ra_in: torch.Tensor | None,
                       out: torch.Tensor, propagate: bool) -> torch.Tensor | None:
    """Write ``(Hv)_W = R(δ)ᵀ a + δᵀ R(a)`` and ``(Hv)_b = Σ R(δ)`` of a linear step into ``out``;
    return ``R(δ_in) = R(δ) W + δ V_W`` where ``propagate``."""
    _, W, b, a, ow, ob, d = st
    c = V.shape[0]
    hw = out[:, ow : ow + W.numel()].view(c, *W.shape)
    hw.copy_(Rd.mT @ a)  # R(δ_l)ᵀ a_{l−1}
    if Ra_in is not None:
        hw += d.mT @ Ra_in  # δ_lᵀ R(a_{l−1})
    if b is not None:
        out[:, ob : ob + b.numel()] = Rd.sum(1)
    return Rd @ W + d @ V[:, ow : ow + W.numel()].view(c, *W.shape) if propagate else None


class LinearNetHVP(_WrittenOut):
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
    :meth:`applies` says whether a model, loss and data qualify; :meth:`HVP.from_model` picks
    this class where they do.

    Cost: one forward and backward pass at construction, no autograd graph; per product and
    layer six matrix products the size of the layer's forward product (two forward, four
    backward; the first layer's backward needs two), the order of one backward pass through
    :class:`HVP`'s graph; memory: the activations, masks and ``δ_l`` of one pass. Timings: the
    performance appendix.

    Example::

        op = LinearNetHVP(mlp([784, 128, 10], bias=True), x, y)   # y: integer labels
        hv = op(v)
    """

    _ACTS = (nn.ReLU, nn.Identity, nn.Flatten)

    @classmethod
    def _leaves(cls, model: nn.Module) -> list[nn.Module] | None:
        """The layers in the order of the forward pass, or None where the class does not apply."""
        leaves = linear_leaves(model)  # None also for hooks and for a layer used twice
        if leaves is None or any(type(m) is not nn.Linear and type(m) not in cls._ACTS for m in leaves):
            return None
        return leaves

    @classmethod
    def applies(cls, model, loss_fn, x: torch.Tensor, y: torch.Tensor) -> bool:
        if loss_fn is not nn.functional.cross_entropy or y.ndim != 1 or y.is_floating_point():
            return False
        leaves = cls._leaves(model)
        if leaves is None or not _owns_every_parameter_once(model, leaves):
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
        if leaves is None or not _owns_every_parameter_once(model, leaves):
            raise ValueError("LinearNetHVP needs an nn.Sequential of Linear, ReLU, Identity and Flatten layers that own "
                             "every parameter of the model, each once")
        offsets = self._flat_layout(model)
        self.chunk = int(chunk or _default_chunk(self.p, self.theta.element_size(), self.device))
        n = x.shape[0]
        # forward: each step is ["linear", W, b, a_in, weight offset, bias offset, δ at its output]
        # (δ filled in by the backward pass below), ["mask", ReLU mask] or ["flat", shape before]
        steps: list[tuple] = []
        h = x.detach()
        with torch.no_grad():
            for mod in leaves:
                if type(mod) is nn.Linear:
                    W = mod.weight.detach().clone()  # the point θ, not the live parameter (an optimiser may move it)
                    b = None if mod.bias is None else mod.bias.detach().clone()
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
            self.loss, self._pi, d = _softmax_head(h, y)
            grads = torch.empty(self.p, dtype=self.dtype, device=self.device)
            for st in reversed(steps):
                if st[0] == "linear":
                    d = _linear_backward(st, d, grads)
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
                r_in.append(Ra)
                Ra = _linear_r_forward(st, V, Ra)
            elif st[0] == "mask":
                Ra = Ra * st[1] if Ra is not None else None
            elif Ra is not None:
                Ra = Ra.flatten(2)
        Rd = _r_delta_head(self._pi, Ra, self._n)
        for i in range(len(self._steps) - 1, self._first - 1, -1):
            st = self._steps[i]
            if st[0] == "linear":
                Rd = _linear_r_backward(st, V, Rd, r_in.pop(), out, i > self._first)
            elif st[0] == "mask":
                Rd = Rd * st[1]
            else:
                Rd = Rd.reshape(c, *st[1])
        return out


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


