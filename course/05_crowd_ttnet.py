# %% [markdown]
# # Lesson 5 — TTNet's Γ: Dawid–Skene on crowd votes, and a Γ-weighted model average
#
# TTNet (Pal & Balasubramanian, CVPR 2019) regresses a model for a task that has no labels from the models of
# tasks that have them, guided by a task-correlation matrix Γ. Γ comes from a *crowd*: people rate pairs of tasks
# on a four-level scale (-1 negatively correlated, 0 unrelated, 1 correlated, 2 strongly correlated) and the
# noisy votes are aggregated by Dawid–Skene, an EM algorithm that learns how reliable each annotator is.
#
# You will write one EM iteration of Dawid–Skene (initialisation, M-step, E-step), turn the result into Γ, and
# use a column of Γ to average known task models: TTNet's strongest label-free baseline. The package's
# `workbench.crowd.dawid_skene` and `workbench.methods.ttnet` do the same at scale (notebook
# `ttnet_task_correlation`).
#
# After each exercise run its `grader.check(...)` cell: public checks, offline, in a second; hidden checks
# run at grading.

# %% tags=["parameters"]
profile = "default"  # [smoke|default|full] the lessons are small: every profile runs the same exercises
seed = 0  # random seed (numpy, torch, random) for everything random in this lesson

# %%
import workbench.notebook

S = workbench.notebook.setup(profile, seed)

# %%
import numpy as np

from workbench.crowd import LEVELS, simulate_crowd

# A known truth for 5 tasks (symmetric, levels -1..2) and a simulated crowd of 12 annotators voting on it:
# experts, noisy raters, spammers and biased raters (their names say which, so you can check the EM later).
TRUE_LEVELS = np.array([[2, 1, -1, 0, 2], [1, 2, 0, 1, 0], [-1, 0, 2, 2, 1], [0, 1, 2, 2, -1], [2, 0, 1, -1, 2]])
votes = simulate_crowd(TRUE_LEVELS, n_annotators=12, coverage=0.6, seed=0)
K = LEVELS.size  # 4 levels


def vote_matrix(votes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The votes as a dense (items x annotators) matrix of level indices 0..3 (vote + 1), -1 where an annotator
    did not rate the pair; plus the items (sorted task pairs) and the annotators (sorted), in the order
    workbench.crowd uses."""
    lo, hi = votes.canonical()
    items = np.unique(np.stack([lo, hi], axis=1), axis=0)
    annotators = votes.annotators
    item_index = {tuple(pair): n for n, pair in enumerate(items.tolist())}
    L = np.full((len(items), len(annotators)), -1)
    for a, i, j, v in zip(votes.annotator, lo, hi, votes.vote):
        L[item_index[(i, j)], np.searchsorted(annotators, a)] = v + 1
    return L, items, annotators


L, items, annotators = vote_matrix(votes)
print(votes, "->", L.shape, "vote matrix")

# %% [markdown]
# ## 1. Initialisation: vote fractions
#
# EM needs a starting guess of each item's true level. The usual one is the fraction of its votes at each level:
#
# $$ T^{(0)}_{ik} = \frac{\#\{a : L_{ia} = k\}}{\#\{a : L_{ia} \ne -1\}}. $$

# %% [raw]
# # BEGIN QUESTION
# name: q1
# points: 3

# %% [markdown]
# **Exercise 1.** Write `vote_fractions(L)` returning $T^{(0)}$, shape (items, 4); missing votes (-1) do not count.

# %% [raw]
# # BEGIN SOLUTION

# %%
def vote_fractions(L: np.ndarray) -> np.ndarray:
    """(items x K) fraction of each item's votes at each level index."""
    # BEGIN SOLUTION
    counts = np.stack([(L == k).sum(axis=1) for k in range(K)], axis=1).astype(float)
    return counts / counts.sum(axis=1, keepdims=True)
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
from workbench.course_checks import expect_shape
expect_shape(vote_fractions(L), (L.shape[0], K), "vote_fractions(L)")

# %%
from workbench.course_checks import expect_close
expect_close(vote_fractions(np.array([[3, 3, -1, 0]])), [[1 / 3, 0, 0, 2 / 3]], "vote_fractions([[3, 3, -1, 0]])", hint="-1 means 'no vote': divide by the number of votes (3), not by the number of annotators (4).")

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
from workbench.course_checks import expect_close
expect_close(vote_fractions(L).sum(axis=1), np.ones(L.shape[0]), "the rows of vote_fractions(L)", hint="each row is a distribution over the 4 levels.")

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
# **Why?** EM only finds a local optimum. Why start from vote fractions rather than from random posteriors?

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# Dawid–Skene has symmetric optima: relabelling the levels and the annotators' confusions together gives the
# same likelihood. Vote fractions start EM in the basin where "level k" means what most annotators meant by k
# (assuming most are better than chance); a random start can converge to a permuted, meaningless solution.

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## 2. The M-step: priors and one confusion matrix per annotator
#
# Given posteriors $T_{ik}$ over each item's level, the most likely parameters are normalised expected counts,
# with a small pseudo-count $s$ (here $s = 0.01$) so that no probability is exactly 0:
#
# $$ \pi_k = \frac{\sum_i T_{ik} + s}{I + K s}, \qquad
#    \pi^{(a)}_{kl} = \frac{\sum_{i : L_{ia} = l} T_{ik} + s}{\sum_{l'} \big(\sum_{i : L_{ia} = l'} T_{ik} + s\big)}. $$
#
# Row $k$ of annotator $a$'s confusion matrix is the distribution of what $a$ reports when the truth is $k$.

# %% [raw]
# # BEGIN QUESTION
# name: q2
# points: 4

# %% [markdown]
# **Exercise 2.** Write `m_step(L, T, s=0.01)` returning `(priors, confusions)` with shapes (4,) and
# (annotators, 4, 4), indexed `confusions[a, true level, reported level]`.

# %% [raw]
# # BEGIN SOLUTION

# %%
def m_step(L: np.ndarray, T: np.ndarray, s: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Priors (K,) and confusions (annotators x K x K) that the posteriors T make most likely."""
    # BEGIN SOLUTION
    priors = (T.sum(axis=0) + s) / (T.shape[0] + K * s)
    counts = np.zeros((L.shape[1], K, K))
    for a in range(L.shape[1]):
        for l in range(K):
            counts[a, :, l] = T[L[:, a] == l].sum(axis=0)
    counts += s
    return priors, counts / counts.sum(axis=2, keepdims=True)
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
from workbench.course_checks import expect_tuple
expect_tuple(m_step(L, np.full((L.shape[0], K), 1 / K)), 2, "m_step(L, T)")

# %%
from workbench.course_checks import expect_shape
expect_shape(m_step(L, np.full((L.shape[0], K), 1 / K))[1], (L.shape[1], K, K), "the confusions of m_step(L, T)")

# %%
from workbench.course_checks import expect_close
expect_close(m_step(L, np.full((L.shape[0], K), 1 / K))[1].sum(axis=2), np.ones((L.shape[1], K)), "the row sums of the confusions", hint="normalise over the *reported* level (the last axis): each row is P(reported | true).")

# %%
from workbench.course_checks import expect_close
expect_close(m_step(np.array([[0], [1]]), np.array([[1.0, 0, 0, 0], [1.0, 0, 0, 0]]), s=0.0)[1][0, 0], [0.5, 0.5, 0, 0], "confusions[0, 0] when both items are surely level 0 and the annotator said 0 and 1", hint="count, for each reported level l, the posterior mass of the items where the annotator reported l.")

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
from workbench.course_checks import expect_close
_T = vote_fractions(L)
expect_close(m_step(L, _T)[0], (_T.sum(0) + 0.01) / (_T.shape[0] + K * 0.01), "the priors of m_step(L, T)")

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
# **Why?** What would happen in the next E-step without the pseudo-count $s$, for an annotator who never
# reported level 2 in the data and then does report it on one item?

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# Their confusion entries for reporting 2 would be exactly 0 for every true level that never co-occurred with
# a 2, so $\log 0 = -\infty$: that single vote would give the item's posterior probability 0 for those levels
# (a veto), whatever all other annotators said, and could make a row all-zero (NaN after normalising).

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## 3. The E-step: posteriors over each item's true level
#
# Annotators vote independently given the truth, so
#
# $$ T_{ik} \propto \pi_k \prod_{a : L_{ia} \ne -1} \pi^{(a)}_{k, L_{ia}}
#    \quad\Longleftrightarrow\quad
#    \log T_{ik} = \log\pi_k + \sum_{a} \log \pi^{(a)}_{k, L_{ia}} - \log Z_i. $$
#
# Compute in log space and subtract each row's maximum before `exp` (products of many probabilities underflow).

# %% [raw]
# # BEGIN QUESTION
# name: q3
# points: 4

# %% [markdown]
# **Exercise 3.** Write `e_step(L, priors, confusions)` returning $T$, shape (items, 4), rows summing to 1.
# One EM iteration is then `e_step(L, *m_step(L, vote_fractions(L)))`.

# %% [raw]
# # BEGIN SOLUTION

# %%
def e_step(L: np.ndarray, priors: np.ndarray, confusions: np.ndarray) -> np.ndarray:
    """Posteriors (items x K) over each item's level given the parameters."""
    # BEGIN SOLUTION
    log_joint = np.tile(np.log(priors), (L.shape[0], 1))
    for i in range(L.shape[0]):
        for a in np.flatnonzero(L[i] >= 0):
            log_joint[i] += np.log(confusions[a, :, L[i, a]])
    log_joint -= log_joint.max(axis=1, keepdims=True)
    T = np.exp(log_joint)
    return T / T.sum(axis=1, keepdims=True)
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
from workbench.course_checks import expect_shape
expect_shape(e_step(L, np.full(K, 1 / K), np.full((L.shape[1], K, K), 1 / K)), (L.shape[0], K), "e_step(L, priors, confusions)")

# %%
from workbench.course_checks import expect_close
expect_close(e_step(np.array([[1]]), np.array([0.5, 0.5, 0, 0]) + 1e-9, np.array([[[0.9, 0.1, 0, 0], [0.3, 0.7, 0, 0], [.25, .25, .25, .25], [.25, .25, .25, .25]]]) + 1e-12), [[0.125, 0.875, 0, 0]], "e_step for one vote 'level 1' by an annotator who says 1 with p 0.1 (truth 0) or 0.7 (truth 1)", hint="T_ik is proportional to prior_k times confusions[a, k, reported]: 0.5 * 0.1 vs 0.5 * 0.7, normalised.", atol=1e-6)

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
from workbench.course_checks import expect_close
from workbench.crowd import dawid_skene
expect_close(e_step(L, *m_step(L, vote_fractions(L))), dawid_skene(votes, n_iter=1).posteriors_, "one EM iteration against workbench.crowd.dawid_skene(votes, n_iter=1)", atol=1e-6)

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
# **Why?** After EM converges, look at the confusions of the annotators named `spammer-…`: what do their rows
# look like, and why do their votes then barely move any posterior?

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# A spammer's report does not depend on the truth, so every row of their confusion matrix is (nearly) the same
# distribution. Their factor $\pi^{(a)}_{k,l}$ is then the same for every level $k$ and cancels when the row of
# $T$ is normalised: Dawid–Skene learns to ignore them, which majority voting cannot do.

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## 4. From posteriors to Γ
#
# TTNet's Γ holds, for each pair of tasks, the *expected* level $\sum_k T_{ik}\,\ell_k$ with
# $\ell = (-1, 0, 1, 2)$; it is symmetric, and its diagonal is 2 (a task is perfectly correlated with itself).

# %% [raw]
# # BEGIN QUESTION
# name: q4
# points: 3

# %% [markdown]
# **Exercise 4.** Write `gamma_matrix(T, items, tasks)`: `items` is the (items x 2) array of task-name pairs
# (row $i$ of `T` is about `items[i]`), `tasks` the list of task names; return Γ, shape (tasks, tasks).

# %% [raw]
# # BEGIN SOLUTION

# %%
def gamma_matrix(T: np.ndarray, items: np.ndarray, tasks: list[str]) -> np.ndarray:
    """Γ: the expected level of each rated pair, symmetric, diagonal 2."""
    # BEGIN SOLUTION
    index = {t: n for n, t in enumerate(tasks)}
    gamma = np.full((len(tasks), len(tasks)), np.nan)
    expected = T @ LEVELS
    for (a, b), value in zip(items, expected):
        gamma[index[a], index[b]] = gamma[index[b], index[a]] = value
    np.fill_diagonal(gamma, 2.0)
    return gamma
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
from workbench.course_checks import expect_shape
expect_shape(gamma_matrix(vote_fractions(L), items, votes.tasks), (5, 5), "gamma_matrix(T, items, tasks)")

# %%
from workbench.course_checks import expect_close
expect_close(gamma_matrix(np.array([[0, 0, 0.5, 0.5]]), np.array([["x", "y"]]), ["x", "y"]), [[2, 1.5], [1.5, 2]], "Γ for one pair split between levels 1 and 2", hint="use the expected level T @ (-1, 0, 1, 2) (here 1.5), fill both (i, j) and (j, i), and put 2 on the diagonal.")

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
from workbench.course_checks import expect_close
from workbench.crowd import correlation_matrix, dawid_skene
_r = dawid_skene(votes)
expect_close(gamma_matrix(_r.posteriors_, _r.items, votes.tasks), correlation_matrix(_r, votes.tasks), "Γ against workbench.crowd.correlation_matrix")

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
# **Why?** Γ uses the expected level, not the most probable one. What information would the most probable
# level throw away, and why does TTNet care?

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# The argmax turns a pair the crowd split 50/50 between 1 and 2 into a confident 1 (or 2): the uncertainty is
# lost and small changes in the votes flip the value. The expected level (1.5) keeps it on the vote scale, so
# Γ changes smoothly with the evidence; TTNet multiplies Γ into its inputs and weights sources by it.

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## 5. A Γ-weighted model average
#
# Without labels for a target task $j$, the simplest transfer is to average the known tasks' parameter
# vectors $\theta_i$, weighted by how correlated they are with $j$; negatively correlated tasks get no weight:
#
# $$ \hat\theta_j = \sum_i w_i\,\theta_i, \qquad w_i = \frac{\max(\gamma_{ij}, 0)}{\sum_{i'} \max(\gamma_{i'j}, 0)}
#    \quad(\text{uniform weights if no } \gamma_{ij} > 0). $$
#
# TTNet's meta network starts exactly from this average and has to learn to do better.

# %% [raw]
# # BEGIN QUESTION
# name: q5
# points: 3

# %% [markdown]
# **Exercise 5.** Write `gamma_weighted_average(thetas, gamma_column)`: `thetas` is (sources x parameters), one
# row per known task, `gamma_column` the (sources,) correlations with the target; return $\hat\theta_j$.

# %% [raw]
# # BEGIN SOLUTION

# %%
def gamma_weighted_average(thetas: np.ndarray, gamma_column: np.ndarray) -> np.ndarray:
    """The average of the source models weighted by max(gamma, 0) (uniform when none is positive)."""
    # BEGIN SOLUTION
    w = np.maximum(np.asarray(gamma_column, dtype=float), 0.0)
    w = w / w.sum() if w.sum() > 0 else np.full(len(w), 1.0 / len(w))
    return w @ thetas
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
from workbench.course_checks import expect_close
expect_close(gamma_weighted_average(np.array([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]), np.array([2.0, 1.0, -1.0])), [2 / 3, 1 / 3], "the average of (1, 0), (0, 1), (5, 5) with γ = (2, 1, -1)", hint="clip negative γ to 0, then normalise the weights to sum to 1: (2/3, 1/3, 0).")

# %%
from workbench.course_checks import expect_close
expect_close(gamma_weighted_average(np.array([[1.0], [3.0]]), np.array([-1.0, 0.0])), [2.0], "the average with γ = (-1, 0)", hint="no positive γ: fall back to uniform weights instead of dividing by 0.")

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
from workbench.course_checks import expect_close
from workbench.methods.ttnet import gamma_weights
_rng = np.random.default_rng(2)
_th, _g = _rng.normal(size=(6, 40)), _rng.uniform(-1, 2, size=6)
expect_close(gamma_weighted_average(_th, _g), gamma_weights(_g) @ _th, "against workbench.methods.ttnet.gamma_weights")

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q5_why
# manual: true
# points: 1

# %% [markdown]
# **Why?** Averaging the parameters of different networks is usually meaningless. What must be true of the
# known tasks' models for $\hat\theta_j$ to be a sensible model (the package's TTNet makes sure of it)?

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# They must live in one coordinate system: same architecture *and* the same starting point (all fine-tuned from
# one shared initialisation θ₀), so that unit $k$ of one model does the same job as unit $k$ of another.
# Independently initialised networks differ by arbitrary permutations of their units, and their average is noise.

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## Putting it together: EM to convergence

# %%
T = vote_fractions(L)
for _ in range(50):
    T = e_step(L, *m_step(L, T))
gamma = gamma_matrix(T, items, votes.tasks)
print(np.round(gamma, 2))
print("true levels:\n", TRUE_LEVELS)
