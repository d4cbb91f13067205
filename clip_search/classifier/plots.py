"""The evaluation's pictures, drawn with matplotlib (no pyplot state, no display): a confusion matrix and a
reliability (calibration) diagram per task, written as PNG."""

from __future__ import annotations

from pathlib import Path

from clip_search.classifier.metrics import TaskMetrics


def confusion_plot(metrics: TaskMetrics, labels: tuple[str, ...], path: Path) -> Path:
    """The task's confusion matrix (true label by row, predicted by column) as a PNG."""
    import numpy as np
    from matplotlib.figure import Figure
    from sklearn.metrics import ConfusionMatrixDisplay

    size = 2.5 + 0.45 * len(labels)
    fig = Figure(figsize=(size, size), dpi=100)
    ax = fig.add_subplot()
    ConfusionMatrixDisplay(np.array(metrics.confusion), display_labels=list(labels)).plot(ax=ax, colorbar=False, xticks_rotation=45)
    title = "labels predicted with each true label" if metrics.kind == "multilabel" else "confusion matrix"
    ax.set_title(f"{metrics.task}: {title} (test, {metrics.rows} rows)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    return path


def reliability_plot(metrics: TaskMetrics, path: Path) -> Path:
    """The task's reliability diagram: observed accuracy against mean confidence per bin, and the diagonal."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 4), dpi=100)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    ax.plot(metrics.reliability["confidence"], metrics.reliability["accuracy"], marker="o", label="classifier")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence" if metrics.kind != "multilabel" else "probability of a label")
    ax.set_ylabel("accuracy" if metrics.kind != "multilabel" else "share where the label holds")
    ax.set_title(f"{metrics.task}: reliability (ECE {metrics.ece:.3f})", fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path
