"""The store contract: round trip, float16 on disk, memory mapping, and a clear error for every inconsistency."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from clip_search.clip_model import l2_normalise
from clip_search.errors import StoreError
from clip_search.store import EmbeddingStore, build_manifest, read_jsonl, write_store


def make_store(path: Path, n: int = 5, dim: int = 8, **overrides) -> Path:
    emb = l2_normalise(np.random.default_rng(0).normal(size=(n, dim)))
    meta = pa.table({"id": [f"img{i}" for i in range(n)], "path": [f"img{i}.jpg" for i in range(n)]})
    skipped = [{"index": n, "id": "bad.jpg", "ref": "bad.jpg", "reason": "not an image"}]
    manifest = build_manifest(model_id="some/clip", model_revision=None, model_commit=None, dim=dim, count=n, source={"type": "folder", "root": "/photos"}, skipped=skipped, **overrides)
    return write_store(path, emb, meta, manifest, skipped)


def test_round_trip_keeps_order_dtype_and_memory_maps(tmp_path: Path) -> None:
    root = make_store(tmp_path / "s", n=5, dim=8)
    store = EmbeddingStore.open(root)
    assert len(store) == 5 and store.dim == 8
    assert store.embeddings.dtype == np.float16
    assert isinstance(store.embeddings, np.memmap)
    assert store.matrix.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(store.matrix, axis=1), 1, atol=1e-3)
    assert [r["id"] for r in store.rows([3, 0])] == ["img3", "img0"]
    assert store.manifest["normalised"] is True and store.manifest["skipped"] == {"count": 1, "reasons": {"not an image": 1}}
    assert read_jsonl(root / "skipped.jsonl")[0]["reason"] == "not an image"
    assert store.image_ref(store.rows([1])[0]) == "/photos/img1.jpg"


def test_existing_store_is_not_replaced_without_overwrite(tmp_path: Path) -> None:
    root = make_store(tmp_path / "s", n=5)
    with pytest.raises(StoreError, match="already holds a store"):
        make_store(root, n=3)
    assert len(EmbeddingStore.open(root)) == 5


def test_overwrite_swaps_the_whole_store(tmp_path: Path) -> None:
    root = make_store(tmp_path / "s", n=5)
    emb = l2_normalise(np.ones((2, 8)))
    meta = pa.table({"id": ["a", "b"], "url": ["http://x/a", "http://x/b"]})
    manifest = build_manifest(model_id="m", model_revision=None, model_commit=None, dim=8, count=2, source={}, skipped=[])
    write_store(root, emb, meta, manifest, overwrite=True)
    assert len(EmbeddingStore.open(root)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no temporary or old folders left


def test_store_written_into_a_folder_keeps_its_other_files(tmp_path: Path) -> None:
    (tmp_path / "s" / "images").mkdir(parents=True)
    (tmp_path / "s" / "images" / "a.png").write_bytes(b"png")
    make_store(tmp_path / "s", n=3)
    assert len(EmbeddingStore.open(tmp_path / "s")) == 3
    assert (tmp_path / "s" / "images" / "a.png").read_bytes() == b"png"


def _edit_manifest(root: Path, **changes) -> None:
    manifest = json.loads((root / "manifest.json").read_text())
    manifest.update(changes)
    (root / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda r: (r / "manifest.json").unlink(), "manifest.json not found"),
        (lambda r: (r / "manifest.json").write_text("{not json"), "cannot read .*manifest.json"),
        (lambda r: _edit_manifest(r, count=6), r"embeddings.npy has shape \(5, 8\) but manifest.json says count=6"),
        (lambda r: _edit_manifest(r, dim=4), "dim=4"),
        (lambda r: _edit_manifest(r, format_version=99), "format_version 99"),
        (lambda r: _edit_manifest(r, dtype="float32"), "holds float16 but manifest.json says dtype=float32"),
        (lambda r: (r / "embeddings.npy").unlink(), "embeddings.npy not found"),
        (lambda r: (r / "metadata.parquet").write_bytes(b"garbage"), "cannot read .*metadata.parquet"),
        (lambda r: np.save(r / "embeddings.npy", np.zeros((4, 8), np.float16)), r"shape \(4, 8\)"),
    ],
)
def test_damaged_store_is_a_clear_error(tmp_path: Path, damage, message: str) -> None:
    root = make_store(tmp_path / "s")
    damage(root)
    with pytest.raises(StoreError, match=message):
        EmbeddingStore.open(root)


def test_metadata_rows_must_match_embeddings(tmp_path: Path) -> None:
    root = make_store(tmp_path / "s", n=5)
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": ["a", "b"], "path": ["a", "b"]}), root / "metadata.parquet")
    with pytest.raises(StoreError, match="metadata.parquet has 2 rows but manifest.json says count=5"):
        EmbeddingStore.open(root)


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    root = make_store(tmp_path / "s", n=2)
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": ["a", "a"], "path": ["a", "b"]}), root / "metadata.parquet")
    with pytest.raises(StoreError, match="duplicates"):
        EmbeddingStore.open(root)


def test_missing_store_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=f"no embedding store at {tmp_path / 'nope'}.*does not exist"):
        EmbeddingStore.open(tmp_path / "nope")


def test_encoder_dimension_is_checked(tmp_path: Path) -> None:
    store = EmbeddingStore.open(make_store(tmp_path / "s", dim=8))
    store.check_encoder(8, "x")
    with pytest.raises(StoreError, match="text model y gives 16-dimensional embeddings but the store .* holds 8-dimensional ones made by some/clip"):
        store.check_encoder(16, "text model y")
