"""Approximate top-k with faiss (inner product): an HNSW graph, or an inverted file of 8-bit scalar codes (IVF-SQ8) or
of product-quantizer codes (IVF-PQ), each with an optional exact re-rank of a shortlist against the float16 store."""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from clip_search.index.exact import IndexFileError, as_queries, check_allowed, empty_result, select_top_k

log = logging.getLogger(__name__)

KINDS = ("hnsw", "ivfsq", "ivfpq")
IVF_KINDS = ("ivfsq", "ivfpq")
# Defaults per kind, before tuning (build_index tunes efSearch, or nprobe and the re-rank shortlist, to a recall target).
DEFAULTS: dict[str, dict[str, Any]] = {
    "hnsw": {"M": 32, "efConstruction": 40, "storage": "SQ8", "efSearch": 64, "rerank": 0},
    # IVF-SQ8: 1 byte a dimension (≈ 520 B/row) scores almost exactly, so a short re-rank suffices; ~4·√n lists
    "ivfsq": {"nlist": None, "storage": "SQ8", "nprobe": 32, "rerank": 20},
    # IVF-PQ: 64-72 B/row for stores whose SQ8 codes would not fit in memory; PQ scores need a long re-rank
    "ivfpq": {"nlist": None, "m": None, "nbits": 8, "nprobe": 16, "rerank": 100},
}
LISTS_PER_SQRT_N = {"ivfsq": 4, "ivfpq": 1}  # nlist ≈ this × √n, rounded to a power of two
MAX_NLIST = {"ivfsq": 4096, "ivfpq": 2048}  # more lists cost k-means and assignment time that 2 cores do not have
PQ_TRAIN_PER_CENTROID = 64  # PQ codebooks train on at most 64 × 2^nbits rows (faiss' 8-d k-means is slow here)
PQ_TRAIN_ITERATIONS = 10
TRAIN_PER_LIST = 50  # training rows per coarse list (faiss wants at least 39)
MAX_TRAIN_ROWS = 200_000
ADD_CHUNK_ROWS = 65_536  # rows converted to float32 and added at a time
EXACT_FILTER_ROWS = 20_000  # a filter allowing at most this many rows is searched exactly instead
RERANK_QUERY_BLOCK = 64  # queries re-ranked together (bounds the gathered Q×S×D block)
# kept for callers of the earlier names
HNSW_DEFAULTS, IVFPQ_DEFAULTS = DEFAULTS["hnsw"], DEFAULTS["ivfpq"]


def _check_kind(kind: str) -> None:
    """ValueError unless `kind` is an ANN kind."""
    if kind not in KINDS:
        raise ValueError(f"unknown ANN kind {kind!r}: expected one of {KINDS}")


def default_params(kind: str, n: int, dim: int) -> dict[str, Any]:
    """The build and search parameters of `kind` for n rows of dimension dim, before tuning (a fresh dict)."""
    _check_kind(kind)
    params = dict(DEFAULTS[kind])
    if kind in IVF_KINDS:
        lists = LISTS_PER_SQRT_N[kind] * math.sqrt(max(1, n))
        params["nlist"] = int(min(MAX_NLIST[kind], max(16, 2 ** round(math.log2(lists)))))
    if kind == "ivfpq":
        params["m"] = next(m for m in (dim // 8, dim // 4, dim // 2, dim) if m >= 1 and dim % m == 0)
    return params


def factory_string(kind: str, params: dict[str, Any]) -> str:
    """The faiss index_factory description of an index of `kind`."""
    if kind == "hnsw":
        return f"HNSW{params['M']},{params['storage']}"
    if kind == "ivfsq":
        return f"IVF{params['nlist']},{params['storage']}"
    return f"IVF{params['nlist']},PQ{params['m']}x{params['nbits']}np"  # np: no polysemous training (slow, unused)


def set_threads(threads: int | None) -> int:
    """Set faiss' OpenMP threads (default: every core this process may use); returns the count."""
    import faiss

    if threads is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    faiss.omp_set_num_threads(int(threads))
    return int(threads)


class _RowReader:
    """Rows of a memory-mapped matrix read with pread from its file, not through the mapping.

    A re-rank reads a few hundred scattered rows per query; through the mapping, every first touch is a page fault that
    also maps the page's cached neighbours (the kernel's fault-around), so a long-running process' RSS climbs towards
    the whole store (measured at 10M rows: 9.6 GiB after 500 queries). pread copies just the rows from the page cache.
    """

    def __init__(self, path: str, start: int, row_stride: int, row_bytes: int, dtype: np.dtype, dim: int) -> None:
        self.fd = os.open(path, os.O_RDONLY)
        self.start, self.row_stride, self.row_bytes, self.dtype, self.dim = start, row_stride, row_bytes, dtype, dim

    @classmethod
    def of(cls, embeddings: np.ndarray) -> _RowReader | None:
        """A reader for a row-contiguous view of a read-only np.memmap, else None (read through numpy)."""
        mapping, name = getattr(embeddings, "_mmap", None), getattr(embeddings, "filename", None)
        if mapping is None or not name or embeddings.ndim != 2 or embeddings.strides[1] != embeddings.itemsize:
            return None
        import mmap

        # the mapping starts at the file offset numpy rounded down; a view's rows sit `delta` bytes into it
        base = np.frombuffer(mapping, np.uint8).__array_interface__["data"][0]
        delta = embeddings.__array_interface__["data"][0] - base
        offset = int(getattr(embeddings, "offset", 0))
        start = offset - offset % mmap.ALLOCATIONGRANULARITY + delta
        try:
            return cls(name, start, embeddings.strides[0], embeddings.shape[1] * embeddings.itemsize, embeddings.dtype, embeddings.shape[1])
        except OSError:
            return None

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """The given (sorted, unique) rows, in their stored dtype."""
        out = np.empty((len(rows), self.dim), self.dtype)
        view = memoryview(out).cast("B")
        for i, row in enumerate(rows.tolist()):
            got = os.preadv(self.fd, [view[i * self.row_bytes : (i + 1) * self.row_bytes]], self.start + row * self.row_stride)
            if got != self.row_bytes:
                raise IndexFileError(f"short read of row {row} from the store's embeddings file; reopen the store")
        return out

    def __del__(self) -> None:
        try:
            os.close(self.fd)
        except (OSError, AttributeError):
            pass


def _float32_rows(embeddings: np.ndarray, rows: np.ndarray, reader: _RowReader | None = None) -> np.ndarray:
    """The given rows (any order, repeats allowed) as a float32 matrix, reading only those rows."""
    unique, inverse = np.unique(rows, return_inverse=True)
    picked = reader.rows(unique) if reader is not None else embeddings[unique]
    return np.asarray(picked, dtype=np.float32)[inverse]


def _training_sample(embeddings: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """`count` rows drawn at random (sorted reads) as float32."""
    n = embeddings.shape[0]
    if count >= n:
        return np.asarray(embeddings, dtype=np.float32)
    rows = np.sort(np.random.default_rng(seed).choice(n, size=count, replace=False))
    return np.asarray(embeddings[rows], dtype=np.float32)


class AnnIndex:
    """A faiss index over a store's rows (ids = row numbers), searched with an optional filter and exact re-rank."""

    def __init__(self, index: Any, kind: str, params: dict[str, Any], embeddings: np.ndarray) -> None:
        self.index = index
        self.kind = kind
        self.params = dict(params)
        self.embeddings = embeddings
        self._reader = _RowReader.of(embeddings)  # re-rank reads: pread from the store file when it is memory-mapped

    @classmethod
    def build(cls, embeddings: np.ndarray, kind: str, params: dict | None = None, *, threads: int | None = None) -> AnnIndex:
        """Train and fill an index of `kind` ("hnsw", "ivfsq" or "ivfpq") over every row of `embeddings`."""
        import faiss

        n, dim = embeddings.shape
        params = dict(default_params(kind, n, dim), **(params or {}))  # checks the kind
        set_threads(threads)
        started = time.perf_counter()
        index = faiss.index_factory(dim, factory_string(kind, params), faiss.METRIC_INNER_PRODUCT)
        if kind == "hnsw":
            index.hnsw.efConstruction = int(params["efConstruction"])
        elif kind == "ivfpq":
            clustering = faiss.downcast_index(faiss.extract_index_ivf(index)).pq.cp
            clustering.max_points_per_centroid, clustering.niter = PQ_TRAIN_PER_CENTROID, PQ_TRAIN_ITERATIONS
        train_rows = min(n, max(TRAIN_PER_LIST * int(params.get("nlist") or 0), 65_536), MAX_TRAIN_ROWS)
        index.train(_training_sample(embeddings, train_rows))
        log.info("%s: trained %s on %d rows in %.1f s", kind, factory_string(kind, params), train_rows, time.perf_counter() - started)
        for start in range(0, n, ADD_CHUNK_ROWS):
            index.add(np.asarray(embeddings[start : start + ADD_CHUNK_ROWS], dtype=np.float32))
            if (start // ADD_CHUNK_ROWS) % 16 == 15:
                log.info("%s: added %d of %d rows in %.0f s", kind, index.ntotal, n, time.perf_counter() - started)
        log.info("%s: built over %d rows in %.1f s", kind, n, time.perf_counter() - started)
        return cls(index, kind, params, embeddings)

    @staticmethod
    def file_name(kind: str) -> str:
        """The file an index of `kind` is saved in."""
        return f"index-{kind}.faiss"

    def save(self, folder: Path) -> list[str]:
        """Write the faiss index into `folder` (atomically); returns the file names written."""
        import faiss

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        name = self.file_name(self.kind)
        tmp = folder / f".{name}.partial"
        faiss.write_index(self.index, str(tmp))
        os.replace(tmp, folder / name)
        return [name]

    @classmethod
    def load(cls, folder: Path, kind: str, params: dict, embeddings: np.ndarray) -> AnnIndex:
        """Read an index saved by `save`; IndexFileError names a missing, unreadable or mismatched file."""
        import faiss

        _check_kind(kind)
        path = Path(folder) / cls.file_name(kind)
        if not path.is_file():
            raise IndexFileError(f"{path}: index file is missing; rebuild the index")
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise IndexFileError(f"{path}: cannot read the index ({str(exc).splitlines()[0][:200]}); rebuild it") from exc
        if index.ntotal != embeddings.shape[0] or index.d != embeddings.shape[1]:
            raise IndexFileError(
                f"{path}: index holds {index.ntotal}×{index.d} vectors, the store {embeddings.shape[0]}×{embeddings.shape[1]}; rebuild it"
            )
        return cls(index, kind, dict(default_params(kind, *embeddings.shape), **params), embeddings)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def bytes_per_vector(self) -> float:
        """Size of the serialised index per row (the float16 store read by the re-rank is not counted)."""
        import faiss

        return float(faiss.serialize_index(self.index).nbytes) / max(1, len(self))

    @property
    def code_bytes(self) -> int:
        """Bytes of one row's code that a search scans (an IVF list entry; for HNSW, the stored vector)."""
        import faiss

        if self.kind in IVF_KINDS:
            return int(faiss.extract_index_ivf(self.index).code_size)
        return int(faiss.downcast_index(self.index.storage).code_size)

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-k rows and scores of each query, best first; only `allowed` rows when given."""
        queries = as_queries(queries, self.embeddings.shape[1])
        allowed = check_allowed(allowed, len(self))
        k = max(0, int(k))
        if k == 0 or len(self) == 0:
            return empty_result(len(queries), k)
        if allowed is not None and np.count_nonzero(allowed) <= EXACT_FILTER_ROWS:
            return self._search_subset(queries, k, np.flatnonzero(allowed))
        rerank = int(self.params.get("rerank") or 0)
        ids, scores = self.shortlist(queries, max(k, rerank), allowed)
        if rerank:
            return self.rerank(queries, ids, k)
        return select_top_k(np.where(ids >= 0, scores, -np.inf).astype(np.float32), ids, k)

    def shortlist(self, queries: np.ndarray, size: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Rows (Q×size, -1 padded) and approximate scores of the faiss search, best first by those scores."""
        import faiss

        keep = []  # objects faiss points into, alive until the search returns
        sel = None
        if allowed is not None:
            bits = np.packbits(allowed, bitorder="little")
            sel = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bits))
            keep.append(bits)
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(int(self.params["efSearch"]), size), sel=sel)
        else:
            params = faiss.SearchParametersIVF(nprobe=int(self.params["nprobe"]), sel=sel)
        scores, ids = self.index.search(queries, int(min(size, len(self))), params=params)
        return ids, scores

    def rerank(self, queries: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k of each query among its shortlisted rows, scored against the float16 store."""
        parts = []
        for start in range(0, len(queries), RERANK_QUERY_BLOCK):
            block = ids[start : start + RERANK_QUERY_BLOCK]
            vectors = _float32_rows(self.embeddings, np.where(block >= 0, block, 0).ravel(), self._reader).reshape(*block.shape, -1)
            scores = np.einsum("qsd,qd->qs", vectors, queries[start : start + RERANK_QUERY_BLOCK])
            parts.append(select_top_k(np.where(block >= 0, scores, -np.inf).astype(np.float32), block, k))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _search_subset(self, queries: np.ndarray, k: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k over a few allowed rows (a selective filter defeats a graph or a few coarse lists)."""
        if len(rows) == 0:
            return empty_result(len(queries), k)
        scores = queries @ np.asarray(self.embeddings[rows], dtype=np.float32).T
        return select_top_k(scores, rows.astype(np.int64), k)
