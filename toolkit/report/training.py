"""Plots of a training run: learning curves, confusion matrix, reliability diagram (PNG).

Drawn like the report's charts (`toolkit.report.charts`): no pyplot state, every text plain
(a class named `$\\bogus$` is not math), names from the data shown with controls escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from toolkit.paths import atomic_write
from toolkit.report.charts import plain_text, png_bytes, shown

#: Up to this many epochs, each has its own tick on the curves' x axis.
MAX_EPOCH_TICKS = 12


def _save(fig: Any, target: Path) -> Path:
    data = png_bytes(fig, dpi=110, bbox_inches="tight")
    atomic_write(target, lambda fh: fh.write(data), binary=True)
    return target


def _figure(ncols: int = 1, width: float = 5.0) -> tuple[Any, Any]:
    from matplotlib.figure import Figure  # no pyplot: no global state, any backend

    fig = Figure(figsize=(width * ncols, 3.8))
    return fig, fig.subplots(1, ncols, squeeze=False)


@plain_text
def plot_curves(history: dict[str, Sequence[float]], target: Path, title: str = "") -> Path:
    """loss vs val_loss and accuracy vs val_accuracy per epoch, the tutorial's two plots."""
    return _save(draw_curves(history, title), target)


def draw_curves(history: dict[str, Sequence[float]], title: str = "") -> Any:
    """The figure of `plot_curves`. Epochs are numbered as history.csv numbers them (its
    `epoch` column when `history` has one, else from 0 as Keras counts), on whole-number
    ticks only."""
    from matplotlib.ticker import MaxNLocator

    fig, axes = _figure(2)
    n = len(history.get("loss") or [])
    epochs = [int(e) for e in history.get("epoch") or range(n)]
    for ax, metric in zip(axes[0], ("loss", "accuracy"), strict=True):
        for key, style in ((metric, "-"), (f"val_{metric}", "--")):
            values = history.get(key) or []
            if len(values):
                ax.plot(epochs[: len(values)], values, style, marker="o", ms=3, label=key)
        if 0 < len(epochs) <= MAX_EPOCH_TICKS:  # few epochs: a tick on each, none between
            ax.set_xticks(epochs)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch (as in history.csv)")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(shown(title))
    return fig


@plain_text
def plot_confusion(matrix: Sequence[Sequence[int]], labels: Sequence[str], target: Path) -> Path:
    """The confusion matrix, counts in the cells, true label on the rows."""
    import numpy as np

    m = np.asarray(matrix)
    fig, axes = _figure(1, width=4.2)
    ax = axes[0][0]
    ax.imshow(m, cmap="Blues")
    ticks = range(len(labels))
    names = [shown(label) for label in labels]
    ax.set_xticks(list(ticks), labels=names)
    ax.set_yticks(list(ticks), labels=names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = m.max() / 2 if m.size else 0
    for i in ticks:
        for j in ticks:
            ax.text(
                j,
                i,
                str(m[i, j]),
                ha="center",
                va="center",
                color="white" if m[i, j] > threshold else "black",
            )
    ax.set_title("confusion matrix (test split)")
    return _save(fig, target)


@plain_text
def plot_reliability(bins: Sequence[dict[str, Any]], ece: float | None, target: Path) -> Path:
    """Accuracy against confidence per bin: on the diagonal, probabilities mean what they say."""
    fig, axes = _figure(1, width=4.2)
    ax = axes[0][0]
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfectly calibrated")
    if bins:
        ax.bar(
            [b["low"] for b in bins],
            [b["accuracy"] for b in bins],
            width=[b["high"] - b["low"] for b in bins],
            align="edge",
            alpha=0.7,
            edgecolor="black",
            label="accuracy in bin",
        )
        ax.plot(
            [b["confidence"] for b in bins],
            [b["accuracy"] for b in bins],
            "o",
            color="C1",
            label="mean confidence",
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence of the predicted class")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability (ECE {ece:.3f})" if ece is not None else "reliability")
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, target)


#: The label audit's galleries show at most this many files, the most suspect first.
MAX_SUSPECTS = 24
#: Files per row of a gallery.
SUSPECTS_PER_ROW = 6
#: Characters of a file name a gallery caption keeps (its end).
CAPTION_CHARS = 24


@plain_text
def plot_gallery(
    captions: Sequence[Sequence[str]], images: Sequence[Any], target: Path, title: str
) -> Path:
    """Images (uint8, as the model saw them) in rows, each above its caption: the file name
    first (its end kept), then the lines given; every name shown with controls escaped."""
    n = min(len(captions), len(images), MAX_SUSPECTS)
    cols = max(1, min(n, SUSPECTS_PER_ROW))
    rows = max(1, -(-n // cols))
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2.1 * cols, 2.5 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        ax, pixels = axes.flat[i], images[i]
        grey = pixels.ndim == 3 and pixels.shape[-1] == 1
        ax.imshow(pixels[..., 0] if grey else pixels, cmap="gray" if grey else None)
        name, *lines = [shown(line) for line in captions[i]]
        if len(name) > CAPTION_CHARS:
            name = "..." + name[3 - CAPTION_CHARS :]
        ax.set_title("\n".join([name, *lines]), fontsize=7)
    if n == 0:
        axes.flat[0].text(0.5, 0.5, "none found", ha="center", va="center")
    fig.suptitle(shown(title))
    return _save(fig, target)
