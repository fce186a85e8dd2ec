"""Seeds for everything random: the same seed gives the same results on rerun."""

from __future__ import annotations

import os
import random

import numpy as np


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); return a fresh NumPy ``Generator``.

    Prefer passing explicit generators to functions; this guards the code paths that do not take one.
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        from workbench.errors import ParameterError

        raise ParameterError(f"seed must be a non-negative integer, got {seed!r}.")
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    try:
        import torch

        torch.manual_seed(int(seed))
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    return np.random.default_rng(int(seed))
