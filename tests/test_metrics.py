"""mnm.metrics against brute-force loops, scipy and hand-worked cases."""

import numpy as np
import pytest
from scipy import stats

from mnm import metrics


def brute_force_rank(row, true_index):
    """Rank by walking the candidates one by one; ties pessimistic (count against the pair)."""
    rank = 1
    for j, value in enumerate(row):
        if j != true_index and value >= row[true_index]:
            rank += 1
    return rank


def brute_force_mix_and_match(row, true_index):
    wins = 0.0
    for j, value in enumerate(row):
        if j == true_index:
            continue
        wins += 1.0 if value < row[true_index] else (0.5 if value == row[true_index] else 0.0)
    return wins / (len(row) - 1)


@pytest.fixture(params=[0, 1, 2])
def tied_scores(request):
    """Random scores rounded to few levels so that ties are frequent."""
    rng = np.random.default_rng(request.param)
    n = 23
    return np.round(rng.normal(size=(n, n)) + 1.5 * np.eye(n), 0)


def test_ranks_match_brute_force_with_ties(tied_scores):
    expected = [brute_force_rank(row, i) for i, row in enumerate(tied_scores)]
    np.testing.assert_array_equal(metrics.ranks(tied_scores), expected)
    expected_t = [brute_force_rank(row, i) for i, row in enumerate(tied_scores.T)]
    table = metrics.retrieval_metrics(tied_scores, [1, 5])
    mean_b2t = table.query("metric == 'mean_rank' and direction == 'brain_to_text'")["value"]
    assert mean_b2t.item() == pytest.approx(np.mean(expected_t))


@pytest.mark.parametrize("k", [1, 3, 10])
def test_recall_at_k_matches_brute_force(tied_scores, k):
    expected = np.mean(
        [brute_force_rank(row, i) <= k for i, row in enumerate(tied_scores)]
    )
    assert metrics.recall_at_k(tied_scores, k) == pytest.approx(expected)


def test_mix_and_match_matches_brute_force(tied_scores):
    expected = [brute_force_mix_and_match(row, i) for i, row in enumerate(tied_scores)]
    np.testing.assert_allclose(metrics.mix_and_match_per_query(tied_scores), expected)
    assert metrics.mix_and_match(tied_scores) == pytest.approx(np.mean(expected))


def test_constant_scores_follow_the_tie_rule():
    scores = np.ones((6, 6))
    np.testing.assert_array_equal(metrics.ranks(scores), [6] * 6)  # pessimistic
    assert metrics.recall_at_k(scores, 5) == 0.0
    assert metrics.mix_and_match(scores) == 0.5  # exactly chance


def test_hand_worked_example_both_directions():
    scores = np.array([[0.9, 0.1, 0.5], [0.8, 0.2, 0.1], [0.0, 0.3, 0.7]])
    # rows: ranks 1, 2 (0.8 > 0.2), 1 ; columns: ranks 1 (0.9 top), 2 (0.3 > 0.2), 1
    np.testing.assert_array_equal(metrics.ranks(scores), [1, 2, 1])
    np.testing.assert_array_equal(metrics.ranks(scores.T), [1, 2, 1])
    np.testing.assert_allclose(metrics.mix_and_match_per_query(scores), [1, 0.5, 1])
    table = metrics.retrieval_metrics(scores, [1, 5])
    recall = table.query("metric == 'recall'")
    assert set(recall["k"]) == {1}  # K=5 >= 3 candidates is not reported
    assert recall["value"].tolist() == pytest.approx([2 / 3, 2 / 3])
    assert recall["chance"].tolist() == pytest.approx([1 / 3, 1 / 3])


def test_pairing_equals_the_permuted_matrix_and_brute_force(tied_scores):
    """A pairing (text i with brain pairing[i]) scores like the column-permuted copy, whose
    ranks are walked one by one in both directions."""
    pairing = np.random.default_rng(7).permutation(len(tied_scores))
    permuted = tied_scores[:, pairing]
    table = metrics.retrieval_metrics(tied_scores, [1, 5], pairing=pairing).set_index(["metric", "direction", "k"])
    t2b = [brute_force_rank(row, i) for i, row in enumerate(permuted)]
    b2t = [brute_force_rank(row, i) for i, row in enumerate(permuted.T)]
    for direction, expected in (("text_to_brain", t2b), ("brain_to_text", b2t)):
        assert table.loc[("recall", direction, 5), "value"] == pytest.approx(np.mean(np.array(expected) <= 5))
        assert table.loc[("mean_rank", direction, 0), "value"] == pytest.approx(np.mean(expected))
        assert table.loc[("median_rank", direction, 0), "value"] == pytest.approx(np.median(expected))
    mix_b2t = [brute_force_mix_and_match(row, i) for i, row in enumerate(permuted.T)]
    assert table.loc[("mix_and_match", "brain_to_text", 0), "value"] == pytest.approx(np.mean(mix_b2t))
    dense = metrics.retrieval_metrics(permuted, [1, 5])
    np.testing.assert_allclose(table["value"].to_numpy(), dense["value"].to_numpy())


def test_pairing_must_be_a_permutation():
    with pytest.raises(ValueError, match="permutation"):
        metrics.retrieval_metrics(np.eye(3), [1], pairing=[0, 0, 1])


def test_effective_ks_drops_k_at_or_above_candidates():
    assert metrics.effective_ks([1, 5, 10, 100], 100) == [1, 5, 10]
    assert metrics.effective_ks([1, 5, 10, 100], 101) == [1, 5, 10, 100]


def test_bad_score_matrix_is_rejected():
    with pytest.raises(ValueError, match="square"):
        metrics.ranks(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="NaN"):
        metrics.ranks(np.full((2, 2), np.nan))


def test_dice_hand_worked():
    pred = np.array([9, 8, 7, 6, 5, 4, 3, 2, 1, 0], dtype=float)
    truth = np.array([0, 9, 8, 1, 2, 3, 4, 5, 6, 7], dtype=float)
    # top 30%: pred {0,1,2}, truth {1,2,9}: overlap 2 -> 2*2/(3+3)
    assert metrics.dice_top_fraction(pred, truth, 0.3) == pytest.approx(4 / 6)
    # top 10%: {0} vs {1}
    assert metrics.dice_top_fraction(pred, truth, 0.1) == 0.0
    assert metrics.dice_top_fraction(pred, pred, 0.2) == 1.0
    curve = metrics.dice_curve(pred, truth, [0.1, 0.2, 0.3])
    np.testing.assert_allclose(curve, [0.0, 0.5, 4 / 6])
    # trapezoids: 0.1 * (0 + 0.5) / 2 + 0.1 * (0.5 + 2/3) / 2
    assert metrics.dice_auc([0.1, 0.2, 0.3], curve) == pytest.approx(0.025 + 0.1 * (7 / 6) / 2)


def test_kendall_tau_matches_scipy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    y = np.round(-x + rng.normal(size=50), 0)  # ties in y
    tau, p = metrics.kendall_tau(x, y)
    ref = stats.kendalltau(x, y)
    assert tau == pytest.approx(ref.statistic)
    # textbook tau-b from pair counts
    conc = disc = tie_x = tie_y = 0
    for i in range(50):
        for j in range(i + 1, 50):
            sign = np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
            conc += sign > 0
            disc += sign < 0
            tie_x += x[i] == x[j]
            tie_y += y[i] == y[j]
    n0 = 50 * 49 / 2
    assert tau == pytest.approx((conc - disc) / np.sqrt((n0 - tie_x) * (n0 - tie_y)))
    assert p == pytest.approx(ref.pvalue)
    assert tau < 0


def test_dice_with_ties_selects_exactly_the_top_count():
    rng = np.random.default_rng(3)
    pred = rng.integers(0, 3, 200).astype(float)  # massive ties, like painted parcel maps
    truth = rng.normal(size=200)
    for fraction in (0.05, 0.1, 0.3):
        count = int(round(fraction * 200))
        assert metrics.top_fraction_mask(pred, fraction).sum() == count
        # brute force: stable order of decreasing value, first `count` voxels
        top_pred = set(sorted(range(200), key=lambda i: (-pred[i], i))[:count])
        top_truth = set(np.argsort(-truth)[:count])
        expected = 2 * len(top_pred & top_truth) / (2 * count)
        assert metrics.dice_top_fraction(pred, truth, fraction) == pytest.approx(expected)


def test_top_fraction_tiers_are_the_prefixes_of_a_stable_sort():
    """Each tier set == the first round(f * n) voxels of a stable sort by decreasing value."""
    rng = np.random.default_rng(5)
    fractions = [0.05, 0.1, 0.101, 0.3, 0.5, 1.0]  # 0.1 and 0.101 cut at the same count
    for values in (rng.integers(0, 4, 997).astype(float),  # few values: ties at every cut
                   rng.normal(size=997),
                   np.zeros(997)):
        tiers = metrics.top_fraction_tiers(values, fractions)
        order = np.argsort(-values, kind="stable")
        for tier, fraction in enumerate(fractions):
            count = max(1, int(round(fraction * 997)))
            expected = np.zeros(997, dtype=bool)
            expected[order[:count]] = True
            np.testing.assert_array_equal(tiers <= tier, expected)


def test_top_fraction_tiers_reject_bad_fractions_and_nan():
    with pytest.raises(ValueError, match="strictly increasing"):
        metrics.top_fraction_tiers(np.arange(10.0), [0.3, 0.1])
    with pytest.raises(ValueError, match="NaN"):
        metrics.top_fraction_tiers(np.array([1.0, np.nan]), [0.5])
