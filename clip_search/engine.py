"""The query side in one object: a store, the encoders that match it, search and zero-shot classification.

The CLI, the app and the benchmarks all query through `SearchEngine`; none of them holds search logic.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from clip_search.classify import embed_labels, zero_shot_probabilities
from clip_search.clip_model import ClipEncoder
from clip_search.config import DEFAULT_TEMPLATES, DEFAULT_TOP_K, DEFAULT_TOP_LABELS
from clip_search.errors import QueryError, StoreError
from clip_search.search import DEFAULT_NEGATIVE_WEIGHT, combine_query
from clip_search.search import top_k as exact_top_k
from clip_search.store import EmbeddingStore
from clip_search.text_student import StudentTextEncoder

log = logging.getLogger(__name__)

CLIP_TEXT = "clip"  # the text_model value that asks for CLIP's own text encoder
CAPTION_COLUMNS = ("caption", "text", "description", "title")


class TextEncoder(Protocol):
    """Anything that embeds text into the store's space."""

    @property
    def dim(self) -> int: ...

    def encode_texts(self, texts: Sequence[str], batch_size: int = ...) -> np.ndarray: ...


@dataclass(frozen=True)
class Hit:
    """One result: where it is in the store, how well it matched, and its top zero-shot labels."""

    rank: int
    row: int
    id: str
    score: float
    image: str
    caption: str | None
    metadata: dict[str, Any]
    labels: tuple[tuple[str, float], ...] = ()


@dataclass
class SearchResult:
    """The hits of one query, the labels they were classified against, and where the time went (ms)."""

    hits: list[Hit]
    labels: list[str] = field(default_factory=list)
    probabilities: np.ndarray | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)


def resolve_model_ref(ref: str, store_root: Path) -> str:
    """A model named in a manifest: a path relative to the store if one exists there, else the id as written."""
    candidate = store_root / ref
    return str(candidate.resolve()) if not Path(ref).is_absolute() and candidate.exists() else ref


def _same_model(a: str, b: str) -> bool:
    if a == b:
        return True
    pa_, pb = Path(a), Path(b)
    return pa_.exists() and pb.exists() and pa_.resolve() == pb.resolve()


class SearchEngine:
    """Searches one store with the encoders its manifest names (or compatible ones the caller names)."""

    def __init__(self, store: EmbeddingStore, clip: ClipEncoder, text_encoder: TextEncoder | None = None) -> None:
        store.check_encoder(clip.dim, f"CLIP model {clip.model_id}")
        self.store = store
        self.clip = clip
        self.text_encoder: TextEncoder = text_encoder or clip
        if text_encoder is not None:
            store.check_encoder(text_encoder.dim, f"text model {getattr(text_encoder, 'model_id', '?')}")
        self.logit_scale = clip.logit_scale
        self._label_cache = lru_cache(maxsize=64)(self._embed_labels)
        self._dataset: Any = None  # opened on first need, for dataset stores whose images are bytes

    @classmethod
    def load(
        cls,
        store_path: str | Path,
        *,
        model: str | None = None,
        text_model: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
    ) -> SearchEngine:
        """Open a store and load its models: the manifest's CLIP and student unless `model`/`text_model` name others."""
        store = EmbeddingStore.open(store_path)
        stored_model = resolve_model_ref(store.model_id, store.root)
        if model is not None and not _same_model(model, stored_model):
            raise StoreError(
                f"the store at {store.root} was made by {store.model_id}, not {model}: "
                f"search it with its own model, or precompute a store with {model}"
            )
        clip = ClipEncoder.load(stored_model, revision=store.model_revision, device=device, dtype=dtype)
        # A model the manifest names may be relative to the store; one the caller names is taken as given.
        student_ref = text_model if text_model is not None else (store.text_model and resolve_model_ref(store.text_model, store.root))
        student = None
        if student_ref and student_ref != CLIP_TEXT:
            student = StudentTextEncoder.load(student_ref, device=device)
        return cls(store, clip, student)

    @property
    def multilingual(self) -> bool:
        """Whether text goes through a multilingual student rather than CLIP's English text encoder."""
        return self.text_encoder is not self.clip

    def encode_text(self, text: str) -> np.ndarray:
        """A query text's unit vector in the store's space."""
        cleaned = " ".join((text or "").split())
        if not cleaned:
            raise QueryError("the query is empty: type what you are looking for")
        return self.text_encoder.encode_texts([cleaned])[0]

    def encode_image(self, image: Image.Image) -> np.ndarray:
        """A query image's unit vector."""
        return self.clip.encode_images([image.convert("RGB")])[0]

    def search(
        self,
        text: str | None = None,
        *,
        image: Image.Image | None = None,
        negative: str | None = None,
        top_k: int = DEFAULT_TOP_K,
        labels: Sequence[str] = (),
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        top_labels: int = DEFAULT_TOP_LABELS,
        negative_weight: float = DEFAULT_NEGATIVE_WEIGHT,
    ) -> SearchResult:
        """The best `top_k` images for a text and/or image query, pushed away from `negative`, classified on `labels`."""
        if top_k < 1:
            raise QueryError(f"top_k must be at least 1, got {top_k}")
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        positives = []
        if text is not None and text.strip():
            positives.append(self.encode_text(text))
        if image is not None:
            positives.append(self.encode_image(image))
        if not positives:
            raise QueryError("the query is empty: type what you are looking for, or give an image")
        negatives = [self.encode_text(negative)] if negative and negative.strip() else []
        query = combine_query(positives, negatives, negative_weight=negative_weight)
        t1 = time.perf_counter()
        rows, scores = exact_top_k(self.store.matrix, query, top_k)
        t2 = time.perf_counter()
        probabilities = None
        if labels:
            label_vectors = self._label_cache(tuple(labels), tuple(templates))
            probabilities = zero_shot_probabilities(self.store.matrix[rows], label_vectors, self.logit_scale)
        t3 = time.perf_counter()
        timings.update(encode=1e3 * (t1 - t0), search=1e3 * (t2 - t1), classify=1e3 * (t3 - t2))
        hits = [
            self._hit(rank, int(row), float(score), labels, None if probabilities is None else probabilities[rank], top_labels)
            for rank, (row, score) in enumerate(zip(rows, scores))
        ]
        return SearchResult(hits, list(labels), probabilities, timings)

    def image_for(self, hit: Hit) -> str | Image.Image:
        """What shows a hit's image: its URL or file path, or (for a dataset stored as bytes) the decoded image."""
        if "#row=" not in hit.image or Path(hit.image).exists():
            return hit.image
        if self._dataset is None:
            from clip_search.sources import open_source

            where = self.store.manifest.get("source", {})
            spec = f"hf://datasets/{where['name']}" if "name" in where else where.get("path", "")
            self._dataset = open_source(spec, split=where.get("split"), image_column=where.get("image_column"))
        from clip_search.decode import decode_image

        return decode_image(self._dataset.fetch(int(hit.image.rsplit("#row=", 1)[1])), name=hit.id)

    def _embed_labels(self, labels: tuple[str, ...], templates: tuple[str, ...]) -> np.ndarray:
        return embed_labels(labels, self.text_encoder.encode_texts, templates)

    def _hit(self, rank: int, row: int, score: float, labels: Sequence[str], probs: np.ndarray | None, top_labels: int) -> Hit:
        meta = self.store.rows([row])[0]
        caption = next((str(meta[c]) for c in CAPTION_COLUMNS if meta.get(c)), None)
        ranked: tuple[tuple[str, float], ...] = ()
        if probs is not None:
            order = np.argsort(-probs, kind="stable")[:top_labels]
            ranked = tuple((labels[i], float(probs[i])) for i in order)
        return Hit(rank + 1, row, str(meta["id"]), score, self.store.image_ref(meta), caption, meta, ranked)

