"""The index protocol, the top-k selection every index shares, and exact search over a float16 matrix."""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np

from clip_search.config import EXACT_CHUNK_ROWS, EXACT_FP16_SCAN_QUERIES, EXACT_MAX_MEMORY
from clip_search.errors import StoreError

log = logging.getLogger(__name__)



class IndexFileError(StoreError):
    """An index file next to a store is missing or unreadable."""


class Index(Protocol):
    """Top-k inner-product search over the rows of a store's embedding matrix."""

    kind: str

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Q×D float32 queries -> (rows Q×k int64, scores Q×k float32), best first, padded with -1 / -inf."""
        ...


def empty_result(q: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Q×k rows of -1 and scores of -inf: the padding of a result."""
    return np.full((q, k), -1, np.int64), np.full((q, k), -np.inf, np.float32)


def select_top_k(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of Q×M candidate `scores` (with their `rows`, Q×M or M), best first, ties by row number.

    Candidates scored -inf (filtered out) or with row -1 are never returned: short results are padded with -1 / -inf.
    """
    q, m = scores.shape
    out_rows, out_scores = empty_result(q, k)
    if k == 0 or m == 0:
        return out_rows, out_scores
    rows = np.broadcast_to(rows, scores.shape)
    if m > k:
        kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1]
        keep = scores >= kth[:, None]
    else:
        keep = np.ones(scores.shape, bool)
    keep &= (scores > -np.inf) & (rows >= 0)
    qi, cj = np.nonzero(keep)
    s, r = scores[qi, cj], rows[qi, cj]
    order = np.lexsort((r, -s, qi))
    qi, s, r = qi[order], s[order], r[order]
    rank = np.arange(len(qi)) - np.searchsorted(qi, qi)
    top = rank < k
    out_rows[qi[top], rank[top]] = r[top]
    out_scores[qi[top], rank[top]] = s[top]
    return out_rows, out_scores


def merge_top_k(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of two partial results (rows, scores)."""
    return select_top_k(np.concatenate([a[1], b[1]], axis=1), np.concatenate([a[0], b[0]], axis=1), k)


def as_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    """Queries as a C-contiguous Q×D float32 matrix."""
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    if queries.shape[1] != dim:
        raise ValueError(f"queries have dimension {queries.shape[1]}, the index {dim}")
    return queries


def check_allowed(allowed: np.ndarray | None, n: int) -> np.ndarray | None:
    """`allowed` as a bool mask of length n (or None)."""
    if allowed is None:
        return None
    allowed = np.asarray(allowed, dtype=bool)
    if allowed.shape != (n,):
        raise ValueError(f"allowed mask has shape {allowed.shape}, expected ({n},)")
    return allowed


def _thread_count() -> int:
    """Threads for chunk scanning: the cores this process may use."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


class _Fp16Scanner:
    """A faiss float16 flat index whose code buffer is refilled chunk by chunk (no float32 copy, SIMD dot products)."""

    def __init__(self, dim: int, rows: int) -> None:
        import faiss

        self.faiss = faiss
        self.index = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        self.index.add_sa_codes(np.zeros((rows, dim * 2), np.uint8))
        self.buffer = faiss.rev_swig_ptr(self.index.codes.data(), rows * dim * 2).reshape(rows, dim * 2)

    def search(self, chunk: np.ndarray, start: int, queries: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of `queries` over one float16 chunk whose first row is `start`."""
        rows = len(chunk)
        np.copyto(self.buffer[:rows], chunk.view(np.uint8))
        self.index.ntotal = rows
        params = None
        if allowed is not None:
            bits = np.packbits(allowed[start : start + rows], bitorder="little")
            params = self.faiss.SearchParameters(sel=self.faiss.IDSelectorBitmap(rows, self.faiss.swig_ptr(bits)))
        scores, ids = self.index.search(queries, min(k, rows), params=params)
        ids = np.where(ids >= 0, ids + start, -1)
        return ids, np.where(ids >= 0, scores, -np.inf).astype(np.float32)


class ExactIndex:
    """Exact top-k: a float32 copy in memory when it fits in `max_memory`, else chunks of the float16 matrix."""

    kind = "exact"

    def __init__(self, embeddings: np.ndarray, *, max_memory: int | None = None, chunk_rows: int = EXACT_CHUNK_ROWS) -> None:
        self.embeddings = embeddings
        self.chunk_rows = max(1, int(chunk_rows))
        self.max_memory = EXACT_MAX_MEMORY if max_memory is None else int(max_memory)
        n, d = embeddings.shape
        self.matrix: np.ndarray | None = None
        if n * d * 4 <= self.max_memory:
            self.matrix = self._float32_copy()
        self.path = "float32 in memory" if self.matrix is not None else "chunked float16"
        log.info("exact index over %d×%d: %s", n, d, self.path)
        self._scanners: list[_Fp16Scanner] = []
        self._lock = threading.Lock()  # the scanners' buffers serve one search at a time

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    def _float32_copy(self) -> np.ndarray:
        """The whole matrix as float32, converted chunk by chunk."""
        out = np.empty(self.embeddings.shape, np.float32)
        for start in range(0, len(out), self.chunk_rows):
            out[start : start + self.chunk_rows] = self.embeddings[start : start + self.chunk_rows]
        return out

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k rows and scores of each query, best first, ties by row number."""
        queries = as_queries(queries, self.embeddings.shape[1])
        allowed = check_allowed(allowed, len(self))
        k = max(0, int(k))
        if k == 0 or len(self) == 0:
            return empty_result(len(queries), k)
        if self.matrix is not None:
            return self._search_matrix(self.matrix, 0, queries, k, allowed)
        if len(queries) <= EXACT_FP16_SCAN_QUERIES and self.embeddings.dtype == np.float16:
            with self._lock:
                return self._search_fp16(queries, k, allowed)
        return self._search_chunks(queries, k, allowed)

    def _search_matrix(self, matrix: np.ndarray, start: int, queries: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k over a float32 block whose first row is `start` (GEMM, then selection)."""
        scores = queries @ matrix.T
        if allowed is not None:
            scores[:, ~allowed[start : start + len(matrix)]] = -np.inf
        return select_top_k(scores, np.arange(start, start + len(matrix), dtype=np.int64), k)

    def _search_chunks(self, queries: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Many queries: each chunk converted to float32 once, scored by GEMM, merged into a running top-k."""
        best = empty_result(len(queries), k)
        for start in range(0, len(self), self.chunk_rows):
            chunk = np.asarray(self.embeddings[start : start + self.chunk_rows], dtype=np.float32)
            best = merge_top_k(best, self._search_matrix(chunk, start, queries, k, allowed), k)
        return best

    def _search_fp16(self, queries: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Few queries: float16 chunks scanned by faiss, one thread per interleaved share of the chunks."""
        threads = _thread_count()
        while len(self._scanners) < threads:
            self._scanners.append(_Fp16Scanner(self.embeddings.shape[1], self.chunk_rows))
        starts = list(range(0, len(self), self.chunk_rows))

        def share(t: int) -> tuple[np.ndarray, np.ndarray]:
            best = empty_result(len(queries), k)
            for start in starts[t::threads]:
                chunk = self.embeddings[start : start + self.chunk_rows]
                best = merge_top_k(best, self._scanners[t].search(chunk, start, queries, k, allowed), k)
            return best

        with ThreadPoolExecutor(threads) as pool:
            parts = list(pool.map(share, range(threads)))
        best = parts[0]
        for part in parts[1:]:
            best = merge_top_k(best, part, k)
        return best
