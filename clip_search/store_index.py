"""A store's search index: built into the store folder and recorded in its manifest, opened with the store, and
refused when stale (built for other rows than the store now holds), never silently used.

Recall is measured the way the store is queried: with text-encoder vectors (captions of the store's own images,
else generic prompts), not with image vectors, which sit apart from text ones in CLIP's space.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from clip_search.config import INDEX_PROBE_NOUNS, INDEX_PROBE_QUERIES, INDEX_PROBE_TEMPLATES
from clip_search.errors import StoreError
from clip_search.index import AnnIndex, ExactIndex, Index, build_index, recall_at_k
from clip_search.store import CAPTION_COLUMNS, EmbeddingStore, IndexInfo, write_manifest

log = logging.getLogger(__name__)

PROBES = "index-queries.npy"  # the text vectors recall was measured with, kept to measure a rebuilt index again


class StaleIndexError(StoreError):
    """The index in a store was built for rows the store no longer holds."""


def open_index(store: EmbeddingStore, *, use_index: bool = True, max_memory: int | None = None) -> Index:
    """The index the store's manifest records (checked to be current), or exact search when it records none."""
    info = store.manifest.index
    if not use_index or info is None or info.kind == "exact":
        return ExactIndex(store.embeddings, max_memory=max_memory)
    if info.store_revision != store.manifest.revision or info.count != len(store):
        raise StaleIndexError(
            f"the {info.kind} index in {store.root} was built for other rows than the store holds now; "
            f"rebuild it with `clip-search index {store.root}`, or search exactly without it"
        )
    for name in info.files:
        if not (store.root / name).is_file():
            raise StoreError(f"{store.root / name}, named by the index in manifest.json, is missing; rebuild it with `clip-search index {store.root}`")
    return AnnIndex.load(store.root, info.kind, info.params, store.embeddings)


def probe_texts(store: EmbeddingStore, count: int, seed: int = 0) -> list[str]:
    """Texts to measure an index with: a sample of the store's own captions, else generic photo prompts."""
    for column in CAPTION_COLUMNS:
        if column in store.columns:
            captions = sorted({str(c) for c in store.metadata.column(column).to_pylist() if c})
            if len(captions) >= min(count, 50):
                return random.Random(seed).sample(captions, min(count, len(captions)))
    prompts = [t.format(n) for n in INDEX_PROBE_NOUNS for t in INDEX_PROBE_TEMPLATES] + list(INDEX_PROBE_QUERIES)
    return random.Random(seed).sample(prompts, min(count, len(prompts)))


def build_store_index(
    store: EmbeddingStore,
    encode_texts: Callable[[Sequence[str]], np.ndarray],
    *,
    kind: str = "auto",
    recall_target: float = 0.95,
    probes: int = 400,
    threads: int | None = None,
) -> IndexInfo:
    """Build an index of `kind` into the store folder, tuned to `recall_target` recall@10 on text queries, and
    record it in the manifest."""
    queries = np.asarray(encode_texts(probe_texts(store, probes)), dtype=np.float32)
    index, measured = build_index(store.embeddings, queries, kind=kind, recall_target=recall_target, threads=threads)
    return _record(store, index, measured, queries)


def rebuild_index(store_root: Path, previous: IndexInfo) -> IndexInfo:
    """Build the index a store had again, same kind and parameters, after its rows changed (an update)."""
    store = EmbeddingStore.open(store_root, verify=False)
    queries = np.load(store_root / PROBES) if (store_root / PROBES).is_file() else None
    if previous.kind == "exact":
        index: Index = ExactIndex(store.embeddings)
        seconds = 0.0
    else:
        started = datetime.now(timezone.utc)
        index = AnnIndex.build(store.embeddings, previous.kind, previous.params)
        seconds = (datetime.now(timezone.utc) - started).total_seconds()
    recall = previous.recall_at_10
    if queries is not None and previous.kind != "exact":
        truth, _ = ExactIndex(store.embeddings).search(queries, 10)
        found, _ = index.search(queries, 10)
        recall = recall_at_k(found, truth)
    info = {"kind": previous.kind, "params": getattr(index, "params", previous.params), "build_seconds": seconds, "recall_at_10": recall, "bytes_per_vector": previous.bytes_per_vector}
    log.info("rebuilt the %s index of %s: recall@10 %.3f", previous.kind, store_root, recall)
    return _record(store, index, info, queries)


def _record(store: EmbeddingStore, index: Index, measured: dict, queries: np.ndarray | None) -> IndexInfo:
    """Save the index's files and its probe queries beside the store, then the manifest that names them."""
    for stale in store.manifest.index.files if store.manifest.index else ():
        (store.root / stale).unlink(missing_ok=True)
    files = tuple(index.save(store.root)) if isinstance(index, AnnIndex) else ()
    if queries is not None:
        np.save(store.root / PROBES, queries)
    info = IndexInfo(
        kind=str(measured["kind"]),
        files=files,
        params=dict(measured.get("params") or {}),
        store_revision=store.manifest.revision,
        count=len(store),
        build_seconds=round(float(measured.get("build_seconds", 0.0)), 3),
        recall_at_10=round(float(measured.get("recall_at_10", 1.0)), 4),
        bytes_per_vector=round(float(measured.get("bytes_per_vector", 2 * store.dim)), 2),
        built=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    write_manifest(store.root, store.manifest.with_index(info))
    return info
