"""SearchEngine on a store built by precompute: ordering, query kinds, classification, and model checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clip_search.config import NONE_OF_THESE
from clip_search.engine import SearchEngine
from clip_search.errors import QueryError, StoreError
from tests.conftest import draw_photo


@pytest.fixture(scope="module")
def engine(folder_store: Path) -> SearchEngine:
    return SearchEngine.load(folder_store)


def test_manifest_decides_the_text_encoder(engine: SearchEngine, tiny_student: Path) -> None:
    assert engine.multilingual
    assert Path(engine.text_encoder.model_id).resolve() == tiny_student.resolve()
    english = SearchEngine.load(engine.store.root, text_model="clip")
    assert not english.multilingual


def test_text_search_matches_brute_force(engine: SearchEngine) -> None:
    query = engine.encode_text("a red circle")
    reference = np.argsort(-(engine.store.vectors(range(len(engine.store))) @ query), kind="stable")[:5]
    result = engine.search("a red circle", top_k=5)
    assert [h.row for h in result.hits] == reference.tolist()
    assert [h.rank for h in result.hits] == [1, 2, 3, 4, 5]
    scores = [h.score for h in result.hits]
    assert scores == sorted(scores, reverse=True)
    assert all(Path(h.image).is_file() for h in result.hits)
    assert set(result.timings_ms) == {"encode", "search", "classify"}


def test_image_query_finds_the_same_image_first(engine: SearchEngine, photo_dir: Path) -> None:
    from PIL import Image

    target = photo_dir / "png" / "nested" / "blue-square.png"
    result = engine.search(image=Image.open(target), top_k=3)
    assert result.hits[0].id == "png/nested/blue-square.png"
    assert result.hits[0].score == pytest.approx(1.0, abs=2e-3)  # float16 storage


def test_text_plus_image_and_negative_change_the_query(engine: SearchEngine) -> None:
    image = draw_photo("green", "circle", 44)
    only_image = engine.search(image=image, top_k=16)
    both = engine.search("a yellow square", image=image, top_k=16)
    assert [h.row for h in both.hits] != [h.row for h in only_image.hits] or both.hits[0].score != only_image.hits[0].score
    plain = engine.search("a red circle", top_k=16)
    pushed = engine.search("a red circle", negative="a blue square", top_k=16)
    pos, neg = engine.encode_text("a red circle"), engine.encode_text("a blue square")
    expected = pos - 0.5 * neg
    expected /= np.linalg.norm(expected)
    assert [h.row for h in pushed.hits] == np.argsort(-(engine.store.vectors(range(len(engine.store))) @ expected), kind="stable").tolist()
    np.testing.assert_allclose([h.score for h in pushed.hits], np.sort(engine.store.vectors(range(len(engine.store))) @ expected)[::-1], rtol=1e-5)
    assert [h.score for h in pushed.hits] != [h.score for h in plain.hits]


def test_labels_classify_returned_images_from_stored_embeddings(engine: SearchEngine) -> None:
    labels = ["red", "green", "blue", "yellow"]
    result = engine.search("a blue square", top_k=4, labels=labels, top_labels=2, open_set=False)
    assert result.probabilities.shape == (4, 4) and result.none_of_these is None and result.label_columns == labels
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1, rtol=1e-5)
    for hit, probs in zip(result.hits, result.probabilities):
        assert len(hit.labels) == 2
        assert hit.labels[0] == (labels[int(np.argmax(probs))], pytest.approx(float(probs.max())))
        assert hit.labels[0][1] >= hit.labels[1][1]


def test_open_set_labels_add_none_of_these_and_keep_the_closed_ranking(engine: SearchEngine) -> None:
    labels = ["red", "green", "blue", "yellow"]
    closed = engine.search("a blue square", top_k=4, labels=labels, open_set=False)
    result = engine.search("a blue square", top_k=4, labels=labels, top_labels=5)
    assert result.label_columns == [*labels, NONE_OF_THESE] and result.label_table.shape == (4, 5)
    np.testing.assert_allclose(result.label_table.sum(axis=1), 1, rtol=1e-5)
    # the typed labels keep their order; "none of these" takes what the best label's fit leaves
    np.testing.assert_array_equal(result.probabilities.argmax(axis=1), closed.probabilities.argmax(axis=1))
    assert all(dict(h.labels)[NONE_OF_THESE] == pytest.approx(float(n)) for h, n in zip(result.hits, result.none_of_these))
    single = engine.search("a blue square", top_k=4, labels=["blue"])
    assert all(0.0 < dict(h.labels)["blue"] < 1.0 for h in single.hits)  # a yes/no, never a certain 100%


def test_empty_query_is_a_query_error(engine: SearchEngine) -> None:
    for empty in ("", "   \n\t"):
        with pytest.raises(QueryError, match="empty"):
            engine.search(empty)
    with pytest.raises(QueryError, match="top_k"):
        engine.search("x", top_k=0)


def test_store_made_by_another_model_is_refused(folder_store: Path, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="was made by .* not some-org/other-clip"):
        SearchEngine.load(folder_store, model="some-org/other-clip")


def test_text_model_of_another_dimension_is_refused(folder_store: Path, tmp_path: Path) -> None:
    from clip_search.scratch import new_text_encoder, train_wordpiece_tokenizer
    from clip_search.text_student import assemble_student

    base = new_text_encoder(train_wordpiece_tokenizer(["a b c"] * 10, vocab_size=50), tmp_path / "base")
    assemble_student(str(base), 8).save(str(tmp_path / "student8"))
    with pytest.raises(StoreError, match="gives 8-dimensional embeddings but the store .* holds 16-dimensional"):
        SearchEngine.load(folder_store, text_model=str(tmp_path / "student8"))
