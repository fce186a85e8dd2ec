"""The Fisher's building blocks that do not depend on the estimator's protocol: the variational layers (local
reparameterisation, the released ``variational.py`` without monkey-patching) and the sums of squared per-sample
gradients, two ways (``torch.func.vmap(grad(...))`` and closed forms from one backward pass).

Split from :mod:`workbench.methods.task2vec`, which re-exports every name.
"""

from __future__ import annotations

import itertools
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from workbench.errors import ParameterError

# ----------------------------------------------------------------------------------------------------------------
# Variational layers (local reparameterisation), the official variational.py without monkey-patching
# ----------------------------------------------------------------------------------------------------------------


class VariationalWrapper(nn.Module):
    """A frozen Conv2d/Linear whose weights get Gaussian noise with one learned log-variance per filter.

    Forward (local reparameterisation, Kingma et al. 2015): ``out = f(x, w) + sqrt(f(x^2 + 1e-2, sigma^2)) * eps``.
    ``logvar0`` starts at ``log(0.05 Var_filter(w) + 1e-8)`` and ``loglambda2`` (the prior's per-layer scale) at
    ``log(mean(w^2) + 1e-8)``, as in the official code.
    """

    def __init__(self, module: nn.Conv2d | nn.Linear, variance_scaling: float = 0.05) -> None:
        super().__init__()
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            raise ParameterError("the variational Fisher supports Conv2d and Linear layers, not "
                                 f"{type(module).__name__}.")
        self.inner = module
        w = module.weight.detach()
        per_filter_var = w.reshape(w.shape[0], -1).var(dim=1)  # unbiased, as torch's .var() in the official code
        self.logvar0 = nn.Parameter((per_filter_var * variance_scaling + 1e-8).log().view(-1, *([1] * (w.ndim - 1))))
        self.loglambda2 = nn.Parameter((w.pow(2).mean() + 1e-8).log())
        self.shared_variance_trick = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.inner
        filter_var = self.logvar0.exp()  # (out, 1, ...): one variance per filter
        if isinstance(m, nn.Conv2d):
            out = F.conv2d(x, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups)
            if self.shared_variance_trick and m.groups == 1 and m.padding_mode == "zeros":
                # All weights of a filter share one variance s_o, so conv(x^2 + 1e-2, s) = s_o * (box sum over the
                # kernel window of the input energy summed over channels): a 1-channel box filter instead of a full
                # convolution. The same numbers as the official code (up to float rounding), a fraction of the cost.
                energy = (x * x + 1e-2).sum(1, keepdim=True)
                box = torch.ones(1, 1, *m.kernel_size, dtype=x.dtype, device=x.device)
                out_var = F.conv2d(energy, box, None, m.stride, m.padding, m.dilation) * filter_var.view(1, -1, 1, 1)
            else:
                out_var = F.conv2d(x * x + 1e-2, filter_var.expand_as(m.weight), None, m.stride, m.padding,
                                   m.dilation, m.groups)
        else:
            out = F.linear(x, m.weight, m.bias)
            out_var = (x * x + 1e-2).sum(-1, keepdim=True) * filter_var.view(1, -1)
        return out + out_var.sqrt() * torch.randn_like(out)

    def kl_terms(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """(sum w^2/l^2, sum s^2/l^2, k log l^2, sum log s^2, k) for this layer (k = number of weights)."""
        w = self.inner.weight.detach()
        k = w.numel()
        per_filter = k // w.shape[0]
        lam2 = self.loglambda2.exp()
        return (w.pow(2).sum() / lam2, self.logvar0.exp().sum() * per_filter / lam2, self.loglambda2 * k,
                self.logvar0.sum() * per_filter, k)


def compression_loss(layers: Iterable[VariationalWrapper]) -> torch.Tensor:
    """The official KL term (the factor 1/2 omitted, as there): KL(N(w, s^2) || N(0, l^2)) summed over layers."""
    terms = [m.kl_terms() for m in layers]
    w_norm2, trace, lambda2_cost, logvar, k = (sum(t[i] for t in terms) for i in range(5))
    return w_norm2 + trace + lambda2_cost - logvar - k


def _wrap_variational(module: nn.Module) -> list[VariationalWrapper]:
    """Replace every Conv2d/Linear under ``module`` by a :class:`VariationalWrapper` (in place); return them."""
    wrapped = []
    for name, child in list(module.named_children()):
        if isinstance(child, (nn.Conv2d, nn.Linear)):
            wrapper = VariationalWrapper(child)
            setattr(module, name, wrapper)
            wrapped.append(wrapper)
        else:
            wrapped += _wrap_variational(child)
    return wrapped



# ----------------------------------------------------------------------------------------------------------------
# Sums of squared per-sample gradients, two ways
# ----------------------------------------------------------------------------------------------------------------


def _loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy for integer labels; for float rows ``r``, ``sum(logits * r)``, whose gradient with respect
    to the logits is ``r`` itself (a given output gradient)."""
    if y.is_floating_point():
        return (logits * y).sum()
    return F.cross_entropy(logits, y, reduction="sum")


def gaussian_output_gradients(probs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random output gradients ``r = H^(1/2) z``, ``z ~ N(0, I)``, with ``H = diag(p) - p p^T`` the softmax Fisher.

    ``E[r r^T] = H`` equals ``E_y[(e_y - p)(e_y - p)^T]`` for ``y ~ p``, so ``E[(J^T r)^2]`` is the same Fisher diagonal
    as with labels sampled from the model; but ``r`` is Gaussian, so ``(J^T r)^2`` has a bounded, chi-square-like
    spread, where with confident predictions a rarely drawn label gives a huge gradient that dominates the sum.
    ``H^(1/2) z = sqrt(p) * z - p (sqrt(p) . z)`` (check: its covariance is ``diag(p) - 2 p p^T + p p^T``).
    """
    z = torch.randn(probs.shape, generator=gen, dtype=probs.dtype).to(probs.device)
    root = probs.clamp_min(0).sqrt()
    return root * z - probs * (root * z).sum(1, keepdim=True)


def _auto_chunk(n_values_per_sample: int, budget_bytes: int = 256 << 20, most: int = 256) -> int:
    """Samples per chunk so that ``n_values_per_sample`` floats per sample stay within ``budget_bytes``."""
    return int(max(8, min(most, budget_bytes // max(4 * n_values_per_sample, 1))))


def sum_sq_grads_vmap(model: nn.Module, weights: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                      sample_weights: torch.Tensor, *, chunk_size: int | None = None) -> dict[str, torch.Tensor]:
    """``sum_i w_i (d CE(model(x_i), y_i) / d weight)^2`` with ``torch.func``: ``vmap(grad(loss))`` over chunks.

    Works for any eval-mode model; ``weights`` maps parameter names of ``model`` to the tensors to differentiate.
    """
    from torch.func import functional_call, grad, vmap

    weights = {k: w.detach() for k, w in weights.items()}
    frozen = {k: v.detach() for k, v in itertools.chain(model.named_parameters(), model.named_buffers())
              if k not in weights}

    def sample_loss(w: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, {**frozen, **w}, (xi.unsqueeze(0),))
        return _loss(out, yi.unsqueeze(0))

    per_sample_grads = vmap(grad(sample_loss), in_dims=(None, 0, 0))
    chunk = chunk_size or _auto_chunk(sum(w.numel() for w in weights.values()))
    acc = {k: torch.zeros_like(w) for k, w in weights.items()}
    for start in range(0, len(x), chunk):
        sl = slice(start, start + chunk)
        for k, g in per_sample_grads(weights, x[sl], y[sl]).items():
            acc[k] += torch.einsum("n,n...->...", sample_weights[sl], g * g)
    return acc


def _closed_form_supported(model: nn.Module, weights: dict[str, torch.Tensor]) -> bool:
    """True when every weight belongs to a Conv2d (groups=1), Linear or affine BatchNorm2d in eval mode."""
    owners = {f"{n}.weight": m for n, m in model.named_modules()}
    for k in weights:
        m = owners.get(k)
        if isinstance(m, nn.Conv2d) and m.groups == 1 and isinstance(m.padding, tuple) and m.padding_mode == "zeros":
            continue
        if isinstance(m, nn.Linear):
            continue
        if isinstance(m, nn.BatchNorm2d) and not m.training and m.track_running_stats and m.running_var is not None:
            continue
        return False
    return True


def sum_sq_grads_closed_form(model: nn.Module, weights: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                             sample_weights: torch.Tensor, *,
                             chunk_size: int | None = None) -> dict[str, torch.Tensor]:
    """The same sums as :func:`sum_sq_grads_vmap`, from one ordinary backward pass per chunk.

    In eval mode the samples of a batch do not interact, so the gradient of the *summed* loss with respect to a
    layer's output is, row by row, each sample's own output gradient ``delta_i``. A weight's per-sample gradient
    then has a closed form from ``delta_i`` and the layer's input ``a_i`` (the trick of Goodfellow 2015, used by
    BackPACK and Opacus):

    * Conv2d: ``g_i = delta_i @ unfold(a_i)^T`` (output channels x (input channels x kernel)), one batched matmul;
    * Linear: ``g_i = delta_i a_i^T``;
    * BatchNorm2d (eval): ``dL/dgamma_i = sum over pixels of delta_i * (a_i - running_mean) / sqrt(running_var + eps)``.

    No weight gradient is ever formed for the whole batch, and nothing is vmapped, so this costs about one extra
    backward pass. Checked against :func:`sum_sq_grads_vmap` in the tests.
    """
    owners = {f"{n}.weight": m for n, m in model.named_modules()}
    modules = {k: owners[k] for k in weights}
    saved: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = []

    def hook_for(key: str):
        def forward_hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            a = inputs[0].detach()

            def grad_hook(g: torch.Tensor) -> None:
                saved[key] = (a, g.detach())

            output.register_hook(grad_hook)
        return forward_hook

    # Memory per sample is dominated by the largest unfolded input (input channels x kernel x positions); probe it
    # with one sample.
    chunk = chunk_size or _auto_chunk(_largest_unfold(model, modules, x[:1]), budget_bytes=32 << 20, most=128)
    for key, m in modules.items():
        handles.append(m.register_forward_hook(hook_for(key)))
    acc = {k: torch.zeros_like(w) for k, w in weights.items()}
    try:
        for start in range(0, len(x), chunk):
            sl = slice(start, start + chunk)
            xi = x[sl].detach().requires_grad_(True)  # a leaf needing grad, so the backward pass reaches every layer
            with torch.enable_grad():
                loss = _loss(model(xi), y[sl])
                torch.autograd.grad(loss, xi)
            ws = sample_weights[sl]
            for key, m in modules.items():
                a, g = saved.pop(key)
                acc[key] += _weighted_sq_grad(m, a, g, ws)
    finally:
        for h in handles:
            h.remove()
    return acc


def _largest_unfold(model: nn.Module, modules: dict[str, nn.Module], x1: torch.Tensor) -> int:
    sizes = [1]

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            sizes.append(module.weight[0].numel() * output[0, 0].numel() + output[0].numel())
        else:
            sizes.append(inputs[0][0].numel() + output[0].numel())

    handles = [m.register_forward_hook(hook) for m in modules.values()]
    try:
        with torch.no_grad():
            model(x1)
    finally:
        for h in handles:
            h.remove()
    return max(sizes) * 2


def _weighted_sq_grad(m: nn.Module, a: torch.Tensor, delta: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``sum_i w_i g_i^2`` for one layer, from its inputs ``a`` and output gradients ``delta`` (closed forms above)."""
    n = a.shape[0]
    if isinstance(m, nn.Conv2d):
        cols = F.unfold(a, m.kernel_size, dilation=m.dilation, padding=m.padding, stride=m.stride)  # (n, cin*k*k, L)
        return _sum_sq_outer(delta.reshape(n, delta.shape[1], -1), cols, w).view_as(m.weight)
    if isinstance(m, nn.Linear):
        return _sum_sq_outer(delta.reshape(n, -1, 1), a.reshape(n, -1, 1), w)
    if isinstance(m, nn.BatchNorm2d):
        a_hat = (a - m.running_mean.view(1, -1, 1, 1)) / torch.sqrt(m.running_var.view(1, -1, 1, 1) + m.eps)
        g = (delta * a_hat).sum(dim=(2, 3))  # (n, c)
        return w @ (g * g)
    raise ParameterError(f"no closed-form per-sample gradient for {type(m).__name__}; use engine='vmap'.")


def _sum_sq_outer(delta: torch.Tensor, cols: torch.Tensor, w: torch.Tensor, block: int = 32) -> torch.Tensor:
    """``sum_i w_i (delta_i @ cols_i^T)^2`` for ``delta`` (n, O, L) and ``cols`` (n, J, L), elementwise square.

    Few positions L (deep layers, Linear): expand the square, ``g^2 = sum_{l,l'} delta_l delta_l' cols_l cols_l'``,
    into L(L+1)/2 ordinary matrix products over the samples (no per-sample gradient is formed). Many positions:
    form the per-sample gradients ``block`` samples at a time (so they stay in cache) and square them in place.
    """
    n, o, positions = delta.shape
    j = cols.shape[1]
    out = torch.zeros(o, j, dtype=delta.dtype, device=delta.device)
    if positions * (positions + 1) // 2 <= 10:
        for l in range(positions):
            for k in range(l, positions):
                left = (delta[:, :, l] * delta[:, :, k] * w[:, None]).T  # (O, n)
                out.addmm_(left, cols[:, :, l] * cols[:, :, k], alpha=1.0 if l == k else 2.0)
        return out
    root_w = w.clamp_min(0).sqrt().view(-1, 1, 1)
    for start in range(0, n, block):
        sl = slice(start, start + block)
        g = torch.bmm(delta[sl] * root_w[sl], cols[sl].transpose(1, 2))  # (b, O, J): sqrt(w_i) g_i
        out += g.square_().sum(0)
    return out
