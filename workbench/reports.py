"""Notebooks → offline HTML experiment reports.

``workbench report`` runs in four steps, each a function here:

1. :func:`describe_notebooks` reads every notebook's title, purpose and `parameters` cell
   (papermill's inspector gives name, default, type and the comment beside each parameter).
2. :func:`validate_parameters` turns ``-p NAME VALUE`` strings into typed values, *before* any kernel
   starts: an unknown name or a value that does not parse is a :class:`ParameterError`.
3. :func:`execute_notebook` runs one notebook with papermill into a temporary folder, converts it to a
   standalone HTML file with the offline template (plotly.js and MathJax inlined, no CDN), and only then
   moves the results into place. A failed run still yields an HTML report showing the failing cell, saved
   beside (not over) the last good report.
4. :func:`write_index` rebuilds ``index.html`` from ``index.json``: one row per notebook with status,
   wall time, parameters, links, time of run, git commit and package versions.
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
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import nbformat

from workbench.errors import ParameterError, WorkbenchError
from workbench.notebook import PROFILES, REPORT_ENV
from workbench.paths import PACKAGE_DIR, REPO_ROOT, notebooks_dir

TEMPLATE_DIR = PACKAGE_DIR / "report_template"
MATHJAX_JS = TEMPLATE_DIR / "mathjax-tex-svg-full.js"
INDEX_JSON = "index.json"
INDEX_HTML = "index.html"
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


@contextlib.contextmanager
def _report_environment() -> Iterator[None]:
    """Environment the kernel inherits: report mode (the notebook's setup() picks offline renderers)."""
    wanted = {REPORT_ENV: "1"}
    saved = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


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


def execute_notebook(info: NotebookInfo, parameters: dict[str, Any], output_dir: Path,
                     *, kernel_name: str = "python3", progress_bar: bool = True) -> ReportResult:
    """Run one notebook with papermill and write ``<name>.html`` + ``<name>.ipynb`` atomically.

    A failure writes ``<name>.failed.html``/``.ipynb`` instead and leaves the last good report alone.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    output_dir.mkdir(parents=True, exist_ok=True)
    started = _dt.datetime.now().astimezone()
    t0 = time.perf_counter()
    status, error = "ok", ""
    with tempfile.TemporaryDirectory(prefix=f".{info.name}-", dir=output_dir) as tmp:
        tmp_ipynb = Path(tmp) / f"{info.name}.ipynb"
        try:
            with _report_environment():
                papermill.execute_notebook(
                    str(info.path), str(tmp_ipynb), parameters=parameters, kernel_name=kernel_name,
                    progress_bar=progress_bar, cwd=str(info.path.parent), log_output=False,
                )
        except PapermillExecutionError as exc:
            status, error = "failed", f"{exc.ename}: {exc.evalue}"
        except Exception as exc:  # noqa: BLE001 - a dead kernel etc. still gets a report and an index row
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        wall = time.perf_counter() - t0

        if tmp_ipynb.exists():
            executed = nbformat.read(tmp_ipynb, as_version=4)
            error = error or (_first_error(executed) if status != "ok" else "")
        else:  # papermill died before writing anything: make a one-cell notebook that says why
            executed = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
                f"# {info.title}\n\n**The notebook could not be executed.**\n\n```\n{error}\n```")])
            nbformat.write(executed, tmp_ipynb)

        when = started.strftime("%Y-%m-%d %H:%M:%S %Z")
        params_text = ", ".join(f"{k}={v!r}" for k, v in parameters.items()) or "defaults"
        banner = (f"workbench report · {info.name} · {status.upper()} · {when} · {wall:.1f} s · "
                  f"{params_text}")
        if status != "ok":
            banner += f" · {error}"
        page = notebook_to_html(executed, banner=html.escape(banner), failed=status != "ok")
        stem = info.name if status == "ok" else f"{info.name}.failed"
        tmp_html = Path(tmp) / f"{stem}.html"
        tmp_html.write_text(page, encoding="utf-8")
        # Both files are complete: only now replace what was there (os.replace is atomic).
        os.replace(tmp_ipynb, output_dir / f"{stem}.ipynb")
        os.replace(tmp_html, output_dir / f"{stem}.html")
    if status == "ok":
        for stale in (output_dir / f"{info.name}.failed.html", output_dir / f"{info.name}.failed.ipynb"):
            stale.unlink(missing_ok=True)
    good = output_dir / f"{info.name}.html"
    return ReportResult(
        name=info.name, title=info.title, status=status, wall_s=round(wall, 2), parameters=parameters,
        started_at=started.isoformat(timespec="seconds"), html=f"{stem}.html",
        last_good_html=good.name if good.exists() else None, error=error,
        git_commit=git_commit(), versions=package_versions(),
    )


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
            f'<td>{row["wall_s"]:.1f} s</td><td>{params or "defaults"}</td><td>{" · ".join(links)}</td>'
            f'<td>{cell(row["started_at"])}</td><td><code>{cell(row.get("git_commit", ""))}</code></td>'
            f'<td class="versions">{cell(versions)}</td></tr>'
        )
    n_failed = sum(row["status"] != "ok" for row in ordered)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>workbench reports</title>
<style>
 body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
 table {{ border-collapse: collapse; width: 100%; font-size: 14px; }}
 th, td {{ border-bottom: 1px solid #ddd; padding: 6px 8px; text-align: left; vertical-align: top; }}
 th {{ background: #f4f4f4; }}
 tr.failed td.status {{ color: #b00020; font-weight: bold; }}
 tr.ok td.status {{ color: #17702a; font-weight: bold; }}
 .title {{ color: #555; }} .versions {{ font-size: 11px; color: #666; max-width: 24em; }}
</style></head>
<body>
<h1>workbench reports</h1>
<p>{len(ordered)} notebook(s), {n_failed} failed. Each report is a standalone HTML file that works offline.
Regenerate with <code>workbench report --all</code> (or <code>make report</code>).</p>
<table id="reports">
<thead><tr><th>notebook</th><th>status</th><th>wall time</th><th>parameters</th><th>report</th>
<th>time of run</th><th>git commit</th><th>package versions</th></tr></thead>
<tbody>
{chr(10).join(body)}
</tbody></table>
<p><small>Machine: {cell(platform.platform())}, {os.cpu_count()} CPU(s).</small></p>
</body></html>
"""
    _atomic_write(output_dir / INDEX_HTML, page)
    return output_dir / INDEX_HTML


def run_reports(notebooks: Sequence[str] | None, parameters: Sequence[Sequence[str]] = (),
                profile: str | None = None, output_dir: Path = Path("reports"),
                *, progress_bar: bool = True) -> list[ReportResult]:
    """Validate everything first, then execute each notebook and rebuild the index."""
    from tqdm.auto import tqdm

    paths = resolve_notebooks(notebooks)
    infos = [inspect_notebook(p) for p in paths]
    typed = validate_parameters(infos, parameters, profile, strict=notebooks is not None)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    results = []
    bar = tqdm(infos, desc="notebooks", unit="nb", disable=not progress_bar, position=0)
    for info in bar:
        bar.set_postfix_str(info.name)
        tqdm.write(f"▶ {info.name}: {info.title}  {typed[info.name] or ''}")
        result = execute_notebook(info, typed[info.name], output_dir, progress_bar=progress_bar)
        results.append(result)
        write_index(output_dir, [result])  # the index is current even if a later notebook hangs
        mark = "✓" if result.status == "ok" else "✗"
        tqdm.write(f"{mark} {info.name}: {result.status} in {result.wall_s:.1f} s → "
                   f"{output_dir / result.html}" + (f"  ({result.error})" if result.error else ""))
    index = write_index(output_dir, [])
    print(f"index: {index}")
    return results

