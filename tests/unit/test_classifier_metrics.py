"""Classifier figures (clip_search.classifier.metrics) against scikit-learn and by hand, on fixed predictions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support, roc_auc_score

from clip_search.classifier.metrics import reliability_bins, task_metrics
from clip_search.classifier.tasks import BINARY, MULTICLASS, MULTILABEL, Task

PROBS = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1]])
TRUTH = np.array([0, 1, 2, 1, 2, 2])


def test_multiclass_figures_equal_scikit_learn_and_hand_counts() -> None:
    m = task_metrics(Task("t", "c", MULTICLASS, ("a", "b", "c")), TRUTH, PROBS)
    pred = PROBS.argmax(1)  # [0, 1, 2, 0, 2, 0]
    assert m.accuracy == pytest.approx(4 / 6) == pytest.approx(accuracy_score(TRUTH, pred))
    assert m.macro_f1 == pytest.approx(f1_score(TRUTH, pred, average="macro"))
    p, r, f, s = precision_recall_fscore_support(TRUTH, pred, labels=[0, 1, 2], zero_division=0)
    assert [m.per_class[k]["precision"] for k in "abc"] == pytest.approx(p)
    assert m.per_class["a"]["precision"] == pytest.approx(1 / 3) and m.per_class["c"]["recall"] == pytest.approx(2 / 3)
    assert m.confusion == confusion_matrix(TRUTH, pred).tolist() == [[1, 0, 0], [1, 1, 0], [1, 0, 2]]
    assert m.roc_auc is None


def test_binary_roc_auc_uses_the_second_label_as_positive() -> None:
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.35, 0.65], [0.2, 0.8]])
    truth = np.array([0, 0, 1, 1])
    m = task_metrics(Task("t", "c", BINARY, ("no", "yes")), truth, probs)
    assert m.roc_auc == pytest.approx(roc_auc_score(truth, probs[:, 1])) == pytest.approx(1.0)
    assert m.accuracy == pytest.approx(0.75)


def test_multilabel_figures_are_exact_match_accuracy_and_macro_over_labels() -> None:
    truth = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    probs = np.array([[0.9, 0.2, 0.6], [0.1, 0.7, 0.6], [0.8, 0.3, 0.1], [0.2, 0.1, 0.9]])
    m = task_metrics(Task("t", "c", MULTILABEL, ("x", "y", "z")), truth, probs)
    pred = (probs >= 0.5).astype(int)
    assert m.accuracy == pytest.approx(accuracy_score(truth, pred)) == pytest.approx(0.5)
    assert m.macro_f1 == pytest.approx(f1_score(truth, pred, average="macro"))
    assert m.roc_auc == pytest.approx(roc_auc_score(truth, probs, average="macro"))
    assert m.confusion == (truth.T @ pred).tolist()


def test_reliability_bins_and_calibration_error() -> None:
    confidence = np.array([0.95, 0.95, 0.55, 0.55])
    correct = np.array([1, 1, 1, 0])
    bins, ece = reliability_bins(confidence, correct)
    assert bins["count"] == [2.0, 2.0] and bins["accuracy"] == [0.5, 1.0]
    assert ece == pytest.approx(0.5 * 0.05 + 0.5 * 0.05)
