"""Exact top-k against a brute-force reference, query composition, and zero-shot probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from clip_search.classify import embed_labels, parse_labels, zero_shot_probabilities
from clip_search.vectors import l2_normalise
from clip_search.errors import QueryError
from clip_search.search import combine_query, top_k


def brute_force(matrix: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    scores = [(float(row @ query), i) for i, row in enumerate(matrix)]
    return [i for _, i in sorted(scores, key=lambda s: (-s[0], s[1]))[:k]]


@pytest.mark.parametrize("n, k", [(1000, 10), (50, 50), (7, 20), (300, 1)])
def test_top_k_matches_brute_force(n: int, k: int) -> None:
    rng = np.random.default_rng(n)
    matrix = l2_normalise(rng.normal(size=(n, 32)))
    query = l2_normalise(rng.normal(size=(1, 32)))[0]
    rows, scores = top_k(matrix, query, k)
    assert rows.tolist() == brute_force(matrix, query, k)
    np.testing.assert_allclose(scores, matrix[rows] @ query, rtol=1e-6)
    assert np.all(np.diff(scores) <= 0)


def test_top_k_breaks_ties_by_row_and_handles_zero() -> None:
    matrix = np.ones((6, 4), np.float32) / 2
    rows, _ = top_k(matrix, np.array([1, 0, 0, 0], np.float32), 3)
    assert rows.tolist() == [0, 1, 2]
    assert top_k(matrix, np.ones(4, np.float32), 0)[0].size == 0


def test_negative_pushes_results_away() -> None:
    cat, dog = np.eye(4, dtype=np.float32)[0], np.eye(4, dtype=np.float32)[1]
    matrix = l2_normalise(np.array([[1, 0.1, 0, 0], [0.9, -0.5, 0, 0], [0, 1, 0, 0]], np.float32))
    assert top_k(matrix, combine_query([cat]), 1)[0].tolist() == [0]
    assert top_k(matrix, combine_query([cat], [dog]), 1)[0].tolist() == [1]
    q = combine_query([cat, dog])
    assert np.isclose(np.linalg.norm(q), 1) and np.isclose(q[0], q[1])


def test_parse_labels() -> None:
    assert parse_labels(" cat, dog;car \n  cat ,, big   truck") == ["cat", "dog", "car", "big truck"]
    assert parse_labels("猫，狗、鸟") == ["猫", "狗", "鸟"]
    assert parse_labels("  , ;") == []


def test_zero_shot_probabilities_sum_to_one_and_follow_similarity() -> None:
    images = l2_normalise(np.array([[1, 0.1, 0], [0, 1, 0.2]], np.float32))
    labels = np.eye(3, dtype=np.float32)
    probs = zero_shot_probabilities(images, labels, logit_scale=100.0)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-6)
    assert probs.argmax(axis=1).tolist() == [0, 1]
    softer = zero_shot_probabilities(images, labels, logit_scale=1.0)
    assert softer.max() < probs.max()


def test_embed_labels_ensembles_templates() -> None:
    seen: list[str] = []

    def encode(texts):
        seen.extend(texts)
        return l2_normalise(np.array([[len(t), 1.0, t.count("cat")] for t in texts], np.float32))

    vectors = embed_labels(["cat", "dog"], encode, templates=("a {}.", "a photo of a {}."))
    assert seen == ["a cat.", "a photo of a cat.", "a dog.", "a photo of a dog."]
    assert vectors.shape == (2, 3)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, rtol=1e-6)
    with pytest.raises(QueryError, match="no labels"):
        embed_labels([], encode)
