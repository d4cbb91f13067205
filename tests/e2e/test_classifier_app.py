"""The app with a trained classifier: labels on tiles and in the JSON API, label filters, and the label-and-export
flow in headless Chromium (select a result, give it a label, download the labels file train-classifier reads)."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from clip_search.classifier.pipeline import train_classifier
from clip_search.classifier.tasks import read_labels_file
from clip_search.classifier.training import TrainSettings
from clip_search.engine import SearchEngine
from clip_search.ui import build_app

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def served(folder_store: Path, folder_store_labels: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SearchEngine, str]]:
    out = tmp_path_factory.mktemp("app-classifier") / "colours"
    settings = replace(TrainSettings(), max_epochs=10, patience=10, batch_size=8, val_fraction=0.25, test_fraction=0.25)
    train_classifier(folder_store, ["colour:colour"], out, settings=settings, labels_file=folder_store_labels)
    engine = SearchEngine.load(folder_store, classifiers=[out])
    demo = build_app(engine)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True)
    try:
        yield engine, url.rstrip("/")
    finally:
        demo.close()


def post(url: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url + "/api/search", data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_api_returns_predictions_and_filters_by_label(served: tuple[SearchEngine, str]) -> None:
    engine, url = served
    status, body = post(url, {"query": "a red circle", "top_k": 16})
    assert status == 200 and all(set(h["predictions"]) == {"colour"} for h in body["hits"])
    label = body["hits"][0]["predictions"]["colour"]["labels"][0]
    expected = [h["id"] for h in body["hits"] if h["predictions"]["colour"]["labels"] == [label]][:3]
    status, filtered = post(url, {"query": "a red circle", "top_k": 3, "where_labels": [f"colour={label}"]})
    assert status == 200 and [h["id"] for h in filtered["hits"]] == expected
    status, error = post(url, {"query": "a red circle", "where_labels": "colour=red"})
    assert status == 400 and error["error"].startswith("where_labels must be a list")
    status, error = post(url, {"query": "a red circle", "where_labels": ["colour=mauve"]})
    assert status == 400 and "has no label 'mauve'" in error["error"]


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
def test_label_results_and_export_the_labels_file_in_the_browser(served: tuple[SearchEngine, str], tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    engine, url = served
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.goto(url)
            query = page.locator("#query textarea, #query input").first
            query.fill("a red circle")
            query.press("Enter")
            expect(page.locator("#status")).to_contain_text("results for “a red circle”", timeout=30_000)
            expect(page.locator("#results")).to_contain_text("colour: ", timeout=20_000)  # labels on the tiles
            page.locator("#labelling").get_by_text("Label results to train a classifier").click()
            page.locator("#mark-result input").first.click()
            page.get_by_role("option").first.click()  # the first result
            expect(page.locator("#mark-result input").first).to_have_value(re.compile(r"^#1 · "), timeout=20_000)
            page.locator("#mark-label textarea, #mark-label input").first.fill("keep")
            page.locator("#mark").click()
            expect(page.locator("#labelled-count")).to_contain_text("1 labelled: 1 keep", timeout=20_000)
            page.locator("#export-labels").click()
            link = page.locator("#labels-file a").first
            expect(link).to_be_attached(timeout=20_000)
            href = link.get_attribute("href")
            assert href
            text = page.request.get(href if href.startswith("http") else url + href).text()
        finally:
            browser.close()
    saved = tmp_path / "labels.csv"
    saved.write_text(text, encoding="utf-8")
    assert text.splitlines()[0] == "id,label"
    selected = engine.search("a red circle").hits[0].id  # what the page's first result is
    assert read_labels_file(saved) == {selected: {"id": selected, "label": "keep"}}


def test_the_pages_label_filter_is_a_search_input(served: tuple[SearchEngine, str], tmp_path: Path) -> None:
    from gradio_client import Client

    engine, url = served
    client = Client(url, verbose=False, analytics_enabled=False, download_files=str(tmp_path))
    gallery, _, status = client.predict("a red circle", "", None, 16, "", ["colour=red"], api_name="/search")
    assert "results for" in status
    captions = [item["caption"] for item in gallery]
    assert captions and all("colour: red " in caption for caption in captions)
    everything, _, _ = client.predict("a red circle", "", None, 16, "", [], api_name="/search")
    assert len(everything) == 16 and len(captions) == sum("colour: red " in item["caption"] for item in everything)
