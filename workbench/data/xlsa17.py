"""The xlsa17 GZSL benchmarks (Xian et al., TPAMI 2018): CUB, AWA1, AWA2, SUN, APY.

Two halves:

- class-level data (class names, attribute matrices, proposed splits, class folds, CUB sentences) ships in
  the package: :func:`load_xlsa17_attributes` works offline on a fresh install;
- the ResNet-101 image features (``res101.mat``, 0.1-0.3 GB each) must be imported into the data root:
  :func:`load_xlsa17` reads ``<data root>/xlsa17/<NAME>/res101.mat`` + ``att_splits.mat``.

File format (MATLAB; v5 files are read with ``scipy.io.loadmat``, v7.3 files with ``h5py``; never pickle):
``res101.mat``: ``features`` 2048 x N, ``labels`` N x 1 (1-based class ids); ``att_splits.mat``: ``att``
A x C (columns L2-normalised), ``original_att``, ``allclasses_names``, ``trainval_loc``, ``test_seen_loc``,
``test_unseen_loc`` (1-based row numbers). The reader transposes the features to N x 2048, makes labels
and locations 0-based, and checks every count against the dataset's manifest.

:func:`synthetic_gzsl` generates *synthetic* features at the scale of a real benchmark (its real attribute
matrix and split sizes) for tests and speed benchmarks; it is never returned by :func:`load_xlsa17`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workbench.data.gzsl import GZSLDataset
from workbench.data.manifest import Manifest, load_manifest
from workbench.data.sampling import validation_split
from workbench.data.store import data_files, embedded_file
from workbench.errors import DataError, ParameterError

NAMES = ("CUB", "AWA1", "AWA2", "SUN", "APY")
ATTRIBUTES_MANIFEST = "xlsa17-attributes"
#: Fraction of the training classes' trainval images held out as pseudo-test-seen for validation.
VAL_SEEN_FRACTION = 0.2


def _canonical(name: str) -> str:
    upper = str(name).upper().removeprefix("XLSA17-").removeprefix("SYNTHETIC-")
    return upper


def _features_manifest(name: str) -> Manifest:
    return load_manifest(f"xlsa17-{name.lower()}")


# ----------------------------------------------------------------------------------------------------
# Class-level data (embedded)
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class XLSA17Attributes:
    """The class-level half of an xlsa17 benchmark: everything except the image features.

    ``att``: (C, A) rows L2-normalised (what GZSL papers use); ``original_att``: the raw matrix.
    ``split_sizes``: number of images in trainval / test_seen / test_unseen; ``*_loc``: 0-based rows of
    the (not shipped) feature matrix. ``class_folds``: the three xlsa17 (train classes, val classes) folds.
    ``side_info``: extra class-level modalities (CUB: ``"sent"``, 1024-d sentence embeddings).
    """

    name: str
    class_names: list[str]
    att: np.ndarray
    original_att: np.ndarray
    seen_classes: np.ndarray
    unseen_classes: np.ndarray
    trainval_loc: np.ndarray
    test_seen_loc: np.ndarray
    test_unseen_loc: np.ndarray
    class_folds: list[tuple[np.ndarray, np.ndarray]]
    side_info: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return self.att.shape[0]

    @property
    def n_attributes(self) -> int:
        return self.att.shape[1]

    @property
    def n_images(self) -> int:
        return len(self.trainval_loc) + len(self.test_seen_loc) + len(self.test_unseen_loc)

    @property
    def split_sizes(self) -> dict[str, int]:
        return {"trainval": len(self.trainval_loc), "test_seen": len(self.test_seen_loc),
                "test_unseen": len(self.test_unseen_loc)}

    def __repr__(self) -> str:
        extra = f", side_info {sorted(self.side_info)}" if self.side_info else ""
        return (f"<XLSA17Attributes {self.name}: {self.n_classes} classes ({len(self.seen_classes)} seen / "
                f"{len(self.unseen_classes)} unseen), {self.n_attributes} attributes, {self.n_images} images in "
                f"the splits {self.split_sizes}{extra}>")


def load_xlsa17_attributes(name: str) -> XLSA17Attributes:
    """Class names, attributes, splits and class folds of an xlsa17 benchmark, from the embedded data."""
    name = _canonical(name)
    if name not in NAMES:
        raise ParameterError(f"unknown xlsa17 dataset {name!r}; choose one of {', '.join(NAMES)}.")
    path = embedded_file(load_manifest(ATTRIBUTES_MANIFEST), f"xlsa17/{name}.npz")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, KeyError) as exc:
        raise DataError(f"{path} cannot be read ({exc}); reinstall workbench.") from None
    attrs = XLSA17Attributes(
        name=name,
        class_names=[str(n) for n in arrays["class_names"]],
        att=arrays["att"].astype(np.float32),
        original_att=arrays["original_att"].astype(np.float32),
        seen_classes=arrays["seen_classes"].astype(np.int64),
        unseen_classes=arrays["unseen_classes"].astype(np.int64),
        trainval_loc=arrays["trainval_loc"].astype(np.int64),
        test_seen_loc=arrays["test_seen_loc"].astype(np.int64),
        test_unseen_loc=arrays["test_unseen_loc"].astype(np.int64),
        class_folds=[(arrays[f"trainclasses{i}"].astype(np.int64), arrays[f"valclasses{i}"].astype(np.int64))
                     for i in (1, 2, 3)],
        side_info={"sent": arrays["sent"].astype(np.float32)} if "sent" in arrays else {},
    )
    _check_counts(attrs, _features_manifest(name), where=str(path))
    return attrs


def _check_counts(attrs: XLSA17Attributes, manifest: Manifest, where: str) -> None:
    found = {"classes": attrs.n_classes, "attributes": attrs.n_attributes, "images": attrs.n_images,
             "seen_classes": len(attrs.seen_classes), "unseen_classes": len(attrs.unseen_classes),
             **attrs.split_sizes}
    for key, value in found.items():
        if value != manifest.count(key):
            raise DataError(f"{where}: {key} = {value}, but {manifest.source_path.name} expects "
                            f"{manifest.count(key)}.")


# ----------------------------------------------------------------------------------------------------
# Reading MATLAB files
# ----------------------------------------------------------------------------------------------------


def read_mat(path: Path, names: list[str], optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Read numeric variables from a MATLAB file (v5 via scipy, v7.3/HDF5 via h5py), as scipy shows them.

    v7.3 files store arrays transposed (MATLAB is column-major); they are transposed back so both versions
    give the same shapes. Missing required variables, truncated or unreadable files are a DataError.
    """
    import h5py
    import scipy.io

    wanted = list(names) + [n for n in optional if n not in names]
    try:
        if h5py.is_hdf5(path):
            with h5py.File(path, "r") as f:
                out = {n: np.asarray(f[n]).T for n in wanted if n in f and isinstance(f[n], h5py.Dataset)}
        else:
            out = scipy.io.loadmat(path, variable_names=wanted)
    except MemoryError:
        raise
    except Exception as exc:  # scipy/h5py raise many types for damaged files
        raise DataError(f"{path} cannot be read as a MATLAB file ({type(exc).__name__}: {exc}). It is probably "
                        "truncated or corrupt: download it again and re-import it.") from None
    missing = [n for n in names if n not in out]
    if missing:
        raise DataError(f"{path} has no variable {', '.join(missing)}; it is not an xlsa17 file of the expected "
                        "kind (res101.mat needs features, labels; att_splits.mat needs att and the *_loc arrays).")
    return {k: v for k, v in out.items() if not k.startswith("__")}


def _locations(mat: dict[str, np.ndarray], key: str, n: int, path: Path) -> np.ndarray:
    loc = np.asarray(mat[key]).ravel()
    if not np.issubdtype(loc.dtype, np.number) or loc.size == 0:
        raise DataError(f"{path}: {key} must be a non-empty numeric array.")
    loc = loc.astype(np.int64) - 1
    if loc.min() < 0 or loc.max() >= n:
        raise DataError(f"{path}: {key} points outside the {n} images of res101.mat (values must be 1..{n}).")
    return loc


def _class_names(cell: np.ndarray | None, n_classes: int) -> list[str]:
    """``allclasses_names`` (a MATLAB cell array of strings) as a list, or "class i" if absent/unreadable."""
    try:
        names = [str(np.asarray(item).ravel()[0]) for item in np.asarray(cell, dtype=object).ravel()]
    except (TypeError, IndexError, ValueError):
        names = []
    return names if len(names) == n_classes else [f"class {c}" for c in range(n_classes)]


def read_xlsa17(res101: Path, att_splits: Path, manifest: Manifest,
                attributes: XLSA17Attributes | None = None) -> GZSLDataset:
    """Build a :class:`GZSLDataset` from an xlsa17 ``res101.mat`` + ``att_splits.mat`` pair.

    ``attributes`` (the embedded class-level data, if any) supplies class names when the file has none, the
    class folds for the validation split, and side information; it is cross-checked against the files.
    """
    name = manifest.name.removeprefix("xlsa17-").upper()
    feats = read_mat(res101, ["features", "labels"])
    features = np.asarray(feats["features"])
    if features.ndim != 2 or not np.issubdtype(features.dtype, np.number):
        raise DataError(f"{res101}: features must be a 2-d numeric matrix (2048 x N), got {features.shape}.")
    features = np.ascontiguousarray(features.T, dtype=np.float32)  # N x 2048
    labels = np.asarray(feats["labels"]).ravel().astype(np.int64) - 1
    n, dim = features.shape
    if labels.shape != (n,):
        raise DataError(f"{res101}: {labels.size} labels for {n} feature columns.")
    for key, value in (("images", n), ("feature_dim", dim)):
        if value != manifest.count(key):
            raise DataError(f"{res101}: {key} = {value}, but {manifest.source_path.name} expects {manifest.count(key)} "
                            "(a different or damaged file).")

    splits = read_mat(att_splits, ["att", "trainval_loc", "test_seen_loc", "test_unseen_loc"],
                      optional=("original_att", "allclasses_names"))
    att = np.asarray(splits["att"], dtype=np.float32).T  # classes x attributes
    if att.shape != (manifest.count("classes"), manifest.count("attributes")):
        raise DataError(f"{att_splits}: att is {att.shape[1]} x {att.shape[0]} (attributes x classes), but "
                        f"{manifest.source_path.name} expects {manifest.count('attributes')} x {manifest.count('classes')}.")
    if labels.min() < 0 or labels.max() >= att.shape[0]:
        raise DataError(f"{res101}: labels must be 1..{att.shape[0]}, found {labels.min() + 1}..{labels.max() + 1}.")
    loc = {k: _locations(splits, f"{k}_loc", n, att_splits) for k in ("trainval", "test_seen", "test_unseen")}
    for key, idx in loc.items():
        if len(idx) != manifest.count(key):
            raise DataError(f"{att_splits}: {key}_loc has {len(idx)} entries, {manifest.source_path.name} expects "
                            f"{manifest.count(key)}.")
    seen = np.unique(labels[np.concatenate([loc["trainval"], loc["test_seen"]])])
    unseen = np.unique(labels[loc["test_unseen"]])
    if (len(seen), len(unseen)) != (manifest.count("seen_classes"), manifest.count("unseen_classes")):
        raise DataError(f"{res101} + {att_splits}: {len(seen)} seen / {len(unseen)} unseen classes, expected "
                        f"{manifest.count('seen_classes')} / {manifest.count('unseen_classes')}.")

    class_names = _class_names(splits.get("allclasses_names"), att.shape[0])
    side_info: dict[str, np.ndarray] = {}
    if "original_att" in splits:
        side_info["original_att"] = np.asarray(splits["original_att"], dtype=np.float32).T
    val_classes = None
    if attributes is not None:
        if not np.allclose(attributes.att, att, atol=1e-5):
            raise DataError(f"{att_splits}: its attribute matrix differs from the xlsa17 v2 data shipped with "
                            "workbench (another release?). Import the files of xlsa17.zip (v2).")
        class_names = attributes.class_names
        side_info = {"original_att": attributes.original_att, **attributes.side_info}
        if np.array_equal(attributes.seen_classes, seen):
            val_classes = attributes.class_folds[0][1]
    if val_classes is None:  # no class folds known: pick pseudo-unseen classes in the unseen proportion
        rng = np.random.default_rng(0)
        n_val = max(1, round(len(seen) * len(unseen) / att.shape[0]))
        val_classes = np.sort(rng.choice(seen, size=min(n_val, len(seen) - 1), replace=False))
    train_idx, val_idx = validation_split(labels, loc["trainval"], val_classes, VAL_SEEN_FRACTION, seed=0)
    return GZSLDataset(
        name=name,
        features=features,
        labels=labels,
        class_attributes=att,
        class_names=class_names,
        seen_classes=seen,
        unseen_classes=unseen,
        trainval_idx=loc["trainval"],
        test_seen_idx=loc["test_seen"],
        test_unseen_idx=loc["test_unseen"],
        train_idx=train_idx,
        val_idx=val_idx,
        val_classes=val_classes,
        side_info=side_info,
        description=f"xlsa17 {name}: ResNet-101 features, proposed split v2",
        benchmark=name,
    )


def _embedded_attributes(name: str) -> XLSA17Attributes | None:
    return load_xlsa17_attributes(name) if name in NAMES else None


def check_xlsa17_files(manifest: Manifest, files: dict[str, Path]) -> None:
    """The content check ``workbench data import`` runs on staged copies (raises DataError on any problem)."""
    res101 = next(p for k, p in files.items() if k.endswith("res101.mat"))
    att_splits = next(p for k, p in files.items() if k.endswith("att_splits.mat"))
    name = manifest.name.removeprefix("xlsa17-").upper()
    read_xlsa17(res101, att_splits, manifest, _embedded_attributes(name))


def load_xlsa17(name: str, root: Path | str | None = None) -> GZSLDataset:
    """An xlsa17 benchmark with its real ResNet-101 features, from ``<root>/xlsa17/<NAME>/``.

    ``root`` defaults to the data root (``$WORKBENCH_DATA``). Missing files are a DataError that names the
    exact ``workbench data import`` command. The validation split uses xlsa17 class fold 1 (its val classes
    as pseudo-unseen) plus 20% of the other seen classes' trainval images (seed 0).
    """
    canonical = _canonical(name)
    manifest = _features_manifest(canonical)  # unknown names: DataError listing the known datasets
    files = data_files(manifest, Path(root).expanduser() if root is not None else None)
    res101 = next(p for k, p in files.items() if k.endswith("res101.mat"))
    att_splits = next(p for k, p in files.items() if k.endswith("att_splits.mat"))
    return read_xlsa17(res101, att_splits, manifest, _embedded_attributes(canonical))


# ----------------------------------------------------------------------------------------------------
# Synthetic features at the scale of a real benchmark
# ----------------------------------------------------------------------------------------------------


def synthetic_gzsl(name_like: str, seed: int = 0, feature_dim: int = 2048, noise: float = 1.0) -> GZSLDataset:
    """SYNTHETIC GZSL data shaped like a real xlsa17 benchmark — for tests and speed benchmarks only.

    Real: the class names, attribute matrix, seen/unseen classes, split sizes and locations, class folds.
    Generated: every feature. Images of class c are ``max(0, W a_c + noise * eps)`` with a fixed random
    Gaussian map ``W`` (A -> feature_dim) and Gaussian noise (non-negative like ResNet features); the images
    of each split are spread evenly over its classes. ``synthetic=True`` and the name starts with
    ``synthetic-``; results on it say nothing about the real benchmark.
    """
    real = load_xlsa17_attributes(name_like)
    if not isinstance(feature_dim, (int, np.integer)) or feature_dim < 1:
        raise ParameterError(f"feature_dim must be a positive integer, got {feature_dim!r}.")
    rng = np.random.default_rng(seed)
    n = real.n_images
    labels = np.empty(n, dtype=np.int64)
    for loc, classes in ((real.trainval_loc, real.seen_classes), (real.test_seen_loc, real.seen_classes),
                         (real.test_unseen_loc, real.unseen_classes)):
        labels[loc] = rng.permutation(np.resize(classes, len(loc)))  # as even as possible over the classes
    mapping = rng.standard_normal((real.n_attributes, feature_dim), dtype=np.float32)
    class_means = real.att @ mapping  # rows of att have unit norm, so entries have unit variance
    features = np.empty((n, feature_dim), dtype=np.float32)
    for start in range(0, n, 8192):  # in blocks, to keep the peak memory at the size of the result
        rows = slice(start, min(start + 8192, n))
        block = noise * rng.standard_normal((rows.stop - start, feature_dim), dtype=np.float32)
        block += class_means[labels[rows]]
        np.maximum(block, 0.0, out=features[rows])
    val_classes = real.class_folds[0][1]
    train_idx, val_idx = validation_split(labels, real.trainval_loc, val_classes, VAL_SEEN_FRACTION, seed=seed)
    return GZSLDataset(
        name=f"synthetic-{real.name}",
        features=features,
        labels=labels,
        class_attributes=real.att,
        class_names=real.class_names,
        seen_classes=real.seen_classes,
        unseen_classes=real.unseen_classes,
        trainval_idx=real.trainval_loc,
        test_seen_idx=real.test_seen_loc,
        test_unseen_idx=real.test_unseen_loc,
        train_idx=train_idx,
        val_idx=val_idx,
        val_classes=val_classes,
        side_info={"original_att": real.original_att, **real.side_info},
        synthetic=True,
        description=(f"SYNTHETIC features (seed {seed}, dim {feature_dim}) generated from the real {real.name} "
                     "attribute matrix and split sizes; for tests and speed benchmarks only"),
    )


# ----------------------------------------------------------------------------------------------------
# Writing any GZSL dataset in the xlsa17 layout (for code that reads it, e.g. the released CADA-VAE)
# ----------------------------------------------------------------------------------------------------


def write_xlsa17(data: GZSLDataset, folder: Path | str) -> dict[str, Path]:
    """Write ``data`` as ``res101.mat`` + ``att_splits.mat`` in ``folder`` (MATLAB v5, xlsa17's layout).

    ``res101.mat``: ``features`` (D x N) and ``labels`` (N x 1, 1-based); ``att_splits.mat``: ``att`` (A x C),
    ``original_att``, ``allclasses_names``, and the 1-based column vectors ``trainval_loc``, ``test_seen_loc``,
    ``test_unseen_loc``, ``train_loc`` (the validation split's training images) and ``val_loc`` (its
    pseudo-unseen images). Reading the pair back with :func:`read_xlsa17` gives the same splits. The name
    ``res101.mat`` is the layout's, whatever the backbone of ``data.features``.
    """
    import scipy.io

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def loc(idx: np.ndarray | None) -> np.ndarray:
        return (np.asarray([] if idx is None else idx, dtype=np.int32) + 1).reshape(-1, 1)  # integer, as xlsa17

    names = np.empty((data.n_classes, 1), dtype=object)
    for c, name in enumerate(data.class_names):
        names[c, 0] = name
    val_unseen = None
    if data.val_idx is not None and data.val_classes is not None:
        val_unseen = data.val_idx[np.isin(data.labels[data.val_idx], data.val_classes)]
    res101, att_splits = folder / "res101.mat", folder / "att_splits.mat"
    scipy.io.savemat(res101, {"features": np.ascontiguousarray(data.features.T),
                              "labels": (data.labels + 1).reshape(-1, 1).astype(np.float64)})
    original = data.side_info.get("original_att", data.class_attributes)
    scipy.io.savemat(att_splits, {"att": data.class_attributes.T.astype(np.float64),
                                  "original_att": np.asarray(original, dtype=np.float64).T,
                                  "allclasses_names": names,
                                  "trainval_loc": loc(data.trainval_idx), "test_seen_loc": loc(data.test_seen_idx),
                                  "test_unseen_loc": loc(data.test_unseen_idx), "train_loc": loc(data.train_idx),
                                  "val_loc": loc(val_unseen)})
    return {"res101": res101, "att_splits": att_splits}
