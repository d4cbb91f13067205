"""The store's manifest.json: a typed `Manifest`, validated field by field when read, written atomically.

This module is the only one that reads or writes manifest.json. Every other part asks the `Manifest` (and its
`ModelRef`, `SourceInfo`, `IndexInfo`) by attribute, never by string key.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from clip_search.config import IMAGE_BACKENDS, STORE_DTYPE, STORE_FORMAT_VERSION, TORCH_BACKEND
from clip_search.errors import StoreError

MANIFEST = "manifest.json"
READABLE_VERSIONS = (1, STORE_FORMAT_VERSION)  # version 1 stores (no revision, no fingerprints) still open
_ROW_PREFIX = re.compile(r"^row \d+: ")


@dataclass(frozen=True)
class ModelRef:
    """The CLIP that made the image embeddings: a hub id or a path relative to the store, with its revision, and
    the backend that ran its image tower (a store written before backends were recorded was made by torch)."""

    id: str
    revision: str | None = None
    commit: str | None = None
    backend: str = TORCH_BACKEND


@dataclass(frozen=True)
class SourceInfo:
    """Where the images came from: `type` (folder, url_list, hf_dataset) and that type's location fields."""

    type: str
    count: int = 0
    root: str | None = None  # folder: absolute, or relative to the store when inside it
    file: str | None = None  # url_list
    name: str | None = None  # hf_dataset on the hub
    path: str | None = None  # hf_dataset on disk
    split: str | None = None
    image_column: str | None = None


@dataclass(frozen=True)
class IndexInfo:
    """An approximate (or exact) index built into the store folder, and what it was measured to do."""

    kind: str
    files: tuple[str, ...]
    params: dict[str, Any]
    store_revision: str  # the manifest revision of the rows it indexes: anything else makes it stale
    count: int
    build_seconds: float
    recall_at_10: float
    bytes_per_vector: float
    built: str


@dataclass(frozen=True)
class TextIndexInfo:
    """The text indexes of a store's text columns: sentence embeddings by `caption_model` (`files[0]`, rows aligned
    with the store's), each row's id and text hash (`files[1]`) and a BM25 keyword index (`files[2]`, a folder),
    with the store revision they were built for."""

    columns: tuple[str, ...]
    caption_model: str  # a hub id, or a path relative to the store
    dim: int
    files: tuple[str, ...]
    store_revision: str
    count: int
    built: str = ""


@dataclass(frozen=True)
class Manifest:
    """Everything a reader needs to trust embeddings.npy and metadata.parquet."""

    model: ModelRef
    dim: int
    count: int
    source: SourceInfo
    revision: str = field(default_factory=lambda: uuid.uuid4().hex)  # new with every write of the rows
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    text_model: str | None = None
    logit_scale: float | None = None
    skipped_count: int = 0
    skipped_reasons: dict[str, int] = field(default_factory=dict)
    dtype: str = STORE_DTYPE
    normalised: bool = True
    index: IndexInfo | None = None
    text_index: TextIndexInfo | None = None
    format_version: int = STORE_FORMAT_VERSION

    def with_index(self, index: IndexInfo | None) -> Manifest:
        """The same manifest recording `index` (or none)."""
        return replace(self, index=index)

    def with_text_index(self, text_index: TextIndexInfo | None) -> Manifest:
        """The same manifest recording `text_index` (or none)."""
        return replace(self, text_index=text_index)

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to manifest.json."""
        source = {k: v for k, v in asdict(self.source).items() if v is not None}
        return {
            "format_version": self.format_version,
            "model": asdict(self.model),
            "text_model": self.text_model,
            "logit_scale": self.logit_scale,
            "dim": self.dim,
            "count": self.count,
            "dtype": self.dtype,
            "normalised": self.normalised,
            "revision": self.revision,
            "created": self.created,
            "source": source,
            "skipped": {"count": self.skipped_count, "reasons": dict(self.skipped_reasons)},
            "index": None if self.index is None else {**asdict(self.index), "files": list(self.index.files)},
            "text_index": None if self.text_index is None else {
                **asdict(self.text_index), "columns": list(self.text_index.columns), "files": list(self.text_index.files)
            },
        }


def skip_summary(skipped: Iterable[Mapping[str, Any]]) -> tuple[int, dict[str, int]]:
    """How many items were skipped, and how many for each reason (a reason's "row N: " prefix left out)."""
    reasons: dict[str, int] = {}
    for entry in skipped:
        reason = _ROW_PREFIX.sub("", str(entry.get("reason") or "unknown"))
        reasons[reason] = reasons.get(reason, 0) + 1
    return sum(reasons.values()), dict(sorted(reasons.items()))


def read_manifest(path: Path) -> Manifest:
    """Read and validate manifest.json; any bad field is a StoreError naming the file and the field."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"cannot read {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise StoreError(f"{path} is not a JSON object")
    return _Fields(raw, path).manifest()


def write_manifest(root: Path, manifest: Manifest) -> None:
    """Write manifest.json into `root` atomically (a reader sees the old one or the new one, never half)."""
    tmp = root / f".{MANIFEST}.{uuid.uuid4().hex[:8]}"
    tmp.write_text(json.dumps(manifest.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, root / MANIFEST)


class _Fields:
    """Typed reads of one manifest's fields, each failure a one-line StoreError naming the field."""

    def __init__(self, raw: Mapping[str, Any], path: Path) -> None:
        self.raw = raw
        self.path = path

    def fail(self, name: str, wanted: str, value: Any) -> StoreError:
        return StoreError(f"{self.path}: field {name!r} must be {wanted}, got {json.dumps(value, ensure_ascii=False)[:60]}")

    def get(self, obj: Mapping[str, Any], name: str, check: Callable[[Any], bool], wanted: str, *, prefix: str = "", required: bool = True, default: Any = None) -> Any:
        if name not in obj:
            if required:
                raise StoreError(f"{self.path}: required field {prefix + name!r} is missing")
            return default
        value = obj[name]
        if not check(value):
            raise self.fail(prefix + name, wanted, value)
        return value

    def manifest(self) -> Manifest:
        raw = self.raw
        version = raw.get("format_version")
        if version not in READABLE_VERSIONS:
            raise StoreError(f"{self.path} has format_version {version!r}; this clip-search reads versions {', '.join(map(str, READABLE_VERSIONS))}")
        model = self.get(raw, "model", _is_object, "an object with an 'id'")
        skipped = self.get(raw, "skipped", _is_object, "an object", required=False, default={})
        reasons = self.get(skipped, "reasons", lambda v: _is_object(v) and all(_is_count(n) for n in v.values()), "an object of counts", prefix="skipped.", required=False, default={})
        dtype = self.get(raw, "dtype", lambda v: v in ("float16", "float32"), "'float16' or 'float32'")
        if self.get(raw, "normalised", lambda v: v is True, "true (clip-search stores unit vectors)", required=False, default=True) is not True:
            raise self.fail("normalised", "true", raw["normalised"])
        index = raw.get("index")
        text_index = raw.get("text_index")
        return Manifest(
            model=ModelRef(
                id=self.get(model, "id", _is_text, "a non-empty string", prefix="model."),
                revision=self.get(model, "revision", _is_optional_text, "a string or null", prefix="model.", required=False),
                commit=self.get(model, "commit", _is_optional_text, "a string or null", prefix="model.", required=False),
                backend=self.get(model, "backend", lambda v: v in IMAGE_BACKENDS, f"one of {', '.join(IMAGE_BACKENDS)}", prefix="model.", required=False, default=TORCH_BACKEND),
            ),
            dim=self.get(raw, "dim", lambda v: _is_count(v) and v > 0, "a positive integer"),
            count=self.get(raw, "count", _is_count, "a non-negative integer"),
            source=self.source(self.get(raw, "source", _is_object, "an object", required=False, default={"type": "unknown"})),
            revision=self.get(raw, "revision", _is_text, "a non-empty string", required=version != 1, default=f"v1-{raw.get('created', '')}"),
            created=self.get(raw, "created", _is_text, "a date string", required=False, default=""),
            text_model=self.get(raw, "text_model", _is_optional_text, "a string or null", required=False),
            logit_scale=self.get(raw, "logit_scale", lambda v: v is None or _is_number(v), "a number or null", required=False),
            skipped_count=self.get(skipped, "count", _is_count, "a non-negative integer", prefix="skipped.", required=False, default=0),
            skipped_reasons=dict(reasons),
            dtype=dtype,
            index=None if index is None else self.index(index),
            text_index=None if text_index is None else self.text_index(text_index),
            format_version=STORE_FORMAT_VERSION,
        )

    def source(self, obj: Any) -> SourceInfo:
        if not _is_object(obj):
            raise self.fail("source", "an object", obj)
        known = {f.name for f in fields(SourceInfo)}
        values: dict[str, Any] = {"type": self.get(obj, "type", _is_text, "a non-empty string", prefix="source.", required=False, default="unknown")}
        values["count"] = self.get(obj, "count", _is_count, "a non-negative integer", prefix="source.", required=False, default=0)
        for name in known - {"type", "count"}:
            values[name] = self.get(obj, name, _is_optional_text, "a string or null", prefix="source.", required=False)
        return SourceInfo(**values)

    def index(self, obj: Any) -> IndexInfo:
        if not _is_object(obj):
            raise self.fail("index", "an object or null", obj)
        p = "index."
        files = self.get(obj, "files", _is_file_names, "a list of file names", prefix=p)
        return IndexInfo(
            kind=self.get(obj, "kind", _is_text, "a non-empty string", prefix=p),
            files=tuple(files),
            params=self.get(obj, "params", _is_object, "an object", prefix=p),
            store_revision=self.get(obj, "store_revision", _is_text, "a non-empty string", prefix=p),
            count=self.get(obj, "count", _is_count, "a non-negative integer", prefix=p),
            build_seconds=float(self.get(obj, "build_seconds", _is_number, "a number", prefix=p)),
            recall_at_10=float(self.get(obj, "recall_at_10", _is_number, "a number", prefix=p)),
            bytes_per_vector=float(self.get(obj, "bytes_per_vector", _is_number, "a number", prefix=p)),
            built=self.get(obj, "built", _is_text, "a date string", prefix=p, required=False, default=""),
        )


    def text_index(self, obj: Any) -> TextIndexInfo:
        if not _is_object(obj):
            raise self.fail("text_index", "an object or null", obj)
        p = "text_index."
        return TextIndexInfo(
            columns=tuple(self.get(obj, "columns", lambda v: isinstance(v, list) and bool(v) and all(_is_text(c) for c in v), "a non-empty list of column names", prefix=p)),
            caption_model=self.get(obj, "caption_model", _is_text, "a non-empty string", prefix=p),
            dim=self.get(obj, "dim", lambda v: _is_count(v) and v > 0, "a positive integer", prefix=p),
            files=tuple(self.get(obj, "files", lambda v: _is_file_names(v) and len(v) == 3, "a list of three file names", prefix=p)),
            store_revision=self.get(obj, "store_revision", _is_text, "a non-empty string", prefix=p),
            count=self.get(obj, "count", _is_count, "a non-negative integer", prefix=p),
            built=self.get(obj, "built", _is_text, "a date string", prefix=p, required=False, default=""),
        )


def _is_object(v: Any) -> bool:
    return isinstance(v, dict)


def _is_text(v: Any) -> bool:
    return isinstance(v, str) and bool(v)


def _is_file_names(v: Any) -> bool:
    return isinstance(v, list) and all(_is_text(f) and "/" not in f and "\\" not in f for f in v)


def _is_optional_text(v: Any) -> bool:
    return v is None or isinstance(v, str)


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")
