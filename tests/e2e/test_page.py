"""The search page in headless Chromium on the demo store, at a phone's width and a desktop's: tile geometry, uncut
captions, previews, the image chip and weights, the no-strong-match banner, shareable URLs, more results, sort and
filter, and the example gallery; and the new inputs through the raw HTTP APIs."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from gradio_client import Client, handle_file

from clip_search import config
from clip_search.engine import Query, SearchEngine, SearchResult
from clip_search.errors import ClipSearchError
from clip_search.page_view import NO_STRONG_MATCH
from clip_search.ui import SEARCH_OPTIONS_API, build_app

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
needs_demo = pytest.mark.skipif(not (config.DEMO_STORE / "manifest.json").is_file(), reason="no demo store in this checkout")
STOP_WORDS = {"a", "an", "the", "of", "on", "in", "photo", "one"}


class BandedEngine(SearchEngine):
    """The demo engine with a stand-in relevance signal that knows the truth, for testing the page alone: a hit is
    "strong" when its caption holds every content word of the query, "weak" when it holds some, else "none";
    relevance is the share held. It replaces the engine's own bands (`clip_search.relevance`), which on the demo's
    small CLIP still find strong matches for out-of-world queries (README, eval), so that the banner's test does
    not depend on them."""

    def search_many(self, requests: Sequence[Query | dict[str, Any]]) -> list[SearchResult | ClipSearchError]:
        results = super().search_many(requests)
        for request, result in zip(requests, results):
            text = request.text if isinstance(request, Query) else request.get("text")
            if isinstance(result, ClipSearchError) or not text:
                continue
            words = [w for w in re.findall(r"\w+", text.lower()) if w not in STOP_WORDS]
            for i, hit in enumerate(result.hits):
                held = sum(w in (hit.caption or "").lower() for w in words) / max(1, len(words))
                result.hits[i] = replace(hit, relevance=held, band="strong" if held == 1 else "weak" if held > 0 else "none")
        return results


@pytest.fixture(scope="module")
def demo_app() -> Iterator[tuple[BandedEngine, str]]:
    if not (config.DEMO_STORE / "manifest.json").is_file():
        pytest.skip("no demo store in this checkout")
    engine = BandedEngine.load(config.DEMO_STORE)
    demo = build_app(engine)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True)
    try:
        yield engine, url
    finally:
        demo.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def _white_star(engine: SearchEngine) -> Path:
    row = next(r for r in engine.store.rows(range(len(engine.store))) if r["shape"] == "star" and r["color"] == "white" and r["count"] == "1")
    return config.DEMO_STORE / "images" / row["path"]


@contextmanager
def _page(browser: Any, width: int = 1280, height: int = 900) -> Iterator[Any]:
    """A fresh browser tab of the given viewport, closed afterwards."""
    page = browser.new_page(viewport={"width": width, "height": height})
    try:
        yield page
    finally:
        page.close()


def _tiles(page: Any) -> list[dict[str, float]]:
    return page.evaluate(
        "() => [...document.querySelectorAll('#results .cs-tile')].map(t => { const r = t.getBoundingClientRect();"
        " return {left: r.left, right: r.right, top: r.top, bottom: r.bottom}; })"
    )


@needs_demo
@needs_chromium
@pytest.mark.parametrize(("width", "columns"), [(390, (2, 3)), (1280, (5, 6))])
def test_tiles_fit_the_screen_and_show_everything(demo_app: tuple[BandedEngine, str], browser: Any, width: int, columns: tuple[int, int]) -> None:
    """At a phone's and a desktop's width: every tile lies inside the viewport horizontally, in 2–3 or 5–6 columns,
    each one reachable by scrolling down; captions and labels are whole; a preview has the metadata and the original."""
    from playwright.sync_api import expect

    engine, url = demo_app
    with _page(browser, width, 844) as page:
        page.goto(f"{url}?q=a+red+star&labels=red,+blue&k=24")
        expect(page.locator("#status")).to_contain_text("24 results for “a red star”", timeout=30_000)
        boxes = _tiles(page)
        assert len(boxes) == 24
        assert all(box["left"] >= 0 and box["right"] <= width for box in boxes), boxes
        assert columns[0] <= len({round(box["left"]) for box in boxes}) <= columns[1]
        assert page.evaluate("document.documentElement.scrollWidth") <= width  # no horizontal scroll at all
        last = page.locator("#results .cs-tile").last
        last.scroll_into_view_if_needed()
        box = last.bounding_box()
        assert box is not None and 0 <= box["x"] and box["x"] + box["width"] <= width and 0 <= box["y"] < 844

        hits = engine.search("a red star", top_k=24, labels=["red", "blue"]).hits
        captions = page.locator("#results .cs-caption").all_inner_texts()
        assert captions == [hit.caption for hit in hits]  # whole, not cut
        assert page.locator("#results .cs-label").all_inner_texts() == [f"{hit.labels[0][0]} {hit.labels[0][1]:.0%}" for hit in hits]
        assert page.evaluate("() => [...document.querySelectorAll('#results .cs-caption')].every(c => c.scrollWidth <= c.clientWidth + 1)")
        tip = page.locator("#results .cs-score").first.get_attribute("title")
        assert tip is not None and "Relevance" in tip  # the score says what it means

        expect(page.locator("#labels-panel")).to_be_visible()
        table_open = page.locator("#label-table").is_visible()
        assert table_open == (width >= config.APP_NARROW_WIDTH)  # the labels table starts collapsed on a phone

        page.locator("#results .cs-open").first.click()
        preview = page.locator("#preview-1")
        expect(preview).to_be_visible()
        for field in ("shape", "color", "size", "count", "position", "background", hits[0].id):
            expect(preview).to_contain_text(field)
        original = preview.locator("a.cs-original").get_attribute("href")
        assert original == f"{url}image/{engine.revision}/{hits[0].row}/{hits[0].id}"
        response = httpx.get(original)
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        preview.locator(".cs-close").click()
        expect(preview).to_be_hidden()


@needs_demo
@needs_chromium
def test_a_shared_url_runs_its_search_and_a_search_gives_its_url(demo_app: tuple[BandedEngine, str], browser: Any) -> None:
    from playwright.sync_api import expect

    engine, url = demo_app
    with _page(browser, 1280, 900) as page:
        page.goto(f"{url}?q=a+large+star&not=red&k=5&nw=0.8&where=color+!%3D+blue&sort=-count")
        status = page.locator("#status")
        expect(status).to_contain_text("5 results for “a large star” but not “red”", timeout=30_000)
        expect(status).to_contain_text("sorted by count ↓")
        assert page.locator("#query textarea, #query input").first.input_value() == "a large star"
        assert page.locator("#negative textarea, #negative input").first.input_value() == "red"
        expected = engine.search("a large star", negative="red", negative_weight=0.8, top_k=5, where=["color != blue"]).hits
        expected = sorted(expected, key=lambda h: h.metadata["count"], reverse=True)
        assert page.locator("#results .cs-caption").all_inner_texts() == [h.caption for h in expected]

        query = page.locator("#query textarea, #query input").first
        query.fill("zwei Herzen")
        query.press("Enter")
        expect(status).to_contain_text("for “zwei Herzen”", timeout=30_000)
        page.wait_for_function("() => new URLSearchParams(location.search).get('q') === 'zwei Herzen'")
        shared = parse_qs(urlsplit(page.url).query)
        assert shared["q"] == ["zwei Herzen"] and shared["not"] == ["red"] and shared["sort"] == ["-count"]

        page.locator("#more").click()  # more results: the next page, and the URL says so
        expect(status).to_contain_text("10 results", timeout=30_000)
        assert len(_tiles(page)) == 10
        page.wait_for_function("() => new URLSearchParams(location.search).get('pages') === '2'")

        page.goto(f"{url}?q=a+red+star&k=abc")  # a malformed value is a message, not a broken page
        expect(status).to_contain_text("number of results must be a whole number", timeout=30_000)


@needs_demo
@needs_chromium
def test_no_strong_match_banner_and_dimmed_weak_results(demo_app: tuple[BandedEngine, str], browser: Any) -> None:
    from playwright.sync_api import expect

    _, url = demo_app
    with _page(browser, 1280, 900) as page:
        page.goto(f"{url}?q=a+photo+of+a+dog+on+a+beach")
        expect(page.locator("#status")).to_contain_text("results for", timeout=30_000)
        expect(page.locator("#results .cs-banner")).to_have_text(NO_STRONG_MATCH)
        assert page.locator("#results .cs-strong").count() == 0

        query = page.locator("#query textarea, #query input").first
        query.fill("three red stars")
        query.press("Enter")
        expect(page.locator("#status")).to_contain_text("for “three red stars”", timeout=30_000)
        expect(page.locator("#results .cs-banner")).to_have_count(0)
        strong, weak = page.locator("#results .cs-strong"), page.locator("#results .cs-weak, #results .cs-none")
        assert strong.count() > 0 and weak.count() > 0
        assert float(strong.first.evaluate("t => getComputedStyle(t).opacity")) == 1
        assert float(weak.first.evaluate("t => getComputedStyle(t).opacity")) < 0.6


@needs_demo
@needs_chromium
def test_image_chip_and_weights(demo_app: tuple[BandedEngine, str], browser: Any) -> None:
    """An uploaded image shows a chip saying it is part of the query, × takes it out; the text ↔ image weight moves
    the results between the two."""
    from playwright.sync_api import expect

    engine, url = demo_app
    with _page(browser, 1280, 900) as page:
        page.goto(url)
        chip = page.locator("#image-chip")
        expect(chip).to_be_hidden()
        page.locator("#query-image input[type=file]").set_input_files(str(_white_star(engine)))
        expect(chip).to_be_visible(timeout=20_000)
        expect(chip).to_contain_text("searching with this image")
        query = page.locator("#query textarea, #query input").first
        query.fill("a red heart")
        page.locator("#search").click()
        status = page.locator("#status")
        expect(status).to_contain_text("for “a red heart” + the uploaded image", timeout=30_000)
        page.locator("#clear-image").click()
        expect(chip).to_be_hidden()
        page.locator("#search").click()
        expect(status).not_to_contain_text("the uploaded image", timeout=30_000)
        expect(status).to_contain_text("for “a red heart”")

    client = Client(url, verbose=False, analytics_enabled=False, download_files=False)
    star = handle_file(str(_white_star(engine)))

    def captions(image_weight: float) -> list[str]:
        gallery, _, _ = client.predict("a red heart", "", star, 6, "", image_weight, None, "", "", 1, api_name=f"/{SEARCH_OPTIONS_API}")
        return [item["caption"] for item in gallery]

    mostly_text, mostly_image = captions(0.1), captions(0.9)
    assert sum("red heart" in c for c in mostly_text) >= 5
    assert all("white star" in c for c in mostly_image[:3]) and not any("red heart" in c for c in mostly_image)  # the image's neighbours


@needs_demo
@needs_chromium
def test_example_gallery_tab(demo_app: tuple[BandedEngine, str], browser: Any) -> None:
    from playwright.sync_api import expect

    engine, url = demo_app
    summary = engine.summary()
    with _page(browser, 1280, 900) as page:
        page.goto(url)
        page.get_by_role("tab", name="Example gallery").click()
        cards = page.locator("#example-gallery .cs-example")
        expect(cards).to_have_count(len(summary.prompts))
        assert page.locator("#example-gallery h3").all_inner_texts() == ["English", "Deutsch", "Français", "Español", "Русский", "中文"]
        expect(page.locator("#gallery-intro")).to_contain_text("English, Deutsch, Français, Español, Русский, 中文")
        first = cards.nth(3)  # a German prompt
        thumbs = first.locator("img")
        expect(thumbs).to_have_count(config.APP_GALLERY_THUMBNAILS)
        thumbs.first.scroll_into_view_if_needed()
        expect(thumbs.first).to_have_js_property("complete", True)
        assert thumbs.first.evaluate("img => img.naturalWidth") > 0
        prompt = summary.prompts[3]
        assert prompt.language == "de"
        expected = [h.caption for h in engine.search(prompt.text, top_k=config.APP_GALLERY_THUMBNAILS).hits]
        assert [thumbs.nth(i).get_attribute("alt") for i in range(thumbs.count())] == expected
        first.click()
        expect(page.locator("#status")).to_contain_text(f"for “{prompt.text}”", timeout=30_000)


def test_a_store_without_a_student_offers_english_examples_only(folder_store: Path, tmp_path: Path) -> None:
    from tests.conftest import copy_store

    from clip_search.store import ExamplePrompt, read_examples, write_examples
    from clip_search.store import write_manifest

    store = copy_store(folder_store, tmp_path / "english-only")
    opened = SearchEngine.load(store)
    write_manifest(store, replace(opened.store.manifest, text_model=None))
    write_examples(store, [ExamplePrompt("a red circle", "en"), ExamplePrompt("ein roter Kreis", "de"), ExamplePrompt("a blue square")], languages=["en", "de"])
    assert read_examples(store) is not None
    summary = SearchEngine.load(store).summary()
    assert not summary.multilingual and summary.languages == ("en",)
    assert summary.examples == ("a red circle", "a blue square")
    multilingual = SearchEngine.load(folder_store).summary()  # no examples.json: the generic prompts, every language
    assert multilingual.multilingual and len({p.language for p in multilingual.prompts}) == len(config.APP_EXAMPLE_PROMPTS)
    demo = build_app(SearchEngine.load(store))
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True)
    try:
        config_json = httpx.get(f"{url}config").json()
    finally:
        demo.close()
    texts = json.dumps(config_json, ensure_ascii=False)
    assert "queries in English only" in texts and "ein roter Kreis" not in texts


# --- the new inputs through the raw HTTP APIs ---------------------------------------------------------------------


def _call(url: str, api: str, data: list[Any]) -> tuple[str, Any]:
    posted = httpx.post(f"{url}gradio_api/call/{api}", json={"data": data}, timeout=60)
    posted.raise_for_status()
    stream = httpx.get(f"{url}gradio_api/call/{api}/{posted.json()['event_id']}", timeout=60).text
    events = re.findall(r"event: (\w+)\ndata: (.*)", stream)
    name, payload = events[-1]
    return name, json.loads(payload)


BAD_OPTIONS = {
    "image weight 2": ([None, 2, None, None, None, None], "the image weight must be a number from 0 to 1"),
    "image weight NaN": ([None, "NaN", None, None, None, None], "the image weight must be a number"),
    "image weight list": ([None, [0.5], None, None, None, None], "the image weight must be a number"),
    "negative weight -1": ([None, None, -1, None, None, None], "the negative weight must be a number from 0 to 2"),
    "negative weight inf": ([None, None, "inf", None, None, None], "the negative weight must be a number"),
    "filter object": ([None, None, None, {"a": 1}, None, None], "the filter must be text"),
    "filter unknown column": ([None, None, None, "owner == me", None, None], "no column 'owner'"),
    "filter garbage": ([None, None, None, "just words", None, None], "cannot read 'just words'"),
    "too many filters": ([None, None, None, ";".join(["shape == star"] * 40), None, None], "too many conditions"),
    "sort list": ([None, None, None, None, ["shape"], None], "sort must be a metadata column name"),
    "sort dash": ([None, None, None, None, "-", None], "sort must be a metadata column name"),
    "sort unknown": ([None, None, None, None, "owner", None], "no column 'owner'"),
    "pages 0": ([None, None, None, None, None, 0], "pages must be a whole number from 1 to"),
    "pages 99": ([None, None, None, None, None, 99], "pages must be a whole number from 1 to"),
    "pages 1.5": ([None, None, None, None, None, 1.5], "pages must be a whole number"),
}


@needs_demo
@pytest.mark.parametrize("name", list(BAD_OPTIONS))
def test_new_inputs_are_checked_in_one_place(demo_app: tuple[BandedEngine, str], name: str) -> None:
    _, url = demo_app
    values, message = BAD_OPTIONS[name]
    _, image_weight, negative_weight, filters, sort, pages = values
    event, (gallery, _, status) = _call(url, SEARCH_OPTIONS_API, ["a red star", "", None, 3, "", image_weight, negative_weight, filters, sort, pages])
    assert event == "complete" and gallery == []
    assert status.startswith("⚠️") and message in html.unescape(status.replace("\\", "")) and "\n" not in status.strip()


@needs_demo
def test_new_inputs_through_the_json_api(demo_app: tuple[BandedEngine, str]) -> None:
    engine, url = demo_app
    ok = httpx.post(f"{url}api/search", json={"query": "a star", "top_k": 8, "negative": "red", "negative_weight": 1.5, "sort": "color", "where": ["size == large"]})
    assert ok.status_code == 200, ok.text
    body = ok.json()
    colors = [engine.store.rows([engine.store.metadata.column("id").to_pylist().index(h["id"])])[0]["color"] for h in body["hits"]]
    assert colors == sorted(colors) and len(colors) == 8
    assert all(h["band"] in ("strong", "weak", "none") and 0 <= h["relevance"] <= 1 for h in body["hits"])
    assert body["truncated"] == []
    long = httpx.post(f"{url}api/search", json={"query": "a red star " * 500, "top_k": 2}).json()
    assert long["truncated"] == ["query"]
    for payload, message in (
        ({"query": "a star", "negative_weight": "heavy"}, "the negative weight must be a number"),
        ({"query": "a star", "negative_weight": 3}, "from 0 to 2"),
        ({"query": "a star", "sort": 5}, "sort must be a metadata column name"),
        ({"query": "a star", "sort": "owner"}, "no column 'owner'"),
        ({"query": "a star", "image_weight": 0.5}, "unknown field image_weight"),
    ):
        response = httpx.post(f"{url}api/search", json=payload)
        assert response.status_code == 400 and message in response.json()["error"], (payload, response.text)


@needs_demo
def test_a_truncated_query_is_said_on_the_page(demo_app: tuple[BandedEngine, str]) -> None:
    _, url = demo_app
    event, (_, _, status) = _call(url, "search", ["a red star " * 500, "", None, 3, ""])
    assert event == "complete" and "**3** results" in status
    assert "the query was cut at the text encoder's token limit" in status
    event, (_, _, status) = _call(url, "search", ["a red star", "", None, 3, ""])
    assert "cut at the" not in status


def test_sorting_keeps_each_hit_with_its_label_row() -> None:
    import numpy as np

    from clip_search.engine import Hit
    from clip_search.ui import _table, sort_result

    hits = [Hit(i + 1, i, f"id{i}", 1 - i / 10, f"/p/{i}.png", None, {"id": f"id{i}", "year": year}, (("cat", p),)) for i, (year, p) in enumerate([(2020, 0.7), (2018, 0.2), (2019, 0.5)])]
    probabilities = np.array([[0.7, 0.1], [0.2, 0.3], [0.5, 0.1]])
    result = SearchResult(hits, ["cat", "dog"], probabilities, {}, none_of_these=1 - probabilities.sum(axis=1))
    ordered = sort_result(result, "-year")
    assert [h.metadata["year"] for h in ordered.hits] == [2020, 2019, 2018]
    table = _table(ordered)
    assert [row[1] for row in table["data"]] == ["id0", "id2", "id1"]
    assert [row[3] for row in table["data"]] == ["0.700", "0.500", "0.200"]  # each row still its hit's
    assert [float(row[-1]) for row in table["data"]] == pytest.approx([0.2, 0.4, 0.5])
