"""Search by caption, by keyword, or hybrid: a query's image, caption and keyword scores fused into one ranking.

Hybrid search splits the query first: the image encoder gets it without the words that only the text index can
explain (`TextSearch.visual_text`: words some indexed text holds and no sampled image of the store matches above
its relevance floor, `relevance.null_floor`, such as a collection or place name; the caption and keyword modes get
the whole query). Then it takes
the best candidates of each mode (the image index's top rows, the caption vectors' and the BM25 index's best rows,
all among the rows a filter allows), scores every candidate in every mode, and fuses them. Each mode's score is
calibrated first, as `clip_search.relevance` calibrates image scores: a z-score over the store (a sample of rows;
every row for BM25), relative to that mode's best candidate and clipped to 0..1. Then (`fuse`):
- "product" (the default, chosen by measurement: bench/RESULTS.md): the weighted geometric mean of the calibrated
  scores (each plus PRODUCT_FLOOR): a result must match every weighted part; one part's strength does not make up
  for another's miss;
- "zsum": their weighted sum;
- "rrf": reciprocal-rank fusion, the sum of weight / (RRF_K + rank) over modes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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
from clip_search.keywords import without_words
from clip_search.relevance import sample_rows
from clip_search.text_index import TextIndex

MAX_WORDS_SEEN = 100_000  # words whose test result is kept
FUSIONS = ("product", "zsum", "rrf")
PRODUCT_FLOOR = 0.05  # added to each calibrated score before the product: a part at 0 ranks low but keeps the rest's order


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


def fuse(parts: Mapping[str, tuple[np.ndarray, float, float]], weights: Mapping[str, float], fusion: str) -> np.ndarray:
    """One score per candidate from each mode's (scores on the candidates, mean and std over the store), by
    `fusion`; higher is better. "product" gives the weighted geometric mean of the calibrated scores + PRODUCT_FLOOR,
    less PRODUCT_FLOOR (0..1, 1 when every part is its mode's best)."""
    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {fusion!r}: use {', '.join(FUSIONS)}")
    fused = np.zeros(len(next(iter(parts.values()))[0]), np.float64)
    for name, (scores, mean, std) in parts.items():
        if fusion == "rrf":
            fused += weights[name] * reciprocal_ranks(scores)
        elif fusion == "zsum":
            fused += weights[name] * calibrated(scores, mean, std)
        else:
            fused += weights[name] * np.log(PRODUCT_FLOOR + calibrated(scores, mean, std))
    if fusion == "product":
        fused = np.exp(fused / sum(weights[name] for name in parts)) - PRODUCT_FLOOR
    return fused


@dataclass
class TextSearch:
    """Caption, keyword and hybrid search over one store: its image index and vectors, and its text index."""

    text_index: TextIndex
    image_vectors: Callable[[np.ndarray], np.ndarray]  # rows -> their float32 image vectors
    image_search: Callable[[np.ndarray, int, np.ndarray | None], tuple[np.ndarray, np.ndarray]]  # the image index's search
    image_sample: np.ndarray  # the relevance sample: image vectors each query's image scores are calibrated against
    encode_image_texts: Callable[[list[str]], np.ndarray]  # texts -> vectors in the image space (the CLIP text side)
    image_floor: float | None  # the store's relevance floor (`relevance.null_floor`: a margin over the empty text's best score)
    _shown: dict[str, bool] = field(default_factory=dict, repr=False)  # word -> does some image of the store match it

    @cached_property
    def caption_matrix(self) -> np.ndarray:
        """Every row's caption vector in float32 (numpy's float16 products are ~50x slower), read once."""
        return np.asarray(self.text_index.vectors, np.float32)

    @cached_property
    def caption_sample(self) -> np.ndarray:
        """Caption vectors of the same evenly spaced sample of rows."""
        return np.asarray(self.text_index.vectors[sample_rows(self.text_index.info.count)], np.float32)

    def visual_text(self, text: str) -> str:
        """`text` as the image half of hybrid search sees it: without the words that the store's text index holds and
        that no sampled image matches above the store's relevance floor (`relevance.null_floor`), such as a collection or
        place name only the captions give; "" when no word is left. Unchanged without a positive floor."""
        if self.image_floor is None or self.image_floor <= 0:
            return text
        shown = {w: self._shown.get(w) for w in self.text_index.keywords.known_words(text)}
        new = [w for w, known in shown.items() if known is None]
        if new:
            best = (self.encode_image_texts(new) @ self.image_sample.T).max(axis=1)
            fresh = {w: bool(b >= self.image_floor) for w, b in zip(new, best)}
            if len(self._shown) > MAX_WORDS_SEEN:
                self._shown.clear()
            self._shown.update(fresh)
            shown.update(fresh)
        hidden = {w for w, known in shown.items() if not known}
        return without_words(text, hidden) if hidden else text

    def caption_scores(self, caption_query: np.ndarray) -> np.ndarray:
        """Every row's caption score (cosine with the query's caption-model vector)."""
        return self.caption_matrix @ np.asarray(caption_query, np.float32)

    def search(
        self,
        mode: str,
        text: str,
        image_query: np.ndarray | None,
        caption_query: np.ndarray | None,
        top_k: int,
        allowed: np.ndarray | None,
        weights: Mapping[str, float] = HYBRID_WEIGHTS,
        fusion: str = HYBRID_FUSION,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows and scores of the best `top_k` rows in `mode` (caption, keyword or hybrid), among `allowed` rows.
        Hybrid fuses the modes of positive weight: the image one with `image_query` (for the query's `visual_text`;
        None leaves the image out), the caption one with `caption_query`, the keyword one with `text`."""
        if mode == CAPTION_MODE:
            return _best(self.caption_scores(caption_query), top_k, allowed)
        if mode == KEYWORD_MODE:
            return _best(self.text_index.keywords.scores(text), top_k, allowed, positive=True)
        if mode != HYBRID_MODE:
            raise ValueError(f"unknown text search mode {mode!r}")
        use_image = bool(weights.get(IMAGE_MODE)) and image_query is not None
        depth = max(HYBRID_CANDIDATES, HYBRID_CANDIDATE_FACTOR * top_k)
        full: dict[str, np.ndarray] = {}
        if weights.get(CAPTION_MODE):
            full[CAPTION_MODE] = self.caption_scores(caption_query)
        if weights.get(KEYWORD_MODE):
            full[KEYWORD_MODE] = self.text_index.keywords.scores(text)
        pools = [_best(scores, depth, allowed, positive=name == KEYWORD_MODE)[0] for name, scores in full.items()]
        if use_image:
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
        if use_image:
            on_candidates[IMAGE_MODE] = self.image_vectors(candidates) @ image_query
            over_sample = self.image_sample @ image_query
            stats[IMAGE_MODE] = (float(over_sample.mean()), float(over_sample.std()))
        fused = fuse({name: (scores, *stats[name]) for name, scores in on_candidates.items()}, weights, fusion)
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
