"""Top-k search over a store's embeddings: exact, or approximate (faiss HNSW / IVF-PQ), and the choice between them."""

from clip_search.index.ann import AnnIndex
from clip_search.index.exact import ExactIndex, Index, IndexFileError
from clip_search.index.tune import build_index, choose_kind, recall_at_k

__all__ = [
    "AnnIndex",
    "ExactIndex",
    "Index",
    "IndexFileError",
    "build_index",
    "choose_kind",
    "recall_at_k",
]
