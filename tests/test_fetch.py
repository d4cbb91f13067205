"""Tests for clip_search.fetch against a local HTTP server that misbehaves on purpose."""

from __future__ import annotations

import collections
import io
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from clip_search.errors import SkipItem
from clip_search.fetch import download


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(buf, "PNG")
    return buf.getvalue()


PNG_BYTES = _png()


class _Handler(BaseHTTPRequestHandler):
    """Routes by path; `/<route>/<token>` keeps a separate hit count per token."""

    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - keep test output quiet
        return

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        hits = self.server.count(self.path)
        route = "/" + self.path.strip("/").split("/")[0]
        try:
            self._route(route, hits)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up on purpose (timeouts, size limits): that is what is under test

    def _send(self, status: int, body: bytes = b"", content_type: str | None = "image/png", **headers: str) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _route(self, route: str, hits: int) -> None:
        stop = self.server.stop
        if route == "/image.png":
            self._send(200, PNG_BYTES)
        elif route == "/octet":
            self._send(200, PNG_BYTES, "application/octet-stream")
        elif route == "/no-type":
            self._send(200, PNG_BYTES, None)
        elif route == "/redirect":
            self._send(302, b"", None, Location="/image.png")
        elif route == "/404":
            self._send(404, b"not found", "text/plain")
        elif route in ("/500-then-200", "/429-then-200"):
            if hits == 1:
                self._send(int(route[1:4]), b"busy", "text/plain")
            else:
                self._send(200, PNG_BYTES)
        elif route == "/always-500":
            self._send(500, b"broken", "text/plain")
        elif route == "/stall":
            stop.wait(5.0)  # longer than any timeout under test; ends early when the server stops
        elif route == "/trickle":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(1000):
                if stop.wait(0.2):
                    return
                self.wfile.write(b"x")
                self.wfile.flush()
        elif route == "/late-byte-then-stall":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x")
            self.wfile.flush()
            if not stop.wait(0.8):
                self.wfile.write(b"x")
                self.wfile.flush()
                stop.wait(5.0)
        elif route == "/html":
            self._send(200, b"<html>hello</html>", "text/html; charset=utf-8")
        elif route == "/big-length":
            self._send(200, b"x" * 10_000)
        elif route == "/big-chunked":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(10):
                self.wfile.write(b"1f4\r\n" + b"x" * 500 + b"\r\n")  # 0x1f4 = 500 bytes
            self.wfile.write(b"0\r\n\r\n")
        else:
            self._send(404, b"no route", "text/plain")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.stop = threading.Event()
        self._hits: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that timed out drops its connection: expected here
            super().handle_error(request, client_address)

    def count(self, path: str) -> int:
        with self._lock:
            self._hits[path] += 1
            return self._hits[path]


class LocalServer:
    """A misbehaving HTTP server on 127.0.0.1 in a background thread, shut down on exit."""

    def __enter__(self) -> "LocalServer":
        self._server = _Server()
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def url(self, path: str) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{path}"

    def hits(self, path: str) -> int:
        with self._server._lock:
            return self._server._hits[path]

FAST = {"timeout_s": 2.0, "retries": 2, "max_bytes": 1_000_000, "backoff_s": 0.01}


@pytest.fixture(scope="module")
def server():
    with LocalServer() as srv:
        yield srv


def test_image_is_downloaded(server: LocalServer) -> None:
    assert download(server.url("/image.png"), **FAST) == PNG_BYTES


@pytest.mark.parametrize("path", ["/octet", "/no-type", "/redirect"])
def test_octet_stream_missing_type_and_redirects_are_accepted(server: LocalServer, path: str) -> None:
    assert download(server.url(path), **FAST) == PNG_BYTES


def test_404_is_not_retried(server: LocalServer) -> None:
    with pytest.raises(SkipItem, match="^HTTP 404$"):
        download(server.url("/404/a"), **FAST)
    assert server.hits("/404/a") == 1


@pytest.mark.parametrize("path", ["/500-then-200/a", "/429-then-200/a"])
def test_transient_error_is_retried_until_success(server: LocalServer, path: str) -> None:
    assert download(server.url(path), **FAST) == PNG_BYTES
    assert server.hits(path) == 2


def test_persistent_500_gives_up_after_bounded_retries(server: LocalServer) -> None:
    start = time.monotonic()
    with pytest.raises(SkipItem, match=r"^HTTP 500 \(after 3 attempts\)$"):
        download(server.url("/always-500/a"), **FAST)
    assert server.hits("/always-500/a") == 3
    assert time.monotonic() - start < 2.0


def test_stalled_server_times_out_within_bound(server: LocalServer) -> None:
    timeout_s, retries = 0.5, 1
    start = time.monotonic()
    with pytest.raises(SkipItem, match=r"timed out after 0\.5s"):
        download(server.url("/stall"), timeout_s=timeout_s, retries=retries, max_bytes=10_000, backoff_s=0.01)
    elapsed = time.monotonic() - start
    assert elapsed < (retries + 1) * 2 * timeout_s + 0.5
    assert server.hits("/stall") == retries + 1


def test_trickling_server_hits_the_wall_clock_deadline(server: LocalServer) -> None:
    # A byte every 0.2 s never trips the 0.5 s read timeout: only the deadline can end it.
    start = time.monotonic()
    with pytest.raises(SkipItem, match=r"timed out after 0\.5s"):
        download(server.url("/trickle"), timeout_s=0.5, retries=0, max_bytes=10_000)
    assert time.monotonic() - start < 1.5


def test_no_read_outlasts_the_deadline(server: LocalServer) -> None:
    # A byte at 0.8 s resets the 1 s read timeout; the read after it must end at the 1 s deadline, not at 1.8 s.
    start = time.monotonic()
    with pytest.raises(SkipItem, match=r"timed out after 1s"):
        download(server.url("/late-byte-then-stall"), timeout_s=1.0, retries=0, max_bytes=10_000)
    assert time.monotonic() - start < 1.5


def test_html_is_refused_by_content_type(server: LocalServer) -> None:
    with pytest.raises(SkipItem, match="^content type text/html$"):
        download(server.url("/html"), **FAST)


@pytest.mark.parametrize("path", ["/big-length", "/big-chunked"])
def test_oversized_body_is_refused(server: LocalServer, path: str) -> None:
    with pytest.raises(SkipItem, match="^body larger than 1000 bytes$"):
        download(server.url(path), timeout_s=2.0, retries=2, max_bytes=1000)
    assert server.hits(path) == 1  # not retried


def test_chunked_body_within_limit_is_read_whole(server: LocalServer) -> None:
    assert len(download(server.url("/big-chunked"), **FAST)) == 5000


@pytest.mark.parametrize("url", ["ftp://example.com/a.jpg", "file:///etc/passwd", "not a url", "/tmp/a.jpg"])
def test_other_schemes_are_refused(url: str) -> None:
    with pytest.raises(SkipItem, match="unsupported URL scheme"):
        download(url, **FAST)


def test_connection_refused_is_retried_then_skipped() -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(SkipItem, match=r"connection failed.*\(after 2 attempts\)"):
        download(f"http://127.0.0.1:{port}/a.png", timeout_s=1.0, retries=1, max_bytes=1000, backoff_s=0.01)
