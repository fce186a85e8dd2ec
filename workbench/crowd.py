"""Crowd-sourced task correlations for TTNet: votes, Dawid-Skene aggregation, Γ, and a crowd simulator.

TTNet (Pal & Balasubramanian, CVPR 2019) needs a task-correlation matrix Γ. The paper asked 30 people to rate
pairs of tasks on a four-level scale and aggregated the votes with Dawid-Skene (EM). This module does exactly
that, in numpy, small enough to read:

- **Votes** are rows ``(annotator, task_i, task_j, vote)`` with ``vote`` in ``{-1, 0, 1, 2}``: -1 negatively
  correlated, 0 unrelated, 1 correlated, 2 strongly correlated (the paper's scale). A *pair is unordered*:
  ``(a, b)`` and ``(b, a)`` are the same item, because a correlation is symmetric; an annotator may rate a pair
  once, in either order. :func:`load_votes_csv` / :func:`save_votes_csv` read and write them.
- **Aggregation** turns the votes on one pair (an *item*) into a distribution over the four levels:
  :func:`dawid_skene` (one 4 x 4 confusion matrix per annotator, the classic EM and what crowd-kit does),
  :func:`ordinal_dawid_skene` (each annotator described by a bias, a noise width and a lapse rate on the
  *ordered* scale: 3 parameters instead of 12, which matters when each annotator rates few pairs),
  :func:`majority_vote` and :func:`mean_vote` (the baselines).
- :func:`correlation_matrix` turns any aggregate into Γ; :func:`annotator_reliability` says whom to trust.
- :func:`simulate_crowd`, :func:`levels_from_affinity` and :func:`recovery` make a known truth (e.g. from the
  measured Taskonomy transfer matrix), a crowd of experts, noisy raters, spammers and biased raters voting on
  it, and a score of how well an aggregate recovers the truth: for teaching and for tests.

Levels are stored as votes (-1..2) everywhere a user sees them; internally the EM works with the level
*index* ``vote + 1`` in 0..3. Confusion matrices are ``[annotator, true level, reported level]``: each row sums
to 1. (crowd-kit's ``errors_`` is the transpose: indexed by the reported label, a column per true label.)

Only numpy is needed, plus scipy (already a workbench dependency) for the normal CDF and Spearman's rho.
"""

from __future__ import annotations

import csv
import difflib
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import DataError, ParameterError

LEVELS = np.array([-1, 0, 1, 2])
"""The vote scale, lowest to highest: negatively correlated, unrelated, correlated, strongly correlated."""
K = LEVELS.size
COLUMNS = ("annotator", "task_i", "task_j", "vote")
ANNOTATOR_KINDS = ("expert", "noisy", "spammer", "biased")
DEFAULT_MIX = {"expert": 0.4, "noisy": 0.3, "spammer": 0.1, "biased": 0.2}
_SHOW = 12  # offending rows listed per kind of problem before "and N more"


# ----------------------------------------------------------------------------------------------------------
# Votes
# ----------------------------------------------------------------------------------------------------------
def _rows_text(rows: Sequence[Any], word: str) -> str:
    shown = ", ".join(str(r) for r in rows[:_SHOW])
    more = f" and {len(rows) - _SHOW} more" if len(rows) > _SHOW else ""
    return f"{word}{'s' if len(rows) > 1 else ''} {shown}{more}"


def _codes(names: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sorted distinct names, and each entry's index among them.

    A dict lookup per entry: several times faster than ``np.unique`` on strings, which sorts all of them.
    """
    values = names.tolist()
    distinct = sorted(set(values))
    index = {name: n for n, name in enumerate(distinct)}
    return np.array(distinct, dtype=str), np.fromiter(map(index.__getitem__, values), dtype=np.int64, count=len(values))


def _sorted_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two names of each pair in sorted order: the same key for (a, b) and (b, a)."""
    first = a <= b
    return np.where(first, a, b), np.where(first, b, a)


def _validate(annotator: np.ndarray, task_i: np.ndarray, task_j: np.ndarray, vote: np.ndarray,
              rows: np.ndarray, word: str, tasks: Sequence[str] | None, vote_text: np.ndarray) -> list[str]:
    """Every problem in the votes, one line per kind, naming the offending rows (``rows[n]`` for vote n).

    ``vote`` is float with NaN where the text was not a number, so that non-integers and unparseable values
    are caught by the same test; ``vote_text`` is what the user wrote, quoted back in the message. Returns an
    empty list when the votes are valid.
    """
    problems: list[str] = []

    def report(mask: np.ndarray, what: str, values: np.ndarray | None = None) -> None:
        if mask.any():
            bad = rows[mask].tolist()
            seen = "" if values is None else ": " + ", ".join(repr(v) for v in dict.fromkeys(values[mask].tolist()))
            problems.append(f"{what} ({_rows_text(bad, word)}){seen[:300]}")

    report((annotator == "") | (task_i == "") | (task_j == ""), "empty annotator or task name")
    if tasks is not None:
        known = set(tasks)
        unknown = sorted({t for t in np.concatenate([task_i, task_j]).tolist() if t not in known and t != ""})
        if unknown:
            hints = [f"{u!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(u, tasks, 1))
                     else repr(u) for u in unknown]
            mask = np.isin(task_i, unknown) | np.isin(task_j, unknown)
            problems.append(f"unknown task name ({_rows_text(rows[mask].tolist(), word)}): {', '.join(hints)}; "
                            f"the known tasks are {', '.join(map(repr, tasks))}")
    report((task_i == task_j) & (task_i != ""), "a task paired with itself (task_i == task_j)", task_i)
    not_level = ~np.isin(vote, LEVELS)  # NaN, 1.5, 3, -2 ... all fail
    report(not_level, "vote not an integer in -1, 0, 1, 2", vote_text)
    # Duplicates: the same annotator on the same *unordered* pair, in either order.
    lo, hi = _sorted_pair(task_i, task_j)
    names, codes = _codes(np.concatenate([lo, hi]))
    _, who = _codes(annotator)
    key = (who * names.size + codes[: lo.size]) * names.size + codes[lo.size:]
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    duplicated = np.flatnonzero(counts > 1)
    if duplicated.size:
        listed = []
        for group in duplicated[:_SHOW]:
            members = np.flatnonzero(inverse == group)
            first = members[0]
            listed.append(f"{str(annotator[first])!r} on ({lo[first]}, {hi[first]}): {_rows_text(rows[members].tolist(), word)}")
        more = f"; and {duplicated.size - _SHOW} more" if duplicated.size > _SHOW else ""
        problems.append("duplicate vote: the same annotator rated the same pair twice (pairs are unordered, so "
                        f"(a, b) and (b, a) are the same pair; keep one vote per pair): {'; '.join(listed)}{more}")
    return problems


@dataclass(frozen=True)
class Votes:
    """Crowd votes on unordered task pairs: four aligned 1-D arrays, one entry per vote.

    ``annotator``, ``task_i``, ``task_j`` are strings; ``vote`` is an integer in ``{-1, 0, 1, 2}``. The pair
    ``(task_i, task_j)`` is unordered: ``(a, b)`` and ``(b, a)`` are the same item, and an annotator may rate a
    pair only once. The constructor checks all of this and raises :class:`DataError` listing the offending
    rows (0-based), so an aggregation never runs on votes it would silently misread.
    """

    annotator: np.ndarray
    task_i: np.ndarray
    task_j: np.ndarray
    vote: np.ndarray

    def __post_init__(self) -> None:
        arrays = [np.asarray(getattr(self, name)).ravel() for name in COLUMNS]
        if len({a.size for a in arrays}) != 1:
            raise ParameterError(f"Votes needs four arrays of one length; got lengths "
                                 f"{dict(zip(COLUMNS, (a.size for a in arrays)))}.")
        names = [a.astype(str) for a in arrays[:3]]
        try:
            raw = arrays[3].astype(float)
        except (TypeError, ValueError):
            raw = np.array([_parse_vote(str(v)) for v in arrays[3]], dtype=float)
        problems = _validate(*names, raw, np.arange(raw.size), "row", None, arrays[3].astype(str))
        if problems:
            raise DataError("The votes have problems (rows counted from 0); fix them and build the Votes again:\n- "
                            + "\n- ".join(problems))
        for name, value in zip(COLUMNS, [*names, raw.astype(np.int8)]):
            value.setflags(write=False)
            object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return int(self.vote.size)

    def __repr__(self) -> str:
        return (f"Votes({len(self)} votes by {self.annotators.size} annotators on {self.pairs().shape[0]} pairs "
                f"of {len(self.tasks)} tasks)")

    @property
    def tasks(self) -> list[str]:
        """Every task named in the votes, sorted."""
        return sorted(set(self.task_i.tolist()) | set(self.task_j.tolist()))

    @property
    def annotators(self) -> np.ndarray:
        """The annotators, sorted (the row order of every per-annotator result)."""
        return np.unique(self.annotator)

    def canonical(self) -> tuple[np.ndarray, np.ndarray]:
        """``(lo, hi)`` per vote: the pair with its two names in sorted order, the same for (a, b) and (b, a)."""
        return _sorted_pair(self.task_i, self.task_j)

    def pairs(self) -> np.ndarray:
        """The rated pairs (items), ``(n_items, 2)`` sorted names, in sorted order (the row order of results)."""
        lo, hi = self.canonical()
        return np.unique(np.stack([lo, hi], axis=1), axis=0)


def _parse_vote(text: str) -> float:
    """A vote's text as a number: ``"2"`` and ``"2.0"`` both read as 2; anything else as NaN (then reported)."""
    try:
        return float(int(text))
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            return float("nan")
        return value if np.isfinite(value) else float("nan")


def load_votes_csv(path: str | Path, tasks: Sequence[str] | None = None) -> Votes:
    """Read votes from a CSV file with the columns ``annotator,task_i,task_j,vote`` (any order, extra columns ignored).

    Every problem is found in one pass and reported in one :class:`DataError` that names the offending rows by
    their *line number in the file* (the header is line 1): missing columns, empty names, unknown task names
    (only when ``tasks`` is given, with a "did you mean" hint), a task paired with itself, votes that are not an
    integer in -1..2, and duplicate votes (the same annotator on the same unordered pair, in either order).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; pass the path of a CSV with the columns {', '.join(COLUMNS)}.")
    with path.open(newline="", encoding="utf-8-sig") as handle:  # utf-8-sig: spreadsheets write a BOM
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path} is empty; it needs a header line '{','.join(COLUMNS)}' and one line per vote.")
        header = [h.strip() for h in header]
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}; the header is {','.join(header)!r}. "
                            f"The file needs the columns {','.join(COLUMNS)} (in any order; others are ignored).")
        where = [header.index(c) for c in COLUMNS]
        lines, cells = [], []
        for record in reader:
            if not any(cell.strip() for cell in record):
                continue  # blank line
            lines.append(reader.line_num)
            cells.append([record[w].strip() if w < len(record) else "" for w in where])
    if not cells:
        raise DataError(f"{path} has a header but no votes.")
    table = np.array(cells, dtype=str)
    raw = np.array([_parse_vote(v) for v in table[:, 3]], dtype=float)
    problems = _validate(table[:, 0], table[:, 1], table[:, 2], raw, np.array(lines), "line",
                         None if tasks is None else [str(t) for t in tasks], table[:, 3])
    if problems:
        raise DataError(f"{path}: the votes have problems (line numbers as in the file, header = line 1); fix them "
                        "and load again:\n- " + "\n- ".join(problems))
    return Votes(table[:, 0], table[:, 1], table[:, 2], raw.astype(np.int8))


def save_votes_csv(votes: Votes, path: str | Path) -> Path:
    """Write ``votes`` as a CSV that :func:`load_votes_csv` reads back unchanged; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows(zip(votes.annotator.tolist(), votes.task_i.tolist(), votes.task_j.tolist(),
                             votes.vote.tolist()))
    return path


@dataclass(frozen=True)
class _Encoded:
    """The votes as integer codes: what every aggregator works on (all arrays are per vote unless named)."""

    items: np.ndarray  # (n_items, 2) sorted task names
    annotators: np.ndarray  # (n_annotators,)
    item: np.ndarray  # item index per vote
    worker: np.ndarray  # annotator index per vote
    label: np.ndarray  # level index (vote + 1) per vote

    @property
    def shape(self) -> tuple[int, int]:
        return self.items.shape[0], self.annotators.size

    def one_hot_counts(self) -> np.ndarray:
        """``(n_items, 4)`` number of votes for each level."""
        return np.bincount(self.item * K + self.label, minlength=self.shape[0] * K).reshape(-1, K).astype(float)


def _encode(votes: Votes) -> _Encoded:
    if not isinstance(votes, Votes):
        raise ParameterError(f"expected a workbench.crowd.Votes (from load_votes_csv or simulate_crowd); got "
                             f"{type(votes).__name__}.")
    if len(votes) == 0:
        raise DataError("There are no votes to aggregate.")
    tasks, codes = _codes(np.concatenate([votes.task_i, votes.task_j]))
    first, second = codes[: len(votes)], codes[len(votes):]
    lo, hi = np.minimum(first, second), np.maximum(first, second)  # sorted codes = sorted names
    keys, item = np.unique(lo * tasks.size + hi, return_inverse=True)
    items = tasks[np.stack([keys // tasks.size, keys % tasks.size], axis=1)]
    annotators, worker = _codes(votes.annotator)
    return _Encoded(items, annotators, item.ravel(), worker, votes.vote.astype(np.int64) + 1)


# ----------------------------------------------------------------------------------------------------------
# Aggregates
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CrowdAggregate:
    """What an aggregation learned. Rows of per-item arrays follow ``items``; of per-annotator arrays, ``annotators``.

    ``posteriors_`` (items x 4) is the distribution of each pair's true level over -1, 0, 1, 2; ``labels_`` its
    most probable level; ``expected_`` its mean ``posteriors_ @ [-1, 0, 1, 2]`` (what enters Γ). ``confusions_``
    (annotators x 4 x 4) is ``P(reported level | true level)`` per annotator, rows = true level. ``priors_`` is
    the distribution of true levels over pairs. For the EM methods ``log_likelihood_`` holds the observed-data
    log-likelihood (per vote) after each E-step and ``n_iter_`` the number of E-steps; ``bias_``, ``noise_``
    and ``lapse_`` are set by :func:`ordinal_dawid_skene` only.
    """

    method: str
    items: np.ndarray
    annotators: np.ndarray
    votes_per_annotator: np.ndarray
    posteriors_: np.ndarray
    priors_: np.ndarray
    confusions_: np.ndarray
    n_iter_: int = 0
    converged_: bool = True
    log_likelihood_: list[float] = field(default_factory=list)
    bias_: np.ndarray | None = None
    noise_: np.ndarray | None = None
    lapse_: np.ndarray | None = None

    @property
    def labels_(self) -> np.ndarray:
        """The most probable level of each pair (a vote value, -1..2; ties go to the lower level)."""
        return LEVELS[np.argmax(self.posteriors_, axis=1)]

    @property
    def expected_(self) -> np.ndarray:
        """The expected level of each pair, ``posteriors_ @ [-1, 0, 1, 2]``, a real number in [-1, 2]."""
        return self.posteriors_ @ LEVELS

    def __repr__(self) -> str:
        extra = f", {self.n_iter_} EM iterations{'' if self.converged_ else ' (not converged)'}" if self.n_iter_ else ""
        return f"CrowdAggregate({self.method}: {self.items.shape[0]} pairs, {self.annotators.size} annotators{extra})"


def _soft_counts(enc: _Encoded, posteriors: np.ndarray) -> np.ndarray:
    """Expected confusion counts ``N[a, k, l] = sum over a's votes with reported level l of P(item's level = k)``.

    One weighted ``bincount`` per true level: no Python loop over votes.
    """
    n_workers = enc.shape[1]
    index = enc.worker * K + enc.label
    counts = np.empty((n_workers, K, K))
    for k in range(K):
        counts[:, k, :] = np.bincount(index, weights=posteriors[enc.item, k], minlength=n_workers * K).reshape(-1, K)
    return counts


def _normalise(counts: np.ndarray, smoothing: float) -> np.ndarray:
    smoothed = counts + smoothing
    return smoothed / smoothed.sum(axis=-1, keepdims=True)


def _e_step(enc: _Encoded, priors: np.ndarray, confusions: np.ndarray) -> tuple[np.ndarray, float]:
    """Posteriors over each item's level given the current parameters, and the log-likelihood of all votes.

    ``log P(level k, votes on i) = log prior_k + sum over votes v on i of log confusion[a_v, k, l_v]``; the sums
    are one ``bincount`` per level; normalising in log space (subtract the row max) keeps it exact.
    """
    log_conf = np.log(confusions)[enc.worker, :, enc.label]  # (n_votes, K)
    n_items = enc.shape[0]
    joint = np.empty((n_items, K))
    for k in range(K):
        joint[:, k] = np.bincount(enc.item, weights=log_conf[:, k], minlength=n_items)
    joint += np.log(priors)
    top = joint.max(axis=1, keepdims=True)
    weights = np.exp(joint - top)
    total = weights.sum(axis=1, keepdims=True)
    log_likelihood = float(np.sum(top + np.log(total)))
    return weights / total, log_likelihood


def _check_em_args(n_iter: int, tol: float, smoothing: float) -> None:
    if not (isinstance(n_iter, (int, np.integer)) and n_iter >= 1):
        raise ParameterError(f"n_iter must be a whole number >= 1 (the most EM iterations); got {n_iter!r}.")
    if not (np.isfinite(tol) and tol >= 0):
        raise ParameterError(f"tol must be a number >= 0 (stop when the per-vote log-likelihood changes less); got {tol!r}.")
    if not (np.isfinite(smoothing) and smoothing > 0):
        raise ParameterError(f"smoothing must be a small positive pseudo-count (e.g. 0.01); got {smoothing!r}.")


def _initial_posteriors(enc: _Encoded, init: str | np.ndarray) -> np.ndarray:
    if isinstance(init, str):
        if init != "majority":
            raise ParameterError(f"init must be 'majority' or an (items x 4) array of starting posteriors; got {init!r}.")
        counts = enc.one_hot_counts()
        return counts / counts.sum(axis=1, keepdims=True)
    start = np.asarray(init, dtype=float)
    if start.shape != (enc.shape[0], K) or not np.all(np.isfinite(start)) or np.any(start < 0) \
            or np.any(start.sum(axis=1) <= 0):
        raise ParameterError(f"init as an array must be ({enc.shape[0]} items x {K} levels), finite, non-negative, "
                             f"each row with a positive sum; got shape {start.shape}.")
    return start / start.sum(axis=1, keepdims=True)


def _em(enc: _Encoded, method: str, m_step: Callable[[np.ndarray], tuple[np.ndarray, dict[str, np.ndarray]]],
        n_iter: int, tol: float, smoothing: float, init: str | np.ndarray) -> CrowdAggregate:
    """The EM loop shared by both Dawid-Skene variants; they differ only in ``m_step`` (soft counts -> confusions).

    Start from ``init`` posteriors (vote fractions for ``"majority"``, as crowd-kit does), then alternate
    M-step (priors and confusions from the posteriors) and E-step (posteriors from them), until the per-vote
    log-likelihood changes by less than ``tol`` or ``n_iter`` E-steps have run.
    """
    posteriors = _initial_posteriors(enc, init)
    n_votes = enc.item.size
    history: list[float] = []
    converged = False
    extra: dict[str, np.ndarray] = {}
    for _ in range(n_iter):
        priors = (posteriors.sum(axis=0) + smoothing) / (posteriors.shape[0] + K * smoothing)
        confusions, extra = m_step(_soft_counts(enc, posteriors))
        posteriors, log_likelihood = _e_step(enc, priors, confusions)
        history.append(log_likelihood / n_votes)
        if len(history) > 1 and abs(history[-1] - history[-2]) < tol:
            converged = True
            break
    priors = (posteriors.sum(axis=0) + smoothing) / (posteriors.shape[0] + K * smoothing)
    confusions, extra = m_step(_soft_counts(enc, posteriors))  # parameters consistent with the final posteriors
    return CrowdAggregate(method, enc.items, enc.annotators, np.bincount(enc.worker, minlength=enc.shape[1]),
                          posteriors, priors, confusions, len(history), converged, history, **extra)


def dawid_skene(votes: Votes, n_iter: int = 100, tol: float = 1e-5, init: str | np.ndarray = "majority",
                smoothing: float = 0.01) -> CrowdAggregate:
    """Classic Dawid-Skene (1979): one free 4 x 4 confusion matrix per annotator, fitted by EM.

    The model: each pair has a true level ``k`` drawn from ``priors``; annotator ``a`` reports level ``l`` with
    probability ``confusions[a, k, l]``, independently of the other annotators. EM alternates
    posteriors over each pair's level (E-step) with the confusions and priors that those posteriors make most
    likely (M-step: expected counts, normalised). Levels are *unordered categories* here, as in crowd-kit:
    reporting 2 for a true -1 is no worse than reporting 1 for a true 2 unless the data say so.

    ``smoothing`` is a pseudo-count added to every cell of every expected confusion count (and to the prior
    counts) before normalising: a MAP estimate under a Dirichlet(1 + smoothing) prior. Without it, a level an
    annotator never reported gets probability 0, its log is -inf, and one vote could veto a level for good;
    0.01 is tiny next to any real count, so it changes nothing else. (crowd-kit clips at 1e-10 instead.)
    """
    _check_em_args(n_iter, tol, smoothing)
    enc = _encode(votes)
    return _em(enc, "dawid-skene", lambda counts: (_normalise(counts, smoothing), {}), n_iter, tol, smoothing, init)


# ---- the ordinal variant ---------------------------------------------------------------------------------
_BIAS_GRID = np.round(np.arange(-2.0, 2.0001, 0.1), 2)
_NOISE_GRID = np.geomspace(0.1, 6.0, 28)
_LAPSE_GRID = np.round(np.arange(0.0, 1.0001, 0.025), 3)


def ordinal_confusion(bias: float | np.ndarray, noise: float | np.ndarray, lapse: float | np.ndarray) -> np.ndarray:
    """The ordinal annotator model's confusion matrix ``P(reported l | true k)``, shape ``(..., 4, 4)``.

    The annotator perceives ``k + bias + noise * z`` (z standard normal) on the level-index axis and reports the
    nearest level, clamped to the scale (cut points at k +/- 0.5); with probability ``lapse`` they ignore the
    pair and pick a level uniformly at random. Broadcasts over arrays of parameters.
    """
    from scipy.special import ndtr  # the standard normal CDF

    bias, noise, lapse = (np.asarray(x, dtype=float)[..., None, None] for x in (bias, noise, lapse))
    cuts = np.array([-np.inf, 0.5, 1.5, 2.5, np.inf])  # boundaries between reported levels 0|1|2|3
    true = np.arange(K)[:, None]
    cdf = ndtr((cuts[None, :] - true - bias) / noise)  # (..., K, K+1)
    probs = np.diff(cdf, axis=-1)
    return (1 - lapse) * probs + lapse / K


@functools.cache
def _ordinal_grid() -> tuple[np.ndarray, np.ndarray]:
    """Every (bias, noise, lapse) on the grid and the log of its flattened 4 x 4 confusion matrix (G x 16)."""
    b, s, e = np.meshgrid(_BIAS_GRID, _NOISE_GRID, _LAPSE_GRID, indexing="ij")
    params = np.stack([b.ravel(), s.ravel(), e.ravel()], axis=1)
    conf = ordinal_confusion(params[:, 0], params[:, 1], params[:, 2])
    log_conf = np.log(np.clip(conf, 1e-12, None)).reshape(len(params), K * K)
    return params, log_conf


def ordinal_dawid_skene(votes: Votes, n_iter: int = 100, tol: float = 1e-5, init: str | np.ndarray = "majority",
                        smoothing: float = 0.01) -> CrowdAggregate:
    """Dawid-Skene with an *ordinal* annotator model: 3 parameters per annotator instead of 12.

    Why: the scale -1 < 0 < 1 < 2 is ordered, and real annotators err by being a level too generous or too
    strict, or by being imprecise, far more often than by swapping -1 for 2 (crowd-kit, issue #17, cannot use
    this: it treats levels as categories). A free 4 x 4 confusion matrix has 12 parameters; an annotator who
    rated 10 pairs cannot pin them down, so classic Dawid-Skene overfits exactly when votes are sparse.

    The model (an ordered probit with a lapse rate, as in psychophysics): annotator ``a`` perceives the true
    level index ``k`` as ``k + bias_a + noise_a * z`` with z ~ N(0, 1), reports the nearest level (clamped to the
    scale), and with probability ``lapse_a`` ignores the pair and reports a uniformly random level. ``bias``
    captures systematically high or low raters, ``noise`` careless ones, ``lapse`` spammers (an ordinal model
    without it would explain a uniform spammer as huge noise, which piles its votes at the two ends of the
    scale: a poor fit). See :func:`ordinal_confusion`.

    Fitting: the same EM as :func:`dawid_skene` (same E-step, same priors). The M-step maximises, per
    annotator, the expected log-likelihood ``sum_{k,l} N[a, k, l] log P(l | k; bias, noise, lapse)`` over a fixed
    grid of parameters (bias -2..2 by 0.1, noise 0.1..6 geometric, lapse 0..1 by 0.025; about 47,000 candidate
    confusion matrices): one matrix product ``(annotators x 16) @ (16 x grid)`` scores every candidate for every
    annotator, and the best is exact on the grid, deterministic, and needs no step size. ``smoothing`` is used
    for the priors only (the model's confusions are never exactly 0, because of the Gaussian tails and the
    lapse). Results carry ``bias_``, ``noise_`` and ``lapse_`` per annotator.
    """
    _check_em_args(n_iter, tol, smoothing)
    enc = _encode(votes)
    params, log_grid = _ordinal_grid()

    def m_step(counts: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        best = np.argmax(counts.reshape(counts.shape[0], K * K) @ log_grid.T, axis=1)
        chosen = params[best]
        conf = np.exp(log_grid[best]).reshape(-1, K, K)
        conf /= conf.sum(axis=-1, keepdims=True)
        return conf, {"bias_": chosen[:, 0], "noise_": chosen[:, 1], "lapse_": chosen[:, 2]}

    return _em(enc, "ordinal dawid-skene", m_step, n_iter, tol, smoothing, init)


# ---- baselines -------------------------------------------------------------------------------------------
def _baseline(enc: _Encoded, method: str, posteriors: np.ndarray) -> CrowdAggregate:
    """A non-EM aggregate; its confusions compare each annotator with the consensus (for reliability)."""
    priors = posteriors.mean(axis=0)
    confusions = _normalise(_soft_counts(enc, posteriors), 0.01)
    return CrowdAggregate(method, enc.items, enc.annotators, np.bincount(enc.worker, minlength=enc.shape[1]),
                          posteriors, priors, confusions)


def majority_vote(votes: Votes) -> CrowdAggregate:
    """The most frequent vote on each pair, as a *hard* decision (``posteriors_`` one-hot, so Γ = that level).

    Ties go to the tied level nearest the pair's mean vote, then to the lower one: deterministic, and a
    1-vs-1 split between 0 and 2 becomes 1 rather than an arbitrary end of the scale.
    """
    enc = _encode(votes)
    counts = enc.one_hot_counts()
    mean = (counts @ LEVELS) / counts.sum(axis=1)
    tied = counts == counts.max(axis=1, keepdims=True)
    distance = np.where(tied, np.abs(LEVELS[None, :] - mean[:, None]), np.inf)
    winner = np.argmin(distance, axis=1)  # argmin returns the first (lower) level on a tie
    return _baseline(enc, "majority vote", np.eye(K)[winner])


def mean_vote(votes: Votes) -> CrowdAggregate:
    """The vote fractions of each pair as its distribution, so ``expected_`` is the plain mean vote.

    The natural ordinal baseline: it uses the scale's order (a 1 and a 2 average to 1.5), but gives a
    spammer's vote as much weight as an expert's. ``labels_`` is the most frequent vote (the lower on a tie).
    """
    enc = _encode(votes)
    counts = enc.one_hot_counts()
    return _baseline(enc, "mean vote", counts / counts.sum(axis=1, keepdims=True))


AGGREGATORS: dict[str, Callable[[Votes], CrowdAggregate]] = {
    "dawid-skene": dawid_skene,
    "ordinal dawid-skene": ordinal_dawid_skene,
    "majority vote": majority_vote,
    "mean vote": mean_vote,
}


# ----------------------------------------------------------------------------------------------------------
# Γ and reliability
# ----------------------------------------------------------------------------------------------------------
def correlation_matrix(result: CrowdAggregate, tasks: Sequence[str] | None = None,
                       diagonal: float = 2.0) -> np.ndarray:
    """Γ, the symmetric ``(tasks x tasks)`` matrix of expected levels ``posteriors @ [-1, 0, 1, 2]``.

    The expected level (not the most probable one) keeps the aggregate's uncertainty: a pair split between
    1 and 2 gets 1.5, on the same scale as the votes. A pair nobody rated is NaN, never a made-up 0 (which
    would claim "unrelated"). The diagonal defaults to 2, the top of the scale, because a task is perfectly
    correlated with itself and TTNet multiplies Γ into its inputs, where a NaN would poison every product;
    pass ``diagonal=np.nan`` to mark it as not rated instead. ``tasks`` (default: every task in the votes,
    sorted) fixes the row order and may list tasks nobody rated (their rows are NaN).
    """
    names = sorted(set(result.items.ravel().tolist())) if tasks is None else [str(t) for t in tasks]
    index = {t: n for n, t in enumerate(names)}
    if len(index) != len(names):
        raise ParameterError(f"tasks lists a task twice: {sorted(t for t in index if names.count(t) > 1)}.")
    missing = sorted(set(result.items.ravel().tolist()) - set(index))
    if missing:
        raise ParameterError(f"the votes rate tasks that are not in `tasks`: {missing}; add them, or pass tasks=None "
                             "to use every task in the votes.")
    gamma = np.full((len(names), len(names)), np.nan)
    i = np.array([index[t] for t in result.items[:, 0]], dtype=int)
    j = np.array([index[t] for t in result.items[:, 1]], dtype=int)
    gamma[i, j] = gamma[j, i] = result.expected_
    np.fill_diagonal(gamma, diagonal)
    return gamma


@dataclass(frozen=True)
class Reliability:
    """Per annotator (rows follow ``annotators``): votes cast, ``diagonal`` = P(reports k | true k) for each level,
    and ``accuracy`` = P(their vote equals the true level) under the fitted priors."""

    annotators: np.ndarray
    n_votes: np.ndarray
    diagonal: np.ndarray
    accuracy: np.ndarray

    def ranking(self) -> list[tuple[str, float, int]]:
        """``(annotator, accuracy, votes)``, most reliable first."""
        order = np.argsort(-self.accuracy, kind="stable")
        return [(str(self.annotators[n]), float(self.accuracy[n]), int(self.n_votes[n])) for n in order]


def annotator_reliability(result: CrowdAggregate) -> Reliability:
    """How far to trust each annotator: the diagonals of their confusion matrices, and their accuracy.

    ``accuracy = sum_k priors[k] * confusions[a, k, k]``: the chance that a vote by ``a`` on a random pair is
    the true level. A spammer scores about 0.25 (chance on four levels); an expert near 1. For the baselines,
    the confusions compare each annotator with the consensus rather than with a fitted model.
    """
    diagonal = np.diagonal(result.confusions_, axis1=1, axis2=2).copy()
    return Reliability(result.annotators, result.votes_per_annotator, diagonal, diagonal @ result.priors_)


# ----------------------------------------------------------------------------------------------------------
# Simulation, a known truth, and recovery
# ----------------------------------------------------------------------------------------------------------
def annotator_confusion(kind: str, shift: int = 0) -> np.ndarray:
    """The 4 x 4 ``P(reported | true)`` the simulator uses for an annotator of ``kind`` (rows: true level).

    - ``expert``: right 90% of the time, otherwise one level off (inwards at the ends of the scale);
    - ``noisy``: right 50%, one level off 50%;
    - ``spammer``: uniform over the four levels, whatever the truth;
    - ``biased``: an expert whose votes are then moved ``shift`` (+1 or -1) levels, clamped to the scale.
    """
    def near(p_right: float) -> np.ndarray:
        conf = np.zeros((K, K))
        for k in range(K):
            neighbours = [n for n in (k - 1, k + 1) if 0 <= n < K]
            conf[k, k] = p_right
            conf[k, neighbours] = (1 - p_right) / len(neighbours)
        return conf

    if kind == "expert":
        return near(0.9)
    if kind == "noisy":
        return near(0.5)
    if kind == "spammer":
        return np.full((K, K), 1 / K)
    if kind == "biased":
        if shift not in (-1, 1):
            raise ParameterError(f"a biased annotator's shift must be +1 or -1; got {shift!r}.")
        move = np.zeros((K, K))
        move[np.arange(K), np.clip(np.arange(K) + shift, 0, K - 1)] = 1
        return near(0.9) @ move
    raise ParameterError(f"unknown annotator kind {kind!r}; choose from {', '.join(ANNOTATOR_KINDS)}.")


def _check_levels(true_levels: np.ndarray) -> np.ndarray:
    levels = np.asarray(true_levels)
    if levels.ndim != 2 or levels.shape[0] != levels.shape[1] or levels.shape[0] < 2:
        raise ParameterError(f"true_levels must be a square (tasks x tasks) matrix of at least 2 tasks; got shape "
                             f"{levels.shape}. levels_from_affinity() makes one from an affinity matrix.")
    off = ~np.eye(levels.shape[0], dtype=bool)
    if not np.all(np.isin(levels[off], LEVELS)):
        raise ParameterError("true_levels must hold integers in -1, 0, 1, 2 off the diagonal; found "
                             f"{sorted(set(np.unique(levels[off]).tolist()) - set(LEVELS.tolist()))}.")
    if not np.array_equal(levels[off], levels.T[off]):
        raise ParameterError("true_levels must be symmetric (a correlation between two tasks has no direction); "
                             "symmetrise it first, e.g. with levels_from_affinity().")
    return levels.astype(int)


def _allocate(mix: Mapping[str, float], n: int) -> list[str]:
    """``n`` annotator kinds in the proportions of ``mix`` (largest remainder rounding: exact and deterministic)."""
    unknown = set(mix) - set(ANNOTATOR_KINDS)
    if unknown:
        raise ParameterError(f"unknown annotator kind(s) in mix: {sorted(unknown)}; choose from "
                             f"{', '.join(ANNOTATOR_KINDS)}.")
    weights = np.array([float(mix.get(k, 0.0)) for k in ANNOTATOR_KINDS])
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
        raise ParameterError(f"mix weights must be non-negative numbers with a positive sum; got {dict(mix)}.")
    share = weights / weights.sum() * n
    counts = np.floor(share).astype(int)
    for k in np.argsort(-(share - counts), kind="stable")[: n - counts.sum()]:
        counts[k] += 1
    return [kind for kind, c in zip(ANNOTATOR_KINDS, counts) for _ in range(c)]


def simulate_crowd(true_levels: np.ndarray, n_annotators: int = 30, mix: Mapping[str, float] | None = None,
                   coverage: float = 0.3, seed: int = 0, tasks: Sequence[str] | None = None) -> Votes:
    """Votes of a simulated crowd on the task pairs of ``true_levels`` (a symmetric tasks x tasks matrix in -1..2).

    ``mix`` gives the proportions of annotator kinds (see :func:`annotator_confusion`; default
    :data:`DEFAULT_MIX`), rounded to whole annotators. Each annotator rates ``round(coverage * n_pairs)`` pairs
    (at least one), chosen at random, so coverage is sparse like a real crowd's. Biased annotators move their
    votes +1 or -1 (at random). Each vote names the pair in a random order, as real files do. Annotator names
    say their kind (``"spammer-07"``), so a lesson can check whom the aggregation learned to distrust.
    Deterministic for a given ``seed``.
    """
    levels = _check_levels(true_levels)
    n_tasks = levels.shape[0]
    names = [f"task{n:02d}" for n in range(n_tasks)] if tasks is None else [str(t) for t in tasks]
    if len(names) != n_tasks or len(set(names)) != n_tasks:
        raise ParameterError(f"tasks must be {n_tasks} distinct names, one per row of true_levels; got {len(names)}.")
    if not (isinstance(n_annotators, (int, np.integer)) and n_annotators >= 1):
        raise ParameterError(f"n_annotators must be a whole number >= 1; got {n_annotators!r}.")
    if not (0 < coverage <= 1):
        raise ParameterError(f"coverage is the fraction of pairs each annotator rates, in (0, 1]; got {coverage!r}.")
    kinds = _allocate(DEFAULT_MIX if mix is None else mix, int(n_annotators))
    rng = np.random.default_rng(seed)
    first, second = np.triu_indices(n_tasks, k=1)
    n_pairs = first.size
    per_annotator = max(1, round(coverage * n_pairs))

    confusions, labels = [], []
    counters: dict[str, int] = {}
    for kind in kinds:
        shift = int(rng.choice([-1, 1])) if kind == "biased" else 0
        confusions.append(annotator_confusion(kind, shift))
        counters[kind] = counters.get(kind, 0) + 1
        labels.append(f"{kind}{f'{shift:+d}' if shift else ''}-{counters[kind]:02d}")
    chosen = np.concatenate([rng.choice(n_pairs, size=per_annotator, replace=False) for _ in kinds])
    worker = np.repeat(np.arange(len(kinds)), per_annotator)
    truth = levels[first[chosen], second[chosen]] + 1  # level index
    cdf = np.cumsum(np.stack(confusions)[worker, truth], axis=1)  # (n_votes, K)
    reported = np.minimum((rng.random(worker.size)[:, None] > cdf).sum(axis=1), K - 1)
    swap = rng.random(worker.size) < 0.5
    ti = np.where(swap, second[chosen], first[chosen])
    tj = np.where(swap, first[chosen], second[chosen])
    names_arr = np.array(names)
    return Votes(np.array(labels)[worker], names_arr[ti], names_arr[tj], LEVELS[reported])


@dataclass(frozen=True)
class TaskLevels:
    """A known truth for simulations: ``levels`` (tasks x tasks, -1..2, diagonal 2) cut from the symmetric real
    ``scores`` (diagonal NaN), rows and columns following ``tasks``."""

    tasks: list[str]
    levels: np.ndarray
    scores: np.ndarray

    def __repr__(self) -> str:
        off = self.levels[~np.eye(len(self.tasks), dtype=bool)]
        counts = {int(v): int(c) // 2 for v, c in zip(*np.unique(off, return_counts=True))}
        return f"TaskLevels({len(self.tasks)} tasks, pairs per level {counts})"


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of ``values`` with ties given their average rank."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(values.size)
    ranks[order] = np.arange(values.size)
    _, inverse = np.unique(values, return_inverse=True)
    sums = np.bincount(inverse, weights=ranks)
    return (sums / np.bincount(inverse))[inverse]


def levels_from_affinity(matrix: Any, tasks: Sequence[str] | None = None,
                         proportions: Sequence[float] = (0.25, 0.25, 0.25, 0.25),
                         normalise: str = "column-rank") -> TaskLevels:
    """Turn a real-valued task affinity matrix into four correlation levels, by quantiles.

    ``matrix`` is a square array, or a pandas DataFrame with sources as rows and targets as columns, such as
    ``load_taskonomy_affinities().affinity`` (27 sources x 22 targets): then the tasks are the targets that are
    also sources (all 22), unless ``tasks`` picks some. Steps:

    1. ``normalise="column-rank"`` (default) replaces each column by the percentile rank of its off-diagonal
       entries. Taskonomy's affinities are normalised per *target* (AHP), so only comparisons within a column
       mean anything; ranks make the columns comparable. ``"none"`` keeps the raw values (for a matrix that is
       already on one scale).
    2. Symmetrise: ``score(a, b) = (M[a, b] + M[b, a]) / 2``, how well each task serves the other on average,
       since TTNet's correlations have no direction.
    3. Cut the pairs' scores at the quantiles ``cumsum(proportions)``: the lowest ``proportions[0]`` of pairs get
       level -1, and so on up to 2. Equal quarters (the default) make every level equally common, so no level
       dominates the accuracy of an aggregate. Level -1 here means "the least related quarter of pairs": the
       measured affinities are never negative, so it is a relative, not a literal, negative correlation.
    """
    if normalise not in ("column-rank", "none"):
        raise ParameterError(f"normalise must be 'column-rank' or 'none'; got {normalise!r}.")
    if hasattr(matrix, "columns") and hasattr(matrix, "index"):  # a DataFrame, without importing pandas
        shared = [c for c in matrix.columns if c in set(matrix.index)]
        names = shared if tasks is None else [str(t) for t in tasks]
        absent = [t for t in names if t not in set(matrix.index) or t not in set(matrix.columns)]
        if absent:
            raise ParameterError(f"tasks {absent} are not both a row and a column of the matrix; choose from {shared}.")
        values = matrix.loc[names, names].to_numpy(dtype=float)
    else:
        values = np.asarray(matrix, dtype=float)
        if values.ndim != 2 or values.shape[0] != values.shape[1]:
            raise ParameterError(f"matrix must be square (tasks x tasks) or a DataFrame; got shape {values.shape}.")
        names = [f"task{n:02d}" for n in range(values.shape[0])] if tasks is None else [str(t) for t in tasks]
        if len(names) != values.shape[0]:
            raise ParameterError(f"tasks must name the {values.shape[0]} rows of matrix; got {len(names)} names.")
    n = values.shape[0]
    if n < 3:
        raise ParameterError(f"at least 3 tasks are needed to cut pairs into levels; got {n}.")
    off = ~np.eye(n, dtype=bool)
    if not np.all(np.isfinite(values[off])):
        raise DataError("the affinity matrix has NaN or infinite entries off the diagonal; fill or drop those tasks.")
    share = np.asarray(proportions, dtype=float)
    if share.shape != (K,) or np.any(share < 0) or share.sum() <= 0:
        raise ParameterError(f"proportions must be 4 non-negative numbers (for levels -1, 0, 1, 2); got {proportions!r}.")

    if normalise == "column-rank":
        ranked = np.full((n, n), np.nan)
        for col in range(n):
            rows = np.flatnonzero(off[:, col])
            ranked[rows, col] = _average_ranks(values[rows, col]) / (rows.size - 1)
        values = ranked
    scores = (values + values.T) / 2
    np.fill_diagonal(scores, np.nan)
    upper = scores[np.triu_indices(n, k=1)]
    edges = np.quantile(upper, np.cumsum(share / share.sum())[:-1])
    levels = LEVELS[np.searchsorted(edges, scores, side="right").clip(0, K - 1)]
    np.fill_diagonal(levels, LEVELS[-1])
    return TaskLevels(list(names), levels, scores)


@dataclass(frozen=True)
class Recovery:
    """How well an aggregate recovers a known truth, on the pairs that got at least one vote.

    ``spearman``: rank correlation of Γ (rounded to 1e-4) with the reference matrix (the real scores when the
    truth is a :class:`TaskLevels`, else the true levels); ``accuracy``: fraction of pairs whose most probable level is the
    true one (chance 0.25); ``mae``: mean |expected level - true level|; ``rated`` / ``pairs``: pairs with votes /
    all pairs.
    """

    spearman: float
    accuracy: float
    mae: float
    rated: int
    pairs: int

    def as_dict(self, digits: int = 4) -> dict[str, float | int]:
        return {k: (round(v, digits) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def recovery(result: CrowdAggregate, truth: TaskLevels | np.ndarray, tasks: Sequence[str] | None = None) -> Recovery:
    """Score ``result`` against ``truth`` (a :class:`TaskLevels`, or a tasks x tasks matrix of true levels).

    ``tasks`` names the rows of a plain matrix (default ``task00, task01, ...``, as :func:`simulate_crowd`
    names them). Pairs nobody rated are left out of every score and counted in ``rated``.
    """
    from scipy.stats import spearmanr

    if isinstance(truth, TaskLevels):
        names, levels, reference = truth.tasks, _check_levels(truth.levels), truth.scores
    else:
        levels = _check_levels(truth)
        names = [f"task{n:02d}" for n in range(levels.shape[0])] if tasks is None else [str(t) for t in tasks]
        reference = levels.astype(float)
    gamma = correlation_matrix(result, names)
    index = {t: n for n, t in enumerate(names)}
    i = np.array([index[t] for t in result.items[:, 0]], dtype=int)
    j = np.array([index[t] for t in result.items[:, 1]], dtype=int)
    true = levels[i, j]
    # Rounded to 1e-4 of a level first: near-certain posteriors differ in the 8th decimal, and Spearman would
    # read that noise as a ranking within a level (it costs a certain aggregate about 0.005 of rho).
    rho = spearmanr(np.round(gamma[i, j], 4), reference[i, j]).statistic if i.size > 2 else float("nan")
    return Recovery(spearman=float(rho), accuracy=float(np.mean(result.labels_ == true)),
                    mae=float(np.mean(np.abs(result.expected_ - true))), rated=int(i.size),
                    pairs=len(names) * (len(names) - 1) // 2)
