"""Assertions for course exercises whose failure messages say what is wrong.

The checks in ``course/*.py`` lessons (run by otter-grader, in the student's notebook) call these helpers so that a
failing check reads like a tutor's remark — "returned None: replace the ``...``", "shape (4, 3), expected (3, 4):
rows and columns swapped?", "wrong sign" — instead of a bare ``AssertionError``. Each helper raises
``AssertionError`` with that message and returns ``None`` when the check passes: otter runs each check as a
doctest, where a returned value would be printed and counted as unexpected output.

Only numpy is imported at module level; torch tensors are converted with ``.detach().cpu().numpy()`` if given.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

#: The one message every unfinished stub fails with (the tests look for it on the student version).
STUB_MESSAGE = "replace the `...` with your code (in a function: and `return` the result)"


def as_array(value: Any, name: str = "your result") -> np.ndarray:
    """``value`` as a float array, or an ``AssertionError`` saying why it is not one (a stub, a list of None...)."""
    if value is None or value is Ellipsis:
        raise AssertionError(f"{name} is {value!r}: {STUB_MESSAGE}.")
    if hasattr(value, "detach"):  # a torch tensor: no import of torch needed to recognise it
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"{name} should be numbers (an array or tensor); got {type(value).__name__} ({exc}).") from None
    return array


def expect_shape(value: Any, shape: Sequence[int], name: str = "your result") -> None:
    """The value has exactly ``shape`` and finite entries; the message hints at a transpose or a missing sum."""
    _shaped(value, shape, name)


def _shaped(value: Any, shape: Sequence[int], name: str) -> np.ndarray:
    array = as_array(value, name)
    shape = tuple(int(s) for s in shape)
    if array.shape != shape:
        hint = ""
        if array.shape == shape[::-1] and len(shape) > 1:
            hint = " (rows and columns swapped: a transpose?)"
        elif array.size > int(np.prod(shape)) and array.ndim > len(shape):
            hint = " (one axis too many: did you forget to sum or average over it?)"
        elif array.ndim < len(shape):
            hint = " (an axis too few: did you sum over one axis too many?)"
        raise AssertionError(f"{name} has shape {array.shape}; expected {shape}{hint}.")
    if not np.all(np.isfinite(array)):
        raise AssertionError(f"{name} contains NaN or inf: check for a log of 0, a division by 0 or an overflowing exp.")
    return array


def expect_close(value: Any, expected: Any, name: str = "your result", hint: str = "",
                 rtol: float = 1e-4, atol: float = 1e-6) -> None:
    """The value matches ``expected`` (same shape, close entries); says *how* it differs when it does not."""
    want = np.asarray(expected.detach().cpu().numpy() if hasattr(expected, "detach") else expected, dtype=float)
    got = _shaped(value, want.shape, name)
    if np.allclose(got, want, rtol=rtol, atol=atol):
        return
    extra = f" {hint}" if hint else ""
    if np.allclose(got, -want, rtol=rtol, atol=atol) and np.any(np.abs(want) > atol):
        raise AssertionError(f"{name} has the wrong sign: expected {_show(want)}, got {_show(got)}.{extra}")
    raise AssertionError(f"{name} is not the expected value: expected {_show(want)}, got {_show(got)}.{extra}")


def expect_nonnegative(value: Any, name: str = "your result", why: str = "") -> None:
    """Every entry is >= 0 (a probability, a variance, a Fisher information ...)."""
    array = as_array(value, name)
    if np.any(array < 0):
        raise AssertionError(f"{name} has negative entries (smallest {array.min():.4g}){': ' + why if why else '.'}")


def expect_tuple(value: Any, length: int, name: str = "your result") -> None:
    """The function returned a tuple (or list) of ``length`` items, e.g. ``(priors, confusions)``."""
    if value is None or value is Ellipsis:
        raise AssertionError(f"{name} is {value!r}: {STUB_MESSAGE}.")
    if not isinstance(value, (tuple, list)) or len(value) != length:
        raise AssertionError(f"{name} should return {length} things as a tuple, like `return a, b`; got "
                             f"{type(value).__name__}{f' of length {len(value)}' if isinstance(value, (tuple, list)) else ''}.")


def expect_true(condition: Any, message: str) -> None:
    """Raise ``AssertionError(message)`` unless ``condition`` holds (for checks with a bespoke message)."""
    if not bool(condition):
        raise AssertionError(message)


def expect_answer(value: Any, choices: Sequence[Any], name: str = "answer") -> None:
    """A multiple-choice answer is filled in and one of ``choices`` (whether it is *right* is a hidden test)."""
    if value is None or value is Ellipsis:
        raise AssertionError(f"{name} is {value!r}: {STUB_MESSAGE}.")
    if value not in list(choices):
        raise AssertionError(f"{name} is {value!r}; it must be one of {list(choices)!r}.")


def _show(array: np.ndarray, digits: int = 4) -> str:
    """A short text for an array in a message: the value itself when small, else its shape and first entries."""
    if array.size <= 6:
        return np.array2string(np.round(array, digits), separator=", ")
    flat = np.round(array.ravel()[:4], digits)
    return f"shape {array.shape}, first entries {np.array2string(flat, separator=', ')[:-1]}, ...]"
