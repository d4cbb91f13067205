"""Classifiers trained on a store's labels: tasks and labels (`tasks`), the networks (`model`), what trains
(`freezing`), the training loop (`training`), each head's blend with zero-shot (`blending`), figures and plots
(`metrics`, `plots`, `evaluation`), the model-repo folder and its card (`repo`, `card`, `publish`), and
`train_classifier` (`pipeline`).

`Classifier` (loading and predicting) imports no torch; training does, on first use.
"""

from __future__ import annotations

from typing import Any

from clip_search.classifier.repo import Classifier, ClassifierConfig, Prediction
from clip_search.classifier.tasks import Task, TaskSpec

__all__ = ["Classifier", "ClassifierConfig", "Prediction", "Task", "TaskSpec", "TrainSettings", "evaluate_classifier", "train_classifier"]


def __getattr__(name: str) -> Any:
    """Training and evaluation on first use, so that loading a classifier does not import torch."""
    if name == "train_classifier":
        from clip_search.classifier.pipeline import train_classifier

        return train_classifier
    if name == "TrainSettings":
        from clip_search.classifier.training import TrainSettings

        return TrainSettings
    if name == "evaluate_classifier":
        from clip_search.classifier.evaluation import evaluate_classifier

        return evaluate_classifier
    raise AttributeError(name)
