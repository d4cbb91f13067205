"""`SearchBatcher`: concurrent searches queued and answered together, one batch at a time, through `search_many`.

Callers (the web page's handler, the JSON API) submit a `Query` and wait for its result with a timeout. One worker
thread takes what is waiting (up to `max_batch`; when fewer are waiting than its last batch held, it first waits at
most `max_wait_ms` for more, so a search arriving alone is never held back) and hands it to
`SearchEngine.search_many`, which encodes all texts in one call and searches the index once per filter.
Beyond `max_queue` searches waiting, a new one is refused at once with `Busy`; one not answered in time is given
up with `Busy` too. Either way the caller can tell the user "busy, retry".
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import TYPE_CHECKING

from clip_search.errors import ClipSearchError

if TYPE_CHECKING:
    from clip_search.engine import Query, SearchEngine, SearchResult

log = logging.getLogger(__name__)


class Busy(ClipSearchError):
    """The server has more searches waiting than it takes, or did not answer this one in time: retry in a moment."""


@dataclass(frozen=True)
class BatcherStats:
    """What a batcher has done since it was made: searches answered, refused and given up, and in how many batches."""

    submitted: int
    answered: int
    refused: int
    timed_out: int
    batches: int
    largest_batch: int
    waiting: int

    @property
    def mean_batch(self) -> float:
        """Searches per batch, on average."""
        return self.answered / self.batches if self.batches else 0.0


class SearchBatcher:
    """Searches submitted from many threads (or coroutines) answered in batches by one worker thread.

    The worker starts on the first search and ends after `idle_s` without one, so a closed app leaves no thread.
    """

    def __init__(self, engine: SearchEngine, max_batch: int = 64, max_wait_ms: float = 0.0, max_queue: int = 256, *, idle_s: float = 60.0) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError(f"max_batch and max_queue must be at least 1 and max_wait_ms at least 0, got {max_batch}, {max_queue}, {max_wait_ms}")
        self.engine = engine
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_ms) / 1e3
        self.max_queue = int(max_queue)
        self.idle_s = float(idle_s)
        self._pending: deque[tuple[Query, Future]] = deque()
        self._ready = threading.Condition()
        self._worker: threading.Thread | None = None
        self._last_batch = 1
        self._counts = {"submitted": 0, "answered": 0, "refused": 0, "timed_out": 0, "batches": 0, "largest_batch": 0}

    def submit(self, query: Query) -> Future:
        """A future for `query`'s result (its SearchResult, or the ClipSearchError `search` would raise for it).

        Raises Busy at once when `max_queue` searches are already waiting.
        """
        future: Future = Future()
        with self._ready:
            if len(self._pending) >= self.max_queue:
                self._counts["refused"] += 1
                raise Busy(f"the server is busy ({len(self._pending)} searches waiting): retry in a moment")
            self._pending.append((query, future))
            self._counts["submitted"] += 1
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="clip-search-batcher", daemon=True)
                self._worker.start()
            self._ready.notify()
        return future

    def search(self, query: Query, *, timeout: float) -> SearchResult:
        """`query`'s result, waiting at most `timeout` seconds; its ClipSearchError raised; Busy when refused or late."""
        future = self.submit(query)
        try:
            return self._unwrap(future.result(timeout))
        except FutureTimeout:
            raise self._late(future, timeout) from None

    async def search_async(self, query: Query, *, timeout: float) -> SearchResult:
        """`search` for a coroutine: the event loop keeps running while the batch does."""
        future = self.submit(query)
        try:
            return self._unwrap(await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), timeout))
        except asyncio.TimeoutError:
            raise self._late(future, timeout) from None

    def stats(self) -> BatcherStats:
        """A snapshot of the counts."""
        with self._ready:
            return BatcherStats(**self._counts, waiting=len(self._pending))

    def _late(self, future: Future, timeout: float) -> Busy:
        future.cancel()  # not started yet: the worker skips it
        with self._ready:
            self._counts["timed_out"] += 1
        return Busy(f"the server is busy: no answer within {timeout:g} s, retry in a moment")

    @staticmethod
    def _unwrap(answer: SearchResult | ClipSearchError) -> SearchResult:
        if isinstance(answer, ClipSearchError):
            raise answer
        return answer

    def _take(self) -> list[tuple[Query, Future]] | None:
        """The next batch: what is waiting, up to max_batch, after at most max_wait_s for more; None when idle too long."""
        with self._ready:
            idle_until = time.monotonic() + self.idle_s
            while not self._pending:
                left = idle_until - time.monotonic()
                if left <= 0:
                    self._worker = None  # a later submit starts a new worker
                    return None
                self._ready.wait(left)
            # Wait (at most max_wait_s) only for as many searches as the last batch held: one client searching
            # alone never waits, while under load each batch gathers about as many as arrived during the last.
            wanted = min(self.max_batch, self._last_batch)
            if self.max_wait_s > 0 and len(self._pending) < wanted:
                full_by = time.monotonic() + self.max_wait_s
                while len(self._pending) < wanted and (left := full_by - time.monotonic()) > 0:
                    self._ready.wait(left)
            batch = [self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))]
            self._last_batch = len(batch)
            return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            live = [(q, f) for q, f in batch if f.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                answers = self.engine.search_many([q for q, _ in live])
            except Exception as exc:  # a bug, not a user's mistake: every search of the batch fails with it
                log.exception("a batch of %d searches failed", len(live))
                for _, future in live:
                    future.set_exception(exc)
                continue
            with self._ready:
                self._counts["batches"] += 1
                self._counts["answered"] += len(live)
                self._counts["largest_batch"] = max(self._counts["largest_batch"], len(live))
            for (_, future), answer in zip(live, answers):
                future.set_result(answer)
