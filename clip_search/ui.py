"""The web app: a Gradio page that turns form inputs into one search and shows its result, beside two plain routes.

Routes mounted on the page's own server (every `launch` of the page adds them):

- `GET /image/{revision}/{row}/{name}`: the image of store row `row` (`name` is only the file name, for downloads).
  A local file is streamed as it is (JPEG, PNG, GIF, WebP, BMP, AVIF), any other format decoded and sent as PNG;
  an image that is gone is a grey placeholder, with the reason in the `X-Image-Unavailable` header. A `row` that is
  not a whole number in range, or a `revision` of another store, is a 404. Only rows of the store are ever served:
  no path a client names is opened, and no folder is exposed through Gradio's file routes.
- `POST /api/search`: the JSON API for programs (see `api_search`).
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import stat
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import quote

import gradio as gr
from gradio.route_utils import get_api_call_path, get_root_url
from gradio.utils import get_upload_folder
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from clip_search import config
from clip_search.batcher import Busy, SearchBatcher
from clip_search.classify import parse_labels
from clip_search.engine import Hit, Query, SearchEngine, SearchResult
from clip_search.errors import ClipSearchError, QueryError, SkipItem

log = logging.getLogger(__name__)

SEARCH_API = "search"  # the endpoint name clients call: Client(url).predict(..., api_name="/search")
TABLE_FIXED_HEADERS = ["#", "id", "top label"]
MAX_CAPTION_CHARS = 140
MAX_ECHO_CHARS = 80
BUSY_MESSAGE = "⚠️ the server is busy: please retry in a moment"
PLACEHOLDER_SIZE = 160
API_FIELDS = ("query", "negative", "top_k", "labels", "where")
# Formats every browser shows, served as stored; any other is decoded and sent as PNG.
WEB_IMAGE_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".gif": "image/gif", ".webp": "image/webp", ".bmp": "image/bmp", ".avif": "image/avif"}
_ROW = re.compile(r"[0-9]{1,12}")

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


class SearchPage(gr.Blocks):
    """The search page: a Gradio Blocks whose every `launch` also serves the image route and the JSON API
    (`routes`), and keeps at most APP_STATE_SESSIONS sessions (every API call is a session of its own)."""

    routes: list[BaseRoute]
    batcher: SearchBatcher

    def launch(self, *args: Any, app_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        """`gr.Blocks.launch`, with this page's routes added to the server it starts."""
        merged = dict(app_kwargs or {})
        merged["routes"] = [*self.routes, *merged.get("routes", [])]
        kwargs.setdefault("state_session_capacity", config.APP_STATE_SESSIONS)
        return super().launch(*args, app_kwargs=merged, **kwargs)


def build_app(engine: SearchEngine, *, title: str = config.APP_TITLE) -> SearchPage:
    """The search page for `engine`, with the example prompts and notice (trusted Markdown) its store ships.

    Result images reach the gallery as URLs: a URL store's own, else this server's `/image/...` route, so Gradio
    neither checks nor copies a file per result and serves no folder. Searches from the page, the Gradio API and
    the JSON API are answered together in batches by one `SearchBatcher`.
    """
    summary = engine.summary()
    example_rows = [[q] for q in summary.examples]
    notice = summary.notice

    batcher = SearchBatcher(engine, config.APP_BATCH_SIZE, config.APP_BATCH_WAIT_MS, config.APP_QUEUE_SIZE)

    async def search(query: Any, negative: Any, image: Any, top_k: Any, labels_text: Any, request: gr.Request) -> tuple[list[tuple[Any, str]], dict[str, Any], str]:
        try:
            form = SearchRequest.from_payload(query, negative, image, top_k, labels_text)
            picture = None
            if form.upload is not None:
                from anyio import to_thread

                picture = await to_thread.run_sync(_read_upload, engine, form.upload)
            result = await batcher.search_async(form.query(picture), timeout=config.APP_SEARCH_TIMEOUT_S)
            gallery = _gallery(engine, result, _page_root(request, demo.root_path))
        except Busy:
            return [], _table(None), BUSY_MESSAGE
        except ClipSearchError as exc:
            return [], _table(None), f"⚠️ {markdown_escape(str(exc))}"
        return gallery, _table(result), _status(form.text, form.negative, picture is not None, result)

    with SearchPage(title=title, analytics_enabled=False) as demo:
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
        # Concurrent searches (up to concurrency_limit) wait as coroutines while `SearchBatcher` runs them as one batch.
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
    demo.batcher = batcher
    demo.routes = api_routes(engine, batcher, root_path=lambda: demo.root_path)
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
    where: tuple[str, ...] = ()

    @classmethod
    def from_payload(cls, query: Any, negative: Any, image: Any, top_k: Any, labels: Any, where: Any = None) -> SearchRequest:
        """The request for raw endpoint values (the page's, the Gradio API's or the JSON API's); a value of the wrong
        type, size or range is a QueryError saying which. `labels` is text ("red, blue") or a list of texts."""
        if isinstance(labels, list):
            parsed = list(dict.fromkeys(label for label in (" ".join((_text("labels", item) or "").split()) for item in labels) if label))
        else:
            parsed = parse_labels(_text("labels", labels) or "")
        if len(parsed) > config.APP_MAX_LABELS:
            raise QueryError(f"too many labels ({len(parsed)}): give at most {config.APP_MAX_LABELS}")
        return cls(_text("query", query), _text("negative", negative), _upload(image), _top_k(top_k), tuple(parsed), _where(where))

    def query(self, picture: Any) -> Query:
        """The engine's query for this request, with its decoded image (or None)."""
        return Query(text=self.text, image=picture, negative=self.negative, top_k=self.top_k, labels=self.labels, where=self.where)


def _where(value: Any) -> tuple[str, ...]:
    """Metadata conditions: a list of condition texts ("width >= 640"), or nothing; the engine parses each."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise QueryError(f"where must be a list of conditions such as [\"width >= 640\"], got {_kind(value)}")
    if len(value) > config.APP_MAX_CONDITIONS:
        raise QueryError(f"too many conditions ({len(value)}): give at most {config.APP_MAX_CONDITIONS}")
    return tuple(_text("condition", item) or "" for item in value)


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


def _clip(text: str, limit: int) -> str:
    """`text` on one line, cut to `limit` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _gallery(engine: SearchEngine, result: SearchResult, root: str) -> list[tuple[str, str]]:
    """(image URL, caption) pairs: a URL store's own URL, else this server's image route under `root`; the caption
    of an image that is gone says why (the route shows a placeholder for it)."""
    items = []
    for hit in result.hits:
        parts = [f"#{hit.rank}", f"{hit.score:.3f}"]
        if hit.caption:
            parts.append(_clip(hit.caption, MAX_CAPTION_CHARS))
        if hit.labels:
            label, probability = hit.labels[0]
            parts.append(f"{_clip(label, 40)} {probability:.0%}")
        problem = _missing_file(engine, hit)
        if problem:
            parts.append(f"⚠️ image unavailable: {_clip(problem, MAX_CAPTION_CHARS)}")
        items.append((image_url(engine, hit, root), " · ".join(parts)))
    return items


def image_url(engine: SearchEngine, hit: Hit, root: str) -> str:
    """Where a client loads a hit's image: its own URL (URL stores), else `root`/image/{revision}/{row}/{file name}."""
    if hit.image.startswith(("https://", "http://")):
        return hit.image
    name = hit.image.rsplit("/", 1)[-1] if "/" in hit.image else f"row-{hit.row}"
    return f"{root}/image/{engine.revision}/{hit.row}/{quote(name, safe='')}"


def _missing_file(engine: SearchEngine, hit: Hit) -> str | None:
    """Why a hit's local file cannot be shown (gone, not a file), or None; URL and dataset images are not checked."""
    if not os.path.isabs(hit.image):
        return None
    try:
        if stat.S_ISREG(os.stat(hit.image).st_mode):
            return None
    except (OSError, ValueError):
        pass
    ref = engine.image_ref_at(hit.row)  # the exact name (hit.image is a display form of one that is not UTF-8)
    try:
        return None if ref.file is None or stat.S_ISREG(os.stat(ref.file).st_mode) else "image file is gone or unreadable: not a regular file"
    except OSError as exc:
        return f"image file is gone or unreadable: {exc.strerror or exc}"


def _page_root(request: gr.Request | None, root_path: str | None) -> str:
    """The public root URL of the page serving `request` (as Gradio computes it for its own file links)."""
    raw = getattr(request, "request", None)
    if raw is None:
        return (root_path or "").rstrip("/")
    return get_root_url(request=raw, route_path=get_api_call_path(request=raw), root_path=root_path)


def api_routes(engine: SearchEngine, batcher: SearchBatcher, *, root_path: Any = lambda: None) -> list[BaseRoute]:
    """The image route and the JSON API for `engine`, answered through `batcher` (mounted by `SearchPage.launch`;
    add them to your own FastAPI app when you mount the page with `gr.mount_gradio_app`)."""

    async def image(request: Request) -> Response:
        return await serve_image(engine, request.path_params["revision"], request.path_params["row"])

    async def search(request: Request) -> Response:
        return await api_search(engine, batcher, request, root_path())

    # gradio_client downloads every file of a result through /gradio_api/file=<its path>, which for a URL makes
    # Gradio fetch it (refusing loopback hosts): the links to this route are answered here directly instead.
    via_gradio_client = [f"/gradio_api/file={scheme}://{{host}}/image/{{revision}}/{{row}}{tail}" for scheme in ("http", "https") for tail in ("", "/{name:path}")]
    return [
        Route("/image/{revision}/{row}", image, methods=["GET", "HEAD"]),
        Route("/image/{revision}/{row}/{name:path}", image, methods=["GET", "HEAD"]),
        *(Route(path, image, methods=["GET", "HEAD"]) for path in via_gradio_client),
        Route("/api/search", search, methods=["POST"]),
    ]


async def serve_image(engine: SearchEngine, revision: str, row_text: str) -> Response:
    """The image of store row `row_text` of store `revision`: its file, re-encoded as PNG, or a placeholder."""
    if revision != engine.revision or not _ROW.fullmatch(row_text) or int(row_text) >= len(engine.store):
        return Response("no such image (the link may be for another store): search again", status_code=404, media_type="text/plain")
    row = int(row_text)
    ref = engine.image_ref_at(row)
    if ref.url:
        return RedirectResponse(ref.url, status_code=307)
    headers = {"Cache-Control": f"public, max-age={config.APP_IMAGE_MAX_AGE_S}", "X-Content-Type-Options": "nosniff"}
    if ref.file is not None:
        kind = WEB_IMAGE_TYPES.get(os.path.splitext(os.fsencode(ref.file).decode("utf-8", "replace"))[1].lower())
        try:
            info = os.stat(ref.file)
            regular = stat.S_ISREG(info.st_mode)
        except OSError as exc:
            return _unavailable(f"image file is gone or unreadable: {exc.strerror or exc}")
        if not regular:
            return _unavailable("image file is gone or unreadable: not a regular file")
        if kind is not None:
            return FileResponse(ref.file, media_type=kind, headers=headers, stat_result=info)
    from anyio import to_thread

    try:
        picture = await to_thread.run_sync(engine.open_image_at, row)
    except SkipItem as exc:
        return _unavailable(str(exc))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return Response(buffer.getvalue(), media_type="image/png", headers=headers)


def _unavailable(reason: str) -> Response:
    """The placeholder tile (200, so every client shows it), the reason in a header, never cached."""
    header = " ".join(reason.encode("ascii", "replace").decode("ascii").split())[:200]
    return Response(_placeholder_png(), media_type="image/png", headers={"X-Image-Unavailable": header, "Cache-Control": "no-store"})


@lru_cache(maxsize=1)
def _placeholder_png() -> bytes:
    """The tile shown for an image that is gone: a grey square with a cross (the caption says why), as PNG."""
    from PIL import Image, ImageDraw

    size = PLACEHOLDER_SIZE
    image = Image.new("RGB", (size, size), (232, 232, 232))
    draw = ImageDraw.Draw(image)
    margin = size // 3
    draw.line((margin, margin, size - margin, size - margin), fill=(150, 150, 150), width=6)
    draw.line((margin, size - margin, size - margin, margin), fill=(150, 150, 150), width=6)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


async def api_search(engine: SearchEngine, batcher: SearchBatcher, request: Request, root_path: str | None = None) -> Response:
    """`POST /api/search`: one search for a program, as JSON in and out.

    Request: `Content-Type: application/json`, a body of at most APP_API_MAX_BODY_BYTES (a larger declared
    Content-Length is refused before anything is read, and reading stops at the bound), holding an object:

        {"query": "a red car", "negative": "people", "top_k": 12, "labels": "car, truck", "where": ["width >= 640"]}

    `query` (text, needed), `negative` (text), `top_k` (1 to APP_MAX_TOP_K, default DEFAULT_TOP_K), `labels` (text
    separated by commas, or a list of texts: the hits are classified on them), `where` (a list of metadata
    conditions); the same checks as the page's form (`SearchRequest.from_payload`). Images are searched through
    the page or the Gradio API, not here.

    Answers: 200 `{"hits": [{"rank", "id", "score", "image", "caption", "labels": [[label, probability], ...]}],
    "labels": [...], "timings_ms": {...}}` where `image` is a URL (the store's own, or this server's image route);
    400 `{"error": "..."}` for a malformed request or a bad value (one line saying which); 413 for a body too large;
    415 for a body that is not JSON; 503 `{"error": "the server is busy ..."}` with `Retry-After` under overload.
    """
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/json":
        return _api_error(415, f"send the search as JSON (Content-Type: application/json), not {kind or 'no content type'}")
    limit = config.APP_API_MAX_BODY_BYTES
    too_large = _api_error(413, f"the request body is too large: at most {limit:,} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or len(declared) > 15):
        return _api_error(400, "the Content-Length header is not a number")
    if declared is not None and int(declared) > limit:
        return too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return too_large
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:
        return _api_error(400, f"the body is not valid JSON: {_clip(str(exc), 80)}")
    if not isinstance(payload, dict):
        return _api_error(400, f"the body must be a JSON object with the fields {', '.join(API_FIELDS)}, got {_kind(payload)}")
    unknown = [str(key) for key in payload if key not in API_FIELDS]
    if unknown:
        hint = ": search by image through the page or the Gradio API" if "image" in unknown else ""
        return _api_error(400, f"unknown field {_clip(', '.join(unknown), 80)}: the fields are {', '.join(API_FIELDS)}{hint}")
    try:
        form = SearchRequest.from_payload(payload.get("query"), payload.get("negative"), None, payload.get("top_k", config.DEFAULT_TOP_K), payload.get("labels"), payload.get("where"))
        result = await batcher.search_async(form.query(None), timeout=config.APP_SEARCH_TIMEOUT_S)
    except Busy:
        return JSONResponse({"error": BUSY_MESSAGE.removeprefix("⚠️ ")}, status_code=503, headers={"Retry-After": "1"})
    except ClipSearchError as exc:
        return _api_error(400, " ".join(str(exc).split()))
    root = get_root_url(request=request, route_path="/api/search", root_path=root_path)
    hits = [
        {"rank": h.rank, "id": h.id, "score": round(h.score, 6), "image": image_url(engine, h, root), "caption": h.caption, "labels": [[label, round(p, 6)] for label, p in h.labels]}
        for h in result.hits
    ]
    return JSONResponse({"hits": hits, "labels": result.labels, "timings_ms": {k: round(v, 3) for k, v in result.timings_ms.items()}})


def _api_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _table(result: SearchResult | None) -> dict[str, Any]:
    """One row per result: rank, id, top label, then its probability for every label and "none of these" (rows sum to 1)."""
    if result is None or result.label_table is None:
        return {"headers": list(TABLE_FIXED_HEADERS), "data": []}
    rows = [
        [hit.rank, _clip(hit.id, 60), hit.labels[0][0] if hit.labels else "", *(f"{p:.3f}" for p in probs)]
        for hit, probs in zip(result.hits, result.label_table)
    ]
    return {"headers": [*TABLE_FIXED_HEADERS, *result.label_columns], "data": rows}


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

