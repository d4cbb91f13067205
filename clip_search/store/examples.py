"""examples.json: the example prompts (and an optional notice) that travel with a store to the page that serves it."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from clip_search.errors import StoreError

EXAMPLES = "examples.json"


@dataclass(frozen=True)
class StoreExamples:
    """Example queries for a store, and a Markdown notice its page shows (written by whoever built the store)."""

    queries: tuple[str, ...]
    notice: str | None = None


def read_examples(root: Path) -> StoreExamples | None:
    """The store's examples, or None when it ships none; a malformed file is a StoreError naming it."""
    path = root / EXAMPLES
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"cannot read {path}: {exc}") from None
    queries = raw.get("queries") if isinstance(raw, dict) else None
    notice = raw.get("notice") if isinstance(raw, dict) else None
    if not isinstance(queries, list) or not all(isinstance(q, str) and q.strip() for q in queries):
        raise StoreError(f"{path}: 'queries' must be a list of non-empty strings")
    if notice is not None and not isinstance(notice, str):
        raise StoreError(f"{path}: 'notice' must be a string")
    return StoreExamples(tuple(queries), notice)


def write_examples(root: Path, queries: Sequence[str], notice: str | None = None) -> Path:
    """Write examples.json into the store folder `root` (atomically)."""
    path = root / EXAMPLES
    tmp = root / f".{EXAMPLES}.{uuid.uuid4().hex[:8]}"
    tmp.write_text(json.dumps({"queries": list(queries), "notice": notice}, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
