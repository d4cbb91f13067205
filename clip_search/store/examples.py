"""examples.json: the example prompts (with their languages), the query languages, and an optional notice that
travel with a store to the page that serves it.

    {"prompts": [{"text": "a red star", "language": "en"}, {"text": "ein blauer Kreis", "language": "de"}],
     "languages": ["en", "de"], "queries": ["a red star", "ein blauer Kreis"], "notice": "Markdown"}

`language` is optional (a prompt taken from the store's own captions has none); `languages` lists the query languages
the store's text encoder understands, when its builder knows them. `queries` repeats the prompts' texts for readers of
the first version of this file, which had only `queries` and `notice` (still read).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from clip_search.errors import StoreError

EXAMPLES = "examples.json"
CAPTION_EXAMPLES = 8  # prompts taken from a store's captions when its builder gives none
MAX_CAPTION_EXAMPLE_CHARS = 80  # longer captions make poor example prompts


@dataclass(frozen=True)
class ExamplePrompt:
    """One example query, and the language it is written in (None: not known, e.g. taken from the store's captions)."""

    text: str
    language: str | None = None


@dataclass(frozen=True)
class StoreExamples:
    """Example prompts for a store, the query languages it understands (when known), and a Markdown notice for its page."""

    prompts: tuple[ExamplePrompt, ...]
    notice: str | None = None
    languages: tuple[str, ...] | None = None

    @property
    def queries(self) -> tuple[str, ...]:
        """The prompts' texts."""
        return tuple(p.text for p in self.prompts)


def read_examples(root: Path) -> StoreExamples | None:
    """The store's examples, or None when it ships none; a malformed file is a StoreError naming it."""
    path = root / EXAMPLES
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"cannot read {path}: {exc}") from None
    return parse_examples(raw, str(path))


def parse_examples(raw: object, where: str) -> StoreExamples:
    """StoreExamples from the decoded JSON of an examples file; a malformed one is a StoreError naming `where`."""
    if not isinstance(raw, dict):
        raise StoreError(f"{where}: must be a JSON object with 'prompts' (or 'queries')")
    notice, languages = raw.get("notice"), raw.get("languages")
    if "prompts" in raw:
        items = raw["prompts"]
        if not isinstance(items, list) or not all(_prompt_ok(p) for p in items):
            raise StoreError(f"{where}: 'prompts' must be a list of {{\"text\": non-empty string, \"language\": string (optional)}}")
        prompts = tuple(ExamplePrompt(p["text"], p.get("language")) for p in items)
    else:
        queries = raw.get("queries")
        if not isinstance(queries, list) or not all(isinstance(q, str) and q.strip() for q in queries):
            raise StoreError(f"{where}: 'queries' must be a list of non-empty strings")
        prompts = tuple(ExamplePrompt(q) for q in queries)
    if notice is not None and not isinstance(notice, str):
        raise StoreError(f"{where}: 'notice' must be a string")
    if languages is not None and (not isinstance(languages, list) or not all(isinstance(x, str) and x.strip() for x in languages)):
        raise StoreError(f"{where}: 'languages' must be a list of language codes such as [\"en\", \"de\"]")
    return StoreExamples(prompts, notice, tuple(languages) if languages is not None else None)


def _prompt_ok(item: object) -> bool:
    return (
        isinstance(item, dict)
        and isinstance(item.get("text"), str)
        and bool(item["text"].strip())
        and isinstance(item.get("language"), (str, type(None)))
    )


def read_examples_file(path: str | Path) -> StoreExamples:
    """Examples a user gives (`precompute --examples FILE`): an examples.json-style JSON file, or plain text with one
    prompt a line, optionally `xx: prompt` to name its language (e.g. `de: ein roter Stern`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(f"cannot read the examples file {path}: {exc}") from None
    if path.suffix.lower() == ".json":
        try:
            return parse_examples(json.loads(text), str(path))
        except json.JSONDecodeError as exc:
            raise StoreError(f"cannot read the examples file {path}: {exc}") from None
    prompts = []
    for line in text.splitlines():
        line = " ".join(line.split())
        if not line or line.startswith("#"):
            continue
        head, sep, rest = line.partition(": ")
        is_code = sep and 2 <= len(head) <= 3 and head.isalpha() and head.islower() and rest.strip()
        prompts.append(ExamplePrompt(rest.strip(), head) if is_code else ExamplePrompt(line))
    if not prompts:
        raise StoreError(f"the examples file {path} holds no prompts: write one a line")
    return StoreExamples(tuple(prompts))


def examples_from_captions(captions: Iterable[str | None], count: int = CAPTION_EXAMPLES) -> StoreExamples | None:
    """Example prompts taken from a store's own captions (distinct, short, spread over the store), or None when it has none."""
    seen: dict[str, None] = {}
    for caption in captions:
        flat = " ".join(str(caption or "").split())
        if flat and len(flat) <= MAX_CAPTION_EXAMPLE_CHARS:
            seen.setdefault(flat)
    if not seen:
        return None
    texts = list(seen)
    step = max(1, len(texts) // count)
    return StoreExamples(tuple(ExamplePrompt(t) for t in texts[::step][:count]))


def write_examples(
    root: Path,
    queries: Sequence[str | ExamplePrompt],
    notice: str | None = None,
    languages: Sequence[str] | None = None,
) -> Path:
    """Write examples.json into the store folder `root` (atomically)."""
    prompts = [q if isinstance(q, ExamplePrompt) else ExamplePrompt(q) for q in queries]
    payload = {
        "prompts": [{"text": p.text, **({"language": p.language} if p.language else {})} for p in prompts],
        "languages": list(languages) if languages is not None else None,
        "queries": [p.text for p in prompts],
        "notice": notice,
    }
    path = root / EXAMPLES
    tmp = root / f".{EXAMPLES}.{uuid.uuid4().hex[:8]}"
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
