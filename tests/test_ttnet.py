"""TTNet (workbench.methods.ttnet): the image tasks are what their names say, the batched encoder-decoders, the
measured affinity and crowd Γ, the meta learner (fit / regress / predict, errors), and zero-shot results."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from workbench.errors import ParameterError
from workbench.methods.ttnet import (
    DEFAULT_TASKS,
    FAMILY,
    LAYOUT,
    METHODS,
    SMALL_TASKS,
    SMALL_ZERO_SHOT,
    TASKS,
    ZERO_SHOT,
    MetaNetwork,
    TaskFamilyConfig,
    TTNet,
    TTNetConfig,
    baseline_models,
    crowd_gamma,
    fit_mixture,
    forward,
    forward_many,
    gamma_features,
    gamma_weights,
    ink_from_omniglot,
    initial_parameters,
    measure_affinity,
    per_image_loss,
    run_experiment,
    source_count_runs,
    source_count_table,
    source_sets,
    task_input,
    task_pair,
    task_target,
    train_models,
    validate_on_known,
    validation_groups,
    win_rate,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ink():
    """64 real Omniglot characters as ink maps (1 = pen, 0 = paper)."""
    from workbench.data import load_omniglot

    images = load_omniglot().images
    return ink_from_omniglot(images[np.random.default_rng(0).choice(len(images), 64, replace=False)])


def ink_area(x: np.ndarray) -> np.ndarray:
    return (x > 0.5).sum(axis=(1, 2))


# ----------------------------------------------------------------------------------------------------------
# The tasks: each target is what its name says
# ----------------------------------------------------------------------------------------------------------
def test_ink_convention():
    omniglot = np.array([[[1.0, -1.0, 0.0]]], dtype=np.float32)  # paper, ink, grey
    assert ink_from_omniglot(omniglot).tolist() == [[[0.0, 1.0, 0.5]]]


def test_autoencoding_and_inversion(ink):
    assert np.array_equal(task_target("autoencoding", ink), ink)
    inverted = task_target("inversion", ink)
    assert np.allclose(inverted, 1 - ink)
    assert np.allclose(task_target("inversion", inverted), ink)  # an involution
    assert np.all(ink_area(inverted) > ink_area(ink))  # paper becomes ink


def test_dilation_thickens_and_erosion_thins(ink):
    dilated, eroded = task_target("dilation", ink), task_target("erosion", ink)
    assert np.all(dilated >= ink) and np.all(eroded <= ink)
    assert np.all(ink_area(dilated) > ink_area(ink))
    assert np.all(ink_area(eroded) < ink_area(ink))
    assert ink_area(eroded).sum() > 0  # thinner strokes, not erased ones (2x2, not 3x3)


def test_blur_spreads_ink_and_keeps_its_mass(ink):
    blurred = task_target("blur", ink)
    assert np.all(blurred.max(axis=(1, 2)) < ink.max(axis=(1, 2)))
    assert np.all(blurred.sum(axis=(1, 2)) <= ink.sum(axis=(1, 2)) + 1e-3)  # ink is spread, never made
    blob = np.zeros((1, 28, 28), np.float32)
    blob[0, 12:16, 12:16] = 1
    assert task_target("blur", blob).sum() == pytest.approx(16, rel=1e-3)  # away from the border: mass kept
    assert np.all(np.abs(np.diff(blurred, axis=2)).sum(axis=(1, 2)) < np.abs(np.diff(ink, axis=2)).sum(axis=(1, 2)))


def test_distance_grows_away_from_ink():
    x = np.zeros((1, 28, 28), np.float32)
    x[0, 5, 5] = 1.0
    d = task_target("distance", x)[0]
    assert d[5, 5] == 0 and d[5, 8] == pytest.approx(3 / 7) and d[9, 8] == pytest.approx(5 / 7)
    assert d[27, 27] == 1.0  # clipped at 7 px
    assert np.all(task_target("distance", np.zeros((1, 28, 28), np.float32)) == 1.0)  # no ink at all


def dot(r: int, c: int) -> np.ndarray:
    x = np.zeros((1, 28, 28), np.float32)
    x[0, r, c] = 1.0
    return x


def test_the_family_and_its_zero_shot_rule():
    """The 32-task family: 27 known, 5 zero-shot, each zero-shot task but distance has a known relative of its own
    family (the rule: the middle member of a graded family, one held-out shift direction, one without relatives)."""
    from workbench.methods import ttnet_tasks

    assert len(FAMILY) == 32 and len(set(FAMILY)) == 32 and set(FAMILY) < set(TASKS)
    assert set(ZERO_SHOT) < set(FAMILY) and len(ZERO_SHOT) == 5 and len(FAMILY) - len(ZERO_SHOT) >= 20
    config = TaskFamilyConfig()
    assert config.tasks == FAMILY and config.zero_shot == ZERO_SHOT and DEFAULT_TASKS == FAMILY
    families = {t: TASKS[t].family for t in FAMILY}
    for task in ZERO_SHOT:
        relatives = [t for t in config.known if families[t] == families[task]]
        assert bool(relatives) == (task != "distance"), task
    for task in ("denoising-light", "denoising-heavy", "blur", "blur-wide", "dilation", "dilation-xwide"):
        assert task in config.known  # both neighbours of every held-out middle member are known
    assert ttnet_tasks.TaskFamilyConfig is TaskFamilyConfig and ttnet_tasks.TASKS is TASKS  # re-exported


def test_intensity_tasks(ink):
    assert np.allclose(task_target("contrast", ink), 0.2 + 0.6 * ink)
    t = task_target("threshold", ink)
    assert set(np.unique(t)) <= {0.0, 1.0} and np.array_equal(t == 1, ink > 0.5)


def test_blurs_widen_with_sigma_and_sharpen_inverts_a_blur(ink):
    narrow, mid, wide = (task_target(t, ink) for t in ("blur", "blur-mid", "blur-wide"))
    peak = [b.max(axis=(1, 2)) for b in (narrow, mid, wide)]
    assert np.all(peak[0] > peak[1]) and np.all(peak[1] > peak[2])
    d = task_target("blur-mid", dot(14, 14))[0]
    assert d[14, 14] == pytest.approx(1 / (2 * np.pi * 1.5 ** 2), rel=0.05)  # a σ = 1.5 Gaussian, peak-normalised
    sharp = task_target("sharpen", ink)
    assert np.allclose(sharp, 2 * ink - narrow, atol=1e-6)
    assert np.all(sharp.max(axis=(1, 2)) >= ink.max(axis=(1, 2)))  # overshoot at the strokes


def test_sobel_and_laplacian_on_a_step_and_a_dot():
    step = np.zeros((2, 28, 28), np.float32)
    step[:, :, 14:] = 1.0  # ink from column 14 on: a step along x
    step[1] = step[1].T  # the same step along y
    sx, sy = task_target("sobel-x", step), task_target("sobel-y", step)
    assert sx[0, 10, 13] == pytest.approx(1.0) and sx[0, 10, 14] == pytest.approx(1.0) and sx[0, 10, 10] == 0
    assert np.allclose(sy[0, 5:20], 0) and np.allclose(sx[1, :, 5:20], 0)  # x-derivative blind to a y step
    assert sy[1, 13, 10] == pytest.approx(1.0)
    lap = task_target("laplacian", dot(10, 10))[0]
    assert lap[10, 10] == pytest.approx(-1.0) and lap[9, 10] == pytest.approx(0.25) and lap.sum() == pytest.approx(0)
    x = dot(10, 12)
    gx, gy = task_target("gradient-x", x)[0], task_target("gradient-y", x)[0]
    assert gx[10, 11] == 0.5 and gx[10, 13] == -0.5 and np.count_nonzero(gx) == 2  # (right - left) / 2
    assert gy[9, 12] == 0.5 and gy[11, 12] == -0.5 and np.count_nonzero(gy) == 2  # (below - above) / 2


def test_morphology_family(ink):
    block = np.zeros((1, 28, 28), np.float32)
    block[0, 10:14, 10:20] = 1.0
    areas = [ink_area(task_target(t, ink)) for t in ("dilation", "dilation-wide", "dilation-xwide")]
    assert np.all(areas[0] < areas[1]) and np.all(areas[1] < areas[2])
    assert ink_area(task_target("dilation-xwide", dot(14, 14)))[0] == 49  # a 7x7 square
    speck = block.copy()
    speck[0, 3, 3] = 1.0  # a 1-px speck: opening removes it, keeps the 4x10 block
    opened = task_target("opening", speck)[0]
    assert opened[3, 3] == 0 and np.array_equal(opened[10:14, 10:20], block[0, 10:14, 10:20])
    gap = block.copy()
    gap[0, 10:14, 15] = 0.0  # a 1-px gap: closing fills it
    assert np.array_equal(task_target("closing", gap), block)
    assert np.all(task_target("opening", ink) <= ink + 1e-6) and np.all(task_target("closing", ink) >= ink - 1e-6)
    skeleton = task_target("skeleton", block)[0]
    assert skeleton.sum() >= 4 and np.all(skeleton <= block[0])  # thin lines inside the ink
    rows = np.nonzero(skeleton)[0]
    assert rows.max() - rows.min() <= 1  # a 4-px-thick bar thins to a 1-px line
    sk = task_target("skeleton", ink)
    assert np.all(ink_area(sk) <= ink_area(ink)) and ink_area(sk).sum() < 0.8 * ink_area(ink).sum()
    assert np.all(sk <= (ink > 0.5))


def test_edges_are_the_outer_contour_and_outline_the_inner_rim(ink):
    x = np.zeros((1, 28, 28), np.float32)
    x[0, 10:18, 10:18] = 1.0  # an 8x8 blob of ink
    edges = task_target("edges", x)[0]
    assert edges[10:18, 10:18].max() == 0  # nothing inside the ink
    assert edges[9, 12] == 1 and edges[18, 12] == 1 and edges[12, 9] == 1 and edges[12, 18] == 1  # a ring around it
    assert edges.sum() == (10 * 10 - 8 * 8) and edges[:8].max() == 0  # one pixel wide, nothing far away
    rim = task_target("outline", x)[0]
    assert rim.sum() == 8 * 8 - 7 * 7 and np.all(rim <= x[0])  # inside the ink: what a 2x2 erosion removes
    assert np.allclose(task_target("outline", ink), np.clip(ink - task_target("erosion", ink), 0, 1))


def test_shifts_move_the_content():
    x = dot(10, 12)
    where = {t: np.argwhere(task_target(t, x)[0]).tolist() for t in
             ("shift", "shift-up", "shift-down", "shift-left", "shift-right")}
    assert where == {"shift": [[12, 14]], "shift-up": [[8, 12]], "shift-down": [[12, 12]],
                     "shift-left": [[10, 10]], "shift-right": [[10, 14]]}


def test_geometry_outside_the_family(ink):
    x = dot(10, 3)
    assert np.argwhere(task_target("flip", x)[0]).tolist() == [[10, 24]]
    assert np.array_equal(task_target("flip", task_target("flip", ink)), ink)
    r = task_target("rotation", dot(14, 24))[0]  # 10.5 px right of the centre (13.5, 13.5), rotated 10° up
    peak = np.unravel_index(np.argmax(r), r.shape)
    assert peak[0] == 12 and peak[1] == 24
    z = task_target("zoom", ink)
    # 1.27x in each direction: the ink area grows ~1.6x (summed over images; thresholding blurs single ones)
    assert z.shape == ink.shape and ink_area(z).sum() > 1.3 * ink_area(ink[:, 3:25, 3:25]).sum()


def test_restoration_inputs(ink):
    clean = task_target("denoising", ink)
    spreads = [float(np.abs(task_input(t, ink, seed=1) - ink).mean())
               for t in ("denoising-light", "denoising", "denoising-heavy")]
    assert spreads[0] < spreads[1] < spreads[2] and np.array_equal(clean, ink)
    banded = task_input("inpainting-band", ink, seed=2)
    assert np.array_equal(task_target("inpainting-band", ink), ink)
    for image, source in zip(banded, ink):
        blank = np.nonzero((image == 0).all(axis=1) & (source > 0).any(axis=1))[0]
        removed = np.nonzero((image != source).any(axis=1))[0]
        assert removed.size == 0 or (removed.min() >= 8 and removed.max() <= 19 and np.ptp(removed) < 3)
        assert np.all(np.isin(removed, blank))
    blocky = task_input("depixelate", ink)
    assert np.allclose(blocky.reshape(-1, 14, 2, 14, 2), blocky.reshape(-1, 14, 2, 14, 2)[:, :, :1, :, :1])
    assert np.array_equal(task_target("depixelate", ink), ink)


def test_pixelate_is_blockwise_constant(ink):
    p = task_target("pixelate", ink)
    blocks = p.reshape(len(p), 7, 4, 7, 4)
    assert np.allclose(blocks, blocks[:, :, :1, :, :1])
    assert np.allclose(p.mean(axis=(1, 2)), ink.mean(axis=(1, 2)), atol=1e-6)


def test_corrupted_inputs_are_seeded_and_targets_clean(ink):
    noisy, clean = task_pair("denoising", ink, seed=3)
    assert np.array_equal(clean, ink) and not np.allclose(noisy, ink)
    assert noisy.min() >= 0 and noisy.max() <= 1
    assert np.array_equal(noisy, task_input("denoising", ink, seed=3))
    assert not np.array_equal(noisy, task_input("denoising", ink, seed=4))
    holed, clean = task_pair("inpainting", ink, seed=0)
    assert np.array_equal(clean, ink)
    blanked = (holed == 0) & (ink > 0)  # ink removed: only inside one 10x10 square per image
    for image in blanked:
        rows, cols = np.nonzero(image)
        if rows.size:
            assert rows.max() - rows.min() < 10 and cols.max() - cols.min() < 10
    corrupting = {"denoising", "denoising-light", "denoising-heavy", "inpainting", "inpainting-band", "depixelate"}
    for name in TASKS:  # every input is the clean ink, except for the corrupting tasks
        assert np.array_equal(task_input(name, ink), ink) == (name not in corrupting), name


def test_unknown_task_names_are_explained():
    with pytest.raises(ParameterError, match="did you mean 'dilation'"):
        task_target("dilatoin", np.zeros((1, 28, 28)))
    with pytest.raises(ParameterError, match="zero-shot tasks"):
        TaskFamilyConfig(tasks=("autoencoding", "blur", "dilation"), zero_shot=("edges",))
    with pytest.raises(ParameterError, match="at least 2 known tasks"):
        TaskFamilyConfig(tasks=("autoencoding", "blur"), zero_shot=("blur",))
    with pytest.raises(ParameterError, match="shape"):
        task_target("blur", np.zeros(5))


# ----------------------------------------------------------------------------------------------------------
# The encoder-decoder as a flat vector, many at once
# ----------------------------------------------------------------------------------------------------------
def test_layout_and_batched_forward_match_one_model_at_a_time():
    assert LAYOUT.size == 3433 and LAYOUT.n_encoder == 1248
    flat = torch.stack([initial_parameters(s) for s in range(3)])
    assert torch.equal(initial_parameters(1), flat[1])  # θ_0 depends on the seed only
    enc, dec = LAYOUT.split(flat)
    assert enc.shape == (3, 1248) and dec.shape == (3, 2185)
    x = torch.rand(3, 5, 28, 28)
    many = forward_many(flat, x)
    for m in range(3):
        one = forward(LAYOUT.unflatten(flat[m]), x[m].unsqueeze(1)).squeeze(1)
        assert torch.allclose(many[m], one, atol=1e-6)
    losses = per_image_loss(flat, x, x)
    assert losses.shape == (3, 5) and torch.allclose(losses[0], ((many[0] - x[0]) ** 2).mean(dim=(1, 2)))


def test_training_many_models_is_deterministic_and_learns(ink):
    x, y = (torch.from_numpy(a) for a in task_pair("blur", ink[:32]))
    rows, counts = torch.arange(32).repeat(2, 1), torch.tensor([32, 16])
    start = initial_parameters(0)
    a = train_models(start, x, y, rows, counts, steps=30, batch_size=8, lr=5e-3, seed=1)
    b = train_models(start, x, y, rows, counts, steps=30, batch_size=8, lr=5e-3, seed=1)
    assert torch.equal(a, b)
    before = per_image_loss(start[None], x, y).mean()
    after = per_image_loss(a, x, y).mean(dim=1)
    assert torch.all(after < 0.5 * before)


# ----------------------------------------------------------------------------------------------------------
# The whole pipeline at a small scale (one run shared by the tests below)
# ----------------------------------------------------------------------------------------------------------
SMALL = TaskFamilyConfig(tasks=SMALL_TASKS, zero_shot=SMALL_ZERO_SHOT, n_train=256, n_subsets=2, n_val=64,
                         n_test=128, steps=120, finetune_steps=20, affinity_steps=None, num_threads=1, seed=0)
SMALL_TTNET = TTNetConfig(self_steps=20, transfer_steps=100, num_threads=1, seed=0)


@pytest.fixture(scope="module")
def experiment():
    return run_experiment(SMALL, SMALL_TTNET)


def test_models_affinity_and_gamma(experiment):
    exp = experiment
    K, m = len(SMALL_TASKS), len(SMALL.known)
    assert exp.models.full.shape == (K, LAYOUT.size) and exp.models.subsets.shape == (m, 2, LAYOUT.size)
    assert exp.data.subsets.shape == (2, 128) and np.unique(exp.data.subsets).size == 256  # disjoint subsets
    assert not set(exp.data.image_ids["test"]) & set(exp.data.image_ids["train"])
    assert exp.affinity.matrix.shape == (K, K) and np.isnan(np.diag(exp.affinity.matrix)).all()
    gamma = exp.crowd.gamma
    assert np.allclose(gamma, gamma.T) and np.all(np.diag(gamma) == 2) and gamma.min() >= -1 and gamma.max() <= 2
    # every task's trained model beats θ_0 on its own test images
    for k, task in enumerate(exp.data.tasks):
        trained = per_image_loss(exp.models.full[k:k + 1], exp.data.inputs["test"][k], exp.data.targets["test"][k])
        untrained = per_image_loss(exp.models.init[None], exp.data.inputs["test"][k], exp.data.targets["test"][k])
        assert trained.mean() < untrained.mean(), task


def test_affinity_is_one_minus_loss_over_scratch_by_hand(experiment):
    """``matrix[i, j] = 1 - losses[i, j] / losses[scratch, j]``, and the scratch row is the validation error of the
    from-θ_0 models it keeps (recomputed here from those models and the validation images)."""
    aff, data = experiment.affinity, experiment.data
    K = len(data.tasks)
    assert aff.losses.shape == (K + 1, K) and aff.scratch.shape == (K, LAYOUT.size)
    for i in range(K):
        for j in range(K):
            expected = np.nan if i == j else 1.0 - aff.losses[i, j] / aff.losses[K, j]
            np.testing.assert_allclose(aff.matrix[i, j], expected, rtol=1e-12, equal_nan=True)
    for j in range(K):
        val = per_image_loss(aff.scratch[j:j + 1], data.inputs["val"][j], data.targets["val"][j]).mean()
        assert float(val) == pytest.approx(aff.losses[K, j], rel=1e-5)


def test_masked_sources_get_exactly_zero_weight(experiment):
    """The meta learner's softmax runs over the *present* sources only: a masked source's weight is exactly 0
    (not merely small) in every group, and the present sources' weights sum to 1."""
    net = experiment.ttnet.network_
    m = len(SMALL.known)
    gen = torch.Generator().manual_seed(0)
    theta = experiment.ttnet.sources_[None].expand(2, -1, -1)
    gamma = torch.rand(2, m, generator=gen) * 3 - 1
    mask = torch.ones(2, m, dtype=torch.bool)
    mask[0, [0, 2]] = False
    mask[1, 1:] = False  # one source left: it takes all the weight
    with torch.no_grad():
        weights = net.weights(net.embed(theta, gamma), gamma, mask)
    assert torch.all(weights[~mask] == 0)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2, weights.shape[-1], dtype=weights.dtype))
    assert torch.all(weights[1, 0] == 1)


def test_regress_and_predict(experiment, ink):
    exp = experiment
    target = SMALL.zero_shot[0]
    theta = exp.ttnet.regress(target)
    assert theta.shape == (LAYOUT.size,) and torch.isfinite(theta).all()
    enc, dec = exp.ttnet.regress_parts(target)
    assert torch.equal(torch.cat([enc, dec]), theta)
    out = exp.ttnet.predict(task_input(target, ink[:4]), target)
    assert out.shape == (4, 28, 28)
    weights = exp.ttnet.attention(target)
    assert list(weights.index) == SMALL.known and np.allclose(weights.sum(axis=0), 1.0)
    # a different Γ gives a different model
    other = exp.crowd.frame() * 0.0
    assert not torch.equal(exp.ttnet.regress(target, gamma=other), theta)


def test_fit_is_deterministic(experiment):
    exp = experiment
    again = TTNet(SMALL_TTNET).fit(exp.models, exp.crowd, exp.data)
    for target in SMALL.zero_shot:
        assert torch.equal(again.regress(target), exp.ttnet.regress(target))


@pytest.mark.slow  # ~30 s on a free core (100 s at load 6)
def test_held_out_tasks_are_scored_and_fine_tuning_helps(experiment):
    """Held-out tasks: the three zero-shot tasks, and each known task left out of F's training in turn
    (``validate_on_known``: F never sees that task's models or data). All results are printed, and nothing is
    claimed about TTNet against the Γ-weighted average: whether it wins depends on the task and the seed
    (benchmarks/results/ttnet.md), so a "TTNet wins somewhere" assertion would pass by luck. What holds at every
    seed and task there, and is asserted here: the oracle (all of the task's data) beats 32 images, and
    fine-tuning TTNet's model on those 32 images (TTNet_LS) beats TTNet's zero-shot model."""
    exp = experiment
    table = exp.result.table()
    print("\nzero-shot tasks, test MSE (small scale, seed 0):\n" + table.round(4).to_string())
    print("TTNet win rate vs Γ-weighted average:", exp.result.win_rates().round(3).to_dict())
    left_out = validate_on_known(exp.models, exp.crowd, exp.data, SMALL_TTNET, split="test")
    print("known tasks left out of F in turn, test MSE:\n" + left_out.round(4).to_string())
    assert list(table.columns) == list(METHODS) and list(table.index) == list(SMALL.zero_shot)
    assert list(left_out.index) == SMALL.known
    assert np.isfinite(left_out[["TTNet", "Γ-weighted average"]].to_numpy()).all()
    assert (table["oracle"] < table["small data"]).all()  # all data beats 32 images
    assert (table["TTNet_LS"] < table["TTNet"]).all()  # fine-tuning on a little target data helps


def test_label_fitted_mixture_shows_the_room_f_has(experiment):
    """The best mixture of the sources that labels can buy beats the Γ-weighted average on every zero-shot task:
    F's output form is not what holds TTNet back."""
    exp = experiment
    for task in SMALL.zero_shot:
        sources = exp.ttnet.sources_for(task)
        theta, weights = fit_mixture(exp.models, exp.data, sources, task, seed=0)
        again, _ = fit_mixture(exp.models, exp.data, sources, task, seed=0)
        assert torch.equal(theta, again)
        assert list(weights.index) == sources and list(weights.columns) == list(LAYOUT.names)
        assert np.allclose(weights.sum(axis=0), 1.0) and (weights.to_numpy() >= 0).all()
        k = exp.data.index(task)
        errors = per_image_loss(torch.stack([theta, exp.result.params[task]["Γ-weighted average"]]),
                                exp.data.inputs["test"][k], exp.data.targets["test"][k]).mean(dim=1)
        print(f"{task}: label-fitted mixture {errors[0]:.4f}, Γ-weighted average {errors[1]:.4f}")
        assert errors[0] < errors[1], task
    _, whole = fit_mixture(exp.models, exp.data, sources, task, per_tensor=False, steps=5)
    assert list(whole.columns) == ["all parameters"]
    with pytest.raises(ParameterError, match="other than the target"):
        fit_mixture(exp.models, exp.data, [task, "blur"], task)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_what_holds_across_seeds():
    """Three seeds at a small size (images, θ_0, crowd and F all change): what the benchmark found at every seed is
    asserted at every seed here: all data beats 32 images, fine-tuning TTNet's model on those 32 images (TTNet_LS)
    beats TTNet's zero-shot model. Nothing is claimed about TTNet beating the Γ-weighted average: that varies with
    the task and the seed (benchmarks/results/ttnet.md), so such a test would pass or fail by luck."""
    for seed in (0, 1, 2):
        family = dataclasses.replace(SMALL, seed=seed, n_train=128, steps=60, n_test=64)
        exp = run_experiment(family, dataclasses.replace(SMALL_TTNET, seed=seed, transfer_steps=60))
        table = exp.result.table()
        print(f"\nseed {seed}:\n" + table.round(4).to_string())
        assert (table["oracle"] < table["small data"]).all(), seed
        assert (table["TTNet_LS"] < table["TTNet"]).all(), seed


def test_baselines(experiment):
    exp = experiment
    sources = SMALL.known
    target = "edges"
    base = baseline_models(exp.models, exp.crowd, sources, target)
    column = exp.crowd.frame().loc[sources, target].to_numpy()
    assert torch.equal(base["most correlated"], exp.models.full_model(sources[int(np.argmax(column))]))
    w = gamma_weights(column)
    expected = sum(float(wi) * exp.models.full_model(s) for wi, s in zip(w, sources))
    assert torch.allclose(base["Γ-weighted average"], expected, atol=1e-6)
    assert np.allclose(gamma_weights(np.array([-1.0, 0.0])), [0.5, 0.5])  # nobody positive: plain mean
    assert win_rate(np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 2.0])) == pytest.approx(0.5)


def test_source_count_table(experiment):
    sets = source_sets(SMALL.known, (2, 3), per_size=2, seed=0)
    assert [len(s) for s in sets] == [2, 2, 3, 3] and len({tuple(s) for s in sets}) == 4
    assert source_sets(SMALL.known, (2, 3), per_size=2, seed=0) == sets  # seeded
    exp = experiment
    quick = TTNet(SMALL_TTNET, self_steps=0, transfer_steps=5).config
    runs = source_count_runs(dataclasses.replace(exp, config=quick), sizes=(2,), per_size=1)
    assert len(runs) == len(SMALL.zero_shot) and set(runs["task"]) == set(SMALL.zero_shot)
    assert runs[["win vs Γ-avg", "win vs best single"]].apply(lambda c: c.between(0, 1)).all().all()
    members = runs["members"].iloc[0].split(",")
    assert len(members) == 2 and set(runs["best single source"]) <= set(members)
    for _, row in runs.iterrows():  # the best single source is the best of the set on the task's test images
        k = exp.data.index(row["task"])
        errors = [float(per_image_loss(exp.models.full_model(s)[None], exp.data.inputs["test"][k],
                                       exp.data.targets["test"][k]).mean()) for s in members]
        assert row["best single"] == pytest.approx(min(errors), rel=1e-6)
    for against in ("Γ-weighted average", "best single"):
        table = source_count_table(exp, sizes=(2,), per_size=1, against=against, runs=runs)
        assert table.shape[0] == 1 and table["sources"].tolist() == [2]
        assert set(table[SMALL.known].iloc[0]) == {"✓", "x"} and (table[SMALL.known].iloc[0] == "✓").sum() == 2
        wins = table[[f"win % {t}" for t in SMALL.zero_shot]].to_numpy()
        assert np.all((wins >= 0) & (wins <= 100))
    with pytest.raises(ParameterError, match="against"):
        source_count_table(exp, sizes=(2,), against="oracle", runs=runs)


def test_validation_groups_hold_known_tasks_out_together(experiment):
    exp = experiment
    groups = validation_groups(SMALL.known, 2, 2, seed=0)
    assert len(groups) == 2 and all(len(g) == 2 for g in groups) and not set(groups[0]) & set(groups[1])
    assert set(groups[0] + groups[1]) <= set(SMALL.known) and validation_groups(SMALL.known, 2, 2, seed=0) == groups
    quick = TTNet(SMALL_TTNET, self_steps=0, transfer_steps=5).config
    table = validate_on_known(exp.models, exp.crowd, exp.data, quick, held_out=groups[:1])
    assert list(table.index) == groups[0] and np.isfinite(table.to_numpy()).all()
    with pytest.raises(ParameterError, match="fewer than 2"):
        validation_groups(SMALL.known, 3, 2, seed=0)


def test_affinity_is_reproducible_at_a_seed(experiment):
    """The measured affinity is a deterministic function of the seed: measured again from the same models, it is
    the same matrix to the last bit (and so is the crowd's Γ built on it)."""
    exp = experiment
    again = measure_affinity(exp.data, exp.models, SMALL)
    np.testing.assert_array_equal(again.matrix, exp.affinity.matrix)
    gamma = crowd_gamma(again.matrix, exp.data.tasks, n_annotators=SMALL.n_annotators, coverage=SMALL.crowd_coverage,
                        seed=SMALL.seed)
    np.testing.assert_array_equal(gamma.gamma, exp.crowd.gamma)


def random_network(attention: str, residual: str = "pooled", m: int = 5, seed: int = 0) -> MetaNetwork:
    torch.manual_seed(seed)
    mean, scale = torch.zeros(LAYOUT.size), torch.ones(LAYOUT.size)
    net = MetaNetwork(m, mean, scale, hidden=8, residual=residual, attention=attention)
    with torch.no_grad():  # non-zero everything, so that every path of F counts
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return net


@pytest.mark.parametrize("attention", ["prior", "prior+branch", "branch", "gamma"])
def test_meta_network_is_invariant_to_the_order_of_sources(attention):
    """F is a function of the *set* of (source, θ_i, γ_ij): listing the sources in another order (each keeping its
    own branch W_i) gives the same model, for every attention and residual form."""
    m = 5
    gen = torch.Generator().manual_seed(1)
    theta = torch.randn(2, m, LAYOUT.size, generator=gen) * 0.1
    gamma = torch.randint(-1, 3, (2, m), generator=gen).float()
    mask = torch.ones(2, m, dtype=torch.bool)
    mask[0, 3] = False
    perm = torch.tensor([3, 0, 4, 1, 2])
    for residual in ("pooled", "per-source", "none"):
        net = random_network(attention, residual, m)
        permuted = random_network(attention, residual, m)
        with torch.no_grad():  # the same branches, stored in the permuted order
            for name in ("w1", "b1", "w2", "b2"):
                getattr(permuted, name).copy_(getattr(net, name)[perm])
            a = net(theta, gamma, mask)
            b = permuted(theta[:, perm], gamma[:, perm], mask[:, perm])
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    f = gamma_features(gamma, mask)
    torch.testing.assert_close(gamma_features(gamma[:, perm], mask[:, perm]), f[:, perm])


def test_prior_attention_starts_at_the_gamma_weighted_average(experiment):
    """Untrained (no step of either mode), F with the prior attention *is* the Γ-weighted average, to ε: training
    can only move it from there."""
    exp = experiment
    untrained = TTNet(SMALL_TTNET, attention="prior", self_steps=0, transfer_steps=0).fit(exp.models, exp.crowd,
                                                                                           exp.data)
    for target in SMALL.zero_shot:
        average = baseline_models(exp.models, exp.crowd, untrained.sources_for(target), target)["Γ-weighted average"]
        spread = (exp.models.full - average).norm(dim=1).median()
        assert float((untrained.regress(target) - average).norm()) < 0.01 * float(spread), target


def test_one_hot_gamma_regresses_that_source(experiment):
    """With Γ one-hot on a source (γ = 2 for it, -1 for all others) F's output is that source's model, up to the
    residual. With the Γ prior (``attention="prior"``) the source takes all but ε of the weight: the output is much
    closer to it than to any other source. With the default ``"branch"`` attention the softmax of τ γ gives the
    source only e^{3τ} / (e^{3τ} + m - 1) of the weight (0.77 at τ = 1 with 7 sources), so F only *leans* towards
    it: the source is the nearest one, no more is promised."""
    exp = experiment
    target = SMALL.zero_shot[0]
    sources = exp.ttnet.sources_for(target)
    prior = TTNet(SMALL_TTNET, attention="prior").fit(exp.models, exp.crowd, exp.data)
    for pick in sources[::2]:
        frame = exp.crowd.frame().copy()
        frame.loc[sources, target] = -1.0
        frame.loc[pick, target] = 2.0
        frame.loc[target, sources] = frame.loc[sources, target].to_numpy()
        others = min(float((exp.models.full_model(s) - exp.models.full_model(pick)).norm()) for s in sources
                     if s != pick)
        for ttnet, share in ((prior, 0.5), (exp.ttnet, None)):
            theta = ttnet.regress(target, gamma=frame)
            distances = {s: float((theta - exp.models.full_model(s)).norm()) for s in sources}
            print(ttnet.config.attention, pick, round(distances[pick] / others, 3))
            assert min(distances, key=distances.get) == pick, ttnet.config.attention
            if share is not None:
                assert distances[pick] < share * others, (pick, distances[pick], others)

def test_user_errors_are_explained(experiment):
    exp = experiment
    with pytest.raises(ParameterError, match="not fitted"):
        TTNet().regress("edges")
    with pytest.raises(ParameterError, match="unknown TTNet setting"):
        TTNet(hiden=3)
    with pytest.raises(ParameterError, match="square"):
        TTNet(SMALL_TTNET).fit(exp.models, np.zeros((3, 3)), exp.data)
    nan_gamma = exp.crowd.frame()
    nan_gamma.loc["blur", "dilation"] = np.nan
    with pytest.raises(ParameterError, match="NaN"):
        TTNet(SMALL_TTNET).fit(exp.models, nan_gamma, exp.data)
    with pytest.raises(ParameterError, match="no subset models"):
        TTNet(SMALL_TTNET).fit(exp.models, exp.crowd, exp.data, known=["blur", "edges"])
    with pytest.raises(ParameterError, match="did you mean"):
        exp.ttnet.regress("egdes")
    with pytest.raises(ParameterError, match="source_dropout"):
        TTNetConfig(source_dropout=1.0)
    with pytest.raises(ParameterError, match="got no vote"):
        crowd_gamma(exp.affinity.matrix, exp.data.tasks, n_annotators=1, coverage=0.1)
    with pytest.raises(ParameterError, match="DataFrame"):
        TTNet(SMALL_TTNET).fit(exp.models, pd.DataFrame(np.eye(2), index=["a", "b"], columns=["b", "a"]), exp.data)
