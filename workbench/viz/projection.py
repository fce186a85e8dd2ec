"""Project embeddings to 2-D (or 3-D) with t-SNE, UMAP or PCA: seeded, cached, sane defaults.

What each method keeps, and what it distorts:

* **PCA** is linear: it keeps the directions of largest variance. Distances along them are honest,
  but clusters that differ in other directions overlap.
* **t-SNE** keeps each point's nearest neighbours near it. ``perplexity`` is roughly how many
  neighbours count (5-50 is usual). Cluster sizes and the gaps between clusters mean little.
* **UMAP** is also built from nearest neighbours (``n_neighbors``: small = local detail, large = more
  global shape); it usually keeps more of the global arrangement than t-SNE. ``min_dist`` sets how
  tightly points may pack.

:func:`project` is the one entry point. The same input and settings always give the same output
(every method is seeded), so results are cached by a content hash of the input and the settings,
in memory and on disk under :func:`workbench.paths.cache_dir`: re-running a notebook or moving a
widget back to a previous setting does not recompute anything.

t-SNE is computed with openTSNE (FFT-accelerated gradients for 10,000+ points): on this project's
machines it is faster than scikit-learn's t-SNE at every size we measured and just as deterministic
(see ``benchmarks/bench_projections.py``). umap-learn is imported only when UMAP is asked for,
because importing it costs seconds.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections import OrderedDict
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np

from workbench.errors import ParameterError
from workbench.progress import progress_bar

Method = Literal["tsne", "umap", "pca"]
METHODS: tuple[str, ...] = ("tsne", "umap", "pca")
METHOD_NAMES = {"tsne": "t-SNE", "umap": "UMAP", "pca": "PCA"}

DEFAULT_PERPLEXITY = 30.0
DEFAULT_N_NEIGHBORS = 15
DEFAULT_MIN_DIST = 0.1
#: Wide inputs are reduced to this many principal components before t-SNE (the usual recipe:
#: it removes noise dimensions and makes the neighbour search much faster).
PCA_DIMS_BEFORE_TSNE = 50
#: Fewer points than this cannot be embedded meaningfully by t-SNE or UMAP (use PCA).
MIN_POINTS = 5

_IMPLEMENTATION = {"tsne": "openTSNE", "umap": "umap-learn", "pca": "scikit-learn"}


# --------------------------------------------------------------------------------------------------
# Settings: the user's arguments with every default resolved for this input size
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProjectionSettings:
    """Everything that determines a projection's result (and hence its cache key)."""

    method: str
    n_components: int
    seed: int
    metric: str = "euclidean"
    perplexity: float | None = None  # t-SNE only
    n_neighbors: int | None = None  # UMAP only
    min_dist: float | None = None  # UMAP only
    pca_dims: int | None = None  # principal components kept before t-SNE/UMAP (None: raw input)

    @property
    def label(self) -> str:
        """A short human-readable name, e.g. ``"t-SNE (perplexity 30)"``."""
        name = METHOD_NAMES[self.method]
        if self.method == "tsne":
            return f"{name} (perplexity {self.perplexity:g})"
        if self.method == "umap":
            return f"{name} ({self.n_neighbors} neighbours, min_dist {self.min_dist:g})"
        return name


def max_perplexity(n_points: int) -> float:
    """The largest perplexity ``n_points`` allow: each point needs ~3 x perplexity neighbours."""
    return (n_points - 1) / 3


def default_perplexity(n_points: int) -> float:
    """The default t-SNE perplexity for ``n_points``: 30, or the largest valid value to one decimal *below* the
    limit (round(19.67, 1) = 19.7 would exceed the limit it came from and be refused when passed back in)."""
    return min(DEFAULT_PERPLEXITY, math.floor(max_perplexity(n_points) * 10) / 10)


def resolve_settings(
    n_points: int,
    n_features: int,
    method: str = "tsne",
    n_components: int = 2,
    *,
    seed: int = 0,
    perplexity: float | None = None,
    n_neighbors: int | None = None,
    min_dist: float | None = None,
    metric: str = "euclidean",
    pca_dims: int | Literal["auto"] | None = "auto",
) -> ProjectionSettings:
    """Check the arguments of :func:`project` and fill in defaults suited to the input size.

    Defaults the user did not set are adjusted quietly (a perplexity of 30 needs at least 91 points,
    so fewer points get the largest perplexity they allow); values the user *did* set are never
    changed: an impossible one raises :class:`ParameterError` saying what would work.
    """
    if method not in METHODS:
        raise ParameterError(f"method must be one of {', '.join(map(repr, METHODS))}; got {method!r}.")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ParameterError(f"seed must be a non-negative integer; got {seed!r}.")
    if not isinstance(n_components, (int, np.integer)) or n_components < 1:
        raise ParameterError(f"n_components must be a positive integer (2 or 3 to plot); got {n_components!r}.")
    seed, n_components = int(seed), int(n_components)

    if method == "pca":
        for name, value in (("perplexity", perplexity), ("n_neighbors", n_neighbors), ("min_dist", min_dist)):
            if value is not None:
                raise ParameterError(f"{name} does not apply to PCA; drop it or use method='tsne'/'umap'.")
        if metric != "euclidean":
            raise ParameterError("PCA is linear and has no metric; drop metric= or use method='tsne'/'umap'.")
        if n_components > min(n_points, n_features):
            raise ParameterError(
                f"PCA of {n_points} points x {n_features} features has at most "
                f"{min(n_points, n_features)} components; got n_components={n_components}."
            )
        return ProjectionSettings(method="pca", n_components=n_components, seed=seed)

    if n_components > 3:
        raise ParameterError(f"{METHOD_NAMES[method]} is for plotting: use n_components=2 or 3 (got {n_components}).")
    if n_points < max(MIN_POINTS, n_components + 2):
        raise ParameterError(
            f"{METHOD_NAMES[method]} needs at least {max(MIN_POINTS, n_components + 2)} points; "
            f"got {n_points}. Use method='pca' for so few points."
        )
    if pca_dims == "auto":
        wide = n_features > PCA_DIMS_BEFORE_TSNE and method == "tsne" and metric == "euclidean"
        pca_dims = min(PCA_DIMS_BEFORE_TSNE, n_points) if wide else None
    elif pca_dims is not None:
        if not isinstance(pca_dims, (int, np.integer)) or not n_components <= pca_dims <= min(n_points, n_features):
            raise ParameterError(
                f"pca_dims must be 'auto', None or an integer between n_components and "
                f"min(points, features) = {min(n_points, n_features)}; got {pca_dims!r}."
            )
        pca_dims = None if pca_dims >= n_features else int(pca_dims)

    if method == "tsne":
        if n_neighbors is not None or min_dist is not None:
            raise ParameterError("n_neighbors and min_dist are UMAP's; for t-SNE set perplexity instead.")
        limit = max_perplexity(n_points)
        if perplexity is None:
            perplexity = default_perplexity(n_points)
        elif not 1 <= perplexity <= limit:
            raise ParameterError(
                f"perplexity={perplexity:g} is impossible for {n_points} points: it must lie between 1 and "
                f"(points - 1) / 3 = {limit:.2f}. Pass a smaller perplexity, or leave it unset to get "
                f"{default_perplexity(n_points):g}."
            )
        return ProjectionSettings(method="tsne", n_components=n_components, seed=seed, metric=metric,
                                  perplexity=float(perplexity), pca_dims=pca_dims)

    # UMAP
    if perplexity is not None:
        raise ParameterError("perplexity is t-SNE's; for UMAP set n_neighbors (and min_dist) instead.")
    if n_neighbors is None:
        n_neighbors = min(DEFAULT_N_NEIGHBORS, n_points - 1)
    elif not 2 <= n_neighbors <= n_points - 1:
        raise ParameterError(
            f"n_neighbors={n_neighbors} is impossible for {n_points} points: it must lie between 2 and "
            f"points - 1 = {n_points - 1}. Leave it unset to get min({DEFAULT_N_NEIGHBORS}, points - 1)."
        )
    if min_dist is None:
        min_dist = DEFAULT_MIN_DIST
    elif not 0 <= min_dist <= 1:
        raise ParameterError(f"min_dist must lie between 0 and 1 (0.0-0.5 is usual); got {min_dist!r}.")
    return ProjectionSettings(method="umap", n_components=n_components, seed=seed, metric=metric,
                              n_neighbors=int(n_neighbors), min_dist=float(min_dist), pca_dims=pca_dims)


# --------------------------------------------------------------------------------------------------
# The methods themselves
# --------------------------------------------------------------------------------------------------


def as_matrix(X: Any) -> np.ndarray:
    """``X`` (array, DataFrame, torch tensor, nested lists) as a finite 2-D float64 array."""
    if hasattr(X, "detach"):  # a torch tensor, without importing torch here
        X = X.detach().cpu().numpy()
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        hint = " Flatten images first: X.reshape(len(X), -1)." if X.ndim > 2 else ""
        raise ParameterError(f"X must be a 2-D array (points x features); got shape {X.shape}.{hint}")
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        raise ParameterError(
            f"X has NaN or infinite values in {int(bad.sum())} of {len(X)} rows (first: row "
            f"{int(np.flatnonzero(bad)[0])}); drop or impute those rows before projecting."
        )
    return X


def _pca(X: np.ndarray, n_components: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    return PCA(n_components=n_components, random_state=seed).fit_transform(X)


def _initialization(X: np.ndarray, s: ProjectionSettings) -> str:
    """Start t-SNE and UMAP from the PCA projection: seeded, and it keeps the global layout
    (Kobak & Linderman, 2021). Inputs narrower than the map (e.g. 1-D) start from seeded noise."""
    return "pca" if X.shape[1] >= s.n_components else "random"


def _tsne(X: np.ndarray, s: ProjectionSettings, show_progress: bool | None) -> np.ndarray:
    import openTSNE

    early_iters, main_iters, every = 250, 500, 50  # openTSNE's defaults; the bar moves every 50
    # FFT-interpolated gradients scale linearly (best from ~10k points); Barnes-Hut for fewer points
    # and for 3-D, which the FFT method does not support.
    gradient = "fft" if len(X) >= 10_000 and s.n_components <= 2 else "bh"
    with progress_bar(total=early_iters + main_iters, desc=f"t-SNE of {len(X)} points", unit="iter",
                      disable=None if show_progress is None else not show_progress) as bar:

        def advance(iteration: int, error: float, embedding: Any) -> bool:
            bar.update(every)
            return False  # never stop early

        tsne = openTSNE.TSNE(
            n_components=s.n_components, perplexity=s.perplexity, metric=s.metric,
            initialization=_initialization(X, s), negative_gradient_method=gradient,
            early_exaggeration_iter=early_iters, n_iter=main_iters,
            # One thread: the result is the same for any n_jobs (checked), and on these 2-core machines,
            # shared with other work, a second thread made 20k points slower (63 s vs 39 s), not faster.
            random_state=s.seed, n_jobs=1,
            # a callback makes openTSNE evaluate the KL divergence: only pay for it when a bar shows
            callbacks=None if bar.disable else advance, callbacks_every_iters=every,
        )
        try:
            return np.asarray(tsne.fit(X))
        except ValueError as err:  # e.g. an unknown metric
            raise ParameterError(f"t-SNE rejected the settings {s}: {err}") from err


def _umap(X: np.ndarray, s: ProjectionSettings, show_progress: bool | None) -> np.ndarray:
    import umap  # lazily: importing umap-learn takes seconds

    from workbench.notebook import in_report

    show = (not in_report()) if show_progress is None else show_progress
    reducer = umap.UMAP(
        n_components=s.n_components, n_neighbors=s.n_neighbors, min_dist=s.min_dist, metric=s.metric,
        random_state=s.seed, n_jobs=1,  # a seed makes umap-learn single-threaded anyway; say so
        # The default spectral initialisation ignores the seed when the neighbour graph falls apart
        # into several components (well-separated clusters: exactly our use), so the same seed gave
        # different maps (lmcinnes/umap#544). PCA initialisation is seeded and keeps global structure.
        init=_initialization(X, s),
        tqdm_kwds={"disable": not show, "desc": f"UMAP of {len(X)} points", "leave": False},
    )
    with warnings.catch_warnings():
        # Clustered inputs give a disconnected neighbour graph; harmless with PCA initialisation.
        warnings.filterwarnings("ignore", message=".*[Gg]raph is not fully connected.*")
        try:
            return np.asarray(reducer.fit_transform(X))
        except ValueError as err:
            raise ParameterError(f"UMAP rejected the settings {s}: {err}") from err


def compute_projection(X: np.ndarray, settings: ProjectionSettings,
                       show_progress: bool | None = None) -> np.ndarray:
    """Run one projection, uncached (:func:`project` is what you normally want)."""
    if settings.pca_dims is not None:
        X = _pca(X, settings.pca_dims, settings.seed)
    if settings.method == "pca":
        Y = _pca(X, settings.n_components, settings.seed)
    elif settings.method == "tsne":
        Y = _tsne(X, settings, show_progress)
    else:
        Y = _umap(X, settings, show_progress)
    _CACHE.stats.computed += 1
    return Y.astype(np.float64)


# --------------------------------------------------------------------------------------------------
# The cache: content hash of (X, settings, library version) -> projection
# --------------------------------------------------------------------------------------------------


@dataclass
class CacheStats:
    """How :func:`project` answered since the process started (or :func:`clear_cache`)."""

    computed: int = 0
    memory_hits: int = 0
    disk_hits: int = 0


class ProjectionCache:
    """A bounded in-memory LRU in front of ``.npy`` files under ``cache_dir()/projections``."""

    def __init__(self, max_items: int = 64) -> None:
        self.max_items = max_items
        self.stats = CacheStats()
        self._memory: OrderedDict[str, np.ndarray] = OrderedDict()

    @staticmethod
    def folder() -> Path:
        from workbench.paths import cache_dir

        return cache_dir() / "projections"

    def get(self, key: str) -> np.ndarray | None:
        if key in self._memory:
            self._memory.move_to_end(key)
            self.stats.memory_hits += 1
            return self._memory[key]
        path = self.folder() / f"{key}.npy"
        if path.exists():
            try:
                Y = np.load(path, allow_pickle=False)
            except (OSError, ValueError):  # a truncated or foreign file: recompute and overwrite it
                return None
            self.stats.disk_hits += 1
            self._remember(key, Y)
            return Y
        return None

    def put(self, key: str, Y: np.ndarray) -> None:
        self._remember(key, Y)
        folder = self.folder()
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{key}.{os.getpid()}.tmp"
        with open(tmp, "wb") as fh:  # np.save(path) would append ".npy" to the temporary name
            np.save(fh, Y, allow_pickle=False)
        os.replace(tmp, folder / f"{key}.npy")  # atomic: concurrent readers never see half a file

    def clear(self, disk: bool = False) -> None:
        self._memory.clear()
        self.stats = CacheStats()
        if disk and self.folder().exists():
            for path in self.folder().glob("*.npy"):
                path.unlink(missing_ok=True)

    def _remember(self, key: str, Y: np.ndarray) -> None:
        self._memory[key] = Y
        self._memory.move_to_end(key)
        while len(self._memory) > self.max_items:
            self._memory.popitem(last=False)


_CACHE = ProjectionCache()


def cache_key(X: np.ndarray, settings: ProjectionSettings) -> str:
    """A hash of the input's bytes, the settings and the implementing library's version."""
    library = _IMPLEMENTATION[settings.method]
    header = json.dumps({"v": 1, "shape": X.shape, "dtype": X.dtype.str, "settings": asdict(settings),
                         library: metadata.version(library)}, sort_keys=True)
    digest = hashlib.blake2b(header.encode(), digest_size=20)
    digest.update(np.ascontiguousarray(X).data)
    return f"{settings.method}-{digest.hexdigest()}"


def cache_stats() -> CacheStats:
    """A copy of the projection cache's counters (computed / memory hits / disk hits)."""
    return replace(_CACHE.stats)


def clear_cache(disk: bool = False) -> None:
    """Forget the in-memory projections and reset the counters; ``disk=True`` also deletes the files."""
    _CACHE.clear(disk=disk)


def neighbour_agreement(points: Any, labels: Any, k: int = 10) -> float:
    """How often a point's ``k`` nearest neighbours share its label (mean fraction, 0..1).

    Compare the input features with their projection: if the map kept the neighbourhoods, the two
    numbers are close. (The point itself is not counted among its neighbours.)
    """
    from sklearn.neighbors import NearestNeighbors

    P = as_matrix(points)
    labels = np.asarray(labels)
    if len(labels) != len(P):
        raise ParameterError(f"got {len(labels)} labels for {len(P)} points.")
    if not 1 <= k < len(P):
        raise ParameterError(f"k must be between 1 and {len(P) - 1}; got {k}.")
    _, index = NearestNeighbors(n_neighbors=k + 1).fit(P).kneighbors(P)
    return float((labels[index[:, 1:]] == labels[:, None]).mean())


# --------------------------------------------------------------------------------------------------
# The entry point
# --------------------------------------------------------------------------------------------------


def project(
    X: Any,
    method: Method | str = "tsne",
    n_components: int = 2,
    *,
    seed: int = 0,
    perplexity: float | None = None,
    n_neighbors: int | None = None,
    min_dist: float | None = None,
    metric: str = "euclidean",
    pca_dims: int | Literal["auto"] | None = "auto",
    cache: bool = True,
    progress: bool | None = None,
) -> np.ndarray:
    """Embed the rows of ``X`` in ``n_components`` dimensions; returns an ``(n_points, n_components)`` array.

    Args:
        X: points x features (NumPy array, DataFrame or torch tensor).
        method: ``"tsne"``, ``"umap"`` or ``"pca"``.
        n_components: 2 or 3 for plotting (PCA allows more).
        seed: the same seed gives the same result on every run.
        perplexity: t-SNE's neighbourhood size; default ``min(30, (n - 1) / 3)``.
        n_neighbors: UMAP's neighbourhood size; default ``min(15, n - 1)``.
        min_dist: UMAP's minimum spacing of points in the embedding; default 0.1.
        metric: distance in the input space for t-SNE/UMAP (``"euclidean"``, ``"cosine"``, ...).
        pca_dims: reduce to this many principal components first; ``"auto"`` does so (to 50) for
            t-SNE of inputs wider than 50 features, ``None`` never does.
        cache: reuse a previous result for the same input and settings (memory, then disk).
        progress: show a progress bar (default: yes, except while a report renders).

    Raises:
        ParameterError: unknown method, a setting that does not fit the input (e.g. a perplexity
            above ``(n - 1) / 3``), or NaN/inf in ``X``.
    """
    X = as_matrix(X)
    settings = resolve_settings(len(X), X.shape[1], method, n_components, seed=seed, perplexity=perplexity,
                                n_neighbors=n_neighbors, min_dist=min_dist, metric=metric, pca_dims=pca_dims)
    if not cache:
        return compute_projection(X, settings, progress)
    key = cache_key(X, settings)
    Y = _CACHE.get(key)
    if Y is None:
        Y = compute_projection(X, settings, progress)
        _CACHE.put(key, Y)
    return Y.copy()  # callers may modify their copy; the cached one stays intact
