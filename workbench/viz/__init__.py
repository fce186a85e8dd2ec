"""The visualization kit every notebook shares: projections, plotly figures, explorers.

* :func:`project` — t-SNE / UMAP / PCA to 2-D or 3-D, seeded and cached.
* Figures: :func:`embedding_scatter`, :func:`compare_scatter`, :func:`matrix_heatmap`
  (with :func:`cluster_order`), :func:`training_curves`, :func:`image_grid`, :func:`neighbour_grid`.
* :class:`EmbeddingExplorer` — live ipywidgets in JupyterLab, plotly controls in offline reports.
* :class:`LinkedExplorer` — several maps of the same items side by side, one selection shown in all
  (live in JupyterLab; in reports through plotly's selection events and a few lines of embedded JavaScript).
* :func:`save_static` — PNG/SVG/PDF via kaleido (optional extra ``workbench[export]``).

Every figure is a plain ``plotly.graph_objects.Figure``; in a notebook set up with
:func:`workbench.notebook.setup`, showing it works live and in the static HTML report.
"""

from workbench.viz.explorers import EmbeddingExplorer, View
from workbench.viz.export import save_static
from workbench.viz.figures import (
    category_colors,
    compare_scatter,
    embedding_scatter,
    procrustes_align,
    training_curves,
)
from workbench.viz.images import image_grid, neighbour_grid
from workbench.viz.linked import LinkedExplorer, Panel
from workbench.viz.linked_selection import SelectionSummary
from workbench.viz.matrices import cluster_order, matrix_heatmap
from workbench.viz.projection import (
    ProjectionSettings,
    cache_stats,
    clear_cache,
    neighbour_agreement,
    project,
    resolve_settings,
)

__all__ = [
    "EmbeddingExplorer",
    "LinkedExplorer",
    "Panel",
    "ProjectionSettings",
    "SelectionSummary",
    "View",
    "cache_stats",
    "category_colors",
    "clear_cache",
    "cluster_order",
    "compare_scatter",
    "embedding_scatter",
    "image_grid",
    "matrix_heatmap",
    "neighbour_agreement",
    "neighbour_grid",
    "procrustes_align",
    "project",
    "resolve_settings",
    "save_static",
    "training_curves",
]
