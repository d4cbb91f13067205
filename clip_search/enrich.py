"""Enrichment: a transformers text-classification model run over a store's text column, its label and score added
to the store's metadata as two columns (`NAME`, `NAME_score`), usable in `where` filters.

Resumable like precompute: finished chunks of rows are written to `STORE/.enrich-NAME.partial/` as they are done,
with the model, column and store revision they belong to; a run killed at any moment and started again continues
after its last finished chunk and ends with the columns an uninterrupted run gives. The columns reach the store
through `clip_search.store.write_columns`, the store's writer.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from clip_search.config import DEFAULT_TEXT_BATCH_SIZE
from clip_search.errors import ModelLoadError, StoreError, one_line
from clip_search.store import EmbeddingStore, write_columns

log = logging.getLogger(__name__)

ENRICH_CHUNK_ROWS = 256  # rows classified between two resumable checkpoints
PROTECTED = ("id", "path", "path_bytes", "url", "row", "fingerprint")


@dataclass(frozen=True)
class EnrichReport:
    """What an enrichment did: the columns written, rows classified now and taken from an interrupted run."""

    store: Path
    label_column: str
    score_column: str
    rows: int
    resumed_from: int
    labels: dict[str, int]


def enrich(
    store_path: str | Path,
    model: str,
    *,
    column: str = "caption",
    name: str,
    batch_size: int = DEFAULT_TEXT_BATCH_SIZE,
    chunk_rows: int = ENRICH_CHUNK_ROWS,
    device: str | None = None,
) -> EnrichReport:
    """Classify every row's `column` text with the text-classification `model` (hub id or folder) and add its label
    and score as columns `name` and `name`_score (a missing text gets neither)."""
    store = EmbeddingStore.open(store_path, verify=False)
    if column not in store.columns:
        raise StoreError(f"{store.root}: no column {column!r} to classify; its columns are {', '.join(store.columns)}")
    if not name or not name.replace("_", "").isalnum():
        raise StoreError(f"the column name {name!r} must be letters, digits and underscores")
    protected = (*PROTECTED, *(store.manifest.text_index.columns if store.manifest.text_index else ()), column)
    if name in protected or f"{name}_score" in protected:
        raise StoreError(f"{store.root}: the column {name!r} cannot be replaced (the store's rows or indexes depend on it)")
    texts = [None if v is None or not str(v).strip() else str(v) for v in store.metadata.column(column).to_pylist()]
    workdir = store.root / f".enrich-{name}.partial"
    state = {"model": str(model), "column": column, "revision": store.manifest.revision, "rows": len(texts), "chunk_rows": chunk_rows}
    done = _resume(workdir, state)
    classify = _pipeline(model, device)
    for start in range(done * chunk_rows, len(texts), chunk_rows):
        chunk = texts[start : start + chunk_rows]
        present = [t for t in chunk if t is not None]
        answers = iter(classify(present, batch_size=batch_size, truncation=True) if present else [])
        labels, scores = [], []
        for text in chunk:
            answer = next(answers) if text is not None else None
            labels.append(None if answer is None else str(answer["label"]))
            scores.append(None if answer is None else round(float(answer["score"]), 6))
        part = workdir / f"chunk-{start // chunk_rows:06d}.parquet"
        pq.write_table(pa.table({"label": pa.array(labels, pa.string()), "score": pa.array(scores, pa.float32())}), part.with_suffix(".tmp"))
        part.with_suffix(".tmp").replace(part)
    parts = [pq.read_table(p) for p in sorted(workdir.glob("chunk-*.parquet"))]
    table = pa.concat_tables(parts) if parts else pa.table({"label": pa.array([], pa.string()), "score": pa.array([], pa.float32())})
    write_columns(store.root, store.metadata, {name: table.column("label").combine_chunks(), f"{name}_score": table.column("score").combine_chunks()}, protected)
    shutil.rmtree(workdir)
    counts: dict[str, int] = {}
    for label in table.column("label").to_pylist():
        if label is not None:
            counts[label] = counts.get(label, 0) + 1
    return EnrichReport(store.root, name, f"{name}_score", len(texts), done * chunk_rows, dict(sorted(counts.items())))


def enriched_labels(store: EmbeddingStore, limit: int = 50) -> dict[str, tuple[str, ...]]:
    """The label columns `enrich` added to `store` (a text column NAME beside a numeric NAME_score), each with its
    distinct labels (columns with more than `limit` labels left out: not a label column)."""
    table = store.metadata
    found: dict[str, tuple[str, ...]] = {}
    for name in table.column_names:
        score = f"{name}_score"
        if score not in table.column_names or not pa.types.is_string(table.schema.field(name).type) or not pa.types.is_floating(table.schema.field(score).type):
            continue
        labels = sorted({v for v in table.column(name).unique().to_pylist() if v is not None})
        if 0 < len(labels) <= limit:
            found[name] = tuple(labels)
    return found


def _resume(workdir: Path, state: dict) -> int:
    """How many chunks an interrupted run of the same enrichment finished (0 for a fresh start; other work is discarded)."""
    state_file = workdir / "state.json"
    if state_file.is_file() and json.loads(state_file.read_text(encoding="utf-8")) == state:
        chunks = sorted(workdir.glob("chunk-*.parquet"))
        if [p.name for p in chunks] == [f"chunk-{i:06d}.parquet" for i in range(len(chunks))]:
            if chunks:
                log.info("resuming the enrichment in %s after %d chunks", workdir, len(chunks))
            return len(chunks)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    state_file.write_text(json.dumps(state), encoding="utf-8")
    return 0


def _pipeline(model: str, device: str | None):
    """A transformers text-classification pipeline for `model`; one that cannot be loaded is a ModelLoadError."""
    from transformers import pipeline

    from clip_search.device import resolve_device

    try:
        return pipeline("text-classification", model=str(model), device=resolve_device(device))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot load text classifier {model!r}: {one_line(exc)}") from None
