"""The generalised zero-shot learning (GZSL) dataset object every GZSL method consumes.

It follows the xlsa17 "proposed splits" protocol (Xian et al., TPAMI 2018):

- every image has a feature vector and a class label; every class has a side-information vector
  (``class_attributes``, e.g. 312 CUB attributes);
- classes are *seen* (images available for training) or *unseen* (only their attributes are known);
- ``trainval_idx`` are seen-class images to train on, ``test_seen_idx`` held-out seen-class images,
  ``test_unseen_idx`` all images of the unseen classes.

For model selection without touching a test image there is a validation split inside ``trainval``:
``val_classes`` are seen classes that play the unseen role, ``val_idx`` holds their images plus a held-out
fraction of the other seen classes' images, and ``train_idx`` is the rest. :meth:`GZSLDataset.validation`
turns it into a GZSL problem of its own, so a method selects its hyper-parameters or epoch with exactly the
code it is evaluated with.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from workbench.data.sampling import class_balanced_sampler
from workbench.errors import DataError

SPLITS = ("trainval", "test_seen", "test_unseen", "train", "val")


def _as_index(a: np.ndarray | Sequence[int], what: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 1 or not (arr.size == 0 or np.issubdtype(arr.dtype, np.integer)):
        raise DataError(f"{what} must be a 1-d array of integer indices, got shape {arr.shape} dtype {arr.dtype}.")
    return arr.astype(np.int64, copy=False)


@dataclass(repr=False)
class GZSLDataset:
    """Features, labels, class side information and the seen/unseen splits of one GZSL benchmark.

    ``labels`` are 0-based class indices into ``class_attributes``/``class_names``. All index arrays are
    0-based row indices into ``features``. ``side_info`` holds extra *class-level* modalities, each ``(C, d)``
    (e.g. ``"sent"``: CUB's 1024-d sentence embeddings, ``"original_att"``: the raw attribute matrix).
    ``synthetic`` is True only for generated features (tests and speed benchmarks).
    """

    name: str
    features: np.ndarray
    labels: np.ndarray
    class_attributes: np.ndarray
    class_names: list[str]
    seen_classes: np.ndarray
    unseen_classes: np.ndarray
    trainval_idx: np.ndarray
    test_seen_idx: np.ndarray
    test_unseen_idx: np.ndarray
    attribute_names: list[str] | None = None
    train_idx: np.ndarray | None = None
    val_idx: np.ndarray | None = None
    val_classes: np.ndarray | None = None
    side_info: dict[str, np.ndarray] = field(default_factory=dict)
    images: np.ndarray | None = None
    synthetic: bool = False
    description: str = ""
    #: The published benchmark this dataset instantiates ("CUB", "AWA2", ...), for tables keyed by benchmark
    #: (e.g. CADA-VAE's official classifier epochs); None for datasets of our own (digits, subsets).
    benchmark: str | None = None

    def __post_init__(self) -> None:
        self.features = np.asarray(self.features, dtype=np.float32)
        self.labels = _as_index(self.labels, "labels")
        self.class_attributes = np.asarray(self.class_attributes, dtype=np.float32)
        self.class_names = [str(n) for n in self.class_names]
        for name in ("seen_classes", "unseen_classes", "trainval_idx", "test_seen_idx", "test_unseen_idx"):
            setattr(self, name, _as_index(getattr(self, name), name))
        for name in ("train_idx", "val_idx", "val_classes"):
            if getattr(self, name) is not None:
                setattr(self, name, _as_index(getattr(self, name), name))
        self._validate()

    # ------------------------------------------------------------------------------------------------
    # Consistency
    # ------------------------------------------------------------------------------------------------

    def _fail(self, problem: str) -> DataError:
        return DataError(f"GZSL dataset {self.name!r} is inconsistent: {problem}.")

    def _validate(self) -> None:
        if self.features.ndim != 2:
            raise self._fail(f"features must be (N, D), got shape {self.features.shape}")
        n = self.features.shape[0]
        if self.labels.shape != (n,):
            raise self._fail(f"labels must have shape ({n},) like the features, got {self.labels.shape}")
        if self.class_attributes.ndim != 2:
            raise self._fail(f"class_attributes must be (C, A), got shape {self.class_attributes.shape}")
        c = self.class_attributes.shape[0]
        if len(self.class_names) != c:
            raise self._fail(f"{len(self.class_names)} class names for {c} classes")
        if self.attribute_names is not None and len(self.attribute_names) != self.class_attributes.shape[1]:
            raise self._fail(f"{len(self.attribute_names)} attribute names for {self.class_attributes.shape[1]} attributes")
        if n and (self.labels.min() < 0 or self.labels.max() >= c):
            raise self._fail(f"labels must lie in 0..{c - 1}, found {self.labels.min()}..{self.labels.max()}")
        if not np.all(np.isfinite(self.features)):
            raise self._fail("features contain NaN or infinite values")
        for name in ("seen_classes", "unseen_classes"):
            cls = getattr(self, name)
            if cls.size and (cls.min() < 0 or cls.max() >= c):
                raise self._fail(f"{name} must lie in 0..{c - 1}")
            if len(np.unique(cls)) != len(cls):
                raise self._fail(f"{name} has repeated classes")
        if np.intersect1d(self.seen_classes, self.unseen_classes).size:
            raise self._fail("a class is both seen and unseen")
        splits = {"trainval_idx": self.trainval_idx, "test_seen_idx": self.test_seen_idx,
                  "test_unseen_idx": self.test_unseen_idx}
        for name, idx in splits.items():
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise self._fail(f"{name} must index 0..{n - 1}")
            if len(np.unique(idx)) != len(idx):
                raise self._fail(f"{name} repeats an index")
        names = list(splits)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                if np.intersect1d(splits[a], splits[b]).size:
                    raise self._fail(f"{a} and {b} share images")
        for name, allowed in (("trainval_idx", self.seen_classes), ("test_seen_idx", self.seen_classes),
                              ("test_unseen_idx", self.unseen_classes)):
            stray = np.setdiff1d(np.unique(self.labels[splits[name]]), allowed)
            if stray.size:
                raise self._fail(f"{name} contains classes {stray[:5].tolist()} outside its "
                                 f"{'seen' if allowed is self.seen_classes else 'unseen'} classes")
        if (self.train_idx is None) != (self.val_idx is None):
            raise self._fail("train_idx and val_idx must be given together")
        if self.train_idx is not None:
            if np.intersect1d(self.train_idx, self.val_idx).size:
                raise self._fail("train_idx and val_idx share images")
            both = np.sort(np.concatenate([self.train_idx, self.val_idx]))
            if not np.array_equal(both, np.sort(self.trainval_idx)):
                raise self._fail("train_idx and val_idx must together be exactly trainval_idx")
            if self.val_classes is not None:
                if np.setdiff1d(self.val_classes, self.seen_classes).size:
                    raise self._fail("val_classes must be seen classes")
                if np.isin(self.labels[self.train_idx], self.val_classes).any():
                    raise self._fail("train_idx contains images of val_classes")
        for key, value in self.side_info.items():
            arr = np.asarray(value)
            if arr.ndim < 1 or arr.shape[0] != c:
                raise self._fail(f"side_info[{key!r}] must have one row per class ({c}), got shape {arr.shape}")
        if self.images is not None and len(self.images) != n:
            raise self._fail(f"{len(self.images)} images for {n} feature rows")

    # ------------------------------------------------------------------------------------------------
    # Sizes and access
    # ------------------------------------------------------------------------------------------------

    @property
    def n_samples(self) -> int:
        return self.features.shape[0]

    @property
    def n_classes(self) -> int:
        return self.class_attributes.shape[0]

    @property
    def n_attributes(self) -> int:
        return self.class_attributes.shape[1]

    @property
    def feature_dim(self) -> int:
        return self.features.shape[1]

    def indices(self, split: str) -> np.ndarray:
        """Row indices of a split: trainval, test_seen, test_unseen, train or val."""
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}.")
        idx = getattr(self, f"{split}_idx")
        if idx is None:
            raise DataError(f"{self.name!r} has no {split!r} split (no validation split was defined).")
        return idx

    def split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``(features, labels)`` of a split."""
        idx = self.indices(split)
        return self.features[idx], self.labels[idx]

    def class_balanced_indices(self, n: int, split: str = "trainval", seed: int = 0,
                               replacement: bool = True) -> np.ndarray:
        """``n`` row indices of ``split`` with an equal number per class (see :func:`class_balanced_sampler`)."""
        idx = self.indices(split)
        picked = class_balanced_sampler(self.labels[idx], n, seed, replacement=replacement)
        return idx[picked]

    # ------------------------------------------------------------------------------------------------
    # Derived datasets
    # ------------------------------------------------------------------------------------------------

    def validation(self) -> "GZSLDataset":
        """The validation split as a GZSL problem: train on ``train_idx``, evaluate on ``val_idx``.

        Seen classes = seen classes minus ``val_classes``; unseen classes = ``val_classes``; test_seen /
        test_unseen = the images of ``val_idx`` of those classes. Use it for model selection.
        """
        if self.train_idx is None or self.val_classes is None:
            raise DataError(f"{self.name!r} has no validation split.")
        val_unseen = self.val_idx[np.isin(self.labels[self.val_idx], self.val_classes)]
        val_seen = np.setdiff1d(self.val_idx, val_unseen)
        return replace(
            self,
            name=f"{self.name} (validation)",
            seen_classes=np.setdiff1d(self.seen_classes, self.val_classes),
            unseen_classes=np.asarray(self.val_classes),
            trainval_idx=self.train_idx,
            test_seen_idx=val_seen,
            test_unseen_idx=val_unseen,
            train_idx=None,
            val_idx=None,
            val_classes=None,
        )

    def subset(self, classes: Sequence[int] | np.ndarray) -> "GZSLDataset":
        """Keep only ``classes`` (original ids), relabelled 0..k-1 in the given order; splits follow."""
        classes = _as_index(classes, "classes")
        if np.setdiff1d(classes, np.arange(self.n_classes)).size or len(np.unique(classes)) != len(classes):
            raise DataError(f"subset classes must be distinct ids in 0..{self.n_classes - 1}.")
        new_label = np.full(self.n_classes, -1, dtype=np.int64)
        new_label[classes] = np.arange(len(classes))
        rows = np.flatnonzero(new_label[self.labels] >= 0)
        new_row = np.full(self.n_samples, -1, dtype=np.int64)
        new_row[rows] = np.arange(len(rows))

        def rows_of(idx: np.ndarray | None) -> np.ndarray | None:
            return None if idx is None else np.sort(new_row[idx[new_label[self.labels[idx]] >= 0]])

        def classes_of(cls: np.ndarray | None) -> np.ndarray | None:
            return None if cls is None else np.sort(new_label[cls[new_label[cls] >= 0]])

        return GZSLDataset(
            name=f"{self.name} ({len(classes)} classes)",
            features=self.features[rows],
            labels=new_label[self.labels[rows]],
            class_attributes=self.class_attributes[classes],
            class_names=[self.class_names[c] for c in classes],
            seen_classes=classes_of(self.seen_classes),
            unseen_classes=classes_of(self.unseen_classes),
            trainval_idx=rows_of(self.trainval_idx),
            test_seen_idx=rows_of(self.test_seen_idx),
            test_unseen_idx=rows_of(self.test_unseen_idx),
            attribute_names=self.attribute_names,
            train_idx=rows_of(self.train_idx),
            val_idx=rows_of(self.val_idx),
            val_classes=classes_of(self.val_classes),
            side_info={k: np.asarray(v)[classes] for k, v in self.side_info.items()},
            images=None if self.images is None else self.images[rows],
            synthetic=self.synthetic,
            description=self.description,
            benchmark=None,  # a subset is no longer the published benchmark
        )

    def __repr__(self) -> str:
        tag = "SYNTHETIC " if self.synthetic else ""
        val = ""
        if self.train_idx is not None:
            n_vc = 0 if self.val_classes is None else len(self.val_classes)
            val = f", train/val {len(self.train_idx)}/{len(self.val_idx)} ({n_vc} val classes)"
        extra = f", side_info {sorted(self.side_info)}" if self.side_info else ""
        return (f"<{tag}GZSLDataset {self.name!r}: {self.n_samples} x {self.feature_dim} features, "
                f"{self.n_classes} classes ({len(self.seen_classes)} seen / {len(self.unseen_classes)} unseen), "
                f"{self.n_attributes} attributes; trainval/test_seen/test_unseen "
                f"{len(self.trainval_idx)}/{len(self.test_seen_idx)}/{len(self.test_unseen_idx)}{val}{extra}>")
