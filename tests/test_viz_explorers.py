"""workbench.viz.explorers: the offline figure's controls, the live widget, and picking one of them."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest

from workbench.errors import ParameterError
from workbench.viz import EmbeddingExplorer, View


def clustered(n: int = 90, k: int = 3, d: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % k
    return rng.normal(scale=8.0, size=(k, d))[labels] + rng.normal(size=(n, d)), labels


@pytest.fixture(scope="module")
def explorer() -> EmbeddingExplorer:
    X, labels = clustered()
    return EmbeddingExplorer(
        {"task A": X, "task B": X[:, ::-1] * 2},
        color={"class": labels, "split": np.where(labels == 2, "unseen", "seen"), "score": X[:, 0]},
        names=[f"item {i}" for i in range(len(X))],
        images=np.random.default_rng(0).uniform(size=(len(X), 6, 6)),
        methods=("tsne", "pca"), perplexities=(5, 10, 500),  # 500 is impossible for 90 items: dropped
    )


def test_views_cover_conditions_methods_and_possible_knobs(explorer):
    assert explorer.perplexities == [5.0, 10.0]
    assert explorer.views() == [View(c, m, k) for c in ("task A", "task B")
                                for m, k in (("tsne", 5.0), ("tsne", 10.0), ("pca", None))]
    assert explorer.default_view() == View("task A", "tsne", 10.0)


def test_offline_figure_switches_views_and_colourings_with_plotly_controls(explorer):
    fig = explorer.offline_figure(progress=False)
    views, menus = explorer.views(), fig.layout.updatemenus
    view_menu, colour_menu = menus
    assert [b.label for b in view_menu.buttons] == [v.label() for v in views]
    assert view_menu.active == views.index(explorer.default_view())

    # Every view button moves the points of every trace to that view's projection.
    n_traces = len(fig.data)
    for button, view in zip(view_menu.buttons, views):
        data, layout = button.args
        assert len(data["x"]) == len(data["y"]) == n_traces
        assert layout["title.text"].endswith(view.label())
    pca = views.index(View("task B", "pca"))
    Y = explorer.projection(View("task B", "pca"))
    for (_, index), xs, ys in zip(explorer.trace_groups(), view_menu.buttons[pca].args[0]["x"],
                                    view_menu.buttons[pca].args[0]["y"]):
        np.testing.assert_allclose(xs, Y[index, 0], atol=1e-4)
        np.testing.assert_allclose(ys, Y[index, 1], atol=1e-4)

    # The colour menu only flips visibility: exactly one colouring's traces at a time.
    assert [b.label for b in colour_menu.buttons] == ["class", "split", "score"]
    for button in colour_menu.buttons:
        visible = button.args[0]["visible"]
        assert {key for (key, _), v in zip(explorer.trace_groups(), visible) if v} == {button.label}
    assert {key for (key, _), t in zip(explorer.trace_groups(), fig.data) if t.visible} == {"class"}
    # One trace per class, the continuous score as a single trace with a colour bar.
    assert [t.name for t in fig.data] == ["0", "1", "2", "seen", "unseen", "score"]


def test_offline_slider_and_a_single_view(explorer):
    slider = explorer.offline_figure(control="slider", progress=False)
    assert len(slider.layout.sliders[0].steps) == len(explorer.views())
    assert len(slider.layout.updatemenus) == 1  # the colour menu remains
    one = explorer.figure(View("task A", "pca"), color_by="split")
    assert one.layout.title.text == "task A · PCA" and not one.layout.updatemenus


def test_live_widget_redraws_on_every_control(explorer):
    ipywidgets = pytest.importorskip("ipywidgets")
    box = explorer.widget()
    assert isinstance(box, ipywidgets.VBox)
    controls = {c.description: c for row in box.children[:2] for c in row.children if hasattr(c, "description")}
    assert {"condition", "method", "perplexity", "colour by"} <= set(controls)
    figure = box.children[2].children[0]
    assert isinstance(figure, go.FigureWidget)

    controls["method"].value = "pca"
    controls["condition"].value = "task B"
    Y = explorer.projection(View("task B", "pca"))
    for trace, (_, index) in zip(figure.data, explorer.trace_groups()):
        np.testing.assert_allclose(trace.x, Y[index, 0])
    assert figure.layout.title.text == "task B · PCA"
    assert controls["perplexity"].layout.display == "none"  # t-SNE's knob hides for PCA

    controls["colour by"].value = "split"
    assert [t.name for t in figure.data if t.visible] == ["seen", "unseen"]
    # Hovering a point shows its image and its 8 nearest neighbours' images in the side panel.
    from plotly.callbacks import InputDeviceState, Points

    panel = box.children[2].children[1]
    assert panel.value == ""
    seen = figure.data[[t.name for t in figure.data].index("seen")]
    seen._dispatch_on_hover(Points(point_inds=[1], trace_index=0), InputDeviceState())
    item = explorer.trace_groups()[list(figure.data).index(seen)][1][1]
    assert f"item {item}" in panel.value
    assert panel.value.count("data:image/png;base64,") == 9


def test_show_picks_offline_in_reports_and_live_otherwise(explorer, monkeypatch):
    shown = []
    monkeypatch.setattr(go.Figure, "show", lambda self, *a, **k: shown.append(("offline", self)))
    monkeypatch.setattr("IPython.display.display", lambda obj, *a, **k: shown.append(("live", obj)))
    monkeypatch.setenv("WORKBENCH_REPORT", "1")
    explorer._ipython_display_()
    assert shown[-1][0] == "offline" and shown[-1][1].layout.updatemenus  # a real figure, never empty
    monkeypatch.delenv("WORKBENCH_REPORT")
    explorer.show()
    assert shown[-1][0] == "live"
    explorer.show(live=False)
    assert shown[-1][0] == "offline"


def test_explorer_input_errors():
    X, labels = clustered(n=30)
    with pytest.raises(ParameterError, match="same items"):
        EmbeddingExplorer({"a": X, "b": X[:20]})
    with pytest.raises(ParameterError, match="color"):
        EmbeddingExplorer(X, color=labels[:10])
    with pytest.raises(ParameterError, match="methods"):
        EmbeddingExplorer(X, methods=("mds",))
    assert EmbeddingExplorer(X, perplexities=(50,)).perplexities == [9.6]  # none fits: the largest allowed (29/3, rounded down)
