"""The generated index and a report, opened in headless Chromium with networking disabled."""

from __future__ import annotations

import pytest
from browser import find_chromium, render_in_browser

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(find_chromium() is None, reason="chromium not installed (.ci/run installs it)"),
]


def test_report_renders_figures_and_equations_offline(smoke_report, report_dir):
    assert smoke_report("00_tour").status == "ok"
    result = render_in_browser(report_dir / "00_tour.html")
    assert result.external_requests == []
    assert 'class="main-svg"' in result.dom  # plotly drew its figure
    assert "<mjx-container" in result.dom  # MathJax typeset the equations, offline


def test_index_renders_offline(smoke_report, report_dir):
    smoke_report("00_tour")
    result = render_in_browser(report_dir / "index.html")
    assert result.external_requests == []
    assert 'id="reports"' in result.dom and "00_tour.html" in result.dom
