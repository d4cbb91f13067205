"""The app's memory and cold start on big stores: peak RSS serving a 1M-row store (exact and through its ANN index),
and the app's first answer on a 25k store against `import gradio, torch, transformers`.

Stores are built once (cached under --work) from bench/scale.py's float16 corpora, with a random ViT-B/32-sized CLIP
(bench/run.py's `vit_b32`, D = 512) as the store's model and fake `url` metadata. The ANN store is the exact store's
files hard-linked into a second folder, then indexed with `build_store_index` (the kind "auto" picks, or --kind).

Every measurement is a fresh Python process, timed from just before it is spawned:
* app: `load_app(store)` (the engine: store opened and verified, index opened, text encoder loaded; the Gradio page
  built), then one `engine.search(QUERY)`; the child prints when the search returned and its /proc/self/status
  (VmHWM = peak RSS, VmRSS, RssAnon, RssFile: file-backed pages, the memory-mapped store, count toward RSS);
* baseline: `python -c "import gradio, torch, transformers"`, timed to the end of the imports.
The query text encoder runs on ONNX Runtime from an export cached under $CLIP_SEARCH_CACHE (--work/cache unless set);
one untimed app run per store makes the export before anything is timed. Rounds interleave the cases (A B A B).

Usage: python bench/app_memory.py [--rounds 5] [--rows 1000000] [--small-rows 25000] [--data /tmp/clip-search-scale]
                                  [--work /tmp/clip-search-app-memory] [--kind auto] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

log = logging.getLogger("app_memory")

QUERY = "a photo of a dog on the beach"
STATUS_FIELDS = ("VmHWM", "VmRSS", "RssAnon", "RssFile")

APP_CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
import transformers
transformers.utils.logging.set_verbosity_error()
from clip_search.ui import load_app
engine, demo = load_app({store!r})
loaded = time.time()
result = engine.search({query!r}, top_k=10)
answered = time.time()
assert len(result.hits) == 10, result
status = {{line.split(":")[0]: int(line.split()[1]) for line in open("/proc/self/status") if line.split(":")[0] in {fields!r}}}
print(json.dumps({{"loaded": loaded, "answered": answered, "index": engine.index.kind, "status_kib": status}}))
"""
BASELINE_CHILD = """
import time
import gradio, torch, transformers
print(time.time())
"""


def _child_env(cache: Path) -> dict[str, str]:
    """The environment of every timed child: offline, no analytics, the ONNX export cache named."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", TOKENIZERS_PARALLELISM="false")
    env.setdefault("CLIP_SEARCH_CACHE", str(cache))
    return env


def make_model(work: Path) -> Path:
    """The random ViT-B/32 CLIP the stores name (bench/run.py's `vit_b32`), made once."""
    out = work / "vit-b32"
    if (out / "config.json").is_file():
        return out
    sys.path.insert(0, str(ROOT / "bench"))
    from run import (
        vit_b32,  # bench/run.py: imports torch and the precompute stack, so only when a model is made
    )

    tmp = work / "vit-b32.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    vit_b32(tmp)
    os.replace(tmp, out)
    return out


def make_store(work: Path, corpus: Path, model: Path) -> Path:
    """A store over a cached float16 corpus (fake url metadata), written once with write_store."""
    import numpy as np
    import pyarrow as pa

    from clip_search.store import Manifest, ModelRef, SourceInfo, write_store

    emb = np.load(corpus, mmap_mode="r")
    n = emb.shape[0]
    out = work / f"store-{n}"
    if (out / "manifest.json").is_file():
        return out
    started = time.perf_counter()
    meta = pa.table({"id": [str(i) for i in range(n)], "url": [f"https://example.org/{i}.jpg" for i in range(n)]})
    step = 262_144
    parts = [emb[s : s + step] for s in range(0, n, step)]  # memory-mapped slices: copied part by part
    write_store(out, parts, meta, (), Manifest(ModelRef(str(model)), 512, n, SourceInfo("bench", n)))
    log.info("store %s: %d rows written in %.0f s", out, n, time.perf_counter() - started)
    return out


def make_index_store(store: Path, kind: str) -> tuple[Path, dict]:
    """The store's files hard-linked into a second folder, indexed there with build_store_index (made once)."""
    out = store.with_name(f"{store.name}-{kind}")
    info_file = out / "index-build.json"
    if info_file.is_file():
        return out, json.loads(info_file.read_text())
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    for f in store.iterdir():
        if f.name == "manifest.json":
            shutil.copy2(f, out / f.name)
        else:
            os.link(f, out / f.name)
    from clip_search.engine import SearchEngine
    from clip_search.store_index import build_store_index

    engine = SearchEngine.load(out, use_index=False)
    started = time.perf_counter()
    info = build_store_index(engine.store, engine.text_encoder.encode_texts, kind=kind)
    record = {"kind": info.kind, "params": info.params, "build_seconds": info.build_seconds, "recall_at_10": info.recall_at_10,
              "bytes_per_vector": info.bytes_per_vector, "wall_seconds": time.perf_counter() - started,
              "index_bytes": sum((out / f).stat().st_size for f in info.files)}
    info_file.write_text(json.dumps(record, indent=1))
    log.info("index of %s: %s", out, record)
    return out, record


def run_app(store: Path, cache: Path) -> dict:
    """One fresh app process: seconds from spawn to loaded and to the first answer, and its /proc status (KiB)."""
    code = APP_CHILD.format(root=str(ROOT), store=str(store), query=QUERY, fields=STATUS_FIELDS)
    spawned = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_child_env(cache), check=False)
    if out.returncode != 0:
        raise RuntimeError(f"app child failed on {store}:\n{out.stderr[-3000:]}")
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return {"first_answer_s": got["answered"] - spawned, "loaded_s": got["loaded"] - spawned, "index": got["index"],
            **{k: v / 1024**2 for k, v in got["status_kib"].items()}}


def run_baseline(cache: Path) -> float:
    """Seconds from spawn to the end of `import gradio, torch, transformers` in a fresh process."""
    spawned = time.time()
    out = subprocess.run([sys.executable, "-c", BASELINE_CHILD], capture_output=True, text=True, env=_child_env(cache), check=True)
    return float(out.stdout.strip().splitlines()[-1]) - spawned


def cpu_flags() -> str:
    """The SIMD/AMX flags lscpu reports."""
    out = subprocess.run("lscpu | grep -o 'amx[a-z_0-9]*\\|avx512[a-z_0-9]*\\|avx2' | sort -u", shell=True,
                         capture_output=True, text=True, check=False).stdout
    return " ".join(out.split()) or "none"


def summarise(runs: list[dict]) -> dict:
    """Medians of a case's runs (peak RSS: the largest)."""
    return {"first_answer_s": statistics.median(r["first_answer_s"] for r in runs),
            "loaded_s": statistics.median(r["loaded_s"] for r in runs),
            "peak_rss_gib": max(r["VmHWM"] for r in runs),
            "rss_anon_gib": statistics.median(r["RssAnon"] for r in runs),
            "rss_file_gib": statistics.median(r["RssFile"] for r in runs),
            "index": runs[0]["index"], "runs": len(runs)}


def main(argv: list[str] | None = None) -> None:
    """Build (or reuse) the model and stores, warm the ONNX export, then measure interleaved rounds."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--small-rows", type=int, default=25_000)
    p.add_argument("--data", type=Path, default=Path("/tmp/clip-search-scale"), help="bench/scale.py's corpora")
    p.add_argument("--work", type=Path, default=Path("/tmp/clip-search-app-memory"))
    p.add_argument("--kind", default="auto", help="the index kind of the indexed big store")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    cache = Path(os.environ.get("CLIP_SEARCH_CACHE") or args.work / "cache")
    os.environ["CLIP_SEARCH_CACHE"] = str(cache)  # the index build below encodes its probe texts through it too

    model = make_model(args.work)
    small = make_store(args.work, args.data / f"corpus-{args.small_rows}.npy", model)
    big = make_store(args.work, args.data / f"corpus-{args.rows}.npy", model)
    indexed, index_info = make_index_store(big, args.kind)
    for store in (small, big, indexed):  # untimed: makes the ONNX export once, warms the page cache
        run_app(store, cache)

    cases = {"baseline": [], "app_small": [], "app_big_exact": [], "app_big_index": []}
    for r in range(args.rounds):  # interleaved: one of each per round
        cases["baseline"].append(run_baseline(cache))
        cases["app_small"].append(run_app(small, cache))
        cases["app_big_exact"].append(run_app(big, cache))
        cases["app_big_index"].append(run_app(indexed, cache))
        log.info("round %d: import %.2f s, app 25k %.2f s, 1M exact %.2f s (%.2f GiB), 1M %s %.2f s (%.2f GiB)", r,
                 cases["baseline"][-1], cases["app_small"][-1]["first_answer_s"], cases["app_big_exact"][-1]["first_answer_s"],
                 cases["app_big_exact"][-1]["VmHWM"], cases["app_big_index"][-1]["index"],
                 cases["app_big_index"][-1]["first_answer_s"], cases["app_big_index"][-1]["VmHWM"])
    baseline = statistics.median(cases["baseline"])
    ratios = [a["first_answer_s"] / b for a, b in zip(cases["app_small"], cases["baseline"])]
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "cpu_flags": cpu_flags(), "cpus": os.cpu_count(), "load_before_after": None, "query": QUERY,
        "import_gradio_torch_transformers_s": baseline, "import_runs": cases["baseline"],
        "app_small": summarise(cases["app_small"]), "app_big_exact": summarise(cases["app_big_exact"]),
        "app_big_index": summarise(cases["app_big_index"]), "index_build": index_info,
        "first_answer_ratio_median": statistics.median(ratios), "first_answer_ratio_rounds": ratios,
        "rows": {"small": args.small_rows, "big": args.rows}, "raw": cases,
    }
    results["load_before_after"] = os.getloadavg()
    text = json.dumps(results, indent=1)
    if args.json:
        args.json.write_text(text)
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
