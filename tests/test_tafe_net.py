"""TAFE-Net (workbench.methods.tafe_net): factorized layers, the embedding loss, task-aware embeddings, the fixed
training protocol (no double sigmoid, validation-only epoch selection) and zero-shot behaviour on real digits."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from workbench.data import load_digit_styles, load_digits_7seg
from workbench.data.digits import STYLES, apply_style
from workbench.errors import ParameterError, TrainingError
from workbench.methods.gzsl_data import resolve_gzsl_dataset
from workbench.methods.tafe_net import (FactorizedConv2d, FactorizedLinear, PredictionNetwork, TAFENet, TAFENetConfig,
                                        compare_models, embedding_loss, hinged_cosine, joint_space_alignment,
                                        signature_points)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(**overrides) -> TAFENetConfig:
    base = dict(feature_widths=(32, 32), task_hidden=32, classifier_hidden=32, task_layers=2, epochs=3,
                select_epoch=False)
    return TAFENetConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def digits():
    return load_digits_7seg(seed=0)


@pytest.fixture(scope="module")
def styles():
    return load_digit_styles(seed=0)


# --------------------------------------------------------------------------------------------- factorized layers
def test_factorized_linear_equals_shared_weights_times_diag_of_task_weights():
    torch.manual_seed(0)
    layer = FactorizedLinear(5, 4)
    x, w_ts = torch.randn(3, 5), torch.rand(4) + 0.5
    explicit = x @ (layer.shared.weight.T @ torch.diag(w_ts)) + layer.shared.bias * w_ts  # eq. 4, bias scaled too
    torch.testing.assert_close(layer(x, w_ts), explicit)
    torch.testing.assert_close(layer.effective_weight(w_ts), layer.shared.weight.T @ torch.diag(w_ts))


def test_factorized_conv_equals_per_output_channel_scaled_filters():
    torch.manual_seed(0)
    layer = FactorizedConv2d(2, 3)
    x, w_ts = torch.randn(4, 2, 6, 6), torch.rand(3) + 0.5
    explicit = F.conv2d(x, layer.shared.weight * w_ts[:, None, None, None], padding=1)  # eq. 3, grouped on c_out
    torch.testing.assert_close(layer(x, w_ts), explicit)
    torch.testing.assert_close(layer.effective_weight(w_ts), layer.shared.weight * w_ts[:, None, None, None])
    rows = torch.rand(4, 3)  # one task per input row
    torch.testing.assert_close(layer(x, rows), torch.stack([layer(x[i:i + 1], rows[i])[0] for i in range(4)]))


@pytest.mark.parametrize("backbone, shape", [("mlp", (7,)), ("conv", (1, 8, 8))])
def test_batched_tafe_equals_one_task_at_a_time(backbone, shape):
    """The pair-batched forward (first product shared across tasks) equals running each task alone."""
    torch.manual_seed(0)
    net = PredictionNetwork(shape, tiny(backbone=backbone, feature_widths=(6, 5, 4))).eval()
    x = torch.randn(3, *shape)
    weights = [torch.rand(2, w) for w in (6, 5, 4)]
    both = net.tafe(x, weights)
    assert both.shape == (3, 2, 4)
    for t in range(2):
        torch.testing.assert_close(both[:, t], net.tafe(x, [w[t:t + 1] for w in weights])[:, 0])


# --------------------------------------------------------------------------------------------- losses
def test_embedding_loss_matches_a_hand_computation():
    tafe = torch.tensor([[[1.0, 0.0], [0.0, 2.0]],       # sample 0 under task 0 and task 1
                         [[1.0, 1.0], [-1.0, 0.0]]])     # sample 1
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0]])           # T(t_0), T(t_1)
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # cosines: s0/t0 = 1, s0/t1 = 1, s1/t0 = 1/sqrt2, s1/t1 = 0 (cos(-1,0 ; 0,1) = 0); hinge keeps them
    expected = ((1 - 1) ** 2 + (1 - 0) ** 2 + (1 / math.sqrt(2) - 0) ** 2 + (0 - 1) ** 2) / 4
    assert embedding_loss(tafe, e, q).item() == pytest.approx(expected)
    assert hinged_cosine(torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 0.0])).item() == 0.0  # hinged at 0


def test_classification_loss_is_bce_on_raw_logits_not_a_double_sigmoid(digits):
    """The released code's sigmoid-then-BCEWithLogits caps the loss of a confident mistake at log(1+e)."""
    model = TAFENet(tiny(dropout=0.0)).fit(digits)
    model.prediction_.eval(), model.meta_.eval()
    idx = np.asarray(digits.trainval_idx)[:16]
    x = torch.from_numpy((digits.features[idx] - model.mean_) / model.std_)
    y = torch.from_numpy(digits.labels[idx])
    classes = torch.unique(y)
    terms = model._loss_terms(x, y, classes, torch.Generator().manual_seed(0))
    logits = torch.from_numpy(model.scores(digits.features[idx], classes.numpy()))
    target = (y[:, None] == classes[None]).float()
    assert terms["classification"].item() == pytest.approx(
        F.binary_cross_entropy_with_logits(logits, target).item(), rel=1e-5)


def test_learning_rate_schedule_is_the_papers():
    cfg = TAFENetConfig()
    assert [cfg.learning_rate(e) for e in (0, 29, 30, 44, 45, 59)] == pytest.approx(
        [1e-4, 1e-4, 1e-5, 1e-5, 1e-6, 1e-6])
    assert cfg.learning_rate(0, task_network=True) == pytest.approx(1e-5)
    assert cfg.learning_rate(45, task_network=True) == pytest.approx(1e-7)


def test_training_records_the_schedule_and_losses(digits):
    model = TAFENet(tiny(epochs=4, lr_milestones=(2,))).fit(digits)
    history = model.history_.to_frame()
    assert history["lr"].tolist() == pytest.approx([1e-4, 1e-4, 1e-5, 1e-5])
    assert history["classification"].iloc[-1] < history["classification"].iloc[0]
    assert np.isfinite(history[["loss", "classification", "embedding"]].to_numpy()).all()


# --------------------------------------------------------------------------------------------- task awareness
def test_changing_the_task_changes_the_embedding_of_the_same_input(digits):
    model = TAFENet(tiny()).fit(digits)
    x = digits.features[digits.test_seen_idx[:5]]
    emb = model.tafe(x, [0, 1])
    assert emb.shape == (5, 2, 32)
    assert not np.allclose(emb[:, 0], emb[:, 1], atol=1e-4)
    # the non-task-aware baseline embeds an image the same way for every task
    base = TAFENet(tiny(task_aware=False)).fit(digits)
    same = base.tafe(x, [0, 1])
    np.testing.assert_allclose(same[:, 0], same[:, 1])


def test_one_hot_task_ids_work_as_descriptions(digits):
    model = TAFENet(tiny(description="onehot", epochs=10, lr=1e-3, task_lr=1e-3)).fit(digits)
    idx = np.asarray(digits.test_seen_idx)
    pred = model.predict(digits.features[idx], digits.seen_classes)
    accuracy = (pred == digits.labels[idx]).mean()
    assert accuracy > 3 / len(digits.seen_classes)  # far above chance on seen classes
    assert model.descriptions_.shape == (10, 10)


def test_scores_are_batched_without_changing_them(digits):
    model = TAFENet(tiny()).fit(digits)
    x = digits.features[:37]
    full = model.scores(x)
    chunked = TAFENet(replace(model.config, score_chunk_pairs=7))
    chunked.__dict__.update({k: v for k, v in model.__dict__.items() if k != "config"})
    np.testing.assert_allclose(chunked.scores(x), full, rtol=1e-5, atol=1e-5)
    assert full.shape == (37, 10)
    np.testing.assert_array_equal(model.predict(x), full.argmax(1))


def test_same_seed_same_model(digits):
    a = TAFENet(tiny()).fit(digits).scores(digits.features[:20])
    b = TAFENet(tiny()).fit(digits).scores(digits.features[:20])
    np.testing.assert_array_equal(a, b)


def test_compare_models_trains_each_setting_and_seed_as_a_direct_fit_would(digits):
    settings = {"TAFE-Net": {}, "no embedding loss": {"beta": 0.0}, "non-task-aware": {"task_aware": False}}
    table = compare_models(digits, settings, seeds=(0, 1), config=tiny(epochs=2))
    assert list(table["model"]) == ["TAFE-Net"] * 2 + ["no embedding loss"] * 2 + ["non-task-aware"] * 2
    assert list(table["seed"]) == [0, 1] * 3
    assert {"S", "U", "H", "ZSL", "epochs", "seconds"} <= set(table.columns)
    for row in table.itertuples():  # every row is what fitting that setting at that seed by hand scores
        direct = TAFENet(tiny(epochs=2), **settings[row.model], seed=row.seed).fit(digits).evaluate(digits).as_percent()
        assert (row.S, row.U, row.H, row.ZSL) == pytest.approx((direct["S"], direct["U"], direct["H"], direct["ZSL"]))
    # the settings really differ: the rows of one seed are not all the same model
    first_seed = table[table.seed == 0]
    assert first_seed[["S", "U"]].drop_duplicates().shape[0] > 1


# --------------------------------------------------------------------------------------------- protocol
def test_epoch_selection_never_reads_the_test_split(digits):
    """Scramble every test image and label: the selected epoch and the final model do not change."""
    rng = np.random.default_rng(0)
    features, labels = digits.features.copy(), digits.labels.copy()
    for split in (digits.test_seen_idx, digits.test_unseen_idx):
        features[split] = rng.normal(size=features[split].shape) * 50
        labels[split] = labels[rng.permutation(split)]
    poisoned = replace(digits, features=features, labels=labels)
    cfg = tiny(select_epoch=True, epochs=4)
    clean, dirty = TAFENet(cfg).fit(digits), TAFENet(cfg).fit(poisoned)
    assert clean.best_epoch_ == dirty.best_epoch_
    assert clean.selection_.equals(dirty.selection_)
    x = digits.features[digits.trainval_idx[:10]]
    np.testing.assert_array_equal(clean.scores(x), dirty.scores(x))
    assert list(clean.selection_["epoch"]) == [1, 2, 3, 4]


def test_evaluate_reports_whole_split_per_class_accuracy(digits):
    model = TAFENet(tiny()).fit(digits)
    scores = model.evaluate(digits)
    idx = np.asarray(digits.test_unseen_idx)
    pred = model.predict(digits.features[idx], digits.unseen_classes)
    per_class = [np.mean(pred[digits.labels[idx] == c] == c) for c in digits.unseen_classes]
    assert scores.ZSL == pytest.approx(np.mean(per_class))
    assert model.evaluate(digits, mode="zsl").U == pytest.approx(scores.ZSL)
    assert scores.H == pytest.approx(2 * scores.S * scores.U / (scores.S + scores.U) if scores.S + scores.U else 0)


BENCHMARK_RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "tafe_net.json"
BENCHMARK_NAMES = {True: "TAFE-Net", False: "non-task-aware (late fusion)"}


def benchmark_row(seed: int, aware: bool) -> dict:
    rows = json.loads(BENCHMARK_RESULTS.read_text())["rows"]
    return next(r for r in rows if r["dataset"] == "digit-styles" and r["seed"] == seed
                and r["model"] == BENCHMARK_NAMES[aware])


@pytest.mark.slow
def test_zero_shot_composition_beats_chance_and_the_non_task_aware_baseline_over_seeds():
    """digit-styles (real digits-7seg images in four styles): unseen (digit, style) pairs, the benchmark's first
    two seeds and its settings (``TAFENetConfig.small``). **Both** models train for the epoch count the
    validation split chose for them in ``benchmarks/bench_tafe_net.py`` (TAFE-Net 12-15, the baseline 37-47: the
    same selection, whose 60-epoch validation pass is not repeated here; retraining for the chosen count is exactly
    what ``select_epoch=True`` does after it). So the test re-measures the benchmark's two rows per seed, and a
    change that moves them fails it.

    What holds at every seed (benchmarks/results/tafe_net.md) is asserted at every seed: TAFE-Net recognises unseen
    pairs at more than twice chance and fits the seen classes far better than the same-size non-task-aware model
    (S 93-97% vs 69-77%), with a higher H. ZSL against the baseline is asserted on the mean over seeds (41 vs 29
    in the benchmark's five seeds): at seed 3 the baseline's ZSL is half a point higher."""
    chance, zsl = 1 / 10, {True: [], False: []}
    for seed in range(2):
        data = load_digit_styles(seed=seed)
        scores = {}
        for aware in (True, False):
            recorded = benchmark_row(seed, aware)
            cfg = TAFENetConfig.small(seed=seed, num_threads=1, task_aware=aware, select_epoch=False,
                                      epochs=recorded["epochs"])
            scores[aware] = TAFENet(cfg).fit(data).evaluate(data)
            measured = scores[aware].as_percent()
            print(f"seed {seed} {BENCHMARK_NAMES[aware]} ({recorded['epochs']} epochs): {measured}, benchmark "
                  f"{ {k: recorded[k] for k in ('S', 'U', 'H', 'ZSL')} }")
            for key in ("S", "ZSL"):  # the benchmark's row, re-measured (1 point: float summation order)
                assert measured[key] == pytest.approx(recorded[key], abs=1.0), (seed, aware, key)
        tafe, base = scores[True], scores[False]
        assert tafe.ZSL > 2 * chance and tafe.S > base.S + 0.1 and tafe.H > base.H, (seed, tafe, base)
        for aware in zsl:
            zsl[aware].append(scores[aware].ZSL)
    assert np.mean(zsl[True]) > np.mean(zsl[False]) + 0.05, zsl


def test_signature_points_and_joint_space(digits):
    model = TAFENet(tiny()).fit(digits)
    embedded, table = signature_points(model, digits, [digits.seen_classes[0], digits.unseen_classes[0]],
                                       images_per_class=5)
    assert set(embedded) == {int(digits.seen_classes[0]), int(digits.unseen_classes[0])}
    assert all(e.shape == (len(table), 32) for e in embedded.values())
    assert table.filter(like="positive").sum().tolist() == [5, 5]
    alignment = joint_space_alignment(model, digits)
    assert len(alignment) == 10 and set(alignment["split"]) == {"seen", "unseen"}
    assert alignment[["positive", "negative"]].to_numpy().min() >= 0  # hinged cosines


# --------------------------------------------------------------------------------------------- digit-styles data
def test_digit_styles_unseen_pairs_are_new_combinations_of_seen_primitives(styles):
    n_styles = len(STYLES)
    seen, unseen = styles.seen_classes, styles.unseen_classes
    assert len(unseen) == 10 and sorted(unseen // n_styles) == list(range(10))   # one unseen style per digit
    assert set(seen // n_styles) == set(range(10)) and set(seen % n_styles) == set(range(n_styles))
    assert set(styles.val_classes) <= set(seen)
    # no test image shares its source image with a training image: undo each style and compare
    inverse = {"upright": lambda im: im, "mirrored": lambda im: im[:, ::-1],
               "rotated": lambda im: np.rot90(im, k=-1), "negative": lambda im: 16 - im}
    names = list(STYLES)

    def sources(idx):
        return {inverse[names[styles.labels[i] % n_styles]](styles.images[i]).tobytes() for i in idx}

    assert not sources(styles.trainval_idx) & sources(np.concatenate([styles.test_seen_idx, styles.test_unseen_idx]))
    assert np.array_equal(apply_style(styles.images[:1], "negative"), 16 - styles.images[:1])
    assert resolve_gzsl_dataset("digit-styles").name == "digit-styles"


# --------------------------------------------------------------------------------------------- bad input
def test_bad_settings_and_inputs_give_clear_errors(digits):
    with pytest.raises(ParameterError, match="unknown TAFE-Net setting"):
        TAFENet(hidden=3)
    with pytest.raises(ParameterError, match="beta"):
        TAFENetConfig(beta=-1)
    with pytest.raises(ParameterError, match="select_metric"):
        TAFENetConfig(select_metric="accuracy")
    with pytest.raises(ParameterError, match="not fitted"):
        TAFENet().scores(digits.features[:2])
    with pytest.raises(ParameterError, match="'sentences' is not available.*glyph"):
        TAFENet(tiny(description="sentences")).fit(digits)
    model = TAFENet(tiny(epochs=1)).fit(digits)
    with pytest.raises(ParameterError, match="NaN"):
        model.scores(np.full((2, 64), np.nan, dtype=np.float32))
    with pytest.raises(ParameterError, match="class ids"):
        model.scores(digits.features[:2], [11])
    with pytest.raises(ParameterError, match="styles"):
        load_digit_styles(styles=("upright", "sideways"))
    with pytest.raises(ParameterError, match="backbone='conv' needs raw images"):
        TAFENet(tiny(backbone="conv")).fit(replace(digits, images=None))


def test_diverging_training_stops_with_a_training_error(digits):
    with pytest.raises(TrainingError, match="Lower lr"):
        TAFENet(tiny(lr=1e12, epochs=2, feature_scaling="none")).fit(digits)


def test_conv_backbone_is_eq_3_on_raw_images(digits):
    """backbone="conv": each layer is the shared filters scaled per output channel by the generated weights (eq. 3),
    checked against a plain convolution with the effective filters W_sr * w_t of one task."""
    import torch.nn.functional as F

    model = TAFENet(tiny(backbone="conv", feature_widths=(8, 8), epochs=2)).fit(digits)
    assert model.tafe(digits.images[:3], [0, 1, 2]).shape == (3, 3, 8)
    assert model.scores(digits.images[:3]).shape == (3, 10)
    task = 4
    weights = [torch.from_numpy(w[0]) for w in model.generated_weights([task])]
    x = model._prepare(digits.images[:5])
    with torch.no_grad():
        first, second = model.prediction_.layers
        h = F.conv2d(x, first.effective_weight(weights[0]), padding=1)
        h = F.max_pool2d(F.relu(h), 2)
        h = F.conv2d(h, second.effective_weight(weights[1]), padding=1).mean(dim=(2, 3))
    assert np.allclose(model.tafe(digits.images[:5], [task])[:, 0], h.numpy(), atol=1e-5)
