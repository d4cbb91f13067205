"""The demo world's bars for trained classifiers (issue: shape, colour, count from the demo store's metadata):
heads-only training at least matches zero-shot on every task, and learns count, which zero-shot cannot do."""

from __future__ import annotations

import pytest

from clip_search import config
from clip_search.classifier.pipeline import train_classifier


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> dict:
    report = train_classifier(config.DEMO_STORE, ["shape:shape", "color:color", "count:count"], tmp_path_factory.mktemp("demo") / "classifier")
    found = {e.task.name: e for e in report.evaluation.tasks}
    assert all(e.zero_shot is not None and e.model.rows == 120 for e in found.values())
    return found


def test_heads_only_learns_count_and_colour(figures: dict) -> None:
    assert figures["count"].model.accuracy >= 0.9
    assert figures["count"].zero_shot.accuracy < 0.6  # what training bought: zero-shot cannot count
    assert figures["color"].model.accuracy >= figures["color"].zero_shot.accuracy


def test_heads_only_at_least_matches_zero_shot_on_shape(figures: dict) -> None:
    # Zero-shot shape is at the embedding's ceiling here: what holds it is the blend chosen by cross-validation.
    assert figures["shape"].model.accuracy >= figures["shape"].zero_shot.accuracy
