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
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, allowed_paths=[str(p) for p in engine.served_roots()], quiet=True)
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
    elif target == "png-served":  # an image the app serves (Gradio lets static files through unchecked)
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
    if meta and target not in ("oversize", "png-served"):
        # A FileData payload outside the upload folder (and its static paths) is refused by Gradio itself
        # before the handler runs: an "error" event (Gradio prints its own InvalidPathError traceback).
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

    def search_many(requests: Any) -> Any:
        time.sleep(1.0)
        return slow(requests)

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
        time.sleep(4)  # the accepted ones drain (1 s each)
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
        gate.set()
        assert "**3** results" in status_of(url, ["a red circle", "", None, 3, ""])
    finally:
        demo.close()
