# %% [markdown]
# # Lesson 2 — CADA-VAE: the losses that align two modalities, and how GZSL is scored
#
# CADA-VAE (Schönfeld et al., CVPR 2019) trains one VAE per modality (image features, class attributes) and
# makes their latent spaces agree, so that a classifier trained on latents of *attributes* of unseen classes
# can label *images* of them. You will write the heart of it — the sampling step, the KL term, the
# 2-Wasserstein distance that aligns the two latent distributions — and the GZSL score, while the package
# (`workbench.methods.cada_vae`, `workbench.evaluation`) does the rest.
#
# Run a cell with Shift+Enter. After each exercise, run its `grader.check(...)` cell: it runs the public checks
# on your code, offline, in a second. More (hidden) checks are run when your notebook is graded.

# %% tags=["parameters"]
profile = "default"  # [smoke|default|full] the lessons are small: every profile runs the same exercises
seed = 0  # random seed (numpy, torch, random) for everything random in this lesson

# %%
import workbench.notebook

S = workbench.notebook.setup(profile, seed)

# %%
import numpy as np
import torch

torch.manual_seed(0)
# Tiny latents: a batch of 4 samples, latent size 3, for an "image" encoder and an "attribute" encoder.
mu_img, logvar_img = torch.randn(4, 3), 0.3 * torch.randn(4, 3)
mu_att, logvar_att = torch.randn(4, 3), 0.3 * torch.randn(4, 3)

# %% [markdown]
# ## 1. The reparameterisation trick
#
# An encoder outputs a mean $\mu$ and a log-variance $\log\sigma^2$ per latent dimension. A sample is drawn as
#
# $$ z = \mu + \sigma \odot \varepsilon, \qquad \sigma = \exp\big(\tfrac12 \log\sigma^2\big), \qquad \varepsilon \sim \mathcal N(0, I). $$

# %% [raw]
# # BEGIN QUESTION
# name: q1
# points: 3

# %% [markdown]
# **Exercise 1.** Write `sample_latent(mu, logvar, eps)` returning $z$ (same shape as `mu`), given the noise
# `eps` (so that the result is deterministic).

# %% [raw]
# # BEGIN SOLUTION

# %%
def sample_latent(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """z = mu + sigma * eps with sigma = exp(logvar / 2)."""
    # BEGIN SOLUTION
    return mu + torch.exp(0.5 * logvar) * eps
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
from workbench.course_checks import expect_shape
expect_shape(sample_latent(mu_img, logvar_img, torch.ones(4, 3)), (4, 3), "sample_latent(mu, logvar, eps)")

# %%
from workbench.course_checks import expect_close
expect_close(sample_latent(torch.zeros(1, 2), torch.log(torch.tensor([[4.0, 1.0]])), torch.ones(1, 2)), [[2.0, 1.0]], "sample_latent(0, log [4, 1], 1)", hint="sigma = exp(logvar / 2): variance 4 means sigma 2, not 4.")

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
from workbench.course_checks import expect_close
from workbench.methods.cada_vae import reparameterize
_mu, _lv = torch.randn(5, 2, generator=torch.Generator().manual_seed(3)), torch.randn(5, 2, generator=torch.Generator().manual_seed(4))
_eps = torch.randn(_mu.shape, generator=torch.Generator().manual_seed(7))
expect_close(sample_latent(_mu, _lv, _eps), reparameterize(_mu, _lv, generator=torch.Generator().manual_seed(7)), "sample_latent on random inputs")

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
# **Why?** Why does the VAE sample $z$ as $\mu + \sigma\varepsilon$ instead of drawing $z \sim \mathcal N(\mu, \sigma^2)$
# directly? One or two sentences.

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# Written this way the randomness sits in $\varepsilon$, which does not depend on the encoder, so $z$ is a
# differentiable function of $\mu$ and $\sigma$ and the loss can be back-propagated into the encoder; a direct
# draw has no gradient with respect to $\mu$ and $\sigma$.

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## 2. The KL term
#
# Each VAE keeps its posterior close to the prior $\mathcal N(0, I)$. For a diagonal Gaussian, summed over the
# batch and the latent dimensions,
#
# $$ \mathrm{KL}\big(\mathcal N(\mu, \sigma^2) \,\|\, \mathcal N(0, I)\big) = -\tfrac12 \sum \big(1 + \log\sigma^2 - \mu^2 - \sigma^2\big). $$

# %% [raw]
# # BEGIN QUESTION
# name: q2
# points: 3

# %% [markdown]
# **Exercise 2.** Write `kl_standard_normal(mu, logvar)` returning that sum as a 0-d tensor (a single number).

# %% [raw]
# # BEGIN SOLUTION

# %%
def kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) summed over the batch and the dimensions."""
    # BEGIN SOLUTION
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
from workbench.course_checks import expect_shape
expect_shape(kl_standard_normal(mu_img, logvar_img), (), "kl_standard_normal(mu, logvar)")

# %%
from workbench.course_checks import expect_close
expect_close(kl_standard_normal(torch.ones(2, 3), torch.zeros(2, 3)), 3.0, "KL of N(1, 1) per dimension, 2 x 3 of them", hint="each dimension with mu = 1, sigma = 1 contributes mu^2 / 2 = 0.5; a KL is never negative.")

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
from workbench.course_checks import expect_close
from workbench.methods.cada_vae import kl_to_standard_normal
expect_close(kl_standard_normal(mu_att, logvar_att), kl_to_standard_normal(mu_att, logvar_att), "KL on random inputs")

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
# **Why?** CADA-VAE multiplies the KL term by a weight $\beta$ that grows from 0 during the first epochs
# (warm-up). What would go wrong with the full weight from the first step?

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# At the start the decoder is useless, so the cheapest way to lower the loss is to make every posterior equal
# the prior (KL = 0): the latents then carry no information about the input ("posterior collapse"). Warming
# $\beta$ up lets the encoder first learn informative latents.

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## 3. Distribution alignment: the 2-Wasserstein distance
#
# The image latent of a sample and the attribute latent of its class should be the *same distribution*. For
# diagonal Gaussians the 2-Wasserstein distance has a closed form (per sample, then summed over the batch):
#
# $$ W_{ij} = \Big( \lVert \mu_i - \mu_j \rVert_2^2 + \lVert \sigma_i - \sigma_j \rVert_2^2 \Big)^{1/2}. $$
#
# Note: standard deviations $\sigma$, not variances.

# %% [raw]
# # BEGIN QUESTION
# name: q3
# points: 4

# %% [markdown]
# **Exercise 3.** Write `wasserstein2(mu1, logvar1, mu2, logvar2)`: $W$ for each row, summed over the rows
# (a 0-d tensor).

# %% [raw]
# # BEGIN SOLUTION

# %%
def wasserstein2(mu1: torch.Tensor, logvar1: torch.Tensor, mu2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """2-Wasserstein distance between diagonal Gaussians, per row, summed over the rows."""
    # BEGIN SOLUTION
    std1, std2 = torch.exp(0.5 * logvar1), torch.exp(0.5 * logvar2)
    return torch.sqrt(((mu1 - mu2) ** 2).sum(1) + ((std1 - std2) ** 2).sum(1)).sum()
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
from workbench.course_checks import expect_shape
expect_shape(wasserstein2(mu_img, logvar_img, mu_att, logvar_att), (), "wasserstein2(...)")

# %%
from workbench.course_checks import expect_close
expect_close(wasserstein2(mu_img, logvar_img, mu_img, logvar_img), 0.0, "W between a distribution and itself")

# %%
from workbench.course_checks import expect_close
expect_close(wasserstein2(torch.tensor([[3.0, 0.0]]), torch.zeros(1, 2), torch.tensor([[0.0, 4.0]]), torch.zeros(1, 2)), 5.0, "W between N((3, 0), I) and N((0, 4), I)", hint="the means differ by (3, -4): the distance is sqrt(9 + 16) = 5; did you take the square root?")

# %%
from workbench.course_checks import expect_close
expect_close(wasserstein2(torch.zeros(1, 1), torch.log(torch.tensor([[4.0]])), torch.zeros(1, 1), torch.zeros(1, 1)), 1.0, "W between N(0, 4) and N(0, 1)", hint="use standard deviations: |2 - 1| = 1, not |4 - 1| = 3.")

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
from workbench.course_checks import expect_close
from workbench.methods.cada_vae import wasserstein_diag
expect_close(wasserstein2(mu_img, logvar_img, mu_att, logvar_att), wasserstein_diag(mu_img, logvar_img, mu_att, logvar_att), "W on random inputs")

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
# **Why?** Aligning only the means, $\lVert\mu_i - \mu_j\rVert$, would be simpler. What does the $\sigma$ term
# add for a classifier that is trained on *sampled* attribute latents and tested on image latents?

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# The classifier is trained on samples spread according to the attribute posteriors' $\sigma$. If the image
# posteriors had a different spread, the test latents would fall where the classifier saw little training data.
# Matching $\sigma$ too makes the two *distributions* agree, not only their centres.

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## 4. Scoring generalised zero-shot learning
#
# GZSL scores the argmax over *all* classes on test images of seen classes (accuracy $S$) and of unseen
# classes ($U$). Both are **per-class mean** accuracies (each class counts once, however many images it has),
# and they are combined by the harmonic mean
#
# $$ H = \frac{2\,S\,U}{S + U} \quad (H = 0 \text{ when } S = U = 0). $$

# %% [raw]
# # BEGIN QUESTION
# name: q4
# points: 4

# %% [markdown]
# **Exercise 4.** Write `per_class_accuracy(y_true, y_pred)` (numpy arrays of class ids; the mean over the
# classes present in `y_true` of the fraction of that class's samples predicted right) and
# `harmonic_h(S, U)`; both return a Python float.

# %% [raw]
# # BEGIN SOLUTION

# %%
def per_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean over the classes in y_true of the accuracy on that class's samples."""
    # BEGIN SOLUTION
    classes = np.unique(y_true)
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in classes]))
    # END SOLUTION


def harmonic_h(S: float, U: float) -> float:
    """H = 2SU / (S + U), and 0 when both are 0."""
    # BEGIN SOLUTION
    return 0.0 if S + U == 0 else 2.0 * S * U / (S + U)
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
from workbench.course_checks import expect_close
expect_close(per_class_accuracy(np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0])), 0.5, "per_class_accuracy([0,0,0,1], [0,0,0,0])", hint="class 0 is all right (1.0), class 1 all wrong (0.0): the per-class mean is 0.5, the plain accuracy 0.75.")

# %%
from workbench.course_checks import expect_close
expect_close(harmonic_h(0.8, 0.2), 0.32, "harmonic_h(0.8, 0.2)", hint="2 * 0.8 * 0.2 / (0.8 + 0.2) = 0.32; the arithmetic mean would be 0.5.")

# %%
from workbench.course_checks import expect_close
expect_close(harmonic_h(0.0, 0.0), 0.0, "harmonic_h(0, 0)", hint="define H = 0 when S + U = 0 instead of dividing by zero.")

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
from workbench.course_checks import expect_close
from workbench.evaluation import harmonic_mean, per_class_accuracy as _ref_pca
_rng = np.random.default_rng(5)
_y, _p = _rng.integers(0, 6, 200), _rng.integers(0, 6, 200)
expect_close(per_class_accuracy(_y, _p), _ref_pca(_y, _p), "per_class_accuracy on random labels")
expect_close(harmonic_h(0.61, 0.37), harmonic_mean(0.61, 0.37), "harmonic_h(0.61, 0.37)")

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
# **Why?** A model that labels every test image with a *seen* class gets a high $S$ and $U = 0$. Why is $H$
# the right summary for GZSL, and not the mean $(S + U)/2$?

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# Such a model does no zero-shot learning at all, yet $(S+U)/2$ would still give it about half of $S$. $H$ is
# 0 whenever either part is 0 and is dominated by the smaller of the two, so it rewards only models that
# recognise seen *and* unseen classes, which is the point of GZSL (seen classes usually win the argmax).

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## Putting it together
#
# The package's `CADAVAE` uses exactly these pieces (`workbench.methods.cada_vae.reparameterize`,
# `kl_to_standard_normal`, `wasserstein_diag`) and `workbench.evaluation.gzsl_scores` for S, U and H. The
# notebook `cada_vae` trains it on real features; here is one alignment loss on the tiny latents above:

# %%
z_img = sample_latent(mu_img, logvar_img, torch.randn(4, 3, generator=torch.Generator().manual_seed(0)))
print("KL(image) =", float(kl_standard_normal(mu_img, logvar_img)))
print("W2(image, attribute) =", float(wasserstein2(mu_img, logvar_img, mu_att, logvar_att)))
print("H for S=0.6, U=0.4:", harmonic_h(0.6, 0.4))
