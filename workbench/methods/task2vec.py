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
     rarely drawn label gives a huge squared gradient that dominates the sum.
   * ``variational`` — the paper's: learn, per filter, the largest Gaussian weight noise (log-variance
     ``logvar0``) the task tolerates, under a KL term towards a prior :math:`N(0, \lambda^2)` (one
     :math:`\lambda` per layer, :math:`\beta = 10^{-7}`), with the local reparameterisation trick. The posterior
     precision :math:`1/\sigma^2 \approx F` is the embedding; :math:`1/\lambda^2` is its ``scale``.

4. **Embedding.** Average per filter (per output channel): one number per filter of every layer with weights
   (BatchNorm's gamma included for Monte Carlo, as in the official code), the classifier excluded.

**The faithful mode** — :meth:`Task2Vec.official` — is the released code (awslabs/aws-cv-task2vec @ c5795e5,
``Task2Vec(probe, skip_layers, max_samples).embed(dataset)``) reproduced on purpose, every difference from
``fisher="batch", bn_mode="train"`` put back: BatchNorm in train mode while caching and in the Fisher; truncation and
feature caching in dataset order (class-sorted batches of 64); the whole dataset in the Fisher when
``skip_layers=0``; a fresh head drawn like ``nn.Linear`` and fitted with the released sampler; one Fisher epoch of
156 batches; and every random draw (head initialisation, each ``DataLoader`` iterator's base seed, the
``WeightedRandomSampler`` draws on float64 weights, one sampled label per image after each batch's forward pass)
consumed in the released order from a generator seeded like the released run's ``torch.manual_seed(seed)``. Seeded
the same, on the same probe and task, its embedding equals the released code's to float rounding (tested against
``../shared/reference/aws-cv-task2vec`` at rtol 1e-4). ``engine="loop"`` is the plain per-batch autograd loop;
``engine="fast"`` (default) runs the same batches, labels and sums in channels-last memory without BatchNorm's
unused running averages, and fits the head with the softmax-regression gradient written out (equal to the loop
within float rounding, tested; where rounding moves a sampled label, that batch differs). Measured against the
released code by ``benchmarks/bench_task2vec.py``: see ``benchmarks/results/task2vec.md`` (figures below).

Measured by ``benchmarks/bench_task2vec.py`` against the released code run side by side (same shipped probe, its
12 Omniglot alphabets, seeds 0 and 1, skip_layers=0, max_samples=10000, one torch thread each, estimators taking
turns task by task on a shared 2-core machine at a load average of about 5-10, so CPU seconds are inflated for
every row alike): CPU s per task released 15.06, ``Task2Vec.official(probe)`` (fast engine) 10.00 (1.51x), default
2.42 (6.23x); Spearman agreement of the distance matrices with the released code's, same seed: official 1.000
(embeddings within 2.2e-03 median / 9.9e-03 max relative L2), default 0.705; seed 0 vs 1: released 0.980,
official 0.980, default 0.986. The 3x speed goal is not reached: one Fisher batch is 2.95 GFLOP, and at this
machine's single-thread matrix-product speed (74 GFLOP/s in that run) the released 156 batches cannot take less
than 6.2 s per task in any exact float32 implementation; the fast engine runs at 41 GFLOP/s, the plain loop at 29.

Default chosen by evidence: on the same embeddings, BatchNorm in eval mode (the default) against train mode (the
released code): family AUC 0.970 vs 0.886, nearest alphabet of the same script family 0.83 vs 0.67,
Spearman(embedding norm, linear-head error) 0.725 vs 0.391, seed agreement 0.986 vs 0.980: eval mode is better on
every score, so it stays the default; the released behaviour is ``Task2Vec.official(probe)``
(``benchmarks/results/task2vec.md``).

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
import math
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workbench.errors import DataError, ParameterError, TrainingError
from workbench.train import check_finite, progress, resolve_device, torch_threads

# Distances, selection and figures live in task2vec_distances.py (they only need embeddings); every name is
# re-exported here, so ``from workbench.methods.task2vec import distance_matrix`` keeps working.
from workbench.methods.task2vec_distances import (  # noqa: F401  (re-exported)
    ASYMMETRIC, DISTANCES, Embedding, SelectionSummary, asymmetric_distance, asymmetric_distance_matrix,
    asymmetric_kl, cluster_order, complexity, correlation, cosine, cross_distance_matrix, distance, distance_matrix,
    entropy, grouping_auc, jsd, kl, matrix_agreement, nearest_tasks, nearest_tasks_explorer, nearest_tasks_figure,
    normalized_cosine, select_probe, selection_summary, task_map, trivial_embedding,
)
# Variational layers and per-sample squared gradients (task2vec_gradients.py); tasks, probes, experts and the task
# suites (task2vec_tasks.py): re-exported here too.
from workbench.methods.task2vec_gradients import (  # noqa: F401  (re-exported)
    VariationalWrapper, _closed_form_supported, _largest_unfold, _loss, _sum_sq_outer, _weighted_sq_grad,
    _wrap_variational, compression_loss, gaussian_output_gradients, sum_sq_grads_closed_form, sum_sq_grads_vmap,
)
from workbench.methods.task2vec_tasks import (  # noqa: F401  (re-exported)
    SCRIPT_FAMILY, ExpertStudy, Task, _run_layers, alphabet_tasks, as_task, derived_tasks, digits_images,
    expert_study, extract_features, fine_tune, load_probe, logistic_accuracy, short_name, split_task,
    task_accuracy, task_table, train_probe,
)

METHODS = ("montecarlo", "variational")
FISHERS = ("per_sample", "batch")
BN_MODES = ("eval", "train")
ENGINES = ("auto", "closed_form", "vmap", "loop", "fast")
PROTOCOLS = ("workbench", "released")
LABELS = ("sampled", "gaussian")

# ----------------------------------------------------------------------------------------------------------------
# Sampling: stratified truncation, class-balanced batches, and the released code's draws
# ----------------------------------------------------------------------------------------------------------------


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


# -- the released code's randomness, draw for draw ----------------------------------------------------------------
#
# ``Task2Vec.official`` reproduces the released code (awslabs/aws-cv-task2vec @ c5795e5) and consumes random numbers
# in the same order from a generator seeded like the released run's global one (``torch.manual_seed(seed)``), so
# that with the same seed the two pick the same batches and the same sampled labels.


def released_loader_batches(labels: torch.Tensor, n_samples: int, batch_size: int, generator: torch.Generator,
                            iterators: int = 1) -> list[torch.Tensor]:
    """One epoch of the released ``_get_loader``: a ``WeightedRandomSampler`` of ``n_samples`` class-balanced draws
    with replacement, batches of ``batch_size``, ``drop_last``.

    The same draws as iterating that ``DataLoader`` once: every iterator opened on it first takes one 64-bit base
    seed (for worker processes, unused here), then the sampler calls ``torch.multinomial`` on the float64 weights
    computed as there. ``iterators``: how many iterators the caller opens for that epoch (the released Fisher loop
    wraps its loader in ``tqdm.auto``, whose asyncio class opens one it never reads, then iterates: 2).
    """
    y = labels.cpu().numpy()
    n_classes = int(y.max()) + 1
    class_count = np.eye(n_classes)[y].sum(axis=0)
    weights = 1.0 / class_count[y] / n_classes
    weights /= weights.sum()
    for _ in range(iterators):
        torch.empty((), dtype=torch.int64).random_(generator=generator)  # each DataLoader iterator's base seed
    idx = torch.multinomial(torch.as_tensor(weights, dtype=torch.double), n_samples, True, generator=generator)
    n_full = n_samples // batch_size
    if n_full == 0:
        raise ParameterError(f"samples_per_epoch={n_samples} is smaller than batch_size={batch_size}.")
    return list(idx[: n_full * batch_size].view(n_full, batch_size))


def linear_init(in_features: int, out_features: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``nn.Linear(in_features, out_features)``'s initial weight and bias, drawn from ``generator`` in the same order
    (``kaiming_uniform_(a=sqrt(5))``, then the bias): both ``U(-1/sqrt(in), 1/sqrt(in))``."""
    weight = torch.empty(out_features, in_features)
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
    bound = 1.0 / math.sqrt(in_features)
    bias = torch.empty(out_features).uniform_(-bound, bound, generator=generator)
    return weight, bias


def released_truncation(n: int, max_samples: int | None, batch_size: int) -> int:
    """How many samples the released ``_cache_features`` keeps: the first ``floor(max_samples / batch) - 1`` batches
    **in dataset order** (all of them without ``max_samples``)."""
    n_loader_batches = math.ceil(n / batch_size)
    if max_samples is None:
        return n
    n_batches = min(math.floor(max_samples / batch_size) - 1, n_loader_batches)
    if n_batches < 1:
        raise ParameterError(f"max_samples={max_samples} keeps no batch in the released truncation "
                             f"(floor({max_samples}/{batch_size}) - 1 = {n_batches}); use at least "
                             f"{2 * batch_size}.")
    return min(n, n_batches * batch_size)


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
    max_samples: at most this many samples are used (``protocol="workbench"``: stratified by class, seeded).
    bn_mode: ``"eval"`` (running statistics, default) or ``"train"`` (batch statistics, the official behaviour;
        only with ``fisher="batch"`` or ``method="variational"``).
    protocol: ``"workbench"`` (default: the fixes listed in the module docstring) or ``"released"`` (what the
        released code does, for ``fisher="batch"`` only: dataset-order truncation and caching, the whole dataset in
        the Fisher when ``skip_layers=0``, and its random draws in its order; see :meth:`official`).
    batch_size, head_epochs, head_lr, head_weight_decay, samples_per_epoch: the official head fit and loader
        (64, 10, 4e-4, 1e-4, 10,000 class-balanced draws per epoch).
    fisher_epochs: passes of the Monte Carlo estimator (official: 1 loader epoch; per-sample: 1 pass, one draw of the
        output gradient per sample).
    fisher_labels: per-sample output gradients: ``"gaussian"`` (default; same Fisher, lower variance, see the module
        docstring) or ``"sampled"`` (labels drawn from the model, the paper's Monte Carlo).
    variational_epochs, variational_beta, variational_lr, variational_head_lr: official 2, 1e-7, 1e-2, 5e-4.
    engine: how gradients are computed. Per-sample estimator: ``"vmap"`` (``torch.func.vmap(grad(...))``, any layer
        type), ``"closed_form"`` (one ordinary backward pass plus closed forms for Conv2d/Linear/BatchNorm, ~5x
        faster on CPU; identical sums) or ``"auto"`` (closed form when every layer allows it). Batch estimator:
        ``"loop"`` (the plain per-batch autograd loop, the reference) or ``"fast"`` (the same batches, labels and
        sums in channels-last memory, without BatchNorm's unused running averages; equal within float rounding) or
        ``"auto"`` (fast).
    chunk_size: samples per chunk of the per-sample estimator (None: sized automatically to bound memory).
    seed: seeds everything random in :meth:`embed`; the same seed gives the same embedding.
    device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
    threads: torch CPU threads while embedding (default 1: the result is then bit-identical whatever the machine's
        thread setting, and on a busy 2-core machine two threads spend most of their time waiting for each other,
        measured 10-20x slower; None keeps torch's current setting, e.g. on a many-core machine).

    After :meth:`embed`, ``head_`` (the fitted classifier), ``head_history_`` and ``timings_`` describe the last call;
    :meth:`fit` (scikit-learn style, returns ``self``) also keeps ``embeddings_``, ``task_names_`` and ``distances_``.
    """

    def __init__(self, probe: nn.Module, *, method: str = "montecarlo", fisher: str = "per_sample",
                 skip_layers: int = 0, max_samples: int | None = 10_000, bn_mode: str = "eval",
                 protocol: str = "workbench", batch_size: int = 64, head_epochs: int = 10, head_lr: float = 4e-4,
                 head_weight_decay: float = 1e-4, samples_per_epoch: int = 10_000, fisher_epochs: int = 1,
                 variational_epochs: int = 2, variational_beta: float = 1e-7, variational_lr: float = 1e-2,
                 variational_head_lr: float = 5e-4, fisher_labels: str = "gaussian", engine: str = "auto",
                 chunk_size: int | None = None, seed: int = 0, device: str = "cpu",
                 threads: int | None = 1) -> None:
        if method not in METHODS:
            raise ParameterError(f"method must be one of {METHODS}, got {method!r}.")
        if fisher not in FISHERS:
            raise ParameterError(f"fisher must be one of {FISHERS}, got {fisher!r}.")
        if bn_mode not in BN_MODES:
            raise ParameterError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}.")
        if protocol not in PROTOCOLS:
            raise ParameterError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}.")
        if method == "montecarlo" and fisher == "per_sample" and bn_mode == "train":
            raise ParameterError("per-sample gradients need bn_mode='eval': in train mode BatchNorm mixes the samples "
                                 "of a batch, so a single sample has no gradient of its own. Use bn_mode='eval', or "
                                 "fisher='batch' to reproduce the official train-mode behaviour.")
        if protocol == "released" and (method != "montecarlo" or fisher != "batch"):
            raise ParameterError("protocol='released' reproduces the released Monte Carlo code, which squares batch "
                                 "gradients: use it with method='montecarlo', fisher='batch' (Task2Vec.official).")
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
        if method == "montecarlo" and engine != "auto":
            allowed = ("closed_form", "vmap") if fisher == "per_sample" else ("loop", "fast")
            if engine not in allowed:
                raise ParameterError(f"engine={engine!r} does not apply to fisher={fisher!r}; choose 'auto' or one "
                                     f"of {allowed}.")
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
        self.protocol = protocol
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

    @classmethod
    def official(cls, probe: nn.Module, *, skip_layers: int = 0, max_samples: int | None = 10_000,
                 bn_mode: str = "train", engine: str = "auto", seed: int = 0, **kwargs: Any) -> "Task2Vec":
        """The released code's Monte Carlo Task2Vec (awslabs/aws-cv-task2vec @ c5795e5, ``Task2Vec(probe,
        skip_layers, max_samples).embed(dataset)``), reproduced on purpose, including what the default fixes:

        * **BatchNorm in train mode** (its constructor calls ``model.train()``): batch statistics while caching
          features and in every Fisher batch;
        * **truncation and caching in dataset order**: the first ``floor(max_samples / 64) - 1`` batches of 64, in
          order, so on a dataset sorted by class each caching batch holds two or three classes, and BatchNorm
          normalises the head's training features with those batches' statistics;
        * the **whole dataset** in the Fisher pass when ``skip_layers=0`` (the truncated cache otherwise);
        * its random draws in its order, from a generator seeded with ``seed``: the fresh head (``nn.Linear``'s
          initialisation), one base seed per ``DataLoader`` iteration, the ``WeightedRandomSampler`` draws on float64
          weights (10 head epochs, 1 Fisher epoch of 156 batches) and one sampled label per image and batch.

        Run after ``torch.manual_seed(seed)`` with the same probe and a fresh ``nn.Linear`` head, the released code
        gives the same embedding up to float rounding (tested). ``engine="loop"`` is the plain per-batch loop,
        ``"fast"`` (default through ``"auto"``) the same sums in channels-last memory. ``max_samples=None`` is the
        released constructor's own default (no truncation); other keyword arguments go to :class:`Task2Vec`
        (e.g. ``samples_per_epoch``, ``head_epochs``, ``threads``). ``bn_mode="eval"`` keeps everything else
        released but freezes BatchNorm, the configuration compared in the benchmark's default study.
        """
        return cls(probe, method="montecarlo", fisher="batch", protocol="released", skip_layers=skip_layers,
                   max_samples=max_samples, bn_mode=bn_mode, engine=engine, seed=seed, **kwargs)

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
        released = self.protocol == "released"
        # Seeded locally (the caller's RNG state is left alone), on a fixed number of threads.
        with torch.random.fork_rng(devices=[]), torch_threads(self.threads):
            torch.manual_seed(self.seed)
            gen = torch.Generator().manual_seed(self.seed)
            probe = copy.deepcopy(self.probe).to(device)
            for p in probe.parameters():
                p.requires_grad_(False)
            probe.train(self.bn_mode == "train")

            t0 = time.perf_counter()
            if released:
                # The released run builds the fresh head first, then iterates its caching DataLoader (one base
                # seed drawn) over the first batches in dataset order.
                head_init = linear_init(probe.layers[-1].in_features, task.n_classes, gen)
                torch.empty((), dtype=torch.int64).random_(generator=gen)
                order = torch.arange(released_truncation(len(task), self.max_samples, self.batch_size))
            else:
                head_init = None
                order = stratified_subset(task.labels, self.max_samples or len(task), gen)
            images, labels = task.images[order], task.labels[order]
            x_skip, x_head = self._cache_features(probe, images, device)
            labels = labels.to(device)
            timings["cache"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            sampler = "released" if released else "balanced"
            head, history = fit_head(x_head, labels, task.n_classes, epochs=self.head_epochs, lr=self.head_lr,
                                     weight_decay=self.head_weight_decay, batch_size=self.batch_size,
                                     samples_per_epoch=self.samples_per_epoch, generator=gen, init=head_init,
                                     sampler=sampler)
            with torch.no_grad():
                head_accuracy = float((head(x_head).argmax(1) == labels).float().mean())
            timings["head"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            if released and self.skip_layers == 0:
                # The released montecarlo_fisher reads the dataset it was given, untruncated, when skip_layers=0.
                x_fisher, y_fisher = self._prepared(probe, task.images, device), task.labels.to(device)
            else:
                x_fisher, y_fisher = x_skip, labels
            tail = _Tail(probe.layers[self.skip_layers:-1], head)
            if self.method == "variational":
                hessian, scale, slices = self._variational(probe, tail, x_skip, labels, gen)
            else:
                entries = _fisher_entries(probe, tail)
                weights = {key: tail.get_parameter(key) for _, key in entries}
                if self.fisher == "per_sample":
                    fisher = self._fisher_per_sample(tail, weights, x_skip, labels, gen)
                else:
                    fisher = self._fisher_batch(tail, weights, x_fisher, y_fisher, gen,
                                                "released_fisher" if released else "balanced")
                hessian, scale, slices = _per_filter(fisher, entries)
            timings["fisher"] = time.perf_counter() - t0

        if not np.all(np.isfinite(hessian)):
            raise TrainingError(f"the Fisher of task {task.name!r} is not finite; check the probe and the images "
                                "(NaN inputs or weights).")
        self.head_, self.head_history_, self.timings_ = head, history, timings
        meta = {
            "task": task.name, "estimator": self.estimator, "method": self.method, "fisher": self.fisher,
            "skip_layers": self.skip_layers, "bn_mode": self.bn_mode, "protocol": self.protocol,
            "engine": self._engine_used(), "seed": self.seed, "n_samples": int(len(images)),
            "n_classes": task.n_classes, "head_train_accuracy": head_accuracy, "layers": slices,
            "seconds": {k: round(v, 4) for k, v in timings.items()},
            "probe": getattr(self.probe, "name", type(self.probe).__name__),
        }
        return Embedding(hessian, scale, meta)

    def embed_many(self, tasks: Sequence[Any] | Mapping[str, Any], *, desc: str = "Task2Vec") -> list[Embedding]:
        """Embed several tasks (a list, or a ``{name: task}`` mapping) with a progress bar."""
        items = list(tasks.items()) if isinstance(tasks, Mapping) else [(None, t) for t in tasks]
        return [self.embed(task, name=name) for name, task in progress(items, desc=desc, total=len(items))]

    def fit(self, tasks: Sequence[Any] | Mapping[str, Any], y: Any = None) -> "Task2Vec":
        """scikit-learn style: embed ``tasks`` (a list, or a ``{name: task}`` mapping) and keep the result.

        Sets ``embeddings_`` (one :class:`Embedding` per task, in order), ``task_names_`` and ``distances_`` (the
        default symmetric normalised cosine, :func:`distance_matrix`); returns ``self``. ``y`` is ignored."""
        self.embeddings_ = self.embed_many(tasks)
        self.task_names_ = [e.name for e in self.embeddings_]
        self.distances_ = distance_matrix(self.embeddings_)
        return self

    # -- steps --------------------------------------------------------------------------------------------------

    def _engine_used(self) -> str | None:
        if self.method == "variational":
            return None
        if self.fisher == "batch":
            return "fast" if self.engine == "auto" else self.engine
        return self.engine  # per-sample "auto" is resolved per probe in _fisher_per_sample

    @staticmethod
    def _prepared(probe: nn.Module, images: torch.Tensor, device: torch.device, step: int = 512) -> torch.Tensor:
        prepare: Callable[[torch.Tensor], torch.Tensor] = getattr(probe, "prepare", lambda x: x)
        with torch.no_grad():
            return torch.cat([prepare(images[i:i + step]).to(device) for i in range(0, len(images), step)])

    def _cache_features(self, probe: nn.Module, images: torch.Tensor,
                        device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass of the probe: the inputs of ``layers[skip_layers]`` and of the classifier."""
        layers = probe.layers
        prepare: Callable[[torch.Tensor], torch.Tensor] = getattr(probe, "prepare", lambda x: x)
        # In eval mode the batch size changes nothing, so use large batches; in train mode BN's batch statistics
        # depend on it, so use the official 64 (the released protocol caches in its batches whatever the mode).
        step = self.batch_size if self.bn_mode == "train" or self.protocol == "released" else 512
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
                      gen: torch.Generator, sampler: str = "balanced") -> dict[str, torch.Tensor]:
        """Official estimator: mean over batches of (gradient of the batch-mean loss)^2, labels ~ p_w(y|x)."""
        fast = self._engine_used() == "fast"
        if fast:
            tail, weights, x = _channels_last_copy(tail, weights, x)
        acc = {k: torch.zeros_like(w) for k, w in weights.items()}
        for w in weights.values():
            w.requires_grad_(True)
        params = list(weights.values())
        count = 0
        for _ in range(self.fisher_epochs):
            for idx in epoch_batches(labels, self.samples_per_epoch, self.batch_size, gen, sampler):
                out = tail(_batch(x, idx, fast))
                # Labels sampled from the model, after this batch's forward pass, as the released loop does.
                y = torch.multinomial(F.softmax(out.detach(), dim=-1), 1, generator=gen).view(-1)
                grads = torch.autograd.grad(F.cross_entropy(out, y), params)
                for a, g in zip(acc.values(), grads):
                    a.addcmul_(g, g)
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


def _channels_last_copy(tail: _Tail, weights: dict[str, torch.Tensor],
                        x: torch.Tensor) -> tuple[_Tail, dict[str, torch.Tensor], torch.Tensor]:
    """The fast batch engine's copy of the tail: 4-D weights and inputs in channels-last memory, which the CPU's
    convolution and max-pooling kernels prefer (the same sums, added in another order), and train-mode BatchNorm
    without running averages (the released code updates them every batch but never reads them in train mode)."""
    fast = copy.deepcopy(tail).to(memory_format=torch.channels_last)
    for m in fast.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training:
            m.track_running_stats = False
            m.running_mean = m.running_var = m.num_batches_tracked = None
        if isinstance(m, nn.Conv2d) and m.in_channels == 1:
            # A convolution of one-channel images is several times slower in channels-last memory: keep it in the
            # standard layout and hand its output on in channels-last.
            m.weight.data = m.weight.data.contiguous()
            m.register_forward_hook(lambda module, inputs, out: out.contiguous(memory_format=torch.channels_last))
    fast_weights = {k: fast.get_parameter(k) for k in weights}
    return fast, fast_weights, (x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x)


def _batch(x: torch.Tensor, idx: torch.Tensor, channels_last: bool) -> torch.Tensor:
    xb = x[idx]
    return xb.contiguous(memory_format=torch.channels_last) if channels_last and xb.ndim == 4 else xb


def single_thread() -> contextlib.AbstractContextManager:
    """Run a block of many tiny tensor operations on one thread (restores the previous setting)."""
    return torch_threads(1)


# ----------------------------------------------------------------------------------------------------------------
# Fitting the head
# ----------------------------------------------------------------------------------------------------------------


SAMPLERS = ("balanced", "released", "released_fisher")


def epoch_batches(labels: torch.Tensor, n_samples: int, batch_size: int, generator: torch.Generator,
                  sampler: str = "balanced") -> list[torch.Tensor]:
    """One epoch of class-balanced batches: ``"balanced"`` (:func:`balanced_batches`), ``"released"`` (the released
    loader's exact draws, :func:`released_loader_batches`, as its head fit iterates it) or ``"released_fisher"``
    (the same, as its Fisher loop iterates it: two iterators). All have the same distribution."""
    if sampler in ("released", "released_fisher"):
        iterators = 2 if sampler == "released_fisher" else 1
        return released_loader_batches(labels, n_samples, batch_size, generator, iterators=iterators)
    return balanced_batches(labels.cpu(), n_samples, batch_size, generator)


def _initial_head(n_classes: int, d: int, gen: torch.Generator,
                  init: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """``[W | b]`` (n_classes, d + 1): the given initial weights, or nn.Linear's distribution from ``gen``."""
    if init is not None:
        weight, bias = init
        if tuple(weight.shape) != (n_classes, d) or tuple(bias.shape) != (n_classes,):
            raise ParameterError(f"init must be a weight ({n_classes}, {d}) and a bias ({n_classes},).")
        return torch.cat([weight, bias[:, None]], 1).float()
    bound = 1.0 / math.sqrt(d)  # nn.Linear's default, U(-1/sqrt(d), 1/sqrt(d)) for weights and bias
    return (torch.rand(n_classes, d + 1, generator=gen) * 2 - 1).mul_(bound)


def fit_head(features: torch.Tensor, labels: torch.Tensor, n_classes: int, *, epochs: int = 10, lr: float = 4e-4,
             weight_decay: float = 1e-4, batch_size: int = 64, samples_per_epoch: int = 10_000,
             generator: torch.Generator | None = None, init: tuple[torch.Tensor, torch.Tensor] | None = None,
             sampler: str = "balanced") -> tuple[nn.Linear, list[float]]:
    """The official head fit: a fresh linear classifier trained with Adam on class-balanced batches.

    Exactly ``torch.optim.Adam`` (L2 weight decay added to the gradient) on the mean cross-entropy, but with the
    softmax-regression gradient written out, ``dL/dW = (softmax(z) - onehot(y))^T x / B``: the 1,560 tiny steps
    then cost a few matrix products each instead of an autograd graph, an optimizer call and a DataLoader batch.
    ``init``: initial ``(weight, bias)`` (default: drawn like ``nn.Linear``'s from ``generator``); ``sampler``: how
    each epoch's batches are drawn (:func:`epoch_batches`). Returns the head (an ``nn.Linear``) and the mean
    training loss of each epoch.
    """
    gen = generator or torch.Generator().manual_seed(0)
    if features.ndim != 2 or len(features) != len(labels):
        raise DataError(f"features {tuple(features.shape)} and labels {tuple(labels.shape)} do not match.")
    if sampler not in SAMPLERS:
        raise ParameterError(f"sampler must be one of {SAMPLERS}, got {sampler!r}.")
    n, d = features.shape
    device = features.device
    wb = _initial_head(n_classes, d, gen, init).to(device)  # [W | b]
    x1 = torch.cat([features, torch.ones(n, 1, device=device, dtype=features.dtype)], 1)  # [x | 1]
    m, v = torch.zeros_like(wb), torch.zeros_like(wb)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    history, t = [], 0
    with single_thread():  # 1,560 tiny steps: thread start-up and barriers cost more than they save
        for epoch in range(epochs):
            batches = torch.stack(epoch_batches(labels, samples_per_epoch, batch_size, gen, sampler)).to(device)
            xs, ys = x1[batches], labels[batches]
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
                      samples_per_epoch: int = 10_000, generator: torch.Generator | None = None,
                      init: tuple[torch.Tensor, torch.Tensor] | None = None, sampler: str = "balanced") -> nn.Linear:
    """The same fit written the plain way (nn.Linear + torch.optim.Adam); used by the tests to check
    :func:`fit_head` step for step."""
    gen = generator or torch.Generator().manual_seed(0)
    d = features.shape[1]
    wb = _initial_head(n_classes, d, gen, init)
    head = nn.Linear(d, n_classes)
    with torch.no_grad():
        head.weight.copy_(wb[:, :d])
        head.bias.copy_(wb[:, d])
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        for idx in epoch_batches(labels, samples_per_epoch, batch_size, gen, sampler):
            loss = F.cross_entropy(head(features[idx]), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head
