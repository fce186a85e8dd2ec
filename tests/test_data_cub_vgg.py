"""CUB-200-2011 with real VGG fc7 features: manifest, import/fetch, the loader's counts and splits, its cache.

The real files come from ``../shared/datasets/cub_vgg_fc7`` (the ``cub_vgg_root`` fixture imports them once into
a temporary data root); where that folder is absent these tests skip with the import command.
"""

from __future__ import annotations

import os
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import data_root, snapshot  # noqa: F401

from workbench import paths
from workbench.cli import main
from workbench.data import import_dataset, load_manifest, verify_dataset
from workbench.data import store
from workbench.data.cub_vgg import MANIFEST, read_class_file, seen_image_split
from workbench.data.xlsa17 import load_xlsa17_attributes, write_xlsa17
from workbench.errors import DataError


def _linked_copy(source: Path, dest: Path) -> Path:
    """A folder like ``source/vgg`` whose files are symlinks (cheap), to damage one file without a 185 MB copy."""
    (dest / "vgg").mkdir(parents=True)
    for f in sorted((source / "vgg").glob("*.mat")):
        (dest / "vgg" / f.name).symlink_to(f)
    return dest


def test_manifest_describes_the_staged_files(shared_datasets):
    m = load_manifest(MANIFEST)
    assert len(m.data_files) == 200 and len(m.downloads) == 200 and not m.embedded
    assert m.counts == {"images": 11788, "classes": 200, "feature_dim": 4096, "attributes": 312,
                        "seen_classes": 150, "unseen_classes": 50, "trainval": 7057, "test_seen": 1764,
                        "test_unseen": 2967}
    sums = dict(line.split()[::-1] for line in (shared_datasets / "cub_vgg_fc7" / "SHA256SUMS").read_text().splitlines())
    for f in m.data_files:
        assert f.sha256 == sums[f"vgg/{Path(f.path).name}"]
    assert all(d.url.startswith("https://raw.githubusercontent.com/rivercold/Zero-Shot-Learning/c970b48c")
               for d in m.downloads)
    assert "Wah" in m.citation and "rivercold" in m.citation and "non-commercial" in m.license


def test_imported_files_verify(cub_vgg_root):
    status = verify_dataset(MANIFEST, cub_vgg_root)
    assert status.state == "present" and all(c.sha256 for c in status.checks)


def test_a_tampered_file_is_refused_and_the_data_root_is_untouched(shared_datasets, tmp_path, data_root):  # noqa: F811
    folder = _linked_copy(shared_datasets / "cub_vgg_fc7", tmp_path / "download")
    victim = folder / "vgg" / "017.Cardinal.mat"
    data = bytearray(victim.read_bytes())
    victim.unlink()
    data[-100] ^= 0xFF
    victim.write_bytes(bytes(data))
    before = snapshot(data_root)
    with pytest.raises(DataError, match="017.Cardinal.mat has sha256"):
        import_dataset(MANIFEST, folder)
    assert snapshot(data_root) == before and not list(data_root.glob(".import-*"))


def test_a_missing_file_is_refused_with_the_command(shared_datasets, tmp_path, data_root):  # noqa: F811
    folder = _linked_copy(shared_datasets / "cub_vgg_fc7", tmp_path / "download")
    (folder / "vgg" / "200.Common_Yellowthroat.mat").unlink()
    before = snapshot(data_root)
    with pytest.raises(DataError, match=r"does not contain 200.Common_Yellowthroat.mat.*workbench data import cub-vgg-fc7"):
        import_dataset(MANIFEST, folder)
    assert snapshot(data_root) == before


def test_loading_without_the_features_names_import_and_fetch(data_root):  # noqa: F811
    from workbench.data import load_cub_vgg

    with pytest.raises(DataError) as err:
        load_cub_vgg()
    text = str(err.value)
    assert "cub-vgg-fc7" in text and "workbench data fetch cub-vgg-fc7" in text
    assert "workbench data import cub-vgg-fc7" in text


def test_fetch_offline_says_to_import(data_root, monkeypatch, capsys):  # noqa: F811
    def offline(url, timeout):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(store, "_open_url", offline)
    before = snapshot(data_root)
    assert main(["data", "fetch", MANIFEST]) == 2
    err = capsys.readouterr().err
    assert "offline" in err and "workbench data import cub-vgg-fc7" in err
    assert snapshot(data_root) == before


def test_counts_and_splits_are_exact_and_disjoint(cub_vgg):
    data = cub_vgg(split_seed=0)
    attrs = load_xlsa17_attributes("CUB")
    assert data.name == "CUB-vgg" and data.benchmark == "CUB" and not data.synthetic
    assert data.features.shape == (11788, 4096) and data.features.dtype == np.float32
    assert (data.features >= 0).all()  # post-ReLU fc7
    assert np.array_equal(data.seen_classes, attrs.seen_classes) and len(data.unseen_classes) == 50
    assert (len(data.trainval_idx), len(data.test_seen_idx), len(data.test_unseen_idx)) == (7057, 1764, 2967)
    all_rows = np.concatenate([data.trainval_idx, data.test_seen_idx, data.test_unseen_idx])
    assert len(np.unique(all_rows)) == 11788  # every image exactly once
    assert not np.intersect1d(data.trainval_idx, data.test_seen_idx).size
    assert np.isin(data.labels[data.test_unseen_idx], data.unseen_classes).all()
    assert np.isin(data.labels[data.trainval_idx], data.seen_classes).all()
    # stratified: each seen class holds out its xlsa17 share of images, to within one image
    counts = np.bincount(data.labels, minlength=200)
    held = np.bincount(data.labels[data.test_seen_idx], minlength=200)
    share = counts[data.seen_classes] * 1764 / counts[data.seen_classes].sum()
    assert np.abs(held[data.seen_classes] - share).max() < 1
    # side information lines up with the xlsa17 class order
    assert np.array_equal(data.class_attributes, attrs.att) and data.side_info["sent"].shape == (200, 1024)
    assert "VGG fc7" in data.description and "ResNet-101" in data.description


def test_class_ids_follow_the_xlsa17_class_names(cub_vgg, cub_vgg_root):
    data = cub_vgg()
    c = data.class_names.index("017.Cardinal")
    block = read_class_file(cub_vgg_root / "cub-vgg-fc7" / "vgg" / "017.Cardinal.mat")
    assert np.array_equal(data.features[data.labels == c], block)


def test_validation_split_never_touches_test_images(cub_vgg):
    data = cub_vgg(split_seed=3)
    val = data.validation()
    assert np.array_equal(data.val_classes, load_xlsa17_attributes("CUB").class_folds[0][1])
    test = np.concatenate([data.test_seen_idx, data.test_unseen_idx])
    for idx in (val.trainval_idx, val.test_seen_idx, val.test_unseen_idx):
        assert not np.intersect1d(idx, test).size
    assert not np.isin(data.labels[val.trainval_idx], data.val_classes).any()
    assert np.isin(data.labels[val.test_unseen_idx], data.val_classes).all()


def test_the_split_is_seeded(cub_vgg):
    a, b, c = cub_vgg(split_seed=0), cub_vgg(split_seed=0), cub_vgg(split_seed=1)
    assert np.array_equal(a.test_seen_idx, b.test_seen_idx) and np.array_equal(a.val_idx, b.val_idx)
    assert not np.array_equal(a.test_seen_idx, c.test_seen_idx)
    assert np.array_equal(a.test_unseen_idx, c.test_unseen_idx)  # the class split is fixed


def test_seen_image_split_hits_the_total_exactly():
    labels = np.repeat(np.arange(7), [3, 5, 8, 13, 21, 34, 55])
    tv, ts = seen_image_split(labels, np.arange(6), n_test_seen=17, seed=0)
    assert len(ts) == 17 and not np.intersect1d(tv, ts).size
    assert set(np.concatenate([tv, ts])) == set(np.flatnonzero(labels < 6))


def test_the_cache_is_used_and_rebuilt_when_a_source_changes(cub_vgg, cub_vgg_root, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    first = cub_vgg()
    cache = paths.cache_dir() / MANIFEST
    files = sorted(cache.glob("features-*.npy"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    second = cub_vgg()
    assert files[0].stat().st_mtime_ns == stamp and np.array_equal(first.features, second.features)
    source = cub_vgg_root / "cub-vgg-fc7" / "vgg" / "001.Black_footed_Albatross.mat"
    st = source.stat()
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    try:
        third = cub_vgg()
        rebuilt = sorted(cache.glob("features-*.npy"))
        assert len(rebuilt) == 1 and rebuilt[0] != files[0]  # a new key; the stale cache is gone
        assert np.array_equal(third.features, first.features)
    finally:
        os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_write_xlsa17_gives_the_released_code_its_layout(tmp_path):
    import scipy.io

    from workbench.data import load_digits_7seg

    data = load_digits_7seg(seed=0)
    paths_written = write_xlsa17(data, tmp_path / "DIG")
    res = scipy.io.loadmat(paths_written["res101"])
    att = scipy.io.loadmat(paths_written["att_splits"])
    assert res["features"].shape == (data.feature_dim, data.n_samples)
    assert np.array_equal(res["labels"].ravel().astype(int) - 1, data.labels)
    for key, idx in (("trainval_loc", data.trainval_idx), ("test_seen_loc", data.test_seen_idx),
                     ("test_unseen_loc", data.test_unseen_idx), ("train_loc", data.train_idx)):
        assert np.issubdtype(att[key].dtype, np.integer) and np.array_equal(att[key].ravel() - 1, idx)
    assert att["att"].shape == (data.n_attributes, data.n_classes)
