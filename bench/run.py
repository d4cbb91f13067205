"""Performance ratios on this machine, each against a baseline measured in the same run (PRODUCT.md section 4).

Model: a randomly initialised ViT-B/32 CLIP (the default CLIPConfig: the compute of openai/clip-vit-base-patch32,
which cannot be downloaded here). Usage: python bench/run.py [--images N] [--store-rows N]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from clip_search.cli import _quiet_libraries  # noqa: E402
from clip_search.clip_model import ClipEncoder
from clip_search.vectors import l2_normalise  # noqa: E402
from clip_search.engine import SearchEngine  # noqa: E402
from clip_search.precompute import precompute  # noqa: E402
from clip_search.search import top_k  # noqa: E402
from clip_search.store import Manifest, ModelRef, SourceInfo, write_store  # noqa: E402


def vit_b32(out: Path) -> Path:
    """A random ViT-B/32 CLIP with a small trained tokenizer, saved like a hub checkpoint."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    from clip_search.scratch import train_clip_tokenizer

    tokenizer = train_clip_tokenizer(["a photo of a dog on the beach", "a red car in the city", "mountains under snow"] * 20, vocab_size=400)
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    config = CLIPConfig(text_config=dict(vocab_size=len(tokenizer), **ids), vision_config=dict(patch_size=32), projection_dim=512)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(out)
    CLIPProcessor(image_processor=CLIPImageProcessorPil(), tokenizer=tokenizer).save_pretrained(out)
    return out


def photos(folder: Path, n: int) -> list[Path]:
    """N JPEG 'photos' of 640×427 (the size of an Unsplash ?w=640 download) with texture, so decoding costs what it does."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        base = np.linspace(0, 255, 640, dtype=np.float32)[None, :, None] * rng.uniform(0.2, 1.0, size=(1, 1, 3))
        pixels = np.clip(base + rng.normal(0, 40, size=(427, 640, 3)), 0, 255).astype(np.uint8)
        path = folder / f"photo-{i:04d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def bench_precompute(model: Path, folder: Path, paths: list[Path], batch_size: int) -> dict[str, float]:
    """End-to-end precompute vs the model alone vs a naive one-image-at-a-time transformers loop (images/s)."""
    clip = ClipEncoder.load(str(model))
    pixels = clip.preprocess([Image.open(p).convert("RGB") for p in paths])
    clip.encode_pixels(pixels[:batch_size])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(paths), batch_size):
        clip.encode_pixels(pixels[i : i + batch_size])
    model_only = len(paths) / (time.perf_counter() - start)

    with tempfile.TemporaryDirectory() as tmp:
        report = precompute(str(folder), Path(tmp) / "store", model=str(model), text_model=None, batch_size=batch_size, progress=False)
    end_to_end = report.images_per_second

    start = time.perf_counter()
    with torch.inference_mode():
        for p in paths:
            inputs = clip.processor(images=Image.open(p).convert("RGB"), return_tensors="pt")
            clip.model.get_image_features(**inputs)
    naive = len(paths) / (time.perf_counter() - start)
    return {"model_only": model_only, "end_to_end": end_to_end, "naive": naive}


def bench_query(model: Path, rows: int, repeats: int) -> dict[str, float]:
    """Query p50 (text encode + search + classify 10 results on 3 labels) vs the text encoder alone (ms)."""
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        emb = l2_normalise(rng.normal(size=(rows, 512)).astype(np.float32))
        meta = pa.table({"id": [str(i) for i in range(rows)], "url": [f"https://example.org/{i}.jpg" for i in range(rows)]})
        write_store(store, emb, meta, (), Manifest(ModelRef(str(model)), 512, rows, SourceInfo("bench", rows)))
        engine = SearchEngine.load(store)
        labels = ["dog", "cat", "car"]
        engine.search("warm up", labels=labels)
        queries = [f"a photo of a dog number {i}" for i in range(repeats)]
        encode, full = [], []
        for q in queries:
            engine.encode_text(q)  # the first sight of a token length builds oneDNN kernels: time both on equal terms
            t = time.perf_counter()
            engine.encode_text(q)
            encode.append(time.perf_counter() - t)
            t = time.perf_counter()
            engine.search(q, top_k=10, labels=labels)
            full.append(time.perf_counter() - t)
        matrix = engine.store.vectors(range(len(engine.store)))
        search = []
        for q in queries[:20]:
            vec = engine.encode_text(q)
            t = time.perf_counter()
            top_k(matrix, vec, 10)
            search.append(time.perf_counter() - t)
    return {"text_encode_p50_ms": 1e3 * statistics.median(encode), "query_p50_ms": 1e3 * statistics.median(full), "search_only_p50_ms": 1e3 * statistics.median(search)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--store-rows", type=int, default=25_000)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    _quiet_libraries()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        model = vit_b32(Path(tmp) / "vit-b32")
        folder = Path(tmp) / "photos"
        folder.mkdir()
        paths = photos(folder, args.images)
        p = bench_precompute(model, folder, paths, args.batch_size)
        print(f"precompute, {args.images} JPEGs 640x427, batch {args.batch_size}: model only {p['model_only']:.1f} img/s, "
              f"end to end {p['end_to_end']:.1f} img/s, naive loop {p['naive']:.1f} img/s")
        print(f"  end-to-end / model-only = {p['end_to_end'] / p['model_only']:.2f} (bar >= 0.9); end-to-end / naive = {p['end_to_end'] / p['naive']:.2f} (bar >= 2)")
        q = bench_query(model, args.store_rows, args.repeats)
        print(f"query at {args.store_rows} rows: text encode p50 {q['text_encode_p50_ms']:.1f} ms, full query p50 {q['query_p50_ms']:.1f} ms, "
              f"search alone p50 {q['search_only_p50_ms']:.2f} ms")
        print(f"  query / text encode = {q['query_p50_ms'] / q['text_encode_p50_ms']:.2f} (bar < 2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
