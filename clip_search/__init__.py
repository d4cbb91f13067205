"""clip-search: natural-language image search with CLIP, in any language, over your own photos.

The main entry points, imported lazily so that `import clip_search` stays cheap:
`precompute` (build an embedding store), `EmbeddingStore` (open one), `SearchEngine` (query one),
`ClipEncoder` / `StudentTextEncoder` (the models).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "precompute": "clip_search.precompute",
    "PrecomputeReport": "clip_search.precompute",
    "EmbeddingStore": "clip_search.store",
    "SearchEngine": "clip_search.engine",
    "SearchResult": "clip_search.engine",
    "Query": "clip_search.engine",
    "Hit": "clip_search.engine",
    "ClipEncoder": "clip_search.clip_model",
    "StudentTextEncoder": "clip_search.text_student",
    "open_source": "clip_search.sources",
    "ClipSearchError": "clip_search.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'clip_search' has no attribute {name!r}")
