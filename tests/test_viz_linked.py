"""workbench.viz.linked: selections shared by several maps, their summary, the offline figure and the live widget."""

from __future__ import annotations

import json
import re

import numpy as np
import plotly.graph_objects as go
import pytest

from workbench.errors import ParameterError
from workbench.viz import EmbeddingExplorer, LinkedExplorer, Panel, View
from workbench.viz.linked import STRIP_SIZE


def clustered(n: int = 90, k: int = 3, d: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % k
    return rng.normal(scale=8.0, size=(k, d))[labels] + rng.normal(size=(n, d)), labels


@pytest.fixture(scope="module")
def data():
    X, labels = clustered()
    # task B mixes the classes up: its clusters are not task A's
    other = np.roll(X, 1, axis=1) * np.where(labels == 0, -1.0, 1.0)[:, None]
    return X, other, labels


@pytest.fixture()
def linked(data) -> LinkedExplorer:
    X, other, labels = data
    return LinkedExplorer(
        {"task A": X, "task B": other}, methods=("pca",),
        color={"class": labels, "split": np.where(labels == 2, "unseen", "seen"), "score": X[:, 0]},
        names=[f"item {i}" for i in range(len(X))],
        images=np.random.default_rng(0).uniform(size=(len(X), 5, 5)))


def dispatch_selection(figure: go.FigureWidget, points: dict[int, list[int]]) -> None:
    """What plotly's widget does for one box selection: every trace gets the event, in trace order, with the
    points of the boxes in its map (``points``: trace -> point indices; the others get none)."""
    from plotly.callbacks import BoxSelector, Points

    selector = BoxSelector(xrange=[0, 1], yrange=[0, 1])
    for i, trace in enumerate(figure.data):
        trace._dispatch_on_selection(Points(point_inds=points.get(i, []), trace_index=i), selector)


# --------------------------------------------------------------------------------------------------
# Selection propagation
# --------------------------------------------------------------------------------------------------


def test_default_panels_are_the_first_two_conditions(linked):
    assert linked.panels == [Panel(View("task A", "pca")), Panel(View("task B", "pca"))]
    assert [linked.panel_label(p) for p in linked.panels] == ["task A · PCA", "task B · PCA"]


def test_a_selection_highlights_the_same_items_in_every_map(linked, data):
    labels = data[2]
    assert linked.selection.size == 0 and linked.selected_points(0) is None
    linked.selection = np.flatnonzero(labels == 1)[::-1]  # any order: kept sorted
    np.testing.assert_array_equal(linked.selection, np.flatnonzero(labels == 1))
    for p in range(2):
        np.testing.assert_array_equal(linked.selected_points(p), np.flatnonzero(labels == 1))
    fig = linked.figure()
    assert list(fig.data[0].selectedpoints) == list(fig.data[1].selectedpoints) == list(np.flatnonzero(labels == 1))
    assert fig.data[0].unselected.marker.color == "#b8b8b8"  # the rest is greyed out
    linked.clear_selection()
    assert linked.selection.size == 0 and linked.figure().data[1].selectedpoints is None


def test_a_box_in_one_map_selects_what_it_contains_and_the_other_map_shows_those_items(linked):
    Y = linked.points(0)
    x, y = (np.percentile(Y[:, 0], 10), np.percentile(Y[:, 0], 60)), (Y[:, 1].min(), np.median(Y[:, 1]))
    picked = linked.select_box(0, x=x, y=y)
    inside = np.flatnonzero((Y[:, 0] >= x[0]) & (Y[:, 0] <= x[1]) & (Y[:, 1] >= y[0]) & (Y[:, 1] <= y[1]))
    assert picked.size > 0
    np.testing.assert_array_equal(picked, inside)
    np.testing.assert_array_equal(linked.selected_points(1), inside)
    # where task B puts them: its own coordinates of exactly these items
    np.testing.assert_allclose(linked.points(1)[linked.selected_points(1)],
                               linked.explorer.projection(View("task B", "pca"))[inside])


def test_linking_by_class_across_facets_highlights_the_other_modality_of_the_same_classes():
    rng = np.random.default_rng(1)
    classes = np.repeat(np.arange(4), 10)
    modality = np.where(np.arange(40) % 2 == 0, "image", "attributes")
    z = rng.normal(scale=5, size=(4, 8))[classes] + rng.normal(size=(40, 8))
    linked = LinkedExplorer({"latent": z}, facet=modality, link_by="class", methods=("pca",),
                            color={"class": [f"c{c}" for c in classes], "modality": modality})
    assert [p.facet for p in linked.panels] == ["attributes", "image"]
    images, attributes = linked.rows[1], linked.rows[0]
    assert set(modality[images]) == {"image"} and set(modality[attributes]) == {"attributes"}

    linked.selection = images[classes[images] == 2][:2]  # two images of class 2
    highlighted = linked.highlighted()
    np.testing.assert_array_equal(highlighted, np.flatnonzero(classes == 2))
    np.testing.assert_array_equal(attributes[linked.selected_points(0)], attributes[classes[attributes] == 2])
    np.testing.assert_array_equal(images[linked.selected_points(1)], images[classes[images] == 2])


def test_selections_can_be_saved_restored_and_set_from_masks(linked, data):
    labels = data[2]
    linked.selection = labels == 0
    np.testing.assert_array_equal(linked.save_selection("class 0"), np.flatnonzero(labels == 0))
    linked.selection = [3, 4, 4, 5.0]
    np.testing.assert_array_equal(linked.selection, [3, 4, 5])
    np.testing.assert_array_equal(linked.restore_selection("class 0"), np.flatnonzero(labels == 0))
    assert list(linked.saved_selections) == ["class 0"]
    linked.selection = []
    assert linked.selection.size == 0


@pytest.mark.parametrize("bad, message", [
    ([0, 90], "between 0 and 89"),
    ([-1], "between 0 and 89"),
    (np.ones(10, dtype=bool), "one entry per item"),
    ([0.5], "integers"),
    (["item 1"], "integers"),
])
def test_a_wrong_selection_is_a_clear_error(linked, bad, message):
    with pytest.raises(ParameterError, match=message):
        linked.selection = bad


def test_input_errors_say_what_to_pass(data):
    X, other, labels = data
    with pytest.raises(ParameterError, match="at least two maps"):
        LinkedExplorer(X, methods=("pca",))
    with pytest.raises(ParameterError, match="link_by"):
        LinkedExplorer({"z": X}, facet=labels, methods=("pca",))
    with pytest.raises(ParameterError, match="unknown condition"):
        LinkedExplorer({"a": X, "b": other}, panels=["a", "c"], methods=("pca",))
    with pytest.raises(ParameterError, match="not a colouring"):
        LinkedExplorer({"a": X, "b": other}, link_by="digit", color={"class": labels}, methods=("pca",))
    with pytest.raises(ParameterError, match="one per item"):
        LinkedExplorer({"a": X, "b": other}, link_by=labels[:5], methods=("pca",))
    with pytest.raises(ParameterError, match="panel must be"):
        LinkedExplorer({"a": X, "b": other}, methods=("pca",)).points(2)


def test_one_condition_compares_methods_and_an_explorer_links_its_own_maps(data):
    X, other, labels = data
    by_method = LinkedExplorer(X, methods=("pca", "tsne"), perplexities=(10,))
    assert [p.view.method for p in by_method.panels] == ["tsne", "pca"]
    explorer = EmbeddingExplorer({"task A": X, "task B": other}, color={"class": labels}, methods=("pca",))
    linked = explorer.linked(["task B", "task A"])
    assert linked.explorer is explorer and [p.view.condition for p in linked.panels] == ["task B", "task A"]


# --------------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------------


def test_summary_counts_per_category_and_spread_against_random_sets(linked, data):
    labels = data[2]
    linked.selection = np.flatnonzero(labels == 2)
    summary = linked.summary()
    assert len(summary) == 30
    counts = summary.counts["class"].set_index("category")
    assert counts.loc[2, "selected"] == 30 and counts.loc[0, "selected"] == 0 and counts.loc[2, "total"] == 30
    assert summary.counts["split"].set_index("category").loc["unseen", "share"] == 1.0
    assert "score" not in summary.counts  # a number, not a category
    # one class is a tight cluster in task A's map: far tighter than any random set of 30
    spread = summary.spread.loc["task A · PCA"]
    assert spread["ratio"] < spread["random_low"] < 1 < spread["random_high"]
    assert spread["p_tighter"] < 0.05

    linked.selection = np.random.default_rng(3).choice(90, 30, replace=False)  # a random set looks random
    spread = linked.summary().spread.loc["task A · PCA"]
    assert spread["random_low"] <= spread["ratio"] <= spread["random_high"]
    assert linked.summary().spread.equals(linked.summary().spread)  # seeded: the same numbers every time


def test_summary_figure_shows_the_counts_and_the_spread(linked, data):
    linked.selection = np.flatnonzero(data[2] == 1)
    summary = linked.summary()
    fig = summary.figure()
    bars = {trace.name: trace for trace in fig.data}
    assert list(bars["class"].x[:1]) == ["1"] and list(bars["class"].y[:1]) == [30]
    assert list(bars["selection"].x) == ["task A · PCA", "task B · PCA"]
    np.testing.assert_allclose(bars["selection"].y, summary.spread["ratio"])
    assert fig.layout.title.text == "30 items selected"
    empty = linked.summary(selection=[])  # nothing selected: a figure all the same, with no numbers
    assert len(empty) == 0 and np.isnan(empty.spread["ratio"]).all()
    empty.figure()


# --------------------------------------------------------------------------------------------------
# The offline figure and its HTML
# --------------------------------------------------------------------------------------------------


def test_offline_figure_has_a_view_menu_per_map_and_a_colour_menu(linked):
    fig = linked.offline_figure()
    first, second, colour = fig.layout.updatemenus
    views = linked.explorer.views()
    assert [b.label for b in first.buttons] == [v.label() for v in views]
    assert second.active == views.index(View("task B", "pca"))
    data, layout, traces = second.buttons[0].args  # task A's map, shown in the second panel
    assert list(traces) == [1] and layout["annotations[1].text"] == "task A · PCA"
    np.testing.assert_allclose(data["x"][0], linked.explorer.projection(View("task A", "pca"))[:, 0], atol=1e-4)
    assert [b.label for b in colour.buttons] == ["colour: class", "colour: split", "colour: score"]
    score = colour.buttons[2].args[0]
    assert score["marker.colorscale"][:2] == ["Viridis", "Viridis"] and score["marker.showscale"][:2] == [False, True]
    legend = [t for t in fig.data[2:]]
    assert [t.name for t in legend] == ["0", "1", "2", "seen", "unseen"]
    assert colour.buttons[1].args[0]["visible"] == [True, True, False, False, False, True, True]
    assert fig.layout.dragmode == "select" and fig.layout.meta == "workbench-linked"


def test_offline_html_embeds_the_spec_and_the_script_but_loads_nothing(linked, data):
    linked.selection = [1, 2]
    page = linked.offline_html(include_plotlyjs=False)
    spec = json.loads(re.search(r'class="workbench-linked-spec">(.*?)</script>', page, re.S).group(1))
    assert spec["rows"] == [list(range(90))] * 2 and spec["keys"] is None and spec["initial"] == [1, 2]
    assert len(spec["thumbs"]) == 90 and spec["thumbs"][0].startswith("data:image/png;base64,")
    assert spec["groups"]["class"]["labels"] == ["0", "1", "2"]
    assert "plotly_selected" in page and "workbench-linked-status" in page
    assert not re.search(r'<script[^>]+src=', page)  # nothing fetched: no CDN, no files
    assert "https://cdn" not in page


# --------------------------------------------------------------------------------------------------
# The live widget
# --------------------------------------------------------------------------------------------------


def test_live_selection_in_one_map_updates_the_other_and_python(linked, data):
    pytest.importorskip("ipywidgets")
    labels = data[2]
    box = linked.widget()
    controls, status, figure, strip, summary = box.children
    assert isinstance(figure, go.FigureWidget) and isinstance(summary, go.FigureWidget)
    assert figure.layout.hovermode is False  # hovers would crowd out selections on the widget channel

    dispatch_selection(figure, {1: [0, 3, 6, 9]})  # a box in task B's map
    np.testing.assert_array_equal(linked.selection, [0, 3, 6, 9])
    assert list(figure.data[0].selectedpoints) == [0, 3, 6, 9] == list(figure.data[1].selectedpoints)
    assert strip.value.count("data:image/png;base64,") == 4
    assert "4 items selected" in status.value and summary.layout.title.text == "4 items selected"

    # A new box in task A's map while task B's box is still drawn: plotly reports both, the new one wins.
    dispatch_selection(figure, {0: [1, 2], 1: [0, 3, 6, 9]})
    np.testing.assert_array_equal(linked.selection, [1, 2])
    assert list(figure.data[1].selectedpoints) == [1, 2]

    linked.selection = np.flatnonzero(labels == 1)  # set from code: the widget follows
    assert list(figure.data[0].selectedpoints) == list(np.flatnonzero(labels == 1))
    assert strip.value.count("<img") == min(STRIP_SIZE, 30)  # an even spread over the selection

    figure.data[0]._dispatch_on_deselect(None)  # a double click clears
    figure.data[1]._dispatch_on_deselect(None)
    assert linked.selection.size == 0 and figure.data[0].selectedpoints is None and strip.value == ""


def test_live_view_menu_and_colour(linked):
    pytest.importorskip("ipywidgets")
    linked.explorer.methods.append("tsne")  # a second method to switch to
    linked.explorer.perplexities = [10.0]
    box = linked.widget()
    menus = [c for c in box.children[0].children if getattr(c, "description", "").startswith("map")]
    figure = box.children[2]
    linked.selection = [5, 6]
    menus[1].value = View("task A", "tsne", 10.0)
    np.testing.assert_allclose(figure.data[1].x, linked.explorer.projection(View("task A", "tsne", 10.0))[:, 0],
                               atol=1e-4)
    assert figure.layout.annotations[1].text == "task A · t-SNE, perplexity 10"
    assert list(figure.data[1].selectedpoints) == [5, 6]  # the selection stays
    colour = next(c for c in box.children[0].children if getattr(c, "description", "") == "colour by")
    colour.value = "score"
    assert figure.data[0].marker.colorscale[0][1] != figure.data[0].marker.colorscale[-1][1]
    assert figure.data[1].marker.showscale is True
    assert not any(t.visible for t in figure.data[2:])  # no legend for a number


def test_show_picks_offline_html_in_reports(linked, monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj, *a, **k: shown.append(obj))
    monkeypatch.setenv("WORKBENCH_REPORT", "1")
    linked._ipython_display_()
    page = shown[-1]["text/html"]
    assert "workbench-linked-spec" in page and "plotly.js v" not in page  # the report has plotly.js once already
    monkeypatch.delenv("WORKBENCH_REPORT")
    linked.show(live=False)
    assert "plotly.js v" in shown[-1]["text/html"]  # on its own, the page brings plotly.js


# --------------------------------------------------------------------------------------------------
# The explorer's stale-state fixes
# --------------------------------------------------------------------------------------------------


def test_explorer_hover_panel_follows_the_condition_and_knobs_share_a_row(data):
    pytest.importorskip("ipywidgets")
    from plotly.callbacks import InputDeviceState, Points

    X, other, labels = data
    explorer = EmbeddingExplorer({"task A": X, "task B": other}, color={"class": labels},
                                 images=np.zeros((90, 4, 4)), methods=("tsne", "umap", "pca"),
                                 perplexities=(10,), n_neighbors=(10,))
    box = explorer.widget()
    rows = [list(row.children) for row in box.children[:2]]
    controls = {c.description: (r, c) for r, row in enumerate(rows) for c in row if hasattr(c, "description")}
    assert controls["perplexity"][0] == controls["neighbours"][0] == 1  # one row, whichever method is on
    figure, panel = box.children[2].children
    figure.data[0]._dispatch_on_hover(Points(point_inds=[0], trace_index=0), InputDeviceState())
    assert "(task A)" in panel.value
    controls["condition"][1].value = "task B"
    assert "(task B)" in panel.value and "(task A)" not in panel.value
    controls["method"][1].value = "umap"
    assert controls["neighbours"][1].layout.display == "" and controls["perplexity"][1].layout.display == "none"


def test_a_double_click_clears_every_map_and_every_box_in_the_browser(linked):
    """plotly.js clears only the double-clicked map and its own box; a box left in the other map would select
    again at the next redraw. The widget removes every box in the browser, even one Python has no record of."""
    pytest.importorskip("ipywidgets")
    figure = linked.widget().children[2]
    sent: list[dict] = []
    send = figure._send_relayout_msg
    figure._send_relayout_msg = lambda data, **kwargs: (sent.append(dict(data)), send(data, **kwargs))
    dispatch_selection(figure, {0: [1, 2]})
    dispatch_selection(figure, {0: [1, 2], 1: [0, 3]})  # a box in the other map: the widget keeps only that box
    assert len(figure.layout.selections) == 1 and figure.layout.selections[0].xref == "x2"
    for trace in figure.data:  # a double click in the first map: plotly tells every trace
        trace._dispatch_on_deselect(None)
    assert linked.selection.size == 0 and not figure.layout.selections
    assert all(figure.data[p].selectedpoints is None for p in range(2))
    assert sent[-1] == {"selections": []}  # sent whatever Python believed the browser held


# --------------------------------------------------------------------------------------------------
# Where the notebooks use linked views (their smoke reports, rendered once per test session)
# --------------------------------------------------------------------------------------------------


def linked_specs(html: str) -> list[dict]:
    """The spec of every offline linked view in a report (what its script links by)."""
    blocks = re.findall(r"<script[^>]*workbench-linked-spec[^>]*>(.*?)</script>", html, re.S)
    return [json.loads(block.replace("<\\/", "</")) for block in blocks]


@pytest.mark.slow
def test_tafe_net_links_the_same_images_under_a_seen_and_an_unseen_task(smoke_report, report_dir):
    report = smoke_report("tafe_net")
    assert report.status == "ok", report.error
    html = (report_dir / "tafe_net.html").read_text(encoding="utf-8")
    (spec,) = linked_specs(html)
    seen, unseen = spec["panelNames"]
    assert "(seen)" in seen and "(unseen)" in unseen
    assert spec["keys"] is None and spec["rows"][0] == spec["rows"][1]  # the same images, by identity
    assert spec["initial"]  # starts with task A's positives
    # The explorer's task selector says which tasks are seen and which unseen (not just "task 5").
    labels = set(re.findall(r"task (?!A: |B: )[^\"<>]{1,60} \((seen|unseen)\)", html))
    assert labels == {"seen", "unseen"}


@pytest.mark.slow
def test_cada_vae_links_image_latents_and_side_information_latents_by_class(smoke_report, report_dir):
    report = smoke_report("cada_vae")
    assert report.status == "ok", report.error
    (spec,) = linked_specs((report_dir / "cada_vae.html").read_text(encoding="utf-8"))
    assert spec["linkName"] == "class" and spec["keys"] is not None
    image_panel = next(p for p, name in enumerate(spec["panelNames"]) if name.endswith("· image"))
    images, side = set(spec["rows"][image_panel]), set(spec["rows"][1 - image_panel])
    assert images and side and not images & side  # one modality per map
    picked = set(spec["initial"])  # the first unseen class: its images and its side-information samples
    assert picked & images and picked & side
