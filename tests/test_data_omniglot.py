"""Omniglot: complete, pixel-identical to the staged source, resized like torch, cached, split as documented."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest
import torch

from workbench import paths
from workbench.data import load_omniglot, omniglot_split
from workbench.data.manifest import load_manifest
from workbench.data.omniglot import _load_cached, _packed_images, _resized_cache_path, bilinear_matrix, resize_images
from workbench.data.store import embedded_file
from workbench.errors import ParameterError


def _digest(image: np.ndarray) -> str:
    """sha256 of a binary image's bits (packed, so any non-zero byte counts as True)."""
    return hashlib.sha256(np.packbits(image.astype(bool))).hexdigest()


@pytest.fixture(scope="module")
def omniglot():
    return load_omniglot()


def test_counts_match_the_manifest(omniglot):
    counts = load_manifest("omniglot").counts
    assert omniglot.images.shape == (counts["images"], 28, 28) and omniglot.images.dtype == np.float32
    assert len(omniglot.alphabets) == counts["alphabets"]
    assert len(omniglot.characters) == counts["characters"]
    assert np.bincount(omniglot.char_index).tolist() == [counts["drawers"]] * counts["characters"]
    sets = omniglot.characters["set"]
    assert (sets == "background").sum() == counts["background_characters"]
    assert omniglot.characters.loc[sets == "evaluation", "alphabet"].nunique() == counts["evaluation_alphabets"]
    # Background (white paper) is +1, ink is -1: most of every image is background.
    assert omniglot.images.min() == -1.0 and omniglot.images.max() == 1.0
    assert 0.6 < omniglot.images.mean() < 0.95


def test_pixels_match_the_staged_source(shared_datasets):
    path = embedded_file(load_manifest("omniglot"), "omniglot/images.npy.xz")
    ours = _packed_images(path)  # packed bits, compared without unpacking 358 million pixels
    start = 0
    for name, n in (("images_background.npz", 964), ("images_evaluation.npz", 659)):
        with np.load(shared_datasets / "omniglot" / name, allow_pickle=False) as z:
            source = z["images"]
        assert np.array_equal(ours[start:start + n], np.packbits(source, axis=-1)), name
        # and a few image hashes, as a second, independent look
        for c, k in ((0, 0), (n // 2, 7), (n - 1, 19)):
            mine = np.unpackbits(ours[start + c, k], axis=-1, count=105)
            assert _digest(mine) == _digest(source[c, k])
        start += n


def test_resizing_matches_torch_bilinear(omniglot, shared_datasets):
    with np.load(shared_datasets / "omniglot" / "images_evaluation.npz", allow_pickle=False) as z:
        source = z["images"][[0, 100, 658], 3].astype(np.float32)  # characters 964, 1064, 1622; drawer 3
    expected = torch.nn.functional.interpolate(torch.from_numpy(source)[:, None], size=(28, 28), mode="bilinear",
                                               align_corners=False)[:, 0].numpy() * 2 - 1
    got = omniglot.images[np.array([964, 1064, 1622]) * 20 + 3]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    for method, antialias in (("bilinear", False), ("antialias", True)):
        x = np.random.default_rng(0).random((2, 105, 105), dtype=np.float32)
        ref = torch.nn.functional.interpolate(torch.from_numpy(x)[:, None], size=(28, 28), mode="bilinear",
                                              align_corners=False, antialias=antialias)[:, 0].numpy()
        np.testing.assert_allclose(resize_images(x, 28, method), ref, atol=1e-5)
    assert np.allclose(bilinear_matrix(105, 28).sum(axis=1), 1.0)
    # TF1's legacy grid: output pixel i samples input coordinate i * 105/28, e.g. 3.75 -> 0.25 * x3 + 0.75 * x4
    tf1 = bilinear_matrix(105, 28, "tf1")
    np.testing.assert_allclose(tf1[1, 3:5], [0.25, 0.75])
    assert tf1[0, 0] == 1.0 and np.count_nonzero(tf1[1]) == 2


def test_cache_is_used_and_a_damaged_one_is_ignored(omniglot, tmp_path):
    sha = load_manifest("omniglot").file("omniglot/images.npy.xz").sha256
    cache = _resized_cache_path(sha, 28, "bilinear")
    assert cache.is_file() and str(cache).startswith(str(paths.cache_dir()))
    assert np.array_equal(load_omniglot().images, omniglot.images)
    assert np.array_equal(load_omniglot(invert=True).images, -omniglot.images)
    damaged = tmp_path / "damaged.npy"
    damaged.write_bytes(cache.read_bytes()[:1000])
    assert _load_cached(damaged, omniglot.images.shape) is None  # so it is rebuilt, not trusted
    assert _load_cached(cache, (1, 2, 3)) is None


def test_ht_split_is_the_documented_seed_2022_shuffle():
    split = omniglot_split("ht")
    assert {k: len(v) for k, v in split.items()} == {"train": 1150, "val": 50, "test": 423}
    everything = np.concatenate(list(split.values()))
    assert np.array_equal(np.sort(everything), np.arange(1623))
    keys = list(range(1623))
    random.seed(2022)  # what the official HyperTransformer code does
    random.shuffle(keys)
    assert split["train"].tolist() == keys[:1150] and split["test"].tolist() == keys[1200:]
    assert all(np.array_equal(a, b) for a, b in zip(split.values(), omniglot_split("ht").values()))


def test_other_splits(omniglot):
    lake = omniglot_split("background")
    assert len(lake["background"]) == 964 and len(lake["evaluation"]) == 659
    assert set(omniglot.characters.loc[lake["background"], "set"]) == {"background"}
    vinyals = omniglot_split("vinyals")
    assert [len(vinyals[k]) for k in ("train", "val", "test", "trainval")] == [1028, 172, 423, 1200]
    assert not set(vinyals["test"]) & set(vinyals["trainval"])
    with pytest.raises(ParameterError, match="choose one of"):
        omniglot_split("random")


def test_lake_one_shot_runs(omniglot):
    runs = omniglot.one_shot_runs()
    assert len(runs) == 20
    for run in runs:
        train_chars = omniglot.char_index[run.train_idx]
        assert len(set(train_chars)) == 20 and train_chars.min() >= 964  # 20 evaluation characters
        assert np.array_equal(omniglot.char_index[run.test_idx], train_chars[run.answers])
        assert not set(run.train_idx) & set(run.test_idx)


def test_alphabet_task(omniglot):
    task = omniglot.alphabet_task("Latin")
    assert task.n_classes == 26 and task.images.shape == (520, 28, 28)
    assert np.array_equal(np.bincount(task.labels), [20] * 26)
    assert set(omniglot.characters.loc[task.classes, "alphabet"]) == {"Latin"}
    assert np.array_equal(task.images[task.labels == 3], omniglot.by_class()[task.classes[3]])
    with pytest.raises(ParameterError, match="Did you mean Latin"):
        omniglot.alphabet_task("Latn")
