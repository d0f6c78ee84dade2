"""A small transformer text classifier trained by many Adam runs in lockstep (Figure 6 stand-in).

The batch-size paper's last experiment (App. A.1.4) trains a 6-layer XLNet on Yelp reviews with
Adam and compares the across-run variance of the stochastic gradient at b = 32 and b = 64.
Neither XLNet's tokenizer nor Yelp is available offline, so this module provides:

- :func:`synthetic_sentiment`: a text-like binary sentiment task. Token 0 pads; tokens
  ``1..K`` are "positive" and ``K+1..2K`` "negative" keywords; the other tokens are neutral
  filler drawn with a Zipf-like frequency. The label is the sign of (#positive − #negative)
  (ties broken at random), then flipped with probability ``label_noise``. Lengths vary, the
  sequences are right-padded to ``seq_len`` and come with a padding mask.
- :class:`TransformerClassifier`: token + learned position embeddings, pre-LayerNorm encoder
  layers written by hand (multi-head self-attention with a key padding mask, GELU MLP), a final
  LayerNorm, mean pooling over the real tokens and a linear head. Pure tensor code, so that it
  runs under ``torch.func.functional_call`` + ``vmap`` over stacked parameters.
- :func:`adamw_step`: Adam with decoupled weight decay (``torch.optim.AdamW``'s update) and
  clipping of each run's gradient by its global norm (``torch.nn.utils.clip_grad_norm_``'s rule),
  on stacked per-run parameters ``[R, ...]`` as batched tensor arithmetic.
- :func:`lockstep_adam`: ``R`` runs from one initialisation that differ only in their
  epoch-based minibatch order (one permutation per run and epoch, indices ``[steps, R, m]``);
  per step the across-run variance of the stochastic gradient (before and after clipping), per
  epoch the full train/validation loss and error of every run.
- :func:`across_run_variance`: Σ over coordinates of the unbiased variance across runs.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from sgdbook import stats
from sgdbook.ensemble import epoch_indices, evaluate_runs

PAD = 0


# ------------------------------------------------------------------------------------------- data


@dataclass
class SentimentData:
    tokens: torch.Tensor  # [n, L] int64, PAD (0) after the end of each sequence
    mask: torch.Tensor  # [n, L] bool, True on real tokens
    labels: torch.Tensor  # [n] int64 in {0, 1} (1 = positive), after label noise
    clean_labels: torch.Tensor  # [n] labels before the noise flip (ties already broken)

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def subset(self, idx) -> "SentimentData":
        return SentimentData(self.tokens[idx], self.mask[idx], self.labels[idx], self.clean_labels[idx])

    def to(self, device) -> "SentimentData":
        return SentimentData(self.tokens.to(device), self.mask.to(device), self.labels.to(device), self.clean_labels.to(device))


def synthetic_sentiment(
    n: int,
    vocab_size: int,
    seq_len: int,
    generator: torch.Generator,
    n_keywords: int = 8,
    keyword_rate: float = 0.15,
    zipf_exponent: float = 1.1,
    min_len: int | None = None,
    label_noise: float = 0.1,
) -> SentimentData:
    """``n`` synthetic reviews (see the module docstring); all randomness from ``generator``.

    Each position up to the sequence's length is a keyword with probability ``keyword_rate``
    (positive or negative with probability 1/2 each, then uniform among the ``n_keywords``
    keywords of that polarity), otherwise a neutral token of Zipf rank ``r`` with probability
    ∝ ``r**-zipf_exponent``. Lengths are uniform on ``[min_len, seq_len]`` (default
    ``max(1, seq_len // 4)``).
    """
    if n < 1 or seq_len < 1:
        raise ValueError(f"need n >= 1 and seq_len >= 1, got n = {n}, seq_len = {seq_len}")
    n_neutral = vocab_size - 1 - 2 * n_keywords
    if n_keywords < 1 or n_neutral < 1:
        raise ValueError(f"vocab_size = {vocab_size} leaves no neutral tokens beside PAD and 2 x {n_keywords} keywords")
    if not 0.0 < keyword_rate < 1.0 or not 0.0 <= label_noise < 0.5:
        raise ValueError(f"need 0 < keyword_rate < 1 and 0 <= label_noise < 0.5, got {keyword_rate}, {label_noise}")
    min_len = max(1, seq_len // 4) if min_len is None else min_len
    if not 1 <= min_len <= seq_len:
        raise ValueError(f"need 1 <= min_len <= seq_len, got min_len = {min_len}, seq_len = {seq_len}")
    dev = generator.device
    lengths = torch.randint(min_len, seq_len + 1, (n,), generator=generator, device=dev)
    mask = torch.arange(seq_len, device=dev)[None, :] < lengths[:, None]
    zipf = torch.arange(1, n_neutral + 1, dtype=torch.float64, device=dev) ** (-zipf_exponent)
    neutral = 1 + 2 * n_keywords + torch.multinomial(zipf / zipf.sum(), n * seq_len, replacement=True, generator=generator)
    is_kw = torch.rand(n, seq_len, generator=generator, device=dev) < keyword_rate
    is_neg = torch.rand(n, seq_len, generator=generator, device=dev) < 0.5
    which = torch.randint(0, n_keywords, (n, seq_len), generator=generator, device=dev)
    keyword = 1 + which + n_keywords * is_neg.long()
    tokens = torch.where(is_kw, keyword, neutral.view(n, seq_len))
    tokens = torch.where(mask, tokens, torch.full_like(tokens, PAD))
    pos = ((tokens >= 1) & (tokens <= n_keywords)).sum(1)
    neg = ((tokens > n_keywords) & (tokens <= 2 * n_keywords)).sum(1)
    tie = torch.rand(n, generator=generator, device=dev) < 0.5
    clean = torch.where(pos == neg, tie, pos > neg).long()
    flip = torch.rand(n, generator=generator, device=dev) < label_noise
    labels = torch.where(flip, 1 - clean, clean)
    return SentimentData(tokens, mask, labels, clean)


def check_data(data: SentimentData, vocab_size: int, max_len: int) -> None:
    """Clear errors for data a :class:`TransformerClassifier` cannot take."""
    t, m = data.tokens, data.mask
    if t.dtype != torch.long or m.dtype != torch.bool or t.shape != m.shape or t.ndim != 2:
        raise ValueError(f"need int64 tokens and a bool mask of the same [n, L] shape, got {t.dtype} {tuple(t.shape)}, {m.dtype} {tuple(m.shape)}")
    if t.shape[1] > max_len:
        raise ValueError(f"sequence length {t.shape[1]} exceeds the model's max_len {max_len}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= vocab_size):
        raise ValueError(f"token ids must lie in [0, {vocab_size}), got [{int(t.min())}, {int(t.max())}]")
    if not bool(m.any(1).all()):
        raise ValueError("every sequence needs at least one real (unmasked) token")


# ------------------------------------------------------------------------------------------ model


class EncoderLayer(nn.Module):
    """Pre-LN transformer encoder layer: h + MHA(LN(h)), then h + MLP(LN(h))."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model = {d_model} is not divisible by n_heads = {n_heads}")
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, d_ff)
        self.fc2 = nn.Linear(d_ff, d_model)

    def forward(self, h: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        B, L, d = h.shape
        H = self.n_heads
        qkv = self.qkv(self.ln1(h)).reshape(B, L, 3, H, d // H).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [B, H, L, dh]
        s = (q @ k.transpose(-1, -2)) * (d // H) ** -0.5
        s = s.masked_fill(~key_mask[:, None, None, :], torch.finfo(s.dtype).min)  # padded keys get weight exactly 0
        o = (s.softmax(-1) @ v).transpose(1, 2).reshape(B, L, d)
        h = h + self.proj(o)
        return h + self.fc2(F.gelu(self.fc1(self.ln2(h))))


class TransformerClassifier(nn.Module):
    """Token + position embeddings, ``n_layers`` pre-LN encoder layers, final LayerNorm, mean
    pooling over the unmasked tokens, a linear head. ``forward(tokens [B, L], mask [B, L])``."""

    def __init__(self, vocab_size: int, max_len: int, d_model: int, n_heads: int, n_layers: int, d_ff: int,
                 n_classes: int = 2) -> None:
        super().__init__()
        if min(vocab_size, max_len, d_model, n_heads, n_layers, d_ff, n_classes) < 1:
            raise ValueError("every size of the transformer must be >= 1")
        self.vocab_size, self.max_len = vocab_size, max_len
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Parameter(torch.zeros(max_len, d_model))
        self.layers = nn.ModuleList(EncoderLayer(d_model, n_heads, d_ff) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_classes)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        L = tokens.shape[-1]
        if L > self.max_len:
            raise ValueError(f"sequence length {L} exceeds max_len {self.max_len}")
        h = self.tok(tokens) + self.pos[:L]
        for layer in self.layers:
            h = layer(h, mask)
        h = self.ln_f(h)
        w = mask.to(h.dtype).unsqueeze(-1)
        pooled = (h * w).sum(-2) / w.sum(-2).clamp_min(1.0)
        return self.head(pooled)


def transformer_classifier(vocab_size: int, max_len: int, d_model: int, n_heads: int, n_layers: int, d_ff: int,
                           generator: torch.Generator, n_classes: int = 2, init_std: float = 0.02,
                           emb_std: float | None = None, dtype: torch.dtype = torch.float32) -> TransformerClassifier:
    """A :class:`TransformerClassifier` initialised from ``generator``: every weight matrix
    N(0, init_std²) (XLNet's initializer_range 0.02), the token and position embeddings
    N(0, emb_std²) (default: init_std; 1.0 is ``nn.Embedding``'s default), biases 0, LayerNorm γ = 1, β = 0."""
    emb_std = init_std if emb_std is None else emb_std
    if init_std <= 0 or emb_std <= 0:
        raise ValueError(f"initialisation scales must be positive, got init_std = {init_std}, emb_std = {emb_std}")
    model = TransformerClassifier(vocab_size, max_len, d_model, n_heads, n_layers, d_ff, n_classes).to(dtype=dtype, device=generator.device)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif ".ln" in name or name.startswith("ln"):
                p.fill_(1.0)
            else:
                std = emb_std if name in ("tok.weight", "pos") else init_std
                p.copy_(std * torch.randn(p.shape, generator=generator, dtype=dtype, device=generator.device))
    return model


def no_decay(name: str) -> bool:
    """Parameters exempt from weight decay (biases and LayerNorm parameters, as in the XLNet/BERT recipes)."""
    parts = name.split(".")
    return parts[-1] == "bias" or (len(parts) >= 2 and parts[-2].startswith("ln"))


def stack_params(params: Mapping[str, torch.Tensor], runs: int) -> dict[str, torch.Tensor]:
    """``runs`` identical copies of one set of parameters, stacked along a new leading dimension."""
    if runs < 1:
        raise ValueError(f"need runs >= 1, got {runs}")
    return {k: v.detach().unsqueeze(0).expand(runs, *v.shape).clone() for k, v in params.items()}


def _meta(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).to("meta")


def per_run_logits(model: nn.Module, params: Mapping[str, torch.Tensor], tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Logits of every run: stacked ``params`` [R, ...]; ``tokens``/``mask`` either shared
    ``[B, L]`` or per run ``[R, B, L]``. Returns ``[R, B, n_classes]``."""
    base = _meta(model)
    shared = tokens.ndim == 2
    f = lambda p, t, m: functional_call(base, p, (t, m))
    return vmap(f, in_dims=(0, None if shared else 0, None if shared else 0))(dict(params), tokens, mask)


# ------------------------------------------------------------------------------------- optimiser


@dataclass(frozen=True)
class AdamConfig:
    """AdamW hyper-parameters; the learning rate at step t (0-based) is
    ``lr * min(1, (t + 1) / warmup_steps)`` (linear warm-up, then constant)."""

    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.01
    max_grad_norm: float | None = 1.0
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.eps <= 0 or self.weight_decay < 0 or self.warmup_steps < 0:
            raise ValueError(f"invalid AdamConfig {self}")
        if not (0 <= self.betas[0] < 1 and 0 <= self.betas[1] < 1):
            raise ValueError(f"Adam betas must lie in [0, 1), got {self.betas}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError(f"max_grad_norm must be positive or None, got {self.max_grad_norm}")

    def lr_at(self, step: int) -> float:
        return self.lr * (min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0)


def global_norms(tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Per-run global L2 norm of stacked tensors ``{name: [R, ...]}`` → ``[R]``."""
    return torch.stack([t.flatten(1).pow(2).sum(1) for t in tensors.values()]).sum(0).sqrt()


def clip_by_global_norm(grads: Mapping[str, torch.Tensor], max_norm: float | None):
    """Scale each run's gradient by min(1, max_norm / (‖g‖ + 1e-6)) (``clip_grad_norm_``'s rule).
    Returns (clipped gradients, per-run norms before clipping [R])."""
    norms = global_norms(grads)
    if max_norm is None:
        return dict(grads), norms
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    return {k: g * coef.view(-1, *([1] * (g.ndim - 1))) for k, g in grads.items()}, norms


def adam_init(params: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    return {"m": {k: torch.zeros_like(v) for k, v in params.items()}, "v": {k: torch.zeros_like(v) for k, v in params.items()}}


def adamw_step(params: Mapping[str, torch.Tensor], grads: Mapping[str, torch.Tensor], state, step: int, cfg: AdamConfig,
               decay: Callable[[str], bool] = lambda name: not no_decay(name)):
    """One AdamW update of all stacked runs at 0-based ``step`` (gradients already clipped).

    Same arithmetic as ``torch.optim.AdamW`` (non-amsgrad, non-foreach): decoupled decay
    p ← p(1 − lr·wd) on the parameters ``decay(name)`` selects, then
    p ← p − lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε). Returns new (params, state).
    """
    lr = cfg.lr_at(step)
    b1, b2 = cfg.betas
    t = step + 1
    bc1, bc2 = 1 - b1**t, 1 - b2**t
    new_p, new_m, new_v = {}, {}, {}
    for k, p in params.items():
        g = grads[k]
        m = state["m"][k].mul(b1).add_(g, alpha=1 - b1)
        v = state["v"][k].mul(b2).addcmul_(g, g, value=1 - b2)
        if cfg.weight_decay and decay(k):
            p = p * (1 - lr * cfg.weight_decay)
        denom = (v.sqrt() / math.sqrt(bc2)).add_(cfg.eps)
        new_p[k] = p - (lr / bc1) * m / denom
        new_m[k], new_v[k] = m, v
    return new_p, {"m": new_m, "v": new_v}


# ------------------------------------------------------------------------------------ statistics


def across_run_variance(tensors: Mapping[str, torch.Tensor], ddof: int = 1) -> torch.Tensor:
    """Σ over all coordinates of the variance across runs (dim 0) of stacked tensors: the
    paper's var(M) = E‖vec M‖² − ‖E vec M‖², estimated with ``ddof`` (1: unbiased)."""
    R = next(iter(tensors.values())).shape[0]
    if R - ddof < 1:
        raise ValueError(f"need more than ddof = {ddof} runs for a variance, got {R}")
    return run_deviations(tensors).sum() / (R - ddof)


def run_deviations(tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``d_r = Σ_coords (x_r − x̄)²`` for every run ``r`` of stacked tensors ``[R, ...]`` → ``[R]``.

    ``R/(R − 1) · mean_r d_r`` is the unbiased across-run variance; the runs being independent given
    θ₀, ``R/(R − 1) · sd_r(d_r)/√R`` is its standard error (influence function of a variance)."""
    return sum(((t - t.mean(0, keepdim=True)) ** 2).flatten(1).sum(1) for t in tensors.values())


def epoch_average(x: torch.Tensor, steps_per_epoch: int) -> torch.Tensor:
    """Average a per-step series ``[T, ...]`` over each epoch → ``[T // steps_per_epoch, ...]``."""
    if x.shape[0] % steps_per_epoch:
        raise ValueError(f"{x.shape[0]} steps are not a whole number of epochs of {steps_per_epoch} steps")
    return x.reshape(x.shape[0] // steps_per_epoch, steps_per_epoch, *x.shape[1:]).mean(1)


def evaluate(model: nn.Module, params: Mapping[str, torch.Tensor], data: SentimentData, chunk: int = 1024):
    """Mean cross-entropy and error (1 − accuracy) of every run on the whole of ``data`` → ([R], [R])
    (:func:`sgdbook.ensemble.evaluate_runs` with the inputs ``(tokens, mask)``)."""
    loss, acc = evaluate_runs(_meta(model), dict(params), (data.tokens, data.mask), data.labels, chunk=chunk)
    return loss, 1 - acc


# ------------------------------------------------------------------------------------ the runner


@dataclass
class AdamRuns:
    batch_size: int
    steps_per_epoch: int
    var_raw: torch.Tensor  # [T] Σ_coords var across runs of the stochastic gradient before clipping
    var_clipped: torch.Tensor  # [T] the same after clipping
    grad_norm: torch.Tensor  # [T, R] global norm before clipping
    mb_loss: torch.Tensor  # [T, R] minibatch loss at θ_t
    lr: torch.Tensor  # [T] learning rate used at step t
    train_loss: torch.Tensor  # [E+1, R] full training loss after each epoch (row 0: at θ_0)
    train_err: torch.Tensor  # [E+1, R]
    val_loss: torch.Tensor  # [E+1, R]
    val_err: torch.Tensor  # [E+1, R]
    params: dict[str, torch.Tensor] = field(repr=False)  # final stacked parameters
    var_fullgrad: torch.Tensor | None = None  # [E+1] across-run variance of the gradient of a fixed training subset, after each epoch
    var_runs: torch.Tensor | None = None  # [T, R] each run's share R/(R−1)·‖g_r − ḡ‖² of var_raw (var_raw is their mean)

    def epoch_var(self, clipped: bool = False) -> torch.Tensor:
        """The SG variance averaged over the steps of each epoch → [E]."""
        return epoch_average(self.var_clipped if clipped else self.var_raw, self.steps_per_epoch)

    def epoch_var_runs(self) -> torch.Tensor:
        """Each run's share of the epoch-averaged SG variance, ``[R, E]`` (the mean over runs is
        :meth:`epoch_var`; the runs are independent given θ₀, so their spread gives its standard error)."""
        return epoch_average(self.var_runs, self.steps_per_epoch).T


def subset_gradients(model: nn.Module, params: Mapping[str, torch.Tensor], data: SentimentData, chunk: int = 1024) -> dict[str, torch.Tensor]:
    """Per-run gradient of the mean loss over all of ``data`` (the same examples for every run),
    accumulated over chunks: ``{name: [R, ...]}``."""
    base = _meta(model)

    def loss_sum(p, t, m, y):
        return F.cross_entropy(functional_call(base, p, (t, m)), y, reduction="sum")

    g_fn = vmap(torch.func.grad(loss_sum), in_dims=(0, None, None, None))
    total = None
    for s in range(0, len(data), chunk):
        g = g_fn(dict(params), data.tokens[s:s + chunk], data.mask[s:s + chunk], data.labels[s:s + chunk])
        total = g if total is None else {k: total[k] + g[k] for k in g}
    return {k: v / len(data) for k, v in total.items()}


def lockstep_step(base: nn.Module, params: Mapping[str, torch.Tensor], state, step: int, tokens: torch.Tensor,
                  mask: torch.Tensor, labels: torch.Tensor, adam: AdamConfig):
    """One step of all runs: per-run minibatch gradients (one ``vmap`` of ``grad``; ``tokens``/``mask``
    ``[R, m, L]``, ``labels`` ``[R, m]``), global-norm clipping, across-run variances, AdamW update.
    Returns (params, state, stats) with stats ``var_raw``, ``var_clipped`` (scalars), ``dev_raw``
    (:func:`run_deviations` of the gradients), ``grad_norm``, ``loss`` ([R])."""

    def loss_fn(p, t, m, y):
        return F.cross_entropy(functional_call(base, p, (t, m)), y)

    grads, loss = vmap(grad_and_value(loss_fn))(dict(params), tokens, mask, labels)
    clipped, norms = clip_by_global_norm(grads, adam.max_grad_norm)
    dev = run_deviations(grads)
    R = dev.shape[0]
    out = {"var_raw": dev.sum() / (R - 1), "var_clipped": across_run_variance(clipped), "dev_raw": dev,
           "grad_norm": norms, "loss": loss.detach()}
    params, state = adamw_step(params, clipped, state, step, adam)
    return params, state, out


def lockstep_adam(model: nn.Module, train: SentimentData, val: SentimentData, batch_size: int, epochs: int, runs: int,
                  adam: AdamConfig, generator: torch.Generator, eval_chunk: int = 1024, progress_desc: str | None = None,
                  indices: torch.Tensor | None = None, fullgrad_subset: int = 0) -> AdamRuns:
    """Train ``runs`` copies of ``model`` (all from its current parameters) with AdamW and global-norm
    clipping, one vmapped ``grad`` per step for all runs; runs differ only in their minibatch order.

    ``indices`` (optional, ``[steps, R, m]``) overrides the epoch-based order drawn from ``generator``.
    ``fullgrad_subset`` > 0 also records, at θ₀ and after each epoch, the across-run variance of the
    gradient of the loss over the first ``fullgrad_subset`` training examples (no sampling noise:
    the spread of the runs' parameters seen through a fixed loss).
    """
    if not 0 <= fullgrad_subset <= len(train):
        raise ValueError(f"fullgrad_subset = {fullgrad_subset} must lie in [0, {len(train)}]")
    check_data(train, model.vocab_size, model.max_len)
    check_data(val, model.vocab_size, model.max_len)
    if runs < 2:
        raise ValueError(f"an across-run variance needs runs >= 2, got {runs}")
    if indices is None:
        indices = epoch_indices(len(train), runs, batch_size, generator, epochs=epochs)
    spe = len(train) // batch_size
    if indices.shape != (epochs * spe, runs, batch_size):
        raise ValueError(f"indices of shape {tuple(indices.shape)} do not match ({epochs * spe}, {runs}, {batch_size})")
    base = _meta(model)
    params = stack_params(dict(model.named_parameters()), runs)
    state = adam_init(params)
    T = indices.shape[0]
    dt, dev = next(iter(params.values())).dtype, indices.device
    var_raw, var_clip, lrs = torch.zeros(T, dtype=dt, device=dev), torch.zeros(T, dtype=dt, device=dev), torch.zeros(T, dtype=torch.float64)
    gnorm, mbl = torch.zeros(T, runs, dtype=dt, device=dev), torch.zeros(T, runs, dtype=dt, device=dev)
    devs = torch.zeros(T, runs, dtype=dt, device=dev)
    evals = [evaluate(model, params, train, eval_chunk) + evaluate(model, params, val, eval_chunk)]
    sub = train.subset(slice(0, fullgrad_subset))
    var_full = [across_run_variance(subset_gradients(model, params, sub, eval_chunk))] if fullgrad_subset else []
    steps = range(T)
    if progress_desc:
        from sgdbook.book.progress import progress

        steps = progress(steps, desc=progress_desc)
    for t in steps:
        idx = indices[t]
        params, state, st = lockstep_step(base, params, state, t, train.tokens[idx], train.mask[idx], train.labels[idx], adam)
        var_raw[t], var_clip[t], gnorm[t], mbl[t], lrs[t] = st["var_raw"], st["var_clipped"], st["grad_norm"], st["loss"], adam.lr_at(t)
        devs[t] = st["dev_raw"] * (runs / (runs - 1))
        if (t + 1) % spe == 0:
            evals.append(evaluate(model, params, train, eval_chunk) + evaluate(model, params, val, eval_chunk))
            if fullgrad_subset:
                var_full.append(across_run_variance(subset_gradients(model, params, sub, eval_chunk)))
            if not bool(torch.isfinite(evals[-1][0]).all()):
                bad = int((~torch.isfinite(evals[-1][0])).nonzero()[0])
                raise FloatingPointError(f"run {bad} has a non-finite training loss after step {t}")
    tl, te, vl, ve = (torch.stack([e[i] for e in evals]) for i in range(4))
    return AdamRuns(batch_size, spe, var_raw, var_clip, gnorm, mbl, lrs, tl, te, vl, ve, params,
                    torch.stack(var_full).detach() if var_full else None, devs)


def combine_groups(results: list[AdamRuns]) -> AdamRuns:
    """Merge lockstep results of disjoint groups of runs (trained separately to save memory) from the
    same initialisation: per-run series are concatenated; the across-run variance of each step is the
    mean of the groups' unbiased variances (an unbiased estimate of the same quantity, runs being
    i.i.d. given θ₀)."""
    if not results:
        raise ValueError("no groups to combine")
    r0 = results[0]
    for r in results[1:]:
        if (r.batch_size, r.steps_per_epoch, r.var_raw.shape, r.train_loss.shape[0]) != (r0.batch_size, r0.steps_per_epoch, r0.var_raw.shape, r0.train_loss.shape[0]):
            raise ValueError("groups differ in batch size, steps or epochs")
    cat = lambda name: torch.cat([getattr(r, name) for r in results], 1)
    return AdamRuns(
        r0.batch_size, r0.steps_per_epoch,
        torch.stack([r.var_raw for r in results]).mean(0), torch.stack([r.var_clipped for r in results]).mean(0),
        cat("grad_norm"), cat("mb_loss"), r0.lr, cat("train_loss"), cat("train_err"), cat("val_loss"), cat("val_err"),
        {k: torch.cat([r.params[k] for r in results]) for k in r0.params},
        None if r0.var_fullgrad is None else torch.stack([r.var_fullgrad for r in results]).mean(0),
        None if r0.var_runs is None else cat("var_runs"),
    )


# ------------------------------------------------------------------------------- Figure 6 helpers


def train_batch_sizes(model: nn.Module, train: SentimentData, val: SentimentData, settings: Mapping, adam: AdamConfig,
                      seed: int, label: str = "") -> dict[int, AdamRuns]:
    """``settings["runs"]`` AdamW runs from ``model``'s parameters for every batch size of
    ``settings["batch_sizes"]``, ``settings["epochs"]`` epochs each, in groups of ``run_group`` runs
    (:func:`combine_groups`); the minibatch order of group ``k`` at batch size ``b`` comes from
    generator seed ``7919·seed + 100·b + k`` on the data's device."""
    out = {}
    dev = train.tokens.device
    for b in settings["batch_sizes"]:
        groups = []
        for k in range(settings["runs"] // settings["run_group"]):
            order = torch.Generator(device=dev).manual_seed(seed * 7919 + 100 * b + k)
            groups.append(lockstep_adam(model, train, val, b, settings["epochs"], settings["run_group"], adam, order,
                                        eval_chunk=settings["eval_chunk"], progress_desc=f"{label} b = {b}, group {k + 1}",
                                        fullgrad_subset=settings["fullgrad_subset"]))
        out[b] = combine_groups(groups)
    return out


#: The four curves of Figure 6 besides the variance.
CURVES = ("train_loss", "train_err", "val_loss", "val_err")


@dataclass(frozen=True)
class Figure6:
    """Figure 6 for one set of runs: the smaller batch (``a``) against the larger (``b``).

    ``variance`` compares each run's share of the epoch-averaged SG variance (Welch's t over the
    independent runs of the two batch sizes, per epoch); ``per_epoch`` / ``per_step`` compare the
    loss and error curves after the same epoch, or after the same number of steps (the larger batch
    after epoch 2k against the smaller after epoch k). ``parts`` judges each against the paper's
    reading (the variance higher, the loss and error lower at the smaller batch) and ``verdict``
    is their conjunction.
    """

    variance: stats.Ordering
    variance_reversed: bool  # the smaller batch significantly *lower* at some epoch (Bonferroni over epochs)
    per_epoch: dict
    per_step: dict
    parts: dict
    verdict: str


def figure6(small: AdamRuns, large: AdamRuns, level: float = 0.05) -> Figure6:
    """Compare two batch sizes trained from the same θ₀ (see :class:`Figure6`)."""
    va, vb = small.epoch_var_runs().double().cpu().numpy(), large.epoch_var_runs().double().cpu().numpy()
    var = stats.ordering(va, vb, paired=False, level=level)
    reversed_ = stats.ordering(va, vb, paired=False, level=level / va.shape[1]).frac_lower > 0
    ratio = small.steps_per_epoch // large.steps_per_epoch
    E = small.train_loss.shape[0] - 1
    K = E // ratio
    per_epoch, per_step = {}, {}
    for c in CURVES:
        a, b = getattr(small, c).double().cpu().numpy(), getattr(large, c).double().cpu().numpy()
        per_epoch[c] = stats.ordering(a[1:].T, b[1:].T, paired=False, level=level)
        if K >= 1:
            per_step[c] = stats.ordering(a[1:K + 1].T, b[ratio:ratio * K + 1:ratio].T, paired=False, level=level)
    parts = {"variance": "reproduced" if var.frac_higher == 1.0 else ("not-reproduced" if reversed_ else "inconclusive")}
    for c in CURVES:
        parts[c] = {"a lower": "reproduced", "a higher": "not-reproduced"}.get(per_epoch[c].direction, "inconclusive")
    return Figure6(var, bool(reversed_), per_epoch, per_step, parts, stats.combine_verdicts(parts.values()))
