"""Which index a store of a given size gets, and tuning an ANN index's search knobs to a recall target."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from clip_search.index.ann import AnnIndex
from clip_search.index.exact import ExactIndex, Index

log = logging.getLogger(__name__)

# "auto": exact search below EXACT_MAX_ROWS (exact p50 grows linearly with rows: NOTES.md saw 1.7 ms at 25k on an idle
# dev machine, so ~14 ms at 200k; bench/scale.py on a busy one saw 11.7 ms at 25k and 0.74 s at 1M), IVF-SQ8 + a short
# exact re-rank up to IVFSQ_MAX_ROWS (≈ 520 B/row in memory: 5.2 GB at 10M, 6.3 GB at 12M; it met recall@10 ≥ 0.95 at
# 1M in 2.9 ms and at 10M in 34 ms, where IVF-PQ needed a 1000-row re-rank and still missed at 10M; see
# bench/RESULTS.md "Search at scale"), IVF-PQ + exact re-rank above, where SQ8 codes no longer fit in 8 GiB.
# HNSW is built only when asked for: at 1M its build took longer than IVF-SQ8's for no better recall per ms.
EXACT_MAX_ROWS = 200_000
IVFSQ_MAX_ROWS = 12_000_000

# The knobs are tuned to recall_target + TUNE_MARGIN on the tuning queries, so that recall on queries not tuned on
# meets the target: tuned to exactly 0.95, IVF-SQ8 at 1M measured 0.9496 on the other half (bench/RESULTS.md).
TUNE_MARGIN = 0.01
EF_SEARCH_STEPS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
NPROBE_STEPS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
RERANK_FACTORS = (2, 5, 10, 20, 50, 100)  # shortlist sizes tried, as multiples of k
# Re-ranking one row (a random read of the memory-mapped float16 store, often a page fault, then a dot product) costs
# about as much as scanning this many bytes of codes: bench/scale.py's machine, loaded, re-ranked 500 random rows in
# ~6.6 ms (13 µs a row) and scanned ~4 MB of SQ8 codes in ~3 ms (0.75 ns a byte).
RERANK_ROW_BYTES = 16_384


def choose_kind(n: int) -> str:
    """The index kind "auto" picks for n rows: exact, ivfsq or ivfpq."""
    if n < EXACT_MAX_ROWS:
        return "exact"
    if n < IVFSQ_MAX_ROWS:
        return "ivfsq"
    return "ivfpq"


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of the share of the true top-k rows (-1 padding ignored) that were found."""
    found, truth = np.atleast_2d(found), np.atleast_2d(truth)
    hits, total = 0, 0
    for f, t in zip(found, truth):
        t = t[t >= 0]
        hits += len(np.intersect1d(f[f >= 0], t))
        total += len(t)
    return hits / total if total else 1.0


def _prefix_recall(shortlist: np.ndarray, truth: np.ndarray, size: int) -> float:
    """Recall@k after an exact re-rank of the first `size` shortlisted rows: the true rows among them."""
    return recall_at_k(shortlist[:, :size], truth)


def _tune_hnsw(index: AnnIndex, queries: np.ndarray, truth: np.ndarray, k: int, target: float) -> tuple[dict, float]:
    """The lowest efSearch reaching `target` on the tuning queries (the highest tried when none does)."""
    recall = 0.0
    for ef in EF_SEARCH_STEPS:
        if ef < k:
            continue
        index.params["efSearch"] = ef
        recall = recall_at_k(index.search(queries, k)[0], truth)
        log.info("hnsw efSearch=%d: recall@%d %.4f", ef, k, recall)
        if recall >= target:
            break
    return {"efSearch": index.params["efSearch"]}, recall


def _tune_ivf(index: AnnIndex, queries: np.ndarray, truth: np.ndarray, k: int, target: float) -> tuple[dict, float]:
    """The cheapest (nprobe, rerank) reaching `target` on the tuning queries, by code bytes scanned + rows re-ranked."""
    n = index.embeddings.shape[0]
    nlist, code_bytes = index.params["nlist"], index.code_bytes
    sizes = [k * f for f in RERANK_FACTORS]
    best: tuple[float, dict, float] | None = None
    fallback: tuple[float, dict] = (-1.0, {})
    for nprobe in NPROBE_STEPS:
        if nprobe > nlist:
            break
        index.params["nprobe"] = nprobe
        shortlist, _ = index.shortlist(queries, max(sizes))
        recalls = [_prefix_recall(shortlist, truth, size) for size in sizes]
        for size, recall in zip(sizes, recalls):
            cost = nprobe * n / nlist * code_bytes + size * RERANK_ROW_BYTES
            if recall > fallback[0]:
                fallback = (recall, {"nprobe": nprobe, "rerank": size})
            if recall >= target and (best is None or cost < best[0]):
                best = (cost, {"nprobe": nprobe, "rerank": size}, recall)
        log.info("%s nprobe=%d: recall@%d after re-rank of %s: %s", index.kind, nprobe, k, sizes, [round(r, 4) for r in recalls])
        if recalls[0] >= target:
            break  # more lists only cost more: even the shortest shortlist reaches the target
    if best is None:
        log.warning("%s: recall target %.3f not reached; best %.4f with %s", index.kind, target, *fallback)
        return fallback[1], fallback[0]
    return best[1], best[2]


def build_index(
    embeddings: np.ndarray,
    queries: np.ndarray,
    *,
    kind: str = "auto",
    recall_target: float = 0.95,
    k: int = 10,
    threads: int | None = None,
    params: dict[str, Any] | None = None,
    truth: np.ndarray | None = None,
) -> tuple[Index, dict]:
    """Build an index of `kind` and tune its search knobs to `recall_target` recall@k on half of `queries`.

    `queries` are text embeddings (the side of CLIP's modality gap that searches happen from). The first half
    tunes (to `recall_target` + TUNE_MARGIN) efSearch (hnsw) or nprobe + re-rank shortlist (ivfsq, ivfpq) to the lowest setting reaching the target against
    exact search; the second half measures the recall reported. Returns the index and an info dict.
    `truth` (the exact top-k rows of `queries`, when the caller has them) saves computing them again.
    """
    n, dim = embeddings.shape
    kind = choose_kind(n) if kind == "auto" else kind
    started = time.perf_counter()
    if kind == "exact":
        index = ExactIndex(embeddings)
        info = {"kind": "exact", "params": {}, "build_seconds": time.perf_counter() - started, "recall_at_10": 1.0,
                "bytes_per_vector": float(dim * 4 if index.matrix is not None else 0), "tuned_on": 0, "measured_on": 0}
        return index, info
    ann = AnnIndex.build(embeddings, kind, params, threads=threads)
    build_seconds = time.perf_counter() - started
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    half = len(queries) // 2
    tune_q, measure_q = queries[:half], queries[half:]
    if truth is None:
        truth = ExactIndex(embeddings).search(queries, k)[0]
    truth = np.asarray(truth)[:, :k]
    tune = _tune_hnsw if kind == "hnsw" else _tune_ivf
    knobs, tuned_recall = tune(ann, tune_q, truth[:half], k, min(1.0, recall_target + TUNE_MARGIN))
    ann.params.update(knobs)
    measured = recall_at_k(ann.search(measure_q, k)[0], truth[half:])
    info = {"kind": kind, "params": dict(ann.params), "build_seconds": build_seconds, "recall_at_10": measured,
            "tuned_recall": tuned_recall, "k": k, "bytes_per_vector": ann.bytes_per_vector,
            "tuned_on": len(tune_q), "measured_on": len(measure_q)}
    log.info("%s index: %s", kind, info)
    return ann, info
