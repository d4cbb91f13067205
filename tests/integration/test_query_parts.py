"""Query parts on the demo store (its real trained CLIP): "… but not …" works with an image query, and the text ↔ image
weight moves the results between the two."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from clip_search import config
from clip_search.engine import Query, SearchEngine

pytestmark = pytest.mark.skipif(not (config.DEMO_STORE / "manifest.json").is_file(), reason="no demo store in this checkout")


@pytest.fixture(scope="module")
def demo() -> SearchEngine:
    return SearchEngine.load(config.DEMO_STORE)


def _white_star(engine: SearchEngine) -> Image.Image:
    row = next(r for r in engine.store.rows(range(len(engine.store))) if r["shape"] == "star" and r["color"] == "white" and r["count"] == "1")
    return Image.open(Path(config.DEMO_STORE) / "images" / row["path"])


def test_but_not_white_stops_ranking_white_stars_first(demo: SearchEngine) -> None:
    """An image of a white star "but not white": white stars no longer come first (before, the image's own whiteness
    outweighed the push and the top three stayed white stars); a star still does."""
    star = _white_star(demo)
    alone = demo.search(image=star, top_k=10).hits
    assert [h.metadata["color"] for h in alone[:3]] == ["white"] * 3
    pushed = demo.search(image=star, negative="white", top_k=10).hits
    colours = [h.metadata["color"] for h in pushed]
    assert "white" not in colours[:5], colours
    assert pushed[0].metadata["shape"] == "star"
    assert colours.count("white") < [h.metadata["color"] for h in alone].count("white")
    batched = demo.search_many([Query(image=star, negative="white", top_k=10)])[0]
    assert [h.row for h in batched.hits] == [h.row for h in pushed]
    weaker = demo.search(image=star, negative="white", negative_weight=0.0, top_k=10).hits  # the weight is the push
    assert [h.metadata["color"] for h in weaker].count("white") > colours.count("white")


def test_image_weight_moves_between_text_and_image(demo: SearchEngine) -> None:
    star = _white_star(demo)
    text_side = demo.search("a red heart", image=star, image_weight=0.1, top_k=6).hits
    image_side = demo.search("a red heart", image=star, image_weight=0.9, top_k=6).hits
    alone = demo.search(image=star, top_k=3).hits
    assert all(h.metadata["shape"] == "heart" and h.metadata["color"] == "red" for h in text_side)
    assert [h.row for h in image_side[:3]] == [h.row for h in alone]  # the image's own nearest neighbours: white stars
    assert not any(h.metadata["shape"] == "heart" and h.metadata["color"] == "red" for h in image_side)
    with pytest.raises(Exception, match="image_weight must be from 0 to 1"):
        demo.search("a red heart", image=star, image_weight=1.5)


def test_a_query_past_the_token_limit_is_reported(demo: SearchEngine) -> None:
    assert demo.search("a red star " * 300, negative="blue", top_k=2).truncated == ("query",)
    assert demo.search("a red star", negative="blue " * 300, top_k=2).truncated == ("negative",)
    assert demo.search("a red star", top_k=2).truncated == ()
    many = demo.search_many([Query("a red star " * 300, top_k=2), Query("a red star", top_k=2)])
    assert [r.truncated for r in many] == [("query",), ()]


def test_precompute_writes_example_prompts(tiny_clip: Path, photo_dir: Path, tmp_path: Path) -> None:
    """A new store gets example prompts from its captions; `examples=` (the CLI's --examples FILE) replaces them, and
    an update without it keeps what the store has."""
    import json
    import shutil

    from clip_search.precompute import precompute
    from clip_search.store import ExamplePrompt, read_examples

    folder = tmp_path / "photos"
    shutil.copytree(photo_dir / "jpg", folder)
    names = sorted(p.name for p in folder.glob("*.jpg"))
    (folder / "metadata.jsonl").write_text("".join(json.dumps({"file_name": n, "caption": f"a {n[:-4].replace('-', ' ')}"}) + "\n" for n in names))
    store = tmp_path / "store"
    precompute(str(folder), store, model=str(tiny_clip), text_model=None, batch_size=4, num_workers=0, progress=False)
    from_captions = read_examples(store)
    assert from_captions is not None and set(from_captions.queries) <= {f"a {n[:-4].replace('-', ' ')}" for n in names}
    assert len(from_captions.queries) >= 4 and all(p.language is None for p in from_captions.prompts)

    given = tmp_path / "prompts.txt"
    given.write_text("a red circle\nde: ein roter Kreis\n", encoding="utf-8")
    precompute(str(folder), store, model=str(tiny_clip), text_model=None, batch_size=4, num_workers=0, progress=False, examples=given)
    assert read_examples(store).prompts == (ExamplePrompt("a red circle"), ExamplePrompt("ein roter Kreis", "de"))
    precompute(str(folder), store, model=str(tiny_clip), text_model=None, batch_size=4, num_workers=0, progress=False)
    assert read_examples(store).prompts == (ExamplePrompt("a red circle"), ExamplePrompt("ein roter Kreis", "de"))
    english_only = SearchEngine.load(store).summary()  # no student: the German prompt is not offered
    assert english_only.examples == ("a red circle",) and english_only.languages == ("en",)


def test_a_bad_image_weight_fails_only_its_own_request(demo: SearchEngine) -> None:
    star = _white_star(demo)
    bad, good = demo.search_many([Query("a red heart", image=star, image_weight=2.0), Query("a red heart", top_k=2)])
    assert "image_weight must be from 0 to 1" in str(bad) and len(good.hits) == 2
