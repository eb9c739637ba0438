"""PNG figures: training curves, per-class AP, PR curves, the pointing game and the deletion/insertion
curves (matplotlib, Agg)."""
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402

from csra.atomic import atomic_path  # noqa: E402

from .metrics import precision_recall_curve  # noqa: E402


def _save(fig, path):
    """Write atomically, so a killed run never leaves half a PNG."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return Path(path)


def plot_loss(history, path):
    """Training loss per iteration (thin) and per epoch (dots), against epochs."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for row in history:
        it = row.get("iteration_losses") or []
        if it:
            x = row["epoch"] - 1 + (np.arange(len(it)) + 1) / len(it)
            ax.plot(x, it, color="tab:blue", alpha=0.35, lw=0.8)
    epochs = [r["epoch"] for r in history]
    ax.plot(epochs, [r["train_loss"] for r in history], "o-", color="tab:blue", label="epoch mean")
    ax.set(xlabel="epoch", ylabel="BCE loss", title="training loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_map(history, path):
    """mAP, CF1 and OF1 on the test split against epochs."""
    rows = [r for r in history if r.get("mAP") is not None]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, style in (("mAP", "o-"), ("CF1", "s--"), ("OF1", "^--")):
        ax.plot([r["epoch"] for r in rows], [r[key] for r in rows], style, label=key)
    title = "test split"
    if rows:
        best = max(rows, key=lambda r: r["mAP"])
        ax.plot([best["epoch"]], [best["mAP"]], "*", ms=14, color="tab:blue")
        title += f": best mAP {best['mAP']:.2f} at epoch {best['epoch']}"
    ax.set(xlabel="epoch", ylabel="percent", title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


AP_ROWS_PER_COLUMN = 30  # more classes than this: the sorted bars continue in another column


def ap_bars_figure(classes, ap, title="per-class AP"):
    """Horizontal AP bars sorted from the best class down, in columns of at most AP_ROWS_PER_COLUMN
    rows, so 80 COCO classes stay legible; classes without a defined AP (no positive) show n/a."""
    ap = np.asarray(ap, dtype=float)
    order = sorted(range(len(classes)), key=lambda i: (np.isnan(ap[i]), -np.nan_to_num(ap[i])))
    cols = max(1, math.ceil(len(classes) / AP_ROWS_PER_COLUMN))
    rows = math.ceil(len(classes) / cols)
    fig, axes = plt.subplots(1, cols, figsize=(4.6 * cols, 0.24 * rows + 1.3), squeeze=False)
    for k, ax in enumerate(axes[0]):
        part = order[k * rows:(k + 1) * rows]
        y = np.arange(len(part))
        ax.barh(y, np.nan_to_num(ap[part]), color="tab:blue")
        ax.set_yticks(y, [classes[i] for i in part], fontsize=8)
        for yy, i in zip(y, part):
            ax.text(0.5 if np.isnan(ap[i]) else min(ap[i], 100) + 0.5, yy,
                    "n/a" if np.isnan(ap[i]) else f"{ap[i]:.1f}", va="center", fontsize=7)
        ax.set(xlim=(0, 112), ylim=(rows - 0.5, -0.5), xlabel="AP (%)")
        ax.tick_params(axis="y", length=0)
    fig.suptitle(f"{title} (mAP {np.nanmean(ap):.2f})" if np.isfinite(ap).any() else title)
    fig.tight_layout()
    return fig


def plot_ap_bars(classes, ap, path, title="per-class AP"):
    return _save(ap_bars_figure(classes, ap, title), path)


def plot_pr_curves(classes, scores, labels, ap, path):
    """One small precision-recall plot per class."""
    cols = min(5, len(classes))
    rows = math.ceil(len(classes) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.3 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= len(classes):
            ax.axis("off")
            continue
        precision, recall = precision_recall_curve(scores[:, k], labels[:, k])
        ax.step(np.r_[0, recall], np.r_[precision[:1] if len(precision) else [1], precision], where="post")
        ax.set(xlim=(0, 1), ylim=(0, 1.02), title=f"{classes[k]} AP {ap[k]:.1f}")
        ax.title.set_fontsize(8)
        ax.tick_params(labelsize=7)
    fig.supxlabel("recall")
    fig.supylabel("precision")
    fig.tight_layout()
    return _save(fig, path)


def plot_pointing(classes, per_class, overall, random_rate, examples, path):
    """Hit rate per class (bars) and a few images with their peak point and boxes.

    per_class: {class: (hits, total)}; examples: [(RGB array, class name, (x, y), boxes, hit)].
    """
    n_ex = len(examples)
    fig = plt.figure(figsize=(12, 4.2 + (2.6 if n_ex else 0)))
    grid = fig.add_gridspec(2 if n_ex else 1, max(n_ex, 1), height_ratios=[1.6, 1] if n_ex else [1])
    ax = fig.add_subplot(grid[0, :])
    names = [c for c in classes if per_class.get(c, (0, 0))[1]]
    rates = [100 * per_class[c][0] / per_class[c][1] for c in names]
    ax.bar(np.arange(len(names)), rates, color="tab:green")
    ax.axhline(overall, color="k", lw=1, label=f"all classes {overall:.1f}%")
    ax.axhline(random_rate, color="tab:red", ls="--", lw=1, label=f"random point {random_rate:.1f}%")
    ax.set_xticks(np.arange(len(names)), names, rotation=45, ha="right")
    ax.set(ylim=(0, 105), ylabel="hit rate (%)", title="pointing game: score-map peak near a box")
    ax.legend(loc="upper right", framealpha=0.9)
    for k, (image, name, (x, y), boxes, hit) in enumerate(examples):
        a = fig.add_subplot(grid[1, k])
        a.imshow(image)
        for xmin, ymin, xmax, ymax in boxes:
            a.add_patch(plt.Rectangle((xmin - 1.5, ymin - 1.5), xmax - xmin + 1, ymax - ymin + 1,
                                      fill=False, ec="yellow", lw=1.5))
        a.plot([x], [y], marker="x", color="lime" if hit else "red", ms=10, mew=3)
        a.set_title(f"{name}: {'hit' if hit else 'miss'}", fontsize=8)
        a.axis("off")
    fig.tight_layout()
    return _save(fig, path)


METHOD_STYLES = {"csra": ("tab:red", "-"), "weights": ("tab:orange", "--"), "gradcam": ("tab:blue", "-"),
                 "centre": ("tab:green", ":"), "random": ("0.4", ":")}


def plot_faithfulness(fractions, rows, path, title=""):
    """Mean deletion and insertion curves per method (csra.faithfulness.summarize rows), AUCs in the legend."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, curve, what in ((axes[0], "deletion", "deleted"), (axes[1], "insertion", "inserted")):
        for row in rows:
            if row[f"{curve}_curve"] is None:
                continue
            colour, style = METHOD_STYLES.get(row["method"], (None, "-"))
            ax.plot(fractions, row[f"{curve}_curve"], style, color=colour, lw=1.8,
                    label=f"{row['method']} (AUC {row[f'{curve}_auc']:.3f})")
        ax.set(xlim=(0, 1), xlabel=f"fraction of pixels {what} (blurred baseline)",
               title=f"{curve} ({'lower' if curve == 'deletion' else 'higher'} AUC is better)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, framealpha=0.9)
    axes[0].set_ylabel("mean class probability")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
