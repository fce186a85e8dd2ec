"""Static images of figures (PNG, SVG, PDF) for slides and papers.

Reports do not need this: they embed the interactive figures. Static export uses kaleido, an
optional extra (``pip install 'workbench[export]'``), which drives a headless Chromium (Debian:
``apt-get install chromium``; kaleido finds ``/usr/bin/chromium`` itself). Without either, the
error says what to install instead of failing deep inside kaleido.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError

FORMATS = ("png", "svg", "pdf", "jpg", "jpeg", "webp")

_NO_KALEIDO = (
    "static export needs the optional kaleido package: pip install 'workbench[export]' (or pip install "
    "kaleido). It also needs Chromium (Debian: apt-get install chromium). For an interactive file that "
    "needs neither, use fig.write_html(path, include_plotlyjs=True)."
)
_NO_CHROMIUM = (
    "kaleido could not start Chromium, which it uses to draw the image. Install it (Debian: "
    "apt-get install chromium) or point BROWSER_PATH at a Chrome/Chromium binary, then try again. "
    "For an interactive file that needs no browser, use fig.write_html(path, include_plotlyjs=True)."
)


def save_static(fig: Any, path: str | Path, *, width: int | None = None, height: int | None = None,
                scale: float = 2.0) -> Path:
    """Write ``fig`` as a static image; the format follows the suffix (``.png``, ``.svg``, ``.pdf``, ...).

    ``scale=2`` doubles the pixel density of PNGs (crisp on slides). Returns the path written.

    Raises:
        WorkbenchError: unknown suffix, kaleido not installed, or no Chromium for kaleido to use.
    """
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise WorkbenchError(f"can't tell the image format from {path.name!r}: use one of the suffixes "
                             f"{', '.join('.' + f for f in FORMATS)}.")
    try:
        import kaleido  # noqa: F401  (plotly imports it itself; checked here for a clear message)
    except ImportError as err:
        raise WorkbenchError(_NO_KALEIDO) from err
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.write_image(str(path), format="jpg" if fmt == "jpeg" else fmt, width=width, height=height, scale=scale)
    except (RuntimeError, OSError) as err:
        if any(word in str(err) for word in ("Chrome", "chrome", "Chromium", "browser", "Browser")):
            raise WorkbenchError(_NO_CHROMIUM) from err
        raise
    return path
