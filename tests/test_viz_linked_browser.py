"""Linked views in a real browser: the offline page and report (headless Chromium, no network) and the live
explorer in a running JupyterLab. A box is dragged with the mouse, as a reader would, and the other map must
highlight exactly the same items.

The helpers here (launching Chromium through Playwright, dragging a box, timing the update) are also what
``benchmarks/bench_linked_views.py`` measures with, so the benchmark's numbers are this test's timing.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
#: Debian's Chromium, driven by Playwright (which never downloads a browser of its own here).
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LOCAL_PREFIXES = ("file:", "data:", "blob:", "about:", "http://127.0.0.1", "ws://127.0.0.1")

try:
    import playwright.sync_api  # noqa: F401

    HAVE_PLAYWRIGHT = True
except ImportError:
    HAVE_PLAYWRIGHT = False

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium not installed (.ci/run installs it)"),
    pytest.mark.skipif(not HAVE_PLAYWRIGHT, reason="playwright not installed (pip install -e '.[test]')"),
]


# --------------------------------------------------------------------------------------------------
# Helpers (shared with the benchmark)
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def browser_page(width: int = 1400, height: int = 1000) -> Iterator[tuple[Any, list[str], list[str]]]:
    """A Chromium page that may load local files and the loopback server only: yields ``(page,
    external_requests, errors)``; any other request is refused and recorded."""
    from playwright.sync_api import sync_playwright

    external: list[str] = []
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            context = browser.new_context(viewport={"width": width, "height": height})

            def guard(route: Any) -> None:
                url = route.request.url
                if url.startswith(LOCAL_PREFIXES):
                    route.continue_()
                else:
                    external.append(url)
                    route.abort()

            context.route("**/*", guard)
            page = context.new_page()
            page.on("pageerror", lambda error: errors.append(str(error)))
            yield page, external, errors
        finally:
            browser.close()


FIND_PLOT = """(meta) => {
  const plots = Array.from(document.querySelectorAll('.js-plotly-plot'));
  const gd = plots.find(p => p.layout && p.layout.meta === meta && p.data && p.data.length > 1);
  if (!gd) return null;
  if (!gd.id) gd.id = 'linked-' + Math.random().toString(36).slice(2);
  return gd.id;
}"""


def find_linked_plot(page: Any, meta: str = "workbench-linked", timeout_s: float = 60) -> str:
    """The element id of the first drawn plotly figure whose ``layout.meta`` is ``meta``."""
    handle = page.wait_for_function(FIND_PLOT, arg=meta, timeout=timeout_s * 1000)
    plot_id = handle.json_value()
    page.evaluate("(id) => document.getElementById(id).scrollIntoView({block: 'center'})", plot_id)
    return plot_id


def drag_box(page: Any, plot_id: str, panel: int, box: tuple[float, float, float, float]) -> dict[str, list[float]]:
    """Drag a selection box over panel ``panel``; ``box`` = (x0, y0, x1, y1) as fractions of the panel from its
    top left (keep off the very edges: plotly's corners there stretch the axes instead). Returns the box in the
    panel's data coordinates."""
    where = page.evaluate("""([id, panel, box]) => {
      const gd = document.getElementById(id), rect = gd.getBoundingClientRect(), s = panel ? panel + 1 : '';
      const xa = gd._fullLayout['xaxis' + s], ya = gd._fullLayout['yaxis' + s];
      const px = [box[0], box[2]].map(f => f * xa._length), py = [box[1], box[3]].map(f => f * ya._length);
      return {screen: [rect.left + xa._offset + px[0], rect.top + ya._offset + py[0],
                       rect.left + xa._offset + px[1], rect.top + ya._offset + py[1]],
              x: px.map(p => xa.p2d(p)).sort((a, b) => a - b), y: py.map(p => ya.p2d(p)).sort((a, b) => a - b)};
    }""", [plot_id, panel, list(box)])
    x0, y0, x1, y1 = where["screen"]
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=4)
    page.mouse.move(x1, y1, steps=4)
    page.mouse.up()
    return {"x": where["x"], "y": where["y"]}


WATCH = """([id, other]) => {
  // From the mouse release to the next painted frame after the other map shows the new selection. An offline
  // page says itself when it is done (its update log grows); a live widget's map changes when Python answers.
  const gd = document.getElementById(id), before = gd.data[other].selectedpoints;
  const page = (window.workbenchLinked || {})[id], updates = page ? page.timings.length : 0;
  window.__linkedWatch = {ms: null};
  let released = null;
  document.addEventListener('mouseup', () => { released = performance.now(); }, {capture: true, once: true});
  (function poll() {
    if (released !== null && page && page.timings.length > updates) {
      window.__linkedWatch.ms = performance.now() - released;  // the page logs after its frame was painted
    } else if (released !== null && !page && gd.data[other].selectedpoints !== before) {
      requestAnimationFrame(() => requestAnimationFrame(() => { window.__linkedWatch.ms = performance.now() - released; }));
    } else {
      requestAnimationFrame(poll);
    }
  })();
}"""


def timed_drag(page: Any, plot_id: str, panel: int, other: int, box: tuple[float, float, float, float],
               timeout_s: float = 60) -> tuple[float, dict[str, list[float]]]:
    """Drag a box in ``panel`` and return (milliseconds until map ``other`` shows the new selection, the box)."""
    page.evaluate(WATCH, [plot_id, other])
    data_box = drag_box(page, plot_id, panel, box)
    page.wait_for_function("() => window.__linkedWatch.ms !== null", timeout=timeout_s * 1000)
    return page.evaluate("window.__linkedWatch.ms"), data_box


def selected_points(page: Any, plot_id: str) -> list[list[int] | None]:
    """Every trace's ``selectedpoints`` (None where nothing is selected)."""
    return page.evaluate("""(id) => document.getElementById(id).data.map(t =>
        t.selectedpoints ? Array.from(t.selectedpoints).sort((a, b) => a - b) : null)""", plot_id)


def double_click(page: Any, plot_id: str, panel: int) -> None:
    where = page.evaluate("""([id, panel]) => {
      const gd = document.getElementById(id), rect = gd.getBoundingClientRect(), s = panel ? panel + 1 : '';
      const xa = gd._fullLayout['xaxis' + s], ya = gd._fullLayout['yaxis' + s];
      return [rect.left + xa._offset + 0.5 * xa._length, rect.top + ya._offset + 0.02 * ya._length];
    }""", [plot_id, panel])
    page.mouse.dblclick(*where)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def jupyterlab(folder: Path, timeout_s: float = 120) -> Iterator[str]:
    """JupyterLab serving ``folder`` on a loopback port with a random token; yields its base URL with the token
    query (``http://127.0.0.1:PORT/lab/tree/?token=...`` minus the path). Stopped, kernels and all, at the end."""
    port, token = free_port(), secrets.token_hex(16)
    home = Path(tempfile.mkdtemp(prefix="workbench-lab-"))
    settings = home / "settings"
    for plugin, values in {
        # every cell attached to the page, so widgets in cells below the fold are drawn too
        "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
        # no requests to the internet
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    }.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values), encoding="utf-8")
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTERLAB_WORKSPACES_DIR": str(home / "ws"),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "JUPYTER_CONFIG_DIR": str(home / "config"),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={folder}", "--LabApp.news_url=", "--ServerApp.disable_check_xsrf=True"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    log = open(home / "server.log", "wb")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not start: {(home / 'server.log').read_text()[-3000:]}")
            time.sleep(1)
        yield f"{base}|{token}"
    finally:
        with contextlib.suppress(OSError):  # a clean stop shuts the kernels down too
            request = urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST")
            urllib.request.urlopen(request, timeout=10).close()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        log.close()
        shutil.rmtree(home, ignore_errors=True)


def notebook_at_profile(source: Path, folder: Path, profile: str = "smoke") -> Path:
    """A copy of ``source`` whose parameters cell sets ``profile``."""
    import nbformat

    nb = nbformat.read(source, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = "\n".join(f'profile = "{profile}"  # set by the test' if line.startswith("profile =") else line
                            for line in cell.source.splitlines())
    path = folder / source.name
    nbformat.write(nb, str(path))
    return path


def accept_dialogs(page: Any, seconds: float) -> None:
    """For ``seconds``, accept any dialog JupyterLab raises (e.g. "Select Kernel": the default kernel is right)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        accept = page.locator(".jp-Dialog .jp-mod-accept")
        if accept.count():
            accept.first.click()
        page.wait_for_timeout(500)


def open_and_run_all(page: Any, server: str, notebook: str) -> None:
    """Open ``notebook`` in JupyterLab, wait for its kernel, and run every cell from the Run menu."""
    base, token = server.split("|")
    page.goto(f"{base}/lab/tree/{notebook}?token={token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        accept_dialogs(page, 1)
        if page.locator("#jp-main-statusbar", has_text="Idle").count():
            break
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    accept_dialogs(page, 5)


# --------------------------------------------------------------------------------------------------
# Offline: a page of its own, and the notebook's report
# --------------------------------------------------------------------------------------------------


def linked_maps(n: int = 200, seed: int = 0):
    """200 items in 4 classes under two tasks that arrange the classes differently."""
    from workbench.viz import LinkedExplorer

    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    X = rng.normal(scale=6, size=(4, 6))[labels] + rng.normal(size=(n, 6))
    other = np.roll(X, 2, axis=1) * np.where(labels % 2 == 0, 1.0, -1.0)[:, None]
    return LinkedExplorer({"task A": X, "task B": other}, methods=("pca",), seed=seed,
                          color={"class": labels, "split": np.where(labels == 3, "unseen", "seen")},
                          images=rng.uniform(size=(n, 6, 6)))


def test_a_box_in_one_offline_map_highlights_the_same_items_in_the_other(tmp_path):
    from workbench.viz.linked import STRIP_SIZE

    linked = linked_maps()
    path = linked.write_html(tmp_path / "linked.html")
    with browser_page() as (page, external, errors):
        page.goto(path.resolve().as_uri())
        plot = find_linked_plot(page)
        page.wait_for_function("(id) => window.workbenchLinked && window.workbenchLinked[id]", arg=plot)
        ms, box = timed_drag(page, plot, 0, 1, (0.05, 0.05, 0.6, 0.7))
        first, second = selected_points(page, plot)[:2]
        # What the box holds, computed in Python from the same coordinates, is what both maps show.
        expected = linked.select_box(0, x=box["x"], y=box["y"])
        assert len(expected) > 0 and first == second == expected.tolist()
        status = page.inner_text(".workbench-linked-status")
        assert f"{len(expected)} items selected" in status
        assert page.locator(".workbench-linked-strip img").count() == min(STRIP_SIZE, len(expected))
        assert "spread" in page.inner_text(".workbench-linked-summary")
        assert json.loads(page.text_content(".workbench-linked-indices")) == expected.tolist()

        # A box in the second map: the first map follows.
        timed_drag(page, plot, 1, 0, (0.5, 0.3, 0.95, 0.95))
        first, second = selected_points(page, plot)[:2]
        assert first == second and first

        double_click(page, plot, 1)  # clearing restores both maps
        page.wait_for_function("(id) => document.getElementById(id).data[0].selectedpoints === undefined", arg=plot)
        assert selected_points(page, plot)[:2] == [None, None]
        assert external == [] and errors == []
    assert ms < 10_000


def test_offline_linking_by_class_across_facets(tmp_path):
    from workbench.viz import LinkedExplorer

    rng = np.random.default_rng(2)
    classes = np.repeat(np.arange(5), 16)
    modality = np.where(np.arange(80) % 4 == 0, "attributes", "image")
    z = rng.normal(scale=5, size=(5, 8))[classes] + rng.normal(size=(80, 8))
    linked = LinkedExplorer({"latent": z}, facet=modality, link_by="class", methods=("pca",),
                            color={"class": [f"class {c}" for c in classes], "modality": modality})
    path = linked.write_html(tmp_path / "facets.html")
    with browser_page() as (page, external, errors):
        page.goto(path.resolve().as_uri())
        plot = find_linked_plot(page)
        page.wait_for_function("(id) => window.workbenchLinked && window.workbenchLinked[id]", arg=plot)
        _, box = timed_drag(page, plot, 1, 0, (0.03, 0.03, 0.5, 0.5))  # a box over some image latents
        attributes, images = selected_points(page, plot)[:2]
        picked = linked.rows[1][(linked.points(1)[:, 0] >= box["x"][0]) & (linked.points(1)[:, 0] <= box["x"][1])
                                & (linked.points(1)[:, 1] >= box["y"][0]) & (linked.points(1)[:, 1] <= box["y"][1])]
        chosen = set(classes[picked])
        assert chosen, "the box caught no point"
        assert set(classes[linked.rows[0][attributes]]) == chosen  # the attribute samples of those classes
        assert sorted(linked.rows[1][images].tolist()) == np.flatnonzero(
            np.isin(classes, list(chosen)) & (modality == "image")).tolist()
        assert external == [] and errors == []


def test_the_notebook_report_links_its_maps_offline(smoke_report, report_dir):
    report = smoke_report("01_embedding_explorer")
    assert report.status == "ok", report.error
    with browser_page() as (page, external, errors):
        page.goto((report_dir / "01_embedding_explorer.html").resolve().as_uri())
        try:
            page.wait_for_function("() => window.workbenchLinked && Object.keys(window.workbenchLinked).length",
                                   timeout=120_000, polling=500)
        except Exception:
            raise AssertionError(f"the linked view never started; page errors: {errors}") from None
        plot = page.evaluate("Object.keys(window.workbenchLinked)[0]")
        page.evaluate("(id) => document.getElementById(id).scrollIntoView({block: 'center'})", plot)
        timed_drag(page, plot, 0, 1, (0.03, 0.03, 0.55, 0.55))
        first, second = selected_points(page, plot)[:2]
        assert first and first == second  # the same images, by identity, in both tasks' maps
        assert external == [] and errors == []


# --------------------------------------------------------------------------------------------------
# Live: the explorer notebook in JupyterLab
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_selection_in_the_live_explorer_updates_the_other_map(tmp_path):
    notebook = notebook_at_profile(REPO / "notebooks" / "01_embedding_explorer.ipynb", tmp_path)
    with jupyterlab(tmp_path) as server, browser_page(1500, 1100) as (page, external, errors):
        open_and_run_all(page, server, notebook.name)
        plot = find_linked_plot(page, "workbench-linked-live", timeout_s=600)
        # The cell below the view selects a task-B class from Python: the browser shows it in both maps.
        page.wait_for_function("(id) => document.getElementById(id).data[1].selectedpoints", arg=plot,
                               timeout=300_000)
        from_code = selected_points(page, plot)[:2]
        assert from_code[0] and from_code[0] == from_code[1]

        ms, _ = timed_drag(page, plot, 0, 1, (0.03, 0.03, 0.5, 0.5), timeout_s=120)
        page.wait_for_function("""(id) => { const d = document.getElementById(id).data;
            return d[0].selectedpoints && d[1].selectedpoints
                   && d[0].selectedpoints.length === d[1].selectedpoints.length; }""", arg=plot, timeout=60_000)
        first, second = selected_points(page, plot)[:2]
        assert first and first == second and first != from_code[0]
        assert page.locator(".widget-html", has_text="items selected").count() >= 1

        # A box in the other map replaces the selection (plotly still holds the first box: it must not count).
        timed_drag(page, plot, 1, 0, (0.5, 0.4, 0.97, 0.97), timeout_s=120)
        page.wait_for_function("""([id, old]) => { const d = document.getElementById(id).data;
            const a = JSON.stringify(Array.from(d[0].selectedpoints || []).sort((x, y) => x - y));
            const b = JSON.stringify(Array.from(d[1].selectedpoints || []).sort((x, y) => x - y));
            return a === b && a !== old; }""", arg=[plot, json.dumps(first).replace(" ", "")], timeout=60_000)
        again = selected_points(page, plot)[:2]
        assert again[0] == again[1] and again[0] != first

        double_click(page, plot, 0)  # clearing, through Python and back
        page.wait_for_function("""(id) => { const d = document.getElementById(id).data;
            return !d[0].selectedpoints && !d[1].selectedpoints; }""", arg=plot, timeout=60_000)
        assert external == [], external
    assert ms < 60_000
