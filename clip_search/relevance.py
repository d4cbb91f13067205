"""How much a result matches, in a form a person reads: each hit's score against that query's scores over the store.

A raw CLIP cosine means little on its own: it shifts with the query (on the demo store "a photo of a dog on a
beach" tops out at 0.65, above the right answers to "a red star", 0.57), so a flat cutoff cannot work. What does
carry meaning is how far a hit stands out from the rest of the store *for that query*. So each query is scored
against a fixed sample of the store's rows (every row of a small store; at most `RELEVANCE_SAMPLE_ROWS` evenly
spaced rows of a large one, read once when the engine opens: any index, exact or approximate, gets the same
figures), and each hit gets

    z = (score - mean) / std           of the query's scores over the sample, and
    relevance = z / max(z_top, min_top_z)   in 0..1: 1 for the best hit of a query that stands out,
    capped at strong × score / floor      for a hit scoring below the store's floor.

Relative to the query's own best hit, because matching results sit close to it and the rest fall away (on the
demo world this separates matching from non-matching results in the top 50 better than z alone: measured in
`clip-search eval`, README). The floor `min_top_z` keeps a query whose best hit does not stand out from the
store from calling anything strong. Bands: strong at `strong` and above, weak at `weak` and above, else none.

z measures only how far a hit stands out, and a query about something no image shows still has hits that stand
out ("a dog on a beach" on a store of shapes: z 2.2, as high as a red star's). So a strong match must also clear an
absolute floor, the store's own: `RELEVANCE_FLOOR_MARGIN` (1.15) times the best score that the text saying nothing
(`RELEVANCE_NULL_TEXT`, the empty text) reaches on any sampled row, computed once when the engine opens
(`null_floor`). A hit must match its image clearly better than saying nothing matches any image of the store; below
that it is weak at best (its relevance is capped at strong × score / floor). The floor applies only when it is
positive. The margin was chosen on calibration scenes (`CALIBRATION_SEED`, `bench/relevance_cutoffs.py`): there every
in-world query's best hit reaches at least 1.35 × the bare best score and no out-of-world query more than 0.66 ×
(1.05 × with the demo models before their retrain); 1.15 costs no recall there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from clip_search.config import RELEVANCE_FLOOR_MARGIN, RELEVANCE_MIN_TOP_Z, RELEVANCE_SAMPLE_ROWS, RELEVANCE_STRONG, RELEVANCE_WEAK

STRONG, WEAK, NONE = "strong", "weak", "none"
BANDS: tuple[str, ...] = (STRONG, WEAK, NONE)
AUTO = "auto"  # the min_score that keeps strong and weak hits


def sample_rows(count: int, limit: int = RELEVANCE_SAMPLE_ROWS) -> np.ndarray:
    """Row numbers of the sample a store's query statistics are taken over: all rows, or `limit` evenly spaced."""
    if count <= limit:
        return np.arange(count, dtype=np.int64)
    return np.linspace(0, count - 1, limit).round().astype(np.int64)


@dataclass(frozen=True)
class Assessment:
    """One query's hits: relevance in 0..1 and band, in hit order."""

    relevance: np.ndarray
    bands: tuple[str, ...]

    @property
    def any_strong(self) -> bool:
        """Whether any hit is a strong match."""
        return STRONG in self.bands


@dataclass(frozen=True)
class RelevanceScale:
    """The store's sample of rows (float32) and the cutoffs of the bands."""

    sample: np.ndarray
    floor: float | None = None  # a strong match's least score (see `null_floor`); None: no floor
    strong: float = RELEVANCE_STRONG
    weak: float = RELEVANCE_WEAK
    min_top_z: float = RELEVANCE_MIN_TOP_Z

    def assess(self, query: np.ndarray, scores: np.ndarray) -> Assessment:
        """Relevance and band of each of a query's hit scores (best first), against its scores over the sample."""
        return self.assess_many(query[None, :], [scores])[0]

    def assess_many(self, queries: np.ndarray, scores: Sequence[np.ndarray]) -> list[Assessment]:
        """`assess` for a batch of queries (one matrix product over the sample)."""
        over_sample = np.asarray(queries, np.float32) @ self.sample.T
        mean, std = over_sample.mean(axis=1), over_sample.std(axis=1)
        out = []
        for q, hit_scores in enumerate(scores):
            z = (np.asarray(hit_scores, np.float64) - mean[q]) / max(float(std[q]), 1e-6)
            relevance = np.clip(z / max(float(z.max(initial=0.0)), self.min_top_z), 0.0, 1.0)
            if self.floor is not None and self.floor > 0:
                raw = np.asarray(hit_scores, np.float64)
                relevance = np.where(raw < self.floor, np.minimum(relevance, self.strong * np.maximum(raw, 0.0) / self.floor), relevance)
            out.append(Assessment(relevance, tuple(self.band(float(r)) for r in relevance)))
        return out

    def band(self, relevance: float) -> str:
        """The band of a relevance value."""
        return STRONG if relevance >= self.strong else WEAK if relevance >= self.weak else NONE


def null_floor(sample: np.ndarray, null: np.ndarray, margin: float = RELEVANCE_FLOOR_MARGIN) -> float:
    """The store's floor for a strong match: `margin` times the best score the text that says nothing (its
    embedding `null`) reaches on the sample's rows (a best score that is not positive is returned as it is)."""
    best = float((np.asarray(sample, np.float32) @ np.asarray(null, np.float32)).max(initial=-1.0))
    return best * margin if best > 0 else best


def parse_min_score(value: str | float | None) -> float | str | None:
    """A min_score as the library takes it: None (keep every hit), "auto" (drop the band none) or a relevance
    in 0..1; anything else is a ValueError naming the value."""
    if value is None or value == AUTO:
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"min_score must be 'auto' or a relevance from 0 to 1, got {value!r}") from None
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"min_score must be 'auto' or a relevance from 0 to 1, got {value!r}")
    return number


def kept(assessment: Assessment, min_score: float | str | None) -> np.ndarray:
    """Which hits pass `min_score` (a parsed one)."""
    if min_score is None:
        return np.ones(len(assessment.bands), dtype=bool)
    if min_score == AUTO:
        return np.array([b != NONE for b in assessment.bands], dtype=bool)
    return assessment.relevance >= float(min_score)
