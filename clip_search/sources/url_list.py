"""A file of image URLs (plain text, CSV/TSV with a url column, Unsplash Lite photos.tsv000) as a source."""

from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from clip_search.config import (
    DOWNLOAD_MAX_BYTES,
    DOWNLOAD_RETRIES,
    DOWNLOAD_TIMEOUT_S,
    UNSPLASH_RESIZE_WIDTH,
)
from clip_search.errors import SourceError
from clip_search.fetch import download
from clip_search.sources.base import SourceItem, skip_row

log = logging.getLogger(__name__)

URL_COLUMNS = ("url", "photo_image_url")  # the first one present holds the image URL
ID_COLUMNS = ("id", "photo_id")  # the first one present holds the item id; else the URL is the id
CAPTION_COLUMNS = ("caption", "photo_description", "ai_description", "description")
UNSPLASH_IMAGE_HOST = "images.unsplash.com"
_TABULAR_SUFFIXES = {".csv", ".tsv", ".tsv000"}


class UrlListSource:
    """Image URLs listed in a file, downloaded one by one with `clip_search.fetch.download`.

    Formats: a plain text file with one URL per line (blank lines and `#` comments ignored); a CSV or
    TSV whose header has a `url` (or `photo_image_url`) column; Unsplash Lite's `photos.tsv000`.
    Rows are numbered as lines of the file, from 1, so a header is row 1 and the first data row is
    row 2; skip reasons start with these numbers ("row 5: duplicate id of row 2"). The id is an `id`
    (or `photo_id`) column, else the URL; a repeated id keeps its first row. images.unsplash.com URLs
    get `w=<resize_width>` so a resized copy is downloaded (`resize_width=None` or 0 downloads the
    original). An item's fingerprint is the URL it downloads: a different image put behind the same
    URL is not noticed (telling would mean downloading it).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        resize_width: int | None = UNSPLASH_RESIZE_WIDTH,
        *,
        timeout_s: float = DOWNLOAD_TIMEOUT_S,
        retries: int = DOWNLOAD_RETRIES,
        max_bytes: int = DOWNLOAD_MAX_BYTES,
    ) -> None:
        file = Path(path).expanduser()
        if not file.is_file():
            raise SourceError(f"no such URL list file: {path}")
        self.path = file.resolve()
        self.resize_width = resize_width
        self.timeout_s = timeout_s
        self.retries = retries
        self.max_bytes = max_bytes
        self._ids: list[str] = []
        self._urls: list[str] = []
        self._metadata: list[dict[str, Any]] = []
        self._skips: list[dict[str, Any]] = []
        self._first_row: dict[str, int] = {}  # id -> row where it was kept; only needed while reading
        self._read()
        del self._first_row
        if not self._ids:
            raise SourceError(f"no usable image URLs in {self.path} ({len(self._skips)} rows skipped)")

    def __len__(self) -> int:
        return len(self._ids)

    def item(self, index: int) -> SourceItem:
        """The item at `index`, with `url`, `caption` (where the file has one) and the other columns."""
        metadata = dict(self._metadata[index])
        return SourceItem(index=index, id=self._ids[index], metadata=metadata, fingerprint=self._urls[index])

    def fetch(self, index: int) -> bytes:
        """Download the image; any failure is a `SkipItem` with the reason."""
        return download(
            self._urls[index], timeout_s=self.timeout_s, retries=self.retries, max_bytes=self.max_bytes
        )

    def fingerprint(self, index: int) -> str:
        """The URL downloaded for the item (with the resize width applied), as listed: no download."""
        return self._urls[index]

    def describe(self) -> dict[str, Any]:
        """Type, absolute file path and number of URLs."""
        return {"type": "url_list", "file": str(self.path), "count": len(self._ids)}

    def listing_skips(self) -> list[dict[str, Any]]:
        """Rows dropped while reading (no or invalid URL, empty or duplicate id), in file order: `index` None,
        `id` the row's id (None when empty), `ref` its URL as written (else "row N"), `reason` "row N: why"."""
        return [dict(row) for row in self._skips]

    def __repr__(self) -> str:
        return f"UrlListSource({str(self.path)!r}, count={len(self._ids)})"

    # -- reading -------------------------------------------------------------------------------------

    def _read(self) -> None:
        """Parse the file into ids, URLs and metadata rows, recording skipped rows."""
        try:
            text = self.path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as e:
            raise SourceError(f"cannot read URL list {self.path}: {e}") from e
        lines = text.split("\n")
        first = next((line for line in lines if line.strip() and not line.lstrip().startswith("#")), "")
        delimiter = _delimiter(self.path, first)
        if not delimiter and first.strip() in URL_COLUMNS:
            delimiter = ","  # a one-column table: a `url` header line, then URLs
        header = []
        if delimiter:
            header = [name.strip() for name in next(csv.reader([first], delimiter=delimiter))]
        if any(name in header for name in URL_COLUMNS):
            self._read_table(text, delimiter)
        elif self.path.suffix.lower() in _TABULAR_SUFFIXES:
            raise SourceError(
                f"{self.path} has no {' or '.join(URL_COLUMNS)} column; its columns are: {', '.join(header)}"
            )
        else:
            self._read_lines(lines)

    def _read_lines(self, lines: list[str]) -> None:
        """One URL per line; the URL is the id."""
        for number, line in enumerate(lines, start=1):
            raw = line.strip()
            if not raw or raw.startswith("#"):
                continue
            self._add(number, raw, raw, {})

    def _read_table(self, text: str, delimiter: str) -> None:
        """A header row then one row per image."""
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        header: list[str] | None = None
        row_start = 1
        for fields in reader:
            number, row_start = row_start, reader.line_num + 1
            if header is None:
                if not fields or not "".join(fields).strip() or fields[0].lstrip().startswith("#"):
                    continue  # blank lines and comments before the header
                header = [name.strip() for name in fields]
                url_col = next(name for name in URL_COLUMNS if name in header)
                id_col = next((name for name in ID_COLUMNS if name in header), None)
                caption_cols = [name for name in CAPTION_COLUMNS if name in header]
                continue
            if not fields or not "".join(fields).strip():
                continue
            row = {name: (fields[i] if i < len(fields) else "") for i, name in enumerate(header) if name}
            url = row.get(url_col, "").strip()
            item_id = row.get(id_col, "").strip() if id_col else url
            metadata: dict[str, Any] = {}
            if caption_cols:
                metadata["caption"] = next((row[c].strip() for c in caption_cols if row[c].strip()), None)
            for name, value in row.items():
                if name not in (url_col, id_col) and name not in ("url", "caption"):
                    metadata[name] = value
            if id_col and url and not item_id:
                self._skips.append(skip_row(None, None, url, f"row {number}: empty {id_col}"))
                continue
            self._add(number, url, item_id, metadata)

    def _add(self, number: int, raw_url: str, item_id: str, metadata: dict[str, Any]) -> None:
        """Validate one row's URL and id, then keep it or record why not."""
        if not raw_url:
            self._skips.append(skip_row(None, item_id or None, f"row {number}", f"row {number}: no URL"))
            return
        if not _is_http_url(raw_url):
            self._skips.append(skip_row(None, item_id or None, raw_url, f"row {number}: invalid URL"))
            return
        if item_id in self._first_row:
            first = self._first_row[item_id]
            reason = f"row {number}: duplicate id of row {first}"
            self._skips.append(skip_row(None, item_id, raw_url, reason))
            return
        self._first_row[item_id] = number
        url = _resized(raw_url, self.resize_width)
        self._ids.append(item_id)
        self._urls.append(url)
        self._metadata.append({"url": url, **metadata})


def _delimiter(path: Path, first_line: str) -> str:
    """Tab for TSV-like files, comma for CSV-like ones, '' for a plain URL list."""
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".tsv000") or "\t" in first_line:
        return "\t"
    if suffix == ".csv" or ("," in first_line and not _is_http_url(first_line.strip())):
        return ","
    return ""


def _is_http_url(text: str) -> bool:
    """True for an absolute http(s) URL with a host and no whitespace."""
    if any(ch.isspace() for ch in text):
        return False
    try:
        parts = urlsplit(text)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def _resized(url: str, width: int | None) -> str:
    """`url` with `w=<width>` added when it is an images.unsplash.com URL without a width already."""
    if not width:
        return url
    parts = urlsplit(url)
    if (parts.hostname or "").lower() != UNSPLASH_IMAGE_HOST:
        return url
    if any(key == "w" for key, _ in parse_qsl(parts.query, keep_blank_values=True)):
        return url
    query = f"{parts.query}&w={int(width)}" if parts.query else f"w={int(width)}"
    return urlunsplit(parts._replace(query=query))
