"""Every notebook in notebooks/: committed clean, well-formed parameters, runs in the smoke profile.

Parametrised over the folder, so a new notebook is tested automatically.
"""

from __future__ import annotations

import re

import nbformat
import pytest

from workbench.reports import inspect_notebook, notebook_paths

NOTEBOOKS = notebook_paths()
IDS = [p.stem for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_is_committed_clean(path):
    nb = nbformat.read(path, as_version=4)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code_cells), "strip outputs"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


def cell_contents(nb: nbformat.NotebookNode) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(c.cell_type, c.source.strip("\n"), tuple(c.metadata.get("tags", []))) for c in nb.cells]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_and_its_percent_source_are_paired_and_in_sync(path):
    """Each notebook has one source an instructor can edit either way: the .ipynb in JupyterLab or the
    jupytext percent-format .py beside it (clean diffs). Edit one, then `make notebooks` syncs the other."""
    import jupytext

    source = path.with_suffix(".py")
    fix = f"run `make notebooks` (jupytext --sync {path.name}) and commit both files"
    assert source.exists(), f"{source.name} is missing: {fix}"
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.get("jupytext", {}).get("formats") == "ipynb,py:percent", f"{path.name} is not paired: {fix}"
    text = jupytext.read(source)
    assert cell_contents(text) == cell_contents(nb), f"{path.name} and {source.name} differ: {fix}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_parameters_are_declared_for_the_cli(path):
    info = inspect_notebook(path)
    source = next(c.source for c in nbformat.read(path, as_version=4).cells
                  if "parameters" in c.metadata.get("tags", []))
    assignments = [ln for ln in source.splitlines() if re.match(r"^\w+\s*(:[^=]+)?=", ln)]
    # papermill skips a line with a second '=' (e.g. in its comment): every assignment must be seen.
    assert len(info.parameters) == len(assignments)
    profile = info.parameter("profile")
    assert profile is not None and profile.choices == ("smoke", "default", "full")
    assert all(p.help for p in info.parameters), "every parameter needs a comment for `workbench list`"
    assert info.parameter("seed") is not None and info.parameter("seed").type == "int"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_runs_in_smoke_profile(path, smoke_report):
    result = smoke_report(path.stem)
    assert result.status == "ok", f"{path.stem} failed in the smoke profile: {result.error}"


def test_cada_vae_notebook_runs_on_digit_styles(tmp_path):
    """A non-default real dataset through the whole notebook: the composition data (digit, style) pairs."""
    from workbench.reports import execute_notebook, resolve_notebooks

    info = inspect_notebook(resolve_notebooks(["cada_vae"])[0])
    result = execute_notebook(info, {"profile": "smoke", "dataset": "digit-styles"}, tmp_path, progress_bar=False)
    assert result.status == "ok", f"cada_vae with dataset='digit-styles' failed in the smoke profile: {result.error}"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cada_vae", "tafe_net"])
def test_gzsl_notebooks_run_on_real_cub_features(name, cub_vgg, tmp_path):
    """CUB-200-2011 with real VGG fc7 features (the data root the ``cub_vgg`` fixture imported; skipped with the
    import command where ../shared/datasets/cub_vgg_fc7 is absent), smoke profile."""
    from workbench.reports import execute_notebook, resolve_notebooks

    info = inspect_notebook(resolve_notebooks([name])[0])
    result = execute_notebook(info, {"profile": "smoke", "dataset": "CUB-vgg"}, tmp_path, progress_bar=False)
    assert result.status == "ok", f"{name} with dataset='CUB-vgg' failed in the smoke profile: {result.error}"
    html = (tmp_path / f"{name}.html").read_text()
    assert "VGG fc7" in html  # the backbone caveat travels with the numbers
