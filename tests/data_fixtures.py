"""Fixtures and helpers for the data-layer tests (tests/test_data_*.py).

- ``data_root``: an isolated, non-empty data root ($WORKBENCH_DATA) in a temporary folder;
- ``manifests``: a writable copy of data_manifests/ ($WORKBENCH_MANIFESTS), so a test can add a manifest;
- :func:`write_xlsa17_pair`: a tiny xlsa17 dataset written in the real file format (scipy.io.savemat,
  features 2048 x N, 1-based labels and locations, cell array of class names), optionally as MATLAB v7.3/HDF5;
- :func:`tiny_manifest`: the manifest text for such a dataset.

The tiny dataset's values are random (seeded): it exercises the reader, never stands in for real data.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from workbench import paths
from workbench.data.store import sha256_file, snapshot  # noqa: F401  (re-exported for the tests)

TINY = dict(classes=6, attributes=5, per_class=10, seen=4, trainval_per_class=8, dim=2048)


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated data root that already holds an unrelated file (so "unchanged" is a real check)."""
    root = tmp_path / "data-root"
    (root / "other").mkdir(parents=True)
    (root / "other" / "keep.txt").write_text("existing data must survive failed imports\n")
    monkeypatch.setenv("WORKBENCH_DATA", str(root))
    return root


@pytest.fixture
def manifests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A writable copy of the real manifests, used through $WORKBENCH_MANIFESTS."""
    folder = tmp_path / "manifests"
    shutil.copytree(paths.REPO_ROOT / "data_manifests", folder)
    monkeypatch.setenv("WORKBENCH_MANIFESTS", str(folder))
    return folder


def write_xlsa17_pair(folder: Path, seed: int = 0, hdf5: bool = False, trainval_drop: int = 0) -> dict:
    """Write ``res101.mat`` and ``att_splits.mat`` of a tiny xlsa17-format dataset into ``folder``.

    Classes 0..3 are seen (8 trainval + 2 test_seen images each), 4..5 unseen (10 test_unseen each).
    ``trainval_drop`` removes that many trainval locations (to make a file with wrong counts).
    Returns the arrays as the reader should see them (0-based).
    """
    import scipy.io

    rng = np.random.default_rng(seed)
    c, a, per, seen, tv, dim = (TINY[k] for k in ("classes", "attributes", "per_class", "seen",
                                                  "trainval_per_class", "dim"))
    n = c * per
    labels = rng.permutation(np.repeat(np.arange(c), per))  # 0-based, shuffled like real files
    features = rng.random((dim, n), dtype=np.float32)  # MATLAB layout: 2048 x N
    att = rng.random((a, c))
    att /= np.linalg.norm(att, axis=0, keepdims=True)  # columns (classes) L2-normalised
    trainval, test_seen = [], []
    for k in range(seen):
        rows = np.flatnonzero(labels == k)
        trainval += list(rows[:tv])
        test_seen += list(rows[tv:])
    test_unseen = list(np.flatnonzero(labels >= seen))
    trainval = trainval[trainval_drop:]
    names = np.empty((c, 1), dtype=object)
    for k in range(c):
        names[k, 0] = f"{k + 1:03d}.class_{k}"

    def loc(rows: list[int]) -> np.ndarray:
        return (np.asarray(rows, dtype=np.uint16) + 1).reshape(-1, 1)

    res = {"features": features, "labels": (labels + 1).reshape(-1, 1).astype(np.float64)}
    splits = {"att": att, "original_att": att * 100, "trainval_loc": loc(trainval), "test_seen_loc": loc(test_seen),
              "test_unseen_loc": loc(test_unseen), "allclasses_names": names}
    folder.mkdir(parents=True, exist_ok=True)
    if hdf5:
        _write_v73(folder / "res101.mat", res)
        _write_v73(folder / "att_splits.mat", {k: v for k, v in splits.items() if k != "allclasses_names"})
    else:
        scipy.io.savemat(folder / "res101.mat", res)
        scipy.io.savemat(folder / "att_splits.mat", splits)
    return {"features": features.T, "labels": labels, "att": att.T, "trainval": np.sort(trainval),
            "test_seen": np.sort(test_seen), "test_unseen": np.sort(test_unseen), "names": [n[0] for n in names]}


def _write_v73(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """A MATLAB v7.3 file: HDF5 after a 512-byte header, arrays stored transposed (column-major)."""
    import h5py

    with h5py.File(path, "w", userblock_size=512) as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=np.asarray(value).T)
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, written by the workbench tests".ljust(116, b" "))


def tiny_manifest(folder: Path, res101_sha: str | None, res101_size: int | None, trainval: int = 32) -> Path:
    """Write ``xlsa17-tiny.yaml`` into the manifests folder; res101.mat's hash given, att_splits unknown."""
    def y(v):
        return "null" if v is None else v

    text = f"""name: xlsa17-tiny
title: tiny xlsa17-format test dataset
description: random values in the xlsa17 file format, written by the tests
citation: none
license: none
urls: []
format: xlsa17
loader: workbench.data.load_xlsa17("tiny")
embedded: false
import_path_example: /path/to/tiny
files:
  - path: xlsa17/TINY/res101.mat
    root: data
    size: {y(res101_size)}
    sha256: {y(res101_sha)}
  - path: xlsa17/TINY/att_splits.mat
    root: data
    size: null
    sha256: null
downloads:
  - url: http://127.0.0.1:9/xlsa17.zip
    kind: zip
    members:
      xlsa17/data/TINY/res101.mat: xlsa17/TINY/res101.mat
      xlsa17/data/TINY/att_splits.mat: xlsa17/TINY/att_splits.mat
counts:
  images: 60
  classes: 6
  attributes: 5
  feature_dim: 2048
  seen_classes: 4
  unseen_classes: 2
  trainval: {trainval}
  test_seen: 8
  test_unseen: 20
"""
    path = folder / "xlsa17-tiny.yaml"
    path.write_text(text)
    return path
