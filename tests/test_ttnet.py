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
    LAYOUT,
    METHODS,
    TASKS,
    TaskFamilyConfig,
    TTNet,
    TTNetConfig,
    baseline_models,
    crowd_gamma,
    fit_mixture,
    forward,
    forward_many,
    gamma_weights,
    ink_from_omniglot,
    initial_parameters,
    per_image_loss,
    run_experiment,
    source_count_table,
    source_sets,
    task_input,
    task_pair,
    task_target,
    train_models,
    validate_on_known,
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


def test_edges_are_the_outer_contour():
    x = np.zeros((1, 28, 28), np.float32)
    x[0, 10:18, 10:18] = 1.0  # an 8x8 blob of ink
    edges = task_target("edges", x)[0]
    assert edges[10:18, 10:18].max() == 0  # nothing inside the ink
    assert edges[9, 12] == 1 and edges[18, 12] == 1 and edges[12, 9] == 1 and edges[12, 18] == 1  # a ring around it
    assert edges.sum() == (10 * 10 - 8 * 8) and edges[:8].max() == 0  # one pixel wide, nothing far away


def test_distance_grows_away_from_ink():
    x = np.zeros((1, 28, 28), np.float32)
    x[0, 5, 5] = 1.0
    d = task_target("distance", x)[0]
    assert d[5, 5] == 0 and d[5, 8] == pytest.approx(3 / 7) and d[9, 8] == pytest.approx(5 / 7)
    assert d[27, 27] == 1.0  # clipped at 7 px
    assert np.all(task_target("distance", np.zeros((1, 28, 28), np.float32)) == 1.0)  # no ink at all


def test_shift_moves_the_content_down_and_right():
    x = np.zeros((1, 28, 28), np.float32)
    x[0, 3, 7] = 1.0
    assert np.argwhere(task_target("shift", x)[0]).tolist() == [[5, 9]]


def test_the_extra_tasks(ink):
    x = np.zeros((1, 28, 28), np.float32)
    x[0, 10, 12] = 1.0
    assert np.argwhere(task_target("shift-up", x)[0]).tolist() == [[8, 12]]
    assert np.argwhere(task_target("shift-left", x)[0]).tolist() == [[10, 10]]
    gx, gy = task_target("gradient-x", x)[0], task_target("gradient-y", x)[0]
    assert gx[10, 11] == 0.5 and gx[10, 13] == -0.5 and np.count_nonzero(gx) == 2  # (right - left) / 2
    assert gy[9, 12] == 0.5 and gy[11, 12] == -0.5 and np.count_nonzero(gy) == 2  # (below - above) / 2
    assert np.all(ink_area(task_target("dilation-wide", ink)) > ink_area(task_target("dilation", ink)))
    wide, narrow = task_target("blur-wide", ink), task_target("blur", ink)
    assert np.all(wide.max(axis=(1, 2)) < narrow.max(axis=(1, 2)))
    assert set(DEFAULT_TASKS) < set(TASKS)


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
    for name in TASKS:  # every input is the clean ink, except for the two corrupting tasks
        assert np.array_equal(task_input(name, ink), ink) == (name not in ("denoising", "inpainting"))


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
SMALL = TaskFamilyConfig(n_train=256, n_subsets=2, n_val=64, n_test=128, steps=120, finetune_steps=20,
                         num_threads=1, seed=0)
SMALL_TTNET = TTNetConfig(self_steps=20, transfer_steps=100, num_threads=1, seed=0)


@pytest.fixture(scope="module")
def experiment():
    return run_experiment(SMALL, SMALL_TTNET)


def test_models_affinity_and_gamma(experiment):
    exp = experiment
    K, m = len(DEFAULT_TASKS), len(SMALL.known)
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


def test_held_out_tasks_are_scored_and_fine_tuning_helps(experiment):
    """Held-out tasks: the three zero-shot tasks, and each known task left out of F's training in turn
    (``validate_on_known``: F never sees that task's models or data). All results are printed, and nothing is
    claimed about TTNet against the Γ-weighted average: over the benchmark's 5 full-size seeds TTNet wins only 2
    of 15 zero-shot (task, seed) cases (benchmarks/results/ttnet.md), so a "TTNet wins somewhere" assertion would
    pass by luck (a left-out known task such as blur always wins). What holds at every seed and task there, and is
    asserted here: the oracle (all of the task's data) beats 32 images, and fine-tuning TTNet's model on those 32
    images (TTNet_LS) beats TTNet's zero-shot model."""
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
@pytest.mark.timeout(1200)
def test_a_full_size_run_reproduces_its_benchmark_row():
    """One seed of the benchmark at its full size, rerun here: every method's zero-shot test MSE equals the
    recorded one (benchmarks/results/ttnet.json) to 2%, so the figures in the README and notebook are measured, not
    typed in. Seed 0 is taken as the first seed, not for its outcome (TTNet loses to the Γ-weighted average on all
    three tasks there, as in 13 of 15 cases). What holds at every benchmark seed is asserted too: the oracle beats
    32 images, and fine-tuning TTNet's model on them beats the zero-shot model."""
    import json

    seed = 0
    family, config = TaskFamilyConfig(seed=seed, num_threads=1), TTNetConfig(seed=seed, num_threads=1)
    exp = run_experiment(family, config)
    table = exp.result.table()
    print(f"\nzero-shot tasks, test MSE (full size, seed {seed}):\n" + table.round(4).to_string())
    recorded = json.loads((REPO / "benchmarks" / "results" / "ttnet.json").read_text())
    row = {z["task"]: z for run in recorded["runs"] if run["seed"] == seed for z in run["zero_shot"]}
    for task in table.index:
        for method in ("oracle", "small data", "most correlated", "Γ-weighted average", "TTNet", "TTNet_LS"):
            assert table.loc[task, method] == pytest.approx(row[task][method], rel=0.02), (task, method)
    assert (table["oracle"] < table["small data"]).all()
    assert (table["TTNet_LS"] < table["TTNet"]).all()


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
    exp = experiment
    quick = TTNet(SMALL_TTNET, self_steps=0, transfer_steps=5).config
    table = source_count_table(dataclasses.replace(exp, config=quick), sizes=(2,), per_size=1)
    assert table.shape[0] == 1 and table["sources"].tolist() == [2]
    assert set(table[SMALL.known].iloc[0]) == {"✓", "x"} and (table[SMALL.known].iloc[0] == "✓").sum() == 2
    wins = table[[f"win % {t}" for t in SMALL.zero_shot]].to_numpy()
    assert np.all((wins >= 0) & (wins <= 100))


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
