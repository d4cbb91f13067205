"""Query vectors built from several parts (text, image, "… but not …"), and top-k over an in-memory matrix."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clip_search.index.exact import select_top_k
from clip_search.vectors import l2_normalise

DEFAULT_NEGATIVE_WEIGHT = 0.5
DEFAULT_IMAGE_WEIGHT = 0.5  # an image's share of a text + image query (0: text only, 1: image only)


def top_k(matrix: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row numbers and scores of the k rows of an in-memory float32 `matrix` most similar to `query`, best first,
    ties by row number (the selection every index uses)."""
    k = max(0, min(int(k), matrix.shape[0]))
    scores = (matrix @ np.asarray(query, dtype=np.float32))[None, :]
    rows, best = select_top_k(scores, np.arange(matrix.shape[0], dtype=np.int64), k)
    return rows[0], best[0]


def combine_query(
    positives: Sequence[np.ndarray],
    negatives: Sequence[np.ndarray] = (),
    *,
    negative_weight: float = DEFAULT_NEGATIVE_WEIGHT,
    weights: Sequence[float] | None = None,
) -> np.ndarray:
    """One unit query vector: the weighted mean of the positive parts (text, image; equal `weights` by default), with
    the negative parts' mean direction first projected out of it and then subtracted `negative_weight` times.

    Projecting first is what makes "… but not white" work with an image of a white star: the image's own share of
    "white" is removed before the push, however large it is (a plain subtraction left it ranking white stars first).
    """
    if not positives:
        raise ValueError("a query needs at least one positive part")
    parts = [l2_normalise(p).reshape(-1) for p in positives]
    shares = np.ones(len(parts), np.float32) if weights is None else np.asarray(weights, np.float32)
    if shares.shape != (len(parts),) or not np.all(np.isfinite(shares)) or np.any(shares < 0) or shares.sum() <= 0:
        raise ValueError(f"weights must be {len(parts)} non-negative numbers, not all zero, got {list(shares)}")
    query = l2_normalise((shares[:, None] * np.stack(parts)).sum(axis=0)[None, :])[0]
    if negatives:
        away = l2_normalise(np.mean([l2_normalise(n).reshape(-1) for n in negatives], axis=0)[None, :])[0]
        query = query - float(query @ away) * away - negative_weight * away
    return l2_normalise(query[None, :])[0]
