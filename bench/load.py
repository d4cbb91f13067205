"""Load on the web app: queries/s and latency percentiles at 1, 10, 50 and 200 concurrent clients, over loopback.

Each store is served by a subprocess (`python bench/load.py --serve STORE`) so that its memory can be read from
/proc; the clients are threads here, each sending text searches one after another through Gradio's raw HTTP API
(POST /gradio_api/call/search, then read the event stream). Stores: the demo store, and a synthetic 25k-row
store (the demo store's models with 25,000 random unit vectors and fake URLs, so no image is ever fetched).

    python bench/load.py                 # the full run (a few minutes)
    python bench/load.py --small         # the test's setting: demo store, 1 and 20 clients
    python bench/load.py --json out.json # also write the figures as JSON

Bars (checked and printed): at 50 clients, throughput ≥ 3× the one-at-a-time rate (1 client) of the same run,
no errors, server RSS after ≤ 1.1× before (before = after start-up and a warm-up).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FULL_LEVELS = ((1, 40), (10, 8), (50, 4), (200, 2))  # (clients, searches each)
SMALL_LEVELS = ((1, 12), (20, 3))
LEVEL_DEADLINE_S = 240.0  # a level stops sending new searches after this
REQUEST_TIMEOUT_S = 120.0
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "black", "white")
SHAPES = ("circles", "squares", "triangles", "stars", "hearts")
PLACES = ("at the top", "in the center", "at the bottom", "on the left", "on the right", "on a grey background")


def queries(n: int, seed: int) -> list[str]:
    """n varied text queries (no two consecutive ones alike)."""
    rng = random.Random(seed)
    return [f"{rng.choice(('two', 'three', 'small', 'large'))} {rng.choice(COLOURS)} {rng.choice(SHAPES)} {rng.choice(PLACES)}" for _ in range(n)]


def synthetic_store(out: Path, rows: int = 25_000, seed: int = 0) -> Path:
    """The demo store's models and manifest with `rows` random unit vectors and fake https URLs."""
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
    manifest = replace(source.manifest, model=model, text_model=source.text_model_path(), count=rows, source=SourceInfo("url_list", rows))
    return write_store(out, vectors.astype(np.float16), metadata, (), manifest)


def serve(store: str, url_file: str) -> None:
    """Serve `store` until killed; write the app's URL to `url_file` once it answers."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    from clip_search.ui import load_app

    engine, demo = load_app(store)
    _, url, _ = demo.launch(
        prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True,
        allowed_paths=[str(p) for p in engine.served_roots()], show_error=False,
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


def search_once(client: Any, url: str, text: str, top_k: int = 12) -> tuple[float, str | None]:
    """One search through the raw API: (seconds, None) or (seconds, what went wrong)."""
    started = time.perf_counter()
    try:
        posted = client.post(f"{url}gradio_api/call/search", json={"data": [text, "", None, top_k, ""]})
        if posted.status_code != 200:
            return time.perf_counter() - started, f"HTTP {posted.status_code}: {posted.text[:80]}"
        event_id = posted.json()["event_id"]
        stream = client.get(f"{url}gradio_api/call/search/{event_id}").text
    except Exception as exc:  # timeouts, refused connections: counted, not raised
        return time.perf_counter() - started, f"{type(exc).__name__}: {exc}"
    elapsed = time.perf_counter() - started
    if "event: complete" not in stream:
        return elapsed, f"no result: {stream[-120:]!r}"
    data = json.loads(stream.split("event: complete", 1)[1].split("data: ", 1)[1].split("\n", 1)[0])
    status = data[2]
    if not status.startswith("**"):
        return elapsed, f"status {status[:80]!r}"
    return elapsed, None


def run_level(url: str, clients: int, each: int, seed: int) -> dict[str, Any]:
    """`clients` threads, each sending `each` searches back to back; throughput and latency percentiles."""
    import httpx
    import numpy as np

    texts = queries(clients * each, seed)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + LEVEL_DEADLINE_S
    start_gate = threading.Barrier(clients)

    def client_loop(c: int) -> None:
        with httpx.Client(timeout=REQUEST_TIMEOUT_S, limits=httpx.Limits(max_connections=2)) as http:
            start_gate.wait()
            for j in range(each):
                if time.monotonic() > deadline:
                    break
                seconds, error = search_once(http, url, texts[c * each + j])
                with lock:
                    latencies.append(seconds)
                    if error:
                        errors.append(error)

    threads = [threading.Thread(target=client_loop, args=(c,)) for c in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    lat = np.asarray(latencies) * 1e3
    done = len(latencies) - len(errors)
    return {
        "clients": clients, "requests": len(latencies), "errors": len(errors), "first_errors": errors[:3],
        "wall_s": round(wall, 2), "qps": round(done / wall, 2),
        "p50_ms": round(float(np.percentile(lat, 50)), 1), "p95_ms": round(float(np.percentile(lat, 95)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
    }


def bench_store(name: str, store: Path, levels: tuple[tuple[int, int], ...], workdir: Path) -> dict[str, Any]:
    """Start a server on `store`, warm it up, run every level, and read its memory before and after."""
    import httpx

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
        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as http:
            for text in queries(10, seed=99):
                _, error = search_once(http, url, text)
                if error:
                    raise SystemExit(f"load.py: warm-up search failed on {name}: {error}")
        rss_before = rss_mib(server.pid)
        results = []
        for i, (clients, each) in enumerate(levels):
            row = run_level(url, clients, each, seed=i)
            results.append(row)
            print(f"  {name:>5} {clients:>4} clients: {row['qps']:7.2f} q/s  p50 {row['p50_ms']:8.1f}  p95 {row['p95_ms']:8.1f}  p99 {row['p99_ms']:8.1f} ms  errors {row['errors']}", flush=True)
        rss_after = rss_mib(server.pid)
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        log_file.close()
    return {"levels": results, "rss_start_mib": round(rss_start, 1), "rss_before_mib": round(rss_before, 1), "rss_after_mib": round(rss_after, 1)}


def gallery_cost(count: int = 50, repeats: int = 3) -> dict[str, float]:
    """ms to turn `count` demo results into a gallery: file paths served in place vs. decoded PIL images."""
    import gradio as gr

    from clip_search.config import DEMO_STORE
    from clip_search.engine import SearchEngine

    engine = SearchEngine.load(DEMO_STORE)
    hits = engine.search("red circles", top_k=count).hits
    rows = engine.store.rows([h.row for h in hits])
    gallery = gr.Gallery()
    best: dict[str, float] = {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        gallery.postprocess([(engine.image_for(h), "") for h in hits])
        t1 = time.perf_counter()
        gallery.postprocess([(engine.store.open_image(r), "") for r in rows])
        t2 = time.perf_counter()
        best["paths_ms"] = min(best.get("paths_ms", 1e9), 1e3 * (t1 - t0))
        best["pil_ms"] = min(best.get("pil_ms", 1e9), 1e3 * (t2 - t1))
    return {k: round(v, 1) for k, v in best.items()}


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
    report: dict[str, Any] = {"levels": [list(level) for level in levels]}
    workdir = Path(tempfile.mkdtemp(prefix="clip-search-load-"))
    try:
        stores = [("demo", DEMO_STORE)]
        if not args.small:
            t0 = time.perf_counter()
            stores.append(("25k", synthetic_store(workdir / "store-25k")))
            print(f"built the 25k-row store in {time.perf_counter() - t0:.1f} s", flush=True)
        for name, store in stores:
            report[name] = bench_store(name, Path(store), levels, workdir)
        if not args.small:
            report["gallery_50"] = gallery_cost()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    ok = True
    print("\n| store | clients | requests | errors | queries/s | p50 ms | p95 ms | p99 ms |\n| --- | --: | --: | --: | --: | --: | --: | --: |")
    for name in ("demo", "25k"):
        if name not in report:
            continue
        for row in report[name]["levels"]:
            print(f"| {name} | {row['clients']} | {row['requests']} | {row['errors']} | {row['qps']:.2f} | {row['p50_ms']:.0f} | {row['p95_ms']:.0f} | {row['p99_ms']:.0f} |")
    print()
    for name in ("demo", "25k"):
        if name not in report:
            continue
        r = report[name]
        rows = {row["clients"]: row for row in r["levels"]}
        top = 50 if 50 in rows else max(rows)
        ratio = rows[top]["qps"] / rows[1]["qps"] if rows[1]["qps"] else float("inf")
        errors = sum(row["errors"] for row in r["levels"])
        memory = r["rss_after_mib"] / r["rss_before_mib"]
        bars = [(f"{top} clients / 1 client = {ratio:.2f}×", ratio >= 3), (f"errors {errors}", errors == 0), (f"RSS after/before = {r['rss_after_mib']:.0f}/{r['rss_before_mib']:.0f} MiB = {memory:.2f}", memory <= 1.1)]
        ok &= all(met for _, met in bars)
        print(f"{name}: RSS at start {r['rss_start_mib']:.0f} MiB; " + "; ".join(f"{text} ({'met' if met else 'NOT met'})" for text, met in bars))
        for row in r["levels"]:
            if row["first_errors"]:
                print(f"  {name} {row['clients']} clients, first errors: {row['first_errors']}")
    if "gallery_50" in report:
        g = report["gallery_50"]
        print(f"gallery of 50 demo results: file paths {g['paths_ms']:.1f} ms, decoded PIL images {g['pil_ms']:.1f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0 if ok or args.small else 1


if __name__ == "__main__":
    sys.exit(main())
