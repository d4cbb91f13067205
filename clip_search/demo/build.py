"""Assemble the demo world's pieces: the student's starting encoder, parallel captions, and the demo store.

Each piece is made by the same library functions users run (`distill`, `precompute`); this module only
prepares their inputs from generated scenes.
"""

from __future__ import annotations

import csv
import json
import random
import shutil
from pathlib import Path

from clip_search.config import RELEVANCE_NULL_TEXT
from clip_search.demo.captions import LANGUAGES, caption, demo_examples, full_caption, parallel_pairs
from clip_search.demo.elsewhere import parallel_elsewhere
from clip_search.demo.scenes import STORE_SEED, TRAIN_SEED, generate_scenes, render
from clip_search.parallel_data import ParallelPair, load_parallel
from clip_search.scratch import new_text_encoder, train_wordpiece_tokenizer
from clip_search.store import ExamplePrompt, write_examples

STUDENT_SEED = TRAIN_SEED + 7  # scenes for the student's data: disjoint from the CLIP's and from evaluation

DEMO_NOTICE = (
    "This is the built-in **demo world**: 600 generated scenes of shapes, a small CLIP trained on them on a CPU, "
    "and a multilingual text encoder distilled from it, all offline. Ask for shapes (circle, square, triangle, "
    "star, heart), colours, sizes, counts and positions, in English, German, French, Spanish, Russian or Chinese. "
    "To search your own photos: `clip-search precompute PHOTOS --out STORE`, then `clip-search serve STORE`."
)


def make_student_base(out: str | Path, *, scenes: int = 4000, vocab_size: int = 3000, hidden_size: int = 128, layers: int = 3, heads: int = 4, seed: int = STUDENT_SEED) -> Path:
    """A fresh small BERT with a WordPiece vocabulary trained on demo captions in every language."""
    rng = random.Random(seed)
    texts = [caption(s, lang, rng) for s in generate_scenes(scenes, seed) for lang in LANGUAGES]
    texts += [full_caption(s, lang, t) for s in generate_scenes(300, seed + 1) for lang in LANGUAGES for t in range(3)]
    tokenizer = train_wordpiece_tokenizer(texts, vocab_size=vocab_size, max_length=64)
    return new_text_encoder(tokenizer, out, hidden_size=hidden_size, layers=layers, heads=heads, seed=seed)


def write_parallel(out: str | Path, *, scenes: int = 6000, seed: int = STUDENT_SEED, elsewhere: bool = False) -> Path:
    """A TSV of (source, translation, lang) demo captions, English paired with itself too (as in the paper); with
    `elsewhere`, out-of-world phrases and their translations too (so that every language learns what matches no
    image)."""
    out = Path(out)
    pairs = parallel_pairs(generate_scenes(scenes, seed), LANGUAGES, random.Random(seed))
    if elsewhere:
        pairs += parallel_elsewhere(LANGUAGES, random.Random(seed + 1))
    with open(out, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(["source", "translation", "lang"])
        writer.writerows((english, translation, lang) for english, lang, translation in pairs)
    return out


NULL_PAIRS_PER_LANGUAGE = 200  # the empty text paired with itself: the relevance floor's text, learned like any other


# The student's second distillation (`realign_pairs`): fresh scenes, out-of-world phrases, the empty text.
REALIGN_SCENES = 3000
REALIGN_SEED = STUDENT_SEED + 2


def realign_pairs(folder: str | Path) -> list[ParallelPair]:
    """The data of the student's second distillation, which follows the demo CLIP's second stage: captions of
    `REALIGN_SCENES` new scenes, out-of-world phrases, and the empty text paired with itself in every language (a
    parallel file cannot hold an empty sentence: `load_parallel` skips it). The TSV is written into `folder`."""
    parallel = write_parallel(Path(folder) / "realign.tsv", scenes=REALIGN_SCENES, seed=REALIGN_SEED, elsewhere=True)
    null = [ParallelPair(RELEVANCE_NULL_TEXT, RELEVANCE_NULL_TEXT, lang) for lang in LANGUAGES for _ in range(NULL_PAIRS_PER_LANGUAGE)]
    return load_parallel(str(parallel)) + null


def write_store_images(folder: str | Path, *, scenes: int = 600, size: int = 128, seed: int = STORE_SEED) -> Path:
    """Render the demo store's scenes as PNG files, with an English caption per image in metadata.jsonl."""
    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    with open(folder / "metadata.jsonl", "w", encoding="utf-8") as f:
        for i, scene in enumerate(generate_scenes(scenes, seed)):
            name = f"scene-{i:04d}.png"
            render(scene, size).save(folder / name, optimize=True)
            f.write(json.dumps({"file_name": name, "caption": full_caption(scene, "en"), **{k: str(v) for k, v in scene.attributes().items()}}) + "\n")
    return folder


def write_demo_examples(store: str | Path) -> Path:
    """The demo store's examples.json: its example prompts in each of its languages, those languages, and its notice."""
    prompts = [ExamplePrompt(text, lang) for lang, text in demo_examples()]
    return write_examples(Path(store), prompts, DEMO_NOTICE, languages=LANGUAGES)
