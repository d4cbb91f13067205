"""Portable references, both directions in one place: what a store records about models, sources and images,
and how those records resolve back to something that can be opened, wherever the store was moved.

Local paths inside or beside the store are written relative to it (a repository ships a store with its models);
hub ids and URLs are written as they are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from clip_search.store.manifest import SourceInfo


@dataclass(frozen=True)
class ImageRef:
    """Where one row's image is: a local file, a URL, or a row of the source dataset (bytes kept there)."""

    file: Path | None = None
    url: str | None = None
    dataset_row: int | None = None

    def __str__(self) -> str:
        """A display form, always valid UTF-8: bytes of a file name that are not are written as \\xNN."""
        if self.url:
            return self.url
        if self.file is not None:
            return os.fsencode(self.file).decode("utf-8", "backslashreplace")
        return f"row {self.dataset_row}"


def portable_ref(ref: str, store_root: Path) -> str:
    """A model reference as a manifest records it: a local folder relative to the store; a hub id unchanged."""
    path = Path(ref).expanduser()
    if not path.exists():
        return ref
    return os.path.relpath(path.resolve(), store_root.resolve())


def resolve_ref(ref: str, store_root: Path) -> str:
    """A model reference from a manifest: a path relative to the store when one exists there, else the id as written."""
    if Path(ref).is_absolute():
        return ref
    candidate = store_root / ref
    return str(candidate.resolve()) if candidate.exists() else ref


def same_model(a: str, b: str) -> bool:
    """Whether two model references name the same model (equal ids, or the same folder on disk)."""
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def portable_source(info: SourceInfo, store_root: Path) -> SourceInfo:
    """The source as a manifest records it: a folder inside the store's own folder becomes relative to it."""
    if info.root and Path(info.root).resolve().is_relative_to(store_root.resolve()):
        return replace(info, root=os.path.relpath(Path(info.root).resolve(), store_root.resolve()))
    return info


def source_root(info: SourceInfo, store_root: Path) -> Path | None:
    """The folder a folder store's relative paths start from, resolved against the store; None for other sources."""
    if not info.root:
        return None
    root = Path(info.root)
    return root if root.is_absolute() else (store_root / root).resolve()
