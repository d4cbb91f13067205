"""Precompute on a Dask cluster of two worker processes on loopback: the same store as one machine makes, a re-run
that submits only unfinished partitions, a worker killed mid-partition, the CLI, and an unreachable scheduler."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

pytest.importorskip("distributed")

import dask
import psutil
from distributed import Client, LocalCluster

from clip_search import cli
from clip_search import precompute as precompute_module
from clip_search.errors import ClusterError
from clip_search.errors import StoreError
from clip_search.precompute import precompute
from clip_search.store import EmbeddingStore
from tests.test_precompute import ImageServer, assert_same_store, url_list

REPO = Path(__file__).resolve().parents[2]
BATCH, PARTITION = 3, 5  # partitions are rounded up to whole batches: 6 items, so 23 items are 4 partitions


class WorkerKillingServer(ImageServer):
    """The image server, which can also SIGKILL the process that asks for `kill_path` (once)."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.kill_path: str | None = None
        self.killed: list[int] = []
        server, base = self, self.httpd.RequestHandlerClass

        class Handler(base):  # type: ignore[misc, valid-type]
            def do_GET(self) -> None:  # noqa: N802
                with server.lock:
                    kill = self.path == server.kill_path
                    server.kill_path = None if kill else server.kill_path
                if kill:
                    pid = peer_pid(self.client_address[1], server.httpd.server_address[1])
                    server.killed.append(pid)
                    os.kill(pid, signal.SIGKILL)
                super().do_GET()

        self.httpd.RequestHandlerClass = Handler


def peer_pid(client_port: int, server_port: int) -> int:
    """The pid of the local process whose TCP connection to `server_port` is from `client_port`."""
    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.raddr and conn.laddr.port == client_port and conn.raddr.port == server_port and conn.pid:
            return conn.pid
    raise AssertionError(f"no process holds the connection from port {client_port}")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Client]:
    """Two worker processes of one thread each, on loopback only, stopped when the module ends."""
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) as local, Client(local) as client:
        yield client


@pytest.fixture(scope="module")
def server() -> Iterator[WorkerKillingServer]:
    with WorkerKillingServer(22) as s:
        yield s


@pytest.fixture(scope="module")
def urls(server: WorkerKillingServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return url_list(server, tmp_path_factory.mktemp("urls") / "urls.txt")  # 22 images and a 404 at position 5


@pytest.fixture(scope="module")
def reference(urls: Path, tiny_clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The store a single-machine run makes."""
    out = tmp_path_factory.mktemp("reference") / "store"
    build(urls, out, tiny_clip, engine="local", num_workers=0)
    return out


def build(source: Path, out: Path, tiny_clip: Path, **options) -> precompute_module.PrecomputeReport:
    """Precompute with the test's batches and partitions; a local run with one torch thread, as each Dask worker
    has (Dask's nanny sets OMP_NUM_THREADS=1): a float32 sum split over another number of threads may differ in its
    last bit (~1e-7), and then, rarely, a float16 rounding does, so bit-for-bit equality needs the same count."""
    options = {"engine": "dask", "partition_size": PARTITION, **options}
    if options["engine"] == "local":
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return precompute(str(source), out, model=str(tiny_clip), text_model=None, batch_size=BATCH, shard_size=BATCH, progress=False, **options)
        finally:
            torch.set_num_threads(threads)
    return precompute(str(source), out, model=str(tiny_clip), text_model=None, batch_size=BATCH, shard_size=BATCH, progress=False, **options)


def count_requests(server: ImageServer) -> None:
    with server.lock:
        server.requests = 0


def test_a_cluster_run_makes_the_store_one_machine_makes(cluster: Client, server: WorkerKillingServer, urls: Path, reference: Path, tiny_clip: Path, tmp_path: Path) -> None:
    count_requests(server)
    report = build(urls, tmp_path / "store", tiny_clip, cluster=cluster)
    assert (report.partitions, report.count, report.skipped, report.embedded) == (4, 22, 1, 22)
    assert server.requests == 23  # each item fetched once
    assert_same_store(tmp_path / "store", reference)  # rows, order, vectors bit for bit, skipped list, manifest
    assert not (tmp_path / "store.partial").exists()


def test_a_folder_on_the_cluster_too(cluster: Client, photo_dir: Path, tiny_clip: Path, tmp_path: Path) -> None:
    build(photo_dir, tmp_path / "local", tiny_clip, engine="local", num_workers=0)
    report = build(photo_dir, tmp_path / "cluster", tiny_clip, cluster=cluster.scheduler.address)
    assert report.partitions == 3 and report.count == 16
    assert_same_store(tmp_path / "cluster", tmp_path / "local")
    assert EmbeddingStore.open(tmp_path / "cluster").embeddings.dtype.name == "float16"


def test_a_rerun_submits_only_the_unfinished_partitions(cluster: Client, server: WorkerKillingServer, urls: Path, reference: Path, tiny_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out, partial = tmp_path / "store", tmp_path / "store.partial"

    def driver_dies(*args: object, **kwargs: object) -> None:
        raise StoreError("the driver died before the join")

    with monkeypatch.context() as patch:
        patch.setattr(precompute_module, "_finalise", driver_dies)
        with pytest.raises(StoreError, match="driver died"):
            build(urls, out, tiny_clip, cluster=cluster)
    shards = sorted(partial.glob("shard-*"))
    assert len(shards) == 4  # one shard per partition, named by it
    for unfinished in (shards[1], shards[3]):  # source items 6-11 and 18-22
        shutil.rmtree(unfinished)

    count_requests(server)
    report = build(urls, out, tiny_clip, cluster=cluster)
    assert (report.partitions, report.resumed_from, report.embedded) == (2, 12, 11)
    assert server.requests == 11  # only the items of the two unfinished partitions
    assert_same_store(out, reference)


def test_cli_runs_on_the_cluster_at_its_address(cluster: Client, urls: Path, reference: Path, tiny_clip: Path, tmp_path: Path) -> None:
    address = cluster.scheduler.address
    assert address.startswith("tcp://127.0.0.1:")
    args = ["precompute", str(urls), "--out", str(tmp_path / "store"), "--model", str(tiny_clip), "--text-model", "none", "--batch-size", str(BATCH), "--engine", "dask", "--cluster", address, "--partition-size", str(PARTITION), "--no-progress"]
    result = subprocess.run([sys.executable, "-m", "clip_search.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    assert "22 images embedded, 1 skipped" in result.stdout and "4 partitions on the cluster" in result.stdout
    assert_same_store(tmp_path / "store", reference)


def test_an_unreachable_scheduler_is_a_one_line_error(urls: Path, tiny_clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    started = time.perf_counter()
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        code = cli.main(["precompute", str(urls), "--out", str(tmp_path / "store"), "--model", str(tiny_clip), "--engine", "dask", "--cluster", address, "--no-progress"])
    assert code == 1 and time.perf_counter() - started < 30
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"clip-search precompute: error: cannot reach the Dask scheduler at {address} (waited 2s): ")
    assert not (tmp_path / "store.partial").exists()


def test_engine_options_are_checked(urls: Path, tmp_path: Path, tiny_clip: Path) -> None:
    with pytest.raises(StoreError, match="unknown engine 'spark'"):
        precompute(str(urls), tmp_path / "s", model=str(tiny_clip), engine="spark")
    with pytest.raises(StoreError, match="only used with engine 'dask'"):
        precompute(str(urls), tmp_path / "s", model=str(tiny_clip), cluster="tcp://127.0.0.1:1")
    with pytest.raises(ClusterError, match="needs the address of a Dask scheduler"):
        precompute(str(urls), tmp_path / "s", model=str(tiny_clip), engine="dask")
    with pytest.raises(StoreError, match="not a URL"):
        precompute(str(urls), "s3://bucket/store", model=str(tiny_clip), engine="dask", cluster="tcp://127.0.0.1:1")


def test_a_worker_killed_mid_partition_is_retried_and_nothing_is_had_twice(cluster: Client, server: WorkerKillingServer, urls: Path, reference: Path, tiny_clip: Path, tmp_path: Path) -> None:
    workers = set(cluster.run(os.getpid).values())
    count_requests(server)
    server.kill_path, server.killed = "/img/8.png", []  # source item 9: the middle of partition 1 (items 6-11)
    report = build(urls, tmp_path / "store", tiny_clip, cluster=cluster)
    assert len(server.killed) == 1 and server.killed[0] in workers  # a worker process died mid-partition
    assert not psutil.pid_exists(server.killed[0]) or psutil.Process(server.killed[0]).status() == psutil.STATUS_ZOMBIE
    assert report.partitions == 4 and server.requests > 23  # the killed partition was fetched again
    assert_same_store(tmp_path / "store", reference)  # same rows once each, same vectors, same skipped list
