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
    """The ``data_manifests/`` folder at the top of the checkout."""
    env = os.environ.get("WORKBENCH_MANIFESTS")
    return Path(env).expanduser() if env else REPO_ROOT / "data_manifests"


def notebooks_dir() -> Path:
    return REPO_ROOT / "notebooks"
