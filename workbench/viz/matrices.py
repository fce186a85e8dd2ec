"""Distance, similarity and correlation matrices as heatmaps, optionally in clustered order.

A matrix of pairwise task distances (Task2Vec) or task correlations (TTNet) is easiest to read when
similar rows sit next to each other. :func:`cluster_order` finds such an order with hierarchical
clustering (complete linkage: two groups are as far apart as their two farthest members) and
"optimal leaf ordering" (among the orders the tree allows, the one where neighbouring leaves are
closest). :func:`matrix_heatmap` draws the matrix in that order with the tree (dendrogram) on top.

Colour scale: values with both signs (correlations) get a diverging scale centred on 0, so sign and
strength read at a glance; non-negative values (distances) get a sequential one.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.errors import ParameterError

MatrixKind = Literal["auto", "distance", "similarity", "correlation"]


def _as_square(matrix: Any, labels: Sequence[Any] | None) -> tuple[np.ndarray, list[str]]:
    if hasattr(matrix, "index") and hasattr(matrix, "to_numpy"):  # a DataFrame: labels from its index
        labels = list(matrix.index) if labels is None else labels
        matrix = matrix.to_numpy()
    if hasattr(matrix, "detach"):
        matrix = matrix.detach().cpu().numpy()
    M = np.asarray(matrix, dtype=np.float64)
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise ParameterError(f"expected a square matrix (items x items); got shape {M.shape}.")
    if np.isnan(M).any():
        raise ParameterError("the matrix has NaN entries; fill or drop those items first.")
    labels = [str(label) for label in labels] if labels is not None else [str(i) for i in range(len(M))]
    if len(labels) != len(M):
        raise ParameterError(f"got {len(labels)} labels for a {len(M)}x{len(M)} matrix.")
    return M, labels


def infer_kind(matrix: np.ndarray) -> str:
    """``"correlation"`` (unit diagonal, values in [-1, 1]), ``"distance"`` (zero diagonal, no
    negatives) or ``"similarity"`` (anything else; larger = more alike)."""
    diagonal = np.diag(matrix)
    if np.allclose(diagonal, 1) and matrix.min() >= -1 - 1e-9 and matrix.max() <= 1 + 1e-9:
        return "correlation"
    if np.allclose(diagonal, 0) and matrix.min() >= 0:
        return "distance"
    return "similarity"


def to_distance(matrix: np.ndarray, kind: str) -> np.ndarray:
    """A symmetric, non-negative dissimilarity with a zero diagonal, for clustering."""
    if kind == "distance":
        D = matrix
    elif kind == "correlation":
        D = 1.0 - matrix  # 0 for identical, 2 for perfectly anti-correlated
    elif kind == "similarity":
        D = matrix.max() - matrix
    else:
        raise ParameterError(f"kind must be 'auto', 'distance', 'similarity' or 'correlation'; got {kind!r}.")
    D = (D + D.T) / 2  # clustering needs symmetry; tiny asymmetries come from float noise
    D = np.clip(D, 0, None)
    np.fill_diagonal(D, 0)
    return D


def linkage_tree(matrix: Any, kind: MatrixKind = "auto") -> np.ndarray:
    """The complete-linkage tree (scipy linkage matrix) with optimal leaf ordering."""
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import squareform

    M, _ = _as_square(matrix, None)
    if len(M) < 2:
        raise ParameterError("clustering needs at least 2 items.")
    D = to_distance(M, infer_kind(M) if kind == "auto" else kind)
    return linkage(squareform(D, checks=False), method="complete", optimal_ordering=True)


def cluster_order(matrix: Any, kind: MatrixKind = "auto") -> np.ndarray:
    """An order of the items that puts similar ones next to each other (see module docs)."""
    from scipy.cluster.hierarchy import leaves_list

    M, _ = _as_square(matrix, None)
    if len(M) < 3:
        return np.arange(len(M))
    return leaves_list(linkage_tree(M, kind))


def _dendrogram_lines(tree: np.ndarray) -> tuple[list[float | None], list[float | None]]:
    """The tree's segments as one polyline (None breaks it), x in item positions 0..n-1."""
    from scipy.cluster.hierarchy import dendrogram

    drawing = dendrogram(tree, no_plot=True)
    xs: list[float | None] = []
    ys: list[float | None] = []
    for icoord, dcoord in zip(drawing["icoord"], drawing["dcoord"]):
        xs += [(x - 5) / 10 for x in icoord] + [None]  # scipy puts leaf i at 5 + 10 i
        ys += list(dcoord) + [None]
    return xs, ys


def matrix_heatmap(
    matrix: Any,
    labels: Sequence[Any] | None = None,
    *,
    kind: MatrixKind = "auto",
    cluster: bool = False,
    dendrogram: bool | None = None,
    colorscale: str | None = None,
    zmin: float | None = None,
    zmax: float | None = None,
    value_name: str | None = None,
    show_values: bool | None = None,
    title: str | None = None,
) -> go.Figure:
    """A heatmap of a square distance / similarity / correlation matrix.

    Args:
        matrix: ``(n, n)`` array or DataFrame (its index gives the labels).
        labels: one name per row/column.
        kind: how to read the values (``"auto"`` guesses: see :func:`infer_kind`); decides the
            clustering distance and the default colour scale.
        cluster: reorder rows and columns with :func:`cluster_order`.
        dendrogram: draw the clustering tree above the matrix (default: when ``cluster``).
        colorscale: any plotly scale; default diverging ``"RdBu_r"`` centred on 0 for values with both
            signs (correlations), sequential ``"Viridis"`` otherwise.
        value_name: name of the values in the colour bar and hover (default: ``kind``).
        show_values: write the numbers in the cells (default: for up to 12 items).
    """
    from scipy.cluster.hierarchy import leaves_list

    M, labels = _as_square(matrix, labels)
    n = len(M)
    kind = infer_kind(M) if kind == "auto" else kind
    dendrogram = (cluster and n >= 3) if dendrogram is None else dendrogram
    if dendrogram and not cluster:
        raise ParameterError("a dendrogram shows the clustering: pass cluster=True as well.")
    tree = linkage_tree(M, kind) if cluster and n >= 3 else None
    order = leaves_list(tree) if tree is not None else np.arange(n)
    M, labels = M[np.ix_(order, order)], [labels[i] for i in order]

    signed = M.min() < 0 < M.max()
    if signed:
        bound = max(abs(M.min()), abs(M.max())) if kind != "correlation" else 1.0
        zmin = -bound if zmin is None else zmin
        zmax = bound if zmax is None else zmax
    colorscale = colorscale or ("RdBu_r" if signed else "Viridis")
    value_name = value_name or kind
    show_values = n <= 12 if show_values is None else show_values

    # Readable at 50 x 50: ~14 px cells and 10 px labels; bigger matrices shrink cells, and beyond
    # ~120 items only every k-th label is written.
    cell = float(np.clip(720 / n, 4, 40))
    font = float(np.clip(cell * 0.75, 7, 12))
    step = max(1, int(np.ceil(9 / cell)))
    short = [label if len(label) <= 24 else label[:23] + "…" for label in labels]
    ticks = {"tickmode": "array", "tickvals": list(range(0, n, step)), "ticktext": short[::step],
             "tickfont": {"size": font}, "showgrid": False, "zeroline": False}

    heat = go.Heatmap(
        z=M, x=list(range(n)), y=list(range(n)), colorscale=colorscale, zmin=zmin, zmax=zmax,
        colorbar={"title": {"text": value_name}, "len": 0.8 if dendrogram else 1.0, "y": 0.4 if dendrogram else 0.5},
        customdata=np.array([[[r, c] for c in labels] for r in labels], dtype=object) if n <= 300 else None,
        hovertemplate=(f"%{{customdata[0]}} × %{{customdata[1]}}<br>{value_name}: %{{z:.3g}}<extra></extra>"
                       if n <= 300 else f"%{{y}} × %{{x}}<br>{value_name}: %{{z:.3g}}<extra></extra>"),
        texttemplate="%{z:.2f}" if show_values else None, xgap=1 if n <= 60 else 0, ygap=1 if n <= 60 else 0,
    )
    label_px = 7 * max(len(s) for s in short) * font / 12 + 10
    side = n * cell
    if dendrogram and tree is not None:
        tree_px = 120
        fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.01,
                            row_heights=[tree_px / (tree_px + side), side / (tree_px + side)])
        xs, ys = _dendrogram_lines(tree)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": "#555", "width": 1},
                                 hoverinfo="skip", showlegend=False), row=1, col=1)
        fig.add_trace(heat, row=2, col=1)
        fig.update_xaxes(visible=False, row=1, col=1)
        fig.update_yaxes(title={"text": "merge distance", "font": {"size": 10}}, showgrid=False, row=1, col=1)
        fig.update_xaxes(ticks, tickangle=-90, side="bottom", row=2, col=1)
        fig.update_yaxes(ticks, autorange="reversed", row=2, col=1)
        fig.update_xaxes(range=[-0.5, n - 0.5], row=1, col=1)
        height = side + tree_px + label_px + 90
    else:
        fig = go.Figure(heat)
        fig.update_xaxes(ticks, tickangle=-90, range=[-0.5, n - 0.5])
        fig.update_yaxes(ticks, autorange="reversed", scaleanchor="x", constrain="domain")
        height = side + label_px + 90
    fig.update_layout(title=title, template="plotly_white", height=int(max(320, height)),
                      width=int(max(380, side + label_px + 160)),
                      margin={"l": int(label_px) + 10, "r": 20, "t": 60 if title else 30, "b": int(label_px) + 10},
                      plot_bgcolor="white")
    return fig
