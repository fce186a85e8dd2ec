"""ResNet probe networks for Task2Vec, with torchvision's layout and state-dict keys.

One readable file: a config dataclass, the residual block, the network. Two shapes of the same design:

* ``stem="imagenet"`` (ResNet-18/34 exactly as in torchvision and the Task2Vec paper: a 7x7/2 convolution and a
  3x3/2 max-pool, widths 64-128-256-512). Its ``state_dict()`` keys are torchvision's (``conv1.weight``,
  ``layer2.0.downsample.0.weight``, ``bn1.running_var``, ``fc.bias`` ...), so a torchvision-format checkpoint
  you keep locally loads with ``torch.load(weights_only=True)``: see :func:`load_torchvision_resnet`.
* ``stem="small"`` for 28x28 images (Omniglot): a 3x3/1 convolution before the same max-pool, so the four stages
  run at 14, 7, 4 and 2 pixels; usually with narrower widths. The shipped Task2Vec probe is of this kind.

Both expose ``layers``, the ordered list the official Task2Vec code walks
(``[conv1, bn1, relu, maxpool, layer1, layer2, layer3, layer4, avgpool, flatten, fc]``), so
``skip_layers=6`` starts at ``layer3`` exactly as there, and ``forward(x, start_from=k)`` runs ``layers[k:]``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench.errors import DataError, ParameterError

#: Blocks per stage for the BasicBlock ResNets of torchvision.
DEPTHS: dict[int, tuple[int, int, int, int]] = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ResNetConfig:
    """Everything needed to rebuild a probe (stored in checkpoints' meta)."""

    depth: int = 18  # 10, 18 or 34 (BasicBlock); 18/34 are the paper's probes
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    num_classes: int = 1000
    in_channels: int = 3
    stem: str = "imagenet"  # "imagenet": 7x7/2 conv + 3x3/2 max-pool; "small": 3x3/1 conv + 3x3/2 max-pool
    input_size: int = 224  # side of the square images the probe expects
    mean: tuple[float, ...] = IMAGENET_MEAN  # per-channel input normalisation (after scaling images to [0, 1])
    std: tuple[float, ...] = IMAGENET_STD
    extra: dict[str, Any] = field(default_factory=dict, compare=False)  # free-form notes (e.g. training data)

    def __post_init__(self) -> None:
        if self.depth not in DEPTHS:
            raise ParameterError(f"depth must be one of {sorted(DEPTHS)}, got {self.depth}.")
        if self.stem not in ("imagenet", "small"):
            raise ParameterError(f"stem must be 'imagenet' or 'small', got {self.stem!r}.")
        if len(self.widths) != 4 or min(self.widths) < 1:
            raise ParameterError(f"widths must be four positive channel counts, got {self.widths}.")
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise ParameterError("mean and std need one value per input channel.")

    def to_meta(self) -> dict[str, Any]:
        meta = asdict(self)
        meta["widths"], meta["mean"], meta["std"] = list(self.widths), list(self.mean), list(self.std)
        return meta

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> "ResNetConfig":
        keys = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in meta.items() if k in keys}
        for k in ("widths", "mean", "std"):
            if k in kwargs:
                kwargs[k] = tuple(kwargs[k])
        return cls(**kwargs)


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a shortcut (torchvision's ``BasicBlock``, same attribute names)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(c_in, c_out, stride)
        self.bn1 = nn.BatchNorm2d(c_out)
        # Not in-place: torch.func's per-sample gradients (vmap over grad) are simplest without it.
        self.relu = nn.ReLU()
        self.conv2 = conv3x3(c_out, c_out)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            # Key names downsample.0 / downsample.1 are torchvision's.
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class ResNet(nn.Module):
    """A BasicBlock ResNet whose ``layers`` list matches the official Task2Vec probe."""

    def __init__(self, config: ResNetConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        config = config or ResNetConfig()
        if overrides:
            config = ResNetConfig(**{**asdict(config), **overrides})
        self.config = config
        w = config.widths
        # Modules are registered in torchvision's order, so state_dict() keys come out in the same order.
        if config.stem == "imagenet":
            self.conv1 = nn.Conv2d(config.in_channels, w[0], kernel_size=7, stride=2, padding=3, bias=False)
        else:  # small images: a 3x3/1 convolution keeps thin strokes; the max-pool then halves 28 -> 14
            self.conv1 = nn.Conv2d(config.in_channels, w[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w[0])
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        blocks = DEPTHS[config.depth]
        c_in = w[0]
        for stage, (n_blocks, c_out) in enumerate(zip(blocks, w), start=1):
            stride = 1 if stage == 1 else 2
            stage_blocks = [BasicBlock(c_in, c_out, stride)] + [BasicBlock(c_out, c_out) for _ in range(n_blocks - 1)]
            setattr(self, f"layer{stage}", nn.Sequential(*stage_blocks))
            c_in = c_out
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(w[3], config.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's initialisation: He-normal convolutions, BN at identity.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def layers(self) -> list[nn.Module]:
        """The official ordered layer list; ``layers[skip_layers]`` is where Task2Vec starts its Fisher."""
        return [self.conv1, self.bn1, self.relu, self.maxpool, self.layer1, self.layer2, self.layer3,
                self.layer4, self.avgpool, self.flatten, self.fc]

    @property
    def classifier(self) -> nn.Linear:
        return self.fc

    def forward(self, x: torch.Tensor, start_from: int = 0) -> torch.Tensor:
        """Run ``layers[start_from:]``: ``start_from=0`` is the usual forward pass."""
        for layer in self.layers[start_from:]:
            x = layer(x)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The classifier's input (the pooled penultimate features)."""
        for layer in self.layers[:-1]:
            x = layer(x)
        return x

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Adapt images in [-1, 1] of shape (N, H, W) or (N, C, H, W) to what this probe expects.

        Gray images are repeated over the input channels, resized to ``config.input_size`` and normalised
        with ``config.mean``/``config.std`` (applied to images rescaled to [0, 1], torchvision's convention).
        """
        x = torch.as_tensor(images, dtype=torch.float32)
        if x.ndim == 3:
            x = x.unsqueeze(1)
        if x.ndim != 4:
            raise DataError(f"images must have shape (N, H, W) or (N, C, H, W), got {tuple(x.shape)}.")
        c = self.config.in_channels
        if x.shape[1] != c:
            if x.shape[1] != 1:
                raise DataError(f"images have {x.shape[1]} channels; this probe takes {c} (or gray images).")
            x = x.expand(-1, c, -1, -1)
        if x.shape[-1] != self.config.input_size or x.shape[-2] != self.config.input_size:
            x = nn.functional.interpolate(x, size=(self.config.input_size,) * 2, mode="bilinear",
                                          align_corners=False, antialias=True)
        mean = torch.tensor(self.config.mean).view(1, c, 1, 1)
        std = torch.tensor(self.config.std).view(1, c, 1, 1)
        return ((x + 1) / 2 - mean) / std


def resnet18(**overrides: Any) -> ResNet:
    """torchvision's ResNet-18 (ImageNet stem); pass e.g. ``num_classes=10``."""
    return ResNet(ResNetConfig(depth=18), **overrides)


def resnet34(**overrides: Any) -> ResNet:
    """torchvision's ResNet-34 (ImageNet stem)."""
    return ResNet(ResNetConfig(depth=34), **overrides)


def load_torchvision_resnet(path: str | Path, depth: int = 18, *, input_size: int = 112,
                            sha256: str | None = None) -> ResNet:
    """Load a torchvision-format ResNet-18/34 state dict you keep locally (nothing is downloaded).

    ``path`` is a ``.pth`` file such as torchvision's ``resnet18-f37072fd.pth``, read with
    ``torch.load(weights_only=True)`` (plain tensors only). ``sha256``, when given (e.g. from
    ``data_manifests/resnet-imagenet-weights.yaml``), is checked first. Older torchvision files lack the
    BatchNorm ``num_batches_tracked`` counters; those are filled with zeros. ``input_size``: images are resized
    to this side before the probe (224 as in ImageNet training; 112 is 4x cheaper and enough for 28x28 sources).
    """
    from workbench.checkpoints import load_into, sha256_of

    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"no ResNet weights at {path}. Copy a torchvision-format resnet{depth} state dict there "
                        "(see data_manifests/resnet-imagenet-weights.yaml for the expected files and hashes).")
    if sha256 is not None and sha256_of(path) != sha256:
        raise DataError(f"{path.name} does not match the expected sha256 {sha256[:12]}…: a different or corrupt "
                        "file. Check it against data_manifests/resnet-imagenet-weights.yaml.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means an unsafe or foreign file
        raise DataError(f"cannot read {path.name} as a plain tensor state dict ({exc}).") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"{path.name} is not a state dict of tensors.")
    fc = state.get("fc.weight")
    num_classes = int(fc.shape[0]) if isinstance(fc, torch.Tensor) else 1000
    model = ResNet(ResNetConfig(depth=depth, num_classes=num_classes, input_size=input_size))
    own = model.state_dict()
    state = dict(state)
    for key in own:
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros((), dtype=torch.long)
    load_into(model, state, source=path.name)
    return model.eval()


#: torchvision file names of ImageNet ResNets, newest first; the 8 hex digits are the start of the file's sha256.
TORCHVISION_FILES: dict[int, tuple[str, ...]] = {
    18: ("resnet18-f37072fd.pth", "resnet18-5c106cde.pth"),
    34: ("resnet34-b627a593.pth", "resnet34-333f7ec4.pth"),
}


def imagenet_probe(depth: int = 34, path: str | Path | None = None, *, input_size: int = 112) -> ResNet:
    """The paper's probe: an ImageNet ResNet-18/34 from a torchvision file you imported (nothing is downloaded).

    Without ``path``, looks in ``$WORKBENCH_DATA/resnet-imagenet/`` for the files listed in
    ``data_manifests/resnet-imagenet-weights.yaml`` (import one with ``workbench data import
    resnet-imagenet-weights /folder/with/the/file``). The sha256 must start with the 8 hex digits of the file name,
    as torchvision itself checks.
    """
    import re

    from workbench.checkpoints import sha256_of
    from workbench.paths import data_root

    if depth not in TORCHVISION_FILES:
        raise ParameterError(f"ImageNet probes exist for depth 18 or 34, not {depth}.")
    if path is None:
        folder = data_root() / "resnet-imagenet"
        found = [folder / name for name in TORCHVISION_FILES[depth] if (folder / name).exists()]
        if not found:
            raise DataError(f"no ImageNet ResNet-{depth} weights in {folder}. Get {TORCHVISION_FILES[depth][0]} from "
                            f"https://download.pytorch.org/models/{TORCHVISION_FILES[depth][0]} on a machine with "
                            "network access, then run `workbench data import resnet-imagenet-weights "
                            "/folder/with/the/file`.")
        path = found[0]
    path = Path(path)
    prefix = re.search(r"-([0-9a-f]{8})\.pth?$", path.name)
    if prefix and path.exists() and not sha256_of(path).startswith(prefix.group(1)):
        raise DataError(f"{path.name}: its sha256 does not start with {prefix.group(1)} as its name says: the file is "
                        "corrupt or not the torchvision original. Copy it again.")
    return load_torchvision_resnet(path, depth, input_size=input_size)


def check_torchvision_files(manifest: Any, staged: dict[str, Path]) -> None:
    """Content check for ``workbench data import resnet-imagenet-weights``: every staged ``resnetNN-xxxxxxxx.pth``
    must hash to the prefix in its name and load (weights only) into the ResNet of its depth."""
    import re

    for rel, path in staged.items():
        match = re.search(r"resnet(\d+)-[0-9a-f]{8}\.pth$", Path(rel).name)
        if not match or int(match.group(1)) not in TORCHVISION_FILES:
            raise DataError(f"{rel}: expected a torchvision file named resnet18-xxxxxxxx.pth or resnet34-xxxxxxxx.pth.")
        imagenet_probe(int(match.group(1)), path)
