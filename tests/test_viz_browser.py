"""The kit's figures in headless Chromium with networking disabled: they draw, and their controls work."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from browser import find_chromium, render_in_browser

from workbench.viz import (
    EmbeddingExplorer,
    View,
    compare_scatter,
    embedding_scatter,
    image_grid,
    matrix_heatmap,
    neighbour_grid,
    training_curves,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(find_chromium() is None, reason="chromium not installed (.ci/run installs it)"),
]

# Runs in the page once the figure is drawn: opens the view dropdown and picks its last entry, then
# the colour dropdown's last entry, by clicking like a reader would, and writes what it sees into the DOM.
CLICK_THROUGH_MENUS = r"""
var gd = document.getElementById('{plot_id}');
function click(el) { el.dispatchEvent(new MouseEvent('click', {bubbles: true})); }
function pickLast(menu, then) {
  click(gd.querySelectorAll('.updatemenu-header')[menu]);
  setTimeout(function () {
    var items = gd.querySelectorAll('.updatemenu-dropdown-button');
    click(items[items.length - 1]);
    setTimeout(then, 300);
  }, 300);
}
setTimeout(function () {
  pickLast(0, function () { pickLast(1, function () {
    var out = document.createElement('pre');
    out.id = 'menus-result';
    out.textContent = JSON.stringify({x: Array.from(gd.data[0].x), title: gd.layout.title.text,
                                      visible: gd.data.map(function (t) { return t.visible; })});
    document.body.appendChild(out);
  }); });
}, 500);
"""


def test_offline_explorer_menus_work_without_a_kernel_or_network(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.arange(60) % 3
    X = rng.normal(scale=8, size=(3, 5))[labels] + rng.normal(size=(60, 5))
    explorer = EmbeddingExplorer({"task A": X, "task B": X ** 2}, methods=("pca",),
                                 color={"class": labels, "half": np.where(np.arange(60) < 30, "first", "second")})
    path = tmp_path / "explorer.html"
    explorer.offline_figure(progress=False).write_html(path, include_plotlyjs=True, post_script=CLICK_THROUGH_MENUS)

    result = render_in_browser(path)
    assert result.external_requests == []
    assert 'class="main-svg"' in result.dom
    seen = json.loads(re.search(r'<pre id="menus-result">(.*?)</pre>', result.dom, re.S).group(1))
    assert seen["title"] == "task B · PCA"  # the view menu's last entry
    expected = explorer.projection(View("task B", "pca"))[explorer.trace_groups()[0][1], 0]
    np.testing.assert_allclose(seen["x"], expected, atol=1e-3)
    assert seen["visible"] == [key == "half" for key, _ in explorer.trace_groups()]  # the colour menu's last entry


def test_every_figure_kind_draws_offline_in_one_page(tmp_path):
    rng = np.random.default_rng(1)
    points, labels, images = rng.normal(size=(40, 2)), np.arange(40) % 4, rng.uniform(size=(40, 8, 8))
    figures = [
        embedding_scatter(points, labels, images=images, thumbnails=9),
        compare_scatter({"a": points, "b": -points}, labels),
        matrix_heatmap(np.corrcoef(rng.normal(size=(12, 30))), cluster=True),
        training_curves([{"epoch": e, "loss": 1 / (e + 1), "val_acc": e / 5} for e in range(5)]),
        image_grid(images[:6], [f"#{i}" for i in range(6)]),
        neighbour_grid(points, images, [0, 1], k=3),
    ]
    parts = [fig.to_html(full_html=False, include_plotlyjs=i == 0) for i, fig in enumerate(figures)]
    path = tmp_path / "figures.html"
    path.write_text("<html><body>" + "\n".join(parts) + "</body></html>", encoding="utf-8")

    result = render_in_browser(path)
    assert result.external_requests == []
    assert result.dom.count('class="main-svg"') >= len(figures)
    assert result.dom.count("data:image/png;base64,") >= 9  # the thumbnails are inline images


def test_the_notebook_report_renders_offline(smoke_report, report_dir):
    report = smoke_report("01_embedding_explorer")
    assert report.status == "ok", report.error
    result = render_in_browser(report_dir / "01_embedding_explorer.html", budget_ms=30000)
    assert result.external_requests == []
    assert result.dom.count('class="main-svg"') >= 8
    assert "updatemenu-header" in result.dom  # the offline explorer's menus were drawn
