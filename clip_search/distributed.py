"""Precompute on a Dask cluster: the driver cuts the pending items into partitions, workers embed each into a shard.

The driver (the process calling `precompute(engine="dask")`) keeps what a single-machine run has: the lock on
OUT.partial, the list of pending items (a resume or an update skips what is known), and the final join. A
partition is a run of pending items whose length is a whole number of batches, so each batch a worker encodes is
the batch a single-machine run would encode, and the store comes out the same. A worker decodes and embeds its
partition into one shard of OUT.partial named after it, written atomically: a partition retried after its worker
died writes (or finds) that same shard, so nothing is had twice, and a re-run finds finished partitions known and
submits only the rest. Each worker process loads a CLIP once and keeps it.

OUT, the source's files and a local model folder must be at the same path on every worker (a shared mount);
Dask itself is an optional extra (`pip install 'clip-search[dask]'`), imported only here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from clip_search.clip_model import ClipEncoder
from clip_search.errors import ClusterError, StoreError, one_line
from clip_search.precompute import Embedded, EmbedTask, embed_into_shard, next_shard_number, progress_bar
from clip_search.sources import Source
from clip_search.store import METADATA, SKIPPED, read_jsonl
from clip_search.vision_backends import ImageEncoder, load_image_encoder

log = logging.getLogger(__name__)

_CONNECT_TIMEOUT = "distributed.comm.timeouts.connect"  # Dask's setting (DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT)


@dataclass(frozen=True)
class PartitionJob:
    """What every partition task of one run shares: the model to load and how to batch, decode and write."""

    model: str
    revision: str | None
    device: str | None
    dtype: str | None
    batch_size: int
    draft_size: int | None
    workdir: str
    backend: str  # the image backend precompute resolved for the run (never "auto": one backend per store)


@dataclass(frozen=True)
class DaskEmbed:
    """The cluster engine of `precompute`: embeds an `EmbedTask`'s pending items as partitions on Dask workers."""

    client: Any  # distributed.Client
    model: dict[str, Any]  # model, revision, device, dtype as given to precompute (the backend comes with each task)
    partition_size: int

    @classmethod
    @contextlib.contextmanager
    def connect(cls, cluster: Any, model: dict[str, Any], partition_size: int) -> Iterator[DaskEmbed]:
        """Connect to `cluster` (a scheduler address, or a `distributed.Client` to use as it is) for one run."""
        client, owned = _client(cluster)
        try:
            if not client.scheduler_info().get("workers"):
                log.warning("the Dask cluster at %s has no workers yet: partitions wait until one joins", client.scheduler.address)
            yield cls(client, model, partition_size)
        finally:
            if owned:
                client.close()

    def __call__(self, task: EmbedTask) -> Embedded:
        from distributed import as_completed

        size = math.ceil(self.partition_size / task.batch_size) * task.batch_size
        parts = [task.pending[i : i + size] for i in range(0, len(task.pending), size)]
        if not parts:
            return Embedded(0, 0, 0)
        model = str(Path(self.model["model"]).resolve()) if Path(self.model["model"]).exists() else self.model["model"]
        workdir = task.workdir.resolve()
        job = PartitionJob(model, self.model["revision"], self.model["device"], self.model["dtype"], task.batch_size, task.draft_size, str(workdir), task.backend)
        run = uuid.uuid4().hex[:8]  # names this run's shards and tasks apart from any other run's
        first = next_shard_number(workdir)
        source = self.client.submit(_same, task.source, key=f"clip-search-source-{run}", pure=False)
        futures = {
            self.client.submit(embed_partition, job, source, part, f"shard-{first + k:06d}-{run}", key=f"clip-search-partition-{run}-{k}", pure=False): k
            for k, part in enumerate(parts)
        }
        log.info("embedding %d items in %d partitions of %d on %s", len(task.pending), len(parts), size, self.client.scheduler.address)
        images = skipped = done = 0
        failures: list[tuple[int, BaseException]] = []
        try:
            with progress_bar(task) as bar:
                bar.set_postfix(partitions=f"0/{len(parts)}", skipped=0, refresh=False)
                for future in as_completed(futures, loop=self.client.loop):
                    k = futures[future]
                    try:
                        result: Embedded = future.result()
                    except (Exception, asyncio.CancelledError) as exc:  # the other partitions go on: their work is kept
                        failures.append((k, exc))
                        log.error("partition %d (source items %d-%d) failed: %s", k, parts[k][0], parts[k][-1], one_line(exc))
                        continue
                    finally:
                        future.release()
                    images, skipped, done = images + result.images, skipped + result.skipped, done + 1
                    bar.set_postfix(partitions=f"{done}/{len(parts)}", skipped=skipped, refresh=False)
                    bar.update(len(parts[k]))
        except BaseException:
            self.client.cancel([*futures, source])
            raise
        finally:
            source.release()
        if failures:
            k, exc = failures[0]
            raise ClusterError(
                f"{len(failures)} of {len(parts)} partitions failed (partition {k}, source items {parts[k][0]}-{parts[k][-1]}: "
                f"{one_line(exc)}); the {done} finished are kept in {workdir}: run again to resume"
            )
        return Embedded(images, skipped, len(parts))


def _client(cluster: Any) -> tuple[Any, bool]:
    """A Dask client for `cluster` and whether this run owns it (and closes it)."""
    if cluster is None or cluster == "":
        raise ClusterError("engine 'dask' needs the address of a Dask scheduler (cluster), e.g. tcp://10.0.0.5:8786")
    try:
        import dask
        from distributed import Client
    except ImportError:
        raise ClusterError("engine 'dask' needs Dask's distributed package: pip install 'clip-search[dask]'") from None
    if not isinstance(cluster, str):
        return cluster, False
    try:
        return Client(cluster, set_as_default=False), True
    except (OSError, TimeoutError, ValueError) as exc:
        timeout = dask.config.get(_CONNECT_TIMEOUT)
        raise ClusterError(
            f"cannot reach the Dask scheduler at {cluster} (waited {timeout}): {one_line(exc)}; "
            "check the address and that the scheduler is running and reachable from here"
        ) from None


def _same(source: Source) -> Source:
    """The source, as a task result that workers share (and the scheduler can make again if it is lost)."""
    return source


_encoders: dict[tuple[str, str | None, str | None, str | None, str], tuple[ClipEncoder, ImageEncoder]] = {}
_encoders_lock = threading.Lock()


def _encoder(job: PartitionJob) -> tuple[ClipEncoder, ImageEncoder]:
    """The CLIP this worker process has loaded for `job`, and its image encoder on `job.backend` (loaded on first use)."""
    key = (job.model, job.revision, job.device, job.dtype, job.backend)
    with _encoders_lock:
        if key not in _encoders:
            clip = ClipEncoder.load(job.model, revision=job.revision, device=job.device, dtype=job.dtype)
            _encoders[key] = (clip, load_image_encoder(clip, job.backend))
        return _encoders[key]


def embed_partition(job: PartitionJob, source: Source, positions: list[int], name: str) -> Embedded:
    """Task: embed source `positions` into the shard `name` of the work folder; a shard already there is kept."""
    workdir = Path(job.workdir)
    shard = workdir / name
    if shard.is_dir():  # written by an earlier attempt whose worker died before it could report
        return _counts(shard)
    if not workdir.is_dir():
        raise StoreError(f"{workdir} is not on worker {socket.gethostname()}: put the store on storage every worker mounts at the same path")
    try:
        clip, images = _encoder(job)
        return embed_into_shard(source, positions, clip, job.batch_size, job.draft_size, workdir, name, images)
    except OSError:
        if shard.is_dir():  # another attempt of this partition finished first; its shard is the same
            return _counts(shard)
        raise


def _counts(shard: Path) -> Embedded:
    """Images and skips in a written shard."""
    return Embedded(pq.read_metadata(shard / METADATA).num_rows, len(read_jsonl(shard / SKIPPED)))
