"""The Gradio web app: a page that turns form inputs into one `SearchEngine.search` call and shows its result."""

from __future__ import annotations

import logging
import math
import os
import queue
import re
import stat
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import gradio as gr
from gradio.utils import get_upload_folder

from clip_search import config
from clip_search.classify import parse_labels
from clip_search.engine import Query, SearchEngine, SearchResult
from clip_search.errors import ClipSearchError, QueryError, SkipItem

log = logging.getLogger(__name__)

SEARCH_API = "search"  # the endpoint name clients call: Client(url).predict(..., api_name="/search")
TABLE_FIXED_HEADERS = ["#", "id", "top label"]
MAX_CAPTION_CHARS = 140
MAX_ECHO_CHARS = 80
BUSY_MESSAGE = "⚠️ the server is busy: please retry in a moment"
PLACEHOLDER_SIZE = 160

# Characters Markdown (or the HTML inside it) would interpret; each is shown literally once escaped.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~$:])")
_HTML_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}


def default_store() -> str | None:
    """The store served when none is named: the built-in demo store, when this checkout has it."""
    return str(config.DEMO_STORE) if (config.DEMO_STORE / "manifest.json").is_file() else None


def markdown_escape(text: str) -> str:
    """`text` made literal inside Markdown: one line, no HTML, no Markdown or LaTeX syntax."""
    flat = " ".join(str(text).split())
    return "".join(_HTML_ENTITIES.get(ch, ch) for ch in _MARKDOWN_SPECIAL.sub(r"\\\1", flat))


def build_app(engine: SearchEngine, *, title: str = config.APP_TITLE) -> gr.Blocks:
    """The search page for `engine`, with the example prompts and notice (trusted Markdown) its store ships.

    The store's local image folders are registered with `gr.set_static_paths`, so result images are
    served where they lie (not copied into Gradio's cache); URL images are left for the browser to load.
    """
    roots = engine.served_roots()
    if roots:
        gr.set_static_paths(roots)
    summary = engine.summary()
    example_rows = [[q] for q in summary.examples]
    notice = summary.notice

    batcher = _Batcher(engine, config.APP_BATCH_SIZE)

    def search(query: Any, negative: Any, image: Any, top_k: Any, labels_text: Any) -> tuple[list[tuple[Any, str]], dict[str, Any], str]:
        try:
            request = SearchRequest.from_payload(query, negative, image, top_k, labels_text)
            picture = _read_upload(engine, request.upload)
            result = batcher.search(request.query(picture), timeout=config.APP_SEARCH_TIMEOUT_S)
            gallery = _gallery(engine, result)
        except ClipSearchError as exc:
            return [], _table(None), f"⚠️ {markdown_escape(str(exc))}"
        except FutureTimeout:
            return [], _table(None), BUSY_MESSAGE
        return gallery, _table(result), _status(request.text, request.negative, picture is not None, result)

    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(f"# {markdown_escape(title)}\n\n{_store_line(engine)}", latex_delimiters=[])
        if notice:
            gr.Markdown(notice, latex_delimiters=[])
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                query = gr.Textbox(
                    label="Describe what you are looking for",
                    placeholder="a dog running on the beach — any language" if engine.multilingual else "a dog running on the beach",
                    max_lines=1,
                    autofocus=True,
                    elem_id="query",
                )
                with gr.Row():
                    negative = gr.Textbox(label="… but not", placeholder="people", max_lines=1, elem_id="negative")
                    labels = gr.Textbox(label="Labels to classify the results", placeholder="cat, dog, car", max_lines=1, elem_id="labels")
                with gr.Row():
                    top_k = gr.Slider(1, config.APP_MAX_TOP_K, value=config.DEFAULT_TOP_K, step=1, label="Results", elem_id="top-k")
                    button = gr.Button("Search", variant="primary", elem_id="search")
            with gr.Column(scale=1, min_width=220):
                image = gr.Image(
                    label="… or search by image (optional)",
                    type="filepath",
                    image_mode=None,
                    sources=["upload", "clipboard"],
                    height=190,
                    elem_id="query-image",
                )
        status = gr.Markdown("Type a description and press Enter.", latex_delimiters=[], elem_id="status")
        gallery = gr.Gallery(
            label="Results",
            columns=6,
            height="auto",
            object_fit="contain",
            buttons=["download", "fullscreen"],
            interactive=False,
            elem_id="results",
        )
        table = gr.Dataframe(
            value=_table(None),
            label="Zero-shot labels of the results (probability over the labels you typed)",
            datatype="str",
            interactive=False,
            wrap=True,
            elem_id="label-table",
        )
        inputs = [query, negative, image, top_k, labels]
        outputs = [gallery, table, status]
        # Raw payloads (preprocess=False): every value is checked by `SearchRequest.from_payload`, the upload is
        # read by `_read_upload` (only a regular file in Gradio's upload folder, bounded) and decoded by our
        # hardened decoder, so a hostile value is a one-line message rather than an error inside Gradio.
        # Concurrent searches wait in threads (concurrency_limit) while `_Batcher` runs them as one batch.
        gr.on(
            [button.click, query.submit, negative.submit, labels.submit],
            search,
            inputs,
            outputs,
            api_name=SEARCH_API,
            preprocess=False,
            concurrency_limit=config.APP_SEARCH_CONCURRENCY,
        )
        if example_rows:
            shown = gr.Examples(example_rows, inputs=[query], label="Try these (several languages)", examples_per_page=20)
            shown.load_input_event.then(search, inputs, outputs, api_visibility="private", preprocess=False)
    # Beyond APP_QUEUE_SIZE waiting searches, Gradio refuses new ones at once ("Queue is full") instead of queueing.
    demo.queue(max_size=config.APP_QUEUE_SIZE)
    return demo


def load_app(
    store: str | None,
    *,
    model: str | None = None,
    text_model: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    text_backend: str = "auto",
) -> tuple[SearchEngine, gr.Blocks]:
    """The engine for `store` (default: `default_store()`) and the page built on it."""
    store = store if store is not None else default_store()
    if store is None:
        raise ClipSearchError("no store given: name the folder of a store built by `clip-search precompute`")
    engine = SearchEngine.load(store, model=model, text_model=text_model, device=device, dtype=dtype, text_backend=text_backend)
    return engine, build_app(engine)


def launch_app(
    store: str | None,
    *,
    model: str | None = None,
    text_model: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    text_backend: str = "auto",
    host: str = config.APP_HOST,
    port: int = config.APP_PORT,
    share: bool = False,
) -> None:
    """Load the app for `store` and serve it until interrupted."""
    engine, demo = load_app(store, model=model, text_model=text_model, device=device, dtype=dtype, text_backend=text_backend)
    log.info("serving %d images from %s on http://%s:%d", engine.summary().count, store or default_store(), host, port)
    try:
        demo.launch(
            server_name=host,
            server_port=port,
            share=share,
            allowed_paths=[str(root) for root in engine.served_roots()],
            max_file_size=config.APP_MAX_UPLOAD_BYTES,
            show_error=False,
        )
    except OSError as exc:
        raise ClipSearchError(f"cannot serve on {host}:{port}: {exc}") from None


def _store_line(engine: SearchEngine) -> str:
    """One Markdown line: how many images, which model, and which languages queries may use."""
    summary = engine.summary()
    languages = "queries in any language (multilingual text encoder)" if summary.multilingual else "queries in English (CLIP's text encoder)"
    return f"Searching **{summary.count:,}** images embedded by **{markdown_escape(summary.model)}** · {languages}"


@dataclass(frozen=True)
class SearchRequest:
    """The search form's values, checked and coerced in one place: whatever a page or an API client sends."""

    text: str | None
    negative: str | None
    upload: dict[str, Any] | None
    top_k: int
    labels: tuple[str, ...]

    @classmethod
    def from_payload(cls, query: Any, negative: Any, image: Any, top_k: Any, labels: Any) -> SearchRequest:
        """The request for raw endpoint values; a value of the wrong type, size or range is a QueryError saying which."""
        labels_text = _text("labels", labels)
        parsed = parse_labels(labels_text or "")
        if len(parsed) > config.APP_MAX_LABELS:
            raise QueryError(f"too many labels ({len(parsed)}): give at most {config.APP_MAX_LABELS}")
        return cls(_text("query", query), _text("negative", negative), _upload(image), _top_k(top_k), tuple(parsed))

    def query(self, picture: Any) -> Query:
        """The engine's query for this request, with its decoded image (or None)."""
        return Query(text=self.text, image=picture, negative=self.negative, top_k=self.top_k, labels=self.labels)


def _text(name: str, value: Any) -> str | None:
    """A text field: a string of bounded length, or nothing."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise QueryError(f"the {name} must be text, got {_kind(value)}")
    if len(value) > config.APP_MAX_TEXT_CHARS:
        raise QueryError(f"the {name} is too long ({len(value):,} characters): at most {config.APP_MAX_TEXT_CHARS:,}")
    return value


def _top_k(value: Any) -> int:
    """The requested number of results: a whole number from 1 to APP_MAX_TOP_K (the slider's range)."""
    limit = config.APP_MAX_TOP_K
    wrong = QueryError(f"the number of results must be a whole number from 1 to {limit}, got {_shown(value)}")
    if isinstance(value, bool) or not isinstance(value, (int, float, str)) or (isinstance(value, str) and len(value) > 20):
        raise wrong
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise wrong from None
    if not math.isfinite(number) or not number.is_integer() or not 1 <= number <= limit:
        raise wrong
    return int(number)


def _upload(value: Any) -> dict[str, Any] | None:
    """The image field: nothing, or a file reference as Gradio's upload returns it ({"path": ..., ...})."""
    if value is None or value == {} or value == "":
        return None
    if not isinstance(value, dict) or not isinstance(value.get("path"), (str, type(None))):
        raise QueryError(f"the image must be an uploaded file, got {_kind(value)}: upload it (gradio_client: handle_file)")
    if not value.get("path"):
        if value.get("url"):
            raise QueryError("the image must be an uploaded file, not a URL: upload it (gradio_client: handle_file)")
        return None
    name = value.get("orig_name")
    return {"path": value["path"], "orig_name": name if isinstance(name, str) and 0 < len(name) <= 200 else "upload"}


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", bool: "true/false", int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _shown(value: Any) -> str:
    return repr(value)[:20] if isinstance(value, (int, float, str)) and not isinstance(value, bool) else _kind(value)


def _read_upload(engine: SearchEngine, upload: dict[str, Any] | None) -> Any:
    """The uploaded query image as RGB PIL, or None; anything but a file uploaded to this server is a QueryError.

    Only a regular file inside Gradio's upload folder is opened (symlinks resolved first), without following a
    link and without blocking (a FIFO is refused, not waited on), and at most APP_MAX_UPLOAD_BYTES are read.
    """
    if upload is None:
        return None
    name = upload["orig_name"]
    data = read_uploaded_file(upload["path"], name, limit=config.APP_MAX_UPLOAD_BYTES)
    return engine.read_query_image(data, name)


def read_uploaded_file(path: str, name: str, *, limit: int) -> bytes:
    """The bytes of a file Gradio's upload route wrote: refused (QueryError) unless a regular file in its folder, of ≤ limit bytes."""
    not_uploaded = QueryError(f"the image {name} was not uploaded to this server: send the file itself (the page's upload, or gradio_client's handle_file)")
    try:
        folder = os.path.realpath(get_upload_folder())
        real = os.path.realpath(path)
    except (OSError, ValueError):
        raise not_uploaded from None
    if real == folder or os.path.commonpath([real, folder]) != folder:
        raise not_uploaded
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except (OSError, ValueError) as exc:
        raise QueryError(f"cannot read the uploaded image {name}: {getattr(exc, 'strerror', None) or exc}") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise not_uploaded
        too_big = QueryError(f"the image {name} is too large: at most {limit // 1_000_000} MB")
        if info.st_size > limit:
            raise too_big
        data = file.read(limit + 1)
    if len(data) > limit:
        raise too_big
    return data


class _Batcher:
    """Concurrent searches answered together: they queue while a batch runs, then go to `search_many` as one.

    One worker thread, started on demand and ending after a minute idle, so a closed app leaves nothing running.
    """

    IDLE_S = 60.0

    def __init__(self, engine: SearchEngine, max_batch: int) -> None:
        self.engine = engine
        self.max_batch = max(1, int(max_batch))
        self._pending: queue.Queue[tuple[Query, Future]] = queue.Queue()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None

    def search(self, query: Query, *, timeout: float) -> SearchResult:
        """The result of `query`; its ClipSearchError raised; concurrent.futures.TimeoutError when not answered in time."""
        future: Future = Future()
        self._pending.put((query, future))
        with self._lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run, name="clip-search-batcher", daemon=True)
                self._worker.start()
        try:
            answer = future.result(timeout)
        except FutureTimeout:
            future.cancel()  # not started yet: the worker skips it
            raise
        if isinstance(answer, ClipSearchError):
            raise answer
        return answer

    def _run(self) -> None:
        while True:
            try:
                batch = [self._pending.get(timeout=self.IDLE_S)]
            except queue.Empty:
                with self._lock:
                    if self._pending.empty():
                        self._worker = None
                        return
                continue
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._pending.get_nowait())
                except queue.Empty:
                    break
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
            for (_, future), answer in zip(live, answers):
                future.set_result(answer)


def _clip(text: str, limit: int) -> str:
    """`text` on one line, cut to `limit` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _gallery(engine: SearchEngine, result: SearchResult) -> list[tuple[Any, str]]:
    """(image, caption) pairs: a URL goes to the browser as is, a local file is served in place from its static root
    when its name can be served, else sent decoded; an image that is gone shows a placeholder and the reason."""
    items = []
    for hit in result.hits:
        parts = [f"#{hit.rank}", f"{hit.score:.3f}"]
        if hit.caption:
            parts.append(_clip(hit.caption, MAX_CAPTION_CHARS))
        if hit.labels:
            label, probability = hit.labels[0]
            parts.append(f"{_clip(label, 40)} {probability:.0%}")
        try:
            shown = _shown_image(engine, hit)
        except SkipItem as exc:
            shown = _placeholder()
            parts.append(f"⚠️ image unavailable: {_clip(str(exc), MAX_CAPTION_CHARS)}")
        items.append((shown, " · ".join(parts)))
    return items


def _shown_image(engine: SearchEngine, hit: Any) -> Any:
    """What shows a hit: its URL or servable file path as is, else its decoded image (SkipItem when it is gone)."""
    if hit.image.startswith(("https://", "http://")) or (os.path.isabs(hit.image) and _servable_name(hit.image) and os.path.isfile(hit.image)):
        return hit.image  # the common case, without reading the row again
    shown = engine.image_for(hit)
    if isinstance(shown, str) and os.path.isabs(shown) and not (_servable_name(shown) and os.path.isfile(shown)):
        return engine.store.open_image(engine.store.rows([hit.row])[0])  # raises SkipItem with the reason
    return shown


def _servable_name(path: str) -> bool:
    """Whether Gradio's file route can serve `path`: valid UTF-8 with no control characters (a newline is a 404)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # a non-UTF-8 name kept as surrogate escapes
        return False
    return not any(ord(ch) < 32 or ord(ch) == 127 for ch in path)


@lru_cache(maxsize=1)
def _placeholder() -> Any:
    """The tile shown for an image that is gone: a grey square with a cross (the caption says why)."""
    from PIL import Image, ImageDraw

    size = PLACEHOLDER_SIZE
    image = Image.new("RGB", (size, size), (232, 232, 232))
    draw = ImageDraw.Draw(image)
    margin = size // 3
    draw.line((margin, margin, size - margin, size - margin), fill=(150, 150, 150), width=6)
    draw.line((margin, size - margin, size - margin, margin), fill=(150, 150, 150), width=6)
    return image


def _table(result: SearchResult | None) -> dict[str, Any]:
    """One row per result: rank, id, top label, then its probability for every label (rows sum to 1)."""
    if result is None or result.probabilities is None:
        return {"headers": list(TABLE_FIXED_HEADERS), "data": []}
    rows = [
        [hit.rank, _clip(hit.id, 60), hit.labels[0][0] if hit.labels else "", *(f"{p:.3f}" for p in probs)]
        for hit, probs in zip(result.hits, result.probabilities)
    ]
    return {"headers": [*TABLE_FIXED_HEADERS, *result.labels], "data": rows}


def _status(query: str | None, negative: str | None, with_image: bool, result: SearchResult) -> str:
    """One Markdown line: what was searched (escaped), how many results, and where the time went."""
    what: list[str] = []
    if query and query.strip():
        what.append(f"“{markdown_escape(_clip(query, MAX_ECHO_CHARS))}”")
    if with_image:
        what.append("the uploaded image")
    described = " + ".join(what)
    if negative and negative.strip():
        described += f" but not “{markdown_escape(_clip(negative, MAX_ECHO_CHARS))}”"
    timings = " · ".join(f"{name} {ms:.1f} ms" for name, ms in result.timings_ms.items())
    count = len(result.hits)
    return f"**{count}** result{'s' if count != 1 else ''} for {described} · {timings}"

