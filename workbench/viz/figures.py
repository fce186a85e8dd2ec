"""Plotly figures: embedding scatters, side-by-side comparisons, training curves.

Every builder returns a ``plotly.graph_objects.Figure`` (show it, tweak it, or save it with
:func:`workbench.viz.save_static`). Categories get one trace each, so clicking a legend entry hides or
shows that group (double-click: only that group), and the same category gets the same colour in
every panel and every figure built from the same values (:func:`category_colors`).
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, Sequence

import numpy as np
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.errors import ParameterError

#: Above this many points, 2-D scatters switch to WebGL (``Scattergl``) to stay responsive.
WEBGL_ABOVE = 5000
#: Integer values with at most this many distinct values are treated as categories (class ids).
MAX_INTEGER_CATEGORIES = 60


# --------------------------------------------------------------------------------------------------
# Colours and categories
# --------------------------------------------------------------------------------------------------


def is_categorical(values: Sequence[Any]) -> bool:
    """Strings, booleans and integers with few distinct values are categories; other numbers are not."""
    array = np.asarray(values)
    if array.dtype.kind in "OUSb":
        return True
    if array.dtype.kind in "iu":
        return len(np.unique(array)) <= MAX_INTEGER_CATEGORIES
    return False


def categories(values: Sequence[Any]) -> list[Any]:
    """The distinct values in a stable order: numbers ascending, anything else by its text."""
    unique = list(dict.fromkeys(np.asarray(values, dtype=object).tolist()))
    try:
        return sorted(unique)
    except TypeError:  # mixed types
        return sorted(unique, key=str)


def category_colors(values: Sequence[Any], palette: Sequence[str] | None = None) -> dict[Any, str]:
    """A colour for each distinct value: plotly's 10-colour palette, 24 for more, then a rainbow."""
    cats = categories(values)
    if palette is None:
        if len(cats) <= 10:
            palette = plotly.colors.qualitative.Plotly
        elif len(cats) <= 24:
            palette = plotly.colors.qualitative.Dark24
        else:
            palette = plotly.colors.sample_colorscale("Turbo", [i / max(1, len(cats) - 1) for i in range(len(cats))])
    return {c: palette[i % len(palette)] for i, c in enumerate(cats)}


def _check_length(name: str, values: Sequence[Any] | None, n: int) -> None:
    if values is not None and len(values) != n:
        raise ParameterError(f"{name} has {len(values)} entries but there are {n} points; they must match.")


def _as_points(points: Any) -> np.ndarray:
    if hasattr(points, "detach"):
        points = points.detach().cpu().numpy()
    array = np.asarray(points, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] not in (2, 3):
        raise ParameterError(f"points must be an (n, 2) or (n, 3) array; got shape {array.shape}. "
                             "Project them first: workbench.viz.project(X).")
    return array


# --------------------------------------------------------------------------------------------------
# Scatter traces (shared by the figures here and the explorers)
# --------------------------------------------------------------------------------------------------


def _hover_template(first_line: str, hover: Mapping[str, Sequence[Any]] | None) -> str:
    lines = ["<b>%{hovertext}</b>", first_line]
    lines += [f"{name}: %{{customdata[{i}]}}" for i, name in enumerate(hover or {})]
    return "<br>".join(line for line in lines if line) + "<extra></extra>"


def scatter_traces(
    points: np.ndarray,
    color: Sequence[Any] | None = None,
    *,
    names: Sequence[str] | None = None,
    hover: Mapping[str, Sequence[Any]] | None = None,
    symbol: Sequence[Any] | None = None,
    color_name: str = "label",
    colors: Mapping[Any, str] | None = None,
    categorical: bool | None = None,
    marker_size: float | None = None,
    webgl: bool | None = None,
    showlegend: bool = True,
    coloraxis: str | None = None,
) -> list[tuple[go.BaseTraceType, np.ndarray]]:
    """The scatter traces for ``points``: one per category (or one with a colour bar for numbers).

    Returns ``(trace, index)`` pairs: ``index`` holds the rows of ``points`` the trace draws, so the
    explorers can move the points when the projection changes. ``legendgroup`` is the category, so
    the same category in several panels is toggled together.
    """
    n, dims = points.shape
    for name, values in (("color", color), ("names", names), ("symbol", symbol)):
        _check_length(name, values, n)
    for name, values in (hover or {}).items():
        _check_length(f"hover[{name!r}]", values, n)
    hovertext = np.asarray([str(s) for s in names] if names is not None else [f"#{i}" for i in range(n)], dtype=object)
    customdata = np.column_stack([np.asarray(v, dtype=object) for v in hover.values()]) if hover else None
    size = marker_size or (7 if n <= 500 else 5 if n <= 5000 else 3)
    webgl = n > WEBGL_ABOVE if webgl is None else webgl

    def trace(index: np.ndarray, **style: Any) -> tuple[go.BaseTraceType, np.ndarray]:
        common = dict(mode="markers", hovertext=hovertext[index],
                      customdata=None if customdata is None else customdata[index], **style)
        if dims == 3:
            return go.Scatter3d(x=points[index, 0], y=points[index, 1], z=points[index, 2], **common), index
        kind = go.Scattergl if webgl else go.Scatter
        return kind(x=points[index, 0], y=points[index, 1], **common), index

    if color is not None and not (is_categorical(color) if categorical is None else categorical):
        values = np.asarray(color, dtype=np.float64)
        marker = {"size": size, "color": values, "opacity": 0.85}
        marker |= {"coloraxis": coloraxis} if coloraxis else {"colorscale": "Viridis", "showscale": True,
                                                                "colorbar": {"title": {"text": color_name}}}
        return [trace(np.arange(n), name=color_name, marker=marker, showlegend=False,
                      hovertemplate=_hover_template(f"{color_name}: %{{marker.color:.3g}}", hover))]

    groups = np.asarray(color if color is not None else ["all"] * n, dtype=object)
    symbols = np.asarray(symbol, dtype=object) if symbol is not None else np.full(n, None, dtype=object)
    colors = colors or category_colors(groups)
    symbol_cats = categories(symbols) if symbol is not None else [None]
    marker_symbols = ["circle", "x", "diamond", "square", "cross", "triangle-up", "star"]
    traces = []
    for group in categories(groups):
        for s_i, sym in enumerate(symbol_cats):
            index = np.flatnonzero((groups == group) & (symbols == sym if symbol is not None else True))
            if index.size == 0:
                continue
            label = str(group) if symbol is None else f"{group} · {sym}"
            first = f"{color_name}: {group}" + (f" · {sym}" if symbol is not None else "")
            marker = {"size": size, "color": colors.get(group, "#888"), "opacity": 0.85,
                      "symbol": marker_symbols[s_i % len(marker_symbols)], "line": {"width": 0}}
            traces.append(trace(index, name=label, legendgroup=str(group), showlegend=showlegend,
                                marker=marker, hovertemplate=_hover_template(first, hover)))
    return traces


def style_map_axes(fig: go.Figure, dims: int, axis_title: str | None) -> None:
    """Projection axes have no units: hide tick labels, keep equal aspect so distances look right."""
    if dims == 3:
        axis = {"showticklabels": False, "title": {"text": ""}}
        fig.update_scenes(xaxis=axis, yaxis=axis, zaxis=axis)
        return
    fig.update_xaxes(showticklabels=False, zeroline=False, showgrid=False,
                     title={"text": f"{axis_title} 1" if axis_title else ""})
    fig.update_yaxes(showticklabels=False, zeroline=False, showgrid=False,
                     title={"text": f"{axis_title} 2" if axis_title else ""})


# --------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------


def embedding_scatter(
    points: Any,
    color: Sequence[Any] | None = None,
    *,
    names: Sequence[str] | None = None,
    hover: Mapping[str, Sequence[Any]] | None = None,
    symbol: Sequence[Any] | None = None,
    images: Any = None,
    thumbnails: int = 0,
    color_name: str = "label",
    categorical: bool | None = None,
    palette: Sequence[str] | None = None,
    marker_size: float | None = None,
    axis_title: str | None = None,
    title: str | None = None,
    height: int = 560,
    width: int | None = None,
) -> go.Figure:
    """A 2-D or 3-D scatter of projected embeddings.

    Args:
        points: ``(n, 2)`` or ``(n, 3)``, e.g. from :func:`workbench.viz.project`.
        color: one value per point: a class label, ``"seen"/"unseen"``, a task name (one legend
            entry each) or a number (colour bar).
        names: what hovering over a point shows (the item's name).
        hover: more fields for the hover box, e.g. ``{"task": tasks, "loss": losses}``.
        symbol: a second category shown as the marker shape (e.g. seen/unseen).
        images: the items' images ``(n, H, W[, 3])``; with ``thumbnails > 0`` that many are drawn
            on the map (spread out, non-overlapping), with buttons to hide them.
        color_name: what ``color`` is called (legend and hover).
        categorical: force ``color`` to be treated as categories (True) or numbers (False).
        palette: colours to use for categories, in :func:`categories` order.
        axis_title: e.g. ``"t-SNE"`` labels the axes "t-SNE 1" and "t-SNE 2".
    """
    points = _as_points(points)
    colors = category_colors(color, palette) if color is not None and palette is not None else None
    traces = scatter_traces(points, color, names=names, hover=hover, symbol=symbol, color_name=color_name,
                            colors=colors, categorical=categorical, marker_size=marker_size)
    fig = go.Figure([trace for trace, _ in traces])
    style_map_axes(fig, points.shape[1], axis_title)
    fig.update_layout(title=title, height=height, width=width, template="plotly_white",
                      legend={"title": {"text": color_name}, "itemsizing": "constant"},
                      margin={"l": 40, "r": 20, "t": 60 if title else 30, "b": 40})
    if points.shape[1] == 2:
        fig.update_yaxes(scaleanchor="x", scaleratio=1)
    if images is not None and thumbnails > 0:
        from workbench.viz.images import thumbnail_layout_images, thumbnails_toggle

        _check_length("images", images, len(points))
        if points.shape[1] != 2:
            raise ParameterError("thumbnails are drawn on 2-D maps only; project with n_components=2.")
        entries, _ = thumbnail_layout_images(points, images, count=thumbnails)
        fig.update_layout(images=entries, updatemenus=[thumbnails_toggle(len(entries))])
    return fig


def procrustes_align(reference: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``points`` rotated/reflected, scaled and shifted to best match ``reference`` (least squares).

    t-SNE and UMAP maps have no preferred orientation; aligning one to another makes the same
    points appear in the same place, so side-by-side panels are easy to compare.
    """
    from scipy.linalg import orthogonal_procrustes

    ref_centre, pts_centre = reference.mean(axis=0), points.mean(axis=0)
    ref, pts = reference - ref_centre, points - pts_centre
    rotation, _ = orthogonal_procrustes(pts, ref)
    rotated = pts @ rotation
    scale = np.linalg.norm(ref) / max(np.linalg.norm(rotated), 1e-12)
    return rotated * scale + ref_centre


def compare_scatter(
    embeddings: Mapping[str, Any],
    color: Sequence[Any] | None = None,
    *,
    names: Sequence[str] | None = None,
    hover: Mapping[str, Sequence[Any]] | None = None,
    symbol: Sequence[Any] | None = None,
    color_name: str = "label",
    categorical: bool | None = None,
    palette: Sequence[str] | None = None,
    align: bool = False,
    cols: int | None = None,
    marker_size: float | None = None,
    title: str | None = None,
    panel_px: int | None = None,
) -> go.Figure:
    """The same points under different conditions, side by side, with shared colours and legend.

    ``embeddings`` maps a panel title to that condition's 2-D points (same points, same order), e.g.
    ``{"task A": project(feats_a), "task B": project(feats_b)}``: the TAFE-Net figure, where the same
    images embedded for two tasks group differently. Clicking a legend entry toggles that group in
    every panel. ``align=True`` rotates each panel onto the first (Procrustes), which helps when
    comparing maps whose orientation is arbitrary (t-SNE vs UMAP, two seeds).
    """
    if not embeddings:
        raise ParameterError("compare_scatter needs at least one embedding.")
    panels = {str(k): _as_points(v) for k, v in embeddings.items()}
    first = next(iter(panels.values()))
    for key, pts in panels.items():
        if pts.shape != first.shape:
            raise ParameterError(f"every panel must hold the same points; {key!r} has shape {pts.shape}, "
                                 f"the first {first.shape}.")
    if first.shape[1] != 2:
        raise ParameterError("compare_scatter draws 2-D maps; project with n_components=2.")
    if align:
        panels = {k: procrustes_align(first, v) for k, v in panels.items()}
    cols = cols or min(len(panels), 3)
    rows = math.ceil(len(panels) / cols)
    panel_px = panel_px or min(420, 840 // cols)  # fits a notebook's output area
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(panels), horizontal_spacing=0.04,
                        vertical_spacing=0.08)
    continuous = color is not None and not (is_categorical(color) if categorical is None else categorical)
    colors = None if color is None or continuous else category_colors(color, palette)
    for i, pts in enumerate(panels.values()):
        for trace, _ in scatter_traces(pts, color, names=names, hover=hover, symbol=symbol,
                                       color_name=color_name, colors=colors, categorical=categorical,
                                       marker_size=marker_size, showlegend=i == 0,
                                       coloraxis="coloraxis" if continuous else None):
            fig.add_trace(trace, row=i // cols + 1, col=i % cols + 1)
    style_map_axes(fig, 2, None)
    for i in range(len(panels)):
        suffix = "" if i == 0 else str(i + 1)
        fig.layout[f"yaxis{suffix}"].scaleanchor = f"x{suffix}"
    if continuous:
        values = np.asarray(color, dtype=np.float64)
        fig.update_layout(coloraxis={"colorscale": "Viridis", "cmin": float(values.min()), "cmax": float(values.max()),
                                     "colorbar": {"title": {"text": color_name}}})
    fig.update_layout(title=title, template="plotly_white", height=rows * panel_px + (80 if title else 50),
                      width=cols * panel_px + 160, legend={"title": {"text": color_name}, "itemsizing": "constant"},
                      margin={"l": 30, "r": 20, "t": 80 if title else 50, "b": 30})
    return fig


# --------------------------------------------------------------------------------------------------
# Training curves
# --------------------------------------------------------------------------------------------------

_METRIC = re.compile(r"acc|auc|f1|precision|recall|score|harmonic|top\d|^h$|_h$", re.IGNORECASE)
_SPLIT = re.compile(r"^(train|val|valid|validation|test)[_/ .-]|[_/ .-](train|val|valid|validation|test)$",
                    re.IGNORECASE)
_X_CANDIDATES = ("epoch", "step", "iteration", "episode")
_NOT_TERMS = set(_X_CANDIDATES) | {"time", "wall_s", "seconds", "batch"}


def _history_frame(history: Any):  # -> pandas.DataFrame
    import pandas as pd

    if hasattr(history, "to_frame") and hasattr(history, "records"):  # workbench.train.History
        return history.to_frame()
    if isinstance(history, pd.DataFrame):
        return history.reset_index(drop=True)
    if isinstance(history, Mapping):
        return pd.DataFrame(dict(history))
    return pd.DataFrame.from_records(list(history))


def _split_of(term: str) -> str:
    match = _SPLIT.search(term)
    if not match:
        return "train"
    split = (match.group(1) or match.group(2)).lower()
    return {"valid": "val", "validation": "val"}.get(split, split)


def training_curves(
    history: Any,
    *,
    x: str | None = None,
    terms: Sequence[str] | None = None,
    log_y: bool = False,
    smooth: float = 0.0,
    title: str | None = None,
    height: int | None = None,
) -> go.Figure:
    """One line per logged term (loss parts, accuracies) against epoch or step.

    Args:
        history: a :class:`workbench.train.History`, a list of dicts (one per step/epoch), a dict of
            lists, or a DataFrame. Missing values (e.g. validation every 5th epoch) are skipped.
        x: the column for the x axis (default: ``epoch``, ``step``, ``iteration`` or ``episode``,
            whichever exists, else the row number).
        terms: which columns to draw (default: every numeric column but ``x``).
        log_y: logarithmic axis for the losses.
        smooth: exponential moving average weight in ``[0, 1)`` (0.9 for noisy per-step losses); the
            raw values stay visible, faint.

    Losses and metrics (names with acc, auc, f1, precision, recall, score, H) go in two stacked panels
    with a shared x axis. ``val_loss`` is drawn in the colour of ``loss``, dashed (``test_``: dotted).
    """
    frame = _history_frame(history)
    if frame.empty:
        raise ParameterError("the history is empty: log at least one record before plotting.")
    if x is None:
        x = next((c for c in _X_CANDIDATES if c in frame.columns), None)
    elif x not in frame.columns:
        raise ParameterError(f"x={x!r} is not in the history; columns: {', '.join(map(str, frame.columns))}.")
    xs = frame[x] if x is not None else frame.index
    if terms is None:
        terms = [c for c in frame.columns if c != x and str(c).lower() not in _NOT_TERMS
                 and frame[c].dtype.kind in "iufb"]
    missing = [t for t in terms if t not in frame.columns]
    if missing or not terms:
        raise ParameterError(f"terms {missing or terms} not found among the numeric columns "
                             f"{', '.join(map(str, frame.columns))}.")
    if not 0 <= smooth < 1:
        raise ParameterError(f"smooth is a moving-average weight in [0, 1); got {smooth}.")

    metrics = [t for t in terms if _METRIC.search(_SPLIT.sub("", str(t)))]
    losses = [t for t in terms if t not in metrics]
    panels = [p for p in (losses, metrics) if p]
    fig = make_subplots(rows=len(panels), cols=1, shared_xaxes=True, vertical_spacing=0.07)
    bases = list(dict.fromkeys(_SPLIT.sub("", str(t)) for t in terms))
    colors = category_colors(bases)
    dashes = {"train": "solid", "val": "dash", "test": "dot"}
    for row, panel in enumerate(panels, start=1):
        for term in panel:
            values = frame[term].astype(float)
            keep = values.notna().to_numpy()
            tx, ty = np.asarray(xs)[keep], values.to_numpy()[keep]
            color = colors[_SPLIT.sub("", str(term))]
            line = {"color": color, "dash": dashes[_split_of(str(term))], "width": 2}
            if smooth > 0 and len(ty) > 1:
                fig.add_trace(go.Scatter(x=tx, y=ty, mode="lines", line={**line, "width": 1}, opacity=0.3,
                                         legendgroup=str(term), showlegend=False, hoverinfo="skip"),
                              row=row, col=1)
                ty = _ema(ty, smooth)
            fig.add_trace(go.Scatter(x=tx, y=ty, mode="lines+markers" if len(ty) <= 30 else "lines",
                                     name=str(term), legendgroup=str(term), line=line,
                                     hovertemplate=f"{term}: %{{y:.4g}}<extra></extra>"), row=row, col=1)
        fig.update_yaxes(title={"text": "loss" if panel is losses else "metric"}, row=row, col=1)
    if log_y and losses:
        fig.update_yaxes(type="log", row=1, col=1)
    fig.update_xaxes(title={"text": x or "step"}, row=len(panels), col=1)
    fig.update_layout(title=title, template="plotly_white", hovermode="x unified",
                      height=height or 300 + 220 * len(panels),
                      margin={"l": 60, "r": 20, "t": 60 if title else 30, "b": 50})
    return fig


def _ema(values: np.ndarray, weight: float) -> np.ndarray:
    """Exponential moving average, debiased like TensorBoard's smoothing (no pull towards 0 at the start)."""
    out, running = np.empty_like(values, dtype=float), 0.0
    for i, v in enumerate(values):
        running = weight * running + (1 - weight) * v
        out[i] = running / (1 - weight ** (i + 1))
    return out
