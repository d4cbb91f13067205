"""Incremental precompute: a grown folder embeds only what is new, keeps unchanged rows bit for bit, prunes on
request, and a resumed run re-embeds what changed since it was interrupted."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from clip_search.clip_model import ClipEncoder
from clip_search.errors import StoreError
from clip_search.precompute import precompute
from clip_search.store import EmbeddingStore
from tests.conftest import COLOURS, SHAPES, draw_photo


def photo(i: int) -> Image.Image:
    """A distinct generated photo for each i."""
    image = draw_photo(list(COLOURS)[i % 4], SHAPES[(i // 4) % 2], 32 + i % 17)
    image.putpixel((i % image.width, (i // image.width) % image.height), (i % 256, (7 * i) % 256, (13 * i) % 256))
    return image


def make_folder(root: Path, numbers: range) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in numbers:
        photo(i).save(root / f"p{i:04d}.png")
    return root


class EncoderCalls:
    """Counts the images the CLIP image encoder is given (the real encoder still runs)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.images = 0
        real = ClipEncoder.encode_pixels

        def counting(encoder: ClipEncoder, pixels):  # noqa: ANN001
            self.images += int(pixels.shape[0])
            return real(encoder, pixels)

        monkeypatch.setattr(ClipEncoder, "encode_pixels", counting)


def build(folder: Path, out: Path, tiny_clip: Path, shard_size: int = 16, **options) -> object:
    """Precompute with torch, whose encoder calls the tests count."""
    return precompute(str(folder), out, model=str(tiny_clip), text_model=None, batch_size=8, shard_size=shard_size, num_workers=0, progress=False, backend="torch", **options)


def test_update_embeds_only_new_images_and_equals_a_rebuild(tmp_path: Path, tiny_clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_folder(tmp_path / "photos", range(200))
    store = tmp_path / "store"
    build(folder, store, tiny_clip)
    before = EmbeddingStore.open(store)
    old_vectors = {row["id"]: before.embeddings[i].copy() for i, row in enumerate(before.rows(range(len(before))))}

    make_folder(folder, range(200, 210))
    for i in (3, 50, 199):
        (folder / f"p{i:04d}.png").unlink()
    calls = EncoderCalls(monkeypatch)
    report = build(folder, store, tiny_clip, prune=True)
    assert calls.images == 10
    assert (report.embedded, report.reused, report.pruned, report.count) == (10, 197, 3, 207)

    updated = EmbeddingStore.open(store)
    ids = [row["id"] for row in updated.rows(range(len(updated)))]
    for row, name in enumerate(ids):
        if name in old_vectors:
            assert np.array_equal(updated.embeddings[row], old_vectors[name]), name  # unchanged rows bit for bit

    build(folder, tmp_path / "rebuilt", tiny_clip)
    rebuilt = EmbeddingStore.open(tmp_path / "rebuilt")
    assert ids == [row["id"] for row in rebuilt.rows(range(len(rebuilt)))] == sorted(p.name for p in folder.iterdir())
    np.testing.assert_allclose(updated.vectors(range(207)), rebuilt.vectors(range(207)), atol=2e-3)
    assert pq.read_table(store / "metadata.parquet").equals(pq.read_table(tmp_path / "rebuilt" / "metadata.parquet"))
    assert updated.manifest.revision != before.manifest.revision


def test_rows_of_gone_files_are_kept_unless_pruned(tmp_path: Path, tiny_clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_folder(tmp_path / "photos", range(12))
    build(folder, tmp_path / "store", tiny_clip)
    (folder / "p0002.png").unlink()
    calls = EncoderCalls(monkeypatch)
    report = build(folder, tmp_path / "store", tiny_clip)
    assert calls.images == 0 and (report.kept_missing, report.count) == (1, 12)
    store = EmbeddingStore.open(tmp_path / "store")
    assert [r["id"] for r in store.rows(range(12))][-1] == "p0002.png"  # after the source's rows, in their old order


def test_an_unchanged_source_encodes_nothing(tmp_path: Path, tiny_clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_folder(tmp_path / "photos", range(10))
    build(folder, tmp_path / "store", tiny_clip)
    first = np.asarray(EmbeddingStore.open(tmp_path / "store").embeddings).copy()
    calls = EncoderCalls(monkeypatch)
    report = build(folder, tmp_path / "store", tiny_clip)
    assert calls.images == 0 and report.reused == 10
    assert np.array_equal(np.asarray(EmbeddingStore.open(tmp_path / "store").embeddings), first)


def test_an_edited_image_is_embedded_again(tmp_path: Path, tiny_clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_folder(tmp_path / "photos", range(10))
    build(folder, tmp_path / "store", tiny_clip)
    draw_photo("yellow", "square", 60).save(folder / "p0004.png")
    calls = EncoderCalls(monkeypatch)
    build(folder, tmp_path / "store", tiny_clip)
    assert calls.images == 1
    store = EmbeddingStore.open(tmp_path / "store")
    fresh = ClipEncoder.load(str(tiny_clip)).encode_images([Image.open(folder / "p0004.png").convert("RGB")])[0]
    np.testing.assert_allclose(store.vectors([4])[0], fresh, atol=2e-3)


def test_a_store_of_another_model_is_not_updated(tmp_path: Path, tiny_clip: Path) -> None:
    folder = make_folder(tmp_path / "photos", range(4))
    build(folder, tmp_path / "store", tiny_clip)
    other = tmp_path / "other-clip"
    shutil.copytree(tiny_clip, other)
    with pytest.raises(StoreError, match="holds a store made by .*tiny-clip.*, not .*other-clip.*allow overwrite"):
        build(folder, tmp_path / "store", other)
    assert build(folder, tmp_path / "store", other, overwrite=True).count == 4


class Interrupt(BaseException):
    """Stands in for a kill between two batches (the shards already written stay on disk)."""


def test_resume_re_embeds_what_changed_since_the_interruption(tmp_path: Path, tiny_clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_folder(tmp_path / "photos", range(40))
    real = ClipEncoder.encode_pixels
    seen = {"batches": 0}

    def interrupted(encoder: ClipEncoder, pixels):  # noqa: ANN001
        seen["batches"] += 1
        if seen["batches"] == 3:
            raise Interrupt
        return real(encoder, pixels)

    monkeypatch.setattr(ClipEncoder, "encode_pixels", interrupted)
    with pytest.raises(Interrupt):
        build(folder, tmp_path / "store", tiny_clip, shard_size=8)
    monkeypatch.setattr(ClipEncoder, "encode_pixels", real)
    assert len(list((tmp_path / "store.partial").glob("shard-*"))) == 2  # p0000–p0015 are done

    draw_photo("blue", "square", 64).save(folder / "p0003.png")  # edited after it was embedded
    (folder / "p0009.png").rename(folder / "renamed.png")  # renamed after it was embedded
    calls = EncoderCalls(monkeypatch)
    report = build(folder, tmp_path / "store", tiny_clip, shard_size=8)
    assert report.resumed_from == 14 and calls.images == 26  # 24 never done + the edited one + the renamed one

    build(folder, tmp_path / "rebuilt", tiny_clip)
    resumed, rebuilt = EmbeddingStore.open(tmp_path / "store"), EmbeddingStore.open(tmp_path / "rebuilt")
    assert [r["id"] for r in resumed.rows(range(40))] == [r["id"] for r in rebuilt.rows(range(40))]
    assert "p0009.png" not in [r["id"] for r in resumed.rows(range(40))]
    np.testing.assert_allclose(resumed.vectors(range(40)), rebuilt.vectors(range(40)), atol=2e-3)


def test_an_update_rebuilds_the_index_it_had(tmp_path: Path, tiny_clip: Path) -> None:
    from clip_search.engine import SearchEngine
    from clip_search.store_index import build_store_index

    folder = make_folder(tmp_path / "photos", range(60))
    build(folder, tmp_path / "store", tiny_clip)
    encoder = ClipEncoder.load(str(tiny_clip))
    first = build_store_index(EmbeddingStore.open(tmp_path / "store"), encoder.encode_texts, kind="hnsw")
    make_folder(folder, range(60, 70))
    build(folder, tmp_path / "store", tiny_clip)
    store = EmbeddingStore.open(tmp_path / "store")
    index = store.manifest.index
    assert index is not None and index.kind == "hnsw" and index.count == 70
    assert index.store_revision == store.manifest.revision != first.store_revision
    engine = SearchEngine.load(tmp_path / "store", text_model="clip")
    found = engine.search("a red circle", top_k=70)
    assert sorted(hit.row for hit in found.hits) == list(range(70))  # the rebuilt index covers the new rows
