"""The embedding store: a directory holding manifest.json, embeddings.npy, metadata.parquet and skipped.jsonl.

It is the one contract every part shares (PRODUCT.md section 2). Opening a store validates it against itself;
`check_encoder` validates it against the model about to query it. Writing is atomic: a store directory either
holds a whole store or does not exist.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clip_search.config import STORE_DTYPE, STORE_FORMAT_VERSION
from clip_search.errors import StoreError

MANIFEST = "manifest.json"
EMBEDDINGS = "embeddings.npy"
METADATA = "metadata.parquet"
SKIPPED = "skipped.jsonl"


@dataclass
class EmbeddingStore:
    """A loaded, validated store: memory-mapped embeddings, their metadata rows, and the manifest."""

    root: Path
    manifest: dict[str, Any]
    embeddings: np.ndarray
    metadata: pa.Table
    _rows: list[dict[str, Any]] | None = field(default=None, repr=False)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> EmbeddingStore:
        """Open and validate the store at `path`; raise StoreError naming the file and the mismatch."""
        root = Path(path)
        manifest_path = root / MANIFEST
        if not manifest_path.is_file():
            hint = "" if root.exists() else " (the folder does not exist)"
            raise StoreError(f"no embedding store at {root}: {MANIFEST} not found{hint}; build one with `clip-search precompute`")
        manifest = _read_manifest(manifest_path)
        embeddings = _read_embeddings(root / EMBEDDINGS, manifest)
        metadata = _read_metadata(root / METADATA, manifest)
        return cls(root, manifest, embeddings, metadata)

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self.embeddings.shape[1])

    @property
    def model_id(self) -> str:
        """The CLIP model that made the image embeddings."""
        return str(self.manifest["model"]["id"])

    @property
    def model_revision(self) -> str | None:
        """The revision of that model, when one was named."""
        return self.manifest["model"].get("revision")

    @property
    def text_model(self) -> str | None:
        """The multilingual student configured for this store's queries, if any."""
        return self.manifest.get("text_model")

    @cached_property
    def matrix(self) -> np.ndarray:
        """The embeddings as float32 in memory: stored float16, searched float32 (numpy float16 matmul is slow)."""
        return np.ascontiguousarray(self.embeddings, dtype=np.float32)

    def rows(self, indices: Iterable[int]) -> list[dict[str, Any]]:
        """Metadata rows for the given embedding row numbers."""
        if self._rows is None:
            self._rows = self.metadata.to_pylist()
        return [self._rows[int(i)] for i in indices]

    def image_ref(self, row: dict[str, Any]) -> str:
        """Where a row's image is: its URL, or its file path resolved against the source folder."""
        if row.get("url"):
            return str(row["url"])
        path = Path(str(row["path"]))
        if path.is_absolute():
            return str(path)
        base = Path(self.manifest.get("source", {}).get("root", ""))
        if not base.is_absolute():
            base = self.root / base
        return str(base / path)

    def check_encoder(self, dim: int, name: str) -> None:
        """Refuse a text or image encoder whose output dimension differs from the store's."""
        if dim != self.dim:
            raise StoreError(
                f"{name} gives {dim}-dimensional embeddings but the store at {self.root} holds {self.dim}-dimensional ones "
                f"made by {self.model_id}; use a model made for {self.model_id}"
            )


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"cannot read {path}: {exc}") from None
    if not isinstance(manifest, dict):
        raise StoreError(f"{path} is not a JSON object")
    version = manifest.get("format_version")
    if version != STORE_FORMAT_VERSION:
        raise StoreError(f"{path} has format_version {version!r}; this clip-search reads version {STORE_FORMAT_VERSION}")
    missing = [k for k in ("model", "dim", "count", "dtype") if k not in manifest]
    if missing or not isinstance(manifest.get("model"), dict) or "id" not in manifest["model"]:
        raise StoreError(f"{path} lacks required fields: {', '.join(missing) or 'model.id'}")
    return manifest


def _read_embeddings(path: Path, manifest: dict[str, Any]) -> np.ndarray:
    if not path.is_file():
        raise StoreError(f"{path} not found: the store is incomplete")
    try:
        matrix = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read {path}: {exc}") from None
    expected = (int(manifest["count"]), int(manifest["dim"]))
    if matrix.ndim != 2 or tuple(matrix.shape) != expected:
        raise StoreError(f"{path} has shape {tuple(matrix.shape)} but {MANIFEST} says count={expected[0]}, dim={expected[1]}")
    if str(matrix.dtype) != manifest["dtype"]:
        raise StoreError(f"{path} holds {matrix.dtype} but {MANIFEST} says dtype={manifest['dtype']}")
    return matrix


def _read_metadata(path: Path, manifest: dict[str, Any]) -> pa.Table:
    if not path.is_file():
        raise StoreError(f"{path} not found: the store is incomplete")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise StoreError(f"cannot read {path}: {exc}") from None
    if table.num_rows != int(manifest["count"]):
        raise StoreError(f"{path} has {table.num_rows} rows but {MANIFEST} says count={manifest['count']}")
    if "id" not in table.column_names:
        raise StoreError(f"{path} has no 'id' column")
    if "path" not in table.column_names and "url" not in table.column_names:
        raise StoreError(f"{path} has neither a 'path' nor a 'url' column")
    ids = table.column("id")
    if pa.compute.count_distinct(ids).as_py() != table.num_rows:
        raise StoreError(f"{path}: the 'id' column has duplicates")
    return table


def build_manifest(
    *,
    model_id: str,
    model_revision: str | None,
    model_commit: str | None,
    dim: int,
    count: int,
    source: dict[str, Any],
    skipped: Sequence[dict[str, Any]],
    text_model: str | None = None,
    logit_scale: float | None = None,
) -> dict[str, Any]:
    """The manifest for a store of `count` L2-normalised embeddings made by `model_id`."""
    reasons: dict[str, int] = {}
    for entry in skipped:
        reasons[entry["reason"]] = reasons.get(entry["reason"], 0) + 1
    return {
        "format_version": STORE_FORMAT_VERSION,
        "model": {"id": model_id, "revision": model_revision, "commit": model_commit},
        "text_model": text_model,
        "logit_scale": logit_scale,
        "dim": int(dim),
        "count": int(count),
        "dtype": STORE_DTYPE,
        "normalised": True,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "skipped": {"count": len(skipped), "reasons": dict(sorted(reasons.items()))},
    }


def write_store(
    path: str | os.PathLike[str],
    embeddings: np.ndarray,
    metadata: pa.Table,
    manifest: dict[str, Any],
    skipped: Sequence[dict[str, Any]] = (),
    *,
    overwrite: bool = False,
) -> Path:
    """Write a whole store at `path` so that a reader never sees a partial one.

    A new folder is built beside `path` and renamed into place. In a folder that exists already (a store being
    replaced, or a folder that also holds the images), the manifest goes first and comes back last, so until
    the new files are all in place there is no store there rather than an inconsistent one.
    """
    root = Path(path)
    if embeddings.ndim != 2 or embeddings.shape[0] != metadata.num_rows:
        raise StoreError(f"cannot write {root}: {embeddings.shape[0]} embeddings but {metadata.num_rows} metadata rows")
    if (root / MANIFEST).exists() and not overwrite:
        raise StoreError(f"{root} already holds a store; pass --overwrite to replace it")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.with_name(f".{root.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        np.save(tmp / EMBEDDINGS, np.ascontiguousarray(embeddings, dtype=STORE_DTYPE))
        pq.write_table(metadata, tmp / METADATA)
        write_jsonl(tmp / SKIPPED, skipped)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if not root.exists():
            os.replace(tmp, root)
            return root
        (root / MANIFEST).unlink(missing_ok=True)
        for name in (EMBEDDINGS, METADATA, SKIPPED, MANIFEST):
            os.replace(tmp / name, root / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write rows as JSON lines (UTF-8, one object a line)."""
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read JSON lines written by `write_jsonl`; a missing file is an empty list."""
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
