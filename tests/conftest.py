"""Shared test set-up.

- Derived caches (projections, resized images) go to a per-session temporary folder, so a test run
  never reads stale results and never writes into the user's cache.
- The real datasets staged beside the checkout (``../shared/datasets``) are found through
  ``WORKBENCH_SHARED_DATASETS`` (default: relative to the repository), never a hard-coded path.
- ``smoke_report(name)`` renders a notebook once per session in the smoke profile (papermill + HTML).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/browser.py and friends

_SESSION_TMP = Path(tempfile.mkdtemp(prefix="workbench-tests-"))
os.environ.setdefault("WORKBENCH_CACHE", str(_SESSION_TMP / "cache"))
os.environ.setdefault("WORKBENCH_SHARED_DATASETS", str(REPO.parent / "shared" / "datasets"))
# Keep BLAS/torch from oversubscribing the 2 cores when papermill kernels run beside pytest.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The real source data staged beside the checkout (skip if this checkout has none)."""
    path = Path(os.environ["WORKBENCH_SHARED_DATASETS"])
    if not path.is_dir():
        pytest.skip(f"no staged datasets at {path} (set WORKBENCH_SHARED_DATASETS)")
    return path


@pytest.fixture(scope="session")
def report_dir() -> Path:
    path = _SESSION_TMP / "reports"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def smoke_report(report_dir):
    """``smoke_report("00_tour")`` → ReportResult; each notebook is executed at most once per session."""
    from workbench.reports import execute_notebook, inspect_notebook, resolve_notebooks, write_index

    done = {}

    def render(name: str):
        if name not in done:
            info = inspect_notebook(resolve_notebooks([name])[0])
            done[name] = execute_notebook(info, {"profile": "smoke"}, report_dir, progress_bar=False)
            write_index(report_dir, [done[name]])
        return done[name]

    return render


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a test module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``): on these
    shared 2-core machines a second thread makes small matrices slower, and one thread is reproducible."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def cub_vgg_root(shared_datasets) -> Path:
    """A data root holding the real CUB-200-2011 VGG fc7 features, imported (verified) once per session from
    ``../shared/datasets/cub_vgg_fc7``. Where that folder is absent (a user's clone) the CUB tests skip."""
    from workbench.data import import_dataset

    source = shared_datasets / "cub_vgg_fc7"
    if not (source / "vgg").is_dir():
        pytest.skip(f"the CUB VGG fc7 features are not staged at {source}; to run these tests, import them: "
                    "`workbench data import cub-vgg-fc7 /path/to/cub_vgg_fc7` (or `workbench data fetch cub-vgg-fc7`) "
                    "and set WORKBENCH_SHARED_DATASETS")
    root = _SESSION_TMP / "cub-data-root"
    if not (root / "cub-vgg-fc7").is_dir():
        import_dataset("cub-vgg-fc7", source, data_root=root)
    return root


@pytest.fixture
def cub_vgg(cub_vgg_root, monkeypatch):
    """``load_cub_vgg`` with the session's CUB data root as ``$WORKBENCH_DATA`` (also seen by notebook kernels)."""
    monkeypatch.setenv("WORKBENCH_DATA", str(cub_vgg_root))
    from workbench.data import load_cub_vgg

    return load_cub_vgg
