"""Build step that puts the checkout's notebooks, course lessons and data manifests inside the wheel.

Everything else about the package is declared in ``pyproject.toml``; this file only adds that step. Those three
folders live at the top of the checkout (instructors and developers edit them there, next to the code), but a
non-editable install (``pip install workbench-*.whl``) has no checkout. So ``build_py`` copies them into
``workbench/_shipped/`` of the build, and :func:`workbench.paths.shipped_or_checkout` finds them there when the
checkout's folders are absent. Editable installs (``make``, ``pip install -e .``) skip the copy: they read the
checkout directly, so an edited notebook is picked up without reinstalling.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
#: folder at the top of the checkout -> the files of it that the wheel ships
SHIPPED = {"notebooks": "*.ipynb", "course": "*.py", "data_manifests": "*.yaml"}


class BuildPyWithShippedFolders(build_py):
    """``build_py`` plus a copy of :data:`SHIPPED` into ``<build_lib>/workbench/_shipped/``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "workbench" / "_shipped"
        for folder, pattern in SHIPPED.items():
            sources = sorted((ROOT / folder).glob(pattern))
            if not sources:  # e.g. an sdist made without MANIFEST.in: fail loudly rather than ship a broken wheel
                raise SystemExit(f"setup.py: no {folder}/{pattern} next to setup.py; the wheel would lack them.")
            destination = target / folder
            shutil.rmtree(destination, ignore_errors=True)  # no stale files from an earlier build
            destination.mkdir(parents=True)
            for source in sources:
                self.copy_file(str(source), str(destination / source.name))


setup(cmdclass={"build_py": BuildPyWithShippedFolders})
