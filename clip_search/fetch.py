"""Downloading one image over HTTP(S): bounded retries, time and size, or a `SkipItem` saying why not."""

from __future__ import annotations

import logging
import os
import threading
import time
from urllib.parse import urlsplit

import requests
import urllib3

from clip_search.config import (
    DOWNLOAD_BACKOFF_S,
    DOWNLOAD_MAX_BYTES,
    DOWNLOAD_RETRIES,
    DOWNLOAD_TIMEOUT_S,
)
from clip_search.errors import SkipItem

log = logging.getLogger(__name__)

_CHUNK_BYTES = 64 * 1024
_MAX_BACKOFF_S = 2.0
_HEADERS = {"User-Agent": "clip-search/0.1 (+image embedding)", "Accept": "image/*,*/*;q=0.5"}
_ACCEPTED_TYPES = {"", "application/octet-stream", "binary/octet-stream"}

_local = threading.local()


class _Retryable(Exception):
    """One attempt failed in a way worth trying again; its message is the skip reason if none succeeds."""


def download(
    url: str,
    *,
    timeout_s: float = DOWNLOAD_TIMEOUT_S,
    retries: int = DOWNLOAD_RETRIES,
    max_bytes: int = DOWNLOAD_MAX_BYTES,
    session: requests.Session | None = None,
    backoff_s: float = DOWNLOAD_BACKOFF_S,
) -> bytes:
    """Return the body of `url`, or raise `SkipItem` with a short reason ("HTTP 404", "timed out after 10s").

    Each attempt is bounded by `timeout_s` for connecting, for each read, and as a wall-clock deadline
    on the whole response, so a server that trickles bytes cannot hold it: one attempt takes at most
    about 2 x `timeout_s`. Connection errors, timeouts, 5xx and 429 are retried `retries` times with a
    short exponential backoff; other 4xx, a non-image content type, or a body over `max_bytes` are not.
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise SkipItem(f"unsupported URL scheme {scheme or '(none)'!r}: only http and https")
    session = session if session is not None else _session()
    attempts = max(0, retries) + 1
    for attempt in range(attempts):
        try:
            return _attempt(session, url, timeout_s, max_bytes)
        except _Retryable as e:
            if attempt + 1 >= attempts:
                suffix = f" (after {attempts} attempts)" if attempts > 1 else ""
                raise SkipItem(f"{e}{suffix}") from e
            delay = min(backoff_s * 2**attempt, _MAX_BACKOFF_S)
            log.debug("retrying %s in %.2fs after: %s", url, delay, e)
            time.sleep(delay)
    raise AssertionError("unreachable")  # the loop returns or raises


def _session() -> requests.Session:
    """A keep-alive session for this thread of this process (DataLoader workers fork)."""
    session = getattr(_local, "session", None)
    if session is None or getattr(_local, "pid", None) != os.getpid():
        session = requests.Session()
        session.headers.update(_HEADERS)
        _local.session, _local.pid = session, os.getpid()
    return session


def _attempt(session: requests.Session, url: str, timeout_s: float, max_bytes: int) -> bytes:
    """One GET; raises `_Retryable` for transient failures and `SkipItem` for final ones."""
    timed_out = f"timed out after {timeout_s:g}s"
    deadline = time.monotonic() + timeout_s
    try:
        with session.get(url, stream=True, timeout=(timeout_s, timeout_s)) as resp:
            _check_response(resp, max_bytes)
            body = bytearray()
            sock = getattr(getattr(resp.raw, "connection", None), "sock", None)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _Retryable(timed_out)
                if sock is not None:  # no single read may outlast the deadline (urllib3 resets it per request)
                    sock.settimeout(min(timeout_s, remaining))
                chunk = resp.raw.read1(_CHUNK_BYTES, decode_content=True)
                if not chunk:
                    break
                body += chunk
                if len(body) > max_bytes:
                    raise SkipItem(f"body larger than {max_bytes} bytes")
            return bytes(body)
    except (requests.Timeout, urllib3.exceptions.TimeoutError) as e:
        raise _Retryable(timed_out) from e
    except (requests.ConnectionError, urllib3.exceptions.ProtocolError) as e:
        raise _Retryable(f"connection failed: {_short(e)}") from e
    except (requests.RequestException, urllib3.exceptions.HTTPError) as e:
        raise SkipItem(f"download failed: {_short(e)}") from e


def _check_response(resp: requests.Response, max_bytes: int) -> None:
    """Refuse a response from its status line and headers, before reading the body."""
    status = resp.status_code
    if status == 429 or 500 <= status <= 599:
        raise _Retryable(f"HTTP {status}")
    if not 200 <= status <= 299:
        raise SkipItem(f"HTTP {status}")
    content_type = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if not (content_type.startswith("image/") or content_type in _ACCEPTED_TYPES):
        raise SkipItem(f"content type {content_type}")
    length = resp.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise SkipItem(f"body larger than {max_bytes} bytes")


def _short(e: BaseException) -> str:
    """One line describing an exception, for a skip reason."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return (text or type(e).__name__)[:200]
