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

import asyncio
import inspect
import io
import json
import logging
import math
import os
import re
import stat
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
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
from clip_search.config import (
    AUTO_MODE,
    HYBRID_MODE,
    HYBRID_WEIGHTS,
    IMAGE_MODE,
    SEARCH_MODES,
)
from clip_search.engine import Hit, Query, SearchEngine, SearchResult, sort_hits
from clip_search.enrich import enriched_labels
from clip_search.errors import ClipSearchError, QueryError, SkipItem
from clip_search.page_view import (
    CSS,
    MODE_HELP,
    Tile,
    gallery_html,
    languages_line,
    predicted_labels,
    previews_html,
    results_html,
    search_link,
    shown_name,
    summary_html,
    try_links,
)
from clip_search.search import DEFAULT_IMAGE_WEIGHT, DEFAULT_NEGATIVE_WEIGHT
from clip_search.store import ExamplePrompt
from clip_search.suggest import Suggester, has_strong_match
from clip_search.summary import Summarizer, summarize_result

log = logging.getLogger(__name__)

SEARCH_API = "search"  # the endpoint name clients call: Client(url).predict(..., api_name="/search")
SEARCH_OPTIONS_API = "search_options"  # the same, with the page's other inputs: Client(url).predict(..., api_name="/search_options")
TABLE_FIXED_HEADERS = ["#", "id", "top label"]
MAX_CAPTION_CHARS = 140
MAX_ECHO_CHARS = 80
BUSY_MESSAGE = "⚠️ the server is busy: please retry in a moment"
PLACEHOLDER_SIZE = 160
API_FIELDS = ("query", "negative", "top_k", "labels", "where", "where_labels", "negative_weight", "sort", "mode", "weights")
# The page URL's search inputs: ?q=QUERY&not=NEGATIVE&labels=A,B&k=TOP_K&iw=IMAGE_WEIGHT&nw=NEGATIVE_WEIGHT&where=COND&sort=[-]COLUMN&pages=N
# &mode=MODE&w=image=2,caption=1,keyword=0
URL_PARAMS = ("q", "not", "labels", "k", "iw", "nw", "where", "sort", "pages", "mode", "w")
# The Gradio API's inputs, by the names clients pass them (Client(url).predict(..., labels_text="cat, dog")): `/search`
# takes the first five, `/search_options` the first ten; both then take the label filter (trained classifiers) and
# the mode and hybrid weights (a store with a text index) when the store has them.
API_INPUTS = ("query", "negative", "image", "top_k", "labels_text", "image_weight", "negative_weight", "filters", "sort", "pages")
_SORT = re.compile(r"-?[^\x00-\x1f]{1,200}")
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


def build_app(engine: SearchEngine, *, title: str = config.APP_TITLE, suggester: Suggester | None = None, summarizer: Summarizer | None = None) -> SearchPage:
    """The search page for `engine`: a search tab (query, "… but not", labels, an image, their weights, a metadata
    filter and sort, result tiles, "more results") and an example gallery (the store's prompts per language, each
    with its top results), with the notice (trusted Markdown) its store ships. `?q=…` (and the other inputs, see
    `URL_PARAMS`) opens the page with that search run.

    A store with a text index adds a mode switch (image, caption, keyword, hybrid; hybrid by default) and the hybrid
    weights. With a `suggester`, completions of what is typed and "try also" follow-ups are offered, only those whose
    search finds a strong match; under the results, their most representative captions (abstractive too with a
    `summarizer`) and how they spread over the labels.

    Result images load from URLs: a URL store's own, else this server's `/image/...` route, so Gradio neither checks
    nor copies a file per result and serves no folder. Searches from the page, the Gradio API and the JSON API are
    answered together in batches by one `SearchBatcher`. The Gradio API endpoint `/search` keeps its outputs
    (gallery, label table, status); the page renders its tiles from the same search.
    """
    summary = engine.summary()
    batcher = SearchBatcher(engine, config.APP_BATCH_SIZE, config.APP_BATCH_WAIT_MS, config.APP_QUEUE_SIZE)
    sort_choices = [("relevance", "")] + [(f"{c} {arrow}", f"{sign}{c}") for c in summary.columns for arrow, sign in (("↑", ""), ("↓", "-"))]
    modes = search_modes(engine)
    has_text = len(modes) > 1
    default_mode = HYBRID_MODE if has_text else IMAGE_MODE
    enriched = enriched_labels(engine.store)

    async def run(form: SearchRequest, request: gr.Request | None) -> tuple[SearchResult, bool, str]:
        """The search of a checked form: its result, whether an image was part of it, and the page root URL."""
        picture = None
        if form.upload is not None:
            from anyio import to_thread

            picture = await to_thread.run_sync(_read_upload, engine, form.upload)
        result = await batcher.search_async(form.query(picture), timeout=config.APP_SEARCH_TIMEOUT_S)
        if form.sort:
            result = sort_result(result, form.sort)
        return result, picture is not None, _page_root(request, demo.root_path)

    async def api_search_fn(
        request: gr.Request | None, query: Any, negative: Any, image: Any, top_k: Any, labels_text: Any, image_weight: Any = None, negative_weight: Any = None,
        filters: Any = None, sort: Any = None, pages: Any = None, where_labels: Any = None, mode: Any = None, weights: Any = None,
    ) -> tuple[list[tuple[Any, str]], dict[str, Any], str]:
        """`/search` and `/search_options`: a gallery of (image URL, caption), the label table and the status line."""
        try:
            form = SearchRequest.from_payload(
                query, negative, image, top_k, labels_text, None, image_weight, negative_weight, filters, sort, pages,
                where_labels=where_labels, mode=mode, weights=weights, modes=modes,
            )
            result, with_image, root = await run(form, request)
        except Busy:
            return [], _table(None), BUSY_MESSAGE
        except ClipSearchError as exc:
            return [], _table(None), f"⚠️ {markdown_escape(str(exc))}"
        return _gallery(engine, result, root), _table(result), _status(form, with_image, result, _shown_mode(engine, form, has_text))

    async def page_search(form: SearchRequest | None, request: gr.Request | None) -> tuple[Any, ...]:
        """Every page output for one search (or for none, when `form` is None)."""
        if form is None:
            return (gr.skip(),) * len(page_outputs)
        try:
            result, with_image, root = await run(form, request)
        except Busy:
            return _page_message(BUSY_MESSAGE, form)
        except ClipSearchError as exc:
            return _page_message(f"⚠️ {markdown_escape(str(exc))}", form)
        tiles = [Tile(hit, image_url(engine, hit, root), _missing_file(engine, hit)) for hit in result.hits]
        more = len(result.hits) == form.top_k * form.pages and form.pages < config.APP_MAX_PAGES
        return (
            results_html(tiles),
            previews_html(tiles),
            _table(result),
            _status(form, with_image, result, _shown_mode(engine, form, has_text)),
            gr.Accordion(visible=bool(form.labels)),
            gr.Button(visible=more),
            form,
            form.link(),
            form.pages,
            result_choices(result.hits),
            result,
            "",
            _no_suggestions(),
        )

    async def page_submit(
        request: gr.Request | None, query: Any, negative: Any, image: Any, top_k: Any, labels_text: Any, image_weight: Any, negative_weight: Any, filters: Any, sort: Any,
        mode: Any = None, weights: Any = None, where_labels: Any = None, **only: Any,
    ) -> tuple[Any, ...]:
        try:
            form = SearchRequest.from_payload(
                query, negative, image, top_k, labels_text, _only_conditions(only), image_weight, negative_weight, filters, sort, 1,
                where_labels=where_labels, mode=mode, weights=weights, modes=modes,
            )
        except ClipSearchError as exc:
            return _page_message(f"⚠️ {markdown_escape(str(exc))}", None)
        return await page_search(form, request)

    async def page_more(last: SearchRequest | None, request: gr.Request) -> tuple[Any, ...]:
        if last is None:
            return (gr.skip(),) * len(page_outputs)
        return await page_search(replace(last, pages=min(last.pages + 1, config.APP_MAX_PAGES)), request)

    async def page_sort(last: SearchRequest | None, sort: Any, request: gr.Request) -> tuple[Any, ...]:
        if last is None:
            return (gr.skip(),) * len(page_outputs)
        try:
            return await page_search(replace(last, sort=_sort(sort)), request)
        except ClipSearchError as exc:
            return _page_message(f"⚠️ {markdown_escape(str(exc))}", last)

    async def page_mode(last: SearchRequest | None, mode: Any, request: gr.Request) -> tuple[Any, ...]:
        """The mode switched: the last search again, in that mode."""
        if last is None:
            return (gr.skip(),) * len(page_outputs)
        try:
            return await page_search(replace(last, mode=_mode(mode, modes)), request)
        except ClipSearchError as exc:
            return _page_message(f"⚠️ {markdown_escape(str(exc))}", last)

    async def strong_only(texts: Sequence[str], form: SearchRequest) -> list[str]:
        """Those of `texts` whose search (in the form's mode, with its filters) finds a strong match, in order."""
        probes = [replace(form, text=text, negative=None, upload=None, labels=(), sort=None, pages=1, top_k=1).query(None) for text in texts]
        found = await asyncio.gather(*(batcher.search_async(q, timeout=config.APP_SEARCH_TIMEOUT_S) for q in probes), return_exceptions=True)
        for outcome in found:
            if isinstance(outcome, BaseException) and not isinstance(outcome, ClipSearchError):
                raise outcome
        return [text for text, outcome in zip(texts, found) if has_strong_match(outcome)]

    async def page_complete(query: Any, mode: Any) -> Any:
        """Completions of what is being typed that find a strong match (none for an empty box)."""
        text = query if isinstance(query, str) and len(query) <= config.APP_MAX_TEXT_CHARS else ""
        if suggester is None or not text.strip():
            return _no_suggestions()
        from anyio import to_thread

        try:
            form = SearchRequest.from_payload(text, None, None, 1, None, mode=mode, modes=modes)
            offered = await strong_only(await to_thread.run_sync(suggester.complete, text, config.APP_COMPLETIONS), form)
        except ClipSearchError:
            return _no_suggestions()  # the search itself will say what is wrong
        return gr.Radio(choices=offered, value=None, visible=bool(offered))

    async def page_extras(last: SearchRequest | None, found: SearchResult | None) -> tuple[Any, ...]:
        """After a search: the summary of its results, "try also" follow-ups, and the completions put away."""
        hidden = _no_suggestions()
        if last is None or found is None or not found.hits:
            return "", hidden, hidden
        from anyio import to_thread

        column = None if found.labels else next(iter(enriched), None)
        said = await to_thread.run_sync(lambda: summarize_result(engine, found, summarizer=summarizer, label_column=column))
        follow = hidden
        if suggester is not None and last.text and last.text.strip():
            try:
                ideas = await to_thread.run_sync(suggester.try_also, last.text, config.APP_TRY_ALSO + 2)
                offered = (await strong_only(ideas, last))[: config.APP_TRY_ALSO]
            except Busy:
                offered = []
            follow = gr.Radio(choices=offered, value=None, visible=bool(offered))
        return summary_html(said, column or ("zero-shot labels" if found.labels else None)), follow, hidden

    async def page_load(width: Any, request: gr.Request) -> tuple[Any, ...]:
        """The page opened: inputs filled from the URL (`?q=…`), that search run, the labels collapsed on a phone."""
        params = _url_params(request)
        narrow = isinstance(width, (int, float)) and 0 < width < config.APP_NARROW_WIDTH
        fields_count = len(page_fields)
        if not params:  # a plain visit: leave whatever the visitor has typed meanwhile as it is
            return (*(gr.skip(),) * fields_count, *(gr.skip(),) * PANEL, gr.Accordion(open=not narrow), *(gr.skip(),) * (len(page_outputs) - PANEL - 1))
        fields = (
            params.get("q", ""), params.get("not", ""), params.get("labels", ""), _number_or(params.get("k"), config.DEFAULT_TOP_K),
            _number_or(params.get("iw"), DEFAULT_IMAGE_WEIGHT), _number_or(params.get("nw"), DEFAULT_NEGATIVE_WEIGHT),
            params.get("where", ""), params.get("sort", ""), params.get("mode") if params.get("mode") in modes else default_mode, params.get("w") or weights_text(tuple(HYBRID_WEIGHTS.items())),
        )
        if not params.get("q"):
            return (*fields, *(gr.skip(),) * PANEL, gr.Accordion(open=not narrow), *(gr.skip(),) * (len(page_outputs) - PANEL - 1))
        try:
            form = SearchRequest.from_payload(
                params["q"], params.get("not"), None, params.get("k", config.DEFAULT_TOP_K), params.get("labels"), None, params.get("iw"), params.get("nw"),
                params.get("where"), params.get("sort"), params.get("pages"), mode=params.get("mode", default_mode), weights=params.get("w"), modes=modes,
            )
        except ClipSearchError as exc:
            return (*fields, *_page_message(f"⚠️ {markdown_escape(str(exc))}", None))
        outputs = list(await page_search(form, request))
        outputs[PANEL] = gr.Accordion(visible=bool(form.labels), open=not narrow)
        return (*fields, *outputs)

    with SearchPage(title=title, analytics_enabled=False) as demo:
        gr.HTML(f"<style>{CSS}</style>", elem_id="cs-style", padding=False)
        gr.Markdown(f"# {markdown_escape(title)}\n\n{_store_line(engine)}", latex_delimiters=[], elem_id="store-line")
        if summary.notice:
            gr.Markdown(summary.notice, latex_delimiters=[])
        with gr.Tabs(elem_id="tabs"):
            with gr.Tab("Search", id="search-tab", elem_id="search-tab"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=3, min_width=280):
                        query = gr.Textbox(
                            label="Describe what you are looking for",
                            placeholder="a dog running on the beach — any language" if engine.multilingual else "a dog running on the beach",
                            max_lines=1,
                            autofocus=True,
                            elem_id="query",
                        )
                        completions = gr.Radio([], value=None, label="Suggestions (click one to search it)", visible=False, elem_id="completions")
                        mode = gr.Radio(list(modes), value=default_mode, label="Search by", info=MODE_HELP, visible=has_text, elem_id="mode")
                        with gr.Row():
                            negative = gr.Textbox(label="… but not", placeholder="people", max_lines=1, elem_id="negative", min_width=140)
                            labels = gr.Textbox(label="Labels to classify the results", placeholder="cat, dog, car", max_lines=1, elem_id="labels", min_width=140)
                        with gr.Row():
                            top_k = gr.Slider(1, config.APP_MAX_TOP_K, value=config.DEFAULT_TOP_K, step=1, label="Results", elem_id="top-k", min_width=140)
                            button = gr.Button("Search", variant="primary", elem_id="search", min_width=100)
                        with gr.Accordion("Weights, filter and sort", open=False, elem_id="options"):
                            with gr.Row():
                                image_weight = gr.Slider(0, 1, value=DEFAULT_IMAGE_WEIGHT, step=0.05, label="Text ↔ image (the image's share when both are given)", elem_id="image-weight", min_width=140)
                                negative_weight = gr.Slider(0, config.APP_MAX_NEGATIVE_WEIGHT, value=DEFAULT_NEGATIVE_WEIGHT, step=0.05, label="“… but not” strength", elem_id="negative-weight", min_width=140)
                            weights = gr.Textbox(
                                label="Hybrid weights (MODE=NUMBER, …; modes not named keep theirs)",
                                value=weights_text(tuple(HYBRID_WEIGHTS.items())),
                                max_lines=1,
                                visible=has_text,
                                elem_id="weights",
                            )
                            with gr.Row():
                                filters = gr.Textbox(
                                    label="Filter (COLUMN OP VALUE; several separated by ;)",
                                    placeholder=f"{summary.columns[0]} == …" if summary.columns else "the store has no metadata columns",
                                    info=_columns_info(summary.columns, enriched),
                                    max_lines=1,
                                    elem_id="where",
                                    interactive=bool(summary.columns),
                                    min_width=140,
                                )
                                sort = gr.Dropdown(sort_choices, value="", label="Sort results by", elem_id="sort", interactive=bool(summary.columns), min_width=140)
                            label_inputs = label_filter(engine)  # one input with trained classifiers, else none
                            only_inputs = enriched_filters(enriched)  # one per label column `clip-search enrich` added
                    with gr.Column(scale=1, min_width=220):
                        image = gr.Image(
                            label="… or search by image (optional)",
                            type="filepath",
                            image_mode=None,
                            sources=["upload", "clipboard"],
                            height=190,
                            elem_id="query-image",
                        )
                with gr.Row(visible=False, elem_id="image-chip-row") as chip_row:
                    gr.HTML('<span class="cs-chip">🖼 searching with this image</span>', elem_id="image-chip", padding=False)
                    clear_image = gr.Button("×", size="sm", elem_id="clear-image", min_width=40, scale=0)
                if summary.prompts:
                    gr.HTML(try_links(summary.prompts[: config.APP_TRY_PROMPTS]), elem_id="try", padding=False)
                status = gr.Markdown("Type a description and press Enter.", latex_delimiters=[], elem_id="status")
                results = gr.HTML("", elem_id="results", padding=False)
                previews = gr.HTML("", elem_id="previews", padding=False)
                more = gr.Button("More results", visible=False, elem_id="more")
                try_also = gr.Radio([], value=None, label="Try also", visible=False, elem_id="try-also")
                said = gr.HTML("", elem_id="summary", padding=False)
                with gr.Accordion("Zero-shot labels of the results (probability over the labels you typed)", visible=False, elem_id="labels-panel") as labels_panel:
                    table = gr.Dataframe(value=_table(None), show_label=False, datatype="str", interactive=False, wrap=True, elem_id="label-table")
                # What the Gradio API's `/search` returns: a gallery of (image, caption), kept off the page.
                gallery = gr.Gallery(label="Results", visible=False, elem_id="results-api")
                last = gr.State(None)
                found = gr.State(None)
                link = gr.Textbox(visible=False, elem_id="share-link")
                pages = gr.Number(1, visible=False, precision=0, elem_id="pages")
                width = gr.Number(0, visible=False, elem_id="viewport-width")
                api_trigger = gr.Button(visible=False, elem_id="api-trigger")
                to_label = labelling_panel()
            with gr.Tab("Example gallery", id="gallery-tab", elem_id="gallery-tab"):
                gr.Markdown(f"Example searches on this store, with their top results: click one to run it. This store understands {languages_line(summary.languages, summary.multilingual)}.", elem_id="gallery-intro")
                gr.HTML(_example_gallery(engine, summary.prompts), elem_id="example-gallery", padding=False)

        # PANEL: labels_panel's place; the summary and "try also" are emptied here and filled by `page_extras` after
        page_outputs = [results, previews, table, status, labels_panel, more, last, link, pages, to_label, found, said, try_also]
        page_fields = [query, negative, labels, top_k, image_weight, negative_weight, filters, sort, mode, weights]
        form_inputs = [query, negative, image, top_k, labels, image_weight, negative_weight, filters, sort]
        # Raw payloads (preprocess=False): every value is checked by `SearchRequest.from_payload`, the upload is
        # read by `_read_upload` (only a regular file in Gradio's upload folder, bounded) and decoded by our
        # hardened decoder, so a hostile value is a one-line message rather than an error inside Gradio.
        # Concurrent searches (up to concurrency_limit) wait as coroutines while `SearchBatcher` runs them as one batch.
        # The Gradio API: `/search` takes the five inputs it always took (raw clients send exactly five values);
        # `/search_options` adds the weights, the filter, the sort and the number of pages; both add the label filter
        # and the mode and hybrid weights where the store has them (`API_INPUTS`).
        optional = [("where_labels", c) for c in label_inputs] + ([("mode", mode), ("weights", weights)] if has_text else [])
        for api_name, count in ((SEARCH_API, 5), (SEARCH_OPTIONS_API, len(API_INPUTS))):
            names = [*API_INPUTS[:count], *(name for name, _ in optional)]
            api_trigger.click(
                named_inputs(api_search_fn, names), [*form_inputs, pages][:count] + [c for _, c in optional], [gallery, table, status],
                api_name=api_name, preprocess=False, concurrency_limit=config.APP_SEARCH_CONCURRENCY,
            )
        share = "(link) => { if (link) { history.replaceState(null, '', link); } return []; }"
        extras = [said, try_also, completions]

        def then_extras(event: Any) -> None:
            """After a page search: the URL set to its link, then its summary and follow-ups."""
            event.then(None, [link], None, js=share).then(page_extras, [last, found], extras, **extra_work)

        page_names = [*API_INPUTS[:9], "mode", "weights", *(name for name, _ in optional if name == "where_labels"), *(f"{ONLY}{c}" for c in list(enriched)[: len(only_inputs)])]
        submit = named_inputs(page_submit, page_names)
        page_form = [*form_inputs, mode, weights, *label_inputs, *only_inputs]
        private: dict[str, Any] = {"api_visibility": "private", "concurrency_limit": config.APP_SEARCH_CONCURRENCY}
        # Completions, summaries and follow-ups share a few workers of their own, so that they never hold a search back.
        extra_work: dict[str, Any] = {"api_visibility": "private", "concurrency_limit": config.APP_EXTRAS_CONCURRENCY, "concurrency_id": "extras"}
        then_extras(gr.on([button.click, query.submit, negative.submit, labels.submit, filters.submit, weights.submit], submit, page_form, page_outputs, preprocess=False, **private))
        then_extras(more.click(page_more, [last], page_outputs, **private))
        then_extras(sort.input(page_sort, [last, sort], page_outputs, **private))
        then_extras(mode.input(page_mode, [last, mode], page_outputs, **private))
        for offered in (completions, try_also):  # a suggestion clicked: it becomes the query, and is searched
            then_extras(offered.input(lambda picked: picked or gr.skip(), [offered], [query], api_visibility="private").then(submit, page_form, page_outputs, preprocess=False, **private))
        if suggester is not None:
            query.input(page_complete, [query, mode], [completions], trigger_mode="always_last", show_progress="hidden", preprocess=False, **extra_work)
        image.change(lambda value: gr.Row(visible=bool(value)), [image], [chip_row], api_visibility="private", preprocess=False)
        clear_image.click(lambda: (None, gr.Row(visible=False)), None, [image, chip_row], api_visibility="private")
        then_extras(demo.load(page_load, [width], [*page_fields, *page_outputs], js="() => [window.innerWidth]", api_visibility="private"))
    # Beyond APP_QUEUE_SIZE waiting searches, Gradio refuses new ones at once ("Queue is full") instead of queueing.
    os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", str(config.APP_ANALYTICS_EVENTS))  # read by the queue made here
    demo.queue(max_size=config.APP_QUEUE_SIZE)
    demo.batcher = batcher
    demo.routes = api_routes(engine, batcher, root_path=lambda: demo.root_path)
    return demo


def named_inputs(handler: Callable[..., Awaitable[Any]], names: Sequence[str]) -> Callable[..., Awaitable[Any]]:
    """An event handler taking the inputs `names` in order (what Gradio's API shows and clients pass by name), and
    the request, that calls `handler(request, **inputs)`: one handler serves pages with and without optional inputs."""

    async def handle(*values: Any) -> Any:
        *inputs, request = values
        return await handler(request, **dict(zip(names, inputs)))

    parameter = inspect.Parameter.POSITIONAL_OR_KEYWORD
    handle.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [*(inspect.Parameter(name, parameter) for name in names), inspect.Parameter("request", parameter, annotation=gr.Request)]
    )
    handle.__annotations__ = {"request": gr.Request}
    return handle


def search_modes(engine: SearchEngine) -> tuple[str, ...]:
    """The modes a search of `engine`'s store can run in: every mode with a text index, else image alone."""
    return SEARCH_MODES if engine.store.manifest.text_index is not None else (IMAGE_MODE,)


def _shown_mode(engine: SearchEngine, form: SearchRequest, has_text: bool) -> str | None:
    """The mode a search ran in, for the status line of a store with a text index (None otherwise)."""
    return engine.search_mode(form.mode, form.text) if has_text else None


ONLY = "only_"  # the page's inputs for enriched label columns are named ONLY + column


def enriched_filters(enriched: dict[str, tuple[str, ...]]) -> list[gr.Dropdown]:
    """A choice of label per label column `clip-search enrich` added (the first APP_ENRICHED_FILTERS): "any", or
    only the results with that label."""
    return [
        gr.Dropdown([("any", ""), *((label, label) for label in labels)], value="", label=f"Only results whose {column} is", elem_id=f"only-{column}", min_width=140)
        for column, labels in list(enriched.items())[: config.APP_ENRICHED_FILTERS]
    ]


def _only_conditions(only: dict[str, Any]) -> list[Any] | None:
    """The conditions of the page's enriched-label choices ("COLUMN == LABEL" for each one made), checked as any
    `where` is; a value that is not text is left for `SearchRequest.from_payload` to refuse."""
    conditions = [value if not isinstance(value, str) else f"{name.removeprefix(ONLY)} == {value}" for name, value in only.items() if value not in (None, "")]
    return conditions or None


def _columns_info(columns: Sequence[str], enriched: dict[str, tuple[str, ...]]) -> str | None:
    """The filter box's hint: the metadata columns, each label column added by `clip-search enrich` with its labels."""
    if not columns:
        return None
    shown = [f"{c} ({', '.join(enriched[c][:8])}{', …' if len(enriched[c]) > 8 else ''})" if c in enriched else c for c in columns]
    return "columns: " + ", ".join(shown)


PANEL = 4  # where the labels panel is among the page's search outputs


def _page_message(message: str, form: SearchRequest | None) -> tuple[Any, ...]:
    """The page's search outputs for a search that gave no result, only `message`."""
    pages = form.pages if form is not None else 1
    return "", "", _table(None), message, gr.Accordion(visible=False), gr.Button(visible=False), form, "", pages, result_choices(()), None, "", _no_suggestions()


def _no_suggestions() -> Any:
    """A suggestion list (completions, "try also") emptied and hidden."""
    return gr.Radio(choices=[], value=None, visible=False)


def _example_gallery(engine: SearchEngine, prompts: Sequence[ExamplePrompt]) -> str:
    """The example gallery's HTML: each prompt's top results, found in one batch, linked relative to the page."""
    found = engine.search_many([Query(text=p.text, top_k=config.APP_GALLERY_THUMBNAILS) for p in prompts])
    by_prompt = {}
    for prompt, result in zip(prompts, found):
        hits = [] if isinstance(result, ClipSearchError) else result.hits
        by_prompt[prompt] = [(image_url(engine, hit, "."), shown_name(hit)) for hit in hits]
    return gallery_html(prompts, lambda p: by_prompt.get(p, []))


def _url_params(request: gr.Request | None) -> dict[str, Any]:
    """The page URL's search inputs (`URL_PARAMS`), as text; `where` may repeat (joined with ;)."""
    raw = getattr(request, "request", None)
    query = getattr(raw, "query_params", None)
    if query is None:
        return {}
    params: dict[str, Any] = {}
    for name in URL_PARAMS:
        values = query.getlist(name)
        if values:
            params[name] = "; ".join(values) if name == "where" else values[-1]
    return params


def _number_or(value: Any, default: float) -> float:
    """A URL parameter as a number for a slider (the search itself checks it): the default when it is not one."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def load_app(
    store: str | None,
    *,
    model: str | None = None,
    text_model: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    text_backend: str = "auto",
    classifiers: tuple[str, ...] = (),
    suggester: str | None = None,
    summarizer: str | None = None,
) -> tuple[SearchEngine, gr.Blocks]:
    """The engine for `store` (default: `default_store()`) and the page built on it; `classifiers` are trained
    classifier folders whose labels the tiles show and the page filters by; `suggester` a folder `train-suggester`
    wrote (query completions and "try also"); `summarizer` a sequence-to-sequence model (hub id or folder) that adds
    an abstractive summary under the results."""
    store = store if store is not None else default_store()
    if store is None:
        raise ClipSearchError("no store given: name the folder of a store built by `clip-search precompute`")
    engine = SearchEngine.load(store, model=model, text_model=text_model, device=device, dtype=dtype, text_backend=text_backend, classifiers=classifiers)
    return engine, build_app(engine, suggester=Suggester(suggester) if suggester else None, summarizer=Summarizer(summarizer) if summarizer else None)


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
    classifiers: tuple[str, ...] = (),
    suggester: str | None = None,
    summarizer: str | None = None,
) -> None:
    """Load the app for `store` (see `load_app`) and serve it until interrupted."""
    engine, demo = load_app(
        store, model=model, text_model=text_model, device=device, dtype=dtype, text_backend=text_backend, classifiers=classifiers, suggester=suggester, summarizer=summarizer,
    )
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
    languages = markdown_escape(languages_line(summary.languages, summary.multilingual))
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
    image_weight: float = DEFAULT_IMAGE_WEIGHT
    negative_weight: float = DEFAULT_NEGATIVE_WEIGHT
    sort: str | None = None  # a metadata column ("-column": descending) the results are ordered by
    pages: int = 1  # how many pages of `top_k` results ("more results")
    where_labels: tuple[str, ...] = ()  # "TASK=LABEL" conditions on the labels of the loaded classifiers
    mode: str = AUTO_MODE  # image, caption, keyword or hybrid; auto: hybrid for a text query where the store has a text index
    weights: tuple[tuple[str, float], ...] | None = None  # hybrid search's weight per mode (None: the library's)

    @classmethod
    def from_payload(
        cls, query: Any, negative: Any, image: Any, top_k: Any, labels: Any, where: Any = None,
        image_weight: Any = None, negative_weight: Any = None, filters: Any = None, sort: Any = None, pages: Any = None,
        *, where_labels: Any = None, mode: Any = None, weights: Any = None, modes: Sequence[str] = SEARCH_MODES,
    ) -> SearchRequest:
        """The request for raw endpoint values (the page's, the Gradio API's, the JSON API's or the page URL's); a
        value of the wrong type, size or range is a QueryError saying which. `labels` is text ("red, blue") or a list
        of texts; `where` a list of conditions, `filters` the same as text separated by semicolons (the page's box);
        the weights numbers (or their text) from 0 to 1 (image) and 0 to APP_MAX_NEGATIVE_WEIGHT ("… but not");
        `sort` a metadata column, "-column" for descending; `pages` 1 to APP_MAX_PAGES; `where_labels` a list of "TASK=LABEL" conditions;
        `mode` one of `modes` (those the store can run: `search_modes`) or "auto"; `weights` hybrid search's weight per
        mode, 0 to APP_MAX_MODE_WEIGHT each: an object {"image": 2, "caption": 1}, text "image=2,caption=1", or a
        list of three numbers (image, caption, keyword)."""
        if isinstance(labels, list):
            parsed = list(dict.fromkeys(label for label in (" ".join((_text("labels", item) or "").split()) for item in labels) if label))
        else:
            parsed = parse_labels(_text("labels", labels) or "")
        if len(parsed) > config.APP_MAX_LABELS:
            raise QueryError(f"too many labels ({len(parsed)}): give at most {config.APP_MAX_LABELS}")
        conditions = _where(where) + _filters(filters)
        if len(conditions) > config.APP_MAX_CONDITIONS:
            raise QueryError(f"too many conditions ({len(conditions)}): give at most {config.APP_MAX_CONDITIONS}")
        return cls(
            _text("query", query), _text("negative", negative), _upload(image), _top_k(top_k), tuple(parsed), conditions,
            _weight("image weight", image_weight, DEFAULT_IMAGE_WEIGHT, 1.0), _weight("negative weight", negative_weight, DEFAULT_NEGATIVE_WEIGHT, config.APP_MAX_NEGATIVE_WEIGHT),
            _sort(sort), _whole("pages", pages, 1, config.APP_MAX_PAGES), _where(where_labels, "where_labels"), _mode(mode, modes), _mode_weights(weights),
        )

    def query(self, picture: Any) -> Query:
        """The engine's query for this request, with its decoded image (or None): `pages` × `top_k` results."""
        return Query(
            text=self.text, image=picture, negative=self.negative, top_k=self.top_k * self.pages, labels=self.labels, where=self.where,
            negative_weight=self.negative_weight, image_weight=self.image_weight, where_labels=self.where_labels,
            mode=self.mode, weights=None if self.weights is None else dict(self.weights),
        )

    def link(self) -> str:
        """The page URL's query string that opens the page with this search run (the image is not part of it)."""
        return search_link(
            q=self.text, **{"not": self.negative}, labels=", ".join(self.labels),
            k=self.top_k if self.top_k != config.DEFAULT_TOP_K else None,
            iw=self.image_weight if self.image_weight != DEFAULT_IMAGE_WEIGHT else None,
            nw=self.negative_weight if self.negative_weight != DEFAULT_NEGATIVE_WEIGHT else None,
            where="; ".join(self.where), sort=self.sort, pages=self.pages if self.pages > 1 else None,
            mode=None if self.mode == AUTO_MODE else self.mode, w=None if self.weights is None or dict(self.weights) == HYBRID_WEIGHTS else weights_text(self.weights),
        )


def sort_result(result: SearchResult, sort: str) -> SearchResult:
    """`result` with its hits in the order of a metadata column ("-column": descending); label rows follow their hits."""
    descending = sort.startswith("-")
    ordered = sort_hits(result.hits, sort[1:] if descending else sort, descending=descending)
    place = {id(hit): i for i, hit in enumerate(result.hits)}
    order = [place[id(hit)] for hit in ordered]
    probabilities = None if result.probabilities is None else result.probabilities[order]
    none_of_these = None if result.none_of_these is None else result.none_of_these[order]
    return replace(result, hits=ordered, probabilities=probabilities, none_of_these=none_of_these)


def _where(value: Any, name: str = "where") -> tuple[str, ...]:
    """Conditions: a list of condition texts ("width >= 640"; for `where_labels`, "TASK=LABEL"), or nothing; the
    engine parses each."""
    if value is None:
        return ()
    if not isinstance(value, list):
        example = "shape=star" if name == "where_labels" else "width >= 640"
        raise QueryError(f"{name} must be a list of conditions such as [\"{example}\"], got {_kind(value)}")
    if len(value) > config.APP_MAX_CONDITIONS:
        raise QueryError(f"too many conditions ({len(value)}): give at most {config.APP_MAX_CONDITIONS}")
    return tuple(_text("condition", item) or "" for item in value)


def _mode(value: Any, modes: Sequence[str]) -> str:
    """A search mode: one the store can run (`modes`), or "auto"; nothing gives "auto"."""
    if value is None or value == "":
        return AUTO_MODE
    usable = ", ".join((AUTO_MODE, *modes))
    if not isinstance(value, str):
        raise QueryError(f"the search mode must be text ({usable}), got {_kind(value)}")
    if value not in (AUTO_MODE, *SEARCH_MODES):
        raise QueryError(f"unknown search mode {_shown(value)}: use {usable}")
    if value != AUTO_MODE and value not in modes:
        raise QueryError(f"this store has no text index, so no {value} search: search by image, or build one with `clip-search index-text STORE`")
    return value


def _mode_weights(value: Any) -> tuple[tuple[str, float], ...] | None:
    """Hybrid weights: an object {MODE: NUMBER}, text "MODE=NUMBER,...", or a list of one number per mode (image,
    caption, keyword); each from 0 to APP_MAX_MODE_WEIGHT, not all zero; modes not named keep the library's."""
    if value is None or value == "" or value == {}:
        return None
    names = tuple(HYBRID_WEIGHTS)
    limit = config.APP_MAX_MODE_WEIGHT
    if isinstance(value, list):
        if len(value) != len(names):
            raise QueryError(f"weights as a list must hold {len(names)} numbers ({', '.join(names)}), got {len(value)}")
        value = dict(zip(names, value))
    if isinstance(value, str):
        if len(value) > 200:
            raise QueryError(f"the weights are too long ({len(value):,} characters): write MODE=NUMBER,... for {', '.join(names)}")
        from clip_search.hybrid import parse_weights

        try:
            value = parse_weights(value)
        except ValueError as exc:
            raise QueryError(str(exc) if str(exc).startswith("weight") else f"weights: {exc}") from None
    if not isinstance(value, dict):
        raise QueryError(f"weights must be an object such as {{\"image\": 2, \"caption\": 1}} or text such as \"image=2,caption=1\", got {_kind(value)}")
    unknown = [str(name) for name in value if name not in names]
    if unknown:
        raise QueryError(f"weights: no mode {_clip(', '.join(unknown), 60)!r} to weigh: use {', '.join(names)}")
    merged = dict(HYBRID_WEIGHTS)
    for name, number in value.items():
        merged[name] = _weight(f"hybrid {name} weight", number, HYBRID_WEIGHTS[name], limit)
    if not any(merged.values()):
        raise QueryError("weights: at least one must be above zero")
    return tuple(merged.items())


def weights_text(weights: Sequence[tuple[str, float]]) -> str:
    """Hybrid weights as the text the page's box and URL take: "image=2,caption=1,keyword=0"."""
    return ",".join(f"{name}={number:g}" for name, number in weights)


def _filters(value: Any) -> tuple[str, ...]:
    """The page's filter box: conditions separated by semicolons or new lines, as text."""
    text = _text("filter", value) or ""
    return tuple(part.strip() for part in re.split(r"[;\n]", text) if part.strip())


def _weight(name: str, value: Any, default: float, limit: float) -> float:
    """A weight: a finite number (or its text) from 0 to `limit`; nothing gives `default`."""
    if value is None or value == "":
        return default
    wrong = QueryError(f"the {name} must be a number from 0 to {limit:g}, got {_shown(value)}")
    number = _number(value, wrong)
    if not 0 <= number <= limit:
        raise wrong
    return number


def _whole(name: str, value: Any, low: int, high: int) -> int:
    """A whole number (or its text) from `low` to `high`; nothing gives `low`."""
    if value is None or value == "":
        return low
    wrong = QueryError(f"{name} must be a whole number from {low} to {high}, got {_shown(value)}")
    number = _number(value, wrong)
    if not number.is_integer() or not low <= number <= high:
        raise wrong
    return int(number)


def _number(value: Any, wrong: QueryError) -> float:
    """A finite number from a JSON number or a short text of one; anything else raises `wrong`."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)) or (isinstance(value, str) and len(value) > 20):
        raise wrong
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise wrong from None
    if not math.isfinite(number):
        raise wrong
    return number


def _sort(value: Any) -> str | None:
    """A sort key: nothing (relevance), or a metadata column name, "-" first for descending (the engine checks the name)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _SORT.fullmatch(value) or value == "-":
        raise QueryError(f"sort must be a metadata column name (\"-name\" for descending), got {_shown(value) if isinstance(value, str) else _kind(value)}")
    return value


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
    if value is None or value == "":
        raise QueryError(f"the number of results must be a whole number from 1 to {config.APP_MAX_TOP_K}, got {_kind(value)}")
    return _whole("the number of results", value, 1, config.APP_MAX_TOP_K)


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
        parts.extend(predicted_labels(hit))
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
    conditions), `negative_weight` (0 to APP_MAX_NEGATIVE_WEIGHT), `sort` (a metadata column, "-column" for
    descending), `mode` ("image", "caption", "keyword", "hybrid" or "auto"; the text modes need a store with a
    text index), `weights` (hybrid's weight per mode: {"image": 2, "caption": 1, "keyword": 0}); the same checks as
    the page's form (`SearchRequest.from_payload`). Images are searched through the page or the Gradio API, not here.

    Answers: 200 `{"hits": [{"rank", "id", "score", "band", "relevance", "image", "caption", "labels": [[label,
    probability], ...]}], "labels": [...], "truncated": [...], "timings_ms": {...}}` where `image` is a URL (the
    store's own, or this server's image route), `band`/`relevance` the engine's relevance signal (null without one)
    and `truncated` names the query parts cut at the text encoder's token limit;
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
        form = SearchRequest.from_payload(
            payload.get("query"), payload.get("negative"), None, payload.get("top_k", config.DEFAULT_TOP_K), payload.get("labels"), payload.get("where"),
            negative_weight=payload.get("negative_weight"), sort=payload.get("sort"), where_labels=payload.get("where_labels"),
            mode=payload.get("mode"), weights=payload.get("weights"), modes=search_modes(engine),
        )
        result = await batcher.search_async(form.query(None), timeout=config.APP_SEARCH_TIMEOUT_S)
        if form.sort:
            result = sort_result(result, form.sort)
    except Busy:
        return JSONResponse({"error": BUSY_MESSAGE.removeprefix("⚠️ ")}, status_code=503, headers={"Retry-After": "1"})
    except ClipSearchError as exc:
        return _api_error(400, " ".join(str(exc).split()))
    root = get_root_url(request=request, route_path="/api/search", root_path=root_path)
    hits = [
        {
            "rank": h.rank, "id": h.id, "score": round(h.score, 6), "band": h.band, "relevance": None if h.relevance is None else round(h.relevance, 6),
            "image": image_url(engine, h, root), "caption": h.caption, "labels": [[label, round(p, 6)] for label, p in h.labels],
        }
        | _predictions_json(h)
        for h in result.hits
    ]
    timings = {k: round(v, 3) for k, v in result.timings_ms.items()}
    return JSONResponse({"hits": hits, "labels": result.labels, "truncated": list(result.truncated), "timings_ms": timings})


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


def _status(form: SearchRequest, with_image: bool, result: SearchResult, mode: str | None = None) -> str:
    """One Markdown line: what was searched (escaped), how many results, in which mode (stores with a text index),
    where the time went, and a notice when a query part was cut at the text encoder's token limit."""
    what: list[str] = []
    if form.text and form.text.strip():
        what.append(f"“{markdown_escape(_clip(form.text, MAX_ECHO_CHARS))}”")
    if with_image:
        what.append("the uploaded image")
    described = " + ".join(what)
    if form.negative and form.negative.strip():
        described += f" but not “{markdown_escape(_clip(form.negative, MAX_ECHO_CHARS))}”"
    timings = " · ".join(f"{name} {ms:.1f} ms" for name, ms in result.timings_ms.items())
    count = len(result.hits)
    line = f"**{count}** result{'s' if count != 1 else ''} for {described}"
    if mode is not None:
        line += f" · {mode} search"
    line += f" · {timings}"
    if form.sort:
        line += f" · sorted by {markdown_escape(form.sort.lstrip('-'))} {'↓' if form.sort.startswith('-') else '↑'}"
    if result.truncated:
        parts = " and the ".join(result.truncated)
        line += f" · ⚠️ the {parts} was cut at the text encoder's token limit: only its beginning was searched"
    return line



# ------------------------------------------------------------------------------------- trained classifiers


def _predictions_json(hit: Hit) -> dict[str, Any]:
    """A hit's trained-classifier labels for the JSON API: {"predictions": {task: {"labels", "probabilities"}}}."""
    if not hit.predictions:
        return {}
    return {"predictions": {p.task: {"labels": list(p.labels), "probabilities": [[label, round(v, 6)] for label, v in p.probabilities]} for p in hit.predictions}}


def label_filter(engine: SearchEngine) -> list[gr.Dropdown]:
    """The label filter of a page whose engine has classifiers ("TASK=LABEL" choices, applied before top-k), as the
    one extra search input; none without classifiers."""
    if not engine.classifiers:
        return []
    choices = [f"{task}={label}" for task, labels in engine.label_tasks.items() for label in labels]
    return [gr.Dropdown(choices, value=[], multiselect=True, label="Only results labelled (trained classifiers)", elem_id="where-labels")]


def result_choices(hits: Sequence[Hit]) -> Any:
    """The labelling panel's result selector, listing these results ("#1 · name"; the value is the image id)."""
    return gr.Dropdown(choices=[(f"#{h.rank} · {_clip(shown_name(h), 60)}", h.id) for h in hits], value=None)


def labelling_panel() -> gr.Dropdown:
    """Build a labelled set from results: pick a result, give it a label, and export every label given as the CSV
    (`id,label`) that `clip-search train-classifier --labels FILE` reads. The labels live in the session only.
    Returns the result selector, which every search refills (`result_choices`)."""
    with gr.Accordion("Label results to train a classifier", open=False, elem_id="labelling"):
        marked = gr.State({})
        with gr.Row():
            chosen = gr.Dropdown([], value=None, label="Result", elem_id="mark-result", min_width=200)
            label = gr.Textbox(label="Label", placeholder="keep", max_lines=1, elem_id="mark-label", min_width=140)
            mark = gr.Button("Label the selected result", elem_id="mark", min_width=140)
            export = gr.Button("Export labels (CSV)", elem_id="export-labels", min_width=140)
        count = gr.Markdown("No result labelled yet.", latex_delimiters=[], elem_id="labelled-count")
        download = gr.File(label="labels.csv", interactive=False, elem_id="labels-file")

    def give(image_id: Any, text: Any, labels: dict[str, str]) -> tuple[dict[str, str], str]:
        try:
            value = " ".join((_text("label", text) or "").split())
            chosen_id = _text("result", image_id)
        except QueryError as exc:
            return labels, f"⚠️ {markdown_escape(str(exc))}"
        if not chosen_id or not value:
            return labels, "⚠️ pick a result and type a label first"
        if chosen_id not in labels and len(labels) >= config.APP_MAX_LABELLED:
            return labels, f"⚠️ at most {config.APP_MAX_LABELLED:,} labelled results: export them first"
        labels = {**labels, chosen_id: value}
        return labels, f"{len(labels)} labelled: " + ", ".join(f"{n} {markdown_escape(_clip(k, 40))}" for k, n in _label_counts(labels).items())

    def save(labels: dict[str, str]) -> str | None:
        if not labels:
            return None
        import csv
        import tempfile

        handle = tempfile.NamedTemporaryFile("w", suffix=".csv", prefix="labels-", delete=False, newline="", encoding="utf-8")
        with handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "label"])
            writer.writerows(sorted(labels.items()))
        return handle.name

    gr.on([mark.click, label.submit], give, [chosen, label, marked], [marked, count], api_visibility="private", preprocess=False)
    export.click(save, marked, download, api_visibility="private")
    return chosen


def _label_counts(labels: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in labels.values():
        counts[value] = counts.get(value, 0) + 1
    return counts
