"""Query vectors built from several parts (text, image, "… but not …"), and top-k over an in-memory matrix."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clip_search.index.exact import select_top_k
from clip_search.vectors import l2_normalise

DEFAULT_NEGATIVE_WEIGHT = 0.5


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
) -> np.ndarray:
    """One unit query vector: the mean of the positive parts (text, image) minus a share of the negative ones."""
    if not positives:
        raise ValueError("a query needs at least one positive part")
    query = np.mean([l2_normalise(p).reshape(-1) for p in positives], axis=0)
    if negatives:
        query = query - negative_weight * np.mean([l2_normalise(n).reshape(-1) for n in negatives], axis=0)
    return l2_normalise(query[None, :])[0]
