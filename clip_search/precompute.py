"""Precompute: source → decode (worker processes) → encode → resumable shards → one atomically written store.

Reader: a `Source` lists items; worker processes fetch, decode and preprocess them (a torch DataLoader), so
I/O and decoding overlap with inference. Mapper: `ClipEncoder.encode_pixels`. Writer: `ShardWriter` flushes
numbered shards covering contiguous ranges of the source, each renamed into place whole. A killed run resumes
after its last shard; batches are aligned to source positions, so a resumed run computes exactly the batches an
uninterrupted one would, and the final store is the same.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from clip_search.clip_model import ClipEncoder
from clip_search.config import DEFAULT_BATCH_SIZE, DEFAULT_MODEL, DEFAULT_SHARD_SIZE, KNOWN_STUDENTS, STORE_DTYPE
from clip_search.decode import decode_image
from clip_search.errors import SkipItem, StoreError
from clip_search.sources import Source, SourceItem, open_source
from clip_search.store import EMBEDDINGS, MANIFEST, METADATA, SKIPPED, build_manifest, read_jsonl, write_jsonl, write_store

log = logging.getLogger(__name__)

AUTO = "auto"
_STATE = "state.json"
_INDEX = "_index"


@dataclass(frozen=True)
class PrecomputeReport:
    """What a precompute run produced and how fast."""

    store: Path
    count: int
    skipped: int
    resumed_from: int
    seconds: float
    images_per_second: float


@dataclass
class _Batch:
    indices: list[int]
    items: list[SourceItem]
    pixels: torch.Tensor | None
    skipped: list[dict[str, Any]]


class DecodedImages(Dataset):
    """Source item i → (item, preprocessed pixels) or (item, reason it was skipped); runs in worker processes."""

    def __init__(self, source: Source, image_processor: Any, draft_size: int | None) -> None:
        self.source = source
        self.image_processor = image_processor
        self.draft_size = draft_size

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[SourceItem, torch.Tensor | None, str | None]:
        item = self.source.item(index)
        try:
            image = decode_image(self.source.fetch(index), draft_size=self.draft_size, name=item.id)
            pixels = self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]
        except SkipItem as exc:
            return item, None, str(exc)
        except (ValueError, OSError) as exc:  # the processor refusing an image that decoded (e.g. 1×1 px)
            return item, None, f"preprocessing failed: {exc}"
        return item, pixels, None


def _collate(samples: Sequence[tuple[SourceItem, torch.Tensor | None, str | None]]) -> _Batch:
    good = [(item, pixels) for item, pixels, _ in samples if pixels is not None]
    skipped = [_skip_row(item, reason) for item, pixels, reason in samples if pixels is None]
    pixels = torch.stack([p for _, p in good]) if good else None
    return _Batch([item.index for item, _ in good], [item for item, _ in good], pixels, skipped)


def _skip_row(item: SourceItem, reason: str | None) -> dict[str, Any]:
    ref = item.metadata.get("url") or item.metadata.get("path")
    return {"index": item.index, "id": item.id, "ref": ref, "reason": reason or "unknown"}


class ShardWriter:
    """Buffers embedded rows and skips; flushes them as a shard covering source positions [start, end)."""

    def __init__(self, workdir: Path, start: int, shard_size: int) -> None:
        self.workdir = workdir
        self.start = start
        self.end = start
        self.shard_size = shard_size
        self._embeddings: list[np.ndarray] = []
        self._rows: list[dict[str, Any]] = []
        self._skipped: list[dict[str, Any]] = []

    def add(self, batch: _Batch, embeddings: np.ndarray | None, end: int) -> None:
        """Record one batch that covers source positions up to `end`; flush when the shard is full."""
        if embeddings is not None:
            self._embeddings.append(embeddings.astype(STORE_DTYPE))
        self._rows.extend({_INDEX: item.index, "id": item.id, **item.metadata} for item in batch.items)
        self._skipped.extend(batch.skipped)
        self.end = end
        if self.end - self.start >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one shard, atomically (a temporary folder renamed into place)."""
        if self.end == self.start:
            return
        name = f"shard-{self.start:012d}-{self.end:012d}"
        tmp = self.workdir / f".tmp-{name}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        dim = self._embeddings[0].shape[1] if self._embeddings else 0
        matrix = np.concatenate(self._embeddings) if self._embeddings else np.zeros((0, dim), STORE_DTYPE)
        np.save(tmp / EMBEDDINGS, matrix)
        pq.write_table(pa.Table.from_pylist(self._rows) if self._rows else pa.table({_INDEX: pa.array([], pa.int64())}), tmp / METADATA)
        write_jsonl(tmp / SKIPPED, self._skipped)
        os.replace(tmp, self.workdir / name)
        self.start = self.end
        self._embeddings, self._rows, self._skipped = [], [], []


def _shards(workdir: Path) -> list[tuple[int, int, Path]]:
    """Complete shards in order, checked to cover [0, end) with no gap."""
    shards = []
    for path in workdir.glob("shard-*"):
        _, start, end = path.name.split("-")
        shards.append((int(start), int(end), path))
    shards.sort()
    position = 0
    for start, end, path in shards:
        if start != position:
            raise StoreError(f"unfinished precompute at {workdir} is damaged: {path.name} does not follow position {position}; delete it or pass --restart")
        position = end
    return shards


def _work_state(source: Source, model: str, revision: str | None) -> dict[str, Any]:
    return {"model": model, "revision": revision, "source": source.describe(), "count": len(source)}


def _prepare_workdir(workdir: Path, state: dict[str, Any], restart: bool) -> int:
    """Create or reopen the work folder; return the source position to resume from."""
    if restart:
        shutil.rmtree(workdir, ignore_errors=True)
    state_path = workdir / _STATE
    if state_path.exists():
        previous = json.loads(state_path.read_text(encoding="utf-8"))
        if previous != state:
            raise StoreError(
                f"unfinished precompute at {workdir} was for another model or source "
                f"({previous.get('model')} over {previous.get('source', {}).get('type')}, {previous.get('count')} items); "
                "pass --restart to discard it"
            )
    else:
        workdir.mkdir(parents=True, exist_ok=True)
        state_path.write_text(json.dumps(state, indent=2), encoding="utf-8")
    for leftover in workdir.glob(".tmp-*"):
        shutil.rmtree(leftover)
    shards = _shards(workdir)
    return shards[-1][1] if shards else 0


def _portable_ref(ref: str, store: Path) -> str:
    """A local model path written relative to the store (so a store and its model move together); ids unchanged."""
    path = Path(ref)
    if not path.exists():
        return ref
    return os.path.relpath(path.resolve(), store.resolve())


def _portable_source(description: dict[str, Any], store: Path) -> dict[str, Any]:
    root = description.get("root")
    if root and Path(root).resolve().is_relative_to(store.resolve()):
        return {**description, "root": os.path.relpath(Path(root).resolve(), store.resolve())}
    return description


def _default_workers(source: Source) -> int:
    cores = os.cpu_count() or 1
    io_bound = source.describe().get("type") == "url_list"
    return max(8, cores) if io_bound else max(1, cores // 2)


def precompute(
    source: Source | str,
    out: str | Path,
    *,
    model: str = DEFAULT_MODEL,
    revision: str | None = None,
    text_model: str | None = AUTO,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_workers: int | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    device: str | None = None,
    dtype: str | None = None,
    overwrite: bool = False,
    restart: bool = False,
    progress: bool = True,
) -> PrecomputeReport:
    """Embed every image of `source` with CLIP `model` into the store at `out`, resuming unfinished work.

    `text_model` names the multilingual student recorded for the store's queries: "auto" picks the known
    student for `model` (if any), None records none. Unreadable images are listed in skipped.jsonl.
    """
    out = Path(out)
    if batch_size < 1:
        raise StoreError(f"--batch-size must be at least 1, got {batch_size}")
    if shard_size < 1:
        raise StoreError(f"--shard-size must be at least 1, got {shard_size}")
    if (out / MANIFEST).exists() and not overwrite:
        raise StoreError(f"{out} already holds a store; pass --overwrite to rebuild it")
    if isinstance(source, str):
        source = open_source(source)
    clip = ClipEncoder.load(model, revision=revision, device=device, dtype=dtype)
    workdir = out.with_name(out.name + ".partial")
    start = _prepare_workdir(workdir, _work_state(source, model, revision), restart)
    total = len(source)
    if start:
        log.info("resuming %s: %d of %d items already done", workdir, start, total)

    image_processor = clip.processor.image_processor
    size = getattr(image_processor, "size", None) or {}
    draft_size = size.get("shortest_edge") or size.get("height")
    workers = _default_workers(source) if num_workers is None else num_workers
    batches = [list(range(i, min(i + batch_size, total))) for i in range(start, total, batch_size)]
    loader = DataLoader(
        DecodedImages(source, image_processor, draft_size),
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=_collate,
        worker_init_fn=_init_worker if workers else None,
        prefetch_factor=4 if workers else None,
    )
    writer = ShardWriter(workdir, start, shard_size)
    started = time.perf_counter()
    embedded = 0
    with tqdm(total=total, initial=start, unit="img", desc="precompute", disable=not progress, smoothing=0.1) as bar:
        for batch_indices, batch in zip(batches, loader):
            embeddings = clip.encode_pixels(batch.pixels) if batch.pixels is not None else None
            writer.add(batch, embeddings, batch_indices[-1] + 1)
            embedded += len(batch.items)
            bar.update(len(batch_indices))
        writer.flush()
    seconds = time.perf_counter() - started

    chosen_text_model = KNOWN_STUDENTS.get(model) if text_model == AUTO else text_model
    store = _finalise(workdir, out, source, clip, chosen_text_model, overwrite)
    count = store[0]
    shutil.rmtree(workdir)
    rate = embedded / seconds if seconds > 0 else 0.0
    log.info("wrote %s: %d embeddings, %d skipped, %.1f images/s", out, count, store[1], rate)
    return PrecomputeReport(out, count, store[1], start, seconds, rate)


def _init_worker(_: int) -> None:
    torch.set_num_threads(1)  # decoding workers must not compete with the encoder for cores


def _finalise(workdir: Path, out: Path, source: Source, clip: ClipEncoder, text_model: str | None, overwrite: bool) -> tuple[int, int]:
    """Join the shards into the final store; returns (rows embedded, items skipped)."""
    shards = _shards(workdir)
    if not shards or shards[-1][1] != len(source):
        raise StoreError(f"precompute at {workdir} is incomplete: shards cover {shards[-1][1] if shards else 0} of {len(source)} items")
    skipped = list(source.listing_skips()) + [row for _, _, path in shards for row in read_jsonl(path / SKIPPED)]
    tables = [t for t in (pq.read_table(path / METADATA) for _, _, path in shards) if t.num_rows]
    if not tables:
        raise StoreError(f"no image of {source.describe().get('root') or source.describe()} could be embedded ({len(skipped)} skipped); see the reasons in {workdir}")
    # A shard whose items were all skipped holds a 0×0 matrix: leave it out of the join.
    embeddings = np.concatenate([m for m in (np.load(path / EMBEDDINGS) for _, _, path in shards) if m.shape[0]])
    metadata = pa.concat_tables(tables, promote_options="default").drop_columns([_INDEX])
    manifest = build_manifest(
        model_id=_portable_ref(clip.model_id, out),
        model_revision=clip.revision,
        model_commit=clip.commit_hash,
        dim=clip.dim,
        count=embeddings.shape[0],
        source=_portable_source(source.describe(), out),
        skipped=skipped,
        text_model=_portable_ref(text_model, out) if text_model else None,
        logit_scale=clip.logit_scale,
    )
    write_store(out, embeddings, metadata, manifest, skipped, overwrite=overwrite)
    return embeddings.shape[0], len(skipped)
