"""clip_search.demo.evaluate's measures of what caps a bar: the relevance ceiling and the linear probe."""

from __future__ import annotations


import numpy as np
import pytest

from clip_search.demo.captions import label_values
from clip_search.demo.evaluate import probe_accuracy, relevance_precision_recall
from clip_search.demo.scenes import generate_scenes
from clip_search.relevance import RelevanceScale
from clip_search.vectors import l2_normalise


def test_the_relevance_ceiling_is_the_share_of_matches_ranked_above_the_others_count() -> None:
    rng = np.random.default_rng(0)
    matrix = l2_normalise(rng.normal(size=(200, 8)).astype(np.float32))
    queries = l2_normalise(rng.normal(size=(3, 8)).astype(np.float32))
    order = np.argsort(-(queries @ matrix.T), axis=1)
    relevant = np.zeros((3, 200), dtype=bool)
    relevant[0, order[0, :10]] = True  # ranked first: a cut at 10 is perfect
    relevant[1, order[1, [0, 1, 2, 3, 20]]] = True  # 4 of the 5 matches in the top 5
    relevant[2, order[2, 60:65]] = True  # below the top 50: none to find there
    figures = relevance_precision_recall(RelevanceScale(matrix), matrix, queries, relevant, depth=50)
    assert figures["ceiling"] == pytest.approx(round(14 / 15, 4))
    assert set(figures) == {"precision", "recall", "ceiling"}


def test_the_probe_reaches_what_the_embeddings_hold_and_no_more() -> None:
    scenes = generate_scenes(300, seed=3)
    shapes = np.array([label_values("shape").index(s.shape) for s in scenes])
    rng = np.random.default_rng(0)
    telling = l2_normalise(np.eye(16, dtype=np.float32)[shapes] + 0.1 * rng.normal(size=(300, 16)).astype(np.float32))
    blind = l2_normalise(rng.normal(size=(300, 16)).astype(np.float32))
    assert probe_accuracy(telling, scenes, "shape") == 1.0
    assert probe_accuracy(blind, scenes, "shape") < 0.4
