"""Interactive embedding explorer: live in JupyterLab, and an offline twin for HTML reports.

:class:`EmbeddingExplorer` holds the features of a set of items (possibly under several *conditions*,
e.g. the same images embedded for task A and for task B), what to colour them by, and which
projections to offer. It shows itself in one of two ways:

* **live** (JupyterLab, a running kernel): ipywidgets controls for the condition, the method, the
  perplexity or number of neighbours and the colouring, above a plotly ``FigureWidget`` that is
  redrawn on every change. Projections come from :func:`workbench.viz.project`, so returning to an
  earlier setting is instant. Hovering a point shows its image and its nearest neighbours.
* **offline** (HTML reports, no kernel, no network): one plotly figure with plotly's own dropdowns
  (or a slider) whose buttons hold every precomputed projection, so the report stays explorable.

Displaying the explorer (last line of a cell) picks live or offline by itself: offline while
``workbench report`` renders the notebook (ipywidgets would be empty boxes in the HTML), live
otherwise. ``explorer.show(live=False)`` forces the offline figure.
"""

from __future__ import annotations

import contextlib
import html
import time
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from workbench.errors import ParameterError
from workbench.progress import progress_bar
from workbench.viz.figures import category_colors, is_categorical, scatter_traces, style_map_axes
from workbench.viz.projection import (
    DEFAULT_N_NEIGHBORS,
    DEFAULT_PERPLEXITY,
    METHOD_NAMES,
    METHODS,
    as_matrix,
    default_perplexity,
    max_perplexity,
    project,
)


@dataclass(frozen=True)
class View:
    """One projection the explorer can show: which features, which method, which knob value."""

    condition: str
    method: str
    knob: float | None = None  # perplexity (t-SNE) or n_neighbors (UMAP)

    def label(self, with_condition: bool = True) -> str:
        text = METHOD_NAMES[self.method]
        if self.method == "tsne":
            text += f", perplexity {self.knob:g}"
        elif self.method == "umap":
            text += f", {self.knob:g} neighbours"
        return f"{self.condition} · {text}" if with_condition else text


class EmbeddingExplorer:
    """Explore 2-D projections of embeddings: live with widgets, or offline with plotly controls.

    Args:
        features: ``(n, d)`` features, or ``{condition: (n, d) features}`` for the same ``n`` items
            under several conditions (which task conditions the embedding).
        color: one value per item (a label, ``seen``/``unseen``, a task) or several colourings
            ``{"class": labels, "split": seen_unseen}``; the first is shown first.
        names: per-item names for the hover box.
        hover: extra hover fields ``{"field": values}``.
        images: per-item images ``(n, H, W[, 3])``; live, hovering a point shows its image and its
            nearest neighbours' images.
        methods: which of ``"tsne"``, ``"umap"``, ``"pca"`` to offer.
        perplexities / n_neighbors: the t-SNE / UMAP settings precomputed for the offline figure
            (values the number of items does not allow are dropped). Live, a slider allows any value.
        min_dist: UMAP's ``min_dist``.
        seed: seed of every projection.
    """

    def __init__(
        self,
        features: Any,
        *,
        color: Sequence[Any] | Mapping[str, Sequence[Any]] | None = None,
        names: Sequence[str] | None = None,
        hover: Mapping[str, Sequence[Any]] | None = None,
        images: Any = None,
        methods: Sequence[str] = ("tsne", "umap", "pca"),
        perplexities: Sequence[float] = (5, 30, 50),
        n_neighbors: Sequence[int] = (5, 15, 50),
        min_dist: float = 0.1,
        seed: int = 0,
        title: str | None = None,
        height: int = 600,
    ) -> None:
        raw = features if isinstance(features, Mapping) else {"features": features}
        if not raw:
            raise ParameterError("features is empty: pass an (n, d) array or {condition: array}.")
        self.conditions: dict[str, np.ndarray] = {str(k): as_matrix(v) for k, v in raw.items()}
        sizes = {k: len(v) for k, v in self.conditions.items()}
        if len(set(sizes.values())) != 1:
            raise ParameterError(f"every condition must hold the same items; sizes differ: {sizes}.")
        self.n = next(iter(sizes.values()))

        if color is None:
            color = {"all": ["all"] * self.n}
        elif not isinstance(color, Mapping):
            color = {"label": color}
        self.colorings: dict[str, list[Any]] = {str(k): list(v) for k, v in color.items()}
        for key, values in self.colorings.items():
            if len(values) != self.n:
                raise ParameterError(f"color[{key!r}] has {len(values)} values for {self.n} items.")
        self.names, self.hover, self.images = names, hover, images
        if images is not None and len(images) != self.n:
            raise ParameterError(f"got {len(images)} images for {self.n} items.")

        unknown = [m for m in methods if m not in METHODS]
        if unknown or not methods:
            raise ParameterError(f"methods must be a non-empty subset of {METHODS}; got {list(methods)}.")
        self.methods = list(methods)
        limit = max_perplexity(self.n)
        self.perplexities = sorted({float(p) for p in perplexities if 1 <= p <= limit}) or [
            default_perplexity(self.n)]
        self.n_neighbors = sorted({int(k) for k in n_neighbors if 2 <= k <= self.n - 1}) or [
            min(DEFAULT_N_NEIGHBORS, self.n - 1)]
        self.min_dist, self.seed = min_dist, seed
        self.title, self.height = title, height
        self._neighbours: dict[str, np.ndarray] = {}

    # ---------------------------------------------------------------------------------------------
    # Projections
    # ---------------------------------------------------------------------------------------------

    def views(self) -> list[View]:
        """Every precomputed view, in the order of the offline figure's controls."""
        knobs = {"tsne": self.perplexities, "umap": self.n_neighbors, "pca": [None]}
        return [View(c, m, k) for c in self.conditions for m in self.methods for k in knobs[m]]

    def default_view(self) -> View:
        """The first view shown: the first condition, t-SNE (else UMAP, else PCA) with the usual knob value."""
        method = next(m for m in ("tsne", "umap", "pca") if m in self.methods)
        usual = {"tsne": (self.perplexities, DEFAULT_PERPLEXITY), "umap": (self.n_neighbors, DEFAULT_N_NEIGHBORS),
                 "pca": ([None], None)}[method]
        options, preferred = usual
        knob = preferred if preferred in options else options[len(options) // 2]
        return View(next(iter(self.conditions)), method, knob)

    def projection(self, view: View, progress: bool | None = None) -> np.ndarray:
        """The 2-D points of ``view`` (cached by :func:`project`)."""
        X = self.conditions[view.condition]
        if view.method == "tsne":
            return project(X, "tsne", seed=self.seed, perplexity=view.knob, progress=progress)
        if view.method == "umap":
            return project(X, "umap", seed=self.seed, n_neighbors=int(view.knob), min_dist=self.min_dist,
                           progress=progress)
        return project(X, "pca", seed=self.seed, progress=progress)

    # ---------------------------------------------------------------------------------------------
    # Figures
    # ---------------------------------------------------------------------------------------------

    def _base_figure(self, points: np.ndarray, color_by: str) -> tuple[go.Figure, list[tuple[str, np.ndarray]]]:
        """All colourings' traces (only ``color_by``'s visible), placed at ``points``.

        Returns the figure and, per trace, the colouring it belongs to and the items it draws.
        """
        fig, groups = go.Figure(), []
        for key, values in self.colorings.items():
            colors = category_colors(values) if is_categorical(values) else None
            for trace, index in scatter_traces(points, values, names=self.names, hover=self.hover,
                                               color_name=key, colors=colors, webgl=False):
                trace.visible = key == color_by
                fig.add_trace(trace)
                groups.append((key, index))
        style_map_axes(fig, 2, None)
        fig.update_yaxes(scaleanchor="x", scaleratio=1)
        fig.update_layout(template="plotly_white", height=self.height, legend={"title": {"text": color_by},
                          "itemsizing": "constant"}, margin={"l": 30, "r": 20, "t": 110, "b": 30})
        return fig, groups

    def trace_groups(self) -> list[tuple[str, np.ndarray]]:
        """Per trace of the explorer's figures: its colouring and the indices of the items it draws."""
        return self._base_figure(np.zeros((self.n, 2)), next(iter(self.colorings)))[1]

    def _title(self, view: View) -> str:
        prefix = f"{self.title}: " if self.title else ""
        return prefix + view.label(with_condition=len(self.conditions) > 1)

    def figure(self, view: View | None = None, color_by: str | None = None) -> go.Figure:
        """One static view (no controls)."""
        view = view or self.default_view()
        color_by = color_by or next(iter(self.colorings))
        fig, _ = self._base_figure(self.projection(view), color_by)
        fig.update_layout(title=self._title(view), margin={"t": 60})
        return fig

    def offline_figure(self, *, control: Literal["dropdown", "slider"] = "dropdown",
                       progress: bool | None = None) -> go.Figure:
        """Every view precomputed, switched by plotly's own controls: works in static HTML, offline.

        One control picks the view (condition, method, perplexity/neighbours), as a dropdown or a
        slider; a second dropdown picks what colours the points. The view control moves the points
        of *every* trace (restyle ``x``/``y``) and the colour control only switches which traces are
        visible, so the two stay independent.
        """
        views = self.views()
        first = self.default_view()
        points: dict[View, np.ndarray] = {}
        with progress_bar(total=len(views), desc="precomputing views", unit="view",
                          disable=None if progress is None else not progress) as bar:
            for view in views:
                points[view] = self.projection(view, progress=False)
                bar.update(1)
        color_names = list(self.colorings)
        fig, groups = self._base_figure(points[first], color_names[0])

        def coordinates(view: View) -> dict[str, list[list[float]]]:
            Y = np.round(points[view], 4)  # 4 decimals: plenty on screen, half the bytes
            return {"x": [Y[index, 0].tolist() for _, index in groups],
                    "y": [Y[index, 1].tolist() for _, index in groups]}

        steps = [{"label": view.label(with_condition=len(self.conditions) > 1), "method": "update",
                  "args": [coordinates(view), {"title.text": self._title(view),
                                               "xaxis.autorange": True, "yaxis.autorange": True}]}
                 for view in views]
        menus: list[dict[str, Any]] = []
        annotations = []
        if control == "slider":
            fig.update_layout(sliders=[{"active": views.index(first), "steps": steps, "pad": {"t": 40},
                                        "currentvalue": {"prefix": "view: "}}])
        else:
            menus.append({"buttons": steps, "active": views.index(first), "direction": "down",
                          "x": 0.08, "xanchor": "left", "y": 1.13, "yanchor": "top", "showactive": True})
            annotations.append({"text": "view", "x": 0, "xref": "paper", "y": 1.12, "yref": "paper",
                                "showarrow": False, "xanchor": "left"})
        if len(color_names) > 1:
            buttons = [{"label": name, "method": "update",
                        "args": [{"visible": [key == name for key, _ in groups]},
                                 {"legend.title.text": name}]} for name in color_names]
            menus.append({"buttons": buttons, "direction": "down", "x": 0.72, "xanchor": "left", "y": 1.13,
                          "yanchor": "top", "showactive": True})
            annotations.append({"text": "colour by", "x": 0.71, "xref": "paper", "y": 1.12, "yref": "paper",
                                "showarrow": False, "xanchor": "right"})
        fig.update_layout(updatemenus=menus, annotations=annotations,
                          title={"text": self._title(first), "y": 0.99, "yanchor": "top"})
        if control == "slider":
            fig.update_layout(height=self.height + 80, margin={"b": 110})
        return fig

    # ---------------------------------------------------------------------------------------------
    # Live widget
    # ---------------------------------------------------------------------------------------------

    def _neighbour_index(self, condition: str, k: int = 8) -> np.ndarray:
        """Each item's ``k`` nearest neighbours in the condition's feature space (computed once)."""
        if condition not in self._neighbours:
            from sklearn.neighbors import NearestNeighbors

            X = self.conditions[condition]
            k = min(k, self.n - 1)
            self._neighbours[condition] = NearestNeighbors(n_neighbors=k + 1).fit(X).kneighbors(X)[1]
        return self._neighbours[condition]

    def _image_panel_html(self, item: int, condition: str) -> str:
        from workbench.viz.images import as_image_batch, png_data_uri

        batch = as_image_batch(self.images)
        lo, hi = float(batch.min()), float(batch.max())

        def tile(i: int, px: int, caption: str) -> str:
            return (f'<figure style="display:inline-block;margin:2px;text-align:center">'
                    f'<img src="{png_data_uri(batch[i], lo, hi)}" width="{px}" style="image-rendering:pixelated">'
                    f'<figcaption style="font-size:10px">{html.escape(caption)}</figcaption></figure>')

        def caption(i: int) -> str:
            name = str(self.names[i]) if self.names is not None else f"#{i}"
            first = next(iter(self.colorings.values()))
            return f"{name} ({first[i]})" if "all" not in self.colorings else name

        neighbours = [j for j in self._neighbour_index(condition)[item] if j != item][:8]
        return (f"<div><b>{html.escape(caption(item))}</b><br>{tile(item, 112, '')}</div>"
                f"<div style='font-size:11px'>nearest in feature space ({html.escape(condition)}):</div>"
                + "".join(tile(j, 48, caption(j)) for j in neighbours))

    def widget(self) -> Any:
        """The live explorer: ipywidgets controls above a plotly ``FigureWidget`` (needs a kernel)."""
        import ipywidgets as w

        view = self.default_view()
        color_names = list(self.colorings)
        condition = w.Dropdown(options=list(self.conditions), value=view.condition, description="condition")
        method = w.ToggleButtons(options=[(METHOD_NAMES[m], m) for m in self.methods], value=view.method,
                                 description="method")
        top_perplexity = max(2, min(100, int(max_perplexity(self.n))))
        perplexity = w.IntSlider(value=int(min(DEFAULT_PERPLEXITY, top_perplexity)), min=2, max=top_perplexity,
                                 description="perplexity", continuous_update=False)
        neighbours = w.IntSlider(value=min(DEFAULT_N_NEIGHBORS, self.n - 1), min=2, max=max(2, min(200, self.n - 1)),
                                 description="neighbours", continuous_update=False)
        color_by = w.Dropdown(options=color_names, value=color_names[0], description="colour by")
        status = w.HTML()
        panel = w.HTML(layout=w.Layout(width="300px")) if self.images is not None else None

        base, traces = self._base_figure(self.projection(view), color_names[0])
        base.update_layout(title=self._title(view), margin={"t": 60})
        try:
            figure: Any = go.FigureWidget(base)
            output = None
        except ImportError:  # plotly>=6 without anywidget: redraw a static figure instead
            figure, output = base, w.Output()

        def current_view() -> View:
            knob = {"tsne": perplexity.value, "umap": neighbours.value, "pca": None}[method.value]
            return View(condition.value, method.value, knob)

        hovered: dict[str, int] = {}  # the item the image panel shows, so a switch of condition can refresh it

        def redraw(_: Any = None) -> None:
            v = current_view()
            perplexity.layout.display = "" if v.method == "tsne" else "none"
            neighbours.layout.display = "" if v.method == "umap" else "none"
            status.value = f"<i>computing {html.escape(v.label())}…</i>"
            start = time.perf_counter()
            Y = self.projection(v)
            with figure.batch_update() if output is None else contextlib.nullcontext():
                for trace, (key, index) in zip(figure.data, traces):
                    trace.x, trace.y = Y[index, 0], Y[index, 1]
                    trace.visible = key == color_by.value
                figure.layout.title.text = self._title(v)
                figure.layout.legend.title.text = color_by.value
                figure.layout.xaxis.autorange = figure.layout.yaxis.autorange = True
            status.value = f"{html.escape(v.label())}: {time.perf_counter() - start:.1f} s"
            if panel is not None and "item" in hovered:  # neighbours differ per condition: never show stale ones
                panel.value = self._image_panel_html(hovered["item"], v.condition)
            if output is not None:
                output.clear_output(wait=True)
                with output:
                    figure.show()

        def show_item(index: np.ndarray) -> Any:
            def on_hover(trace: Any, points: Any, state: Any) -> None:
                if panel is not None and points.point_inds:
                    hovered["item"] = int(index[points.point_inds[0]])
                    panel.value = self._image_panel_html(hovered["item"], condition.value)
            return on_hover

        for control in (condition, method, perplexity, neighbours, color_by):
            control.observe(redraw, names="value")
        if output is None and panel is not None:
            for trace, (_, index) in zip(figure.data, traces):
                trace.on_hover(show_item(index))
        redraw()
        # Row 1 picks what to draw, row 2 tunes it: perplexity and neighbours take turns in the same place
        # (only the current method's knob is displayed), so picking UMAP never moves a control to another row.
        first_row = [c for c, keep in ((condition, len(self.conditions) > 1), (method, len(self.methods) > 1)) if keep]
        second_row = [c for c, keep in ((perplexity, "tsne" in self.methods), (neighbours, "umap" in self.methods),
                                        (color_by, len(color_names) > 1)) if keep] + [status]
        plot = figure if output is None else output
        body = w.HBox([plot, panel]) if panel is not None else plot
        return w.VBox([w.HBox(first_row), w.HBox(second_row), body])

    def linked(self, panels: Sequence[Any] | None = None, *, link_by: Sequence[Any] | str | None = None,
               facet: Sequence[Any] | None = None, title: str | None = None) -> Any:
        """Several of this explorer's maps side by side with one linked selection (a
        :class:`~workbench.viz.LinkedExplorer` over the same items and projections).

        ``panels``: condition names or :class:`View` objects (default: the first two conditions).
        """
        from workbench.viz.linked import LinkedExplorer

        return LinkedExplorer.from_explorer(self, panels, link_by=link_by, facet=facet, title=title)

    # ---------------------------------------------------------------------------------------------
    # Display
    # ---------------------------------------------------------------------------------------------

    def show(self, live: bool | None = None) -> None:
        """Display the live widget, or the offline figure while a report renders (or ``live=False``)."""
        from IPython.display import display

        from workbench.notebook import in_report

        if live is None:
            live = not in_report()
        if live:
            display(self.widget())
        else:
            self.offline_figure().show()

    def _ipython_display_(self) -> None:
        self.show()
