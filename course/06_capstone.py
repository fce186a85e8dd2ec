# %% [markdown]
# # Lesson 6 — Capstone: which method for which problem, compared on the same digits
#
# The five methods of this course answer different questions. Task2Vec says how *similar two tasks* are;
# CADA-VAE and TAFE-Net recognise classes *from a description* (zero-shot); HyperTransformer learns a classifier
# from *a few labelled images* (few-shot); TTNet builds a model for a task *without labels* from the models of
# related tasks. This lesson puts them side by side: what each needs as input, what it outputs, and then, on one
# shared dataset, when the zero-shot route wins and when a few labelled images win.
#
# The shared data is the package's embedded **digits-7seg** (1797 real handwritten digits of 8x8 pixels, no
# download): three digits are *unseen* (no method trains on them), and every digit has a description, the ten
# attributes of its seven-segment glyph (which segments are lit, closed loops, symmetries).
#
# After each exercise run its `grader.check(...)` cell: the public checks run offline, in seconds. Hidden checks
# run when your notebook is graded.

# %% tags=["parameters"]
profile = "default"  # [smoke|default|full] the lessons are small: every profile runs the same exercises
seed = 0  # random seed (numpy, torch, random) for everything random in this lesson

# %%
import workbench.notebook

S = workbench.notebook.setup(profile, seed)

# %%
import numpy as np

from workbench.data import load_digits_7seg
from workbench.evaluation import per_class_accuracy

data = load_digits_7seg(seed=0)  # 7 seen digits to train on, 3 unseen ones
features, y = np.asarray(data.features), np.asarray(data.labels)  # (1797, 64) pixel values 0..16, digit 0..9
unseen = np.asarray(data.unseen_classes)
test_unseen = np.asarray(data.test_unseen_idx)  # every image of an unseen digit
print(data)
print("unseen digits:", unseen, "| attributes:", data.attribute_names)

# %% [markdown]
# ## 1. What each method needs, and what it gives back
#
# | input | |
# |---|---|
# | `"A"` | labelled images of the task itself, and a fixed probe network |
# | `"B"` | labelled images of the seen classes, and a description (attributes) of every class, seen and unseen |
# | `"C"` | many training episodes, then a few labelled images of each new class (a support set) |
# | `"D"` | trained models of related tasks, and a task-correlation matrix Γ (e.g. from crowd votes) |
#
# | output | |
# |---|---|
# | `"a"` | a vector per task; distances between tasks |
# | `"b"` | a latent space shared by images and descriptions, and a classifier trained in it |
# | `"c"` | the weights of the prediction network, generated from the task's description |
# | `"d"` | the weights of a CNN, generated from the support set |
# | `"e"` | a model for a task without labels: a Γ-weighted combination of the other tasks' models |

# %% [raw]
# # BEGIN QUESTION
# name: q1
# points: 3

# %% [markdown]
# **Exercise 1.** Write `card(method)` for `method` in `METHODS`: return `(input, output)`, one letter from each
# table. Two methods may share an input.

# %%
METHODS = ["task2vec", "cada_vae", "tafe_net", "hypertransformer", "ttnet"]

# %% [raw]
# # BEGIN SOLUTION

# %%
def card(method: str) -> tuple[str, str]:
    """(what the method needs, what it outputs) as letters of the two tables."""
    # BEGIN SOLUTION
    cards = {"task2vec": ("A", "a"), "cada_vae": ("B", "b"), "tafe_net": ("B", "c"),
             "hypertransformer": ("C", "d"), "ttnet": ("D", "e")}
    return cards[method]
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
from workbench.course_checks import expect_tuple
expect_tuple(card("task2vec"), 2, "card('task2vec')")

# %%
from workbench.course_checks import expect_answer, expect_tuple
for _m in METHODS:
    expect_tuple(card(_m), 2, f"card({_m!r})")
    expect_answer(card(_m)[0], ["A", "B", "C", "D"], f"the input of card({_m!r})")
    expect_answer(card(_m)[1], ["a", "b", "c", "d", "e"], f"the output of card({_m!r})")

# %%
from workbench.course_checks import expect_true
_outputs = [card(_m)[1] if isinstance(card(_m), (tuple, list)) else None for _m in METHODS]
expect_true(None not in _outputs and len(set(_outputs)) == 5, f"each output belongs to exactly one method; your outputs for {METHODS} are {_outputs}.")

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
from workbench.course_checks import expect_true
_want = {"task2vec": ("A", "a"), "cada_vae": ("B", "b"), "tafe_net": ("B", "c"), "hypertransformer": ("C", "d"), "ttnet": ("D", "e")}
_wrong = [m for m in _want if tuple(card(m)) != _want[m]]
expect_true(not _wrong, f"card is wrong for {_wrong}")

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q1_why
# manual: true
# points: 1

# %% [markdown]
# **Why?** CADA-VAE and TAFE-Net need the same inputs. What does each of them do with a new class's description
# at test time, and which of the five methods could you use for a new digit of which you have no image at all?

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# CADA-VAE encodes the description into the shared latent space and trains the final classifier on latent
# samples of it (next to latents of seen images); TAFE-Net feeds the description to its meta learner, which
# generates the weights (scales) of the feature network for that class. Only these two work with no image of
# the new class (zero-shot). Task2Vec needs the task's labelled data, HyperTransformer a support set, and TTNet
# models of related tasks plus their correlations to the new one.

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## 2. The few-shot route: a few labelled images of each new digit
#
# HyperTransformer's generated logits layer behaves like a nearest-class-mean classifier (lesson 4). Here is the
# same rule without any learned network, on raw pixels: each new digit's prototype is the mean of its $k$ labelled
# support images, and a query goes to the nearest prototype,
#
# $$ \hat y(q) = \arg\min_c \lVert q - \bar x_c \rVert^2, \qquad \bar x_c = \tfrac1k \textstyle\sum_{m: y_m = c} x_m. $$

# %% [raw]
# # BEGIN QUESTION
# name: q2
# points: 3

# %% [markdown]
# **Exercise 2.** Write `nearest_mean_predict(support_x, support_y, query_x)` (numpy arrays; `support_y` holds
# digit ids such as 5, 6, 9): return the predicted digit id of every query row, shape (n_query,).

# %% [raw]
# # BEGIN SOLUTION

# %%
def nearest_mean_predict(support_x: np.ndarray, support_y: np.ndarray, query_x: np.ndarray) -> np.ndarray:
    """The digit whose support mean is nearest (squared Euclidean) to each query."""
    # BEGIN SOLUTION
    classes = np.unique(support_y)
    means = np.stack([support_x[support_y == c].mean(axis=0) for c in classes])  # (classes, d)
    distances = ((query_x[:, None, :] - means[None, :, :]) ** 2).sum(axis=-1)  # (n_query, classes)
    return classes[distances.argmin(axis=1)]
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
from workbench.course_checks import expect_shape
expect_shape(nearest_mean_predict(features[:20], y[:20], features[20:30]), (10,), "nearest_mean_predict(support_x, support_y, query_x)")

# %%
from workbench.course_checks import expect_close
expect_close(nearest_mean_predict(np.array([[0.0], [2.0], [10.0]]), np.array([5, 5, 9]), np.array([[0.5], [7.0]])), [5, 9], "nearest_mean_predict for supports 0, 2 (digit 5) and 10 (digit 9)", hint="digit 5's prototype is the mean 1.0; return digit ids (5, 9), not positions (0, 1).")

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
import types
import torch
from workbench.course_checks import expect_close
from workbench.methods.hypertransformer import ProtoNet
_rng = np.random.default_rng(7)
_sup = np.concatenate([_rng.choice(test_unseen[y[test_unseen] == c], 3, replace=False) for c in unseen])
_q = np.setdiff1d(test_unseen, _sup)
_sy = torch.as_tensor(np.searchsorted(unseen, y[_sup]))
_fake = types.SimpleNamespace(support_query_features=lambda ep: (torch.as_tensor(features[_sup]), torch.as_tensor(features[_q])))
_ref = unseen[ProtoNet.episode_logits(_fake, types.SimpleNamespace(n_way=3, support_y=_sy)).argmax(1).numpy()]
expect_close(nearest_mean_predict(features[_sup], y[_sup], features[_q]), _ref, "against the package's ProtoNet rule on unseen digits")

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %%
# The few-shot learning curve on the unseen digits: k labelled images per digit, the rest are queries;
# mean per-class accuracy over 20 random support sets per k.
def few_shot_accuracy(k: int, repeats: int = 20) -> float:
    scores = []
    for r in range(repeats):
        rng = np.random.default_rng(r)
        support = np.concatenate([rng.choice(test_unseen[y[test_unseen] == c], k, replace=False) for c in unseen])
        query = np.setdiff1d(test_unseen, support)
        pred = nearest_mean_predict(features[support], y[support], features[query])
        scores.append(per_class_accuracy(y[query], pred, unseen))
    return float(np.mean(scores))


curve = {k: few_shot_accuracy(k) for k in (1, 2, 5, 10)}
print("few-shot accuracy on the unseen digits:", {k: round(v, 3) for k, v in curve.items()})

# %% [raw]
# # BEGIN QUESTION
# name: q2_why
# manual: true
# points: 1

# %% [markdown]
# **Why?** Nearest class means on raw pixels already do well here with one image per digit. What would
# HyperTransformer add on a harder problem (Omniglot characters, natural images), and what does it cost?

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# Raw 8x8 digits of three classes are nearly separable by pixel means. On harder data the distance must be
# measured in a learned feature space, and the weights should use all the support set (other classes, unlabeled
# images), which HyperTransformer learns from many training episodes (81.5% vs ProtoNet's 73.0% on 20-way
# Omniglot with the same CNN). The cost: meta-training on tens of thousands of episodes from related classes,
# and a model whose behaviour must be inspected (lesson 4) rather than read off a formula.

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## 3. The zero-shot route: descriptions only
#
# No image of an unseen digit is used. The package's ESZSL (a closed-form linear zero-shot model, the standard
# baseline next to CADA-VAE; `workbench.methods.eszsl`) learns from the seen digits how pixels relate to
# attributes, and scores every image against every digit's description. In the ZSL protocol a test image of an
# unseen digit is given the best-scoring **unseen** digit.

# %%
from workbench.methods.eszsl import ESZSL

eszsl = ESZSL.select(data)  # regularisers chosen on the validation split (pseudo-unseen seen digits)
scores = eszsl.scores(features[test_unseen])  # (n_test_unseen, 10): compatibility with every digit
print(eszsl.gamma, eszsl.lam, scores.shape)

# %% [raw]
# # BEGIN QUESTION
# name: q3
# points: 3

# %% [markdown]
# **Exercise 3.** Write `zero_shot_predict(scores, unseen)`: for scores (n x 10) return, per row, the digit id
# among `unseen` with the highest score, shape (n,).

# %% [raw]
# # BEGIN SOLUTION

# %%
def zero_shot_predict(scores: np.ndarray, unseen: np.ndarray) -> np.ndarray:
    """argmax of the scores over the unseen digits only, as digit ids."""
    # BEGIN SOLUTION
    return unseen[scores[:, unseen].argmax(axis=1)]
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
from workbench.course_checks import expect_shape
expect_shape(zero_shot_predict(scores, unseen), (len(test_unseen),), "zero_shot_predict(scores, unseen)")

# %%
from workbench.course_checks import expect_close
expect_close(zero_shot_predict(np.array([[9.0, 0, 0, 0, 0, 1, 2, 0, 0, 3]]), np.array([5, 6, 9])), [9], "zero_shot_predict for scores whose overall best digit (0) is seen", hint="only the unseen digits are candidates (digit 0 scores highest but is seen), and return the digit id (9), not its position among the unseen (2).")

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
from workbench.course_checks import expect_close
expect_close(per_class_accuracy(y[test_unseen], zero_shot_predict(scores, unseen), unseen), eszsl.evaluate(data).ZSL, "your zero-shot accuracy vs ESZSL.evaluate(data).ZSL")

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %%
zero_shot = per_class_accuracy(y[test_unseen], zero_shot_predict(scores, unseen), unseen)
print(f"zero-shot accuracy on the unseen digits: {zero_shot:.3f} (chance: {1 / len(unseen):.3f})")

# %% [raw]
# # BEGIN QUESTION
# name: q3_why
# manual: true
# points: 1

# %% [markdown]
# **Why?** The zero-shot accuracy is far below even 1-shot. Look at the attributes: what do they describe, and
# why is that a poor description of *handwritten* digits? What would you change first?

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# They describe the seven-segment *display glyph*, not handwriting: a handwritten 4 often has a closed loop, a 7
# may have a bar, a 9 may have no bottom bar, and stroke thickness or slant are not described at all. The model
# must map pixels to attributes learned from only 7 seen digits, and errors there go straight into the unseen
# scores. Better side information (attributes of handwriting, or a few images: then few-shot wins) helps most;
# a non-linear alignment such as CADA-VAE's latent space helps when the description is informative.

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## 4. When does each win?
#
# Zero-shot is the only option with zero images of a new class; once labelled images exist, a few-shot learner
# can use them. The break-even point is the smallest number of shots $k$ whose few-shot accuracy beats zero-shot.

# %% [raw]
# # BEGIN QUESTION
# name: q4
# points: 2

# %% [markdown]
# **Exercise 4.** Write `shots_to_beat(zero_shot_accuracy, curve)` for a `curve` `{k: few-shot accuracy}` (the
# keys in any order): return the smallest `k` whose accuracy is strictly higher than `zero_shot_accuracy`, or
# `-1` if none is.

# %% [raw]
# # BEGIN SOLUTION

# %%
def shots_to_beat(zero_shot_accuracy: float, curve: dict[int, float]) -> int:
    """The fewest shots at which the few-shot route is better than the zero-shot one (-1: never)."""
    # BEGIN SOLUTION
    winning = [k for k, accuracy in curve.items() if accuracy > zero_shot_accuracy]
    return min(winning) if winning else -1
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
from workbench.course_checks import expect_close
expect_close(shots_to_beat(0.5, {1: 0.4, 2: 0.6, 5: 0.8}), 2, "shots_to_beat(0.5, {1: 0.4, 2: 0.6, 5: 0.8})", hint="1 shot (0.4) loses to 0.5; 2 shots (0.6) is the first to win.")

# %%
from workbench.course_checks import expect_close
expect_close(shots_to_beat(0.9, {1: 0.4, 5: 0.8}), -1, "shots_to_beat when the few-shot curve never wins", hint="return -1 when no k beats zero-shot.")

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
from workbench.course_checks import expect_close
expect_close(shots_to_beat(0.5, {10: 0.9, 5: 0.7, 2: 0.5}), 5, "shots_to_beat with keys out of order and a tie at k=2", hint="a tie is not a win; the smallest winning k, whatever the order of the keys.")
expect_close(shots_to_beat(zero_shot, curve), min(k for k in curve if curve[k] > zero_shot), "shots_to_beat on the digits")

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %%
print(f"zero-shot {zero_shot:.3f}; few-shot {curve}; the few-shot route wins from k = {shots_to_beat(zero_shot, curve)}")

# %% [raw]
# # BEGIN QUESTION
# name: q4_why
# manual: true
# points: 1

# %% [markdown]
# **Why?** You are asked to recognise a new class tomorrow. Say which method you would pick when (a) you have only
# its description, (b) you can label five images of it, (c) you have trained models for twenty related tasks but
# no labels for the new one, and (d) you must decide which of several pre-trained models to fine-tune. One
# sentence each, with the reason.

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# (a) CADA-VAE or TAFE-Net (or ESZSL as the baseline): only they turn a description into a classifier; expect
# weak unseen accuracy when the description is poor, as here, and check seen-class accuracy too (GZSL, H).
# (b) A few-shot learner (HyperTransformer, or a ProtoNet for a simple embedding): five labelled images beat the
# description here from one shot on. (c) TTNet: a Γ-weighted combination of the related models needs no labels,
# and Γ can come from crowd votes. (d) Task2Vec: embed the new task and each source task, and fine-tune the model
# of the nearest task.

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION
