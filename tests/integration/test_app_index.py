"""The app serves a store through its approximate index, and refuses to start on a stale one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gradio_client import Client

from clip_search.errors import StoreError
from clip_search.store import EmbeddingStore
from clip_search.store_index import build_store_index
from clip_search.ui import SEARCH_API, load_app
from tests.conftest import copy_store


def test_app_answers_through_the_index(folder_store: Path, tmp_path: Path) -> None:
    store = copy_store(folder_store, tmp_path / "store")
    engine, _ = load_app(str(store))
    build_store_index(engine.store, engine.text_encoder.encode_texts, kind="hnsw")
    engine, demo = load_app(str(store))
    assert engine.index.kind == "hnsw"
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        gallery, _, status = Client(url, verbose=False, analytics_enabled=False, download_files=False).predict("a red circle", "", None, 5, "", api_name=f"/{SEARCH_API}")
    finally:
        demo.close()
    assert len(gallery) == 5 and "⚠️" not in status
    expected = [Path(h.image).name for h in engine.search("a red circle", top_k=5).hits]
    assert [Path(item["image"]["path"]).name for item in gallery] == expected


def test_app_refuses_a_stale_index(folder_store: Path, tmp_path: Path) -> None:
    store = copy_store(folder_store, tmp_path / "store")
    engine, _ = load_app(str(store))
    build_store_index(EmbeddingStore.open(store), engine.text_encoder.encode_texts, kind="hnsw")
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["index"]["count"] = 3
    (store / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="index in .* was built for other rows than the store holds now"):
        load_app(str(store))
