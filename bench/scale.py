"""Search at scale: exact and approximate (faiss) top-k over synthetic CLIP-like corpora of 25k to 10M rows.

Usage: python bench/scale.py [--sizes 25000,1000000,10000000] [--skip-10m] [--data /tmp/clip-search-scale]
                             [--threads 2] [--queries 1000] [--kinds ivfsq,ivfpq,hnsw] [--results results.json]
                             [--generate-only] [--report]

The corpus (CLIP ViT-B/32-like, D = 512, stored float16 and L2-normalised, as the store keeps it):

* One random orthogonal basis Q and a decaying spectrum s_i ∝ (i+1)^-0.5 over the 512 axes: noise is drawn as
  g ⊙ s, then rotated by Q, so the data is anisotropic (a low effective dimension, as real embeddings are).
* Topics: 64 "super-topics" (unit vectors), and C = max(64, N // 1000) cluster centres, each a super-topic plus a
  private direction (c = normalise(s_p + 0.9 u)): neighbouring clusters overlap, as semantic neighbourhoods do.
* Cluster sizes follow a power law: row i picks cluster j with probability ∝ (j + 1)^-0.7, so a few clusters hold
  many rows and most hold a few; each cluster has its own spread σ_j ∈ [0.55, 1.25].
* Image row: normalise(A·m_img + c_j + σ_j·noise), A = 1: a shared "image modality" offset m_img, so that any two
  images have cosine ≈ 0.3–0.45 and two of one cluster 0.55–0.85.
* Text query: normalise(B·m_txt + c_j + τ·noise), j drawn with the same power law, where m_txt is a different
  "text modality" offset (m_txt · m_img = 0.2) and B = 4.0, τ = 1.6: the top text→image cosine sits near 0.3 and a
  typical one near 0.1, as with real CLIP (the modality gap), so queries lie far from every image.

Corpora are written chunk by chunk into float16 .npy files (numpy's open_memmap), never holding the whole
float32 matrix, and are cached under --data (reused when present; each chunk is seeded by its number, so a
corpus is the same on every run). Ground truth (exact top-k of the queries) is cached next to it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # other work shares these 2 cores: do not spin

import numpy as np  # noqa: E402
from numpy.lib.format import open_memmap  # noqa: E402

log = logging.getLogger("scale")

DIM = 512
N_SUPER = 64
ZIPF = 0.7
IMAGE_OFFSET = 1.0
TEXT_OFFSET = 4.0
TEXT_NOISE = 1.6
TEXT_IMAGE_OVERLAP = 0.2
SPREAD = (0.55, 1.25)
GEN_CHUNK = 100_000
SEED = 20261201


@dataclass(frozen=True)
class World:
    """The fixed parts of a corpus: basis, spectrum, modality offsets, cluster centres, sizes and spreads."""

    basis: np.ndarray  # D×D orthogonal
    spectrum: np.ndarray  # D
    m_img: np.ndarray
    m_txt: np.ndarray
    centres: np.ndarray  # C×D unit
    probs: np.ndarray  # C
    spread: np.ndarray  # C


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32)."""
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def make_world(n: int, dim: int = DIM) -> World:
    """The corpus' fixed parts for a corpus of n rows (deterministic)."""
    rng = np.random.default_rng(SEED)
    basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    spectrum = (np.arange(dim) + 1.0) ** -0.5
    spectrum = (spectrum / np.linalg.norm(spectrum)).astype(np.float32)
    m_img = _unit(rng.standard_normal(dim))
    other = _unit(rng.standard_normal(dim) - (rng.standard_normal(dim) @ m_img) * m_img)
    m_txt = _unit(TEXT_IMAGE_OVERLAP * m_img + np.sqrt(1 - TEXT_IMAGE_OVERLAP**2) * other)
    supers = _unit(rng.standard_normal((N_SUPER, dim)))
    n_clusters = max(N_SUPER, n // 1000)
    parent = rng.integers(0, N_SUPER, n_clusters)
    centres = _unit(supers[parent] + 0.9 * _unit(rng.standard_normal((n_clusters, dim))))
    probs = (np.arange(n_clusters) + 1.0) ** -ZIPF
    probs = probs / probs.sum()
    spread = rng.uniform(*SPREAD, n_clusters).astype(np.float32)
    return World(basis.astype(np.float32), spectrum, m_img, m_txt, centres, probs, spread)


def _noise(world: World, rng: np.random.Generator, rows: int) -> np.ndarray:
    """Anisotropic unit-scale noise: a decaying spectrum rotated by the world's basis."""
    g = rng.standard_normal((rows, world.basis.shape[0]), dtype=np.float32) * world.spectrum
    return g @ world.basis


def image_rows(world: World, rng: np.random.Generator, rows: int) -> np.ndarray:
    """`rows` image-like unit vectors (float32)."""
    cluster = rng.choice(len(world.probs), size=rows, p=world.probs)
    x = IMAGE_OFFSET * world.m_img + world.centres[cluster] + world.spread[cluster, None] * _noise(world, rng, rows)
    return _unit(x)


def text_queries(world: World, count: int, seed: int = SEED + 1) -> np.ndarray:
    """`count` text-like unit query vectors (float32), on the far side of the modality gap."""
    rng = np.random.default_rng(seed)
    cluster = rng.choice(len(world.probs), size=count, p=world.probs)
    return _unit(TEXT_OFFSET * world.m_txt + world.centres[cluster] + TEXT_NOISE * _noise(world, rng, count))


def corpus(data: Path, n: int) -> Path:
    """Path of the cached float16 corpus of n rows, generated chunk by chunk when absent."""
    path = data / f"corpus-{n}.npy"
    if path.exists():
        return path
    data.mkdir(parents=True, exist_ok=True)
    world = make_world(n)
    tmp = path.with_suffix(".partial.npy")
    out = open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n, DIM))
    t0 = time.perf_counter()
    for i, start in enumerate(range(0, n, GEN_CHUNK)):
        rows = min(GEN_CHUNK, n - start)
        out[start : start + rows] = image_rows(world, np.random.default_rng([SEED, n, i]), rows).astype(np.float16)
        if i % 10 == 0:
            log.info("corpus %d: %d rows in %.0f s", n, start + rows, time.perf_counter() - t0)
    out.flush()
    del out
    os.replace(tmp, path)
    return path


def cpu_flags() -> str:
    """The SIMD/AMX flags lscpu reports (avx2, avx512*, amx*)."""
    out = subprocess.run("lscpu | grep -o 'amx[a-z_0-9]*\\|avx512[a-z_0-9]*\\|avx2' | sort -u", shell=True,
                         capture_output=True, text=True).stdout
    return " ".join(out.split()) or "none"


class CopyBandwidth:
    """numpy copy bandwidth (bytes of a large float32 array copied per second), sampled one copy at a time so that
    samples can be interleaved with the searches they bound."""

    def __init__(self, nbytes: int = 1 << 30) -> None:
        self.src = np.ones(nbytes // 4, np.float32)
        self.dst = np.empty_like(self.src)
        np.copyto(self.dst, self.src)  # fault every page in before timing

    def sample(self) -> float:
        """One copy's bandwidth, bytes per second."""
        t = time.perf_counter()
        np.copyto(self.dst, self.src)
        return self.src.nbytes / (time.perf_counter() - t)


def copy_bandwidth(nbytes: int = 1 << 30, repeats: int = 5) -> float:
    """numpy copy bandwidth: bytes of a large float32 array copied per second (median of `repeats`)."""
    bw = CopyBandwidth(nbytes)
    return statistics.median(bw.sample() for _ in range(repeats))


def peak_rss_gib() -> float:
    """This process' peak resident set size so far, GiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def p50_ms(search, queries: np.ndarray, k: int = 10) -> float:
    """Median single-query latency (ms) of `search(q, k)` over the queries, after one warm-up."""
    search(queries[:1], k)
    times = []
    for q in queries:
        t = time.perf_counter()
        search(q[None, :], k)
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def ground_truth(data: Path, n: int, emb: np.ndarray, queries: np.ndarray, k: int = 10) -> np.ndarray:
    """Exact top-k rows of the queries (cached next to the corpus)."""
    from clip_search.index import ExactIndex

    path = data / f"truth-{n}-{len(queries)}.npy"
    if path.exists():
        return np.load(path)
    t = time.perf_counter()
    rows = ExactIndex(emb).search(queries, k)[0]
    log.info("truth %d: %.0f s", n, time.perf_counter() - t)
    np.save(path, rows)
    return rows


def measure_exact(emb: np.ndarray, queries: np.ndarray, bandwidth: CopyBandwidth) -> dict:
    """Exact single-query p50 and its ratio to the copy-bandwidth bound, bandwidth sampled between the queries."""
    from clip_search.index import ExactIndex

    index = ExactIndex(emb)
    n, d = emb.shape
    bytes_read = n * d * (4 if index.matrix is not None else emb.dtype.itemsize)
    count = 20 if n <= 2_000_000 else 7
    index.search(queries[:1], 10)  # warm-up (and, for a memory-mapped store, the page cache)
    times, rates = [], []
    for q in queries[:count]:  # interleaved: bandwidth, query, bandwidth, query, ...
        rates.append(bandwidth.sample())
        t = time.perf_counter()
        index.search(q[None, :], 10)
        times.append(time.perf_counter() - t)
    p50, rate = 1e3 * statistics.median(times), statistics.median(rates)
    bound = 1e3 * bytes_read / rate
    return {"rows": n, "path": index.path, "p50_ms": p50, "bytes_per_query": bytes_read, "bound_ms": bound,
            "ratio": p50 / bound, "queries_timed": count, "copy_bandwidth": rate, "load": os.getloadavg()}


SEARCH_CHILD = """
import json, resource, statistics, sys, time
import numpy as np
sys.path.insert(0, {root!r})
from clip_search.index import AnnIndex, recall_at_k
from clip_search.index.ann import set_threads
set_threads({threads})
emb = np.load({corpus!r}, mmap_mode="r")
queries = np.load({queries!r})
truth = np.load({truth!r})
index = AnnIndex.load({folder!r}, {kind!r}, json.loads({params!r}), emb)
index.search(queries[:1], 10)
times, found = [], []
for q in queries:
    t = time.perf_counter()
    found.append(index.search(q[None, :], 10)[0][0])
    times.append(time.perf_counter() - t)
# VmHWM: this process' own peak RSS (ru_maxrss would carry the parent's peak across fork + exec); it counts the pages
# of the memory-mapped float16 store that the re-rank touched (RssFile) as well as the index itself (RssAnon)
status = {{line.split(":")[0]: int(line.split()[1]) for line in open("/proc/self/status") if line[:5] in ("VmHWM", "RssAn", "RssFi")}}
print(json.dumps({{"p50_ms": 1e3 * statistics.median(times), "p90_ms": 1e3 * float(np.percentile(times, 90)),
                  "recall_single": recall_at_k(np.array(found), truth),
                  "peak_rss_gib": status["VmHWM"] / 1024**2, "rss_anon_gib": status["RssAnon"] / 1024**2,
                  "rss_file_gib": status["RssFile"] / 1024**2}}))
"""


def measure_ann(data: Path, n: int, emb: np.ndarray, queries: np.ndarray, kind: str, threads: int) -> dict:
    """Build + tune an ANN index (build_index), save it, then time single queries and peak RSS in a fresh process."""
    from clip_search.index import build_index

    folder = data / f"index-{kind}-{n}"
    truth = ground_truth(data, n, emb, queries)
    index, info = build_index(emb, queries, kind=kind, recall_target=0.95, k=10, threads=threads, truth=truth)
    index.save(folder)
    half = len(queries) // 2
    np.save(data / "measure-queries.npy", queries[half:])
    np.save(data / "measure-truth.npy", truth[half:])
    child = SEARCH_CHILD.format(root=str(Path(__file__).resolve().parent.parent), threads=threads,
                                corpus=str(corpus(data, n)), queries=str(data / "measure-queries.npy"),
                                truth=str(data / "measure-truth.npy"), folder=str(folder), kind=kind,
                                params=json.dumps(info["params"]))
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True).stdout
    info.update(json.loads(out.strip().splitlines()[-1]), rows=n, load=os.getloadavg())
    info["disk_bytes"] = sum(f.stat().st_size for f in folder.iterdir())
    log.info("%s %d: %s", kind, n, info)
    return info


def run_all(args: argparse.Namespace, sizes: list[int]) -> None:
    """Every measurement, in one run, written to --data/results.json as it goes."""
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join(sys.argv), "cpu_flags": cpu_flags(),
                     "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(), "exact": [], "ann": []}
    out = args.data / args.results

    def save() -> None:
        out.write_text(json.dumps(results, indent=1, default=float))

    bandwidth = CopyBandwidth()
    results["copy_bandwidth"] = statistics.median(bandwidth.sample() for _ in range(5))
    log.info("copy bandwidth %.2f GB/s", results["copy_bandwidth"] / 1e9)
    kinds = [k for k in args.kinds.split(",") if k]
    for n in sizes:  # per size: exact, then the IVF kinds; HNSW (the slowest to build) last
        emb = np.load(corpus(args.data, n), mmap_mode="r")
        queries = text_queries(make_world(n), args.queries)
        truth = ground_truth(args.data, n, emb, queries)
        top = np.einsum("qd,qd->q", np.asarray(emb[truth[:50, 0]], np.float32), queries[:50])
        results.setdefault("top1_text_image_cosine", {})[n] = float(np.mean(top))
        results["exact"].append(measure_exact(emb, queries, bandwidth))
        log.info("exact %d: %s", n, results["exact"][-1])
        save()
        for kind in (k for k in kinds if k != "hnsw" and n >= args.ann_min_rows):
            results["ann"].append(measure_ann(args.data, n, emb, queries, kind, args.threads))
            results["peak_rss_gib_bench"] = peak_rss_gib()
            save()
    for n in sizes:
        if args.ann_min_rows <= n <= args.hnsw_max_rows and "hnsw" in kinds:
            emb = np.load(corpus(args.data, n), mmap_mode="r")
            results["ann"].append(measure_ann(args.data, n, emb, text_queries(make_world(n), args.queries), "hnsw", args.threads))
            save()
    log.info("results in %s", out)


def report(results: dict) -> str:
    """The measured figures as markdown tables (for bench/RESULTS.md)."""
    lines = [f"{results['date']}, `{results['command']}`, {results['cpus']} cores, CPU flags: {results['cpu_flags']}; "
             f"numpy copy bandwidth {results['copy_bandwidth'] / 1e9:.2f} GB/s (array bytes copied per second); "
             f"mean top-1 text→image cosine {results.get('top1_text_image_cosine')}", "",
             "| rows | exact path | bytes read / query | p50 (1 query, k=10) | copy bandwidth, interleaved | bandwidth bound "
             "| ratio | bar ≤ 2× | load average (1 min) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for e in results["exact"]:
        bar = "met" if e["ratio"] <= 2 else "**not met**"
        rate = e.get("copy_bandwidth", results["copy_bandwidth"])
        load = f"{e['load'][0]:.1f}" if e.get("load") else "—"
        lines.append(f"| {e['rows']:,} | {e['path']} | {e['bytes_per_query'] / 1e9:.3f} GB | {e['p50_ms']:.1f} ms | "
                     f"{rate / 1e9:.2f} GB/s | {e['bound_ms']:.1f} ms | {e['ratio']:.2f} | {bar} | {load} |")
    lines += ["", "| rows | kind | params | build | recall@10 (measured half; tuned half) | p50 / p90, 1 query | "
              "index bytes/vector | index on disk | peak RSS of the search process |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for a in results["ann"]:
        lines.append(f"| {a['rows']:,} | {a['kind']} | {a['params']} | {a['build_seconds']:.0f} s | {a['recall_at_10']:.4f}; "
                     f"{a['tuned_recall']:.4f} | {a['p50_ms']:.2f} / {a['p90_ms']:.2f} ms | {a['bytes_per_vector']:.0f} B | "
                     f"{a['disk_bytes'] / 1e6:.0f} MB | {a['peak_rss_gib']:.2f} GiB |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="25000,1000000,10000000")
    p.add_argument("--skip-10m", action="store_true", help="leave out sizes of 10M rows and more")
    p.add_argument("--data", type=Path, default=Path("/tmp/clip-search-scale"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--queries", type=int, default=1000, help="text queries: half tune the ANN knobs, half measure")
    p.add_argument("--kinds", default="ivfsq,ivfpq,hnsw", help="the ANN kinds measured (hnsw, ivfsq, ivfpq)")
    p.add_argument("--results", default="results.json", help="file name of the figures under --data")
    p.add_argument("--generate-only", action="store_true")
    p.add_argument("--report", action="store_true", help="print --data/results.json as markdown tables, measure nothing")
    p.add_argument("--ann-min-rows", type=int, default=1_000_000, help="ANN indexes are built from this size up")
    p.add_argument("--hnsw-max-rows", type=int, default=1_000_000, help="HNSW is built up to this size (after IVF-PQ)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Generate (or reuse) the corpora, then measure."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    if args.report:
        sys.stdout.write(report(json.loads((args.data / args.results).read_text())) + "\n")
        return
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.skip_10m:
        sizes = [s for s in sizes if s < 10_000_000]
    for n in sizes:
        corpus(args.data, n)
    if args.generate_only:
        return
    run_all(args, sizes)


if __name__ == "__main__":
    main()
