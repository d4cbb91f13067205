"""The HTML of the search page's result tiles, their previews and the example-prompt gallery: text in, text out.

Every value from a store or a user is escaped here (captions, ids, metadata, labels); links are only image URLs the
app made (`ui.image_url`) and `?q=…` links to the page itself. Layout is CSS alone (no script): a grid of 6 columns on
a desktop, 2 on a phone; a tile's image is the label of a hidden checkbox that opens its preview (no `#fragment` link:
Gradio's page sets a `<base>`, against which a fragment would leave the page).
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

from clip_search.engine import Hit
from clip_search.store import ExamplePrompt
from clip_search.summary import ResultSummary

NO_STRONG_MATCH = "No strong matches — closest results:"
STRONG, WEAK, NONE = "strong", "weak", "none"
RELEVANCE_TIP = (
    "Relevance: how far this image stands out from the rest of the store for this query, relative to the best "
    "result (100% when it stands out); banded strong, weak or none. Not a raw similarity (the preview shows that)."
)
SCORE_TIP = (
    "Score: the cosine similarity between the query and this image in CLIP's space (−1 to 1). It ranks the results "
    "of one query; it is not comparable between queries."
)
LANGUAGE_NAMES = {
    "en": "English", "de": "Deutsch", "fr": "Français", "es": "Español", "it": "Italiano", "pt": "Português",
    "nl": "Nederlands", "pl": "Polski", "ru": "Русский", "uk": "Українська", "tr": "Türkçe", "ar": "العربية",
    "hi": "हिन्दी", "zh": "中文", "ja": "日本語", "ko": "한국어",
}
FROM_CAPTIONS = "From this collection's captions"
MODE_HELP = "image: what the pictures show · caption: what the captions mean · keyword: the captions' words · hybrid: all three"
SUMMARY_TITLE = "What these results show"

CSS = """
.cs-grid { display: grid; grid-template-columns: repeat(6, minmax(0, 1fr)); gap: 10px; width: 100%; }
@media (max-width: 1100px) { .cs-grid { grid-template-columns: repeat(4, minmax(0, 1fr)); } }
@media (max-width: 760px) { .cs-grid { grid-template-columns: repeat(3, minmax(0, 1fr)); } }
@media (max-width: 520px) { .cs-grid { grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 6px; } }
.cs-tile { margin: 0; min-width: 0; border: 1px solid var(--border-color-primary, #ddd); border-radius: 8px; overflow: hidden; background: var(--block-background-fill, #fff); }
.cs-tile.cs-weak { opacity: 0.55; }
.cs-tile.cs-none { opacity: 0.35; }
.cs-tile img { display: block; width: 100%; aspect-ratio: 1 / 1; object-fit: contain; background: #f4f4f4; }
.cs-tile figcaption { padding: 6px; font-size: 0.85em; line-height: 1.3; overflow-wrap: anywhere; }
.cs-head { display: flex; align-items: center; gap: 6px; font-weight: 600; }
.cs-score { display: inline-flex; align-items: center; gap: 4px; font-weight: 400; cursor: help; }
.cs-bar { display: inline-block; width: 48px; height: 6px; border-radius: 3px; background: #e2e2e2; overflow: hidden; }
.cs-bar > span { display: block; height: 100%; background: #4f7cff; }
.cs-label { color: var(--body-text-color-subdued, #555); }
.cs-warn { color: #b45309; }
.cs-banner { margin: 4px 0 10px; padding: 8px 10px; border-radius: 6px; background: #fff7e0; color: #7a5200; font-weight: 600; }
.cs-toggle { display: none !important; }
.cs-open { display: block; cursor: zoom-in; }
.cs-preview { display: none; position: fixed; inset: 0; z-index: 1000; background: rgba(0, 0, 0, 0.6); padding: 16px; overflow-y: auto; }
.cs-toggle:checked + .cs-preview { display: block; }
.cs-preview-box { max-width: 900px; margin: 0 auto; background: var(--background-fill-primary, #fff); color: var(--body-text-color, #111); border-radius: 10px; padding: 14px; }
.cs-preview-box img { display: block; max-width: 100%; max-height: 60vh; margin: 0 auto 10px; }
.cs-preview-box table { width: 100%; border-collapse: collapse; font-size: 0.9em; }
.cs-preview-box th, .cs-preview-box td { text-align: left; vertical-align: top; padding: 3px 6px; border-top: 1px solid #eee; overflow-wrap: anywhere; }
.cs-close { float: right; font-size: 1.6em; line-height: 1; cursor: pointer; padding: 0 6px; }
.cs-examples { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 10px; margin-bottom: 14px; }
.cs-example, .cs-example * { text-decoration: none !important; color: inherit; }
.cs-example { display: block; padding: 8px; border: 1px solid var(--border-color-primary, #ddd); border-radius: 8px; }
.cs-example:hover { border-color: #4f7cff; }
.cs-example .cs-prompt { font-weight: 600; margin-bottom: 6px; overflow-wrap: anywhere; }
.cs-thumbs { display: grid; grid-template-columns: repeat(4, minmax(0, 1fr)); gap: 4px; }
.cs-thumbs img { width: 100%; aspect-ratio: 1 / 1; object-fit: cover; border-radius: 4px; background: #f4f4f4; }
.cs-try { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; }
.cs-try a { padding: 2px 10px; border: 1px solid var(--border-color-primary, #ccc); border-radius: 999px; text-decoration: none; color: inherit; }
.cs-chip { display: inline-flex; align-items: center; padding: 4px 10px; border-radius: 999px; background: #e8eeff; font-weight: 600; }
#image-chip-row { align-items: center; }
.cs-summary { margin: 10px 0; padding: 8px 12px; border-left: 3px solid #4f7cff; background: var(--block-background-fill, #f8f9ff); }
.cs-summary h4 { margin: 0 0 4px; }
.cs-summary ul { margin: 2px 0 6px 18px; padding: 0; }
.cs-spread { display: flex; flex-wrap: wrap; gap: 4px 14px; align-items: center; }
"""


@dataclass(frozen=True)
class Tile:
    """What one result tile shows: its hit, where its image loads from, and why it is unavailable (or None)."""

    hit: Hit
    url: str
    problem: str | None = None


def e(text: object) -> str:
    """`text` escaped for HTML text and attribute values."""
    return html.escape(str(text), quote=True)


def shown_name(hit: Hit) -> str:
    """What names a hit for a person: its caption, else its file name (or id)."""
    if hit.caption and hit.caption.strip():
        return " ".join(hit.caption.split())
    tail = hit.image.replace("\\", "/").rsplit("/", 1)[-1]
    return tail or hit.id


def predicted_labels(hit: Hit) -> list[str]:
    """A hit's trained-classifier labels: "TASK: LABEL 97%" per task (every assigned label of a multi-label task)."""
    out = []
    for p in hit.predictions:
        shown = ", ".join(f"{label} {probability:.0%}" for label, probability in p.probabilities if label in p.labels)
        out.append(f"{p.task}: {shown or '—'}")
    return out


def score_html(hit: Hit) -> str:
    """The score as a bar and a percentage (relevance when the engine gives it, else the raw similarity), with a tooltip."""
    if hit.relevance is not None and math.isfinite(hit.relevance):
        share, tip = max(0.0, min(1.0, hit.relevance)), RELEVANCE_TIP
        text = f"{share:.0%}"
    else:
        share, tip = max(0.0, min(1.0, hit.score)), f"{SCORE_TIP} This one: {hit.score:.3f}."
        text = f"{hit.score:.2f}"
    return (
        f'<span class="cs-score" title="{e(tip)}"><span class="cs-bar"><span style="width:{100 * share:.0f}%"></span></span>'
        f"{e(text)}</span>"
    )


def results_html(tiles: Sequence[Tile]) -> str:
    """The result grid, with the no-strong-match banner when the engine banded the hits and none is strong; each
    tile opens its preview (`previews_html`)."""
    if not tiles:
        return ""
    banded = any(t.hit.band is not None for t in tiles)
    parts = []
    if banded and not any(t.hit.band == STRONG for t in tiles):
        parts.append(f'<p class="cs-banner" role="status">{e(NO_STRONG_MATCH)}</p>')
    parts.append('<div class="cs-grid">')
    for t in tiles:
        parts.append(_tile(t))
    parts.append("</div>")
    return "".join(parts)


def previews_html(tiles: Sequence[Tile]) -> str:
    """A preview per tile, shown when its tile is clicked (`#preview-N`): the image, every metadata field, and a link
    to the original image."""
    return "".join(_preview(t) for t in tiles)


def _tile(t: Tile) -> str:
    hit = t.hit
    band = f" cs-{hit.band}" if hit.band in (STRONG, WEAK, NONE) else ""
    name = shown_name(hit)
    lines = [f'<div class="cs-head">#{hit.rank} · {score_html(hit)}</div>', f'<div class="cs-caption">{e(name)}</div>']
    if hit.labels:
        label, probability = hit.labels[0]
        lines.append(f'<div class="cs-label">{e(label)} {probability:.0%}</div>')
    lines += [f'<div class="cs-label cs-predicted">{e(text)}</div>' for text in predicted_labels(hit)]
    if t.problem:
        lines.append(f'<div class="cs-warn">⚠️ image unavailable: {e(t.problem)}</div>')
    band_attr = f' data-band="{e(hit.band)}"' if hit.band else ""
    return (
        f'<figure class="cs-tile{band}" data-rank="{hit.rank}"{band_attr}>'
        f'<label class="cs-open" for="cs-pv-{hit.rank}" title="details"><img src="{e(t.url)}" alt="{e(name)}"></label>'
        f'<figcaption>{"".join(lines)}</figcaption></figure>'
    )


def _preview(t: Tile) -> str:
    hit = t.hit
    rows = [("rank", hit.rank), ("score", f"{hit.score:.4f}")]
    if hit.relevance is not None:
        rows.append(("relevance", f"{hit.relevance:.0%} ({hit.band or '?'})"))
    rows += [("id", hit.id), *((k, v) for k, v in hit.metadata.items() if k != "id" and v is not None)]
    rows += [("label " + label, f"{p:.1%}") for label, p in hit.labels]
    rows += [(f"{pred.task} ({label})", f"{p:.1%}") for pred in hit.predictions for label, p in pred.probabilities]
    table = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows)
    return (
        f'<input type="checkbox" class="cs-toggle" id="cs-pv-{hit.rank}">'
        f'<div class="cs-preview" id="preview-{hit.rank}" role="dialog" aria-label="{e(shown_name(hit))}"><div class="cs-preview-box">'
        f'<label class="cs-close" for="cs-pv-{hit.rank}" title="close">×</label>'
        f'<img src="{e(t.url)}" alt="{e(shown_name(hit))}" loading="lazy">'
        f'<p><a class="cs-original" href="{e(t.url)}" target="_blank" rel="noopener">Open the original image</a></p>'
        f"<table>{table}</table></div></div>"
    )


def summary_html(summary: ResultSummary, labelled_by: str | None = None) -> str:
    """The summary under the results: the most representative captions, the abstractive summary when one was made,
    and the share of results per label (`labelled_by` says which labels); empty when there is nothing to say."""
    if not summary.captions and not summary.abstract and not summary.spread:
        return ""
    parts = [f'<section class="cs-summary" aria-label="{e(SUMMARY_TITLE)}"><h4>{e(SUMMARY_TITLE)}</h4>']
    if summary.abstract:
        parts.append(f'<p class="cs-abstract">{e(summary.abstract)}</p>')
    if summary.captions:
        parts.append('<ul class="cs-representative">' + "".join(f"<li>{e(c)}</li>" for c in summary.captions) + "</ul>")
    if summary.spread:
        bars = "".join(
            f'<span class="cs-share">{e(label)} <span class="cs-bar"><span style="width:{100 * share:.0f}%"></span></span> {share:.0%}</span>'
            for label, share in summary.spread.items()
        )
        title = f"By {labelled_by}:" if labelled_by else "By label:"
        parts.append(f'<div class="cs-spread"><span>{e(title)}</span>{bars}</div>')
    parts.append("</section>")
    return "".join(parts)


def search_link(**params: object) -> str:
    """A link to the page with these inputs (`?q=…&k=…`), the form a shared search takes; empty values left out."""
    kept = [(k, str(v)) for k, v in params.items() if v not in (None, "", ())]
    return "?" + urlencode(kept)


def try_links(prompts: Sequence[ExamplePrompt]) -> str:
    """A row of example prompts under the query box, each a link that runs it."""
    if not prompts:
        return ""
    links = "".join(f'<a href="{e(search_link(q=p.text))}" lang="{e(p.language or "")}">{e(p.text)}</a>' for p in prompts)
    return f'<div class="cs-try"><span>Try:</span>{links}</div>'


def language_name(code: str | None) -> str:
    """A language's own name for its code (the code itself when unknown); None: the store's captions."""
    if code is None:
        return FROM_CAPTIONS
    return LANGUAGE_NAMES.get(code, code)


def gallery_html(prompts: Sequence[ExamplePrompt], thumbnails: Callable[[ExamplePrompt], Sequence[tuple[str, str]]]) -> str:
    """The example gallery: per language, each prompt with its top results as (URL, caption) thumbnails; a card
    links to the page with that search run."""
    if not prompts:
        return "<p>This store ships no example prompts.</p>"
    groups: dict[str | None, list[ExamplePrompt]] = {}
    for p in prompts:
        groups.setdefault(p.language, []).append(p)
    parts = []
    for language, members in groups.items():
        parts.append(f'<h3 class="cs-language">{e(language_name(language))}</h3><div class="cs-examples">')
        for p in members:
            thumbs = "".join(f'<img src="{e(url)}" alt="{e(alt)}" title="{e(alt)}" loading="lazy">' for url, alt in thumbnails(p))
            parts.append(
                f'<a class="cs-example" href="{e(search_link(q=p.text))}" lang="{e(p.language or "")}">'
                f'<div class="cs-prompt">“{e(p.text)}”</div><div class="cs-thumbs">{thumbs}</div></a>'
            )
        parts.append("</div>")
    return "".join(parts)


def languages_line(languages: Sequence[str] | None, multilingual: bool) -> str:
    """Which query languages the store understands, for a person (plain text)."""
    if not multilingual:
        return "queries in English only (CLIP's own text encoder)"
    if languages:
        return "queries in " + ", ".join(language_name(code) for code in languages)
    return "queries in many languages (multilingual text encoder)"
