"""The small probe network shipped for Task2Vec: a narrow ResNet-18 trained on Omniglot's background alphabets.

No ImageNet weights can be downloaded here, so Task2Vec's probe is trained in-project: 964-way character
classification on the 30 *background* alphabets (drawers 0-14 train, drawers 15-19 held out), 28x28 images,
small random affine augmentation, AdamW with warm-up and cosine decay. The 20 *evaluation* alphabets are never seen,
which the Task2Vec notebook uses (and discusses: tasks the probe was trained on look different to it).

``workbench train task2vec-probe --profile full`` re-creates ``workbench/checkpoints/task2vec_probe.pt``
(+ ``.json`` sidecar with sha256 and metrics, + ``.log``). See :func:`train_probe`.
"""

from __future__ import annotations

import math
from dataclasses import replace
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from workbench.errors import DataError, ParameterError
from workbench.models.resnet import ResNet, ResNetConfig
from workbench.train import History, check_finite, progress, torch_threads

CHECKPOINT_NAME = "task2vec_probe"
#: The shipped probe: ResNet-18 layout, widths 16-32-64-128 (0.8 M parameters, 3.3 MB), 28x28 gray input.
PROBE_CONFIG = ResNetConfig(depth=18, widths=(16, 32, 64, 128), num_classes=964, in_channels=1, stem="small",
                            input_size=28, mean=(0.5,), std=(0.5,))
TRAIN_DRAWERS = 15  # drawers 0..14 train, 15..19 held out

#: Training sizes per profile: characters used (None = all 964), epochs.
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {"characters": 40, "epochs": 1},
    "default": {"characters": None, "epochs": 6},
    "full": {"characters": None, "epochs": 20},
}


def random_affine(x: torch.Tensor, gen: torch.Generator, *, degrees: float = 10.0, scale: float = 0.1,
                  shift: float = 0.08) -> torch.Tensor:
    """Per-image random rotation (+-degrees), scaling (1 +- scale) and shift (+- shift of the side).

    Images use background +1: padding with +1 (white paper) keeps the borders blank.
    """
    n = x.shape[0]
    u = torch.rand(n, 4, generator=gen) * 2 - 1
    angle = u[:, 0] * math.radians(degrees)
    s = 1 + u[:, 1] * scale
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    theta = torch.stack([torch.stack([cos, -sin, u[:, 2] * shift * 2], 1),
                         torch.stack([sin, cos, u[:, 3] * shift * 2], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # grid_sample pads with zeros: shift to "background = 0", sample, shift back.
    return F.grid_sample(x - 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 1


def weights_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """A hash of the tensors alone (names, dtypes, shapes, bytes; sorted by name): equal for two runs that learned
    the same weights, unlike the file's sha256, which also covers the recorded timings."""
    import hashlib

    digest = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()


def _accuracy(model: ResNet, x: torch.Tensor, y: torch.Tensor, batch: int = 1024) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            correct += int((model(model.prepare(x[i:i + batch])).argmax(1) == y[i:i + batch]).sum())
    return correct / max(len(x), 1)


def train_probe(profile: str = "full", seed: int = 0, output_dir: Path | None = None, *,
                threads: int | None = 1, log_every: int = 1) -> Path:
    """Train the Omniglot probe and write ``task2vec_probe.pt`` (+ ``.json`` sidecar and ``.log``) to ``output_dir``.

    ``profile``: ``smoke`` (40 characters, 1 epoch: seconds, for tests), ``default`` (6 epochs) or ``full``
    (20 epochs: the shipped checkpoint). ``threads``: torch threads while training (default 1: the result is then
    reproducible run to run, and on a busy 2-core machine two threads waste most of their time waiting for each
    other; None keeps the current setting).
    """
    with torch_threads(threads):
        return _train_probe(profile, seed, output_dir, log_every)


def _train_probe(profile: str, seed: int, output_dir: Path | None, log_every: int) -> Path:
    from workbench.checkpoints import save_checkpoint
    from workbench.data.omniglot import load_omniglot
    from workbench.paths import checkpoints_dir

    if profile not in PROFILES:
        raise ParameterError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}.")
    settings = PROFILES[profile]
    output_dir = Path(output_dir) if output_dir is not None else checkpoints_dir()
    start = time.perf_counter()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)

    omniglot = load_omniglot(28)
    background = np.flatnonzero(omniglot.characters["set"].to_numpy() == "background")
    if len(background) != PROBE_CONFIG.num_classes:
        raise DataError(f"expected {PROBE_CONFIG.num_classes} background characters, found {len(background)}.")
    if settings["characters"]:
        background = background[: settings["characters"]]
    by_class = omniglot.by_class()[background]  # (C, 20, 28, 28)
    n_classes = len(background)
    x_train = torch.from_numpy(by_class[:, :TRAIN_DRAWERS].reshape(-1, 1, 28, 28).copy())
    y_train = torch.arange(n_classes).repeat_interleave(TRAIN_DRAWERS)
    x_test = torch.from_numpy(by_class[:, TRAIN_DRAWERS:].reshape(-1, 1, 28, 28).copy())
    y_test = torch.arange(n_classes).repeat_interleave(20 - TRAIN_DRAWERS)

    config = replace(PROBE_CONFIG, num_classes=n_classes)
    model = ResNet(config)
    epochs, batch_size = settings["epochs"], 128
    steps_per_epoch = math.ceil(len(x_train) / batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=5e-4)
    total_steps = epochs * steps_per_epoch
    warmup = max(1, total_steps // 10)
    # Linear warm-up over the first tenth, then cosine decay to zero.
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step / total_steps, 1.0))))
    history = History()
    log_lines = [f"# workbench train task2vec-probe --profile {profile} --seed {seed}",
                 f"# {n_classes} classes, {len(x_train)} train / {len(x_test)} held-out images, {epochs} epochs, "
                 f"batch {batch_size}, AdamW 3e-3 warm-up + cosine, wd 5e-4, label smoothing 0.1, random affine",
                 f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"]
    for epoch in progress(range(epochs), desc="probe epochs", total=epochs, leave=True):
        model.train()
        t0 = time.perf_counter()
        perm = torch.randperm(len(x_train), generator=gen)
        total, seen = 0.0, 0
        for step in range(steps_per_epoch):
            idx = perm[step * batch_size:(step + 1) * batch_size]
            x = random_affine(x_train[idx], gen)
            loss = F.cross_entropy(model(model.prepare(x)), y_train[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        check_finite(total, where=f"probe epoch {epoch + 1}", hint="Lower the learning rate.")
        held_out = _accuracy(model, x_test, y_test)
        history.log(epoch=epoch + 1, loss=total / seen, heldout_accuracy=held_out,
                    seconds=time.perf_counter() - t0)
        line = (f"epoch {epoch + 1:3d}  loss {total / seen:.4f}  held-out acc {held_out:.4f}  "
                f"{time.perf_counter() - t0:.1f}s")
        log_lines.append(line)
        if log_every and (epoch + 1) % log_every == 0:
            print(line, flush=True)
    train_acc = _accuracy(model, x_train, y_train)
    held_out = history.last()["heldout_accuracy"]
    seconds = time.perf_counter() - start
    log_lines.append(f"final: train accuracy {train_acc:.4f} (no augmentation), held-out accuracy {held_out:.4f}, "
                     f"{seconds:.0f}s in total")
    print(log_lines[-1], flush=True)

    name = CHECKPOINT_NAME if profile == "full" else f"{CHECKPOINT_NAME}_{profile}"
    path = output_dir / f"{name}.pt"
    meta = {
        "model": "workbench.models.resnet.ResNet",
        "config": config.to_meta(),
        "command": f"workbench train task2vec-probe --profile {profile} --seed {seed}",
        "profile": profile, "seed": seed, "epochs": epochs,
        "data": "Omniglot background alphabets (load_omniglot(28)), drawers 0-14 train, 15-19 held out",
        "metrics": {"train_accuracy": round(train_acc, 4), "heldout_accuracy": round(held_out, 4),
                    "seconds": round(seconds, 1)},
        "history": history.records,
        "torch": str(torch.__version__),
        "weights_sha256": weights_sha256(model.state_dict()),
    }
    save_checkpoint(path, model.state_dict(), meta)
    path.with_suffix(".log").write_text("\n".join(log_lines) + "\n")
    return path


def load_probe(path: str | Path | None = None, *, verify: bool = True) -> ResNet:
    """The shipped Omniglot probe (or a checkpoint written by :func:`train_probe`), in eval mode.

    The file's sha256 is checked against its ``.json`` sidecar and every tensor's shape against the model, so a
    tampered or mismatched file is refused with a message saying how to re-create it.
    """
    from workbench.checkpoints import load_checkpoint, load_into
    from workbench.paths import checkpoints_dir

    path = Path(path) if path is not None else checkpoints_dir() / f"{CHECKPOINT_NAME}.pt"
    if not path.exists():
        raise DataError(f"no probe checkpoint at {path}; create it with `workbench train task2vec-probe "
                        "--profile full` (about 10 minutes on 2 CPU cores).")
    state, meta = load_checkpoint(path, verify=verify)
    config = ResNetConfig.from_meta(meta.get("config", PROBE_CONFIG.to_meta()))
    model = ResNet(config)
    load_into(model, state, source=path.name)
    model.name = path.stem  # recorded in every embedding's meta
    model.meta = meta
    return model.eval()
