"""A folder of image files, walked recursively, as a source in sorted relative-path order."""

from __future__ import annotations

import csv
import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from clip_search.errors import SkipItem, SourceError
from clip_search.sources.base import SourceItem, skip_row

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".hif", ".avif"}
)
SIDECARS = ("metadata.jsonl", "metadata.csv")  # the first one present at the root is read

# Listing skip reasons (the manifest counts skips by reason, so they name no file).
HIDDEN = "hidden (name starts with '.')"
IN_HIDDEN_FOLDER = "hidden (inside a folder whose name starts with '.')"
NOT_REGULAR = "not a regular file (broken link or special file)"
LINKED_FOLDER = "link to a folder (links to folders are not followed)"
NAME_COLLISION = "name collides with another file's once bytes that are not UTF-8 are written as \\xNN"


class FolderSource:
    """Every image file under `root` (extensions in IMAGE_EXTENSIONS, any case), sorted by relative path.

    An item's id and its `path` metadata are its path relative to `root`, with `/` separators, as UTF-8
    text. A name that is not valid UTF-8 (common on disks written by other systems) keeps its valid parts
    and has each undecodable byte written as `\\xNN` (Python's "backslashreplace"); its row also carries
    `path_bytes`, the raw relative path as bytes (`os.fsencode`), from which `local_path` reopens the exact
    file. When a folder holds such a name every row carries `path_bytes` (None for valid names), so all rows
    have the same columns. Should two files get the same text (a file literally named `bad\\xff.png` beside
    one whose name holds the byte 0xff), the valid name keeps it and the other is a listing skip.

    Every other file under `root` is a listing skip with its reason: hidden (its name or a folder above it
    starts with '.'), unsupported file type, not a regular file (broken link, socket ...), a link to a
    folder (not followed); a folder that cannot be listed is one skip. The one exception is the metadata
    file at the root, `metadata.jsonl` else `metadata.csv`, with a `file_name` column (the Hugging Face
    imagefolder convention): it is read, and its other columns (captions, tags ...) go into the matching
    images' metadata (None for images it does not name); its `file_name` is matched against `path`.

    An item's fingerprint is `size:mtime_ns` from the one stat made of each image file while listing.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        path = Path(root).expanduser()
        if not path.exists():
            raise SourceError(f"no such folder: {root}")
        if not path.is_dir():
            raise SourceError(f"not a folder: {root}")
        self.root = path.resolve()
        sidecar = next((name for name in SIDECARS if (self.root / name).is_file()), None)
        listing = list_images(self.root, sidecar)
        self._paths = listing.paths
        self._raw = listing.raw if listing.raw else None  # None: every name is valid UTF-8, no path_bytes
        self._fingerprints = listing.fingerprints
        self._skips = listing.skips
        self._extra = read_sidecar_metadata(self.root)
        columns = {name: None for row in self._extra.values() for name in row}
        self._no_extra: dict[str, Any] = columns  # the sidecar's columns, for images it does not name
        if not self._paths:
            exts = " ".join(sorted(IMAGE_EXTENSIONS))
            raise SourceError(
                f"no images found in folder {self.root} (looked for {exts}; {len(self._skips)} other entries skipped)"
            )

    def __len__(self) -> int:
        return len(self._paths)

    def item(self, index: int) -> SourceItem:
        """The item at `index`: id and `path` are its relative path (see the class docstring for `path_bytes`)."""
        rel = self._paths[index]
        metadata: dict[str, Any] = {**self._no_extra, **self._extra.get(rel, {}), "path": rel}
        if self._raw is not None:
            metadata["path_bytes"] = self._raw.get(index)
        return SourceItem(index=index, id=rel, metadata=metadata, fingerprint=self._fingerprints[index])

    def fetch(self, index: int) -> bytes:
        """The file's bytes; an unreadable file is a `SkipItem`."""
        raw = self._raw.get(index) if self._raw is not None else None
        try:
            return local_path(self.root, {"path": self._paths[index], "path_bytes": raw}).read_bytes()
        except OSError as e:
            raise SkipItem(f"cannot read file: {e.strerror or e}") from e

    def fingerprint(self, index: int) -> str:
        """`size:mtime_ns` of the file when the folder was listed."""
        return self._fingerprints[index]

    def describe(self) -> dict[str, Any]:
        """Type, absolute root and number of images."""
        return {"type": "folder", "root": str(self.root), "count": len(self._paths)}

    def listing_skips(self) -> list[dict[str, Any]]:
        """Every file under the root that is not an item (and unreadable folders), sorted by `ref`, the
        relative path; `index` and `id` are None (a file that is not an item has no id)."""
        return [dict(row) for row in self._skips]

    def __repr__(self) -> str:
        return f"FolderSource({str(self.root)!r}, count={len(self._paths)})"


def local_path(root: str | os.PathLike[str], row: Mapping[str, Any]) -> Path:
    """The file on disk of a FolderSource row under `root`: from `path_bytes` when set, else from `path`."""
    raw = row.get("path_bytes")
    rel = os.fsdecode(bytes(raw)) if raw else str(row["path"])
    return Path(root) / rel


def display_path(rel: str) -> tuple[str, bytes | None]:
    """A relative path as OS-level text -> (UTF-8 display form, raw bytes when the name is not valid UTF-8)."""
    raw = os.fsencode(rel)
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return raw.decode("utf-8", "backslashreplace"), raw


class Listing(NamedTuple):
    """What `list_images` found: items in order, and a skip row for everything else."""

    paths: list[str]  # display form, also the id
    raw: dict[int, bytes]  # index -> raw relative path, for names that are not valid UTF-8
    fingerprints: list[str]  # "size:mtime_ns"
    skips: list[dict[str, Any]]


def list_images(root: Path, sidecar: str | None = None) -> Listing:
    """Walk `root` (links to folders not followed): image files in sorted order, a skip row for the rest.

    `sidecar` names the metadata file at the root that is read (neither item nor skip). One stat per image
    file (for its fingerprint and to see that it is a regular file); other files are judged by name.
    """
    found: list[tuple[str, bytes | None, str]] = []
    skips: list[dict[str, Any]] = []

    def skip(rel: str, reason: str) -> None:
        skips.append(skip_row(None, None, display_path(rel)[0], reason))

    pending: list[tuple[str, bool]] = [("", False)]  # (relative folder, inside a hidden folder)
    while pending:
        folder, in_hidden = pending.pop()
        try:
            with os.scandir(root / folder if folder else root) as it:
                entries = list(it)
        except OSError as e:
            if not folder:
                raise SourceError(f"cannot list folder {root}: {e.strerror or e}") from e
            skip(folder, f"cannot list folder: {e.strerror or e}")
            continue
        for entry in entries:
            rel = f"{folder}/{entry.name}" if folder else entry.name
            hidden = entry.name.startswith(".")
            if _is_dir(entry, follow=False):
                pending.append((rel, in_hidden or hidden))
            elif in_hidden or hidden:
                skip(rel, IN_HIDDEN_FOLDER if in_hidden else HIDDEN)
            elif not folder and sidecar is not None and entry.name in SIDECARS:
                if entry.name != sidecar:
                    skip(rel, f"metadata file not read ({sidecar} is read instead)")
            elif entry.is_symlink() and _is_dir(entry, follow=True):
                skip(rel, LINKED_FOLDER)
            else:
                text, raw = display_path(rel)
                ext = os.path.splitext(text.rsplit("/", 1)[-1])[1].lower()
                if ext not in IMAGE_EXTENSIONS:
                    skip(rel, f"unsupported file type {ext}" if ext else "unsupported file type (no extension)")
                    continue
                try:
                    info = entry.stat()  # follows links: a link to an image file is that image
                except OSError:
                    info = None
                if info is None or not stat.S_ISREG(info.st_mode):
                    skip(rel, NOT_REGULAR)
                    continue
                found.append((text, raw, f"{info.st_size}:{info.st_mtime_ns}"))

    # Equal display forms: a valid name first (it keeps the id), then by raw bytes.
    found.sort(key=lambda f: (f[0], f[1] is not None, f[1] or b""))
    listing = Listing([], {}, [], skips)
    for text, raw, fingerprint in found:
        if listing.paths and listing.paths[-1] == text:
            skips.append(skip_row(None, None, text, NAME_COLLISION))
            continue
        if raw is not None:
            listing.raw[len(listing.paths)] = raw
        listing.paths.append(text)
        listing.fingerprints.append(fingerprint)
    skips.sort(key=lambda row: row["ref"])
    return listing


def _is_dir(entry: os.DirEntry[str], *, follow: bool) -> bool:
    try:
        return entry.is_dir(follow_symlinks=follow)
    except OSError:
        return False


def read_sidecar_metadata(root: Path) -> dict[str, dict[str, str]]:
    """Per-image columns from the root's metadata.jsonl / metadata.csv, keyed by `file_name` (relative path)."""
    for name in SIDECARS:
        path = root / name
        if not path.is_file():
            continue
        try:
            with open(path, encoding="utf-8", newline="") as f:
                rows = [json.loads(line) for line in f if line.strip()] if name.endswith(".jsonl") else list(csv.DictReader(f))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as exc:
            raise SourceError(f"cannot read {path}: {exc}") from None
        extra: dict[str, dict[str, str]] = {}
        reserved = ("file_name", "path", "path_bytes", "id")
        for number, row in enumerate(rows, start=2 if name.endswith(".csv") else 1):
            if not isinstance(row, dict) or not row.get("file_name"):
                raise SourceError(f"{path}, row {number}: no file_name")
            extra[Path(str(row["file_name"])).as_posix()] = {k: "" if v is None else str(v) for k, v in row.items() if k not in reserved}
        return extra
    return {}
