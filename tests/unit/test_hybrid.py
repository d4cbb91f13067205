"""Hybrid search's parts: weights as typed, calibrated scores and reciprocal ranks."""

from __future__ import annotations

import numpy as np
import pytest

from clip_search.config import HYBRID_WEIGHTS
from clip_search.hybrid import calibrated, parse_weights, reciprocal_ranks


def test_weights_from_text_mapping_or_defaults() -> None:
    assert parse_weights(None) == HYBRID_WEIGHTS
    assert parse_weights("image=1, keyword=0.5") == {**HYBRID_WEIGHTS, "image": 1.0, "keyword": 0.5}
    assert parse_weights({"caption": 3}) == {**HYBRID_WEIGHTS, "caption": 3.0}


@pytest.mark.parametrize(
    "bad, says",
    [("pixels=1", "no mode 'pixels'"), ("image", "MODE=NUMBER"), ("image=x", "must be a number"), ("image=-1", "zero or more"),
     ("image=nan", "zero or more"), ("image=0,caption=0,keyword=0", "above zero")],
)
def test_bad_weights_are_named(bad: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_weights(bad)


def test_calibrated_is_relative_to_the_best_and_clipped() -> None:
    out = calibrated(np.array([3.0, 2.0, 1.0, -5.0]), mean=1.0, std=0.5)  # z = 4, 2, 0, -12
    np.testing.assert_allclose(out, [1.0, 0.5, 0.0, 0.0])
    flat = calibrated(np.array([1.2, 1.1]), mean=1.0, std=1.0)  # best z 0.2 < floor 2: nothing stands out
    assert flat.max() == pytest.approx(0.1)


def test_reciprocal_ranks_follow_the_order() -> None:
    np.testing.assert_allclose(reciprocal_ranks(np.array([0.1, 0.9, 0.5]), k=60), [1 / 63, 1 / 61, 1 / 62])
