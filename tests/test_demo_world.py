"""The shipped demo world: its models and store load offline, and the app's default answers in every language."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from gradio_client import Client

from clip_search import config
from clip_search.demo.captions import LANGUAGES, query_text
from clip_search.demo.scenes import Query
from clip_search.store import EmbeddingStore
from clip_search.ui import SEARCH_API, default_store, load_app


def test_demo_store_is_consistent_with_the_shipped_models() -> None:
    store = EmbeddingStore.open(config.DEMO_STORE)
    assert len(store) == 600 and store.dim == 64 and store.embeddings.dtype.name == "float16"
    assert Path(store.model_path()) == config.DEMO_CLIP.resolve()
    assert Path(store.text_model_path()) == config.DEMO_STUDENT.resolve()
    assert store.manifest.source.root == "images"  # relative: the repository can be cloned anywhere
    assert store.examples() is not None and store.examples().notice  # the demo's prompts and notice travel with it
    assert all(store.rows([0])[0].get(k) for k in ("caption", "shape", "color"))


@pytest.fixture(scope="module")
def demo_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, object]]:
    assert default_store() == str(config.DEMO_STORE)
    engine, demo = load_app(None)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        yield Client(url, verbose=False, analytics_enabled=False, download_files=str(tmp_path_factory.mktemp("dl"))), engine
    finally:
        demo.close()


@pytest.mark.parametrize("lang", LANGUAGES)
def test_offline_default_answers_in_every_language(demo_client, lang: str) -> None:
    client, engine = demo_client
    assert engine.multilingual
    query = query_text(Query(shape="circle", color="red"), lang)
    gallery, table, status = client.predict(query, "", None, 10, "", api_name=f"/{SEARCH_API}")
    assert len(gallery) == 10 and "error" not in status.lower()
    # Colour is what the demo CLIP learned best: most of the top 10 must be red, whatever the language.
    top = engine.search(query, top_k=10)
    assert sum(hit.metadata["color"] == "red" for hit in top.hits) >= 7
