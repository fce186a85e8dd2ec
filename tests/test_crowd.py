"""Crowd task correlations: votes I/O and validation, Dawid-Skene (vs crowd-kit), the ordinal variant, Γ, the simulator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from workbench.crowd import (
    LEVELS,
    Votes,
    annotator_confusion,
    annotator_reliability,
    correlation_matrix,
    dawid_skene,
    levels_from_affinity,
    load_votes_csv,
    majority_vote,
    mean_vote,
    ordinal_confusion,
    ordinal_dawid_skene,
    recovery,
    save_votes_csv,
    simulate_crowd,
)
from workbench.data import load_taskonomy_affinities
from workbench.errors import DataError, ParameterError

THIRDS = {"expert": 1, "noisy": 1, "spammer": 1}


@pytest.fixture(scope="module")
def taskonomy():
    """The 22 Taskonomy targets, with levels cut from the measured first-order affinities."""
    return levels_from_affinity(load_taskonomy_affinities().affinity)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "votes.csv"
    path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------------------
# Votes and CSV
# ----------------------------------------------------------------------------------------------------------
def test_csv_round_trip_and_unordered_pairs(tmp_path):
    path = write(tmp_path, "vote,annotator,task_j,task_i,note\n2,ann1,normals,depth,x\n1,ann2,depth,normals,\n"
                           "-1,ann1,edges,depth,\n")
    votes = load_votes_csv(path, tasks=["depth", "normals", "edges"])
    assert len(votes) == 3 and votes.tasks == ["depth", "edges", "normals"]
    assert votes.pairs().tolist() == [["depth", "edges"], ["depth", "normals"]]  # (a, b) == (b, a): one item
    again = load_votes_csv(save_votes_csv(votes, tmp_path / "out" / "copy.csv"))
    for name in ("annotator", "task_i", "task_j", "vote"):
        assert np.array_equal(getattr(again, name), getattr(votes, name))
    gamma = correlation_matrix(mean_vote(votes))
    assert gamma[0, 2] == gamma[2, 0] == pytest.approx(1.5)  # votes 2 and 1 on (depth, normals)


@pytest.mark.parametrize("rows, expected", [
    ("a,depth,depth,1\n", ["task paired with itself", "line 3"]),
    ("a,depth,nromals,1\n", ["unknown task name", "line 3", "'nromals'", "did you mean 'normals'"]),
    ("a,depth,edges,3\nb,depth,edges,1.5\nc,edges,depth,x\nd,edges,depth,\n",
     ["vote not an integer", "lines 3, 4, 5, 6", "'3'", "'1.5'", "'x'"]),
    ("a,edges,depth,1\n", ["duplicate vote", "'a' on (depth, edges): lines 2, 3"]),  # reversed order, same pair
    (",depth,edges,1\n", ["empty annotator or task name", "line 3"]),
])
def test_csv_validation_names_each_offending_line(tmp_path, rows, expected):
    path = write(tmp_path, "annotator,task_i,task_j,vote\na,depth,edges,1\n" + rows)
    with pytest.raises(DataError) as info:
        load_votes_csv(path, tasks=["depth", "normals", "edges"])
    message = str(info.value)
    for fragment in expected:
        assert fragment in message, (fragment, message)


def test_csv_reports_every_problem_at_once_with_file_line_numbers(tmp_path):
    path = write(tmp_path, "annotator,task_i,task_j,vote\n"
                           "a,depth,normals,2\n"      # 2 ok
                           "a,depth,depth,1\n"        # 3 self pair
                           "\n"                       # 4 blank, skipped but counted
                           "b,edges,depth,7\n"        # 5 out of range
                           "a,normals,depth,0\n")     # 6 duplicate of line 2
    with pytest.raises(DataError) as info:
        load_votes_csv(path)
    message = str(info.value)
    assert "(line 3)" in message and "(line 5)" in message and "lines 2, 6" in message
    assert message.count("\n- ") == 3


def test_csv_missing_columns_and_empty_file(tmp_path):
    with pytest.raises(DataError, match="missing column.*task_j, vote"):
        load_votes_csv(write(tmp_path, "annotator,task_i,score\na,b,1\n"))
    with pytest.raises(DataError, match="empty"):
        load_votes_csv(write(tmp_path, ""))
    with pytest.raises(DataError, match="no such file"):
        load_votes_csv(tmp_path / "absent.csv")


def test_votes_constructor_validates_arrays():
    with pytest.raises(DataError, match=r"rows 0, 1"):
        Votes(["a", "a"], ["x", "y"], ["y", "x"], [1, 2])
    with pytest.raises(ParameterError, match="one length"):
        Votes(["a"], ["x", "y"], ["y", "x"], [1, 2])
    with pytest.raises(DataError, match=r"'5'"):
        Votes(["a"], ["x"], ["y"], [5])


# ----------------------------------------------------------------------------------------------------------
# Aggregation
# ----------------------------------------------------------------------------------------------------------
def test_dawid_skene_beats_majority_vote_when_a_third_are_spammers(taskonomy):
    votes = simulate_crowd(taskonomy.levels, n_annotators=30, mix=THIRDS, coverage=0.3, seed=0,
                           tasks=taskonomy.tasks)
    ds, mv = dawid_skene(votes), majority_vote(votes)
    ds_score, mv_score = recovery(ds, taskonomy), recovery(mv, taskonomy)
    assert ds.converged_ and ds_score.rated == ds_score.pairs == 231
    # Measured (seed 0): DS accuracy 0.95, majority 0.80 (Spearman 0.94 vs 0.86).
    assert ds_score.accuracy >= mv_score.accuracy + 0.08
    assert ds_score.spearman > mv_score.spearman and ds_score.mae < mv_score.mae
    # It learned whom to distrust: every spammer ranks below every expert, near chance (0.25).
    reliability = annotator_reliability(ds)
    by_kind = {kind: reliability.accuracy[np.char.startswith(reliability.annotators, kind)]
               for kind in ("expert", "spammer")}
    assert by_kind["spammer"].max() < by_kind["expert"].min()
    assert abs(by_kind["spammer"].mean() - 0.25) < 0.1 and by_kind["expert"].mean() > 0.8


@pytest.mark.filterwarnings("ignore::Warning:crowdkit")  # its pandas-3 deprecation warnings
def test_dawid_skene_agrees_with_crowd_kit(taskonomy):
    # crowd-kit is in the `test` extra: when it is missing this test fails rather than skips.
    import pandas as pd
    from crowdkit.aggregation import DawidSkene

    votes = simulate_crowd(taskonomy.levels, n_annotators=30, coverage=0.3, seed=0, tasks=taskonomy.tasks)
    lo, hi = votes.canonical()
    frame = pd.DataFrame({"task": np.char.add(np.char.add(lo, "|"), hi), "worker": votes.annotator,
                          "label": votes.vote.astype(int)})
    reference = DawidSkene(n_iter=100, tol=1e-5).fit(frame)
    keys = np.char.add(np.char.add(votes.pairs()[:, 0], "|"), votes.pairs()[:, 1])
    their_post = reference.probas_.reindex(index=keys, columns=list(LEVELS)).fillna(0.0).to_numpy()
    their_labels = reference.labels_.reindex(keys).to_numpy().astype(int)

    ours = dawid_skene(votes)  # default smoothing 0.01
    assert np.mean(ours.labels_ == their_labels) >= 0.95
    assert np.abs(ours.posteriors_ - their_post).max() < 0.05

    exact = dawid_skene(votes, smoothing=1e-10)  # crowd-kit's own floor: the same fixed point
    assert np.array_equal(exact.labels_, their_labels)
    assert np.abs(exact.posteriors_ - their_post).max() < 1e-3
    worker = str(exact.annotators[0])  # crowd-kit's errors_ is indexed (worker, reported), a column per true level
    errors = reference.errors_.loc[worker].reindex(index=list(LEVELS), columns=list(LEVELS)).fillna(0.0).to_numpy()
    assert np.abs(exact.confusions_[0] - errors.T).max() < 1e-3


def test_em_log_likelihood_never_decreases(taskonomy):
    votes = simulate_crowd(taskonomy.levels, n_annotators=20, coverage=0.2, seed=4, tasks=taskonomy.tasks)
    history = np.array(dawid_skene(votes, smoothing=1e-10, tol=0.0, n_iter=30).log_likelihood_)
    assert history.size == 30 and np.all(np.diff(history) >= -1e-9)


def test_ordinal_variant_beats_categorical_with_sparse_votes(taskonomy):
    """Each annotator rates 5% of the 231 pairs (12 votes): too few for 12 free confusion parameters."""
    ordinal, categorical = [], []
    for seed in range(3):
        votes = simulate_crowd(taskonomy.levels, n_annotators=30, coverage=0.05, seed=seed, tasks=taskonomy.tasks)
        ordinal.append(recovery(ordinal_dawid_skene(votes), taskonomy))
        categorical.append(recovery(dawid_skene(votes), taskonomy))
    acc_o, acc_c = np.mean([r.accuracy for r in ordinal]), np.mean([r.accuracy for r in categorical])
    mae_o, mae_c = np.mean([r.mae for r in ordinal]), np.mean([r.mae for r in categorical])
    # Measured (seeds 0-2): accuracy 0.78 vs 0.63, MAE 0.29 vs 0.45.
    assert acc_o >= acc_c + 0.05 and mae_o < mae_c
    assert all(o.accuracy >= c.accuracy for o, c in zip(ordinal, categorical))


def test_ordinal_model_learns_bias_and_spam(taskonomy):
    votes = simulate_crowd(taskonomy.levels, n_annotators=20, mix={"expert": 2, "biased": 1, "spammer": 1},
                           coverage=0.5, seed=1, tasks=taskonomy.tasks)
    result = ordinal_dawid_skene(votes)
    names = result.annotators
    up, down = np.char.startswith(names, "biased+1"), np.char.startswith(names, "biased-1")
    assert up.any() and down.any()
    assert np.all(np.abs(result.bias_[up] - 1) <= 0.3) and np.all(np.abs(result.bias_[down] + 1) <= 0.3)
    assert np.all(result.lapse_[np.char.startswith(names, "spammer")] > 0.5)
    assert np.all(result.lapse_[np.char.startswith(names, "expert")] < 0.2)
    assert np.allclose(result.confusions_.sum(axis=2), 1)
    assert np.allclose(ordinal_confusion(0.0, 1e-3, 0.0), np.eye(4), atol=1e-9)  # no noise, no lapse: exact
    assert np.allclose(ordinal_confusion(0.3, 2.0, 1.0), 0.25)  # all lapse: uniform


def test_majority_vote_breaks_ties_towards_the_mean():
    votes = Votes(["a", "b", "c", "a", "c", "d", "b", "a"],
                  ["x", "x", "x", "x", "x", "x", "y", "y"],
                  ["y", "y", "y", "z", "z", "z", "z", "z"],
                  [0, 2, 1, -1, 2, 2, 2, -1])
    result = majority_vote(votes)
    labels = dict(zip(map(tuple, result.items.tolist()), result.labels_.tolist()))
    # (x, y): 0, 2, 1 all tied, mean 1 -> 1 (not the first level); (x, z): 2 twice beats -1;
    # (y, z): 2 vs -1, mean 0.5, both 1.5 away -> the lower.
    assert labels == {("x", "y"): 1, ("x", "z"): 2, ("y", "z"): -1}
    assert np.array_equal(correlation_matrix(result), correlation_matrix(result).T)


def test_parameter_errors():
    votes = Votes(["a"], ["x"], ["y"], [1])
    with pytest.raises(ParameterError, match="n_iter"):
        dawid_skene(votes, n_iter=0)
    with pytest.raises(ParameterError, match="init"):
        dawid_skene(votes, init="uniform")
    with pytest.raises(ParameterError, match="smoothing"):
        ordinal_dawid_skene(votes, smoothing=0)
    with pytest.raises(ParameterError, match="unknown annotator kind"):
        simulate_crowd(np.zeros((3, 3), int), mix={"troll": 1})
    with pytest.raises(ParameterError, match="symmetric"):
        simulate_crowd(np.array([[2, 1, 0], [0, 2, 0], [0, 0, 2]]))
    with pytest.raises(ParameterError, match="not in `tasks`"):
        correlation_matrix(mean_vote(votes), tasks=["x"])


# ----------------------------------------------------------------------------------------------------------
# Γ, simulator, levels
# ----------------------------------------------------------------------------------------------------------
def test_gamma_is_symmetric_with_nan_for_unrated_pairs(taskonomy):
    votes = simulate_crowd(taskonomy.levels, n_annotators=5, coverage=0.1, seed=3, tasks=taskonomy.tasks)
    result = dawid_skene(votes)
    gamma = correlation_matrix(result, taskonomy.tasks)
    rated = len(result.items)
    assert 0 < rated < 231  # 5 annotators x 23 pairs cannot cover all 231
    assert np.array_equal(np.isnan(gamma), np.isnan(gamma.T)) and np.allclose(gamma, gamma.T, equal_nan=True)
    assert np.isnan(gamma[np.triu_indices(22, 1)]).sum() == 231 - rated
    assert np.all(np.diag(gamma) == 2) and np.all(np.isnan(np.diag(correlation_matrix(result, diagonal=np.nan))))
    finite = gamma[np.isfinite(gamma)]
    assert finite.min() >= -1 and finite.max() <= 2
    assert recovery(result, taskonomy).rated == rated


def test_simulator_spammers_are_uniform_and_coverage_is_exact(taskonomy):
    votes = simulate_crowd(taskonomy.levels, n_annotators=40, mix={"expert": 1, "spammer": 1}, coverage=0.4,
                           seed=7, tasks=taskonomy.tasks)
    per_annotator = round(0.4 * 231)
    assert len(votes) == 40 * per_annotator
    lo, hi = votes.canonical()
    for name in votes.annotators:
        mine = votes.annotator == name
        assert np.unique(np.char.add(lo[mine], hi[mine])).size == per_annotator  # distinct pairs, exact fraction
    index = {t: n for n, t in enumerate(taskonomy.tasks)}
    truth = taskonomy.levels[[index[t] for t in votes.task_i], [index[t] for t in votes.task_j]]
    spam = np.char.startswith(votes.annotator, "spammer")
    share = np.bincount(votes.vote[spam] + 1, minlength=4) / spam.sum()  # 1,840 spammer votes
    assert np.all(np.abs(share - 0.25) < 0.035)
    assert abs(np.mean(votes.vote[spam] == truth[spam]) - 0.25) < 0.035  # independent of the truth
    assert abs(np.mean(votes.vote[~spam] == truth[~spam]) - 0.9) < 0.03  # experts: 90% right
    assert 0.3 < np.mean(votes.task_i > votes.task_j) < 0.7  # pairs written in both orders


def test_simulator_biased_annotators_shift_votes(taskonomy):
    votes = simulate_crowd(taskonomy.levels, n_annotators=10, mix={"biased": 1}, coverage=1.0, seed=2,
                           tasks=taskonomy.tasks)
    index = {t: n for n, t in enumerate(taskonomy.tasks)}
    truth = taskonomy.levels[[index[t] for t in votes.task_i], [index[t] for t in votes.task_j]]
    up = np.char.startswith(votes.annotator, "biased+1")
    assert 0 < up.sum() < len(votes)
    assert np.mean(votes.vote[up] - truth[up]) > 0.5 and np.mean(votes.vote[~up] - truth[~up]) < -0.5
    assert np.allclose(annotator_confusion("biased", +1)[3], [0, 0, 0, 1])  # clamped at the top of the scale


def test_simulation_and_fit_are_deterministic(taskonomy):
    def run(seed):
        return simulate_crowd(taskonomy.levels, n_annotators=12, coverage=0.2, seed=seed, tasks=taskonomy.tasks)

    a, b, c = run(5), run(5), run(6)
    assert all(np.array_equal(getattr(a, n), getattr(b, n)) for n in ("annotator", "task_i", "task_j", "vote"))
    assert not np.array_equal(a.vote, c.vote) or not np.array_equal(a.task_i, c.task_i)
    assert np.array_equal(dawid_skene(a).posteriors_, dawid_skene(b).posteriors_)
    assert np.array_equal(ordinal_dawid_skene(a).posteriors_, ordinal_dawid_skene(b).posteriors_)


def test_levels_from_affinity(taskonomy):
    assert len(taskonomy.tasks) == 22 and "rgb2depth" in taskonomy.tasks
    levels = taskonomy.levels
    assert np.array_equal(levels, levels.T) and np.all(np.diag(levels) == 2)
    counts = np.bincount(levels[np.triu_indices(22, 1)] + 1, minlength=4)
    assert counts.sum() == 231 and np.all(np.abs(counts - 231 / 4) <= 8)  # quarters, up to ties
    pair = {t: n for n, t in enumerate(taskonomy.tasks)}
    # Depth and mist (Euclidean distance) transfer to each other best of all; 2-D keypoints and depth hardly.
    assert levels[pair["rgb2depth"], pair["rgb2mist"]] == 2
    assert levels[pair["rgb2depth"], pair["keypoint2d"]] <= 0
    # A hand example on one scale: pairs ranked by value, cut into four quarters.
    m = np.array([[0, 1, 2, 3], [1, 0, 4, 5], [2, 4, 0, 6], [3, 5, 6, 0]], float)
    small = levels_from_affinity(m, normalise="none", proportions=(1, 1, 1, 1))
    assert small.levels[np.triu_indices(4, 1)].tolist() == [-1, -1, 0, 1, 2, 2]


def test_recovery_metrics_match_a_hand_computation():
    """Every Dawid-Skene vs majority claim rests on ``recovery``: its accuracy, MAE and Spearman, by hand on four
    tasks (six pairs, one never rated) with the mean vote, whose expected level is the plain mean of the votes."""
    from scipy.stats import spearmanr

    from workbench.crowd import Votes, mean_vote

    pairs = [("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d")]  # (c, d): nobody rated it
    votes_per_pair = [[2, 2, 1], [0, 1, 1], [-1, -1, 0], [1, 2, 2], [0, 0, 0]]
    rows = [(f"w{n}", i, j, v) for (i, j), vs in zip(pairs, votes_per_pair) for n, v in enumerate(vs)]
    votes = Votes(*map(np.array, zip(*rows)))
    truth = np.array([[2, 2, 1, -1],
                      [2, 2, 2, 1],
                      [1, 2, 2, 0],
                      [-1, 1, 0, 2]])
    result = mean_vote(votes)
    score = recovery(result, truth, tasks=["a", "b", "c", "d"])

    true = np.array([2, 1, -1, 2, 1])  # truth at (a,b) (a,c) (a,d) (b,c) (b,d)
    mean = np.array([np.mean(v) for v in votes_per_pair])  # 5/3, 2/3, -2/3, 5/3, 0
    most_frequent = np.array([2, 1, -1, 2, 0])  # the labels: the most frequent vote of each pair
    assert score.rated == 5 and score.pairs == 6
    assert score.accuracy == pytest.approx(np.mean(most_frequent == true)) == pytest.approx(4 / 5)
    assert score.mae == pytest.approx(np.mean(np.abs(mean - true))) == pytest.approx((1 + 1 + 1 + 1 + 3) / 3 / 5)
    assert score.spearman == pytest.approx(spearmanr(mean, true).statistic)
