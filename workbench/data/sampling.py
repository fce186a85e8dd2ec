"""Seeded index sampling shared by the loaders: class-balanced draws and stratified splits (NumPy only)."""

from __future__ import annotations

import numpy as np

from workbench.errors import ParameterError


def _rng(seed: int | np.random.Generator) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def class_balanced_sampler(labels: np.ndarray, n: int, seed: int | np.random.Generator = 0, *,
                           replacement: bool = True, classes: np.ndarray | None = None) -> np.ndarray:
    """Indices of ``n`` samples with (as nearly as possible) the same number from every class, shuffled.

    Each class gets ``n // C`` samples; the remaining ``n % C`` go to randomly chosen distinct classes.
    Within a class, samples are drawn uniformly with replacement (``replacement=True``, like a class-balanced
    ``WeightedRandomSampler``), or without (``replacement=False``: every image is used once before any is used
    twice). ``classes`` restricts the draw to those classes (default: every class present in ``labels``).
    """
    labels = np.asarray(labels)
    if n < 0:
        raise ParameterError(f"n must be >= 0, got {n}.")
    rng = _rng(seed)
    classes = np.unique(labels) if classes is None else np.asarray(classes)
    if len(classes) == 0:
        raise ParameterError("class_balanced_sampler needs at least one class.")
    per_class = np.full(len(classes), n // len(classes))
    per_class[rng.choice(len(classes), n % len(classes), replace=False)] += 1
    chosen = []
    for c, k in zip(classes, per_class):
        members = np.flatnonzero(labels == c)
        if len(members) == 0:
            raise ParameterError(f"class {c} has no samples to draw from.")
        if replacement:
            chosen.append(rng.choice(members, size=k, replace=True))
        else:
            rounds = -(-k // len(members))  # ceil
            chosen.append(np.concatenate([rng.permutation(members) for _ in range(rounds)])[:k])
    out = np.concatenate(chosen) if chosen else np.empty(0, dtype=np.int64)
    return rng.permutation(out).astype(np.int64)


def stratified_split(indices: np.ndarray, labels: np.ndarray, fraction: float,
                     seed: int | np.random.Generator = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split ``indices`` into (kept, held_out) with ``round(fraction * n_c)`` of each class held out.

    ``labels`` are the labels of the whole dataset (indexed by ``indices``). Both parts come back sorted.
    """
    rng = _rng(seed)
    indices = np.asarray(indices, dtype=np.int64)
    kept, held = [], []
    for c in np.unique(labels[indices]):
        members = rng.permutation(indices[labels[indices] == c])
        n_held = int(round(fraction * len(members)))
        held.append(members[:n_held])
        kept.append(members[n_held:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


def validation_split(labels: np.ndarray, trainval_idx: np.ndarray, val_classes: np.ndarray,
                     seen_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A GZSL-style validation split of the trainval images: ``(train_idx, val_idx)``.

    ``val_idx`` holds every trainval image of the ``val_classes`` (pseudo-unseen classes) plus a stratified
    ``seen_fraction`` of the images of the other seen classes (pseudo-test-seen); ``train_idx`` is the rest.
    Model selection on it never touches a test image.
    """
    trainval_idx = np.asarray(trainval_idx, dtype=np.int64)
    is_val_class = np.isin(labels[trainval_idx], val_classes)
    pseudo_unseen = trainval_idx[is_val_class]
    train_idx, pseudo_seen = stratified_split(trainval_idx[~is_val_class], labels, seen_fraction, seed)
    return train_idx, np.sort(np.concatenate([pseudo_seen, pseudo_unseen]))
