"""CADA-VAE (workbench.methods.cada_vae): the official schedule and losses, the GZSL protocol, the teaching data,
few-shot, the dataset resolver (never a silent synthetic substitute) and the xlsa17 path end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from data_fixtures import data_root, manifests, tiny_manifest, write_xlsa17_pair  # noqa: F401

from workbench.data import load_digit_styles, load_digits_7seg, load_xlsa17
from workbench.errors import DataError, ParameterError
from workbench.evaluation import gzsl_scores, harmonic_mean
from workbench.methods.cada_vae import (CADAVAE, CADAVAEConfig, SamplesPerClass, Warmup, attribute_regression_baseline,
                                        few_shot_curve, kl_to_standard_normal, latent_points, reparameterize,
                                        wasserstein_diag)
from workbench.methods.gzsl_data import is_paper_benchmark, resolve_gzsl_dataset


pytestmark = pytest.mark.usefixtures("one_torch_thread")
#: The 64-d digit data needs β and δ scaled by D/2048 (module docstring); real image features use the default 1.0.
DIGITS_SCALE = "auto"


def official_factor(epoch: int, factor: float, start: int, end: int) -> float:
    """The official code's warm-up (vaemodel.py, trainstep), transcribed."""
    f = 1.0 * (epoch - start) / (1.0 * (end - start))
    f = f * (1.0 * factor)
    return min(max(f, 0), factor)


# --------------------------------------------------------------------------------------------- schedule, losses
@pytest.mark.parametrize("epoch", [0, 1, 5, 6, 7, 14, 21, 22, 30, 48, 75, 76, 93, 94, 99])
def test_warmup_weights_equal_the_official_formula(epoch):
    w = CADAVAEConfig().weights(epoch, feature_dim=2048)
    assert w["beta"] == pytest.approx(official_factor(epoch, 0.25, 0, 93))
    assert w["cross_reconstruction"] == pytest.approx(official_factor(epoch, 2.37, 21, 75))
    assert w["distribution_alignment"] == pytest.approx(official_factor(epoch, 8.13, 6, 22))


def test_weight_scale_and_ablations():
    assert CADAVAEConfig().weight_scale(64) == CADAVAEConfig().weight_scale(4096) == 1.0  # default: official
    cfg = CADAVAEConfig(loss_weight_scale="auto")  # the digit teaching data's setting
    assert cfg.weight_scale(2048) == 1.0  # the xlsa17 benchmarks run the official recipe unchanged
    full, small = cfg.weights(50, 2048), cfg.weights(50, 64)
    assert small["beta"] == pytest.approx(full["beta"] / 32)
    assert small["distribution_alignment"] == pytest.approx(full["distribution_alignment"] / 32)
    assert small["cross_reconstruction"] == full["cross_reconstruction"]  # scales with D like reconstruction
    assert CADAVAEConfig(variant="ca").weights(50)["distribution_alignment"] == 0.0
    assert CADAVAEConfig(variant="da").weights(50)["cross_reconstruction"] == 0.0
    assert CADAVAEConfig(loss_weight_scale=1.0).weights(50, 64) == full
    assert Warmup(2.0, 10, 20)(15) == 1.0


def test_wasserstein_term_equals_a_hand_computation():
    mu1 = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    mu2 = torch.tensor([[3.0, 4.0], [1.0, 2.0]])
    var1 = torch.tensor([[1.0, 1.0], [4.0, 1.0]])
    var2 = torch.tensor([[4.0, 9.0], [1.0, 1.0]])
    got = wasserstein_diag(mu1, var1.log(), mu2, var2.log())
    # row 1: |mu|^2 = 9 + 16, |sigma1 - sigma2|^2 = (1-2)^2 + (1-3)^2 = 5 -> sqrt(30); row 2: (2-1)^2 -> 1
    assert float(got) == pytest.approx(math.sqrt(30.0) + 1.0, rel=1e-6)
    # the paper's general form, W^2 = |mu1-mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr((S2^1/2 S1 S2^1/2)^1/2)
    from scipy.linalg import sqrtm

    total = 0.0
    for a in range(2):
        s1, s2 = np.diag(var1[a].numpy()), np.diag(var2[a].numpy())
        r2 = sqrtm(s2)
        w2 = (np.sum((mu1[a] - mu2[a]).numpy() ** 2) + np.trace(s1) + np.trace(s2)
              - 2 * np.trace(sqrtm(r2 @ s1 @ r2)).real)
        total += math.sqrt(w2)
    assert float(got) == pytest.approx(total, rel=1e-6)


def test_kl_and_samplers():
    mu, logvar = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.log(2.0)]])
    # KL(N(mu, var) || N(0, 1)) = 0.5 * sum(var + mu^2 - 1 - log var)
    assert float(kl_to_standard_normal(mu, logvar)) == pytest.approx(0.5 * (1 + 1 - 1 - 0 + 2 - 1 - math.log(2)))
    mu, logvar = torch.zeros(20000, 3), torch.full((20000, 3), math.log(4.0))
    z = reparameterize(mu, logvar, generator=torch.Generator().manual_seed(0))
    assert z.std(0).numpy() == pytest.approx([2.0] * 3, rel=0.03)  # sigma = exp(logvar / 2)
    zf = reparameterize(mu, logvar, faithful=True, generator=torch.Generator().manual_seed(0))
    assert zf.std(0).numpy() == pytest.approx([4.0] * 3, rel=0.03)  # official: sigma = exp(logvar)
    assert torch.allclose(zf[:, 0], zf[:, 1])  # official: one eps per sample, shared by every dimension


def test_harmonic_mean_is_reported_as_h():
    assert harmonic_mean(0.5, 0.25) == pytest.approx(2 * 0.5 * 0.25 / 0.75)
    assert harmonic_mean(0.0, 0.0) == 0.0
    seen, unseen = np.array([0, 1]), np.array([2, 3])
    eye = np.eye(4)
    y_s, y_u = np.array([0, 0, 1, 1]), np.array([2, 2, 3, 3])
    s_scores = eye[[0, 1, 1, 1]]  # class 0: 1/2, class 1: 2/2 -> S = 0.75
    u_scores = eye[[2, 0, 0, 3]]  # class 2: 1/2, class 3: 1/2 -> U = 0.5
    r = gzsl_scores(s_scores, y_s, u_scores, y_u, seen, unseen)
    assert (r.S, r.U) == (0.75, 0.5) and r.H == pytest.approx(2 * 0.75 * 0.5 / 1.25)


def test_settings_are_checked():
    with pytest.raises(ParameterError, match="unknown CADA-VAE setting"):
        CADAVAE(latnet_size=3)
    with pytest.raises(ParameterError, match="variant"):
        CADAVAE(variant="cad")
    with pytest.raises(ParameterError, match="not fitted"):
        CADAVAE().latent(np.zeros((1, 64)))
    assert SamplesPerClass.official("gzsl", 0) == SamplesPerClass(200, 0, 400, 0)
    assert SamplesPerClass.official("gzsl", 5) == SamplesPerClass(200, 0, 200, 200)
    assert SamplesPerClass.official("zsl", 0) == SamplesPerClass(0, 0, 200, 0)


# --------------------------------------------------------------------------------------------- digits-7seg
@pytest.fixture(scope="module")
def digits():
    return load_digits_7seg(seed=0)


@pytest.fixture(scope="module")
def fitted(digits):
    """The default model (official recipe, 100 epochs) on digits-7seg, seed 0."""
    return CADAVAE(seed=0, loss_weight_scale=DIGITS_SCALE).fit(digits)


#: The benchmark's seeds (benchmarks/results/cada_vae.md): the claims below are asserted on their mean, not on
#: whichever single seed happens to win.
SEEDS = (0, 1, 2, 3, 4)


def _mean_scores(load, seeds=SEEDS) -> tuple[dict, dict, list]:
    """Mean S / U / ZSL (fractions) of CADA-VAE (defaults, the digit data's loss scale) and of the attribute
    regression baseline over ``seeds`` (seed s = data split s and model seed s), and the per-seed rows."""
    rows = []
    for seed in seeds:
        data = load(seed=seed)
        cada = CADAVAE(seed=seed, loss_weight_scale=DIGITS_SCALE).fit(data).evaluate(data)
        baseline = attribute_regression_baseline(data)
        rows.append((seed, cada, baseline))
        print(f"seed {seed}: CADA {cada.as_percent()}  regression {baseline.as_percent()}")
    mean = lambda which, key: float(np.mean([getattr(r[which], key) for r in rows]))  # noqa: E731
    return ({k: mean(1, k) for k in ("S", "U", "ZSL")}, {k: mean(2, k) for k in ("S", "U", "ZSL")}, rows)


@pytest.mark.slow
def test_digits_unseen_classes_beat_chance_and_the_regression_baseline_over_seeds():
    """digits-7seg, the official recipe, 5 seeds (different unseen digits per seed). What holds:

    - on average over the seeds, ZSL (argmax over the 3 unseen digits) beats chance (1/3) and the attribute
      regression baseline, and GZSL U beats the baseline, which almost never predicts an unseen digit (the
      seen-class bias generative GZSL methods were made to remove);
    - at *every* seed the seen digits are learnt (S > 90%) and H is the harmonic mean of S and U.

    Honest scale: single seeds swing by ±10 points and fall below chance at some (benchmarks/results/
    cada_vae.md): zero-shot transfer on digits-7seg is weak, which is why no single seed is asserted."""
    cada, baseline, rows = _mean_scores(load_digits_7seg)
    chance = 1 / 3
    assert cada["ZSL"] > chance + 0.02 and cada["ZSL"] > baseline["ZSL"] + 0.02, (cada, baseline)
    assert cada["U"] > baseline["U"] + 0.02, (cada, baseline)
    for _, scores, _ in rows:
        assert scores.S > 0.9 and scores.H == pytest.approx(harmonic_mean(scores.S, scores.U))


@pytest.mark.slow
def test_digit_styles_unseen_pairs_beat_chance_and_the_regression_baseline_over_seeds():
    """Zero-shot *composition*: 40 (digit, style) classes, each digit's unseen style held out (10 unseen pairs,
    chance 10%), the benchmark's first 3 seeds (a fit here takes 4x a digits-7seg fit), the official recipe. Both
    primitives of every unseen pair were seen in training. At every seed CADA-VAE tells the unseen pairs apart at
    more than twice chance; on average it beats the regression baseline (single seeds come within a point of it). In GZSL its unseen images still go to seen pairs (U near
    0): the seen-class bias is not removed on this data, so nothing is asserted about U."""
    cada, baseline, rows = _mean_scores(load_digit_styles, seeds=SEEDS[:3])  # 40 classes: the first 3 seeds
    chance = 1 / 10
    assert cada["ZSL"] > baseline["ZSL"] + 0.03, (cada, baseline)
    for _, scores, _ in rows:
        assert scores.ZSL > 2 * chance and scores.S > 0.9


def test_few_shot_h_grows_with_k(digits, fitted):
    curve = few_shot_curve(fitted, digits, shots=(0, 2, 10))
    h = curve["H"].to_numpy()
    assert h[0] < h[1] < h[2], curve


def test_training_is_reproducible_and_logged(digits):
    a = CADAVAE(seed=3, epochs=2, loss_weight_scale=DIGITS_SCALE).fit(digits)
    b = CADAVAE(seed=3, epochs=2, loss_weight_scale=DIGITS_SCALE).fit(digits)
    x = digits.features[:5]
    assert np.array_equal(a.latent(x), b.latent(x))
    assert a.evaluate(digits) == b.evaluate(digits)
    frame = a.history_.to_frame()
    assert list(frame["epoch"]) == [0, 1]
    assert {"reconstruction", "kl", "cross_reconstruction", "distribution_alignment", "weight_beta"} <= set(frame)


def test_side_info_modalities_bf16_and_latent_points(digits):
    snapshots = []
    model = CADAVAE(seed=0, epochs=1, side_info=("attributes", "glyph"), precision="bf16",
                    loss_weight_scale=DIGITS_SCALE)
    model.fit(digits, callback=lambda m, done: snapshots.append(done))
    assert snapshots == [0, 1]
    z, table = latent_points(model, digits, images_per_class=5, side_samples_per_class=3)
    assert z.shape == (len(table), 64) and np.isfinite(z).all()
    assert set(table["modality"]) == {"image", "attributes", "glyph"}
    assert set(table.loc[table["modality"] == "image", "split"]) == {"seen", "unseen"}


# --------------------------------------------------------------------------------------------- datasets
def test_resolver_never_substitutes_synthetic_data_for_a_real_dataset(data_root, monkeypatch):  # noqa: F811
    import workbench.data
    import workbench.data.xlsa17

    def forbidden(*args, **kwargs):
        raise AssertionError("synthetic data generated where a real dataset was asked for")

    # the package first: reading its lazy attribute caches the real function, which the undo then restores
    monkeypatch.setattr(workbench.data, "synthetic_gzsl", forbidden)
    monkeypatch.setattr(workbench.data.xlsa17, "synthetic_gzsl", forbidden)
    for name in ("CUB", "awa2"):
        with pytest.raises(DataError, match="workbench data import"):
            resolve_gzsl_dataset(name)
    with pytest.raises(ParameterError, match="unknown GZSL dataset"):
        resolve_gzsl_dataset("CUBB")
    with pytest.raises(ParameterError, match="digits-7seg' only"):
        resolve_gzsl_dataset("CUB", n_unseen=2)
    assert is_paper_benchmark("AWA1") and not is_paper_benchmark("synthetic-AWA1")


def test_resolver_names():
    digits = resolve_gzsl_dataset("digits-7seg", seed=1, n_unseen=2)
    assert digits.name == "digits-7seg" and len(digits.unseen_classes) == 2 and not digits.synthetic
    synthetic = resolve_gzsl_dataset("synthetic-APY", seed=0)
    assert synthetic.synthetic and synthetic.name == "synthetic-APY" and "SYNTHETIC" in synthetic.description


def test_xlsa17_path_end_to_end_on_a_tiny_file(data_root, manifests):  # noqa: F811
    write_xlsa17_pair(data_root / "xlsa17" / "TINY")
    tiny_manifest(manifests, None, None)
    data = load_xlsa17("tiny")
    model = CADAVAE(epochs=3, seed=0, classifier_epochs=2).fit(data)
    assert model.feature_dim_ == 2048 and model.config.weight_scale(2048) == 1.0
    for scores in (model.evaluate(data), model.evaluate(data, shots=2)):
        assert all(0.0 <= v <= 1.0 for v in (scores.S, scores.U, scores.H, scores.ZSL))
    zsl = model.evaluate(data, mode="zsl")
    assert 0.0 <= zsl.ZSL <= 1.0 and math.isnan(zsl.S)
    assert set(model.predict(data.features[data.test_unseen_idx])) <= set(data.unseen_classes)


# --------------------------------------------------------------------------------------------- the loss, by hand
def _official_terms(model: CADAVAE, batch: dict, gen: torch.Generator) -> dict:
    """The released code's computation (vaemodel.py, trainstep), transcribed: each decoder called once per source
    modality, L1 sums, KL per modality, the Wasserstein distance of the image and the first side modality."""
    import torch.nn.functional as F

    mods = list(batch)
    mu, logvar, z = {}, {}, {}
    for m in mods:
        mu[m], logvar[m] = model.encoders_[m](batch[m])
        z[m] = reparameterize(mu[m], logvar[m], faithful=model.config.faithful, generator=gen)
    recon = sum(F.l1_loss(model.decoders_[m](z[m]), batch[m], reduction="sum") for m in mods)
    cross = sum(F.l1_loss(model.decoders_[j](z[i]), batch[j], reduction="sum") for i in mods for j in mods if i != j)
    kl = sum(-0.5 * torch.sum(1 + logvar[m] - mu[m].pow(2) - logvar[m].exp()) for m in mods)
    a, b = mods[0], mods[1]
    da = torch.sqrt(((mu[a] - mu[b]) ** 2).sum(1) + ((torch.exp(logvar[a] / 2) - torch.exp(logvar[b] / 2)) ** 2).sum(1)).sum()
    return {"reconstruction": recon, "cross_reconstruction": cross, "kl": kl, "distribution_alignment": da}


@pytest.fixture(scope="module")
def small_model(digits):
    return CADAVAE(seed=0, epochs=3, loss_weight_scale=DIGITS_SCALE).fit(digits)


def _batch(model: CADAVAE, data, n: int = 50) -> dict:
    idx = np.arange(n)
    x = torch.from_numpy(model.scaler_.transform(data.features[data.trainval_idx[idx]]))
    labels = torch.as_tensor(data.labels[data.trainval_idx[idx]])
    return {"image": x, "attributes": model.side_matrices_["attributes"][labels]}


@pytest.mark.parametrize("faithful", [True, False])
def test_fused_decoder_loss_equals_the_official_per_modality_loss(digits, small_model, faithful):
    small_model.config = CADAVAEConfig(**{**small_model.config.__dict__, "faithful": faithful})
    batch = _batch(small_model, digits)
    with torch.no_grad():
        fused = small_model._loss_terms(batch, torch.Generator().manual_seed(5))
        official = _official_terms(small_model, batch, torch.Generator().manual_seed(5))
    for key, value in official.items():
        assert float(fused[key]) == pytest.approx(float(value), rel=1e-5), key
    small_model.config = CADAVAEConfig(**{**small_model.config.__dict__, "faithful": True})


def test_l1_and_kl_terms_by_hand(monkeypatch):
    """A 2-d image and 1-d attribute VAE with hand-set weights and no sampling noise: every term on paper."""
    import workbench.methods.cada_vae as cv

    model = CADAVAE(latent_size=1)
    model.encoders_ = torch.nn.ModuleDict({m: cv.Encoder(d, 1, 1) for m, d in (("image", 2), ("attributes", 1))})
    model.decoders_ = torch.nn.ModuleDict({m: cv.Decoder(1, 1, d) for m, d in (("image", 2), ("attributes", 1))})
    model.device_ = torch.device("cpu")
    with torch.no_grad():
        for enc in model.encoders_.values():  # hidden = relu(sum x); mu = hidden; logvar = 0 (sigma 1)
            enc.hidden[0].weight.fill_(1.0), enc.hidden[0].bias.zero_()
            enc.mu.weight.fill_(1.0), enc.mu.bias.zero_()
            enc.logvar.weight.zero_(), enc.logvar.bias.zero_()
        for dec in model.decoders_.values():  # x_hat = relu(z) in every output dimension
            dec.net[0].weight.fill_(1.0), dec.net[0].bias.zero_()
            dec.net[2].weight.fill_(1.0), dec.net[2].bias.zero_()
    monkeypatch.setattr(cv, "reparameterize", lambda mu, logvar, **_: mu)  # eps = 0: z = mu
    batch = {"image": torch.tensor([[1.0, 2.0]]), "attributes": torch.tensor([[0.5]])}
    with torch.no_grad():
        terms = {k: float(v) for k, v in model._loss_terms(batch, torch.Generator()).items()}
    # mu_image = 1 + 2 = 3, mu_attr = 0.5
    # reconstruction: |[1, 2] - [3, 3]| = 2 + 1 = 3, |0.5 - 0.5| = 0                        -> 3
    # cross: image from z_attr |[1, 2] - [0.5, 0.5]| = 2, attributes from z_img |0.5 - 3| = 2.5 -> 4.5
    # KL with sigma = 1: 0.5 * mu^2 summed: 0.5 * (9 + 0.25) = 4.625; Wasserstein: |3 - 0.5| = 2.5
    assert terms == pytest.approx({"reconstruction": 3.0, "cross_reconstruction": 4.5, "kl": 4.625,
                                   "distribution_alignment": 2.5})


def test_bf16_loss_is_close_to_fp32(digits, small_model):
    batch = _batch(small_model, digits)
    cfg = small_model.config
    with torch.no_grad():
        fp32 = small_model._loss_terms(batch, torch.Generator().manual_seed(1))
        small_model.config = CADAVAEConfig(**{**cfg.__dict__, "precision": "bf16"})
        try:
            bf16 = small_model._loss_terms(batch, torch.Generator().manual_seed(1))
        finally:
            small_model.config = cfg
    for key in fp32:
        assert float(bf16[key]) == pytest.approx(float(fp32[key]), rel=0.03), key


def test_few_shot_images_leave_the_test_set(digits, small_model):
    """shots=k: k images of each unseen class train the classifier and are no longer scored (official
    transfer_features); the rest of test-unseen is scored, nothing else changes."""
    rng = np.random.default_rng(0)
    samples = SamplesPerClass.official("gzsl", 3)
    z, y, test_unseen = small_model._classifier_set(digits, "gzsl", 3, samples, torch.Generator().manual_seed(0), rng)
    shots = np.setdiff1d(digits.test_unseen_idx, test_unseen)
    assert len(shots) == 3 * len(digits.unseen_classes)
    assert not np.intersect1d(shots, test_unseen).size
    assert np.array_equal(np.bincount(digits.labels[shots], minlength=10)[digits.unseen_classes], [3, 3, 3])
    # 200 image latents per seen class, 200 side + 200 image (the 3 shots, tiled) latents per unseen class
    counts = np.bincount(y.numpy(), minlength=10)
    assert (counts[digits.seen_classes] == 200).all() and (counts[digits.unseen_classes] == 400).all()
