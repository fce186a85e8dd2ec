r"""TAFE-Net: task-aware feature embeddings from a weight-generating meta learner (zero-shot learning).

Wang, Ye, Zhang, Darrell, Gonzalez, CVPR 2019 (seed 000, sections 3–4). Instead of one image embedding shared
by every task, a **meta learner** :math:`\mathcal{G}` reads a task description :math:`t` (a class's attribute
vector, a sentence embedding, or a one-hot id) and generates the weights of the feature layers of a
**prediction network** :math:`\mathcal{F}`; the same image then has a different embedding — its *task-aware
feature embedding*, TAFE — for each task, and one task-independent binary classifier answers "does this input
belong to this task?".

.. math::
    e_t = \mathcal{T}(t), \qquad w^{(i)}_t = g^i(e_t), \qquad
    \mathbf{W}^i = \mathbf{W}^i_{sr}\,\mathrm{diag}(w^{(i)}_t) \;\; (\text{eq. 4; conv: } \mathbf{W}^i_{sr} *_{c_{out}} w^{(i)}_t,
    \text{ eq. 3})

**Weight factorization.** Generating a full 2048×2048 matrix per task from a handful of training tasks is
hopeless; the generator only produces the per-output scale :math:`w^{(i)}_t` (one number per output unit or
channel) and the large matrix :math:`\mathbf{W}^i_{sr}` is shared by all tasks. Computationally
:math:`x\,\mathbf{W}_{sr}\mathrm{diag}(w) = (x\,\mathbf{W}_{sr})\odot w`, so a layer is an ordinary linear layer
whose output is multiplied element-wise by the generated vector (:class:`FactorizedLinear`,
:class:`FactorizedConv2d`).

**Loss** (eq. 5–6). Every image :math:`x_j` of a batch is paired with the description of every class present
in the batch; the target :math:`q_{ij}` is 1 for its own class, 0 otherwise:

.. math::
    \mathcal{L} = \underbrace{\mathrm{BCE}\big(\mathcal{F}(x_j; t_i),\, q_{ij}\big)}_{\mathcal{L}_{cls}}
      + \beta\,\underbrace{\frac{1}{TS}\sum_{i,j}\big(\max(\cos(\mathrm{TAFE}(x_j; t_i), \mathcal{T}(t_i)), 0) - q_{ij}\big)^2}_{\mathcal{L}_{emb}},
      \qquad \beta = 0.1.

The embedding loss pulls an image's TAFE towards the embedding of its own task and pushes it away (cosine
≤ 0) from the others', which couples images and tasks in one joint space and regularises the meta learner
when there are few training tasks.

**Inference.** Score every input against every candidate class description and take the argmax: over the
unseen classes (ZSL) or over all classes (GZSL: S, U and their harmonic mean H, per-class mean accuracy over
the whole split). :meth:`TAFENet.scores` is batched: the first layer's shared product is computed once per
image and broadcast over the tasks, then the pairs go through the other layers in chunks.

Faithful to the official code (ucbdrive/tafe-net @ 93e0496; anchors §3): three 2048-wide FC feature layers,
the output of each multiplied by its generated vector, ReLU on all but the last, Dropout(0.5) and a
Linear(2048, 2048)–ReLU–Linear(2048, 1) binary classifier; task embedding MLP of Linear (no bias)–BN–ReLU blocks
ending in Linear(→2048)–ReLU, one Linear generator per feature layer followed by a ReLU (paper §3.5); batch 32,
Adam 1e-4 (1e-5 for the task embedding network), 60 epochs with lr ×0.1 at epochs 30 and 45; β = 0.1. With
these **fixes**, each documented where it happens:

- **No double sigmoid.** The released code applies a sigmoid and then ``BCEWithLogitsLoss`` (a second
  sigmoid): its loss saturates at log(1 + e) ≈ 1.31 for a confident wrong answer and its gradient vanishes. We
  feed the raw logit to ``binary_cross_entropy_with_logits``.
- **True per-class accuracy.** The released metric averages per-class accuracy *per test batch*; we compute
  the per-class mean accuracy over the whole split (:func:`workbench.evaluation.gzsl_scores`).
- **No test-set model selection.** The released code keeps the epoch with the best *test* H. Here
  ``select_epoch=True`` (the default) trains on the validation split (:meth:`GZSLDataset.validation`: some seen
  classes play the unseen ones), picks the epoch with the best validation H (or ZSL, ``select_metric``), then retrains on trainval for
  that many epochs; the test split is read only by :meth:`TAFENet.evaluate`.
- **The embedding-loss target** :math:`q_{ij}` is the ground-truth pairing (as the official code does); the
  paper's text says "1 if F predicts positive", which would make the loss reinforce the classifier's own
  mistakes. It is a squared error of a value in [0, 1]: no log(0) (official issue #6).
- **Initialisation.** The official N(0, 0.001) initialisation is ``init="official"``; the default is
  PyTorch's (Kaiming-uniform) initialisation, with the generators' biases at 1 so that every generated scale
  starts near 1 (the factorized layers then start as ordinary layers). Measured on digits-7seg validation (5
  seeds, ``benchmarks/bench_tafe_net.py``): see the README's TAFE-Net section.
- **Input scaling.** Image features are standardised with statistics of the training images only.

**The teaching data (digits-7seg)** uses :meth:`TAFENetConfig.small` (widths 256 instead of 2048, the paper's
schedule and β): 64 pixel features and 7 training classes do not need 2048-wide layers, and the small model
trains in seconds on a CPU.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from workbench.errors import ParameterError
from workbench.evaluation import GZSLScores, gzsl_scores, per_class_accuracy
from workbench.train import History, check_finite, configure, progress, resolve_device, torch_threads

Backbone = Literal["mlp", "conv"]
Init = Literal["default", "official"]
Mode = Literal["gzsl", "zsl"]

#: The paper's Table 2 (GZSL, per-class mean accuracy %) and ZSL top-1 (anchors §3). "no_embedding_loss" is the
#: "TAFE-Net *" row (trained without the embedding loss).
PAPER_RESULTS: dict[str, dict[str, float]] = {
    "SUN": {"U": 27.9, "S": 40.2, "H": 33.0, "ZSL": 60.9},
    "CUB": {"U": 41.0, "S": 61.4, "H": 49.2, "ZSL": 56.9},
    "AWA1": {"U": 50.5, "S": 84.4, "H": 63.2, "ZSL": 70.8},
    "AWA2": {"U": 36.7, "S": 90.6, "H": 52.2, "ZSL": 69.3},
    "APY": {"U": 24.3, "S": 75.4, "H": 36.8, "ZSL": 42.3},
}
PAPER_RESULTS_NO_EMBEDDING_LOSS: dict[str, dict[str, float]] = {
    "SUN": {"U": 27.7, "S": 41.1, "H": 33.1},
    "CUB": {"U": 36.5, "S": 60.0, "H": 45.4},
    "AWA1": {"U": 46.1, "S": 81.4, "H": 58.8},
    "AWA2": {"U": 31.9, "S": 91.2, "H": 47.2},
    "APY": {"U": 19.4, "S": 71.3, "H": 30.5},
}


# ----------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TAFENetConfig:
    """Hyperparameters; the defaults are the paper's / official code's (GZSL on 2048-d ResNet features)."""

    #: Widths of the K factorized feature layers of the prediction network (FC: output units; conv: channels).
    #: The last width is the TAFE's dimension.
    feature_widths: tuple[int, ...] = (2048, 2048, 2048)
    #: "mlp": FC layers on feature vectors (eq. 4). "conv": 3x3 conv layers on raw images (``data.images``),
    #: each followed by a 2x2 max-pool while the map is larger than 2x2, then a global average (eq. 3).
    backbone: Backbone = "mlp"
    #: Hidden width of the task embedding network T and the number of its layers (paper: 3; 2 on aPY).
    task_hidden: int = 2048
    task_layers: int = 3
    classifier_hidden: int = 2048
    dropout: float = 0.5
    #: ReLU on the generated weights (paper §3.5, "to enable efficient inference"); False: linear generators.
    generator_relu: bool = True
    #: Weight of the embedding loss (eq. 5); 0 trains without it (the paper's "TAFE-Net *" ablation).
    beta: float = 0.1
    #: False: the same-size non-task-aware baseline (see :class:`TAFENet`).
    task_aware: bool = True
    #: How the baseline (``task_aware=False``) brings the task in: "concat" feeds [image embedding, e_t] to the
    #: same binary classifier (late fusion); "cosine" scores a pair by a scaled cosine of the two (a learned
    #: joint embedding, DeViSE/ALE-style).
    baseline_fusion: Literal["concat", "cosine"] = "concat"
    #: Task description: "attributes" (the class matrix), a key of ``data.side_info`` (e.g. "glyph"), or
    #: "onehot" (a class id: only meaningful for seen classes — it cannot describe an unseen class).
    description: str = "attributes"
    epochs: int = 60
    batch_size: int = 32
    lr: float = 1e-4
    task_lr: float = 1e-5
    lr_milestones: tuple[int, ...] = (30, 45)
    lr_gamma: float = 0.1
    weight_decay: float = 0.0
    init: Init = "default"
    #: Choose the number of epochs on the validation split, then retrain on trainval (see the module docstring).
    select_epoch: bool = True
    #: The validation score that picks the epoch: "H" (GZSL harmonic mean, the paper's target), "ZSL" (accuracy
    #: among the unseen classes) or "S+ZSL" (their mean). When U stays near 0 at every epoch (a strong seen-class
    #: bias, as on the digit teaching data) H is largest for a barely trained model that still guesses unseen
    #: classes; and where validation ZSL hovers at chance, ZSL alone ties at the untrained first epoch. "S+ZSL"
    #: asks for a trained model and then for the best transfer; :meth:`small` uses it.
    select_metric: Literal["H", "ZSL", "S+ZSL"] = "H"
    #: Evaluate the validation score every this many epochs while selecting.
    select_every: int = 1
    #: Standardise image features with the training images' mean and std ("none": use them as they are).
    feature_scaling: Literal["standard", "none"] = "standard"
    #: Image-task pairs per chunk when scoring (memory ~ chunk x widest layer x 4 bytes per layer).
    score_chunk_pairs: int = 65536
    device: str = "cpu"
    num_threads: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.feature_widths or any(int(w) < 1 for w in self.feature_widths):
            raise ParameterError(f"feature_widths must be positive integers; got {self.feature_widths!r}.")
        if self.backbone not in ("mlp", "conv"):
            raise ParameterError(f"backbone must be 'mlp' or 'conv'; got {self.backbone!r}.")
        if self.init not in ("default", "official"):
            raise ParameterError(f"init must be 'default' or 'official'; got {self.init!r}.")
        if self.task_layers < 1 or self.task_hidden < 1 or self.classifier_hidden < 1:
            raise ParameterError("task_layers, task_hidden and classifier_hidden must be positive integers.")
        if self.epochs < 1 or self.batch_size < 2:
            raise ParameterError(f"epochs must be >= 1 and batch_size >= 2; got {self.epochs}, {self.batch_size}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ParameterError(f"dropout must be in [0, 1); got {self.dropout}.")
        if self.beta < 0 or not math.isfinite(self.beta):
            raise ParameterError(f"beta (the embedding-loss weight) must be >= 0; got {self.beta}.")
        if self.lr <= 0 or self.task_lr <= 0:
            raise ParameterError(f"learning rates must be positive; got lr={self.lr}, task_lr={self.task_lr}.")
        if self.baseline_fusion not in ("concat", "cosine"):
            raise ParameterError(f"baseline_fusion must be 'concat' or 'cosine'; got {self.baseline_fusion!r}.")
        if self.select_metric not in ("H", "ZSL", "S+ZSL"):
            raise ParameterError(f"select_metric must be 'H', 'ZSL' or 'S+ZSL'; got {self.select_metric!r}.")
        if self.select_every < 1 or self.score_chunk_pairs < 1:
            raise ParameterError("select_every and score_chunk_pairs must be positive integers.")
        if self.feature_scaling not in ("standard", "none"):
            raise ParameterError(f"feature_scaling must be 'standard' or 'none'; got {self.feature_scaling!r}.")

    @classmethod
    def small(cls, **overrides: Any) -> "TAFENetConfig":
        """The paper's recipe at width 256, selecting epochs on validation (S + ZSL) / 2: for the digit teaching data."""
        base = dict(feature_widths=(256, 256, 256), task_hidden=256, classifier_hidden=256, select_metric="S+ZSL")
        return cls(**{**base, **overrides})

    def learning_rate(self, epoch: int, *, task_network: bool = False) -> float:
        """The learning rate in ``epoch`` (0-based): ×``lr_gamma`` at each milestone passed."""
        base = self.task_lr if task_network else self.lr
        return base * self.lr_gamma ** sum(epoch >= m for m in self.lr_milestones)


# ----------------------------------------------------------------------------------------------------------
# Factorized layers (eq. 3 and 4)
# ----------------------------------------------------------------------------------------------------------
class FactorizedLinear(nn.Module):
    r"""A fully connected layer with weights :math:`\mathbf{W}_{sr}\,\mathrm{diag}(w_{ts})` (eq. 4).

    ``forward(x, w_ts)`` computes :math:`(x\mathbf{W}_{sr} + b) \odot w_{ts}` — the shared product once, then
    one multiplication per output unit. As in the official code the bias is scaled too, i.e. the layer equals
    :math:`x\,\mathbf{W}_{sr}\mathrm{diag}(w_{ts}) + b \odot w_{ts}`. ``w_ts`` broadcasts against the output:
    ``(out,)`` for one task, ``(tasks, out)`` with ``x`` of shape ``(batch, tasks, in)``, and so on.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.shared = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor, w_ts: torch.Tensor) -> torch.Tensor:
        return self.shared(x) * w_ts

    def effective_weight(self, w_ts: torch.Tensor) -> torch.Tensor:
        r""":math:`\mathbf{W}_{sr}\,\mathrm{diag}(w_{ts})` as an (in, out) matrix, for one task ``w_ts`` of shape (out,)."""
        return self.shared.weight.T * w_ts


class FactorizedConv2d(nn.Module):
    r"""A convolution with weights :math:`\mathbf{W}_{sr} *_{c_{out}} w_{ts}` (eq. 3): shared filters, one
    generated scale per output channel, no bias (the paper drops it; we apply no BN after a generated layer,
    since a per-channel normalisation would undo the per-channel scale)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.shared = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor, w_ts: torch.Tensor) -> torch.Tensor:
        """``x``: (N, C_in, H, W); ``w_ts``: (N, C_out) — one task per input row — or (C_out,)."""
        y = self.shared(x)
        return y * w_ts.reshape(*w_ts.shape[:-1], -1, 1, 1) if w_ts.dim() > 1 else y * w_ts[:, None, None]

    def effective_weight(self, w_ts: torch.Tensor) -> torch.Tensor:
        """The (C_out, C_in, k, k) filters of one task: each output channel's filter times its scale."""
        return self.shared.weight * w_ts[:, None, None, None]


# ----------------------------------------------------------------------------------------------------------
# The two sub-networks
# ----------------------------------------------------------------------------------------------------------
class TaskEmbedding(nn.Module):
    """T(t): ``layers - 1`` blocks of Linear (no bias) → BatchNorm → ReLU, then Linear(→ out) → ReLU."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, layers: int) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        width = in_dim
        for _ in range(layers - 1):
            blocks += [nn.Linear(width, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU()]
            width = hidden
        blocks += [nn.Linear(width, out_dim), nn.ReLU()]
        self.net = nn.Sequential(*blocks)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.net(t)


class MetaLearner(nn.Module):
    """G: the task embedding network T and one generator g^i (Linear [+ ReLU]) per feature layer."""

    def __init__(self, description_dim: int, cfg: TAFENetConfig) -> None:
        super().__init__()
        embed_dim = cfg.feature_widths[-1]  # e_t lives in the TAFE's space (the embedding loss compares them)
        self.task_embedding = TaskEmbedding(description_dim, cfg.task_hidden, embed_dim, cfg.task_layers)
        self.generators = nn.ModuleList(nn.Linear(embed_dim, w) for w in cfg.feature_widths)
        self.relu = cfg.generator_relu

    def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``t``: (tasks, description_dim) → (e_t of shape (tasks, E), [w^(i) of shape (tasks, width_i)])."""
        e = self.task_embedding(t)
        weights = [g(e) for g in self.generators]
        if self.relu:
            weights = [F.relu(w) for w in weights]
        return e, weights


class PredictionNetwork(nn.Module):
    """F: K factorized feature layers (the TAFE is the last one's output) and a binary classifier."""

    def __init__(self, in_shape: tuple[int, ...], cfg: TAFENetConfig) -> None:
        super().__init__()
        self.backbone = cfg.backbone
        late_fusion = not cfg.task_aware and cfg.baseline_fusion == "concat"  # the baseline reads [φ(x), e_t]
        widths = [int(w) for w in cfg.feature_widths]
        if cfg.backbone == "mlp":
            dims = [int(in_shape[-1]), *widths]
            self.layers = nn.ModuleList(FactorizedLinear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        else:
            channels = [int(in_shape[0]), *widths]
            self.layers = nn.ModuleList(FactorizedConv2d(a, b) for a, b in zip(channels[:-1], channels[1:]))
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Sequential(nn.Linear(widths[-1] * (2 if late_fusion else 1), cfg.classifier_hidden), nn.ReLU(),
                                        nn.Linear(cfg.classifier_hidden, 1))

    def tafe(self, x: torch.Tensor, weights: Sequence[torch.Tensor]) -> torch.Tensor:
        """The TAFE of every input under every task: ``x`` (B, ...) and weights (T, width_i) → (B, T, width_K).

        The first layer's shared product does not depend on the task: it is computed once per input and only
        its scaling is broadcast over the T tasks.
        """
        if self.backbone == "mlp":
            h = self.layers[0].shared(x)[:, None, :] * weights[0][None]          # (B, T, H1)
            for i in range(1, len(self.layers)):
                h = self.layers[i](F.relu(h), weights[i][None])                # ReLU on all but the last
            return h
        b, n_tasks = x.shape[0], weights[0].shape[0]
        h = self.layers[0].shared(x)                                           # (B, C1, h, w), once
        h = (h[:, None] * weights[0][None, :, :, None, None]).flatten(0, 1)    # (B*T, C1, h, w)
        for i in range(1, len(self.layers)):
            h = _pool(F.relu(h))
            h = self.layers[i](h, weights[i].repeat(b, 1))
        return h.mean(dim=(2, 3)).view(b, n_tasks, -1)                         # global average → (B, T, C_K)

    def classify(self, tafe: torch.Tensor) -> torch.Tensor:
        """Logits of "belongs to the task" for TAFEs of any leading shape."""
        return self.classifier(self.dropout(tafe)).squeeze(-1)


def _pool(h: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(h, 2) if min(h.shape[-2:]) > 2 else h


def hinged_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """D(p, q) = max(cos(p, q), 0) along the last dimension (eq. 6)."""
    return F.cosine_similarity(a, b, dim=-1, eps=1e-8).clamp_min(0.0)


def embedding_loss(tafe: torch.Tensor, task_embedding: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    r"""Eq. 6: :math:`\frac{1}{TS}\sum_{i,j} (D(\mathrm{TAFE}(x_j; t_i), \mathcal{T}(t_i)) - q_{ij})^2`.

    ``tafe``: (S, T, E) — sample j under task i; ``task_embedding``: (T, E); ``target``: (S, T) in {0, 1}.
    """
    return ((hinged_cosine(tafe, task_embedding[None]) - target) ** 2).mean()


# ----------------------------------------------------------------------------------------------------------
# The estimator
# ----------------------------------------------------------------------------------------------------------
class TAFENet:
    """TAFE-Net for zero-shot and generalized zero-shot learning on a :class:`workbench.data.GZSLDataset`.

    >>> model = TAFENet(TAFENetConfig.small()).fit(data)     # data: e.g. workbench.data.load_digits_7seg()
    >>> model.evaluate(data)                                  # GZSLScores(S, U, H, ZSL) in [0, 1]
    >>> model.scores(x, classes)                              # (N, C) logits: every input x every task
    >>> model.tafe(x, classes)                                # (N, C, E): the TAFE of x under each task

    ``task_aware=False`` gives the **same-size non-task-aware baseline**: the same feature layers without the
    generated scales (one embedding for every task — the design the paper argues against) and the same task
    embedding network; the task enters only at the end. ``baseline_fusion="concat"`` (default): the same binary
    classifier reads [image embedding, task embedding] (its first layer takes twice the inputs);
    ``"cosine"``: a pair is scored by a learned scale times the cosine of the two (a joint embedding). Same
    binary loss and embedding loss.
    """

    def __init__(self, config: TAFENetConfig | None = None, **overrides: Any) -> None:
        self.config = configure(config or TAFENetConfig(), overrides, "TAFE-Net")

    # ------------------------------------------------------------------ data plumbing
    def descriptions(self, data: Any) -> np.ndarray:
        """The task description of every class, (classes, dim), as configured by ``description``."""
        name = self.config.description
        n_classes = len(data.class_names)
        if name == "attributes":
            matrix = np.asarray(data.class_attributes, dtype=np.float32)
        elif name == "onehot":
            matrix = np.eye(n_classes, dtype=np.float32)
        else:
            side = getattr(data, "side_info", None) or {}
            if name not in side:
                raise ParameterError(f"task description {name!r} is not available for dataset {data.name!r}; "
                                     f"choose one of {['attributes', 'onehot', *side]}.")
            matrix = np.asarray(side[name], dtype=np.float32)
        matrix = matrix.reshape(n_classes, -1)
        if not np.isfinite(matrix).all():
            raise ParameterError(f"the {name!r} descriptions of {data.name!r} contain NaN or inf values.")
        return matrix

    def _inputs(self, data: Any) -> np.ndarray:
        if self.config.backbone == "conv":
            images = getattr(data, "images", None)
            if images is None:
                raise ParameterError(f"backbone='conv' needs raw images, and dataset {data.name!r} has none "
                                     "(data.images is None): use backbone='mlp' on its features.")
            images = np.asarray(images, dtype=np.float32)
            return images[:, None] if images.ndim == 3 else images  # (N, C, H, W)
        return np.asarray(data.features, dtype=np.float32)

    def _prepare(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float32)
        if not np.isfinite(x).all():
            raise ParameterError("the inputs contain NaN or inf values; clean them before scoring.")
        if self.config.backbone == "conv" and x.ndim == 3:
            x = x[:, None]  # (N, H, W) grey images -> (N, 1, H, W)
        return torch.from_numpy((x - self.mean_) / self.std_).to(self.device_)

    # ------------------------------------------------------------------ training
    def fit(self, data: Any, callback: Callable[["TAFENet", int], None] | None = None) -> "TAFENet":
        """Train on the seen classes (``trainval_idx``); with ``select_epoch`` first choose the epoch count on
        the validation split (never the test split). ``callback(model, epochs_done)`` runs after every epoch of
        the final training (and once before it, with 0)."""
        with torch_threads(self.config.num_threads):
            cfg = self.config
            epochs = cfg.epochs
            self.selection_ = None
            if cfg.select_epoch:
                val = data.validation()
                probe = TAFENet(replace(cfg, select_epoch=False))
                curve: list[dict[str, float]] = []

                def watch(model: "TAFENet", done: int) -> None:
                    if done > 0 and (done % cfg.select_every == 0 or done == cfg.epochs):
                        scores = model._evaluate(val, "gzsl").as_percent()
                        curve.append({"epoch": done, **scores, "S+ZSL": (scores["S"] + scores["ZSL"]) / 2})

                probe._fit(val, cfg.epochs, watch, desc="TAFE-Net epoch selection (validation split)")
                best = max(curve, key=lambda r: (np.nan_to_num(r[cfg.select_metric]), -r["epoch"]))
                epochs = int(best["epoch"])
                import pandas as pd

                self.selection_ = pd.DataFrame(curve)
                self.validation_scores_ = best
            self.best_epoch_ = epochs
            return self._fit(data, epochs, callback, desc="TAFE-Net epochs")

    def _fit(self, data: Any, epochs: int, callback: Callable[["TAFENet", int], None] | None,
             desc: str) -> "TAFENet":
        cfg = self.config
        device = resolve_device(cfg.device)
        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)

        train = np.asarray(data.trainval_idx)
        if train.size == 0:
            raise ParameterError(f"dataset {getattr(data, 'name', '')!r} has no training images.")
        inputs = self._inputs(data)
        if not np.isfinite(inputs[train]).all():
            raise ParameterError(f"the training inputs of {data.name!r} contain NaN or inf values.")
        if cfg.feature_scaling == "standard":
            axes = (0,) if inputs.ndim == 2 else (0, 2, 3)  # images: one mean/std per channel
            self.mean_ = inputs[train].mean(axis=axes, keepdims=True)[0]
            self.std_ = inputs[train].std(axis=axes, keepdims=True)[0] + 1e-6
        else:
            self.mean_, self.std_ = np.zeros(inputs.shape[1:], np.float32), np.ones(inputs.shape[1:], np.float32)
        self.mean_, self.std_ = self.mean_.astype(np.float32), self.std_.astype(np.float32)
        self.device_ = device
        self.descriptions_ = torch.from_numpy(self.descriptions(data)).to(device)
        self.class_names_ = list(data.class_names)
        self.dataset_name_ = getattr(data, "name", "")

        self.prediction_ = PredictionNetwork(inputs.shape[1:], cfg).to(device)
        self.meta_ = MetaLearner(self.descriptions_.shape[1], cfg).to(device)
        # the non-task-aware baseline scores a pair by  scale * cos(image embedding, task embedding) + bias
        cosine = not cfg.task_aware and cfg.baseline_fusion == "cosine"
        self.compat_ = nn.Parameter(torch.tensor([5.0, -2.5], device=device)) if cosine else None
        self._init_weights()
        task_params = list(self.meta_.task_embedding.parameters())
        other = [*self.prediction_.parameters(), *self.meta_.generators.parameters()]
        if self.compat_ is not None:
            other.append(self.compat_)
        optimizer = torch.optim.Adam([{"params": other, "lr": cfg.lr, "task_network": False},
                                      {"params": task_params, "lr": cfg.task_lr, "task_network": True}],
                                     weight_decay=cfg.weight_decay)

        x_all = torch.from_numpy((inputs[train] - self.mean_) / self.std_).to(device)
        y_all = torch.as_tensor(np.asarray(data.labels)[train], dtype=torch.long, device=device)
        n = len(train)
        train_classes = torch.unique(y_all)
        if len(train_classes) < 2:
            raise ParameterError("TAFE-Net needs at least two training classes (a task needs negatives).")
        self.history_ = History()
        self._eval_mode()
        if callback is not None:
            callback(self, 0)
        for epoch in progress(range(epochs), desc=desc, total=epochs):
            for group in optimizer.param_groups:
                group["lr"] = cfg.learning_rate(epoch, task_network=group["task_network"])
            self.prediction_.train(), self.meta_.train()
            start = time.perf_counter()
            sums = torch.zeros(4, dtype=torch.float64)
            order = torch.randperm(n, generator=gen).to(device)
            steps = 0
            for first in range(0, n, cfg.batch_size):
                idx = order[first:first + cfg.batch_size]
                terms = self._loss_terms(x_all[idx], y_all[idx], train_classes, gen)
                loss = terms["classification"] + cfg.beta * terms["embedding"]
                check_finite(loss, where=f"epoch {epoch}, batch starting at {first}",
                             hint=f"Lower lr (now {cfg.lr:g}) or check the features and descriptions.")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                sums += torch.stack([loss.detach(), terms["classification"].detach(), terms["embedding"].detach(),
                                     terms["accuracy"]]).double().cpu()
                steps += 1
            means = (sums / max(steps, 1)).tolist()
            self.history_.log(epoch=epoch + 1, loss=means[0], classification=means[1], embedding=means[2],
                              train_pair_accuracy=means[3], lr=optimizer.param_groups[0]["lr"],
                              seconds=time.perf_counter() - start)
            self._eval_mode()
            if callback is not None:
                callback(self, epoch + 1)
        self.epochs_trained_ = epochs
        return self

    def _init_weights(self) -> None:
        if self.config.init == "official":  # official: every weight N(0, 0.001), biases 0
            for module in [*self.prediction_.modules(), *self.meta_.modules()]:
                if isinstance(module, (nn.Linear, nn.Conv2d)):
                    nn.init.normal_(module.weight, 0.0, 1e-3)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)
        else:  # generated scales start near 1: the factorized layers begin as ordinary layers
            for g in self.meta_.generators:
                nn.init.normal_(g.weight, 0.0, 1e-3)
                nn.init.ones_(g.bias)

    def _eval_mode(self) -> None:
        self.prediction_.eval(), self.meta_.eval()

    def _task_outputs(self, descriptions: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        e, weights = self.meta_(descriptions)
        if not self.config.task_aware:  # baseline: the feature layers ignore the task
            weights = [torch.ones_like(w) for w in weights]
        return e, weights

    def _pair_logits(self, tafe: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        if self.config.task_aware:
            return self.prediction_.classify(tafe)
        if self.config.baseline_fusion == "concat":  # late fusion: the classifier reads [φ(x), e_t]
            return self.prediction_.classify(torch.cat([tafe, e[None].expand_as(tafe)], dim=-1))
        scale, bias = self.compat_
        return scale * F.cosine_similarity(tafe, e[None], dim=-1, eps=1e-8) + bias

    def _loss_terms(self, x: torch.Tensor, y: torch.Tensor, train_classes: torch.Tensor,
                    gen: torch.Generator) -> dict[str, torch.Tensor]:
        """Each image paired with every class present in the batch (official); target 1 for its own class.

        A batch of a single class (a small tail batch) also gets one random other training class as a negative
        task: a task needs negatives, and BatchNorm in T needs two descriptions.
        """
        classes, y_local = torch.unique(y, return_inverse=True)
        if len(classes) < 2:
            others = train_classes[train_classes != classes[0]]
            extra = others[torch.randint(len(others), (1,), generator=gen)]
            classes = torch.cat([classes, extra.to(classes.device)])
        e, weights = self._task_outputs(self.descriptions_[classes])
        tafe = self.prediction_.tafe(x, weights)                                   # (B, C, E)
        logits = self._pair_logits(tafe, e)                                        # (B, C)
        target = F.one_hot(y_local, len(classes)).to(logits.dtype)  # classes sorted: y_local indexes them
        # fix: the raw logit goes to the BCE-with-logits loss (the released code applied a sigmoid first)
        classification = F.binary_cross_entropy_with_logits(logits, target)
        embedding = embedding_loss(tafe, e, target)
        accuracy = ((logits > 0).to(target.dtype) == target).float().mean().detach()
        return {"classification": classification, "embedding": embedding, "accuracy": accuracy}

    # ------------------------------------------------------------------ inference
    def _check_fitted(self) -> None:
        if not hasattr(self, "prediction_"):
            raise ParameterError("this TAFENet is not fitted yet: call .fit(data) first.")

    def _class_ids(self, classes: Sequence[int] | np.ndarray | None) -> torch.Tensor:
        n = self.descriptions_.shape[0]
        ids = np.arange(n) if classes is None else np.asarray(classes, dtype=np.int64).ravel()
        if ids.size == 0 or ids.min() < 0 or ids.max() >= n:
            raise ParameterError(f"class ids must be in 0..{n - 1}; got {ids.tolist()[:10]}.")
        return torch.from_numpy(ids).to(self.device_)

    def _run_descriptions(self, classes: Sequence[int] | np.ndarray | None,
                          descriptions: np.ndarray | torch.Tensor | None) -> torch.Tensor:
        if descriptions is None:
            return self.descriptions_[self._class_ids(classes)]
        d = torch.as_tensor(np.asarray(descriptions, dtype=np.float32)).to(self.device_)
        if d.dim() != 2 or d.shape[1] != self.descriptions_.shape[1]:
            raise ParameterError(f"descriptions must be (tasks, {self.descriptions_.shape[1]}); got {tuple(d.shape)}.")
        return d

    @torch.no_grad()
    def task_embedding(self, classes: Sequence[int] | np.ndarray | None = None, *,
                       descriptions: np.ndarray | None = None) -> np.ndarray:
        """e_t = T(t) for the given classes (default: all) or for explicit description vectors: (tasks, E)."""
        self._check_fitted()
        e, _ = self.meta_(self._run_descriptions(classes, descriptions))
        return e.cpu().numpy()

    @torch.no_grad()
    def generated_weights(self, classes: Sequence[int] | np.ndarray | None = None, *,
                          descriptions: np.ndarray | None = None) -> list[np.ndarray]:
        """The generated task-specific weights w^(i) of every feature layer: a list of (tasks, width_i)."""
        self._check_fitted()
        _, weights = self.meta_(self._run_descriptions(classes, descriptions))
        return [w.cpu().numpy() for w in weights]

    @torch.no_grad()
    def tafe(self, x: np.ndarray | torch.Tensor, classes: Sequence[int] | np.ndarray | None = None, *,
             descriptions: np.ndarray | None = None) -> np.ndarray:
        """The task-aware feature embedding of every input under every task: (N, tasks, E)."""
        self._check_fitted()
        _, weights = self._task_outputs(self._run_descriptions(classes, descriptions))
        return self.prediction_.tafe(self._prepare(x), weights).cpu().numpy()

    @torch.no_grad()
    def scores(self, x: np.ndarray | torch.Tensor, classes: Sequence[int] | np.ndarray | None = None, *,
               descriptions: np.ndarray | None = None) -> np.ndarray:
        """Logits of "x belongs to class c" for every input and candidate class: (N, C).

        The generated weights depend only on the class description, so they are generated once per class and
        every input is scored against every class with whole-matrix products (:func:`score_per_task`); the
        result equals the pair-by-pair computation (:meth:`scores_per_pair`) within float tolerance (tested).
        """
        self._check_fitted()
        e, weights = self._task_outputs(self._run_descriptions(classes, descriptions))
        x = self._prepare(x)
        if self.config.backbone == "mlp" and x.shape[0] * e.shape[0] > self.config.score_chunk_pairs:
            return score_per_task(self, x, e, weights).cpu().numpy()  # (one chunk of pairs is as fast directly)
        return self._scores_chunked(x, e, weights)

    @torch.no_grad()
    def scores_per_pair(self, x: np.ndarray | torch.Tensor, classes: Sequence[int] | np.ndarray | None = None, *,
                        descriptions: np.ndarray | None = None) -> np.ndarray:
        """:meth:`scores` computed the direct way: every (input, class) pair through the feature layers and the
        classifier, in chunks of ``score_chunk_pairs`` pairs (the reference the fast path is tested against)."""
        self._check_fitted()
        e, weights = self._task_outputs(self._run_descriptions(classes, descriptions))
        return self._scores_chunked(self._prepare(x), e, weights)

    def _scores_chunked(self, x: torch.Tensor, e: torch.Tensor, weights: list[torch.Tensor]) -> np.ndarray:
        n_tasks = e.shape[0]
        chunk = max(1, self.config.score_chunk_pairs // n_tasks)
        out = [self._pair_logits(self.prediction_.tafe(x[i:i + chunk], weights), e)
               for i in range(0, x.shape[0], chunk)]
        return torch.cat(out).float().cpu().numpy() if out else np.zeros((0, n_tasks), np.float32)

    def predict(self, x: np.ndarray | torch.Tensor, classes: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """The best-scoring class id of each input among ``classes`` (default: all classes)."""
        ids = self._class_ids(classes).cpu().numpy()
        return ids[self.scores(x, ids).argmax(axis=1)]

    def evaluate(self, data: Any, mode: Mode = "gzsl") -> GZSLScores:
        """Per-class mean accuracy on the whole test splits (not per batch).

        ``"gzsl"``: every test image scored against all classes → S, U, H, and ZSL (the argmax over unseen
        classes only). ``"zsl"``: only the unseen test images and classes; S and H are NaN.
        """
        with torch_threads(self.config.num_threads):
            return self._evaluate(data, mode)

    def _evaluate(self, data: Any, mode: Mode) -> GZSLScores:
        self._check_fitted()
        if mode not in ("gzsl", "zsl"):
            raise ParameterError(f"mode must be 'gzsl' or 'zsl'; got {mode!r}.")
        if len(data.class_names) != self.descriptions_.shape[0]:
            raise ParameterError(f"this model was trained on {self.descriptions_.shape[0]} classes; "
                                 f"dataset {data.name!r} has {len(data.class_names)}.")
        inputs = self._inputs(data)
        labels = np.asarray(data.labels)
        seen, unseen = np.asarray(data.seen_classes), np.asarray(data.unseen_classes)
        test_seen, test_unseen = np.asarray(data.test_seen_idx), np.asarray(data.test_unseen_idx)
        if mode == "zsl":
            pred = unseen[self.scores(inputs[test_unseen], unseen).argmax(1)]
            u = per_class_accuracy(labels[test_unseen], pred, unseen)
            return GZSLScores(S=float("nan"), U=u, H=float("nan"), ZSL=u)
        return gzsl_scores(self.scores(inputs[test_seen]), labels[test_seen], self.scores(inputs[test_unseen]),
                           labels[test_unseen], seen, unseen)


# ----------------------------------------------------------------------------------------------------------
# Scoring every input against every class with whole-matrix products
# ----------------------------------------------------------------------------------------------------------
@torch.no_grad()
def score_per_task(model: "TAFENet", x: torch.Tensor, e: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
    r"""Logits (N, T) of N prepared inputs under T tasks whose embeddings ``e`` and generated scales ``weights``
    are given: the fast, exact path behind :meth:`TAFENet.scores` (MLP backbone, inference mode).

    Three facts make it fast without changing the function:

    1. the first layer's shared product :math:`x\mathbf{W}^1_{sr} + b` does not depend on the task: it is computed
       once for all inputs;
    2. with ReLU generators the scales are non-negative, so :math:`\mathrm{relu}(a\odot w) = \mathrm{relu}(a)\odot w`
       and a unit whose scale is exactly 0 outputs exactly 0 for that task: its row and column are skipped
       (the sparsity the paper's ReLU on the generated weights is there for, §3.5);
    3. per task, each layer is then one (N x active_in) @ (active_in x active_out) product over *all* inputs at
       once, instead of N·T separate broadcast products, and the last feature layer is folded into the
       classifier's first layer when that is cheaper (:math:`\mathbf{W}^K\mathrm{diag}(w^K)\mathbf{W}_c`, one
       (active x active) @ (active x hidden) product per task, when it costs less than N x active x hidden).
    """
    pred, cfg = model.prediction_, model.config
    layers = pred.layers
    nonneg = cfg.generator_relu or not cfg.task_aware or all(bool((w >= 0).all()) for w in weights)
    n, n_tasks = x.shape[0], e.shape[0]
    a1 = layers[0].shared(x)                                       # (N, H1): once for all tasks
    r1 = F.relu(a1) if nonneg else None
    out = torch.empty(n, n_tasks, dtype=a1.dtype, device=a1.device)
    c1, c2 = pred.classifier[0], pred.classifier[2]
    late_fusion = not cfg.task_aware and cfg.baseline_fusion == "concat"
    width = int(cfg.feature_widths[-1])
    if not cfg.task_aware:  # the baseline's embedding does not depend on the task: compute it once
        h = a1
        for layer in layers[1:]:
            h = layer.shared(F.relu(h))
        if late_fusion:  # classifier([φ(x), e_t]) = relu(φ W_a + e_t W_b + b) W_2 + b_2: two products, once
            img = h @ c1.weight[:, :width].T + c1.bias              # (N, hidden)
            task = e @ c1.weight[:, width:].T                        # (T, hidden)
            for t in range(n_tasks):
                out[:, t] = (F.relu(img + task[t]) @ c2.weight.T).squeeze(-1) + c2.bias
            return out
        scale, bias = model.compat_  # cosine fusion: scale * cos(φ(x), e_t) + bias, as one (N, T) product
        cos = (h @ e.T) / (h.norm(dim=1, keepdim=True) * e.norm(dim=1)[None]).clamp_min(1e-8)
        return scale * cos + bias
    for t in range(n_tasks):
        w = [wi[t] for wi in weights]
        if nonneg:
            active = [torch.nonzero(wi > 0).squeeze(1) for wi in w]
            h = r1[:, active[0]] * w[0][active[0]]                # relu(a1) * w1 on the active units
        else:
            active = [torch.arange(wi.shape[0], device=wi.device) for wi in w]
            h = F.relu(a1 * w[0])
        for i in range(1, len(layers)):
            lin = layers[i].shared
            rows, cols = active[i], active[i - 1]
            last = i == len(layers) - 1
            if last and rows.numel() * cols.numel() * c1.weight.shape[0] < n * (rows.numel() * cols.numel()
                                                                                   + rows.numel() * c1.weight.shape[0]):
                # fold the last feature layer into the classifier's first layer: W^K diag(w^K) W_c
                folded = (lin.weight[rows][:, cols].T * w[i][rows]) @ c1.weight[:, rows].T      # (in, hidden)
                bias = (lin.bias[rows] * w[i][rows]) @ c1.weight[:, rows].T + c1.bias
                hidden = F.relu(h @ folded + bias)
                break
            z = h @ lin.weight[rows][:, cols].T + lin.bias[rows]
            h = z * w[i][rows]
            if not last:
                h = F.relu(h)
        else:  # the TAFE h (N, active_K): the classifier's first layer sees only its active units
            hidden = F.relu(h @ c1.weight[:, active[-1]].T + c1.bias)
        out[:, t] = (hidden @ c2.weight.T).squeeze(-1) + c2.bias
    return out


# ----------------------------------------------------------------------------------------------------------
# What the notebook and the benchmark show
# ----------------------------------------------------------------------------------------------------------
def signature_points(model: TAFENet, data: Any, classes: Sequence[int], *, images_per_class: int = 30,
                     seed: int = 0) -> tuple[dict[int, np.ndarray], "pandas.DataFrame"]:  # noqa: F821
    """The paper's Figure 3: the same held-out images embedded under several tasks.

    Draws ``images_per_class`` test images of every class, and returns ``({task: TAFEs (n, E)}, table)`` where
    ``table`` has one row per image: ``class``, ``class_id``, ``split`` and one boolean column per task,
    ``positive <task name>`` (the image belongs to that task's class).
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    labels = np.asarray(data.labels)
    pool = np.concatenate([np.asarray(data.test_seen_idx), np.asarray(data.test_unseen_idx)])
    picked = np.sort(np.concatenate([rng.permutation(pool[labels[pool] == c])[:images_per_class]
                                     for c in np.unique(labels[pool])]))
    tasks = [int(c) for c in classes]
    embedded = model.tafe(model._inputs(data)[picked], tasks)  # (n, tasks, E)
    unseen = set(np.asarray(data.unseen_classes).tolist())
    table = pd.DataFrame({"class": [data.class_names[c] for c in labels[picked]], "class_id": labels[picked],
                          "split": ["unseen" if c in unseen else "seen" for c in labels[picked]],
                          "row": picked})
    for k, t in enumerate(tasks):
        table[f"positive {data.class_names[t]}"] = labels[picked] == t
    return {t: embedded[:, k] for k, t in enumerate(tasks)}, table


def joint_space_alignment(model: TAFENet, data: Any, *, images_per_class: int | None = None,
                          seed: int = 0, tasks_per_chunk: int = 8) -> "pandas.DataFrame":  # noqa: F821
    """How close each class's description lands to its images in the joint space (the embedding loss's D).

    One row per class: the mean hinged cosine D(TAFE(x; t_c), T(t_c)) over the class's own held-out images
    (``positive``) and over the other classes' images (``negative``), and their gap. Unseen classes never
    took part in training: a positive gap there means the meta learner generalised. ``images_per_class``: use
    a seeded sample of that many held-out images per class (CUB: 200 classes x 4,731 images would be 10^6 TAFEs).
    """
    import pandas as pd

    labels = np.asarray(data.labels)
    idx = np.concatenate([np.asarray(data.test_seen_idx), np.asarray(data.test_unseen_idx)])
    if images_per_class is not None:
        rng = np.random.default_rng(seed)
        idx = np.sort(np.concatenate([rng.permutation(idx[labels[idx] == c])[:images_per_class]
                                      for c in np.unique(labels[idx])]))
    x, y = model._inputs(data)[idx], labels[idx]
    rows = []
    unseen = set(np.asarray(data.unseen_classes).tolist())
    n_classes = len(data.class_names)
    scores = np.empty((len(idx), n_classes), dtype=np.float32)
    for first in range(0, n_classes, tasks_per_chunk):  # several tasks per call: the first layer once per chunk
        chunk = list(range(first, min(first + tasks_per_chunk, n_classes)))
        scores[:, chunk] = hinged_cosine(torch.from_numpy(model.tafe(x, chunk)),
                                         torch.from_numpy(model.task_embedding(chunk))[None]).numpy()
    for c in range(n_classes):
        d = scores[:, c]
        pos, neg = d[y == c], d[y != c]
        rows.append({"class": data.class_names[c], "split": "unseen" if c in unseen else "seen",
                     "positive": float(pos.mean()) if pos.size else float("nan"),
                     "negative": float(neg.mean()) if neg.size else float("nan")})
    table = pd.DataFrame(rows)
    table["gap"] = table["positive"] - table["negative"]
    return table


def compare_models(data: Any, settings: dict[str, dict[str, Any]], *, seeds: Sequence[int] = (0,),
                   config: TAFENetConfig | None = None) -> "pandas.DataFrame":  # noqa: F821
    """Train one model per named setting (config overrides) and seed; one row each with S, U, H, ZSL in %.

    E.g. ``{"TAFE-Net": {}, "no embedding loss": {"beta": 0.0}, "non-task-aware": {"task_aware": False}}``.
    """
    import pandas as pd

    rows = []
    for name, overrides in settings.items():
        for seed in seeds:
            start = time.perf_counter()
            model = TAFENet(config, **{**overrides, "seed": int(seed)}).fit(data)
            rows.append({"model": name, "seed": int(seed), **model.evaluate(data).as_percent(),
                         "epochs": model.best_epoch_, "seconds": round(time.perf_counter() - start, 1)})
    return pd.DataFrame(rows)
