"""Precompute: source → decode (worker processes) → encode → resumable shards → one atomically written store.

Reader: a `Source` lists items, each with an id and a fingerprint (size and mtime, the URL, or a hash of the
bytes) that changes when its image does. Worker processes fetch, decode and preprocess them (a torch
DataLoader), so I/O and decoding overlap with inference. Mapper: `ClipEncoder.encode_pixels`. Writer:
`ShardWriter` flushes numbered shards into OUT.partial, each written whole by the store's writer.

Only what is not already known is embedded. Known are: the rows of an existing store at OUT made by the same
model (an incremental update), and the items of finished shards of a killed run (a resume). Both are matched by
(id, fingerprint), so an item edited or renamed since is embedded again, never taken stale. Batches are formed
from the pending items in source order, so a resumed run computes exactly the batches an uninterrupted one
would, and ends with the same store. The store's rows are in source order; with `keep_missing` (the default),
rows whose item has left the source follow them, in their old order.

On a cluster (`engine="dask"`, see `clip_search.distributed`) the pending items are cut into partitions of
whole batches, workers embed each into one shard of OUT.partial, and the same join makes the same store.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
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
from clip_search.config import AUTO_IMAGE_BACKEND, DECODE_WORKER_NICE, DEFAULT_BATCH_SIZE, DEFAULT_CAPTION_MODEL, DEFAULT_IMAGE_BACKEND, DEFAULT_MODEL, DEFAULT_SHARD_SIZE, KNOWN_STUDENTS, STORE_DTYPE
from clip_search.decode import decode_image
from clip_search.errors import SkipItem, StoreError
from clip_search.pixels import pixel_function
from clip_search.sources import Source, SourceItem, open_source
from clip_search.vision_backends import ImageEncoder, load_image_encoder, resolve_backend
from clip_search.store import (
    CAPTION_COLUMNS,
    EMBEDDINGS,
    EXAMPLES,
    MANIFEST,
    METADATA,
    EmbeddingStore,
    Manifest,
    ModelRef,
    SKIPPED,
    SourceInfo,
    StoreExamples,
    examples_from_captions,
    portable_ref,
    read_examples_file,
    read_jsonl,
    portable_source,
    same_model,
    skip_row,
    skip_summary,
    write_examples,
    write_store,
)

log = logging.getLogger(__name__)

AUTO = "auto"
LOCAL, DASK = "local", "dask"
ENGINES = (LOCAL, DASK)
FINGERPRINT = "fingerprint"  # the metadata column holding each row's fingerprint
CAPTION_SAMPLE_ROWS = 2_000  # rows read for example prompts when a new store gets them from its captions
_STATE = "state.json"
_LOCK = "lock"
_INDEX = "index"


@dataclass(frozen=True)
class PrecomputeReport:
    """What a precompute run produced and how fast."""

    store: Path
    count: int
    skipped: int
    resumed_from: int  # items taken from the finished shards of an interrupted run
    seconds: float
    images_per_second: float
    embedded: int = 0  # images encoded by this run
    reused: int = 0  # rows kept from the existing store (an incremental update)
    pruned: int = 0  # rows dropped because their item left the source
    kept_missing: int = 0  # rows kept although their item left the source
    partitions: int = 0  # partitions embedded on a cluster by this run (0 for a single-machine run)
    text_model: str | None = None  # the multilingual student recorded for queries (None: CLIP's own, English)


@dataclass
class _Batch:
    items: list[SourceItem]
    fingerprints: list[str]
    pixels: torch.Tensor | None
    skipped: list[dict[str, Any]]


class DecodedImages(Dataset):
    """Source item i → (item, fingerprint, preprocessed pixels or None, skip reason or None); runs in workers."""

    def __init__(self, source: Source, image_processor: Any, draft_size: int | None) -> None:
        self.source = source
        self.pixels = pixel_function(image_processor)
        self.draft_size = draft_size

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[SourceItem, str, torch.Tensor | None, str | None]:
        item = self.source.item(index)
        fingerprint = item.fingerprint or self.source.fingerprint(index)
        try:
            image = decode_image(self.source.fetch(index), draft_size=self.draft_size, name=item.id)
            pixels = torch.from_numpy(self.pixels(image))
        except SkipItem as exc:
            return item, fingerprint, None, str(exc)
        except (ValueError, OSError) as exc:  # the processor refusing an image that decoded (e.g. 1×1 px)
            return item, fingerprint, None, f"preprocessing failed: {exc}"
        return item, fingerprint, pixels, None


def _collate(samples: Sequence[tuple[SourceItem, str, torch.Tensor | None, str | None]]) -> _Batch:
    good = [(item, fp, pixels) for item, fp, pixels, _ in samples if pixels is not None]
    skipped = [{**_skip(item, reason), FINGERPRINT: fp} for item, fp, pixels, reason in samples if pixels is None]
    pixels = torch.stack([p for _, _, p in good]) if good else None
    return _Batch([item for item, _, _ in good], [fp for _, fp, _ in good], pixels, skipped)


def _skip(item: SourceItem, reason: str | None) -> dict[str, Any]:
    ref = item.metadata.get("url") or item.metadata.get("path") or (f"row {item.metadata['row']}" if "row" in item.metadata else None)
    return {"index": item.index, "id": item.id, "ref": ref, "reason": reason or "unknown"}


class ShardWriter:
    """Buffers embedded and skipped items; flushes them as numbered shards into the work folder.

    A shard is a store folder without a manifest, written by the store's own writer: the embedded rows
    (index, id, fingerprint) with their vectors, and the skipped items with their fingerprints. With
    `shard_size` None nothing is flushed until `flush(name)` writes everything as one shard (a partition's).
    """

    def __init__(self, workdir: Path, shard_size: int | None) -> None:
        self.workdir = workdir
        self.shard_size = shard_size
        self.number = next_shard_number(workdir) if shard_size else 0
        self._embeddings: list[np.ndarray] = []
        self._rows: list[dict[str, Any]] = []
        self._skipped: list[dict[str, Any]] = []

    def add(self, batch: _Batch, embeddings: np.ndarray | None) -> None:
        """Record one batch; flush when the shard is full (always at a batch boundary)."""
        if embeddings is not None:
            self._embeddings.append(embeddings.astype(STORE_DTYPE))
        self._rows.extend({_INDEX: item.index, "id": item.id, FINGERPRINT: fp} for item, fp in zip(batch.items, batch.fingerprints))
        self._skipped.extend(batch.skipped)
        if self.shard_size and len(self._rows) + len(self._skipped) >= self.shard_size:
            self.flush()

    def flush(self, name: str | None = None) -> None:
        """Write the buffered items as one shard: the next numbered one, or `name` (written even when empty)."""
        if name is None and not self._rows and not self._skipped:
            return
        table = pa.Table.from_pylist(self._rows, schema=_SHARD_SCHEMA)
        write_store(self.workdir / (name or f"shard-{self.number:06d}"), self._embeddings, table, self._skipped)
        self.number += name is None
        self._embeddings, self._rows, self._skipped = [], [], []


_SHARD_SCHEMA = pa.schema([(_INDEX, pa.int64()), ("id", pa.string()), (FINGERPRINT, pa.string())])


def _shard_paths(workdir: Path) -> list[Path]:
    return sorted(p for p in workdir.glob("shard-*") if p.is_dir())


def next_shard_number(workdir: Path) -> int:
    """The number after the highest shard in the work folder (shards are named shard-NUMBER[-suffix])."""
    return 1 + max((int(p.name.split("-")[1]) for p in _shard_paths(workdir)), default=0)


@dataclass
class _Known:
    """Embeddings and skips already had, keyed by (id, fingerprint): from an existing store and finished shards."""

    vectors: list[np.ndarray]  # one matrix per origin: the old store (when there is one) first, then each shard
    where: dict[tuple[str, str], tuple[int, int]]  # key -> (origin, row)
    skips: dict[tuple[str, str], dict[str, Any]]  # key -> skip row, from shards
    from_shards: set[tuple[str, str]]
    by_id: dict[str, tuple[str, str]]  # id -> key of its newest shard entry (for a run with nothing to match)

    @classmethod
    def gather(cls, old: EmbeddingStore | None, workdir: Path) -> _Known:
        known = cls([], {}, {}, set(), {})
        if old is not None:
            known.vectors.append(old.embeddings)
            if FINGERPRINT in old.columns:
                ids = old.metadata.column("id").to_pylist()
                fps = old.metadata.column(FINGERPRINT).to_pylist()
                known.where.update(((str(i), f), (0, row)) for row, (i, f) in enumerate(zip(ids, fps)) if f)
        for shard in _shard_paths(workdir):
            origin = len(known.vectors)
            known.vectors.append(np.load(shard / EMBEDDINGS, mmap_mode="r"))
            for row, item in enumerate(pq.read_table(shard / METADATA).to_pylist()):
                key = (item["id"], item[FINGERPRINT])
                known.where[key] = (origin, row)
                known.from_shards.add(key)
                known.by_id[item["id"]] = key
            for skip in read_jsonl(shard / SKIPPED):
                key = (skip["id"], skip[FINGERPRINT])
                known.skips[key] = skip
                known.from_shards.add(key)
                known.by_id[skip["id"]] = key
        return known

    def has(self, key: tuple[str, str]) -> bool:
        return key in self.where or key in self.skips


def _lock(workdir: Path, out: Path) -> int:
    """Hold an exclusive lock on OUT.partial for this process's lifetime (released on exit, even by SIGKILL)."""
    workdir.mkdir(parents=True, exist_ok=True)
    fd = os.open(workdir / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        raise StoreError(f"another precompute is writing {out} (pid {holder}); wait for it to finish") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def _prepare_workdir(workdir: Path, state: dict[str, Any], restart: bool) -> None:
    """Reopen the work folder of an unfinished run for the same model and source, or start a fresh one."""
    state_path = workdir / _STATE
    if restart:
        for path in workdir.iterdir():
            if path.name != _LOCK:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    if state_path.exists():
        previous = json.loads(state_path.read_text(encoding="utf-8"))
        if previous != state:
            raise StoreError(
                f"unfinished precompute at {workdir} was for another model or source "
                f"({previous.get('model')} over {previous.get('source', {}).get('type')}); "
                "restart to discard it"
            )
    else:
        state_path.write_text(json.dumps(state, indent=2), encoding="utf-8")
    for leftover in workdir.glob(".shard-*.tmp-*"):
        shutil.rmtree(leftover)


def _default_workers(source: Source) -> int:
    cores = os.cpu_count() or 1
    io_bound = source.describe().get("type") == "url_list"
    return max(8, cores) if io_bound else max(1, cores // 2)


def _existing_store(out: Path, model: str, overwrite: bool) -> EmbeddingStore | None:
    """The store at `out` to update incrementally, or None to build anew; a store of another model is refused."""
    if not (out / MANIFEST).exists() or overwrite:
        return None
    old = EmbeddingStore.open(out)
    if not same_model(old.model_path(), model):
        raise StoreError(f"{out} holds a store made by {old.model_id}, not {model}; allow overwrite to rebuild it with {model}")
    if FINGERPRINT not in old.columns:
        log.warning("%s was built by an older clip-search without item fingerprints: every image is embedded again", out)
    return old


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
    prune: bool = False,
    progress: bool = True,
    engine: str = LOCAL,
    cluster: Any = None,
    partition_size: int | None = None,
    backend: str = DEFAULT_IMAGE_BACKEND,
    examples: str | Path | StoreExamples | None = None,
    text_columns: Sequence[str] | None = None,
    caption_model: str | None = None,
) -> PrecomputeReport:
    """Embed the images of `source` with CLIP `model` into the store at `out`: new, updated, or resumed.

    An existing store at `out` made by the same model is updated: only new or changed items are embedded,
    unchanged rows are kept bit for bit, and rows whose item has left the source are kept unless `prune`.
    `overwrite` rebuilds it instead. `text_model` names the multilingual student recorded for the store's
    queries: "auto" picks the known student for `model` (if any), None records none. Unreadable images are
    listed in skipped.jsonl. A second run writing the same `out` at the same time is refused.

    `engine="dask"` embeds on the Dask cluster `cluster` (a scheduler address such as tcp://host:8786, or a
    `distributed.Client`) in partitions of `partition_size` items (rounded up to whole batches; default
    `shard_size`'s). `out`, the source and the model must be at the same paths on every worker. The store
    is the one this machine alone would make; `num_workers` and `shard_size` apply to local runs only.

    `backend` runs the image encoder: "torch" (exactly `ClipEncoder.encode_pixels`), "onnx", "onnx-int8" or
    "openvino" (a cached export, made once, CPU only), or "auto" (the default): the measured fastest that keeps
    quality on the CPU in float32, torch elsewhere (`clip_search.vision_backends`). The manifest records it; an
    update keeps the store's backend. On a cluster, "auto" is resolved here and every worker runs that backend.

    `examples` (a file: one prompt a line, optionally `xx: prompt` with its language, or an examples.json) are the
    example prompts the store's page shows; without them a new store gets some of its own captions, and an updated
    store keeps the ones it has.

    `text_columns` and/or `caption_model` also build the store's text index (`clip_search.text_index`: the named
    columns, default the caption-like ones, embedded by `caption_model`, default DEFAULT_CAPTION_MODEL). A store
    that has one keeps it current on every update, re-encoding only changed rows.
    """
    if "://" in str(out):
        raise StoreError(f"out must be a local or mounted folder path, not a URL: {out}")
    out = Path(out)
    if batch_size < 1:
        raise StoreError(f"batch_size must be at least 1, got {batch_size}")
    if shard_size < 1:
        raise StoreError(f"shard_size must be at least 1, got {shard_size}")
    if engine not in ENGINES:
        raise StoreError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
    if engine == LOCAL and cluster is not None:
        raise StoreError(f"a cluster ({cluster}) is only used with engine 'dask'")
    if partition_size is not None and partition_size < 1:
        raise StoreError(f"partition_size must be at least 1, got {partition_size}")
    resolve_backend(backend, device, dtype)  # an unknown backend or a missing package: refused before any work
    if examples is not None and not isinstance(examples, StoreExamples):
        examples = read_examples_file(examples)
    if isinstance(source, str):
        source = open_source(source)
    workdir = out.with_name(out.name + ".partial")
    with contextlib.ExitStack() as stack:
        embed = _LocalEmbed(num_workers, shard_size)
        if engine == DASK:
            from clip_search.distributed import DaskEmbed

            spec = dict(model=model, revision=revision, device=device, dtype=dtype)
            embed = stack.enter_context(DaskEmbed.connect(cluster, spec, partition_size or shard_size))
        lock = _lock(workdir, out)
        stack.callback(os.close, lock)
        old = _existing_store(out, model, overwrite)
        backend = _store_backend(old, backend, device, dtype, out)
        clip = ClipEncoder.load(model, revision=revision, device=device, dtype=dtype)
        images = load_image_encoder(clip, backend) if engine == LOCAL else clip  # on a cluster, the workers load theirs
        _prepare_workdir(workdir, _work_state(source, model, revision, backend), restart)
        report = _run(source, out, workdir, clip, images, backend, old, text_model, batch_size, embed, prune, progress, examples)
        shutil.rmtree(workdir)
        if text_columns or caption_model:
            from clip_search.text_index import build_text_index

            build_text_index(out, columns=text_columns, caption_model=caption_model or DEFAULT_CAPTION_MODEL, device=device)
    return report


def _store_backend(old: EmbeddingStore | None, backend: str, device: str | None, dtype: str | None, out: Path) -> str:
    """The one backend that embeds this run: no store holds vectors of two backends, so an update keeps the
    backend of the store's rows ("auto" takes it; another backend is refused unless the store is rebuilt)."""
    chosen = resolve_backend(backend, device, dtype)
    if old is None:
        return chosen
    made = old.manifest.model.backend
    if backend in (None, AUTO_IMAGE_BACKEND):
        return resolve_backend(made, device, dtype)
    if chosen != made:
        raise StoreError(f"{out} was embedded with image backend {made!r}: update it with backend {made!r} (or 'auto'), or allow overwrite to embed every image again with {chosen!r}")
    return chosen


def _work_state(source: Source, model: str, revision: str | None, backend: str) -> dict[str, Any]:
    """What unfinished work must match to be resumed: vectors of another model, source or backend are never mixed in."""
    where = {k: v for k, v in source.describe().items() if k != "count"}
    return {"model": model, "revision": revision, "backend": backend, "source": where}


@dataclass(frozen=True)
class EmbedTask:
    """What embedding the pending items needs, for any engine: where, which items, and how."""

    source: Source
    workdir: Path
    clip: ClipEncoder
    images: ImageEncoder  # what encodes the pixels: `clip` itself, or another backend's export of its image tower
    backend: str  # the name of that backend (a cluster's workers load it for themselves)
    pending: list[int]  # source positions to embed, in source order
    batch_size: int
    total: int  # items in the source (for progress)
    progress: bool

    @property
    def draft_size(self) -> int | None:
        """The edge JPEG draft mode may decode down to (the processor's input size)."""
        size = getattr(self.clip.processor.image_processor, "size", None) or {}
        return size.get("shortest_edge") or size.get("height")

    def batches(self) -> list[list[int]]:
        """The pending items cut into batches, in order."""
        return [self.pending[i : i + self.batch_size] for i in range(0, len(self.pending), self.batch_size)]


@dataclass(frozen=True)
class Embedded:
    """What an engine did: images encoded, items skipped, partitions run on a cluster."""

    images: int
    skipped: int
    partitions: int = 0


@dataclass(frozen=True)
class _LocalEmbed:
    """This machine: decoding worker processes (a DataLoader) feed the encoder; numbered shards."""

    num_workers: int | None
    shard_size: int

    def __call__(self, task: EmbedTask) -> Embedded:
        workers = _default_workers(task.source) if self.num_workers is None else self.num_workers
        batches = task.batches()
        loader = DataLoader(
            DecodedImages(task.source, task.clip.processor.image_processor, task.draft_size),
            batch_sampler=batches,
            num_workers=workers if batches else 0,
            collate_fn=_collate,
            worker_init_fn=_init_worker if workers else None,
            prefetch_factor=4 if workers and batches else None,
        )
        writer = ShardWriter(task.workdir, self.shard_size)
        embedded = skipped = 0
        clock = StageClock()
        with progress_bar(task) as bar:
            decoded = iter(loader)
            for batch_indices in batches:
                with clock("wait for decode"):
                    batch = next(decoded)
                with clock("encode"):
                    embeddings = task.images.encode_pixels(batch.pixels) if batch.pixels is not None else None
                with clock("write"):
                    writer.add(batch, embeddings)
                embedded += len(batch.items)
                skipped += len(batch.skipped)
                bar.set_postfix(skipped=skipped, stages=clock.shares(), refresh=False)
                bar.update(len(batch_indices))
            writer.flush()
        return Embedded(embedded, skipped)


class StageClock:
    """Seconds the main loop spent in each stage, shown as shares: where a run's time goes (a model at ~100 % is
    the ceiling; time waiting for decode says more decoding workers would help)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started

    def shares(self) -> str:
        """"wait for decode 3% · encode 96% · write 1%": each stage's share of the time so far."""
        total = sum(self.seconds.values()) or 1.0
        return " · ".join(f"{stage} {100 * t / total:.0f}%" for stage, t in self.seconds.items())


def embed_into_shard(source: Source, positions: Sequence[int], clip: ClipEncoder, batch_size: int, draft_size: int | None, workdir: Path, name: str, encoder: ImageEncoder | None = None) -> Embedded:
    """Embed source `positions` in batches of `batch_size`, decoding in this process, into the one shard `name`.

    `encoder` encodes the pixels (default: `clip` itself); `clip` preprocesses them."""
    encoder = encoder or clip
    images = DecodedImages(source, clip.processor.image_processor, draft_size)
    writer = ShardWriter(workdir, None)
    embedded = skipped = 0
    for start in range(0, len(positions), batch_size):
        batch = _collate([images[i] for i in positions[start : start + batch_size]])
        writer.add(batch, encoder.encode_pixels(batch.pixels) if batch.pixels is not None else None)
        embedded += len(batch.items)
        skipped += len(batch.skipped)
    writer.flush(name)
    return Embedded(embedded, skipped)


def progress_bar(task: EmbedTask) -> tqdm:
    """One line over the source's items: done/total, images/s, ETA; callers add counts as its postfix."""
    return tqdm(total=task.total, initial=task.total - len(task.pending), unit="img", desc="precompute", disable=not task.progress, smoothing=0.1, dynamic_ncols=True)


def _run(source: Source, out: Path, workdir: Path, clip: ClipEncoder, images: ImageEncoder, backend: str, old: EmbeddingStore | None, text_model: str | None, batch_size: int, embed: Callable[[EmbedTask], Embedded], prune: bool, progress: bool, examples: StoreExamples | None = None) -> PrecomputeReport:
    known = _Known.gather(old, workdir)
    total = len(source)
    keys = _keys(source, known)
    pending = [i for i in range(total) if not known.has(keys[i])] if keys is not None else list(range(total))
    resumed = sum(1 for k in keys if k in known.from_shards) if keys is not None else 0
    if resumed:
        log.info("resuming %s: %d of %d items already done", workdir, resumed, total)

    started = time.perf_counter()
    done = embed(EmbedTask(source, workdir, clip, images, backend, pending, batch_size, total, progress))
    seconds = time.perf_counter() - started
    embedded = done.images
    chosen_text_model = KNOWN_STUDENTS.get(clip.model_id) if text_model == AUTO else text_model
    summary = _finalise(source, out, workdir, clip, backend, old, keys, chosen_text_model, prune, examples)
    rate = embedded / seconds if seconds > 0 and embedded else 0.0
    log.info("wrote %s: %d embeddings (%d new), %d skipped, %.1f images/s", out, summary["count"], embedded, summary["skipped"], rate)
    return PrecomputeReport(out, summary["count"], summary["skipped"], resumed, seconds, rate, embedded, summary["reused"], summary["pruned"], summary["kept_missing"], done.partitions, chosen_text_model)


def _keys(source: Source, known: _Known) -> list[tuple[str, str]] | None:
    """(id, fingerprint) of every source item when there is anything to match them against; else None."""
    if not known.where and not known.skips:
        return None
    return [(item.id, item.fingerprint or source.fingerprint(i)) for i, item in ((i, source.item(i)) for i in range(len(source)))]


def _init_worker(_: int) -> None:
    torch.set_num_threads(1)  # decoding workers must not compete with the encoder for cores
    if hasattr(os, "nice"):  # POSIX; raising one's own niceness needs no privilege
        os.nice(DECODE_WORKER_NICE)


def _finalise(source: Source, out: Path, workdir: Path, clip: ClipEncoder, backend: str, old: EmbeddingStore | None, keys: list[tuple[str, str]] | None, text_model: str | None, prune: bool, examples: StoreExamples | None = None) -> dict[str, int]:
    """Assemble the store in source order from everything known, and write it (replacing an old one whole), with
    its example prompts: `examples`, else the ones it has, else some of its captions."""
    known = _Known.gather(old, workdir)
    rows: list[dict[str, Any]] = []
    origins: list[tuple[int, int]] = []
    skipped: list[dict[str, Any]] = [skip_row(s) for s in source.listing_skips()]
    seen_ids: set[str] = set()
    reused = 0
    for i in range(len(source)):
        item = source.item(i)
        key = keys[i] if keys is not None else known.by_id.get(item.id, (item.id, ""))
        seen_ids.add(item.id)
        if key in known.where:
            origin = known.where[key]
            origins.append(origin)
            rows.append({"id": item.id, **item.metadata, FINGERPRINT: key[1]})
            reused += old is not None and origin[0] == 0
        elif key in known.skips:
            skipped.append(skip_row({**known.skips[key], "index": i}))
        else:
            raise StoreError(f"precompute at {workdir} is incomplete: item {i} ({item.id}) was neither embedded nor skipped")
    pruned = kept_missing = 0
    if old is not None:
        gone = [row for row, i in enumerate(old.metadata.column("id").to_pylist()) if str(i) not in seen_ids]
        if prune:
            pruned = len(gone)
        else:
            kept_missing = len(gone)
            origins.extend((0, row) for row in gone)
            rows.extend(old.rows(gone))
    if not rows:
        where = source.describe().get("root") or source.describe().get("file") or source.describe()
        raise StoreError(f"no image of {where} could be embedded ({len(skipped)} skipped); see the reasons in {workdir}")
    embeddings = _gather(known.vectors, origins)
    metadata = _table(rows)
    count, reasons = skip_summary(skipped)
    manifest = Manifest(
        model=ModelRef(portable_ref(clip.model_id, out), clip.revision, clip.commit_hash, backend),
        dim=clip.dim,
        count=len(rows),
        source=portable_source(SourceInfo(**source.describe()), out),
        text_model=portable_ref(text_model, out) if text_model else None,
        logit_scale=clip.logit_scale,
        skipped_count=count,
        skipped_reasons=reasons,
    )
    index = old.manifest.index if old is not None else None
    text_index = old.manifest.text_index if old is not None else None
    write_store(out, embeddings, metadata, skipped, manifest.with_text_index(text_index), overwrite=True)
    if examples is None and not (out / EXAMPLES).exists():
        step = max(1, len(rows) // CAPTION_SAMPLE_ROWS)
        examples = examples_from_captions(next((str(r[c]) for c in CAPTION_COLUMNS if r.get(c)), None) for r in rows[::step])
    if examples is not None:
        write_examples(out, examples.prompts, examples.notice, examples.languages)
    if index is not None:
        from clip_search.store_index import rebuild_index

        rebuild_index(out, index)
    if text_index is not None:
        from clip_search.text_index import rebuild_text_index

        rebuild_text_index(out, text_index)
    return {"count": len(rows), "skipped": count, "reused": int(reused), "pruned": pruned, "kept_missing": kept_missing}


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    """Metadata rows as a table with every column any row has (a key absent from a row is null there)."""
    columns = dict.fromkeys(key for row in rows for key in row)
    return pa.Table.from_pydict({c: [row.get(c) for row in rows] for c in columns})


def _gather(vectors: list[np.ndarray], origins: list[tuple[int, int]], chunk: int = 65_536) -> list[np.ndarray]:
    """The output matrix in parts of `chunk` rows, each gathered from the origins' matrices (row order kept)."""
    parts = []
    where = np.asarray(origins, dtype=np.int64)
    for start in range(0, len(where), chunk):
        block = where[start : start + chunk]
        part = np.empty((len(block), vectors[block[0, 0]].shape[1]), STORE_DTYPE)
        for origin in np.unique(block[:, 0]):
            mask = block[:, 0] == origin
            part[mask] = vectors[origin][block[mask, 1]]
        parts.append(part)
    return parts
