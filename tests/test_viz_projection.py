"""workbench.viz.projection: seeded, structure-preserving, cached projections with clear errors."""

from __future__ import annotations


import numpy as np
import pytest

from workbench.errors import ParameterError
from workbench.viz import cache_stats, clear_cache, neighbour_agreement, project, resolve_settings
from workbench.viz import projection as P


def clustered(n: int = 240, k: int = 4, d: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``k`` well-separated Gaussian clusters in ``d`` dimensions."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=10.0, size=(k, d))
    labels = np.arange(n) % k
    return centres[labels] + rng.normal(size=(n, d)), labels


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    return clustered()


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_same_seed_same_result(blobs, method):
    X, _ = blobs
    a = project(X, method, seed=3, cache=False, progress=False)
    b = project(X, method, seed=3, cache=False, progress=False)
    assert a.shape == (len(X), 2)
    np.testing.assert_array_equal(a, b)
    if method == "tsne":  # the seed matters: another seed gives another map
        c = project(X, method, seed=4, cache=False, progress=False)
        assert not np.allclose(a, c)


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_well_separated_clusters_stay_separated(blobs, method):
    X, labels = blobs
    Y = project(X, method, seed=0, progress=False)
    assert neighbour_agreement(X, labels) == 1.0
    assert neighbour_agreement(Y, labels) >= 0.95


@pytest.mark.slow
def test_umap_is_deterministic_and_keeps_clusters(blobs):
    # One test for UMAP: its first fit in a process compiles numba code (~15 s). Clustered data is
    # exactly the case where umap-learn's default spectral initialisation ignored the seed.
    X, labels = blobs
    a = project(X, "umap", seed=1, cache=False, progress=False)
    b = project(X, "umap", seed=1, cache=False, progress=False)
    np.testing.assert_array_equal(a, b)
    assert neighbour_agreement(a, labels) >= 0.95


def test_three_components_and_other_inputs(blobs):
    X, _ = blobs
    assert project(X, "pca", n_components=3).shape == (len(X), 3)
    assert project(X[:60], "tsne", n_components=3, progress=False).shape == (60, 3)
    torch = pytest.importorskip("torch")
    np.testing.assert_array_equal(project(torch.tensor(X), "pca"), project(X, "pca"))


def test_cache_hits_on_repeat_in_memory_and_on_disk(blobs, monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    X, _ = blobs
    clear_cache()
    first = project(X, "tsne", seed=7, progress=False)
    assert cache_stats().computed == 1
    assert list((tmp_path / "projections").glob("tsne-*.npy"))

    again = project(X, "tsne", seed=7, progress=False)
    np.testing.assert_array_equal(first, again)
    # the counters prove the hit; a wall-time ratio would be flaky on a shared machine
    assert cache_stats().computed == 1 and cache_stats().memory_hits == 1

    clear_cache()  # a new session: memory empty, disk remains
    np.testing.assert_array_equal(project(X, "tsne", seed=7, progress=False), first)
    assert cache_stats().computed == 0 and cache_stats().disk_hits == 1

    again[:] = 0  # callers get copies: changing one does not poison the cache
    np.testing.assert_array_equal(project(X, "tsne", seed=7, progress=False), first)


def test_cache_key_depends_on_data_and_every_setting(blobs, monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))  # an empty disk cache
    X, _ = blobs
    calls = []
    real = P.compute_projection
    monkeypatch.setattr(P, "compute_projection", lambda X, s, progress=None: calls.append(s) or real(X, s, False))
    clear_cache()
    project(X, "pca")
    project(X, "pca")
    project(X + 1e-9, "pca")  # different data
    project(X, "pca", seed=1)  # different seed
    project(X, "pca", n_components=3)
    assert len(calls) == 4
    assert P.cache_key(X, resolve_settings(*X.shape, "tsne", perplexity=10)) != \
        P.cache_key(X, resolve_settings(*X.shape, "tsne", perplexity=11))


def test_defaults_adapt_to_the_input():
    small = resolve_settings(40, 784, "tsne")
    assert small.perplexity == pytest.approx(13.0) and small.pca_dims == 40
    assert resolve_settings(1000, 64, "tsne").pca_dims == 50
    assert resolve_settings(1000, 30, "tsne").pca_dims is None  # narrow input: used as is
    assert resolve_settings(1000, 784, "tsne", metric="cosine").pca_dims is None  # PCA would change cosine
    assert resolve_settings(10, 5, "umap").n_neighbors == 9
    # the default perplexity is rounded down, so passing it back in (as linked views do) stays valid:
    # for 60 points the limit is 59/3 = 19.67, and 19.7 would be refused
    sixty = resolve_settings(60, 4096, "tsne")
    assert sixty.perplexity == pytest.approx(19.6)
    assert resolve_settings(60, 4096, "tsne", perplexity=sixty.perplexity).perplexity == sixty.perplexity
    from workbench.viz import EmbeddingExplorer

    explorer = EmbeddingExplorer(np.random.default_rng(0).normal(size=(60, 8)), perplexities=[30])
    assert explorer.perplexities == [19.6]  # 30 is impossible for 60 points: the default, valid when reused
    assert resolve_settings(1000, 64, "umap").label == "UMAP (15 neighbours, min_dist 0.1)"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "mds"}, "method must be one of"),
        ({"method": "tsne", "perplexity": 30}, r"\(points - 1\) / 3 = 6.3"),
        ({"method": "umap", "n_neighbors": 25}, "between 2 and points - 1 = 19"),
        ({"method": "umap", "perplexity": 5}, "perplexity is t-SNE's"),
        ({"method": "tsne", "n_neighbors": 5}, "for t-SNE set perplexity"),
        ({"method": "pca", "metric": "cosine"}, "PCA is linear"),
        ({"method": "tsne", "n_components": 4}, "n_components=2 or 3"),
        ({"method": "tsne", "seed": -1}, "non-negative integer"),
    ],
)
def test_impossible_settings_say_what_to_do(kwargs, message):
    X, _ = clustered(n=20, k=2, d=5)
    with pytest.raises(ParameterError, match=message):
        project(X, **kwargs)


def test_bad_inputs_are_explained():
    X, _ = clustered(n=20, k=2, d=5)
    with pytest.raises(ParameterError, match="Flatten images first"):
        project(np.zeros((10, 8, 8)), "pca")
    X[3, 1] = np.nan
    with pytest.raises(ParameterError, match="NaN or infinite values in 1 of 20 rows"):
        project(X, "pca")
    with pytest.raises(ParameterError, match="Use method='pca'"):
        project(np.zeros((4, 3)), "tsne")
