"""A Hugging Face `datasets` dataset with an image column (hub, save_to_disk or data folder) as a source."""

from __future__ import annotations

import datetime
import decimal
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from clip_search.errors import SkipItem, SourceError
from clip_search.sources.base import SourceItem

log = logging.getLogger(__name__)

HF_PREFIX = "hf://datasets/"
SAVED_DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
_BINARY_DTYPES = {"binary", "large_binary"}
_RESERVED_KEYS = {"id", "path", "row"}  # metadata keys this source sets itself


class HFDatasetSource:
    """Rows of a `datasets.Dataset`, fetched as the raw encoded bytes of their image column.

    `spec` is `hf://datasets/NAME` (`datasets.load_dataset(NAME, split=split)`, offline from the local
    cache when HF_HUB_OFFLINE=1), a folder written by `save_to_disk` (a DatasetDict picks `split`), or a
    folder `load_dataset` understands (imagefolder, parquet ...). The image column is `image_column`, else
    the first `datasets.Image` column. The id is an `id` column when its values are unique, else the row
    index. Metadata holds `path` (the image's file when the dataset reads one from disk, else None), the
    other scalar columns (class labels as their names) and `row`, the row number in the split, which is
    how an image stored as bytes is found again (`fetch(row)`).

    `fingerprint(index)` hashes the row's encoded image bytes (or, for an image the dataset reads from
    disk, its path, size and mtime); it reads the row, so `item()` leaves `SourceItem.fingerprint` "".
    """

    def __init__(
        self, spec: str | os.PathLike[str], split: str = "train", image_column: str | None = None
    ) -> None:
        import datasets  # imported here: `datasets` is slow to import and only this source needs it

        spec = os.fspath(spec)
        self.spec = spec
        ds, self.split = _load(spec, split)
        self.image_column = _pick_image_column(ds, image_column, spec)
        feature = ds.features[self.image_column]
        self._images = ds.select_columns([self.image_column])
        self._image_arrow = None  # the image column as Arrow, to read a row's path without its bytes
        if isinstance(feature, datasets.Image):
            self._images = self._images.cast_column(self.image_column, datasets.Image(decode=False))
            self._image_arrow = self._images.with_format("arrow")
        self._location = spec if spec.startswith(HF_PREFIX) else str(Path(spec).expanduser().resolve())
        self._ids, id_column = _ids(ds)
        self._scalar_features = {
            name: feat
            for name, feat in ds.features.items()
            if name not in (self.image_column, id_column) and _is_scalar(feat)
        }
        self._meta = ds.select_columns(list(self._scalar_features)) if self._scalar_features else None
        self._count = len(ds)
        if self._count == 0:
            raise SourceError(f"dataset {spec} (split {self.split}) has no rows")

    def __len__(self) -> int:
        return self._count

    def item(self, index: int) -> SourceItem:
        """The item at `index`: its id, `path` (None for bytes), its scalar columns and its row number;
        no fingerprint (see `fingerprint`)."""
        if not 0 <= index < self._count:
            raise IndexError(f"row {index} out of range for {self._count} rows")
        metadata: dict[str, Any] = {"path": self._image_file(index)}
        if self._meta is not None:
            for name, value in self._meta[index].items():
                metadata[_meta_key(name)] = _scalar(value, self._scalar_features[name])
        metadata["row"] = index
        item_id = self._ids[index] if self._ids is not None else str(index)
        return SourceItem(index=index, id=item_id, metadata=metadata)

    def fetch(self, index: int) -> bytes:
        """The row's encoded image bytes (read from its `path` when the dataset stores only the path)."""
        if not 0 <= index < self._count:
            raise IndexError(f"row {index} out of range for {self._count} rows")
        value = self._images[index][self.image_column]
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
        if not isinstance(value, dict):
            raise SkipItem(f"no image in column {self.image_column} (value is {type(value).__name__})")
        if value.get("bytes"):
            return bytes(value["bytes"])
        path = value.get("path")
        if not path:
            raise SkipItem(f"no image in column {self.image_column} (neither bytes nor path)")
        try:
            return Path(path).read_bytes()
        except OSError as e:
            raise SkipItem(f"cannot read image file {path}: {e.strerror or e}") from e

    def fingerprint(self, index: int) -> str:
        """blake2b (16 hex digits) of the row's encoded image bytes, or of path, size and mtime for an
        image the dataset reads from disk (a missing file hashes its path alone)."""
        if not 0 <= index < self._count:
            raise IndexError(f"row {index} out of range for {self._count} rows")
        value = self._images[index][self.image_column]
        if isinstance(value, dict) and not value.get("bytes") and value.get("path"):
            path = str(value["path"])
            try:
                info = os.stat(path)
                data = f"{path}\0{info.st_size}\0{info.st_mtime_ns}".encode("utf-8", "surrogateescape")
            except OSError:
                data = f"{path}\0missing".encode("utf-8", "surrogateescape")
        elif isinstance(value, dict):
            data = bytes(value.get("bytes") or b"")
        elif isinstance(value, (bytes, bytearray, memoryview)):
            data = bytes(value)
        else:
            data = b""
        return hashlib.blake2b(data, digest_size=8).hexdigest()

    def _image_file(self, index: int) -> str | None:
        """The file the row's image is read from, when the dataset stores a path and no bytes."""
        if self._image_arrow is None:
            return None
        cell = self._image_arrow[index].column(self.image_column).combine_chunks()
        if cell.field("bytes")[0].is_valid:
            return None
        path = cell.field("path")[0].as_py()
        return str(path) if path else None

    def describe(self) -> dict[str, Any]:
        """Type, dataset name (hub) or absolute path (local), split, image column and row count."""
        hub = self._location.startswith(HF_PREFIX)
        where = {"name": self._location[len(HF_PREFIX) :]} if hub else {"path": self._location}
        return {
            "type": "hf_dataset",
            **where,
            "split": self.split,
            "image_column": self.image_column,
            "count": self._count,
        }

    def listing_skips(self) -> list[dict[str, Any]]:
        """Nothing is dropped while listing a dataset ([]); unreadable rows are skipped when fetched."""
        return []

    def __repr__(self) -> str:
        return f"HFDatasetSource({self.spec!r}, split={self.split!r}, count={self._count})"


def looks_like_saved_dataset(path: str | os.PathLike[str]) -> bool:
    """True when `path` is a folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    folder = Path(path)
    return folder.is_dir() and any((folder / marker).is_file() for marker in SAVED_DATASET_MARKERS)


def _load(spec: str, split: str) -> tuple[Any, str | None]:
    """Open the dataset `spec` names as one `datasets.Dataset` and its split name (None for a saved
    single Dataset that does not record one), or raise a one-line SourceError."""
    import datasets

    try:
        if spec.startswith(HF_PREFIX):
            name = spec[len(HF_PREFIX) :].strip("/")
            if not name:
                raise SourceError(f"no dataset name in {spec!r}: use hf://datasets/OWNER/NAME")
            ds = datasets.load_dataset(name, split=split)
        else:
            folder = Path(spec).expanduser()
            if not folder.is_dir():
                raise SourceError(f"no such dataset folder: {spec}")
            if looks_like_saved_dataset(folder):
                ds = datasets.load_from_disk(str(folder))
            else:
                ds = datasets.load_dataset(str(folder), split=split)
    except SourceError:
        raise
    except Exception as e:  # noqa: BLE001 - datasets raises many types (offline, missing, malformed)
        message = str(e).strip().splitlines()[0] if str(e).strip() else ""
        reason = f"cannot load dataset {spec} (split {split}): {type(e).__name__}: {message}"
        raise SourceError(reason[:500]) from e
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise SourceError(f"dataset {spec} has no split {split!r}; its splits are: {', '.join(ds)}")
        return ds[split], split
    if not isinstance(ds, datasets.Dataset):
        raise SourceError(f"{spec} is not a map-style dataset ({type(ds).__name__})")
    return ds, (str(ds.split) if ds.split is not None else None)


def _pick_image_column(ds: Any, wanted: str | None, spec: str) -> str:
    """The named column (an Image or binary feature), else the first Image column."""
    import datasets

    columns = list(ds.features)
    if wanted is not None:
        if wanted not in ds.features:
            raise SourceError(
                f"dataset {spec} has no column {wanted!r}; its columns are: {', '.join(columns)}"
            )
        feature = ds.features[wanted]
        binary = isinstance(feature, datasets.Value) and feature.dtype in _BINARY_DTYPES
        if not (isinstance(feature, datasets.Image) or binary):
            raise SourceError(f"column {wanted!r} of dataset {spec} holds {feature}, not images")
        return wanted
    for name, feature in ds.features.items():
        if isinstance(feature, datasets.Image):
            return name
    raise SourceError(
        f"dataset {spec} has no image column; its columns are: {', '.join(columns)} (pass image_column)"
    )


def _ids(ds: Any) -> tuple[list[str] | None, str | None]:
    """The `id` column as strings when present and unique, with its name; else (None, None)."""
    if "id" not in ds.features or not _is_scalar(ds.features["id"]):
        return None, None
    values = ds.select_columns(["id"]).to_dict()["id"]
    ids = ["" if v is None else str(v) for v in values]
    if "" in ids or len(set(ids)) != len(ids):
        log.warning("the id column of this dataset is not unique; using row numbers as ids")
        return None, None
    return ids, "id"


def _meta_key(name: str) -> str:
    """Metadata key for a source column: `id`, `path` and `row` are ours, so those become `source_<name>`."""
    return f"source_{name}" if name in _RESERVED_KEYS else name


def _is_scalar(feature: Any) -> bool:
    """Whether a feature holds one scalar per row (a Value other than binary, or a ClassLabel)."""
    import datasets

    if isinstance(feature, datasets.ClassLabel):
        return True
    return isinstance(feature, datasets.Value) and feature.dtype not in _BINARY_DTYPES


def _scalar(value: Any, feature: Any) -> str | int | float | bool | None:
    """A metadata value as str/int/float/bool/None; class labels become their names."""
    import datasets

    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(feature, datasets.ClassLabel) and isinstance(value, int):
        return feature.int2str(value) if 0 <= value < feature.num_classes else value
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (datetime.date, datetime.time, datetime.timedelta)):
        return value.isoformat() if hasattr(value, "isoformat") else str(value)
    return str(value)
