"""Load on the web app: queries/s and latency percentiles at 1, 10, 50 and 200 concurrent clients, over loopback.

Each store is served by a subprocess (`python bench/load.py --serve STORE`) so that its memory can be read from
/proc; the clients are coroutines here (one keep-alive connection each, HTTP/1.1 spoken directly: see
`Connection`), each sending text searches one after another through one of two paths:

- gradio: Gradio's raw HTTP API (POST /gradio_api/call/search, then read the event stream), as gradio_client does;
- json:   the app's JSON API (POST /api/search, one request, one JSON answer).

The two paths run interleaved level by level (gradio 1, json 1, gradio 10, json 10, ...), and the one-client
level is run again at the end, so that drift of a shared machine shows; the one-client rate of a path is the mean
of its two one-client runs. Stores: the demo store (its tiny text encoder: a query costs well under a millisecond
to encode, so HTTP handling is nearly all of a request), and a synthetic 25k-row store standing for Unsplash Lite
on a Space: 25,000 random unit vectors, fake URLs (no image is ever fetched), and a random text encoder of the
size of the multilingual student real CLIP ViT-B/32 stores use (DistilBERT: 6 layers, hidden 768).

    python bench/load.py                 # the full run (several minutes)
    python bench/load.py --small         # the test's setting: demo store, 1 and 20 clients
    python bench/load.py --json out.json # also write the figures as JSON

Bars (checked and printed), per path and store: at 50 clients, throughput ≥ 3× the one-at-a-time rate of the same
run; no errors; server RSS after all measured rounds ≤ 1.1× RSS after the warm-up. The warm-up is APP_STATE_SESSIONS
+ 20 searches through Gradio (its bounded session store full) and 20 through the JSON API, then one unmeasured pass
of every level on both paths: the first time 200 clients arrive, the server makes what peak concurrency needs once
(threads and their stacks, sockets, Gradio's bounded per-event records); a leak is what grows over the measured
pass after that. RSS at start and after the serial searches are reported too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FULL_LEVELS = ((1, 40), (10, 8), (50, 6), (200, 2))  # (clients, searches each)
SMALL_LEVELS = ((1, 12), (20, 3))
PATHS = ("gradio", "json")
LEVEL_DEADLINE_S = 240.0  # a level stops sending new searches after this
REQUEST_TIMEOUT_S = 120.0
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "black", "white")
SHAPES = ("circles", "squares", "triangles", "stars", "hearts")
PLACES = ("at the top", "in the center", "at the bottom", "on the left", "on the right", "on a grey background")


def queries(n: int, seed: int) -> list[str]:
    """n varied text queries (no two consecutive ones alike)."""
    rng = random.Random(seed)
    return [f"{rng.choice(('two', 'three', 'small', 'large'))} {rng.choice(COLOURS)} {rng.choice(SHAPES)} {rng.choice(PLACES)}" for _ in range(n)]


def production_sized_student(out: Path, dim: int) -> Path:
    """A random multilingual student the size of sentence-transformers/clip-ViT-B-32-multilingual-v1 (6 layers,
    hidden 768, 12 heads, FFN 3072, mean pooling, a dense map to `dim`), with the demo student's tokenizer: what a
    query costs to encode on a real Space, where the demo's tiny student costs a fraction of a millisecond."""
    from transformers import BertTokenizerFast

    from clip_search.config import DEMO_STORE
    from clip_search.scratch import new_text_encoder
    from clip_search.store import EmbeddingStore
    from clip_search.text_student import assemble_student

    tokenizer = BertTokenizerFast.from_pretrained(EmbeddingStore.open(DEMO_STORE).text_model_path())
    body = new_text_encoder(tokenizer, out / "body", hidden_size=768, layers=6, heads=12)
    assemble_student(str(body), dim).save(str(out / "student"))
    return out / "student"


def encoder_ceiling(text_model: Path, rounds: int = 3) -> dict[str, float]:
    """queries/s of the store's text encoder alone, one query at a time and in batches of 50 (interleaved rounds):
    when encoding dominates a search, their ratio is what batching can give the 50-client level at most."""
    import statistics

    from clip_search.text_backend import load_text_encoder

    encoder = load_text_encoder(str(text_model), "student")
    texts = queries(200, seed=7)
    encoder.encode_texts(texts[:50])
    single, batched = [], []
    for _ in range(rounds):
        began = time.perf_counter()
        for text in texts[:40]:
            encoder.encode_texts([text])
        single.append(40 / (time.perf_counter() - began))
        began = time.perf_counter()
        for start in range(0, 200, 50):
            encoder.encode_texts(texts[start : start + 50])
        batched.append(200 / (time.perf_counter() - began))
    one, fifty = statistics.median(single), statistics.median(batched)
    return {"one_qps": round(one, 1), "batch50_qps": round(fifty, 1), "ratio": round(fifty / one, 2)}


def synthetic_store(out: Path, rows: int = 25_000, seed: int = 0, text_model: Path | None = None) -> Path:
    """The demo store's models and manifest with `rows` random unit vectors and fake https URLs (and another
    query text encoder, when `text_model` is given)."""
    import numpy as np
    import pyarrow as pa

    from clip_search.config import DEMO_STORE
    from clip_search.store import EmbeddingStore, SourceInfo, write_store

    source = EmbeddingStore.open(DEMO_STORE)
    vectors = np.random.default_rng(seed).standard_normal((rows, source.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"img-{i:06d}" for i in range(rows)]
    metadata = pa.table({"id": ids, "url": [f"https://example.org/images/{i}.jpg" for i in ids], "caption": [f"synthetic image {i}" for i in ids]})
    model = replace(source.manifest.model, id=source.model_path())
    manifest = replace(source.manifest, model=model, text_model=str(text_model or source.text_model_path()), count=rows, source=SourceInfo("url_list", rows))
    return write_store(out, vectors.astype(np.float16), metadata, (), manifest)


def serve(store: str, url_file: str) -> None:
    """Serve `store` until killed; write the app's URL to `url_file` once it answers. GET /bench/stats: the batcher's counts."""
    import dataclasses
    import logging

    from starlette.responses import JSONResponse
    from starlette.routing import Route

    logging.basicConfig(level=logging.WARNING)
    from clip_search.ui import load_app

    engine, demo = load_app(store)

    async def stats(request: Any) -> JSONResponse:
        return JSONResponse(dataclasses.asdict(demo.batcher.stats()))

    _, url, _ = demo.launch(
        prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True, show_error=False,
        app_kwargs={"routes": [Route("/bench/stats", stats)]},
    )
    Path(url_file + ".tmp").write_text(url)
    os.replace(url_file + ".tmp", url_file)
    while True:
        time.sleep(3600)


def rss_mib(pid: int) -> float:
    """Resident memory of a process, MiB (VmRSS in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Connection:
    """One keep-alive HTTP/1.1 connection to the app, spoken directly over asyncio streams.

    The load generator shares the server's 2 cores, so it must cost little: a thread per client with httpx took
    11-15 ms of CPU per request at 50 clients (measured from /proc and getrusage: ~40 % of the machine, taken from
    the server being measured); this takes 0.2-0.4 ms. It reads Content-Length and chunked bodies, which is all
    uvicorn sends."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        """(status, body) of one request; the connection is reopened when the server closed it."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        data = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        self.writer.write(head.encode() + data)
        status = int((await self.reader.readline()).split()[1])
        headers: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            payload = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            parts = []
            while size := int((await self.reader.readline()).split(b";")[0], 16):
                parts.append(await self.reader.readexactly(size))
                await self.reader.readline()
            await self.reader.readline()
            payload = b"".join(parts)
        else:
            payload = await self.reader.read()
            headers["connection"] = "close"
        if headers.get("connection") == "close":
            self.close()
        return status, payload

    def close(self) -> None:
        """Close the connection (a later request opens a new one)."""
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def search_once(conn: Connection, text: str, path: str, top_k: int = 12) -> tuple[float, str | None]:
    """One search through `path` ("gradio" or "json"): (seconds, None) or (seconds, what went wrong)."""
    started = time.perf_counter()
    try:
        if path == "json":
            status, body = await asyncio.wait_for(conn.request("POST", "/api/search", {"query": text, "top_k": top_k}), REQUEST_TIMEOUT_S)
            elapsed = time.perf_counter() - started
            if status != 200:
                return elapsed, f"HTTP {status}: {body[:80]!r}"
            hits = json.loads(body)["hits"]
            return elapsed, None if len(hits) == top_k else f"{len(hits)} hits"
        status, body = await asyncio.wait_for(conn.request("POST", "/gradio_api/call/search", {"data": [text, "", None, top_k, ""]}), REQUEST_TIMEOUT_S)
        if status != 200:
            return time.perf_counter() - started, f"HTTP {status}: {body[:80]!r}"
        event_id = json.loads(body)["event_id"]
        _, raw = await asyncio.wait_for(conn.request("GET", f"/gradio_api/call/search/{event_id}"), REQUEST_TIMEOUT_S)
        stream = raw.decode()
    except Exception as exc:  # timeouts, refused or dropped connections: counted, not raised
        conn.close()
        return time.perf_counter() - started, f"{type(exc).__name__}: {exc}"
    elapsed = time.perf_counter() - started
    if "event: complete" not in stream:
        return elapsed, f"no result: {stream[-120:]!r}"
    data = json.loads(stream.split("event: complete", 1)[1].split("data: ", 1)[1].split("\n", 1)[0])
    status_text = data[2]
    if not status_text.startswith("**"):
        return elapsed, f"status {status_text[:80]!r}"
    return elapsed, None


def run_level(url: str, path: str, clients: int, each: int, seed: int) -> dict[str, Any]:
    """`clients` concurrent clients (coroutines, one connection each), each sending `each` searches back to back
    through `path`; throughput and latency percentiles."""
    import numpy as np

    texts = queries(clients * each, seed)
    parts = urlsplit(url)
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.monotonic() + LEVEL_DEADLINE_S

    async def client(c: int) -> None:
        conn = Connection(parts.hostname or "127.0.0.1", parts.port or 80)
        try:
            for j in range(each):
                if time.monotonic() > deadline:
                    break
                seconds, error = await search_once(conn, texts[c * each + j], path)
                latencies.append(seconds)
                if error:
                    errors.append(error)
        finally:
            conn.close()

    async def level() -> float:
        began = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(clients)))
        return time.perf_counter() - began

    wall = asyncio.run(level())
    lat = np.asarray(latencies) * 1e3
    done = len(latencies) - len(errors)
    return {
        "path": path, "clients": clients, "requests": len(latencies), "errors": len(errors), "first_errors": errors[:3],
        "wall_s": round(wall, 2), "qps": round(done / wall, 2),
        "p50_ms": round(float(np.percentile(lat, 50)), 1), "p95_ms": round(float(np.percentile(lat, 95)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
    }


def warm_up(url: str, path: str, count: int) -> str | None:
    """`count` searches through `path` one after another; the first error, if any."""

    async def run() -> str | None:
        conn = Connection(urlsplit(url).hostname or "127.0.0.1", urlsplit(url).port or 80)
        try:
            for text in queries(count, seed=99):
                _, error = await search_once(conn, text, path)
                if error:
                    return error
            return None
        finally:
            conn.close()

    return asyncio.run(run())


def bench_store(name: str, store: Path, levels: tuple[tuple[int, int], ...], workdir: Path) -> dict[str, Any]:
    """Start a server on `store`, warm it up, run every level through both paths (interleaved), and read its memory."""
    import httpx

    from clip_search.config import APP_STATE_SESSIONS

    url_file = workdir / f"{name}.url"
    log_file = (workdir / f"{name}.log").open("w")
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(store), "--url-file", str(url_file)], stdout=log_file, stderr=subprocess.STDOUT)
    try:
        started = time.monotonic()
        while not url_file.exists():
            if server.poll() is not None or time.monotonic() - started > 300:
                raise SystemExit(f"load.py: the server for {name} did not start; see {workdir / (name + '.log')}:\n{(workdir / (name + '.log')).read_text()[-2000:]}")
            time.sleep(0.2)
        url = url_file.read_text()
        rss_start = rss_mib(server.pid)
        for path, count in (("gradio", APP_STATE_SESSIONS + 20), ("json", 20)):
            if error := warm_up(url, path, count):
                log_file.flush()
                raise SystemExit(f"load.py: warm-up search ({path}) failed on {name}: {error}; the server's log ends:\n{(workdir / (name + '.log')).read_text()[-3000:]}")
        rss_serial = rss_mib(server.pid)
        for clients, each in levels:  # the unmeasured pass (see the module's docstring)
            for path in PATHS:
                run_level(url, path, clients, each, seed=100 + clients)
        rss_before = rss_mib(server.pid)
        results = []
        for i, (clients, each) in enumerate((*levels, levels[0])):
            for path in PATHS:
                row = run_level(url, path, clients, each, seed=i)
                row["rss_mib"] = round(rss_mib(server.pid), 1)
                row["repeat"] = i == len(levels)
                results.append(row)
                print(f"  {name:>5} {path:>6} {clients:>4} clients: {row['qps']:7.2f} q/s  p50 {row['p50_ms']:8.1f}  p95 {row['p95_ms']:8.1f}  p99 {row['p99_ms']:8.1f} ms  errors {row['errors']}  RSS {row['rss_mib']:.0f} MiB", flush=True)
        rss_after = rss_mib(server.pid)
        batcher = httpx.get(f"{url}bench/stats").json()
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        log_file.close()
    return {"levels": results, "batcher": batcher, "rss_start_mib": round(rss_start, 1), "rss_serial_mib": round(rss_serial, 1), "rss_before_mib": round(rss_before, 1), "rss_after_mib": round(rss_after, 1)}


def verdicts(r: dict[str, Any], path: str) -> tuple[float, list[tuple[str, bool]]]:
    """The bars for one path of one store: (50-client/1-client ratio, [(text, met), ...])."""
    rows = [row for row in r["levels"] if row["path"] == path]
    ones = [row["qps"] for row in rows if row["clients"] == 1]
    one = sum(ones) / len(ones)
    by_clients = {row["clients"]: row for row in rows if not row["repeat"]}
    top = 50 if 50 in by_clients else max(by_clients)
    ratio = by_clients[top]["qps"] / one if one else float("inf")
    errors = sum(row["errors"] for row in rows)
    memory = r["rss_after_mib"] / r["rss_before_mib"]
    return ratio, [
        (f"{top} clients / 1 client = {by_clients[top]['qps']:.1f} / {one:.1f} = {ratio:.2f}×", ratio >= 3),
        (f"errors {errors}", errors == 0),
        (f"server RSS after/before = {r['rss_after_mib']:.0f}/{r['rss_before_mib']:.0f} MiB = {memory:.2f}", memory <= 1.1),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="demo store only, 1 and 20 clients (the test's setting)")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--url-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.url_file)
        return 0

    from clip_search.config import DEMO_STORE

    levels = SMALL_LEVELS if args.small else FULL_LEVELS
    report: dict[str, Any] = {"levels": [list(level) for level in levels], "uptime": Path("/proc/loadavg").read_text().split()[:3]}
    workdir = Path(tempfile.mkdtemp(prefix="clip-search-load-"))
    try:
        stores = [("demo", DEMO_STORE)]
        if not args.small:
            t0 = time.perf_counter()
            from clip_search.store import EmbeddingStore

            student = production_sized_student(workdir / "student", EmbeddingStore.open(DEMO_STORE).dim)
            stores.append(("25k", synthetic_store(workdir / "store-25k", text_model=student)))
            print(f"built the 25k-row store (production-sized random student) in {time.perf_counter() - t0:.1f} s", flush=True)
            report["encoder_ceiling"] = encoder_ceiling(student)
            print(f"its text encoder alone: {report['encoder_ceiling']}", flush=True)
        for name, store in stores:
            report[name] = bench_store(name, Path(store), levels, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report["uptime_after"] = Path("/proc/loadavg").read_text().split()[:3]

    ok = True
    print("\n| store | path | clients | requests | errors | queries/s | p50 ms | p95 ms | p99 ms | RSS MiB |\n| --- | --- | --: | --: | --: | --: | --: | --: | --: | --: |")
    for name in ("demo", "25k"):
        for row in report.get(name, {}).get("levels", []):
            again = " (again)" if row["repeat"] else ""
            print(f"| {name} | {row['path']} | {row['clients']}{again} | {row['requests']} | {row['errors']} | {row['qps']:.2f} | {row['p50_ms']:.0f} | {row['p95_ms']:.0f} | {row['p99_ms']:.0f} | {row['rss_mib']:.0f} |")
    print()
    for name in ("demo", "25k"):
        if name not in report:
            continue
        r = report[name]
        b = r["batcher"]
        print(f"{name}: RSS at start {r['rss_start_mib']:.0f} MiB, after the serial searches {r['rss_serial_mib']:.0f}, after the unmeasured pass {r['rss_before_mib']:.0f}, after all measured rounds {r['rss_after_mib']:.0f}; "
              f"batcher: {b['answered']} searches in {b['batches']} batches (largest {b['largest_batch']}), {b['refused']} refused, {b['timed_out']} timed out")
        for path in PATHS:
            ratio, bars = verdicts(r, path)
            r.setdefault("ratio", {})[path] = round(ratio, 2)
            ok &= all(met for _, met in bars)
            print(f"  {path}: " + "; ".join(f"{text} ({'met' if met else 'NOT met'})" for text, met in bars))
        for row in r["levels"]:
            if row["first_errors"]:
                print(f"  {name} {row['path']} {row['clients']} clients, first errors: {row['first_errors']}")
    if "encoder_ceiling" in report:
        c = report["encoder_ceiling"]
        print(f"25k store's text encoder alone: {c['one_qps']} queries/s one at a time, {c['batch50_qps']} in batches of 50: {c['ratio']}x")
    print(f"load average before {' '.join(report['uptime'])}, after {' '.join(report['uptime_after'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0 if ok or args.small else 1


if __name__ == "__main__":
    sys.exit(main())
