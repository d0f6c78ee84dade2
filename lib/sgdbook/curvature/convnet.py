"""Hessian-vector products of a plain convolutional network's cross-entropy, written out
(:class:`ConvNetHVP`): the R-operator of :class:`~sgdbook.curvature.LinearNetHVP` extended to
2-d convolutions and max-pooling."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.grad import conv2d_input, conv2d_weight

from ..functional import sequential_leaves

from .hvp import _default_chunk, _linear_backward, _owns_every_parameter_once, _linear_r_backward, _linear_r_forward, _r_delta_head, _softmax_head, _WrittenOut

#: Bytes of one block's largest activation direction ``[c, n, C, H, W]`` that
#: :class:`ConvNetHVP` aims for when it picks its block size ``c`` (see its docstring).
BLOCK_BYTES = 8 << 20


class ConvNetHVP(_WrittenOut):
    """Hessian-vector products of the mean cross-entropy of a plain convolutional network.

    For an ``nn.Sequential`` (nested allowed) of ``Conv2d`` (zero padding, one group),
    ``MaxPool2d``, ``ReLU``, ``Identity``, ``Flatten(1, -1)`` and ``Linear`` layers, such as
    :func:`sgdbook.models.small_cnn` without batch norm, with integer labels. Pearlmutter's
    R-operator as in :class:`~sgdbook.curvature.LinearNetHVP`: activations, ReLU masks, pooling
    indices, softmax ``π`` and output signals ``δ_l`` are computed once; a block of ``c``
    directions ``v = (V_l, c_l)`` goes forward as ``R(z_l) = conv(R(a_{l−1}), W_l) +
    conv(a_{l−1}, V_l) + c_l`` (the ``c`` directions folded into the batch of the first
    convolution and into the output channels of the second, so each is one ordinary
    convolution), through the ReLU masks and the pooling maxima (a max-pool passes ``R(a)`` at its
    argmax), turns at the loss into ``R(δ_L) = (π ⊙ R(z_L) − π (πᵀR(z_L)))/n`` and goes back as
    ``R(δ_{l−1}) = convᵀ(R(δ_l), W_l) + convᵀ(δ_l, V_l)``, giving ``(Hv)_{W_l}`` as the weight
    gradients of ``(a_{l−1}, R(δ_l))`` plus ``(R(a_{l−1}), δ_l)`` (again folded into channels)
    and ``(Hv)_{c_l} = Σ R(δ_l)``. Linear layers as in ``LinearNetHVP``. Ties in a max-pool
    window go to the entry the forward pass picked, as in autograd.

    Same interface as :class:`~sgdbook.curvature.HVP` (``p``, ``theta``, ``loss``, ``gradient``,
    ``n_products``, ``chunk``, ``__call__``, ``batch``); parameters in ``named_parameters`` order.
    :meth:`applies` says whether a model, loss and data qualify; :meth:`HVP.from_model` picks this
    class where they do. ``chunk`` (default): as many directions per block as keep the largest
    activation direction ``[c, n, C, H, W]`` near :data:`BLOCK_BYTES` (fresh memory of that size
    per block; larger blocks cost more in page faults than they save), at most the 1 MiB rule of
    ``HVP``'s blocks.

    Cost: one forward and backward pass at construction, no autograd graph; per product about
    six convolutions or matrix products per layer the size of the forward one (two forward, four
    backward), no ``vmap``. Memory: the activations, masks, pooling indices and ``δ_l`` of one
    pass, plus a block's directions. Tested against the autograd double backward and the dense
    Hessian in float64; timings against curvlinops, BackPACK and ``torch.func``: the
    performance appendix.

    Example::

        op = ConvNetHVP(small_cnn((8, 16, 32)), x, y)   # x: [n, 1, 8, 8], y: integer labels
        top = lanczos(op, op.p, 10)
    """

    _LAYERS = (nn.Conv2d, nn.MaxPool2d, nn.ReLU, nn.Identity, nn.Flatten, nn.Linear)

    @classmethod
    def _leaves(cls, model: nn.Module) -> list[nn.Module] | None:
        """The layers in forward order, or None where the class does not apply."""

        def accept(mod: nn.Module) -> bool:
            if type(mod) not in cls._LAYERS:
                return False
            if type(mod) is nn.Conv2d:
                return mod.groups == 1 and mod.padding_mode == "zeros" and not isinstance(mod.padding, str)
            if type(mod) is nn.Flatten:
                return (mod.start_dim, mod.end_dim) == (1, -1)
            return not (type(mod) is nn.MaxPool2d and mod.return_indices)

        leaves = sequential_leaves(model, accept)  # None also for hooks and for a layer used twice
        if leaves is None or not any(type(m) is nn.Conv2d for m in leaves):
            return None
        ndim = 4  # convolutions and pools see [n, C, H, W], Linear layers [n, features]
        for m in leaves:
            if type(m) in (nn.Conv2d, nn.MaxPool2d) and ndim != 4:
                return None
            if type(m) is nn.Flatten:
                ndim = 2
            if type(m) is nn.Linear and ndim != 2:
                return None
        return leaves if ndim == 2 else None

    @classmethod
    def applies(cls, model: nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor) -> bool:
        if loss_fn is not nn.functional.cross_entropy or y.ndim != 1 or y.is_floating_point():
            return False
        leaves = cls._leaves(model)
        if x.ndim != 4 or x.shape[0] != y.shape[0] or leaves is None or not _owns_every_parameter_once(model, leaves):
            return False
        return all(q.requires_grad and q.dtype == x.dtype and q.device == x.device for q in model.parameters())

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int | None = None):
        leaves = self._leaves(model)
        if leaves is None or x.ndim != 4 or not _owns_every_parameter_once(model, leaves):
            raise ValueError(
                "ConvNetHVP needs an nn.Sequential of Conv2d (zero padding, one group), MaxPool2d, ReLU, "
                "Identity, Flatten(1, -1) and Linear layers that own every parameter of the model, each once, "
                "and inputs [n, C, H, W]")
        offsets = self._flat_layout(model)
        n = x.shape[0]
        # each step: ("conv", module, W, b, a_in, weight offset, bias offset, δ at the output),
        # ("linear", W, b, a_in, weight offset, bias offset, δ) as in LinearNetHVP, ("mask", ReLU mask), ("pool", argmax indices [n, C, H'W'], input shape [C, H, W],
        # output size (H', W')), ("flat", shape before)
        steps: list[list] = []
        h = x.detach()
        widest = 0
        with torch.no_grad():
            for mod in leaves:
                if type(mod) in (nn.Conv2d, nn.Linear):
                    W = mod.weight.detach().clone()  # the point θ, not the live parameter
                    b = None if mod.bias is None else mod.bias.detach().clone()
                    ob = None if b is None else offsets[id(mod.bias)]
                    if type(mod) is nn.Conv2d:
                        steps.append(["conv", mod, W, b, h, offsets[id(mod.weight)], ob, None])
                        h = mod._conv_forward(h, W, b)
                    else:
                        steps.append(["linear", W, b, h, offsets[id(mod.weight)], ob, None])
                        h = F.linear(h, W, b)
                elif type(mod) is nn.ReLU:
                    mask = (h > 0).to(h.dtype)
                    steps.append(["mask", mask])
                    h = h * mask
                elif type(mod) is nn.MaxPool2d:
                    shape = h.shape[1:]
                    h, idx = F.max_pool2d(h, mod.kernel_size, mod.stride, mod.padding, mod.dilation,
                                          ceil_mode=mod.ceil_mode, return_indices=True)
                    steps.append(["pool", idx.flatten(2), shape, tuple(h.shape[2:])])
                elif type(mod) is nn.Flatten:
                    steps.append(["flat", h.shape])
                    h = h.flatten(1)
                widest = max(widest, h[0].numel())
            self.loss, self._pi, d = _softmax_head(h, y)
            grads = torch.empty(self.p, dtype=self.dtype, device=self.device)
            first = next(i for i, st in enumerate(steps) if st[0] in ("conv", "linear"))
            for i in range(len(steps) - 1, first - 1, -1):
                st = steps[i]
                if st[0] == "conv":
                    _, mod, W, b, a, ow, ob, _ = st
                    st[7] = d
                    gi, gw, gb = torch.ops.aten.convolution_backward(
                        d, a, W, None if b is None else [b.numel()], mod.stride, mod.padding, mod.dilation,
                        False, [0, 0], 1, [i > first, True, b is not None])
                    grads[ow : ow + W.numel()] = gw.reshape(-1)
                    if b is not None:
                        grads[ob : ob + b.numel()] = gb
                    d = gi
                elif st[0] == "linear":
                    d = _linear_backward(st, d, grads)
                elif st[0] == "mask":
                    d = d * st[1]
                elif st[0] == "pool":
                    d = self._unpool(d.unsqueeze(0), st[1], st[2])[0]
                else:
                    d = d.reshape(st[1])
        self.gradient = grads
        self._steps = steps
        self._first = first
        self._n = n
        by_memory = max(1, BLOCK_BYTES // max(1, n * widest * self.theta.element_size()))
        self.chunk = int(chunk or min(by_memory, _default_chunk(self.p, self.theta.element_size(), self.device)))

    @staticmethod
    def _unpool(g: torch.Tensor, idx: torch.Tensor, shape) -> torch.Tensor:
        """Send ``g`` (``[c, n, C, H', W']``) back to the argmax positions of an input of ``shape``."""
        c, n = g.shape[:2]
        out = g.new_zeros(c, n, shape[0], shape[1] * shape[2])
        out.scatter_add_(3, idx.expand(c, *idx.shape), g.reshape(c, n, shape[0], -1))
        return out.view(c, n, *shape)

    def _products(self, V: torch.Tensor) -> torch.Tensor:
        c, n = V.shape[0], self._n
        out = torch.empty(c, self.p, dtype=self.dtype, device=self.device)
        Ra = None  # R(a) of the current activation, [c, n, ...]; None: zero (the input)
        r_in = []
        for st in self._steps:
            kind = st[0]
            if kind == "conv":
                _, mod, W, b, a, ow, ob, _ = st
                cout = W.shape[0]
                Vw = V[:, ow : ow + W.numel()].reshape(c * cout, *W.shape[1:])
                Rz = mod._conv_forward(a, Vw, None)  # [n, c·C_out, H', W']: conv(a, V_j) for every j
                Rz = Rz.view(n, c, cout, *Rz.shape[2:]).transpose(0, 1)
                if Ra is not None:
                    Rz = Rz + mod._conv_forward(Ra.reshape(c * n, *Ra.shape[2:]), W, None).view(c, n, cout, *Rz.shape[3:])
                if b is not None:
                    Rz = Rz + V[:, ob : ob + b.numel()].view(c, 1, cout, 1, 1)
                r_in.append(Ra)
                Ra = Rz
            elif kind == "linear":
                r_in.append(Ra)
                Ra = _linear_r_forward(st, V, Ra)
            elif Ra is None:
                continue
            elif kind == "mask":
                Ra = Ra * st[1]
            elif kind == "pool":
                idx = st[1]
                Ra = Ra.reshape(c, n, idx.shape[1], -1).gather(3, idx.expand(c, *idx.shape))
                Ra = Ra.view(c, n, idx.shape[1], *st[3])
            else:
                Ra = Ra.flatten(2)
        Rd = _r_delta_head(self._pi, Ra, n)
        for i in range(len(self._steps) - 1, self._first - 1, -1):
            st = self._steps[i]
            kind = st[0]
            if kind == "conv":
                _, mod, W, b, a, ow, ob, d = st
                Ra_in = r_in.pop()
                cout, cin = W.shape[:2]
                k = W.shape[2:]
                hw = out[:, ow : ow + W.numel()].view(c, *W.shape)
                Rd_f = Rd.transpose(0, 1).reshape(n, c * cout, *Rd.shape[3:])  # directions in the channels
                hw.copy_(conv2d_weight(a, (c * cout, cin, *k), Rd_f, mod.stride, mod.padding, mod.dilation).view(c, *W.shape))
                if Ra_in is not None:
                    Ra_f = Ra_in.transpose(0, 1).reshape(n, c * cin, *Ra_in.shape[3:])
                    g2 = conv2d_weight(Ra_f, (cout, c * cin, *k), d, mod.stride, mod.padding, mod.dilation)
                    hw += g2.view(cout, c, cin, *k).transpose(0, 1)
                if b is not None:
                    out[:, ob : ob + b.numel()] = Rd.sum((1, 3, 4))
                if i > self._first:
                    in_hw = a.shape[2:]
                    Rd_in = conv2d_input((c * n, cin, *in_hw), W, Rd.reshape(c * n, cout, *Rd.shape[3:]),
                                         mod.stride, mod.padding, mod.dilation).view(c, n, cin, *in_hw)
                    Vt = V[:, ow : ow + W.numel()].view(c, cout, cin, *k).transpose(0, 1).reshape(cout, c * cin, *k)
                    g3 = conv2d_input((n, c * cin, *in_hw), Vt, d, mod.stride, mod.padding, mod.dilation)
                    Rd = Rd_in + g3.view(n, c, cin, *in_hw).transpose(0, 1)
            elif kind == "linear":
                Rd = _linear_r_backward(st, V, Rd, r_in.pop(), out, i > self._first)
            elif kind == "mask":
                Rd = Rd * st[1]
            elif kind == "pool":
                Rd = self._unpool(Rd, st[1], st[2])
            else:
                Rd = Rd.reshape(c, n, *st[1][1:])
        return out
