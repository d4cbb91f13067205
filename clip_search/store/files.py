"""Writing store folders: one writer for precompute's shards and for final stores, and the skipped.jsonl format.

A folder is written whole or not at all: it is built beside its destination and renamed into place. When the
destination exists already (a store being replaced or updated, or a folder that also holds the images), the
manifest is taken away first and written last, so a reader sees the old store, no store, or the new store,
never a mix. A shard is the same folder without a manifest.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clip_search.config import STORE_DTYPE
from clip_search.errors import StoreError
from clip_search.store.manifest import MANIFEST, Manifest, write_manifest

EMBEDDINGS = "embeddings.npy"
METADATA = "metadata.parquet"
CAPTION_COLUMNS = ("caption", "text", "description", "title")  # metadata columns read as an image's caption, first found
SKIPPED = "skipped.jsonl"
SKIP_FIELDS = ("index", "id", "ref", "reason")  # the one schema of every skipped.jsonl line


def write_store(
    path: str | os.PathLike[str],
    embeddings: np.ndarray | Sequence[np.ndarray],
    metadata: pa.Table | Sequence[pa.Table],
    skipped: Iterable[Mapping[str, Any]] = (),
    manifest: Manifest | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write a store (or, with no manifest, a shard) at `path` from row-aligned parts, atomically.

    `skipped` rows are written as given: a store's in the one schema of `skip_row`.

    `embeddings` and `metadata` may each be given in parts (a list of arrays / tables, in row order): the
    parts are copied one by one into the file, so joining shards never holds the whole matrix twice.
    """
    root = Path(path)
    parts = [embeddings] if isinstance(embeddings, np.ndarray) else list(embeddings)
    table = metadata if isinstance(metadata, pa.Table) else _concat(list(metadata))
    count = sum(int(p.shape[0]) for p in parts)
    dim = next((int(p.shape[1]) for p in parts if p.ndim == 2 and p.shape[0]), manifest.dim if manifest else 0)
    if any(p.ndim != 2 or (p.shape[0] and p.shape[1] != dim) for p in parts) or count != table.num_rows:
        raise StoreError(f"cannot write {root}: {count} embeddings but {table.num_rows} metadata rows")
    if manifest is not None and (manifest.count, manifest.dim) != (count, dim):
        raise StoreError(f"cannot write {root}: the manifest says {manifest.count}×{manifest.dim}, the embeddings are {count}×{dim}")
    if manifest is not None and (root / MANIFEST).exists() and not overwrite:
        raise StoreError(f"{root} already holds a store; allow overwrite to replace it")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.with_name(f".{root.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        matrix = np.lib.format.open_memmap(tmp / EMBEDDINGS, mode="w+", dtype=STORE_DTYPE, shape=(count, dim))
        row = 0
        for part in parts:
            matrix[row : row + part.shape[0]] = part
            row += part.shape[0]
        matrix.flush()
        del matrix
        pq.write_table(table, tmp / METADATA)
        write_jsonl(tmp / SKIPPED, skipped)
        if manifest is not None:
            write_manifest(tmp, manifest)
        if not root.exists():
            os.replace(tmp, root)
            return root
        (root / MANIFEST).unlink(missing_ok=True)
        for name in (EMBEDDINGS, METADATA, SKIPPED):
            os.replace(tmp / name, root / name)
        if manifest is not None:
            os.replace(tmp / MANIFEST, root / MANIFEST)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def write_columns(root: Path, metadata: pa.Table, columns: Mapping[str, pa.Array], protected: Sequence[str] = ()) -> pa.Table:
    """Add (or replace) metadata columns of the store at `root`, row-aligned with `metadata`, atomically.

    The rows and vectors stay as they are, so the manifest (and any index built for its revision) stays valid;
    `protected` columns (ids, references, indexed text) cannot be replaced."""
    for name, values in columns.items():
        if name in protected:
            raise StoreError(f"{root / METADATA}: the column {name!r} cannot be replaced (the store's rows or indexes depend on it)")
        if len(values) != metadata.num_rows:
            raise StoreError(f"{root / METADATA}: {len(values)} values for column {name!r}, the store holds {metadata.num_rows} rows")
    table = metadata
    for name, values in columns.items():
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, values)
        else:
            table = table.append_column(name, values)
    tmp = root / f".{METADATA}.{uuid.uuid4().hex[:8]}"
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, root / METADATA)
    finally:
        tmp.unlink(missing_ok=True)
    return table


def skip_row(entry: Mapping[str, Any]) -> dict[str, Any]:
    """One skipped.jsonl line in the one schema: index, id, ref, reason."""
    return {
        "index": entry.get("index"),
        "id": entry.get("id"),
        "ref": entry.get("ref") or entry.get("url") or entry.get("path"),
        "reason": str(entry.get("reason") or "unknown"),
    }


def write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Write rows as JSON lines (UTF-8, one object a line)."""
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read JSON lines written by `write_jsonl`; a missing file is an empty list."""
    if not path.exists():
        return []
    try:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"cannot read {path}: {exc}") from None


def _concat(tables: list[pa.Table]) -> pa.Table:
    """Row-aligned metadata parts as one table; empty parts (all items skipped) add nothing."""
    kept = [t for t in tables if t.num_rows]
    if not kept:
        return tables[0] if tables else pa.table({"id": pa.array([], pa.string())})
    return pa.concat_tables(kept, promote_options="default")
