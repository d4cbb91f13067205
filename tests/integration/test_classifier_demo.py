"""The demo world's bars for trained classifiers (issue: shape, colour, count from the demo store's metadata):
heads-only training at least matches zero-shot on every task, and learns count, which zero-shot cannot do."""

from __future__ import annotations

from pathlib import Path

from clip_search import config
from clip_search.classifier.pipeline import train_classifier


def test_heads_only_beats_zero_shot_on_every_task_and_learns_count(tmp_path: Path) -> None:
    report = train_classifier(config.DEMO_STORE, ["shape:shape", "color:color", "count:count"], tmp_path / "demo")
    figures = {e.task.name: e for e in report.evaluation.tasks}
    for name, e in figures.items():
        assert e.zero_shot is not None and e.model.rows == 120
        assert e.model.accuracy >= e.zero_shot.accuracy, f"{name}: {e.model.accuracy:.3f} < zero-shot {e.zero_shot.accuracy:.3f}"
    assert figures["count"].model.accuracy >= 0.9
    assert figures["count"].zero_shot.accuracy < 0.6  # what training bought: zero-shot cannot count
