"""Cold start of a text search: each case a fresh Python process, timed wall to wall, interleaved round by round.

(A) `import torch, transformers`: the baseline; (B) `import gradio, torch, transformers`;
(C) the work of a CLI search on the ONNX path: OnnxTextEncoder for the demo student + open the demo store +
encode one query + exact top-10 with numpy (and a check that torch/transformers/sentence_transformers stayed out);
(D) the same with the torch StudentTextEncoder. With --vit-b32 also (E) ONNX / (F) torch ClipEncoder for the text
tower of a random ViT-B/32 CLIP (the size of openai/clip-vit-base-patch32): load + encode one query, no store.
The bar: C ≤ 1.5 × A. The export itself (once per model) is timed separately.

Usage: python bench/cold_start.py [--rounds 7] [--cache-dir DIR] [--vit-b32]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STUDENT = ROOT / "models" / "demo-mclip"
STORE = ROOT / "embeddings" / "demo"
QUERY = "ein rotes Auto in der Stadt"
HEAVY = ("torch", "transformers", "sentence_transformers")

SEARCH = """
import sys
import numpy as np
from clip_search.store import EmbeddingStore
{load}
store = EmbeddingStore.open({store!r})
query = encoder.encode_texts([{query!r}])[0]
scores = np.asarray(store.embeddings, dtype=np.float32) @ query
top = np.argpartition(-scores, 10)[:10]
top = top[np.argsort(-scores[top], kind="stable")]
rows = store.rows(top)
assert len(rows) == 10
{check}
"""
LOAD_ONNX = """
from clip_search.onnx_text import OnnxTextEncoder, cached_export
folder = cached_export({model!r}, {kind!r}, cache_dir={cache!r})
assert folder is not None, "no export"
encoder = OnnxTextEncoder.load(folder, {model!r})
"""
LOAD_TORCH_STUDENT = """
from clip_search.text_student import StudentTextEncoder
encoder = StudentTextEncoder.load({model!r}, device="cpu")
"""
LOAD_TORCH_CLIP = """
from clip_search.clip_model import ClipEncoder
encoder = ClipEncoder.load({model!r}, device="cpu", dtype="float32")
"""
NO_HEAVY = f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\nassert not heavy, heavy"
EXPORT = """
from clip_search.onnx_export import export_text_encoder
print(export_text_encoder({model!r}, {kind!r}, cache_dir={cache!r}))
"""
VIT_B32 = """
import torch
from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor
from clip_search.scratch import train_clip_tokenizer
tokenizer = train_clip_tokenizer(["a photo of a dog on the beach", "a red car in the city", "mountains under snow"] * 20, vocab_size=400)
ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
config = CLIPConfig(text_config=dict(vocab_size=49408, **ids), vision_config=dict(patch_size=32), projection_dim=512)
torch.manual_seed(0)
CLIPModel(config).save_pretrained({out!r})
CLIPProcessor(image_processor=CLIPImageProcessorPil(), tokenizer=tokenizer).save_pretrained({out!r})
"""


def run(code: str, env: dict[str, str]) -> float:
    """Wall seconds of `python -c code` in a fresh process; a failure stops the benchmark with its stderr."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"benchmark case failed:\n{code}\n{done.stderr[-3000:]}")
    return took


def cpu_flags() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return "unknown"
    model = re.search(r"Model name:\s*(.+)", text)
    flags = sorted(set(re.findall(r"amx[a-z_0-9]*|avx512[a-z_0-9]*|avx2", text)))
    return f"{model.group(1).strip() if model else '?'}; {' '.join(flags) or 'no avx2/avx512/amx'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="rounds of A B C D ... (each a fresh process)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="export cache (default: a temporary folder)")
    parser.add_argument("--vit-b32", action="store_true", help="also time the text tower of a random ViT-B/32 CLIP (E, F)")
    args = parser.parse_args()

    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", HF_HUB_DISABLE_TELEMETRY="1")
    work = Path(tempfile.mkdtemp(prefix="cold-start-"))
    try:
        measure(args, env, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(args: argparse.Namespace, env: dict[str, str], work: Path) -> None:
    """Export once, then time every case `args.rounds` times, interleaved, and print the markdown table."""
    cache = str(args.cache_dir or work / "cache")
    student = str(STUDENT)

    cases = {
        "A": ("`python -c \"import torch, transformers\"`", "import torch, transformers"),
        "B": ("`python -c \"import gradio, torch, transformers\"`", "import gradio, torch, transformers"),
        "C": (
            "ONNX demo student + open demo store + encode 1 query + exact top-10 (numpy)",
            SEARCH.format(load=LOAD_ONNX.format(model=student, kind="student", cache=cache), store=str(STORE), query=QUERY, check=NO_HEAVY),
        ),
        "D": (
            "the same with torch `StudentTextEncoder`",
            SEARCH.format(load=LOAD_TORCH_STUDENT.format(model=student), store=str(STORE), query=QUERY, check=""),
        ),
    }
    exports = {"demo student": run(EXPORT.format(model=student, kind="student", cache=cache), env)}
    if args.vit_b32:
        vit = str(work / "vit-b32")
        run(VIT_B32.format(out=vit), env)
        exports["ViT-B/32 text tower"] = run(EXPORT.format(model=vit, kind="clip-text", cache=cache), env)
        encode = f"encoder.encode_texts([{QUERY!r}])\n"
        cases["E"] = (
            "ONNX text tower of a random ViT-B/32 CLIP: load + encode 1 query",
            "import sys\n" + LOAD_ONNX.format(model=vit, kind="clip-text", cache=cache) + encode + NO_HEAVY,
        )
        cases["F"] = ("the same with torch `ClipEncoder`", LOAD_TORCH_CLIP.format(model=vit) + encode)

    times: dict[str, list[float]] = {name: [] for name in cases}
    for r in range(args.rounds):
        names = list(cases)
        names = names[r % len(names) :] + names[: r % len(names)]  # rotate the order: no case always runs first
        for name in names:
            times[name].append(run(cases[name][1], env))
        print(f"round {r + 1}/{args.rounds}: " + "  ".join(f"{n} {times[n][-1]:.2f}s" for n in cases), file=sys.stderr)

    p50 = {name: statistics.median(t) for name, t in times.items()}
    date = datetime.date.today().isoformat()
    print(f"{date}, Python {platform.python_version()}, {os.cpu_count()} CPUs ({cpu_flags()}), {args.rounds} rounds, interleaved.\n")
    print("| case | what runs in the fresh process | p50 | min | max | p50 / A p50 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, (what, _) in cases.items():
        t = times[name]
        print(f"| {name} | {what} | {p50[name]:.2f} s | {min(t):.2f} s | {max(t):.2f} s | {p50[name] / p50['A']:.2f} |")
    print()
    for name, took in exports.items():
        print(f"- one-time export of the {name} (torch import + load + export + verify, fresh process): {took:.1f} s")


if __name__ == "__main__":
    main()
