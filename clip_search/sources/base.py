"""What every source of images offers precompute: a fixed, ordered list of items it can fetch one by one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class SourceItem:
    """One image of a source: its position, unique id, and the metadata row it will get in the store."""

    index: int
    id: str
    metadata: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Source(Protocol):
    """An ordered, finite, picklable collection of images.

    `index` order is the order rows get in the store. `item` is cheap (no I/O beyond what listing did);
    `fetch` does the I/O for one image (read a file, download a URL) and raises `SkipItem(reason)` when
    that one image cannot be had. Both run in DataLoader worker processes, so a source must pickle.
    """

    def __len__(self) -> int: ...

    def item(self, index: int) -> SourceItem: ...

    def fetch(self, index: int) -> bytes: ...

    def describe(self) -> dict[str, Any]:
        """A JSON-able description for the manifest (type, location, counts)."""
        ...

    def listing_skips(self) -> list[dict[str, Any]]:
        """Entries dropped while listing (e.g. duplicate ids), as skipped.jsonl rows with a `reason`."""
        ...
