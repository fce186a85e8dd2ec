"""Evaluation protocols shared by the methods.

- GZSL (Xian et al., TPAMI 2018): *per-class mean* top-1 accuracy, so that frequent classes do not dominate.
  Seen accuracy S on test-seen images and unseen accuracy U on test-unseen images are both computed with the
  argmax over *all* classes; H = 2SU / (S + U). ZSL restricts the argmax to the unseen classes.
- Few-shot episodes: mean accuracy over many test episodes with a 95% confidence interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def _np(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def per_class_accuracy(y_true: ArrayLike, y_pred: ArrayLike, classes: ArrayLike | None = None) -> float:
    """Mean over classes of the fraction of that class's samples predicted correctly.

    ``classes`` defaults to the classes present in ``y_true``; a listed class with no samples is skipped.
    """
    y_true, y_pred = _np(y_true).ravel(), _np(y_pred).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in length")
    classes = np.unique(y_true) if classes is None else np.asarray(_np(classes)).ravel()
    # Vectorised: per-class counts of samples and of hits via bincount on a dense class index.
    present = classes[np.isin(classes, y_true)]
    if present.size == 0:
        return float("nan")
    index = np.searchsorted(np.sort(present), y_true)
    mask = np.isin(y_true, present)
    order = np.sort(present)
    totals = np.bincount(index[mask], minlength=order.size)
    hits = np.bincount(index[mask], weights=(y_true == y_pred)[mask], minlength=order.size)
    return float(np.mean(hits / totals))


def harmonic_mean(seen: float, unseen: float) -> float:
    """H = 2SU/(S+U); 0 when both are 0."""
    return 0.0 if seen + unseen == 0 else 2.0 * seen * unseen / (seen + unseen)


@dataclass(frozen=True)
class GZSLScores:
    """Seen (S), unseen (U) per-class accuracies, their harmonic mean H, and ZSL accuracy (in [0, 1])."""

    S: float
    U: float
    H: float
    ZSL: float = float("nan")

    def as_percent(self) -> dict[str, float]:
        return {k: round(100 * v, 2) for k, v in self.__dict__.items()}


def gzsl_scores(scores_seen_test: ArrayLike, y_seen_test: ArrayLike, scores_unseen_test: ArrayLike,
                y_unseen_test: ArrayLike, seen_classes: ArrayLike, unseen_classes: ArrayLike) -> GZSLScores:
    """S/U/H from class scores (N x C over *all* classes) of the test-seen and test-unseen images.

    The GZSL argmax runs over the seen and unseen classes only: classes that are neither (e.g. the real unseen
    classes while a validation split lets some seen classes play the unseen role) are not candidates.
    """
    s_scores, u_scores = _np(scores_seen_test).astype(float), _np(scores_unseen_test).astype(float)
    unseen = _np(unseen_classes).astype(int)
    others = np.setdiff1d(np.arange(s_scores.shape[1]), np.union1d(_np(seen_classes).astype(int), unseen))
    if others.size:
        s_scores[:, others] = -np.inf
        u_scores[:, others] = -np.inf
    S = per_class_accuracy(y_seen_test, s_scores.argmax(1), seen_classes)
    U = per_class_accuracy(y_unseen_test, u_scores.argmax(1), unseen_classes)
    zsl_pred = unseen[u_scores[:, unseen].argmax(1)]
    return GZSLScores(S=S, U=U, H=harmonic_mean(S, U), ZSL=per_class_accuracy(y_unseen_test, zsl_pred, unseen))


@dataclass(frozen=True)
class MeanCI:
    """Mean with a 95% confidence interval half-width (normal approximation over episodes)."""

    mean: float
    ci95: float
    n: int

    def __str__(self) -> str:
        return f"{100 * self.mean:.2f} ± {100 * self.ci95:.2f}% (n={self.n})"


def mean_ci95(values: ArrayLike) -> MeanCI:
    v = _np(values).astype(float).ravel()
    if v.size == 0:
        return MeanCI(float("nan"), float("nan"), 0)
    half = 1.96 * v.std(ddof=1) / np.sqrt(v.size) if v.size > 1 else float("nan")
    return MeanCI(float(v.mean()), float(half), int(v.size))
