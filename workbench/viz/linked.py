"""Linked views: the same items in several maps side by side, one selection shared by all of them.

Task-aware methods embed the same images differently per task. :class:`LinkedExplorer` puts two or more of
those maps next to each other (tasks, modalities, projection methods) and links them: a box or lasso
selection in any map highlights the same items in every map and greys the rest, so you can ask "where do the
images that cluster together under task A land under task B?". Below the maps, a strip shows the selected
items' images and a summary counts them per class (per seen/unseen, ...) and says how spread they are in
each map, relative to random sets of the same size.

It shows itself in one of two ways, like :class:`~workbench.viz.EmbeddingExplorer`:

* **live** (JupyterLab): one plotly ``FigureWidget`` with a panel per map, a view menu per panel, the
  thumbnail strip and the summary figure; the selection travels to Python (``linked.selection``) and back,
  so a notebook can compute on what the user picked, or set a selection from code.
* **offline** (HTML reports): the same figure with plotly's own menus for the precomputed views, and a few
  lines of JavaScript (:data:`LINKING_JS`, embedded in the report; no kernel, no network) that listen to
  plotly's ``plotly_selected`` event and restyle every map's ``selectedpoints``.

Items are linked by identity by default (item ``i`` in one map is item ``i`` in every other). With
``link_by`` they are linked by a key instead, e.g. the class: selecting a few points then highlights every
item of their classes in every map. That is how images and attribute samples, which are different items, are
linked in CADA-VAE's latent space (``facet`` draws each modality in its own panel).
"""

from __future__ import annotations

import html
import json
import math
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.errors import ParameterError
from workbench.viz.explorers import EmbeddingExplorer, View
from workbench.viz.figures import WEBGL_ABOVE, categories, category_colors, is_categorical
from workbench.viz.linked_selection import LINKING_JS, SelectionSummary, mean_pairwise_distance

#: At most this many thumbnails in the strip under the maps (an even spread over the selection): one row.
STRIP_SIZE = 28
#: Spread statistics use at most this many points of a selection (a seeded subsample): the mean pairwise
#: distance of 300 points is already stable to a few per cent, and it keeps every update fast.
SPREAD_SAMPLE = 300
#: The offline report embeds the items' thumbnails only up to this many items (about 150 bytes each).
MAX_OFFLINE_THUMBNAILS = 5000
#: Categorical colourings with more categories than this get no legend (200 bird species: hover instead).
MAX_LEGEND_ENTRIES = 30
#: How unselected points look: grey and faint, so the selection stands out in every map.
UNSELECTED = {"marker": {"opacity": 0.15, "color": "#b8b8b8"}}
SELECTED = {"marker": {"opacity": 1.0}}
#: ``layout.meta`` of every linked figure: lets tests, benchmarks and the report's script find it.
FIGURE_META = "workbench-linked"


@dataclass(frozen=True)
class Panel:
    """One map of a linked view: a projection (:class:`View`) of the items, or of one facet of them."""

    view: View
    facet: str | None = None

    def label(self, with_condition: bool = True) -> str:
        text = self.view.label(with_condition)
        return f"{text} · {self.facet}" if self.facet is not None else text


# --------------------------------------------------------------------------------------------------
# The linked explorer
# --------------------------------------------------------------------------------------------------


class LinkedExplorer:
    """Two or more maps of the same items side by side; a selection in any of them is shown in all.

    Args:
        features: ``{condition: (n, d) features}`` for the same ``n`` items under several conditions (tasks,
            modalities), or one ``(n, d)`` array (then compare methods, or facets).
        panels: which maps to show, in order: condition names, :class:`View` objects, or ``(condition or
            View, facet)`` pairs. Default: the first two conditions; with one condition, its first two
            methods; with ``facet``, the first condition once per facet value.
        link_by: ``None`` links items by identity. Otherwise a key per item (or the name of a colouring,
            e.g. ``"class"``): a selection then highlights every item whose key is selected.
        facet: a value per item; each panel draws only the items of its facet value (e.g. the modality:
            image latents in one panel, attribute latents in the other). Needs ``link_by``.
        color, names, hover, images, methods, perplexities, n_neighbors, min_dist, seed: as for
            :class:`EmbeddingExplorer`.
        title: the figure's title.
        panel_px: the size of one map on screen.
    """

    def __init__(
        self,
        features: Any,
        *,
        panels: Sequence[Any] | None = None,
        link_by: Sequence[Any] | str | None = None,
        facet: Sequence[Any] | None = None,
        color: Sequence[Any] | Mapping[str, Sequence[Any]] | None = None,
        names: Sequence[str] | None = None,
        hover: Mapping[str, Sequence[Any]] | None = None,
        images: Any = None,
        methods: Sequence[str] = ("tsne",),
        perplexities: Sequence[float] = (30,),
        n_neighbors: Sequence[int] = (15,),
        min_dist: float = 0.1,
        seed: int = 0,
        title: str | None = None,
        panel_px: int = 420,
    ) -> None:
        explorer = EmbeddingExplorer(features, color=color, names=names, hover=hover, images=images,
                                     methods=methods, perplexities=perplexities, n_neighbors=n_neighbors,
                                     min_dist=min_dist, seed=seed, title=title)
        self._setup(explorer, panels=panels, link_by=link_by, facet=facet, title=title, panel_px=panel_px)

    @classmethod
    def from_explorer(cls, explorer: EmbeddingExplorer, panels: Sequence[Any] | None = None, *,
                      link_by: Sequence[Any] | str | None = None, facet: Sequence[Any] | None = None,
                      title: str | None = None, panel_px: int = 420) -> "LinkedExplorer":
        """Linked maps of an existing explorer's items, conditions and projections (shared, not recomputed)."""
        linked = cls.__new__(cls)
        linked._setup(explorer, panels=panels, link_by=link_by, facet=facet, title=title, panel_px=panel_px)
        return linked

    def _setup(self, explorer: EmbeddingExplorer, *, panels: Sequence[Any] | None, link_by: Any,
               facet: Sequence[Any] | None, title: str | None, panel_px: int) -> None:
        self.explorer, self.n, self.title, self.panel_px = explorer, explorer.n, title, panel_px

        # Facets: which items each facet value holds.
        self.facet_values: list[str] | None = None
        if facet is not None:
            facet = np.asarray([str(v) for v in facet], dtype=object)
            if len(facet) != self.n:
                raise ParameterError(f"facet has {len(facet)} values for {self.n} items; give one per item.")
            self.facet_values = [str(v) for v in categories(facet)]
        self._facet = facet

        # Link keys: identity (None) or an integer code per item.
        self.link_name: str | None = None
        if isinstance(link_by, str):
            if link_by not in explorer.colorings:
                raise ParameterError(f"link_by={link_by!r} is not a colouring; pass one of "
                                     f"{', '.join(explorer.colorings)} or a key per item.")
            self.link_name, link_by = link_by, explorer.colorings[link_by]
        if link_by is not None:
            values = np.asarray([str(v) for v in link_by], dtype=object)
            if len(values) != self.n:
                raise ParameterError(f"link_by has {len(values)} keys for {self.n} items; give one per item.")
            _, self.keys = np.unique(values, return_inverse=True)
            self.link_name = self.link_name or "key"
        else:
            self.keys = None
        if facet is not None and self.keys is None:
            raise ParameterError("facet draws disjoint sets of items in the panels, so linking by item would link "
                                 "nothing: pass link_by (e.g. link_by='class') to link items that share a key.")

        self.panels = self._resolve_panels(panels)
        self.rows = [self._rows_of(panel) for panel in self.panels]
        self._selection = np.zeros(0, dtype=int)
        self.saved_selections: dict[str, np.ndarray] = {}
        self._listeners: list[Any] = []  # the live widgets' refresh functions

    # ---------------------------------------------------------------------------------------------
    # Panels and their points
    # ---------------------------------------------------------------------------------------------

    def _resolve_panels(self, panels: Sequence[Any] | None) -> list[Panel]:
        e = self.explorer
        conditions = list(e.conditions)
        if panels is None:
            first = e.default_view()
            if self.facet_values is not None:
                return [Panel(first, f) for f in self.facet_values]
            if len(conditions) > 1:
                return [Panel(View(c, first.method, first.knob)) for c in conditions[:2]]
            if len(e.methods) > 1:
                return [Panel(v) for v in self._first_view_per_method()[:2]]
            raise ParameterError("linked views need at least two maps: pass two conditions ({condition: features}), "
                                 "two methods, or a facet.")
        resolved = []
        for spec in panels:
            view, facet = (spec if isinstance(spec, tuple) else (spec, None))
            if isinstance(spec, Panel):
                view, facet = spec.view, spec.facet
            if isinstance(view, str):
                if view not in e.conditions:
                    raise ParameterError(f"unknown condition {view!r}; the conditions are {', '.join(conditions)}.")
                first = e.default_view()
                view = View(view, first.method, first.knob)
            if not isinstance(view, View) or view not in e.views():
                raise ParameterError(f"panel {spec!r} is not one of the views: "
                                     f"{'; '.join(v.label() for v in e.views())}.")
            if facet is not None and (self.facet_values is None or str(facet) not in self.facet_values):
                raise ParameterError(f"panel facet {facet!r} is not a facet value; the values are "
                                     f"{self.facet_values or '(no facet given)'}.")
            if facet is None and self.facet_values is not None:
                raise ParameterError(f"with facet, every panel names its facet: ({view.condition!r}, "
                                     f"one of {self.facet_values}).")
            resolved.append(Panel(view, None if facet is None else str(facet)))
        if not resolved:
            raise ParameterError("panels is empty: name at least one map.")
        return resolved

    def _first_view_per_method(self) -> list[View]:
        seen: dict[str, View] = {}
        default = self.explorer.default_view()
        for view in self.explorer.views():
            if view.condition == default.condition and view.method not in seen:
                seen[view.method] = view
        return [default] + [v for m, v in seen.items() if m != default.method]

    def _rows_of(self, panel: Panel) -> np.ndarray:
        if panel.facet is None:
            return np.arange(self.n)
        return np.flatnonzero(self._facet == panel.facet)

    def panel_label(self, panel: Panel) -> str:
        return panel.label(with_condition=len(self.explorer.conditions) > 1)

    def points(self, panel: int) -> np.ndarray:
        """The 2-D points panel ``panel`` draws (one row per item in ``rows[panel]``)."""
        view = self.panels[self._panel_index(panel)].view
        return self.explorer.projection(view, progress=False)[self.rows[self._panel_index(panel)]]

    def _panel_index(self, panel: int) -> int:
        if not isinstance(panel, (int, np.integer)) or not 0 <= panel < len(self.panels):
            raise ParameterError(f"panel must be a number between 0 and {len(self.panels) - 1}; got {panel!r}.")
        return int(panel)

    def set_view(self, panel: int, view: View | str) -> None:
        """Show another view (condition, method, knob) in panel ``panel``; the selection stays."""
        p = self._panel_index(panel)
        current = self.panels[p]
        self.panels[p] = self._resolve_panels([(view, current.facet) if current.facet else view])[0]

    # ---------------------------------------------------------------------------------------------
    # The selection
    # ---------------------------------------------------------------------------------------------

    @property
    def selection(self) -> np.ndarray:
        """The selected items' indices (sorted; empty when nothing is selected). Set it to select from code."""
        return self._selection.copy()

    @selection.setter
    def selection(self, items: Any) -> None:
        self._selection = self._as_items(items)
        for refresh in self._listeners:
            refresh()

    def _as_items(self, items: Any) -> np.ndarray:
        if items is None:
            return np.zeros(0, dtype=int)
        array = np.asarray(items)
        if array.dtype == bool:
            if array.shape != (self.n,):
                raise ParameterError(f"a boolean selection needs one entry per item ({self.n}); got shape "
                                     f"{array.shape}.")
            return np.flatnonzero(array)
        array = array.reshape(-1)
        if array.size == 0:
            return np.zeros(0, dtype=int)
        if array.dtype.kind not in "iu" and not (array.dtype.kind == "f" and np.all(array == np.round(array))):
            raise ParameterError(f"a selection is a list of item indices (integers) or a boolean mask; got "
                                 f"values like {array[:3].tolist()}.")
        array = array.astype(int)
        bad = array[(array < 0) | (array >= self.n)]
        if bad.size:
            raise ParameterError(f"item indices must be between 0 and {self.n - 1}; got {bad[:5].tolist()}.")
        return np.unique(array)

    def clear_selection(self) -> None:
        """Select nothing: every map shows all its points again."""
        self.selection = None

    def save_selection(self, name: str) -> np.ndarray:
        """Keep the current selection under ``name`` (in ``saved_selections``); returns its indices."""
        self.saved_selections[str(name)] = self.selection
        return self.saved_selections[str(name)]

    def restore_selection(self, name: str) -> np.ndarray:
        """Select a saved selection again."""
        if name not in self.saved_selections:
            raise ParameterError(f"no saved selection {name!r}; saved: {', '.join(self.saved_selections) or 'none'}.")
        self.selection = self.saved_selections[name]
        return self.selection

    def select_box(self, panel: int, x: tuple[float, float], y: tuple[float, float]) -> np.ndarray:
        """Select the items inside a box of panel ``panel``'s map (its coordinates), as a mouse drag would."""
        Y = self.points(panel)
        inside = ((Y[:, 0] >= min(x)) & (Y[:, 0] <= max(x)) & (Y[:, 1] >= min(y)) & (Y[:, 1] <= max(y)))
        self.selection = self.rows[self._panel_index(panel)][inside]
        return self.selection

    def highlighted(self, selection: Any = None) -> np.ndarray:
        """The items every map highlights for ``selection`` (default: the current one). By identity that is
        the selection itself; with ``link_by``, every item whose key a selected item has."""
        items = self._selection if selection is None else self._as_items(selection)
        if self.keys is None or items.size == 0:
            return items
        return np.flatnonzero(np.isin(self.keys, np.unique(self.keys[items])))

    def selected_points(self, panel: int, selection: Any = None) -> np.ndarray | None:
        """Panel ``panel``'s ``selectedpoints`` (positions in its trace) for ``selection``; None: nothing selected."""
        items = self.highlighted(selection)
        if items.size == 0:
            return None
        return np.flatnonzero(np.isin(self.rows[self._panel_index(panel)], items))

    # ---------------------------------------------------------------------------------------------
    # The summary
    # ---------------------------------------------------------------------------------------------

    def summary(self, selection: Any = None, *, n_random: int = 100, seed: int | None = None) -> SelectionSummary:
        """Counts of the highlighted items per category, and their spread in each map against random sets."""
        import pandas as pd

        items = self.highlighted(selection)
        seed = self.explorer.seed if seed is None else seed
        counts = {}
        for name, values in self.explorer.colorings.items():
            if not is_categorical(values) or name == "all":
                continue
            array = np.asarray(values, dtype=object)
            cats = categories(array)
            chosen = array[items]
            table = pd.DataFrame({"category": cats,
                                  "selected": [int(np.sum(chosen == c)) for c in cats],
                                  "total": [int(np.sum(array == c)) for c in cats]})
            table["share"] = table["selected"] / max(1, len(items))
            counts[name] = table
        rows = []
        for p, panel in enumerate(self.panels):
            rows.append({"map": self.panel_label(panel), **self._spread(p, items, n_random, seed + p)})
        spread = pd.DataFrame(rows).set_index("map")
        return SelectionSummary(items=items, counts=counts, spread=spread, n_random=n_random)

    def _spread(self, panel: int, items: np.ndarray, n_random: int, seed: int) -> dict[str, float]:
        rng = np.random.default_rng(seed)
        Y = self.points(panel)
        local = np.flatnonzero(np.isin(self.rows[panel], items))
        size = min(len(local), SPREAD_SAMPLE)
        empty = {"items": len(local), "mean_distance": math.nan, "ratio": math.nan, "random_low": math.nan,
                 "random_high": math.nan, "p_tighter": math.nan}
        if size < 2 or len(Y) < 3:
            return empty
        observed = mean_pairwise_distance(Y[rng.choice(local, size, replace=False)])
        # Random sets of the same size: their mean pairwise distance is the yardstick for "spread".
        random = np.array([mean_pairwise_distance(Y[rng.choice(len(Y), size, replace=False)])
                           for _ in range(n_random)])
        scale = random.mean()
        return {"items": len(local), "mean_distance": observed, "ratio": observed / scale,
                "random_low": float(np.percentile(random, 5) / scale),
                "random_high": float(np.percentile(random, 95) / scale),
                "p_tighter": float((np.sum(random <= observed) + 1) / (n_random + 1))}

    # ---------------------------------------------------------------------------------------------
    # Figures
    # ---------------------------------------------------------------------------------------------

    def _marker_for(self, color_by: str, rows: np.ndarray, last: bool) -> dict[str, Any]:
        """Marker colours of one panel's points: category codes on a stepped scale, or numbers on Viridis."""
        values = self.explorer.colorings[color_by]
        if is_categorical(values):
            cats = categories(values)
            palette = category_colors(values)
            code = {c: i for i, c in enumerate(cats)}
            codes = np.array([code[v] for v in np.asarray(values, dtype=object)[rows]])
            k = max(1, len(cats))
            scale = []
            for i, c in enumerate(cats):  # one flat step per category
                scale += [[i / k, palette[c]], [(i + 1) / k, palette[c]]]
            return {"color": codes.tolist(), "colorscale": scale or [[0, "#636efa"], [1, "#636efa"]],
                    "cmin": -0.5, "cmax": k - 0.5, "showscale": False}
        numbers = np.asarray(values, dtype=np.float64)
        return {"color": np.round(numbers[rows], 4).tolist(), "colorscale": "Viridis",
                "cmin": float(np.nanmin(numbers)), "cmax": float(np.nanmax(numbers)), "showscale": last,
                "colorbar": {"title": {"text": color_by}, "len": 0.8}}

    def _legend_traces(self) -> list[tuple[str, go.Scatter]]:
        """Legend entries (points with no coordinates): plotly's legend for the colours of the linked maps."""
        entries = []
        for key, values in self.explorer.colorings.items():
            if not is_categorical(values) or key == "all" or len(categories(values)) > MAX_LEGEND_ENTRIES:
                continue
            for cat, colour in category_colors(values).items():
                entries.append((key, go.Scatter(x=[None], y=[None], mode="markers", name=str(cat), legendgroup=key,
                                                marker={"color": colour, "size": 9}, hoverinfo="skip")))
        return entries

    def _hover(self, rows: np.ndarray) -> dict[str, Any]:
        e = self.explorer
        names = e.names if e.names is not None else [f"#{i}" for i in range(self.n)]
        fields = {k: v for k, v in e.colorings.items() if k != "all"} | dict(e.hover or {})
        hovertext = [str(names[i]) for i in rows]
        lines = ["<b>%{hovertext}</b>"] + [f"{k}: %{{customdata[{j}]}}" for j, k in enumerate(fields)]
        customdata = (np.column_stack([np.asarray(v, dtype=object)[rows] for v in fields.values()])
                      if fields else None)
        return {"hovertext": hovertext, "customdata": customdata, "hovertemplate": "<br>".join(lines)}

    def figure(self, color_by: str | None = None, *, with_selection: bool = True) -> go.Figure:
        """The maps side by side (no menus), the current selection highlighted."""
        color_by = color_by or next(iter(self.explorer.colorings))
        if color_by not in self.explorer.colorings:
            raise ParameterError(f"color_by={color_by!r} is not a colouring; pass one of "
                                 f"{', '.join(self.explorer.colorings)}.")
        k = len(self.panels)
        fig = make_subplots(rows=1, cols=k, horizontal_spacing=0.03,
                            subplot_titles=[self.panel_label(p) for p in self.panels])
        size = 7 if self.n <= 500 else 5 if self.n <= 5000 else 2
        for p, panel in enumerate(self.panels):
            rows, Y = self.rows[p], self.points(p)
            kind = go.Scattergl if len(rows) > WEBGL_ABOVE else go.Scatter
            marker = {"size": size, "line": {"width": 0}, "opacity": 0.85,
                      **self._marker_for(color_by, rows, last=p == k - 1)}
            # plain lists, not NumPy arrays: plotly would send those base64-encoded, and the report's script
            # reads the coordinates back from the figure to measure spreads
            fig.add_trace(kind(x=np.round(Y[:, 0], 4).tolist(), y=np.round(Y[:, 1], 4).tolist(), mode="markers",
                               name=self.panel_label(panel), showlegend=False, marker=marker,
                               selected=SELECTED, unselected=UNSELECTED, **self._hover(rows)), row=1, col=p + 1)
        for key, trace in self._legend_traces():
            trace.visible = key == color_by
            fig.add_trace(trace, row=1, col=1)
        if with_selection and self._selection.size:
            for p in range(k):
                fig.data[p].selectedpoints = self.selected_points(p)
        fig.update_xaxes(showticklabels=False, zeroline=False, showgrid=False)
        fig.update_yaxes(showticklabels=False, zeroline=False, showgrid=False)
        for p in range(k):
            suffix = "" if p == 0 else str(p + 1)
            fig.layout[f"yaxis{suffix}"].scaleanchor = f"x{suffix}"
        for annotation in fig.layout.annotations:
            annotation.font.size = 13
        fig.update_layout(template="plotly_white", dragmode="select", meta=FIGURE_META,
                          title={"text": self.title or "Linked maps: select in one, see the same items in all",
                                 "x": 0.01, "xanchor": "left", "y": 0.98, "yanchor": "top"},
                          height=self.panel_px + 150, width=k * self.panel_px + 240,
                          legend={"title": {"text": color_by}, "itemsizing": "constant", "itemclick": False,
                                  "itemdoubleclick": False, "x": 1.01, "xanchor": "left", "y": 0.97},
                          margin={"l": 20, "r": 200, "t": 130, "b": 20})
        return fig

    def offline_figure(self, color_by: str | None = None) -> go.Figure:
        """:meth:`figure` plus plotly's own menus: a view menu per panel (every precomputed view) and the
        colouring. Works without a kernel; :meth:`offline_html` adds the linking script."""
        color_by = color_by or next(iter(self.explorer.colorings))
        fig = self.figure(color_by)
        k, views = len(self.panels), self.explorer.views()
        menus = []
        if len(views) > 1:
            for p, panel in enumerate(self.panels):
                domain = fig.layout[f"xaxis{'' if p == 0 else p + 1}"].domain
                buttons = []
                for view in views:
                    Y = np.round(self.explorer.projection(view, progress=False)[self.rows[p]], 4)
                    label = Panel(view, panel.facet)
                    suffix = "" if p == 0 else str(p + 1)
                    buttons.append({"label": self.panel_label(label), "method": "update",
                                    "args": [{"x": [Y[:, 0].tolist()], "y": [Y[:, 1].tolist()]},
                                             {f"annotations[{p}].text": self.panel_label(label),
                                              f"xaxis{suffix}.autorange": True, f"yaxis{suffix}.autorange": True},
                                             [p]]})
                menus.append({"buttons": buttons, "active": views.index(panel.view), "direction": "down",
                              "x": domain[0], "xanchor": "left", "y": 1.13, "yanchor": "bottom",
                              "showactive": True, "pad": {"t": 0, "b": 0}})
        colorings = list(self.explorer.colorings)
        if len(colorings) > 1:
            legend = self._legend_traces()
            buttons = []
            for name in colorings:
                # One update of every trace: the panels get the colouring's marker, the legend entries keep
                # their own colour and are shown only for this colouring.
                markers = [self._marker_for(name, self.rows[p], last=p == k - 1) for p in range(k)]
                markers += [{"color": trace.marker.color} for _, trace in legend]
                data = {f"marker.{key}": [m.get(key) for m in markers] for key in
                        ("color", "colorscale", "cmin", "cmax", "colorbar")}
                data["marker.showscale"] = [bool(m.get("showscale", False)) for m in markers]
                data["visible"] = [True] * k + [key == name for key, _ in legend]
                buttons.append({"label": f"colour: {name}", "method": "update",
                                "args": [data, {"legend.title.text": name}]})
            # in the legend's column, above the legend (the view menus above the maps take their width)
            menus.append({"buttons": buttons, "active": colorings.index(color_by), "direction": "down",
                          "x": 1.01, "xanchor": "left", "y": 1.01, "yanchor": "bottom", "showactive": True,
                          "pad": {"t": 0, "b": 0}})
        fig.update_layout(updatemenus=menus)
        return fig

    # ---------------------------------------------------------------------------------------------
    # Offline HTML
    # ---------------------------------------------------------------------------------------------

    def _spec(self) -> dict[str, Any]:
        """What the report's script needs: per panel the items its points are, the link keys, labels."""
        e = self.explorer
        thumbs = None
        if e.images is not None and self.n <= MAX_OFFLINE_THUMBNAILS:
            thumbs = self._thumbnails(np.arange(self.n))
        groups = {}
        for name, values in e.colorings.items():
            if is_categorical(values) and name != "all":
                cats = categories(values)
                code = {c: i for i, c in enumerate(cats)}
                groups[name] = {"codes": [code[v] for v in np.asarray(values, dtype=object)],
                                "labels": [str(c) for c in cats]}
        names = e.names if e.names is not None else [f"#{i}" for i in range(self.n)]
        return {
            "rows": [r.tolist() for r in self.rows],
            "keys": None if self.keys is None else self.keys.tolist(),
            "nKeys": int(self.keys.max()) + 1 if self.keys is not None else self.n,
            "linkName": self.link_name, "names": [str(s) for s in names], "thumbs": thumbs, "groups": groups,
            "panelNames": [self.panel_label(p) for p in self.panels], "initial": self._selection.tolist(),
            "stripSize": STRIP_SIZE, "spreadSample": SPREAD_SAMPLE, "seed": int(e.seed),
            "hint": "Drag a box (or pick the lasso in the toolbar) in any map: the same items light up in every "
                    "map" + (f" (linked by {self.link_name})" if self.link_name else "") + ".",
        }

    def _thumbnails(self, items: np.ndarray) -> list[str]:
        from workbench.viz.images import as_image_batch, png_data_uri

        if not hasattr(self, "_thumbnail_cache"):
            batch = as_image_batch(self.explorer.images)
            self._thumbnail_cache = (batch, float(batch.min()), float(batch.max()), {})
        batch, lo, hi, cache = self._thumbnail_cache
        for i in items:
            if int(i) not in cache:
                cache[int(i)] = png_data_uri(batch[int(i)], lo, hi)
        return [cache[int(i)] for i in items]

    def offline_html(self, *, include_plotlyjs: bool = True, full_html: bool = False) -> str:
        """The offline linked view as HTML: the figure, its thumbnail strip and summary, and the linking
        script. ``include_plotlyjs=False`` when the page already has plotly.js (a workbench report)."""
        import plotly.io as pio

        spec = json.dumps(self._spec(), separators=(",", ":")).replace("</", "<\\/")
        figure = pio.to_html(self.offline_figure(), include_plotlyjs=include_plotlyjs, full_html=False,
                             post_script=LINKING_JS, config={"displaylogo": False, "plotGlPixelRatio": 1})
        box = f"workbench-linked-{uuid.uuid4().hex[:8]}"
        # The text blocks come first in the page, so that they exist when the figure's script runs (plotly may
        # draw before the rest of the page is parsed), and flexbox puts them under the figure on screen.
        body = (f'<div class="workbench-linked" id="{box}" style="display:flex;flex-direction:column">'
                f'<script type="application/json" class="workbench-linked-spec">{spec}</script>'
                '<div class="workbench-linked-status" style="order:1;font:13px sans-serif;margin:4px 0"></div>'
                '<div class="workbench-linked-strip" style="order:2"></div>'
                '<div class="workbench-linked-summary" style="order:3;font:12px sans-serif;margin:4px 0"></div>'
                '<details style="order:4;font:12px sans-serif"><summary>selected item indices (paste into '
                '<code>linked.selection = [...]</code>)</summary>'
                '<code class="workbench-linked-indices" style="word-break:break-all"></code></details>'
                f'<div style="order:0">{figure}</div></div>')
        if full_html:
            title = html.escape(self.title or "linked maps")
            return f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{title}</title></head><body>{body}</body></html>'
        return body

    def write_html(self, path: str | Path) -> Path:
        """A standalone HTML file of the offline linked view (plotly.js inside: opens offline anywhere)."""
        path = Path(path)
        path.write_text(self.offline_html(include_plotlyjs=True, full_html=True), encoding="utf-8")
        return path

    # ---------------------------------------------------------------------------------------------
    # Live widget
    # ---------------------------------------------------------------------------------------------

    def _strip_html(self, items: np.ndarray) -> str:
        if self.explorer.images is None or items.size == 0:
            return ""
        picked = items[np.unique(np.linspace(0, len(items) - 1, min(STRIP_SIZE, len(items))).astype(int))]
        names = self.explorer.names
        tiles = [f'<img src="{uri}" title="{html.escape(str(names[i]) if names is not None else f"#{i}")}" '
                 'width="36" height="36" style="image-rendering:pixelated;margin:1px;border:1px solid #ddd">'
                 for i, uri in zip(picked, self._thumbnails(picked))]
        return "".join(tiles)

    def widget(self) -> Any:
        """The live linked view: a view menu per panel, the maps, the thumbnail strip and the summary."""
        import ipywidgets as w

        views = self.explorer.views()
        color_names = list(self.explorer.colorings)
        base = self.figure(color_names[0])
        base.layout.meta = FIGURE_META + "-live"  # how a browser test tells the live view from a static copy
        # plotly's widget sends every hover to the kernel through the same channel as selections, and ipywidgets
        # keeps only the latest of several queued messages: a hover right after a box would drop the box. The
        # live maps therefore show no hover labels; the strip names the selected items (hover a thumbnail).
        base.layout.hovermode = False
        try:
            figure: Any = go.FigureWidget(base)
            summary_figure: Any = go.FigureWidget(self.summary().figure())
        except ImportError:  # plotly>=6 without anywidget: no live selection events
            raise ParameterError("the live linked view needs anywidget (pip install anywidget); "
                                 "linked.show(live=False) shows the offline view.") from None
        k = len(self.panels)
        menus = [w.Dropdown(options=[(self.panel_label(Panel(v, p.facet)), v) for v in views], value=p.view,
                            description=f"map {i + 1}", layout=w.Layout(width=f"{min(420, self.panel_px)}px"))
                 for i, p in enumerate(self.panels)]
        color_by = w.Dropdown(options=color_names, value=color_names[0], description="colour by")
        clear = w.Button(description="clear selection", icon="times")
        status = w.HTML(value=f"<i>{html.escape(self._spec()['hint'])}</i>")
        strip = w.HTML()
        legend = self._legend_traces()
        pending: dict[int, list[int]] = {}  # this selection event's points, per map
        previous: dict[int, list[int]] = {}  # the last event's
        last_source: dict[str, int | None] = {}  # the map of the last box

        def refresh() -> None:
            """Show the current selection in every map, the strip and the summary."""
            start = time.perf_counter()
            items = self.highlighted()
            with figure.batch_update():
                for p in range(k):
                    figure.data[p].selectedpoints = self.selected_points(p)
            strip.value = self._strip_html(items)
            new = self.summary().figure()
            with summary_figure.batch_update():
                for old, fresh in zip(summary_figure.data, new.data):
                    old.update(x=fresh.x, y=fresh.y, customdata=fresh.customdata, error_y=fresh.error_y)
                summary_figure.layout.title.text = new.layout.title.text
            if items.size:
                status.value = (f"{items.size} items selected" + (f" (linked by {self.link_name})" if self.link_name
                                else "") + f"; maps updated in {1000 * (time.perf_counter() - start):.0f} ms. "
                                "<code>linked.selection</code> holds them.")
            else:
                status.value = f"<i>{html.escape(self._spec()['hint'])}</i>"

        def box_around(panel: int, points: list[int]) -> dict[str, Any]:
            """A ``layout.selections`` box of map ``panel`` around ``points`` (plotly's widget reports a box's
            corners only for the first map, so the box is rebuilt from what it caught)."""
            Y = self.points(panel)[points]
            lo, hi = Y.min(axis=0), Y.max(axis=0)
            pad = 1e-4 + 1e-6 * (hi - lo)  # the map's coordinates are rounded to 4 decimals: catch exactly these
            x, y = ("x", "y") if panel == 0 else (f"x{panel + 1}", f"y{panel + 1}")
            return {"type": "rect", "xref": x, "yref": y, "x0": float(lo[0] - pad[0]), "x1": float(hi[0] + pad[0]),
                    "y0": float(lo[1] - pad[1]), "y1": float(hi[1] + pad[1])}

        def on_selection(panel: int) -> Any:
            def handler(trace: Any, points: Any, selector: Any) -> None:
                # plotly calls every trace's handler for one selection, in trace order: gather, then act once
                pending[panel] = list(points.point_inds)
                if panel < k - 1:
                    return
                # plotly keeps one box per map and reports the points of all of them; the map whose points
                # changed is the one the user just drew in.
                changed = [p for p in range(k) if pending.get(p, []) != previous.get(p, [])]
                source = next((p for p in changed if pending.get(p)), next((p for p in range(k) if pending.get(p)),
                                                                           None))
                previous.clear()
                previous.update(pending)
                pending.clear()
                picked = [] if source is None else [int(self.rows[source][j]) for j in previous[source]]
                # A new box replaces the selection: when an older box in another map still counts, the browser
                # keeps only the new one (plotly would otherwise re-apply the old box to its map).
                stale = sum(bool(previous.get(p)) for p in range(k)) > 1 or source != last_source.get("panel", source)
                if source is not None and stale:
                    figure.layout.selections = [box_around(source, previous[source])]
                    previous.update({p: [] for p in range(k) if p != source})
                last_source["panel"] = source
                if not np.array_equal(self._as_items(picked), self._selection):
                    self.selection = picked  # runs refresh() through the listener
                else:  # plotly has just set every map to what its own boxes hold: show the linked selection again
                    with figure.batch_update():
                        for p in range(k):
                            figure.data[p].selectedpoints = self.selected_points(p)
            return handler

        def clear_boxes() -> None:
            """Remove every selection box in the browser.

            plotly.py's record of the boxes misses the ones the user drew (the browser reports them, but the
            record stays empty), so ``figure.layout.selections = ()`` alone may be "no change" and send nothing.
            The relayout message is therefore sent as well, whatever Python believes the browser holds."""
            figure.layout.selections = ()
            send = getattr(figure, "_send_relayout_msg", None)  # plotly.py's widget channel (plotly 5 to 7)
            if send is not None:
                send({"selections": []})

        def on_deselect(panel: int) -> Any:
            def handler(trace: Any, points: Any) -> None:
                if panel == k - 1:  # plotly calls every trace's handler for one double click: act once
                    previous.clear()
                    last_source.clear()
                    # plotly.js cleared only the map that was double-clicked, and only that map's boxes. A box
                    # left in another map would select its points again at the next redraw (plotly re-applies
                    # layout.selections), so every box goes first. Then the other maps' clearing is sent
                    # explicitly: plotly.py has already marked every map clear, so an empty selection, then none.
                    clear_boxes()
                    with figure.batch_update():
                        for p in range(k):
                            figure.data[p].selectedpoints = []
                    self.selection = None  # refresh() sets every map to None: a change, so it is sent
            return handler

        def change_view(panel: int) -> Any:
            def handler(change: Any) -> None:
                self.panels[panel] = Panel(change["new"], self.panels[panel].facet)
                Y = self.points(panel)
                with figure.batch_update():
                    figure.data[panel].x = np.round(Y[:, 0], 4).tolist()
                    figure.data[panel].y = np.round(Y[:, 1], 4).tolist()
                    figure.layout.annotations[panel].text = self.panel_label(self.panels[panel])
                    suffix = "" if panel == 0 else str(panel + 1)
                    figure.layout[f"xaxis{suffix}"].autorange = True
                    figure.layout[f"yaxis{suffix}"].autorange = True
                refresh()  # the spread in the new map
            return handler

        def recolour(change: Any) -> None:
            with figure.batch_update():
                for p in range(k):
                    marker = self._marker_for(change["new"], self.rows[p], last=p == k - 1)
                    figure.data[p].marker.update(marker)
                for trace, (key, _) in zip(figure.data[k:], legend):
                    trace.visible = key == change["new"]
                figure.layout.legend.title.text = change["new"]

        for p in range(k):
            figure.data[p].on_selection(on_selection(p))
            figure.data[p].on_deselect(on_deselect(p))
            menus[p].observe(change_view(p), names="value")
        color_by.observe(recolour, names="value")
        clear.on_click(lambda _: self.clear_selection())
        self._listeners.append(refresh)
        refresh()
        controls = menus + ([color_by] if len(color_names) > 1 else []) + [clear]
        return w.VBox([w.HBox(controls), status, figure, strip, summary_figure])

    # ---------------------------------------------------------------------------------------------
    # Display
    # ---------------------------------------------------------------------------------------------

    def show(self, live: bool | None = None) -> None:
        """The live widget, or the offline view while a report renders (or with ``live=False``)."""
        from IPython.display import display

        from workbench.notebook import in_report

        rendering = in_report()
        if live is None:
            live = not rendering
        if live:
            display(self.widget())
        else:
            # In a report plotly.js is on the page already (workbench.notebook.setup embeds it once).
            display({"text/html": self.offline_html(include_plotlyjs=not rendering)}, raw=True)

    def _ipython_display_(self) -> None:
        self.show()
