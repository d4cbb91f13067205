"""Hybrid search's parts: weights as typed, calibrated scores, reciprocal ranks and the fusions."""

from __future__ import annotations

import numpy as np
import pytest

from clip_search.config import HYBRID_WEIGHTS
from clip_search.hybrid import (
    PRODUCT_FLOOR,
    calibrated,
    fuse,
    parse_weights,
    reciprocal_ranks,
)


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


# Two candidates, scores with mean 0 and std 1 over the store: the image part calibrates to 1.0, 0.6 (best z 2),
# the caption part to 0.3, 0.6 (best z 1.2 < the floor 2: divided by 2).
PARTS = {"image": (np.array([2.0, 1.2]), 0.0, 1.0), "caption": (np.array([0.6, 1.2]), 0.0, 1.0)}
EVEN = {"image": 1.0, "caption": 1.0, "keyword": 0.0}


def test_product_fusion_wants_every_part_and_the_sum_does_not() -> None:
    product = fuse(PARTS, EVEN, "product")
    np.testing.assert_allclose(product, np.sqrt([(1.0 + PRODUCT_FLOOR) * (0.3 + PRODUCT_FLOOR), (0.6 + PRODUCT_FLOOR) ** 2]) - PRODUCT_FLOOR)
    assert product.argmax() == 1  # fair in both beats strong in one, weak in the other
    np.testing.assert_allclose(fuse(PARTS, EVEN, "zsum"), [1.3, 1.2])  # the sum lets the image's strength carry row 0


def test_product_fusion_weighs_parts_as_exponents() -> None:
    image_only = fuse({"image": PARTS["image"]}, {"image": 3.0}, "product")
    np.testing.assert_allclose(image_only, [1.0, 0.6])  # one part: its own calibrated score
    heavy = fuse(PARTS, {"image": 3.0, "caption": 1.0}, "product")
    np.testing.assert_allclose(heavy, [(1.05**3 * 0.35) ** 0.25 - 0.05, 0.6])
    assert heavy.argmax() == 0


def test_rrf_and_unknown_fusions() -> None:
    np.testing.assert_allclose(fuse(PARTS, EVEN, "rrf"), [1 / 61 + 1 / 62, 1 / 62 + 1 / 61])
    with pytest.raises(ValueError, match="unknown fusion 'max'"):
        fuse(PARTS, EVEN, "max")
