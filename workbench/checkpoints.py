"""Small shipped model weights: saved with their metadata, loaded safely and verified.

A checkpoint is a ``.pt`` file holding ``{"state_dict": ..., "meta": {...}}`` (tensors and plain
types only, so ``torch.load(weights_only=True)`` reads it without unpickling code) plus a sidecar
``.json`` with its sha256, how it was made (the command), and its training metrics. Loading checks
the hash (a tampered or truncated file is refused) and every tensor's shape against the model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from workbench.errors import DataError


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(path: Path, state_dict: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write ``path`` (.pt) and ``path.with_suffix('.json')`` (sha256 + meta) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"state_dict": {k: v.detach().cpu().contiguous() for k, v in state_dict.items()},
                "meta": meta}, tmp)
    sidecar = {"file": path.name, "sha256": sha256_of(tmp), "bytes": tmp.stat().st_size, **meta}
    tmp.replace(path)
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2, default=str) + "\n")
    return path


def read_sidecar(path: Path) -> dict[str, Any]:
    side = Path(path).with_suffix(".json")
    if not side.exists():
        raise DataError(f"checkpoint {path} has no sidecar {side.name} with its sha256; re-create it with "
                        "the command recorded in the checkpoint's README, or pass verify=False.")
    return json.loads(side.read_text())


def load_checkpoint(path: Path, *, verify: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return ``(state_dict, meta)``; refuses a missing, tampered or non-tensor file with a clear error."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"checkpoint not found: {path}.")
    if verify:
        expected = read_sidecar(path).get("sha256")
        actual = sha256_of(path)
        if expected and actual != expected:
            raise DataError(
                f"checkpoint {path.name} does not match its recorded sha256 (expected {expected[:12]}…, "
                f"got {actual[:12]}…): the file was modified or truncated. Restore it (git checkout) or "
                "re-create it with the training command recorded in its .json sidecar."
            )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad or unsafe file
        raise DataError(f"cannot read checkpoint {path.name} as plain tensors ({exc}). "
                        "Only files saved by workbench (weights only) are accepted.") from exc
    if isinstance(payload, dict) and "state_dict" in payload:
        return payload["state_dict"], payload.get("meta", {})
    if isinstance(payload, dict) and all(isinstance(v, torch.Tensor) for v in payload.values()):
        return payload, {}  # a bare state dict, e.g. a torchvision-format ResNet
    raise DataError(f"checkpoint {path.name} is not a state dict.")


def load_into(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], *, source: str,
              strict: bool = True) -> torch.nn.Module:
    """``model.load_state_dict`` with a readable report of missing/unexpected keys and shape mismatches."""
    own = model.state_dict()
    wrong = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
             for k, v in state_dict.items() if k in own and own[k].shape != v.shape]
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if wrong or (strict and (missing or unexpected)):
        lines = wrong[:5] + [f"missing: {k}" for k in missing[:5]] + [f"unexpected: {k}" for k in unexpected[:5]]
        raise DataError(
            f"checkpoint {source} does not fit {type(model).__name__} "
            f"({len(wrong)} shape mismatches, {len(missing)} missing, {len(unexpected)} unexpected keys): "
            + "; ".join(lines) + ". Build the model with the settings recorded in the checkpoint's meta."
        )
    model.load_state_dict(state_dict, strict=strict)
    return model
