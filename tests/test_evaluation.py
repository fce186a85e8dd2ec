"""GZSL metrics against hand computations and scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from workbench.evaluation import gzsl_scores, harmonic_mean, mean_ci95, per_class_accuracy


def test_per_class_accuracy_matches_balanced_accuracy():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 500)
    pred = np.where(rng.random(500) < 0.6, y, rng.integers(0, 7, 500))
    assert per_class_accuracy(y, pred) == pytest.approx(balanced_accuracy_score(y, pred))


def test_per_class_accuracy_is_not_sample_weighted():
    y = np.array([0] * 9 + [1])
    pred = np.array([0] * 9 + [0])  # all of class 0 right, class 1 wrong
    assert per_class_accuracy(y, pred) == pytest.approx(0.5)  # not 0.9


def test_harmonic_mean():
    assert harmonic_mean(0.6, 0.3) == pytest.approx(2 * 0.6 * 0.3 / 0.9)
    assert harmonic_mean(0.0, 0.0) == 0.0


def test_gzsl_scores_by_hand():
    seen, unseen = np.array([0, 1]), np.array([2])
    s_scores = np.array([[5, 1, 0], [0, 1, 9]])  # seen test: 1 right (class 0), 1 lost to unseen class 2
    u_scores = np.array([[0, 3, 2], [0, 0, 1]])  # unseen test: GZSL 1/2 right; ZSL (only class 2) 2/2
    r = gzsl_scores(s_scores, [0, 1], u_scores, [2, 2], seen, unseen)
    assert r.S == pytest.approx(0.5) and r.U == pytest.approx(0.5) and r.H == pytest.approx(0.5)
    assert r.ZSL == pytest.approx(1.0)


def test_mean_ci95():
    r = mean_ci95([0.5, 0.7, 0.6, 0.6])
    assert r.mean == pytest.approx(0.6) and 0 < r.ci95 < 0.15 and r.n == 4
