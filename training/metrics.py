"""Multi-label metrics (mAP, CP, CR, CF1, OP, OR, OF1), in numpy; the pointing game is csra.faithfulness's.

Labels are per image and class: 1 present, 0 absent, -1 ignored (VOC's
"difficult"-only classes). Ignored entries count nowhere: not in AP, not in
precision, not in recall.

Definitions (all figures in percent):

- AP of a class is non-interpolated: the mean, over the class's positive
  images, of the precision among the images scored at least as high as that
  positive. Images with *equal* scores are ranked together, so each positive
  in a tie gets the precision measured after the whole tied group. This does
  not depend on the order of the images, equals scikit-learn's
  ``average_precision_score``, and equals the CSRA authors' evaluation when
  no scores tie (theirs breaks ties in whatever order ``np.argsort`` leaves).
  A class with no positive image has AP NaN and is left out of the mAP.
- At a threshold (score >= 0.5 on sigmoid probabilities): per class
  precision TP / predicted (0 when nothing is predicted, as the authors do)
  and recall TP / positives. CP and CR are their means over classes (CR over
  classes with a positive), CF1 = 2 CP CR / (CP + CR). OP, OR use the counts
  summed over all classes, OF1 = 2 OP OR / (OP + OR). This is the paper's and
  the authors' CF1; mmpretrain 1.x's ``MultiLabelMetric`` reports the mean of
  per-class F1 scores instead, which is a different (usually lower) number.
"""
import numpy as np

METRIC_KEYS = ("mAP", "CP", "CR", "CF1", "OP", "OR", "OF1")  # the summary figures, in report order


def _check(scores, labels):
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 2 or scores.shape != labels.shape:
        raise ValueError(f"scores and labels must both be (N, C); got {scores.shape} and {labels.shape}")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    if not np.isin(labels, (-1, 0, 1)).all():
        raise ValueError("labels must be 1 (present), 0 (absent) or -1 (ignored)")
    return scores, labels.astype(np.int64)


def average_precision(scores, labels):
    """(N, C) scores and {1, 0, -1} labels -> (C,) AP in [0, 1] (NaN for a class with no positive)."""
    scores, labels = _check(scores, labels)
    n, _ = scores.shape
    valid = labels != -1
    positive = labels == 1
    # ignored entries go below every real score, so they never sit above a positive
    ranked = np.where(valid, scores, -np.inf)
    order = np.argsort(-ranked, axis=0, kind="stable")
    s = np.take_along_axis(ranked, order, axis=0)
    pos = np.take_along_axis(positive, order, axis=0)
    tp = np.cumsum(pos, axis=0)
    # index of the last entry of each tie group: ties are ranked together
    idx = np.arange(n)[:, None]
    last_of_group = np.ones_like(s, dtype=bool)
    last_of_group[:-1] = s[:-1] != s[1:]
    group_end = np.where(last_of_group, idx, n)
    group_end = np.minimum.accumulate(group_end[::-1], axis=0)[::-1]
    precision_at_group_end = np.take_along_axis(tp, group_end, axis=0) / (group_end + 1)
    num_pos = positive.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = (precision_at_group_end * pos).sum(axis=0) / num_pos
    return np.where(num_pos > 0, ap, np.nan)


def threshold_counts(scores, labels, threshold=0.5):
    """Per class (TP, predicted, positives) at score >= threshold, ignored entries left out."""
    scores, labels = _check(scores, labels)
    valid = labels != -1
    predicted = (scores >= threshold) & valid
    positive = labels == 1
    return (predicted & positive).sum(0), predicted.sum(0), positive.sum(0)


def _f1(p, r):
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def multilabel_metrics(scores, labels, threshold=0.5):
    """A dict of AP (per class, list), mAP, CP, CR, CF1, OP, OR, OF1, all in percent.

    scores: (N, C) probabilities; labels: (N, C) with 1, 0 or -1 (ignored).
    """
    ap = average_precision(scores, labels)
    tp, predicted, positives = threshold_counts(scores, labels, threshold)
    class_precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
    has_pos = positives > 0
    cp = class_precision.mean()
    cr = (tp[has_pos] / positives[has_pos]).mean() if has_pos.any() else 0.0
    op = tp.sum() / predicted.sum() if predicted.sum() else 0.0
    o_r = tp.sum() / positives.sum() if positives.sum() else 0.0
    with np.errstate(invalid="ignore"):
        m_ap = float(np.nanmean(ap)) if has_pos.any() else float("nan")
    return {
        "AP": [float(a) * 100 for a in ap],
        "mAP": m_ap * 100,
        "CP": float(cp) * 100, "CR": float(cr) * 100, "CF1": _f1(float(cp), float(cr)) * 100,
        "OP": float(op) * 100, "OR": float(o_r) * 100, "OF1": _f1(float(op), float(o_r)) * 100,
    }


def precision_recall_curve(scores, labels):
    """One class's (precision, recall) arrays at every distinct score, ignored entries removed."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    keep = labels != -1
    s, y = scores[keep], labels[keep] == 1
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    tp = np.cumsum(y)
    ends = np.flatnonzero(np.r_[s[:-1] != s[1:], True]) if len(s) else np.array([], int)
    precision = tp[ends] / (ends + 1)
    recall = tp[ends] / max(int(y.sum()), 1)
    return precision, recall
