"""Tiny helpers to author notebooks as Python (clean diffs, no outputs, one `parameters` cell).

Usage in a builder script::

    from nbbuild import md, code, params, write
    write("notebooks/00_tour.ipynb", [md("# Title\\n\\nPurpose."), params("profile = 'default'  # ..."), ...])
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat


def md(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(text.strip("\n"))


def code(text: str, *, tags: tuple[str, ...] = ()) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(text.strip("\n"))
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def params(text: str) -> nbformat.NotebookNode:
    return code(text, tags=("parameters",))


def write(path: str | Path, cells: list[nbformat.NotebookNode]) -> None:
    for i, cell in enumerate(cells):
        cell.id = f"cell-{i:02d}"  # stable ids: rebuilding an unchanged notebook changes no byte
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    n_params = sum("parameters" in c.metadata.get("tags", []) for c in cells)
    if n_params != 1:
        sys.exit(f"{path}: expected exactly one parameters cell, found {n_params}")
    nbformat.validate(nb)
    nbformat.write(nb, str(path))
    print(f"wrote {path}")
