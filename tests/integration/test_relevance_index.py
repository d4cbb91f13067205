"""The relevance signal reads the same sample of the store whichever index answers: exact and approximate agree."""

from __future__ import annotations

from pathlib import Path

import pytest

from clip_search.engine import SearchEngine
from clip_search.store_index import build_store_index
from tests.conftest import copy_store


def test_an_approximate_index_gives_the_relevance_and_bands_of_exact_search(folder_store: Path, tmp_path: Path) -> None:
    store = copy_store(folder_store, tmp_path / "store")
    exact = SearchEngine.load(store, use_index=False)
    build_store_index(exact.store, exact.text_encoder.encode_texts, kind="hnsw")
    approximate = SearchEngine.load(store)
    assert approximate.index.kind == "hnsw" and exact.index.kind == "exact"
    for query in ("a red circle", "a blue square", "ein grünes Dreieck"):
        want = {h.row: h for h in exact.search(query, top_k=5).hits}
        got = approximate.search(query, top_k=5).hits
        assert got and all(h.row in want for h in got)
        for hit in got:
            assert hit.relevance == pytest.approx(want[hit.row].relevance, abs=0.01)  # HNSW scores are its own, to ~1e-3 and hit.band == want[hit.row].band
