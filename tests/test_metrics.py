"""training.metrics against brute-force loops written here, with ties and ignored labels."""
import numpy as np
import pytest

from training.metrics import average_precision, multilabel_metrics, precision_recall_curve


def brute_force_ap(scores, labels):
    """Mean over positives of: positives / valid images among those scored >= that positive."""
    aps = []
    for c in range(scores.shape[1]):
        valid = [i for i in range(len(scores)) if labels[i, c] != -1]
        positives = [i for i in valid if labels[i, c] == 1]
        if not positives:
            aps.append(float("nan"))
            continue
        precisions = []
        for i in positives:
            above = [j for j in valid if scores[j, c] >= scores[i, c]]
            precisions.append(sum(labels[j, c] == 1 for j in above) / len(above))
        aps.append(sum(precisions) / len(precisions))
    return np.array(aps)


def brute_force_threshold_metrics(scores, labels, threshold=0.5):
    n, num_classes = scores.shape
    tp, pred, pos = [0] * num_classes, [0] * num_classes, [0] * num_classes
    for i in range(n):
        for c in range(num_classes):
            if labels[i, c] == -1:
                continue
            p = scores[i, c] >= threshold
            pred[c] += p
            pos[c] += labels[i, c] == 1
            tp[c] += p and labels[i, c] == 1
    cp = sum((tp[c] / pred[c]) if pred[c] else 0.0 for c in range(num_classes)) / num_classes
    with_pos = [c for c in range(num_classes) if pos[c]]
    cr = sum(tp[c] / pos[c] for c in with_pos) / len(with_pos)
    op, o_r = sum(tp) / sum(pred), sum(tp) / sum(pos)
    return {"CP": 100 * cp, "CR": 100 * cr, "CF1": 100 * 2 * cp * cr / (cp + cr),
            "OP": 100 * op, "OR": 100 * o_r, "OF1": 100 * 2 * op * o_r / (op + o_r)}


def random_problem(seed, n=60, c=7, decimals=1):
    rng = np.random.default_rng(seed)
    labels = rng.choice([1, 0, -1], size=(n, c), p=[0.35, 0.55, 0.10])
    # scores that follow the labels loosely, rounded so that many tie
    scores = np.clip(rng.normal(0.35 + 0.3 * (labels == 1), 0.25), 0, 1).round(decimals)
    return scores, labels


@pytest.mark.parametrize("seed", range(6))
def test_ap_matches_brute_force_with_ties_and_ignored_labels(seed):
    scores, labels = random_problem(seed)
    assert len(np.unique(scores)) < scores.size / 4  # there are plenty of ties
    expected = brute_force_ap(scores, labels)
    np.testing.assert_allclose(average_precision(scores, labels), expected, rtol=1e-12)
    m = multilabel_metrics(scores, labels)
    np.testing.assert_allclose(m["AP"], 100 * expected, rtol=1e-12)
    assert m["mAP"] == pytest.approx(100 * expected.mean(), rel=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_threshold_metrics_match_brute_force(seed):
    scores, labels = random_problem(seed, decimals=2)
    got = multilabel_metrics(scores, labels, threshold=0.5)
    for key, value in brute_force_threshold_metrics(scores, labels, 0.5).items():
        assert got[key] == pytest.approx(value, rel=1e-12), key


def test_without_ties_ap_is_the_authors_ranked_precision():
    rng = np.random.default_rng(3)
    scores = rng.random((50, 4))
    labels = (rng.random((50, 4)) < 0.4).astype(int)
    labels[0] = 1  # every class has a positive
    for c in range(4):  # the authors' loop: sort descending, precision at each positive's rank
        order = np.argsort(-scores[:, c])
        hits, total = 0, 0.0
        for rank, i in enumerate(order, start=1):
            if labels[i, c] == 1:
                hits += 1
                total += hits / rank
        assert average_precision(scores, labels)[c] == pytest.approx(total / hits, rel=1e-12)


def test_ties_make_ap_independent_of_image_order():
    scores, labels = random_problem(11)
    perm = np.random.default_rng(0).permutation(len(scores))
    np.testing.assert_array_equal(average_precision(scores, labels), average_precision(scores[perm], labels[perm]))


def test_ignored_entries_count_nowhere():
    scores, labels = random_problem(5, decimals=3)
    changed = scores.copy()
    changed[labels == -1] = np.random.default_rng(1).random((labels == -1).sum())
    a, b = multilabel_metrics(scores, labels), multilabel_metrics(changed, labels)
    assert a == b
    # dropping the ignored entries of one class by hand gives the same AP for that class
    keep = labels[:, 2] != -1
    assert average_precision(scores[keep][:, [2]], labels[keep][:, [2]])[0] == pytest.approx(
        average_precision(scores, labels)[2])


def test_class_without_positives_is_left_out_of_map():
    scores = np.array([[0.9, 0.2], [0.1, 0.8], [0.4, 0.3]])
    labels = np.array([[1, 0], [0, -1], [0, 0]])
    m = multilabel_metrics(scores, labels)
    assert m["AP"][0] == 100.0 and np.isnan(m["AP"][1]) and m["mAP"] == 100.0
    # class 1 has no prediction >= 0.5 among valid entries: precision 0 as the authors count it
    assert m["CP"] == pytest.approx(50.0) and m["CR"] == pytest.approx(100.0)


def test_cf1_is_from_cp_and_cr_not_the_mean_of_class_f1():
    scores = np.array([[0.9, 0.9], [0.9, 0.1], [0.1, 0.1], [0.9, 0.1]])
    labels = np.array([[1, 1], [0, 1], [0, 1], [1, 0]])
    m = multilabel_metrics(scores, labels)
    # class 0: P 2/3 R 1; class 1: P 1 R 1/3
    cp, cr = (2 / 3 + 1) / 2, (1 + 1 / 3) / 2
    assert m["CF1"] == pytest.approx(100 * 2 * cp * cr / (cp + cr))
    mean_class_f1 = (2 * (2 / 3) / (2 / 3 + 1) + 2 * (1 / 3) / (1 + 1 / 3)) / 2
    assert abs(m["CF1"] - 100 * mean_class_f1) > 5


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="labels must be"):
        multilabel_metrics(np.zeros((2, 2)), np.array([[2, 0], [0, 1]]))
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        multilabel_metrics(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        multilabel_metrics(np.array([[np.nan]]), np.array([[1]]))


def test_pr_curve_end_points():
    scores = np.array([0.9, 0.8, 0.8, 0.3, 0.2, 0.7])
    labels = np.array([1, 0, 1, 1, 0, -1])
    precision, recall = precision_recall_curve(scores, labels)
    np.testing.assert_allclose(recall, [1 / 3, 2 / 3, 1, 1])
    np.testing.assert_allclose(precision, [1, 2 / 3, 3 / 4, 3 / 5])
