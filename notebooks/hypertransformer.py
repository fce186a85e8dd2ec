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
# # HyperTransformer: a transformer that writes a small CNN from a few examples
#
# Give a transformer the support set of a 20-way Omniglot episode and let it *write the weights* of a tiny 8-channel
# CNN that then classifies the query images. We load the shipped model, look at an episode and its predictions,
# compare it with Prototypical Networks and fine-tuning on the same CNN, look at the generated weights and at what
# the weight tokens attend to, add unlabeled images, and map the generated classifiers of many episodes.

# %% tags=["parameters"]
profile = "default"  # [smoke|default|full] how many test episodes: seconds (tests), the report, or paper-like
seed = 0  # random seed for the test episodes and everything else random here
train = False  # retrain the HyperTransformer and ProtoNet at this profile's size instead of loading the shipped ones

# %%
import workbench.notebook

S = workbench.notebook.setup(profile, seed)
S

# %% [markdown]
# ## The idea
#
# A few-shot *learner* maps a support set $T=\{(x_i, c_i)\}$ to the weights $\theta$ of a model $f(x;\theta)$.
# HyperTransformer (Zhmoginov, Sandler, Vladymyrov, ICML 2022) makes that learner a transformer encoder, one per
# generated layer. Its input is a set of tokens:
#
# * one per support image: $[\,\xi(c_i)\,;\ h^\ell(z_i^\ell)\,;\ s(x_i)\,]$ — a learned **label embedding** (one per
#   class of the episode, plus one meaning *unlabeled*), **local features** of what layer $\ell$ receives, and
#   **shared features** of the raw image;
# * one learned **placeholder** per output channel of the layer (per class for the logits layer).
#
# The transformer's outputs at the placeholders are read out as the layer's weights ("output allocation"). Without
# positional encodings the result cannot depend on the order of the support images. Layers are generated in order,
# the support images flowing through each generated layer before the next is written; the query cross-entropy of the
# generated CNN trains everything end to end. The target CNN is 4 × [3×3 conv → ReLU → max-pool → BatchNorm] →
# logits; at 8 channels and 28×28 inputs the logits layer sees just 8 numbers per image.

# %%
import inspect
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.express as px
import torch

from workbench import viz
from workbench.data import load_omniglot
from workbench.methods import hypertransformer as ht

torch.set_num_threads(1)  # tiny operations: one thread is fastest on a shared machine
omniglot = load_omniglot(28)
if train:
    folder = Path(tempfile.mkdtemp(prefix="ht-"))
    model = ht.load_model(ht.train_checkpoint(S.profile, S.seed, folder))
    protonet = ht.load_model(ht.train_protonet_checkpoint(S.profile, S.seed, folder))
else:
    model, protonet = ht.load_hypertransformer(), ht.load_protonet()
print(model.meta["command"])
print(model)
pd.DataFrame({name: {k: v for k, v in m.meta["metrics"].items() if not isinstance(v, dict)} |
              {f"{k} (%)": round(100 * v["mean"], 1) for k, v in m.meta["metrics"].items() if isinstance(v, dict)}
              for name, m in {"HyperTransformer": model, "ProtoNet": protonet}.items()})

# %% [markdown]
# The shipped model generates only the logits layer (the paper finds that sufficient from 8 channels on); its four
# conv layers and all BatchNorm parameters are learned as usual. It was trained on 20-way 1-shot episodes, with up to
# two unlabeled images per class, for about 20 minutes of one CPU thread — tens of thousands of episodes, against the
# paper's four million. The training curve (validation = 50 held-out classes):

# %%
viz.training_curves(model.meta["history"], x="episodes", terms=["train_accuracy", "val_accuracy"],
                    title="HyperTransformer training (20-way 1-shot)")

# %% [markdown]
# ## An episode
#
# Test episodes draw 20 of the 423 **test** characters (never seen in training): one support image per class, three
# query images per class. The generator writes a CNN from the support row; the CNN labels the queries.

# %%
samplers = ht.omniglot_samplers(20, k_shot=1, seed=S.seed, omniglot=omniglot)
episode = samplers["test"].episode(0)
names = [omniglot.class_names[int(c)][-24:] for c in episode.classes]
viz.image_grid(episode.support_x[:, 0].numpy(), titles=[str(i) for i in range(20)], ncols=10, tile_px=56,
               title="Support set: one image per class (label 0..19)")

# %%
pred = model.predict(episode)
shown = slice(0, 30)
titles = [f"{int(p)} {'✓' if p == y else '✗ (' + str(int(y)) + ')'}" for p, y in zip(pred, episode.query_y)][shown]
print(f"query accuracy on this episode: {(pred == episode.query_y).float().mean():.0%}")
viz.image_grid(episode.query_x[shown, 0].numpy(), titles=titles, ncols=10, tile_px=56,
               title="Queries: predicted label (✓ right, ✗ wrong with the true label)")

# %% [markdown]
# ## HyperTransformer vs Prototypical Networks vs fine-tuning
#
# Same CNN, same test episodes. **ProtoNet** learns the four conv layers and classifies by distance to the class
# means; **fine-tune** trains a fresh logits layer on the support features of the ProtoNet's CNN (100 Adam steps).
# Accuracy is the mean over episodes with a 95% confidence interval. (The shipped ProtoNet trained for 5 minutes,
# the HyperTransformer for 21: see the table above.) BatchNorm uses each batch's own statistics, as
# in the official code (`bn_mode="batch"`); `bn_mode="support"` is the non-transductive alternative.

# %%
n_test = S.pick(smoke=6, default=200, full=1000)
rows = []
for shots in (1, 5):
    test = ht.omniglot_samplers(20, k_shot=shots, seed=S.seed, omniglot=omniglot)["test"]
    for name, learner in {"HyperTransformer": model, "ProtoNet": protonet,
                          "fine-tune logits": ht.FineTuneLogits(protonet)}.items():
        res = learner.evaluate(test, n_episodes=n_test if name != "fine-tune logits" else max(n_test // 4, 3))
        rows.append({"method": name, "shots": shots, "accuracy %": 100 * res.accuracy.mean,
                     "± 95% CI": 100 * res.accuracy.ci95, "episodes": res.accuracy.n,
                     "episodes/s": res.episodes_per_second})
results = pd.DataFrame(rows).round(2)


def accuracy(method, shots):
    return float(results.loc[(results["method"] == method) & (results["shots"] == shots), "accuracy %"].iloc[0])


S.record("ht_1shot_accuracy_pct", accuracy("HyperTransformer", 1), headline=True)
S.record("ht_5shot_accuracy_pct", accuracy("HyperTransformer", 5), headline=True)
S.record("protonet_1shot_accuracy_pct", accuracy("ProtoNet", 1))
S.record("finetune_1shot_accuracy_pct", accuracy("fine-tune logits", 1))
S.record("accuracy_table", results[["method", "shots", "accuracy %", "± 95% CI", "episodes"]])
results

# %% [markdown]
# The paper reports 87.2% (1-shot) and 94.7% (5-shot) for an 8-channel HyperTransformer after 4 million training
# episodes. The shipped model had 7.5% of that training (300,000 episodes, 5.2 CPU-hours); `benchmarks/bench_hypertransformer.py` measures where
# each method lands for a given CPU budget. Note that the shipped HyperTransformer was trained on 1-shot episodes only:
# five labelled images per class are a support set it has never seen, and it still uses them.

# %% [markdown]
# ## What the generator wrote
#
# With only the logits layer generated, a CNN is its learned conv stack plus a 20 × (8 + 1) matrix written for the
# episode: one row per class (8 weights and a bias). Two different episodes get two different matrices; the rows
# resemble the classes' features, as the paper's construction (a row = the mean feature of that class) suggests.

# %%
other = samplers["test"].episode(1)
mats, titles = [], []
for i, ep in enumerate((episode, other)):
    w = model.generate(ep)
    mats.append(torch.cat([w.logits_weight, w.logits_bias[:, None]], 1).detach().numpy())
    feats = model.cnn.features(ep.support_x, w.conv)[0].detach()
    cos = torch.nn.functional.cosine_similarity(w.logits_weight.detach(), feats, dim=1)
    titles.append(f"episode {i}: cos(row, class feature) {cos.mean():.2f}")
    print(titles[-1])
viz.image_grid(np.stack(mats), titles=titles, ncols=2, tile_px=240,
               title="Generated logits layers (rows: classes; columns: 8 weights + bias)")

# %% [markdown]
# ## Where the weight tokens look
#
# The attention of each layer of the logits transformer, averaged over heads: rows are the 20 weight placeholders
# (one per class), columns the 20 support images sorted by label. A diagonal means "the weights of class *i* are read
# from the image labelled *i*" — the mechanism of the paper's section 3.2.

# %%
w = model.generate(episode, need_attention=True)
maps = w.attention["logits"]
n = 20
fig = px.imshow(np.stack([m[:n, n:2 * n].numpy() for m in maps]), facet_col=0, color_continuous_scale="Viridis",
                labels={"x": "support image (label)", "y": "weight token (class)", "color": "attention"},
                title="Attention of the weight tokens over the support samples, per transformer layer")
fig.for_each_annotation(lambda a: a.update(text=f"layer {int(a.text.split('=')[1]) + 1}"))
fig

# %%
diag = [float(m[:n, n:2 * n].diagonal().sum() / m[:n, n:2 * n].sum()) for m in maps]
S.record("attention_on_own_class_last_layer", diag[-1])
pd.DataFrame({"layer": [1, 2, 3], "share of support attention on the own class": np.round(diag, 3),
              "uniform would be": 1 / n})

# %% [markdown]
# ## Unlabeled images
#
# Unlabeled images enter the support set with the *unlabeled* label token; nothing else changes — the generator
# learns to use them only because it helps the query loss. The shipped model saw 0–2 unlabeled images per class
# during training (introduced gradually: masked with a probability decaying from 1 to 0.3). Below: test accuracy with
# U unlabeled images per class, on the same episodes (the labelled support is identical; only U changes).

# %%
n_semi = S.pick(smoke=4, default=200, full=1000)
semi = []
for u in (0, 1, 2, 4):
    sampler = ht.omniglot_samplers(20, k_shot=1, n_unlabeled=u, seed=S.seed, omniglot=omniglot)["test"]
    res = model.evaluate(sampler, n_semi)
    semi.append({"unlabeled per class": u, "accuracy %": 100 * res.accuracy.mean, "± 95% CI": 100 * res.accuracy.ci95})
semi = pd.DataFrame(semi).round(2)
semi["gain vs U=0"] = (semi["accuracy %"] - semi["accuracy %"][0]).round(2)
S.record("semi_supervised_gain_u4_pct", float(semi["gain vs U=0"].iloc[-1]))
semi

# %% [markdown]
# The sampler draws the labelled support and the queries before the unlabeled images, so every row above uses the
# *same* episodes — same classes, same support, same queries — and differs only by the added unlabeled images: the
# comparison is paired, and a steady rise with U is the generator using images nobody labelled. The paper measures its
# semi-supervised gains on tieredImageNet (56.0 → 61.5% with 9 unlabeled images per class).

# %% [markdown]
# ## A map of generated classifiers
#
# Each generated logits row is a 9-number classifier for one character. Collect them over many test episodes and
# project them (t-SNE): rows written for characters of the same alphabet, in different episodes and slots, should
# land near each other if the generator reads the character rather than the slot.

# %%
n_map = S.pick(smoke=6, default=60, full=150)
rows, alphabet, slot = [], [], []
alphabets = omniglot.characters["alphabet"].to_numpy()
with torch.no_grad():
    for i in range(n_map):
        ep = samplers["test"].episode(100 + i)
        w = model.generate(ep)
        rows.append(torch.cat([w.logits_weight, w.logits_bias[:, None]], 1).numpy())
        alphabet += [alphabets[int(c)] for c in ep.classes]
        slot += list(range(20))
rows = np.concatenate(rows)
points = viz.project(rows, "tsne" if S.profile != "smoke" else "pca", seed=S.seed)
top = pd.Series(alphabet).value_counts().index[:10]
shown_alphabet = [a if a in set(top) else "other" for a in alphabet]
print(f"{len(rows)} generated rows; same-alphabet neighbour agreement {viz.neighbour_agreement(points, alphabet):.2f}, "
      f"same-slot {viz.neighbour_agreement(points, slot):.2f}")
viz.embedding_scatter(points, shown_alphabet, color_name="alphabet", hover={"slot": slot},
                      title="Generated logits rows across test episodes (t-SNE), by alphabet")

# %% [markdown]
# ## The code
#
# Everything above is `workbench.methods.hypertransformer`. The heart of it — how the support set becomes weights:

# %%
print(inspect.getsource(ht.HyperTransformer.generate))

# %% [markdown]
# ## Take-aways
#
# * A transformer can write a working few-shot classifier in one forward pass, and the attention maps show how: the
#   weight token of class *i* reads the support image labelled *i*.
# * The shipped models are not an equal-budget comparison: the HyperTransformer trained for 5.2 CPU-hours
#   (300,000 episodes), the ProtoNet for 5 minutes (6,000 episodes, where its validation accuracy had flattened).
#   The paper's 87.2% needed 4 million episodes; `benchmarks/bench_hypertransformer.py` compares the methods at equal
#   CPU budgets.
# * Unlabeled images need no new loss, only a token that says "no label".
