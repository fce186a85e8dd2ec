r"""HyperTransformer: a transformer that writes the weights of a small CNN from a few-shot support set.

Zhmoginov, Sandler, Vladymyrov, ICML 2022 (seed 004); official code google-research ``hypertransformer/tf``
(TF1; see docs/anchors.md §4). Given an episode's support set :math:`\{(x_i, c_i)\}`, one transformer
encoder per generated layer :math:`\ell` reads one token per support sample,

.. math::
    \text{token}_i = [\,\xi(c_i)\;;\; h^\ell(z_i^\ell)\;;\; s(x_i)\,]

(label embedding :math:`\xi` with ``n_way + 1`` entries, the last meaning *unlabeled*; *local* features
:math:`h^\ell` of the layer's input :math:`z_i^\ell`; *shared* features :math:`s` of the raw image), plus one
learned placeholder token per output channel (*output allocation*: per conv output channel a slice of
``3*3*C_in`` weights; per class a logits slice of ``feature_dim + 1``). The transformer's outputs at the
placeholders, minus their first ``embed_dim`` entries, are the weights. Layers are generated in order and the
support set is pushed through each generated layer before the next one is generated. The generated CNN then
classifies the query set, and the query cross-entropy trains everything end to end::

    from workbench.data import load_omniglot, omniglot_split, EpisodeSampler
    om, split = load_omniglot(), omniglot_split("ht")
    train = EpisodeSampler(om.images, om.labels, 20, 1, 3, rotate=True, classes=split["train"])
    test = EpisodeSampler(om.images, om.labels, 20, 1, 3, classes=split["test"], seed=1)
    ht = HyperTransformer(HyperTransformerConfig(channels=8, generate="logits", steps=2000)).fit(train)
    ht.evaluate(test, n_episodes=200)            # -> EvalResult(accuracy=MeanCI(...), ...)
    weights = ht.generate(test.episode(0))       # -> GeneratedWeights: conv list + logits (W, b)

Target CNN: 4 x [3x3 conv 'same', no bias -> ReLU -> MaxPool 2 -> BatchNorm (learned affine, never generated)]
-> flatten -> logits. For 28x28 inputs the logits layer sees ``channels`` features (1x1 spatial).
``generate="logits"`` generates only the logits layer (the conv layers are ordinary learned parameters);
``generate="all"`` generates all four conv layers too.

Baselines on the same CNN and the same episodes: :class:`ProtoNet` (Snell et al. 2017: squared Euclidean
distance to class means of the CNN features) and :class:`FineTuneLogits` (a fresh logits layer trained on the
support features of a trained backbone; by default the ProtoNet's CNN).

Faithful to the official recipe with these documented choices:

- **BatchNorm** (``bn_mode``). The official code keeps BN in training mode at evaluation too: every batch
  (the support set while generating, the query set while classifying) is normalised with its own statistics,
  which makes query predictions depend on the other query images (transductive). This is the default
  (``"batch"``), because it is what the paper's numbers measure and because running averages are meaningless
  when the conv weights change from episode to episode. ``"support"`` normalises the query with the *support*
  set's statistics (non-transductive; used in training as well, so train and test match).
- **Local features.** Two 3x3 convs (stride 2, then 1) each global-average-pooled and concatenated, as the
  official code, but with padding 1 instead of 'valid' so that they also run on the 3x3 input of the fourth
  layer. The logits layer's local feature is its input itself (the flattened CNN features: the 1x1 map cannot
  be convolved, and the features are what a logits weight must match, eq. 1 of the paper).
- **Token width.** Sample tokens and placeholder tokens are zero-padded to a common width
  ``max(embed_dim + local + shared, embed_dim + slice)`` rounded up to a multiple of ``heads``, per layer.
- **Initialisation (``matched_init``, ``identity_values``; both on by default).** With the official random
  initialisation, a CPU-sized run (thousands of episodes) collapses to identical logits rows (query loss stuck
  at log n_way: 5-way 1-shot test accuracy 18.8% after 600 episodes). We start the transformer where the
  paper's own construction (section 3.2, eq. 1) says it can go: the key projection equals the query projection,
  the logits placeholder of class i starts equal to the label embedding of class i (so it first attends to the
  support samples labelled i), and the value and output projections start as the identity (so the attended
  features land in the weight slice: a prototype-like classifier). Everything stays trainable; only the
  starting point changes. Measured, 5-way 1-shot, 600 episodes: 18.8% (official init), 49.7% (matched
  query/key), 64.8% (+ identity values). ``matched_init=False`` restores the official initialisation.
- **Transformer.** Post-LayerNorm encoder, softmax multi-head attention, 2-layer ReLU FFN of width
  ``ffn_mult * d``, no dropout, no positional encoding (so the weights do not depend on the order of the support
  samples: tested).
- **Training (CPU budget default).** The official recipe is plain SGD, lr 0.02 decayed by 0.95 every 100,000
  steps, one episode per step, 4,000,000 steps (``HyperTransformerConfig.official()``). That is days on a CPU.
  The default here is Adam (lr 2e-3, cosine decay to 5% with a short warm-up, gradient-norm clip 5) on batches of
  2 episodes: Adam reaches a usable generator in thousands rather than millions of episodes. With
  ``max_minutes`` the schedule follows the larger of the step fraction and the time fraction, so a
  time-budgeted run still anneals (and is then not bit-reproducible).
- **Semi-supervised.** ``n_unlabeled`` samples per class enter the support set with the *unlabeled* token.
  While training, each unlabeled sample is masked out (dropped) with a probability that decays linearly from
  ``unlabeled_mask_start`` to ``unlabeled_mask_end`` over the first ``unlabeled_warmup`` fraction of training;
  a final probability above 0 keeps the generator used to any number of unlabeled samples.
- **Episodes.** Training episodes come from an :class:`~workbench.data.EpisodeSampler` (20-way, a random 90°·k
  rotation per class, the seeded 1150/50/423 split). The official code samples support and query
  independently (``overlap=True``); the default here keeps them disjoint, the usual protocol.

Shipped checkpoints (``workbench/checkpoints``, made by ``workbench train hypertransformer`` and
``workbench train hypertransformer-protonet``; logs and metrics beside them): an 8-channel logits-only
HyperTransformer trained on 300,000 20-way 1-shot episodes with 0-2 unlabeled images per class (150,000 steps,
5.2 h on one CPU thread, resumed once): test 87.0 ± 0.3% (1-shot), 91.2 ± 0.2% (5-shot), 90.0 ± 0.3% (1-shot +
2 unlabeled/class), 1,000 episodes each; and a ProtoNet on the same CNN (5 min, 5,900 episodes): 73.0 ± 0.7% /
86.9 ± 0.4%. The paper: 87.2 / 94.7 after 4,000,000 episodes (its 5-shot model was trained on 5-shot episodes;
this one only ever saw 1-shot support sets).
"""

from __future__ import annotations

import contextlib
import math
import platform
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from workbench.errors import DataError, ParameterError
from workbench.train import History, check_finite, progress, torch_threads

GENERATE = ("logits", "all")
BN_MODES = ("batch", "support")
N_CONV = 4
CHECKPOINT_NAME = "hypertransformer"


# --------------------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------------------

@dataclass
class HyperTransformerConfig:
    """Hyperparameters of the generator, the target CNN and the training loop (defaults: the CPU-budget recipe)."""

    # target CNN
    n_way: int = 20  # classes per episode (the number of logits, and of label tokens minus one)
    channels: int = 8  # conv channels of the target CNN (the paper: 8..64)
    image_size: int = 28
    in_channels: int = 1
    generate: str = "logits"  # "logits": generate the logits layer only; "all": the 4 conv layers too
    bn_mode: str = "batch"  # "batch" (official: BN in training mode always) or "support" (query uses support stats)
    # generator
    embed_dim: int = 32  # label and placeholder embedding width
    local_channels: int | None = None  # channels of the local feature convs (None: = channels)
    shared_dim: int = 32  # width of the shared feature extractor (and of its features)
    transformer_layers: int = 3
    heads: int = 2
    ffn_mult: int = 2  # FFN width = ffn_mult * token width
    matched_init: bool = True  # init W_k = W_q and logits placeholder i = label embedding i (see module doc)
    identity_values: bool = True  # also init the attention value and output projections to the identity
    # training
    optimizer: str = "adam"  # "adam" or "sgd" (the official recipe)
    lr: float = 2e-3
    schedule: str = "cosine"  # "cosine" (warm-up + cosine to 5%) or "official" (lr * 0.95 ** (step / 100000))
    steps: int = 2000  # optimisation steps
    episodes_per_step: int = 2  # episodes averaged per step (official: 1)
    max_minutes: float | None = None  # stop after this much wall time (the schedule follows the time fraction)
    grad_clip: float | None = 5.0
    unlabeled_mask_start: float = 1.0  # probability of masking an unlabeled sample at the start of training ...
    unlabeled_mask_end: float = 0.0  # ... and at the end of the warm-up
    unlabeled_warmup: float = 0.5  # fraction of training over which the masking probability decays
    seed: int = 0
    log_every: int = 50  # steps between history records

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def integer(name: str, low: int, high: int | None = None) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low or (high and v > high):
                raise ParameterError(f"{name} must be an integer in [{low}, {high or 'inf'}], got {v!r}.")

        integer("n_way", 2)
        integer("channels", 1, 512)
        integer("in_channels", 1)
        integer("embed_dim", 1)
        integer("shared_dim", 1)
        integer("transformer_layers", 1)
        integer("heads", 1)
        integer("ffn_mult", 1)
        integer("steps", 1)
        integer("episodes_per_step", 1)
        integer("log_every", 1)
        integer("image_size", 16)
        if self.local_channels is not None:
            integer("local_channels", 1)
        if self.generate not in GENERATE:
            raise ParameterError(f"generate must be one of {GENERATE} (logits only, or all conv layers too), "
                                 f"got {self.generate!r}.")
        if self.bn_mode not in BN_MODES:
            raise ParameterError(f"bn_mode must be one of {BN_MODES}, got {self.bn_mode!r}.")
        if self.optimizer not in ("adam", "sgd"):
            raise ParameterError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}.")
        if self.schedule not in ("cosine", "official"):
            raise ParameterError(f"schedule must be 'cosine' or 'official', got {self.schedule!r}.")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ParameterError(f"lr must be a positive number, got {self.lr!r}.")
        for name in ("unlabeled_mask_start", "unlabeled_mask_end", "unlabeled_warmup"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 <= v <= 1):
                raise ParameterError(f"{name} must be in [0, 1], got {v!r}.")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ParameterError(f"max_minutes must be positive or None, got {self.max_minutes!r}.")

    @property
    def local_dim(self) -> int:
        return 2 * (self.local_channels or self.channels)

    @property
    def feature_size(self) -> int:
        """Spatial side of the last conv block's output (28 -> 14 -> 7 -> 3 -> 1)."""
        s = self.image_size
        for _ in range(N_CONV):
            s //= 2
        return s

    @property
    def feature_dim(self) -> int:
        return self.channels * self.feature_size ** 2

    @classmethod
    def official(cls, **overrides: Any) -> "HyperTransformerConfig":
        """The released Omniglot recipe: plain SGD lr 0.02 * 0.95^(step/1e5), one episode per step, 4M steps."""
        base = dict(optimizer="sgd", lr=0.02, schedule="official", steps=4_000_000, episodes_per_step=1,
                    grad_clip=None, heads=2, embed_dim=32, shared_dim=32, transformer_layers=3)
        base.update(overrides)
        return cls(**base)


# --------------------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------------------

class EncoderLayer(nn.Module):
    """Post-LayerNorm transformer encoder layer (softmax attention, ReLU FFN, no dropout) that can return its
    head-averaged attention map."""

    def __init__(self, d: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(d, ffn), nn.ReLU(), nn.Linear(ffn, d))
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        a, w = self.attn(x, x, x, need_weights=need_weights, average_attn_weights=True)
        x = self.norm1(x + a)
        x = self.norm2(x + self.ff(x))
        return x, w


class LocalFeatures(nn.Module):
    """Two 3x3 convs (stride 2, then 1), each global-average-pooled, concatenated: ``2 * out`` features."""

    def __init__(self, in_channels: int, out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(out, out, 3, stride=1, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.conv1(z))
        b = F.relu(self.conv2(a))
        return torch.cat([a.mean((2, 3)), b.mean((2, 3))], 1)


class SharedFeatures(nn.Module):
    """The shared feature extractor: 4 x [3x3 conv (strides 2, 2, 2, 1) -> BN (batch statistics) -> ReLU], GAP."""

    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__()
        chans = [in_channels, dim, dim, dim, dim]
        self.convs = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], 3, stride=s, padding=1)
                                   for i, s in enumerate((2, 2, 2, 1)))
        self.bns = nn.ModuleList(nn.BatchNorm2d(dim, track_running_stats=False) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, bn in zip(self.convs, self.bns):
            x = F.relu(bn(conv(x)))
        return x.mean((2, 3))


class LayerGenerator(nn.Module):
    """One transformer that writes one layer: ``n_tokens`` slices of ``slice_size`` weights (output allocation)."""

    def __init__(self, n_tokens: int, slice_size: int, sample_dim: int, n_labels: int, cfg: HyperTransformerConfig):
        super().__init__()
        self.n_tokens, self.slice_size, self.embed_dim = n_tokens, slice_size, cfg.embed_dim
        d = max(cfg.embed_dim + sample_dim, cfg.embed_dim + slice_size)
        self.d = int(math.ceil(d / cfg.heads) * cfg.heads)
        self.label_embedding = nn.Embedding(n_labels, cfg.embed_dim)  # n_way classes + "unlabeled"
        self.placeholders = nn.Parameter(torch.randn(n_tokens, cfg.embed_dim))
        self.layers = nn.ModuleList(EncoderLayer(self.d, cfg.heads, cfg.ffn_mult * self.d)
                                    for _ in range(cfg.transformer_layers))
        if cfg.matched_init:
            with torch.no_grad():
                for layer in self.layers:  # query = key projection: a token first attends to tokens like itself
                    q, k, v = layer.attn.in_proj_weight.chunk(3)
                    k.copy_(q)
                    if cfg.identity_values:  # values pass features through: eq. (1) of the paper at init
                        v.copy_(torch.eye(self.d))
                        layer.attn.out_proj.weight.copy_(torch.eye(self.d))
                if n_tokens == n_labels - 1:  # logits: placeholder i starts equal to label embedding i
                    self.placeholders.copy_(self.label_embedding.weight[:n_tokens])

    def forward(self, label_ids: torch.Tensor, features: torch.Tensor,
                need_attention: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``label_ids`` (n,), ``features`` (n, sample_dim) -> weights (n_tokens, slice_size) and, if asked, the
        per-layer attention maps (tokens x tokens, placeholders first)."""
        samples = torch.cat([self.label_embedding(label_ids), features], 1)
        samples = F.pad(samples, (0, self.d - samples.shape[1]))
        weights = F.pad(self.placeholders, (0, self.d - self.embed_dim))
        x = torch.cat([weights, samples], 0).unsqueeze(0)
        maps = []
        for layer in self.layers:
            x, a = layer(x, need_weights=need_attention)
            if need_attention:
                maps.append(a[0].detach())
        out = x[0, :self.n_tokens, self.embed_dim:self.embed_dim + self.slice_size]
        return out, maps


def _batch_norm(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                stats: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """BN with the batch's own statistics (``stats=None``; returns them) or with given ``(mean, var)``."""
    if stats is None:
        mean, var = h.mean((0, 2, 3)), h.var((0, 2, 3), unbiased=False)
    else:
        mean, var = stats
    out = (h - mean[None, :, None, None]) * torch.rsqrt(var[None, :, None, None] + 1e-5)
    return out * weight[None, :, None, None] + bias[None, :, None, None], (mean, var)


class TargetCNN(nn.Module):
    """The 4-layer CNN's *learned* parts: BN affine parameters, and the conv weights of non-generated layers."""

    def __init__(self, cfg: HyperTransformerConfig, learned_convs: Iterable[int]) -> None:
        super().__init__()
        c = cfg.channels
        self.learned = sorted(learned_convs)
        self.convs = nn.ParameterDict()
        for i in self.learned:
            w = torch.empty(c, cfg.in_channels if i == 0 else c, 3, 3)
            nn.init.kaiming_normal_(w, nonlinearity="relu")
            self.convs[str(i)] = nn.Parameter(w)
        self.bn_weight = nn.Parameter(torch.ones(N_CONV, c))
        self.bn_bias = nn.Parameter(torch.zeros(N_CONV, c))

    def block(self, i: int, h: torch.Tensor, weight: torch.Tensor,
              stats: tuple[torch.Tensor, torch.Tensor] | None = None):
        """conv 'same' (no bias) -> ReLU -> MaxPool 2 -> BN; returns ``(output, bn_stats_used)``.

        Channels-last memory makes these few-channel convolutions and poolings about 1.5x faster on a CPU
        (fwd + bwd of the 8-channel CNN on 60 images: 7.6 -> 4.9 ms); the result is the same up to rounding."""
        h = h.contiguous(memory_format=torch.channels_last)
        h = F.max_pool2d(F.relu(F.conv2d(h, weight, padding=1)), 2)
        return _batch_norm(h, self.bn_weight[i], self.bn_bias[i], stats)

    def features(self, x: torch.Tensor, conv_weights: list[torch.Tensor], stats: list | None = None):
        """Flattened features of ``x`` through the 4 blocks; returns ``(features, bn stats per block)``."""
        used = []
        for i in range(N_CONV):
            x, s = self.block(i, x, conv_weights[i], None if stats is None else stats[i])
            used.append(s)
        return x.flatten(1), used


@dataclass
class GeneratedWeights:
    """The weights of one episode's CNN: 4 conv kernels (generated or learned), the logits layer, BN statistics
    (only with ``bn_mode="support"``) and, if asked, attention maps per generated layer."""

    conv: list[torch.Tensor]
    logits_weight: torch.Tensor  # (n_way, feature_dim)
    logits_bias: torch.Tensor  # (n_way,)
    bn_stats: list | None = None
    attention: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    generated: tuple[str, ...] = ()

    def flat_logits(self) -> torch.Tensor:
        """The logits layer as one vector (for comparing episodes)."""
        return torch.cat([self.logits_weight, self.logits_bias[:, None]], 1).flatten()


@dataclass
class EvalResult:
    """Per-episode query accuracies on a set of episodes, their mean ± 95% CI, and the speed."""

    accuracy: Any  # workbench.evaluation.MeanCI
    accuracies: np.ndarray
    seconds: float
    episodes_per_second: float

    def __str__(self) -> str:
        return f"{self.accuracy} ({self.episodes_per_second:.1f} episodes/s)"


# --------------------------------------------------------------------------------------------------------------
# Episodic learners: one training loop, three models
# --------------------------------------------------------------------------------------------------------------

def _episodes(source: Any) -> Iterator:
    if hasattr(source, "sample"):
        while True:
            yield source.sample()
    else:
        yield from source


class _EpisodicLearner(nn.Module):
    """Shared training loop (query cross-entropy, batches of episodes) and episode-level evaluation."""

    config: HyperTransformerConfig

    def episode_logits(self, episode: Any, *, unlabeled: bool = True, mask_p: float = 0.0,
                       gen: torch.Generator | None = None) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _schedule(self, fraction: float) -> float:
        cfg = self.config
        if cfg.schedule == "official":
            return 0.95 ** (self.step_ / 100_000)
        warm = 0.02
        if fraction < warm:
            return (fraction + 1e-3) / warm
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, (fraction - warm) / (1 - warm))))

    def fit(self, episodes: Any, *, val: Any = None, val_episodes: int = 50, log: Any = None,
            show_progress: bool = True, state_path: Path | str | None = None, save_every_minutes: float = 5.0,
            resume: bool = False, stop_after: int | None = None) -> "_EpisodicLearner":
        """Train on ``episodes`` (an EpisodeSampler, read with ``sample()`` so it moves on, or an iterable of
        Episodes) for ``config.steps`` steps (or ``config.max_minutes``). ``val``: a sampler scored every
        ``log_every`` steps (its first ``val_episodes`` episodes). ``log``: a callable receiving one line of text
        per record.

        Long runs: with ``state_path`` the complete training state (model, optimiser, step, sampler position,
        both random generators, history, elapsed time) is written there atomically every ``save_every_minutes``,
        at the end, and when Ctrl-C or SIGTERM arrives (the step in progress finishes first; then
        :class:`~workbench.train.TrainingInterrupted` is raised). ``resume=True`` continues from that file; the
        result equals an uninterrupted run of the same length (tested). ``stop_after``: save and return after
        this many steps in total (train in chunks). Resuming needs an :class:`EpisodeSampler` (its position is
        saved), not a plain iterable.
        """
        from workbench.train import (StopRequest, TrainingInterrupted, load_training_state,
                                     save_training_state)

        cfg = self.config
        if (state_path is not None or resume) and not hasattr(episodes, "sample"):
            raise ParameterError("resumable training needs an EpisodeSampler (its position is saved), "
                                 "not a plain iterable of episodes.")
        if resume and state_path is None:
            raise ParameterError("resume=True needs state_path= (the file written by an earlier run).")
        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        params = [p for p in self.parameters() if p.requires_grad]
        opt = (torch.optim.Adam(params, lr=cfg.lr) if cfg.optimizer == "adam"
               else torch.optim.SGD(params, lr=cfg.lr))
        self.history_ = History()
        self.step_ = 0
        run_loss, run_acc, run_n = 0.0, 0.0, 0
        elapsed_before = 0.0
        if resume:
            state = load_training_state(state_path)
            self._check_state(state, state_path)
            self.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            self.step_ = int(state["step"])
            self.history_ = History(list(state["history"]))
            run_loss, run_acc, run_n = float(state["running"][0]), float(state["running"][1]), int(state["running"][2])
            torch.set_rng_state(state["rng_torch"])
            gen.set_state(state["rng_generator"])
            episodes._next = int(state["sampler_next"])
            elapsed_before = float(state["elapsed_seconds"])
            if log is not None:
                log(f"# resumed at step {self.step_} ({self.step_ * cfg.episodes_per_step} episodes) from {state_path}")

        def snapshot() -> None:
            save_training_state(state_path, {
                "format": 1, "kind": type(self).__name__, "config": asdict(cfg), "model": self.state_dict(),
                "optimizer": opt.state_dict(), "step": self.step_, "history": self.history_.records,
                "running": [run_loss, run_acc, run_n], "rng_torch": torch.get_rng_state(),
                "rng_generator": gen.get_state(), "sampler_next": int(episodes._next),
                "elapsed_seconds": elapsed_before + time.perf_counter() - start})

        stream = _episodes(episodes)
        start = time.perf_counter()
        last_save = start
        budget = None if cfg.max_minutes is None else 60.0 * cfg.max_minutes
        last_step = cfg.steps if stop_after is None else min(cfg.steps, int(stop_after))
        steps = range(self.step_, last_step)
        bar = progress(steps, desc=type(self).__name__, total=last_step, initial=self.step_, leave=False,
                       disable=not show_progress) if show_progress else steps
        with StopRequest() if state_path is not None else contextlib.nullcontext(None) as stop:
            for step in bar:
                elapsed = elapsed_before + time.perf_counter() - start
                fraction = step / cfg.steps if budget is None else max(step / cfg.steps, elapsed / budget)
                if budget is not None and elapsed >= budget:
                    break
                for group in opt.param_groups:
                    group["lr"] = cfg.lr * self._schedule(fraction)
                mask_p = cfg.unlabeled_mask_end if cfg.unlabeled_warmup == 0 else (
                    cfg.unlabeled_mask_start + (cfg.unlabeled_mask_end - cfg.unlabeled_mask_start)
                    * min(1.0, fraction / cfg.unlabeled_warmup))
                self.train()
                opt.zero_grad()
                total = 0.0
                for _ in range(cfg.episodes_per_step):
                    episode = next(stream)
                    logits = self.episode_logits(episode, mask_p=mask_p, gen=gen)
                    loss = F.cross_entropy(logits, episode.query_y) / cfg.episodes_per_step
                    loss.backward()
                    total += float(loss.detach())
                    run_acc += float((logits.argmax(1) == episode.query_y).float().mean())
                check_finite(total, where=f"step {step}", hint="Lower lr, or set grad_clip.")
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                self.step_ = step + 1
                run_loss += total
                run_n += 1
                if self.step_ % cfg.log_every == 0 or self.step_ == cfg.steps:
                    record = dict(step=self.step_, episodes=self.step_ * cfg.episodes_per_step,
                                  loss=run_loss / run_n, train_accuracy=run_acc / (run_n * cfg.episodes_per_step),
                                  lr=opt.param_groups[0]["lr"],
                                  seconds=elapsed_before + time.perf_counter() - start)
                    if val is not None:
                        record["val_accuracy"] = self.evaluate(val, val_episodes, unlabeled=False).accuracy.mean
                    self.history_.log(**record)
                    if log is not None:
                        log("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                      for k, v in record.items()))
                    run_loss, run_acc, run_n = 0.0, 0.0, 0
                if state_path is not None and (stop or time.perf_counter() - last_save >= 60 * save_every_minutes):
                    snapshot()
                    last_save = time.perf_counter()
                    if stop:
                        if log is not None:
                            log(f"# stopped by {stop.requested} at step {self.step_}; state saved to {state_path}")
                        raise TrainingInterrupted(f"training stopped by {stop.requested} at step {self.step_} of "
                                                  f"{cfg.steps}; resume with the same command and --resume "
                                                  f"(state: {state_path}).", state_path)
            if state_path is not None:
                snapshot()
        self.train_seconds_ = elapsed_before + time.perf_counter() - start
        self.train_episodes_ = self.step_ * cfg.episodes_per_step
        self.eval()
        return self

    def _check_state(self, state: dict[str, Any], path: Any) -> None:
        """A saved state must come from the same kind of model with the same configuration."""
        kind = state.get("kind")
        if kind != type(self).__name__:
            raise ParameterError(f"the training state {path} belongs to a {kind}, not a {type(self).__name__}.")
        saved, own = state.get("config", {}), asdict(self.config)
        differ = sorted(k for k in set(saved) | set(own) if saved.get(k) != own.get(k))
        if differ:
            detail = ", ".join(f"{k}: saved {saved.get(k)!r} vs now {own.get(k)!r}" for k in differ[:6])
            raise ParameterError(f"the training state {path} was made with another configuration ({detail}); "
                                 "resume with the same settings, or start a new run without resume.")

    @torch.no_grad()
    def predict(self, episode: Any, *, unlabeled: bool = True) -> torch.Tensor:
        """Predicted labels (0..n_way-1) of the episode's query images."""
        self.eval()
        return self.episode_logits(episode, unlabeled=unlabeled).argmax(1)

    @torch.no_grad()
    def evaluate(self, episodes: Any, n_episodes: int = 200, *, unlabeled: bool = True) -> EvalResult:
        """Mean query accuracy ± 95% CI over ``n_episodes`` episodes (a sampler is read from its episode 0)."""
        from workbench.evaluation import mean_ci95

        self.eval()
        source = (episodes.episode(i) for i in range(n_episodes)) if hasattr(episodes, "episode") else episodes
        accs, start = [], time.perf_counter()
        for i, episode in enumerate(source):
            if i >= n_episodes:
                break
            accs.append(float((self.episode_logits(episode, unlabeled=unlabeled).argmax(1)
                               == episode.query_y).float().mean()))
        seconds = time.perf_counter() - start
        accs_np = np.asarray(accs)
        return EvalResult(mean_ci95(accs_np), accs_np, seconds, len(accs) / max(seconds, 1e-9))


class HyperTransformer(_EpisodicLearner):
    """Generates a 4-layer CNN (logits layer, or all layers) from an episode's support set; see the module doc."""

    def __init__(self, config: HyperTransformerConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        cfg = config if config is not None else HyperTransformerConfig()
        if overrides:
            cfg = HyperTransformerConfig(**{**asdict(cfg), **overrides})
        if cfg.feature_size < 1:
            raise ParameterError(f"image_size {cfg.image_size} is too small for 4 pooling layers.")
        self.config = cfg
        with torch.random.fork_rng(devices=[]):  # the initial weights depend on config.seed only
            torch.manual_seed(cfg.seed)
            self._build(cfg)

    def _build(self, cfg: HyperTransformerConfig) -> None:
        c, n_labels = cfg.channels, cfg.n_way + 1
        self.generated_convs = list(range(N_CONV)) if cfg.generate == "all" else []
        self.cnn = TargetCNN(cfg, [i for i in range(N_CONV) if i not in self.generated_convs])
        self.shared = SharedFeatures(cfg.in_channels, cfg.shared_dim)
        self.local = nn.ModuleDict()
        self.generators = nn.ModuleDict()
        for i in self.generated_convs:
            c_in = cfg.in_channels if i == 0 else c
            self.local[str(i)] = LocalFeatures(c_in, cfg.local_channels or c)
            self.generators[f"conv{i}"] = LayerGenerator(c, 9 * c_in, cfg.local_dim + cfg.shared_dim, n_labels, cfg)
        self.generators["logits"] = LayerGenerator(cfg.n_way, cfg.feature_dim + 1, cfg.feature_dim + cfg.shared_dim,
                                                   n_labels, cfg)

    def _check_episode(self, episode: Any) -> None:
        n_way = int(episode.support_y.max()) + 1 if len(episode.support_y) else 0
        if n_way > self.config.n_way:
            raise ParameterError(f"the episode has {n_way} classes but this HyperTransformer generates "
                                 f"{self.config.n_way} logits (config.n_way); build it with n_way={n_way}.")
        if tuple(episode.support_x.shape[1:]) != (self.config.in_channels, self.config.image_size,
                                                  self.config.image_size):
            raise ParameterError(f"images must be ({self.config.in_channels}, {self.config.image_size}, "
                                 f"{self.config.image_size}); got {tuple(episode.support_x.shape[1:])}.")

    def generate(self, episode: Any, *, unlabeled: bool = True, mask_p: float = 0.0,
                 gen: torch.Generator | None = None, need_attention: bool = False) -> GeneratedWeights:
        """The CNN weights for ``episode``'s support set (+ its unlabeled samples when ``unlabeled``).

        ``mask_p``: probability of dropping each unlabeled sample (training-time curriculum)."""
        self._check_episode(episode)
        cfg = self.config
        x, labels = episode.support_x, episode.support_y
        if unlabeled and len(episode.unlabeled_x):
            ux = episode.unlabeled_x
            if mask_p > 0:
                keep = torch.rand(len(ux), generator=gen) >= mask_p
                ux = ux[keep]
            x = torch.cat([x, ux])
            labels = torch.cat([labels, torch.full((len(ux),), cfg.n_way, dtype=labels.dtype)])
        shared = self.shared(x)
        conv, stats, attention, h = [], [], {}, x
        for i in range(N_CONV):
            if i in self.generated_convs:
                feats = torch.cat([self.local[str(i)](h), shared], 1)
                w, maps = self.generators[f"conv{i}"](labels, feats, need_attention)
                w = w.reshape(cfg.channels, h.shape[1], 3, 3)
                attention[f"conv{i}"] = maps
            else:
                w = self.cnn.convs[str(i)]
            h, s = self.cnn.block(i, h, w)
            conv.append(w)
            stats.append(s)
        feats = h.flatten(1)
        out, maps = self.generators["logits"](labels, torch.cat([feats, shared], 1), need_attention)
        attention["logits"] = maps
        generated = tuple(f"conv{i}" for i in self.generated_convs) + ("logits",)
        return GeneratedWeights(conv, out[:, :-1], out[:, -1], stats if cfg.bn_mode == "support" else None,
                                attention if need_attention else {}, generated)

    def classify(self, weights: GeneratedWeights, x: torch.Tensor) -> torch.Tensor:
        """Logits of images ``x`` under generated ``weights``."""
        feats, _ = self.cnn.features(x, weights.conv, weights.bn_stats)
        return feats @ weights.logits_weight.T + weights.logits_bias

    def episode_logits(self, episode: Any, *, unlabeled: bool = True, mask_p: float = 0.0,
                       gen: torch.Generator | None = None) -> torch.Tensor:
        weights = self.generate(episode, unlabeled=unlabeled, mask_p=mask_p, gen=gen)
        return self.classify(weights, episode.query_x)[:, :int(episode.n_way)]

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.parameters())
        return (f"<HyperTransformer {self.config.n_way}-way, {self.config.channels} channels, generates "
                f"{', '.join(list(self.generators))}; {n:,} parameters>")


class ProtoNet(_EpisodicLearner):
    """Prototypical Networks on the same 4-layer CNN: logits = -squared distance to the support class means."""

    def __init__(self, config: HyperTransformerConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        cfg = config if config is not None else HyperTransformerConfig()
        if overrides:
            cfg = HyperTransformerConfig(**{**asdict(cfg), **overrides})
        self.config = cfg
        with torch.random.fork_rng(devices=[]):  # the initial weights depend on config.seed only
            torch.manual_seed(cfg.seed)
            self.cnn = TargetCNN(cfg, range(N_CONV))

    def embed(self, x: torch.Tensor, stats: list | None = None):
        return self.cnn.features(x, [self.cnn.convs[str(i)] for i in range(N_CONV)], stats)

    def support_query_features(self, episode: Any) -> tuple[torch.Tensor, torch.Tensor]:
        fs, stats = self.embed(episode.support_x)
        fq, _ = self.embed(episode.query_x, stats if self.config.bn_mode == "support" else None)
        return fs, fq

    def episode_logits(self, episode: Any, *, unlabeled: bool = True, mask_p: float = 0.0,
                       gen: torch.Generator | None = None) -> torch.Tensor:
        fs, fq = self.support_query_features(episode)
        n_way = int(episode.n_way)
        protos = torch.zeros(n_way, fs.shape[1]).index_add_(0, episode.support_y, fs)
        protos = protos / torch.bincount(episode.support_y, minlength=n_way).clamp(min=1)[:, None].float()
        return -torch.cdist(fq, protos).pow(2)


class FineTuneLogits(nn.Module):
    """Baseline: a fresh logits layer trained on the support features of a frozen ``backbone`` (a ProtoNet),
    ``steps`` of full-batch Adam from zero, then applied to the query features."""

    def __init__(self, backbone: ProtoNet, steps: int = 100, lr: float = 0.1, weight_decay: float = 1e-3) -> None:
        super().__init__()
        self.backbone, self.steps, self.lr, self.weight_decay = backbone, steps, lr, weight_decay
        self.config = backbone.config

    def episode_logits(self, episode: Any, *, unlabeled: bool = True, **_: Any) -> torch.Tensor:
        with torch.no_grad():
            fs, fq = self.backbone.support_query_features(episode)
        n_way = int(episode.n_way)
        w = torch.zeros(n_way, fs.shape[1], requires_grad=True)
        b = torch.zeros(n_way, requires_grad=True)
        opt = torch.optim.Adam([w, b], lr=self.lr)
        with torch.enable_grad():
            for _ in range(self.steps):
                loss = F.cross_entropy(fs @ w.T + b, episode.support_y) + self.weight_decay * w.pow(2).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
        return (fq @ w.T + b).detach()

    predict = _EpisodicLearner.predict
    evaluate = _EpisodicLearner.evaluate


# --------------------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------------------

def save_model(model: _EpisodicLearner, path: Path, meta: dict[str, Any] | None = None) -> Path:
    """Save a HyperTransformer/ProtoNet with its config (weights only + json sidecar with sha256)."""
    from workbench.checkpoints import save_checkpoint

    return save_checkpoint(Path(path), model.state_dict(),
                           {"model": f"workbench.methods.hypertransformer.{type(model).__name__}",
                            "config": asdict(model.config), **(meta or {})})


def load_model(path: Path | str | None = None, *, config: HyperTransformerConfig | None = None,
               verify: bool = True) -> _EpisodicLearner:
    """Load a saved model (default: the shipped ``workbench/checkpoints/hypertransformer.pt``).

    The model is rebuilt from the config recorded in the checkpoint, or from ``config`` when given (then every
    tensor shape must fit, else a :class:`~workbench.errors.DataError` names the mismatches). The checkpoint's
    meta is attached as ``model.meta``."""
    from workbench.checkpoints import load_checkpoint, load_into
    from workbench.paths import checkpoints_dir

    path = Path(path) if path is not None else checkpoints_dir() / f"{CHECKPOINT_NAME}.pt"
    state, meta = load_checkpoint(path, verify=verify)
    kind = str(meta.get("model", "HyperTransformer")).rsplit(".", 1)[-1]
    classes = {"HyperTransformer": HyperTransformer, "ProtoNet": ProtoNet}
    if kind not in classes:
        raise DataError(f"checkpoint {path.name} holds a {kind!r}, not a HyperTransformer or ProtoNet.")
    if config is None:
        if "config" not in meta:
            raise DataError(f"checkpoint {path.name} records no config; pass config= to say how to build the model.")
        known = {f.name for f in fields(HyperTransformerConfig)}
        config = HyperTransformerConfig(**{k: v for k, v in meta["config"].items() if k in known})
    model = classes[kind](config)
    load_into(model, state, source=path.name)
    model.meta = meta
    return model.eval()


def load_hypertransformer(path: Path | str | None = None, **kwargs: Any) -> HyperTransformer:
    """The shipped HyperTransformer checkpoint (8 channels; see its .json sidecar and .log)."""
    return load_model(path, **kwargs)


# --------------------------------------------------------------------------------------------------------------
# Omniglot protocol and the shipped checkpoint
# --------------------------------------------------------------------------------------------------------------

def omniglot_samplers(n_way: int = 20, k_shot: int = 1, q_query: int | None = None, n_unlabeled: int = 0,
                      *, seed: int = 0, overlap: bool = False, omniglot: Any = None) -> dict[str, Any]:
    """EpisodeSamplers for the HyperTransformer Omniglot protocol: ``train`` (1150 classes, random 90°·k
    rotations per class), ``val`` (50 classes) and ``test`` (423 classes), no rotation at val/test.
    ``q_query`` defaults to the official 3 (1-shot) or 5 (5-shot) query images per class."""
    from workbench.data import EpisodeSampler, load_omniglot, omniglot_split

    om = omniglot if omniglot is not None else load_omniglot(28)
    split = omniglot_split("ht")
    q = q_query if q_query is not None else (3 if k_shot == 1 else 5)
    common = dict(n_way=n_way, k_shot=k_shot, q_query=q, n_unlabeled=n_unlabeled, overlap=overlap)
    return {"train": EpisodeSampler(om.images, om.labels, rotate=True, seed=seed, classes=split["train"], **common),
            "val": EpisodeSampler(om.images, om.labels, seed=10_000 + seed, classes=split["val"], **common),
            "test": EpisodeSampler(om.images, om.labels, seed=20_000 + seed, classes=split["test"], **common)}


#: Training sizes for ``workbench train hypertransformer``; ``full`` made the shipped checkpoint (a long run:
#: resumable, see :func:`train_checkpoint`).
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {"steps": 20, "max_minutes": None, "val_episodes": 5, "test_episodes": 10, "log_every": 10},
    "default": {"steps": 1500, "max_minutes": 5.0, "val_episodes": 50, "test_episodes": 200, "log_every": 100},
    "full": {"steps": 150_000, "max_minutes": None, "val_episodes": 100, "test_episodes": 1000, "log_every": 1000},
}
#: The shipped model: 8 channels, logits generated, 20-way 1-shot with up to 2 unlabeled images per class.
SHIPPED = dict(n_way=20, channels=8, generate="logits")
SHIPPED_EPISODES = dict(k_shot=1, n_unlabeled=2)


def train_checkpoint(profile: str = "full", seed: int = 0, output_dir: Path | None = None, *,
                     threads: int | None = 1, resume: bool = False, save_every_minutes: float = 5.0) -> Path:
    """``workbench train hypertransformer``: train the shipped model and write ``hypertransformer.pt`` (+ .json
    sidecar with sha256 and held-out metrics, + .log) to ``output_dir`` (default ``workbench/checkpoints``).

    The run keeps a resumable state in ``hypertransformer.state.pt`` beside it (every ``save_every_minutes``,
    and on Ctrl-C or SIGTERM); ``resume=True`` (``--resume``) continues from it and gives the same model as an
    uninterrupted run. Delete the state file to start over."""
    if profile not in PROFILES:
        raise ParameterError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}.")
    with torch_threads(threads):
        return _train_checkpoint(profile, seed, output_dir, resume, save_every_minutes)


def _train_checkpoint(profile: str, seed: int, output_dir: Path | None, resume: bool,
                      save_every_minutes: float) -> Path:
    from workbench.paths import checkpoints_dir

    p = PROFILES[profile]
    output_dir = Path(output_dir) if output_dir is not None else checkpoints_dir()
    output_dir.mkdir(parents=True, exist_ok=True)
    cfg = HyperTransformerConfig(**SHIPPED, steps=p["steps"], max_minutes=p["max_minutes"], seed=seed,
                                 log_every=p["log_every"], unlabeled_mask_end=0.3)
    samplers = omniglot_samplers(cfg.n_way, seed=seed, **SHIPPED_EPISODES)
    command = f"workbench train hypertransformer --profile {profile} --seed {seed}"
    path_log = output_dir / f"{CHECKPOINT_NAME}.log"
    state_path = output_dir / f"{CHECKPOINT_NAME}.state.pt"
    if resume and path_log.exists():
        lines = path_log.read_text().splitlines()
    else:
        if state_path.exists() and not resume:
            raise ParameterError(f"{state_path} holds the state of an unfinished run: continue it with "
                                 f"`{command} --resume`, or delete the file to start over.")
        lines = [f"# {command}",
                 f"# 20-way {SHIPPED_EPISODES['k_shot']}-shot Omniglot (ht split, rotations), up to "
                 f"{SHIPPED_EPISODES['n_unlabeled']} unlabeled/class (mask 1.0 -> 0.3); config: {asdict(cfg)}"]
    lines.append(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, "
                 f"{platform.processor() or platform.machine()}")

    def log(line: str) -> None:
        lines.append(line)
        path_log.write_text("\n".join(lines) + "\n")

    model = HyperTransformer(cfg).fit(samplers["train"], val=samplers["val"], val_episodes=p["val_episodes"], log=log,
                                      state_path=state_path if profile != "smoke" else None,
                                      resume=resume, save_every_minutes=save_every_minutes)
    metrics: dict[str, Any] = {"train_episodes": model.train_episodes_, "train_seconds": round(model.train_seconds_, 1),
                               "train_episodes_per_second": round(model.train_episodes_ / model.train_seconds_, 2)}
    for shots in (1, 5):
        test = omniglot_samplers(cfg.n_way, k_shot=shots, seed=seed)["test"]
        res = model.evaluate(test, p["test_episodes"])
        metrics[f"test_{shots}shot"] = {"mean": round(res.accuracy.mean, 4), "ci95": round(res.accuracy.ci95, 4),
                                        "episodes": res.accuracy.n,
                                        "episodes_per_second": round(res.episodes_per_second, 1)}
        log(f"test 20-way {shots}-shot (423 test classes, {res.accuracy.n} episodes): {res}")
    semi = omniglot_samplers(cfg.n_way, k_shot=1, n_unlabeled=2, seed=seed)["test"]
    res = model.evaluate(semi, p["test_episodes"])
    metrics["test_1shot_2unlabeled"] = {"mean": round(res.accuracy.mean, 4), "ci95": round(res.accuracy.ci95, 4),
                                        "episodes": res.accuracy.n}
    log(f"test 20-way 1-shot + 2 unlabeled/class: {res}")
    path = save_model(model, output_dir / f"{CHECKPOINT_NAME}.pt", {
        "command": command, "profile": profile, "seed": seed, "episodes": SHIPPED_EPISODES,
        "data": "Omniglot 28x28, HyperTransformer split (seed 2022): 1150 train / 50 val / 423 test classes",
        "metrics": metrics, "history": model.history_.records})
    return path


#: The ProtoNet baseline checkpoint (same CNN, same 20-way 1-shot episodes; converges much faster than HT).
PROTONET_PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {"steps": 20, "max_minutes": None, "test_episodes": 10},
    "default": {"steps": 1500, "max_minutes": 2.0, "test_episodes": 200},
    "full": {"steps": 5000, "max_minutes": 5.0, "test_episodes": 500},
}


def train_protonet_checkpoint(profile: str = "full", seed: int = 0, output_dir: Path | None = None, *,
                              threads: int | None = 1) -> Path:
    """``workbench train hypertransformer-protonet``: the ProtoNet baseline on the same 8-channel CNN and
    20-way 1-shot episodes, written as ``hypertransformer_protonet.pt`` (+ .json, .log)."""
    from workbench.paths import checkpoints_dir

    if profile not in PROTONET_PROFILES:
        raise ParameterError(f"profile must be one of {', '.join(PROTONET_PROFILES)}, got {profile!r}.")
    p = PROTONET_PROFILES[profile]
    output_dir = Path(output_dir) if output_dir is not None else checkpoints_dir()
    output_dir.mkdir(parents=True, exist_ok=True)
    name = f"{CHECKPOINT_NAME}_protonet"
    command = f"workbench train hypertransformer-protonet --profile {profile} --seed {seed}"
    lines = [f"# {command}", "# ProtoNet, 8-channel 4-layer CNN, 20-way 1-shot Omniglot (ht split, rotations)",
             f"# torch {torch.__version__}, {threads} threads, {platform.processor() or platform.machine()}"]

    def log(line: str) -> None:
        lines.append(line)
        (output_dir / f"{name}.log").write_text("\n".join(lines) + "\n")

    with torch_threads(threads):
        cfg = HyperTransformerConfig(n_way=20, channels=8, steps=p["steps"], max_minutes=p["max_minutes"],
                                     seed=seed, log_every=max(5, p["steps"] // 20))
        samplers = omniglot_samplers(20, k_shot=1, seed=seed)
        model = ProtoNet(cfg).fit(samplers["train"], val=samplers["val"], val_episodes=30, log=log)
        metrics: dict[str, Any] = {"train_episodes": model.train_episodes_,
                                   "train_seconds": round(model.train_seconds_, 1)}
        for shots in (1, 5):
            res = model.evaluate(omniglot_samplers(20, k_shot=shots, seed=seed)["test"], p["test_episodes"])
            metrics[f"test_{shots}shot"] = {"mean": round(res.accuracy.mean, 4), "ci95": round(res.accuracy.ci95, 4),
                                            "episodes": res.accuracy.n}
            log(f"test 20-way {shots}-shot: {res}")
        return save_model(model, output_dir / f"{name}.pt", {
            "command": command, "profile": profile, "seed": seed, "metrics": metrics,
            "history": model.history_.records})


def load_protonet(path: Path | str | None = None, **kwargs: Any) -> ProtoNet:
    """The shipped ProtoNet baseline (``hypertransformer_protonet.pt``)."""
    from workbench.paths import checkpoints_dir

    return load_model(path if path is not None else checkpoints_dir() / f"{CHECKPOINT_NAME}_protonet.pt", **kwargs)
