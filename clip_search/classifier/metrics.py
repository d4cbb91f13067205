"""Figures of one task's predictions, computed with scikit-learn: accuracy, macro-F1, per-class precision/recall/F1,
ROC-AUC (binary and multi-label), the confusion matrix and calibration (reliability bins and expected error)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clip_search.classifier.tasks import BINARY, Task
from clip_search.config import CLASSIFIER_MULTILABEL_THRESHOLD

RELIABILITY_BINS = 10


@dataclass
class TaskMetrics:
    """One task's figures on one set of rows."""

    task: str
    kind: str
    rows: int
    accuracy: float
    macro_f1: float
    per_class: dict[str, dict[str, float]]
    roc_auc: float | None
    confusion: list[list[int]]
    ece: float
    reliability: dict[str, list[float]] = field(default_factory=dict)  # bin mean confidence, accuracy, count

    def to_json(self) -> dict[str, Any]:
        """The figures as JSON (the classifier folder's metrics.json and `eval-classifier --json`)."""
        return {k: v for k, v in self.__dict__.items()}


def predicted(task: Task, probabilities: np.ndarray) -> np.ndarray:
    """Predicted classes (argmax) or, for a multi-label task, the multi-hot rows over the threshold."""
    if task.multilabel:
        return (probabilities >= CLASSIFIER_MULTILABEL_THRESHOLD).astype(np.int64)
    return probabilities.argmax(axis=1)


def task_metrics(task: Task, truth: np.ndarray, probabilities: np.ndarray) -> TaskMetrics:
    """Figures of `probabilities` (rows × labels) against `truth` (class indices, or multi-hot rows).

    Multi-label accuracy is exact-match (every label right); its confusion matrix counts, for each true label,
    the labels predicted with it.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    classes = list(range(len(task.labels)))
    pred = predicted(task, probabilities)
    truth = truth.astype(np.int64)
    precision, recall, f1, support = precision_recall_fscore_support(truth, pred, labels=classes, zero_division=0)
    per_class = {
        label: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
        for i, label in enumerate(task.labels)
    }
    if task.multilabel:
        confusion = (truth.T @ pred).tolist()
        confidence, correct = probabilities.ravel(), truth.ravel()
    else:
        confusion = confusion_matrix(truth, pred, labels=classes).tolist()
        confidence, correct = probabilities.max(axis=1), (pred == truth).astype(np.int64)
    reliability, ece = reliability_bins(confidence, correct)
    return TaskMetrics(
        task.name, task.kind, int(len(truth)),
        float(accuracy_score(truth, pred)),
        float(f1_score(truth, pred, labels=classes, average="macro", zero_division=0)),
        per_class, roc_auc(task, truth, probabilities), confusion, ece, reliability,
    )


def roc_auc(task: Task, truth: np.ndarray, probabilities: np.ndarray) -> float | None:
    """ROC-AUC for a binary task (the second label as positive) or macro over a multi-label task's labels that have
    both outcomes in `truth`; None for multi-class tasks or when it is undefined."""
    from sklearn.metrics import roc_auc_score

    if task.kind == BINARY:
        return float(roc_auc_score(truth, probabilities[:, 1])) if len(np.unique(truth)) == 2 else None
    if task.multilabel:
        both = [j for j in range(truth.shape[1]) if 0 < truth[:, j].sum() < len(truth)]
        return float(roc_auc_score(truth[:, both], probabilities[:, both], average="macro")) if both else None
    return None


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, bins: int = RELIABILITY_BINS) -> tuple[dict[str, list[float]], float]:
    """Reliability-diagram bins (mean confidence, observed accuracy, rows per non-empty bin) and the expected
    calibration error: the rows-weighted mean gap between the two."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    out: dict[str, list[float]] = {"confidence": [], "accuracy": [], "count": []}
    ece = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            conf, acc = float(confidence[members].mean()), float(correct[members].mean())
            out["confidence"].append(conf)
            out["accuracy"].append(acc)
            out["count"].append(float(members.sum()))
            ece += members.sum() / len(confidence) * abs(conf - acc)
    return out, float(ece)
