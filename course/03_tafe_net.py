# %% [markdown]
# # Lesson 3 — TAFE-Net: a layer whose weights come from a task embedding
#
# TAFE-Net (Wang et al., CVPR 2019) makes the feature network depend on the task: a meta learner reads a task
# description $t$ (e.g. class attributes), embeds it as $e_t$, and *generates* weights of the prediction network.
# Generating a full weight matrix per task is hopeless with few tasks, so TAFE-Net factorises it: a shared matrix
# times a generated diagonal. You will write the factorised layer, the generator and the embedding loss; the
# package's `workbench.methods.tafe_net` (notebook `tafe_net`) trains the whole model.
#
# After each exercise run its `grader.check(...)` cell (public checks, offline); hidden checks run at grading.

# %% tags=["parameters"]
profile = "default"  # [smoke|default|full] the lessons are small: every profile runs the same exercises
seed = 0  # random seed (numpy, torch, random) for everything random in this lesson

# %%
import workbench.notebook

S = workbench.notebook.setup(profile, seed)

# %%
import torch

torch.manual_seed(0)
x = torch.randn(5, 4)  # 5 inputs with 4 features
W_sr, b = torch.randn(4, 3), torch.randn(3)  # the shared (task-independent) weights of a 4 -> 3 layer
t_a, t_b = torch.randn(6), torch.randn(6)  # descriptions of two tasks (6 attributes each)

# %% [markdown]
# ## 1. The factorised layer (eq. 4)
#
# $$ \mathbf W(t) = \mathbf W_{sr}\,\mathrm{diag}(w_t), \qquad
#    y = x\,\mathbf W_{sr}\,\mathrm{diag}(w_t) + b \odot w_t = (x\,\mathbf W_{sr} + b) \odot w_t, $$
#
# one generated scale per output unit ($w_t$ has as many entries as the layer has outputs).

# %% [raw]
# # BEGIN QUESTION
# name: q1
# points: 3

# %% [markdown]
# **Exercise 1.** Write `factorized_linear(x, W_sr, b, w_t)` for `x` (n x in), `W_sr` (in x out), `b` and
# `w_t` (out,): return $y$ (n x out).

# %% [raw]
# # BEGIN SOLUTION

# %%
def factorized_linear(x: torch.Tensor, W_sr: torch.Tensor, b: torch.Tensor, w_t: torch.Tensor) -> torch.Tensor:
    """(x W_sr + b) * w_t: a shared linear layer whose outputs are scaled per task."""
    # BEGIN SOLUTION
    return (x @ W_sr + b) * w_t
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
from workbench.course_checks import expect_shape
expect_shape(factorized_linear(x, W_sr, b, torch.ones(3)), (5, 3), "factorized_linear(x, W_sr, b, w_t)")

# %%
from workbench.course_checks import expect_close
expect_close(factorized_linear(x, W_sr, b, torch.ones(3)), x @ W_sr + b, "factorized_linear with w_t = 1", hint="with all scales 1 the layer is an ordinary linear layer x W_sr + b.")

# %%
from workbench.course_checks import expect_close
expect_close(factorized_linear(torch.ones(1, 1), torch.ones(1, 2), torch.ones(2), torch.tensor([2.0, 0.0])), [[4.0, 0.0]], "factorized_linear(1, [1, 1], [1, 1], w_t=[2, 0])", hint="the bias is scaled too: (1 + 1) * 2 = 4, and a scale of 0 switches a unit off.")

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
from workbench.course_checks import expect_close
from workbench.methods.tafe_net import FactorizedLinear
_layer = FactorizedLinear(4, 3)
with torch.no_grad():
    _ = _layer.shared.weight.copy_(W_sr.T), _layer.shared.bias.copy_(b)
_w = torch.rand(3, generator=torch.Generator().manual_seed(1))
expect_close(factorized_linear(x, W_sr, b, _w), _layer(x, _w).detach(), "against workbench's FactorizedLinear")

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
# **Why?** For a 2048 x 2048 layer, how many numbers must the meta learner generate per task with the
# factorisation, and without it? Why does that matter when there are only a few hundred training classes?

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# 2048 instead of 2048² ≈ 4.2 million. A generator that outputs millions of numbers from a few hundred
# training descriptions would overfit and be huge itself; generating one scale per unit keeps the generator
# small and the task-specific part low-dimensional, while the shared matrix is learned from all tasks' data.

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## 2. Generating the weights from the task
#
# The meta learner embeds the description, $e_t = \mathcal T(t)$, and a generator maps it to the scales:
# $w_t = \mathrm{ReLU}(G\,e_t + c)$. Here $\mathcal T$ is given (a fixed random linear map with a ReLU);
# $G$ and $c$ are the generator's weights.

# %%
T_embed = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU())  # the task embedding network (given)
G, c = torch.randn(3, 8), torch.ones(3)  # the generator of a layer with 3 outputs

# %% [raw]
# # BEGIN QUESTION
# name: q2
# points: 3

# %% [markdown]
# **Exercise 2.** Write `task_layer(x, t)`: embed the description `t` with `T_embed`, generate $w_t$ with `G`
# and `c`, and apply your `factorized_linear` with `W_sr` and `b`. Return (n x 3).

# %% [raw]
# # BEGIN SOLUTION

# %%
def task_layer(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The layer of the prediction network for task description t."""
    # BEGIN SOLUTION
    e_t = T_embed(t)
    w_t = torch.relu(G @ e_t + c)
    return factorized_linear(x, W_sr, b, w_t)
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
from workbench.course_checks import expect_shape
expect_shape(task_layer(x, t_a), (5, 3), "task_layer(x, t)")

# %%
from workbench.course_checks import expect_true
expect_true(not torch.allclose(task_layer(x, t_a), task_layer(x, t_b)), "task_layer gives the same output for two different tasks: the scales must come from the description t.")

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
from workbench.course_checks import expect_close
_w = torch.relu(G @ T_embed(t_b) + c)
expect_close(task_layer(x, t_b), ((x @ W_sr + b) * _w).detach(), "task_layer(x, t_b)", hint="w_t = ReLU(G e_t + c) with e_t = T_embed(t).")

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
# **Why?** The package starts the generator's bias $c$ at 1. What does the layer compute for every task at
# the start of training then, and why is that a good starting point?

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# With $G$ small at initialisation, $w_t \approx \mathrm{ReLU}(c) = 1$, so every task starts with the plain
# shared layer $x W_{sr} + b$: an ordinary network that trains normally, and the task dependence grows only as
# far as the data ask for it. With scales near 0 the features would start (almost) switched off.

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## 3. The embedding loss (eq. 6)
#
# TAFE-Net also pulls an input's task-aware feature $\mathrm{TAFE}(x_j; t_i)$ towards the task embedding
# $e_{t_i}$ when $x_j$ belongs to class $i$ ($q_{ij} = 1$) and pushes it to cosine $\le 0$ otherwise:
#
# $$ \mathcal L_{emb} = \frac{1}{TS} \sum_{i,j} \Big(\max\big(\cos(\mathrm{TAFE}(x_j; t_i), e_{t_i}), 0\big) - q_{ij}\Big)^2. $$

# %% [raw]
# # BEGIN QUESTION
# name: q3
# points: 3

# %% [markdown]
# **Exercise 3.** Write `embedding_loss(tafe, e, q)`: `tafe` is (S, T, E) (sample $j$ under task $i$), `e` the
# (T, E) task embeddings, `q` the (S, T) targets in {0, 1}; return the loss as a 0-d tensor.

# %% [raw]
# # BEGIN SOLUTION

# %%
def embedding_loss(tafe: torch.Tensor, e: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Mean over (sample, task) of (max(cos(TAFE, e_t), 0) - q)^2."""
    # BEGIN SOLUTION
    cos = torch.nn.functional.cosine_similarity(tafe, e[None], dim=-1, eps=1e-8).clamp_min(0.0)
    return ((cos - q) ** 2).mean()
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
from workbench.course_checks import expect_shape
expect_shape(embedding_loss(torch.randn(4, 2, 3), torch.randn(2, 3), torch.eye(2)[[0, 1, 0, 1]]), (), "embedding_loss(tafe, e, q)")

# %%
from workbench.course_checks import expect_close
expect_close(embedding_loss(torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]]), torch.tensor([[2.0, 0.0], [1.0, 0.0]]), torch.tensor([[1.0, 0.0]])), 0.0, "the loss when the own task's cosine is 1 and the other's is -1", hint="clip the cosine at 0 (max(cos, 0)) before comparing with q: a negative cosine for a wrong task costs nothing.")

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
from workbench.course_checks import expect_close
from workbench.methods.tafe_net import embedding_loss as _ref_loss
_g = torch.Generator().manual_seed(2)
_tafe, _e = torch.randn(6, 3, 5, generator=_g), torch.randn(3, 5, generator=_g)
_q = torch.eye(3)[torch.tensor([0, 1, 2, 0, 1, 2])]
expect_close(embedding_loss(_tafe, _e, _q), _ref_loss(_tafe, _e, _q), "against workbench.methods.tafe_net.embedding_loss")

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
# **Why?** The classification loss alone already trains the model. What does the embedding loss add when there
# are few training tasks, and why does it help zero-shot prediction of *unseen* tasks?

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# It ties images and task descriptions into one space: an image's task-aware feature must point towards the
# embedding of its own class's description. That regularises the meta learner (few tasks give few training
# signals for it) and makes the embedding of an unseen description meaningful in the same space, so the
# weights generated from it produce features that match that class's images.

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION
