"""The web app end to end: its API through gradio_client, its page in headless Chromium, and app.py's failure path."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pytest
from gradio_client import Client, handle_file

from dataclasses import replace

from clip_search import config
from clip_search.config import NONE_OF_THESE
from clip_search.engine import SearchEngine
from PIL import Image
from clip_search.store import EmbeddingStore, SourceInfo, write_store
from clip_search.ui import SEARCH_API, TABLE_FIXED_HEADERS, build_app, markdown_escape

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
HOSTILE = "<img src=x onerror=alert(1)>"
LABELS = ["red", "green", "blue", "yellow"]


@dataclass
class Served:
    """A running app, the engine behind it, and its base URL."""

    engine: SearchEngine
    url: str


def _serve(engine: SearchEngine, **kwargs: object) -> tuple[object, str]:
    demo = build_app(engine, **kwargs)
    _, url, _ = demo.launch(
        prevent_thread_lock=True,
        server_name="127.0.0.1",
        server_port=None,
        quiet=True,
    )
    return demo, url


@pytest.fixture(scope="module")
def served(folder_store: Path) -> Iterator[Served]:
    engine = SearchEngine.load(folder_store)
    demo, url = _serve(engine)
    try:
        yield Served(engine, url)
    finally:
        demo.close()


@pytest.fixture(scope="module")
def client(served: Served, tmp_path_factory: pytest.TempPathFactory) -> Client:
    return Client(served.url, verbose=False, analytics_enabled=False, download_files=str(tmp_path_factory.mktemp("downloads")))


def _search(client: Client, query: str = "", *, negative: str = "", image: object = None, top_k: int = 5, labels: str = "") -> tuple[list, dict, str]:
    return client.predict(query, negative, image, top_k, labels, api_name=f"/{SEARCH_API}")


def _score(caption: str) -> float:
    return float(caption.split(" · ")[1])


def test_text_search_with_labels(served: Served, client: Client) -> None:
    gallery, table, status = _search(client, "a red circle", top_k=5, labels=", ".join(LABELS))
    expected = served.engine.search("a red circle", top_k=5, labels=LABELS)

    assert len(gallery) == 5
    assert all(Path(item["image"]).is_file() for item in gallery)  # served over HTTP and downloaded by the client
    captions = [item["caption"] for item in gallery]
    assert [c.split(" · ")[0] for c in captions] == [f"#{i}" for i in range(1, 6)]
    scores = [_score(c) for c in captions]
    assert scores == sorted(scores, reverse=True)
    assert scores == pytest.approx([h.score for h in expected.hits], abs=1e-3)
    assert all(c.endswith("%") for c in captions)  # top label with its probability

    assert table["headers"] == [*TABLE_FIXED_HEADERS, *LABELS, NONE_OF_THESE]
    assert [row[1] for row in table["data"]] == [h.id for h in expected.hits]
    for row, hit in zip(table["data"], expected.hits):
        probs = [float(p) for p in row[len(TABLE_FIXED_HEADERS):]]
        assert sum(probs) == pytest.approx(1.0, abs=0.01)
        assert row[2] == [*LABELS, NONE_OF_THESE][int(np.argmax(probs))] == hit.labels[0][0]

    assert "\n" not in status.strip() and "**5** results" in status
    assert all(f"{part} " in status and " ms" in status for part in ("encode", "search", "classify"))


def test_local_images_are_served_by_row_and_no_folder_is(served: Served, folder_store: Path) -> None:
    """Result images come from /image/{revision}/{row}/{name} as stored (no copy in Gradio's cache); no path a
    client names is served, not even one of the photos (before, the photo folder was a Gradio static path)."""
    raw = Client(served.url, verbose=False, analytics_enabled=False, download_files=False)
    gallery, _, _ = _search(raw, "a blue square", top_k=3)
    hits = served.engine.search("a blue square", top_k=3).hits
    revision = served.engine.revision
    for item, hit in zip(gallery, hits):
        expected = f"{served.url}image/{revision}/{hit.row}/{Path(hit.image).name}"
        assert item["image"]["url"] == item["image"]["path"] == expected
        response = httpx.get(expected)
        assert response.status_code == 200 and response.content == Path(hit.image).read_bytes()
        assert response.headers["content-type"] == {".png": "image/png", ".jpg": "image/jpeg"}[Path(hit.image).suffix]
        assert response.headers["x-content-type-options"] == "nosniff"
        assert httpx.get(f"{served.url}image/{revision}/{hit.row}").content == response.content  # the name is cosmetic
        assert httpx.get(f"{served.url}gradio_api/file={hit.image}").status_code == 403  # the folder itself is not served
    for private in (folder_store / "manifest.json", folder_store / "embeddings.npy"):
        assert httpx.get(f"{served.url}gradio_api/file={private}").status_code == 403
    count = len(served.engine.store)
    for wrong in (f"{revision}/{count}", f"{revision}/-1", f"{revision}/1e1", f"{revision}/%201", f"{revision}/0x1", "000000000000/0", f"{revision}/{'9' * 40}"):
        response = httpx.get(f"{served.url}image/{wrong}/x.png")
        assert response.status_code == 404 and "no such image" in response.text, wrong
    assert httpx.post(f"{served.url}image/{revision}/0/x.png").status_code == 405


def test_expected_failures_are_one_line_messages(client: Client, tmp_path: Path) -> None:
    gallery, table, status = _search(client, "   ")
    assert gallery == [] and table["data"] == []
    assert status.startswith("⚠️") and "the query is empty" in status and "\n" not in status.strip()

    not_an_image = tmp_path / "photo.png"
    not_an_image.write_bytes(b"this is not a picture")
    gallery, _, status = _search(client, image=handle_file(str(not_an_image)))
    assert gallery == [] and "cannot read the image photo" in status and "\n" not in status.strip()

    for query in ("x" * 10_000, "🐱🐶 " * 50, "قطة حمراء", HOSTILE, "$$x^2$$ **bold** [a](http://e.x)"):
        gallery, _, status = _search(client, query, top_k=3)
        assert len(gallery) == 3 and "\n" not in status.strip()


def test_search_by_image_finds_that_image(served: Served, client: Client, photo_dir: Path) -> None:
    photo = photo_dir / "png" / "nested" / "green-square.png"
    gallery, _, status = _search(client, image=handle_file(str(photo)), top_k=3)
    assert "the uploaded image" in status
    assert _score(gallery[0]["caption"]) > 0.99


def test_markdown_escape_leaves_nothing_to_interpret() -> None:
    escaped = markdown_escape(f"{HOSTILE} **b** $$x$$\nnext")
    assert "<" not in escaped and ">" not in escaped and "\n" not in escaped
    assert "\\*\\*b\\*\\*" in escaped and "\\$\\$x\\$\\$" in escaped


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


def test_url_images_are_left_to_the_browser(folder_store: Path, photo_dir: Path, tmp_path: Path) -> None:
    """A URL store's images reach the gallery as their URLs; the app server never fetches them."""
    handler = type("Handler", (_CountingHandler,), {"requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: handler(*a, directory=str(photo_dir)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    source = EmbeddingStore.open(folder_store)
    paths = source.metadata.column("path").to_pylist()
    metadata = pa.table({"id": paths, "url": [f"{base}/{p}" for p in paths], "caption": [f"photo <b>{p}</b>" for p in paths]})
    model = replace(source.manifest.model, id=source.model_path())
    manifest = replace(source.manifest, model=model, text_model=source.text_model_path(), source=SourceInfo("url_list", len(paths)))
    store = write_store(tmp_path / "url-store", np.asarray(source.embeddings), metadata, (), manifest)
    engine = SearchEngine.load(store)
    demo, url = _serve(engine)
    try:
        gallery, _, _ = _search(Client(url, verbose=False, analytics_enabled=False, download_files=False), "a red circle", top_k=4)
        api_hits = httpx.post(f"{url}api/search", json={"query": "a red circle", "top_k": 4}).json()["hits"]
        redirect = httpx.get(f"{url}image/{engine.revision}/0/x.jpg")
    finally:
        demo.close()
        server.shutdown()
    assert [item["image"]["url"] for item in gallery] == [h.image for h in engine.search("a red circle", top_k=4).hits]
    assert [hit["image"] for hit in api_hits] == [item["image"]["url"] for item in gallery]
    assert redirect.status_code == 307 and redirect.headers["location"].startswith(base)  # the route points to the URL
    assert all(item["image"]["url"].startswith(base) for item in gallery)
    assert "<b>" in gallery[0]["caption"]  # stored as written; the page shows it as text (see the browser test)
    assert handler.requests == []


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
def test_page_in_headless_chromium(served: Served, photo_dir: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    dialogs: list[str] = []
    outside: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.on("request", lambda r: None if r.url.startswith((served.url, "data:", "blob:")) else outside.append(r.url))
            page.goto(served.url)
            status = page.locator("#status")
            expect(status).to_contain_text("Type a description")

            page.locator("#labels textarea, #labels input").first.fill(f"red, green, blue, {HOSTILE}")
            query = page.locator("#query textarea, #query input").first
            query.fill("a red circle")
            query.press("Enter")
            expect(status).to_contain_text("results for “a red circle”", timeout=20_000)
            images = page.locator("#results img")
            expect(images).to_have_count(12, timeout=20_000)
            expect(images.first).to_have_js_property("complete", True)
            assert images.first.evaluate("img => img.naturalWidth") > 0
            expect(page.locator("#results")).to_contain_text("#1 · ")
            expect(page.locator("#label-table")).to_contain_text(HOSTILE)  # a label as a column header, as text

            page.get_by_text("ein rotes Auto in der Stadt", exact=True).click()  # an example runs its search
            expect(status).to_contain_text("for “ein rotes Auto in der Stadt”", timeout=20_000)

            page.locator("#query-image input[type=file]").set_input_files(str(photo_dir / "jpg" / "blue-square.jpg"))
            query.fill(HOSTILE)
            page.locator("#search").click()
            expect(status).to_contain_text(f"for “{HOSTILE}” + the uploaded image", timeout=20_000)
            assert page.locator("img[src='x']").count() == 0
            page.screenshot(path="/tmp/app.png", full_page=True)
        finally:
            browser.close()
    assert dialogs == []
    assert outside == []  # works offline: nothing loaded from outside the app


def test_app_py_with_a_missing_store_says_so_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-store"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIP_SEARCH_")}
    done = subprocess.run([sys.executable, str(REPO / "app.py"), str(missing)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(missing) in lines[0], done.stderr


def test_search_many_answers_as_search_does_one_by_one(folder_store: Path, photo_dir: Path) -> None:
    """A batch gives each request what `search` gives it alone: same rows, ranks, scores, labels; errors per request."""
    from PIL import Image

    from clip_search.engine import Query
    from clip_search.errors import ClipSearchError

    engine = SearchEngine.load(folder_store)
    picture = Image.open(photo_dir / "jpg" / "blue-square.jpg")
    requests = [
        Query("a red circle", top_k=5, labels=("red", "green", "blue")),
        {"text": "a blue square", "negative": "a red circle", "top_k": 3},
        Query(image=picture, top_k=4),
        Query("a   red  circle", image=picture, top_k=16, labels=("circle", "square")),
        Query("a green square", top_k=2, where=("path ~ png",)),
        Query("ein roter Kreis", top_k=7, where=("path ~ jpg",), labels=("red", "blue")),
        Query("   "),  # empty: fails alone
        Query("a red circle", top_k=0),  # fails alone
        Query("a red circle", where=("no_such_column == 1",)),  # fails alone
        Query("a red circle", top_k=1),
    ]
    batch = engine.search_many(requests)
    assert len(batch) == len(requests)
    for request, got in zip(requests, batch):
        q = request if isinstance(request, Query) else Query(**request)
        try:
            alone = engine.search(q.text, image=q.image, negative=q.negative, top_k=q.top_k, labels=q.labels, where=q.where)
        except ClipSearchError as exc:
            assert isinstance(got, ClipSearchError) and type(got) is type(exc) and str(got) == str(exc)
            continue
        assert not isinstance(got, ClipSearchError), got
        assert [(h.rank, h.row, h.id, h.image, h.caption) for h in got.hits] == [(h.rank, h.row, h.id, h.image, h.caption) for h in alone.hits]
        assert [h.score for h in got.hits] == pytest.approx([h.score for h in alone.hits], abs=1e-5)
        assert [[lab for lab, _ in h.labels] for h in got.hits] == [[lab for lab, _ in h.labels] for h in alone.hits]
        assert got.labels == alone.labels
        if alone.probabilities is None:
            assert got.probabilities is None
        else:
            assert got.probabilities == pytest.approx(alone.probabilities, abs=1e-5)
        assert set(got.timings_ms) == {"encode", "search", "classify"}
    assert engine.search_many([]) == []


def test_every_stored_image_is_shown_whatever_its_name_or_fate(tiny_clip: Path, photo_dir: Path, tmp_path: Path) -> None:
    """A file name with a newline is served (decoded); a file deleted after precompute is a placeholder with the reason."""
    from clip_search.precompute import precompute

    folder = tmp_path / "odd-names"
    folder.mkdir()
    sources = sorted((photo_dir / "jpg").glob("*.jpg"))[:4]
    names = ["two\nlines.png", "gone.png", "plain.png", "tab\there #1 %20.png"]
    for source, name in zip(sources, names):
        Image.open(source).save(folder / name)
    store = precompute(str(folder), tmp_path / "store", model=str(tiny_clip), batch_size=4, num_workers=0, progress=False).store
    (folder / "gone.png").unlink()
    engine = SearchEngine.load(store)
    demo, url = _serve(engine)
    try:
        client = Client(url, verbose=False, analytics_enabled=False, download_files=str(tmp_path / "downloads"))
        gallery, _, status = _search(client, "a red circle", top_k=10)
    finally:
        demo.close()
    hits = engine.search("a red circle", top_k=10).hits
    assert "**4** results" in status and len(gallery) == len(hits) == 4
    assert all(Path(item["image"]).is_file() for item in gallery)  # every tile downloads
    by_name = {Path(hit.image).name: item for hit, item in zip(hits, gallery)}
    gone = by_name["gone.png"]["caption"]
    assert "image unavailable" in gone and "gone or unreadable" in gone
    assert Image.open(by_name["gone.png"]["image"]).size == (160, 160)  # the placeholder tile
    gone_row = next(hit.row for hit in hits if Path(hit.image).name == "gone.png")
    demo, url = _serve(engine)
    try:
        placeholder = httpx.get(f"{url}image/{engine.revision}/{gone_row}/gone.png")
    finally:
        demo.close()
    assert placeholder.status_code == 200 and placeholder.headers["content-type"] == "image/png"
    assert "gone or unreadable" in placeholder.headers["x-image-unavailable"] and placeholder.headers["cache-control"] == "no-store"
    for name in ("two\nlines.png", "plain.png", "tab\there #1 %20.png"):
        assert "unavailable" not in by_name[name]["caption"]
        shown = Image.open(by_name[name]["image"])
        assert shown.size == Image.open(folder / name).size


@pytest.mark.slow
def test_load_batches_concurrent_queries(tmp_path: Path) -> None:
    """bench/load.py's small setting: no errors on either path, and 20 concurrent clients answered in shared batches
    (throughput ratios are measured by the full bench: on a shared machine they are too noisy for a test)."""
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "load.py"), "--small", "--json", str(tmp_path / "load.json")],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    import json

    report = json.loads((tmp_path / "load.json").read_text())
    levels = report["demo"]["levels"]
    assert {row["path"] for row in levels} == {"gradio", "json"}
    assert all(row["errors"] == 0 and row["requests"] > 0 for row in levels), levels
    batcher = report["demo"]["batcher"]
    assert batcher["refused"] == 0 and batcher["timed_out"] == 0
    assert batcher["largest_batch"] > 1 and batcher["batches"] < batcher["answered"], batcher


def test_gradio_keeps_a_bounded_record_of_past_searches(folder_store: Path) -> None:
    """Gradio records every event's timings and summarises all of them after each event; the app caps the record
    (config.APP_ANALYTICS_EVENTS), so memory and per-search work stay flat on a busy Space (bench/RESULTS.md, "Load")."""
    demo, url = _serve(SearchEngine.load(folder_store))
    try:
        with httpx.Client(timeout=60) as http:
            for i in range(config.APP_ANALYTICS_EVENTS + 10):
                event = http.post(f"{url}gradio_api/call/{SEARCH_API}", json={"data": [f"photo {i}", "", None, 3, ""]}).json()["event_id"]
                assert "event: complete" in http.get(f"{url}gradio_api/call/{SEARCH_API}/{event}").text
        assert len(demo._queue.event_analytics) <= config.APP_ANALYTICS_EVENTS
    finally:
        demo.close()
