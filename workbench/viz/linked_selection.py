"""What a linked view's selection holds, and the JavaScript that links the maps in an offline report.

:class:`SelectionSummary` (counts per category, spread per map against random sets of the same size) is what
:class:`~workbench.viz.linked.LinkedExplorer` shows under its maps, live and offline; :data:`LINKING_JS` is the
script embedded in the offline HTML (no kernel, no network) that shares one selection across the maps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots


# --------------------------------------------------------------------------------------------------
# The summary of a selection
# --------------------------------------------------------------------------------------------------


def mean_pairwise_distance(points: np.ndarray) -> float:
    """The mean Euclidean distance over all pairs of ``points`` (NaN for fewer than two)."""
    from scipy.spatial.distance import pdist

    return float(pdist(points).mean()) if len(points) > 1 else math.nan


@dataclass
class SelectionSummary:
    """What a selection holds and how spread it is in each map.

    Attributes:
        items: the highlighted items (with ``link_by``: every item sharing a key with a selected one).
        counts: per categorical colouring, a table with one row per category: ``selected``, ``total`` and
            ``share`` (of the selection).
        spread: one row per map: ``items`` (highlighted there), ``mean_distance`` (mean pairwise distance in
            the map), ``ratio`` (that over the mean for random sets of the same size: below 1 the selection
            is tighter than chance), ``random_low`` / ``random_high`` (5th and 95th percentile of the ratio
            for random sets) and ``p_tighter`` (the share of random sets at least as tight).
    """

    items: np.ndarray
    counts: dict[str, Any]  # colouring -> pandas.DataFrame
    spread: Any  # pandas.DataFrame
    n_random: int = 100

    def __len__(self) -> int:
        return len(self.items)

    def figure(self, top: int = 12, height: int = 300) -> go.Figure:
        """Bars: the selection's count per category of each colouring (the ``top`` largest), and its spread
        per map beside the range random sets of the same size reach."""
        names = list(self.counts)
        fig = make_subplots(rows=1, cols=len(names) + 1, horizontal_spacing=0.08,
                            subplot_titles=[f"selected per {name}" for name in names] + ["spread in each map"])
        for col, name in enumerate(names, start=1):
            table = self.counts[name].sort_values("selected", ascending=False, kind="stable").head(top)
            fig.add_trace(go.Bar(x=[str(c) for c in table["category"]], y=table["selected"], name=name,
                                 marker={"color": "#4c72b0"}, showlegend=False,
                                 customdata=np.column_stack([table["total"], 100 * table["share"]]),
                                 hovertemplate="%{x}: %{y} of %{customdata[0]} items (%{customdata[1]:.0f}% of "
                                               "the selection)<extra></extra>"), row=1, col=col)
        spread, col = self.spread, len(names) + 1
        maps = [str(p) for p in spread.index]
        fig.add_trace(go.Bar(x=maps, y=spread["ratio"], name="selection", marker={"color": "#dd8452"},
                             customdata=np.column_stack([spread["items"], spread["p_tighter"]]),
                             hovertemplate="%{x}: %{y:.2f}x random (%{customdata[0]} items; share of random sets "
                                           "as tight: %{customdata[1]:.2f})<extra></extra>"), row=1, col=col)
        middle = (spread["random_low"] + spread["random_high"]) / 2
        fig.add_trace(go.Scatter(x=maps, y=middle, mode="markers", name=f"random sets (5-95%, {self.n_random})",
                                 marker={"color": "#555", "size": 1},
                                 error_y={"type": "data", "symmetric": False,
                                          "array": spread["random_high"] - middle,
                                          "arrayminus": middle - spread["random_low"], "width": 12,
                                          "color": "#555"}), row=1, col=col)
        fig.add_hline(y=1, line={"dash": "dot", "color": "#999"}, row=1, col=col)
        fig.update_yaxes(title={"text": "items"}, row=1, col=1)
        fig.update_yaxes(title={"text": "mean pairwise distance / random"}, rangemode="tozero", row=1, col=col)
        fig.update_layout(template="plotly_white", height=height, bargap=0.25,
                          title={"text": f"{len(self.items)} items selected", "x": 0.01, "xanchor": "left"},
                          legend={"orientation": "h", "x": 1, "xanchor": "right", "y": -0.25},
                          margin={"l": 50, "r": 20, "t": 70, "b": 60})
        return fig


# --------------------------------------------------------------------------------------------------
# The JavaScript of the offline report
# --------------------------------------------------------------------------------------------------

#: Runs once the report's figure is drawn (plotly's ``post_script``; ``{plot_id}`` is the figure's div).
#: It reads the spec Python embedded next to the figure, then on every box or lasso selection maps the
#: selected points to items (and their link keys), sets ``selectedpoints`` of every map at once (one
#: ``Plotly.restyle``), and rewrites the thumbnail strip and the summary. Every update's time, from the
#: mouse release to the next painted frame, is kept in ``window.workbenchLinked[id].timings``.
LINKING_JS = r"""
var gd = document.getElementById('{plot_id}');
var root = gd.closest('.workbench-linked');
var spec = JSON.parse(root.querySelector('script.workbench-linked-spec').textContent);
var panels = spec.rows.map(function (_, p) { return p; });
var state = {selection: [], timings: [], phases: [], mouseup: null};
(window.workbenchLinked = window.workbenchLinked || {})[gd.id] = state;
// plotly ends a drag on a cover over the whole page, so the release is caught on the document
document.addEventListener('mouseup', function () { state.mouseup = performance.now(); }, true);

function rng(seed) {  // mulberry32: the same pseudo-random sample on every page load
  return function () {
    seed |= 0; seed = seed + 0x6D2B79F5 | 0;
    var t = Math.imul(seed ^ seed >>> 15, 1 | seed);
    t = t + Math.imul(t ^ t >>> 7, 61 | t) ^ t;
    return ((t ^ t >>> 14) >>> 0) / 4294967296;
  };
}
function sample(list, size, seed) {  // at most `size` entries of `list`, drawn without replacement
  if (list.length <= size) return list;
  var copy = list.slice(), next = rng(seed);
  for (var i = 0; i < size; i++) {
    var j = i + Math.floor(next() * (copy.length - i)), t = copy[i]; copy[i] = copy[j]; copy[j] = t;
  }
  return copy.slice(0, size);
}
function meanDistance(trace, local) {
  var sum = 0, pairs = 0, x = trace.x, y = trace.y;
  for (var a = 0; a < local.length; a++) for (var b = a + 1; b < local.length; b++) {
    var dx = x[local[a]] - x[local[b]], dy = y[local[a]] - y[local[b]];
    sum += Math.sqrt(dx * dx + dy * dy); pairs++;
  }
  return pairs ? sum / pairs : NaN;
}
var randomCache = {};
function randomDistance(p) {  // the mean pairwise distance of a random set in panel p (per view: x changes)
  var trace = gd.data[p];
  if (!randomCache[p] || randomCache[p].x !== trace.x) {
    var all = []; for (var j = 0; j < spec.rows[p].length; j++) all.push(j);
    randomCache[p] = {x: trace.x, value: meanDistance(trace, sample(all, spec.spreadSample, spec.seed + p))};
  }
  return randomCache[p].value;
}
function esc(text) { var d = document.createElement('span'); d.textContent = text; return d.innerHTML; }

function render(items, local) {
  var status = root.querySelector('.workbench-linked-status');
  var strip = root.querySelector('.workbench-linked-strip');
  var summary = root.querySelector('.workbench-linked-summary');
  var indices = root.querySelector('.workbench-linked-indices');
  indices.textContent = items === null ? '' : '[' + state.selection.join(', ') + ']';
  if (items === null) {
    status.textContent = spec.hint; strip.innerHTML = ''; summary.innerHTML = ''; return;
  }
  status.textContent = items.length + ' items selected' + (spec.linkName ? ' (linked by ' + spec.linkName + ')' : '')
    + '. Double-click a map to clear.';
  var html = [];
  if (spec.thumbs) {  // an even spread over the selection
    var count = Math.min(spec.stripSize, items.length);
    for (var s = 0; s < count; s++) {
      var i = items[Math.floor(s * items.length / count)];
      html.push('<img src="' + spec.thumbs[i] + '" title="' + esc(spec.names[i]) + '" width="36" height="36"'
                + ' style="image-rendering:pixelated;margin:1px;border:1px solid #ddd">');
    }
  }
  strip.innerHTML = html.join('');
  var lines = [];
  Object.keys(spec.groups).forEach(function (name) {
    var g = spec.groups[name], counts = {};
    items.forEach(function (i) { counts[g.codes[i]] = (counts[g.codes[i]] || 0) + 1; });
    var top = Object.keys(counts).sort(function (a, b) { return counts[b] - counts[a]; }).slice(0, 8);
    lines.push('<b>' + esc(name) + '</b>: ' + top.map(function (c) {
      return esc(String(g.labels[c])) + ' ' + counts[c];
    }).join(', ') + (Object.keys(counts).length > 8 ? ', …' : ''));
  });
  var spread = panels.map(function (p) {
    var ratio = meanDistance(gd.data[p], sample(local[p], spec.spreadSample, spec.seed)) / randomDistance(p);
    return esc(spec.panelNames[p]) + ' ' + (isNaN(ratio) ? '–' : ratio.toFixed(2) + 'x');
  });
  lines.push('<b>spread</b> (mean pairwise distance / random sets of the same size): ' + spread.join(', '));
  summary.innerHTML = lines.join('<br>');
}

// The fast path: what plotly itself does to the map a box is dragged in (mark the points selected in its
// own records, restyle only their markers, redraw) done for every map at once, with no recalculation of the
// figure; Plotly.restyle would recompute every map (about 0.5 s at 20,000 points). It uses plotly.js
// internals, so it first checks that each one is there, and otherwise leaves the work to Plotly.restyle.
function quickRestyle(local) {
  var full = gd._fullLayout;
  for (var p = 0; p < panels.length; p++) {
    var cd = gd.calcdata && gd.calcdata[p], trace = cd && cd[0] && cd[0].trace;
    if (!trace || !trace._module) return false;
    if (trace.type === 'scattergl') {
      var scene = cd[0].t && cd[0].t._scene;
      if (!scene || !scene.scatter2d || !scene.select2d || !scene.selectBatch || !full._glcanvas) return false;
    } else if (trace.type !== 'scatter' || !trace._module.styleOnSelect || !cd[0].node3) {
      return false;
    }
  }
  var redrawGl = false;
  panels.forEach(function (p) {
    var selected = local ? local[p] : null, cd = gd.calcdata[p], trace = cd[0].trace;
    var marked = new Uint8Array(trace._length);
    if (selected) for (var k = 0; k < selected.length; k++) marked[selected[k]] = 1;
    // plotly's record of the selection, read again by any later redraw (a view menu, a resize)
    [gd.data[p], trace].forEach(function (t) { if (selected) t.selectedpoints = selected; else delete t.selectedpoints; });
    if (trace.type === 'scattergl') {
      var scene = cd[0].t._scene, i = cd[0].t.index, options = new Array(scene.count);
      var wasSelected = scene.selectBatch[i].length || scene.unselectBatch[i].length, rest = [];
      if (selected) for (var j = 0; j < trace._length; j++) if (!marked[j]) rest.push(j);
      scene.selectBatch[i] = selected || [];
      scene.unselectBatch[i] = rest;
      if (!selected !== !wasSelected) {  // switch between the plain and the greyed-out marker style
        options[i] = selected ? scene.markerUnselectedOptions[i] : scene.markerOptions[i];
        scene.scatter2d.update(options);
      }
      redrawGl = true;
    } else {
      for (var m = 0; m < cd.length; m++) cd[m].selected = marked[m];
      trace._module.styleOnSelect(gd, cd, cd[0].node3);
    }
  });
  if (redrawGl) {  // one WebGL canvas holds every map: clear it, then draw each map's scene again
    full._glcanvas.each(function (c) { if (c.regl) c.regl.clear({color: true, depth: true}); });
    Object.keys(full._plots).forEach(function (id) { var s = full._plots[id]._scene; if (s) s.draw(); });
  }
  return true;
}

function highlight(selected, started) {  // selected: item indices, or null to clear
  started = started === undefined ? performance.now() : started;
  state.selection = selected === null ? [] : selected.slice().sort(function (a, b) { return a - b; });
  var local = null, items = null;
  if (selected !== null && selected.length) {
    var marked = new Uint8Array(spec.nKeys);
    selected.forEach(function (i) { marked[spec.keys ? spec.keys[i] : i] = 1; });
    local = spec.rows.map(function (rows) {
      var out = [];
      for (var j = 0; j < rows.length; j++) if (marked[spec.keys ? spec.keys[rows[j]] : rows[j]]) out.push(j);
      return out;
    });
    if (spec.keys) {
      items = [];
      for (var i = 0; i < spec.keys.length; i++) if (marked[spec.keys[i]]) items.push(i);
    } else {
      items = state.selection;
    }
  }
  var handled = performance.now();
  var done = quickRestyle(local) ? Promise.resolve() : Plotly.restyle(
    gd, {selectedpoints: panels.map(function (p) { return local ? local[p] : null; })}, panels);
  return done.then(function () {
    var restyled = performance.now();
    render(items, local);
    var rendered = performance.now();
    requestAnimationFrame(function () { requestAnimationFrame(function () {
      var painted = performance.now();
      state.timings.push(painted - started);
      state.phases.push({toHandler: handled - started, restyle: restyled - handled, summary: rendered - restyled,
                         toPaint: painted - rendered});
    }); });
  });
}
state.select = function (items) { return highlight(items && items.length ? items : null); };
function released() {  // when the mouse button went up for this selection (else: now)
  var at = state.mouseup !== null ? state.mouseup : performance.now();
  state.mouseup = null;
  return at;
}

function axisOf(p) { return p ? 'x' + (p + 1) : 'x'; }
function sourceOf(event) {  // the map the box or lasso was drawn in: its x axis names the range
  var keys = Object.keys(event.range || event.lassoPoints || {});
  for (var p = 0; p < panels.length; p++) if (keys.indexOf(axisOf(p)) >= 0) return p;
  return event.points.length ? event.points[0].curveNumber : -1;
}
var relayingBoxes = false;
gd.on('plotly_selected', function (event) {
  if (relayingBoxes) return;  // plotly re-announces the boxes it keeps: already handled below
  var started = released();
  if (!event) return highlight(null, started);
  var source = sourceOf(event), selected = [];
  event.points.forEach(function (pt) {
    if (pt.curveNumber === source) selected.push(spec.rows[source][pt.pointIndex]);
  });
  // plotly keeps one box per map and would merge an older box in another map into this selection: a new box
  // replaces the selection (shift adds boxes in the same map), so the other maps' boxes go.
  var boxes = gd.layout.selections || [], kept = boxes.filter(function (b) { return b.xref === axisOf(source); });
  relayingBoxes = true;
  var ready = kept.length < boxes.length ? Plotly.relayout(gd, {selections: kept}) : Promise.resolve();
  relayingBoxes = false;
  ready.then(function () { highlight(selected.length ? selected : null, started); });
});
gd.on('plotly_deselect', function () { highlight(null, released()); });
highlight(spec.initial.length ? spec.initial : null);
"""
