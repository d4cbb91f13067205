"""Tests for the image sources (folder, URL list, Hugging Face dataset) and open_source, on real files."""

from __future__ import annotations

import io
import os
import pickle
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from clip_search.decode import decode_image
from clip_search.errors import SkipItem, SourceError
from clip_search.sources import (
    FolderSource,
    HFDatasetSource,
    Source,
    SourceItem,
    UrlListSource,
    open_source,
)


def _image_bytes(
    fmt: str = "PNG", size: tuple[int, int] = (8, 6), colour: tuple[int, int, int] = (255, 0, 0)
) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, fmt)
    return buf.getvalue()


def _roundtrip(source: Source) -> Source:
    """Pickle and unpickle, as a DataLoader worker would receive the source."""
    return pickle.loads(pickle.dumps(source))


# -- folder ------------------------------------------------------------------------------------------


@pytest.fixture()
def photo_tree(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    files = {
        "b.jpg": "JPEG",
        "a/c.PNG": "PNG",
        "a/deep/e.JpEg": "JPEG",
        "a/g.gif": "GIF",
        "z.webp": "WEBP",
        "scan.TIFF": "TIFF",
        "pic.bmp": "BMP",
        ".hidden.jpg": "JPEG",
        ".cache/f.png": "PNG",
        "a/.thumbs/h.png": "PNG",
    }
    for rel, fmt in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(_image_bytes(fmt))
    (root / "notes.txt").write_text("not an image")
    (root / "a" / "raw.cr2").write_bytes(b"raw")
    (root / "noext").write_bytes(_image_bytes())
    return root


def test_folder_lists_images_recursively_sorted(photo_tree: Path) -> None:
    src = FolderSource(photo_tree)
    expected = ["a/c.PNG", "a/deep/e.JpEg", "a/g.gif", "b.jpg", "pic.bmp", "scan.TIFF", "z.webp"]
    assert isinstance(src, Source)
    assert len(src) == len(expected)
    assert [src.item(i).id for i in range(len(src))] == expected
    info = os.stat(photo_tree / "a/deep/e.JpEg")
    assert src.item(1) == SourceItem(
        index=1, id="a/deep/e.JpEg", metadata={"path": "a/deep/e.JpEg"}, fingerprint=f"{info.st_size}:{info.st_mtime_ns}"
    )
    assert src.fetch(3) == (photo_tree / "b.jpg").read_bytes()
    assert src.describe() == {"type": "folder", "root": str(photo_tree.resolve()), "count": len(expected)}
    hidden, in_hidden = "hidden (name starts with '.')", "hidden (inside a folder whose name starts with '.')"
    assert src.listing_skips() == [  # every other file, sorted by path
        {"index": None, "id": None, "ref": ".cache/f.png", "reason": in_hidden},
        {"index": None, "id": None, "ref": ".hidden.jpg", "reason": hidden},
        {"index": None, "id": None, "ref": "a/.thumbs/h.png", "reason": in_hidden},
        {"index": None, "id": None, "ref": "a/raw.cr2", "reason": "unsupported file type .cr2"},
        {"index": None, "id": None, "ref": "noext", "reason": "unsupported file type (no extension)"},
        {"index": None, "id": None, "ref": "notes.txt", "reason": "unsupported file type .txt"},
    ]
    for i in range(len(src)):
        assert decode_image(src.fetch(i)).size == (8, 6)


def test_folder_unreadable_file_is_a_skip(photo_tree: Path) -> None:
    src = FolderSource(photo_tree)
    (photo_tree / "b.jpg").unlink()
    with pytest.raises(SkipItem, match="cannot read file"):
        src.fetch(3)


def test_folder_broken_link_is_a_listing_skip(photo_tree: Path) -> None:
    os.symlink(photo_tree / "gone.jpg", photo_tree / "link.jpg")
    src = FolderSource(photo_tree)
    assert "link.jpg" not in [src.item(i).id for i in range(len(src))]
    assert [row for row in src.listing_skips() if row["ref"] == "link.jpg"] == [
        {"index": None, "id": None, "ref": "link.jpg", "reason": "not a regular file (broken link or special file)"}
    ]


def test_folder_pickles(photo_tree: Path) -> None:
    src = FolderSource(photo_tree)
    copy = _roundtrip(src)
    assert len(copy) == len(src)
    assert copy.item(2) == src.item(2)
    assert copy.fetch(2) == src.fetch(2)


def test_folder_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no images found in folder .*empty"):
        FolderSource(tmp_path / "empty")
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("x")
    (tmp_path / "texts" / ".b.jpg").write_bytes(_image_bytes("JPEG"))
    with pytest.raises(SourceError, match="no images found"):
        FolderSource(tmp_path / "texts")
    with pytest.raises(SourceError, match="no such folder: .*missing"):
        FolderSource(tmp_path / "missing")
    (tmp_path / "file.jpg").write_bytes(b"x")
    with pytest.raises(SourceError, match="not a folder"):
        FolderSource(tmp_path / "file.jpg")


# -- URL lists ---------------------------------------------------------------------------------------


class _ImageHandler(BaseHTTPRequestHandler):
    """/img/<anything> -> a PNG; everything else -> 404."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - keep test output quiet
        return

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        ok = self.path.startswith("/img/")
        body = _image_bytes(size=(10, 7)) if ok else b"missing"
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "image/png" if ok else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def image_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ImageHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    host, port = server.server_address[:2]
    yield f"http://{host}:{port}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_plain_url_list(tmp_path: Path) -> None:
    path = tmp_path / "urls.txt"
    path.write_text(
        "# my photos\n"  # row 1
        "https://example.com/a.jpg\n"  # row 2
        "\n"  # row 3
        "  http://example.com/b.png  \n"  # row 4
        "https://example.com/a.jpg\n"  # row 5: duplicate of row 2
        "ftp://example.com/c.jpg\n"  # row 6: not http(s)
        "https://images.unsplash.com/photo-1\n"  # row 7
    )
    src = UrlListSource(path)
    assert [src.item(i).id for i in range(len(src))] == [
        "https://example.com/a.jpg",
        "http://example.com/b.png",
        "https://images.unsplash.com/photo-1",
    ]
    assert src.item(1).metadata == {"url": "http://example.com/b.png"}
    assert src.item(2).metadata == {"url": "https://images.unsplash.com/photo-1?w=640"}
    assert src.listing_skips() == [
        {"index": None, "id": "https://example.com/a.jpg", "ref": "https://example.com/a.jpg", "reason": "row 5: duplicate id of row 2"},
        {"index": None, "id": "ftp://example.com/c.jpg", "ref": "ftp://example.com/c.jpg", "reason": "row 6: invalid URL"},
    ]
    assert src.describe() == {"type": "url_list", "file": str(path.resolve()), "count": 3}


def test_csv_url_list_with_id_and_caption(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text(
        "id,url,caption,rating\n"  # row 1: header
        'p1,https://example.com/1.jpg,"a dog, running",5\n'  # row 2
        "p2,,no url here,3\n"  # row 3
        "p1,https://example.com/other.jpg,same id,1\n"  # row 4
        "p3,https://example.com/3.jpg,,\n"  # row 5
    )
    src = UrlListSource(path)
    assert [src.item(i).id for i in range(len(src))] == ["p1", "p3"]
    assert src.item(0).metadata == {"url": "https://example.com/1.jpg", "caption": "a dog, running", "rating": "5"}
    assert src.item(1).metadata == {"url": "https://example.com/3.jpg", "caption": None, "rating": ""}
    assert src.listing_skips() == [
        {"index": None, "id": "p2", "ref": "row 3", "reason": "row 3: no URL"},
        {"index": None, "id": "p1", "ref": "https://example.com/other.jpg", "reason": "row 4: duplicate id of row 2"},
    ]


def test_tsv_with_photo_image_url_column(tmp_path: Path) -> None:
    path = tmp_path / "list.tsv"
    path.write_text("photo_image_url\tnote\nhttps://example.com/1.jpg\tfirst\nhttps://example.com/2.jpg\tsecond\n")
    src = UrlListSource(path)
    assert [src.item(i).id for i in range(len(src))] == ["https://example.com/1.jpg", "https://example.com/2.jpg"]
    assert src.item(1).metadata == {"url": "https://example.com/2.jpg", "note": "second"}


UNSPLASH_COLUMNS = [
    "photo_id",
    "photo_url",
    "photo_image_url",
    "photo_submitted_at",
    "photo_featured",
    "photo_width",
    "photo_height",
    "photo_aspect_ratio",
    "photo_description",
    "photographer_username",
    "ai_description",
]


def _unsplash_row(photo_id: str, image_url: str, description: str, ai_description: str) -> str:
    values = [
        photo_id,
        f"https://unsplash.com/photos/{photo_id}",
        image_url,
        "2020-01-01 00:00:00",
        "t",
        "4000",
        "3000",
        "1.33",
        description,
        "someone",
        ai_description,
    ]
    return "\t".join(values) + "\n"


@pytest.fixture()
def unsplash_tsv(tmp_path: Path) -> Path:
    path = tmp_path / "photos.tsv000"
    rows = [
        ("XMyPniM9LF0", "https://images.unsplash.com/uploads/1411949294603ae2de/3a2ad3f8", "Woman on a dock", "a woman"),
        ("rDLBArZUl1c", "https://images.unsplash.com/photo-1416339306562-f3d12fefd36f?ixid=abc", "", "a mountain lake"),
        ("cNDGZ2sQ3Bo", "https://images.unsplash.com/photo-1420310414923?w=1200", "Sunset", ""),
        ("XMyPniM9LF0", "https://images.unsplash.com/photo-dup", "again", ""),  # row 5: duplicate id
        ("", "https://images.unsplash.com/photo-noid", "no id", ""),  # row 6: no id
    ]
    path.write_text("\t".join(UNSPLASH_COLUMNS) + "\n" + "".join(_unsplash_row(*row) for row in rows))
    return path


def test_unsplash_lite_tsv(unsplash_tsv: Path) -> None:
    src = UrlListSource(unsplash_tsv)
    assert [src.item(i).id for i in range(len(src))] == ["XMyPniM9LF0", "rDLBArZUl1c", "cNDGZ2sQ3Bo"]
    first = src.item(0).metadata
    assert first["url"] == "https://images.unsplash.com/uploads/1411949294603ae2de/3a2ad3f8?w=640"
    assert first["caption"] == "Woman on a dock"
    assert first["photo_width"] == "4000" and first["photographer_username"] == "someone"
    assert first["photo_url"] == "https://unsplash.com/photos/XMyPniM9LF0"
    assert "photo_id" not in first and "photo_image_url" not in first  # they became id and url
    second = src.item(1).metadata
    assert second["url"] == "https://images.unsplash.com/photo-1416339306562-f3d12fefd36f?ixid=abc&w=640"
    assert second["caption"] == "a mountain lake"  # photo_description empty: ai_description
    assert src.item(2).metadata["url"] == "https://images.unsplash.com/photo-1420310414923?w=1200"  # width kept
    assert [(row["id"], row["ref"], row["reason"]) for row in src.listing_skips()] == [
        ("XMyPniM9LF0", "https://images.unsplash.com/photo-dup", "row 5: duplicate id of row 2"),
        (None, "https://images.unsplash.com/photo-noid", "row 6: empty photo_id"),
    ]
    original = UrlListSource(unsplash_tsv, resize_width=None)
    assert original.item(0).metadata["url"] == "https://images.unsplash.com/uploads/1411949294603ae2de/3a2ad3f8"
    assert UrlListSource(unsplash_tsv, resize_width=320).item(0).metadata["url"].endswith("?w=320")


def test_url_list_fetches_through_http_and_pickles(tmp_path: Path, image_server: str) -> None:
    path = tmp_path / "urls.txt"
    path.write_text(f"{image_server}/img/a.png\n{image_server}/missing.png\n")
    src = UrlListSource(path, timeout_s=2.0, retries=0)
    assert decode_image(src.fetch(0)).size == (10, 7)
    with pytest.raises(SkipItem, match="^HTTP 404$"):
        src.fetch(1)
    copy = _roundtrip(src)
    assert copy.item(0) == src.item(0)
    assert copy.fetch(0) == src.fetch(0)
    assert copy.listing_skips() == src.listing_skips()


def test_url_list_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such URL list file"):
        UrlListSource(tmp_path / "missing.txt")
    (tmp_path / "cols.csv").write_text("name,link\na,https://example.com/a.jpg\n")
    with pytest.raises(SourceError, match="no url or photo_image_url column; its columns are: name, link"):
        UrlListSource(tmp_path / "cols.csv")
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(SourceError, match="no usable image URLs"):
        UrlListSource(tmp_path / "empty.txt")
    (tmp_path / "bad.txt").write_text("not a url\n")
    with pytest.raises(SourceError, match=r"no usable image URLs .*\(1 rows skipped\)"):
        UrlListSource(tmp_path / "bad.txt")


# -- Hugging Face datasets ---------------------------------------------------------------------------


@pytest.fixture()
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Offline hub, `load_dataset`'s cache inside the test's folder, progress bars quiet."""
    import datasets
    import huggingface_hub.constants

    cache = tmp_path / "hf_cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    datasets.disable_progress_bars()
    return cache


def _saved_dataset(path: Path, ids: list[str]) -> Path:
    import datasets

    n = len(ids)
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "picture": datasets.Image(),
            "caption": datasets.Value("string"),
            "score": datasets.Value("float32"),
            "label": datasets.ClassLabel(names=["cat", "dog"]),
            "tags": datasets.List(datasets.Value("string")),
        }
    )
    ds = datasets.Dataset.from_dict(
        {
            "id": ids,
            "picture": [Image.new("RGB", (12 + i, 9), (40 * i, 0, 0)) for i in range(n)],
            "caption": [f"photo {i}" if i else None for i in range(n)],
            "score": [i / 2 for i in range(n)],
            "label": [i % 2 for i in range(n)],
            "tags": [["x"] * i for i in range(n)],
        },
        features=features,
    )
    ds.save_to_disk(str(path))
    return path


def test_hf_saved_dataset(tmp_path: Path, hf_cache: Path) -> None:
    path = _saved_dataset(tmp_path / "saved", ["a", "b", "c"])
    src = HFDatasetSource(path)
    assert isinstance(src, Source)
    assert len(src) == 3
    assert src.image_column == "picture"
    assert [src.item(i).id for i in range(3)] == ["a", "b", "c"]
    # Images stored as bytes have no file: `path` is None and the row number is the way back to the image.
    assert src.item(0).metadata == {"path": None, "caption": None, "score": 0.0, "label": "cat", "row": 0}
    assert src.item(1).metadata == {"path": None, "caption": "photo 1", "score": 0.5, "label": "dog", "row": 1}
    assert [decode_image(src.fetch(i)).size for i in range(3)] == [(12, 9), (13, 9), (14, 9)]
    assert src.describe() == {
        "type": "hf_dataset",
        "path": str(path.resolve()),
        "split": None,
        "image_column": "picture",
        "count": 3,
    }
    assert src.listing_skips() == []
    copy = _roundtrip(src)
    assert copy.item(2) == src.item(2)
    assert copy.fetch(2) == src.fetch(2)


def test_hf_non_unique_ids_fall_back_to_row_numbers(tmp_path: Path, hf_cache: Path) -> None:
    src = HFDatasetSource(_saved_dataset(tmp_path / "dups", ["a", "a", "b"]))
    assert [src.item(i).id for i in range(3)] == ["0", "1", "2"]
    assert src.item(1).metadata["source_id"] == "a"


def test_hf_dataset_dict_picks_split(tmp_path: Path, hf_cache: Path) -> None:
    import datasets

    _saved_dataset(tmp_path / "one", ["a", "b", "c"])
    ds = datasets.load_from_disk(str(tmp_path / "one"))
    datasets.DatasetDict({"train": ds, "test": ds.select([2])}).save_to_disk(str(tmp_path / "dict"))
    src = HFDatasetSource(tmp_path / "dict", split="test")
    assert len(src) == 1 and src.item(0).id == "c"
    assert src.describe()["split"] == "test"
    with pytest.raises(SourceError, match="has no split 'validation'; its splits are: train, test"):
        HFDatasetSource(tmp_path / "dict", split="validation")


def test_hf_image_column_choice_and_errors(tmp_path: Path, hf_cache: Path) -> None:
    import datasets

    path = _saved_dataset(tmp_path / "saved", ["a", "b"])
    assert HFDatasetSource(path, image_column="picture").image_column == "picture"
    with pytest.raises(SourceError, match="no column 'image'; its columns are: id, picture, caption"):
        HFDatasetSource(path, image_column="image")
    with pytest.raises(SourceError, match="column 'caption' .* not images"):
        HFDatasetSource(path, image_column="caption")
    datasets.Dataset.from_dict({"text": ["a"], "n": [1]}).save_to_disk(str(tmp_path / "text"))
    with pytest.raises(SourceError, match="no image column; its columns are: text, n"):
        HFDatasetSource(tmp_path / "text")


def test_hf_imagefolder_directory(tmp_path: Path, hf_cache: Path) -> None:
    root = tmp_path / "imagefolder"
    for label, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
        (root / label).mkdir(parents=True)
        for i in range(2):
            (root / label / f"{i}.png").write_bytes(_image_bytes(size=(5 + i, 4), colour=colour))
    src = HFDatasetSource(root)
    assert len(src) == 4
    assert src.describe()["split"] == "train"
    items = [src.item(i) for i in range(4)]
    assert sorted(item.metadata["label"] for item in items) == ["cat", "cat", "dog", "dog"]
    for item in items:  # images read from files: `path` is that file
        assert Path(item.metadata["path"]).read_bytes() == src.fetch(item.index)
        assert Path(item.metadata["path"]).parent.name == item.metadata["label"]
    assert sorted(decode_image(src.fetch(i)).size for i in range(4)) == [(5, 4), (5, 4), (6, 4), (6, 4)]
    copy = _roundtrip(src)
    assert copy.fetch(3) == src.fetch(3)


def test_hf_load_failures_are_source_errors(tmp_path: Path, hf_cache: Path) -> None:
    with pytest.raises(SourceError, match="cannot load dataset hf://datasets/nobody/nothing") as info:
        HFDatasetSource("hf://datasets/nobody/nothing")
    assert "\n" not in str(info.value)
    with pytest.raises(SourceError, match="no such dataset folder"):
        HFDatasetSource(tmp_path / "missing")


# -- open_source -------------------------------------------------------------------------------------


def test_open_source_dispatch(tmp_path: Path, photo_tree: Path, unsplash_tsv: Path, hf_cache: Path) -> None:
    import datasets

    assert isinstance(open_source(str(photo_tree)), FolderSource)
    assert isinstance(open_source(str(unsplash_tsv)), UrlListSource)
    saved = _saved_dataset(tmp_path / "saved", ["a", "b"])
    assert isinstance(open_source(str(saved)), HFDatasetSource)
    parquet_dir = tmp_path / "parquet"
    parquet_dir.mkdir()
    datasets.load_from_disk(str(saved)).to_parquet(str(parquet_dir / "train.parquet"))
    from_parquet = open_source(str(parquet_dir))
    assert isinstance(from_parquet, HFDatasetSource) and from_parquet.image_column == "picture"
    other = tmp_path / "list.dat"
    other.write_text("https://example.com/a.jpg\n")
    assert isinstance(open_source(str(other)), UrlListSource)

    # Options: None means "not given"; an option the source does not take is an error.
    assert isinstance(open_source(str(photo_tree), split=None, resize_width=None), FolderSource)
    assert open_source(str(unsplash_tsv), resize_width=100).item(0).metadata["url"].endswith("?w=100")
    assert open_source(str(saved), image_column="picture").image_column == "picture"
    with pytest.raises(SourceError, match="resize_width do not apply to FolderSource"):
        open_source(str(photo_tree), resize_width=100)


def test_open_source_errors(tmp_path: Path, hf_cache: Path) -> None:
    with pytest.raises(SourceError, match="no such folder, file or dataset: .*nothing-here"):
        open_source(str(tmp_path / "nothing-here"))
    with pytest.raises(SourceError, match="unsupported hf:// address"):
        open_source("hf://models/openai/clip")
    with pytest.raises(SourceError, match="cannot load dataset"):
        open_source("hf://datasets/nobody/nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no images found"):
        open_source(str(tmp_path / "empty"))


def test_folder_sidecar_metadata_adds_captions(tmp_path: Path) -> None:
    from PIL import Image as PILImage

    from clip_search.errors import SourceError
    from clip_search.sources import FolderSource

    for name in ("a.png", "sub/b.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        PILImage.new("RGB", (8, 8)).save(tmp_path / name)
    (tmp_path / "metadata.csv").write_text("file_name,caption\na.png,a black square\nsub/b.png,\"another, with comma\"\n")
    source = FolderSource(tmp_path)
    assert [source.item(i).metadata for i in range(2)] == [{"caption": "a black square", "path": "a.png"}, {"caption": "another, with comma", "path": "sub/b.png"}]
    (tmp_path / "metadata.csv").write_text("file_name,caption\n,oops\n")
    with pytest.raises(SourceError, match="metadata.csv, row 2: no file_name"):
        FolderSource(tmp_path)


# -- every file accounted for, names that are not UTF-8, HEIC, fingerprints, one skip-row schema -------


def _heic_bytes(size: tuple[int, int] = (16, 12), colour: tuple[int, int, int] = (255, 0, 0)) -> bytes:
    """A real HEIC file, written by pillow-heif (without registering it with Pillow)."""
    import pillow_heif

    buf = io.BytesIO()
    pillow_heif.from_pillow(Image.new("RGB", size, colour)).save(buf, quality=90)
    return buf.getvalue()


def _write_raw(root: Path, rel: bytes, data: bytes) -> bytes:
    """Write `data` to the file `rel` (raw bytes, may be invalid UTF-8) under `root`; returns the full path."""
    full = os.path.join(os.fsencode(str(root)), rel)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb") as f:
        f.write(data)
    return full


@pytest.fixture()
def messy_tree(tmp_path: Path) -> Path:
    """A folder as people have them: hidden files and folders, non-images, links, a FIFO, odd names, a HEIC."""
    root = tmp_path / "messy"
    root.mkdir()
    _write_raw(root, b"a.jpg", _image_bytes("JPEG"))
    _write_raw(root, b"sub/b.png", _image_bytes(colour=(0, 255, 0)))
    _write_raw(root, b"phone/c.HEIC", _heic_bytes())
    _write_raw(root, b"bad\xff name.png", _image_bytes(colour=(0, 0, 255)))
    _write_raw(root, b"dir\xfe/inner.png", _image_bytes(size=(5, 5)))
    _write_raw(root, b"dir\xfe/readme\xff.txt", b"text")
    _write_raw(root, b".DS_Store", b"\x00\x00\x00\x01Bud1")
    _write_raw(root, b".hidden.jpg", _image_bytes("JPEG"))
    _write_raw(root, b".git/config", b"[core]\n")
    _write_raw(root, b".git/objects/ab/cdef.png", _image_bytes())
    _write_raw(root, b"notes.txt", b"not an image")
    _write_raw(root, b"metadata.jsonl", b'{"file_name": "a.jpg", "caption": "first"}\n{"file_name": "bad\\\\xff name.png", "caption": "escaped"}\n')
    _write_raw(root, b"metadata.csv", b"file_name,caption\na.jpg,ignored\n")
    os.symlink(root / "gone.jpg", root / "link.jpg")
    os.symlink(root / "sub", root / "linked-folder")
    os.mkfifo(root / "pipe.png")
    return root


MESSY_ITEMS = ["a.jpg", "bad\\xff name.png", "dir\\xfe/inner.png", "phone/c.HEIC", "sub/b.png"]


def _all_files(root: Path) -> list[str]:
    """Every non-folder entry under `root` (links to folders included), as display paths, from a bytes walk."""
    out = []
    for dirpath, dirnames, filenames in os.walk(os.fsencode(str(root))):
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        for name in filenames + links:
            rel = os.path.relpath(os.path.join(dirpath, name), os.fsencode(str(root)))
            out.append(rel.decode("utf-8", "backslashreplace"))
    return sorted(out)


def test_folder_accounts_for_every_file(messy_tree: Path) -> None:
    src = FolderSource(messy_tree)
    paths = [src.item(i).metadata["path"] for i in range(len(src))]
    assert paths == MESSY_ITEMS
    skips = src.listing_skips()
    assert {row["ref"]: row["reason"] for row in skips} == {
        ".DS_Store": "hidden (name starts with '.')",
        ".git/config": "hidden (inside a folder whose name starts with '.')",
        ".git/objects/ab/cdef.png": "hidden (inside a folder whose name starts with '.')",
        ".hidden.jpg": "hidden (name starts with '.')",
        "dir\\xfe/readme\\xff.txt": "unsupported file type .txt",
        "link.jpg": "not a regular file (broken link or special file)",
        "linked-folder": "link to a folder (links to folders are not followed)",
        "metadata.csv": "metadata file not read (metadata.jsonl is read instead)",
        "notes.txt": "unsupported file type .txt",
        "pipe.png": "not a regular file (broken link or special file)",
    }
    # items + skips + the metadata file that was read = every file, each once
    assert sorted(paths + [row["ref"] for row in skips] + ["metadata.jsonl"]) == _all_files(messy_tree)
    assert src.item(0).metadata["caption"] == "first"
    assert src.item(1).metadata["caption"] == "escaped"  # the metadata file names it by its display form
    assert src.item(4).metadata["caption"] is None  # every row has the metadata file's columns
    assert decode_image(src.fetch(MESSY_ITEMS.index("phone/c.HEIC"))).size == (16, 12)


def test_folder_name_not_utf8_is_lossless_and_writable(messy_tree: Path) -> None:
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from clip_search.sources import local_path

    src = FolderSource(messy_tree)
    bad = src.item(1)
    assert bad.id == bad.metadata["path"] == "bad\\xff name.png"
    assert bad.metadata["path_bytes"] == b"bad\xff name.png"
    assert src.item(2).metadata["path_bytes"] == b"dir\xfe/inner.png"
    assert src.item(0).metadata["path_bytes"] is None  # a valid name: the key is there (same columns), empty
    assert src.fetch(1) == _image_bytes(colour=(0, 0, 255))
    assert src.fetch(2) == _image_bytes(size=(5, 5))
    # What precompute does with the rows: parquet and JSON lines, both UTF-8; then reopen from the store row.
    rows = [{"id": src.item(i).id, **src.item(i).metadata} for i in range(len(src))]
    pq.write_table(pa.Table.from_pylist(rows), messy_tree.parent / "meta.parquet")
    back = pq.read_table(messy_tree.parent / "meta.parquet").to_pylist()
    assert [r["path"] for r in back] == MESSY_ITEMS
    for i, row in enumerate(back):
        assert local_path(messy_tree, row).read_bytes() == src.fetch(i)
    json.dumps(src.listing_skips(), ensure_ascii=False).encode("utf-8")
    copy = _roundtrip(src)
    assert copy.item(1) == bad and copy.fetch(1) == src.fetch(1)


def test_folder_of_valid_names_has_no_path_bytes(photo_tree: Path) -> None:
    from clip_search.sources import local_path

    src = FolderSource(photo_tree)
    assert all("path_bytes" not in src.item(i).metadata for i in range(len(src)))
    assert local_path(photo_tree, src.item(0).metadata) == photo_tree / "a/c.PNG"


def test_folder_display_name_collision_is_a_skip(tmp_path: Path) -> None:
    _write_raw(tmp_path, b"bad\xff.png", _image_bytes(colour=(0, 0, 255)))
    _write_raw(tmp_path, b"bad\\xff.png", _image_bytes(colour=(0, 255, 0)))  # a real backslash in the name
    src = FolderSource(tmp_path)
    assert len(src) == 1
    assert src.item(0).metadata == {"path": "bad\\xff.png"}  # the valid name keeps the id (no raw name kept)
    assert src.fetch(0) == _image_bytes(colour=(0, 255, 0))
    assert src.listing_skips() == [
        {"index": None, "id": None, "ref": "bad\\xff.png",
         "reason": "name collides with another file's once bytes that are not UTF-8 are written as \\xNN"}
    ]


def test_folder_unlistable_subfolder_is_a_skip(photo_tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_scandir = os.scandir
    refused = {str(photo_tree.resolve() / "a" / "deep")}

    def scandir(path):  # the kernel refusing one folder (chmod 000 does not stop root, who may run tests)
        if str(path) in refused:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    src = FolderSource(photo_tree)
    assert "a/deep/e.JpEg" not in [src.item(i).id for i in range(len(src))]
    assert {"index": None, "id": None, "ref": "a/deep", "reason": "cannot list folder: Permission denied"} in src.listing_skips()
    refused.add(str(photo_tree.resolve()))
    with pytest.raises(SourceError, match="cannot list folder .*photos: Permission denied"):
        FolderSource(photo_tree)


def test_folder_fingerprint_is_size_and_mtime(photo_tree: Path) -> None:
    src = FolderSource(photo_tree)
    before = [src.fingerprint(i) for i in range(len(src))]
    assert before == [src.item(i).fingerprint for i in range(len(src))]
    info = os.stat(photo_tree / "b.jpg")
    assert before[3] == f"{info.st_size}:{info.st_mtime_ns}"
    os.utime(photo_tree / "b.jpg", ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000_000))
    (photo_tree / "z.webp").write_bytes(_image_bytes("WEBP", size=(9, 9)))
    after = FolderSource(photo_tree)
    changed = [i for i in range(len(src)) if after.fingerprint(i) != before[i]]
    assert changed == [3, 6]
    assert _roundtrip(after).fingerprint(3) == after.fingerprint(3)


def test_url_list_fingerprint_is_the_downloaded_url(unsplash_tsv: Path) -> None:
    src = UrlListSource(unsplash_tsv)
    assert src.fingerprint(0) == src.item(0).fingerprint == src.item(0).metadata["url"]
    assert src.fingerprint(0).endswith("?w=640")
    assert UrlListSource(unsplash_tsv, resize_width=320).fingerprint(0).endswith("?w=320")


def test_hf_fingerprint_hashes_the_image(tmp_path: Path, hf_cache: Path) -> None:
    import hashlib

    src = HFDatasetSource(_saved_dataset(tmp_path / "saved", ["a", "b", "c"]))
    prints = [src.fingerprint(i) for i in range(3)]
    assert prints[0] == hashlib.blake2b(src.fetch(0), digest_size=8).hexdigest()
    assert all(len(p) == 16 for p in prints) and len(set(prints)) == 3
    assert src.item(0).fingerprint == ""  # computed on demand only
    again = HFDatasetSource(_saved_dataset(tmp_path / "again", ["x", "y", "z"]))  # same pictures
    assert [again.fingerprint(i) for i in range(3)] == prints
    assert _roundtrip(src).fingerprint(2) == prints[2]
    with pytest.raises(IndexError):
        src.fingerprint(3)


def test_hf_fingerprint_of_image_files_follows_the_file(tmp_path: Path, hf_cache: Path) -> None:
    root = tmp_path / "imagefolder"
    (root / "cat").mkdir(parents=True)
    for i in range(2):
        (root / "cat" / f"{i}.png").write_bytes(_image_bytes(size=(5 + i, 4)))
    src = HFDatasetSource(root)
    before = [src.fingerprint(i) for i in range(2)]
    assert len(set(before)) == 2
    target = Path(src.item(0).metadata["path"])
    info = target.stat()
    os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000_000))
    assert src.fingerprint(0) != before[0]
    assert src.fingerprint(1) == before[1]


def test_every_listing_skip_has_one_schema(messy_tree: Path, unsplash_tsv: Path, tmp_path: Path, hf_cache: Path) -> None:
    from clip_search.sources import SKIP_KEYS

    (tmp_path / "list.csv").write_text("id,url\np1,\np2,not-a-url\n,https://example.com/x.jpg\np3,https://example.com/3.jpg\n")
    sources = [
        FolderSource(messy_tree),
        UrlListSource(unsplash_tsv),
        UrlListSource(tmp_path / "list.csv"),
        HFDatasetSource(_saved_dataset(tmp_path / "saved", ["a"])),
    ]
    rows = [row for src in sources for row in src.listing_skips()]
    assert len(rows) == 10 + 2 + 3
    for row in rows:
        assert tuple(row) == SKIP_KEYS
        assert row["index"] is None
        assert row["id"] is None or isinstance(row["id"], str)
        assert isinstance(row["ref"], str) and row["ref"]
        assert isinstance(row["reason"], str) and "\n" not in row["reason"]
