"""A store's text indexes: sentence embeddings of its text columns by a caption model, and a BM25 keyword index.

Built into the store folder and recorded in its manifest (`TextIndexInfo`), like an image index; rebuilt after an
update of the store, re-encoding only the rows whose id or text changed (each row's id and a hash of its text are
kept beside the vectors); refused when stale, never silently used.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clip_search.config import DEFAULT_CAPTION_MODEL, DEFAULT_TEXT_BATCH_SIZE, STORE_DTYPE, TEXT_COLUMNS
from clip_search.errors import StoreError
from clip_search.keywords import KeywordIndex
from clip_search.store import EmbeddingStore, TextIndexInfo, portable_ref, resolve_ref, write_manifest

if TYPE_CHECKING:
    from clip_search.engine import TextEncoder

log = logging.getLogger(__name__)

CAPTION_VECTORS = "text-embeddings.npy"  # rows × caption-model dim, float16, aligned with the store's rows
TEXT_KEYS = "text-keys.parquet"  # each row's id and text hash: what says a row's vector can be kept on an update
KEYWORD_FOLDER = "text-bm25"
TEXT_FILES = (CAPTION_VECTORS, TEXT_KEYS, KEYWORD_FOLDER)


class StaleTextIndexError(StoreError):
    """The text index in a store was built for rows the store no longer holds."""


def text_columns(store: EmbeddingStore, columns: Sequence[str] | None = None) -> tuple[str, ...]:
    """The columns to index: those named (each must exist), else the store's caption-like columns."""
    if columns:
        missing = [c for c in columns if c not in store.columns]
        if missing:
            raise StoreError(f"{store.root}: no column {missing[0]!r} to index; its columns are {', '.join(store.columns)}")
        return tuple(columns)
    found = tuple(c for c in TEXT_COLUMNS if c in store.columns)
    if not found:
        raise StoreError(f"{store.root} has no text column ({', '.join(TEXT_COLUMNS)}): name the columns to index")
    return found


def row_texts(store: EmbeddingStore, columns: Sequence[str]) -> list[str]:
    """Each row's text: its values in `columns`, joined by ". " (missing values left out)."""
    values = [store.metadata.column(c).to_pylist() for c in columns]
    return [". ".join(str(v) for v in row if v is not None and str(v).strip()) for row in zip(*values)]


def build_text_index(
    store_root: str | Path,
    *,
    columns: Sequence[str] | None = None,
    caption_model: str = DEFAULT_CAPTION_MODEL,
    encoder: TextEncoder | None = None,
    batch_size: int = DEFAULT_TEXT_BATCH_SIZE,
    device: str | None = None,
) -> TextIndexInfo:
    """Index the text `columns` of the store at `store_root` (default: its caption-like ones) with `caption_model`
    (a sentence-transformers id or folder; `encoder` is that model already loaded) and BM25, and record it.

    Rows whose id and text are unchanged since the store's last text index keep their vectors (when it was made by
    the same model)."""
    store = EmbeddingStore.open(store_root, verify=False)
    columns = text_columns(store, columns)
    texts = row_texts(store, columns)
    ids = [str(i) for i in store.metadata.column("id").to_pylist()]
    keys = [f"{i}\x00{_text_hash(t)}" for i, t in zip(ids, texts)]
    recorded = portable_ref(str(caption_model), store.root)
    kept = _previous_vectors(store, recorded)
    todo = [row for row, key in enumerate(keys) if key not in kept]
    if encoder is None and (todo or not kept):
        from clip_search.text_student import StudentTextEncoder

        encoder = StudentTextEncoder.load(str(caption_model), device=device)
    dim = encoder.dim if encoder is not None else next(iter(kept.values())).shape[0]
    vectors = np.zeros((len(texts), dim), np.float32)
    for row, key in enumerate(keys):
        if key in kept:
            vectors[row] = kept[key]
    encode = [row for row in todo if texts[row]]  # an empty text gets a zero vector: it matches no caption query
    if encode:
        vectors[encode] = encoder.encode_texts([texts[r] for r in encode], batch_size=batch_size)
    log.info("text index of %s: %d rows encoded, %d kept", store.root, len(encode), len(texts) - len(todo))
    _write_files(store.root, vectors, ids, [_text_hash(t) for t in texts], KeywordIndex.build(texts))
    info = TextIndexInfo(
        columns=columns, caption_model=recorded, dim=int(dim), files=TEXT_FILES, store_revision=store.manifest.revision,
        count=len(store), built=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    write_manifest(store.root, store.manifest.with_text_index(info))
    return info


def rebuild_text_index(store_root: Path, previous: TextIndexInfo) -> TextIndexInfo:
    """Build the text index a store had again, same columns and model, after its rows changed (an update)."""
    return build_text_index(store_root, columns=previous.columns, caption_model=resolve_ref(previous.caption_model, Path(store_root)))


@dataclass
class TextIndex:
    """An opened text index: caption vectors (memory-mapped) and the keyword index (read on first use)."""

    root: Path
    info: TextIndexInfo

    @classmethod
    def open(cls, store: EmbeddingStore) -> TextIndex | None:
        """The store's text index (checked to be current and whole), or None when it has none."""
        info = store.manifest.text_index
        if info is None:
            return None
        if info.store_revision != store.manifest.revision or info.count != len(store):
            raise StaleTextIndexError(
                f"the text index in {store.root} was built for other rows than the store holds now; "
                f"rebuild it with `clip-search index-text {store.root}`"
            )
        for name in info.files:
            if not (store.root / name).exists():
                raise StoreError(f"{store.root / name}, named by the text index in manifest.json, is missing; rebuild it with `clip-search index-text {store.root}`")
        index = cls(store.root, info)
        if index.vectors.shape != (info.count, info.dim):
            raise StoreError(f"{store.root / CAPTION_VECTORS} has shape {index.vectors.shape}, the manifest says {info.count}×{info.dim}")
        return index

    @cached_property
    def vectors(self) -> np.ndarray:
        """Caption vectors, one per store row (float16, memory-mapped)."""
        return np.load(self.root / self.info.files[0], mmap_mode="r")

    @cached_property
    def keywords(self) -> KeywordIndex:
        """The BM25 index."""
        return KeywordIndex.load(self.root / self.info.files[2], self.info.count)

    def caption_model_path(self) -> str:
        """The caption model as something `SentenceTransformer` opens."""
        return resolve_ref(self.info.caption_model, self.root)


def _text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def _previous_vectors(store: EmbeddingStore, caption_model: str) -> dict[str, np.ndarray]:
    """id + text hash → vector, from the files of the store's previous text index when made by `caption_model`."""
    vectors_path, keys_path = store.root / CAPTION_VECTORS, store.root / TEXT_KEYS
    previous = store.manifest.text_index
    if previous is None or previous.caption_model != caption_model or not vectors_path.is_file() or not keys_path.is_file():
        return {}
    table = pq.read_table(keys_path)
    vectors = np.load(vectors_path, mmap_mode="r")
    if table.num_rows != vectors.shape[0]:
        return {}
    keys = (f"{i}\x00{h}" for i, h in zip(table.column("id").to_pylist(), table.column("text_hash").to_pylist()))
    return {key: np.asarray(vectors[row], np.float32) for row, key in enumerate(keys)}


def _write_files(root: Path, vectors: np.ndarray, ids: list[str], hashes: list[str], keywords: KeywordIndex) -> None:
    """Replace the text index files one by one (each atomically); the manifest written after them names them."""
    tag = uuid.uuid4().hex[:8]
    tmp_vectors, tmp_keys, tmp_folder = root / f".{CAPTION_VECTORS}.{tag}", root / f".{TEXT_KEYS}.{tag}", root / f".{KEYWORD_FOLDER}.{tag}"
    try:
        with open(tmp_vectors, "wb") as f:
            np.save(f, vectors.astype(STORE_DTYPE))
        pq.write_table(pa.table({"id": ids, "text_hash": hashes}), tmp_keys)
        keywords.save(tmp_folder)
        os.replace(tmp_vectors, root / CAPTION_VECTORS)
        os.replace(tmp_keys, root / TEXT_KEYS)
        shutil.rmtree(root / KEYWORD_FOLDER, ignore_errors=True)
        os.replace(tmp_folder, root / KEYWORD_FOLDER)
    finally:
        tmp_vectors.unlink(missing_ok=True)
        tmp_keys.unlink(missing_ok=True)
        shutil.rmtree(tmp_folder, ignore_errors=True)
