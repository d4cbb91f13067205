"""Enrichment: a tiny random text classifier built offline labels a store's captions into two metadata columns,
usable in `where`, and a run killed with SIGKILL resumes to the columns an uninterrupted run gives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clip_search.engine import SearchEngine
from clip_search.enrich import enrich
from clip_search.errors import StoreError
from clip_search.precompute import precompute
from clip_search.store import EmbeddingStore
from tests.conftest import CORPUS, COLOURS, SHAPES, draw_photo

ROWS = 160  # enough chunks of 4 that the run is still going when the third is on disk


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer BERT sequence classifier with labels calm/busy and a WordPiece tokenizer, saved offline."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from clip_search.scratch import train_wordpiece_tokenizer

    tokenizer = train_wordpiece_tokenizer(CORPUS * 4, vocab_size=300)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                        max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id, id2label={0: "calm", 1: "busy"}, label2id={"calm": 0, "busy": 1})
    out = tmp_path_factory.mktemp("tiny-classifier")
    BertForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def captioned_store(tmp_path_factory: pytest.TempPathFactory, tiny_clip: Path) -> Path:
    folder = tmp_path_factory.mktemp("enrich-photos")
    with open(folder / "metadata.jsonl", "w", encoding="utf-8") as f:
        for i in range(ROWS):
            colour, shape = list(COLOURS)[i % 4], SHAPES[i % 2]
            draw_photo(colour, shape, 32 + i).save(folder / f"p{i:03d}.png")
            caption = None if i == 7 else f"{CORPUS[i % len(CORPUS)]} number {i}"
            f.write(json.dumps({"file_name": f"p{i:03d}.png", "caption": caption}) + "\n")
    out = tmp_path_factory.mktemp("enrich-stores") / "store"
    precompute(str(folder), out, model=str(tiny_clip), text_model=None, batch_size=8, num_workers=0, progress=False)
    return out


def copy(store: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(store, to)
    return to


def test_labels_and_scores_become_filterable_columns(captioned_store: Path, tiny_classifier: Path, tmp_path: Path) -> None:
    out = copy(captioned_store, tmp_path / "store")
    revision = EmbeddingStore.open(out).manifest.revision
    report = enrich(out, str(tiny_classifier), column="caption", name="mood", chunk_rows=8)
    store = EmbeddingStore.open(out)
    assert store.manifest.revision == revision  # rows and vectors unchanged: indexes stay valid
    labels, scores = store.metadata.column("mood").to_pylist(), store.metadata.column("mood_score").to_pylist()
    assert labels[7] is None and scores[7] is None  # no caption: no label
    assert {l for l in labels if l} <= {"calm", "busy"} and all(0.5 <= s <= 1 for s in scores if s is not None)
    assert sum(report.labels.values()) == ROWS - 1
    engine = SearchEngine.load(out)
    label = next(iter(report.labels))
    hits = engine.search("a red circle", where=[f"mood == {label}"], top_k=ROWS).hits
    assert len(hits) == report.labels[label] and {h.metadata["mood"] for h in hits} == {label}


def test_bad_column_and_protected_names_are_refused(captioned_store: Path, tiny_classifier: Path, tmp_path: Path) -> None:
    out = copy(captioned_store, tmp_path / "store")
    with pytest.raises(StoreError, match="no column 'nope'"):
        enrich(out, str(tiny_classifier), column="nope", name="mood")
    with pytest.raises(StoreError, match="cannot be replaced"):
        enrich(out, str(tiny_classifier), column="caption", name="id")


def run_enrich(store: Path, model: Path) -> list[str]:
    return [sys.executable, "-m", "clip_search.cli", "enrich", str(store), "--text-classifier", str(model), "--as", "mood", "--batch-size", "2", "--chunk-rows", "4"]


def test_killed_enrichment_resumes_to_the_uninterrupted_columns(captioned_store: Path, tiny_classifier: Path, tmp_path: Path) -> None:
    reference = copy(captioned_store, tmp_path / "reference")
    enrich(reference, str(tiny_classifier), column="caption", name="mood", batch_size=2, chunk_rows=4)
    out = copy(captioned_store, tmp_path / "killed")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    partial = out / ".enrich-mood.partial"
    victim = subprocess.Popen(run_enrich(out, tiny_classifier), env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (partial / "chunk-000002.parquet").exists():  # the kill lands after the third chunk is on disk
        assert victim.poll() is None and time.monotonic() < deadline, "enrich ended before it could be killed"
        time.sleep(0.001)
    os.killpg(victim.pid, signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    assert "mood" not in EmbeddingStore.open(out).columns
    finished = subprocess.run(run_enrich(out, tiny_classifier), env=env, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert "resumed after" in finished.stdout
    got, want = EmbeddingStore.open(out).metadata, EmbeddingStore.open(reference).metadata
    assert got.column("mood").to_pylist() == want.column("mood").to_pylist()
    assert got.column("mood_score").to_pylist() == want.column("mood_score").to_pylist()
    assert not partial.exists()
