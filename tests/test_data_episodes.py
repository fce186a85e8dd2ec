"""Episode sampler: class/shot counts, seeded determinism, rotation consistency, disjoint support/query;
and the class-balanced sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.data import EpisodeSampler, class_balanced_sampler
from workbench.errors import ParameterError

N_CLASSES, PER_CLASS, SIDE = 12, 10, 6


@pytest.fixture(scope="module")
def pool():
    """Random test images (every one distinct, and distinct from every rotation of any other) + labels."""
    rng = np.random.default_rng(0)
    images = rng.standard_normal((N_CLASSES * PER_CLASS, SIDE, SIDE)).astype(np.float32)
    labels = np.repeat(np.arange(N_CLASSES), PER_CLASS)
    return images, labels


def _identify(x: torch.Tensor, images: np.ndarray) -> tuple[int, int]:
    """(index, k) such that rot90(images[index], k) == x."""
    for k in range(4):
        unrotated = torch.rot90(x[0], -k, dims=(-2, -1)).numpy()
        hits = np.flatnonzero((np.abs(images - unrotated) < 1e-7).all(axis=(1, 2)))
        if len(hits):
            return int(hits[0]), k
    raise AssertionError("sample not found in the pool")


def test_counts_shapes_and_labels(pool):
    images, labels = pool
    s = EpisodeSampler(images, labels, n_way=5, k_shot=2, q_query=3, n_unlabeled=1)
    ep = s.sample()
    assert ep.support_x.shape == (10, 1, SIDE, SIDE) and ep.support_x.dtype == torch.float32
    assert ep.query_x.shape == (15, 1, SIDE, SIDE) and ep.unlabeled_x.shape == (5, 1, SIDE, SIDE)
    assert ep.support_y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert torch.bincount(ep.query_y).tolist() == [3] * 5 and ep.support_y.dtype == torch.int64
    assert len(set(ep.classes.tolist())) == 5 and ep.rotations.tolist() == [0] * 5
    for x, y in zip(ep.query_x, ep.query_y):  # relabelled class j is original class classes[j]
        index, _ = _identify(x, images)
        assert labels[index] == ep.classes[y]
    empty = EpisodeSampler(images, labels, 3, 1, 1).sample()
    assert empty.unlabeled_x.shape == (0, 1, SIDE, SIDE)


def test_deterministic_under_a_seed(pool):
    images, labels = pool
    a = EpisodeSampler(images, labels, 4, 1, 2, rotate=True, seed=7)
    b = EpisodeSampler(images, labels, 4, 1, 2, rotate=True, seed=7)
    for _ in range(3):
        ea, eb = a.sample(), b.sample()
        assert torch.equal(ea.support_x, eb.support_x) and torch.equal(ea.query_x, eb.query_x)
        assert torch.equal(ea.classes, eb.classes) and torch.equal(ea.rotations, eb.rotations)
    assert torch.equal(a.episode(1).query_x, EpisodeSampler(images, labels, 4, 1, 2, rotate=True, seed=7).episode(1).query_x)
    other = EpisodeSampler(images, labels, 4, 1, 2, rotate=True, seed=8).episode(0)
    assert not torch.equal(other.support_x, a.episode(0).support_x)
    a.reset()
    assert torch.equal(a.sample().support_x, b.episode(0).support_x)


def test_rotation_is_the_same_for_every_sample_of_a_class(pool):
    images, labels = pool
    s = EpisodeSampler(images, labels, n_way=6, k_shot=2, q_query=2, n_unlabeled=2, rotate=True, seed=3)
    seen_rotations = set()
    for ep in (s.sample() for _ in range(4)):
        seen_rotations |= set(ep.rotations.tolist())
        for xs, ys in ((ep.support_x, ep.support_y), (ep.query_x, ep.query_y), (ep.unlabeled_x, ep.unlabeled_y)):
            for x, y in zip(xs, ys):
                index, k = _identify(x, images)
                assert k == ep.rotations[y] and labels[index] == ep.classes[y]
    assert seen_rotations == {0, 1, 2, 3}


def test_support_query_unlabeled_disjoint_unless_overlap(pool):
    images, labels = pool
    s = EpisodeSampler(images, labels, n_way=N_CLASSES, k_shot=4, q_query=4, n_unlabeled=2, seed=1)
    for ep in (s.sample() for _ in range(3)):
        ids = [{_identify(x, images)[0] for x in xs} for xs in (ep.support_x, ep.query_x, ep.unlabeled_x)]
        assert [len(i) for i in ids] == [4 * N_CLASSES, 4 * N_CLASSES, 2 * N_CLASSES]
        assert not ids[0] & ids[1] and not ids[0] & ids[2] and not ids[1] & ids[2]
    # with overlap, support and query are drawn independently: 8 + 8 of 10 images must share some
    o = EpisodeSampler(images, labels, n_way=1, k_shot=8, q_query=8, overlap=True, seed=0).sample()
    assert {_identify(x, images)[0] for x in o.support_x} & {_identify(x, images)[0] for x in o.query_x}


def test_classes_restriction_iteration_and_errors(pool):
    images, labels = pool
    s = EpisodeSampler(images, labels, 2, 1, 1, classes=[3, 5, 7], n_episodes=5)
    eps = list(s)
    assert len(eps) == len(s) == 5
    assert set(torch.cat([e.classes for e in eps]).tolist()) <= {3, 5, 7}
    assert eps[0].to("cpu").support_x.device.type == "cpu"
    with pytest.raises(ParameterError, match="fewer than the 11 samples"):
        EpisodeSampler(images, labels, 2, k_shot=5, q_query=6)
    with pytest.raises(ParameterError, match="only 3 classes"):
        EpisodeSampler(images, labels, 4, 1, 1, classes=[0, 1, 2])
    with pytest.raises(ParameterError):
        EpisodeSampler(images, labels, 0, 1, 1)


def test_class_balanced_sampler():
    labels = np.array([0] * 50 + [1] * 5 + [2] * 20)
    idx = class_balanced_sampler(labels, 30, seed=0)
    assert np.bincount(labels[idx]).tolist() == [10, 10, 10]
    assert np.array_equal(idx, class_balanced_sampler(labels, 30, seed=0))
    once = class_balanced_sampler(labels, 15, seed=1, replacement=False)
    assert len(set(once[labels[once] == 1])) == 5  # every image of the small class used once
    assert sorted(np.bincount(labels[class_balanced_sampler(labels, 31, seed=2)]).tolist()) == [10, 10, 11]
