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
# # A tour of the workbench
#
# What the workbench is, the five task-aware meta-learning methods it teaches, how reports are made and where the data comes from.

# %% tags=["parameters"]
profile = "default"  # [smoke|default|full] how big a run: seconds (tests), the report, or paper scale
seed = 0  # random seed for everything random in this notebook

# %%
import workbench.notebook

S = workbench.notebook.setup(profile, seed)
S

# %% [markdown]
# ## What this is
#
# **workbench** is a small Python package behind a set of parameterised Jupyter notebooks. Each notebook trains
# and inspects one *task-aware* meta-learning method — a method whose model depends on a description of the
# *task* (an attribute vector, a support set, a Fisher embedding, a task-correlation matrix), not only on the
# input. Every notebook runs in three sizes (`profile`): `smoke` (seconds, used by the tests), `default` (what the
# reports show, minutes) and `full` (paper-scale settings). The same notebooks become standalone **HTML experiment
# reports** that open offline in any browser.
#
# The notebooks hold narrative, equations and figures; every algorithm lives in the package (`workbench/`), where
# the tests reach it. You can read any function's source from a notebook with `inspect.getsource`.

# %% [markdown]
# ## The five methods
#
# **TAFE-Net** (task-aware feature embeddings). A *meta learner* reads a task description $t$ (e.g. a class's
# attribute vector) and generates, for each layer $i$ of a prediction network, a weight vector $w^i_t = g^i(T(t))$.
# The layer's weights are factorised into shared weights and this task-specific, channel-wise scaling,
# $W^i_t = W^i_{sr}\,\mathrm{diag}(w^i_t)$, so the *same image gets a different feature embedding for each task*.
# A task-independent binary classifier then answers "does this image belong to task $t$?"; an embedding loss pulls
# the task embedding towards the image embeddings of its positives. Zero-shot learning scores every image against
# every unseen class's description.
#
# **CADA-VAE** (cross- and distribution-aligned VAEs). One VAE per modality (image features, class attributes or
# sentences) maps into a shared 64-d latent space. Besides each VAE's loss, *cross-alignment* decodes each
# modality from the other's latent code and *distribution alignment* minimises the 2-Wasserstein distance
# $W_{ij} = \big(\lVert\mu_i-\mu_j\rVert_2^2 + \lVert\Sigma_i^{1/2}-\Sigma_j^{1/2}\rVert_F^2\big)^{1/2}$ between the
# two Gaussians. A softmax classifier trained on latent samples — images of seen classes, attributes of unseen
# classes — performs generalised zero-shot learning (GZSL), reported as seen/unseen accuracy and their harmonic mean $H$.
#
# **HyperTransformer.** A transformer reads a few-shot *support set* (image features plus label embeddings) and
# *writes the weights* of a small CNN, layer by layer, one output token per output channel. The generated CNN then
# classifies the query images. Because the transformer is permutation-invariant over samples and can take
# unlabelled samples with a special token, it handles semi-supervised support sets naturally.
#
# **Task2Vec.** A task is embedded as the diagonal of the Fisher information of a fixed *probe network*
# fine-tuned on that task, $F = \mathbb{E}_{x,\,y\sim p_w(y\mid x)}\big[\nabla_w \log p_w(y\mid x)\,\nabla_w \log p_w(y\mid x)^\top\big]$,
# averaged per filter. Distances between these vectors reflect how tasks relate (taxonomy, domain), their norm
# tracks task difficulty, and an asymmetric distance picks the best pretrained feature extractor for a new task.
#
# **TTNet** (zero-shot task transfer). For a task with no training data at all, a meta learner regresses its
# model parameters from the parameters of *known* tasks' models, weighted by task correlations $\Gamma$ that a
# crowd of annotators supplied and that Dawid–Skene EM aggregated into a consensus.

# %% [markdown]
# ## The notebooks
#
# Each notebook declares its parameters in one cell tagged `parameters`; `workbench list` prints them, and
# `workbench report NAME -p NAME VALUE` overrides them. This table is read from the notebooks themselves:

# %%
import pandas as pd
from workbench.reports import describe_notebooks

rows = []
for info in describe_notebooks():
    rows.append({
        "notebook": info.name,
        "title": info.title,
        "purpose": info.purpose,
        "parameters": ", ".join(f"{p.name}={p.default!r}" for p in info.parameters),
    })
pd.DataFrame(rows).style.hide(axis="index")

# %% [markdown]
# ## Data: real, offline, verified
#
# Nothing downloads at run time. Small **real** datasets ship inside the package so every notebook runs on a fresh
# install; every full benchmark is described by a manifest in `data_manifests/` (files, sizes, sha256, counts,
# licence, where to obtain it) and lives in the *data root* (`$WORKBENCH_DATA`, by default
# `~/.cache/workbench/data`). `workbench data list` shows what is present; a missing dataset is an error that
# names the exact `workbench data import NAME PATH` command, never a silent substitute. Synthetic data appears only
# in tests and speed benchmarks, and is labelled *synthetic* wherever it does.
#
# A first look at real data that is always present — scikit-learn's bundled handwritten digits, which the GZSL
# notebooks turn into a small zero-shot problem with seven-segment-display attributes:

# %%
import numpy as np
import plotly.express as px
from sklearn.datasets import load_digits

digits = load_digits()
rng = np.random.default_rng(S.seed)
n_per_class = S.pick(smoke=2, default=6, full=10)
picked = np.concatenate([rng.choice(np.flatnonzero(digits.target == c), n_per_class, replace=False) for c in range(10)])
grid = digits.images[picked].reshape(10, n_per_class, 8, 8).transpose(0, 2, 1, 3).reshape(80, 8 * n_per_class)
fig = px.imshow(grid, color_continuous_scale="gray_r", aspect="equal",
                title=f"Real handwritten digits (scikit-learn, 8x8): {n_per_class} per class, rows 0-9")
fig.update_xaxes(showticklabels=False).update_yaxes(showticklabels=False)
fig.update_layout(coloraxis_showscale=False, height=520, width=90 + 60 * n_per_class)
fig.show()

# %% [markdown]
# A notebook *records* its main results with `S.record(name, value, headline=True)`: a number or a small table,
# stored with the executed notebook and shown in the "headline" column of the reports' index; `workbench sweep`
# averages every recorded number over seeds. This tour records how many real images it drew:

# %%
S.record("digits_shown", len(picked), headline=True)

# %% [markdown]
# ## Running things
#
# | what | command |
# |---|---|
# | every report, default profile | `make report` (= `workbench report --all`) → `reports/index.html` |
# | one notebook, small | `.venv/bin/workbench report 00_tour --profile smoke` |
# | override a parameter | `.venv/bin/workbench report cada_vae -p dataset AWA2 -p seed 3` |
# | the same notebook over seeds and settings (Dask) | `.venv/bin/workbench sweep cada_vae -p seed 0..4 -p dataset digits-7seg,digit-styles` |
# | notebooks and their parameters | `.venv/bin/workbench list` |
# | datasets: present / missing / corrupt | `.venv/bin/workbench data list` |
# | live, interactive exploration | `.venv/bin/jupyter lab notebooks/` |
#
# In JupyterLab the explorers are live ipywidgets; in the HTML reports the same views use plotly's own dropdowns and
# sliders, so a report stays explorable without a kernel and without a network.
