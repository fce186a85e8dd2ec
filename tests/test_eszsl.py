"""ESZSL (workbench.methods.eszsl): the closed form against a hand computation, the eigen-path used for the
regulariser grid against the direct solve, selection on validation only, and the GZSL protocol."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.data import load_digits_7seg
from workbench.errors import ParameterError
from workbench.methods.eszsl import ESZSL, _l2, _Solver


def test_closed_form_equals_the_papers_formula():
    data = load_digits_7seg(seed=0)
    model = ESZSL(gamma=0.3, lam=2.0).fit(data)
    idx = data.trainval_idx
    x = _l2(data.features[idx]).T  # d x m, as in the paper
    classes = np.unique(data.labels[idx])
    y = -np.ones((x.shape[1], len(classes)))
    y[np.arange(x.shape[1]), np.searchsorted(classes, data.labels[idx])] = 1
    s = data.class_attributes[classes].T.astype(float)  # a x z
    v = np.linalg.inv(x @ x.T + 0.3 * np.eye(x.shape[0])) @ x @ y @ s.T @ np.linalg.inv(s @ s.T + 2.0 * np.eye(s.shape[0]))
    assert np.allclose(model.V_, v, rtol=1e-6, atol=1e-8)


def test_the_grid_path_equals_the_direct_solve():
    data = load_digits_7seg(seed=1)
    idx = data.trainval_idx
    classes = np.unique(data.labels[idx])
    solver = _Solver(data.features[idx], data.labels[idx], classes, data.class_attributes.astype(float))
    for gamma, lam in ((1e-3, 1e3), (1.0, 1.0), (100.0, 0.01)):
        assert np.allclose(solver.v(gamma, lam), ESZSL(gamma=gamma, lam=lam).fit(data).V_, rtol=1e-5, atol=1e-9)


def test_select_reads_only_the_validation_split(monkeypatch):
    data = load_digits_7seg(seed=0)
    scrambled = load_digits_7seg(seed=0)
    rng = np.random.default_rng(0)
    test = np.concatenate([scrambled.test_seen_idx, scrambled.test_unseen_idx])
    scrambled.features[test] = rng.random((len(test), scrambled.feature_dim)).astype(np.float32)
    a, b = ESZSL.select(data), ESZSL.select(scrambled)
    assert (a.gamma, a.lam) == (b.gamma, b.lam) and a.selection_ == b.selection_
    assert len(a.selection_) == 49 and {"gamma", "lam", "S", "U", "H", "ZSL"} <= set(a.selection_[0])


def test_scores_and_errors():
    data = load_digits_7seg(seed=0)
    model = ESZSL.select(data, criterion="ZSL")
    scores = model.evaluate(data)
    assert 0 <= scores.ZSL <= 1 and scores.H == pytest.approx(2 * scores.S * scores.U / (scores.S + scores.U + 1e-12))
    assert model.scores(data.features[:3]).shape == (3, data.n_classes)
    with pytest.raises(ParameterError, match="positive"):
        ESZSL(gamma=0)
    with pytest.raises(ParameterError, match="not fitted"):
        ESZSL().scores(data.features[:1])
    with pytest.raises(ParameterError, match="criterion"):
        ESZSL.select(data, criterion="U")
