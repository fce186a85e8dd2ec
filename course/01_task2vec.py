# %% [markdown]
# # Lesson 1 — Task2Vec: a task as the Fisher information of a probe, and distances between tasks
#
# Task2Vec (Achille et al., ICCV 2019) describes a classification *task* by how much each weight of a fixed probe
# network matters for it: the diagonal of the Fisher information matrix. Tasks that need the same features get
# similar embeddings. Here the probe is as small as it gets — fixed features and a linear softmax head — so that
# the whole computation fits in a few lines you write yourself. The package's `Task2Vec` does the same on a
# ResNet probe and real images (notebook `task2vec`).
#
# After each exercise run its `grader.check(...)` cell: the public checks run offline, in a second. Hidden
# checks run when your notebook is graded.

# %% tags=["parameters"]
profile = "default"  # [smoke|default|full] the lessons are small: every profile runs the same exercises
seed = 0  # random seed (numpy, torch, random) for everything random in this lesson

# %%
import workbench.notebook

S = workbench.notebook.setup(profile, seed)

# %%
import numpy as np
from sklearn.linear_model import LogisticRegression


def make_task(informative: list[int], seed: int, n: int = 120, d: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """A binary task on d features whose label depends only on the `informative` features."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    w = np.zeros(d)
    w[informative] = rng.choice([-2.0, 2.0], size=len(informative))
    y = (x @ w + 0.3 * rng.normal(size=n) > 0).astype(int)
    return x, y


def fit_head(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A linear softmax head (W: classes x features, b: classes) trained on the task (deterministic)."""
    clf = LogisticRegression(C=1.0, max_iter=1000).fit(x, y)
    W = np.vstack([-clf.coef_[0] / 2, clf.coef_[0] / 2])  # two-class softmax equal to the logistic model
    b = np.array([-clf.intercept_[0] / 2, clf.intercept_[0] / 2])
    return W, b


# Four tiny tasks: A and B use features 0-2, C and D use features 3-5.
TASKS = {"A": make_task([0, 1, 2], seed=1), "B": make_task([0, 1, 2], seed=2),
         "C": make_task([3, 4, 5], seed=3), "D": make_task([3, 4, 5], seed=4)}
HEADS = {name: fit_head(x, y) for name, (x, y) in TASKS.items()}

# %% [markdown]
# ## 1. The diagonal Fisher of a linear softmax head
#
# With logits $Wx + b$ and $p = \mathrm{softmax}(Wx + b)$, the gradient of $\log p_y$ with respect to $W_{cj}$ is
# $(\delta_{yc} - p_c)\,x_j$. Task2Vec's Fisher takes $y$ from the *model's own* distribution, $y \sim p(\cdot\mid x)$,
# and averages over the task's inputs:
#
# $$ F_{cj} = \mathbb E_x\, \mathbb E_{y \sim p(\cdot|x)} \big[(\delta_{yc} - p_c)^2 x_j^2\big] = \mathbb E_x \big[p_c (1 - p_c)\, x_j^2\big]. $$

# %% [raw]
# # BEGIN QUESTION
# name: q1
# points: 4

# %% [markdown]
# **Exercise 1.** Write `fisher_linear_head(x, W, b)` for inputs `x` (n x d) and a head `W` (C x d), `b` (C,):
# return $F$, shape (C, d), averaged over the n inputs.

# %% [raw]
# # BEGIN SOLUTION

# %%
def fisher_linear_head(x: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Diagonal Fisher information of a linear softmax head, (classes x features)."""
    # BEGIN SOLUTION
    logits = x @ W.T + b
    logits = logits - logits.max(axis=1, keepdims=True)  # a stable softmax
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return (p * (1 - p)).T @ (x ** 2) / x.shape[0]
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
from workbench.course_checks import expect_shape
expect_shape(fisher_linear_head(TASKS["A"][0], *HEADS["A"]), (2, 6), "fisher_linear_head(x, W, b)")

# %%
from workbench.course_checks import expect_nonnegative
expect_nonnegative(fisher_linear_head(TASKS["A"][0], *HEADS["A"]), "fisher_linear_head(x, W, b)", why="a Fisher is an average of squared gradients, never negative.")

# %%
from workbench.course_checks import expect_close
expect_close(fisher_linear_head(np.array([[1.0, 2.0]]), np.zeros((2, 2)), np.zeros(2)), [[0.25, 1.0], [0.25, 1.0]], "F for x = (1, 2) and a zero head", hint="with W = 0 both classes have p = 0.5, so F = 0.5 * 0.5 * x^2.")

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
import torch
from workbench.course_checks import expect_close
def _fisher_autograd(x, W, b):
    Wt, bt = torch.tensor(W, requires_grad=True), torch.tensor(b)
    total = torch.zeros_like(Wt)
    for xi in torch.tensor(x):
        logp = torch.log_softmax(Wt @ xi + bt, 0)
        for y in range(W.shape[0]):
            (g,) = torch.autograd.grad(logp[y], Wt, retain_graph=True)
            total += logp[y].exp().detach() * g ** 2
    return (total / len(x)).numpy()
_x, _y = make_task([1, 4], seed=9, n=15)
_W, _b = fit_head(_x, _y)
expect_close(fisher_linear_head(_x, _W, _b), _fisher_autograd(_x, _W, _b), "F against autograd on a random task", hint="the expectation over y uses the model's probabilities p, not the true labels.")

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
# **Why?** An input the head classifies with $p_y \approx 1$ adds almost nothing to $F$. Why is that a sensible
# property for a description of *what the task needs*?

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# $p(1-p)$ is the curvature of the log-likelihood: a confidently classified input would not change its loss if
# a weight moved a little, so that weight's value does not matter for it. The Fisher counts the inputs where the
# weights are actually "in use", the uncertain, informative ones.

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## 2. The task embedding
#
# Task2Vec averages the Fisher over the weights of each *filter* of the probe. For a linear head the natural
# filter is one input feature: the embedding is the mean over classes,
# $e_j = \frac{1}{C}\sum_c F_{cj}$, one number per feature.

# %% [raw]
# # BEGIN QUESTION
# name: q2
# points: 3

# %% [markdown]
# **Exercise 2.** Write `embed_task(x, W, b)` returning the embedding $e$, shape (d,). Use your
# `fisher_linear_head`.

# %% [raw]
# # BEGIN SOLUTION

# %%
def embed_task(x: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Task2Vec embedding of a task for a linear-head probe: the Fisher averaged over classes."""
    # BEGIN SOLUTION
    return fisher_linear_head(x, W, b).mean(axis=0)
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
from workbench.course_checks import expect_shape
expect_shape(embed_task(TASKS["A"][0], *HEADS["A"]), (6,), "embed_task(x, W, b)")

# %%
from workbench.course_checks import expect_close
expect_close(embed_task(np.array([[1.0, 2.0]]), np.zeros((2, 2)), np.zeros(2)), [0.25, 1.0], "embed_task for x = (1, 2) and a zero head", hint="average F over the classes (axis 0), not over the features.")

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
import torch
from workbench.course_checks import expect_close
_x, _y = make_task([2, 5], seed=8, n=30)
_W, _b = fit_head(_x, _y)
_p = torch.softmax(torch.tensor(_x @ _W.T + _b), dim=1).numpy()
expect_close(embed_task(_x, _W, _b), np.mean((_p * (1 - _p)).mean(axis=1)[:, None] * _x ** 2, axis=0), "embed_task on a random task")

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q2_why
# manual: true
# points: 1

# %% [markdown]
# **Why?** Task2Vec gives every task the *same* probe and only varies the data. Why does the embedding need a
# fixed probe rather than each task's own best network?

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# Two embeddings are comparable only if their coordinates mean the same thing: entry $j$ must be "how much
# feature (filter) $j$ of *one* network matters". Networks trained separately have unrelated, permuted
# features, so their Fishers could not be compared entry by entry.

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## 3. The symmetric normalised cosine distance
#
# A few filters can have very large Fisher values and would dominate a plain cosine. Task2Vec first divides
# both embeddings by their sum, then takes the cosine distance:
#
# $$ d(e_0, e_1) = 1 - \cos\Big(\frac{e_0}{e_0 + e_1}, \frac{e_1}{e_0 + e_1}\Big) \quad(\text{element-wise division}). $$

# %% [raw]
# # BEGIN QUESTION
# name: q3
# points: 4

# %% [markdown]
# **Exercise 3.** Write `task_distance(e0, e1)` returning $d$ as a Python float.

# %% [raw]
# # BEGIN SOLUTION

# %%
def task_distance(e0: np.ndarray, e1: np.ndarray) -> float:
    """Task2Vec's symmetric normalised cosine distance."""
    # BEGIN SOLUTION
    s = e0 + e1
    a, b = e0 / s, e1 / s
    return float(1.0 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
from workbench.course_checks import expect_close
expect_close(task_distance(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0])), 0.0, "task_distance(e, e)", hint="a task is at distance 0 from itself; return 1 - cosine, not the cosine.")

# %%
from workbench.course_checks import expect_close
expect_close(task_distance(np.array([3.0, 1.0]), np.array([1.0, 3.0])), 0.4, "task_distance((3, 1), (1, 3))", hint="divide by the sum first: (0.75, 0.25) and (0.25, 0.75) have cosine 0.6.")

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
from workbench.course_checks import expect_close
from workbench.methods.task2vec_distances import Embedding, cosine
_rng = np.random.default_rng(11)
_h0, _h1 = _rng.gamma(1.0, size=20), _rng.gamma(1.0, size=20)
expect_close(task_distance(_h0, _h1), cosine(Embedding(_h0, np.ones(20)), Embedding(_h1, np.ones(20))), "task_distance against workbench's Task2Vec cosine", rtol=1e-5, atol=1e-6)
expect_close(task_distance(_h1, _h0), task_distance(_h0, _h1), "task_distance(e1, e0) vs task_distance(e0, e1)", hint="the distance must be symmetric.")

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q3_why
# manual: true
# points: 1

# %% [markdown]
# **Why?** The norm of a Task2Vec embedding grows with the task's difficulty. Does $d$ change if one task's
# embedding is multiplied by 10? What does that tell you about what $d$ measures?

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# Yes: after dividing by $e_0 + e_1$ the larger embedding takes over every ratio, so the distance moves. A plain
# cosine would ignore the scale; this one is *not* scale invariant, and mixes "which features" with "how much".
# Comparing tasks of very different difficulty therefore needs care (the paper's asymmetric distance adds
# the complexity term for that).

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## 4. The distance matrix of the four tasks

# %% [raw]
# # BEGIN QUESTION
# name: q4
# points: 3

# %% [markdown]
# **Exercise 4.** With the embeddings of the four tasks (computed for you with your `embed_task`), fill `D`
# (4 x 4, rows and columns in the order A, B, C, D) with `task_distance`, and set `nearest_to_A` to the name of
# the task closest to A (other than A).

# %% [raw]
# # BEGIN SOLUTION

# %%
names = list(TASKS)
embeddings = [embed_task(TASKS[n][0], *HEADS[n]) for n in names]
D = np.array([[task_distance(a, b) for b in embeddings] for a in embeddings])  # SOLUTION
nearest_to_A = names[int(np.argsort(D[0])[1])]  # SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
from workbench.course_checks import expect_shape
expect_shape(D, (4, 4), "D")

# %%
from workbench.course_checks import expect_close
expect_close(np.diag(D), np.zeros(4), "the diagonal of D", hint="every task is at distance 0 from itself.")

# %%
from workbench.course_checks import expect_answer
expect_answer(nearest_to_A, ["B", "C", "D"], "nearest_to_A")

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
from workbench.course_checks import expect_true
expect_true(nearest_to_A == "B", f"nearest_to_A is {nearest_to_A!r}; A and B use the same features, so B should be nearest.")
expect_true(D[0, 1] < D[0, 2] and D[2, 3] < D[1, 2], "tasks on the same features (A-B, C-D) should be closer than across groups.")

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q4_why
# manual: true
# points: 1

# %% [markdown]
# **Why?** A and B have different labels and different weights $W$, yet come out close. Print `embeddings`:
# are the informative features the *large* entries? Explain what the embedding sees.

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# A and B depend on the same input features (0-2), so their Fishers share a pattern. Surprisingly the
# informative features get *smaller* entries: the uncertain inputs ($p(1-p)$ large) lie near the decision
# boundary, where the informative features are close to 0, so $x_j^2$ is small there. The embedding records
# which features the uncertain examples vary in, a fingerprint of the features the task uses, not its labels.

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %%
print(np.round(D, 3))
