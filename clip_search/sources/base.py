"""What every source of images offers precompute: a fixed, ordered list of items it can fetch one by one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

SKIP_KEYS = ("index", "id", "ref", "reason")  # the keys of every skipped.jsonl row, in this order


@dataclass(frozen=True)
class SourceItem:
    """One image of a source: its position, unique id, the metadata row it will get in the store, and
    its fingerprint (see `Source.fingerprint`; "" where the source computes it only on demand)."""

    index: int
    id: str
    metadata: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""


def skip_row(index: int | None, item_id: str | None, ref: str | None, reason: str) -> dict[str, Any]:
    """A skipped.jsonl row: source position (None if never an item), id (or None), where it is, and why."""
    return {"index": index, "id": item_id, "ref": ref, "reason": reason}


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

    def fingerprint(self, index: int) -> str:
        """A short string that changes when the item's image changes (what counts as a change is the source's)."""
        ...

    def describe(self) -> dict[str, Any]:
        """A JSON-able description for the manifest (type, location, counts)."""
        ...

    def listing_skips(self) -> list[dict[str, Any]]:
        """Entries not listed as items, as skipped.jsonl rows with exactly the keys `SKIP_KEYS`:
        `index` (None: never an item), `id` (str or None), `ref` (path, URL or row) and a one-line `reason`."""
        ...
