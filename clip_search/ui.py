"""The Gradio web app: a page that turns form inputs into one `SearchEngine.search` call and shows its result."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import gradio as gr

from clip_search import config
from clip_search.classify import parse_labels
from clip_search.decode import decode_image
from clip_search.engine import SearchEngine, SearchResult
from clip_search.errors import ClipSearchError, QueryError, SkipItem
from clip_search.store import EmbeddingStore

log = logging.getLogger(__name__)

SEARCH_API = "search"  # the endpoint name clients call: Client(url).predict(..., api_name="/search")
TABLE_FIXED_HEADERS = ["#", "id", "top label"]
MAX_CAPTION_CHARS = 140
MAX_ECHO_CHARS = 80

# Characters Markdown (or the HTML inside it) would interpret; each is shown literally once escaped.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~$:])")
_HTML_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}


def default_store() -> str | None:
    """The store served when none is named: the built-in demo store, when this checkout has it."""
    return str(config.DEMO_STORE) if (config.DEMO_STORE / "manifest.json").is_file() else None


DEMO_NOTICE = (
    "This is the built-in **demo world**: 600 generated scenes of shapes, a small CLIP trained on them on a CPU, "
    "and a multilingual text encoder distilled from it, all offline. Ask for shapes (circle, square, triangle, "
    "star, heart), colours, sizes, counts and positions, in English, German, French, Spanish, Russian or Chinese. "
    "To search your own photos: `clip-search precompute PHOTOS --out STORE`, then `clip-search serve STORE`."
)


def _is_demo(store: str) -> bool:
    return Path(store).resolve() == config.DEMO_STORE.resolve()


def image_roots(store: EmbeddingStore) -> list[Path]:
    """The folders holding a store's local images (none for URL stores): what the app may serve, and no more."""
    table = store.metadata
    if "path" not in table.column_names:
        return []
    paths = table.column("path").to_pylist()
    urls = table.column("url").to_pylist() if "url" in table.column_names else [None] * len(paths)
    parents = {Path(store.image_ref({"path": path})).parent for path, url in zip(paths, urls) if path and not url}
    parents = {folder.resolve() for folder in parents}
    roots: list[Path] = []
    for folder in sorted(parents, key=lambda p: (len(p.parts), str(p))):
        if not any(folder.is_relative_to(root) for root in roots):
            roots.append(folder)
    return roots


def markdown_escape(text: str) -> str:
    """`text` made literal inside Markdown: one line, no HTML, no Markdown or LaTeX syntax."""
    flat = " ".join(str(text).split())
    return "".join(_HTML_ENTITIES.get(ch, ch) for ch in _MARKDOWN_SPECIAL.sub(r"\\\1", flat))


def build_app(
    engine: SearchEngine,
    *,
    examples: list[list[str]] | None = None,
    title: str = config.APP_TITLE,
    notice: str | None = None,
) -> gr.Blocks:
    """The search page for `engine`; `notice` is trusted Markdown shown under the title.

    The store's local image folders are registered with `gr.set_static_paths`, so result images are
    served where they lie (not copied into Gradio's cache); URL images are left for the browser to load.
    """
    roots = image_roots(engine.store)
    if roots:
        gr.set_static_paths(roots)
    example_rows = examples if examples is not None else [[q] for q in config.APP_EXAMPLE_QUERIES]

    def search(query: str | None, negative: str | None, image: dict[str, Any] | None, top_k: Any, labels_text: str | None) -> tuple[list[tuple[str, str]], dict[str, Any], str]:
        try:
            picture = _read_upload(image)
            result = engine.search(
                query or None,
                image=picture,
                negative=negative or None,
                top_k=_top_k(top_k),
                labels=parse_labels(labels_text or ""),
            )
            gallery = _gallery(engine, result)
        except (ClipSearchError, SkipItem) as exc:  # SkipItem: a dataset image that no longer decodes
            return [], _table(None), f"⚠️ {markdown_escape(str(exc))}"
        return gallery, _table(result), _status(query, negative, picture is not None, result)

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
        # Raw payloads (preprocess=False): the upload is decoded by our own hardened `decode_image`,
        # so a broken or hostile file is a one-line message rather than an error inside Gradio.
        gr.on(
            [button.click, query.submit, negative.submit, labels.submit],
            search,
            inputs,
            outputs,
            api_name=SEARCH_API,
            preprocess=False,
        )
        if example_rows:
            shown = gr.Examples(example_rows, inputs=[query], label="Try these (several languages)", examples_per_page=20)
            shown.load_input_event.then(search, inputs, outputs, api_visibility="private", preprocess=False)
    return demo


def load_app(
    store: str | None,
    *,
    model: str | None = None,
    text_model: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> tuple[SearchEngine, gr.Blocks]:
    """The engine for `store` (default: `default_store()`) and the page built on it (demo prompts for the demo)."""
    store = store if store is not None else default_store()
    if store is None:
        raise ClipSearchError("no store given: name the folder of a store built by `clip-search precompute`")
    engine = SearchEngine.load(store, model=model, text_model=text_model, device=device, dtype=dtype)
    if _is_demo(store):
        from clip_search.demo.captions import demo_examples

        return engine, build_app(engine, examples=[[q] for q in demo_examples()], notice=DEMO_NOTICE)
    return engine, build_app(engine)


def launch_app(
    store: str | None,
    *,
    model: str | None = None,
    text_model: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    host: str = config.APP_HOST,
    port: int = config.APP_PORT,
    share: bool = False,
) -> None:
    """Load the app for `store` and serve it until interrupted."""
    engine, demo = load_app(store, model=model, text_model=text_model, device=device, dtype=dtype)
    log.info("serving %d images from %s on http://%s:%d", len(engine.store), engine.store.root, host, port)
    try:
        demo.launch(
            server_name=host,
            server_port=port,
            share=share,
            allowed_paths=[str(root) for root in image_roots(engine.store)],
            max_file_size=config.APP_MAX_UPLOAD_BYTES,
            show_error=False,
        )
    except OSError as exc:
        raise ClipSearchError(f"cannot serve on {host}:{port}: {exc}") from None


def _store_line(engine: SearchEngine) -> str:
    """One Markdown line: how many images, which model, and which languages queries may use."""
    store = engine.store
    model = markdown_escape(_model_name(store.model_id))
    languages = "queries in any language (multilingual text encoder)" if engine.multilingual else "queries in English (CLIP's text encoder)"
    return f"Searching **{len(store):,}** images embedded by **{model}** · {languages}"


def _model_name(model_id: str) -> str:
    """A hub id as written; a local model folder by its name only (no server paths on the page)."""
    return Path(model_id).name if model_id.startswith((".", "/", "~")) or "\\" in model_id or model_id.count("/") > 1 else model_id


def _read_upload(payload: dict[str, Any] | str | None) -> Any:
    """The uploaded query image as RGB PIL, or None; unreadable files become a QueryError."""
    if not payload:
        return None
    path = payload.get("path") if isinstance(payload, dict) else payload
    name = (payload.get("orig_name") if isinstance(payload, dict) else None) or "upload"
    if not path:
        return None
    try:
        return decode_image(Path(path).read_bytes(), name=name)
    except (OSError, SkipItem) as exc:
        raise QueryError(f"cannot read the uploaded image {name}: {exc}") from None


def _top_k(value: Any) -> int:
    """The requested number of results, clamped to the slider's range."""
    try:
        k = int(float(value))
    except (TypeError, ValueError):
        raise QueryError(f"the number of results must be a number, got {str(value)[:20]!r}") from None
    return max(1, min(k, config.APP_MAX_TOP_K))


def _clip(text: str, limit: int) -> str:
    """`text` on one line, cut to `limit` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _gallery(engine: SearchEngine, result: SearchResult) -> list[tuple[Any, str]]:
    """(image, caption) pairs: a URL goes to the browser as is, a local path is served from its static root."""
    items = []
    for hit in result.hits:
        parts = [f"#{hit.rank}", f"{hit.score:.3f}"]
        if hit.caption:
            parts.append(_clip(hit.caption, MAX_CAPTION_CHARS))
        if hit.labels:
            label, probability = hit.labels[0]
            parts.append(f"{_clip(label, 40)} {probability:.0%}")
        items.append((engine.image_for(hit), " · ".join(parts)))
    return items


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

