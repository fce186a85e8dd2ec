"""Notebooks → offline HTML experiment reports.

``workbench report`` runs in four steps, each a function here:

1. :func:`describe_notebooks` reads every notebook's title, purpose and `parameters` cell
   (papermill's inspector gives name, default, type and the comment beside each parameter).
2. :func:`validate_parameters` turns ``-p NAME VALUE`` strings into typed values, *before* any kernel
   starts: an unknown name or a value that does not parse is a :class:`ParameterError`.
3. :func:`execute_notebook` runs one notebook with papermill into a temporary folder, converts it to a
   standalone HTML file with the offline template (plotly.js and MathJax inlined, no CDN), and only then
   moves the results into place. A failed run still yields an HTML report showing the failing cell, saved
   beside (not over) the last good report. It is two halves, so that a run can execute elsewhere (a Dask
   worker, :mod:`workbench.cluster`): :func:`render_report` (execute + convert, files held in memory) and
   :func:`install_report` (put them in place atomically). The results a notebook recorded with
   ``S.record`` are collected from its outputs (:func:`recorded_results`).
4. :func:`write_index` rebuilds ``index.html`` from ``index.json``: one row per notebook with status,
   wall time, parameters, recorded headline results, links, time of run, git commit and package versions.

Ctrl-C and SIGTERM stop a run cleanly (:func:`sigterm_as_interrupt`); temporary folders a killed run left
behind are removed by the next (:func:`remove_stale_scratch`).
"""

from __future__ import annotations

import ast
import contextlib
import datetime as _dt
import html
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import nbformat

from workbench.errors import ParameterError, WorkbenchError
from workbench.notebook import PROFILES, REPORT_ENV, RESULT_MIMETYPE, format_result
from workbench.paths import PACKAGE_DIR, REPO_ROOT, notebooks_dir

TEMPLATE_DIR = PACKAGE_DIR / "report_template"
MATHJAX_JS = TEMPLATE_DIR / "mathjax-tex-svg-full.js"
INDEX_JSON = "index.json"
INDEX_HTML = "index.html"
#: Recorded results beside each report: ``NAME.results.json`` (``NAME.failed.results.json`` for a failed run).
RESULTS_SUFFIX = ".results.json"
#: Packages whose versions each index row records.
VERSIONED_PACKAGES = ("workbench", "torch", "numpy", "scikit-learn", "umap-learn", "plotly",
                      "papermill", "nbconvert")


# --------------------------------------------------------------------------------------------------
# 1. What notebooks exist and what they take
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParameterInfo:
    name: str
    default: Any
    type: str  # papermill's inferred type name: int, float, str, bool, list, dict, None, ...
    help: str
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class NotebookInfo:
    name: str
    path: Path
    title: str
    purpose: str
    parameters: tuple[ParameterInfo, ...]

    def parameter(self, name: str) -> ParameterInfo | None:
        return next((p for p in self.parameters if p.name == name), None)


_CHOICES = re.compile(r"^\s*\[([^\]|]+(?:\|[^\]|]+)+)\]\s*")


def _parse_help(comment: str) -> tuple[str, tuple[str, ...]]:
    """``"[smoke|default|full] how big"`` → (``"how big"``, ``("smoke", "default", "full")``)."""
    match = _CHOICES.match(comment or "")
    if not match:
        return (comment or "").strip(), ()
    choices = tuple(c.strip() for c in match.group(1).split("|"))
    return comment[match.end():].strip(), choices


def _title_and_purpose(nb: nbformat.NotebookNode) -> tuple[str, str]:
    """The first markdown cell's ``# Title`` and the paragraph after it."""
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        lines = [line.strip() for line in cell.source.splitlines()]
        title = next((line.lstrip("#").strip() for line in lines if line.startswith("#")), "")
        body = [line for line in lines if line and not line.startswith("#")]
        purpose = body[0] if body else ""
        return title, purpose
    return "", ""


def _literal(text: str | None) -> Any:
    try:
        return ast.literal_eval(text) if text is not None else None
    except (ValueError, SyntaxError):
        return text


def inspect_notebook(path: Path) -> NotebookInfo:
    """Read one notebook's title, purpose and parameters (without running it)."""
    import papermill

    path = Path(path)
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the user's broken file
        raise WorkbenchError(f"cannot read notebook {path}: {exc}. Is it valid .ipynb JSON?") from exc
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise WorkbenchError(
            f"notebook {path.name} must have exactly one cell tagged 'parameters' (found {len(tagged)}); "
            "tag the cell that holds the defaults (JupyterLab: property inspector → Cell Tags)."
        )
    with contextlib.redirect_stderr(open(os.devnull, "w")):
        raw = papermill.inspect_notebook(str(path))
    params = []
    for name, spec in raw.items():
        help_text, choices = _parse_help(spec.get("help", ""))
        default = _literal(spec.get("default"))
        # papermill only reports a type from an annotation (`n: int = 3`); otherwise take the default's.
        declared = spec.get("inferred_type_name") or "None"
        kind = declared if declared != "None" else ("None" if default is None else type(default).__name__)
        params.append(ParameterInfo(name=name, default=default, type=kind, help=help_text,
                                    choices=choices))
    title, purpose = _title_and_purpose(nb)
    return NotebookInfo(name=path.stem, path=path, title=title or path.stem, purpose=purpose,
                        parameters=tuple(params))


def notebook_paths(folder: Path | None = None) -> list[Path]:
    folder = folder or notebooks_dir()
    return sorted(p for p in Path(folder).glob("*.ipynb") if not p.name.startswith("."))


def describe_notebooks(folder: Path | None = None) -> list[NotebookInfo]:
    """Every notebook in ``notebooks/`` with its title, purpose and parameters."""
    return [inspect_notebook(p) for p in notebook_paths(folder)]


def resolve_notebooks(names: Sequence[str] | None, folder: Path | None = None) -> list[Path]:
    """Notebook names (``00_tour``), file names or paths → paths; ``None`` means all of them."""
    available = notebook_paths(folder)
    if names is None:
        if not available:
            raise WorkbenchError(f"no notebooks found in {folder or notebooks_dir()}.")
        return available
    by_stem = {p.stem: p for p in available}
    resolved = []
    for name in names:
        candidate = Path(name)
        if candidate.suffix == ".ipynb" and candidate.exists():
            resolved.append(candidate.resolve())
        elif candidate.stem in by_stem:
            resolved.append(by_stem[candidate.stem])
        else:
            raise WorkbenchError(
                f"unknown notebook {name!r}. Available: {', '.join(by_stem) or '(none)'} "
                "(see `workbench list`)."
            )
    return resolved


# --------------------------------------------------------------------------------------------------
# 2. Parameter validation (before any kernel starts)
# --------------------------------------------------------------------------------------------------
_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


def parse_value(raw: str, param: ParameterInfo, notebook: str) -> Any:
    """Parse a command-line string to the parameter's declared type, or raise ParameterError."""
    kind = param.type

    def fail(expected: str) -> ParameterError:
        return ParameterError(
            f"notebook {notebook}: parameter {param.name!r} expects {expected} "
            f"(default {param.default!r}); could not read {raw!r} as that."
        )

    text = raw.strip()
    if kind == "str":
        value: Any = raw
    elif kind == "int":
        try:
            value = int(text)
        except ValueError:
            raise fail("an integer, e.g. 3") from None
    elif kind == "float":
        try:
            value = float(text)
        except ValueError:
            raise fail("a number, e.g. 0.5") from None
    elif kind == "bool":
        if text.lower() in _TRUE:
            value = True
        elif text.lower() in _FALSE:
            value = False
        else:
            raise fail("true or false")
    elif kind in ("list", "dict", "tuple"):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            example = {"list": "[1, 2]", "tuple": "(1, 2)", "dict": "{'a': 1}"}[kind]
            raise fail(f"a Python {kind} literal, e.g. {example}") from None
        if type(value).__name__ != kind:
            raise fail(f"a {kind}")
    else:  # None default or an unusual type: accept any Python literal, else the plain string
        value = _literal(text)
    if param.choices and str(value) not in param.choices:
        raise ParameterError(
            f"notebook {notebook}: parameter {param.name!r} must be one of "
            f"{', '.join(param.choices)}; got {raw!r}."
        )
    return value


def validate_parameters(
    notebooks: Sequence[NotebookInfo],
    raw_pairs: Iterable[Sequence[str]],
    profile: str | None = None,
    *,
    strict: bool = True,
) -> dict[str, dict[str, Any]]:
    """Typed parameters per notebook name.

    ``strict``: every name must exist in every selected notebook (notebooks named explicitly).
    Otherwise (``--all``) a name is applied where it exists and must exist in at least one notebook.
    """
    pairs = [tuple(p) for p in raw_pairs]
    if profile is not None:
        if profile not in PROFILES:
            raise ParameterError(f"--profile must be one of {', '.join(PROFILES)}; got {profile!r}.")
        clash = [v for n, v in pairs if n == "profile" and v != profile]
        if clash:
            raise ParameterError(f"--profile {profile} contradicts -p profile {clash[0]}; give one.")
        pairs = [(n, v) for n, v in pairs if n != "profile"] + [("profile", profile)]

    result: dict[str, dict[str, Any]] = {nb.name: {} for nb in notebooks}
    for name, raw in pairs:
        owners = [nb for nb in notebooks if nb.parameter(name) is not None]
        missing = [nb for nb in notebooks if nb.parameter(name) is None]
        if missing and (strict or not owners):
            nb = missing[0]
            valid = ", ".join(p.name for p in nb.parameters) or "(none)"
            raise ParameterError(
                f"notebook {nb.name} has no parameter {name!r}. Its parameters are: {valid}. "
                f"See `workbench list` for types and defaults."
            )
        for nb in owners:
            result[nb.name][name] = parse_value(raw, nb.parameter(name), nb.name)  # type: ignore[arg-type]
    return result


# --------------------------------------------------------------------------------------------------
# 3. Execute one notebook and convert it to HTML
# --------------------------------------------------------------------------------------------------
@dataclass
class ReportResult:
    name: str
    title: str
    status: str  # "ok" | "failed"
    wall_s: float
    parameters: dict[str, Any]
    started_at: str
    html: str | None  # the report of this run, relative to the output folder
    last_good_html: str | None
    error: str = ""
    git_commit: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    #: What the notebook recorded with ``S.record``: name → ``{"kind", "value", "headline"}``.
    results: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class RenderedReport:
    """A finished run held in memory: its index row and the files to put in place (file name → bytes).

    Rendering and installing are separate so that a run can execute anywhere (a Dask worker on another
    machine) while the output folder is only ever written by the process that owns it.
    """

    result: ReportResult
    files: dict[str, bytes]


def git_commit() -> str:
    """Short commit of the checkout, with ``+dirty`` when it has uncommitted changes."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                                capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


#: Environment variables that size the thread pools of BLAS, OpenMP (torch), and numba in a kernel.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")


def kernel_environment(threads: int | None = None) -> dict[str, str]:
    """What a report kernel inherits: report mode (setup() picks offline renderers) and, when given, its
    thread count, so that N kernels side by side use N x ``threads`` cores rather than N x all of them."""
    env = {REPORT_ENV: "1"}
    if threads:
        env.update({name: str(threads) for name in THREAD_VARIABLES})
    return env


def _kernel_manager_class(env: dict[str, str], stderr_path: Path) -> type:
    """A kernel manager class that starts the report's kernel with ``env`` added to the environment it
    inherits and with the kernel process's own stderr going to ``stderr_path``.

    Why a class rather than setting ``os.environ``: several reports may start kernels side by side in one
    process (threads of a Dask worker), and a shared environment would leak one run's settings into another.
    Why a file for stderr: a kernel stopped in the middle of a cell (Ctrl-C, SIGTERM) prints ZMQ tracebacks
    from its own process, which would land on the user's terminal; the file keeps them, and any real crash
    message, for the failed report.
    """
    from jupyter_client.manager import AsyncKernelManager

    class ReportKernelManager(AsyncKernelManager):
        async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
            kw["env"] = {**kw.get("env", os.environ), **env}
            with open(stderr_path, "ab") as stderr:  # Popen keeps its own copy of the descriptor
                kw["stderr"] = stderr
                await super()._async_launch_kernel(kernel_cmd, **kw)

    return ReportKernelManager


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def notebook_to_html(nb: nbformat.NotebookNode, *, banner: str = "", failed: bool = False) -> str:
    """A standalone HTML page for an executed notebook that needs no network to display."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="workbench_report",
                            extra_template_basedirs=[str(TEMPLATE_DIR)])
    nb = nbformat.from_dict(nb)
    nb.metadata.pop("widgets", None)  # saved widget state would pull a CDN renderer
    title = _title_and_purpose(nb)[0]
    if title:
        nb.metadata["title"] = title
    resources = {
        "workbench_mathjax_js": MATHJAX_JS.read_text(encoding="utf-8"),
        "workbench_banner": banner,
        "workbench_banner_class": "failed" if failed else "",
    }
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    return body


_EXTERNAL = re.compile(
    r"""<(?:script|img|iframe|audio|video|source|embed)\b[^>]*\bsrc\s*=\s*["']?\s*(?:https?:)?//"""
    r"""|<link\b[^>]*\bhref\s*=\s*["']?\s*(?:https?:)?//"""
    r"""|@import\s+(?:url\()?\s*["']?(?:https?:)?//""",
    re.IGNORECASE,
)


def external_resources(page: str) -> list[str]:
    """Snippets of tags in ``page`` that would load a resource from the network (should be none)."""
    return [page[m.start(): m.start() + 160] for m in _EXTERNAL.finditer(page)]


def _first_error(nb: nbformat.NotebookNode) -> str:
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return f"{out.get('ename', 'Error')}: {out.get('evalue', '')}".strip()
    return ""


def recorded_results(nb: nbformat.NotebookNode) -> dict[str, dict[str, Any]]:
    """The results an executed notebook recorded with ``S.record``, in recording order (last value wins)."""
    found: dict[str, dict[str, Any]] = {}
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            payload = out.get("data", {}).get(RESULT_MIMETYPE) if out.get("output_type") in (
                "display_data", "execute_result") else None
            if isinstance(payload, dict) and "name" in payload:
                found.pop(payload["name"], None)
                found[payload["name"]] = {k: payload.get(k) for k in ("kind", "value", "headline")}
    return found


#: Name of the marker file in each temporary ``.NAME-*`` folder: who made it (host and process id), so that a
#: later run can tell a folder left by a killed run from one a concurrent run is still writing.
OWNER_FILE = ".owner"
_SCRATCH_NAME = re.compile(r"^\.(?P<name>.+)-[a-z0-9_]{8}$")


@contextlib.contextmanager
def _scratch_folder(name: str, parent: Path | None) -> Iterator[Path]:
    """A temporary ``.NAME-xxxxxxxx`` folder in ``parent`` (the system's temporary folder when None),
    removed on the way out, also when a signal or Ctrl-C ends the run."""
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=parent) as tmp:
        (Path(tmp) / OWNER_FILE).write_text(f"{socket.gethostname()} {os.getpid()}\n", encoding="utf-8")
        # absolute: the kernel runs in the notebook's folder, where a relative ``reports/.NAME-*`` is not found
        yield Path(tmp).resolve()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, it is just not ours
        return True
    return True


def remove_stale_scratch(output_dir: Path, older_than: float | None = None) -> list[Path]:
    """Delete temporary ``.NAME-*`` folders that a killed run left in ``output_dir``; return them.

    A folder is stale when the process named in its owner file is gone (same host), or, with no owner file,
    when it is older than ``older_than`` (a time stamp; default: now). A folder whose owner is alive, or that
    belongs to another host, belongs to a run still in progress and is kept.
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    cutoff = time.time() if older_than is None else older_than
    removed = []
    for folder in output_dir.iterdir():
        if not (folder.is_dir() and _SCRATCH_NAME.match(folder.name)):
            continue
        try:
            host, pid = (folder / OWNER_FILE).read_text(encoding="utf-8").split()
            stale = host == socket.gethostname() and not _process_alive(int(pid))
        except (OSError, ValueError):
            try:
                stale = folder.stat().st_mtime < cutoff
            except OSError:
                continue  # removed meanwhile
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def render_report(info: NotebookInfo, parameters: dict[str, Any], *, scratch_dir: Path | None = None,
                  source: str | None = None, kernel_name: str = "python3", progress_bar: bool = True,
                  threads: int | None = None) -> RenderedReport:
    """Execute one notebook with papermill and convert it to HTML, all in a temporary folder.

    ``source``: the notebook's JSON text, for a worker that has no copy of ``info.path`` (the kernel then
    runs in the temporary folder). ``threads``: the kernel's thread count (see :func:`kernel_environment`).
    Nothing outside the temporary folder is written; :func:`install_report` puts the files in place.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    started = _dt.datetime.now().astimezone()
    t0 = time.perf_counter()
    status, error = "ok", ""
    with _scratch_folder(info.name, scratch_dir) as tmp:
        tmp_ipynb = tmp / f"{info.name}.ipynb"
        input_path = info.path
        if source is not None:
            input_path = tmp / f"{info.name}.input.ipynb"
            input_path.write_text(source, encoding="utf-8")
        cwd = info.path.parent if info.path.parent.is_dir() else tmp
        kernel_stderr = tmp / "kernel.stderr.log"
        try:
            papermill.execute_notebook(
                str(input_path), str(tmp_ipynb), parameters=parameters, kernel_name=kernel_name,
                progress_bar=progress_bar, cwd=str(cwd), log_output=False,
                kernel_manager_class=_kernel_manager_class(kernel_environment(threads), kernel_stderr),
            )
        except PapermillExecutionError as exc:
            status, error = "failed", f"{exc.ename}: {exc.evalue}"
        except Exception as exc:  # noqa: BLE001 - a dead kernel etc. still gets a report and an index row
            status, error = "failed", f"{type(exc).__name__}: {exc}"
            if _tail(kernel_stderr):
                error += f" (kernel stderr: {_tail(kernel_stderr)})"
        wall = time.perf_counter() - t0

        if tmp_ipynb.exists():
            executed = nbformat.read(tmp_ipynb, as_version=4)
            error = error or (_first_error(executed) if status != "ok" else "")
        else:  # papermill died before writing anything: a one-cell notebook says why
            executed = _failure_notebook(info, error)
        return package_report(info, parameters, executed, status=status, error=error, started=started,
                              wall_s=wall)


def _failure_notebook(info: NotebookInfo, error: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
        f"# {info.title}\n\n**The notebook could not be executed.**\n\n```\n{error}\n```")])


def failed_rendering(info: NotebookInfo, parameters: dict[str, Any], error: str,
                     started: _dt.datetime | None = None, wall_s: float = 0.0) -> RenderedReport:
    """The report of a run that never produced a notebook (its worker died, the task was lost)."""
    started = started or _dt.datetime.now().astimezone()
    return package_report(info, parameters, _failure_notebook(info, error), status="failed", error=error,
                          started=started, wall_s=wall_s)


def package_report(info: NotebookInfo, parameters: dict[str, Any], executed: nbformat.NotebookNode, *,
                   status: str, error: str, started: _dt.datetime, wall_s: float) -> RenderedReport:
    """An executed notebook → its HTML page, results JSON and index row (nothing written to disk)."""
    results = recorded_results(executed)
    # The executed notebook carries its results too, so a copy of the .ipynb alone is enough.
    executed.metadata.setdefault("workbench", {})["results"] = results
    when = started.strftime("%Y-%m-%d %H:%M:%S %Z")
    params_text = ", ".join(f"{k}={v!r}" for k, v in parameters.items()) or "defaults"
    banner = (f"workbench report · {info.name} · {status.upper()} · {when} · {wall_s:.1f} s · "
              f"{params_text}")
    if status != "ok":
        banner += f" · {error}"
    page = notebook_to_html(executed, banner=html.escape(banner), failed=status != "ok")
    stem = info.name if status == "ok" else f"{info.name}.failed"
    files = {
        f"{stem}.ipynb": nbformat.writes(executed).encode("utf-8"),
        f"{stem}{RESULTS_SUFFIX}": json.dumps(results, indent=2).encode("utf-8"),
        f"{stem}.html": page.encode("utf-8"),  # last: the page is what the index links to
    }
    result = ReportResult(
        name=info.name, title=info.title, status=status, wall_s=round(wall_s, 2), parameters=parameters,
        started_at=started.isoformat(timespec="seconds"), html=f"{stem}.html", last_good_html=None,
        error=error, git_commit=git_commit(), versions=package_versions(), results=results,
    )
    return RenderedReport(result=result, files=files)


def install_report(rendered: RenderedReport, output_dir: Path) -> ReportResult:
    """Put a rendered report's files into ``output_dir``, each replaced atomically, and return its index row.

    A failed run's files are named ``NAME.failed.*`` and so never touch the last good report; a good run
    removes the failure files of an earlier run.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    result = rendered.result
    with _scratch_folder(result.name, output_dir) as tmp:
        for file_name, data in rendered.files.items():
            (tmp / file_name).write_bytes(data)
        # Every file is complete on disk: only now replace what was there (os.replace is atomic).
        for file_name in rendered.files:
            os.replace(tmp / file_name, output_dir / file_name)
    if result.status == "ok":
        for suffix in (".html", ".ipynb", RESULTS_SUFFIX):
            (output_dir / f"{result.name}.failed{suffix}").unlink(missing_ok=True)
    good = output_dir / f"{result.name}.html"
    result.last_good_html = good.name if good.exists() else None
    return result


def execute_notebook(info: NotebookInfo, parameters: dict[str, Any], output_dir: Path,
                     *, kernel_name: str = "python3", progress_bar: bool = True,
                     threads: int | None = None) -> ReportResult:
    """Run one notebook with papermill and write ``<name>.html`` + ``<name>.ipynb`` atomically.

    A failure writes ``<name>.failed.html``/``.ipynb`` instead and leaves the last good report alone.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    rendered = render_report(info, parameters, scratch_dir=output_dir, kernel_name=kernel_name,
                             progress_bar=progress_bar, threads=threads)
    return install_report(rendered, output_dir)


# --------------------------------------------------------------------------------------------------
# 4. The index page
# --------------------------------------------------------------------------------------------------
def _load_index(output_dir: Path) -> dict[str, dict[str, Any]]:
    path = output_dir / INDEX_JSON
    if not path.exists():
        return {}
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
        return {row["name"]: row for row in rows}
    except (ValueError, KeyError, TypeError):
        return {}  # a damaged index is rebuilt from this run's rows


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _escape(text: Any) -> str:
    return html.escape(str(text))


def _table_html(table: dict[str, Any]) -> str:
    head = "".join(f"<th>{_escape(c)}</th>" for c in table["columns"])
    rows = "".join(
        f"<tr><th>{_escape(i)}</th>" + "".join(
            f"<td>{_escape(format_result(v) if not isinstance(v, str) else v)}</td>" for v in row) + "</tr>"
        for i, row in zip(table["index"], table["data"]))
    return f'<table class="recorded"><tr><th></th>{head}</tr>{rows}</table>'


def results_html(results: dict[str, dict[str, Any]]) -> str:
    """The index's "headline" cell: the results marked headline, then every recorded result folded away."""
    if not results:
        return ""

    def one(name: str, res: dict[str, Any]) -> str:
        if res.get("kind") == "table":
            return f"<b>{_escape(name)}</b>{_table_html(res['value'])}"
        return f"{_escape(name)} = <b>{_escape(format_result(res.get('value')))}</b>"

    headline = [one(n, r) for n, r in results.items() if r.get("headline")]
    everything = "<br>".join(one(n, r) for n, r in results.items())
    return ("<br>".join(headline)
            + f'<details><summary>{len(results)} recorded</summary>{everything}</details>')


#: CSS shared by the index pages (reports and sweeps).
INDEX_CSS = """
 body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
 table { border-collapse: collapse; width: 100%; font-size: 14px; }
 th, td { border-bottom: 1px solid #ddd; padding: 6px 8px; text-align: left; vertical-align: top; }
 th { background: #f4f4f4; }
 tr.failed td.status { color: #b00020; font-weight: bold; }
 tr.ok td.status, tr.skipped td.status { color: #17702a; font-weight: bold; }
 .title { color: #555; } .versions { font-size: 11px; color: #666; max-width: 24em; }
 table.recorded { width: auto; font-size: 12px; margin: 2px 0 6px; }
 table.recorded th, table.recorded td { padding: 1px 6px; }
 details summary { color: #555; font-size: 12px; cursor: pointer; }
"""


def write_index(output_dir: Path, results: Sequence[ReportResult]) -> Path:
    """Merge this run's rows into ``index.json`` and rebuild ``index.html``."""
    rows = _load_index(output_dir)
    for r in results:
        rows[r.name] = asdict(r)
    ordered = [rows[k] for k in sorted(rows)]
    _atomic_write(output_dir / INDEX_JSON, json.dumps(ordered, indent=2, default=str))

    def cell(text: Any) -> str:
        return html.escape(str(text))

    body = []
    for row in ordered:
        ok = row["status"] == "ok"
        links = [f'<a href="{cell(row["html"])}">{"report" if ok else "failed run"}</a>']
        if not ok and row.get("last_good_html"):
            links.append(f'<a href="{cell(row["last_good_html"])}">last good report</a>')
        params = "<br>".join(f"{cell(k)} = {cell(repr(v))}" for k, v in row["parameters"].items())
        versions = ", ".join(f"{k} {v}" for k, v in row.get("versions", {}).items())
        body.append(
            f'<tr class="{"ok" if ok else "failed"}"><td><b>{cell(row["name"])}</b><br>'
            f'<span class="title">{cell(row["title"])}</span></td>'
            f'<td class="status">{cell(row["status"])}'
            f'{"<br><small>" + cell(row["error"]) + "</small>" if row.get("error") else ""}</td>'
            f'<td>{row["wall_s"]:.1f} s</td><td>{params or "defaults"}</td>'
            f'<td class="headline">{results_html(row.get("results") or {})}</td><td>{" · ".join(links)}</td>'
            f'<td>{cell(row["started_at"])}</td><td><code>{cell(row.get("git_commit", ""))}</code></td>'
            f'<td class="versions">{cell(versions)}</td></tr>'
        )
    n_failed = sum(row["status"] != "ok" for row in ordered)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>workbench reports</title>
<style>{INDEX_CSS}</style></head>
<body>
<h1>workbench reports</h1>
<p>{len(ordered)} notebook(s), {n_failed} failed. Each report is a standalone HTML file that works offline.
Regenerate with <code>workbench report --all</code> (or <code>make report</code>).</p>
<table id="reports">
<thead><tr><th>notebook</th><th>status</th><th>wall time</th><th>parameters</th><th>headline</th><th>report</th>
<th>time of run</th><th>git commit</th><th>package versions</th></tr></thead>
<tbody>
{chr(10).join(body)}
</tbody></table>
<p><small>Machine: {cell(platform.platform())}, {os.cpu_count()} CPU(s).</small></p>
</body></html>
"""
    _atomic_write(output_dir / INDEX_HTML, page)
    return output_dir / INDEX_HTML


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While the block runs, turn SIGTERM into ``KeyboardInterrupt("terminated")``.

    A run killed with SIGTERM then unwinds exactly like one stopped with Ctrl-C: the kernel is shut down,
    the temporary ``.NAME-*`` folders are removed, and the previous good report stays in place. A second
    SIGTERM during that clean-up is ignored so the clean-up can finish. (Only possible in the main thread.)
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt("terminated")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_reports(notebooks: Sequence[str] | None, parameters: Sequence[Sequence[str]] = (),
                profile: str | None = None, output_dir: Path = Path("reports"),
                *, progress_bar: bool = True, workers: int | None = None, scheduler: str | None = None,
                threads: int | None = None) -> list[ReportResult]:
    """Validate everything first, then execute each notebook and rebuild the index.

    By default the notebooks run one after another in this process. With ``workers`` (a LocalCluster of that
    many processes) or ``scheduler`` (an existing Dask cluster) they run concurrently through
    :mod:`workbench.cluster`, each kernel with ``threads`` threads (default: the cores shared out evenly).
    """
    paths = resolve_notebooks(notebooks)
    infos = [inspect_notebook(p) for p in paths]
    typed = validate_parameters(infos, parameters, profile, strict=notebooks is not None)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with sigterm_as_interrupt():
        remove_stale_scratch(output_dir, older_than=time.time())
        if workers or scheduler:
            results = _run_reports_on_cluster(infos, typed, output_dir, workers=workers, scheduler=scheduler,
                                              threads=threads, progress_bar=progress_bar)
        else:
            results = _run_reports_here(infos, typed, output_dir, threads=threads, progress_bar=progress_bar)
    index = write_index(output_dir, [])
    print(f"index: {index}")
    return results


def _run_reports_here(infos: Sequence[NotebookInfo], typed: dict[str, dict[str, Any]], output_dir: Path, *,
                      threads: int | None, progress_bar: bool) -> list[ReportResult]:
    """One notebook after another, in this process."""
    from tqdm.auto import tqdm

    results = []
    bar = tqdm(infos, desc="notebooks", unit="nb", disable=not progress_bar, position=0)
    for info in bar:
        bar.set_postfix_str(info.name)
        tqdm.write(f"▶ {info.name}: {info.title}  {typed[info.name] or ''}")
        result = execute_notebook(info, typed[info.name], output_dir, progress_bar=progress_bar,
                                  threads=threads)
        results.append(result)
        write_index(output_dir, [result])  # the index is current even if a later notebook hangs
        mark = "✓" if result.status == "ok" else "✗"
        tqdm.write(f"{mark} {info.name}: {result.status} in {result.wall_s:.1f} s → "
                   f"{output_dir / result.html}" + (f"  ({result.error})" if result.error else ""))
    return results


def _run_reports_on_cluster(infos: Sequence[NotebookInfo], typed: dict[str, dict[str, Any]], output_dir: Path,
                            *, workers: int | None, scheduler: str | None, threads: int | None,
                            progress_bar: bool) -> list[ReportResult]:
    """All notebooks at once on Dask workers (see :mod:`workbench.cluster`)."""
    from workbench.cluster import Job, dask_client, default_threads, run_jobs

    jobs = [Job(key=info.name, info=info, parameters=typed[info.name], output_dir=output_dir) for info in infos]
    n_workers = min(workers, len(jobs)) if workers else None
    if threads is None:
        # On an existing cluster this process cannot see the workers' cores: one thread never oversubscribes.
        threads = 1 if scheduler else default_threads(n_workers or 1)
    with dask_client(n_workers, scheduler) as client:
        return run_jobs(jobs, client, threads=threads, desc="notebooks", progress_bar=progress_bar,
                        on_result=lambda job, result: write_index(output_dir, [result]))
