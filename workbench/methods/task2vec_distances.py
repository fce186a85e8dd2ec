"""Task2Vec embeddings and what is done with them: distances, the asymmetric distance and probe selection,
clustering, agreement between distance matrices, and the figures of the notebook.

Everything here works on :class:`Embedding` objects alone (``hessian``, ``scale``, ``meta``), whoever computed
them; the estimator that produces them is :class:`workbench.methods.task2vec.Task2Vec`. Every public name is also
importable from :mod:`workbench.methods.task2vec`.

The distances follow the official ``task_similarity.py`` (awslabs/aws-cv-task2vec): the default ``cosine`` is
the paper's symmetric normalised cosine; the paper's asymmetric distance for choosing a feature extractor is
added (:func:`asymmetric_distance`, :func:`select_probe`), which the official code does not implement.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from workbench.errors import DataError, ParameterError

# ----------------------------------------------------------------------------------------------------------------
# The embedding
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Embedding:
    """A task embedding: the per-filter Fisher (``hessian``), its ``scale`` (the prior precision for the variational
    estimator, ones for Monte Carlo) and ``meta`` (task, estimator, layer slices, timings ...)."""

    hessian: np.ndarray
    scale: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.hessian = np.asarray(self.hessian, dtype=np.float64).reshape(-1)
        self.scale = np.asarray(self.scale, dtype=np.float64).reshape(-1)
        if self.hessian.shape != self.scale.shape:
            raise DataError(f"hessian {self.hessian.shape} and scale {self.scale.shape} must have the same length.")

    @property
    def name(self) -> str:
        return str(self.meta.get("task", ""))

    @property
    def dim(self) -> int:
        return int(self.hessian.size)

    def norm(self, ord: float = 2) -> float:
        """The norm of the (unnormalised) embedding: the paper's task-difficulty signal."""
        return float(np.linalg.norm(self.hessian, ord=ord))

    def layers(self) -> dict[str, np.ndarray]:
        """The embedding split by the probe's modules, ``{"layer3.0.conv1": array, ...}``."""
        return {name: self.hessian[a:b] for name, a, b in self.meta.get("layers", [])}

    def __repr__(self) -> str:
        est = self.meta.get("estimator", "?")
        return f"<Embedding {self.name!r}: {self.dim} filters, {est}, |F|={self.norm():.3g}>"



# ----------------------------------------------------------------------------------------------------------------
# Distances (the official task_similarity.py, vectorised where it matters)
# ----------------------------------------------------------------------------------------------------------------


def _floored(h: np.ndarray) -> np.ndarray:
    """Hessians floored at 1e-8 x their mean: a dead filter (zero Fisher) would make a variance infinite."""
    return np.maximum(h, 1e-8 * max(float(np.mean(h)), 1e-300))


def _variance(e: Embedding, normalized: bool = False) -> np.ndarray:
    var = 1.0 / _floored(e.hessian)
    return var * e.scale if normalized else var  # normalised: variance over the prior's lambda^2 = 1/scale


def _scaled_hessians(e0: Embedding, e1: Embedding) -> tuple[np.ndarray, np.ndarray]:
    s = e0.hessian + e1.hessian + 1e-8
    return e0.hessian / s, e1.hessian / s


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(1.0 - np.dot(a, b) / denom) if denom > 0 else 0.0


def _kl_both(e0: Embedding, e1: Embedding) -> tuple[np.ndarray, np.ndarray]:
    v0, v1 = _variance(e0), _variance(e1)
    return (0.5 * (v0 / v1 - 1 + np.log(v1) - np.log(v0)), 0.5 * (v1 / v0 - 1 + np.log(v0) - np.log(v1)))


def cosine(e0: Embedding, e1: Embedding) -> float:
    """The paper's symmetric distance: cosine distance of ``h0/(h0+h1)`` and ``h1/(h0+h1)`` (official default).

    Dividing by the sum makes every filter count by its *relative* importance for the two tasks, so that the few
    filters with very large Fisher values (usually in the last layers) do not dominate the cosine."""
    return _cosine(*_scaled_hessians(e0, e1))


def normalized_cosine(e0: Embedding, e1: Embedding) -> float:
    """Cosine distance of the variances divided by the prior's (variational embeddings only)."""
    return _cosine(_variance(e0, normalized=True), _variance(e1, normalized=True))


def kl(e0: Embedding, e1: Embedding) -> float:
    """Sum over filters of the larger of the two KL divergences between N(0, 1/h0) and N(0, 1/h1)."""
    kl0, kl1 = _kl_both(e0, e1)
    return float(np.maximum(kl0, kl1).sum())


def asymmetric_kl(e0: Embedding, e1: Embedding) -> float:
    """KL(N(0, 1/h0) || N(0, 1/h1)) summed over filters."""
    return float(_kl_both(e0, e1)[0].sum())


def jsd(e0: Embedding, e1: Embedding) -> float:
    """Mean Jensen-Shannon-style divergence against the average variance."""
    v0, v1 = _variance(e0), _variance(e1)
    v = 0.5 * (v0 + v1)
    kl0 = 0.5 * (v0 / v - 1 + np.log(v) - np.log(v0))
    kl1 = 0.5 * (v1 / v - 1 + np.log(v) - np.log(v1))
    return float((0.5 * (kl0 + kl1)).mean())


def correlation(e0: Embedding, e1: Embedding) -> float:
    """Correlation distance of the variances."""
    v0, v1 = _variance(e0), _variance(e1)
    return _cosine(v0 - v0.mean(), v1 - v1.mean())


def entropy(e0: Embedding, e1: Embedding) -> float:
    """log 2 minus the mean binary entropy of ``h0/(h0+h1)``."""
    from scipy.special import xlogy

    p, _ = _scaled_hessians(e0, e1)
    return float(np.log(2) + (xlogy(p, p) + xlogy(1 - p, 1 - p)).mean())


#: The distances the official code registers, by name.
DISTANCES: dict[str, Callable[[Embedding, Embedding], float]] = {
    "cosine": cosine, "normalized_cosine": normalized_cosine, "kl": kl, "asymmetric_kl": asymmetric_kl,
    "jsd": jsd, "correlation": correlation, "entropy": entropy,
}
ASYMMETRIC = {"asymmetric_kl"}


def _check_compatible(embeddings: Sequence[Embedding], strict: bool) -> None:
    dims = {e.dim for e in embeddings}
    if len(dims) > 1:
        raise DataError(f"embeddings of different sizes {sorted(dims)}: compute all of them with the same probe, "
                        "skip_layers and method.")
    keys = ("estimator", "skip_layers", "probe", "bn_mode")
    kinds = {tuple(e.meta.get(k) for k in keys) for e in embeddings}
    if strict and len(kinds) > 1:
        raise ParameterError(f"embeddings from different settings {sorted(map(str, kinds))} are not comparable "
                             "(e.g. the batch and per-sample estimators differ in scale by the batch size). Compute "
                             "them with one Task2Vec configuration, or pass strict=False.")


def distance(e0: Embedding, e1: Embedding, metric: str = "cosine", *, strict: bool = True) -> float:
    """The distance ``metric`` (a name in :data:`DISTANCES`) between two embeddings."""
    if metric not in DISTANCES:
        raise ParameterError(f"unknown distance {metric!r}; choose one of {', '.join(DISTANCES)}.")
    _check_compatible([e0, e1], strict)
    return DISTANCES[metric](e0, e1)


def distance_matrix(embeddings: Sequence[Embedding], metric: str = "cosine", *, strict: bool = True) -> np.ndarray:
    """``D[i, j] = distance(embeddings[i], embeddings[j])`` (only the upper triangle is computed when symmetric)."""
    if metric not in DISTANCES:
        raise ParameterError(f"unknown distance {metric!r}; choose one of {', '.join(DISTANCES)}.")
    embeddings = list(embeddings)
    _check_compatible(embeddings, strict)
    n = len(embeddings)
    D = np.zeros((n, n))
    if metric == "cosine":  # vectorised: one row at a time against all others
        H = np.stack([e.hessian for e in embeddings])
        for i in range(n):
            s = H[i][None, :] + H + 1e-8
            a, b = H[i][None, :] / s, H / s
            num = (a * b).sum(1)
            den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
            D[i] = np.where(den > 0, 1.0 - num / np.where(den > 0, den, 1.0), 0.0)
        np.fill_diagonal(D, 0.0)
        return np.maximum((D + D.T) / 2, 0.0)
    fn = DISTANCES[metric]
    pairs = itertools.product(range(n), repeat=2) if metric in ASYMMETRIC else itertools.combinations(range(n), 2)
    for i, j in pairs:
        if i == j:
            continue
        D[i, j] = fn(embeddings[i], embeddings[j])
        if metric not in ASYMMETRIC:
            D[j, i] = D[i, j]
    return D


def cross_distance_matrix(sources: Sequence[Embedding], targets: Sequence[Embedding], metric: str = "cosine",
                          *, strict: bool = True) -> np.ndarray:
    """``D[i, j] = distance(sources[i], targets[j])``."""
    if metric not in DISTANCES:
        raise ParameterError(f"unknown distance {metric!r}; choose one of {', '.join(DISTANCES)}.")
    _check_compatible(list(sources) + list(targets), strict)
    fn = DISTANCES[metric]
    return np.array([[fn(s, t) for t in targets] for s in sources])


# ----------------------------------------------------------------------------------------------------------------
# The asymmetric distance and probe (expert) selection
# ----------------------------------------------------------------------------------------------------------------


def trivial_embedding(e: Embedding) -> Embedding:
    """The trivial embedding t0: a posterior equal to the prior (``hessian = scale``), as the official
    ``get_trivial_embedding_from``. For Monte Carlo embeddings (scale = 1) it is the uniform Fisher."""
    return Embedding(e.scale.copy(), e.scale.copy(), {**e.meta, "task": "trivial"})


def complexity(e: Embedding, metric: str = "cosine") -> float:
    """``d_sym(e, t0)``: the paper's measure of how complex (far from the trivial embedding) a task is."""
    return distance(e, trivial_embedding(e), metric)


def asymmetric_distance(source: Embedding, target: Embedding, alpha: float = 0.15, metric: str = "cosine") -> float:
    """The paper's ``d_asym(source -> target) = d_sym(source, target) - alpha * d_sym(source, t0)``.

    Transfer from ``source`` (the task an expert was trained on) to ``target`` works best when the two are similar
    *and* the source is complex (pretraining on a rich task helps); alpha trades the two (0.15 in the paper for a
    ResNet-34 probe). Not a metric: asymmetric and possibly negative."""
    return distance(source, target, metric) - alpha * complexity(source, metric)


def asymmetric_distance_matrix(sources: Sequence[Embedding], targets: Sequence[Embedding], alpha: float = 0.15,
                               metric: str = "cosine") -> np.ndarray:
    """``D[i, j] = d_asym(sources[i] -> targets[j])``."""
    D = cross_distance_matrix(sources, targets, metric)
    comp = np.array([complexity(s, metric) for s in sources])
    return D - alpha * comp[:, None]


def select_probe(target: Embedding, candidates: Mapping[str, Embedding], *, alpha: float = 0.15,
                 metric: str = "cosine", accuracy: Mapping[str, float] | None = None):  # -> pandas.DataFrame
    """Rank candidate feature extractors for ``target`` by ``d_asym(candidate's source task -> target)``.

    ``candidates`` maps each extractor's name to the embedding of the task it was trained on. With ``accuracy``
    (the accuracy each extractor actually reaches on the target after fitting a head), the table also shows the
    true rank, so the choice can be judged. Rank 1 = selected.
    """
    import pandas as pd

    names = list(candidates)
    if not names:
        raise ParameterError("select_probe needs at least one candidate.")
    rows = []
    for name in names:
        src = candidates[name]
        d_sym = distance(src, target, metric)
        comp = complexity(src, metric)
        rows.append({"candidate": name, "d_sym": d_sym, "complexity": comp, "d_asym": d_sym - alpha * comp})
    table = pd.DataFrame(rows)
    table["rank"] = table["d_asym"].rank(method="first").astype(int)
    if accuracy is not None:
        table["accuracy"] = [float(accuracy[n]) for n in names]
        table["true_rank"] = table["accuracy"].rank(ascending=False, method="first").astype(int)
    return table.sort_values("rank").reset_index(drop=True)


@dataclass(frozen=True)
class SelectionSummary:
    """How well a score picks feature extractors, over several target tasks."""

    top1: float  # fraction of targets where the selected extractor is the best one
    mean_regret: float  # mean (best accuracy - accuracy of the selected extractor)
    mean_spearman: float  # mean rank correlation between -score and accuracy, per target
    oracle_accuracy: float  # mean best accuracy
    selected_accuracy: float  # mean accuracy of the selected extractor
    chance_accuracy: float  # mean accuracy of a random extractor


def selection_summary(scores: np.ndarray, accuracy: np.ndarray) -> SelectionSummary:
    """Judge a selection rule: ``scores[i, j]`` (lower = pick) and ``accuracy[i, j]`` of extractor i on target j."""
    from scipy.stats import spearmanr

    scores, accuracy = np.asarray(scores, float), np.asarray(accuracy, float)
    if scores.shape != accuracy.shape or scores.ndim != 2:
        raise ParameterError(f"scores {scores.shape} and accuracy {accuracy.shape} must have the same shape "
                             "(extractors, targets).")
    picked = scores.argmin(0)
    cols = np.arange(scores.shape[1])
    best = accuracy.max(0)
    rho = [spearmanr(-scores[:, j], accuracy[:, j])[0] for j in cols] if scores.shape[0] > 2 else []
    rho = [r for r in rho if np.isfinite(r)]
    return SelectionSummary(
        top1=float(np.mean(accuracy[picked, cols] >= best - 1e-12)),
        mean_regret=float(np.mean(best - accuracy[picked, cols])),
        mean_spearman=float(np.mean(rho)) if rho else float("nan"),
        oracle_accuracy=float(best.mean()),
        selected_accuracy=float(accuracy[picked, cols].mean()),
        chance_accuracy=float(accuracy.mean()),
    )


# ----------------------------------------------------------------------------------------------------------------
# Clustering, agreement, difficulty
# ----------------------------------------------------------------------------------------------------------------


def cluster_order(D: np.ndarray, method: str = "complete") -> np.ndarray:
    """Leaf order of hierarchical clustering (complete linkage, optimal ordering: the official plot's)."""
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    D = np.asarray(D, float)
    if D.ndim != 2 or D.shape[0] != D.shape[1]:
        raise ParameterError(f"need a square distance matrix, got shape {D.shape}.")
    if len(D) < 3:
        return np.arange(len(D))
    sym = (D + D.T) / 2
    np.fill_diagonal(sym, 0.0)
    return leaves_list(linkage(squareform(sym, checks=False), method=method, optimal_ordering=True))


def matrix_agreement(D1: np.ndarray, D2: np.ndarray) -> float:
    """Spearman rank correlation of the off-diagonal entries of two distance matrices (1 = same ordering)."""
    from scipy.stats import spearmanr

    D1, D2 = np.asarray(D1, float), np.asarray(D2, float)
    if D1.shape != D2.shape:
        raise ParameterError(f"distance matrices of different shapes {D1.shape} and {D2.shape}.")
    mask = ~np.eye(len(D1), dtype=bool)
    return float(spearmanr(D1[mask], D2[mask])[0])


def nearest_tasks(D: np.ndarray, names: Sequence[str], query: str, k: int = 5):  # -> pandas.DataFrame
    """The ``k`` tasks closest to ``query`` in the distance matrix ``D``."""
    import pandas as pd

    names = list(names)
    if query not in names:
        raise ParameterError(f"unknown task {query!r}; choose one of {', '.join(names[:10])}...")
    i = names.index(query)
    order = [j for j in np.argsort(D[i], kind="stable") if j != i][:k]
    return pd.DataFrame({"task": [names[j] for j in order], "distance": [float(D[i, j]) for j in order]})


# ----------------------------------------------------------------------------------------------------------------
# Figures and the nearest-task explorer (plotly, imported lazily)
# ----------------------------------------------------------------------------------------------------------------


def task_map(D: np.ndarray, seed: int = 0) -> np.ndarray:
    """A 2-D map of tasks whose distances approximate ``D`` (metric MDS on the precomputed distances)."""
    from sklearn.manifold import MDS

    D = np.asarray(D, float)
    sym = (D + D.T) / 2
    np.fill_diagonal(sym, 0.0)
    try:
        mds = MDS(n_components=2, metric="precomputed", init="classical_mds", n_init=1, random_state=seed)
    except TypeError:  # scikit-learn < 1.8
        mds = MDS(n_components=2, dissimilarity="precomputed", n_init=4, random_state=seed)
    return mds.fit_transform(sym)


def _nearest_bar(D: np.ndarray, names: Sequence[str], query: str, k: int):
    import plotly.graph_objects as go

    table = nearest_tasks(D, names, query, k)
    return go.Bar(x=table["distance"][::-1], y=table["task"][::-1], orientation="h", name=query,
                  hovertemplate="%{y}: %{x:.3f}<extra></extra>")


def nearest_tasks_figure(D: np.ndarray, names: Sequence[str], k: int = 8, initial: str | None = None):
    """The ``k`` nearest tasks of a chosen task, with plotly's own dropdown to choose it (works offline in HTML)."""
    import plotly.graph_objects as go

    names = list(names)
    initial = initial or names[0]
    fig = go.Figure([_nearest_bar(D, names, q, k) for q in names])
    for trace in fig.data:
        trace.visible = trace.name == initial
    buttons = [{"label": q, "method": "update",
                "args": [{"visible": [n == q for n in names]}, {"title": f"Tasks nearest to {q}"}]} for q in names]
    fig.update_layout(title=f"Tasks nearest to {initial}", template="plotly_white", height=120 + 34 * k,
                      xaxis_title="Task2Vec distance (normalised cosine)", showlegend=False,
                      margin={"l": 260, "r": 20, "t": 90, "b": 40},
                      updatemenus=[{"buttons": buttons, "active": names.index(initial), "x": 0, "xanchor": "left",
                                    "y": 1.18, "yanchor": "top"}])
    return fig


def nearest_tasks_explorer(D: np.ndarray, names: Sequence[str], k: int = 8, initial: str | None = None,
                           live: bool | None = None):
    """Live (JupyterLab): a dropdown widget redrawing the nearest-task chart. In reports: the plotly dropdown."""
    from workbench.notebook import in_report

    names = list(names)
    if live is None:
        live = not in_report()
    if not live:
        return nearest_tasks_figure(D, names, k, initial)
    import ipywidgets as widgets
    import plotly.graph_objects as go
    from IPython.display import display

    choose = widgets.Dropdown(options=names, value=initial or names[0], description="task")
    out = widgets.Output()

    def draw(_: Any = None) -> None:
        fig = go.Figure(_nearest_bar(D, names, choose.value, k))
        fig.update_layout(title=f"Tasks nearest to {choose.value}", template="plotly_white", height=120 + 34 * k,
                          xaxis_title="Task2Vec distance (normalised cosine)", margin={"l": 260, "r": 20, "t": 50})
        with out:
            out.clear_output(wait=True)
            display(fig)

    choose.observe(draw, names="value")
    draw()
    return widgets.VBox([choose, out])


def grouping_auc(D: np.ndarray, groups: Sequence[Any]) -> float:
    """How well distances respect a known grouping: the probability that a random same-group pair is closer than a
    random different-group pair (1 = every same-group pair is closer, 0.5 = chance). Ties count half."""
    from scipy.stats import rankdata

    D = np.asarray(D, float)
    g = np.asarray(list(groups))
    iu = np.triu_indices(len(g), 1)
    d, same = D[iu], (g[:, None] == g[None, :])[iu]
    n_same, n_diff = int(same.sum()), int((~same).sum())
    if n_same == 0 or n_diff == 0:
        return float("nan")
    ranks = rankdata(d)  # Mann-Whitney U from ranks: small distances should belong to same-group pairs
    u = ranks[same].sum() - n_same * (n_same + 1) / 2
    return float(1.0 - u / (n_same * n_diff))
