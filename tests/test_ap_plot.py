"""The per-class AP figure stays legible at COCO's 80 classes: every class once, best first, no label
overlapping another, in several columns."""
import numpy as np
from PIL import Image

import csra
from training.plots import ap_bars_figure, plot_ap_bars


def label_boxes(fig):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    return [[(t.get_text(), t.get_window_extent(renderer)) for t in ax.get_yticklabels()] for ax in fig.axes]


def test_eighty_classes_in_columns_sorted_without_overlap(tmp_path):
    rng = np.random.default_rng(0)
    ap = rng.uniform(5, 99, 80)
    ap[[3, 40]] = np.nan  # classes without a positive image
    fig = ap_bars_figure(list(csra.COCO_CLASSES), ap)
    columns = label_boxes(fig)
    assert len(columns) == 3
    names = [name for col in columns for name, _ in col]
    assert sorted(names) == sorted(csra.COCO_CLASSES)
    expected = [csra.COCO_CLASSES[i] for i in np.argsort(-np.nan_to_num(ap, nan=-1), kind="stable")]
    assert names == expected  # best first, n/a last
    for col in columns:
        boxes = [b for _, b in col]
        for upper, lower in zip(boxes, boxes[1:]):
            assert upper.y0 >= lower.y1 - 0.5  # top to bottom, no overlap
        assert all(t.get_fontsize() >= 7 for t in fig.axes[0].get_yticklabels())
    path = plot_ap_bars(list(csra.COCO_CLASSES), ap, tmp_path / "ap.png")
    width, height = Image.open(path).size
    assert height < 1.5 * width  # a page, not a 3000-pixel strip


def test_few_classes_one_column():
    fig = ap_bars_figure(["a", "b", "c"], [10.0, 90.0, 50.0])
    assert [[n for n, _ in col] for col in label_boxes(fig)] == [["b", "c", "a"]]
