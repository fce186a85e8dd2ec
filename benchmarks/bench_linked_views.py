"""How fast a selection in one linked map shows up in the other (workbench.viz.LinkedExplorer), in Chromium.

    python benchmarks/bench_linked_views.py              # offline page at 2k, 5k, 20k points + live JupyterLab at 20k
    python benchmarks/bench_linked_views.py --quick      # 2k and 20k offline only, 4 drags each, prints only
    python benchmarks/bench_linked_views.py --no-live    # skip JupyterLab

A box is dragged with the mouse in one map of a pair (alternating between the two maps, boxes of three sizes),
and the time is taken from the mouse release to the next painted frame after the *other* map shows the new
selection. It is the browser test's own timing (``tests/test_viz_linked_browser.py``: ``timed_drag``), in Debian's
Chromium driven by Playwright, headless, software WebGL (SwiftShader: there is no GPU here).

* offline: the standalone page (``LinkedExplorer.write_html``, the same HTML a report embeds): plotly's
  ``plotly_selected`` event and the embedded script, no kernel;
* live: the same maps in JupyterLab (``FigureWidget``): the selection goes to the Python kernel, which sets
  ``selectedpoints`` of every map, and comes back.

The data are synthetic and labelled as such: 20 Gaussian clusters in 64 dimensions; task B's features fold
pairs of clusters together. The maps are PCA projections (the method does not change the selection's cost).
The target is 200 ms for a 20,000-point pair of maps.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from machine import machine_info, save_results  # benchmarks/machine.py

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_viz_linked_browser import (  # noqa: E402  (the browser test's helpers: the same timing)
    CHROMIUM,
    browser_page,
    find_linked_plot,
    jupyterlab,
    selected_points,
    timed_drag,
)

RESULTS = Path(__file__).resolve().parent / "results"
PACKAGES = ("numpy", "plotly", "playwright", "jupyterlab", "ipywidgets", "anywidget")
TARGET_MS = 200
#: (name, box as fractions of the map from its top left): about 5%, 25% and 60% of the map's area
BOXES = (("small", (0.40, 0.40, 0.62, 0.62)), ("medium", (0.25, 0.25, 0.75, 0.75)),
         ("large", (0.05, 0.05, 0.82, 0.82)))


def two_tasks(n: int, dims: int = 64, clusters: int = 20, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Synthetic, labelled: the same ``n`` items under two tasks. Task B moves cluster 2k+1 onto cluster 2k."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(clusters, dims))
    labels = rng.integers(clusters, size=n)
    noise = rng.normal(size=(n, dims))
    task_b = centres[labels - labels % 2] * 1.5 + noise
    return {"task A": centres[labels] + noise, "task B": task_b}, labels


def build(n: int, seed: int = 0):
    from workbench.viz import LinkedExplorer

    features, labels = two_tasks(n, seed=seed)
    return LinkedExplorer(features, methods=("pca",), seed=seed,
                          color={"cluster": labels, "split": np.where(labels >= 15, "unseen", "seen")})


def chromium_version() -> str:
    import subprocess

    try:
        return subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def drag_many(page, plot: str, repeats: int, view: str, n: int, timeout_s: float) -> list[dict]:
    """``repeats`` drags per box size, alternating maps; one row per drag."""
    rows = []
    for r in range(repeats):
        for name, box in BOXES:
            panel = (r + len(rows)) % 2
            load = os.getloadavg()[0]
            ms, _ = timed_drag(page, plot, panel, 1 - panel, box, timeout_s=timeout_s)
            page.wait_for_timeout(300)  # let the page settle: each drag starts from a quiet page
            shown = selected_points(page, plot)[1 - panel]
            # where the time went, as the page's own script measured it (None for the live view, whose script
            # runs in the widget's page): release -> our handler (plotly's own select on the dragged map),
            # handler -> every map restyled, restyled -> status/strip/summary drawn and the next frame painted
            phase = page.evaluate("(id) => { const s = window.workbenchLinked && window.workbenchLinked[id];"
                                  " return s && s.phases.length ? s.phases[s.phases.length - 1] : null; }", plot)
            phases = {k: round(v, 1) for k, v in phase.items()} if phase else None
            rows.append({"view": view, "points": n, "box": name, "from_map": panel, "ms": round(ms, 1),
                         "selected": len(shown or []), "load_1min": round(load, 2), "phases_ms": phases})
            print(f"  {view:7s} {n:6d} points  {name:6s} box in map {panel + 1}: {ms:7.1f} ms "
                  f"({len(shown or [])} selected, load {load:.1f}) {phases or ''}", flush=True)
    return rows


def offline_runs(n: int, repeats: int) -> list[dict]:
    linked = build(n)
    with tempfile.TemporaryDirectory() as folder:
        path = linked.write_html(Path(folder) / "linked.html")
        with browser_page() as (page, external, errors):
            page.goto(path.resolve().as_uri())
            plot = find_linked_plot(page, timeout_s=120)
            page.wait_for_function("(id) => window.workbenchLinked && window.workbenchLinked[id]", arg=plot,
                                   timeout=120_000)
            trace = page.evaluate("(id) => document.getElementById(id)._fullData[0].type", plot)
            page.wait_for_timeout(1000)
            rows = drag_many(page, plot, repeats, "offline", n, timeout_s=60)
            if external or errors:
                raise RuntimeError(f"the page asked the network for {external} or failed: {errors}")
    for row in rows:
        row["trace"] = trace
    return rows


LIVE_NOTEBOOK = '''
import sys
sys.path.insert(0, {benchmarks!r})
import workbench.notebook
S = workbench.notebook.setup("smoke", 0)
from bench_linked_views import build
linked = build({n})
linked
'''


def live_runs(n: int, repeats: int) -> list[dict]:
    import nbformat

    with tempfile.TemporaryDirectory() as folder:
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
            LIVE_NOTEBOOK.strip().format(benchmarks=str(Path(__file__).resolve().parent), n=n))])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, str(Path(folder) / "live.ipynb"))
        with jupyterlab(Path(folder)) as server, browser_page(1500, 1100) as (page, external, errors):
            from test_viz_linked_browser import open_and_run_all

            open_and_run_all(page, server, "live.ipynb")
            plot = find_linked_plot(page, "workbench-linked-live", timeout_s=600)
            trace = page.evaluate("(id) => document.getElementById(id)._fullData[0].type", plot)
            page.wait_for_timeout(3000)
            rows = drag_many(page, plot, repeats, "live", n, timeout_s=120)
            if external:
                raise RuntimeError(f"the page asked the network for {external}")
    for row in rows:
        row["trace"] = trace
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for view, n in dict.fromkeys((r["view"], r["points"]) for r in rows):
        ms = [r["ms"] for r in rows if r["view"] == view and r["points"] == n]
        loads = [r["load_1min"] for r in rows if r["view"] == view and r["points"] == n]
        out.append({"view": view, "points": n, "trace": next(r["trace"] for r in rows if r["points"] == n
                                                             and r["view"] == view),
                    "drags": len(ms), "median_ms": round(statistics.median(ms), 1),
                    "p90_ms": round(float(np.percentile(ms, 90)), 1), "max_ms": round(max(ms), 1),
                    "under_target": sum(m < TARGET_MS for m in ms),
                    "load_1min": [round(min(loads), 2), round(max(loads), 2)]})
        phases = [r["phases_ms"] for r in rows if r["view"] == view and r["points"] == n and r.get("phases_ms")]
        if phases:  # median per phase (the offline page only)
            out[-1]["median_phases_ms"] = {k: round(statistics.median(p[k] for p in phases), 1) for k in phases[0]}
    return out


def markdown(info: dict, settings: dict, summary: list[dict]) -> str:
    lines = [
        "# Linked views: selection latency in the browser",
        "",
        f"Measured {info['date_utc']} on {info['cpu']} ({info['cpus_usable']} usable cores), {settings['chromium']}, "
        f"headless with software WebGL (no GPU); load average {info['load_average_at_start']} at the start "
        "(other jobs were running: compare with the load column).",
        "",
        "Time from the mouse release after a box selection in one map to the next painted frame after the other "
        "map shows the same items (the browser test's `timed_drag`). Synthetic data: 20 Gaussian clusters in 64 "
        "dimensions under two tasks, PCA maps. Boxes of three sizes (about 5%, 25%, 60% of the map), alternating "
        "between the two maps.",
        "",
        f"| view | points per map | trace | drags | median ms | 90th pct ms | max ms | under {TARGET_MS} ms | load (1 min) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for s in summary:
        lines.append(f"| {s['view']} | {s['points']:,} | {s['trace']} | {s['drags']} | {s['median_ms']} | "
                     f"{s['p90_ms']} | {s['max_ms']} | {s['under_target']}/{s['drags']} | "
                     f"{s['load_1min'][0]}–{s['load_1min'][1]} |")
    lines += ["", "offline: the standalone HTML page (what reports embed), plotly's selection event and the "
              "embedded script; live: JupyterLab, the selection goes through the Python kernel and back.", ""]
    phased = [s for s in summary if s.get("median_phases_ms")]
    if phased:
        lines += ["Where the time goes on the offline page (median ms per phase, measured by the page's own script): "
                  "*to handler* = mouse release until the selection event reaches our script (plotly's own selection "
                  "of the dragged map); *restyle* = every map restyled; *summary* = status, thumbnail strip and "
                  "spread summary written; *to paint* = until the second animation frame after that, i.e. the "
                  "browser drawing the maps (software WebGL / SVG rendering here: there is no GPU).", "",
                  "| points per map | trace | to handler | restyle | summary | to paint | our script's share |",
                  "|---:|---|---:|---:|---:|---:|---:|"]
        for s in phased:
            p = s["median_phases_ms"]
            ours = p["restyle"] + p.get("summary", 0.0)
            total = sum(p.values())
            lines.append(f"| {s['points']:,} | {s['trace']} | {p['toHandler']} | {p['restyle']} | "
                         f"{p.get('summary', '–')} | {p['toPaint']} | {100 * ours / total:.0f}% |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2k and 20k offline, 4 drags each; prints only")
    parser.add_argument("--save", action="store_true", help="with --quick: write the results anyway")
    parser.add_argument("--no-live", action="store_true", help="skip the JupyterLab measurement")
    parser.add_argument("--repeats", type=int, default=None, help="drags per box size (default 4, quick 1)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sizes = (2000, 20000) if args.quick else (2000, 5000, 20000)
    repeats = args.repeats or (1 if args.quick else 4)
    info = machine_info(PACKAGES)
    settings = {"sizes": list(sizes), "repeats_per_box": repeats, "boxes": dict(BOXES), "target_ms": TARGET_MS,
                "chromium": chromium_version(), "live_points": 20000, "projection": "pca", "seed": 0}
    rows: list[dict] = []
    started = time.perf_counter()
    for n in sizes:
        print(f"offline, {n:,} points per map", flush=True)
        rows += offline_runs(n, repeats)
    if not (args.quick or args.no_live):
        print("live (JupyterLab), 20,000 points per map", flush=True)
        rows += live_runs(20000, repeats)
    summary = summarise(rows)
    text = markdown(info, settings, summary)
    print(text)
    print(f"({time.perf_counter() - started:.0f} s)")
    if args.save or not args.quick:
        save_results(RESULTS / "linked_views", {"machine": info, "settings": settings, "summary": summary,
                                                "runs": rows}, text)


if __name__ == "__main__":
    main()
