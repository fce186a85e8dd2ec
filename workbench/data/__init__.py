"""Data layer: manifests, data root, embedded datasets, loaders, episodes and GZSL splits.

Everything a method or notebook needs is importable from here::

    from workbench.data import load_omniglot, omniglot_split, EpisodeSampler      # few-shot
    from workbench.data import load_digits_7seg, load_xlsa17, GZSLDataset          # GZSL
    from workbench.data import load_xlsa17_attributes, load_taskonomy_affinities   # class-level / task data

Names are imported on first use, so ``import workbench.data`` stays cheap (the CLI imports it to list data,
and torch is only loaded when an episode sampler is needed).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    # manifests and the data root
    "Manifest": "manifest", "ManifestFile": "manifest", "load_manifest": "manifest",
    "load_all_manifests": "manifest", "manifest_names": "manifest",
    "dataset_status": "store", "verify_dataset": "store", "import_dataset": "store", "fetch_dataset": "store",
    "sha256_file": "store",
    # Omniglot
    "load_omniglot": "omniglot", "Omniglot": "omniglot", "omniglot_split": "omniglot",
    "ht_class_split": "omniglot", "ClassificationTask": "omniglot", "OneShotRun": "omniglot",
    "lake_one_shot_runs": "omniglot", "resize_images": "omniglot", "bilinear_matrix": "omniglot",
    # GZSL
    "GZSLDataset": "gzsl", "load_digits_7seg": "digits", "load_digit_styles": "digits", "load_xlsa17": "xlsa17", "read_xlsa17": "xlsa17",
    "load_xlsa17_attributes": "xlsa17", "XLSA17Attributes": "xlsa17", "synthetic_gzsl": "xlsa17",
    "load_cub_vgg": "cub_vgg",
    # task relations
    "load_taskonomy_affinities": "taskonomy", "TaskonomyAffinities": "taskonomy",
    # sampling
    "EpisodeSampler": "episodes", "Episode": "episodes", "class_balanced_sampler": "sampling",
    "stratified_split": "sampling",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"workbench.data.{_EXPORTS[name]}"), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'workbench.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)


if TYPE_CHECKING:  # pragma: no cover - for editors and type checkers
    from workbench.data.cub_vgg import load_cub_vgg
    from workbench.data.digits import load_digit_styles, load_digits_7seg
    from workbench.data.episodes import Episode, EpisodeSampler
    from workbench.data.gzsl import GZSLDataset
    from workbench.data.manifest import Manifest, ManifestFile, load_all_manifests, load_manifest, manifest_names
    from workbench.data.omniglot import (ClassificationTask, Omniglot, OneShotRun, bilinear_matrix, ht_class_split,
                                         lake_one_shot_runs, load_omniglot, omniglot_split, resize_images)
    from workbench.data.sampling import class_balanced_sampler, stratified_split
    from workbench.data.store import dataset_status, fetch_dataset, import_dataset, sha256_file, verify_dataset
    from workbench.data.taskonomy import TaskonomyAffinities, load_taskonomy_affinities
    from workbench.data.xlsa17 import (XLSA17Attributes, load_xlsa17, load_xlsa17_attributes, read_xlsa17,
                                       synthetic_gzsl)
