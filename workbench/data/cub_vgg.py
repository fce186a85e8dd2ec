"""CUB-200-2011 with real VGG fc7 image features: the GZSL dataset ``CUB-vgg``.

The features (manifest ``cub-vgg-fc7``: 200 MATLAB files ``vgg/NNN.Class_Name.mat``, one ``fc7`` matrix of
images x 4096 each) are not redistributable, so they live in the data root::

    workbench data import cub-vgg-fc7 /path/to/cub_vgg_fc7     # a folder holding vgg/*.mat (verified first)
    workbench data fetch cub-vgg-fc7                           # or download them (needs network access)

:func:`load_cub_vgg` pairs them with the embedded xlsa17 CUB class data and returns a
:class:`~workbench.data.GZSLDataset`:

- **classes**: the xlsa17 proposed *class* split, 150 seen / 50 unseen (file names are exactly xlsa17's
  ``allclasses_names``; class ids follow xlsa17's order, so attributes and sentences line up);
- **images**: all 2,967 images of the unseen classes are ``test_unseen``; the 8,821 seen-class images are split
  by a seeded draw, stratified by class, into 7,057 ``trainval`` / 1,764 ``test_seen`` (xlsa17's proportions);
- **validation** (for model selection; never a test image): xlsa17's class fold 1 (50 of the seen classes play
  the unseen role) plus 20% of the other seen classes' trainval images, drawn with the same seed;
- **side information**: the 312 L2-normalised attributes (``class_attributes``), ``side_info["sent"]`` (the 1024-d
  class sentence embeddings of Reed et al. 2016, as xlsa17 ships them) and ``side_info["original_att"]``.

Two caveats, stated wherever these features are used (``GZSLDataset.description`` carries them):

1. **Backbone**: VGG fc7 (4096-d, crop-averaged), not the ResNet-101 (2048-d) features of xlsa17 that the
   CADA-VAE and TAFE-Net papers report on; absolute numbers are not the papers' numbers.
2. **Image split**: the order of images inside a class file is unknown (unsorted ``os.listdir`` at
   extraction), so xlsa17's per-image ``trainval_loc`` / ``test_seen_loc`` cannot be reproduced; the seeded
   stratified draw above replaces them (``split_seed`` selects it).

Reading the 200 files takes about a second; the stacked float32 array (193 MB) is cached in
``$WORKBENCH_CACHE/cub-vgg-fc7/`` under a key made of every source file's name, size and modification time, so a
changed or re-imported file rebuilds the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path, PurePosixPath

import numpy as np

from workbench import paths
from workbench.data.gzsl import GZSLDataset
from workbench.data.manifest import Manifest, load_manifest
from workbench.data.sampling import validation_split
from workbench.data.store import data_files
from workbench.errors import DataError, ParameterError

MANIFEST = "cub-vgg-fc7"
NAME = "CUB-vgg"
#: Fraction of the non-validation seen classes' trainval images held out as pseudo-test-seen for validation.
VAL_SEEN_FRACTION = 0.2
CAVEATS = ("VGG fc7 (4096-d) features, not the papers' ResNet-101 (2048-d); seeded stratified image split "
           "(xlsa17's per-image split cannot be reproduced: image order inside a class is unknown)")
_CLASS_FILE = re.compile(r"^(\d{3}\.[A-Za-z0-9_]+)\.mat$")


def _class_name(path: str | Path) -> str:
    name = PurePosixPath(str(path)).name
    m = _CLASS_FILE.match(name)
    if not m:
        raise DataError(f"{name} is not a CUB class file (expected NNN.Class_Name.mat).")
    return m.group(1)


def read_class_file(path: Path) -> np.ndarray:
    """The ``fc7`` matrix (images x 4096, float32) of one class file; a damaged file is a DataError."""
    from workbench.data.xlsa17 import read_mat

    fc7 = np.asarray(read_mat(path, ["fc7"])["fc7"])
    if fc7.ndim != 2 or fc7.shape[0] == 0 or not np.issubdtype(fc7.dtype, np.number):
        raise DataError(f"{path}: fc7 must be a non-empty 2-d numeric matrix (images x 4096), got shape {fc7.shape}.")
    if not np.all(np.isfinite(fc7)):
        raise DataError(f"{path}: fc7 contains NaN or infinite values; the file is damaged, import it again.")
    return np.ascontiguousarray(fc7, dtype=np.float32)


def _read_all(files: dict[str, Path], manifest: Manifest, class_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Stack every class file in xlsa17 class order: ``(features (N, D), labels (N,))``, checked against counts."""
    by_name = {_class_name(rel): path for rel, path in files.items()}
    missing = [c for c in class_names if c not in by_name]
    if missing:
        raise DataError(f"{len(missing)} CUB classes have no feature file (e.g. {missing[0]}.mat); the files do not "
                        f"match xlsa17's class names. Re-import them: {manifest.import_command()}")
    blocks, labels = [], []
    for c, name in enumerate(class_names):
        block = read_class_file(by_name[name])
        if block.shape[1] != manifest.count("feature_dim"):
            raise DataError(f"{by_name[name]}: {block.shape[1]} feature dimensions, {manifest.source_path.name} "
                            f"expects {manifest.count('feature_dim')}.")
        blocks.append(block)
        labels.append(np.full(len(block), c, dtype=np.int64))
    features, labels_arr = np.concatenate(blocks), np.concatenate(labels)
    if len(features) != manifest.count("images"):
        raise DataError(f"the {len(files)} CUB feature files hold {len(features)} images, {manifest.source_path.name} "
                        f"expects {manifest.count('images')}. Re-import them: {manifest.import_command()}")
    return features, labels_arr


def check_cub_vgg_files(manifest: Manifest, files: dict[str, Path]) -> None:
    """The content check ``workbench data import`` runs on staged copies (raises DataError on any problem)."""
    from workbench.data.xlsa17 import load_xlsa17_attributes

    _read_all(files, manifest, load_xlsa17_attributes("CUB").class_names)


def _cache_key(files: dict[str, Path]) -> str:
    digest = hashlib.sha256()
    for rel in sorted(files):
        st = files[rel].stat()
        digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def _cached_features(files: dict[str, Path], manifest: Manifest,
                     class_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    folder = paths.cache_dir() / MANIFEST
    key = _cache_key(files)
    feats_path, labels_path = folder / f"features-{key}.npy", folder / f"labels-{key}.npy"
    if feats_path.exists() and labels_path.exists():
        try:
            features, labels = np.load(feats_path), np.load(labels_path)
            if features.shape == (manifest.count("images"), manifest.count("feature_dim")) and \
                    labels.shape == (features.shape[0],):
                return features, labels
        except (OSError, ValueError):
            pass  # a damaged cache is rebuilt below
    features, labels = _read_all(files, manifest, class_names)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.npy"):  # one cache per dataset: drop the stale ones
        old.unlink(missing_ok=True)
    for path, array in ((feats_path, features), (labels_path, labels)):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    (folder / "README.json").write_text(json.dumps({"what": "stacked fc7 features of the cub-vgg-fc7 files",
                                                     "key": key, "files": len(files)}, indent=1) + "\n")
    return features, labels


def seen_image_split(labels: np.ndarray, seen_classes: np.ndarray, n_test_seen: int,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(trainval_idx, test_seen_idx)``: exactly ``n_test_seen`` seen-class images held out, stratified by class.

    Each class holds out its share ``n_c * n_test_seen / N`` rounded down, and the remaining images go to the
    classes with the largest remainders (Hamilton's method), so the proportions match xlsa17's per class and
    the total is exact; which images are held out is a seeded random draw inside each class.
    """
    rng = np.random.default_rng(seed)
    seen_rows = np.flatnonzero(np.isin(labels, seen_classes))
    classes, counts = np.unique(labels[seen_rows], return_counts=True)
    if not 0 <= n_test_seen <= len(seen_rows):
        raise ParameterError(f"n_test_seen must be in 0..{len(seen_rows)}, got {n_test_seen}.")
    share = counts * n_test_seen / len(seen_rows)
    held = np.floor(share).astype(int)
    extra = n_test_seen - held.sum()
    held[np.argsort(-(share - held), kind="stable")[:extra]] += 1
    trainval, test_seen = [], []
    for c, k in zip(classes, held):
        members = rng.permutation(seen_rows[labels[seen_rows] == c])
        test_seen.append(members[:k])
        trainval.append(members[k:])
    return np.sort(np.concatenate(trainval)), np.sort(np.concatenate(test_seen))


def load_cub_vgg(root: Path | str | None = None, *, split_seed: int = 0) -> GZSLDataset:
    """CUB-200-2011 with real VGG fc7 features as the GZSL dataset ``CUB-vgg`` (see the module docstring).

    ``root``: the data root (default ``$WORKBENCH_DATA``). ``split_seed`` selects the seeded seen-class image
    split (trainval / test_seen) and the validation split. When the features are not in the data root the
    DataError names the import and fetch commands; nothing is substituted.
    """
    from workbench.data.xlsa17 import load_xlsa17_attributes

    if isinstance(split_seed, bool) or not isinstance(split_seed, (int, np.integer)) or split_seed < 0:
        raise ParameterError(f"split_seed must be an integer >= 0, got {split_seed!r}.")
    manifest = load_manifest(MANIFEST)
    files = data_files(manifest, Path(root).expanduser() if root is not None else None)
    attrs = load_xlsa17_attributes("CUB")
    features, labels = _cached_features(files, manifest, attrs.class_names)
    seen, unseen = attrs.seen_classes, attrs.unseen_classes
    trainval, test_seen = seen_image_split(labels, seen, manifest.count("test_seen"), seed=int(split_seed))
    test_unseen = np.flatnonzero(np.isin(labels, unseen))
    for key, idx in (("trainval", trainval), ("test_seen", test_seen), ("test_unseen", test_unseen)):
        if len(idx) != manifest.count(key):
            raise DataError(f"CUB-vgg: {key} has {len(idx)} images, {manifest.source_path.name} expects "
                            f"{manifest.count(key)}.")
    val_classes = attrs.class_folds[0][1]
    train_idx, val_idx = validation_split(labels, trainval, val_classes, VAL_SEEN_FRACTION, seed=int(split_seed))
    return GZSLDataset(
        name=NAME,
        features=features,
        labels=labels,
        class_attributes=attrs.att,
        class_names=attrs.class_names,
        seen_classes=seen,
        unseen_classes=unseen,
        trainval_idx=trainval,
        test_seen_idx=test_seen,
        test_unseen_idx=test_unseen,
        train_idx=train_idx,
        val_idx=val_idx,
        val_classes=val_classes,
        side_info={"original_att": attrs.original_att, **attrs.side_info},
        description=f"CUB-200-2011, real VGG fc7 features, xlsa17 class split, image split seed {split_seed}. "
                    f"Caveats: {CAVEATS}",
        benchmark="CUB",
    )


def bird_name(class_name: str) -> str:
    """``"017.Cardinal"`` -> ``"Cardinal"``, ``"001.Black_footed_Albatross"`` -> ``"Black footed Albatross"``."""
    return class_name.split(".", 1)[-1].replace("_", " ")
