"""Reproducible training commands for the small checkpoints shipped in ``workbench/checkpoints``.

``workbench train NAME --profile full`` calls the function registered here as ``"module:function"``
(imported lazily, so the CLI starts fast). Each function has the signature
``train(profile: str, seed: int, output_dir: Path) -> Path`` and writes a checkpoint with
:func:`workbench.checkpoints.save_checkpoint` plus its training log next to it.
"""

from __future__ import annotations

import importlib
from typing import Callable

#: name → (import path, one-line description)
TRAINERS: dict[str, tuple[str, str]] = {
    "task2vec-probe": ("workbench.methods.task2vec:train_probe", "Task2Vec probe: narrow ResNet-18 on Omniglot background alphabets (~10 min)"),
    "hypertransformer": ("workbench.methods.hypertransformer:train_checkpoint", "HyperTransformer: 8-channel CNN generator, 20-way Omniglot (~22 min)"),
    "hypertransformer-protonet": ("workbench.methods.hypertransformer:train_protonet_checkpoint", "ProtoNet baseline for the HyperTransformer notebook (~5 min)"),
}


def get_trainer(name: str) -> Callable:
    from workbench.errors import ParameterError

    if name not in TRAINERS:
        raise ParameterError(f"unknown trainer {name!r}; available: {', '.join(sorted(TRAINERS)) or '(none)'}.")
    module, func = TRAINERS[name][0].split(":")
    return getattr(importlib.import_module(module), func)
