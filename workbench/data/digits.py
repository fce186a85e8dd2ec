"""digits-7seg: a small, real generalised zero-shot problem for teaching.

Images: scikit-learn's bundled handwritten digits (1797 images of 8x8 pixels, each pixel an integer 0..16
counting "on" pixels in a 4x4 block of the original 32x32 bitmap). Features are the 64 pixel values.

Side information: how each digit looks on a seven-segment display. The glyph is drawn on a 5x3 grid::

     aaa          segment a = top,          b = upper right,  c = lower right,
    f   b                 d = bottom,       e = lower left,   f = upper left,
     ggg                  g = middle
    e   c
     ddd

Attributes per class: the seven segments (1 = lit), then three properties *of that glyph*, computed from it
rather than typed in: the number of closed loops (enclosed background regions), and whether it is mirror
symmetric left-right and top-bottom. They describe the display glyph, not every handwriting style (a
handwritten 4 often has a closed loop; the seven-segment 4 has none). Glyph variants used: 6 with its top
bar, 7 without the upper-left bar, 9 with its bottom bar (the most common forms).

Splits follow xlsa17: ``n_unseen`` classes (seeded choice, or given) are unseen and all their images are
``test_unseen``; the images of each seen class are split 80/20 into ``trainval``/``test_seen`` (stratified,
seeded). A validation split inside ``trainval`` holds out ``val_classes`` as pseudo-unseen classes.
"""

from __future__ import annotations

import gzip
from typing import Literal, Sequence

import numpy as np

from workbench.data.gzsl import GZSLDataset
from workbench.data.manifest import load_manifest
from workbench.data.sampling import stratified_split, validation_split
from workbench.data.store import embedded_file
from workbench.errors import DataError, ParameterError

MANIFEST = "digits-7seg"
SEGMENTS = "abcdefg"
#: Lit segments of each digit 0..9 on a seven-segment display.
DIGIT_SEGMENTS = {0: "abcdef", 1: "bc", 2: "abdeg", 3: "abcdg", 4: "bcfg",
                  5: "acdfg", 6: "acdefg", 7: "abc", 8: "abcdefg", 9: "abcdfg"}
#: Cells of the 5x3 glyph grid covered by each segment.
SEGMENT_CELLS = {
    "a": [(0, 0), (0, 1), (0, 2)], "d": [(4, 0), (4, 1), (4, 2)], "g": [(2, 0), (2, 1), (2, 2)],
    "f": [(0, 0), (1, 0), (2, 0)], "b": [(0, 2), (1, 2), (2, 2)],
    "e": [(2, 0), (3, 0), (4, 0)], "c": [(2, 2), (3, 2), (4, 2)],
}
SEGMENT_NAMES = ["seg_a_top", "seg_b_upper_right", "seg_c_lower_right", "seg_d_bottom",
                 "seg_e_lower_left", "seg_f_upper_left", "seg_g_middle"]
GLYPH_NAMES = ["glyph_closed_loops", "glyph_mirror_left_right", "glyph_mirror_top_bottom"]


def seven_segment_glyph(digit: int) -> np.ndarray:
    """The digit's seven-segment glyph as a bool (5, 3) grid (True = lit)."""
    glyph = np.zeros((5, 3), dtype=bool)
    for segment in DIGIT_SEGMENTS[digit]:
        for cell in SEGMENT_CELLS[segment]:
            glyph[cell] = True
    return glyph


def count_closed_loops(glyph: np.ndarray) -> int:
    """Background regions that do not reach the border (4-connected flood fill from the outside)."""
    padded = np.pad(~glyph, 1, constant_values=True)  # a frame of background around the glyph
    outside = np.zeros_like(padded)
    stack = [(0, 0)]
    while stack:
        r, c = stack.pop()
        if 0 <= r < padded.shape[0] and 0 <= c < padded.shape[1] and padded[r, c] and not outside[r, c]:
            outside[r, c] = True
            stack += [(r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)]
    enclosed = padded & ~outside
    loops, seen = 0, np.zeros_like(enclosed)
    for start in zip(*np.nonzero(enclosed)):
        if seen[start]:
            continue
        loops += 1
        stack = [start]
        while stack:
            r, c = stack.pop()
            if enclosed[r, c] and not seen[r, c]:
                seen[r, c] = True
                stack += [(r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)]
    return loops


def class_attribute_matrix(which: Literal["all", "segments"] = "all") -> tuple[np.ndarray, list[str]]:
    """The (10, A) class-attribute matrix and attribute names (7 segments, + 3 glyph properties for "all")."""
    rows = []
    for digit in range(10):
        glyph = seven_segment_glyph(digit)
        segments = [float(s in DIGIT_SEGMENTS[digit]) for s in SEGMENTS]
        properties = [float(count_closed_loops(glyph)), float(np.array_equal(glyph, glyph[:, ::-1])),
                      float(np.array_equal(glyph, glyph[::-1, :]))]
        rows.append(segments + (properties if which == "all" else []))
    names = SEGMENT_NAMES + (GLYPH_NAMES if which == "all" else [])
    return np.asarray(rows, dtype=np.float32), names


def _read_digits() -> tuple[np.ndarray, np.ndarray]:
    manifest = load_manifest(MANIFEST)
    path = embedded_file(manifest, "digits-7seg/digits.csv.gz")
    try:
        with gzip.open(path, "rt", encoding="ascii") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path} cannot be read ({exc}); reinstall workbench.") from None
    n, d = manifest.count("images"), manifest.count("features")
    if table.shape != (n, d + 1):
        raise DataError(f"{path} holds a {table.shape} table, the manifest expects ({n}, {d + 1}); reinstall workbench.")
    return table[:, :d], table[:, d].astype(np.int64)


def load_digits_7seg(n_unseen: int = 3, seed: int = 0, unseen: Sequence[int] | None = None, *,
                     attributes: Literal["all", "segments"] = "all", test_fraction: float = 0.2) -> GZSLDataset:
    """The digits-7seg GZSL dataset (real images, class side information from seven-segment glyphs).

    ``unseen`` fixes the unseen digits; otherwise ``n_unseen`` of them are drawn with ``seed``. The same seed
    draws the 80/20 trainval/test_seen split (``test_fraction``) and the validation classes. Features are the
    64 raw pixel values (0..16, float32); ``images`` keeps them as (N, 8, 8) for display.
    """
    if attributes not in ("all", "segments"):
        raise ParameterError(f"attributes must be 'all' or 'segments', got {attributes!r}.")
    if not 0.0 < test_fraction < 1.0:
        raise ParameterError(f"test_fraction must be between 0 and 1, got {test_fraction}.")
    rng = np.random.default_rng(seed)
    if unseen is None:
        if not isinstance(n_unseen, (int, np.integer)) or not 1 <= n_unseen <= 8:
            raise ParameterError(f"n_unseen must be an integer from 1 to 8 (at least 2 seen classes), got {n_unseen!r}.")
        unseen_classes = np.sort(rng.choice(10, size=n_unseen, replace=False))
    else:
        unseen_classes = np.unique(np.asarray(list(unseen), dtype=np.int64))
        if len(unseen_classes) != len(list(unseen)) or unseen_classes.min() < 0 or unseen_classes.max() > 9 \
                or not 1 <= len(unseen_classes) <= 8:
            raise ParameterError(f"unseen must be 1 to 8 distinct digits in 0..9, got {list(unseen)!r}.")
    seen_classes = np.setdiff1d(np.arange(10), unseen_classes)

    features, labels = _read_digits()
    seen_rows = np.flatnonzero(np.isin(labels, seen_classes))
    trainval_idx, test_seen_idx = stratified_split(seen_rows, labels, test_fraction, rng)
    test_unseen_idx = np.flatnonzero(np.isin(labels, unseen_classes))

    # Pseudo-unseen classes for validation, in the same proportion as the unseen classes (at least 1).
    n_val = int(np.clip(round(len(seen_classes) * len(unseen_classes) / 10), 1, len(seen_classes) - 1))
    val_classes = np.sort(rng.choice(seen_classes, size=n_val, replace=False))
    train_idx, val_idx = validation_split(labels, trainval_idx, val_classes, test_fraction, seed=int(rng.integers(2**31)))

    att, att_names = class_attribute_matrix(attributes)
    manifest = load_manifest(MANIFEST)
    expected_att = manifest.count("attributes" if attributes == "all" else "segment_attributes")
    if att.shape != (manifest.count("classes"), expected_att):
        raise DataError(f"digits-7seg: attribute matrix {att.shape} does not match the manifest.")
    glyphs = np.stack([seven_segment_glyph(d) for d in range(10)]).astype(np.float32)
    return GZSLDataset(
        name="digits-7seg",
        features=features,
        labels=labels,
        class_attributes=att,
        class_names=[str(d) for d in range(10)],
        seen_classes=seen_classes,
        unseen_classes=unseen_classes,
        trainval_idx=trainval_idx,
        test_seen_idx=test_seen_idx,
        test_unseen_idx=test_unseen_idx,
        attribute_names=att_names,
        train_idx=train_idx,
        val_idx=val_idx,
        val_classes=val_classes,
        side_info={"glyph": glyphs},
        images=features.reshape(-1, 8, 8),
        description="scikit-learn/UCI handwritten digits (8x8, 0..16) with seven-segment glyph attributes",
    )


# ----------------------------------------------------------------------------------------------------------
# digit-styles: attribute-object composition on the same images (TAFE-Net's MIT-States task, in miniature)
# ----------------------------------------------------------------------------------------------------------
#: How each style redraws an 8x8 image of pixel values 0..16.
STYLES: dict[str, str] = {
    "upright": "the image as it is",
    "mirrored": "flipped left-right",
    "rotated": "rotated 90 degrees counter-clockwise",
    "negative": "intensities inverted (16 - x)",
}


def apply_style(images: np.ndarray, style: str) -> np.ndarray:
    """``images`` (N, 8, 8) drawn in ``style`` (see :data:`STYLES`)."""
    if style == "upright":
        return images.copy()
    if style == "mirrored":
        return images[:, :, ::-1].copy()
    if style == "rotated":
        return np.rot90(images, k=1, axes=(1, 2)).copy()
    if style == "negative":
        return 16.0 - images
    raise ParameterError(f"unknown style {style!r}; choose from {list(STYLES)}.")


def load_digit_styles(seed: int = 0, styles: Sequence[str] = tuple(STYLES), *, test_fraction: float = 0.2,
                      n_val_pairs: int = 6) -> GZSLDataset:
    """digit-styles: zero-shot *composition* of (digit, style) pairs on the digits-7seg images.

    Every class is a pair such as ``"3 mirrored"``: 10 digits x len(``styles``) styles. For each digit one style
    is held out (seeded, spread evenly over the styles), so the 10 unseen classes are new *combinations* of a
    digit and a style that both appear in training — the setting of TAFE-Net's attribute-object composition
    experiment (MIT-States), where a task description is the concatenation of the primitives' descriptions.

    Class descriptions (``class_attributes``): the digit's 10 seven-segment attributes (see the module
    docstring) followed by a one-hot style; ``side_info["pair_onehot"]`` is the one-hot digit followed by the
    one-hot style. Images: every source image is drawn in every style; the source images are split 80/20
    (stratified by digit, seeded) *before* styling, so no test image shares its source image with a training
    image. ``trainval`` = training sources in their seen styles, ``test_seen`` / ``test_unseen`` = test
    sources in seen / unseen styles. ``n_val_pairs`` seen pairs act as unseen pairs for validation.
    The images are real; the styles are deterministic redrawings of them.
    """
    styles = list(styles)
    if len(styles) < 2 or len(set(styles)) != len(styles) or any(s not in STYLES for s in styles):
        raise ParameterError(f"styles must be at least two distinct names from {list(STYLES)}; got {styles!r}.")
    if not 0.0 < test_fraction < 1.0:
        raise ParameterError(f"test_fraction must be between 0 and 1, got {test_fraction}.")
    rng = np.random.default_rng(seed)
    n_styles = len(styles)
    pixels, digits = _read_digits()
    source_images = pixels.reshape(-1, 8, 8)
    train_src, test_src = stratified_split(np.arange(len(digits)), digits, test_fraction, rng)

    # class id = digit * n_styles + style index; one unseen style per digit, each style used equally often
    unseen_style = (rng.permutation(10) + int(rng.integers(n_styles))) % n_styles
    unseen_classes = np.arange(10) * n_styles + unseen_style
    seen_classes = np.setdiff1d(np.arange(10 * n_styles), unseen_classes)

    images = np.concatenate([apply_style(source_images, s) for s in styles])        # style-major blocks
    source = np.tile(np.arange(len(digits)), n_styles)
    style_of = np.repeat(np.arange(n_styles), len(digits))
    labels = digits[source] * n_styles + style_of
    is_unseen = np.isin(labels, unseen_classes)
    in_test = np.isin(source, test_src)
    trainval_idx = np.flatnonzero(~in_test & ~is_unseen)
    test_seen_idx = np.flatnonzero(in_test & ~is_unseen)
    test_unseen_idx = np.flatnonzero(in_test & is_unseen)

    # validation pairs: seen pairs that leave every digit and every style at least one training pair
    val_classes: list[int] = []
    for c in rng.permutation(seen_classes):
        trial = [*val_classes, int(c)]
        rest = np.setdiff1d(seen_classes, trial)
        if len(np.unique(rest // n_styles)) == 10 and len(np.unique(rest % n_styles)) == n_styles:
            val_classes = trial
        if len(val_classes) == n_val_pairs:
            break
    val_classes_arr = np.sort(np.asarray(val_classes, dtype=np.int64))
    train_idx, val_idx = validation_split(labels, trainval_idx, val_classes_arr, test_fraction,
                                          seed=int(rng.integers(2**31)))

    digit_att, digit_att_names = class_attribute_matrix("all")
    style_onehot = np.eye(n_styles, dtype=np.float32)
    cls_digit, cls_style = np.divmod(np.arange(10 * n_styles), n_styles)
    attributes = np.concatenate([digit_att[cls_digit], style_onehot[cls_style]], axis=1)
    pair_onehot = np.concatenate([np.eye(10, dtype=np.float32)[cls_digit], style_onehot[cls_style]], axis=1)
    return GZSLDataset(
        name="digit-styles",
        features=images.reshape(len(images), 64).astype(np.float32),
        labels=labels.astype(np.int64),
        class_attributes=attributes,
        class_names=[f"{d} {styles[s]}" for d, s in zip(cls_digit, cls_style)],
        seen_classes=seen_classes,
        unseen_classes=np.sort(unseen_classes),
        trainval_idx=trainval_idx,
        test_seen_idx=test_seen_idx,
        test_unseen_idx=test_unseen_idx,
        attribute_names=digit_att_names + [f"style_{s}" for s in styles],
        train_idx=train_idx,
        val_idx=val_idx,
        val_classes=val_classes_arr,
        side_info={"pair_onehot": pair_onehot},
        images=images.astype(np.float32),
        description="digits-7seg images redrawn in styles (upright, mirrored, rotated, negative); classes are "
                    "(digit, style) pairs, unseen pairs are new combinations",
    )
