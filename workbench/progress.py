"""Progress bars, one convention for the whole package (torch-free, so plotting never imports torch).

A tqdm bar live in JupyterLab and terminals; silent while ``workbench report`` renders a notebook,
because a tqdm widget would be an empty box in the static HTML.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, TypeVar

T = TypeVar("T")


def _disabled(disable: bool | None) -> bool:
    from workbench.notebook import in_report

    return in_report() if disable is None else disable


def progress(iterable: Iterable[T], *, desc: str, total: int | None = None, leave: bool = False,
             disable: bool | None = None, initial: int = 0) -> Iterator[T]:
    """Wrap an iterable: ``for epoch in progress(range(n), desc="epochs"): ...`` (``initial``: items already
    done, e.g. when a run resumes)."""
    from tqdm.auto import tqdm

    return iter(tqdm(iterable, desc=desc, total=total, leave=leave, disable=_disabled(disable), initial=initial))


def progress_bar(*, total: int | None, desc: str, unit: str = "it", disable: bool | None = None,
                 leave: bool = False) -> Any:
    """A ``tqdm`` bar to update by hand (``bar.update(n)``; use it as a context manager)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=leave, disable=_disabled(disable))
