"""Image sources (folder, URL list, Hugging Face dataset) and `open_source`, which picks one from a spec."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

from clip_search.errors import SourceError
from clip_search.sources.base import SKIP_KEYS, Source, SourceItem, skip_row
from clip_search.sources.folder import IMAGE_EXTENSIONS, FolderSource, local_path
from clip_search.sources.hf_dataset import HF_PREFIX, HFDatasetSource, looks_like_saved_dataset
from clip_search.sources.url_list import UrlListSource

__all__ = [
    "IMAGE_EXTENSIONS",
    "SKIP_KEYS",
    "FolderSource",
    "HFDatasetSource",
    "Source",
    "SourceItem",
    "UrlListSource",
    "local_path",
    "open_source",
    "skip_row",
]

log = logging.getLogger(__name__)


def open_source(spec: str, **options: Any) -> Source:
    """Open the source `spec` names, passing it `options`.

    `hf://datasets/NAME`, a `save_to_disk` folder, or a folder of parquet/arrow files and no images
    -> HFDatasetSource; any other folder -> FolderSource;
    a file (.txt/.csv/.tsv/.tsv000 or other) -> UrlListSource. Options set to None are dropped, so a
    caller can pass every flag it has; an option the chosen source does not take is a SourceError.
    """
    given = {key: value for key, value in options.items() if value is not None}
    text = str(spec)
    if text.startswith("hf://"):
        if not text.startswith(HF_PREFIX):
            raise SourceError(f"unsupported hf:// address {text!r}: use hf://datasets/OWNER/NAME")
        return _construct(HFDatasetSource, text, given)
    path = Path(text).expanduser()
    if path.is_dir():
        if looks_like_saved_dataset(path) or (_has_data_files(path) and not _has_images(path)):
            return _construct(HFDatasetSource, text, given)
        return _construct(FolderSource, text, given)
    if path.is_file():
        return _construct(UrlListSource, text, given)
    raise SourceError(f"no such folder, file or dataset: {text}")


def _has_data_files(folder: Path) -> bool:
    """Parquet or Arrow files in the folder or one level below (a dataset `load_dataset` can read)."""
    return any(folder.glob("*.parquet")) or any(folder.glob("*/*.parquet")) or any(folder.glob("*.arrow"))


def _has_images(folder: Path) -> bool:
    """Any image file anywhere below the folder (stops at the first)."""
    return any(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.rglob("*") if p.is_file())


def _construct(cls: type, spec: str, options: dict[str, Any]) -> Any:
    """`cls(spec, **options)`, refusing options `cls` does not take with a SourceError naming them."""
    accepted = set(inspect.signature(cls).parameters) - {"self"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        kind = cls.__name__
        raise SourceError(f"option(s) {', '.join(unknown)} do not apply to {kind} ({spec})")
    log.debug("opening %s(%r, %s)", cls.__name__, spec, options)
    return cls(spec, **options)
