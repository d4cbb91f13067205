"""The query side in one object: the encoders that match a store, its index, metadata filters, and zero-shot labels.

The CLI, the app and the benchmarks all query through `SearchEngine`; none of them holds search logic, and the
app reaches the store only through it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from clip_search.classify import embed_labels, embed_prompts, label_prompts, labels_language, open_set_probabilities, zero_shot_probabilities
from clip_search.config import (
    APP_EXAMPLE_PROMPTS, AUTO_MODE, CAPTION_MODE, DEFAULT_TEMPLATES, DEFAULT_TOP_K, DEFAULT_TOP_LABELS, HYBRID_FUSION, HYBRID_MODE, IMAGE_MODE,
    KEYWORD_MODE, NONE_OF_THESE, RELEVANCE_NULL_TEXT, SEARCH_MODES,
)
from clip_search.errors import ClipSearchError, QueryError, StoreError
from clip_search.filters import Condition, LabelCondition, label_mask, parse_conditions, parse_label_conditions, row_mask
from clip_search.relevance import RelevanceScale, kept, null_floor, parse_min_score, sample_rows
from clip_search.search import DEFAULT_IMAGE_WEIGHT, DEFAULT_NEGATIVE_WEIGHT, combine_query
from clip_search.store import CAPTION_COLUMNS, EmbeddingStore, ExamplePrompt, same_model

if TYPE_CHECKING:
    from PIL import Image

    from clip_search.classifier import Classifier, Prediction
    from clip_search.clip_model import ClipEncoder
    from clip_search.hybrid import TextSearch
    from clip_search.index import Index
    from clip_search.store.refs import ImageRef

log = logging.getLogger(__name__)

CLIP_TEXT = "clip"  # the text_model value that asks for CLIP's own text encoder
HIDDEN_COLUMNS = ("fingerprint", "path_bytes")  # bookkeeping columns a hit's metadata leaves out
REFERENCE_COLUMNS = ("id", "path", "url", "row")  # where an image is: not offered for sorting and filtering
ENGLISH = "en"


class TextEncoder(Protocol):
    """Anything that embeds text into the store's space."""

    @property
    def dim(self) -> int: ...

    def encode_texts(self, texts: Sequence[str], batch_size: int = ...) -> np.ndarray: ...


@dataclass(frozen=True)
class Hit:
    """One result: where it is in the store, how well it matched, and its top zero-shot labels.

    `score` is the raw cosine of the query and the image; `relevance` (0..1) and `band` ("strong", "weak", "none")
    say how the image stands out from the store for this query (clip_search.relevance), in every search mode.
    `match_score` is what the search mode ranked by: the score in image mode, the caption cosine, the BM25 score, or
    the fused score of hybrid search."""

    rank: int
    row: int
    id: str
    score: float
    image: str
    caption: str | None
    metadata: dict[str, Any]
    labels: tuple[tuple[str, float], ...] = ()
    band: str | None = None
    relevance: float | None = None
    predictions: tuple[Prediction, ...] = ()  # each loaded classifier's tasks: assigned labels and probabilities
    match_score: float | None = None


@dataclass
class SearchResult:
    """The hits of one query, the labels they were classified against, and where the time went (ms).

    `probabilities` is hits × labels; with open-set labels `none_of_these` holds each hit's probability that no
    label fits (each row of probabilities plus it sums to one)."""

    hits: list[Hit]
    labels: list[str] = field(default_factory=list)
    probabilities: np.ndarray | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    none_of_these: np.ndarray | None = None
    truncated: tuple[str, ...] = ()  # the query parts ("query", "negative") cut at the text encoder's token limit

    @property
    def label_columns(self) -> list[str]:
        """The labels a table of answers shows: the typed ones, then "none of these" with open-set labels."""
        return [*self.labels, NONE_OF_THESE] if self.none_of_these is not None else list(self.labels)

    @property
    def label_table(self) -> np.ndarray | None:
        """hits × label_columns probabilities (each row sums to one), or None without labels."""
        if self.probabilities is None or self.none_of_these is None:
            return self.probabilities
        return np.column_stack([self.probabilities, self.none_of_these])


@dataclass(frozen=True)
class Query:
    """One search of a batch (`SearchEngine.search_many`): the arguments of `SearchEngine.search`, by name."""

    text: str | None = None
    image: Image.Image | None = None
    negative: str | None = None
    top_k: int = DEFAULT_TOP_K
    labels: Sequence[str] = ()
    where: Sequence[str | Condition] = ()
    templates: Sequence[str] | None = None
    top_labels: int = DEFAULT_TOP_LABELS
    negative_weight: float = DEFAULT_NEGATIVE_WEIGHT
    image_weight: float = DEFAULT_IMAGE_WEIGHT
    min_score: float | str | None = None
    open_set: bool = True
    where_labels: Sequence[str | LabelCondition] = ()
    mode: str = AUTO_MODE
    weights: Mapping[str, float] | str | None = None


@dataclass(frozen=True)
class StoreSummary:
    """What a page says about the store it searches."""

    count: int
    model: str
    multilingual: bool
    examples: tuple[str, ...]
    notice: str | None
    prompts: tuple[ExamplePrompt, ...] = ()  # the examples with their languages
    languages: tuple[str, ...] | None = None  # the query languages understood, when known (None: many, unlisted)
    columns: tuple[str, ...] = ()  # metadata columns a search may filter and sort on


class SearchEngine:
    """Searches one store with the encoders its manifest names (or compatible ones the caller names)."""

    def __init__(
        self,
        store: EmbeddingStore,
        clip: ClipEncoder | Callable[[], ClipEncoder],
        text_encoder: TextEncoder | None = None,
        index: Index | None = None,
        *,
        multilingual: bool | None = None,
        classifiers: Sequence[Classifier] = (),
        caption_encoder: TextEncoder | None = None,
    ) -> None:
        """`clip` is the image encoder, or a function that loads it on first need (a text-only session never
        imports torch); `text_encoder` defaults to CLIP's own; `classifiers` label every hit and serve label filters;
        `caption_encoder` embeds queries for the store's text index (default: loaded on first need from the model its
        manifest records)."""
        from clip_search.index import ExactIndex

        self.store = store
        self._clip = clip
        if text_encoder is None:
            text_encoder = self.clip
        store.check_encoder(text_encoder.dim, f"text model {getattr(text_encoder, 'model_id', '?')}")
        self.text_encoder: TextEncoder = text_encoder
        self.multilingual = multilingual if multilingual is not None else text_encoder is not self._clip
        self.index: Index = index if index is not None else ExactIndex(store.embeddings)
        self._label_cache = lru_cache(maxsize=64)(self._embed_labels)
        self._relevance_scale: RelevanceScale | None = None
        self._mask_cache = lru_cache(maxsize=32)(self._mask)
        self.classifiers: tuple[Classifier, ...] = ()
        self._assigned: dict[str, tuple[tuple[str, ...], np.ndarray]] | None = None
        self.add_classifiers(classifiers)
        self._caption_encoder = caption_encoder
        self._text_search: TextSearch | None = None

    @property
    def clip(self) -> ClipEncoder:
        """The CLIP image encoder (loaded on first use when given as a loader)."""
        if callable(self._clip) and not hasattr(self._clip, "encode_images"):
            clip = self._clip()
            self.store.check_encoder(clip.dim, f"CLIP model {clip.model_id}")
            self._clip = clip
        return self._clip

    @property
    def relevance_scale(self) -> RelevanceScale:
        """The store's sample of rows that each query's scores are calibrated against, and its floor for a strong
        match (what the text that says nothing scores there); made on first use."""
        if self._relevance_scale is None:
            sample = self.store.vectors(sample_rows(len(self.store)))
            null = self.text_encoder.encode_texts([RELEVANCE_NULL_TEXT])[0]
            self._relevance_scale = RelevanceScale(sample, floor=null_floor(sample, null))
        return self._relevance_scale

    @property
    def logit_scale(self) -> float:
        """CLIP's temperature for zero-shot labels: recorded in the manifest, else read from the model."""
        recorded = self.store.manifest.logit_scale
        return float(recorded) if recorded is not None else float(self.clip.logit_scale)

    @classmethod
    def load(
        cls,
        store_path: str | Path,
        *,
        model: str | None = None,
        text_model: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        use_index: bool = True,
        max_memory: int | None = None,
        text_backend: str = "auto",
        classifiers: Sequence[str | Path] = (),
    ) -> SearchEngine:
        """Open a store, its index and its models: the manifest's CLIP and student unless `model`/`text_model` name others.

        `use_index=False` searches exactly even where the store has an approximate index; `max_memory` bounds
        the memory exact search may keep (bytes), beyond which it reads the stored matrix in chunks.
        `text_backend` ("auto", "onnx", "torch") runs the query text encoder; the image encoder is loaded on
        the first image query. `classifiers` are trained classifier folders (or hub repos) to label hits with.
        """
        from clip_search.store_index import open_index
        from clip_search.text_backend import CLIP_TEXT as CLIP_TEXT_KIND
        from clip_search.text_backend import STUDENT, load_text_encoder

        store = EmbeddingStore.open(store_path)
        stored_model = store.model_path()
        revision = store.manifest.model.revision
        if model is not None and not same_model(model, stored_model):
            raise StoreError(
                f"the store at {store.root} was made by {store.model_id}, not {model}: "
                f"search it with its own model, or precompute a store with {model}"
            )
        index = open_index(store, use_index=use_index, max_memory=max_memory)

        def load_clip() -> ClipEncoder:
            from clip_search.clip_model import ClipEncoder

            return ClipEncoder.load(stored_model, revision=revision, device=device, dtype=dtype)

        # A model the manifest names may be relative to the store; one the caller names is taken as given.
        student_ref = text_model if text_model is not None else store.text_model_path()
        loaded = _load_classifiers(classifiers)
        if student_ref and student_ref != CLIP_TEXT:
            text = load_text_encoder(student_ref, STUDENT, backend=text_backend, device=device)
            return cls(store, load_clip, text, index, multilingual=True, classifiers=loaded)
        text = load_text_encoder(stored_model, CLIP_TEXT_KIND, backend=text_backend, revision=revision, device=device)
        return cls(store, text if hasattr(text, "encode_images") else load_clip, text, index, multilingual=False, classifiers=loaded)

    def add_classifiers(self, classifiers: Sequence[Classifier]) -> None:
        """Label hits with these trained classifiers too; one made for another CLIP, or a task name already taken,
        is refused in one line."""
        taken = {t.name for c in self.classifiers for t in c.tasks}
        for classifier in classifiers:
            classifier.check_store(self.store)
            clash = next((t.name for t in classifier.tasks if t.name in taken), None)
            if clash is not None:
                raise QueryError(f"two classifiers have the task {clash!r}: load one of them")
            taken |= {t.name for t in classifier.tasks}
            self.classifiers += (classifier,)
        self._assigned = None
        self._mask_cache.cache_clear()

    @property
    def label_tasks(self) -> dict[str, tuple[str, ...]]:
        """Every loaded classifier task and its label names (what `where_labels` may name)."""
        return {t.name: t.labels for c in self.classifiers for t in c.tasks}

    def summary(self) -> StoreSummary:
        """How many images, which model, which query languages, the metadata columns, and the store's example prompts
        (only those in a language its text encoder understands: English alone without a multilingual one) and notice."""
        shipped = self.store.examples()
        model = self.store.model_id
        name = Path(model).name if model.startswith((".", "/", "~")) or "\\" in model or model.count("/") > 1 else model
        languages = shipped.languages if shipped and shipped.languages else None
        if not self.multilingual:
            languages = (ENGLISH,)
        offered = shipped.prompts if shipped else tuple(ExamplePrompt(text, lang) for lang, text in APP_EXAMPLE_PROMPTS)
        prompts = tuple(p for p in offered if languages is None or p.language is None or p.language in languages)
        columns = tuple(c for c in self.store.metadata.column_names if c not in HIDDEN_COLUMNS + REFERENCE_COLUMNS and not c.startswith("_"))
        notice = shipped.notice if shipped else None
        return StoreSummary(len(self.store), name, self.multilingual, tuple(p.text for p in prompts), notice, prompts, languages, columns)

    def truncated_texts(self, texts: Sequence[str]) -> set[str]:
        """Those of `texts` longer than the text encoder reads: it embeds only their first tokens."""
        check = getattr(self.text_encoder, "truncates", None)
        if check is None or not texts:
            return set()
        return {text for text, cut in zip(texts, check(list(texts))) if cut}

    def encode_text(self, text: str) -> np.ndarray:
        """A query text's unit vector in the store's space."""
        cleaned = " ".join((text or "").split())
        if not cleaned:
            raise QueryError("the query is empty: type what you are looking for")
        return self.text_encoder.encode_texts([cleaned])[0]

    def encode_image(self, image: Image.Image) -> np.ndarray:
        """A query image's unit vector."""
        return self.clip.encode_images([image.convert("RGB")])[0]

    def read_query_image(self, data: bytes, name: str = "image") -> Image.Image:
        """A query image from its bytes, decoded the hardened way; an unreadable one is a QueryError."""
        from clip_search.decode import decode_image
        from clip_search.errors import SkipItem

        try:
            return decode_image(data, name=name)
        except SkipItem as exc:
            raise QueryError(f"cannot read the image {name}: {exc}") from None

    def search(
        self,
        text: str | None = None,
        *,
        image: Image.Image | None = None,
        negative: str | None = None,
        top_k: int = DEFAULT_TOP_K,
        labels: Sequence[str] = (),
        where: Sequence[str | Condition] = (),
        templates: Sequence[str] | None = None,
        top_labels: int = DEFAULT_TOP_LABELS,
        negative_weight: float = DEFAULT_NEGATIVE_WEIGHT,
        image_weight: float = DEFAULT_IMAGE_WEIGHT,
        min_score: float | str | None = None,
        open_set: bool = True,
        where_labels: Sequence[str | LabelCondition] = (),
        mode: str = AUTO_MODE,
        weights: Mapping[str, float] | str | None = None,
    ) -> SearchResult:
        """The best `top_k` images for a text and/or image query, pushed away from `negative`, among the rows that
        pass every `where` condition and carry every `where_labels` label ("TASK=LABEL", by the loaded
        classifiers), classified on `labels`. With both a text and an image, `image_weight` (0 to 1) is the image's
        share of the query.

        Every hit carries its relevance and band; `min_score` keeps only hits of at least that relevance (0..1),
        or with "auto" those whose band is strong or weak (None keeps all `top_k`). Labels are put in `templates`,
        by default those of the labels' language through a multilingual student (`classify.label_prompts`), else
        CLIP's English ensemble; `open_set` adds "none of these" (a single label is then a yes/no). `truncated` on
        the result names the query parts cut at the text encoder's token limit.

        `mode` ranks by the image ("image"), the store's text index ("caption": sentence embeddings, "keyword": BM25)
        or all three fused ("hybrid", with per-mode `weights`); "auto" is hybrid for a text query on a store with a
        text index, else image. `where` and `where_labels` apply in every mode."""
        if top_k < 1:
            raise QueryError(f"top_k must be at least 1, got {top_k}")
        min_score = _min_score(min_score)
        t0 = time.perf_counter()
        conditions = parse_conditions(where) + parse_label_conditions(where_labels)
        allowed = self._mask_cache(conditions) if conditions else None
        has_text = text is not None and bool(text.strip())
        if not has_text and image is None:
            raise QueryError("the query is empty: type what you are looking for, or give an image")
        image_vector = self.encode_image(image) if image is not None else None
        negatives = [self.encode_text(negative)] if negative and negative.strip() else []

        def combined(words: str | None) -> np.ndarray | None:
            """The query vector with `words` as its text part (None when nothing is left)."""
            parts = ([self.encode_text(words)] if words else []) + ([image_vector] if image_vector is not None else [])
            return combine_query(parts, negatives, negative_weight=negative_weight, weights=_part_weights(bool(words), image is not None, image_weight)) if parts else None

        resolved = self.search_mode(mode, text)
        if resolved != IMAGE_MODE:  # search_mode made sure there is query text
            mode_weights = self._mode_weights(weights)
            text = text or ""
            cleaned = " ".join(text.split())
            visual = cleaned
            if resolved == HYBRID_MODE and (mode_weights[CAPTION_MODE] or mode_weights[KEYWORD_MODE]):
                visual = self.text_search.visual_text(cleaned)  # the image half sees only what images can show
            image_query = combined(text if visual == cleaned else visual or None)
            query = image_query if image_query is not None else combined(text)  # the whole text only when nothing is left
            return self._text_mode_result(resolved, text, query, image_query, top_k, allowed, mode_weights, t0, labels, templates, top_labels, min_score, open_set)
        query = combined(text if has_text else None)
        t1 = time.perf_counter()
        found, found_scores = self.index.search(query[None, :], top_k, allowed)
        keep = found[0] >= 0
        t2 = time.perf_counter()
        timings = {"encode": 1e3 * (t1 - t0), "search": 1e3 * (t2 - t1)}
        result = self._result(query, found[0][keep], found_scores[0][keep], labels, templates, top_labels, timings, min_score, open_set)
        result.truncated = _cut_parts(self.truncated_texts([t for t in (text, negative) if t and t.strip()]), text, negative)
        return result

    def search_mode(self, mode: str, text: str | None) -> str:
        """The mode a search runs in: `mode`, or for "auto" hybrid when there is query text and a text index, else
        image. A text mode without query text or without a text index is a QueryError."""
        if mode == AUTO_MODE:
            return HYBRID_MODE if text and text.strip() and self.store.manifest.text_index is not None else IMAGE_MODE
        if mode not in SEARCH_MODES:
            raise QueryError(f"unknown search mode {mode!r}: use {', '.join((AUTO_MODE, *SEARCH_MODES))}")
        if mode != IMAGE_MODE:
            if not (text and text.strip()):
                raise QueryError(f"{mode} search needs a query text")
            if self.store.manifest.text_index is None:
                raise QueryError(f"the store at {self.store.root} has no text index for {mode} search: build one with `clip-search index-text {self.store.root}`")
        return mode

    @property
    def text_search(self) -> TextSearch:
        """Caption, keyword and hybrid search over the store's text index (opened on first use)."""
        if self._text_search is None:
            from clip_search.hybrid import TextSearch
            from clip_search.text_index import TextIndex

            text_index = TextIndex.open(self.store)
            assert text_index is not None  # search_mode refuses a text mode on a store without one
            scale = self.relevance_scale
            self._text_search = TextSearch(text_index, self.store.vectors, self.index.search, scale.sample, self.text_encoder.encode_texts, scale.floor)
        return self._text_search

    @property
    def caption_encoder(self) -> TextEncoder:
        """The encoder of caption queries: the model the store's text index was built with (loaded on first use)."""
        if self._caption_encoder is None:
            from clip_search.text_student import StudentTextEncoder

            self._caption_encoder = StudentTextEncoder.load(self.text_search.text_index.caption_model_path())
        if self._caption_encoder.dim != self.text_search.text_index.info.dim:
            raise StoreError(f"the caption model gives {self._caption_encoder.dim}-dimensional vectors, the text index of {self.store.root} holds {self.text_search.text_index.info.dim}-dimensional ones")
        return self._caption_encoder

    @staticmethod
    def _mode_weights(weights: Mapping[str, float] | str | None) -> dict[str, float]:
        """Hybrid search's per-mode weights; a bad one is a QueryError."""
        from clip_search.hybrid import parse_weights

        try:
            return parse_weights(weights)
        except ValueError as exc:
            raise QueryError(str(exc)) from None

    def _text_mode_result(
        self, mode: str, text: str, query: np.ndarray, image_query: np.ndarray | None, top_k: int, allowed: np.ndarray | None, mode_weights: Mapping[str, float],
        t0: float, labels: Sequence[str], templates: Sequence[str] | None, top_labels: int, min_score: float | str | None, open_set: bool,
    ) -> SearchResult:
        """A search ranked by the text index (caption, keyword) or by the fusion of every mode (hybrid, its image
        half by `image_query`); each hit's score and relevance are its image's for `image_query`, else `query`."""
        cleaned = " ".join(text.split())
        searcher = self.text_search
        caption_query = self.caption_encoder.encode_texts([cleaned])[0] if mode == CAPTION_MODE or (mode == HYBRID_MODE and mode_weights[CAPTION_MODE]) else None
        t1 = time.perf_counter()
        rows, match = searcher.search(mode, cleaned, image_query, caption_query, top_k, allowed, mode_weights, HYBRID_FUSION)
        shown = query if image_query is None else image_query
        scores = self.store.vectors(rows) @ shown if len(rows) else np.zeros(0, np.float32)
        t2 = time.perf_counter()
        timings = {"encode": 1e3 * (t1 - t0), "search": 1e3 * (t2 - t1)}
        return self._result(shown, rows, scores, labels, templates, top_labels, timings, min_score, open_set, match)

    def search_many(self, requests: Sequence[Query | Mapping[str, Any]]) -> list[SearchResult | ClipSearchError]:
        """Many searches at once, each answered as `search` would answer it alone: its result, or the
        ClipSearchError that `search` would raise for it (one bad request fails only itself).

        All query texts of the batch go through the text encoder in one call and all images in one call;
        the index is searched once per distinct filter (and, for an approximate index, per distinct `top_k`,
        whose candidate lists depend on k), for the largest k, and each request takes its first `top_k`.
        A result's timings are those of the batch's shared stages plus its own classification.
        """
        queries = [r if isinstance(r, Query) else Query(**r) for r in requests]
        out: list[SearchResult | ClipSearchError | None] = [None] * len(queries)
        t0 = time.perf_counter()
        planned: list[tuple[int, tuple[Condition, ...], list[str], list[str], bool]] = []
        for i, q in enumerate(queries):
            try:
                if self.search_mode(q.mode, q.text) != IMAGE_MODE:  # ranked by the text index: one search each
                    out[i] = self.search(**{f.name: getattr(q, f.name) for f in fields(Query)})
                    continue
                if q.top_k < 1:
                    raise QueryError(f"top_k must be at least 1, got {q.top_k}")
                _min_score(q.min_score)
                conditions = (parse_conditions(q.where) if q.where else ()) + parse_label_conditions(q.where_labels)
                if conditions:
                    self._mask_cache(conditions)  # an unknown column fails this request alone, here
                positives = [" ".join(q.text.split())] if q.text is not None and q.text.strip() else []
                if not positives and q.image is None:
                    raise QueryError("the query is empty: type what you are looking for, or give an image")
                negatives = [" ".join(q.negative.split())] if q.negative and q.negative.strip() else []
                _part_weights(bool(positives), q.image is not None, q.image_weight)  # a weight out of range fails here, alone
            except ClipSearchError as exc:
                out[i] = exc
                continue
            planned.append((i, conditions, positives, negatives, q.image is not None))
        texts = list(dict.fromkeys(t for _, _, pos, neg, _ in planned for t in (*pos, *neg)))
        text_vectors = dict(zip(texts, self.text_encoder.encode_texts(texts))) if texts else {}
        with_image = [i for i, *_, has_image in planned if has_image]
        image_vectors = (
            dict(zip(with_image, self.clip.encode_images([queries[i].image.convert("RGB") for i in with_image]))) if with_image else {}
        )
        vectors: dict[int, np.ndarray] = {}
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, conditions, positives, negatives, _ in planned:
            q = queries[i]
            parts = [text_vectors[t] for t in positives] + ([image_vectors[i]] if i in image_vectors else [])
            weights = _part_weights(bool(positives), i in image_vectors, q.image_weight)
            vectors[i] = combine_query(parts, [text_vectors[t] for t in negatives], negative_weight=q.negative_weight, weights=weights)
            key = (conditions,) if getattr(self.index, "kind", None) == "exact" else (conditions, q.top_k)
            groups.setdefault(key, []).append(i)
        t1 = time.perf_counter()
        found: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for (conditions, *_), members in groups.items():
            allowed = self._mask_cache(conditions) if conditions else None
            k_max = max(queries[i].top_k for i in members)
            rows, scores = self.index.search(np.stack([vectors[i] for i in members]), k_max, allowed)
            for j, i in enumerate(members):
                top_rows, top_scores = rows[j, : queries[i].top_k], scores[j, : queries[i].top_k]
                keep = top_rows >= 0
                found[i] = (top_rows[keep], top_scores[keep])
        t2 = time.perf_counter()
        shared = {"encode": 1e3 * (t1 - t0), "search": 1e3 * (t2 - t1)}
        cut = self.truncated_texts(texts)
        for i, *_ in planned:
            q = queries[i]
            try:
                result = self._result(vectors[i], *found[i], q.labels, q.templates, q.top_labels, shared, _min_score(q.min_score), q.open_set)
            except ClipSearchError as exc:
                out[i] = exc
                continue
            result.truncated = _cut_parts(cut, q.text, q.negative)
            out[i] = result
        return out  # type: ignore[return-value]

    def image_for(self, hit: Hit) -> str | Image.Image:
        """What shows a hit's image: its URL or file path, or (for a dataset stored as bytes) the decoded image."""
        ref = self.image_ref_at(hit.row)
        if ref.url:
            return ref.url
        if ref.file is not None:
            return str(ref.file)
        return self.open_image_at(hit.row)

    def image_ref_at(self, row: int) -> ImageRef:
        """Where store row `row`'s image is (a URL, a file, or a dataset row); a row out of range is a QueryError."""
        return self.store.image_ref(self._row(row))

    def open_image_at(self, row: int) -> Image.Image:
        """Store row `row`'s image decoded as RGB; SkipItem with the reason when it is gone or no longer decodes."""
        return self.store.open_image(self._row(row))

    @property
    def revision(self) -> str:
        """A short tag of the store's rows (12 hex digits of its manifest revision): links made for one version of
        a store never name another's rows."""
        import hashlib

        return hashlib.blake2s(self.store.manifest.revision.encode(), digest_size=6).hexdigest()

    def _row(self, row: int) -> dict[str, Any]:
        if not 0 <= row < len(self.store):
            raise QueryError(f"no row {row}: the store holds rows 0 to {len(self.store) - 1}")
        return self.store.rows([row])[0]

    def _result(
        self, query: np.ndarray, rows: np.ndarray, scores: np.ndarray, labels: Sequence[str], templates: Sequence[str] | None, top_labels: int,
        timings: dict[str, float], min_score: float | str | None = None, open_set: bool = True, match_scores: np.ndarray | None = None,
    ) -> SearchResult:
        """The hits of found rows with their relevance, those below `min_score` dropped, classified on `labels`
        (the stored vectors, no re-encoding)."""
        started = time.perf_counter()
        assessment = self.relevance_scale.assess(query, scores)
        keep = kept(assessment, min_score)
        rows, scores = rows[keep], scores[keep]
        match = scores if match_scores is None else np.asarray(match_scores)[keep]
        relevance, bands = assessment.relevance[keep], [b for b, k in zip(assessment.bands, keep) if k]
        probabilities = none = None
        if labels and len(rows):
            label_vectors = self.label_vectors(labels, templates)
            if open_set:
                answer = open_set_probabilities(self.store.vectors(rows), label_vectors, self.logit_scale, self.relevance_scale.sample)
                probabilities, none = answer.probabilities, answer.none
            else:
                probabilities = zero_shot_probabilities(self.store.vectors(rows), label_vectors, self.logit_scale)
        predicted = [(c, c.predict_rows(self.store, rows)) for c in self.classifiers] if len(rows) else []
        classified = {**timings, "classify": 1e3 * (time.perf_counter() - started)}
        result = SearchResult([], list(labels), probabilities, classified, none)
        table = result.label_table
        result.hits = [
            self._hit(
                rank, int(row), float(score), meta, result.label_columns, None if table is None else table[rank], top_labels, bands[rank], float(relevance[rank]),
                float(match[rank]), tuple(p for c, probs in predicted for p in c.predictions(probs, rank, top_labels)),
            )
            for rank, (row, score, meta) in enumerate(zip(rows, scores, self.store.rows(rows)))
        ]
        return result

    def _mask(self, conditions: tuple[Condition | LabelCondition, ...]) -> np.ndarray:
        mask = row_mask(self.store.metadata, [c for c in conditions if isinstance(c, Condition)])
        by_label = [c for c in conditions if isinstance(c, LabelCondition)]
        return mask & label_mask(self._assigned_labels(), by_label, len(self.store)) if by_label else mask

    def _assigned_labels(self) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
        """Every row's assigned labels by task (rows × labels, bool), predicted once for the whole store."""
        if self._assigned is None:
            from clip_search.classifier.repo import assigned_matrix

            self._assigned = {}
            for classifier in self.classifiers:
                for name, probabilities in classifier.predict_store(self.store).items():
                    task = next(t for t in classifier.tasks if t.name == name)
                    self._assigned[name] = (task.labels, assigned_matrix(task, probabilities))
        return self._assigned

    def label_vectors(self, labels: Sequence[str], templates: Sequence[str] | None = None) -> np.ndarray:
        """One unit vector per label, embedded as `search` embeds them (cached): in `templates`, else by default."""
        return self._label_cache(tuple(labels), None if templates is None else tuple(templates))

    def _embed_labels(self, labels: tuple[str, ...], templates: tuple[str, ...] | None) -> np.ndarray:
        if templates is not None:
            return embed_labels(labels, self.text_encoder.encode_texts, templates)
        if not self.multilingual:
            return embed_labels(labels, self.text_encoder.encode_texts, DEFAULT_TEMPLATES)
        return embed_prompts(label_prompts(labels, labels_language(labels)), self.text_encoder.encode_texts)

    def _hit(
        self, rank: int, row: int, score: float, meta: dict[str, Any], labels: Sequence[str], probs: np.ndarray | None, top_labels: int, band: str, relevance: float,
        match_score: float, predictions: tuple[Prediction, ...] = (),
    ) -> Hit:
        caption = next((str(meta[c]) for c in CAPTION_COLUMNS if meta.get(c)), None)
        ranked: tuple[tuple[str, float], ...] = ()
        if probs is not None:
            order = np.argsort(-probs, kind="stable")[:top_labels]
            ranked = tuple((labels[i], float(probs[i])) for i in order)
        shown = {k: v for k, v in meta.items() if k not in HIDDEN_COLUMNS}
        return Hit(rank + 1, row, str(meta["id"]), score, str(self.store.image_ref(meta)), caption, shown, ranked, band, round(relevance, 4), predictions, match_score)


def _min_score(value: float | str | None) -> float | str | None:
    """A min_score checked ("auto", a relevance in 0..1, or None); a bad one is a QueryError."""
    try:
        return parse_min_score(value)
    except ValueError as exc:
        raise QueryError(str(exc)) from None


def _load_classifiers(refs: Sequence[str | Path]) -> list[Classifier]:
    """Trained classifiers from their folders or hub repos."""
    if not refs:
        return []
    from clip_search.classifier import Classifier

    return [Classifier.from_pretrained(ref) for ref in refs]


def _part_weights(has_text: bool, has_image: bool, image_weight: float) -> tuple[float, ...] | None:
    """The shares of a query's positive parts (text first): `image_weight` for the image when both are given."""
    if not (has_text and has_image):
        return None
    if not 0.0 <= image_weight <= 1.0:
        raise QueryError(f"image_weight must be from 0 to 1, got {image_weight}")
    return (1.0 - image_weight, image_weight)


def _cut_parts(cut: set[str], text: str | None, negative: str | None) -> tuple[str, ...]:
    """Which of a query's text parts are among the `cut` (truncated) texts, by name."""
    def norm(t: str | None) -> str:
        return " ".join((t or "").split())

    return tuple(name for name, t in (("query", text), ("negative", negative)) if t and (norm(t) in cut or t in cut))


def sort_hits(hits: Sequence[Hit], column: str, *, descending: bool = False) -> list[Hit]:
    """`hits` ordered by a metadata column (values compared as stored; missing ones last), ties kept in rank order;
    a column no hit has is a QueryError naming it."""
    if hits and not any(column in h.metadata for h in hits):
        raise QueryError(f"sort: the results have no column {column!r}; they have: {', '.join(sorted(hits[0].metadata))}")
    present = [h for h in hits if h.metadata.get(column) is not None]
    missing = [h for h in hits if h.metadata.get(column) is None]
    try:
        ordered = sorted(present, key=lambda h: h.metadata[column], reverse=descending)
    except TypeError:  # mixed types in one column: compare as text
        ordered = sorted(present, key=lambda h: str(h.metadata[column]), reverse=descending)
    return ordered + missing
