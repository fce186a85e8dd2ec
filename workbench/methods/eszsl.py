r"""ESZSL: "An embarrassingly simple approach to zero-shot learning" (Romera-Paredes & Torr, ICML 2015).

A bilinear compatibility :math:`f(x, c) = x^\top V s_c` between an image feature :math:`x\in\mathbb{R}^d` and a
class description :math:`s_c\in\mathbb{R}^a`, learned in closed form from the training images
:math:`X\in\mathbb{R}^{d\times m}`, their labels :math:`Y\in\{-1, 1\}^{m\times z}` (1 for the true class) and the
seen classes' descriptions :math:`S\in\mathbb{R}^{a\times z}`:

.. math::
    V = (X X^\top + \gamma I)^{-1}\, X Y S^\top\, (S S^\top + \lambda I)^{-1}.

A test image goes to :math:`\arg\max_c x^\top V s_c` over the unseen classes (ZSL) or over all classes (GZSL).
It is the standard strong *linear* baseline of the GZSL literature and has no training loop at all.

The two regularisers are chosen on the validation split (:meth:`ESZSL.select`, never on test images) from a
grid: both eigendecompositions (of :math:`XX^\top` and :math:`SS^\top`) are computed once, so every grid point
costs one product instead of a new solve. Features are L2-normalised per image (the usual preprocessing for
ESZSL, and what ``../shared/datasets/cub_vgg_fc7/SOURCE.md``'s sanity check used).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np

from workbench.errors import ParameterError
from workbench.evaluation import GZSLScores, gzsl_scores

#: The grid of the paper: 10^-3 .. 10^3 for both regularisers.
DEFAULT_GRID: tuple[float, ...] = tuple(10.0 ** k for k in range(-3, 4))


def _l2(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class _Solver:
    """The closed form for many (gamma, lambda) at once: eigendecompositions of X X^T and S S^T, computed once."""

    def __init__(self, x: np.ndarray, labels: np.ndarray, classes: np.ndarray, side: np.ndarray) -> None:
        x = _l2(x)  # (m, d)
        y = -np.ones((len(x), len(classes)))
        y[np.arange(len(x)), np.searchsorted(classes, labels)] = 1.0
        s = np.asarray(side, dtype=np.float64)[classes].T  # (a, z)
        self.ev_x, self.u = np.linalg.eigh(x.T @ x)  # d x d
        self.ev_s, self.q = np.linalg.eigh(s @ s.T)  # a x a
        self.b = self.u.T @ (x.T @ (y @ s.T)) @ self.q  # X Y S^T in both eigenbases, (d, a)

    def core(self, gamma: float, lam: float) -> np.ndarray:
        return self.b / np.outer(np.maximum(self.ev_x, 0) + gamma, np.maximum(self.ev_s, 0) + lam)

    def v(self, gamma: float, lam: float) -> np.ndarray:
        """V for one (gamma, lambda), from the eigendecompositions (equals :meth:`ESZSL.fit`'s direct solve)."""
        return self.u @ self.core(gamma, lam) @ self.q.T


@dataclass
class ESZSL:
    """Closed-form ESZSL with regularisers ``gamma`` (on the features) and ``lam`` (on the descriptions).

    >>> model = ESZSL.select(data)                 # regularisers chosen on data.validation()
    >>> model.evaluate(data)                       # GZSLScores(S, U, H, ZSL) on the test splits
    """

    gamma: float = 1.0
    lam: float = 1.0
    side_info: str = "attributes"  # "attributes" or a key of data.side_info (e.g. "sent")

    def __post_init__(self) -> None:
        for name in ("gamma", "lam"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ParameterError(f"{name} must be a positive number, got {v!r}.")

    def _side(self, data: Any) -> np.ndarray:
        if self.side_info == "attributes":
            return np.asarray(data.class_attributes, dtype=np.float64)
        if self.side_info not in data.side_info:
            raise ParameterError(f"side information {self.side_info!r} is not in {data.name!r}; available: "
                                 f"{['attributes', *data.side_info]}.")
        side = np.asarray(data.side_info[self.side_info], dtype=np.float64)
        return side.reshape(side.shape[0], -1)

    def fit(self, data: Any) -> "ESZSL":
        """Learn V on the trainval images (seen classes)."""
        import scipy.linalg

        idx = np.asarray(data.trainval_idx)
        labels = np.asarray(data.labels)[idx]
        classes = np.unique(labels)
        self.side_ = self._side(data)
        x = _l2(np.asarray(data.features)[idx])
        y = -np.ones((len(x), len(classes)))
        y[np.arange(len(x)), np.searchsorted(classes, labels)] = 1.0
        s = self.side_[classes].T  # (a, z)
        # one (gamma, lambda): two symmetric positive definite solves (Cholesky), no eigendecomposition
        left = scipy.linalg.solve(x.T @ x + self.gamma * np.eye(x.shape[1]), x.T @ (y @ s.T), assume_a="pos")
        self.V_ = scipy.linalg.solve(s @ s.T + self.lam * np.eye(s.shape[0]), left.T, assume_a="pos").T
        return self

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Compatibility of each image with every class: (n, C)."""
        if not hasattr(self, "V_"):
            raise ParameterError("this ESZSL is not fitted yet: call .fit(data) first.")
        return _l2(x) @ self.V_ @ self.side_.T

    def evaluate(self, data: Any) -> GZSLScores:
        """S, U, H (argmax over all classes) and ZSL (argmax over the unseen classes) on the test splits."""
        f, y = np.asarray(data.features), np.asarray(data.labels)
        ts, tu = np.asarray(data.test_seen_idx), np.asarray(data.test_unseen_idx)
        return gzsl_scores(self.scores(f[ts]), y[ts], self.scores(f[tu]), y[tu], data.seen_classes,
                           data.unseen_classes)

    @classmethod
    def select(cls, data: Any, *, grid: Sequence[float] = DEFAULT_GRID, criterion: Literal["H", "ZSL"] = "H",
               side_info: str = "attributes") -> "ESZSL":
        """The ESZSL whose (gamma, lambda) maximise ``criterion`` on ``data.validation()`` (grid search), fitted
        on ``data``'s trainval split. The validation table is kept as ``model.selection_`` (one row per pair)."""
        if criterion not in ("H", "ZSL"):
            raise ParameterError(f"criterion must be 'H' or 'ZSL', got {criterion!r}.")
        val = data.validation()
        probe = cls(side_info=side_info)
        side = probe._side(val)
        idx = np.asarray(val.trainval_idx)
        labels = np.asarray(val.labels)
        classes = np.unique(labels[idx])
        solver = _Solver(np.asarray(val.features)[idx], labels[idx], classes, side)
        feats = np.asarray(val.features)
        ts, tu = np.asarray(val.test_seen_idx), np.asarray(val.test_unseen_idx)
        xs, xu = _l2(feats[ts]) @ solver.u, _l2(feats[tu]) @ solver.u  # features in the eigenbasis, once
        side_q = solver.q.T @ side.T  # (a, C)
        rows = []
        for gamma in grid:
            for lam in grid:
                core = solver.core(gamma, lam) @ side_q
                sc = gzsl_scores(xs @ core, labels[ts], xu @ core, labels[tu], val.seen_classes, val.unseen_classes)
                rows.append({"gamma": float(gamma), "lam": float(lam), **sc.as_percent()})
        best = max(rows, key=lambda r: (r[criterion], r["H"] if criterion == "ZSL" else r["ZSL"]))
        model = cls(gamma=best["gamma"], lam=best["lam"], side_info=side_info).fit(data)
        model.selection_ = rows
        model.criterion_ = criterion
        return model
