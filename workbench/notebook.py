"""What every notebook calls first: profiles, seeding, and offline-safe plotting.

A notebook's `parameters` cell declares ``profile`` (smoke | default | full); :func:`setup` checks it,
seeds the random generators, and makes plotly figures render both live in JupyterLab and inside the
static HTML reports (plotly.js embedded once, no network).
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
