"""A folder of image files, walked recursively, as a source in sorted relative-path order."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

from clip_search.errors import SkipItem, SourceError
from clip_search.sources.base import SourceItem

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}
)


class FolderSource:
    """Every image file under `root` (extensions in IMAGE_EXTENSIONS, any case), hidden entries skipped.

    Items are ordered by their POSIX path relative to `root`, which is also their id. A `metadata.csv` or
    `metadata.jsonl` at the root with a `file_name` column (the Hugging Face imagefolder convention) adds its
    other columns (captions, tags …) to the matching images' metadata.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        path = Path(root).expanduser()
        if not path.exists():
            raise SourceError(f"no such folder: {root}")
        if not path.is_dir():
            raise SourceError(f"not a folder: {root}")
        self.root = path.resolve()
        self._paths, self._skips = list_images(self.root)
        self._extra = read_sidecar_metadata(self.root)
        if not self._paths:
            exts = " ".join(sorted(IMAGE_EXTENSIONS))
            raise SourceError(f"no images found in folder {self.root} (looked for {exts})")

    def __len__(self) -> int:
        return len(self._paths)

    def item(self, index: int) -> SourceItem:
        """The item at `index`: id and metadata are its relative path."""
        rel = self._paths[index]
        return SourceItem(index=index, id=rel, metadata={**self._extra.get(rel, {}), "path": rel})

    def fetch(self, index: int) -> bytes:
        """The file's bytes; an unreadable file is a `SkipItem`."""
        rel = self._paths[index]
        try:
            return (self.root / rel).read_bytes()
        except OSError as e:
            raise SkipItem(f"cannot read file: {e.strerror or e}") from e

    def describe(self) -> dict[str, Any]:
        """Type, absolute root and number of images."""
        return {"type": "folder", "root": str(self.root), "count": len(self._paths)}

    def listing_skips(self) -> list[dict[str, Any]]:
        """Image-named entries that are not regular files, and unreadable subfolders (not non-images)."""
        return [dict(row) for row in self._skips]

    def __repr__(self) -> str:
        return f"FolderSource({str(self.root)!r}, count={len(self._paths)})"


SIDECARS = ("metadata.jsonl", "metadata.csv")


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
        for number, row in enumerate(rows, start=2 if name.endswith(".csv") else 1):
            if not isinstance(row, dict) or not row.get("file_name"):
                raise SourceError(f"{path}, row {number}: no file_name")
            extra[Path(str(row["file_name"])).as_posix()] = {k: "" if v is None else str(v) for k, v in row.items() if k not in ("file_name", "path", "id")}
        return extra
    return {}


def list_images(root: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Sorted relative POSIX paths of the image files below `root`, and what was found but cannot be read.

    Hidden files and folders are skipped. Unreadable subfolders, broken links and special files named
    like images come back as skip rows ({"id", "reason"}) rather than being left out silently.
    """
    found: list[str] = []
    skips: list[dict[str, Any]] = []

    def on_error(error: OSError) -> None:
        if error.filename is not None and Path(error.filename) == root:
            raise SourceError(f"cannot list folder {root}: {error.strerror or error}") from error
        rel = Path(error.filename).relative_to(root).as_posix() if error.filename else "?"
        skips.append({"id": rel, "path": rel, "reason": f"cannot list folder: {error.strerror or error}"})

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        base = Path(dirpath).relative_to(root)
        for name in filenames:
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                continue
            rel = (base / name).as_posix()
            if os.path.isfile(os.path.join(dirpath, name)):
                found.append(rel)
            else:
                reason = "not a regular file (broken link or special file)"
                skips.append({"id": rel, "path": rel, "reason": reason})
    found.sort()
    skips.sort(key=lambda row: row["id"])
    return found, skips
