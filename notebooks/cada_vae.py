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
# # CADA-VAE: generalized zero- and few-shot learning with aligned VAEs
#
# Train cross- and distribution-aligned VAEs (Schönfeld et al., CVPR 2019) and watch images and class descriptions meet in one latent space.

# %% tags=["parameters"]
profile = "default"  # [smoke|default|full] how big a run: seconds (tests), the report, or paper scale
seed = 0  # random seed: digits-7seg's unseen digits and splits, initialisation, batches, classifier
dataset = "digits-7seg"  # [digits-7seg|digit-styles|CUB-vgg|CUB|AWA1|AWA2|SUN|APY|synthetic-CUB|synthetic-AWA1|synthetic-AWA2|synthetic-SUN|synthetic-APY] real digits, digit/style pairs, real CUB bird features (CUB-vgg) or an xlsa17 benchmark from the data root, or SYNTHETIC features
side_info = "attributes"  # [attributes|glyph|attributes+glyph|sent|attributes+sent] class side information, modalities joined by +
faithful = True  # True: the official code's sampler (sigma from exp(logvar), one noise value per sample)
classifier = "released"  # [released|validation] final-classifier epochs: the official table (CUB 23 GZSL / 22 ZSL; 30 elsewhere), or chosen on the validation split (trains a second model there)
projection = "tsne"  # [tsne|umap|pca] how the 64-d latent space is drawn in 2-D

# %%
import workbench.notebook

S = workbench.notebook.setup(profile, seed)
S

# %% [markdown]
# ## The idea
#
# Generalized zero-shot learning (GZSL) must recognise images of *seen* classes (with training images) and of
# *unseen* classes, of which only a description is known — an attribute vector, a sentence embedding. CADA-VAE
# learns one VAE per modality: an encoder $E_1$ for image features $x^{(1)}$ and an encoder $E_2$ for the class
# side information $x^{(2)}$, both into a shared 64-d latent space, and a decoder $D_i$ back for each. Training
# sees only seen classes and minimises
#
# $$
# \mathcal{L} = \underbrace{\sum_i |x^{(i)} - D_i(z_i)|_1 + \beta\, \mathrm{KL}\big(q(z\mid x^{(i)})\,\|\,\mathcal{N}(0, I)\big)}_{\text{VAE}}
#  + \gamma \underbrace{\sum_{i \ne j} |x^{(j)} - D_j(z_i)|_1}_{\text{cross-alignment}}
#  + \delta \underbrace{\sum_{i<j} \Big(\lVert \mu_i - \mu_j \rVert_2^2 + \lVert \sigma_i - \sigma_j \rVert_2^2\Big)^{1/2}}_{\text{distribution alignment}}
# $$
#
# Cross-alignment asks each modality's code to *reconstruct the other modality* (an image's code must decode into
# its class's attributes, and the attributes' code into the image); distribution alignment is the 2-Wasserstein
# distance between the two diagonal Gaussians $q(z\mid x^{(1)})$ and $q(z\mid x^{(2)})$ of the same sample. $\beta$,
# $\gamma$, $\delta$ grow linearly over the first epochs (warm-up), exactly as in the official code.
#
# Then the generative trick: a plain softmax classifier is trained **in the latent space** on samples of
# $q(z\mid x)$ — 200 per seen class from its training images and 400 per unseen class from its *side information
# alone* — and classifies a test image by its latent mean $\mu_1(x)$. Unseen classes thus get training data,
# which removes most of the bias towards seen classes that embedding methods suffer from.
#
# The whole method lives in `workbench/methods/cada_vae.py`; this notebook only calls it.

# %%
import inspect

from workbench.methods import cada_vae
from workbench.methods.cada_vae import CADAVAE, CADAVAEConfig

print(inspect.getsource(CADAVAE._loss_terms))

# %% [markdown]
# ## Data
#
# `dataset` picks the data. **digits-7seg** (the default) is real and always present: scikit-learn's 1,797
# handwritten 8×8 digits, 64 pixel values as image features, and as side information each digit's look on a
# seven-segment display (which of the 7 segments are lit, the glyph's closed loops and mirror symmetries). Three
# digits (drawn with `seed`) are unseen.
#
# **CUB-vgg** is the method's home ground with real image features: the 11,788 photographs of CUB-200-2011's 200
# bird species as VGG fc7 features (4096-d), xlsa17's 312 attributes and 1024-d sentence embeddings per class, and
# xlsa17's proposed class split (150 seen / 50 unseen species). The features cannot be shipped (no licence): import
# them once with `workbench data import cub-vgg-fc7 /path/to/cub_vgg_fc7` or `workbench data fetch cub-vgg-fc7`.
# Two caveats travel with every number on them: the backbone is VGG fc7, not the paper's ResNet-101 (2048-d), so
# the numbers are not the paper's; and the image order inside a class is unknown, so the seen-class images are split
# by a seeded stratified draw in xlsa17's proportions (`seed` picks it) instead of xlsa17's own per-image split.
#
# The xlsa17 benchmarks (CUB, AWA1, AWA2, SUN, APY) run the paper's protocol unchanged when their ResNet-101
# features are in the data root. A missing dataset is an error naming the `workbench data import` command — never
# generated data in its place. `synthetic-*` are **synthetic** features at a benchmark's real scale, for timing only.

# %%
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from workbench.data.cub_vgg import bird_name
from workbench.methods.gzsl_data import is_paper_benchmark, is_real_image_features, resolve_gzsl_dataset

data = resolve_gzsl_dataset(dataset, seed=S.seed)
real_features = is_real_image_features(dataset)
names = [bird_name(n) for n in data.class_names] if data.name == "CUB-vgg" else list(data.class_names)
if data.synthetic:
    display(Markdown(f"**SYNTHETIC DATA** — {data.description}. Every number below says nothing about the real "
                     f"{dataset.removeprefix('synthetic-')} benchmark."))
data

# %%
role = np.where(np.isin(np.arange(data.n_classes), data.unseen_classes), "unseen", "seen")
if data.n_classes <= 20:
    table = pd.DataFrame(data.class_attributes, columns=data.attribute_names or None, index=data.class_names)
    table.insert(0, "role", role)
    display(table.style.format(precision=0).set_caption("Class side information (attributes) and roles"))
print(f"{len(data.seen_classes)} seen / {len(data.unseen_classes)} unseen classes; unseen: "
      f"{', '.join(names[c] for c in data.unseen_classes[:20])}{' ...' if len(data.unseen_classes) > 20 else ''}")
if data.description:
    display(Markdown(f"*{data.description}*"))

# %% [markdown]
# ## Settings
#
# The official settings throughout: latent size 64, hidden sizes 2048→1560 / 64→1660 (images) and A→1450 / 64→665
# (side information), 100 epochs of random batches of 50, Adam (lr 1.5·10⁻⁴, AMSGrad), the official warm-ups and the
# official final classifier. On real image features (CUB-vgg, the xlsa17 benchmarks) that is all: the released
# code's recipe, unchanged (`loss_weight_scale=1.0`, the default). On the 64-d digit data one adjustment is needed,
# `loss_weight_scale="auto"`, which scales $\beta$ and $\delta$ by $D/2048$: the reconstruction errors are *sums* over
# the $D$ feature dimensions while KL and the Wasserstein term are sums over the 64 latent dimensions, so with 64-d
# pixel features the official $\beta, \delta$ would outweigh reconstruction 32 times more than in the paper and the
# posterior collapses (σ ≈ 0.97, class means 0.01–0.3 apart on digits-7seg, seen accuracy sometimes 0). On CUB-vgg's
# 4096-d features the same rule would *double* them, and that costs validation H (`benchmarks/results/cub.md`).
#
# The final classifier trains for the official table's number of epochs (`classifier = "released"`), or for the
# number chosen on the validation split (`classifier = "validation"`: a second model is trained on the validation
# split, its classifier scored after every epoch, the best 3-epoch average of validation H picked; the test split is
# only read to report).

# %%
epochs = S.pick(smoke=1 if real_features else 2, default=100, full=100)
weight_scale = 1.0 if real_features else "auto"  # the released recipe on real features; D/2048 on 64-d digits
config = CADAVAEConfig(epochs=epochs, seed=S.seed, faithful=faithful, side_info=tuple(side_info.split("+")),
                       loss_weight_scale=weight_scale, classifier_epochs=S.pick(smoke=3, default=None, full=None),
                       num_threads=1 if data.feature_dim <= 256 else None)  # small matrices: one thread is fastest
pd.Series({k: str(v) for k, v in config.__dict__.items()}, name="value").to_frame()

# %%
import plotly.express as px

from workbench.methods.cada_vae import select_classifier

choice = None
if classifier == "validation":
    validation = data.validation()
    val_model = CADAVAE(config).fit(validation)
    choice = select_classifier(val_model, validation, max_epochs=S.pick(smoke=4, default=60, full=60))
    curves = choice.curves
    fig_sel = px.line(curves, x="epoch", y="criterion", color="mode", markers=True,
                      title=f"Validation: 3-epoch mean of H (GZSL) and ZSL accuracy per classifier epoch; "
                            f"chosen {choice.gzsl_epochs} (GZSL) and {choice.zsl_epochs} (ZSL)")
    fig_sel.update_layout(template="plotly_white", height=360).show()

# %% [markdown]
# ## Training
#
# The callback records the latent space once before the first update, so we can compare it with the trained one
# below.

# %%
from workbench.methods.cada_vae import latent_points

many = data.n_classes > 50  # CUB: 200 classes, so fewer points per class keep the projection quick
n_images = S.pick(smoke=2, default=10, full=20) if many else S.pick(smoke=6, default=40, full=60)
n_side = S.pick(smoke=2, default=5, full=10) if many else S.pick(smoke=4, default=20, full=30)
snapshots = {}


def snapshot(model, epochs_done):
    if epochs_done == 0:
        snapshots["before training"] = latent_points(model, data, images_per_class=n_images,
                                                     side_samples_per_class=n_side, seed=S.seed)


model = CADAVAE(config).fit(data, callback=snapshot)
snapshots["after training"] = latent_points(model, data, images_per_class=n_images, side_samples_per_class=n_side,
                                            seed=S.seed)
model.history_.to_frame().tail(3)

# %% [markdown]
# ### Loss terms and warm-up weights
#
# Each term is the mean over an epoch's batches of its sum over the batch (as the official code logs it). Watch the
# cross-reconstruction and the Wasserstein distance fall as their weights $\gamma$ and $\delta$ switch on.

# %%
from workbench.viz import training_curves

terms = ["reconstruction", "kl", "cross_reconstruction", "distribution_alignment"]
training_curves(model.history_, terms=terms, log_y=True, title="Loss terms per epoch (log scale)").show()
weights = ["weight_beta", "weight_cross_reconstruction", "weight_distribution_alignment"]
training_curves(model.history_, terms=weights, title="Warm-up: β, γ, δ per epoch (after loss_weight_scale)",
                height=360).show()

# %% [markdown]
# ## Generalized zero-shot results
#
# S: per-class accuracy on test images of seen classes, U: on test images of unseen classes, both with the argmax
# over **all** classes; H: their harmonic mean; ZSL: the argmax over unseen classes only. Beside them: the direct
# attribute-regression baseline (ridge regression from image features to attributes, nearest class by cosine) and,
# for a paper benchmark, the paper's numbers (Table 2, mean of ten runs).

# %%
from workbench.methods.cada_vae import PAPER_RESULTS, attribute_regression_baseline

from workbench.methods.eszsl import ESZSL

if choice is not None:
    scores = model.evaluate(data, epochs=choice.gzsl_epochs, samples=choice.samples())
    zsl = model.evaluate(data, mode="zsl", epochs=choice.zsl_epochs)
else:
    scores, zsl = model.evaluate(data), model.evaluate(data, mode="zsl")
label = "validation-chosen classifier" if choice is not None else f"{model.classifier_epochs('gzsl', 0)} classifier epochs"
rows = {f"CADA-VAE (this run, {label})": {**scores.as_percent(), "ZSL classifier": round(100 * zsl.ZSL, 2)},
        "attribute regression": attribute_regression_baseline(data).as_percent()}
if real_features:  # the closed-form linear baseline, regularisers chosen on validation
    rows["ESZSL (validation-chosen)"] = ESZSL.select(data).evaluate(data).as_percent()
paper = PAPER_RESULTS.get(data.name.upper()) if is_paper_benchmark(dataset) else None
if paper:
    rows["paper (CADA-VAE, Table 2)"] = paper
if data.name == "CUB-vgg":
    rows["paper, CUB (ResNet-101 features: another backbone)"] = PAPER_RESULTS["CUB"]
results = pd.DataFrame(rows).T[["S", "U", "H", "ZSL", "ZSL classifier"]]
chance = pd.Series({"U": 100 / data.n_classes, "ZSL": 100 / len(data.unseen_classes)}, name="chance (uniform guess)")
display(pd.concat([results, chance.to_frame().T]).style.format(precision=1, na_rep="–"))
S.record("gzsl_H_pct", scores.as_percent()["H"], headline=True)
S.record("zsl_pct", round(100 * zsl.ZSL, 2), headline=True)
S.record("results_table", results.round(2))

# %% [markdown]
# ## The shared latent space
#
# Every point is one latent code, projected from 64-d to 2-D: held-out test images (their latent means) and samples
# from the side-information encoder, coloured by class; the marker says image or side information, seen or unseen.
# Before training the two encoders scatter unrelated codes; after training an image class should sit on its own
# side-information samples — for unseen classes too, if zero-shot transfer works. Click legend entries to hide
# groups; hover for details.

# %%
from workbench.viz import compare_scatter, project

(z_before, points), (z_after, _) = snapshots["before training"], snapshots["after training"]
points["name"] = [names[c] for c in points["class_id"]]
maps = {name: project(z, method=projection, seed=S.seed) for name, (z, _) in snapshots.items()}
if many:  # 200 bird species: colour by seen / unseen, the species on hover
    compare_scatter(maps, color=points["split"], symbol=points["modality"], color_name="split", align=True,
                    hover={"species": points["name"], "modality": points["modality"]},
                    title=f"Latent space of {data.name}: images and side information of all {data.n_classes} "
                          f"species ({projection})").show()
else:
    compare_scatter(maps, color=points["name"], symbol=points["kind"], color_name="class", align=True,
                    hover={"modality": points["modality"], "split": points["split"]},
                    title=f"Latent space of {data.name}: images and side information ({projection})").show()

# %% [markdown]
# **Linked: image latents vs side-information latents.** The trained latent space again, one map per modality (the
# same projection, so positions compare), linked by class: drag a box (or pick the lasso) over some image latents
# and every latent of their classes lights up in both maps — do the images' side-information samples sit where the
# images do? The summary counts the selection per class and split, and measures how spread it is in each map
# against random sets of the same size (below 1 = grouped). Double-click a map to clear; `linked.selection` holds
# the selected points (rows of `points`) and can be set from code. It starts with the first unseen class. The
# linking works in the HTML report too (no kernel).

# %%
from workbench.viz import LinkedExplorer

colours = {"class": points["name"].tolist(), "split": points["split"].tolist()}
if many:  # 200 species: colour by split first, the species second
    colours = {"split": colours["split"], "class": colours["class"]}
linked = LinkedExplorer({"after training": z_after}, facet=points["modality"], link_by="class", color=colours,
                        names=points["name"].tolist(), hover={"modality": points["modality"].tolist()},
                        methods=(projection,), seed=S.seed,
                        title=f"{data.name}: image latents vs side-information latents, linked by class")
linked.selection = np.flatnonzero(points["class_id"].to_numpy() == data.unseen_classes[0])
linked

# %%
if many:  # a few species, so that colours can tell them apart: six seen and six unseen
    shown = np.concatenate([data.seen_classes[:6], data.unseen_classes[:6]])
    keep = points["class_id"].isin(shown).to_numpy()
    sub = {name: xy[keep] for name, xy in {"after training": maps["after training"]}.items()}
    compare_scatter(sub, color=points["name"][keep], symbol=points["kind"][keep], color_name="species",
                    hover={"split": points["split"][keep]},
                    title="Twelve species (6 seen, 6 unseen): do images sit on their own side information?").show()

# %%
# How far is each class's image cloud from its own side-information cloud, versus the nearest other class's?
after = points.assign(**{f"z{i}": z_after[:, i] for i in range(z_after.shape[1])})
centres = after.groupby(["modality", "class"]).mean(numeric_only=True).drop(columns="class_id")
images = centres.loc["image"]
side = centres.loc[config.side_info[0]]
dist = np.linalg.norm(images.to_numpy()[:, None] - side.to_numpy()[None], axis=-1)
nearest = pd.DataFrame({"split": after.drop_duplicates("class").set_index("class").loc[images.index, "split"],
                        "to own side info": dist.diagonal(),
                        "nearest side info": side.index[dist.argmin(1)]}, index=images.index)
nearest["own is nearest"] = nearest["nearest side info"] == nearest.index
display(nearest.groupby("split")["own is nearest"].mean().rename("share of classes whose image centre is nearest "
                                                               "its own side information").to_frame())
(nearest[nearest["split"] == "unseen"].head(15) if many else nearest).style.format(precision=2).set_caption(
    "Image-cloud centre → side-information centres (latent space, 64-d)" + (", first 15 unseen species" if many else ""))

# %% [markdown]
# ## Ablation: what each alignment does
#
# The seed's Table 1 on CUB: distribution alignment only (DA-VAE), cross-alignment only (CA-VAE), both (CADA-VAE).
# Here on this run's data, each variant trained with the same settings and seed.

# %%
from workbench.methods.cada_vae import PAPER_ABLATION_CUB, compare_variants
from workbench.notebook import benchmark_results

names_of = {"cada": "CADA-VAE", "ca": "CA-VAE (cross-alignment only)", "da": "DA-VAE (distribution only)"}
if not many or S.profile == "full":  # two more trainings: seconds on digits, a quarter hour each on CUB
    others = compare_variants(data, variants=("ca", "da"), seeds=(S.seed,), config=config)
    ablation = pd.concat([pd.DataFrame([{"variant": "cada", **scores.as_percent()}]), others]).set_index("variant")
    ablation = ablation[["S", "U", "H", "ZSL"]]
    for key in ("S", "U", "H"):
        ablation[f"paper CUB {key}"] = [PAPER_ABLATION_CUB[v][key] for v in ablation.index]
    display(ablation.rename(index=names_of).style.format(precision=1))
else:  # on CUB at the default profile: the benchmark's measured rows (several seeds), not a new training
    saved = benchmark_results("cub")
    if saved is None:
        print("no saved benchmark results here: run `python benchmarks/bench_cub.py ablations`, or profile='full'")
    else:
        table = pd.DataFrame([{"model": r["model"], "classifier": r["classifier"], "seeds": r["n_seeds"],
                               **{k: f"{r[k][0]:.1f} ± {r[k][1]:.1f}" for k in ("S", "U", "H", "ZSL") if k in r}}
                              for r in saved["summary"] if r["model"].startswith("CADA-VAE")])
        display(Markdown("Measured by `benchmarks/bench_cub.py` on CUB-vgg (mean ± std over seeds; "
                         "`benchmarks/results/cub.md`):"))
        display(table)

# %% [markdown]
# ## Few-shot: k images of every unseen class
#
# With $k$ labelled images of each unseen class (taken out of the test set), the classifier also trains on their
# latent codes (200 per class, tiled) next to 200 side-information samples. The VAEs stay as trained; only the
# classifier changes.

# %%
import plotly.express as px

from workbench.methods.cada_vae import few_shot_curve

shots = S.pick(smoke=(0, 2), default=(0, 1, 2, 5, 10), full=(0, 1, 2, 5, 10, 20))
curve = few_shot_curve(model, data, shots=shots)
fig = px.line(curve.melt(id_vars="shots", value_vars=["S", "U", "H"], var_name="metric", value_name="accuracy %"),
              x="shots", y="accuracy %", color="metric", markers=True,
              title=f"Few-shot GZSL on {data.name}: accuracy vs k images per unseen class")
fig.update_layout(template="plotly_white", height=420).show()
curve

# %% [markdown]
# ## What to make of it (digits-7seg and digit-styles)
#
# Numbers from `benchmarks/bench_cada_vae.py`: 5 seeds, each with its own 3 unseen digits, mean ± std in %
# (`benchmarks/results/cada_vae.md`). Every setting was chosen on the **validation** split — two seen digits playing
# the unseen role, five training digits — and the test split was only looked at to report it.
#
# | split | model | S | U | H | ZSL | ZSL chance |
# |---|---|---:|---:|---:|---:|---:|
# | validation | CADA-VAE | 96.0 ± 1.3 | 21.2 ± 16.3 | 31.6 ± 21.6 | 42.6 ± 11.9 | 50 |
# | validation | attribute regression | 96.4 ± 2.4 | 0.8 ± 1.3 | 1.6 ± 2.6 | 50.7 ± 9.7 | 50 |
# | test | CADA-VAE | 97.3 ± 1.0 | 5.2 ± 2.8 | 9.8 ± 4.9 | 39.1 ± 10.4 | 33.3 |
# | test | attribute regression | 88.8 ± 4.9 | 1.3 ± 0.9 | 2.5 ± 1.8 | 32.9 ± 6.7 | 33.3 |
#
# - **Seen digits are learnt well** (S ≈ 96–97%).
# - **Zero-shot transfer is weak here, and we say so.** CADA-VAE predicts an unseen digit more often than the
#   regression baseline, which almost never does (the seen-class bias generative GZSL methods were made to remove),
#   yet most unseen test images still go to a seen digit (U 5.2%), and telling the unseen digits apart is barely
#   above chance (ZSL 39.1 ± 10.4% vs 33.3%). Nothing we tried on validation changed that beyond the seed-to-seed
#   spread — hidden sizes, latent 16, glyph side information, L2-normalised attributes, the official sampler, other
#   β/δ scales, classifier epochs — and simpler methods (ridge, DAP-style attribute prediction, a linear map from
#   attributes to class-mean images) sit at chance too. The module docstring lists the numbers.
# - **Why**: five to seven training classes are fewer than the ten attributes, so nothing pins down what an unseen
#   attribute *combination* looks like; and seven-segment attributes describe the display glyph, not the
#   handwriting (a handwritten 1 is a centred stroke; its glyph lights the two right-hand segments). CADA-VAE's
#   zero-shot strength needs many seen classes and informative side information (CUB: 150 seen classes, 312
#   attributes, 1024-d sentence embeddings).
# - **The ablation differs from the paper's CUB table**: cross-alignment alone never predicts an unseen digit
#   (U = 0 on every seed); the unseen predictions come from distribution alignment.
# - **Few-shot learning works as it should**: on test (seeds 0–2) H rises from 7–18% with no image of the unseen
#   digits to 53–62% with one image per unseen digit, 77–79% with two and 89–94% with ten.
#
# **digit-styles** (`dataset = "digit-styles"`): the same images drawn upright, mirrored, rotated and negative; a
# class is a (digit, style) pair and each digit's unseen style makes 10 unseen pairs of *seen* primitives (chance
# 10%). Test, 5 seeds: CADA-VAE ZSL 27.3 ± 3.7% against the regression baseline's 19.5 ± 4.7%, and here the
# paper's ablation order holds (CA only 17.3 ± 8.0%, DA only 21.5 ± 6.4%, both together best). In GZSL, though,
# unseen-pair images still go to a seen pair sharing their digit or style (U 0.1%): with 30 seen classes this close
# to every unseen one, 400 side-information samples per unseen class do not pull the classifier's boundary over.
# TAFE-Net, which scores each (image, class description) pair directly, reaches ZSL 41.3 ± 5.5% on the same data.
#
# **CUB-vgg** (`dataset = "CUB-vgg"`: real photographs of 200 bird species, VGG fc7 features, 150 seen / 50 unseen)
# is where the method shows what it is for. Test split, seed 0 (`benchmarks/results/cub.md`): with the released
# classifier settings S 62.8 / U 33.8 / **H 44.0**, ZSL 54.6 — the released code on the same features and split
# reports H 43.5 — and with the classifier's epochs chosen on the validation split (`classifier = "validation"`)
# S 46.3 / U 49.6 / **H 47.9**, ZSL 52.8; the closed-form ESZSL baseline reaches H 12.1, attribute regression 11.7.
# Unlike on the digits, unseen birds are recognised from their 312 attributes alone at about 27 times chance (ZSL,
# chance 2%), and the generated unseen-class samples pull GZSL U from ESZSL's 7% to 34–50%. The seen-class bias
# that remains grows with every classifier epoch (validation U falls from ~54% to ~22% between epochs 4 and 30), which
# is why fewer, validation-chosen epochs help. The papers' ResNet-101 numbers (H 52.4) use another backbone.
#
# With a paper benchmark's features imported (`workbench data import ...`), set `dataset = "CUB"` (or AWA1, AWA2,
# SUN) to run the method at the scale it was designed for, its numbers beside the paper's.
