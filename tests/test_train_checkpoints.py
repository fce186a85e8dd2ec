"""Shared training helpers and verified checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from workbench.checkpoints import load_checkpoint, load_into, save_checkpoint
from workbench.errors import DataError, ParameterError, TrainingError
from workbench.seeding import seed_everything
from workbench.train import History, check_finite, resolve_device


def test_check_finite_raises_clear_error_on_nan():
    check_finite(torch.tensor(1.5), where="epoch 1")
    with pytest.raises(TrainingError, match="became nan at epoch 3.*learning rate"):
        check_finite(torch.tensor(float("nan")), where="epoch 3")


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ParameterError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_history_collects_terms():
    h = History()
    h.log(epoch=0, loss=torch.tensor(2.0), acc=0.1)
    h.log(epoch=1, loss=1.0, acc=0.5)
    assert h.column("loss") == [2.0, 1.0] and len(h) == 2
    assert list(h.to_frame().columns) == ["epoch", "loss", "acc"]


def test_seeding_repeats():
    seed_everything(3)
    a = torch.randn(4)
    seed_everything(3)
    assert torch.equal(a, torch.randn(4))
    with pytest.raises(ParameterError):
        seed_everything(-1)


def test_checkpoint_roundtrip_tamper_and_shape_mismatch(tmp_path):
    model = torch.nn.Linear(3, 2)
    path = save_checkpoint(tmp_path / "m.pt", model.state_dict(), {"command": "test", "acc": 0.9})
    state, meta = load_checkpoint(path)
    assert meta["acc"] == 0.9 and json.loads(path.with_suffix(".json").read_text())["sha256"]
    fresh = load_into(torch.nn.Linear(3, 2), state, source="m.pt")
    assert torch.equal(fresh.weight, model.weight)

    with pytest.raises(DataError, match="does not fit Linear.*shape mismatches"):
        load_into(torch.nn.Linear(4, 2), state, source="m.pt")

    raw = bytearray(path.read_bytes())
    raw[-20] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="does not match its recorded sha256"):
        load_checkpoint(path)


def test_checkpoint_refuses_pickled_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "meta": {"obj": object()}}, path)
    with pytest.raises(DataError, match="as plain tensors"):
        load_checkpoint(path, verify=False)
