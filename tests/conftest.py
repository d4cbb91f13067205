"""Shared fixtures: tiny real models built offline, a folder of generated photos, and a store built from it."""

from __future__ import annotations

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# ONNX exports of the query encoders: kept between runs (keyed by the models' files), never in the user's cache.
os.environ.setdefault("CLIP_SEARCH_CACHE", os.path.join(tempfile.gettempdir(), "clip-search-test-cache"))

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw



COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (30, 60, 220), "yellow": (240, 220, 40)}
SHAPES = ("circle", "square")
CORPUS = [f"a {c} {s}" for c in COLOURS for s in SHAPES] + [
    "ein roter Kreis", "un cercle rouge", "красный круг", "红色的圆形", "a photo of a cat", "two blue squares on the left",
]


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random CLIP (hidden 32, 2 layers, 16-d projection) with a BPE tokenizer trained by `tokenizers`."""
    from clip_search.scratch import new_clip, save_clip, train_clip_tokenizer

    out = tmp_path_factory.mktemp("tiny-clip")
    model, processor = new_clip(train_clip_tokenizer(CORPUS * 4, vocab_size=400), image_size=32, projection_dim=16)
    return save_clip(model, processor, out)


@pytest.fixture(scope="session")
def tiny_student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny multilingual student in the sentence-transformers layout, mapping to the tiny CLIP's 16 dimensions."""
    from clip_search.scratch import new_text_encoder, train_wordpiece_tokenizer
    from clip_search.text_student import assemble_student

    base = new_text_encoder(train_wordpiece_tokenizer(CORPUS * 4, vocab_size=300), tmp_path_factory.mktemp("tiny-bert"))
    out = tmp_path_factory.mktemp("tiny-student")
    assemble_student(str(base), 16).save(str(out))
    return out


def draw_photo(colour: str, shape: str, size: int = 48) -> Image.Image:
    """A generated 'photo': one coloured shape on grey."""
    img = Image.new("RGB", (size, size), (128, 128, 128))
    draw = ImageDraw.Draw(img)
    box = (size // 6, size // 6, size - size // 6, size - size // 6)
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=COLOURS[colour])
    return img


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A nested folder of 16 generated JPEG/PNG photos (two of each colour × shape)."""
    root = tmp_path_factory.mktemp("photos")
    for colour in COLOURS:
        for shape in SHAPES:
            for k in range(2):
                sub, ext = (root / "jpg", "jpg") if k == 0 else (root / "png" / "nested", "png")
                sub.mkdir(parents=True, exist_ok=True)
                draw_photo(colour, shape, 40 + 8 * k).save(sub / f"{colour}-{shape}.{ext}")
    return root


@pytest.fixture(scope="session")
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def folder_store(tmp_path_factory: pytest.TempPathFactory, tiny_clip: Path, tiny_student: Path, photo_dir: Path) -> Path:
    """A store of `photo_dir` built by precompute with the tiny CLIP, the tiny student recorded for queries."""
    from clip_search.precompute import precompute

    out = tmp_path_factory.mktemp("stores") / "photos"
    precompute(str(photo_dir), out, model=str(tiny_clip), text_model=str(tiny_student), batch_size=4, num_workers=0, progress=False)
    return out


def copy_store(source: Path, out: Path) -> Path:
    """A copy of a store whose model references are absolute, so it opens wherever it is put."""
    import shutil
    from dataclasses import replace

    from clip_search.store import EmbeddingStore, write_manifest

    store = EmbeddingStore.open(source)
    shutil.copytree(source, out, ignore=shutil.ignore_patterns("images"))
    manifest = store.manifest
    root = store.source_folder
    manifest = replace(manifest, model=replace(manifest.model, id=store.model_path()), text_model=store.text_model_path(), source=replace(manifest.source, root=str(root) if root else manifest.source.root))
    write_manifest(out, manifest)
    return out


@pytest.fixture(scope="session")
def folder_store_labels(folder_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A labels CSV for `folder_store` (what `train-classifier --labels` reads): colour and shape from each photo's
    file name, and a multi-label `tags` column ("warm|round")."""
    import csv

    from clip_search.store import EmbeddingStore

    store = EmbeddingStore.open(folder_store)
    out = tmp_path_factory.mktemp("labels") / "labels.csv"
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "colour", "shape", "tags"])
        writer.writeheader()
        for meta in store.rows(range(len(store))):
            colour, shape = Path(meta["id"]).stem.split("-")
            tags = "|".join(t for t, on in (("warm", colour in ("red", "yellow")), ("round", shape == "circle")) if on)
            writer.writerow({"id": meta["id"], "colour": colour, "shape": shape, "tags": tags})
    return out
