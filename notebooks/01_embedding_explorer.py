# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Embedding explorer: t-SNE, UMAP and the visualization kit
#
# Look at real embedded data the way every method notebook does — t-SNE and UMAP maps side by side, what perplexity and neighbours change, the same images embedded for two tasks, an interactive explorer that also works in the offline report, linked maps that select the same items in both, clustered distance matrices and image grids.

# %% tags=["parameters"]
profile = "default"  # [smoke|default|full] how big a run: a few hundred items (seconds), the report, or everything
seed = 0  # seed of the sample and of every projection: the same seed draws the same maps
dataset = "digits"  # [digits|omniglot] handwritten 8x8 digits (scikit-learn) or Omniglot characters (28x28)

# %%
import workbench.notebook

S = workbench.notebook.setup(profile, seed)
S

# %%
import numpy as np
import pandas as pd
from IPython.display import display
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from workbench import viz
from workbench.data import load_digits_7seg, load_omniglot
from workbench.errors import ParameterError

# %% [markdown]
# ## The data
#
# Every item is an image and a feature vector. With `dataset="digits"` the items are scikit-learn's 1,797 real
# handwritten digits (8x8 pixels, 64 features) from the `digits-7seg` dataset, where three digits are *unseen*
# classes of a zero-shot split. With `dataset="omniglot"` they are handwritten characters of a few Omniglot
# alphabets (28x28 pixels, 784 features). Either way the features are the raw pixels: no model is involved yet,
# so what the maps show is the geometry of the pixels themselves.
#
# Each item also gets labels for two *tasks*, used later to embed the same images in two task-specific ways.

# %%
rng = np.random.default_rng(S.seed)
if dataset == "digits":
    data = load_digits_7seg(seed=S.seed)
    n_items = S.pick(smoke=200, default=len(data.labels), full=len(data.labels))
    keep = np.sort(rng.choice(len(data.labels), size=n_items, replace=False))
    X, images, digit = data.features[keep], data.images[keep], data.labels[keep]
    loops = data.class_attributes[digit, data.attribute_names.index("glyph_closed_loops")].astype(int)
    labels = digit
    names = [f"image {i}: a {k}" for i, k in zip(keep, digit)]
    colourings = {
        "digit": digit,
        "seen / unseen": np.where(np.isin(digit, data.unseen_classes), "unseen", "seen"),
        "closed loops": loops,
    }
    tasks = {"task A: which digit": digit, "task B: how many closed loops": loops}
    class_name = {k: f"digit {k}" for k in range(10)}
elif dataset == "omniglot":
    data = load_omniglot(28)
    n_alphabets, n_characters = S.pick(smoke=(3, 4), default=(4, 10), full=(8, 20))
    alphabets = sorted(rng.choice(data.alphabets, size=n_alphabets, replace=False))
    classes = np.concatenate([np.flatnonzero(data.characters["alphabet"].to_numpy() == a)[:n_characters]
                              for a in alphabets])
    keep = np.flatnonzero(np.isin(data.char_index, classes))
    X, images = data.images[keep].reshape(len(keep), -1), data.images[keep]
    labels = data.char_index[keep]
    character = np.array([data.class_names[c].replace("/character", " #") for c in labels])
    names = [f"{c}, drawer {k}" for c, k in zip(character, data.drawer[keep])]
    colourings = {"alphabet": data.alphabet[keep], "character": character, "drawer": data.drawer[keep]}
    tasks = {"task A: which alphabet": data.alphabet[keep], "task B: which character": labels}
    class_name = dict(zip(labels, character))
else:
    raise ParameterError(f"dataset must be 'digits' or 'omniglot', got {dataset!r}")

first_colouring = next(iter(colourings))
print(f"{len(X)} items, {X.shape[1]} features each; colourings: {', '.join(colourings)}")

# %% [markdown]
# A few items of the first classes, one class per row — the layout used for few-shot *support sets*
# (`viz.image_grid(images, titles, ncols=..., row_labels=...)`).

# %%
shown_classes = np.unique(labels)[:5]
rows = [np.flatnonzero(labels == c)[:6] for c in shown_classes]
grid = np.concatenate(rows)
viz.image_grid(images[grid], titles=[f"#{i}" for i in grid], ncols=6,
               row_labels=[class_name[c] for c in shown_classes],
               title="Examples, one class per row", tile_px=64)

# %% [markdown]
# ## Three ways to flatten a space
#
# A 2-D map of high-dimensional points must distort something. The three methods choose differently:
#
# * **PCA** projects onto the two directions of largest variance. It is linear, so distances *along* those
#   directions are honest — but everything that varies in the other 62 (or 782) directions is flattened away,
#   and classes overlap.
# * **t-SNE** turns distances into neighbour probabilities (a Gaussian around each point, its width set so that
#   each point has about *perplexity* effective neighbours) and places points in 2-D so that a heavy-tailed
#   Student-t version of those probabilities matches. It keeps *who is next to whom*; the size of a cluster
#   and the gaps between clusters carry little meaning.
# * **UMAP** builds a weighted graph of each point's `n_neighbors` nearest neighbours and lays that graph out
#   in 2-D. Like t-SNE it keeps neighbourhoods; it usually keeps more of the large-scale arrangement, and
#   `min_dist` sets how tightly points may pack.
#
# All three are seeded (`seed` above), so the same notebook draws the same maps; results are cached by content,
# so re-running a cell costs nothing. The maps below are rotated onto each other (`align=True`) — their
# orientation is arbitrary anyway — so the same items appear in roughly the same place.

# %%
methods = S.pick(smoke=["pca", "tsne"], default=["pca", "tsne", "umap"], full=["pca", "tsne", "umap"])
maps = {viz.resolve_settings(*X.shape, method, seed=S.seed).label: viz.project(X, method, seed=S.seed)
        for method in methods}
viz.compare_scatter(maps, colourings[first_colouring], names=names, color_name=first_colouring, align=True,
                    title="The same items, three projections")

# %% [markdown]
# How much of the neighbourhood structure survived? For each item, count how many of its 10 nearest neighbours
# share its label, in the original features and in each map (`viz.neighbour_agreement`). A map that keeps
# neighbourhoods scores close to the input; PCA, which keeps variance instead, scores lower.

# %%
agreement = {"input features": viz.neighbour_agreement(X, labels)}
agreement |= {name: viz.neighbour_agreement(points, labels) for name, points in maps.items()}
pd.Series(agreement, name="10-NN label agreement").round(3).to_frame()

# %% [markdown]
# ## Perplexity and neighbours
#
# *Perplexity* (t-SNE) and `n_neighbors` (UMAP) say how many neighbours define a point's surroundings. Small
# values look only at the closest few points: the map breaks into many small, tight islands, and noise looks
# like structure. Large values average over more points: islands merge into smoother, larger shapes, and the
# global arrangement becomes more faithful (at a higher cost). Around 30 (t-SNE) and 15 (UMAP) are the usual
# defaults; a perplexity must stay below (n - 1) / 3, which `viz.project` checks for you.

# %%
perplexities = S.pick(smoke=[5, 30], default=[5, 30, 50], full=[5, 30, 50, 100])
viz.compare_scatter({f"perplexity {p}": viz.project(X, "tsne", seed=S.seed, perplexity=p) for p in perplexities},
                    colourings[first_colouring], names=names, color_name=first_colouring, align=True,
                    title="t-SNE with growing perplexity")

# %%
n_neighbors = S.pick(smoke=[5, 15], default=[5, 15, 50], full=[5, 15, 50, 200])
if "umap" in methods:
    fig = viz.compare_scatter(
        {f"{k} neighbours": viz.project(X, "umap", seed=S.seed, n_neighbors=k) for k in n_neighbors},
        colourings[first_colouring], names=names, color_name=first_colouring, align=True,
        title="UMAP with growing n_neighbors")
else:
    fig = None
    print("The smoke profile skips UMAP: its first fit in a process compiles code for ~15 s.")
fig

# %% [markdown]
# ## Seeing the items
#
# Points stand for images, so look at the images. `viz.embedding_scatter(..., images=images, thumbnails=49)`
# draws up to 49 thumbnails spread over the map (the buttons hide them); hovering a point shows its name.
# `viz.neighbour_grid` shows, for a few query items, their nearest neighbours *in the input features* — what
# the pixels consider similar — with the distance under each; the dropdown picks the query.

# %%
tsne = viz.project(X, "tsne", seed=S.seed)
viz.embedding_scatter(tsne, colourings[first_colouring], names=names, color_name=first_colouring,
                      images=images, thumbnails=49, axis_title="t-SNE", title="t-SNE map with thumbnails")

# %%
queries = rng.choice(len(X), size=4, replace=False)
viz.neighbour_grid(X, images, queries, k=8, names=[f"#{i}" for i in range(len(X))],
                   labels=[class_name[c] for c in labels],
                   title="Nearest neighbours in pixel space")

# %% [markdown]
# ## The same images, embedded for two tasks
#
# Task-aware methods (TAFE-Net, for example) embed an image *differently for each task*. Here is a simple,
# real stand-in: for each task, keep only the directions of pixel space along which that task's classes differ
# most (linear discriminant analysis, from scikit-learn: at most one direction fewer than the task has classes).
# Both maps below show the same images with the same colours — only the task that shaped the features differs.
# Under task B, classes that share a task label fold together although their pixels differ.

# %%
conditions = {"pixels": X}
for task, task_labels in tasks.items():
    conditions[task] = LinearDiscriminantAnalysis().fit_transform(X, task_labels)
viz.compare_scatter({task: viz.project(conditions[task], "tsne", seed=S.seed) for task in tasks},
                    colourings[first_colouring], names=names, color_name=first_colouring,
                    title="The same images embedded for two tasks (t-SNE of task-specific features)")

# %% [markdown]
# ## The explorer
#
# `viz.EmbeddingExplorer` puts all of this behind controls: which features (pixels or a task's embedding),
# which method, the perplexity or number of neighbours, and what colours the points. In JupyterLab it is live —
# ipywidgets above a plotly figure that redraws when a control moves, with a panel that shows the hovered
# item's image and its nearest neighbours. In the HTML report there is no kernel, so the same cell shows its
# *offline twin*: a plotly figure whose dropdowns switch between precomputed projections (nothing to install,
# no network).

# %%
explorer = viz.EmbeddingExplorer(
    conditions, color=colourings, names=names, images=images, methods=methods, seed=S.seed,
    perplexities=S.pick(smoke=[30], default=[5, 30], full=perplexities),
    n_neighbors=S.pick(smoke=[15], default=[5, 15], full=n_neighbors),
    title="explorer")
explorer

# %% [markdown]
# The offline counterpart on its own: `explorer.show(live=False)`, or `explorer.offline_figure()` for the
# figure object (`control="slider"` turns the view menu into a slider). In a report the cell above already
# shows it.

# %%
if S.in_report:
    print("This report shows the offline explorer above.")
else:
    explorer.show(live=False)

# %% [markdown]
# ## Linked maps: where do task A's clusters land under task B?
#
# The question task-aware embeddings raise is about the *same items* in two maps: do the images that cluster
# together under one task stay together under the other? `explorer.linked([...])` (or `viz.LinkedExplorer`) puts
# two of the explorer's maps side by side and links them: drag a box (or pick the lasso in the toolbar) in either
# map, and the same images light up in both while the rest turns grey; a strip shows their images, and a summary
# counts them per class and says how spread they are in each map. Double-click a map to clear. Each map has its
# own menu, so any two conditions (or methods) can be compared. In the HTML report the linking works too: plotly's
# own selection events and a few lines of JavaScript embedded in the page, no kernel.

# %%
task_a, task_b = list(tasks)
linked = explorer.linked([task_a, task_b], title="The same images under two tasks: select in one map")
linked

# %% [markdown]
# Whatever you select is `linked.selection`, the items' indices, so the notebook can compute on it; assigning to
# it selects from code (`linked.selection = indices`; `save_selection("name")` keeps one for later). Below, if
# nothing is selected yet — always the case in the report — the cell selects the images of one task-B class.
# `linked.summary()` counts them and measures their **spread** in each map: the mean distance between two of
# them, divided by the same for random sets of as many images (1 = no more grouped than chance; the bars on the
# right show the range random sets reach). A class of task B is tight in task B's map; in task A's map it may
# split into several clusters — its spread there says how far apart task A keeps those images.

# %%
if len(linked.selection) == 0:  # nothing picked by hand: take every image of task B's first class
    linked.selection = np.flatnonzero(tasks[task_b] == tasks[task_b][0])
summary = linked.summary()
display(summary.spread[["items", "ratio", "random_low", "random_high", "p_tighter"]].round(3))
summary.figure()

# %% [markdown]
# The same selection drawn into both maps (`linked.figure()`, a plain plotly figure: save it for slides):

# %%
linked.figure()

# %% [markdown]
# ## Distances between items, clustered
#
# A distance matrix is easiest to read when similar items sit together. `viz.matrix_heatmap(..., cluster=True)`
# orders rows and columns by hierarchical clustering (complete linkage: two groups are as far apart as their
# farthest members; *optimal leaf ordering* puts the most similar leaves next to each other) and draws the tree
# on top. Below: four items of each of (up to) twelve classes in random order, their pixel distances, clustered — the
# classes reappear as dark blocks on the diagonal.

# %%
sample_classes = np.unique(labels)[:12]
sample = rng.permutation(np.concatenate([rng.choice(np.flatnonzero(labels == c), size=4, replace=False)
                                          for c in sample_classes]))
distances = np.linalg.norm(X[sample, None, :] - X[None, sample, :], axis=-1)
viz.matrix_heatmap(distances, [f"{class_name[labels[i]]} · {i}" for i in sample], kind="distance",
                   cluster=True, value_name="pixel distance", title="Pixel distances, clustered")

# %% [markdown]
# Values with a sign call for a *diverging* colour scale centred on zero. The correlation between the classes'
# mean images (each centred on the mean of all images) is such a matrix: red for classes whose strokes
# fall in the same places, blue for classes that put ink where the others leave paper.

# %%
class_ids = np.unique(labels)[:40]
class_means = np.stack([X[labels == c].mean(axis=0) for c in class_ids])
viz.matrix_heatmap(np.corrcoef(class_means - class_means.mean(axis=0)), [class_name[c] for c in class_ids],
                   cluster=True,
                   title="Correlation of the class-mean images (centred)")

# %% [markdown]
# ## Where next
#
# Every method notebook uses these functions: `viz.project` for maps of learned embeddings,
# `viz.compare_scatter` for the TAFE-Net task comparison, `viz.LinkedExplorer` for the same images under a seen and
# an unseen task (TAFE-Net) and for image vs attribute latents (CADA-VAE), `viz.matrix_heatmap` for Task2Vec distances and TTNet
# task correlations, `viz.training_curves` for loss terms, `viz.image_grid` for support sets and generated
# filters. For slides, `viz.save_static(fig, "figure.png")` writes PNG/SVG/PDF through kaleido
# (`pip install 'workbench[export]'`, uses the system Chromium); without it you get a message saying so.
