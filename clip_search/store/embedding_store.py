"""`EmbeddingStore`: a store folder opened and validated, its rows read by number, and each row's image found."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from clip_search.config import STORE_CHECK_CHUNK_ROWS, STORE_NORM_TOLERANCE
from clip_search.errors import SkipItem, StoreError
from clip_search.store.examples import StoreExamples, read_examples
from clip_search.store.files import EMBEDDINGS, METADATA
from clip_search.store.manifest import MANIFEST, Manifest, read_manifest
from clip_search.store.refs import ImageRef, resolve_ref, source_root


@dataclass
class EmbeddingStore:
    """A loaded, validated store: memory-mapped float16 embeddings, their metadata rows, and the manifest."""

    root: Path
    manifest: Manifest
    embeddings: np.ndarray
    metadata: pa.Table

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, verify: bool = True) -> EmbeddingStore:
        """Open the store at `path`; any inconsistency is a StoreError naming the file and the mismatch.

        `verify` also reads every vector once to check it is finite and of unit length (a damaged or
        hand-edited matrix is refused, naming its first bad row).
        """
        root = Path(path)
        manifest_path = root / MANIFEST
        if not manifest_path.is_file():
            hint = "" if root.exists() else " (the folder does not exist)"
            raise StoreError(f"no embedding store at {root}: {MANIFEST} not found{hint}; build one with `clip-search precompute`")
        manifest = read_manifest(manifest_path)
        embeddings = _read_embeddings(root / EMBEDDINGS, manifest)
        metadata = _read_metadata(root / METADATA, manifest)
        if verify:
            check_unit_rows(embeddings, root / EMBEDDINGS)
        return cls(root, manifest, embeddings, metadata)

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self.embeddings.shape[1])

    @property
    def model_id(self) -> str:
        """The CLIP model that made the image embeddings, as the manifest records it."""
        return self.manifest.model.id

    def model_path(self) -> str:
        """That model as something `from_pretrained` opens: a folder resolved against the store, or a hub id."""
        return resolve_ref(self.manifest.model.id, self.root)

    def text_model_path(self) -> str | None:
        """The multilingual student recorded for this store's queries, resolved likewise; None when there is none."""
        ref = self.manifest.text_model
        return resolve_ref(ref, self.root) if ref else None

    def vectors(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """The embeddings of the given rows as float32 (only those rows are read from disk)."""
        return np.asarray(self.embeddings[np.asarray(rows, dtype=np.int64)], dtype=np.float32)

    def rows(self, rows: Sequence[int] | np.ndarray) -> list[dict[str, Any]]:
        """Metadata rows for the given row numbers, in that order: only those cells are converted, never the table.

        Cell by cell rather than with arrow's `take`, whose kernel imports pandas (0.7 s of a cold start); as fast.
        """
        columns = [(name, self.metadata.column(name)) for name in self.metadata.column_names]
        return [{name: column[int(row)].as_py() for name, column in columns} for row in rows]

    @property
    def columns(self) -> list[str]:
        """The metadata columns."""
        return list(self.metadata.column_names)

    def image_ref(self, row: dict[str, Any]) -> ImageRef:
        """Where a metadata row's image is, without opening it."""
        if row.get("url"):
            return ImageRef(url=str(row["url"]))
        if row.get("path") is not None or row.get("path_bytes") is not None:
            return ImageRef(file=_local_path(self.source_folder, row))
        if row.get("row") is not None and self.manifest.source.type == "hf_dataset":
            return ImageRef(dataset_row=int(row["row"]))
        raise StoreError(f"{self.root / METADATA}: row {row.get('id')!r} has no path, url or dataset row")

    def open_image(self, row: dict[str, Any]) -> Any:
        """The row's image decoded as RGB PIL: read from its file, downloaded from its URL, or taken from its dataset row.

        Raises SkipItem with the reason when the image is gone or no longer decodes.
        """
        from clip_search.decode import decode_image

        ref = self.image_ref(row)
        name = str(row.get("id"))
        if ref.url:
            from clip_search.fetch import download

            return decode_image(download(ref.url), name=name)
        if ref.file is not None:
            try:
                data = ref.file.read_bytes()
            except OSError as exc:
                raise SkipItem(f"image file is gone or unreadable: {exc.strerror or exc}") from None
            return decode_image(data, name=name)
        return decode_image(self._dataset().fetch(int(ref.dataset_row or 0)), name=name)

    @cached_property
    def source_folder(self) -> Path | None:
        """The folder a folder store's relative paths start from (resolved once); None for other sources."""
        return source_root(self.manifest.source, self.root)

    def examples(self) -> StoreExamples | None:
        """The example prompts and notice shipped with this store (examples.json), if any."""
        return read_examples(self.root)

    def check_encoder(self, dim: int, name: str) -> None:
        """Refuse a text or image encoder whose output dimension differs from the store's."""
        if dim != self.dim:
            raise StoreError(
                f"{name} gives {dim}-dimensional embeddings but the store at {self.root} holds {self.dim}-dimensional ones "
                f"made by {self.model_id}; use a model made for {self.model_id}"
            )

    def _dataset(self) -> Any:
        """The source dataset of a dataset store, opened once, for rows whose image bytes live there."""
        if getattr(self, "_opened_dataset", None) is None:
            from clip_search.sources import open_source

            info = self.manifest.source
            spec = f"hf://datasets/{info.name}" if info.name else (info.path or "")
            self._opened_dataset = open_source(spec, split=info.split, image_column=info.image_column)
        return self._opened_dataset


def _local_path(root: Path | None, row: dict[str, Any]) -> Path:
    """A row's image file: its exact on-disk name (kept as bytes when not UTF-8), against the source folder."""
    from clip_search.sources.folder import local_path

    return local_path(root or Path("/"), row)


def check_unit_rows(embeddings: np.ndarray, path: Path, *, chunk_rows: int = STORE_CHECK_CHUNK_ROWS) -> None:
    """Refuse a matrix with a non-finite or non-unit row, naming the first one.

    A memory-mapped matrix is read with plain file reads, so checking a store larger than RAM leaves none of it
    mapped into the process (its resident memory stays that of one chunk).
    """
    for start, chunk in _chunks(embeddings, chunk_rows):
        rows = np.asarray(chunk, dtype=np.float32)
        squares = np.einsum("ij,ij->i", rows, rows)  # NaN or infinity anywhere in a row makes its sum non-finite
        finite = np.isfinite(squares)
        norms = np.sqrt(np.where(finite, squares, 1))
        bad = np.flatnonzero(~finite | (np.abs(norms - 1) > STORE_NORM_TOLERANCE))
        if bad.size:
            row = start + int(bad[0])
            what = "holds NaN or infinity" if not finite[bad[0]] else f"has length {norms[bad[0]]:.4f}, not 1"
            raise StoreError(f"{path}: row {row} {what}; the store is damaged: rebuild it with `clip-search precompute`")


def _chunks(embeddings: np.ndarray, chunk_rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, rows) blocks of the matrix: read from its file when it is a memory map, else sliced."""
    n, dim = embeddings.shape
    if not isinstance(embeddings, np.memmap) or embeddings.filename is None:
        for start in range(0, n, chunk_rows):
            yield start, embeddings[start : start + chunk_rows]
        return
    row_bytes = dim * embeddings.dtype.itemsize
    with open(embeddings.filename, "rb", buffering=0) as f:
        f.seek(embeddings.offset)
        for start in range(0, n, chunk_rows):
            count = min(chunk_rows, n - start)
            data = f.read(count * row_bytes)
            yield start, np.frombuffer(data, dtype=embeddings.dtype).reshape(-1, dim)


def _read_embeddings(path: Path, manifest: Manifest) -> np.ndarray:
    if not path.is_file():
        raise StoreError(f"{path} not found: the store is incomplete")
    try:
        matrix = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read {path}: {exc}") from None
    expected = (manifest.count, manifest.dim)
    if matrix.ndim != 2 or tuple(matrix.shape) != expected:
        raise StoreError(f"{path} has shape {tuple(matrix.shape)} but {MANIFEST} says count={expected[0]}, dim={expected[1]}")
    if str(matrix.dtype) != manifest.dtype:
        raise StoreError(f"{path} holds {matrix.dtype} but {MANIFEST} says dtype={manifest.dtype}")
    return matrix


def _read_metadata(path: Path, manifest: Manifest) -> pa.Table:
    if not path.is_file():
        raise StoreError(f"{path} not found: the store is incomplete")
    try:
        table = pq.ParquetFile(path, memory_map=True).read()  # not read_table: pyarrow.dataset imports pandas
    except (OSError, pa.ArrowException) as exc:
        raise StoreError(f"cannot read {path}: {exc}") from None
    if table.num_rows != manifest.count:
        raise StoreError(f"{path} has {table.num_rows} rows but {MANIFEST} says count={manifest.count}")
    if "id" not in table.column_names:
        raise StoreError(f"{path} has no 'id' column")
    if not {"path", "url", "row"} & set(table.column_names):
        raise StoreError(f"{path} has no 'path', 'url' or 'row' column: its images cannot be found")
    if pc.count_distinct(table.column("id")).as_py() != table.num_rows:
        raise StoreError(f"{path}: the 'id' column has duplicates")
    return table
