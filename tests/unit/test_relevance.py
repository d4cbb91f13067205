"""clip_search.relevance: a hit's relevance against its query's scores over a sample of the store, and its band."""

from __future__ import annotations

import numpy as np
import pytest

from clip_search.config import RELEVANCE_FLOOR_MARGIN, RELEVANCE_STRONG
from clip_search.relevance import AUTO, NONE, STRONG, WEAK, RelevanceScale, kept, null_floor, parse_min_score, sample_rows
from clip_search.vectors import l2_normalise


def _store(matching: int, rows: int = 400, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random store whose first `matching` rows lean towards the query direction (axis 0)."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(rows, dim)).astype(np.float32)
    vectors[:matching, 0] += 6.0
    query = np.zeros(dim, np.float32)
    query[0] = 1.0
    return l2_normalise(vectors), query


def test_sample_rows_are_all_rows_of_a_small_store_and_evenly_spread_in_a_large_one() -> None:
    np.testing.assert_array_equal(sample_rows(5, limit=8), np.arange(5))
    large = sample_rows(1_000_000, limit=1000)
    assert len(large) == 1000 and large[0] == 0 and large[-1] == 999_999 and np.all(np.diff(large) > 0)


def test_matching_rows_are_strong_and_the_rest_none() -> None:
    store, query = _store(matching=20)
    scale = RelevanceScale(store)
    order = np.argsort(-(store @ query))[:40]
    assessment = scale.assess(query, (store @ query)[order])
    assert assessment.relevance[0] == pytest.approx(1.0) and np.all(np.diff(assessment.relevance) <= 0)
    bands = np.array(assessment.bands)
    assert set(order[bands == STRONG]) <= set(range(20)) and len(order[bands == STRONG]) >= 15
    assert set(order[bands == NONE]).isdisjoint(range(20)) and assessment.any_strong


def test_a_query_that_stands_out_from_nothing_has_no_strong_match() -> None:
    store, query = _store(matching=0)
    scale = RelevanceScale(store, min_top_z=10.0)  # no row of a random store is 10 std above the mean
    order = np.argsort(-(store @ query))[:10]
    assessment = scale.assess(query, (store @ query)[order])
    assert not assessment.any_strong and assessment.relevance.max() < 1.0


def test_assess_many_answers_as_assess_does() -> None:
    store, query = _store(matching=10)
    other = l2_normalise(np.random.default_rng(1).normal(size=(1, store.shape[1])).astype(np.float32))[0]
    scale = RelevanceScale(store)
    scores = [np.sort(store @ q)[::-1][:12] for q in (query, other)]
    together = scale.assess_many(np.stack([query, other]), scores)
    for q, s, got in zip((query, other), scores, together):
        alone = scale.assess(q, s)
        np.testing.assert_allclose(got.relevance, alone.relevance, rtol=1e-6) and got.bands == alone.bands


def test_min_score_is_auto_a_relevance_or_none() -> None:
    assert parse_min_score(None) is None and parse_min_score(AUTO) == AUTO and parse_min_score("0.5") == 0.5
    for bad in ("-0.1", "1.5", "high", float("nan")):
        with pytest.raises(ValueError, match="min_score must be 'auto' or a relevance from 0 to 1"):
            parse_min_score(bad)
    store, query = _store(matching=20)
    assessment = RelevanceScale(store).assess(query, np.sort(store @ query)[::-1][:40])
    assert kept(assessment, None).all()
    np.testing.assert_array_equal(kept(assessment, AUTO), [b in (STRONG, WEAK) for b in assessment.bands])
    np.testing.assert_array_equal(kept(assessment, 0.9), assessment.relevance >= 0.9)


def test_a_hit_below_the_stores_floor_is_not_strong_however_far_it_stands_out() -> None:
    store, query = _store(matching=20)
    scores = np.sort(store @ query)[::-1][:40]
    without = RelevanceScale(store).assess(query, scores)
    floor = float(scores[5])  # the top 5 hits clear it (ties aside), the rest do not
    with_floor = RelevanceScale(store, floor=floor).assess(query, scores)
    strong = np.array(with_floor.bands) == STRONG
    assert without.any_strong and strong[:5].all() and not strong[6:].any()
    np.testing.assert_array_equal(with_floor.relevance[:5], without.relevance[:5])
    assert np.all(with_floor.relevance[6:] < RELEVANCE_STRONG)
    nothing = RelevanceScale(store, floor=float(scores[0]) + 0.1).assess(query, scores)
    assert not nothing.any_strong and nothing.relevance[0] == pytest.approx(RELEVANCE_STRONG * scores[0] / (scores[0] + 0.1))


def test_the_floor_is_a_margin_above_the_best_score_the_text_saying_nothing_reaches_and_a_non_positive_one_is_ignored() -> None:
    store, query = _store(matching=20)
    best = float((store @ query).max())
    assert null_floor(store, query, margin=1.0) == pytest.approx(best)
    assert null_floor(store, query) == pytest.approx(RELEVANCE_FLOOR_MARGIN * best) and RELEVANCE_FLOOR_MARGIN > 1.0
    assert null_floor(np.array([[1.0, 0.0], [0.6, 0.8]]), np.array([-1.0, 0.0]), margin=2.0) == pytest.approx(-0.6)  # not pushed down
    scores = np.sort(store @ query)[::-1][:40]
    assert RelevanceScale(store, floor=-0.2).assess(query, scores).bands == RelevanceScale(store).assess(query, scores).bands
