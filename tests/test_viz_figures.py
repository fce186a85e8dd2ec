"""workbench.viz figure builders: structure, shared colours, clustering order, standalone HTML."""

from __future__ import annotations

import base64
import re
import struct
import sys
import zlib

import numpy as np
import plotly.graph_objects as go
import pytest

from workbench.errors import ParameterError, WorkbenchError
from workbench.reports import external_resources
from workbench.viz import (
    category_colors,
    cluster_order,
    compare_scatter,
    embedding_scatter,
    image_grid,
    matrix_heatmap,
    neighbour_grid,
    procrustes_align,
    save_static,
    training_curves,
)
from workbench.viz.images import as_image_batch, png_bytes, png_data_uri

RNG = np.random.default_rng(0)
POINTS = RNG.normal(size=(60, 2))
LABELS = np.repeat(["cat", "dog", "emu"], 20)
IMAGES = RNG.uniform(size=(60, 8, 8))


def block_matrix(sizes=(5, 7, 4), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy distance matrix with a block per group, rows shuffled; returns (matrix, group of each row)."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(len(sizes)), sizes)
    D = np.where(groups[:, None] == groups[None, :], 1.0, 5.0) + rng.uniform(0, 0.5, (len(groups),) * 2)
    D = (D + D.T) / 2
    np.fill_diagonal(D, 0)
    perm = rng.permutation(len(groups))
    return D[np.ix_(perm, perm)], groups[perm]


def contiguous(sequence) -> bool:
    """Every value occupies one unbroken run."""
    runs = [v for i, v in enumerate(sequence) if i == 0 or sequence[i - 1] != v]
    return len(runs) == len(set(runs))


# --------------------------------------------------------------------------------------------------
# Heatmaps
# --------------------------------------------------------------------------------------------------


def test_cluster_order_turns_shuffled_blocks_into_contiguous_blocks():
    D, groups = block_matrix()
    assert not contiguous(list(groups))
    order = cluster_order(D)
    assert sorted(order) == list(range(len(D)))
    assert contiguous(list(groups[order]))
    # the same for a correlation matrix (large = similar)
    C = 1 - D / D.max()
    np.fill_diagonal(C, 1)
    assert contiguous(list(groups[cluster_order(C, kind="correlation")]))


def test_clustered_heatmap_draws_the_matrix_in_block_order_with_a_dendrogram():
    D, groups = block_matrix()
    labels = [f"g{g}-{i}" for i, g in enumerate(groups)]
    fig = matrix_heatmap(D, labels, cluster=True)
    tree, heat = fig.data
    assert isinstance(tree, go.Scatter) and isinstance(heat, go.Heatmap)
    shown = list(fig.layout.xaxis2.ticktext)
    assert contiguous([s.split("-")[0] for s in shown])
    order = [labels.index(s) for s in shown]
    np.testing.assert_allclose(np.asarray(heat.z), D[np.ix_(order, order)])
    xs = [x for x in tree.x if x is not None]  # the tree spans exactly the item positions
    assert min(xs) >= 0 and max(xs) <= len(D) - 1
    assert heat.colorscale[0][1] != heat.colorscale[-1][1]


def test_colour_scale_follows_the_data():
    import plotly.colors

    D, _ = block_matrix()
    sequential = matrix_heatmap(D).data[0]  # distances: sequential, from 0 up
    assert sequential.zmin is None and sequential.colorscale[0][1] == plotly.colors.sequential.Viridis[0]
    C = np.corrcoef(RNG.normal(size=(6, 30)))
    diverging = matrix_heatmap(C).data[0]  # correlations: diverging, centred on 0
    assert (diverging.zmin, diverging.zmax) == (-1, 1)
    assert diverging.colorscale[0][1] != diverging.colorscale[-1][1]
    assert diverging.texttemplate  # small matrices print their values


def test_heatmap_labels_readable_at_50_items():
    C = np.corrcoef(RNG.normal(size=(50, 80)))
    labels = [f"task number {i} with a long name" for i in range(50)]
    fig = matrix_heatmap(C, labels, cluster=True)
    axis = fig.layout.xaxis2
    assert len(axis.ticktext) == 50  # every label written
    assert axis.tickfont.size >= 9
    assert all(len(t) <= 24 for t in axis.ticktext)
    assert fig.layout.height >= 50 * 12  # about 14 px per cell


def test_heatmap_errors():
    with pytest.raises(ParameterError, match="square"):
        matrix_heatmap(np.zeros((3, 4)))
    with pytest.raises(ParameterError, match="labels"):
        matrix_heatmap(np.eye(3), ["a", "b"])
    with pytest.raises(ParameterError, match="cluster=True"):
        matrix_heatmap(np.eye(4), dendrogram=True)


# --------------------------------------------------------------------------------------------------
# Scatters
# --------------------------------------------------------------------------------------------------


def test_embedding_scatter_one_trace_per_class_with_names_in_hover():
    names = [f"item {i}" for i in range(60)]
    fig = embedding_scatter(POINTS, LABELS, names=names, hover={"task": LABELS})
    assert [t.name for t in fig.data] == ["cat", "dog", "emu"]
    assert list(fig.data[1].hovertext[:2]) == ["item 20", "item 21"]
    assert "%{hovertext}" in fig.data[0].hovertemplate and "task: %{customdata[0]}" in fig.data[0].hovertemplate
    assert len({t.marker.color for t in fig.data}) == 3
    continuous = embedding_scatter(POINTS, RNG.normal(size=60), color_name="loss")
    assert len(continuous.data) == 1 and continuous.data[0].marker.showscale
    assert isinstance(embedding_scatter(RNG.normal(size=(60, 3)), LABELS).data[0], go.Scatter3d)
    with pytest.raises(ParameterError, match="must match"):
        embedding_scatter(POINTS, LABELS[:10])


def test_thumbnails_are_inline_images_that_a_button_hides():
    fig = embedding_scatter(POINTS, LABELS, images=IMAGES, thumbnails=16)
    assert 1 <= len(fig.layout.images) <= 16
    assert all(img.source.startswith("data:image/png;base64,") for img in fig.layout.images)
    toggle = fig.layout.updatemenus[0]
    assert [b.label for b in toggle.buttons] == ["images on", "images off"]
    assert toggle.buttons[1].args[0] == {f"images[{i}].visible": False for i in range(len(fig.layout.images))}


def test_compare_scatter_shares_colours_and_legend_across_panels():
    rotated = POINTS @ np.array([[0.0, -1.0], [1.0, 0.0]]) * 3 + 5
    fig = compare_scatter({"task A": POINTS, "task B": rotated}, LABELS)
    colours = category_colors(LABELS)
    for trace in fig.data:
        assert trace.marker.color == colours[trace.name]
        assert trace.legendgroup == trace.name  # one legend click toggles the class in both panels
    assert [t.showlegend for t in fig.data] == [True] * 3 + [False] * 3
    assert {t.xaxis for t in fig.data} == {"x", "x2"}
    np.testing.assert_allclose(procrustes_align(POINTS, rotated), POINTS, atol=1e-9)
    aligned = compare_scatter({"a": POINTS, "b": rotated}, LABELS, align=True)
    np.testing.assert_allclose(aligned.data[3].x, aligned.data[0].x, atol=1e-9)
    with pytest.raises(ParameterError, match="same points"):
        compare_scatter({"a": POINTS, "b": POINTS[:10]})


def test_category_colours_are_stable_and_cover_many_classes():
    assert category_colors(["b", "a", "b"]) == category_colors(["a", "b"])
    many = category_colors(range(50))
    assert len(set(many.values())) == 50


# --------------------------------------------------------------------------------------------------
# Training curves and images
# --------------------------------------------------------------------------------------------------


def test_training_curves_one_trace_per_term_losses_and_metrics_apart():
    history = [{"epoch": e, "loss": 1 / (e + 1), "kl": 0.1, "val_loss": (1.2 / (e + 1)) if e % 2 else None,
                "val_acc": e / 10} for e in range(10)]
    fig = training_curves(history)
    assert [t.name for t in fig.data] == ["loss", "kl", "val_loss", "val_acc"]
    loss, _, val_loss, acc = fig.data
    assert val_loss.line.color == loss.line.color and val_loss.line.dash == "dash"
    assert len(val_loss.x) == 5  # missing validation epochs are skipped, not zeros
    assert acc.yaxis == "y2" and loss.yaxis == "y"
    smoothed = training_curves(history, terms=["loss"], smooth=0.9, log_y=True)
    assert len(smoothed.data) == 2 and smoothed.layout.yaxis.type == "log"


def test_training_curves_accept_history_frames_and_dicts():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"step": range(5), "loss": np.linspace(1, 0, 5)})
    assert training_curves(frame).data[0].name == "loss"
    assert training_curves({"loss": [3, 2, 1]}).layout.xaxis.title.text == "step"
    from workbench.train import History

    h = History()
    for e in range(3):
        h.log(epoch=e, loss=1.0 / (e + 1))
    assert list(training_curves(h).data[0].x) == [0, 1, 2]
    with pytest.raises(ParameterError, match="empty"):
        training_curves([])
    with pytest.raises(ParameterError, match="not found"):
        training_curves(frame, terms=["acc"])


def test_image_grid_titles_rows_and_image_layouts():
    fig = image_grid(IMAGES[:6], [f"#{i}" for i in range(6)], ncols=3, row_labels=["class a", "class b"])
    assert len(fig.data) == 6
    assert [a.text for a in fig.layout.annotations][:6] == [f"#{i}" for i in range(6)]
    assert {"class a", "class b"} <= {a.text for a in fig.layout.annotations}
    filters = image_grid(RNG.normal(size=(8, 3, 3)), normalize="each")  # 3x3 filters stay filters
    assert len(filters.data) == 8 and filters.data[0].z.shape == (3, 3)
    assert filters.data[0].zmin == -filters.data[0].zmax  # centred on 0: a diverging scale
    assert filters.data[0].colorscale[0][1] == "rgb(5,48,97)"  # RdBu_r: negative blue, positive red
    paper = np.ones((2, 10, 10))  # Omniglot-like: background +1, a stroke of ink -1
    paper[:, 4, 2:8] = -1
    assert image_grid(paper).data[0].colorscale[0][1] == "rgb(0, 0, 0)"  # grey: ink black, paper white
    rgb = image_grid(RNG.uniform(size=(4, 3, 5, 5)))  # channel-first colour
    assert isinstance(rgb.data[0], go.Image)
    assert as_image_batch(RNG.uniform(size=(2, 5, 5, 1))).shape == (2, 5, 5)
    with pytest.raises(ParameterError, match="titles"):
        image_grid(IMAGES[:3], ["a"])


def test_neighbour_grid_query_first_and_a_menu_per_query():
    fig = neighbour_grid(POINTS, IMAGES, [0, 5], k=4, labels=LABELS)
    assert len(fig.data) == 2 * 5
    assert fig.layout.annotations[0].text.startswith("<b>query</b>")
    assert [b.label for b in fig.layout.updatemenus[0].buttons] == ["cat", "cat"]  # the query's label
    assert [t.visible for t in fig.data] == [True] * 5 + [False] * 5


def test_png_encoder_round_trips():
    image = (np.arange(12 * 7).reshape(12, 7) % 256).astype(np.uint8)
    data = png_bytes(image)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (7, 12)
    idat_len = struct.unpack(">I", data[33:37])[0]
    raw = zlib.decompress(data[41:41 + idat_len])
    rows = np.frombuffer(raw, np.uint8).reshape(12, 8)
    np.testing.assert_array_equal(rows[:, 1:], image)
    assert base64.b64decode(png_data_uri(image).split(",")[1]) == data


# --------------------------------------------------------------------------------------------------
# Standalone HTML and static export
# --------------------------------------------------------------------------------------------------


def all_figures() -> dict[str, go.Figure]:
    D, groups = block_matrix()
    return {
        "scatter": embedding_scatter(POINTS, LABELS, images=IMAGES, thumbnails=9),
        "compare": compare_scatter({"a": POINTS, "b": POINTS}, LABELS),
        "heatmap": matrix_heatmap(D, cluster=True),
        "curves": training_curves([{"epoch": 0, "loss": 1.0}, {"epoch": 1, "loss": 0.5}]),
        "grid": image_grid(IMAGES[:4]),
        "neighbours": neighbour_grid(POINTS, IMAGES, [0, 1], k=3),
    }


@pytest.mark.parametrize("name", list(all_figures()))
def test_figures_serialize_to_standalone_html(name, tmp_path):
    path = tmp_path / f"{name}.html"
    all_figures()[name].write_html(path, include_plotlyjs=True, full_html=True)
    page = path.read_text(encoding="utf-8")
    assert len(page) > 3_000_000 and "Plotly" in page  # plotly.js itself is inside the file
    assert external_resources(page) == []
    assert not re.search(r"<script[^>]*\bsrc\s*=\s*[\"']?https?:", page, re.IGNORECASE)


def test_save_static_without_kaleido_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "kaleido", None)  # import kaleido -> ImportError
    with pytest.raises(WorkbenchError, match=r"pip install 'workbench\[export\]'"):
        save_static(all_figures()["curves"], tmp_path / "curves.png")
    with pytest.raises(WorkbenchError, match="suffixes"):
        save_static(all_figures()["curves"], tmp_path / "curves.bmp")


def test_save_static_without_chromium_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "kaleido", type(sys)("kaleido"))  # pretend it is installed
    fig = all_figures()["curves"]

    def no_browser(*args, **kwargs):
        raise RuntimeError("Kaleido requires Google Chrome to be installed.")

    monkeypatch.setattr(fig, "write_image", no_browser)
    with pytest.raises(WorkbenchError, match="apt-get install chromium"):
        save_static(fig, tmp_path / "curves.svg")


@pytest.mark.browser
def test_save_static_writes_an_image_when_kaleido_and_chromium_exist(tmp_path):
    pytest.importorskip("kaleido", reason="kaleido is the optional extra workbench[export]")
    from browser import find_chromium

    if find_chromium() is None:
        pytest.skip("chromium not installed (.ci/run installs it)")
    path = save_static(all_figures()["curves"], tmp_path / "curves.svg")
    assert path.read_text().lstrip().startswith("<svg")
