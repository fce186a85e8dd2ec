r"""Task2Vec (Achille et al., ICCV 2019): embed a classification task as the Fisher information of a probe.

The recipe, as in the official code (awslabs/aws-cv-task2vec) and the paper:

1. **Cache features.** Run a fixed *probe network* (a ResNet, see :mod:`workbench.models.resnet`) over the task's
   images once, storing the input of ``probe.layers[skip_layers]`` and the input of the classifier.
2. **Fit a fresh head.** Only a new linear classifier is trained, on the cached classifier inputs: Adam (lr 4e-4,
   weight decay 1e-4), 10 epochs, each a class-balanced draw of 10,000 samples with replacement, batch 64.
3. **Fisher.** Estimate the diagonal of the Fisher information of the weights of ``layers[skip_layers:]``

   .. math:: F = \mathbb{E}_{x}\,\mathbb{E}_{y\sim p_w(y\mid x)}\big[\nabla_w \log p_w(y\mid x)^2\big],

   with labels **sampled from the model** (not the task's labels: that would be the "empirical Fisher"), or
   output gradients with the same second moment (below).
   Three estimators (:class:`Task2Vec` ``method`` / ``fisher``):

   * ``montecarlo`` + ``fisher="batch"`` — the official one: per batch of 64, one backward pass of the *mean*
     loss and the square of that batch gradient, averaged over 156 class-balanced batches. Because sampled labels
     make every per-sample gradient zero-mean, this is an unbiased estimate of :math:`F/64` (the cross terms vanish
     on average); it costs 10,000 forward/backward passes whatever the size of the task.
   * ``montecarlo`` + ``fisher="per_sample"`` (default) — true per-sample squared gradients, each cached sample
     once, weighted so classes count equally, from one ordinary backward pass per chunk plus closed forms per layer
     (or ``torch.func.vmap(grad(...))``, ``engine="vmap"``). It estimates :math:`F` itself (64x the scale of the
     batch estimate: compare embeddings of one estimator only) from 10-20x fewer forward/backward passes.
     With ``fisher_labels="sampled"`` the output gradient is ``p - e_y`` for a label ``y ~ p``, as in the paper;
     with ``fisher_labels="gaussian"`` (default) it is ``H^(1/2) z`` with ``z ~ N(0, I)`` and ``H = diag(p) - p p^T``,
     which has exactly the same second moment, so the expectation is the same Fisher. Its spread is bounded
     (chi-square-like), whereas with confident predictions — Task2Vec's heads reach ~100% training accuracy — a
     rarely drawn label gives a huge squared gradient that dominates the sum. Measured with the shipped probe
     (``benchmarks/bench_task2vec.py``: 12 alphabets, all layers, seeds 0 and 1), the Spearman agreement between the
     two seeds' distance matrices is 0.986 with Gaussian output gradients, 0.958 with one sampled label per image,
     and 0.981 for a plain reimplementation of the official loop, which takes 5.7x the CPU time.
   * ``variational`` — the paper's: learn, per filter, the largest Gaussian weight noise (log-variance
     ``logvar0``) the task tolerates, under a KL term towards a prior :math:`N(0, \lambda^2)` (one
     :math:`\lambda` per layer, :math:`\beta = 10^{-7}`), with the local reparameterisation trick. The posterior
     precision :math:`1/\sigma^2 \approx F` is the embedding; :math:`1/\lambda^2` is its ``scale``.

4. **Embedding.** Average per filter (per output channel): one number per filter of every layer with weights
   (BatchNorm's gamma included for Monte Carlo, as in the official code), the classifier excluded.

Distances (:func:`distance`): the paper's **symmetric normalised cosine** (the default; it is ``cosine`` in the
official code), plus ``normalized_cosine``, ``kl``, ``asymmetric_kl``, ``jsd``, ``correlation``, ``entropy``,
and the paper's **asymmetric** score for choosing a feature extractor (:func:`asymmetric_distance`,
:func:`select_probe`).

What we fix relative to the official code (each is also a test or an argument):

* *Truncation order.* The official code keeps the first ``floor(max_samples/64) - 1`` batches **in dataset
  order**: a dataset sorted by class loses whole classes (and one batch more than asked). We keep
  ``max_samples`` samples drawn **stratified by class** with the seed.
* *BatchNorm mode.* The official constructor's comment says BN goes to eval mode, but it calls
  ``model.train()`` (issue #23): batch statistics are used while caching and during the Fisher, and the probe's
  running statistics are overwritten. Here ``bn_mode="eval"`` (default: running statistics, per-sample
  gradients well defined) or ``bn_mode="train"`` (the official behaviour) is explicit, and the caller's probe is
  never modified (we work on a copy).
* *Fisher data with skip_layers=0.* The official Monte Carlo pass then reads the whole, untruncated dataset;
  here every estimator uses the same ``max_samples`` cached samples.
* *Labels.* Any label values are accepted and remapped to 0..C-1 (the official loader assumes 0..max).
* *Zero Fisher entries* (dead filters) make the variance-based distances (kl, jsd, correlation) infinite; we
  floor hessians at ``1e-8 x`` their mean there.
* *Seeds.* Everything random (stratified truncation, head initialisation and sampling, sampled labels or
  Gaussian output gradients, variational noise) derives from ``seed``; the global RNG state is left untouched,
  and ``threads=1`` (default) makes the result independent of the machine's thread setting.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workbench.errors import DataError, ParameterError, TrainingError
from workbench.train import check_finite, progress, resolve_device, torch_threads

METHODS = ("montecarlo", "variational")
FISHERS = ("per_sample", "batch")
BN_MODES = ("eval", "train")
ENGINES = ("auto", "closed_form", "vmap")
LABELS = ("sampled", "gaussian")

# ----------------------------------------------------------------------------------------------------------------
# Data: a task is images + labels
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """A classification task: images (N, ...) and integer labels 0..C-1, plus a name."""

    images: torch.Tensor
    labels: torch.Tensor
    name: str = ""

    @property
    def n_classes(self) -> int:
        return int(self.labels.max()) + 1

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return f"<Task {self.name!r}: {len(self)} images, {self.n_classes} classes>"


def as_task(dataset: Any, name: str | None = None) -> Task:
    """Accept ``(images, labels)``, an object with ``.images``/``.labels`` (e.g. an Omniglot
    ``ClassificationTask``), a ``TensorDataset``, or a :class:`Task`; labels are remapped to 0..C-1."""
    if isinstance(dataset, Task):
        return dataset if name is None else Task(dataset.images, dataset.labels, name)
    if isinstance(dataset, (tuple, list)) and len(dataset) == 2:
        images, labels = dataset
    elif hasattr(dataset, "images") and hasattr(dataset, "labels"):
        images, labels = dataset.images, dataset.labels
    elif isinstance(dataset, torch.utils.data.TensorDataset) and len(dataset.tensors) >= 2:
        images, labels = dataset.tensors[:2]
    else:
        raise DataError(f"cannot read a task from {type(dataset).__name__}: pass (images, labels), a TensorDataset "
                        "or an object with .images and .labels.")
    images = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    labels_np = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if images.ndim < 2 or len(images) != len(labels_np) or labels_np.ndim != 1:
        raise DataError(f"images {tuple(images.shape)} and labels {labels_np.shape} must be (N, ...) and (N,).")
    if not torch.is_floating_point(images):
        images = images.float()
    if not torch.isfinite(images).all():
        raise DataError("the task's images contain NaN or infinite values.")
    _, remapped = np.unique(labels_np, return_inverse=True)
    task = Task(images.float(), torch.as_tensor(remapped.reshape(-1), dtype=torch.long),
                name if name is not None else str(getattr(dataset, "name", "")))
    if task.n_classes < 2:
        raise DataError(f"task {task.name!r} has a single class: its Fisher is zero (a one-class softmax has no "
                        "gradient). Give at least two classes.")
    return task


def stratified_subset(labels: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of ``n`` samples keeping each class's share (at least one per class), in random order.

    The official code truncates in dataset order instead, which drops whole classes from sorted datasets.
    """
    counts = torch.bincount(labels)
    n_classes = len(counts)
    if n >= len(labels):
        return torch.randperm(len(labels), generator=generator)
    if n < n_classes:
        raise ParameterError(f"max_samples={n} is smaller than the number of classes ({n_classes}).")
    # Largest-remainder allocation of n over the classes, proportional to their sizes, at least one each.
    quota = counts.double() * n / len(labels)
    take = torch.clamp(quota.floor().long(), min=1)
    remainder = quota - quota.floor()
    while int(take.sum()) < n:
        room = (take < counts).double() * (remainder + 1e-9)
        i = int(torch.argmax(room))
        take[i] += 1
        remainder[i] = -1.0
    while int(take.sum()) > n:
        i = int(torch.argmax(take))
        take[i] -= 1
    picked = []
    for c in range(n_classes):
        members = torch.nonzero(labels == c).view(-1)
        picked.append(members[torch.randperm(len(members), generator=generator)[: int(take[c])]])
    order = torch.cat(picked)
    return order[torch.randperm(len(order), generator=generator)]


def balanced_weights(labels: torch.Tensor) -> torch.Tensor:
    """Per-sample weights summing to 1 that give every class the same total (the official sampler's)."""
    counts = torch.bincount(labels).double()
    w = 1.0 / counts[labels] / len(counts)
    return w / w.sum()


def balanced_batches(labels: torch.Tensor, n_samples: int, batch_size: int,
                     generator: torch.Generator) -> list[torch.Tensor]:
    """The official loader without the DataLoader: ``n_samples`` class-balanced draws with replacement,
    cut into full batches (``drop_last``)."""
    idx = torch.multinomial(balanced_weights(labels).float(), n_samples, replacement=True, generator=generator)
    n_full = n_samples // batch_size
    if n_full == 0:
        raise ParameterError(f"samples_per_epoch={n_samples} is smaller than batch_size={batch_size}.")
    return list(idx[: n_full * batch_size].view(n_full, batch_size))


# ----------------------------------------------------------------------------------------------------------------
# The embedding
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Embedding:
    """A task embedding: the per-filter Fisher (``hessian``), its ``scale`` (the prior precision for the variational
    estimator, ones for Monte Carlo) and ``meta`` (task, estimator, layer slices, timings ...)."""

    hessian: np.ndarray
    scale: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.hessian = np.asarray(self.hessian, dtype=np.float64).reshape(-1)
        self.scale = np.asarray(self.scale, dtype=np.float64).reshape(-1)
        if self.hessian.shape != self.scale.shape:
            raise DataError(f"hessian {self.hessian.shape} and scale {self.scale.shape} must have the same length.")

    @property
    def name(self) -> str:
        return str(self.meta.get("task", ""))

    @property
    def dim(self) -> int:
        return int(self.hessian.size)

    def norm(self, ord: float = 2) -> float:
        """The norm of the (unnormalised) embedding: the paper's task-difficulty signal."""
        return float(np.linalg.norm(self.hessian, ord=ord))

    def layers(self) -> dict[str, np.ndarray]:
        """The embedding split by the probe's modules, ``{"layer3.0.conv1": array, ...}``."""
        return {name: self.hessian[a:b] for name, a, b in self.meta.get("layers", [])}

    def __repr__(self) -> str:
        est = self.meta.get("estimator", "?")
        return f"<Embedding {self.name!r}: {self.dim} filters, {est}, |F|={self.norm():.3g}>"


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
# Task2Vec
# ----------------------------------------------------------------------------------------------------------------


class _Tail(nn.Module):
    """``layers[skip:-1]`` followed by the task's head: the part of the probe whose Fisher we compute."""

    def __init__(self, body: Sequence[nn.Module], head: nn.Linear) -> None:
        super().__init__()
        self.body = nn.Sequential(*body)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class Task2Vec:
    """Embed tasks with the Fisher information of a probe network (see the module docstring).

    Parameters
    ----------
    probe: a network with a ``layers`` list ending in its ``nn.Linear`` classifier (e.g.
        :class:`workbench.models.resnet.ResNet`, or :func:`load_probe` for the shipped Omniglot probe). If it has a
        ``prepare(images)`` method, images are passed through it first (channels, size, normalisation).
    method: ``"montecarlo"`` (official default) or ``"variational"`` (the paper's).
    fisher: for Monte Carlo, ``"per_sample"`` (default: per-sample squared gradients, low variance) or ``"batch"``
        (the official squared batch-mean gradient). Their scales differ by the batch size.
    skip_layers: the Fisher covers ``probe.layers[skip_layers:]`` (0: every layer; 6 on a ResNet: layer3 + layer4).
    max_samples: at most this many samples (stratified by class, seeded) are used.
    bn_mode: ``"eval"`` (running statistics, default) or ``"train"`` (batch statistics, the official behaviour;
        only with ``fisher="batch"`` or ``method="variational"``).
    batch_size, head_epochs, head_lr, head_weight_decay, samples_per_epoch: the official head fit and loader
        (64, 10, 4e-4, 1e-4, 10,000 class-balanced draws per epoch).
    fisher_epochs: passes of the Monte Carlo estimator (official: 1 loader epoch; per-sample: 1 pass, one draw of the
        output gradient per sample).
    fisher_labels: per-sample output gradients: ``"gaussian"`` (default; same Fisher, lower variance, see the module
        docstring) or ``"sampled"`` (labels drawn from the model, the paper's Monte Carlo).
    variational_epochs, variational_beta, variational_lr, variational_head_lr: official 2, 1e-7, 1e-2, 5e-4.
    engine: how the per-sample estimator gets per-sample gradients: ``"vmap"`` (``torch.func.vmap(grad(...))``, any
        layer type), ``"closed_form"`` (one ordinary backward pass plus closed forms for Conv2d/Linear/BatchNorm, ~5x
        faster on CPU; identical sums) or ``"auto"`` (closed form when every layer allows it).
    chunk_size: samples per chunk of the per-sample estimator (None: sized automatically to bound memory).
    seed: seeds everything random in :meth:`embed`; the same seed gives the same embedding.
    device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
    threads: torch CPU threads while embedding (default 1: the result is then bit-identical whatever the machine's
        thread setting, and on a busy 2-core machine two threads spend most of their time waiting for each other,
        measured 10-20x slower; None keeps torch's current setting, e.g. on a many-core machine).

    After :meth:`embed`, ``head_`` (the fitted classifier), ``head_history_`` and ``timings_`` describe the last call.
    """

    def __init__(self, probe: nn.Module, *, method: str = "montecarlo", fisher: str = "per_sample",
                 skip_layers: int = 0, max_samples: int | None = 10_000, bn_mode: str = "eval",
                 batch_size: int = 64, head_epochs: int = 10, head_lr: float = 4e-4, head_weight_decay: float = 1e-4,
                 samples_per_epoch: int = 10_000, fisher_epochs: int = 1, variational_epochs: int = 2,
                 variational_beta: float = 1e-7, variational_lr: float = 1e-2, variational_head_lr: float = 5e-4,
                 fisher_labels: str = "gaussian", engine: str = "auto", chunk_size: int | None = None, seed: int = 0,
                 device: str = "cpu",
                 threads: int | None = 1) -> None:
        if method not in METHODS:
            raise ParameterError(f"method must be one of {METHODS}, got {method!r}.")
        if fisher not in FISHERS:
            raise ParameterError(f"fisher must be one of {FISHERS}, got {fisher!r}.")
        if bn_mode not in BN_MODES:
            raise ParameterError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}.")
        if method == "montecarlo" and fisher == "per_sample" and bn_mode == "train":
            raise ParameterError("per-sample gradients need bn_mode='eval': in train mode BatchNorm mixes the samples "
                                 "of a batch, so a single sample has no gradient of its own. Use bn_mode='eval', or "
                                 "fisher='batch' to reproduce the official train-mode behaviour.")
        layers = getattr(probe, "layers", None)
        if not isinstance(probe, nn.Module) or not layers or not isinstance(layers[-1], nn.Linear):
            raise ParameterError("the probe must be an nn.Module with a `layers` list ending in its nn.Linear "
                                 "classifier (see workbench.models.resnet.ResNet).")
        if not isinstance(skip_layers, int) or not 0 <= skip_layers < len(layers) - 1:
            raise ParameterError(f"skip_layers must be an integer in 0..{len(layers) - 2}, got {skip_layers!r}.")
        if not any(p.ndim >= 1 for m in layers[skip_layers:-1] for p in m.parameters()):
            raise ParameterError(f"skip_layers={skip_layers} leaves no layer with weights before the classifier; "
                                 "lower it (6 starts at layer3 of a ResNet).")
        for name, value in [("batch_size", batch_size), ("head_epochs", head_epochs), ("fisher_epochs", fisher_epochs),
                            ("samples_per_epoch", samples_per_epoch), ("variational_epochs", variational_epochs)]:
            if not isinstance(value, int) or value < 1:
                raise ParameterError(f"{name} must be a positive integer, got {value!r}.")
        if max_samples is not None and (not isinstance(max_samples, int) or max_samples < 2):
            raise ParameterError(f"max_samples must be None or an integer >= 2, got {max_samples!r}.")
        if fisher_labels not in LABELS:
            raise ParameterError(f"fisher_labels must be one of {LABELS}, got {fisher_labels!r}.")
        if engine not in ENGINES:
            raise ParameterError(f"engine must be one of {ENGINES}, got {engine!r}.")
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise ParameterError(f"chunk_size must be None or a positive integer, got {chunk_size!r}.")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ParameterError(f"seed must be a non-negative integer, got {seed!r}.")
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ParameterError(f"threads must be None or a positive integer, got {threads!r}.")
        self.probe = probe
        self.method = method
        self.fisher = fisher
        self.skip_layers = skip_layers
        self.max_samples = max_samples
        self.bn_mode = bn_mode
        self.batch_size = batch_size
        self.head_epochs = head_epochs
        self.head_lr = head_lr
        self.head_weight_decay = head_weight_decay
        self.samples_per_epoch = samples_per_epoch
        self.fisher_epochs = fisher_epochs
        self.variational_epochs = variational_epochs
        self.variational_beta = variational_beta
        self.variational_lr = variational_lr
        self.variational_head_lr = variational_head_lr
        self.fisher_labels = fisher_labels
        self.engine = engine
        self.chunk_size = chunk_size
        self.seed = int(seed)
        self.device = device
        self.threads = threads

    # -- public -------------------------------------------------------------------------------------------------

    @property
    def estimator(self) -> str:
        """A short name of the estimator: ``montecarlo/per_sample``, ``montecarlo/batch`` or ``variational``."""
        return "variational" if self.method == "variational" else f"montecarlo/{self.fisher}"

    def embed(self, dataset: Any, name: str | None = None) -> Embedding:
        """The Task2Vec embedding of one task (``(images, labels)`` or an object with ``.images``/``.labels``).

        Images are whatever the probe's ``prepare`` accepts (for the shipped probe: (N, 28, 28) in [-1, 1], paper
        +1, ink -1); labels may be any values (remapped to 0..C-1). Returns an :class:`Embedding`."""
        task = as_task(dataset, name)
        device = resolve_device(self.device)
        timings: dict[str, float] = {}
        # Seeded locally (the caller's RNG state is left alone), on a fixed number of threads.
        with torch.random.fork_rng(devices=[]), torch_threads(self.threads):
            torch.manual_seed(self.seed)
            gen = torch.Generator().manual_seed(self.seed)
            probe = copy.deepcopy(self.probe).to(device)
            for p in probe.parameters():
                p.requires_grad_(False)
            probe.train(self.bn_mode == "train")

            t0 = time.perf_counter()
            order = stratified_subset(task.labels, self.max_samples or len(task), gen)
            images, labels = task.images[order], task.labels[order]
            x_skip, x_head = self._cache_features(probe, images, device)
            labels = labels.to(device)
            timings["cache"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            head, history = fit_head(x_head, labels, task.n_classes, epochs=self.head_epochs, lr=self.head_lr,
                                     weight_decay=self.head_weight_decay, batch_size=self.batch_size,
                                     samples_per_epoch=self.samples_per_epoch, generator=gen)
            with torch.no_grad():
                head_accuracy = float((head(x_head).argmax(1) == labels).float().mean())
            timings["head"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            tail = _Tail(probe.layers[self.skip_layers:-1], head)
            if self.method == "variational":
                hessian, scale, slices = self._variational(probe, tail, x_skip, labels, gen)
            else:
                entries = _fisher_entries(probe, tail)
                weights = {key: tail.get_parameter(key) for _, key in entries}
                if self.fisher == "per_sample":
                    fisher = self._fisher_per_sample(tail, weights, x_skip, labels, gen)
                else:
                    fisher = self._fisher_batch(tail, weights, x_skip, labels, gen)
                hessian, scale, slices = _per_filter(fisher, entries)
            timings["fisher"] = time.perf_counter() - t0

        if not np.all(np.isfinite(hessian)):
            raise TrainingError(f"the Fisher of task {task.name!r} is not finite; check the probe and the images "
                                "(NaN inputs or weights).")
        self.head_, self.head_history_, self.timings_ = head, history, timings
        meta = {
            "task": task.name, "estimator": self.estimator, "method": self.method, "fisher": self.fisher,
            "skip_layers": self.skip_layers, "bn_mode": self.bn_mode, "seed": self.seed,
            "n_samples": int(len(images)), "n_classes": task.n_classes, "head_train_accuracy": head_accuracy,
            "layers": slices, "seconds": {k: round(v, 4) for k, v in timings.items()},
            "probe": getattr(self.probe, "name", type(self.probe).__name__),
        }
        return Embedding(hessian, scale, meta)

    def embed_many(self, tasks: Sequence[Any] | Mapping[str, Any], *, desc: str = "Task2Vec") -> list[Embedding]:
        """Embed several tasks (a list, or a ``{name: task}`` mapping) with a progress bar."""
        items = list(tasks.items()) if isinstance(tasks, Mapping) else [(None, t) for t in tasks]
        return [self.embed(task, name=name) for name, task in progress(items, desc=desc, total=len(items))]

    # -- steps --------------------------------------------------------------------------------------------------

    def _cache_features(self, probe: nn.Module, images: torch.Tensor,
                        device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass of the probe: the inputs of ``layers[skip_layers]`` and of the classifier."""
        layers = probe.layers
        prepare: Callable[[torch.Tensor], torch.Tensor] = getattr(probe, "prepare", lambda x: x)
        # In eval mode the batch size changes nothing, so use large batches; in train mode BN's batch statistics
        # depend on it, so use the official 64.
        step = self.batch_size if self.bn_mode == "train" else 512
        skip_parts, head_parts = [], []
        with torch.no_grad():
            for start in range(0, len(images), step):
                h = prepare(images[start:start + step]).to(device)
                for i, layer in enumerate(layers[:-1]):
                    if i == self.skip_layers:
                        skip_parts.append(h)
                    h = layer(h)
                head_parts.append(h)
        return torch.cat(skip_parts), torch.cat(head_parts)

    def _fisher_batch(self, tail: _Tail, weights: dict[str, torch.Tensor], x: torch.Tensor, labels: torch.Tensor,
                      gen: torch.Generator) -> dict[str, torch.Tensor]:
        """Official estimator: mean over batches of (gradient of the batch-mean loss)^2, labels ~ p_w(y|x)."""
        acc = {k: torch.zeros_like(w) for k, w in weights.items()}
        for w in weights.values():
            w.requires_grad_(True)
        count = 0
        for _ in range(self.fisher_epochs):
            for idx in balanced_batches(labels.cpu(), self.samples_per_epoch, self.batch_size, gen):
                out = tail(x[idx])
                y = torch.multinomial(F.softmax(out.detach(), dim=-1), 1, generator=gen).view(-1)
                loss = F.cross_entropy(out, y)
                grads = torch.autograd.grad(loss, list(weights.values()))
                for k, g in zip(weights, grads):
                    acc[k] += g * g
                count += 1
        for w in weights.values():
            w.requires_grad_(False)
        return {k: v / count for k, v in acc.items()}

    def _fisher_per_sample(self, tail: _Tail, weights: dict[str, torch.Tensor], x: torch.Tensor,
                           labels: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """Per-sample estimator: sum_i w_i (d log p(y_i|x_i) / dw)^2 with y_i ~ p_w(y|x_i), class-balanced w_i."""
        tail.eval()  # BatchNorm must not mix samples (guaranteed by bn_mode='eval', checked in __init__)
        with torch.no_grad():
            probs = torch.cat([F.softmax(tail(x[i:i + 512]), dim=-1) for i in range(0, len(x), 512)])
        # Every class weighs the same, as in the official class-balanced loader, but exactly (no resampling).
        sample_w = balanced_weights(labels.cpu()).to(x.device, x.dtype)
        engine = self.engine
        if engine == "auto":
            engine = "closed_form" if _closed_form_supported(tail, weights) else "vmap"
        acc = {k: torch.zeros_like(w) for k, w in weights.items()}
        for _ in range(self.fisher_epochs):
            if self.fisher_labels == "sampled":
                y = torch.multinomial(probs.cpu(), 1, generator=gen).view(-1).to(x.device)  # labels from the model
            else:
                y = gaussian_output_gradients(probs, gen)
            if engine == "vmap":
                part = sum_sq_grads_vmap(tail, weights, x, y, sample_w, chunk_size=self.chunk_size)
            else:
                part = sum_sq_grads_closed_form(tail, weights, x, y, sample_w, chunk_size=self.chunk_size)
            for k in acc:
                acc[k] += part[k]
        return {k: v / self.fisher_epochs for k, v in acc.items()}

    def _variational(self, probe: nn.Module, tail: _Tail, x: torch.Tensor, labels: torch.Tensor,
                     gen: torch.Generator) -> tuple[np.ndarray, np.ndarray, list]:
        """Official variational Fisher: learn per-filter noise log-variances (true labels, beta x KL)."""
        probe_names = {id(m): n for n, m in probe.named_modules()}
        rank = {n: i for i, (n, _) in enumerate(probe.named_modules())}
        wrapped = _wrap_variational(tail.body)
        wrapped_names = [probe_names[id(w.inner)] for w in wrapped]
        # Conv weights and BatchNorm stay frozen (the official optimizer lists BN, but its loop sets
        # requires_grad=False on everything except the noise parameters and the classifier first).
        for p in tail.head.parameters():
            p.requires_grad_(True)
        noise_params = [p for w in wrapped for p in (w.logvar0, w.loglambda2)]
        opt = torch.optim.Adam([{"params": noise_params},
                                {"params": list(tail.head.parameters()), "lr": self.variational_head_lr}],
                               lr=self.variational_lr, betas=(0.9, 0.999))
        tail.train(self.bn_mode == "train")
        for m in tail.head.modules():
            m.train(True)
        for epoch in range(self.variational_epochs):
            for idx in balanced_batches(labels.cpu(), self.samples_per_epoch, self.batch_size, gen):
                out = tail(x[idx])
                loss = F.cross_entropy(out, labels[idx]) + self.variational_beta * compression_loss(wrapped)
                opt.zero_grad()
                loss.backward()
                opt.step()
            check_finite(loss, where=f"variational epoch {epoch + 1}",
                         hint="Lower variational_lr or variational_beta.")
        order = sorted(range(len(wrapped)), key=lambda i: rank[wrapped_names[i]])
        hess, scale, slices, start = [], [], [], 0
        for i in order:
            w = wrapped[i]
            lv = w.logvar0.detach().reshape(-1).cpu().double()
            hess.append(torch.exp(-lv).numpy())
            scale.append(np.repeat(float(torch.exp(-w.loglambda2.detach())), lv.numel()))
            slices.append((wrapped_names[i], start, start + lv.numel()))
            start += lv.numel()
        return np.concatenate(hess), np.concatenate(scale), slices


def _fisher_entries(probe: nn.Module, tail: _Tail) -> list[tuple[str, str]]:
    """``(name in the probe, parameter key in the tail)`` for every module of the tail with a ``weight`` (convolutions
    and BatchNorm gammas; the classifier is not in ``tail.body``), in the probe's module order (the official order)."""
    probe_names = {id(m): n for n, m in probe.named_modules()}
    rank = {n: i for i, (n, _) in enumerate(probe.named_modules())}
    rows = []
    for name, module in tail.body.named_modules():
        w = getattr(module, "weight", None)
        if isinstance(w, torch.Tensor) and id(module) in probe_names:
            rows.append((probe_names[id(module)], f"body.{name}.weight"))
    return sorted(rows, key=lambda r: rank[r[0]])


def _per_filter(fisher: dict[str, torch.Tensor], entries: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray, list]:
    """Average each weight's Fisher over its filter (output channel): the official ``extract_embedding``."""
    parts, slices, start = [], [], 0
    for name, key in entries:
        f = fisher[key].detach().double().cpu()
        per_filter = f.reshape(f.shape[0], -1).mean(1).numpy()
        parts.append(per_filter)
        slices.append((name, start, start + per_filter.size))
        start += per_filter.size
    hessian = np.concatenate(parts)
    return hessian, np.ones_like(hessian), slices


def single_thread() -> contextlib.AbstractContextManager:
    """Run a block of many tiny tensor operations on one thread (restores the previous setting)."""
    return torch_threads(1)


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


# ----------------------------------------------------------------------------------------------------------------
# Fitting the head
# ----------------------------------------------------------------------------------------------------------------


def fit_head(features: torch.Tensor, labels: torch.Tensor, n_classes: int, *, epochs: int = 10, lr: float = 4e-4,
             weight_decay: float = 1e-4, batch_size: int = 64, samples_per_epoch: int = 10_000,
             generator: torch.Generator | None = None) -> tuple[nn.Linear, list[float]]:
    """The official head fit: a fresh linear classifier trained with Adam on class-balanced batches.

    Exactly ``torch.optim.Adam`` (L2 weight decay added to the gradient) on the mean cross-entropy, but with the
    softmax-regression gradient written out, ``dL/dW = (softmax(z) - onehot(y))^T x / B``: the 1,560 tiny steps
    then cost a few matrix products each instead of an autograd graph, an optimizer call and a DataLoader batch.
    Returns the head (an ``nn.Linear``) and the mean training loss of each epoch.
    """
    gen = generator or torch.Generator().manual_seed(0)
    if features.ndim != 2 or len(features) != len(labels):
        raise DataError(f"features {tuple(features.shape)} and labels {tuple(labels.shape)} do not match.")
    n, d = features.shape
    device = features.device
    # nn.Linear's default initialisation, U(-1/sqrt(d), 1/sqrt(d)) for weights and bias, from our generator.
    bound = 1.0 / math.sqrt(d)
    wb = (torch.rand(n_classes, d + 1, generator=gen) * 2 - 1).mul_(bound).to(device)  # [W | b]
    x1 = torch.cat([features, torch.ones(n, 1, device=device, dtype=features.dtype)], 1)  # [x | 1]
    m, v = torch.zeros_like(wb), torch.zeros_like(wb)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    history, t = [], 0
    with single_thread():  # 1,560 tiny steps: thread start-up and barriers cost more than they save
        for epoch in range(epochs):
            batches = balanced_batches(labels.cpu(), samples_per_epoch, batch_size, gen)
            xs, ys = x1[torch.stack(batches).to(device)], labels[torch.stack(batches).to(device)]
            rows = torch.arange(batch_size, device=device)
            total = torch.zeros((), device=device)
            for xb, yb in zip(xs, ys):
                t += 1
                logp = torch.log_softmax(xb @ wb.T, dim=1)
                total -= logp[rows, yb].mean()
                p = logp.exp_()
                p[rows, yb] -= 1.0
                g = torch.addmm(wb, p.T, xb, beta=weight_decay, alpha=1.0 / batch_size)  # grad + wd * param
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                denom = (v.sqrt() / math.sqrt(1 - beta2 ** t)).add_(eps)
                wb.addcdiv_(m, denom, value=-lr / (1 - beta1 ** t))
            history.append(float(total) / len(batches))
            check_finite(history[-1], where=f"head epoch {epoch + 1}", hint="Check the probe's features for NaN.")
    head = nn.Linear(d, n_classes).to(device)
    with torch.no_grad():
        head.weight.copy_(wb[:, :d])
        head.bias.copy_(wb[:, d])
    for p_ in head.parameters():
        p_.requires_grad_(False)
    return head, history


def fit_head_autograd(features: torch.Tensor, labels: torch.Tensor, n_classes: int, *, epochs: int = 10,
                      lr: float = 4e-4, weight_decay: float = 1e-4, batch_size: int = 64,
                      samples_per_epoch: int = 10_000, generator: torch.Generator | None = None) -> nn.Linear:
    """The same fit written the plain way (nn.Linear + torch.optim.Adam); used by the tests to check
    :func:`fit_head` step for step."""
    gen = generator or torch.Generator().manual_seed(0)
    d = features.shape[1]
    bound = 1.0 / math.sqrt(d)
    wb = (torch.rand(n_classes, d + 1, generator=gen) * 2 - 1).mul_(bound)
    head = nn.Linear(d, n_classes)
    with torch.no_grad():
        head.weight.copy_(wb[:, :d])
        head.bias.copy_(wb[:, d])
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        for idx in balanced_batches(labels.cpu(), samples_per_epoch, batch_size, gen):
            loss = F.cross_entropy(head(features[idx]), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head


# ----------------------------------------------------------------------------------------------------------------
# Distances (the official task_similarity.py, vectorised where it matters)
# ----------------------------------------------------------------------------------------------------------------


def _floored(h: np.ndarray) -> np.ndarray:
    """Hessians floored at 1e-8 x their mean: a dead filter (zero Fisher) would make a variance infinite."""
    return np.maximum(h, 1e-8 * max(float(np.mean(h)), 1e-300))


def _variance(e: Embedding, normalized: bool = False) -> np.ndarray:
    var = 1.0 / _floored(e.hessian)
    return var * e.scale if normalized else var  # normalised: variance over the prior's lambda^2 = 1/scale


def _scaled_hessians(e0: Embedding, e1: Embedding) -> tuple[np.ndarray, np.ndarray]:
    s = e0.hessian + e1.hessian + 1e-8
    return e0.hessian / s, e1.hessian / s


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(1.0 - np.dot(a, b) / denom) if denom > 0 else 0.0


def _kl_both(e0: Embedding, e1: Embedding) -> tuple[np.ndarray, np.ndarray]:
    v0, v1 = _variance(e0), _variance(e1)
    return (0.5 * (v0 / v1 - 1 + np.log(v1) - np.log(v0)), 0.5 * (v1 / v0 - 1 + np.log(v0) - np.log(v1)))


def cosine(e0: Embedding, e1: Embedding) -> float:
    """The paper's symmetric distance: cosine distance of ``h0/(h0+h1)`` and ``h1/(h0+h1)`` (official default).

    Dividing by the sum makes every filter count by its *relative* importance for the two tasks, so that the few
    filters with very large Fisher values (usually in the last layers) do not dominate the cosine."""
    return _cosine(*_scaled_hessians(e0, e1))


def normalized_cosine(e0: Embedding, e1: Embedding) -> float:
    """Cosine distance of the variances divided by the prior's (variational embeddings only)."""
    return _cosine(_variance(e0, normalized=True), _variance(e1, normalized=True))


def kl(e0: Embedding, e1: Embedding) -> float:
    """Sum over filters of the larger of the two KL divergences between N(0, 1/h0) and N(0, 1/h1)."""
    kl0, kl1 = _kl_both(e0, e1)
    return float(np.maximum(kl0, kl1).sum())


def asymmetric_kl(e0: Embedding, e1: Embedding) -> float:
    """KL(N(0, 1/h0) || N(0, 1/h1)) summed over filters."""
    return float(_kl_both(e0, e1)[0].sum())


def jsd(e0: Embedding, e1: Embedding) -> float:
    """Mean Jensen-Shannon-style divergence against the average variance."""
    v0, v1 = _variance(e0), _variance(e1)
    v = 0.5 * (v0 + v1)
    kl0 = 0.5 * (v0 / v - 1 + np.log(v) - np.log(v0))
    kl1 = 0.5 * (v1 / v - 1 + np.log(v) - np.log(v1))
    return float((0.5 * (kl0 + kl1)).mean())


def correlation(e0: Embedding, e1: Embedding) -> float:
    """Correlation distance of the variances."""
    v0, v1 = _variance(e0), _variance(e1)
    return _cosine(v0 - v0.mean(), v1 - v1.mean())


def entropy(e0: Embedding, e1: Embedding) -> float:
    """log 2 minus the mean binary entropy of ``h0/(h0+h1)``."""
    from scipy.special import xlogy

    p, _ = _scaled_hessians(e0, e1)
    return float(np.log(2) + (xlogy(p, p) + xlogy(1 - p, 1 - p)).mean())


#: The distances the official code registers, by name.
DISTANCES: dict[str, Callable[[Embedding, Embedding], float]] = {
    "cosine": cosine, "normalized_cosine": normalized_cosine, "kl": kl, "asymmetric_kl": asymmetric_kl,
    "jsd": jsd, "correlation": correlation, "entropy": entropy,
}
ASYMMETRIC = {"asymmetric_kl"}


def _check_compatible(embeddings: Sequence[Embedding], strict: bool) -> None:
    dims = {e.dim for e in embeddings}
    if len(dims) > 1:
        raise DataError(f"embeddings of different sizes {sorted(dims)}: compute all of them with the same probe, "
                        "skip_layers and method.")
    keys = ("estimator", "skip_layers", "probe", "bn_mode")
    kinds = {tuple(e.meta.get(k) for k in keys) for e in embeddings}
    if strict and len(kinds) > 1:
        raise ParameterError(f"embeddings from different settings {sorted(map(str, kinds))} are not comparable "
                             "(e.g. the batch and per-sample estimators differ in scale by the batch size). Compute "
                             "them with one Task2Vec configuration, or pass strict=False.")


def distance(e0: Embedding, e1: Embedding, metric: str = "cosine", *, strict: bool = True) -> float:
    """The distance ``metric`` (a name in :data:`DISTANCES`) between two embeddings."""
    if metric not in DISTANCES:
        raise ParameterError(f"unknown distance {metric!r}; choose one of {', '.join(DISTANCES)}.")
    _check_compatible([e0, e1], strict)
    return DISTANCES[metric](e0, e1)


def distance_matrix(embeddings: Sequence[Embedding], metric: str = "cosine", *, strict: bool = True) -> np.ndarray:
    """``D[i, j] = distance(embeddings[i], embeddings[j])`` (only the upper triangle is computed when symmetric)."""
    if metric not in DISTANCES:
        raise ParameterError(f"unknown distance {metric!r}; choose one of {', '.join(DISTANCES)}.")
    embeddings = list(embeddings)
    _check_compatible(embeddings, strict)
    n = len(embeddings)
    D = np.zeros((n, n))
    if metric == "cosine":  # vectorised: one row at a time against all others
        H = np.stack([e.hessian for e in embeddings])
        for i in range(n):
            s = H[i][None, :] + H + 1e-8
            a, b = H[i][None, :] / s, H / s
            num = (a * b).sum(1)
            den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
            D[i] = np.where(den > 0, 1.0 - num / np.where(den > 0, den, 1.0), 0.0)
        np.fill_diagonal(D, 0.0)
        return np.maximum((D + D.T) / 2, 0.0)
    fn = DISTANCES[metric]
    pairs = itertools.product(range(n), repeat=2) if metric in ASYMMETRIC else itertools.combinations(range(n), 2)
    for i, j in pairs:
        if i == j:
            continue
        D[i, j] = fn(embeddings[i], embeddings[j])
        if metric not in ASYMMETRIC:
            D[j, i] = D[i, j]
    return D


def cross_distance_matrix(sources: Sequence[Embedding], targets: Sequence[Embedding], metric: str = "cosine",
                          *, strict: bool = True) -> np.ndarray:
    """``D[i, j] = distance(sources[i], targets[j])``."""
    if metric not in DISTANCES:
        raise ParameterError(f"unknown distance {metric!r}; choose one of {', '.join(DISTANCES)}.")
    _check_compatible(list(sources) + list(targets), strict)
    fn = DISTANCES[metric]
    return np.array([[fn(s, t) for t in targets] for s in sources])


# ----------------------------------------------------------------------------------------------------------------
# The asymmetric distance and probe (expert) selection
# ----------------------------------------------------------------------------------------------------------------


def trivial_embedding(e: Embedding) -> Embedding:
    """The trivial embedding t0: a posterior equal to the prior (``hessian = scale``), as the official
    ``get_trivial_embedding_from``. For Monte Carlo embeddings (scale = 1) it is the uniform Fisher."""
    return Embedding(e.scale.copy(), e.scale.copy(), {**e.meta, "task": "trivial"})


def complexity(e: Embedding, metric: str = "cosine") -> float:
    """``d_sym(e, t0)``: the paper's measure of how complex (far from the trivial embedding) a task is."""
    return distance(e, trivial_embedding(e), metric)


def asymmetric_distance(source: Embedding, target: Embedding, alpha: float = 0.15, metric: str = "cosine") -> float:
    """The paper's ``d_asym(source -> target) = d_sym(source, target) - alpha * d_sym(source, t0)``.

    Transfer from ``source`` (the task an expert was trained on) to ``target`` works best when the two are similar
    *and* the source is complex (pretraining on a rich task helps); alpha trades the two (0.15 in the paper for a
    ResNet-34 probe). Not a metric: asymmetric and possibly negative."""
    return distance(source, target, metric) - alpha * complexity(source, metric)


def asymmetric_distance_matrix(sources: Sequence[Embedding], targets: Sequence[Embedding], alpha: float = 0.15,
                               metric: str = "cosine") -> np.ndarray:
    """``D[i, j] = d_asym(sources[i] -> targets[j])``."""
    D = cross_distance_matrix(sources, targets, metric)
    comp = np.array([complexity(s, metric) for s in sources])
    return D - alpha * comp[:, None]


def select_probe(target: Embedding, candidates: Mapping[str, Embedding], *, alpha: float = 0.15,
                 metric: str = "cosine", accuracy: Mapping[str, float] | None = None):  # -> pandas.DataFrame
    """Rank candidate feature extractors for ``target`` by ``d_asym(candidate's source task -> target)``.

    ``candidates`` maps each extractor's name to the embedding of the task it was trained on. With ``accuracy``
    (the accuracy each extractor actually reaches on the target after fitting a head), the table also shows the
    true rank, so the choice can be judged. Rank 1 = selected.
    """
    import pandas as pd

    names = list(candidates)
    if not names:
        raise ParameterError("select_probe needs at least one candidate.")
    rows = []
    for name in names:
        src = candidates[name]
        d_sym = distance(src, target, metric)
        comp = complexity(src, metric)
        rows.append({"candidate": name, "d_sym": d_sym, "complexity": comp, "d_asym": d_sym - alpha * comp})
    table = pd.DataFrame(rows)
    table["rank"] = table["d_asym"].rank(method="first").astype(int)
    if accuracy is not None:
        table["accuracy"] = [float(accuracy[n]) for n in names]
        table["true_rank"] = table["accuracy"].rank(ascending=False, method="first").astype(int)
    return table.sort_values("rank").reset_index(drop=True)


@dataclass(frozen=True)
class SelectionSummary:
    """How well a score picks feature extractors, over several target tasks."""

    top1: float  # fraction of targets where the selected extractor is the best one
    mean_regret: float  # mean (best accuracy - accuracy of the selected extractor)
    mean_spearman: float  # mean rank correlation between -score and accuracy, per target
    oracle_accuracy: float  # mean best accuracy
    selected_accuracy: float  # mean accuracy of the selected extractor
    chance_accuracy: float  # mean accuracy of a random extractor


def selection_summary(scores: np.ndarray, accuracy: np.ndarray) -> SelectionSummary:
    """Judge a selection rule: ``scores[i, j]`` (lower = pick) and ``accuracy[i, j]`` of extractor i on target j."""
    from scipy.stats import spearmanr

    scores, accuracy = np.asarray(scores, float), np.asarray(accuracy, float)
    if scores.shape != accuracy.shape or scores.ndim != 2:
        raise ParameterError(f"scores {scores.shape} and accuracy {accuracy.shape} must have the same shape "
                             "(extractors, targets).")
    picked = scores.argmin(0)
    cols = np.arange(scores.shape[1])
    best = accuracy.max(0)
    rho = [spearmanr(-scores[:, j], accuracy[:, j])[0] for j in cols] if scores.shape[0] > 2 else []
    rho = [r for r in rho if np.isfinite(r)]
    return SelectionSummary(
        top1=float(np.mean(accuracy[picked, cols] >= best - 1e-12)),
        mean_regret=float(np.mean(best - accuracy[picked, cols])),
        mean_spearman=float(np.mean(rho)) if rho else float("nan"),
        oracle_accuracy=float(best.mean()),
        selected_accuracy=float(accuracy[picked, cols].mean()),
        chance_accuracy=float(accuracy.mean()),
    )


# ----------------------------------------------------------------------------------------------------------------
# Clustering, agreement, difficulty
# ----------------------------------------------------------------------------------------------------------------


def cluster_order(D: np.ndarray, method: str = "complete") -> np.ndarray:
    """Leaf order of hierarchical clustering (complete linkage, optimal ordering: the official plot's)."""
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    D = np.asarray(D, float)
    if D.ndim != 2 or D.shape[0] != D.shape[1]:
        raise ParameterError(f"need a square distance matrix, got shape {D.shape}.")
    if len(D) < 3:
        return np.arange(len(D))
    sym = (D + D.T) / 2
    np.fill_diagonal(sym, 0.0)
    return leaves_list(linkage(squareform(sym, checks=False), method=method, optimal_ordering=True))


def matrix_agreement(D1: np.ndarray, D2: np.ndarray) -> float:
    """Spearman rank correlation of the off-diagonal entries of two distance matrices (1 = same ordering)."""
    from scipy.stats import spearmanr

    D1, D2 = np.asarray(D1, float), np.asarray(D2, float)
    if D1.shape != D2.shape:
        raise ParameterError(f"distance matrices of different shapes {D1.shape} and {D2.shape}.")
    mask = ~np.eye(len(D1), dtype=bool)
    return float(spearmanr(D1[mask], D2[mask])[0])


def nearest_tasks(D: np.ndarray, names: Sequence[str], query: str, k: int = 5):  # -> pandas.DataFrame
    """The ``k`` tasks closest to ``query`` in the distance matrix ``D``."""
    import pandas as pd

    names = list(names)
    if query not in names:
        raise ParameterError(f"unknown task {query!r}; choose one of {', '.join(names[:10])}...")
    i = names.index(query)
    order = [j for j in np.argsort(D[i], kind="stable") if j != i][:k]
    return pd.DataFrame({"task": [names[j] for j in order], "distance": [float(D[i, j]) for j in order]})


# ----------------------------------------------------------------------------------------------------------------
# Probes: the shipped Omniglot probe, experts, and the accuracy a feature extractor reaches on a task
# ----------------------------------------------------------------------------------------------------------------


def load_probe(path: str | Path | None = None, *, verify: bool = True) -> nn.Module:
    """The shipped Omniglot probe (a narrow ResNet-18, see :mod:`workbench.models.omniglot_probe`)."""
    from workbench.models.omniglot_probe import load_probe as _load

    return _load(path, verify=verify)


def train_probe(profile: str = "full", seed: int = 0, output_dir: Path | None = None) -> Path:
    """``workbench train task2vec-probe``: (re)create the shipped probe checkpoint."""
    from workbench.models.omniglot_probe import train_probe as _train

    return _train(profile=profile, seed=seed, output_dir=output_dir)


def extract_features(model: nn.Module, images: Any, batch_size: int = 512) -> torch.Tensor:
    """The classifier inputs (penultimate features) of ``model`` for ``images``, in eval mode."""
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images).float()
    prepare = getattr(model, "prepare", lambda z: z)
    was_training = model.training
    model.eval()
    parts = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            h = prepare(x[i:i + batch_size])
            for layer in model.layers[:-1]:
                h = layer(h)
            parts.append(h)
    model.train(was_training)
    return torch.cat(parts)


def split_task(dataset: Any, test_fraction: float = 0.25, seed: int = 0) -> tuple[Task, Task]:
    """A stratified train/test split of a task (each class keeps ``test_fraction`` of its samples for testing)."""
    task = as_task(dataset)
    gen = torch.Generator().manual_seed(seed)
    train_idx, test_idx = [], []
    for c in range(task.n_classes):
        members = torch.nonzero(task.labels == c).view(-1)
        members = members[torch.randperm(len(members), generator=gen)]
        n_test = int(round(len(members) * test_fraction))
        n_test = min(max(n_test, 1), len(members) - 1) if len(members) > 1 else 0
        test_idx.append(members[:n_test])
        train_idx.append(members[n_test:])
    tr, te = torch.cat(train_idx), torch.cat(test_idx)
    return (Task(task.images[tr], task.labels[tr], f"{task.name} (train)"),
            Task(task.images[te], task.labels[te], f"{task.name} (test)"))


def logistic_accuracy(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                      test_labels: torch.Tensor, *, l2: float = 1e-3, max_iter: int = 100) -> float:
    """Test accuracy of a multinomial logistic regression (standardised features, L2, full-batch L-BFGS).

    Deterministic (zero initialisation); the "truth" against which Task2Vec's choices are judged."""
    mu, sd = train_features.mean(0), train_features.std(0) + 1e-6
    xtr, xte = (train_features - mu) / sd, (test_features - mu) / sd
    n_classes = int(max(train_labels.max(), test_labels.max())) + 1
    w = torch.zeros(xtr.shape[1], n_classes, requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(xtr @ w + b, train_labels) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    with single_thread():
        opt.step(closure)
    with torch.no_grad():
        return float(((xte @ w + b).argmax(1) == test_labels).float().mean())


def task_accuracy(model: nn.Module, dataset: Any, *, test_fraction: float = 0.25, seed: int = 0) -> float:
    """How well ``model``'s features solve a task: a linear head fitted on a stratified train split, scored on the
    held-out rest. ``1 - task_accuracy`` is the task's difficulty for that feature extractor."""
    train, test = split_task(dataset, test_fraction, seed)
    return logistic_accuracy(extract_features(model, train.images), train.labels,
                             extract_features(model, test.images), test.labels)


def fine_tune(probe: nn.Module, dataset: Any, *, from_layer: int = 6, steps: int = 300, lr: float = 1e-3,
              batch_size: int = 64, reinit: bool = False, seed: int = 0) -> nn.Module:
    """An *expert*: a copy of ``probe`` whose ``layers[from_layer:]`` (layer3, layer4 and a new head on a ResNet)
    are trained on a task, the way the paper makes its experts from one pretrained network.

    ``reinit=True`` re-initialises those layers first, so that their features come from the source task alone
    (on a small probe, fine-tuning from the probe's own weights changes them too little for the source to matter).
    The frozen early layers run once (eval mode) and their outputs are cached, so this takes seconds."""
    task = as_task(dataset)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        expert = copy.deepcopy(probe).eval()
        layers = expert.layers
        head = nn.Linear(layers[-1].in_features, task.n_classes)
        expert.fc = head  # a ResNet's classifier attribute; `layers` is rebuilt from attributes
        if expert.layers[-1] is not head:
            raise ParameterError("fine_tune needs a probe whose `layers` list ends with its `fc` attribute.")
        with torch.no_grad():
            h = getattr(expert, "prepare", lambda z: z)(task.images)
            for layer in expert.layers[:from_layer]:
                h = layer(h)
        trained = nn.Sequential(*expert.layers[from_layer:])
        if reinit:
            for m in trained.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
                    m.reset_parameters()
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for p in expert.parameters():
            p.requires_grad_(False)
        for p in trained.parameters():
            p.requires_grad_(True)
        opt = torch.optim.Adam([p for p in trained.parameters() if p.requires_grad], lr=lr)
        trained.train()
        for step in range(steps):
            idx = torch.randint(len(h), (batch_size,), generator=gen)
            loss = F.cross_entropy(trained(h[idx]), task.labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        check_finite(loss, where="expert fine-tuning", hint="Lower lr.")
        for p in expert.parameters():
            p.requires_grad_(False)
        expert.name = f"expert: {task.name}"
    return expert.eval()


# ----------------------------------------------------------------------------------------------------------------
# Task suites for the notebook and benchmark: Omniglot alphabets, derived tasks, digits
# ----------------------------------------------------------------------------------------------------------------

#: A rough script-family annotation of the 50 Omniglot alphabets (from their Wikipedia descriptions), used only to
#: colour figures and to score how often a task's nearest neighbour is in the same family.
SCRIPT_FAMILY: dict[str, str] = {
    **dict.fromkeys(["Bengali", "Gujarati", "Gurmukhi", "Kannada", "Malayalam", "Oriya", "Sanskrit", "Grantha",
                     "Manipuri", "Sylheti", "Tibetan", "Burmese_(Myanmar)", "Balinese", "Tagalog"], "Brahmic"),
    **dict.fromkeys(["Blackfoot_(Canadian_Aboriginal_Syllabics)", "Inuktitut_(Canadian_Aboriginal_Syllabics)",
                     "Ojibwe_(Canadian_Aboriginal_Syllabics)"], "Canadian syllabics"),
    **dict.fromkeys(["Latin", "Greek", "Cyrillic", "Old_Church_Slavonic_(Cyrillic)", "Glagolitic", "Armenian",
                     "Anglo-Saxon_Futhorc"], "European"),
    **dict.fromkeys(["Asomtavruli_(Georgian)", "Mkhedruli_(Georgian)"], "Georgian"),
    **dict.fromkeys(["Hebrew", "Early_Aramaic", "Syriac_(Estrangelo)", "Syriac_(Serto)", "Malay_(Jawi_-_Arabic)",
                     "Mongolian", "Avesta", "Ge_ez"], "Aramaic-derived"),
    **dict.fromkeys(["Japanese_(hiragana)", "Japanese_(katakana)", "Korean"], "East Asian"),
    **dict.fromkeys(["Futurama", "Aurek-Besh", "Tengwar", "Atlantean", "Keble", "ULOG", "Angelic",
                     "Alphabet_of_the_Magi", "Atemayar_Qelisayer"], "invented"),
    **dict.fromkeys(["Braille", "Tifinagh", "N_Ko", "Arcadian"], "other"),
}


def short_name(alphabet: str) -> str:
    """``"Syriac_(Estrangelo)"`` -> ``"Syriac (Estrangelo)"``."""
    return alphabet.replace("_", " ")


def alphabet_tasks(omniglot: Any) -> dict[str, Task]:
    """Every Omniglot alphabet as a task ("which character is it?"), keyed by its readable name."""
    return {short_name(a): as_task(omniglot.alphabet_task(a), name=short_name(a)) for a in omniglot.alphabets}


def digits_images(size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's real 8x8 handwritten digits as Omniglot-style images: ``size`` x ``size``, ink -1, paper +1."""
    from workbench.data import load_digits_7seg
    from workbench.data.omniglot import resize_images

    digits = load_digits_7seg()
    images = 1.0 - 2.0 * np.asarray(digits.images, dtype=np.float32) / 16.0
    return resize_images(images, size), np.asarray(digits.labels)


def derived_tasks(omniglot: Any, *, seed: int = 0) -> dict[str, Task]:
    """Tasks whose relations are known in advance, to make the geometry legible:

    * the same alphabet with half its characters, or with 5 of the 20 drawers (a subsample);
    * binary tasks (two characters; two related scripts told apart);
    * real handwritten digits (a different domain): all ten, 0-4, and odd vs even.
    """
    rng = np.random.default_rng(seed)
    chars = omniglot.characters
    out: dict[str, Task] = {}

    def alphabet_classes(name: str) -> np.ndarray:
        return np.flatnonzero(chars["alphabet"].to_numpy() == name)

    for alphabet in ("Latin", "Bengali"):
        classes = alphabet_classes(alphabet)
        half = np.sort(rng.choice(classes, size=len(classes) // 2, replace=False))
        name = f"{alphabet} (half the characters)"
        out[name] = as_task(omniglot.task(half), name=name)
        full = omniglot.task(classes)
        keep = np.isin(np.tile(np.arange(20), len(classes)), rng.choice(20, size=5, replace=False))
        out[f"{alphabet} (5 drawers)"] = as_task((full.images[keep], full.labels[keep]), name=f"{alphabet} (5 drawers)")
    two = alphabet_classes("Greek")[:2]
    out["Greek: 2 characters"] = as_task(omniglot.task(two), name="Greek: 2 characters")
    for a, b in (("Japanese_(hiragana)", "Japanese_(katakana)"), ("Latin", "Greek")):
        task_a, task_b = omniglot.alphabet_task(a), omniglot.alphabet_task(b)
        name = f"{short_name(a)} vs {short_name(b)}"
        images = np.concatenate([task_a.images, task_b.images])
        labels = np.r_[np.zeros(len(task_a.labels)), np.ones(len(task_b.labels))]
        out[name] = as_task((images, labels), name=name)
    images, labels = digits_images(omniglot.size)
    out["digits 0-9"] = as_task((images, labels), name="digits 0-9")
    low = labels < 5
    out["digits 0-4"] = as_task((images[low], labels[low]), name="digits 0-4")
    out["digits odd vs even"] = as_task((images, labels % 2), name="digits odd vs even")
    return out


def task_table(tasks: Mapping[str, Task], omniglot: Any | None = None):  # -> pandas.DataFrame
    """One row per task: name, kind (alphabet / derived / digits), Omniglot set, script family, size."""
    import pandas as pd

    sets = {}
    if omniglot is not None:
        sets = {short_name(a): s for a, s in zip(omniglot.characters["alphabet"], omniglot.characters["set"])}
    families = {short_name(a): f for a, f in SCRIPT_FAMILY.items()}
    rows = []
    for name, task in tasks.items():
        kind = "alphabet" if name in families else ("digits" if name.startswith("digits") else "derived")
        rows.append({"task": name, "kind": kind, "set": sets.get(name, "-"), "family": families.get(name, kind),
                     "classes": task.n_classes, "images": len(task)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------------------------
# Expert (feature extractor) selection, measured
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class ExpertStudy:
    """Candidate experts (each fine-tuned on a source task), target tasks, and what really happened.

    ``accuracy[i, j]``: accuracy a linear head on expert i's features reaches on target j (held-out split);
    ``generic_accuracy[j]``: the same with the un-tuned probe; ``d_sym[i, j]`` = d(source_i, target_j) and
    ``complexity[i]`` = d(source_i, t0), from which :meth:`scores` forms the paper's asymmetric distance.
    """

    experts: list[str]
    targets: list[str]
    accuracy: np.ndarray
    generic_accuracy: np.ndarray
    d_sym: np.ndarray
    complexity: np.ndarray
    source_embeddings: list[Embedding]
    target_embeddings: list[Embedding]

    def scores(self, alpha: float) -> np.ndarray:
        """``d_asym(source_i -> target_j) = d_sym - alpha * complexity_i`` (lower = choose)."""
        return self.d_sym - alpha * self.complexity[:, None]

    def summary(self, alphas: Sequence[float] = (0.0, 0.15)):  # -> pandas.DataFrame
        """One row per rule: Task2Vec with each alpha, the generic probe, a random expert and the oracle."""
        import pandas as pd

        rows = []
        for a in alphas:
            s = selection_summary(self.scores(a), self.accuracy)
            rows.append({"rule": f"Task2Vec d_asym, alpha={a:g}", "mean accuracy": s.selected_accuracy,
                         "top-1 (best expert chosen)": s.top1, "mean regret": s.mean_regret,
                         "Spearman(-d, accuracy)": s.mean_spearman})
        best = self.accuracy.max(0)
        rows.append({"rule": "generic probe (no fine-tuning)", "mean accuracy": float(self.generic_accuracy.mean()),
                     "top-1 (best expert chosen)": np.nan, "mean regret": float((best - self.generic_accuracy).mean()),
                     "Spearman(-d, accuracy)": np.nan})
        rows.append({"rule": "random expert (expected)", "mean accuracy": float(self.accuracy.mean()),
                     "top-1 (best expert chosen)": float(np.mean((self.accuracy >= best - 1e-12).sum(0)
                                                                 / len(self.experts))),
                     "mean regret": float((best - self.accuracy.mean(0)).mean()), "Spearman(-d, accuracy)": 0.0})
        rows.append({"rule": "oracle (best expert)", "mean accuracy": float(best.mean()),
                     "top-1 (best expert chosen)": 1.0, "mean regret": 0.0, "Spearman(-d, accuracy)": np.nan})
        return pd.DataFrame(rows)


def expert_study(probe: nn.Module, sources: Mapping[str, Any], targets: Mapping[str, Any], embedder: Task2Vec, *,
                 fine_tune_steps: int = 300, from_layer: int = 6, reinit: bool = True, lr: float = 3e-3,
                 test_fraction: float = 0.5, seed: int = 0) -> ExpertStudy:
    """Fine-tune one expert per source task, embed sources and targets with ``embedder`` (same probe), and measure
    every expert on every target: the ground truth against which Task2Vec's choice is judged."""
    source_tasks = {k: as_task(v, name=k) for k, v in sources.items()}
    target_tasks = {k: as_task(v, name=k) for k, v in targets.items()}
    experts = {k: fine_tune(probe, t, from_layer=from_layer, steps=fine_tune_steps, reinit=reinit, lr=lr, seed=seed)
               for k, t in progress(list(source_tasks.items()), desc="fine-tuning experts", total=len(source_tasks))}
    src_e = embedder.embed_many(source_tasks, desc="embedding sources")
    tgt_e = embedder.embed_many(target_tasks, desc="embedding targets")
    # The experts share the probe's frozen layers[:from_layer]: run those once per target split.
    splits = {k: split_task(t, test_fraction, seed) for k, t in target_tasks.items()}
    frozen = {}
    for k, (tr, te) in splits.items():
        frozen[k] = tuple(_run_layers(probe, x, 0, from_layer) for x in (tr.images, te.images))
    accuracy = np.zeros((len(experts), len(target_tasks)))
    for i, expert in enumerate(progress(list(experts.values()), desc="scoring experts", total=len(experts))):
        for j, (k, (tr, te)) in enumerate(splits.items()):
            f_tr, f_te = (_run_layers(expert, h, from_layer, len(expert.layers) - 1, prepared=True) for h in frozen[k])
            accuracy[i, j] = logistic_accuracy(f_tr, tr.labels, f_te, te.labels)
    generic = np.array([task_accuracy(probe, t, test_fraction=test_fraction, seed=seed) for t in target_tasks.values()])
    d_sym = cross_distance_matrix(src_e, tgt_e)
    comp = np.array([complexity(e) for e in src_e])
    return ExpertStudy(list(experts), list(target_tasks), accuracy, generic, d_sym, comp, src_e, tgt_e)


def _run_layers(model: nn.Module, x: torch.Tensor, start: int, stop: int, *, prepared: bool = False,
                batch_size: int = 512) -> torch.Tensor:
    """``model.layers[start:stop]`` applied to ``x`` (images prepared by the model unless ``prepared``), eval mode."""
    model.eval()
    prepare = (lambda z: z) if prepared else getattr(model, "prepare", lambda z: z)
    parts = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            h = prepare(x[i:i + batch_size])
            for layer in model.layers[start:stop]:
                h = layer(h)
            parts.append(h)
    return torch.cat(parts)


# ----------------------------------------------------------------------------------------------------------------
# Figures and the nearest-task explorer (plotly, imported lazily)
# ----------------------------------------------------------------------------------------------------------------


def task_map(D: np.ndarray, seed: int = 0) -> np.ndarray:
    """A 2-D map of tasks whose distances approximate ``D`` (metric MDS on the precomputed distances)."""
    from sklearn.manifold import MDS

    D = np.asarray(D, float)
    sym = (D + D.T) / 2
    np.fill_diagonal(sym, 0.0)
    try:
        mds = MDS(n_components=2, metric="precomputed", init="classical_mds", n_init=1, random_state=seed)
    except TypeError:  # scikit-learn < 1.8
        mds = MDS(n_components=2, dissimilarity="precomputed", n_init=4, random_state=seed)
    return mds.fit_transform(sym)


def _nearest_bar(D: np.ndarray, names: Sequence[str], query: str, k: int):
    import plotly.graph_objects as go

    table = nearest_tasks(D, names, query, k)
    return go.Bar(x=table["distance"][::-1], y=table["task"][::-1], orientation="h", name=query,
                  hovertemplate="%{y}: %{x:.3f}<extra></extra>")


def nearest_tasks_figure(D: np.ndarray, names: Sequence[str], k: int = 8, initial: str | None = None):
    """The ``k`` nearest tasks of a chosen task, with plotly's own dropdown to choose it (works offline in HTML)."""
    import plotly.graph_objects as go

    names = list(names)
    initial = initial or names[0]
    fig = go.Figure([_nearest_bar(D, names, q, k) for q in names])
    for trace in fig.data:
        trace.visible = trace.name == initial
    buttons = [{"label": q, "method": "update",
                "args": [{"visible": [n == q for n in names]}, {"title": f"Tasks nearest to {q}"}]} for q in names]
    fig.update_layout(title=f"Tasks nearest to {initial}", template="plotly_white", height=120 + 34 * k,
                      xaxis_title="Task2Vec distance (normalised cosine)", showlegend=False,
                      margin={"l": 260, "r": 20, "t": 90, "b": 40},
                      updatemenus=[{"buttons": buttons, "active": names.index(initial), "x": 0, "xanchor": "left",
                                    "y": 1.18, "yanchor": "top"}])
    return fig


def nearest_tasks_explorer(D: np.ndarray, names: Sequence[str], k: int = 8, initial: str | None = None,
                           live: bool | None = None):
    """Live (JupyterLab): a dropdown widget redrawing the nearest-task chart. In reports: the plotly dropdown."""
    from workbench.notebook import in_report

    names = list(names)
    if live is None:
        live = not in_report()
    if not live:
        return nearest_tasks_figure(D, names, k, initial)
    import ipywidgets as widgets
    import plotly.graph_objects as go
    from IPython.display import display

    choose = widgets.Dropdown(options=names, value=initial or names[0], description="task")
    out = widgets.Output()

    def draw(_: Any = None) -> None:
        fig = go.Figure(_nearest_bar(D, names, choose.value, k))
        fig.update_layout(title=f"Tasks nearest to {choose.value}", template="plotly_white", height=120 + 34 * k,
                          xaxis_title="Task2Vec distance (normalised cosine)", margin={"l": 260, "r": 20, "t": 50})
        with out:
            out.clear_output(wait=True)
            display(fig)

    choose.observe(draw, names="value")
    draw()
    return widgets.VBox([choose, out])


def grouping_auc(D: np.ndarray, groups: Sequence[Any]) -> float:
    """How well distances respect a known grouping: the probability that a random same-group pair is closer than a
    random different-group pair (1 = every same-group pair is closer, 0.5 = chance). Ties count half."""
    from scipy.stats import rankdata

    D = np.asarray(D, float)
    g = np.asarray(list(groups))
    iu = np.triu_indices(len(g), 1)
    d, same = D[iu], (g[:, None] == g[None, :])[iu]
    n_same, n_diff = int(same.sum()), int((~same).sum())
    if n_same == 0 or n_diff == 0:
        return float("nan")
    ranks = rankdata(d)  # Mann-Whitney U from ranks: small distances should belong to same-group pairs
    u = ranks[same].sum() - n_same * (n_same + 1) / 2
    return float(1.0 - u / (n_same * n_diff))
