"""The store contract: typed manifest round trip, float16 on disk, memory mapping, rows by number, where each row's
image is, and a one-line error for every inconsistency."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clip_search.errors import StoreError
from clip_search.store import (
    EmbeddingStore,
    ImageRef,
    IndexInfo,
    Manifest,
    ModelRef,
    SourceInfo,
    portable_ref,
    read_examples,
    read_jsonl,
    read_manifest,
    resolve_ref,
    skip_summary,
    write_examples,
    write_store,
)
from clip_search.vectors import l2_normalise

SKIPPED = [{"index": 5, "id": "bad.jpg", "ref": "bad.jpg", "reason": "not an image"}]


def manifest_for(n: int, dim: int, **changes) -> Manifest:
    count, reasons = skip_summary(SKIPPED)
    base = Manifest(ModelRef("some/clip"), dim, n, SourceInfo("folder", n + 1, root="/photos"), skipped_count=count, skipped_reasons=reasons)
    return replace(base, **changes)


def make_store(path: Path, n: int = 5, dim: int = 8, overwrite: bool = False, **changes) -> Path:
    emb = l2_normalise(np.random.default_rng(0).normal(size=(n, dim)))
    meta = pa.table({"id": [f"img{i}" for i in range(n)], "path": [f"img{i}.jpg" for i in range(n)]})
    return write_store(path, emb, meta, SKIPPED, manifest_for(n, dim, **changes), overwrite=overwrite)


def test_round_trip_keeps_order_dtype_and_memory_maps(tmp_path: Path) -> None:
    root = make_store(tmp_path / "s", n=5, dim=8)
    store = EmbeddingStore.open(root)
    assert len(store) == 5 and store.dim == 8
    assert store.embeddings.dtype == np.float16 and isinstance(store.embeddings, np.memmap)
    assert store.vectors([0, 4]).dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(store.vectors(range(5)), axis=1), 1, atol=1e-3)
    assert [r["id"] for r in store.rows([3, 0])] == ["img3", "img0"]
    assert store.manifest.normalised is True and (store.manifest.skipped_count, store.manifest.skipped_reasons) == (1, {"not an image": 1})
    assert read_jsonl(root / "skipped.jsonl") == SKIPPED
    assert store.image_ref(store.rows([1])[0]) == ImageRef(file=Path("/photos/img1.jpg"))
    assert store.source_folder == Path("/photos")


def test_manifest_round_trips_every_field(tmp_path: Path) -> None:
    index = IndexInfo("hnsw", ("index.faiss",), {"M": 32, "efSearch": 64}, "abc", 5, 1.5, 0.97, 80.0, "2026-12-01T00:00:00+00:00")
    root = make_store(tmp_path / "s", text_model="../student", logit_scale=100.0, index=index)
    manifest = read_manifest(root / "manifest.json")
    assert manifest == manifest_for(5, 8, text_model="../student", logit_scale=100.0, index=index, revision=manifest.revision, created=manifest.created)
    assert len(manifest.revision) == 32 and manifest.revision != make_store(tmp_path / "t").name


def test_every_write_gets_a_new_revision(tmp_path: Path) -> None:
    first = EmbeddingStore.open(make_store(tmp_path / "s")).manifest.revision
    second = EmbeddingStore.open(make_store(tmp_path / "s", overwrite=True)).manifest.revision
    assert first != second


def test_version_1_stores_still_open(tmp_path: Path) -> None:
    root = make_store(tmp_path / "s")
    raw = json.loads((root / "manifest.json").read_text())
    for key in ("revision", "index"):
        raw.pop(key)
    raw["format_version"] = 1
    (root / "manifest.json").write_text(json.dumps(raw))
    store = EmbeddingStore.open(root)
    assert store.manifest.revision.startswith("v1-") and store.manifest.index is None


def test_existing_store_is_not_replaced_without_overwrite(tmp_path: Path) -> None:
    root = make_store(tmp_path / "s", n=5)
    with pytest.raises(StoreError, match="already holds a store; allow overwrite"):
        make_store(root, n=3)
    assert len(EmbeddingStore.open(root)) == 5


def test_overwrite_swaps_the_whole_store(tmp_path: Path) -> None:
    root = make_store(tmp_path / "s", n=5)
    meta = pa.table({"id": ["a", "b"], "url": ["http://x/a", "http://x/b"]})
    write_store(root, l2_normalise(np.ones((2, 8))), meta, (), manifest_for(2, 8), overwrite=True)
    store = EmbeddingStore.open(root)
    assert len(store) == 2 and store.image_ref(store.rows([1])[0]) == ImageRef(url="http://x/b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no temporary or old folders left


def test_parts_are_joined_in_order(tmp_path: Path) -> None:
    vectors = l2_normalise(np.random.default_rng(1).normal(size=(7, 4)))
    tables = [pa.table({"id": ["a", "b", "c"], "path": ["a", "b", "c"]}), pa.table({"id": pa.array([], pa.string())}), pa.table({"id": ["d", "e", "f", "g"], "path": list("defg"), "caption": ["x"] * 4})]
    root = write_store(tmp_path / "s", [vectors[:3], np.zeros((0, 4)), vectors[3:]], tables, (), manifest_for(7, 4))
    store = EmbeddingStore.open(root)
    np.testing.assert_array_equal(store.embeddings, vectors.astype(np.float16))
    assert [r["id"] for r in store.rows(range(7))] == list("abcdefg") and store.rows([0])[0]["caption"] is None


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


def _rows(root: Path, rows: np.ndarray) -> None:
    np.save(root / "embeddings.npy", rows.astype(np.float16))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda r: (r / "manifest.json").unlink(), "manifest.json not found"),
        (lambda r: (r / "manifest.json").write_text("{not json"), "cannot read .*manifest.json"),
        (lambda r: (r / "manifest.json").write_text("[1, 2]"), "manifest.json is not a JSON object"),
        (lambda r: _edit_manifest(r, count=6), r"embeddings.npy has shape \(5, 8\) but manifest.json says count=6"),
        (lambda r: _edit_manifest(r, count="many"), "field 'count' must be a non-negative integer, got \"many\""),
        (lambda r: _edit_manifest(r, count=True), "field 'count' must be a non-negative integer"),
        (lambda r: _edit_manifest(r, dim=4), "dim=4"),
        (lambda r: _edit_manifest(r, dim=-1), "field 'dim' must be a positive integer"),
        (lambda r: _edit_manifest(r, model="x"), "field 'model' must be an object"),
        (lambda r: _edit_manifest(r, model={"revision": None}), "required field 'model.id' is missing"),
        (lambda r: _edit_manifest(r, logit_scale="big"), "field 'logit_scale' must be a number or null"),
        (lambda r: _edit_manifest(r, normalised=False), "field 'normalised' must be true"),
        (lambda r: _edit_manifest(r, source={"type": "folder", "root": 3}), "field 'source.root' must be a string or null"),
        (lambda r: _edit_manifest(r, skipped={"count": -1}), "field 'skipped.count' must be a non-negative integer"),
        (lambda r: _edit_manifest(r, index={"kind": "hnsw"}), "required field 'index.files' is missing"),
        (lambda r: _edit_manifest(r, index={"kind": "hnsw", "files": ["../../etc/passwd"]}), "field 'index.files' must be a list of file names"),
        (lambda r: _edit_manifest(r, format_version=99), "format_version 99"),
        (lambda r: _edit_manifest(r, dtype="float32"), "holds float16 but manifest.json says dtype=float32"),
        (lambda r: _edit_manifest(r, dtype="int8"), "field 'dtype' must be 'float16' or 'float32'"),
        (lambda r: (r / "embeddings.npy").unlink(), "embeddings.npy not found"),
        (lambda r: (r / "metadata.parquet").write_bytes(b"garbage"), "cannot read .*metadata.parquet"),
        (lambda r: np.save(r / "embeddings.npy", np.zeros((4, 8), np.float16)), r"shape \(4, 8\)"),
        (lambda r: _rows(r, np.vstack([l2_normalise(np.ones((3, 8))), np.full((1, 8), np.nan), l2_normalise(np.ones((1, 8)))])), "embeddings.npy: row 3 holds NaN or infinity"),
        (lambda r: _rows(r, np.vstack([l2_normalise(np.ones((1, 8))), np.zeros((4, 8))])), "embeddings.npy: row 1 has length 0.0000, not 1"),
        (lambda r: _rows(r, 2 * l2_normalise(np.ones((5, 8)))), r"row 0 has length 1.99.., not 1"),
    ],
)
def test_damaged_store_is_a_clear_error(tmp_path: Path, damage, message: str) -> None:
    root = make_store(tmp_path / "s")
    damage(root)
    with pytest.raises(StoreError, match=message) as caught:
        EmbeddingStore.open(root)
    assert "\n" not in str(caught.value)


def test_metadata_rows_must_match_embeddings(tmp_path: Path) -> None:
    root = make_store(tmp_path / "s", n=5)
    pq.write_table(pa.table({"id": ["a", "b"], "path": ["a", "b"]}), root / "metadata.parquet")
    with pytest.raises(StoreError, match="metadata.parquet has 2 rows but manifest.json says count=5"):
        EmbeddingStore.open(root)


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    root = make_store(tmp_path / "s", n=2)
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


def test_model_refs_are_portable_both_ways(tmp_path: Path) -> None:
    (tmp_path / "models" / "clip").mkdir(parents=True)
    store_root = tmp_path / "stores" / "s"
    store_root.mkdir(parents=True)
    written = portable_ref(str(tmp_path / "models" / "clip"), store_root)
    assert written == "../../models/clip"
    assert Path(resolve_ref(written, store_root)) == (tmp_path / "models" / "clip").resolve()
    assert portable_ref("openai/clip-vit-base-patch32", store_root) == "openai/clip-vit-base-patch32"
    assert resolve_ref("openai/clip-vit-base-patch32", store_root) == "openai/clip-vit-base-patch32"


def test_relative_source_root_resolves_against_the_moved_store(tmp_path: Path) -> None:
    root = make_store(tmp_path / "s", source=SourceInfo("folder", 5, root="images"))
    moved = tmp_path / "elsewhere"
    root.rename(moved)
    store = EmbeddingStore.open(moved)
    assert store.image_ref(store.rows([2])[0]).file == moved.resolve() / "images" / "img2.jpg"
    assert store.source_folder == moved.resolve() / "images"


def test_dataset_rows_are_kept_as_data(tmp_path: Path) -> None:
    n = 3
    meta = pa.table({"id": ["0", "1", "2"], "path": pa.array([None, "/data/b.png", None], pa.string()), "row": [0, 1, 2]})
    root = write_store(tmp_path / "s", l2_normalise(np.ones((n, 8))), meta, (), manifest_for(n, 8, source=SourceInfo("hf_dataset", n, path="/data/ds", split="train")))
    store = EmbeddingStore.open(root)
    assert [store.image_ref(r) for r in store.rows(range(3))] == [ImageRef(dataset_row=0), ImageRef(file=Path("/data/b.png")), ImageRef(dataset_row=2)]


def test_examples_travel_with_the_store(tmp_path: Path) -> None:
    root = make_store(tmp_path / "s")
    assert EmbeddingStore.open(root).examples() is None
    write_examples(root, ["a red circle", "ein blauer Stern"], "**demo**")
    shipped = EmbeddingStore.open(root).examples()
    assert shipped is not None and shipped.queries == ("a red circle", "ein blauer Stern") and shipped.notice == "**demo**"
    (root / "examples.json").write_text(json.dumps({"queries": [1]}))
    with pytest.raises(StoreError, match="examples.json: 'queries' must be a list of non-empty strings"):
        read_examples(root)
