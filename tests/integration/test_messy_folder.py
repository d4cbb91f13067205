"""A messy folder end to end: every file is embedded or skipped with a reason, a name that is not UTF-8 survives
the store losslessly, an iPhone HEIC photo is embedded, and the CLI prints odd names on one escaped line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pillow_heif
import pytest

from clip_search.precompute import precompute
from clip_search.store import EmbeddingStore, read_jsonl
from tests.conftest import draw_photo

REPO = Path(__file__).resolve().parents[2]
BAD_NAME = b"bad\xff name.png"


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("messy")
    draw_photo("red", "circle").save(root / "good.png")
    with open(os.path.join(os.fsencode(str(root)), BAD_NAME), "wb") as f:
        draw_photo("blue", "square").save(f, "PNG")
    pillow_heif.from_pillow(draw_photo("green", "circle")).save(str(root / "iphone.heic"), quality=90)
    (root / ".hidden.png").write_bytes((root / "good.png").read_bytes())
    (root / "notes.txt").write_text("not a photo")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff")
    return root


def every_file(root: Path) -> set[str]:
    found = set()
    for folder, _, files in os.walk(os.fsencode(str(root))):
        for name in files:
            rel = os.path.relpath(os.path.join(folder, name), os.fsencode(str(root)))
            found.add(rel.decode("utf-8", "backslashreplace"))
    return found


def test_every_file_is_accounted_for(messy: Path, tiny_clip: Path, tmp_path: Path) -> None:
    report = precompute(str(messy), tmp_path / "store", model=str(tiny_clip), text_model=None, num_workers=0, progress=False)
    store = EmbeddingStore.open(tmp_path / "store")
    rows = {row["id"] for row in store.rows(range(len(store)))}
    skipped = read_jsonl(tmp_path / "store" / "skipped.jsonl")
    assert rows == {"good.png", "bad\\xff name.png", "iphone.heic"}
    assert {s["ref"] for s in skipped} == {".hidden.png", "notes.txt", "broken.jpg"}
    assert rows | {s["ref"] for s in skipped} == every_file(messy)
    assert all(set(s) == {"index", "id", "ref", "reason"} for s in skipped)
    assert (report.count, report.skipped) == (3, 3)

    bad_row = next(row for row in store.rows(range(len(store))) if row["id"] == "bad\\xff name.png")
    assert store.image_ref(bad_row).file is not None and os.fsencode(str(store.image_ref(bad_row).file)).endswith(BAD_NAME)
    assert store.open_image(bad_row).getpixel((24, 24)) == draw_photo("blue", "square").getpixel((24, 24))


def test_the_cli_prints_an_undecodable_name_escaped(messy: Path, tiny_clip: Path, tmp_path: Path) -> None:
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "CLIP_SEARCH_CACHE": os.environ["CLIP_SEARCH_CACHE"]}
    cli = [sys.executable, "-m", "clip_search.cli"]
    built = subprocess.run([*cli, "precompute", str(messy), "--out", str(tmp_path / "s"), "--model", str(tiny_clip), "--text-model", "none", "--workers", "0", "--no-progress"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    assert "3 images embedded, 3 skipped" in built.stdout
    found = subprocess.run([*cli, "search", str(tmp_path / "s"), "a blue square", "--top-k", "3"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert found.returncode == 0, found.stderr
    assert len(found.stdout.splitlines()) == 3 and any(line.endswith("bad\\xff name.png") for line in found.stdout.splitlines())
