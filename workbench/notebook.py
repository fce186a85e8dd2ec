"""What every notebook calls first: profiles, seeding, offline-safe plotting, and recorded results.

A notebook's `parameters` cell declares ``profile`` (smoke | default | full); :func:`setup` checks it,
seeds the random generators, and makes plotly figures render both live in JupyterLab and inside the
static HTML reports (plotly.js embedded once, no network). ``S.record(name, value)`` (:func:`record`)
marks a result for the reports' index and for ``workbench sweep``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, TypeVar

from workbench.errors import ParameterError

PROFILES = ("smoke", "default", "full")
#: Set by ``workbench report`` in the kernel's environment: the notebook is being rendered to HTML.
REPORT_ENV = "WORKBENCH_REPORT"
#: The renderer that works in JupyterLab *and* in nbconvert's HTML, offline (see README, "Reports"):
#: plotly's JSON mimetype for JupyterLab plus an HTML copy whose plotly.js is embedded once per notebook.
OFFLINE_RENDERER = "plotly_mimetype+workbench_offline"
_CDN_MATHJAX = re.compile(r'<script[^>]*src="https?://[^"]*mathjax[^"]*"[^>]*>\s*</script>', re.IGNORECASE)

T = TypeVar("T")


@dataclass(frozen=True)
class Session:
    """What :func:`setup` decided, for the notebook to read back."""

    profile: str
    seed: int
    in_report: bool

    def pick(self, *, smoke: T, default: T, full: T) -> T:
        """The value for this session's profile: ``n = s.pick(smoke=2, default=50, full=500)``."""
        return by_profile(self.profile, smoke=smoke, default=default, full=full)

    def record(self, name: str, value: Any, headline: bool = False) -> Any:
        """Record a named result of this run (a number or a small table); see :func:`record`."""
        return record(name, value, headline=headline)


def in_report() -> bool:
    """True while ``workbench report`` (papermill) executes the notebook for an HTML report."""
    return os.environ.get(REPORT_ENV, "") not in ("", "0", "false", "False")


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ParameterError(
            f"profile must be one of {', '.join(PROFILES)}; got {profile!r}. "
            "Use 'smoke' for a seconds-long check, 'default' for the report, 'full' for paper scale."
        )
    return profile


def by_profile(profile: str, *, smoke: T, default: T, full: T) -> T:
    """Pick a setting by profile, e.g. ``epochs = by_profile(profile, smoke=2, default=50, full=100)``."""
    return {"smoke": smoke, "default": default, "full": full}[check_profile(profile)]


def register_offline_renderer() -> None:
    """Register ``workbench_offline``: plotly's ``notebook`` renderer without its MathJax CDN tag.

    plotly 7 hard-codes ``<script src="https://cdnjs...mathjax...">`` into every figure's HTML; the report
    template inlines MathJax already, so the tag would only be a failed network request offline.
    """
    import plotly.io as pio
    from plotly.io._base_renderers import NotebookRenderer

    if "workbench_offline" in pio.renderers:
        return

    class OfflineNotebookRenderer(NotebookRenderer):
        def to_mimebundle(self, fig_dict: dict) -> dict:
            bundle = super().to_mimebundle(fig_dict)
            bundle["text/html"] = _CDN_MATHJAX.sub("", bundle["text/html"])
            return bundle

    pio.renderers["workbench_offline"] = OfflineNotebookRenderer(connected=False)


def setup(profile: str = "default", seed: int = 0, **_: Any) -> Session:
    """Validate the profile, seed everything and configure plotly for offline HTML.

    Call it right after the `parameters` cell: ``S = workbench.notebook.setup(profile, seed)``.
    """
    from workbench.seeding import seed_everything

    check_profile(profile)
    seed_everything(seed)
    import plotly.io as pio

    # plotly's default under ipykernel ('plotly_mimetype') leaves nbconvert's HTML without figures,
    # and 'notebook_connected' needs a CDN; this one embeds plotly.js once and works offline.
    register_offline_renderer()
    pio.renderers.default = OFFLINE_RENDERER
    return Session(profile=profile, seed=seed, in_report=in_report())


# --------------------------------------------------------------------------------------------------
# Recorded results
# --------------------------------------------------------------------------------------------------
#: The output mimetype that carries a recorded result. It travels inside the executed notebook, so the
#: result reaches ``workbench report`` / ``workbench sweep`` from any kernel, local or on a Dask worker.
RESULT_MIMETYPE = "application/vnd.workbench.result+json"
#: A "small table" has at most this many cells; anything bigger belongs in a figure or a file.
MAX_TABLE_CELLS = 400
_RESULT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$")


def _number(value: Any) -> float | int | None:
    """A plain int/float for JSON (numpy scalars included, bools excluded), NaN/inf as None."""
    import math
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError
    if isinstance(value, numbers.Integral):
        return int(value)
    value = float(value)
    return value if math.isfinite(value) else None


def result_payload(name: str, value: Any, headline: bool = False) -> dict[str, Any]:
    """The JSON form of one recorded result: ``{"name", "kind", "value", "headline"}``.

    ``kind`` is ``"number"`` (an int or float; NaN is stored as null) or ``"table"`` (a pandas DataFrame or
    Series, or a dict of numbers, stored as ``{"columns": [...], "index": [...], "data": [[...]]}``).
    """
    if not isinstance(name, str) or not _RESULT_NAME.match(name):
        raise ParameterError(
            f"a recorded result needs a short name of letters, digits, '_', '.' or '-' starting with a letter "
            f"(e.g. 'zsl_accuracy'); got {name!r}."
        )
    try:
        return {"name": name, "kind": "number", "value": _number(value), "headline": bool(headline)}
    except TypeError:
        pass
    import pandas as pd

    if isinstance(value, dict):
        value = pd.Series(value)
    if isinstance(value, pd.Series):
        value = value.to_frame(name=value.name if value.name is not None else name)
    if not isinstance(value, pd.DataFrame):
        raise ParameterError(
            f"S.record({name!r}, ...): record a number or a small table (pandas DataFrame/Series, or a dict of "
            f"numbers); got {type(value).__name__}."
        )
    if value.size > MAX_TABLE_CELLS:
        raise ParameterError(
            f"S.record({name!r}, ...): the table has {value.size} cells, more than {MAX_TABLE_CELLS}; record the "
            "few numbers that summarise it (a figure can show the rest)."
        )
    cells = []
    for row in value.itertuples(index=False):
        cells.append([_table_cell(v) for v in row])
    return {"name": name, "kind": "table", "headline": bool(headline),
            "value": {"columns": [str(c) for c in value.columns], "index": [str(i) for i in value.index],
                      "data": cells}}


def _table_cell(value: Any) -> Any:
    try:
        return _number(value)
    except TypeError:
        return None if value is None else str(value)


def record(name: str, value: Any, headline: bool = False) -> Any:
    """Record a named result of this run, e.g. ``S.record("zsl_accuracy", 0.41, headline=True)``.

    The result is displayed as one line and stored in the executed notebook; ``workbench report`` copies it
    into the index (``headline=True``: shown in the index's "headline" column; mark the two or three figures
    that sum the notebook up) and ``workbench sweep`` averages it over seeds. Recording the same name twice
    keeps the last value. Returns ``value``, so ``acc = S.record("acc", compute())`` reads naturally.
    """
    import html

    from IPython.display import display

    payload = result_payload(name, value, headline)
    if payload["kind"] == "number":
        shown = "n/a" if payload["value"] is None else format_result(payload["value"])
    else:
        shown = f"table {len(payload['value']['index'])} x {len(payload['value']['columns'])}"
    mark = " (headline)" if headline else ""
    text = f"recorded {name} = {shown}{mark}"
    display({RESULT_MIMETYPE: payload, "text/plain": text,
             "text/html": f'<div class="workbench-recorded"><small>recorded <code>{html.escape(name)}</code> = '
                          f'{html.escape(shown)}{mark}</small></div>'}, raw=True)
    return value


def format_result(value: float | int | None) -> str:
    """A recorded number as the index shows it: integers as they are, floats to 4 significant digits."""
    if value is None:
        return "n/a"
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}"


def benchmark_results(name: str) -> dict[str, Any] | None:
    """The saved results of ``benchmarks/bench_<name>.py`` (``benchmarks/results/<name>.json``), or None when this
    installation has no benchmark results (e.g. an installed wheel): a notebook shows measured multi-seed
    tables from there instead of typing numbers into its text."""
    import json

    from workbench.paths import REPO_ROOT

    path = REPO_ROOT / "benchmarks" / "results" / f"{name}.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))
