"""Exact top-k search by dot product over L2-normalised embeddings, and query vectors built from several parts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clip_search.vectors import l2_normalise

DEFAULT_NEGATIVE_WEIGHT = 0.5


def top_k(matrix: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row numbers and scores of the k rows of `matrix` most similar to `query`, best first.

    `matrix` is N×D float32 (search in float32: numpy's float16 matmul is far slower); `query` is D.
    """
    n = matrix.shape[0]
    k = max(0, min(int(k), n))
    if k == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    scores = matrix @ np.asarray(query, dtype=np.float32)
    if k < n:
        candidates = np.argpartition(-scores, k - 1)[:k]
    else:
        candidates = np.arange(n)
    # Sort the k by score, ties by row number, so results are deterministic.
    order = np.lexsort((candidates, -scores[candidates]))
    best = candidates[order]
    return best.astype(np.int64), scores[best].astype(np.float32)


def combine_query(
    positives: Sequence[np.ndarray],
    negatives: Sequence[np.ndarray] = (),
    *,
    negative_weight: float = DEFAULT_NEGATIVE_WEIGHT,
) -> np.ndarray:
    """One unit query vector: the mean of the positive parts (text, image) minus a share of the negative ones."""
    if not positives:
        raise ValueError("a query needs at least one positive part")
    query = np.mean([l2_normalise(p).reshape(-1) for p in positives], axis=0)
    if negatives:
        query = query - negative_weight * np.mean([l2_normalise(n).reshape(-1) for n in negatives], axis=0)
    return l2_normalise(query[None, :])[0]
