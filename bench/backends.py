"""Image-encoder backends side by side, and precompute's per-stage rates (PRODUCT.md section 4, items 1 and 2).

  python bench/backends.py speed [--images 64 --rounds 3 --extra]   model-only img/s per backend, interleaved
                                                                     (A B C D, A B C D, ...), plus cosine to torch
  python bench/backends.py stages [--images 192]                    read, decode+resize per core, model only per
                                                                     backend, end to end, naive loop; the bars
  python bench/backends.py spin [--images 160 --rounds 3]           end to end with ONNX Runtime's threads spinning
                                                                     and not, alternately
  python bench/backends.py quality [--scenes 2000]                  the demo world's `clip-search eval` per
                                                                     backend, as deltas to torch float32

Model: a random ViT-B/32 CLIP (bench/run.py's `vit_b32`), float32; 640×427 JPEGs (bench/run.py's `photos`);
batch 32. Exports go to a temporary cache (each run exports once, and times it). Machines and minutes differ
several-fold: compare figures of one run only. `--extra` also measures what is not offered as a backend:
torch.compile (inductor) and OpenVINO int8 weight compression (needs nncf).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from clip_search import config  # noqa: E402
from clip_search.cli import _quiet_libraries  # noqa: E402
from clip_search.clip_model import ClipEncoder  # noqa: E402
from clip_search.decode import decode_image  # noqa: E402
from clip_search.precompute import precompute  # noqa: E402
from clip_search.pixels import pixel_function  # noqa: E402
from clip_search.vision_backends import export_image_encoder, load_image_encoder, resolve_backend  # noqa: E402
from run import photos, vit_b32  # noqa: E402

BACKENDS = config.IMAGE_BACKENDS


def cpu_flags() -> str:
    """The CPU's AMX / AVX-512 / AVX2 flags, as NOTES.md asks every speed figure to record."""
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    import re

    return " ".join(sorted(set(re.findall(r"amx[a-z_0-9]*|avx512[a-z_0-9]*|avx2", out)))) or "none"


def header() -> str:
    """One line naming the machine and libraries."""
    import onnxruntime

    try:
        import openvino

        ov = openvino.__version__.split("-")[0]
    except ImportError:
        ov = "absent"
    return (f"machine: {platform.machine()}, {os.cpu_count()} cores, flags: {cpu_flags()}; torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), onnxruntime {onnxruntime.__version__}, openvino {ov}")


def encoders(clip: ClipEncoder, extra: bool) -> dict[str, Callable[[torch.Tensor], np.ndarray]]:
    """Backend name -> encode_pixels, every export made now (timed, then loaded from the cache)."""
    out: dict[str, Callable[[torch.Tensor], np.ndarray]] = {}
    for backend in BACKENDS:
        if backend != config.TORCH_BACKEND:
            start = time.perf_counter()
            export_image_encoder(clip, backend)
            made = time.perf_counter() - start
            start = time.perf_counter()
            encoder = load_image_encoder(clip, backend)
            print(f"  {backend}: export {made:.1f} s (once), load from cache {time.perf_counter() - start:.2f} s")
        else:
            encoder = clip
        out[backend] = encoder.encode_pixels
    if extra:
        out.update(_extra(clip))
    return out


def _extra(clip: ClipEncoder) -> dict[str, Callable[[torch.Tensor], np.ndarray]]:
    from clip_search.vectors import l2_normalise

    found: dict[str, Callable[[torch.Tensor], np.ndarray]] = {}
    vision = lambda x: clip.model.get_image_features(pixel_values=x).pooler_output  # noqa: E731
    start = time.perf_counter()
    compiled = torch.compile(vision)
    size = clip.model.config.vision_config.image_size
    with torch.inference_mode():
        compiled(torch.zeros(32, 3, size, size))
    print(f"  torch.compile: first call (compilation) {time.perf_counter() - start:.1f} s")

    def run_compiled(x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return l2_normalise(compiled(x).numpy())

    found["torch.compile"] = run_compiled
    try:
        import nncf
        import openvino as ov
    except ImportError:
        print("  openvino int8 (nncf weight compression): nncf not installed, skipped")
        return found
    onnx_dir = export_image_encoder(clip, config.ONNX_BACKEND)
    core = ov.Core()
    model = nncf.compress_weights(core.read_model(str(onnx_dir / "model.onnx")), mode=nncf.CompressWeightsMode.INT8_ASYM)
    compiled_ov = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": torch.get_num_threads(), "PERFORMANCE_HINT": "LATENCY"})
    request = compiled_ov.create_infer_request()
    found["openvino int8 (nncf)"] = lambda x: l2_normalise(np.array(request.infer({0: x.numpy()})[0]))
    return found


def model_only(fns: dict[str, Callable[[torch.Tensor], np.ndarray]], pixels: torch.Tensor, batch: int, rounds: int) -> dict[str, list[float]]:
    """img/s of each encoder over `pixels` in batches, interleaved: every backend once per round."""
    for fn in fns.values():
        fn(pixels[:batch])  # warm-up (first-shape kernels)
    rates: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for i in range(0, len(pixels), batch):
                fn(pixels[i : i + batch])
            rates[name].append(len(pixels) / (time.perf_counter() - start))
    return rates


def cmd_speed(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CLIP_SEARCH_CACHE"] = str(Path(tmp) / "cache")
        clip = ClipEncoder.load(str(vit_b32(Path(tmp) / "vit-b32")))
        folder = Path(tmp) / "photos"
        folder.mkdir()
        pixels = clip.preprocess([Image.open(p).convert("RGB") for p in photos(folder, args.images)])
        fns = encoders(clip, args.extra)
        reference = clip.encode_pixels(pixels)
        cosine = {name: float((fn(pixels) * reference).sum(1).min()) for name, fn in fns.items()}
        rates = model_only(fns, pixels, args.batch_size, args.rounds)
    base = statistics.median(rates[config.TORCH_BACKEND])
    print(f"\nmodel only, {args.images} images 224 px, batch {args.batch_size}, {args.rounds} interleaved rounds (img/s per round; median)")
    print("| backend | img/s (median) | rounds | min cosine to torch fp32 | / torch fp32 |")
    print("| --- | --- | --- | --- | --- |")
    for name, r in rates.items():
        print(f"| {name} | {statistics.median(r):.1f} | {' '.join(f'{x:.1f}' for x in r)} | {cosine[name]:.6f} | {statistics.median(r) / base:.2f} |")


def decode_rate(paths: list[Path], pixels: Callable[[Image.Image], object], draft: int | None) -> float:
    """img/s of decode + resize + normalise in this one process (what one decoding worker does)."""
    start = time.perf_counter()
    for p in paths:
        pixels(decode_image(p.read_bytes(), draft_size=draft, name=p.name))
    return len(paths) / (time.perf_counter() - start)


def cmd_stages(args: argparse.Namespace) -> None:
    default = resolve_backend(config.DEFAULT_IMAGE_BACKEND, "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CLIP_SEARCH_CACHE"] = str(Path(tmp) / "cache")
        model = vit_b32(Path(tmp) / "vit-b32")
        clip = ClipEncoder.load(str(model))
        folder = Path(tmp) / "photos"
        folder.mkdir()
        paths = photos(folder, args.images)
        subprocess.run(["sync"], check=False)
        start = time.perf_counter()
        total = sum(len(p.read_bytes()) for p in paths)
        read = len(paths) / (time.perf_counter() - start)
        torch.set_num_threads(1)  # a decoding worker runs with one thread (precompute's _init_worker)
        size = clip.processor.image_processor.size
        draft = size.get("shortest_edge") or size.get("height")
        decode = decode_rate(paths, pixel_function(clip.processor.image_processor), draft)  # what precompute's workers run
        processor = clip.processor.image_processor
        decode_processor = decode_rate(paths, lambda image: processor(images=image, return_tensors="pt"), draft)
        torch.set_num_threads(os.cpu_count() or 1)
        fns = encoders(clip, extra=False)
        pixels = clip.preprocess([Image.open(p).convert("RGB") for p in paths[: args.model_images]])
        models: dict[str, list[float]] = {name: [] for name in fns}
        ends: dict[str, list[float]] = {default: [], config.TORCH_BACKEND: []}
        for _ in range(args.rounds):  # interleaved: model only (every backend), then end to end, each round
            for name, r in model_only(fns, pixels, args.batch_size, 1).items():
                models[name] += r
            for backend in ends:
                report = precompute(str(folder), Path(tmp) / f"store-{backend}", model=str(model), text_model=None, batch_size=args.batch_size, progress=False, overwrite=True, backend=backend)
                ends[backend].append(report.images_per_second)
            print(f"  round: model only {', '.join(f'{n} {r[-1]:.2f}' for n, r in models.items())}; end to end {', '.join(f'{n} {r[-1]:.2f}' for n, r in ends.items())} img/s; load {os.getloadavg()[0]:.1f}", flush=True)
        rates = {name: statistics.median(r) for name, r in models.items()}
        start = time.perf_counter()
        with torch.inference_mode():
            for p in paths[: args.naive_images]:
                inputs = clip.processor(images=Image.open(p).convert("RGB"), return_tensors="pt")
                clip.model.get_image_features(**inputs)
        naive = args.naive_images / (time.perf_counter() - start)
    workers = max(1, (os.cpu_count() or 1) // 2)  # precompute's default decoding workers for a folder
    end = statistics.median(ends[default])
    ceiling = min(rates[default], decode * workers)
    print(f"\nstages, {args.images} JPEGs 640x427 ({total / len(paths) / 1e3:.0f} kB each), batch {args.batch_size}, default backend {default}, {workers} decoding worker(s)")
    print("| stage | img/s |")
    print("| --- | --- |")
    print(f"| read (file bytes, page cache) | {read:.0f} |")
    print(f"| decode + resize + normalise, one core (draft mode) | {decode:.1f} |")
    print(f"| the same through the transformers processor (before `clip_search.pixels`) | {decode_processor:.1f} |")
    print(f"| decode on the {workers} core(s) left to decoding | {decode * workers:.1f} |")
    for name, rate in rates.items():
        print(f"| model only, {name} | {rate:.1f} |")
    for name, r in ends.items():
        print(f"| end to end (precompute), {name} | {statistics.median(r):.1f} ({' '.join(f'{x:.1f}' for x in r)}) |")
    print(f"| naive loop (one image at a time, transformers, torch) | {naive:.1f} |")
    print(f"\nend to end ({default}) / min(model only {rates[default]:.1f}, decode {decode * workers:.1f}) = {end / ceiling:.3f} (bar >= 0.9)")
    print(f"end to end ({default}) / naive = {end / naive:.2f} (bar >= 2)")
    print(f"end to end ({default}) / end to end (torch) = {end / statistics.median(ends[config.TORCH_BACKEND]):.2f}")


def cmd_quality(args: argparse.Namespace) -> None:
    from clip_search.demo.evaluate import evaluate

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CLIP_SEARCH_CACHE"] = str(Path(tmp) / "cache")
        reports = {}
        for backend in BACKENDS:
            start = time.perf_counter()
            reports[backend] = evaluate(args.model, args.text_model, scenes=args.scenes, backend=backend).as_json()
            print(f"  eval with {backend}: {time.perf_counter() - start:.0f} s", flush=True)
    base = reports[config.TORCH_BACKEND]
    figures = [(f"P@{k} {lang}", ("precision_at", k, lang)) for k in base["precision_at"] for lang in base["precision_at"][k]]
    figures += [(f"zero-shot {kind}", ("zero_shot_accuracy", kind)) for kind in base["zero_shot_accuracy"]]

    def get(report: dict, where: tuple) -> float:
        for key in where:
            report = report[key]
        return float(report)

    print(f"\ndemo world eval ({args.scenes} scenes), delta to torch float32 per figure")
    print("| backend | figures | max abs delta | worst figure | within 0.01 |")
    print("| --- | --- | --- | --- | --- |")
    for backend, report in reports.items():
        deltas = {name: get(report, where) - get(base, where) for name, where in figures}
        worst = max(deltas, key=lambda n: abs(deltas[n]))
        print(f"| {backend} | {len(deltas)} | {abs(deltas[worst]):.4f} | {worst} ({deltas[worst]:+.4f}) | {'yes' if all(abs(d) <= 0.01 for d in deltas.values()) else 'NO'} |")
    if args.json:
        print(json.dumps(reports, indent=1))


def cmd_spin(args: argparse.Namespace) -> None:
    """precompute end to end with ORT's intra-op threads spinning and not, alternately (config.ORT_SPIN_THREADS)."""
    from clip_search import onnx_text

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CLIP_SEARCH_CACHE"] = str(Path(tmp) / "cache")
        model = vit_b32(Path(tmp) / "vit-b32")
        folder = Path(tmp) / "photos"
        folder.mkdir()
        photos(folder, args.images)
        rates: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.rounds):
            for spin in rates:
                onnx_text.ORT_SPIN_THREADS = spin  # read when each session is made
                report = precompute(str(folder), Path(tmp) / "store", model=str(model), text_model=None, batch_size=args.batch_size, progress=False, overwrite=True, backend=config.ONNX_INT8_BACKEND)
                rates[spin].append(report.images_per_second)
                print(f"  spinning {'on ' if spin else 'off'}: {rates[spin][-1]:.2f} img/s, load {os.getloadavg()[0]:.1f}", flush=True)
    on, off = (statistics.median(rates[k]) for k in (True, False))
    print(f"\nend to end, onnx-int8, {args.images} JPEGs: spinning {on:.2f} img/s, not spinning {off:.2f} img/s ({off / on:.2f}x)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("speed")
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=config.DEFAULT_BATCH_SIZE)
    p.add_argument("--extra", action="store_true", help="also torch.compile and OpenVINO int8 (nncf), measured only")
    p.set_defaults(func=cmd_speed)
    p = sub.add_parser("stages")
    p.add_argument("--images", type=int, default=192)
    p.add_argument("--model-images", type=int, default=64, help="images per model-only round")
    p.add_argument("--naive-images", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2, help="end-to-end runs per backend, interleaved")
    p.add_argument("--batch-size", type=int, default=config.DEFAULT_BATCH_SIZE)
    p.set_defaults(func=cmd_stages)
    p = sub.add_parser("spin")
    p.add_argument("--images", type=int, default=160)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=config.DEFAULT_BATCH_SIZE)
    p.set_defaults(func=cmd_spin)
    p = sub.add_parser("quality")
    p.add_argument("--model", default=str(config.DEMO_CLIP))
    p.add_argument("--text-model", default=str(config.DEMO_STUDENT))
    p.add_argument("--scenes", type=int, default=2000)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_quality)
    args = parser.parse_args()
    _quiet_libraries()
    print(header(), flush=True)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
