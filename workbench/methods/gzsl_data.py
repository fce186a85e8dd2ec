"""Which GZSL dataset a method or notebook means by a name: one small resolver, never a silent substitute.

============================  ==================================================================
name                          dataset
============================  ==================================================================
``"digits-7seg"``             :func:`workbench.data.load_digits_7seg` (real, embedded, always present)
``"digit-styles"``            :func:`workbench.data.load_digit_styles`: (digit, style) pairs on the same
                              images, unseen pairs are new combinations (composition zero-shot)
``"CUB-vgg"``                 :func:`workbench.data.load_cub_vgg`: CUB-200-2011 with real VGG fc7 features
                              (4096-d) from the data root, the xlsa17 class split and a seeded image
                              split (``seed`` picks it); missing features: the DataError naming
                              ``workbench data import cub-vgg-fc7`` / ``fetch``
``"CUB"``, ``"AWA1"``, ...    :func:`workbench.data.load_xlsa17`: the real ResNet-101 features from the
                              data root; when they are missing this is the data layer's
                              :class:`~workbench.errors.DataError` naming the ``workbench data import``
                              command, never generated data in their place
``"synthetic-CUB"``, ...      :func:`workbench.data.synthetic_gzsl`: SYNTHETIC features at the real
                              benchmark's scale (its attributes and split sizes), for speed benchmarks
============================  ==================================================================
"""

from __future__ import annotations

from typing import Any

from workbench.errors import ParameterError

#: The xlsa17 benchmarks (Xian et al.) that ``load_xlsa17`` reads.
PAPER_DATASETS: tuple[str, ...] = ("CUB", "AWA1", "AWA2", "SUN", "APY")
DIGITS = "digits-7seg"
DIGIT_STYLES = "digit-styles"
CUB_VGG = "CUB-vgg"
SYNTHETIC_PREFIX = "synthetic-"


def dataset_names() -> list[str]:
    """Every name :func:`resolve_gzsl_dataset` accepts."""
    return [DIGITS, DIGIT_STYLES, CUB_VGG, *PAPER_DATASETS, *(SYNTHETIC_PREFIX + n for n in PAPER_DATASETS)]


def is_paper_benchmark(name: str) -> bool:
    """True for the real xlsa17 benchmarks (not digits-7seg, not synthetic-*, not CUB-vgg: other features)."""
    return str(name).upper() in PAPER_DATASETS


def is_real_image_features(name: str) -> bool:
    """True for datasets whose features are real CNN image features (CUB-vgg and the xlsa17 benchmarks), where
    the released recipes apply unchanged; False for the 64-d digit pixels and for synthetic features."""
    return is_paper_benchmark(name) or str(name).lower() == CUB_VGG.lower()


def resolve_gzsl_dataset(name: str, seed: int = 0, **digits_options: Any):  # -> workbench.data.GZSLDataset
    """The GZSL dataset called ``name`` (see the module docstring for the accepted names).

    ``seed`` draws digits-7seg's unseen classes and splits, and the synthetic features; the xlsa17 benchmarks
    have fixed splits. ``digits_options`` go to :func:`~workbench.data.load_digits_7seg` (``n_unseen``,
    ``unseen``, ``attributes``) or :func:`~workbench.data.load_digit_styles` (``styles``) and are refused for the
    other datasets.
    """
    from workbench import data

    key = str(name).strip()
    if key.lower() == DIGITS:
        return data.load_digits_7seg(seed=seed, **digits_options)
    if key.lower() == DIGIT_STYLES:
        return data.load_digit_styles(seed=seed, **digits_options)
    if digits_options:
        raise ParameterError(f"options {sorted(digits_options)} apply to {DIGITS!r} only, not to {name!r}.")
    if key.lower().startswith(SYNTHETIC_PREFIX):
        base = key[len(SYNTHETIC_PREFIX):].upper()
        if base not in PAPER_DATASETS:
            raise ParameterError(f"unknown synthetic dataset {name!r}; choose one of "
                                 f"{', '.join(SYNTHETIC_PREFIX + n for n in PAPER_DATASETS)}.")
        return data.synthetic_gzsl(base, seed=seed)
    if key.lower() == CUB_VGG.lower():
        return data.load_cub_vgg(split_seed=seed)  # missing files: DataError with the import/fetch commands
    if key.upper() in PAPER_DATASETS:
        return data.load_xlsa17(key.upper())  # missing files: the data layer's DataError, with the import command
    raise ParameterError(f"unknown GZSL dataset {name!r}; choose one of {', '.join(dataset_names())}.")
