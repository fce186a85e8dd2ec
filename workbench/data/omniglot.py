"""Omniglot, complete and offline: 1623 handwritten characters from 50 alphabets, 20 drawers each.

The 105x105 binary originals ship inside the package (``workbench/embedded/omniglot``, 2.8 MB). On first use
:func:`load_omniglot` resizes them (bilinear, by default to 28x28 as in the HyperTransformer recipe), scales
them to [-1, 1] and caches the result in ``$WORKBENCH_CACHE``; later loads read the cache. The default
bilinear resize uses half-pixel centres (PyTorch/TF2 numbers); ``resize="tf1"`` reproduces the legacy TF1
sampling grid of the released HyperTransformer code (a sub-pixel shift), ``resize="antialias"`` is smoother.

Pixel convention (the HyperTransformer one): values are *brightness* scaled to [-1, 1], so the white paper
background is +1 and the ink is -1 (grey in between after resizing). Pass ``invert=True`` for ink = +1,
background = -1 (the MNIST-like convention some few-shot code uses).

Image ``n`` is drawer ``n % 20`` of character ``n // 20``; ``images.reshape(1623, 20, size, size)`` gives a
per-class view. Characters are numbered 0..1622 in the order of the original file prefixes: the 964
background characters (30 alphabets) first, then the 659 evaluation characters (20 alphabets).

Splits (:func:`omniglot_split`):

- ``"ht"`` — HyperTransformer: the class order is shuffled with seed 2022, classes 0-1149 of the shuffled
  order train, 1150-1199 validate, 1200-1622 test. The official code does ``random.seed(2022);
  random.shuffle(keys)`` with Python's ``random`` on the class list and maps new label i to old class
  ``keys[i]``; we do exactly that on our class order. Their numpy cache's own class order could not be
  checked here, so the *sizes and procedure* match the paper's; the exact class sets match only if their
  cache is ordered like ours (background then evaluation, by file prefix).
- ``"background"`` / ``"evaluation"`` (also ``"lake"``) — the original 30 / 20 alphabet split.
- ``"vinyals"`` — Vinyals et al. (2016): 1028 / 172 / 423 characters (each used with 4 rotations there).
"""

from __future__ import annotations

import csv
import difflib
import io
import lzma
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from workbench import paths
from workbench.data.manifest import load_manifest
from workbench.data.store import embedded_file
from workbench.errors import DataError, ParameterError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

MANIFEST = "omniglot"
N_CHARACTERS, N_DRAWERS, SIDE = 1623, 20, 105
HT_SEED, HT_TRAIN, HT_VAL = 2022, 1150, 50
SPLIT_NAMES = ("ht", "background", "evaluation", "lake", "vinyals")


# ----------------------------------------------------------------------------------------------------
# Bilinear resizing as a matrix product
# ----------------------------------------------------------------------------------------------------


RESIZE_METHODS = ("bilinear", "antialias", "tf1")


def bilinear_matrix(n_in: int, n_out: int, method: str = "bilinear") -> np.ndarray:
    """The ``(n_out, n_in)`` matrix of 1-d bilinear resampling; a 2-d image resizes as ``W_r @ image @ W_c.T``.

    Output pixel ``i`` is a weighted mean of input pixels with triangle ("tent") weights around its source
    coordinate. ``method``:

    - ``"bilinear"``: half-pixel centres, source ``(i + 0.5) * n_in / n_out - 0.5``, tent one input pixel wide
      on each side (plain interpolation between the two nearest pixels) — the numbers of
      ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)`` and TF2 ``tf.image.resize``;
    - ``"antialias"``: the same centres with the tent stretched by the scale factor when shrinking, so every
      input pixel contributes (PIL's bilinear filter, ``interpolate(..., antialias=True)``);
    - ``"tf1"``: TF1's legacy ``tf.image.resize_images`` (``half_pixel_centers=False``), source
      ``i * n_in / n_out``, as in the released HyperTransformer code (shifts the image by ~1.4 px at 105 -> 28).
    """
    if method not in RESIZE_METHODS:
        raise ParameterError(f"resize method must be one of {', '.join(RESIZE_METHODS)}, got {method!r}.")
    scale = n_in / n_out
    if method == "tf1":
        centres = np.arange(n_out) * scale
    else:
        centres = (np.arange(n_out) + 0.5) * scale - 0.5
    half_width = max(scale, 1.0) if method == "antialias" else 1.0
    distance = np.abs(np.arange(n_in)[None, :] - np.clip(centres, 0, n_in - 1)[:, None]) / half_width
    weights = np.clip(1.0 - distance, 0.0, None)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def resize_images(images: np.ndarray, size: int, method: str = "bilinear") -> np.ndarray:
    """Resize a stack ``(B, H, W)`` of images to ``(B, size, size)`` with :func:`bilinear_matrix`."""
    b, h, w = images.shape
    rows, cols = bilinear_matrix(h, size, method), bilinear_matrix(w, size, method)
    along_width = (images.reshape(b * h, w).astype(np.float32, copy=False) @ cols.T).reshape(b, h, size)
    return np.matmul(rows, along_width)  # (size, h) @ (b, h, size) -> (b, size, size)


# ----------------------------------------------------------------------------------------------------
# The embedded files
# ----------------------------------------------------------------------------------------------------


def _packed_images(path: Path) -> np.ndarray:
    """The packed bits, uint8 (1623, 20, 105, 14): ``np.unpackbits(..., axis=-1, count=105)`` → True = white."""
    try:
        packed = np.load(io.BytesIO(lzma.decompress(path.read_bytes())), allow_pickle=False)
    except (lzma.LZMAError, ValueError, OSError) as exc:
        raise DataError(f"{path} cannot be read ({exc}); reinstall workbench or rebuild the embedded data with "
                        "`python -m workbench.data.build_embedded`.") from None
    expected = (N_CHARACTERS, N_DRAWERS, SIDE, (SIDE + 7) // 8)
    if packed.shape != expected or packed.dtype != np.uint8:
        raise DataError(f"{path} holds {packed.dtype} {packed.shape}, expected uint8 {expected}.")
    return packed


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _characters_rows() -> list[dict[str, str]]:
    manifest = load_manifest(MANIFEST)
    rows = _read_csv(embedded_file(manifest, "omniglot/characters.csv"))
    if len(rows) != manifest.count("characters"):
        raise DataError(f"omniglot/characters.csv has {len(rows)} rows, the manifest expects "
                        f"{manifest.count('characters')}; reinstall workbench.")
    return rows


def _resized_cache_path(content_sha: str, size: int, method: str) -> Path:
    return paths.cache_dir() / "omniglot" / f"images-{content_sha[:16]}-{size}px-{method}.npy"


def _load_cached(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        images = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError):
        return None  # a damaged cache is simply rebuilt
    return images if images.shape == shape and images.dtype == np.float32 else None


def _save_atomically(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _scaled_images(size: int, method: str) -> np.ndarray:
    """All 32460 images as float32 (N, size, size) in [-1, 1], background +1 (cached for size != 105)."""
    manifest = load_manifest(MANIFEST)
    path = embedded_file(manifest, "omniglot/images.npy.xz")
    n = N_CHARACTERS * N_DRAWERS
    cache = _resized_cache_path(manifest.file("omniglot/images.npy.xz").sha256 or "unknown", size, method)
    if size != SIDE:
        cached = _load_cached(cache, (n, size, size))
        if cached is not None:
            return cached
    packed = _packed_images(path).reshape(n, SIDE, -1)
    out = np.empty((n, size, size), dtype=np.float32)
    chunk = 1024
    for start in range(0, n, chunk):
        white = np.unpackbits(packed[start:start + chunk], axis=-1, count=SIDE).astype(np.float32)
        resized = white if size == SIDE else resize_images(white, size, method)
        out[start:start + chunk] = 2.0 * resized - 1.0
    if size != SIDE:
        _save_atomically(cache, out)
    return out


# ----------------------------------------------------------------------------------------------------
# Splits
# ----------------------------------------------------------------------------------------------------


def ht_class_split(n_classes: int = N_CHARACTERS, seed: int = HT_SEED, n_train: int = HT_TRAIN,
                   n_val: int = HT_VAL) -> dict[str, np.ndarray]:
    """The HyperTransformer split: shuffle the class list with Python's ``random`` (seed 2022), then cut.

    Returned in the shuffled order (the official code's new label ``i`` is ``classes[i]``).
    """
    order = list(range(n_classes))
    random.Random(seed).shuffle(order)  # same sequence as random.seed(seed); random.shuffle(order)
    order = np.asarray(order, dtype=np.int64)
    return {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}


def omniglot_split(name: str = "ht") -> dict[str, np.ndarray]:
    """Character (class) indices of a standard split, as ``{part: array}``.

    - ``"ht"``: ``train`` 1150 / ``val`` 50 / ``test`` 423 (HyperTransformer, seed 2022; see module docstring);
    - ``"background"``, ``"evaluation"`` or ``"lake"``: ``background`` 964 / ``evaluation`` 659 (by alphabet);
    - ``"vinyals"``: ``train`` 1028 / ``val`` 172 / ``test`` 423 / ``trainval`` 1200 characters.
    """
    manifest = load_manifest(MANIFEST)
    if name == "ht":
        split = ht_class_split()
        sizes = {k: manifest.count(f"ht_{k}") for k in split}
    elif name in ("background", "evaluation", "lake"):
        sets = np.array([r["set"] for r in _characters_rows()])
        split = {s: np.flatnonzero(sets == s) for s in ("background", "evaluation")}
        sizes = {s: manifest.count(f"{s}_characters") for s in split}
    elif name == "vinyals":
        parts = np.array([r["vinyals_split"] for r in _characters_rows()])
        split = {s: np.flatnonzero(parts == s) for s in ("train", "val", "test")}
        sizes = {s: manifest.count(f"vinyals_{s}") for s in split}
        split["trainval"] = np.sort(np.concatenate([split["train"], split["val"]]))
    else:
        raise ParameterError(f"unknown Omniglot split {name!r}; choose one of {', '.join(SPLIT_NAMES)}.")
    for part, expected in sizes.items():
        if len(split[part]) != expected:
            raise DataError(f"Omniglot split {name!r}: part {part!r} has {len(split[part])} classes, "
                            f"the manifest expects {expected}.")
    return split


# ----------------------------------------------------------------------------------------------------
# The dataset object
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassificationTask:
    """One classification problem cut from a dataset (e.g. "the characters of one alphabet")."""

    name: str
    images: np.ndarray  # (n, H, W) float32
    labels: np.ndarray  # (n,) int64 in 0..k-1
    classes: np.ndarray  # (k,) original class ids; labels[i] = j means class classes[j]
    class_names: list[str]

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return f"<ClassificationTask {self.name!r}: {len(self.labels)} images, {self.n_classes} classes>"


@dataclass(frozen=True)
class OneShotRun:
    """One of Lake's 20 runs of 20-way one-shot classification (evaluation alphabets).

    ``train_idx``: the 20 one-shot examples (one per class); ``test_idx``: 20 test images;
    ``answers[i]``: position in ``train_idx`` of the class of test image ``i``. Indices are image indices.
    """

    run: int
    train_idx: np.ndarray
    test_idx: np.ndarray
    answers: np.ndarray


@dataclass(repr=False)
class Omniglot:
    """All Omniglot images with per-image character, drawer and alphabet, and the character table.

    ``characters`` is a pandas DataFrame indexed by character index with columns ``char_id`` (the original
    file prefix, 1..1623), ``set`` (background/evaluation), ``alphabet``, ``character`` (characterNN),
    ``vinyals_split`` and ``ht_split``.
    """

    images: np.ndarray  # (32460, size, size) float32 in [-1, 1]
    char_index: np.ndarray  # (N,) int64, 0..1622
    drawer: np.ndarray  # (N,) int64, 0..19
    alphabet: np.ndarray  # (N,) str
    characters: "pd.DataFrame"
    alphabets: list[str]
    size: int
    invert: bool
    resize: str

    @property
    def labels(self) -> np.ndarray:
        """The class label of each image (= ``char_index``)."""
        return self.char_index

    @property
    def n_classes(self) -> int:
        return N_CHARACTERS

    @property
    def class_names(self) -> list[str]:
        """``"Alphabet/characterNN"`` for every character."""
        return [f"{a}/{c}" for a, c in zip(self.characters["alphabet"], self.characters["character"])]

    def by_class(self) -> np.ndarray:
        """A view ``(1623, 20, size, size)``: ``by_class()[c, k]`` is drawer k of character c."""
        return self.images.reshape(N_CHARACTERS, N_DRAWERS, self.size, self.size)

    def split(self, name: str = "ht") -> dict[str, np.ndarray]:
        """Class indices of a standard split (see :func:`omniglot_split`)."""
        return omniglot_split(name)

    def task(self, classes: np.ndarray | list[int], name: str = "") -> ClassificationTask:
        """The classification task over ``classes`` (all 20 drawers of each), labels 0..k-1 in that order."""
        classes = np.asarray(classes, dtype=np.int64)
        if classes.size == 0 or classes.min() < 0 or classes.max() >= N_CHARACTERS:
            raise ParameterError(f"classes must be character indices in 0..{N_CHARACTERS - 1}.")
        idx = (classes[:, None] * N_DRAWERS + np.arange(N_DRAWERS)[None, :]).ravel()
        labels = np.repeat(np.arange(len(classes)), N_DRAWERS)
        names = [self.class_names[c] for c in classes]
        return ClassificationTask(name or f"{len(classes)} Omniglot characters", self.images[idx], labels, classes, names)

    def alphabet_task(self, alphabet: str) -> ClassificationTask:
        """The classification task "which character of this alphabet is it?" (e.g. ``"Latin"``)."""
        if alphabet not in self.alphabets:
            close = difflib.get_close_matches(alphabet, self.alphabets, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ParameterError(f"no Omniglot alphabet {alphabet!r}.{hint} Alphabets: {', '.join(self.alphabets)}.")
        classes = np.flatnonzero(self.characters["alphabet"].to_numpy() == alphabet)
        return self.task(classes, name=f"Omniglot {alphabet}")

    def one_shot_runs(self) -> list[OneShotRun]:
        """Lake's 20 one-shot classification runs (20-way, evaluation alphabets)."""
        return lake_one_shot_runs()

    def __repr__(self) -> str:
        ink = "ink +1 / background -1" if self.invert else "background +1 / ink -1"
        return (f"<Omniglot: {len(self.images)} images {self.size}x{self.size} ({self.resize}; {ink}), "
                f"{N_CHARACTERS} characters, {len(self.alphabets)} alphabets>")


def lake_one_shot_runs() -> list[OneShotRun]:
    """Lake's 20 one-shot runs, read from the embedded ``lake_runs.csv``."""
    manifest = load_manifest(MANIFEST)
    rows = _read_csv(embedded_file(manifest, "omniglot/lake_runs.csv"))
    runs = []
    for run in sorted({int(r["run"]) for r in rows}):
        mine = [r for r in rows if int(r["run"]) == run]
        train = sorted((int(r["item"]), int(r["image_index"])) for r in mine if r["role"] == "train")
        test = sorted((int(r["item"]), int(r["image_index"]), int(r["answer_item"])) for r in mine if r["role"] == "test")
        runs.append(OneShotRun(run=run, train_idx=np.array([t[1] for t in train]), test_idx=np.array([t[1] for t in test]),
                               answers=np.array([t[2] - 1 for t in test])))
    if len(runs) != manifest.count("lake_runs"):
        raise DataError(f"lake_runs.csv holds {len(runs)} runs, the manifest expects {manifest.count('lake_runs')}.")
    return runs


def load_omniglot(size: int = 28, *, invert: bool = False, resize: str = "bilinear") -> Omniglot:
    """All 32,460 Omniglot images resized to ``size`` x ``size`` and scaled to [-1, 1].

    Background (white paper) is +1 and ink is -1 (``invert=True`` swaps them). ``resize`` is ``"bilinear"``
    (default: the HyperTransformer preprocessing, 28x28 bilinear, computed like PyTorch/TF2), ``"antialias"``
    (averages the whole footprint of each output pixel: smoother strokes) or ``"tf1"`` (TF1's legacy sampling
    grid, exactly as the released HyperTransformer code); see :func:`bilinear_matrix`. ``size=105`` returns
    the originals (exactly +1/-1). The first call for a size/method resizes everything (a few seconds) and
    caches it in ``$WORKBENCH_CACHE``; later calls load the cache (well under a second).
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 4 <= size <= 512:
        raise ParameterError(f"size must be an integer between 4 and 512 pixels, got {size!r}.")
    if resize not in RESIZE_METHODS:
        raise ParameterError(f"resize must be one of {', '.join(RESIZE_METHODS)}, got {resize!r}.")
    import pandas as pd

    manifest = load_manifest(MANIFEST)
    images = _scaled_images(int(size), resize)
    if invert:
        images = -images
    rows = _characters_rows()
    characters = pd.DataFrame(rows).astype({"char_index": int, "char_id": int}).set_index("char_index")
    ht = ht_class_split()
    ht_part = np.empty(N_CHARACTERS, dtype=object)
    for part, classes in ht.items():
        ht_part[classes] = part
    characters["ht_split"] = ht_part
    alphabets = list(dict.fromkeys(characters["alphabet"]))
    counts = {
        "images": len(images),
        "alphabets": len(alphabets),
        "background_alphabets": characters.loc[characters["set"] == "background", "alphabet"].nunique(),
        "evaluation_alphabets": characters.loc[characters["set"] == "evaluation", "alphabet"].nunique(),
    }
    for key, found in counts.items():
        if found != manifest.count(key):
            raise DataError(f"Omniglot: found {found} {key.replace('_', ' ')}, the manifest expects "
                            f"{manifest.count(key)}; reinstall workbench.")
    char_index = np.repeat(np.arange(N_CHARACTERS, dtype=np.int64), N_DRAWERS)
    return Omniglot(
        images=images,
        char_index=char_index,
        drawer=np.tile(np.arange(N_DRAWERS, dtype=np.int64), N_CHARACTERS),
        alphabet=characters["alphabet"].to_numpy().astype(str)[char_index],
        characters=characters,
        alphabets=alphabets,
        size=int(size),
        invert=invert,
        resize=resize,
    )
