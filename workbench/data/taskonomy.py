"""Taskonomy's measured task-transfer matrices (Zamir et al., CVPR 2018), shipped with the package.

Rows are *source* tasks (whose encoder is transferred), columns are *target* tasks; entry (a, b) measures
how well a's encoder serves task b. ``affinity``: the AHP-normalised first-order affinities (27 sources =
25 tasks + ``self`` + ``random``, x 22 targets). ``winrate_vs_task``: how often the transfer beats the
target's own fully supervised network (the paper's "Quality"; the ``self`` row is 0.5).
``winrate_vs_pixels``: how often it beats a network trained from pixels ("Gain"; the ``pixels`` row is 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from workbench.data.manifest import load_manifest
from workbench.data.store import embedded_file
from workbench.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

MANIFEST = "taskonomy-affinities"


@dataclass(frozen=True)
class TaskonomyAffinities:
    """Three pandas DataFrames indexed by source task, with one column per target task."""

    affinity: "pd.DataFrame"  # 27 x 22
    winrate_vs_task: "pd.DataFrame"  # 28 x 22
    winrate_vs_pixels: "pd.DataFrame"  # 28 x 22

    @property
    def targets(self) -> list[str]:
        return list(self.affinity.columns)

    @property
    def sources(self) -> list[str]:
        return list(self.affinity.index)


def load_taskonomy_affinities() -> TaskonomyAffinities:
    """The first-order affinity and win-rate matrices as DataFrames (rows: source, columns: target)."""
    import pandas as pd

    manifest = load_manifest(MANIFEST)
    tables = {}
    for key, rows_key in (("affinity", "affinity_sources"), ("winrate_vs_task", "winrate_sources"),
                          ("winrate_vs_pixels", "winrate_sources")):
        name = "first_order_affinity.csv" if key == "affinity" else f"first_order_{key}.csv"
        path = embedded_file(manifest, f"taskonomy/{name}")
        try:
            table = pd.read_csv(path, index_col=0)
        except (ValueError, OSError) as exc:
            raise DataError(f"{path} cannot be read ({exc}); reinstall workbench.") from None
        table.index.name, table.columns.name = "source", "target"
        expected = (manifest.count(rows_key), manifest.count(rows_key.replace("sources", "targets")))
        if table.shape != expected or table.isna().any().any():
            raise DataError(f"{path} is a {table.shape} table with {int(table.isna().sum().sum())} empty cells; "
                            f"the manifest expects {expected} and no empty cell. Reinstall workbench.")
        tables[key] = table.astype(float)
    return TaskonomyAffinities(**tables)
