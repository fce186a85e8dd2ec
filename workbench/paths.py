"""Where things live: the repository, the data root, caches and reports.

Nothing here is inferred from the current working directory, so notebooks, the CLI and tests
find the same files wherever they are started from.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
#: The source checkout (the package is installed in editable mode by `make`).
REPO_ROOT = PACKAGE_DIR.parent
#: Copies of the checkout's ``notebooks/``, ``course/`` and ``data_manifests/`` that a built wheel carries inside
#: the package (written by ``setup.py``'s build step, absent in a checkout), so that ``pip install workbench-*.whl``
#: works from any directory.
SHIPPED_DIR = PACKAGE_DIR / "_shipped"


def shipped_or_checkout(name: str) -> Path:
    """The checkout's top-level folder ``name`` when it exists (a checkout or an editable install: edits show up
    at once), else the copy shipped inside an installed wheel; the checkout path when neither exists, so that
    error messages name the folder a developer would expect."""
    for candidate in (REPO_ROOT / name, SHIPPED_DIR / name):
        if candidate.is_dir():
            return candidate
    return REPO_ROOT / name


def _user_cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def data_root() -> Path:
    """The folder that holds full datasets: ``$WORKBENCH_DATA`` or ``~/.cache/workbench/data``."""
    env = os.environ.get("WORKBENCH_DATA")
    return Path(env).expanduser() if env else _user_cache_home() / "workbench" / "data"


def cache_dir() -> Path:
    """Derived, re-computable artefacts (projections, resized images): ``$WORKBENCH_CACHE``."""
    env = os.environ.get("WORKBENCH_CACHE")
    path = Path(env).expanduser() if env else _user_cache_home() / "workbench" / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def embedded_dir() -> Path:
    """Small real datasets shipped inside the package (work offline on a fresh install)."""
    return PACKAGE_DIR / "embedded"


def checkpoints_dir() -> Path:
    """Small shipped model weights and their training logs."""
    return PACKAGE_DIR / "checkpoints"


def manifests_dir() -> Path:
    """``$WORKBENCH_MANIFESTS``, else the ``data_manifests/`` folder of the checkout (or of the installed wheel)."""
    env = os.environ.get("WORKBENCH_MANIFESTS")
    return Path(env).expanduser() if env else shipped_or_checkout("data_manifests")


def notebooks_dir() -> Path:
    """The ``notebooks/`` folder of the checkout (or of the installed wheel)."""
    return shipped_or_checkout("notebooks")


def lessons_dir() -> Path:
    """The course lesson sources, ``course/`` in the checkout (or in the installed wheel)."""
    return shipped_or_checkout("course")
