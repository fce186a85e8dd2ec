"""``workbench sweep``: one notebook over a grid of parameters, each run a report, on Dask distributed.

A sweep runs in four steps, each a function here:

1. :func:`plan_sweep` reads ``-p NAME VALUES`` pairs (``0..4`` is the integers 0 to 4, ``a,b`` a list, anything
   else one value), checks every value against the notebook's `parameters` cell before any kernel starts, and
   lists the runs: the product of the values, in the order the parameters were given.
2. :func:`run_sweep` skips the runs that already succeeded with the same parameters (unless ``force``) and
   sends the rest to :func:`workbench.cluster.run_jobs`. Each run gets its own folder (``DIR/seed=0,dataset=a/``)
   with the same files and the same atomic/failed-report rules as ``workbench report``, plus ``run.json``
   (its index row), which is how a rerun knows the run is done.
3. :func:`write_sweep_index` writes ``DIR/index.html`` (+ ``index.json``): one row per run with its parameters,
   status, time and recorded results.
4. :func:`summarize` and :func:`write_summary` write ``DIR/summary.html`` (+ ``summary.json``): every recorded
   number as mean ± 95% confidence interval over the seeds of each setting, as a plotly figure and a table,
   offline (plotly.js inlined once).
"""

from __future__ import annotations

import html
import itertools
import json
import math
import os
import re
import time
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from workbench.errors import ParameterError, WorkbenchError
from workbench.notebook import PROFILES, format_result
from workbench.reports import (INDEX_CSS, INDEX_HTML, INDEX_JSON, NotebookInfo, ParameterInfo, ReportResult,
                               _atomic_write, external_resources, inspect_notebook, parse_value,
                               remove_stale_scratch, resolve_notebooks, results_html, sigterm_as_interrupt)

#: The parameter a sweep averages over; every notebook declares it (README, "Adding a notebook").
SEED = "seed"
RUN_JSON = "run.json"
SUMMARY_HTML = "summary.html"
SUMMARY_JSON = "summary.json"
_RANGE = re.compile(r"^\s*(-?\d+)\s*\.\.\s*(-?\d+)\s*$")


# --------------------------------------------------------------------------------------------------
# 1. The grid
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepRun:
    key: str  # the run's folder name inside the sweep folder, e.g. "seed=0,dataset=a"
    parameters: dict[str, Any]


@dataclass
class Sweep:
    info: NotebookInfo
    axes: dict[str, list[Any]]  # parameter → its values, in the order given on the command line
    runs: list[SweepRun]

    @property
    def varying(self) -> list[str]:
        """The parameters that take more than one value."""
        return [name for name, values in self.axes.items() if len(values) > 1]


def parse_values(raw: str, param: ParameterInfo, notebook: str) -> list[Any]:
    """``"0..4"`` → ``[0, 1, 2, 3, 4]``; ``"a,b"`` → ``["a", "b"]``; ``"x"`` → ``["x"]``, each typed.

    A list, tuple or dict parameter takes its value whole (its commas belong to the literal).
    """
    if param.type in ("list", "tuple", "dict"):
        return [parse_value(raw, param, notebook)]
    match = _RANGE.match(raw)
    if match:
        if param.type not in ("int", "None"):
            raise ParameterError(
                f"notebook {notebook}: {raw!r} is a range of integers, but parameter {param.name!r} is a "
                f"{param.type} (default {param.default!r}); list its values with commas instead, e.g. a,b."
            )
        low, high = int(match.group(1)), int(match.group(2))
        if high < low:
            raise ParameterError(f"notebook {notebook}: the range {raw!r} for {param.name!r} is empty; "
                                 f"write it low..high, e.g. 0..4.")
        return list(range(low, high + 1))
    parts = [part.strip() for part in raw.split(",")] if "," in raw else [raw]
    if any(part == "" for part in parts):
        raise ParameterError(f"notebook {notebook}: {raw!r} for {param.name!r} has an empty value; "
                             "separate values with single commas, e.g. a,b.")
    values: list[Any] = []
    for part in parts:
        value = parse_value(part, param, notebook)
        if value not in values:
            values.append(value)
    return values


def _folder_name(parameters: dict[str, Any], varying: Sequence[str]) -> str:
    """``seed=0,dataset=a`` from the varying parameters: readable, and safe as a folder name and in a URL."""
    if not varying:
        return "run"
    text = ",".join(f"{name}={parameters[name]}" for name in varying)
    return re.sub(r"[^A-Za-z0-9._=,+-]", "_", text)


def plan_sweep(notebook: str, raw_pairs: Sequence[Sequence[str]], profile: str | None = None) -> Sweep:
    """Check every value of every ``-p NAME VALUES`` and list the runs (before any kernel starts)."""
    path = resolve_notebooks([notebook])[0]
    info = inspect_notebook(path)
    pairs = [tuple(p) for p in raw_pairs]
    if profile is not None:
        if profile not in PROFILES:
            raise ParameterError(f"--profile must be one of {', '.join(PROFILES)}; got {profile!r}.")
        if any(name == "profile" for name, _ in pairs):
            raise ParameterError("give the profile once: either --profile or -p profile VALUES.")
        pairs.append(("profile", profile))
    axes: dict[str, list[Any]] = {}
    for name, raw in pairs:
        param = info.parameter(name)
        if param is None:
            valid = ", ".join(p.name for p in info.parameters) or "(none)"
            raise ParameterError(f"notebook {info.name} has no parameter {name!r}. Its parameters are: {valid}. "
                                 "See `workbench list` for types and defaults.")
        if name in axes:
            raise ParameterError(f"-p {name} is given twice; list all its values in one: -p {name} a,b.")
        axes[name] = parse_values(raw, param, info.name)
    if not axes:
        raise ParameterError(f"a sweep needs at least one -p NAME VALUES, e.g. -p {SEED} 0..4.")
    varying = [name for name, values in axes.items() if len(values) > 1]
    runs = []
    for combination in itertools.product(*axes.values()):
        parameters = dict(zip(axes, combination))
        runs.append(SweepRun(key=_folder_name(parameters, varying), parameters=parameters))
    keys = [run.key for run in runs]
    if len(set(keys)) != len(keys):  # two values that differ only in characters a folder name cannot hold
        runs = [SweepRun(key=f"run{i:03d}", parameters=run.parameters) for i, run in enumerate(runs)]
    return Sweep(info=info, axes=axes, runs=runs)


# --------------------------------------------------------------------------------------------------
# 2. Running it
# --------------------------------------------------------------------------------------------------
@dataclass
class SweepRow:
    """One run of a sweep as its index shows it."""

    key: str
    parameters: dict[str, Any]
    status: str  # "ok" | "failed"
    wall_s: float
    started_at: str
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    html: str | None = None  # relative to the sweep folder
    last_good_html: str | None = None
    error: str = ""
    skipped: bool = False  # finished in an earlier invocation, not run again


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Parameters equal as JSON stores them (tuples become lists)."""
    return json.loads(json.dumps(a, default=str)) == json.loads(json.dumps(b, default=str))


def finished_run(run_dir: Path, notebook: str, parameters: dict[str, Any]) -> ReportResult | None:
    """The earlier result of this run if it succeeded with exactly these parameters and its report exists."""
    try:
        row = json.loads((run_dir / RUN_JSON).read_text(encoding="utf-8"))
        result = ReportResult(**row)
    except (OSError, ValueError, TypeError):
        return None
    if (result.name == notebook and result.status == "ok" and _same(result.parameters, parameters)
            and (run_dir / f"{notebook}.html").is_file()):
        return result
    return None


def _row(run: SweepRun, result: ReportResult, skipped: bool) -> SweepRow:
    def link(name: str | None) -> str | None:
        return f"{run.key}/{name}" if name else None

    return SweepRow(key=run.key, parameters=run.parameters, status=result.status, wall_s=result.wall_s,
                    started_at=result.started_at, results=result.results, html=link(result.html),
                    last_good_html=link(result.last_good_html), error=result.error, skipped=skipped)


def run_sweep(notebook: str, raw_pairs: Sequence[Sequence[str]], output_dir: Path, *,
              profile: str | None = None, workers: int | None = None, scheduler: str | None = None,
              threads: int | None = None, force: bool = False, progress_bar: bool = True) -> list[SweepRow]:
    """Plan the sweep, run what is not done yet on Dask, and write its index and summary.

    ``workers``: size of the LocalCluster (default: one per core, at most one per run); ``scheduler``: the
    address of an existing Dask scheduler instead (e.g. ``tcp://host:8786``). ``threads``: per kernel
    (default: the cores shared out evenly on a LocalCluster, 1 on an existing cluster).
    """
    from workbench.cluster import Job, dask_client, default_threads, run_jobs

    sweep = plan_sweep(notebook, raw_pairs, profile)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    rows: dict[str, SweepRow] = {}
    to_run = []
    for run in sweep.runs:
        earlier = None if force else finished_run(output_dir / run.key, sweep.info.name, run.parameters)
        if earlier is not None:
            rows[run.key] = _row(run, earlier, skipped=True)
        else:
            to_run.append(run)
    print(f"sweep of {sweep.info.name}: {len(sweep.runs)} runs, {len(to_run)} to run"
          + (f", {len(rows)} finished earlier (--force reruns them)" if rows else "") + f" → {output_dir}")

    with sigterm_as_interrupt():
        remove_stale_scratch(output_dir, older_than=time.time())
        if to_run:
            by_key = {run.key: run for run in to_run}

            def on_result(job: Job, result: ReportResult) -> None:
                _atomic_write(job.output_dir / RUN_JSON, json.dumps(asdict(result), indent=2, default=str))
                rows[job.key] = _row(by_key[job.key], result, skipped=False)
                write_sweep_index(output_dir, sweep, [rows[r.key] for r in sweep.runs if r.key in rows])

            jobs = [Job(key=run.key, info=sweep.info, parameters=run.parameters, output_dir=output_dir / run.key)
                    for run in to_run]
            n_workers = None if scheduler else min(workers or os.cpu_count() or 1, len(jobs))
            if threads is None:
                threads = 1 if scheduler else default_threads(n_workers or 1)
            with dask_client(n_workers, scheduler) as client:
                run_jobs(jobs, client, threads=threads, on_result=on_result, desc="sweep",
                         progress_bar=progress_bar)
    ordered = [rows[run.key] for run in sweep.runs]
    index = write_sweep_index(output_dir, sweep, ordered)
    summary = write_summary(output_dir, sweep, ordered)
    failed = sum(row.status != "ok" for row in ordered)
    print(f"index: {index}\nsummary: {summary}" + (f"\n{failed} run(s) failed" if failed else ""))
    return ordered


# --------------------------------------------------------------------------------------------------
# 3. The index
# --------------------------------------------------------------------------------------------------
def _cell(text: Any) -> str:
    return html.escape(str(text))


def _href(path: str) -> str:
    return html.escape(urllib.parse.quote(path), quote=True)


def write_sweep_index(output_dir: Path, sweep: Sweep, rows: Sequence[SweepRow]) -> Path:
    """``index.json`` and ``index.html`` of the sweep: one row per run, in grid order."""
    _atomic_write(output_dir / INDEX_JSON, json.dumps([asdict(r) for r in rows], indent=2, default=str))
    names = list(sweep.axes)
    body = []
    for row in rows:
        ok = row.status == "ok"
        links = [f'<a href="{_href(row.html)}">{"report" if ok else "failed run"}</a>'] if row.html else []
        if not ok and row.last_good_html:
            links.append(f'<a href="{_href(row.last_good_html)}">last good report</a>')
        status = row.status + (" (earlier run)" if row.skipped else "")
        error = f"<br><small>{_cell(row.error)}</small>" if row.error else ""
        params = "".join(f"<td>{_cell(repr(row.parameters.get(n)))}</td>" for n in names)
        body.append(f'<tr class="{"ok" if ok else "failed"}"><td><code>{_cell(row.key)}</code></td>{params}'
                    f'<td class="status">{_cell(status)}{error}</td><td>{row.wall_s:.1f} s</td>'
                    f'<td class="headline">{results_html(row.results)}</td><td>{" · ".join(links)}</td>'
                    f'<td>{_cell(row.started_at)}</td></tr>')
    n_failed = sum(r.status != "ok" for r in rows)
    head = "".join(f"<th>{_cell(n)}</th>" for n in names)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>sweep of {_cell(sweep.info.name)}</title>
<style>{INDEX_CSS}</style></head>
<body>
<h1>Sweep of {_cell(sweep.info.name)}</h1>
<p>{_cell(sweep.info.title)}. {len(rows)} of {len(sweep.runs)} run(s) listed, {n_failed} failed.
<a href="{SUMMARY_HTML}">Summary: recorded results, mean ± 95% CI over seeds</a>.</p>
<table id="runs">
<thead><tr><th>run</th>{head}<th>status</th><th>wall time</th><th>recorded results</th><th>report</th>
<th>time of run</th></tr></thead>
<tbody>
{chr(10).join(body)}
</tbody></table>
</body></html>
"""
    _atomic_write(output_dir / INDEX_HTML, page)
    return output_dir / INDEX_HTML


# --------------------------------------------------------------------------------------------------
# 4. The summary
# --------------------------------------------------------------------------------------------------
@dataclass
class SummaryCell:
    """One recorded number at one setting, over that setting's successful seeds."""

    result: str
    setting: str
    mean: float | None
    ci95: float | None  # half-width, Student's t over the seeds; None with fewer than 2 values
    n: int
    values: list[float]


def mean_ci95(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and the half-width of its 95% confidence interval, ``t(0.975, n-1) · sd / √n``.

    Student's t, not 1.96: a sweep has a handful of seeds, and with 5 the normal value would claim a
    narrower interval than the data support (t is 2.78 there).
    """
    n = len(values)
    if n == 0:
        return None, None
    mean = sum(values) / n
    if n < 2:
        return mean, None
    from scipy.stats import t

    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(t.ppf(0.975, n - 1) * sd / math.sqrt(n))


def setting_label(parameters: dict[str, Any], sweep: Sweep) -> str:
    """The varying parameters other than the seed, e.g. ``dataset=a`` (``all runs`` when there are none)."""
    shown = [n for n in sweep.varying if n != SEED]
    return ", ".join(f"{n}={parameters[n]}" for n in shown) or "all runs"


def summarize(sweep: Sweep, rows: Sequence[SweepRow]) -> list[SummaryCell]:
    """Every recorded number, per setting, over the successful runs (failed runs are left out)."""
    settings: dict[str, list[SweepRow]] = {}
    for row in rows:
        settings.setdefault(setting_label(row.parameters, sweep), []).append(row)
    names: list[str] = []
    for row in rows:
        for name, res in row.results.items():
            if res.get("kind") == "number" and name not in names:
                names.append(name)
    cells = []
    for name in names:
        for setting, members in settings.items():
            values = [float(r.results[name]["value"]) for r in members if r.status == "ok"
                      and name in r.results and r.results[name].get("value") is not None]
            mean, ci = mean_ci95(values)
            cells.append(SummaryCell(result=name, setting=setting, mean=mean, ci95=ci, n=len(values),
                                     values=values))
    return cells


def _figure_html(name: str, cells: Sequence[SummaryCell]) -> str:
    """Mean ± 95% CI per setting (markers with error bars) over the individual seeds (small grey dots)."""
    import plotly.graph_objects as go
    import plotly.io as pio

    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=[c.setting for c in cells for _ in c.values], y=[v for c in cells for v in c.values], mode="markers",
        name="one seed", marker={"color": "rgba(120,120,120,0.55)", "size": 7}))
    fig.add_trace(go.Scatter(
        x=[c.setting for c in cells], y=[c.mean for c in cells], mode="markers", name="mean ± 95% CI",
        marker={"color": "#1f5fa8", "size": 12, "symbol": "diamond"},
        error_y={"type": "data", "array": [c.ci95 or 0 for c in cells], "visible": True, "thickness": 2}))
    fig.update_layout(title=f"{name}: mean ± 95% CI over seeds", height=340, margin={"t": 50, "b": 40},
                      xaxis_title="setting", yaxis_title=name, legend={"orientation": "h", "y": -0.25})
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, include_mathjax=False)


def write_summary(output_dir: Path, sweep: Sweep, rows: Sequence[SweepRow]) -> Path:
    """``summary.json`` and an offline ``summary.html``: a figure per recorded number and one table."""
    from plotly.offline import get_plotlyjs

    cells = summarize(sweep, rows)
    _atomic_write(output_dir / SUMMARY_JSON, json.dumps([asdict(c) for c in cells], indent=2))
    names = list(dict.fromkeys(c.result for c in cells))
    settings = list(dict.fromkeys(c.setting for c in cells))
    by = {(c.result, c.setting): c for c in cells}

    def shown(c: SummaryCell) -> str:
        if c.mean is None:
            return "n/a (n=0)"
        spread = f" ± {format_result(c.ci95)}" if c.ci95 is not None else ""
        return f"{format_result(c.mean)}{spread} <small>(n={c.n})</small>"

    table_rows = "".join(
        f"<tr><td>{_cell(s)}</td>" + "".join(f"<td>{shown(by[(n, s)])}</td>" for n in names) + "</tr>"
        for s in settings)
    n_failed = sum(r.status != "ok" for r in rows)
    figures = "\n".join(f'<div class="figure">{_figure_html(n, [by[(n, s)] for s in settings])}</div>'
                        for n in names)
    seeds = sorted({r.parameters.get(SEED) for r in rows if SEED in r.parameters}, key=str)
    intro = (f"{len(rows)} run(s) of <code>{_cell(sweep.info.name)}</code>; each setting averages over "
             f"{SEED} = {', '.join(map(str, seeds)) or '(not swept)'}. ")
    if n_failed:
        intro += f"{n_failed} failed run(s) are left out (see the <a href=\"{INDEX_HTML}\">index</a>). "
    if not names:
        intro += "The notebook recorded no numbers (use <code>S.record(name, value)</code>)."
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>sweep summary: {_cell(sweep.info.name)}</title>
<style>{INDEX_CSS} .figure {{ max-width: 60em; }}</style>
<script type="text/javascript">{get_plotlyjs()}</script></head>
<body>
<h1>Sweep summary: {_cell(sweep.info.name)}</h1>
<p>{intro}Intervals are Student's t 95% confidence intervals of the mean over seeds (none with a single
seed). <a href="{INDEX_HTML}">All runs</a>.</p>
<table id="summary"><thead><tr><th>setting</th>{"".join(f"<th>{_cell(n)}</th>" for n in names)}</tr></thead>
<tbody>{table_rows}</tbody></table>
{figures}
</body></html>
"""
    if external_resources(page):  # the page must open offline, like every report
        raise WorkbenchError(f"the sweep summary would load {external_resources(page)[0]!r} from the network.")
    _atomic_write(output_dir / SUMMARY_HTML, page)
    return output_dir / SUMMARY_HTML
