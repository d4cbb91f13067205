"""Search by caption, by keyword, or hybrid: a query's image, caption and keyword scores fused into one ranking.

Hybrid search takes the best candidates of each mode (the image index's top rows, the caption vectors' and the BM25
index's best rows, all among the rows a filter allows), scores every candidate in every mode, and fuses them:
- "zsum" (the default, chosen by measurement: bench/RESULTS.md): each mode's score as a z-score over the store
  (a sample of rows; every row for BM25), relative to that mode's best candidate and clipped to 0..1, the way
  `clip_search.relevance` calibrates image scores; then a weighted sum. A mode whose best candidate does not stand
  out (a query word no caption has) adds little.
- "rrf": reciprocal-rank fusion, the sum of weight / (RRF_K + rank) over modes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from clip_search.config import (
    CAPTION_MODE,
    HYBRID_CANDIDATE_FACTOR,
    HYBRID_CANDIDATES,
    HYBRID_FUSION,
    HYBRID_MODE,
    HYBRID_WEIGHTS,
    IMAGE_MODE,
    KEYWORD_MODE,
    RELEVANCE_MIN_TOP_Z,
    RRF_K,
)
from clip_search.index.exact import select_top_k
from clip_search.relevance import sample_rows
from clip_search.text_index import TextIndex

FUSIONS = ("zsum", "rrf")


def parse_weights(weights: Mapping[str, float] | str | None) -> dict[str, float]:
    """Per-mode weights of hybrid search: a mapping, or text such as "image=1,caption=0.5,keyword=1"; modes not
    named keep their default. A bad one is a ValueError naming it."""
    if weights is None:
        return dict(HYBRID_WEIGHTS)
    given: dict[str, object] = {}
    if isinstance(weights, str):
        for part in filter(None, (p.strip() for p in weights.split(","))):
            name, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"weights must read MODE=NUMBER,..., got {part!r}")
            given[name.strip()] = value.strip()
    else:
        given = dict(weights)
    out = dict(HYBRID_WEIGHTS)
    for name, value in given.items():
        if name not in HYBRID_WEIGHTS:
            raise ValueError(f"no mode {name!r} to weigh: use {', '.join(HYBRID_WEIGHTS)}")
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(f"the weight of {name} must be a number, got {value!r}") from None
        if not 0.0 <= number < float("inf"):
            raise ValueError(f"the weight of {name} must be zero or more, got {value!r}")
        out[name] = number
    if not any(out.values()):
        raise ValueError("at least one weight must be above zero")
    return out


def calibrated(scores: np.ndarray, mean: float, std: float, floor: float = RELEVANCE_MIN_TOP_Z) -> np.ndarray:
    """Scores as z-scores relative to the best one (at least `floor`), clipped to 0..1."""
    z = (np.asarray(scores, np.float64) - mean) / max(std, 1e-6)
    return np.clip(z / max(float(z.max(initial=0.0)), floor), 0.0, 1.0)


def reciprocal_ranks(scores: np.ndarray, k: int = RRF_K) -> np.ndarray:
    """1 / (k + rank) of each score among `scores` (rank 1 is the best; ties by position)."""
    order = np.argsort(-scores, kind="stable")
    ranks = np.empty(len(scores), np.float64)
    ranks[order] = np.arange(1, len(scores) + 1)
    return 1.0 / (k + ranks)


@dataclass
class TextSearch:
    """Caption, keyword and hybrid search over one store: its image index and vectors, and its text index."""

    text_index: TextIndex
    image_vectors: Callable[[np.ndarray], np.ndarray]  # rows -> their float32 image vectors
    image_search: Callable[[np.ndarray, int, np.ndarray | None], tuple[np.ndarray, np.ndarray]]  # the image index's search
    image_sample: np.ndarray  # the relevance sample: image vectors each query's image scores are calibrated against

    @cached_property
    def caption_matrix(self) -> np.ndarray:
        """Every row's caption vector in float32 (numpy's float16 products are ~50x slower), read once."""
        return np.asarray(self.text_index.vectors, np.float32)

    @cached_property
    def caption_sample(self) -> np.ndarray:
        """Caption vectors of the same evenly spaced sample of rows."""
        return np.asarray(self.text_index.vectors[sample_rows(self.text_index.info.count)], np.float32)

    def caption_scores(self, caption_query: np.ndarray) -> np.ndarray:
        """Every row's caption score (cosine with the query's caption-model vector)."""
        return self.caption_matrix @ np.asarray(caption_query, np.float32)

    def search(
        self,
        mode: str,
        text: str,
        image_query: np.ndarray,
        caption_query: np.ndarray | None,
        top_k: int,
        allowed: np.ndarray | None,
        weights: Mapping[str, float] = HYBRID_WEIGHTS,
        fusion: str = HYBRID_FUSION,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows and scores of the best `top_k` rows in `mode` (caption, keyword or hybrid), among `allowed` rows."""
        if mode == CAPTION_MODE:
            return _best(self.caption_scores(caption_query), top_k, allowed)
        if mode == KEYWORD_MODE:
            return _best(self.text_index.keywords.scores(text), top_k, allowed, positive=True)
        if mode != HYBRID_MODE:
            raise ValueError(f"unknown text search mode {mode!r}")
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {fusion!r}: use {', '.join(FUSIONS)}")
        depth = max(HYBRID_CANDIDATES, HYBRID_CANDIDATE_FACTOR * top_k)
        full: dict[str, np.ndarray] = {}
        if weights.get(CAPTION_MODE):
            full[CAPTION_MODE] = self.caption_scores(caption_query)
        if weights.get(KEYWORD_MODE):
            full[KEYWORD_MODE] = self.text_index.keywords.scores(text)
        pools = [_best(scores, depth, allowed, positive=name == KEYWORD_MODE)[0] for name, scores in full.items()]
        if weights.get(IMAGE_MODE):
            found, _ = self.image_search(image_query[None, :], depth, allowed)
            pools.append(found[0][found[0] >= 0])
        candidates = np.unique(np.concatenate(pools)) if pools else np.zeros(0, np.int64)
        if not len(candidates):
            return candidates, np.zeros(0, np.float32)
        on_candidates = {name: scores[candidates] for name, scores in full.items()}
        stats = {name: (float(scores.mean()), float(scores.std())) for name, scores in full.items()}
        if CAPTION_MODE in full:
            over_sample = self.caption_sample @ caption_query
            stats[CAPTION_MODE] = (float(over_sample.mean()), float(over_sample.std()))
        if weights.get(IMAGE_MODE):
            on_candidates[IMAGE_MODE] = self.image_vectors(candidates) @ image_query
            over_sample = self.image_sample @ image_query
            stats[IMAGE_MODE] = (float(over_sample.mean()), float(over_sample.std()))
        fused = np.zeros(len(candidates), np.float64)
        for name, scores in on_candidates.items():
            part = calibrated(scores, *stats[name]) if fusion == "zsum" else reciprocal_ranks(scores)
            fused += weights[name] * part
        rows, best = select_top_k(fused[None, :].astype(np.float32), candidates, min(top_k, len(candidates)))
        return rows[0], best[0]


def _best(scores: np.ndarray, k: int, allowed: np.ndarray | None, positive: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The k best rows of a score per row, among `allowed` rows (and above zero when `positive`), best first."""
    scores = np.asarray(scores, np.float32)
    keep = np.ones(len(scores), bool) if allowed is None else allowed.copy()
    if positive:
        keep &= scores > 0
    rows = np.flatnonzero(keep)
    found, best = select_top_k(scores[rows][None, :], rows, min(k, len(rows)))
    return found[0], best[0]
