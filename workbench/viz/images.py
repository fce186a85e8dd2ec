"""Images in figures: grids with titles, thumbnails, nearest-neighbour galleries, PNG data URIs.

Images arrive in many layouts: ``(n, H, W)`` grey, ``(n, H, W, 3|4)`` colour, or torch's channel-first
``(n, 1|3, H, W)``. :func:`as_image_batch` turns any of them into ``(n, H, W)`` or ``(n, H, W, 3)``,
and everything else here works on that.
"""

from __future__ import annotations

import base64
import math
import struct
import zlib
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.errors import ParameterError

#: More images than this in one grid makes a slow, unreadable figure: show a subset.
MAX_GRID_IMAGES = 400


# --------------------------------------------------------------------------------------------------
# Arrays
# --------------------------------------------------------------------------------------------------


def as_image_batch(images: Any) -> np.ndarray:
    """A batch of images as float ``(n, H, W)`` (grey) or ``(n, H, W, 3)`` (colour).

    Accepts NumPy arrays, torch tensors and lists of equally sized arrays. A 2-D array is one grey
    image; a 3-D array is always a batch of grey images (so 3x3 filters stay filters). 4-D arrays are
    channel-first if they come from torch, else channel-last when the last axis has 1, 3 or 4 entries.
    """
    channel_first = hasattr(images, "detach")
    if channel_first:
        images = images.detach().cpu().numpy()
    batch = np.asarray(images, dtype=np.float64)
    if batch.ndim == 2:
        batch = batch[None]  # one image
    if batch.ndim == 4:
        if channel_first or batch.shape[-1] not in (1, 3, 4):
            batch = np.moveaxis(batch, 1, -1)
        if batch.shape[-1] == 1:
            batch = batch[..., 0]
        elif batch.shape[-1] == 4:
            batch = batch[..., :3]  # drop alpha
    if not (batch.ndim == 3 or (batch.ndim == 4 and batch.shape[-1] == 3)):
        raise ParameterError(
            f"images must be (n, H, W), (n, H, W, 3) or (n, C, H, W) with C in 1, 3, 4; got shape "
            f"{np.shape(images)}. For conv filters with many input channels pick one: w[:, 0]."
        )
    return batch


def to_uint8(image: np.ndarray, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """Scale ``image`` linearly so that ``vmin`` → 0 and ``vmax`` → 255 (defaults: its own range)."""
    lo = float(np.nanmin(image)) if vmin is None else vmin
    hi = float(np.nanmax(image)) if vmax is None else vmax
    scaled = (np.nan_to_num(image, nan=lo) - lo) / (hi - lo if hi > lo else 1.0)
    return np.round(np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    """Encode a ``uint8`` image (``(H, W)`` grey or ``(H, W, 3)`` RGB) as a PNG file.

    A PNG is a signature followed by chunks (length, type, data, CRC): IHDR (size and pixel format),
    IDAT (the zlib-compressed rows, each prefixed by a filter byte, 0 = none) and IEND.
    """
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError("png_bytes expects a uint8 (H, W) or (H, W, 3) array; use to_uint8 first")
    height, width = image.shape[:2]
    colour_type = 0 if image.ndim == 2 else 2  # 0: greyscale, 2: RGB
    rows = np.ascontiguousarray(image).reshape(height, -1)
    raw = np.hstack([np.zeros((height, 1), np.uint8), rows]).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6))
            + chunk(b"IEND", b""))


def png_data_uri(image: np.ndarray, vmin: float | None = None, vmax: float | None = None) -> str:
    """An image as a ``data:image/png;base64,...`` URI (embeds in HTML and plotly, no files, no network)."""
    pixels = image if image.dtype == np.uint8 else to_uint8(image, vmin, vmax)
    return "data:image/png;base64," + base64.b64encode(png_bytes(pixels)).decode("ascii")


def _centred_on_zero(batch: np.ndarray) -> bool:
    """Values of both signs that average out near 0, as weights and filters do (images in [-1, 1],
    mostly background, do not)."""
    lo, hi = float(np.nanmin(batch)), float(np.nanmax(batch))
    return lo < 0 < hi and abs(float(np.nanmean(batch))) < 0.25 * max(-lo, hi)


def _short(text: str, size: int = 16) -> str:
    return text if len(text) <= size else text[: size - 1] + "…"


# --------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------


def image_grid(
    images: Any,
    titles: Sequence[str] | None = None,
    *,
    ncols: int | None = None,
    row_labels: Sequence[str] | None = None,
    title: str | None = None,
    colorscale: str | None = None,
    normalize: Literal["all", "each"] = "all",
    tile_px: int = 96,
) -> go.Figure:
    """Images in a grid, each with an optional title: support/query sets, filters, model outputs.

    Args:
        images: ``(n, H, W)``, ``(n, H, W, 3)`` or ``(n, C, H, W)``.
        titles: one short title per image (class name, prediction, ...).
        ncols: images per row (default: about square; for an N-way K-shot support set pass K and
            ``row_labels`` = the class names).
        row_labels: one label per row, written left of it.
        colorscale: for grey images; default ``"gray"``, or diverging ``"RdBu_r"`` (centred on 0)
            when the values are centred on 0, as generated filters are.
        normalize: ``"all"``: one value range for every image (compare intensities across images);
            ``"each"``: every image stretched to its own range (see the pattern of each filter).
        tile_px: size of one image on screen, in pixels.
    """
    batch = as_image_batch(images)
    n = len(batch)
    if n == 0:
        raise ParameterError("image_grid got no images.")
    if n > MAX_GRID_IMAGES:
        raise ParameterError(f"{n} images are too many for one grid; pass at most {MAX_GRID_IMAGES} "
                             "(e.g. images[:64]).")
    if titles is not None and len(titles) != n:
        raise ParameterError(f"got {len(titles)} titles for {n} images.")
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    if row_labels is not None and len(row_labels) != nrows:
        raise ParameterError(f"got {len(row_labels)} row labels for {nrows} rows of {ncols} images.")

    colour = batch.ndim == 4
    signed = not colour and _centred_on_zero(batch)
    colorscale = colorscale or ("RdBu_r" if signed else "gray")

    fig = make_subplots(rows=nrows, cols=ncols, horizontal_spacing=0.02 / max(1, ncols / 4),
                        vertical_spacing=(0.12 if titles is not None else 0.03) / max(1, nrows / 2),
                        subplot_titles=[str(t) for t in titles] if titles is not None else None)
    for i, image in enumerate(batch):
        row, col = divmod(i, ncols)
        source = image if normalize == "each" else batch
        lo, hi = float(np.nanmin(source)), float(np.nanmax(source))
        if colour:
            trace: go.BaseTraceType = go.Image(z=to_uint8(image, lo, hi), hoverinfo="skip")
        else:
            if signed:
                lo, hi = -max(abs(lo), abs(hi)), max(abs(lo), abs(hi))
            trace = go.Heatmap(z=image, zmin=lo, zmax=hi, colorscale=colorscale, showscale=False,
                               hovertemplate="(%{x}, %{y}): %{z:.3g}<extra></extra>")
        fig.add_trace(trace, row=row + 1, col=col + 1)
    fig.update_xaxes(visible=False, constrain="domain")
    fig.update_yaxes(visible=False, autorange="reversed", constrain="domain")
    for i in range(n):  # square pixels in every panel
        suffix = "" if i == 0 else str(i + 1)
        fig.layout[f"yaxis{suffix}"].scaleanchor = f"x{suffix}"
    for annotation in fig.layout.annotations:
        annotation.font.size = 10
    if row_labels is not None:
        for r, label in enumerate(row_labels):
            axis = "" if r * ncols == 0 else str(r * ncols + 1)
            fig.add_annotation(text=str(label), xref="paper", yref=f"y{axis} domain", x=0, y=0.5,
                               xanchor="right", xshift=-8, showarrow=False, font={"size": 12})
    title_px = 22 if titles is not None else 4
    label_px = min(260, 7 * max(len(str(label)) for label in row_labels) + 24) if row_labels is not None else 20
    fig.update_layout(
        title=title, showlegend=False, template="plotly_white",
        width=max(320, ncols * (tile_px + 8) + label_px + 20),
        height=nrows * (tile_px + title_px + 8) + (70 if title else 30),
        margin={"l": label_px, "r": 20, "t": 60 if title else 30, "b": 10},
    )
    return fig


def neighbour_grid(
    points: Any,
    images: Any,
    queries: Sequence[int],
    *,
    k: int = 8,
    names: Sequence[str] | None = None,
    labels: Sequence[Any] | None = None,
    title: str | None = None,
    tile_px: int = 80,
) -> go.Figure:
    """For each query item, its image and the images of its ``k`` nearest neighbours in ``points``.

    One row per query; the first column is the query (title ``query: name``), the rest its
    neighbours in order of distance (title: name or label, with the distance). Pass the input
    features as ``points`` to see what the model considers similar, or a 2-D projection to check what
    a map puts together. With several queries, a dropdown shows one row at a time, so the figure
    stays small and works in the offline HTML report.
    """
    from sklearn.neighbors import NearestNeighbors

    points = np.asarray(points, dtype=np.float64)
    batch = as_image_batch(images)
    if len(points) != len(batch):
        raise ParameterError(f"got {len(points)} points but {len(batch)} images; they must match.")
    if not 1 <= k < len(points):
        raise ParameterError(f"k must be between 1 and {len(points) - 1}; got {k}.")
    queries = [int(q) for q in queries]
    if not queries or not all(0 <= q < len(points) for q in queries):
        raise ParameterError(f"queries must be indices between 0 and {len(points) - 1}; got {queries}.")
    distances, indices = NearestNeighbors(n_neighbors=k + 1).fit(points).kneighbors(points[queries])

    def caption(i: int) -> str:
        parts = [_short(str(names[i]))] if names is not None else []
        if labels is not None:
            parts.append(_short(str(labels[i])))
        return "<br>".join(parts) or f"#{i}"

    fig = make_subplots(rows=1, cols=k + 1, horizontal_spacing=0.01,
                        subplot_titles=[" "] * (k + 1))  # placeholders, filled per query
    lo, hi = float(batch.min()), float(batch.max())
    buttons, titles_per_query = [], []
    for qi, (query, dist_row, index_row) in enumerate(zip(queries, distances, indices)):
        # the query itself comes first (distance 0); drop it if a duplicate sorted ahead of it
        order = [query] + [j for j in index_row if j != query][:k]
        dist = dict(zip(index_row, dist_row))
        titles_per_query.append([f"<b>query</b><br>{caption(query)}"]
                                + [f"{caption(j)}<br>distance {dist.get(j, 0.0):.3g}" for j in order[1:]])
        for col, j in enumerate(order):
            image = batch[j]
            trace = (go.Image(z=to_uint8(image, lo, hi), hoverinfo="skip") if image.ndim == 3 else
                     go.Heatmap(z=image, zmin=lo, zmax=hi, colorscale="gray", showscale=False,
                                hoverinfo="skip"))
            trace.visible = qi == 0
            fig.add_trace(trace, row=1, col=col + 1)
    per_query = k + 1
    for qi, query in enumerate(queries):
        visible = [i // per_query == qi for i in range(len(fig.data))]
        annotations = {f"annotations[{c}].text": text for c, text in enumerate(titles_per_query[qi])}
        buttons.append({"label": caption(query).replace("<br>", " · "), "method": "update",
                        "args": [{"visible": visible}, annotations]})
    for c, text in enumerate(titles_per_query[0]):
        fig.layout.annotations[c].text = text
        fig.layout.annotations[c].font.size = 9
    fig.update_xaxes(visible=False, constrain="domain")
    fig.update_yaxes(visible=False, autorange="reversed", constrain="domain")
    for c in range(per_query):
        suffix = "" if c == 0 else str(c + 1)
        fig.layout[f"yaxis{suffix}"].scaleanchor = f"x{suffix}"
    if len(queries) > 1:
        fig.update_layout(updatemenus=[{"buttons": buttons, "direction": "down", "x": 1, "xanchor": "right",
                                        "y": 1.0, "yanchor": "bottom", "pad": {"b": 40}, "showactive": True}])
    fig.update_layout(title={"text": title or f"{k} nearest neighbours", "x": 0.01, "xanchor": "left"},
                      template="plotly_white", showlegend=False,
                      width=max(560, per_query * (tile_px + 12) + 40), height=tile_px + 220,
                      margin={"l": 20, "r": 20, "t": 140, "b": 10})
    return fig


def thumbnail_layout_images(
    points: np.ndarray,
    images: Any,
    *,
    count: int = 64,
    size: float = 0.75,
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Layout images that put ``count`` thumbnails on a 2-D scatter without overlapping.

    The map's bounding box is cut into a ``g x g`` grid (``g = floor(sqrt(count))``); in each cell
    that holds points, the point nearest the cell centre shows its image, ``size`` cells wide.
    Returns the plotly ``layout.images`` entries and the indices of the points shown.
    """
    batch = as_image_batch(images)
    points = np.asarray(points, dtype=np.float64)[:, :2]
    g = max(1, math.isqrt(count))
    lo, hi = points.min(axis=0), points.max(axis=0)
    cell = np.where(hi > lo, (hi - lo) / g, 1.0)
    cell_index = np.minimum(((points - lo) / cell).astype(int), g - 1)
    vmin, vmax = float(batch.min()), float(batch.max())
    chosen, entries = [], []
    for cx in range(g):
        for cy in range(g):
            inside = np.flatnonzero((cell_index[:, 0] == cx) & (cell_index[:, 1] == cy))
            if inside.size == 0:
                continue
            centre = lo + (np.array([cx, cy]) + 0.5) * cell
            best = int(inside[np.argmin(((points[inside] - centre) ** 2).sum(axis=1))])
            chosen.append(best)
            entries.append({
                "source": png_data_uri(batch[best], vmin, vmax), "xref": "x", "yref": "y",
                "x": float(points[best, 0]), "y": float(points[best, 1]),
                "sizex": float(cell[0] * size), "sizey": float(cell[1] * size),
                "xanchor": "center", "yanchor": "middle", "layer": "above", "opacity": 0.9,
            })
    return entries, np.array(chosen, dtype=int)


def thumbnails_toggle(n_images: int, *, shown: bool = True) -> dict[str, Any]:
    """An ``updatemenus`` entry with two buttons that show or hide the first ``n_images`` layout images."""

    def visibility(flag: bool) -> Mapping[str, bool]:
        return {f"images[{i}].visible": flag for i in range(n_images)}

    return {
        "type": "buttons", "direction": "right", "x": 1.0, "xanchor": "right", "y": 1.0, "yanchor": "bottom",
        "pad": {"b": 4}, "showactive": True, "active": 0 if shown else 1,
        "buttons": [{"label": "images on", "method": "relayout", "args": [visibility(True)]},
                    {"label": "images off", "method": "relayout", "args": [visibility(False)]}],
    }
