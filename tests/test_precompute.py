"""Precompute end to end: folder, URL list and dataset sources into a store; broken files; kill and resume."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from clip_search.clip_model import ClipEncoder
from clip_search.errors import StoreError
from clip_search.precompute import precompute
from clip_search.store import EmbeddingStore, read_jsonl
from tests.conftest import COLOURS, SHAPES, draw_photo

REPO = Path(__file__).resolve().parent.parent


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


class ImageServer:
    """A local HTTP server of generated images that can SIGKILL a process group at its Nth image request."""

    def __init__(self, n: int) -> None:
        self.images = {f"/img/{i}.png": png_bytes(draw_photo(list(COLOURS)[i % 4], SHAPES[i % 2], 32 + i)) for i in range(n)}
        self.requests = 0
        self.kill_at: int | None = None
        self.victim: subprocess.Popen | None = None
        self.hold_at: int | None = None  # from the Nth request on, each waits for `release` (bounded), after setting `reached`
        self.reached, self.release = threading.Event(), threading.Event()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                with server.lock:
                    server.requests += 1
                    if server.kill_at is not None and server.requests == server.kill_at and server.victim is not None:
                        os.killpg(server.victim.pid, signal.SIGKILL)
                    hold = server.hold_at is not None and server.requests >= server.hold_at
                if hold:
                    server.reached.set()
                    server.release.wait(timeout=120)
                body = server.images.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address) -> None:  # noqa: ANN001
                if not isinstance(sys.exc_info()[1], ConnectionError):  # a killed client drops its connection
                    super().handle_error(request, client_address)

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ImageServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def image_server() -> Iterator[ImageServer]:
    with ImageServer(22) as server:
        yield server


@pytest.fixture(scope="module")
def urls(image_server: ImageServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return url_list(image_server, tmp_path_factory.mktemp("urls") / "urls.txt")


def precompute_urls(urls: Path, out: Path, tiny_clip: Path, workers: int):
    return precompute(str(urls), out, model=str(tiny_clip), text_model=None, batch_size=3, shard_size=3, num_workers=workers, progress=False)


@pytest.fixture(scope="module")
def reference(urls: Path, tiny_clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The store an uninterrupted run makes."""
    out = tmp_path_factory.mktemp("reference") / "store"
    precompute_urls(urls, out, tiny_clip, workers=0)
    return out


def url_list(server: ImageServer, path: Path) -> Path:
    lines = [f"{server.url}/img/{i}.png" for i in range(22)]
    lines.insert(5, f"{server.url}/missing.png")  # a 404 among them
    path.write_text("# generated photos\n" + "\n".join(lines) + "\n")
    return path


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "clip_search.cli", *args]


def start_precompute(urls: Path, out: Path, tiny_clip: Path, workers: int, *extra: str) -> subprocess.Popen:
    args = cli("precompute", str(urls), "--out", str(out), "--model", str(tiny_clip), "--text-model", "none", "--batch-size", "3", "--shard-size", "3", "--workers", str(workers), "--no-progress", *extra)
    return subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def run_precompute(urls: Path, out: Path, tiny_clip: Path, workers: int, server: ImageServer | None = None, kill_at: int | None = None) -> subprocess.CompletedProcess:
    proc = start_precompute(urls, out, tiny_clip, workers)
    args = proc.args
    if server is not None:
        with server.lock:
            server.requests, server.kill_at, server.victim = 0, kill_at, proc
    stdout, stderr = proc.communicate(timeout=300)
    if server is not None:
        server.kill_at = None
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)


def assert_same_store(a: Path, b: Path) -> None:
    sa, sb = EmbeddingStore.open(a), EmbeddingStore.open(b)
    assert np.array_equal(np.asarray(sa.embeddings), np.asarray(sb.embeddings))
    assert pq.read_table(a / "metadata.parquet").equals(pq.read_table(b / "metadata.parquet"))
    assert read_jsonl(a / "skipped.jsonl") == read_jsonl(b / "skipped.jsonl")
    ma, mb = (json.loads((s / "manifest.json").read_text()) for s in (a, b))
    for manifest in (ma, mb):
        manifest.pop("created"), manifest.pop("revision")
    assert ma == mb


def assert_same_directions(a: np.ndarray, b: np.ndarray, min_cosine: float = 0.995) -> None:
    """Row by row, `a` and `b` point the same way up to int8 quantisation (the default CPU backend's)."""
    assert a.shape == b.shape
    cosines = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cosines.min() >= min_cosine, cosines.min()


def test_folder_store_holds_every_photo_in_order(folder_store: Path, photo_dir: Path, tiny_clip: Path) -> None:
    store = EmbeddingStore.open(folder_store)
    paths = sorted(p.relative_to(photo_dir).as_posix() for p in photo_dir.rglob("*") if p.is_file())
    assert [r["id"] for r in store.rows(range(len(store)))] == paths
    assert store.embeddings.dtype == np.float16
    assert (store.manifest.count, store.manifest.dim, store.manifest.skipped_count) == (16, 16, 0)
    assert store.manifest.source.type == "folder"
    assert store.manifest.model.backend == "onnx-int8"  # the default ("auto") on a CPU
    direct = ClipEncoder.load(str(tiny_clip)).encode_images([Image.open(photo_dir / p).convert("RGB") for p in paths])
    assert_same_directions(store.vectors(range(len(store))), direct)


def test_cli_url_list_with_workers_skips_the_404(image_server: ImageServer, urls: Path, tiny_clip: Path, tmp_path: Path) -> None:
    result = run_precompute(urls, tmp_path / "store", tiny_clip, workers=2)
    assert result.returncode == 0, result.stderr
    assert "22 images embedded, 1 skipped" in result.stdout
    store = EmbeddingStore.open(tmp_path / "store")
    assert [r["url"] for r in store.rows([0, 5])] == [f"{image_server.url}/img/0.png", f"{image_server.url}/img/5.png"]
    assert read_jsonl(tmp_path / "store" / "skipped.jsonl") == [{"index": 5, "id": f"{image_server.url}/missing.png", "ref": f"{image_server.url}/missing.png", "reason": "HTTP 404"}]


@pytest.mark.parametrize("kill_at", [2, 14])
def test_killed_run_resumes_to_the_uninterrupted_store(image_server: ImageServer, urls: Path, reference: Path, tiny_clip: Path, tmp_path: Path, kill_at: int) -> None:
    out = tmp_path / "store"
    killed = run_precompute(urls, out, tiny_clip, workers=0, server=image_server, kill_at=kill_at)
    assert killed.returncode == -signal.SIGKILL
    assert not out.exists()
    # Synchronous fetching: the kill lands at request N, after every batch before N's was written.
    shards = sorted(p.name for p in (tmp_path / "store.partial").glob("shard-*"))
    assert len(shards) == (kill_at - 1) // 3

    report = precompute_urls(urls, out, tiny_clip, workers=0)
    assert report.resumed_from == 3 * len(shards)
    assert not (tmp_path / "store.partial").exists()
    assert_same_store(out, reference)


def test_killed_run_with_workers_resumes_too(image_server: ImageServer, urls: Path, reference: Path, tiny_clip: Path, tmp_path: Path) -> None:
    killed = run_precompute(urls, tmp_path / "store", tiny_clip, workers=2, server=image_server, kill_at=14)
    assert killed.returncode == -signal.SIGKILL
    precompute_urls(urls, tmp_path / "store", tiny_clip, workers=2)
    assert_same_store(tmp_path / "store", reference)


def test_killed_update_resumes_to_the_store_a_full_build_gives(image_server: ImageServer, urls: Path, tiny_clip: Path, tmp_path: Path) -> None:
    first = tmp_path / "first.txt"
    first.write_text("\n".join(urls.read_text().splitlines()[:12]) + "\n")  # the comment line and 11 URLs
    precompute_urls(first, tmp_path / "store", tiny_clip, workers=0)
    before = EmbeddingStore.open(tmp_path / "store")
    kept = {row["id"]: before.embeddings[i].copy() for i, row in enumerate(before.rows(range(len(before))))}
    killed = run_precompute(urls, tmp_path / "store", tiny_clip, workers=0, server=image_server, kill_at=7)
    assert killed.returncode == -signal.SIGKILL
    assert EmbeddingStore.open(tmp_path / "store").manifest.revision == before.manifest.revision  # untouched until the end
    report = precompute_urls(urls, tmp_path / "store", tiny_clip, workers=0)
    assert (report.reused, report.resumed_from, report.embedded) == (10, 6, 7)  # 10 good of the first 11; the 404 is tried again
    precompute_urls(urls, tmp_path / "full", tiny_clip, workers=0)
    updated, full = EmbeddingStore.open(tmp_path / "store"), EmbeddingStore.open(tmp_path / "full")
    ids = [row["id"] for row in updated.rows(range(len(updated)))]
    assert ids == [row["id"] for row in full.rows(range(len(full)))]
    assert all(np.array_equal(updated.embeddings[i], kept[name]) for i, name in enumerate(ids) if name in kept)
    # int8 activations are quantised per batch, and the update's batches differ from the full build's
    assert_same_directions(updated.vectors(range(len(updated))), full.vectors(range(len(full))))
    assert read_jsonl(tmp_path / "store" / "skipped.jsonl") == read_jsonl(tmp_path / "full" / "skipped.jsonl")


def test_a_second_precompute_into_the_same_store_is_refused(image_server: ImageServer, urls: Path, tiny_clip: Path, tmp_path: Path) -> None:
    image_server.reached.clear()
    image_server.release.clear()
    with image_server.lock:
        image_server.requests, image_server.hold_at = 0, 2
    first = start_precompute(urls, tmp_path / "store", tiny_clip, 0)
    try:
        assert image_server.reached.wait(timeout=120)  # the first run is mid-download, holding its lock
        second = subprocess.run(cli("precompute", str(urls), "--out", str(tmp_path / "store"), "--model", str(tiny_clip), "--no-progress"), cwd=REPO, capture_output=True, text=True, timeout=120)
    finally:
        image_server.hold_at = None
        image_server.release.set()
    assert second.returncode == 1
    assert second.stderr.strip().splitlines() == [f"clip-search precompute: error: another precompute is writing {tmp_path / 'store'} (pid {first.pid}); wait for it to finish"]
    assert first.wait(timeout=300) == 0, first.stderr.read()  # held downloads may time out: their items are skipped
    store = EmbeddingStore.open(tmp_path / "store")
    assert len(store) + store.manifest.skipped_count == 23


def test_unfinished_work_for_another_model_is_not_mixed_in(photo_dir: Path, tiny_clip: Path, tmp_path: Path) -> None:
    partial = tmp_path / "store.partial"
    partial.mkdir()
    (partial / "state.json").write_text(json.dumps({"model": "other", "revision": None, "source": {}, "count": 1}))
    with pytest.raises(StoreError, match="unfinished precompute at .* was for another model or source.*restart to discard it"):
        precompute(str(photo_dir), tmp_path / "store", model=str(tiny_clip), num_workers=0, progress=False)
    report = precompute(str(photo_dir), tmp_path / "store", model=str(tiny_clip), num_workers=0, progress=False, restart=True)
    assert report.count == 16




def test_hf_dataset_source(tmp_path: Path, tiny_clip: Path) -> None:
    import datasets

    images = [draw_photo(c, s) for c in COLOURS for s in SHAPES]
    captions = [f"a {c} {s}" for c in COLOURS for s in SHAPES]
    ds = datasets.Dataset.from_dict({"image": images, "caption": captions}, features=datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string")}))
    ds.save_to_disk(str(tmp_path / "ds"))
    report = precompute(str(tmp_path / "ds"), tmp_path / "store", model=str(tiny_clip), text_model=None, batch_size=3, num_workers=1, progress=False)
    assert report.count == 8 and report.skipped == 0
    store = EmbeddingStore.open(tmp_path / "store")
    assert [r["caption"] for r in store.rows(range(8))] == captions
    assert store.manifest.source.type == "hf_dataset"


def test_no_good_image_keeps_the_reasons(tmp_path: Path, tiny_clip: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"")
    (folder / "b.png").write_text("not a png")
    with pytest.raises(StoreError, match="no image of .* could be embedded \\(2 skipped\\)"):
        precompute(str(folder), tmp_path / "store", model=str(tiny_clip), num_workers=0, progress=False)
    assert read_jsonl(next((tmp_path / "store.partial").glob("shard-*")) / "skipped.jsonl")[0]["id"] == "a.jpg"


def test_dataset_store_images_come_back_from_the_dataset(tmp_path: Path, tiny_clip: Path) -> None:
    import datasets

    from clip_search.engine import SearchEngine

    images = [draw_photo(c, "circle") for c in COLOURS]
    ds = datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()}))
    ds.save_to_disk(str(tmp_path / "ds"))
    precompute(str(tmp_path / "ds"), tmp_path / "store", model=str(tiny_clip), text_model=None, num_workers=0, progress=False)
    engine = SearchEngine.load(tmp_path / "store")
    hit = engine.search(image=images[2], top_k=1).hits[0]
    assert hit.id == "2"
    shown = engine.image_for(hit)
    assert isinstance(shown, Image.Image) and shown.getpixel((24, 24)) == images[2].getpixel((24, 24))


def test_a_shard_of_only_bad_files_does_not_break_the_join(tmp_path: Path, tiny_clip: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a-broken.jpg").write_bytes(b"\xff\xd8\xff")  # truncated JPEG header
    (folder / "b-empty.png").write_bytes(b"")
    for name in ("c.png", "d.png", "e.png"):
        draw_photo("red", "circle").save(folder / name)
    report = precompute(str(folder), tmp_path / "store", model=str(tiny_clip), text_model=None, batch_size=2, shard_size=2, num_workers=0, progress=False)
    assert (report.count, report.skipped) == (3, 2)
    store = EmbeddingStore.open(tmp_path / "store")
    assert [r["id"] for r in store.rows(range(3))] == ["c.png", "d.png", "e.png"]
    assert [row["id"] for row in read_jsonl(tmp_path / "store" / "skipped.jsonl")] == ["a-broken.jpg", "b-empty.png"]


def test_progress_shows_rate_skips_and_where_the_time_goes(photo_dir: Path, tiny_clip: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "photos"
    shutil.copytree(photo_dir, folder)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    precompute(str(folder), tmp_path / "store", model=str(tiny_clip), text_model=None, batch_size=4, num_workers=0, progress=True)
    line = capfd.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert re.search(r"precompute: 100%.*17/17 .*img/s", line), line
    assert re.search(r"skipped=1, stages=wait for decode \d+% · encode \d+% · write \d+%", line), line


def test_decoding_workers_yield_the_cores_to_the_encoder() -> None:
    """A decoding worker lowers its own priority (config.DECODE_WORKER_NICE), so that it decodes in the gaps the
    encoder's threads leave instead of stalling them (bench/RESULTS.md, precompute's stages)."""
    from clip_search.config import DECODE_WORKER_NICE

    code = "import os, torch; from clip_search.precompute import _init_worker; b = os.nice(0); _init_worker(0); print(b, os.nice(0), torch.get_num_threads())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    before, after, threads = map(int, done.stdout.split())
    assert after == min(19, before + DECODE_WORKER_NICE) and threads == 1
