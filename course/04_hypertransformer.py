# %% [markdown]
# # Lesson 4 — HyperTransformer: a logits layer written as attention, and reading generated weights
#
# HyperTransformer (Zhmoginov, Sandler & Vladymyrov, ICML 2022) is a transformer that reads a few-shot support set
# and *writes the weights* of a small CNN that then classifies the query images. Why a transformer? Section 3.2
# of the paper shows that one self-attention layer can already express a sensible few-shot learner: with one
# placeholder token per class that attends to the support samples of its class, the attention output is an
# average of their embeddings, and that is a weight row of a prototype-like logits layer (the paper's eq. 1).
#
# You will write eq. 1, the attention that computes it, and the prototype logits layer it gives; then you will
# open the package's trained HyperTransformer (`workbench.methods.hypertransformer`, shipped checkpoint, notebook
# `hypertransformer`) and check whether the weights it generates for real Omniglot characters look like that.
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
import torch
import torch.nn.functional as F

torch.manual_seed(0)
E = torch.randn(6, 4)  # embeddings e^(m) of 6 support samples, 4 features each
labels = torch.tensor([0, 0, 1, 1, 2, 2])  # their classes: a 3-way 2-shot support set
Q = torch.randn(5, 4)  # embeddings of 5 query samples
n_way = 3

# %% [markdown]
# ## 1. The paper's eq. 1: weights from labelled embeddings
#
# With $e^{(m)}$ the embedding and $y^{(m)}$ the one-hot label of support sample $m$ ($m = 1..n$), the paper's
# prototype-like logits layer has the weights
#
# $$ W_{ij} = \sum_{m=1}^{n} y^{(m)}_i\, e^{(m)}_j, \qquad\text{i.e.}\qquad W = Y^\top E, $$
#
# row $i$ is the sum of the embeddings of the samples of class $i$ ($Y$: the $n \times$ `n_way` one-hot labels).

# %% [raw]
# # BEGIN QUESTION
# name: q1
# points: 2

# %% [markdown]
# **Exercise 1.** Write `eq1_weights(e, labels, n_way)` for embeddings `e` (n x d) and integer `labels` (n,):
# return $W$ (n_way x d). A class without samples gets a row of zeros.

# %% [raw]
# # BEGIN SOLUTION

# %%
def eq1_weights(e: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
    """W = Y^T E: row i is the sum of the embeddings labelled i."""
    # BEGIN SOLUTION
    one_hot = F.one_hot(labels, n_way).to(e.dtype)  # (n, n_way)
    return one_hot.T @ e
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
from workbench.course_checks import expect_shape
expect_shape(eq1_weights(E, labels, n_way), (3, 4), "eq1_weights(E, labels, 3)")

# %%
from workbench.course_checks import expect_close
expect_close(eq1_weights(torch.tensor([[1.0, 0.0], [3.0, 1.0], [0.0, 5.0]]), torch.tensor([0, 0, 1]), 2), [[4.0, 1.0], [0.0, 5.0]], "eq1_weights for e = [[1, 0], [3, 1], [0, 5]], labels [0, 0, 1]", hint="row i sums the embeddings of the samples labelled i: Y^T E, not E^T Y or an average.")

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
from workbench.course_checks import expect_close
_g = torch.Generator().manual_seed(3)
_e, _l = torch.randn(7, 5, generator=_g), torch.tensor([2, 0, 2, 2, 1, 0, 2])
expect_close(eq1_weights(_e, _l, 4), torch.stack([_e[_l == i].sum(0) for i in range(4)]), "eq1_weights on an unbalanced support set with an empty class", hint="an empty class gets zeros; the others the sum over their samples.")

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
# **Why?** The paper notes that eq. 1 is what one gradient-descent step on the cross-entropy gives, starting from
# $W = 0$. Explain why (what is the gradient of the loss with respect to $W$ at $W = 0$?).

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# At $W = 0$ all logits are 0, so the softmax is uniform, $p_i = 1/K$. The gradient of the summed cross-entropy
# with respect to $W_{ij}$ is $\sum_m (p^{(m)}_i - y^{(m)}_i)\, e^{(m)}_j = \frac1K \sum_m e^{(m)}_j -
# \sum_m y^{(m)}_i e^{(m)}_j$. A step of size $\eta$ against it gives $W = \eta\,\big(Y^\top E - \frac1K
# \mathbf 1 \textstyle\sum_m e^{(m)\top}\big)$: eq. 1 minus the same vector in every row, which changes no
# argmax or softmax (it adds the same number to every logit of a query).

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## 2. The same weights from self-attention
#
# Attention gives each query token a softmax-weighted average of the value tokens:
#
# $$ \mathrm{Attention}(Q, K, V) = \mathrm{softmax}\big(s\, Q K^\top\big)\, V, $$
#
# with the softmax over the keys (one distribution per query row) and the scale $s$ (the transformer uses
# $s = 1/\sqrt d$). In HyperTransformer the weight placeholder of class $i$ plays the query, the support samples'
# label embeddings $\xi(c_m)$ the keys and their embeddings $e^{(m)}$ the values. If the placeholder of class $i$
# matches only the label embedding of class $i$, its output is the **mean** of the embeddings of class $i$: a row
# of eq. 1 divided by the number of shots.

# %% [raw]
# # BEGIN QUESTION
# name: q2
# points: 3

# %% [markdown]
# **Exercise 2.** Write `attention(queries, keys, values, scale)`: `queries` (q x d), `keys` (k x d), `values`
# (k x d_v); return (q x d_v).

# %% [raw]
# # BEGIN SOLUTION

# %%
def attention(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(scale * Q K^T) V, the softmax taken over the keys."""
    # BEGIN SOLUTION
    weights = torch.softmax(scale * queries @ keys.T, dim=-1)  # (q, k): one distribution over keys per query
    return weights @ values
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
from workbench.course_checks import expect_shape
expect_shape(attention(torch.eye(3), F.one_hot(labels, 3).float(), E, 1.0), (3, 4), "attention(placeholders, label embeddings, E, 1.0)")

# %%
from workbench.course_checks import expect_close
expect_close(attention(torch.zeros(1, 2), torch.randn(3, 2), torch.tensor([[3.0], [0.0], [6.0]]), 1.0), [[3.0]], "attention for a query that matches every key equally", hint="equal scores give equal weights 1/3 each: take the softmax over the keys (dim=-1), then multiply by the values.")

# %%
from workbench.course_checks import expect_close
expect_close(attention(torch.eye(3), F.one_hot(labels, 3).float(), E, 30.0), torch.stack([E[labels == i].mean(0) for i in range(3)]), "placeholder i attending to the samples labelled i (scale 30)", hint="with one-hot label embeddings as keys, placeholder i should average the embeddings of class i.")

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
from workbench.course_checks import expect_close
from workbench.methods.hypertransformer import EncoderLayer
_layer = EncoderLayer(4, 1, 8)  # the package's transformer layer; its attention with identity projections
with torch.no_grad():
    _ = _layer.attn.in_proj_weight.copy_(torch.eye(4).repeat(3, 1)), _layer.attn.in_proj_bias.zero_()
    _ = _layer.attn.out_proj.weight.copy_(torch.eye(4)), _layer.attn.out_proj.bias.zero_()
    _ref = _layer.attn(Q[None], E[None], E[None], need_weights=False)[0][0]
expect_close(attention(Q, E, E, 4 ** -0.5), _ref, "against the package's nn.MultiheadAttention", hint="scale the scores by `scale` before the softmax.")

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
# **Why?** The transformer in HyperTransformer has no positional encoding. What does that guarantee about the
# generated weights when the support samples are shuffled, and why is that the right property for a learner?

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# Without positions, attention treats its input as a set: shuffling the support samples permutes the keys and
# values together, the softmax-weighted sums do not change, and the placeholders' outputs (the weights) are the
# same. A learner should depend on the training set, not on the order in which its samples are listed; it also
# handles any number of samples per class (unbalanced or unlabeled ones) without change.

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## 3. A prototype-like logits layer
#
# Take the class means $c_i$ (what attention gave you) and set the logits layer to
#
# $$ W_i = 2\,c_i, \qquad b_i = -\lVert c_i \rVert^2, \qquad \text{logit}_i(q) = q^\top W_i + b_i
#    = -\lVert q - c_i \rVert^2 + \lVert q \rVert^2 . $$
#
# The last term is the same for every class, so this *linear* layer makes exactly the predictions of a
# Prototypical Network (nearest class mean in squared Euclidean distance).

# %% [raw]
# # BEGIN QUESTION
# name: q3
# points: 3

# %% [markdown]
# **Exercise 3.** Write `prototype_logits(prototypes, queries)` for `prototypes` (n_way x d) and `queries`
# (q x d): return the logits (q x n_way) of the linear layer above.

# %% [raw]
# # BEGIN SOLUTION

# %%
def prototype_logits(prototypes: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Logits of the linear layer W = 2 c, b = -|c|^2."""
    # BEGIN SOLUTION
    W = 2.0 * prototypes
    b = -(prototypes ** 2).sum(dim=1)
    return queries @ W.T + b
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
from workbench.course_checks import expect_shape
expect_shape(prototype_logits(torch.randn(3, 4), Q), (5, 3), "prototype_logits(prototypes, Q)")

# %%
from workbench.course_checks import expect_close
expect_close(prototype_logits(torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[0.0, 0.0]])), [[-1.0, -4.0]], "prototype_logits for a query at the origin", hint="at q = 0 only the bias is left: b_i = -|c_i|^2 (minus the squared length, not the length).")

# %%
from workbench.course_checks import expect_close
expect_close(prototype_logits(torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[1.0, 1.0]])), [[1.0, 0.0]], "prototype_logits for the query [1, 1]", hint="q . W_i with W_i = 2 c_i, plus b_i: 2 - 1 = 1 and 4 - 4 = 0.")

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
import types
from workbench.course_checks import expect_close
from workbench.methods.hypertransformer import ProtoNet
# The package's ProtoNet logits (-squared distance to the class means) on these embeddings: the same softmax.
_fake = types.SimpleNamespace(support_query_features=lambda episode: (E, Q))
_ref = ProtoNet.episode_logits(_fake, types.SimpleNamespace(n_way=3, support_y=labels))
_protos = torch.stack([E[labels == i].mean(0) for i in range(3)])
expect_close(torch.softmax(prototype_logits(_protos, Q), 1), torch.softmax(_ref, 1), "softmax of your logits vs the package's ProtoNet", hint="the two should differ only by |q|^2, the same for every class.")

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
# **Why?** Without the bias ($b = 0$) the layer would score classes by $q^\top c_i$. Which classes would it
# favour wrongly, and how does $-\lVert c_i\rVert^2$ fix that?

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# $q^\top c_i$ grows with the length of $c_i$: a class whose mean embedding is long (bright, thick or
# high-contrast samples) would win for queries that are closer to another class. The bias turns the dot product
# into (minus) a squared distance, $-\lVert q - c_i\rVert^2 + \text{const}$, which compares positions, not lengths.

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## 4. Reading the weights a trained HyperTransformer generates
#
# The package ships a HyperTransformer trained on Omniglot (8-channel CNN, only the logits layer generated,
# 20-way; test accuracy in its `.json` card). Below it writes the weights for one 20-way 1-shot episode of
# *test* characters it never saw. `weights.logits_weight` is (20 x 8), `weights.logits_bias` (20,), and the CNN
# turns each image into 8 features (the input of the logits layer). Loading takes a few seconds.

# %%
from workbench.data import load_omniglot
from workbench.methods.hypertransformer import load_hypertransformer, omniglot_samplers

ht = load_hypertransformer()  # the shipped checkpoint (sha256-verified)
episode = omniglot_samplers(20, k_shot=1, omniglot=load_omniglot(28))["test"].episode(0)
with torch.no_grad():
    weights = ht.generate(episode, unlabeled=False)  # support set in, CNN weights out
    support_features, _ = ht.cnn.features(episode.support_x, weights.conv)  # (20, 8): one image per class
    query_features, _ = ht.cnn.features(episode.query_x, weights.conv)  # (60, 8): 3 per class
print(ht, "|", episode)
print("generated logits layer:", tuple(weights.logits_weight.shape), tuple(weights.logits_bias.shape))

# %% [raw]
# # BEGIN QUESTION
# name: q4
# points: 2

# %% [markdown]
# **Exercise 4.** Write `query_logits(weights, features)`: apply the generated logits layer to CNN features
# (n x 8) and return the logits (n x 20), $\text{logits} = F\, W^\top + b$.

# %% [raw]
# # BEGIN SOLUTION

# %%
def query_logits(weights, features: torch.Tensor) -> torch.Tensor:
    """The generated logits layer applied to features: F W^T + b."""
    # BEGIN SOLUTION
    return features @ weights.logits_weight.T + weights.logits_bias
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
from workbench.course_checks import expect_shape
expect_shape(query_logits(weights, query_features), (60, 20), "query_logits(weights, query_features)")

# %%
from workbench.course_checks import expect_close
expect_close(query_logits(weights, torch.zeros(2, 8)), weights.logits_bias.expand(2, 20), "query_logits for all-zero features", hint="with zero features only the bias is left: add weights.logits_bias.")

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
from workbench.course_checks import expect_close
with torch.no_grad():
    _ref = ht.classify(weights, episode.query_x)
expect_close(query_logits(weights, query_features), _ref, "against HyperTransformer.classify", rtol=1e-4, atol=1e-4)

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
# **Why?** Nothing was trained on this episode's characters, yet the query accuracy is far above chance
# (1/20). Where did the learning happen, and what happens at test time instead of gradient steps?

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# The learning happened across tens of thousands of *training episodes*: the transformer (and the CNN's shared
# parts) were trained so that the weights they write from a support set classify that episode's queries. At test
# time there is no optimisation at all: one forward pass of the transformer over the support set produces the
# logits layer. Learning to learn: the transformer is the learning algorithm.

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## 5. Are the generated weights prototypes?
#
# If the trained transformer does something like eq. 1, the generated row $W_i$ should point the same way as
# the (single) support feature $e_i$ of class $i$. The cosine between row $i$ and support feature $j$ is
#
# $$ \cos(W_i, e_j) = \frac{W_i^\top e_j}{\lVert W_i\rVert\,\lVert e_j\rVert}. $$

# %% [raw]
# # BEGIN QUESTION
# name: q5
# points: 3

# %% [markdown]
# **Exercise 5.** Write `row_cosines(W, e)` for `W` (n_way x d) and `e` (n x d): return the (n_way x n) matrix
# of cosines.

# %% [raw]
# # BEGIN SOLUTION

# %%
def row_cosines(W: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """cos(W_i, e_j) for every generated row i and support feature j."""
    # BEGIN SOLUTION
    W_unit = W / W.norm(dim=1, keepdim=True).clamp_min(1e-12)
    e_unit = e / e.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return W_unit @ e_unit.T
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
from workbench.course_checks import expect_shape
expect_shape(row_cosines(weights.logits_weight, support_features), (20, 20), "row_cosines(W, support_features)")

# %%
from workbench.course_checks import expect_close
expect_close(row_cosines(torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[3.0, 0.0], [1.0, 1.0], [0.0, -1.0]])), [[1.0, 0.5 ** 0.5, 0.0], [0.0, 0.5 ** 0.5, -1.0]], "row_cosines for W = [[1, 0], [0, 2]], e = [[3, 0], [1, 1], [0, -1]]", hint="divide each dot product by both lengths; rows index W, columns index e.")

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
from workbench.course_checks import expect_close, expect_true
_cos = F.cosine_similarity(weights.logits_weight[:, None], support_features[None], dim=-1)
expect_close(row_cosines(weights.logits_weight, support_features), _cos, "row_cosines on the generated weights", rtol=1e-4, atol=1e-5)
_own, _other = _cos.diag().mean(), (_cos.sum() - _cos.diag().sum()) / (20 * 19)
expect_true(bool(_own > _other + 0.3), "the shipped checkpoint's rows no longer lean towards their own class's support image")

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %%
# What your cosines say (run after exercise 5): row i's best match, its length against the support feature's,
# and how the generated bias compares with -|e_i|^2 (the prototype layer of exercise 3 has b_i = -|c_i|^2).
cos = row_cosines(weights.logits_weight, support_features)
print("row i is closest to support image i for", int((cos.argmax(1) == torch.arange(20)).sum()), "of 20 classes;",
      f"mean cosine on the diagonal {cos.diag().mean():.2f}, off it {(cos.sum() - cos.diag().sum()) / 380:.2f}")
print("length of W_i / length of e_i:", (weights.logits_weight.norm(dim=1) / support_features.norm(dim=1)).mean().item())
print("correlation of b_i with -|e_i|^2:",
      torch.corrcoef(torch.stack([weights.logits_bias, -(support_features ** 2).sum(1)]))[0, 1].item())

# %% [raw]
# # BEGIN QUESTION
# name: q5_why
# manual: true
# points: 1

# %% [markdown]
# **Why?** The generated rows lean towards their own class's support feature (a clearly higher cosine on the
# diagonal than off it), are longer than the features, and the bias tracks $-\lVert e_i\rVert^2$; yet a row is
# not simply its class's feature (for most classes some other support image has a higher cosine). Which layer from
# this lesson is the starting point, and what has the transformer added? (Hint: the shipped model scores 87.0%
# 1-shot and 90.0% with 2 extra *unlabeled* images per class, while a ProtoNet on the same CNN scores 73.0%.)

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# The starting point is the prototype logits layer of exercise 3 ($W_i \propto e_i$, $b_i \approx -\lVert
# e_i\rVert^2$): the package initialises the transformer at eq. 1 (`matched_init`), and the bias still tracks
# $-\lVert e_i\rVert^2$. Training moved the rows away from the plain class features: a row is written from the
# whole support set, so it can be pushed away from the other classes' samples (a discriminative direction rather
# than a mean), weigh samples unequally, and use unlabeled samples by attending to them through their similarity
# to labelled ones (the paper's semi-supervised mechanism) — none of which a class mean can do, and it is worth
# 14 points over the ProtoNet here.

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION
