"""GZSL data: digits-7seg, the GZSLDataset contract, xlsa17 class data, the xlsa17 reader, synthetic data,
and the Taskonomy matrices."""

from __future__ import annotations


import numpy as np
import pytest
from data_fixtures import TINY, data_root, manifests, tiny_manifest, write_xlsa17_pair  # noqa: F401

from workbench.data import (GZSLDataset, load_digits_7seg, load_taskonomy_affinities, load_xlsa17,
                            load_xlsa17_attributes, synthetic_gzsl)
from workbench.data.digits import DIGIT_SEGMENTS, class_attribute_matrix
from workbench.data.manifest import load_manifest
from workbench.data.xlsa17 import read_mat, read_xlsa17
from workbench.errors import DataError, ParameterError


def _splits_are_a_partition(ds: GZSLDataset) -> None:
    parts = [ds.trainval_idx, ds.test_seen_idx, ds.test_unseen_idx]
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(ds.n_samples))
    assert set(ds.labels[ds.trainval_idx]) <= set(ds.seen_classes)
    assert set(ds.labels[ds.test_unseen_idx]) == set(ds.unseen_classes)
    assert np.array_equal(np.sort(np.concatenate([ds.train_idx, ds.val_idx])), np.sort(ds.trainval_idx))


# ---------------------------------------------------------------------------------------------------- digits


def test_digits_7seg_counts_and_splits():
    # (its load time is a benchmark figure, not a unit-test assertion: wall time is flaky on a shared machine)
    ds = load_digits_7seg()
    counts = load_manifest("digits-7seg").counts
    assert ds.features.shape == (counts["images"], counts["features"]) and ds.features.dtype == np.float32
    assert ds.class_attributes.shape == (counts["classes"], counts["attributes"])
    assert ds.images.shape == (1797, 8, 8) and not ds.synthetic
    assert (len(ds.seen_classes), len(ds.unseen_classes)) == (7, 3)
    _splits_are_a_partition(ds)
    for c in ds.seen_classes:  # 80/20, stratified
        n_test = np.sum(ds.labels[ds.test_seen_idx] == c)
        assert abs(n_test / np.sum(ds.labels == c) - 0.2) < 0.01
    assert not np.isin(ds.labels[ds.train_idx], ds.val_classes).any()


def test_digits_7seg_is_seeded_and_configurable():
    a, b = load_digits_7seg(seed=3), load_digits_7seg(seed=3)
    assert np.array_equal(a.trainval_idx, b.trainval_idx) and np.array_equal(a.unseen_classes, b.unseen_classes)
    assert any(not np.array_equal(load_digits_7seg(seed=s).trainval_idx, a.trainval_idx) for s in (0, 1))
    fixed = load_digits_7seg(unseen=[1, 7])
    assert fixed.unseen_classes.tolist() == [1, 7] and len(fixed.seen_classes) == 8
    assert load_digits_7seg(attributes="segments").n_attributes == 7
    with pytest.raises(ParameterError):
        load_digits_7seg(unseen=[3, 3])
    with pytest.raises(ParameterError):
        load_digits_7seg(n_unseen=10)


def test_seven_segment_attributes_are_the_display_glyphs():
    att, names = class_attribute_matrix()
    assert names[:7] == ["seg_a_top", "seg_b_upper_right", "seg_c_lower_right", "seg_d_bottom",
                         "seg_e_lower_left", "seg_f_upper_left", "seg_g_middle"]
    assert att[8, :7].tolist() == [1] * 7 and att[1, :7].tolist() == [0, 1, 1, 0, 0, 0, 0]
    assert att[:, :7].sum(axis=1).tolist() == [len(DIGIT_SEGMENTS[d]) for d in range(10)]
    loops = dict(zip(range(10), att[:, 7].tolist()))
    assert loops == {0: 1, 1: 0, 2: 0, 3: 0, 4: 0, 5: 0, 6: 1, 7: 0, 8: 2, 9: 1}
    assert np.flatnonzero(att[:, 8]).tolist() == [0, 8]  # left-right mirror symmetric
    assert np.flatnonzero(att[:, 9]).tolist() == [0, 1, 3, 8]  # top-bottom mirror symmetric


# ---------------------------------------------------------------------------------------------------- GZSLDataset


def test_gzsl_dataset_rejects_inconsistent_input():
    ds = load_digits_7seg()
    fields = dict(name="x", features=ds.features, labels=ds.labels, class_attributes=ds.class_attributes,
                  class_names=ds.class_names, seen_classes=ds.seen_classes, unseen_classes=ds.unseen_classes,
                  trainval_idx=ds.trainval_idx, test_seen_idx=ds.test_seen_idx, test_unseen_idx=ds.test_unseen_idx)
    GZSLDataset(**fields)
    bad = [
        dict(test_seen_idx=np.concatenate([ds.test_seen_idx, ds.trainval_idx[:1]])),  # shared image
        dict(labels=np.where(ds.labels == 0, 10, ds.labels)),  # label out of range
        dict(unseen_classes=np.append(ds.unseen_classes, ds.seen_classes[0])),  # seen and unseen
        dict(trainval_idx=np.append(ds.trainval_idx, ds.test_unseen_idx[0])),  # unseen image in trainval
        dict(class_names=ds.class_names[:-1]),
        dict(features=ds.features[:-1]),
        dict(train_idx=ds.trainval_idx[:10], val_idx=ds.trainval_idx[10:20]),  # not a partition of trainval
    ]
    for change in bad:
        with pytest.raises(DataError, match="inconsistent"):
            GZSLDataset(**{**fields, **change})


def test_validation_split_never_touches_test_images():
    ds = load_digits_7seg()
    val = ds.validation()
    used = np.concatenate([val.trainval_idx, val.test_seen_idx, val.test_unseen_idx])
    assert set(used) <= set(ds.trainval_idx)
    assert set(val.unseen_classes) == set(ds.val_classes) and set(val.seen_classes).isdisjoint(ds.val_classes)


def test_subset_and_class_balanced_indices():
    ds = load_digits_7seg()
    sub = ds.subset([ds.seen_classes[0], ds.seen_classes[1], ds.unseen_classes[0]])
    assert sub.n_classes == 3 and sorted(set(sub.labels)) == [0, 1, 2]
    assert sub.unseen_classes.tolist() == [2] and sub.images.shape[0] == sub.n_samples
    np.testing.assert_array_equal(sub.class_attributes[2], ds.class_attributes[ds.unseen_classes[0]])
    idx = ds.class_balanced_indices(700, seed=1)
    assert np.bincount(ds.labels[idx], minlength=10)[ds.seen_classes].tolist() == [100] * 7
    assert np.array_equal(idx, ds.class_balanced_indices(700, seed=1))


# ---------------------------------------------------------------------------------------------------- xlsa17


@pytest.mark.parametrize("name", ["CUB", "AWA1", "AWA2", "SUN", "APY"])
def test_embedded_xlsa17_class_data_matches_the_manifest(name):
    a = load_xlsa17_attributes(name)
    counts = load_manifest(f"xlsa17-{name.lower()}").counts
    assert a.att.shape == (counts["classes"], counts["attributes"])
    assert a.split_sizes == {k: counts[k] for k in ("trainval", "test_seen", "test_unseen")}
    assert a.n_images == counts["images"]
    np.testing.assert_allclose(np.linalg.norm(a.att, axis=1), 1.0, atol=1e-4)
    for train, val in a.class_folds:
        assert np.array_equal(np.sort(np.concatenate([train, val])), np.sort(a.seen_classes))
    if name == "CUB":
        assert a.side_info["sent"].shape == (200, load_manifest("cub-sentences").count("sentence_dim"))


def test_xlsa17_reader_on_files_in_the_real_format(tmp_path, manifests):  # noqa: F811
    truth = write_xlsa17_pair(tmp_path / "TINY")
    manifest = load_manifest(tiny_manifest(manifests, None, None).stem)
    ds = read_xlsa17(tmp_path / "TINY" / "res101.mat", tmp_path / "TINY" / "att_splits.mat", manifest)
    assert ds.features.shape == (60, 2048) and ds.features.flags.c_contiguous
    np.testing.assert_array_equal(ds.features, truth["features"])
    np.testing.assert_array_equal(ds.labels, truth["labels"])
    np.testing.assert_allclose(ds.class_attributes, truth["att"], rtol=1e-6)
    for split in ("trainval", "test_seen", "test_unseen"):
        np.testing.assert_array_equal(np.sort(ds.indices(split)), truth[split])
    assert ds.class_names == truth["names"] and ds.seen_classes.tolist() == [0, 1, 2, 3]
    assert ds.side_info["original_att"].shape == (TINY["classes"], TINY["attributes"]) and not ds.synthetic
    _splits_are_a_partition(ds)


def test_xlsa17_reader_reads_matlab_v73_files(tmp_path, manifests):  # noqa: F811
    truth = write_xlsa17_pair(tmp_path / "TINY", hdf5=True)
    assert read_mat(tmp_path / "TINY" / "res101.mat", ["features"])["features"].shape == (2048, 60)
    manifest = load_manifest(tiny_manifest(manifests, None, None).stem)
    ds = read_xlsa17(tmp_path / "TINY" / "res101.mat", tmp_path / "TINY" / "att_splits.mat", manifest)
    np.testing.assert_array_equal(ds.features, truth["features"])
    np.testing.assert_array_equal(np.sort(ds.test_unseen_idx), truth["test_unseen"])


def test_load_xlsa17_missing_names_the_import_command(data_root):  # noqa: F811
    with pytest.raises(DataError) as err:
        load_xlsa17("AWA2")
    message = str(err.value)
    assert "xlsa17-awa2" in message and str(data_root / "xlsa17" / "AWA2" / "res101.mat") in message
    assert "workbench data import xlsa17-awa2 /path/to/xlsa17/data/AWA2" in message
    with pytest.raises(DataError, match="Known datasets"):
        load_xlsa17("FLO")


def test_load_xlsa17_reads_the_data_root_and_checks_counts(data_root, manifests):  # noqa: F811
    folder = data_root / "xlsa17" / "TINY"
    write_xlsa17_pair(folder)
    tiny_manifest(manifests, None, None)
    ds = load_xlsa17("tiny")
    assert ds.name == "TINY" and ds.n_samples == 60 and len(ds.val_classes) == 1
    tiny_manifest(manifests, None, None, trainval=31)  # the manifest now disagrees with the file
    with pytest.raises(DataError, match="trainval_loc has 32 entries.*expects 31"):
        load_xlsa17("tiny")
    tiny_manifest(manifests, None, None)
    (folder / "att_splits.mat").write_bytes((folder / "att_splits.mat").read_bytes()[:300])  # truncated
    with pytest.raises(DataError, match="cannot be read as a MATLAB file.*re-import"):
        load_xlsa17("tiny")


def test_load_xlsa17_refuses_a_wrong_sized_file(data_root, manifests):  # noqa: F811
    folder = data_root / "xlsa17" / "TINY"
    write_xlsa17_pair(folder)
    size = (folder / "res101.mat").stat().st_size
    tiny_manifest(manifests, None, size + 1)
    with pytest.raises(DataError, match="(?s)wrong size.*workbench data import xlsa17-tiny"):
        load_xlsa17("tiny")


def test_synthetic_gzsl_is_labelled_and_at_real_scale():
    real = load_xlsa17_attributes("APY")
    ds = synthetic_gzsl("APY", seed=1, feature_dim=32)
    assert ds.synthetic and ds.name == "synthetic-APY" and "SYNTHETIC" in ds.description and "SYNTHETIC" in repr(ds)
    assert ds.features.shape == (real.n_images, 32) and (ds.features >= 0).all()
    assert len(ds.trainval_idx) == real.split_sizes["trainval"] and np.array_equal(ds.class_attributes, real.att)
    _splits_are_a_partition(ds)
    assert np.array_equal(ds.features, synthetic_gzsl("APY", seed=1, feature_dim=32).features)
    assert not np.array_equal(ds.features, synthetic_gzsl("APY", seed=2, feature_dim=32).features)


# ---------------------------------------------------------------------------------------------------- Taskonomy


def test_taskonomy_affinities():
    t = load_taskonomy_affinities()
    counts = load_manifest("taskonomy-affinities").counts
    assert t.affinity.shape == (counts["affinity_sources"], counts["affinity_targets"])
    assert t.winrate_vs_task.shape == t.winrate_vs_pixels.shape == (counts["winrate_sources"], counts["winrate_targets"])
    assert np.allclose(t.winrate_vs_task.loc["self"], 0.5) and np.allclose(t.winrate_vs_pixels.loc["pixels"], 0.5)
    assert "rgb2depth" in t.targets and "random" in t.sources


def test_taskonomy_values_are_the_shipped_files_cells_and_have_taskonomys_structure():
    """Values, not only shapes: every cell equals the CSV read without pandas, and the matrices show what
    Taskonomy measured (a task's own encoder serves it best; depth and mist are each other's closest; the
    random encoder is among the worst sources)."""
    import csv

    from workbench.data.store import embedded_file

    t = load_taskonomy_affinities()
    manifest = load_manifest("taskonomy-affinities")
    for table, name in ((t.affinity, "first_order_affinity.csv"), (t.winrate_vs_task, "first_order_winrate_vs_task.csv"),
                        (t.winrate_vs_pixels, "first_order_winrate_vs_pixels.csv")):
        with open(embedded_file(manifest, f"taskonomy/{name}"), newline="") as f:
            rows = list(csv.reader(f))
        assert list(table.columns) == rows[0][1:] and list(table.index) == [r[0] for r in rows[1:]]
        assert np.array_equal(table.to_numpy(), np.array([[float(v) for v in r[1:]] for r in rows[1:]]))
        assert ((table.to_numpy() >= 0) & (table.to_numpy() <= 1)).all()  # AHP affinities and win rates are in [0, 1]
    a = t.affinity
    tasks = a.drop(index=["self", "random"])
    assert int((a.loc["self"] >= tasks.max()).sum()) == 17  # of 22 targets, the target's own network is best
    own_best = [target for target in a.columns if tasks[target].idxmax() == target]
    assert len(own_best) == 16  # of 22 the task's own encoder is the best transferred one (rgb2depth, edge2d ...)
    assert tasks["rgb2depth"].drop("rgb2depth").idxmax() == "rgb2mist"
    assert tasks["rgb2mist"].drop("rgb2mist").idxmax() == "rgb2depth"
    assert tasks["class_1000"].drop("class_1000").idxmax() == "class_selected"
    random_rank = a.drop(index="self").rank(ascending=False).loc["random"]  # 1 = best of 26 sources
    assert random_rank.median() >= 20


# ---------------------------------------------------------------------------------------------------- splits


def test_stratified_split_holds_out_the_rounded_fraction_of_every_class():
    from workbench.data.sampling import stratified_split

    labels = np.repeat(np.arange(4), [10, 7, 3, 1])  # uneven classes, one singleton
    indices = np.arange(len(labels))[::-1].copy()  # any order in, sorted out
    kept, held = stratified_split(indices, labels, 0.3, seed=0)
    assert np.array_equal(np.sort(np.concatenate([kept, held])), np.arange(len(labels)))  # a partition
    assert np.intersect1d(kept, held).size == 0
    assert list(np.bincount(labels[held], minlength=4)) == [3, 2, 1, 0]  # round(0.3 n): 3, 2.1, 0.9, 0.3
    assert np.all(np.diff(kept) > 0) and np.all(np.diff(held) > 0)
    again = stratified_split(indices, labels, 0.3, seed=0)
    other = stratified_split(indices, labels, 0.3, seed=1)
    assert np.array_equal(again[1], held) and not np.array_equal(other[1], held)
    sub = np.flatnonzero(labels != 0)  # only the given indices are split
    k2, h2 = stratified_split(sub, labels, 0.5, seed=0)
    assert set(k2) | set(h2) == set(sub)


def test_validation_split_makes_the_val_classes_pseudo_unseen_and_holds_out_part_of_the_rest():
    from workbench.data.sampling import validation_split

    labels = np.repeat(np.arange(6), 10)
    trainval = np.flatnonzero(labels < 5)  # class 5 plays a test-unseen class: never in either part
    train_idx, val_idx = validation_split(labels, trainval, val_classes=np.array([3, 4]), seen_fraction=0.2, seed=0)
    assert np.intersect1d(train_idx, val_idx).size == 0
    assert np.array_equal(np.sort(np.concatenate([train_idx, val_idx])), trainval)
    assert not np.isin(labels[train_idx], [3, 4]).any()  # pseudo-unseen classes have no training image
    assert np.isin(np.flatnonzero(np.isin(labels, [3, 4])), val_idx).all()  # ... and all their images validate
    assert list(np.bincount(labels[val_idx], minlength=6)) == [2, 2, 2, 10, 10, 0]  # 20% of each other class
