"""The search endpoint through the raw HTTP API, as a hostile client would call it: no file is read unless it was
uploaded, no malformed value reaches a traceback, and one bad request never holds up the others."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gradio.utils import get_upload_folder
from gradio_client import Client, handle_file

from clip_search import config
from clip_search.engine import SearchEngine
from clip_search.ui import BUSY_MESSAGE, SEARCH_API, build_app


class Spy:
    """Counts the images the engine was asked to decode (none may come from a path the client named)."""

    def __init__(self, engine: SearchEngine) -> None:
        self.reads: list[str] = []
        original = engine.read_query_image

        def read(data: bytes, name: str = "image") -> Any:
            self.reads.append(name)
            return original(data, name)

        engine.read_query_image = read  # type: ignore[method-assign]


@pytest.fixture(scope="module")
def app(folder_store: Path) -> Iterator[tuple[str, Spy]]:
    engine = SearchEngine.load(folder_store)
    spy = Spy(engine)
    demo = build_app(engine)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True)
    try:
        yield url, spy
    finally:
        demo.close()


@pytest.fixture
def upload_dir() -> Iterator[Path]:
    """A fresh folder inside Gradio's upload folder (where a file the server did not write can only be planted)."""
    folder = Path(get_upload_folder()) / f"test-{uuid.uuid4().hex}"
    folder.mkdir(parents=True)
    try:
        yield folder
    finally:
        for child in folder.iterdir():
            child.unlink()
        folder.rmdir()


def call(url: str, data: list[Any] | str, timeout: float = 30) -> tuple[str, Any]:
    """POST /gradio_api/call/search, then read its event stream: (event name, data) of the final event."""
    body = data if isinstance(data, str) else json.dumps({"data": data})
    posted = httpx.post(f"{url}gradio_api/call/{SEARCH_API}", content=body, headers={"content-type": "application/json"}, timeout=timeout)
    posted.raise_for_status()
    event_id = posted.json()["event_id"]
    stream = httpx.get(f"{url}gradio_api/call/{SEARCH_API}/{event_id}", timeout=timeout).text
    event, payload = "", None
    for line in stream.splitlines():
        if line.startswith("event: "):
            event = line[len("event: ") :]
        elif line.startswith("data: ") and event in ("complete", "error"):
            payload = json.loads(line[len("data: ") :])
    return event, payload


def status_of(url: str, data: list[Any] | str) -> str:
    event, payload = call(url, data)
    assert event == "complete", (event, payload)
    gallery, _, status = payload
    assert gallery == [] or status.startswith("**")
    return status


def image_payload(path: str, *, meta: bool) -> dict[str, Any]:
    payload: dict[str, Any] = {"path": path, "orig_name": "photo.png"}
    if meta:
        payload["meta"] = {"_type": "gradio.FileData"}
    return payload


def no_traceback(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    assert "Traceback" not in caplog.text and not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


# --- item 1: the server opens no path a client names ---------------------------------------------------------


def _outside_png(photo_dir: Path) -> str:
    return str(photo_dir / "png" / "nested" / "red-circle.png")


@pytest.mark.parametrize("meta", [False, True], ids=["bare-dict", "filedata-meta"])
@pytest.mark.parametrize("target", ["png-outside", "png-served", "etc-passwd", "relative", "symlink-out", "oversize"])
def test_a_named_path_is_never_read(app: tuple[str, Spy], photo_dir: Path, upload_dir: Path, tmp_path: Path, target: str, meta: bool) -> None:
    url, spy = app
    secret = tmp_path / "secret.png"  # a picture outside every served folder
    secret.write_bytes(Path(_outside_png(photo_dir)).read_bytes())
    if target == "png-outside":
        path = str(secret)
    elif target == "png-served":  # an image the app shows (by row, through /image/...; its folder is no static path)
        path = _outside_png(photo_dir)
    elif target == "etc-passwd":
        path = "/etc/passwd"
    elif target == "relative":
        path = "../../../../../../etc/passwd"
    elif target == "symlink-out":
        path = str(upload_dir / "link.png")
        os.symlink(secret, path)
    else:
        path = str(upload_dir / "big.png")
        with open(path, "wb") as f:
            f.truncate(config.APP_MAX_UPLOAD_BYTES + 1)  # sparse: big on paper, cheap on disk
    before = len(spy.reads)
    event, payload = call(url, ["", "", image_payload(path, meta=meta), 3, ""])
    assert len(spy.reads) == before  # nothing was decoded
    if meta and target != "oversize":
        # A FileData payload outside the upload folder is refused by Gradio itself before the handler runs: an
        # "error" event (Gradio prints its own InvalidPathError traceback). The photo folder is no longer a static
        # path (images are served by row), so this holds for the app's own photos too.
        assert event == "error"
        return
    assert event == "complete"
    gallery, _, status = payload
    assert gallery == [] and status.startswith("⚠️") and "\n" not in status.strip()
    expected = "too large" if target == "oversize" else "was not uploaded to this server"
    assert expected in status


def test_a_fifo_is_refused_at_once_and_others_are_answered(app: tuple[str, Spy], tmp_path: Path, upload_dir: Path) -> None:
    url, spy = app
    fifos = [tmp_path / "outside.fifo", upload_dir / "inside.png"]
    for fifo in fifos:
        os.mkfifo(fifo)
    answers: dict[str, tuple[str, Any]] = {}
    before = len(spy.reads)

    def run(key: str, data: list[Any]) -> None:
        answers[key] = call(url, data, timeout=20)

    started = time.monotonic()
    threads = [threading.Thread(target=run, args=(str(f), ["", "", image_payload(str(f), meta=False), 3, ""])) for f in fifos]
    threads.append(threading.Thread(target=run, args=("text", ["a red circle", "", None, 3, ""])))
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert time.monotonic() - started < 15
    for fifo in fifos:
        event, (gallery, _, status) = answers[str(fifo)]
        assert event == "complete" and gallery == [] and "was not uploaded to this server" in status
    event, (gallery, _, status) = answers["text"]
    assert event == "complete" and len(gallery) == 3 and "**3** results" in status
    assert len(spy.reads) == before


def test_uploads_still_work(app: tuple[str, Spy], photo_dir: Path, tmp_path: Path) -> None:
    url, spy = app
    photo = photo_dir / "png" / "nested" / "green-square.png"
    # Through gradio_client ...
    client = Client(url, verbose=False, analytics_enabled=False, download_files=str(tmp_path))
    gallery, _, status = client.predict("", "", handle_file(str(photo)), 3, "", api_name=f"/{SEARCH_API}")
    assert len(gallery) == 3 and "the uploaded image" in status
    # ... and through the raw API: upload first, then name the path the server returned.
    with photo.open("rb") as f:
        uploaded = httpx.post(f"{url}gradio_api/upload", files={"files": ("green.png", f, "image/png")}).json()[0]
    assert Path(uploaded).resolve().is_relative_to(Path(get_upload_folder()).resolve())
    for meta in (False, True):
        status = status_of(url, ["", "", image_payload(uploaded, meta=meta), 3, ""])
        assert "**3** results for the uploaded image" in status
    assert spy.reads[-3:] == ["green-square.png", "photo.png", "photo.png"]


# --- item 2: malformed values are one-line messages, never tracebacks -----------------------------------------

MALFORMED = {
    "top_k 1e999": ('["a red circle", "", null, 1e999, ""]', "number of results"),
    "top_k Infinity": ('["a red circle", "", null, Infinity, ""]', "number of results"),
    "top_k NaN": ('["a red circle", "", null, NaN, ""]', "number of results"),
    'top_k "inf"': (["a red circle", "", None, "inf", ""], "number of results"),
    "top_k list": (["a red circle", "", None, [5], ""], "number of results"),
    "top_k dict": (["a red circle", "", None, {"k": 5}, ""], "number of results"),
    "top_k -5": (["a red circle", "", None, -5, ""], "number of results"),
    "top_k 2.5": (["a red circle", "", None, 2.5, ""], "number of results"),
    "top_k true": (["a red circle", "", None, True, ""], "number of results"),
    "top_k huge string": (["a red circle", "", None, "9" * 5000, ""], "number of results"),
    "query list": ([["a red circle"], "", None, 3, ""], "the query must be text"),
    "query number": ([42, "", None, 3, ""], "the query must be text"),
    "query 1 MB": (["x" * 1_000_000, "", None, 3, ""], "the query is too long"),
    "labels object": (["a red circle", "", None, 3, {"red": 1}], "the labels must be text"),
    "labels 1 MB": (["a red circle", "", None, 3, "red, " * 200_000], "the labels is too long"),
    "too many labels": (["a red circle", "", None, 3, ", ".join(f"l{i}" for i in range(100))], "too many labels"),
    "negative list": (["a red circle", ["x"], None, 3, ""], "the negative must be text"),
    "negative 1 MB": (["a red circle", "y" * 1_000_000, None, 3, ""], "the negative is too long"),
    "image url": (["a red circle", "", {"url": "http://127.0.0.1:9/x.png"}, 3, ""], "not a URL"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_values_are_one_line_messages(app: tuple[str, Spy], name: str, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    url, _ = app
    data, message = MALFORMED[name]
    body = data if isinstance(data, list) else f'{{"data": {data}}}'
    capfd.readouterr()
    status = status_of(url, body)
    assert status.startswith("⚠️") and message in status and "\n" not in status.strip() and len(status) < 300
    assert "**3** results" in status_of(url, ["a red circle", "", None, 3, ""])  # the app keeps working
    no_traceback(capfd, caplog)


def test_well_formed_edge_values_are_accepted(app: tuple[str, Spy]) -> None:
    url, _ = app
    assert "**16** results" in status_of(url, ["a red circle", "", None, "50", ""])  # 16 images: all of them
    assert "**16** results" in status_of(url, ["a red circle", "", None, 50.0, None])
    assert "**1** result " in status_of(url, ["a red circle", None, None, 1, "red, blue"])


# --- item 9: overload is a clear "busy", not a hang ------------------------------------------------------------


def test_overload_is_refused_at_once(folder_store: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    engine = SearchEngine.load(folder_store)
    slow = engine.search_many
    in_flight, counting = [0], threading.Lock()  # engine calls in progress

    def search_many(requests: Any) -> Any:
        with counting:
            in_flight[0] += 1
        try:
            time.sleep(1.0)  # a slow search, so that requests pile up
            return slow(requests)
        finally:
            with counting:
                in_flight[0] -= 1

    def drained() -> None:
        """Wait until nothing is queued or searching: Gradio's queue, the batcher's and the engine are all idle."""
        deadline = time.monotonic() + 30
        while not (httpx.get(f"{url}gradio_api/queue/status").json()["queue_size"] == 0 and demo.batcher.stats().waiting == 0 and in_flight[0] == 0):
            assert time.monotonic() < deadline, "the accepted searches were never answered"
            time.sleep(0.05)  # polling the condition above

    engine.search_many = search_many  # type: ignore[method-assign]
    monkeypatch.setattr(config, "APP_QUEUE_SIZE", 2)
    monkeypatch.setattr(config, "APP_SEARCH_CONCURRENCY", 1)
    monkeypatch.setattr(config, "APP_SEARCH_TIMEOUT_S", 5.0)
    demo = build_app(engine)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True)
    try:
        codes: list[int] = []
        lock = threading.Lock()

        def post() -> None:
            r = httpx.post(f"{url}gradio_api/call/{SEARCH_API}", json={"data": ["a red circle", "", None, 3, ""]}, timeout=10)
            with lock:
                codes.append(r.status_code)
                if r.status_code != 200:
                    assert "Queue is full" in r.json()["detail"]

        started = time.monotonic()
        threads = [threading.Thread(target=post) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert time.monotonic() - started < 5  # refusals come back at once
        assert 503 in codes and 200 in codes
        drained()
        client = Client(url, verbose=False, analytics_enabled=False, download_files=str(tmp_path))
        jobs = [client.submit("a red circle", "", None, 3, "", api_name=f"/{SEARCH_API}") for _ in range(6)]
        outcomes = []
        for job in jobs:
            try:
                outcomes.append(job.result(timeout=30)[2])
            except Exception as exc:  # what gradio_client raises for a full queue
                outcomes.append(f"{type(exc).__name__}: {exc}")
        assert any("results for" in o for o in outcomes), outcomes
        # gradio_client raises QueueError("Queue is full! Please try again.") for a search refused as busy.
        assert all("results for" in o or "Queue is full! Please try again" in o or o == BUSY_MESSAGE for o in outcomes), outcomes
        assert any("Queue is full" in o for o in outcomes), outcomes
        # The JSON API meets the same bound in the batcher's queue: 503 "busy, retry" at once, never a hang.
        drained()  # a search answered "busy" may still be running
        answers: list[httpx.Response] = []
        threads = [threading.Thread(target=lambda: answers.append(api(url, {"query": "a red circle", "top_k": 3}, timeout=20))) for _ in range(8)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        codes = sorted(a.status_code for a in answers)
        assert 200 in codes and 503 in codes and set(codes) <= {200, 503}, codes
        assert all("busy" in a.json()["error"] and a.headers["retry-after"] == "1" for a in answers if a.status_code == 503)
    finally:
        demo.close()


def test_a_search_not_answered_in_time_says_busy(folder_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = SearchEngine.load(folder_store)
    gate = threading.Event()
    slow = engine.search_many

    def search_many(requests: Any) -> Any:
        gate.wait(10)
        return slow(requests)

    engine.search_many = search_many  # type: ignore[method-assign]
    monkeypatch.setattr(config, "APP_SEARCH_TIMEOUT_S", 0.5)
    demo = build_app(engine)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True)
    try:
        assert status_of(url, ["a red circle", "", None, 3, ""]) == BUSY_MESSAGE
        busy = api(url, {"query": "a red circle", "top_k": 3})
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1" and "busy" in busy.json()["error"]
        gate.set()
        assert "**3** results" in status_of(url, ["a red circle", "", None, 3, ""])
        assert api(url, {"query": "a red circle", "top_k": 3}).status_code == 200
    finally:
        demo.close()


# --- the JSON API (POST /api/search): the same checks, in HTTP status codes ----------------------------------


def api(url: str, body: Any, *, content_type: str = "application/json", timeout: float = 30) -> httpx.Response:
    content = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return httpx.post(f"{url}api/search", content=content, headers={"content-type": content_type}, timeout=timeout)


def test_json_api_answers_as_the_engine_does(app: tuple[str, Spy], folder_store: Path) -> None:
    url, _ = app
    engine = SearchEngine.load(folder_store)
    expected = engine.search("a red circle", top_k=5, labels=["red", "blue"])
    answer = api(url, {"query": "a red circle", "top_k": 5, "labels": "red, blue"})
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    hits = answer.json()["hits"]
    assert [h["id"] for h in hits] == [h.id for h in expected.hits] and [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    assert [h["score"] for h in hits] == pytest.approx([h.score for h in expected.hits], abs=1e-5)
    assert [[label for label, _ in h["labels"]] for h in hits] == [[label for label, _ in h.labels] for h in expected.hits]
    assert answer.json()["labels"] == ["red", "blue"] and set(answer.json()["timings_ms"]) == {"encode", "search", "classify"}
    for hit, want in zip(hits, expected.hits):
        image = httpx.get(hit["image"])
        assert hit["image"].startswith(f"{url}image/") and image.content == Path(want.image).read_bytes()
    as_list = api(url, {"query": "a red circle", "top_k": 5, "labels": ["red", "blue"]}).json()["hits"]
    assert [h["id"] for h in as_list] == [h["id"] for h in hits]
    only_png = api(url, {"query": "a red circle", "where": ["path ~ png"]}).json()["hits"]
    assert only_png and all(h["id"].endswith(".png") for h in only_png)
    assert len(api(url, {"query": "a red circle"}).json()["hits"]) == 12  # top_k defaults to DEFAULT_TOP_K


@pytest.mark.parametrize("name", list(MALFORMED))
def test_json_api_malformed_values_are_400_with_the_same_message(app: tuple[str, Spy], name: str, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    url, _ = app
    data, message = MALFORMED[name]
    values = json.loads(data) if isinstance(data, str) else data  # Python's json reads NaN, Infinity, 1e999
    body = {field: value for field, value in zip(("query", "negative", "image", "top_k", "labels"), values) if value is not None}
    encoded = json.dumps(body)
    capfd.readouterr()
    answer = api(url, encoded)
    if len(encoded.encode()) > config.APP_API_MAX_BODY_BYTES:
        assert answer.status_code == 413 and "too large" in answer.json()["error"]
    elif "image" in body:
        assert answer.status_code == 400 and "unknown field image" in answer.json()["error"] and "search by image" in answer.json()["error"]
    else:
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert message in error and "\n" not in error and len(error) < 300
    assert api(url, {"query": "a red circle", "top_k": 3}).status_code == 200  # the API keeps working
    no_traceback(capfd, caplog)


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        ('{"query": "a red circle"}', "text/plain", 415, "Content-Type: application/json"),
        ('{"query": "a red circle"}', "", 415, "no content type"),
        ("query=a+red+circle", "application/x-www-form-urlencoded", 415, "as JSON"),
        ('{"query": "a red circle"', "application/json", 400, "not valid JSON"),
        ("[1, 2]", "application/json", 400, "must be a JSON object"),
        ('"a red circle"', "application/json", 400, "must be a JSON object"),
        ("[" * 100_000 + "]" * 100_000, "application/json", 400, "not valid JSON"),
        ('{"query": "a red circle", "top": 3}', "application/json", 400, "unknown field top"),
        ('{"query": "a red circle", "where": "path ~ png"}', "application/json", 400, "where must be a list"),
        ('{"query": "a red circle", "where": ["no_such_column == 1"]}', "application/json", 400, "no column"),
        ('{"query": "a red circle", "where": [3]}', "application/json", 400, "the condition must be text"),
        ('{"query": "a red circle", "labels": ["red", 3]}', "application/json", 400, "the labels must be text"),
        ('{"query": "   "}', "application/json; charset=utf-8", 400, "the query is empty"),
        ('{"negative": "a red circle"}', "application/json", 400, "the query is empty"),
    ],
)
def test_json_api_refuses_what_is_not_a_search(app: tuple[str, Spy], body: str, content_type: str, status: int, message: str, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    url, _ = app
    capfd.readouterr()
    answer = api(url, body, content_type=content_type)
    assert answer.status_code == status and message in answer.json()["error"], answer.text
    assert httpx.get(f"{url}api/search").status_code == 405
    no_traceback(capfd, caplog)


def _raw_request(url: str, head: str, body: bytes, *, wait: float = 10) -> bytes:
    """Send `head` and `body` on a fresh socket and return what the server answers (it may answer before the body ends)."""
    import socket

    host, port = url.split("//", 1)[1].rstrip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        sock.sendall(head.encode() + body)
        answer = b""
        try:
            while b"\r\n\r\n" not in answer:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except TimeoutError:
            pass
    return answer


def test_json_api_refuses_a_large_body_before_reading_it(app: tuple[str, Spy]) -> None:
    url, _ = app
    # Declared 1 GB, 20 bytes sent: a server that read the body would wait for the rest (and time out here).
    head = f"POST /api/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {1_000_000_000}\r\n\r\n"
    started = time.monotonic()
    answer = _raw_request(url, head, b'{"query": "a red c')
    assert answer.startswith(b"HTTP/1.1 413") and time.monotonic() - started < 5, answer[:200]
    # Chunked, no length declared: reading stops at the bound.
    chunk = b'{"query": "' + b"x" * 60_000
    body = b"".join(f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in [chunk] + [b"y" * 60_000] * 4)  # 300 kB, no final chunk
    head = "POST /api/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    answer = _raw_request(url, head, body)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    head = "POST /api/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 12abc\r\n\r\n"
    assert _raw_request(url, head, b"{}").startswith(b"HTTP/1.1 400")  # refused by the HTTP server itself
    assert api(url, {"query": "a red circle", "top_k": 3}).status_code == 200
